//! A job's lifecycle as a state machine: task events in, job status and commands out.
//!
//! ```text
//! CREATED -> RUNNING -> FINISHED
//!               |  \--> FAILING ----> FAILED
//!               \-----> CANCELLING -> CANCELED
//! ```
//! A job is FINISHED when all its tasks finished; the first task failure moves it to FAILING
//! (the rest are cancelled) and it is FAILED once every task stopped; likewise for cancellation.

use crate::plan::ExecutionPlan;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use weir_runtime::{JobId, TaskEvent, TaskExecutionState, TaskId};

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobCommand {
    /// Cancel every task of the job on every taskmanager.
    CancelTasks,
}

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
}

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
}

impl Job {
    pub(crate) fn new(id: JobId, name: String, plan: ExecutionPlan) -> Self {
        let start_time_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Self {
            id,
            name,
            status: JobStatus::Created,
            plan,
            attempt: 0,
            tasks: BTreeMap::new(),
            failure: None,
            start_time_ms,
            started: Instant::now(),
            ended: None,
            sinks: Vec::new(),
        }
    }

    /// Moves to `to` if the lifecycle allows it; returns whether it moved.
    fn transition(&mut self, to: JobStatus) -> bool {
        use JobStatus::*;
        let allowed = match (self.status, to) {
            (Created, Running | Failed | Canceled) => true,
            (Running, Finished | Failing | Cancelling) => true,
            (Failing, Failed) | (Cancelling, Canceled) => true,
            (Cancelling, Failing) => false,
            _ => false,
        };
        if allowed {
            self.status = to;
            if to.is_terminal() {
                self.ended = Some(Instant::now());
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
            },
        );
    }

    /// All tasks are deployed.
    pub(crate) fn deployed(&mut self) -> bool {
        self.transition(JobStatus::Running)
    }

    /// Deployment failed before the job ran.
    pub(crate) fn deployment_failed(&mut self, message: String) -> Option<JobCommand> {
        self.failure.get_or_insert(message);
        if self.status == JobStatus::Created {
            self.transition(JobStatus::Running);
        }
        self.fail_running()
    }

    fn fail_running(&mut self) -> Option<JobCommand> {
        if self.transition(JobStatus::Failing) {
            self.settle();
            Some(JobCommand::CancelTasks)
        } else {
            None
        }
    }

    /// The user asked to cancel.
    pub(crate) fn cancel(&mut self) -> Result<Option<JobCommand>, JobStatus> {
        match self.status {
            JobStatus::Created => {
                self.transition(JobStatus::Canceled);
                Ok(None)
            }
            JobStatus::Running => {
                self.transition(JobStatus::Cancelling);
                self.settle();
                Ok(Some(JobCommand::CancelTasks))
            }
            JobStatus::Cancelling => Ok(None),
            other => Err(other),
        }
    }

    /// Applies a task's state change.
    pub(crate) fn on_task_event(&mut self, event: &TaskEvent) -> Option<JobCommand> {
        if event.task.attempt != self.attempt {
            return None;
        }
        let task = self.tasks.get_mut(&event.task)?;
        if task.state.is_terminal() {
            return None;
        }
        task.state = event.state;
        task.records_in = event.records_in;
        task.records_out = event.records_out;
        let command = match event.state {
            TaskExecutionState::Failed => {
                self.failure.get_or_insert_with(|| {
                    format!(
                        "task {} of vertex {} failed: {}",
                        event.task.subtask,
                        event.task.vertex,
                        event.failure.as_deref().unwrap_or("unknown failure")
                    )
                });
                self.fail_running()
            }
            _ => None,
        };
        self.settle();
        command
    }

    /// Completes FAILING/CANCELLING/RUNNING once every task stopped.
    fn settle(&mut self) {
        if !self.tasks.values().all(|t| t.state.is_terminal()) {
            return;
        }
        match self.status {
            JobStatus::Running if self.tasks.values().all(|t| t.state == TaskExecutionState::Finished) => {
                self.transition(JobStatus::Finished);
            }
            JobStatus::Running => {
                self.failure.get_or_insert_with(|| "tasks stopped without finishing".to_owned());
                self.transition(JobStatus::Failing);
                self.transition(JobStatus::Failed);
            }
            JobStatus::Failing => {
                self.transition(JobStatus::Failed);
            }
            JobStatus::Cancelling => {
                self.transition(JobStatus::Canceled);
            }
            _ => {}
        }
    }

    /// A serializable snapshot.
    pub fn details(&self) -> JobDetails {
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
        let end = self.ended.unwrap_or_else(Instant::now);
        JobDetails {
            jid: self.id.to_string(),
            name: self.name.clone(),
            state: self.status,
            start_time: self.start_time_ms,
            duration_ms: end.duration_since(self.started).as_millis() as u64,
            failure: self.failure.clone(),
            source_records: vertices.iter().filter(|v| v.is_source).map(|v| v.records_in).sum(),
            sinks: self.sinks.clone(),
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
    /// Records produced by the job's sources.
    pub source_records: u64,
    /// Where the job's sinks write, one line each (for example `counts: text files in /tmp/out`).
    pub sinks: Vec<String>,
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
        };
        let mut j =
            Job::new(JobId::random(), "j".into(), ExecutionPlan { vertices: vec![vertex], max_parallelism: 128 });
        for subtask in 0..parallelism {
            j.task_deployed(TaskId { job: j.id, attempt: 0, vertex: 0, subtask }, "tm");
        }
        assert!(j.deployed());
        j
    }

    fn event(j: &Job, subtask: u32, state: TaskExecutionState) -> TaskEvent {
        TaskEvent {
            task: TaskId { job: j.id, attempt: 0, vertex: 0, subtask },
            state,
            failure: (state == TaskExecutionState::Failed).then(|| "boom".to_owned()),
            records_in: 5,
            records_out: 5,
        }
    }

    #[test]
    fn finishes_when_all_tasks_finish() {
        let mut j = job(2);
        assert_eq!(j.on_task_event(&event(&j, 0, TaskExecutionState::Finished)), None);
        assert_eq!(j.status, JobStatus::Running);
        j.on_task_event(&event(&j, 1, TaskExecutionState::Finished));
        assert_eq!(j.status, JobStatus::Finished);
        assert_eq!(j.details().source_records, 10);
    }

    #[test]
    fn a_failure_cancels_the_rest_then_fails_with_the_message() {
        let mut j = job(2);
        assert_eq!(j.on_task_event(&event(&j, 0, TaskExecutionState::Failed)), Some(JobCommand::CancelTasks));
        assert_eq!(j.status, JobStatus::Failing);
        j.on_task_event(&event(&j, 1, TaskExecutionState::Canceled));
        assert_eq!(j.status, JobStatus::Failed);
        assert!(j.failure.as_deref().unwrap().contains("boom"));
    }

    #[test]
    fn cancel_is_only_possible_while_running() {
        let mut j = job(1);
        assert_eq!(j.cancel(), Ok(Some(JobCommand::CancelTasks)));
        j.on_task_event(&event(&j, 0, TaskExecutionState::Canceled));
        assert_eq!(j.status, JobStatus::Canceled);
        assert_eq!(j.cancel(), Err(JobStatus::Canceled));
    }

    #[test]
    fn events_of_old_attempts_and_after_the_end_are_ignored() {
        let mut j = job(1);
        let mut old = event(&j, 0, TaskExecutionState::Failed);
        old.task.attempt = 7;
        assert_eq!(j.on_task_event(&old), None);
        j.on_task_event(&event(&j, 0, TaskExecutionState::Finished));
        assert_eq!(j.on_task_event(&event(&j, 0, TaskExecutionState::Failed)), None);
        assert_eq!(j.status, JobStatus::Finished);
    }
}
