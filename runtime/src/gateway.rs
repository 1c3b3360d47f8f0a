//! How the jobmanager and taskmanagers talk, independent of transport: in one process the
//! jobmanager calls the taskmanager directly; across processes (gRPC) the same traits are
//! implemented by RPC clients.

use crate::checkpoint::TaskSnapshot;
use crate::deployment::{JobId, TaskDeployment, TaskId};
use crate::plugin::JobArtifact;
use std::future::Future;
use std::pin::Pin;
use weir_api::runtime::{CheckpointBarrier, CheckpointId};

/// A boxed future, for object-safe async methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Execution state of one task, as reported by its taskmanager.
///
/// Serialized in upper case, as Flink names subtask states (`RUNNING`); the earlier names
/// (`Running`) are still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskExecutionState {
    /// Accepted; the chain is being instantiated.
    #[serde(alias = "Deploying")]
    Deploying,
    /// Processing.
    #[serde(alias = "Running")]
    Running,
    /// Its inputs ended and everything it produced is handed on (sinks: committed).
    #[serde(alias = "Finished")]
    Finished,
    /// Failed; the failure message says why.
    #[serde(alias = "Failed")]
    Failed,
    /// Cancelled on request.
    #[serde(alias = "Canceled")]
    Canceled,
}

impl TaskExecutionState {
    /// Whether the task will not change state again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Finished | Self::Failed | Self::Canceled)
    }
}

/// Why a FAILED task failed, as far as the jobmanager's recovery decision is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FailureKind {
    /// The task's own failure (user code, storage, a lost peer, ...): the restart strategy
    /// decides, and the job restarts from its latest completed checkpoint.
    #[default]
    Task,
    /// The task could not restore checkpoint `n` because a file it names is missing or corrupt:
    /// that checkpoint is unusable, and the next attempt restores from the one before it.
    CheckpointUnusable(u64),
    /// The job as written cannot run (an invalid job or argument found while running, such as an
    /// event-time window fed records without timestamps): every attempt would fail the same way,
    /// so the job fails without restarting.
    Unrecoverable,
}

/// A task's state change with its counters, from a taskmanager to the jobmanager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEvent {
    /// The task.
    pub task: TaskId,
    /// Its new state.
    pub state: TaskExecutionState,
    /// Why it failed (`Failed` only), including a user panic's message.
    pub failure: Option<String>,
    /// What kind of failure (`Failed` only).
    pub failure_kind: FailureKind,
    /// Records that entered the task so far.
    pub records_in: u64,
    /// Records that left the task so far.
    pub records_out: u64,
    /// `Finished` tasks of a job with checkpointing: the task's final snapshot (its operators'
    /// state at the end of its input: source positions, pending sink transactions), which every
    /// later checkpoint includes in place of an acknowledgement (Flink's FLIP-147).
    pub final_snapshot: Option<TaskSnapshot>,
}

impl TaskEvent {
    /// An event without failure or final snapshot.
    pub fn new(task: TaskId, state: TaskExecutionState, records_in: u64, records_out: u64) -> Self {
        Self {
            task,
            state,
            failure: None,
            failure_kind: FailureKind::Task,
            records_in,
            records_out,
            final_snapshot: None,
        }
    }
}

/// A task as its taskmanager's heartbeat lists it: deployed, not ended yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatTask {
    /// The task.
    pub task: TaskId,
    /// `Deploying` or `Running`.
    pub state: TaskExecutionState,
    /// Records that entered the task so far.
    pub records_in: u64,
    /// Records that left the task so far.
    pub records_out: u64,
    /// How it spent its time since the previous heartbeat.
    pub time: TimeShares,
    /// Its input watermark (ms), once it has one.
    pub input_watermark: Option<i64>,
}

/// How a task spent a stretch of time, in thousandths: processing, waiting for input, waiting
/// for room in an output channel (backpressure). All 0: unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TimeShares {
    /// Processing.
    pub busy_permille: u16,
    /// Waiting for input.
    pub idle_permille: u16,
    /// Waiting for room in an output channel.
    pub backpressured_permille: u16,
}

/// Receives task events (implemented by the jobmanager). Must not block.
pub trait TaskEventSink: Send + Sync {
    /// Delivers one event.
    fn task_event(&self, event: TaskEvent);

    /// A task took its snapshot of `checkpoint`, forwarded the barrier and wrote its state to
    /// checkpoint storage.
    fn checkpoint_acknowledged(&self, task: TaskId, checkpoint: CheckpointId, snapshot: TaskSnapshot) {
        let _ = (task, checkpoint, snapshot);
    }

    /// A task could not take part in checkpoint `checkpoint`.
    fn checkpoint_declined(&self, task: TaskId, checkpoint: CheckpointId, reason: String) {
        let _ = (task, checkpoint, reason);
    }
}

/// How a call to a taskmanager failed; the jobmanager decides on the kind, never on the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayErrorKind {
    /// No answer: the taskmanager is gone or partitioned away (connection refused, timeout).
    Unreachable,
    /// The taskmanager answered and refused: it does not know the job or the attempt (it
    /// restarted, or the request is stale), or the request was invalid.
    Refused,
    /// The taskmanager tried and failed (a commit or a deployment failed there).
    Failed,
}

/// A failed call to a taskmanager.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct GatewayError {
    /// What kind of failure.
    pub kind: GatewayErrorKind,
    /// What went wrong, one line.
    pub message: String,
}

impl GatewayError {
    /// A failure of `kind`.
    pub fn new(kind: GatewayErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    /// The taskmanager refused the request.
    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(GatewayErrorKind::Refused, message)
    }

    /// The taskmanager failed to carry out the request.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(GatewayErrorKind::Failed, message)
    }

    /// Whether the taskmanager could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        self.kind == GatewayErrorKind::Unreachable
    }
}

/// Result of a call through a [`TaskManagerGateway`].
pub type GatewayResult<T> = Result<T, GatewayError>;

/// The jobmanager's handle on one taskmanager.
///
/// Every command names the job's execution **attempt**; a taskmanager carries out commands for
/// its current attempt of the job (the newest it deployed) and older ones only where that is
/// harmless (cancelling and releasing what is left of them), and refuses stale deployments, so
/// that a delayed command of an old attempt can never touch a newer one.
pub trait TaskManagerGateway: Send + Sync {
    /// The taskmanager's id.
    fn id(&self) -> &str;

    /// Number of task slots it offers.
    fn slots(&self) -> u32;

    /// Starts a task; returns once the taskmanager accepted it (it then reports its states).
    /// Refused when the taskmanager already runs a newer attempt of the job.
    fn deploy(&self, deployment: TaskDeployment, artifact: JobArtifact) -> BoxFuture<'_, GatewayResult<()>>;

    /// Cancels the tasks of `job` of attempts up to `attempt` on this taskmanager (tasks of newer
    /// attempts keep running).
    fn cancel_job(&self, job: JobId, attempt: u32) -> BoxFuture<'_, GatewayResult<()>>;

    /// Releases what attempts up to `attempt` of `job` hold here (channels, committers, and the
    /// loaded code once no task of the job is left) once their tasks stopped. Called by the
    /// jobmanager when the job reached a terminal state or before it restarts: a taskmanager
    /// never releases a job on its own, since more of its tasks may still be deployed.
    fn release_job(&self, job: JobId, attempt: u32) -> BoxFuture<'_, GatewayResult<()>>;

    /// Starts checkpoint `barrier` at the source tasks of attempt `attempt` of `job` running
    /// here; returns how many were triggered. A source ignores a trigger older than a barrier it
    /// already emitted.
    fn trigger_checkpoint(
        &self,
        job: JobId,
        attempt: u32,
        barrier: CheckpointBarrier,
    ) -> BoxFuture<'_, GatewayResult<u32>>;

    /// Checkpoint `checkpoint` of attempt `attempt` of `job` will be a savepoint into directory
    /// `dir` (a storage URL): tasks here that see its barrier write a canonical, self-contained
    /// snapshot there. Sent to every taskmanager of the attempt before the sources are
    /// triggered. With `stop: Some(drain)` the job stops with it: sources emit nothing after its
    /// barrier (with `drain`, the maximum watermark before it) and end once it completed (or go
    /// on if it fails); downstream tasks do not advance event time to the end for a stop without
    /// drain. Refused when the taskmanager does not run that attempt of the job.
    fn prepare_savepoint(
        &self,
        job: JobId,
        attempt: u32,
        checkpoint: CheckpointId,
        dir: String,
        stop: Option<bool>,
    ) -> BoxFuture<'_, GatewayResult<()>>;

    /// Checkpoint `checkpoint` of attempt `attempt` of `job` was aborted: tasks aligning its
    /// barriers release their blocked inputs (Flink's `CancelCheckpointMarker`).
    fn abort_checkpoint(&self, job: JobId, attempt: u32, checkpoint: CheckpointId) -> BoxFuture<'_, GatewayResult<()>>;

    /// Checkpoint `checkpoint` of attempt `attempt` of `job` is complete: the job's transactional
    /// sinks here commit it ([`weir_api::runtime::FINAL_CHECKPOINT`]: the job finished, commit
    /// everything). Returns once committed. Refused when the taskmanager does not know that
    /// attempt of the job (then nothing can have been committed here).
    fn notify_checkpoint_complete(
        &self,
        job: JobId,
        attempt: u32,
        checkpoint: CheckpointId,
    ) -> BoxFuture<'_, GatewayResult<()>>;
}
