//! A job's lifecycle as a pure state machine: task events, failures and requests in (each with
//! the time `now`, never read from a clock), job status and commands out.
//!
//! ```text
//! CREATED -> RUNNING -> FINISHED
//!    ^          |  \--> FAILING ----> FAILED
//!    |          |   \-> CANCELLING -> CANCELED
//!    |          v
//!    +----- RESTARTING
//! ```
//! CREATED waits for slots; RUNNING deploys and runs one execution attempt. A job is FINISHED when
//! all its tasks finished. The first failure (a task failed, its taskmanager was lost) cancels the
//! other tasks and, while the restart strategy allows, moves the job to RESTARTING: once every
//! task stopped, a new attempt starts from CREATED. Otherwise it goes through FAILING to FAILED.
//! A task that stops while the job runs without having been asked to (it failed, its
//! taskmanager cancelled it or was lost) is a failure of the attempt.

use crate::plan::ExecutionPlan;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;
use weir_runtime::{FailureKind, JobId, TaskEvent, TaskExecutionState, TaskId};

/// Status of a job, named as Flink names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Accepted, not yet deployed.
    Created,
    /// Tasks are deployed and running.
    Running,
    /// A task failed; the others are being cancelled.
    Failing,
    /// A task failed; the others are being cancelled, then the job runs again.
    Restarting,
    /// Cancellation requested; tasks are being cancelled.
    Cancelling,
    /// Every task finished.
    Finished,
    /// The job failed; see its failure message.
    Failed,
    /// The job was cancelled.
    Canceled,
}

impl JobStatus {
    /// Whether the job will not change status again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Finished | Self::Failed | Self::Canceled)
    }

    /// The Flink-style name, for example `RUNNING`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Running => "RUNNING",
            Self::Failing => "FAILING",
            Self::Restarting => "RESTARTING",
            Self::Cancelling => "CANCELLING",
            Self::Finished => "FINISHED",
            Self::Failed => "FAILED",
            Self::Canceled => "CANCELED",
        }
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the jobmanager must do after a state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobCommand {
    /// Cancel every task of the job on every taskmanager.
    CancelTasks,
    /// The job ended: taskmanagers release its channels and code.
    ReleaseResources,
    /// Every task of the failed attempt stopped: start the next attempt after the delay.
    Restart(std::time::Duration),
    /// Every task finished: the job's transactional sinks commit everything they finished
    /// (then [`Job::final_committed`] or [`Job::final_commit_failed`]).
    CommitFinal,
}

/// The commit of a finished job's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum FinalCommit {
    #[default]
    NotStarted,
    InProgress,
    Done,
}

pub use crate::restart::RestartPolicy;
use crate::restart::RestartTracker;

/// One subtask as the jobmanager tracks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubtaskStatus {
    /// Subtask index.
    pub subtask: u32,
    /// Its state.
    pub state: TaskExecutionState,
    /// The taskmanager running it.
    pub taskmanager: String,
    /// Records into the subtask.
    pub records_in: u64,
    /// Records out of the subtask.
    pub records_out: u64,
    /// How it spent its time lately (over its taskmanager's last heartbeat interval).
    pub time: weir_runtime::TimeShares,
    /// Its input watermark (ms) as of the last heartbeat, once it has one.
    pub input_watermark: Option<i64>,
}

/// A failure of an attempt, as `GET /jobs/{id}/exceptions` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExceptionEntry {
    /// When it happened, ms since the epoch.
    pub timestamp: u64,
    /// What happened.
    pub message: String,
    /// The failed task (`vertex (subtask/parallelism)`), when a task failed.
    pub task_name: Option<String>,
    /// The taskmanager it happened on, when known.
    pub taskmanager: Option<String>,
}

/// Failures kept per job (Flink's `web.exception-history-size`).
const EXCEPTION_HISTORY: usize = 16;

/// A job as the jobmanager tracks it.
#[derive(Debug)]
pub struct Job {
    pub(crate) id: JobId,
    pub(crate) name: String,
    pub(crate) status: JobStatus,
    pub(crate) plan: ExecutionPlan,
    pub(crate) attempt: u32,
    pub(crate) tasks: BTreeMap<TaskId, SubtaskStatus>,
    pub(crate) failure: Option<String>,
    pub(crate) start_time_ms: u64,
    pub(crate) started: Instant,
    pub(crate) ended: Option<Instant>,
    pub(crate) sinks: Vec<String>,
    /// Submission warnings, one line each.
    pub(crate) warnings: Vec<String>,
    /// The attempts' failures, newest first (at most [`EXCEPTION_HISTORY`]).
    pub(crate) exceptions: std::collections::VecDeque<ExceptionEntry>,
    /// Where the failure about to be reported happened (task name, taskmanager), set by the
    /// caller of [`Self::fail`] that knows.
    failure_origin: Option<(Option<String>, Option<String>)>,
    /// The plan as `GET /jobs/{id}/plan` shows it.
    pub(crate) plan_json: std::sync::Arc<serde_json::Value>,
    /// The keyed state backend of the job's tasks.
    pub(crate) state_backend: weir_runtime::checkpoint::StateBackendKind,
    pub(crate) restart: RestartPolicy,
    pub(crate) restarts: u32,
    /// The taskmanager of each slot the current attempt holds.
    pub(crate) slots: Vec<String>,
    /// Failures that caused restarts, oldest first.
    pub(crate) failures: Vec<String>,
    tracker: RestartTracker,
    /// The pause before the next attempt, decided when the attempt failed.
    restart_delay: std::time::Duration,
    final_commit: FinalCommit,
    /// When the running attempt failed (cleared once the next attempt runs).
    failed_at: Option<Instant>,
    /// Time from the latest failure to the next attempt running, ms.
    pub(crate) last_recovery_ms: Option<u64>,
}

impl Job {
    /// A job submitted at `now` (`start_time_ms`: the same moment, ms since the epoch).
    pub(crate) fn new(id: JobId, name: String, plan: ExecutionPlan, now: Instant, start_time_ms: u64) -> Self {
        Self {
            id,
            name,
            status: JobStatus::Created,
            plan,
            attempt: 0,
            tasks: BTreeMap::new(),
            failure: None,
            start_time_ms,
            started: now,
            ended: None,
            sinks: Vec::new(),
            warnings: Vec::new(),
            exceptions: std::collections::VecDeque::new(),
            failure_origin: None,
            plan_json: std::sync::Arc::new(serde_json::Value::Null),
            state_backend: weir_runtime::checkpoint::StateBackendKind::Heap,
            restart: RestartPolicy::default(),
            restarts: 0,
            slots: Vec::new(),
            failures: Vec::new(),
            tracker: RestartTracker::default(),
            restart_delay: std::time::Duration::ZERO,
            final_commit: FinalCommit::NotStarted,
            failed_at: None,
            last_recovery_ms: None,
        }
    }

    /// The job is resumed by a jobmanager that started at `now` (the one that ran it is gone):
    /// its recovery time counts from here.
    pub(crate) fn resumed(&mut self, now: Instant) {
        self.failed_at = Some(now);
    }

    /// The job's transactional sinks committed the output of the finished job.
    pub(crate) fn final_committed(&mut self, now: Instant) -> Vec<JobCommand> {
        if self.status != JobStatus::Running || self.final_commit != FinalCommit::InProgress {
            return Vec::new();
        }
        self.final_commit = FinalCommit::Done;
        self.settle(now).into_iter().collect()
    }

    /// Committing the finished job's output failed: the attempt failed (its output is redone
    /// from the latest checkpoint if the restart strategy allows).
    pub(crate) fn final_commit_failed(&mut self, message: String, now: Instant) -> Vec<JobCommand> {
        if self.final_commit != FinalCommit::InProgress {
            return Vec::new();
        }
        self.final_commit = FinalCommit::NotStarted;
        self.fail(format!("committing the job's output failed: {message}"), now)
    }

    /// Moves to `to` if the lifecycle allows it; returns whether it moved.
    fn transition(&mut self, to: JobStatus, now: Instant) -> bool {
        use JobStatus::*;
        let allowed = matches!(
            (self.status, to),
            (Created, Running | Failed | Canceled)
                | (Running, Finished | Failing | Cancelling | Restarting)
                | (Restarting, Created | Cancelling | Failing)
                | (Failing, Failed)
                | (Cancelling, Canceled)
        );
        if allowed {
            self.status = to;
            if to.is_terminal() {
                self.ended = Some(now);
                self.slots.clear();
            }
        }
        allowed
    }

    /// Records that `task` was deployed to `taskmanager`.
    pub(crate) fn task_deployed(&mut self, task: TaskId, taskmanager: &str) {
        self.tasks.insert(
            task,
            SubtaskStatus {
                subtask: task.subtask,
                state: TaskExecutionState::Deploying,
                taskmanager: taskmanager.to_owned(),
                records_in: 0,
                records_out: 0,
                time: weir_runtime::TimeShares::default(),
                input_watermark: None,
            },
        );
    }

    /// Slots were allocated on `slots` (a taskmanager id per slot): the attempt starts deploying.
    pub(crate) fn scheduled(&mut self, slots: Vec<String>, now: Instant) -> bool {
        let moved = self.transition(JobStatus::Running, now);
        if moved {
            self.slots = slots;
            self.tracker.attempt_started(now);
        }
        moved
    }

    /// The job could not get its slots in time.
    pub(crate) fn scheduling_failed(&mut self, message: String, now: Instant) {
        self.failure.get_or_insert(message);
        self.transition(JobStatus::Failed, now);
    }

    /// The current attempt failed: restart if the policy allows, else fail. Returns the commands
    /// to carry out.
    pub(crate) fn fail(&mut self, message: String, now: Instant) -> Vec<JobCommand> {
        let origin = self.failure_origin.take();
        if self.status == JobStatus::Running {
            self.record_exception(&message, origin);
        }
        if self.status != JobStatus::Running {
            // Already failing, restarting or cancelling: the failure may still have been the
            // last task to stop.
            return self.settle(now).into_iter().collect();
        }
        self.failed_at = Some(now);
        if let Some(delay) = self.tracker.on_failure(&self.restart, now) {
            self.restart_delay = delay;
            self.failures.push(message);
            self.transition(JobStatus::Restarting, now);
        } else {
            self.failure.get_or_insert(message);
            self.transition(JobStatus::Failing, now);
        }
        let mut commands = vec![JobCommand::CancelTasks];
        commands.extend(self.settle(now));
        commands
    }

    /// Keeps the root cause of an attempt's failure for the exception history.
    fn record_exception(&mut self, message: &str, origin: Option<(Option<String>, Option<String>)>) {
        let (task_name, taskmanager) = origin.unwrap_or_default();
        let timestamp = crate::jobmanager::epoch_ms();
        self.exceptions.push_front(ExceptionEntry { timestamp, message: message.to_owned(), task_name, taskmanager });
        self.exceptions.truncate(EXCEPTION_HISTORY);
    }

    /// The attempt failed in a way no restart can cure (the job as written cannot run): the job
    /// fails, whatever the restart strategy says.
    pub(crate) fn fail_without_restart(&mut self, message: String, now: Instant) -> Vec<JobCommand> {
        let origin = self.failure_origin.take();
        if self.status == JobStatus::Running {
            self.record_exception(&message, origin);
        }
        if self.status == JobStatus::Running {
            self.failure.get_or_insert(message);
            self.transition(JobStatus::Failing, now);
            let mut commands = vec![JobCommand::CancelTasks];
            commands.extend(self.settle(now));
            return commands;
        }
        if self.status == JobStatus::Restarting {
            // A restart was already due: it is not any more.
            self.failure.get_or_insert(message);
            self.transition(JobStatus::Failing, now);
        }
        self.settle(now).into_iter().collect()
    }

    /// Deploying `failed` failed and `never_deployed` were not deployed at all: none of them
    /// will report, so they count as stopped; the attempt fails.
    pub(crate) fn deployment_failed(
        &mut self,
        failed: TaskId,
        never_deployed: &[TaskId],
        message: String,
        now: Instant,
    ) -> Vec<JobCommand> {
        for (task, state) in std::iter::once((&failed, TaskExecutionState::Failed))
            .chain(never_deployed.iter().map(|t| (t, TaskExecutionState::Canceled)))
        {
            if let Some(t) = self.tasks.get_mut(task).filter(|t| !t.state.is_terminal()) {
                t.state = state;
            }
        }
        self.fail(message, now)
    }

    /// `task` was never deployed (its attempt was cancelled first): it will not report, so it
    /// counts as cancelled.
    pub(crate) fn task_not_deployed(&mut self, task: TaskId, now: Instant) -> Vec<JobCommand> {
        if task.attempt != self.attempt {
            return Vec::new();
        }
        if let Some(t) = self.tasks.get_mut(&task).filter(|t| !t.state.is_terminal()) {
            t.state = TaskExecutionState::Canceled;
        }
        self.settle(now).into_iter().collect()
    }

    /// Starts the next execution attempt (after RESTARTING): back to CREATED, tasks forgotten.
    pub(crate) fn next_attempt(&mut self, now: Instant) -> bool {
        if !self.transition(JobStatus::Created, now) {
            return false;
        }
        self.attempt += 1;
        self.restarts += 1;
        self.tasks.clear();
        self.slots.clear();
        self.final_commit = FinalCommit::NotStarted;
        true
    }

    /// The taskmanager `taskmanager` is gone: its tasks are lost, which fails the attempt.
    pub(crate) fn taskmanager_lost(&mut self, taskmanager: &str, reason: &str, now: Instant) -> Vec<JobCommand> {
        if !self.slots.iter().any(|s| s == taskmanager) {
            return Vec::new();
        }
        for task in self.tasks.values_mut().filter(|t| t.taskmanager == taskmanager && !t.state.is_terminal()) {
            task.state = TaskExecutionState::Failed;
        }
        self.failure_origin = Some((None, Some(taskmanager.to_owned())));
        self.fail(format!("taskmanager {taskmanager} lost: {reason}"), now)
    }

    /// The user asked to cancel.
    pub(crate) fn cancel(&mut self, now: Instant) -> Result<Option<JobCommand>, JobStatus> {
        match self.status {
            JobStatus::Created => {
                self.transition(JobStatus::Canceled, now);
                Ok(None)
            }
            JobStatus::Running | JobStatus::Restarting => {
                self.transition(JobStatus::Cancelling, now);
                self.settle(now);
                Ok(Some(JobCommand::CancelTasks))
            }
            JobStatus::Cancelling => Ok(None),
            other => Err(other),
        }
    }

    /// Updates a running task's counters (from a heartbeat).
    pub(crate) fn task_metrics(&mut self, heartbeat: &weir_runtime::HeartbeatTask) {
        if let Some(t) = self.tasks.get_mut(&heartbeat.task).filter(|t| !t.state.is_terminal()) {
            t.records_in = heartbeat.records_in;
            t.records_out = heartbeat.records_out;
            t.time = heartbeat.time;
            t.input_watermark = heartbeat.input_watermark.or(t.input_watermark);
        }
    }

    /// Applies a task's state change.
    pub(crate) fn on_task_event(&mut self, event: &TaskEvent, now: Instant) -> Vec<JobCommand> {
        if event.task.attempt != self.attempt {
            return Vec::new();
        }
        let Some(task) = self.tasks.get_mut(&event.task) else {
            return Vec::new();
        };
        if task.state.is_terminal() {
            return Vec::new();
        }
        task.state = event.state;
        task.records_in = event.records_in;
        task.records_out = event.records_out;
        let vertex = self.plan.vertices.get(event.task.vertex as usize).map_or("?", |v| v.name.as_str());
        let parallelism = self.plan.vertices.get(event.task.vertex as usize).map_or(0, |v| v.parallelism);
        let task_name = format!("{vertex} ({}/{parallelism})", event.task.subtask + 1);
        self.failure_origin = Some((Some(task_name), Some(task.taskmanager.clone())));
        if event.state == TaskExecutionState::Failed {
            let message = format!(
                "task {} of '{vertex}' failed: {}",
                event.task.subtask,
                event.failure.as_deref().unwrap_or("unknown failure")
            );
            if event.failure_kind == FailureKind::Unrecoverable {
                return self.fail_without_restart(message, now);
            }
            return self.fail(message, now);
        }
        if event.state == TaskExecutionState::Canceled && self.status == JobStatus::Running {
            // Nobody asked for it (the job is not cancelling): a failure of the attempt, which
            // the restart strategy handles.
            let message = format!("task {} of '{vertex}' was cancelled by its taskmanager", event.task.subtask);
            return self.fail(message, now);
        }
        // No failure of this task: its origin must not be pinned on a later one.
        self.failure_origin = None;
        if event.state == TaskExecutionState::Running
            && self.status == JobStatus::Running
            && let Some(failed_at) = self.failed_at
            && self.tasks.len() == self.plan.task_count()
            && self.tasks.values().all(|t| t.state == TaskExecutionState::Running)
        {
            let recovery_ms = now.saturating_duration_since(failed_at).as_millis() as u64;
            self.failed_at = None;
            self.last_recovery_ms = Some(recovery_ms);
            tracing::info!(job_id = %self.id, attempt = self.attempt, recovery_ms, "the job is running again after a failure");
        }
        self.settle(now).into_iter().collect()
    }

    /// Completes the attempt once every task stopped.
    fn settle(&mut self, now: Instant) -> Option<JobCommand> {
        if self.tasks.is_empty() || !self.tasks.values().all(|t| t.state.is_terminal()) {
            return None;
        }
        match self.status {
            JobStatus::Running if self.tasks.values().all(|t| t.state == TaskExecutionState::Finished) => {
                match self.final_commit {
                    FinalCommit::NotStarted => {
                        self.final_commit = FinalCommit::InProgress;
                        return Some(JobCommand::CommitFinal);
                    }
                    FinalCommit::InProgress => {}
                    FinalCommit::Done => {
                        self.transition(JobStatus::Finished, now);
                    }
                }
            }
            JobStatus::Running => {
                self.failure.get_or_insert_with(|| "tasks stopped without finishing".to_owned());
                self.transition(JobStatus::Failing, now);
                self.transition(JobStatus::Failed, now);
            }
            JobStatus::Failing => {
                self.transition(JobStatus::Failed, now);
            }
            JobStatus::Cancelling => {
                self.transition(JobStatus::Canceled, now);
            }
            JobStatus::Restarting => return Some(JobCommand::Restart(self.restart_delay)),
            _ => {}
        }
        None
    }

    /// Whether every task of the current attempt is deployed and running or finished, with at
    /// least one running: the attempt can take a checkpoint.
    pub(crate) fn can_checkpoint(&self) -> bool {
        self.status == JobStatus::Running
            && self.tasks.len() == self.plan.task_count()
            && self
                .tasks
                .values()
                .all(|t| matches!(t.state, TaskExecutionState::Running | TaskExecutionState::Finished))
            && self.tasks.values().any(|t| t.state == TaskExecutionState::Running)
    }

    /// The taskmanagers that run (or ran) tasks of the current attempt, by id.
    pub(crate) fn attempt_taskmanagers(&self) -> std::collections::BTreeSet<String> {
        self.tasks.values().map(|t| t.taskmanager.clone()).collect()
    }

    /// A serializable snapshot as of `now`.
    pub fn details(&self, now: Instant) -> JobDetails {
        let vertices = self
            .plan
            .vertices
            .iter()
            .map(|v| {
                let subtasks: Vec<SubtaskStatus> =
                    self.tasks.iter().filter(|(id, _)| id.vertex == v.id).map(|(_, t)| t.clone()).collect();
                VertexDetails {
                    id: v.id,
                    name: v.name.clone(),
                    parallelism: v.parallelism,
                    is_source: v.is_source,
                    records_in: subtasks.iter().map(|t| t.records_in).sum(),
                    records_out: subtasks.iter().map(|t| t.records_out).sum(),
                    subtasks,
                }
            })
            .collect::<Vec<_>>();
        let end = self.ended.unwrap_or(now);
        JobDetails {
            jid: self.id.to_string(),
            name: self.name.clone(),
            state: self.status,
            start_time: self.start_time_ms,
            duration_ms: end.duration_since(self.started).as_millis() as u64,
            failure: self.failure.clone(),
            attempt: self.attempt,
            restarts: self.restarts,
            restart_failures: self.failures.clone(),
            exceptions: self.exceptions.iter().cloned().collect(),
            last_recovery_time_ms: self.last_recovery_ms,
            source_records: vertices.iter().filter(|v| v.is_source).map(|v| v.records_in).sum(),
            sinks: self.sinks.clone(),
            warnings: self.warnings.clone(),
            state_backend: self.state_backend.to_string(),
            vertices,
        }
    }
}

/// A vertex of a job, as reported by `GET /jobs/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct VertexDetails {
    /// Vertex index.
    pub id: u32,
    /// Chained operator names.
    pub name: String,
    /// Number of subtasks.
    pub parallelism: u32,
    /// Whether the vertex starts with a source.
    pub is_source: bool,
    /// Records into the vertex's subtasks.
    pub records_in: u64,
    /// Records out of the vertex's subtasks.
    pub records_out: u64,
    /// Its subtasks.
    pub subtasks: Vec<SubtaskStatus>,
}

/// A job, as reported by `GET /jobs/{id}` (field names as Flink's REST API where they exist).
#[derive(Debug, Clone, Serialize)]
pub struct JobDetails {
    /// Job id.
    pub jid: String,
    /// Job name.
    pub name: String,
    /// Status.
    pub state: JobStatus,
    /// Submission time, ms since the epoch.
    pub start_time: u64,
    /// Time from submission to the end (or to now).
    pub duration_ms: u64,
    /// Why the job failed.
    pub failure: Option<String>,
    /// Current execution attempt (0 for the first).
    pub attempt: u32,
    /// How often the job restarted.
    pub restarts: u32,
    /// The failures that made it restart, oldest first.
    pub restart_failures: Vec<String>,
    /// The attempts' failures, newest first, with time, task and taskmanager (at most 16).
    pub exceptions: Vec<ExceptionEntry>,
    /// Time from the latest failure detected to all tasks of the next attempt running, ms.
    pub last_recovery_time_ms: Option<u64>,
    /// Records produced by the job's sources.
    pub source_records: u64,
    /// Where the job's sinks write, one line each (for example `counts: text files in /tmp/out`).
    pub sinks: Vec<String>,
    /// What may go wrong with the job as configured (found at submission), one line each.
    pub warnings: Vec<String>,
    /// The keyed state backend: `heap` or `rocksdb`.
    pub state_backend: String,
    /// Vertices.
    pub vertices: Vec<VertexDetails>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ExecutionPlan, ExecutionVertex};
    use weir_api::graph::ChainSpec;

    fn job(parallelism: u32) -> Job {
        let vertex = ExecutionVertex {
            id: 0,
            name: "v".into(),
            parallelism,
            chain: ChainSpec { head: 0, nodes: vec![0], chained_edges: vec![], outputs: vec![] },
            inputs: vec![],
            is_source: true,
            uids: vec!["source".into()],
            subtask_state: vec![crate::plan::SubtaskState { uid: "source".into(), rescales: true }],
            states: Default::default(),
        };
        let mut j = Job::new(
            JobId::random(),
            "j".into(),
            ExecutionPlan { vertices: vec![vertex], max_parallelism: 128 },
            now(),
            0,
        );
        assert!(j.scheduled(vec!["tm".into(); parallelism as usize], now()));
        for subtask in 0..parallelism {
            j.task_deployed(TaskId { job: j.id, attempt: 0, vertex: 0, subtask }, "tm");
        }
        j
    }

    fn now() -> Instant {
        Instant::now()
    }

    fn event(j: &Job, subtask: u32, state: TaskExecutionState) -> TaskEvent {
        TaskEvent {
            failure: (state == TaskExecutionState::Failed).then(|| "boom".to_owned()),
            ..TaskEvent::new(TaskId { job: j.id, attempt: 0, vertex: 0, subtask }, state, 5, 5)
        }
    }

    #[test]
    fn finishes_when_all_tasks_finish() {
        let mut j = job(2);
        assert_eq!(j.on_task_event(&event(&j, 0, TaskExecutionState::Finished), now()), vec![]);
        assert_eq!(j.status, JobStatus::Running);
        // Every task finished: the sinks commit the output before the job is FINISHED.
        assert_eq!(j.on_task_event(&event(&j, 1, TaskExecutionState::Finished), now()), vec![JobCommand::CommitFinal]);
        assert_eq!(j.status, JobStatus::Running);
        assert_eq!(j.on_task_event(&event(&j, 1, TaskExecutionState::Finished), now()), vec![], "asked once");
        assert_eq!(j.final_committed(now()), vec![]);
        assert_eq!(j.status, JobStatus::Finished);
        assert_eq!(j.details(now()).source_records, 10);
    }

    #[test]
    fn a_failed_final_commit_fails_the_attempt() {
        let mut j = job(1);
        j.restart = RestartPolicy::fixed_delay(1, std::time::Duration::from_millis(5));
        assert_eq!(j.on_task_event(&event(&j, 0, TaskExecutionState::Finished), now()), vec![JobCommand::CommitFinal]);
        let commands = j.final_commit_failed("disk full".into(), now());
        assert_eq!(commands, vec![JobCommand::CancelTasks, JobCommand::Restart(std::time::Duration::from_millis(5))]);
        assert_eq!(j.status, JobStatus::Restarting);
        assert!(j.failures[0].contains("committing the job's output failed: disk full"));
        assert_eq!(j.final_committed(now()), vec![], "a late commit report changes nothing");
    }

    #[test]
    fn a_failure_cancels_the_rest_then_fails_with_the_message() {
        let mut j = job(2);
        assert_eq!(j.on_task_event(&event(&j, 0, TaskExecutionState::Failed), now()), vec![JobCommand::CancelTasks]);
        assert_eq!(j.status, JobStatus::Failing);
        j.on_task_event(&event(&j, 1, TaskExecutionState::Canceled), now());
        assert_eq!(j.status, JobStatus::Failed);
        assert!(j.failure.as_deref().unwrap().contains("boom"));
    }

    #[test]
    fn cancel_is_only_possible_while_running() {
        let mut j = job(1);
        assert_eq!(j.cancel(now()), Ok(Some(JobCommand::CancelTasks)));
        j.on_task_event(&event(&j, 0, TaskExecutionState::Canceled), now());
        assert_eq!(j.status, JobStatus::Canceled);
        assert_eq!(j.cancel(now()), Err(JobStatus::Canceled));
    }

    #[test]
    fn events_of_old_attempts_and_after_the_end_are_ignored() {
        let mut j = job(1);
        let mut old = event(&j, 0, TaskExecutionState::Failed);
        old.task.attempt = 7;
        assert_eq!(j.on_task_event(&old, now()), vec![]);
        j.on_task_event(&event(&j, 0, TaskExecutionState::Finished), now());
        j.final_committed(now());
        assert_eq!(j.on_task_event(&event(&j, 0, TaskExecutionState::Failed), now()), vec![]);
        assert_eq!(j.status, JobStatus::Finished);
    }

    #[test]
    fn a_failure_restarts_while_the_policy_allows_then_fails() {
        let mut j = job(2);
        j.restart = RestartPolicy::fixed_delay(1, std::time::Duration::from_millis(5));
        assert_eq!(j.on_task_event(&event(&j, 0, TaskExecutionState::Failed), now()), vec![JobCommand::CancelTasks]);
        assert_eq!(j.status, JobStatus::Restarting);
        assert_eq!(
            j.on_task_event(&event(&j, 1, TaskExecutionState::Canceled), now()),
            vec![JobCommand::Restart(std::time::Duration::from_millis(5))]
        );
        assert!(j.next_attempt(now()));
        assert_eq!((j.status, j.attempt, j.restarts), (JobStatus::Created, 1, 1));
        assert!(j.scheduled(vec!["tm".into(); 2], now()));
        for subtask in 0..2 {
            j.task_deployed(TaskId { job: j.id, attempt: 1, vertex: 0, subtask }, "tm");
        }
        // The second failure exhausts the policy.
        let mut failed = event(&j, 0, TaskExecutionState::Failed);
        failed.task.attempt = 1;
        assert_eq!(j.on_task_event(&failed, now()), vec![JobCommand::CancelTasks]);
        assert_eq!(j.status, JobStatus::Failing);
        assert_eq!(j.details(now()).restart_failures.len(), 1);
        // Both failures are in the exception history, newest first, with task and taskmanager;
        // the cancelled subtask of the first attempt (not a failure) is not.
        let exceptions = j.details(now()).exceptions;
        assert_eq!(exceptions.len(), 2, "{exceptions:?}");
        for e in &exceptions {
            assert_eq!((e.task_name.as_deref(), e.taskmanager.as_deref()), (Some("v (1/2)"), Some("tm")), "{e:?}");
        }
        assert!(exceptions[0].timestamp >= exceptions[1].timestamp);
    }

    #[test]
    fn a_task_cancelled_by_its_own_taskmanager_fails_the_attempt_and_the_job_restarts() {
        // Regression: a taskmanager that lost the jobmanager cancelled its tasks, and the job,
        // seeing tasks stop unasked, went FAILED without its restart strategy.
        let mut j = job(2);
        j.restart = RestartPolicy::fixed_delay(1, std::time::Duration::from_millis(5));
        assert_eq!(j.on_task_event(&event(&j, 0, TaskExecutionState::Canceled), now()), vec![JobCommand::CancelTasks]);
        assert_eq!(j.status, JobStatus::Restarting);
        assert!(j.failures[0].contains("was cancelled by its taskmanager"), "{:?}", j.failures);
        let commands = j.on_task_event(&event(&j, 1, TaskExecutionState::Canceled), now());
        assert_eq!(commands, vec![JobCommand::Restart(std::time::Duration::from_millis(5))]);
    }

    #[test]
    fn an_unrecoverable_task_failure_fails_the_job_whatever_the_restart_strategy() {
        let mut j = job(2);
        j.restart = RestartPolicy::default_for(true);
        let unrecoverable =
            TaskEvent { failure_kind: FailureKind::Unrecoverable, ..event(&j, 0, TaskExecutionState::Failed) };
        assert_eq!(j.on_task_event(&unrecoverable, now()), vec![JobCommand::CancelTasks]);
        assert_eq!(j.status, JobStatus::Failing);
        j.on_task_event(&event(&j, 1, TaskExecutionState::Canceled), now());
        assert_eq!(j.status, JobStatus::Failed);
        assert!(j.failure.as_deref().unwrap().contains("boom"));
        // Also when it comes second, after an ordinary failure made the job restart.
        let mut j = job(2);
        j.restart = RestartPolicy::default_for(true);
        j.on_task_event(&event(&j, 0, TaskExecutionState::Failed), now());
        assert_eq!(j.status, JobStatus::Restarting);
        let unrecoverable =
            TaskEvent { failure_kind: FailureKind::Unrecoverable, ..event(&j, 1, TaskExecutionState::Failed) };
        assert_eq!(j.on_task_event(&unrecoverable, now()), vec![]);
        assert_eq!(j.status, JobStatus::Failed);
    }

    #[test]
    fn losing_a_taskmanager_while_failing_completes_the_failure() {
        // Regression: a job stayed FAILING when the lost taskmanager held its last running tasks.
        let mut j = Job::new(JobId::random(), "j".into(), job(2).plan.clone(), now(), 0);
        assert!(j.scheduled(vec!["a".into(), "b".into()], now()));
        j.task_deployed(TaskId { job: j.id, attempt: 0, vertex: 0, subtask: 0 }, "a");
        j.task_deployed(TaskId { job: j.id, attempt: 0, vertex: 0, subtask: 1 }, "b");
        assert_eq!(j.on_task_event(&event(&j, 0, TaskExecutionState::Failed), now()), vec![JobCommand::CancelTasks]);
        assert_eq!(j.status, JobStatus::Failing);
        j.taskmanager_lost("b", "no heartbeat", now());
        assert_eq!(j.status, JobStatus::Failed);
    }

    #[test]
    fn a_failed_deployment_counts_undeployed_tasks_as_stopped() {
        // Regression: tasks after a failed deploy call stayed DEPLOYING and the job FAILING.
        let mut j = job(3);
        let task = |subtask| TaskId { job: j.id, attempt: 0, vertex: 0, subtask };
        let (t0, t1, t2) = (task(0), task(1), task(2));
        j.on_task_event(&TaskEvent::new(t0, TaskExecutionState::Running, 0, 0), now());
        assert_eq!(j.deployment_failed(t1, &[t2], "unreachable".into(), now()), vec![JobCommand::CancelTasks]);
        assert_eq!(j.status, JobStatus::Failing);
        j.on_task_event(&event(&j, 0, TaskExecutionState::Canceled), now());
        assert_eq!(j.status, JobStatus::Failed);
    }

    #[test]
    fn losing_a_taskmanager_fails_its_tasks_and_the_attempt() {
        let mut j = job(1);
        assert_eq!(j.taskmanager_lost("other", "no heartbeat", now()), vec![]);
        let commands = j.taskmanager_lost("tm", "no heartbeat for 5 s", now());
        assert_eq!(commands, vec![JobCommand::CancelTasks]);
        assert_eq!(j.status, JobStatus::Failed, "its only task is lost, so the attempt is over at once");
        assert!(j.failure.as_deref().unwrap().contains("taskmanager tm lost"));
    }
}
