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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TaskExecutionState {
    /// Accepted; the chain is being instantiated.
    Deploying,
    /// Processing.
    Running,
    /// Its inputs ended and everything it produced is handed on (sinks: committed).
    Finished,
    /// Failed; the failure message says why.
    Failed,
    /// Cancelled on request.
    Canceled,
}

impl TaskExecutionState {
    /// Whether the task will not change state again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Finished | Self::Failed | Self::Canceled)
    }
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
    /// Records that entered the task so far.
    pub records_in: u64,
    /// Records that left the task so far.
    pub records_out: u64,
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

/// The jobmanager's handle on one taskmanager.
pub trait TaskManagerGateway: Send + Sync {
    /// The taskmanager's id.
    fn id(&self) -> &str;

    /// Number of task slots it offers.
    fn slots(&self) -> u32;

    /// Starts a task; returns once the taskmanager accepted it (it then reports its states).
    fn deploy(&self, deployment: TaskDeployment, artifact: JobArtifact) -> BoxFuture<'_, Result<(), String>>;

    /// Cancels every task of `job` on this taskmanager.
    fn cancel_job(&self, job: JobId) -> BoxFuture<'_, Result<(), String>>;

    /// Releases everything `job` holds here (channels, loaded code) once its last task stopped.
    /// Called by the jobmanager when the job reached a terminal state: a taskmanager never
    /// releases a job on its own, since more of its tasks may still be deployed.
    fn release_job(&self, job: JobId) -> BoxFuture<'_, Result<(), String>>;

    /// Starts checkpoint `barrier` at the source tasks of attempt `attempt` of `job` running
    /// here; returns how many were triggered.
    fn trigger_checkpoint(
        &self,
        job: JobId,
        attempt: u32,
        barrier: CheckpointBarrier,
    ) -> BoxFuture<'_, Result<u32, String>>;

    /// Checkpoint `checkpoint` of attempt `attempt` of `job` is complete: the job's transactional
    /// sinks here commit it ([`weir_api::runtime::FINAL_CHECKPOINT`]: the job finished, commit
    /// everything). Returns once committed.
    fn notify_checkpoint_complete(
        &self,
        job: JobId,
        attempt: u32,
        checkpoint: CheckpointId,
    ) -> BoxFuture<'_, Result<(), String>>;
}
