//! The jobmanager component: accepts jobs, plans and deploys them onto taskmanagers' slots, and
//! tracks their lifecycle from task events. Transport-independent: taskmanagers are reached
//! through [`TaskManagerGateway`]s, and report through the [`TaskEventSink`] this component is.

use crate::error::{Error, Result};
use crate::job::{Job, JobCommand, JobDetails, JobStatus};
use crate::plan::plan;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;
use tracing::{error, info, warn};
use weir_runtime::{
    JobArtifact, JobId, LoadedJob, TaskDeployment, TaskEvent, TaskEventSink, TaskId, TaskManagerGateway,
};

/// A job to run.
#[derive(Debug, Clone)]
pub struct JobSubmission {
    /// The job's code.
    pub artifact: JobArtifact,
    /// Arguments of its build function.
    pub args: Vec<String>,
    /// Parallelism for operators that set none (the job may override it).
    pub parallelism: u32,
}

struct JobEntry {
    job: Job,
    artifact: JobArtifact,
    status: watch::Sender<JobStatus>,
}

#[derive(Default)]
struct State {
    taskmanagers: Vec<Arc<dyn TaskManagerGateway>>,
    jobs: HashMap<JobId, JobEntry>,
}

struct Shared {
    state: Mutex<State>,
    runtime: tokio::runtime::Handle,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent enough to report on.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The jobmanager. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct JobManager {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for JobManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobManager").finish_non_exhaustive()
    }
}

impl TaskEventSink for Shared {
    fn task_event(&self, event: TaskEvent) {
        let mut state = self.lock();
        let Some(entry) = state.jobs.get_mut(&event.task.job) else {
            return;
        };
        let command = entry.job.on_task_event(&event);
        let _ = entry.status.send(entry.job.status);
        if let Some(failure) = &event.failure {
            warn!(job_id = %event.task.job, vertex = event.task.vertex, subtask = event.task.subtask, "task failed: {failure}");
        }
        if entry.job.status.is_terminal() {
            info!(job_id = %event.task.job, status = %entry.job.status, "job reached a terminal state");
        }
        if let Some(command) = command {
            let taskmanagers = state.taskmanagers.clone();
            let job = event.task.job;
            self.runtime.spawn(execute(command, job, taskmanagers));
        }
    }
}

async fn execute(command: JobCommand, job: JobId, taskmanagers: Vec<Arc<dyn TaskManagerGateway>>) {
    match command {
        JobCommand::CancelTasks => {
            for tm in taskmanagers {
                if let Err(e) = tm.cancel_job(job).await {
                    error!(job_id = %job, taskmanager = tm.id(), "cannot cancel the job's tasks: {e}");
                }
            }
        }
    }
}

impl Default for JobManager {
    fn default() -> Self {
        Self::new()
    }
}

impl JobManager {
    /// A jobmanager that runs its background work on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                runtime: tokio::runtime::Handle::current(),
            }),
        }
    }

    /// Where taskmanagers report task events.
    pub fn event_sink(&self) -> Arc<dyn TaskEventSink> {
        self.shared.clone()
    }

    /// Adds a taskmanager's slots to the cluster.
    pub fn register_taskmanager(&self, taskmanager: Arc<dyn TaskManagerGateway>) {
        info!(taskmanager = taskmanager.id(), slots = taskmanager.slots(), "taskmanager registered");
        self.shared.lock().taskmanagers.push(taskmanager);
    }

    /// Total slots of the registered taskmanagers.
    pub fn total_slots(&self) -> u32 {
        self.shared.lock().taskmanagers.iter().map(|tm| tm.slots()).sum()
    }

    /// Loads and plans a job, then deploys its tasks. Returns once every task is deployed.
    ///
    /// # Errors
    /// A bad plugin, bad job arguments or an invalid job graph ([`Error::status_code`] 400), not
    /// enough slots (503); nothing is deployed then.
    pub async fn submit(&self, submission: JobSubmission) -> Result<JobId> {
        if submission.parallelism == 0 {
            return Err(Error::InvalidRequest("parallelism must be at least 1".into()));
        }
        let loaded = LoadedJob::load(&submission.artifact)?;
        let graph = loaded.build(&submission.args)?;
        let plan = plan(&graph.descriptor, submission.parallelism)?;
        let name = graph.descriptor.name.clone();
        let sinks = describe_sinks(&graph.descriptor);
        drop(graph);
        drop(loaded);

        let needed = plan.required_slots();
        let taskmanagers = self.shared.lock().taskmanagers.clone();
        let available: u32 = taskmanagers.iter().map(|tm| tm.slots()).sum();
        if needed > available {
            return Err(Error::NotEnoughSlots { needed, available });
        }
        // Slots in round-robin order over taskmanagers, so subtasks spread across them.
        let mut slots = Vec::new();
        let most = taskmanagers.iter().map(|tm| tm.slots()).max().unwrap_or(0);
        for round in 0..most {
            for (index, tm) in taskmanagers.iter().enumerate() {
                if round < tm.slots() {
                    slots.push(index);
                }
            }
        }

        let id = JobId::random();
        let mut job = Job::new(id, name.clone(), plan.clone());
        job.sinks = sinks;
        let (status, _) = watch::channel(JobStatus::Created);
        self.shared.lock().jobs.insert(id, JobEntry { job, artifact: submission.artifact.clone(), status });
        info!(job_id = %id, job_name = %name, tasks = plan.task_count(), slots = needed, "job submitted");

        let mut deployments = Vec::new();
        for vertex in &plan.vertices {
            for subtask in 0..vertex.parallelism {
                let task = TaskId { job: id, attempt: 0, vertex: vertex.id, subtask };
                let deployment = TaskDeployment {
                    task,
                    job_name: name.clone(),
                    task_name: vertex.name.clone(),
                    parallelism: vertex.parallelism,
                    max_parallelism: plan.max_parallelism,
                    job_args: submission.args.clone(),
                    chain: vertex.chain.clone(),
                    inputs: vertex.inputs.clone(),
                };
                let tm = taskmanagers[slots[subtask as usize]].clone();
                deployments.push((deployment, tm));
            }
        }
        {
            let mut state = self.shared.lock();
            if let Some(entry) = state.jobs.get_mut(&id) {
                for (deployment, tm) in &deployments {
                    entry.job.task_deployed(deployment.task, tm.id());
                }
            }
        }
        for (deployment, tm) in deployments {
            let task = deployment.task;
            if let Err(message) = tm.deploy(deployment, submission.artifact.clone()).await {
                let failure = Error::TaskManager { taskmanager: tm.id().to_owned(), message }.to_string();
                error!(job_id = %id, %task, "deployment failed: {failure}");
                let command = {
                    let mut state = self.shared.lock();
                    let entry = state.jobs.get_mut(&id).expect("inserted above");
                    let command = entry.job.deployment_failed(failure);
                    let _ = entry.status.send(entry.job.status);
                    command
                };
                if let Some(command) = command {
                    execute(command, id, taskmanagers.clone()).await;
                }
                return Ok(id);
            }
        }
        let mut state = self.shared.lock();
        if let Some(entry) = state.jobs.get_mut(&id) {
            entry.job.deployed();
            let _ = entry.status.send(entry.job.status);
        }
        Ok(id)
    }

    /// The job's current details.
    pub fn job(&self, id: JobId) -> Result<JobDetails> {
        self.shared.lock().jobs.get(&id).map(|e| e.job.details()).ok_or(Error::JobNotFound(id))
    }

    /// Every job's details, newest first.
    pub fn jobs(&self) -> Vec<JobDetails> {
        let mut jobs: Vec<JobDetails> = self.shared.lock().jobs.values().map(|e| e.job.details()).collect();
        jobs.sort_by_key(|job| std::cmp::Reverse(job.start_time));
        jobs
    }

    /// Waits until the job is FINISHED, FAILED or CANCELED.
    pub async fn wait_for_termination(&self, id: JobId) -> Result<JobDetails> {
        let mut status = {
            let state = self.shared.lock();
            state.jobs.get(&id).ok_or(Error::JobNotFound(id))?.status.subscribe()
        };
        let _ = status.wait_for(|s| s.is_terminal()).await;
        self.job(id)
    }

    /// Cancels a running job.
    pub async fn cancel(&self, id: JobId) -> Result<()> {
        let (command, taskmanagers) = {
            let mut state = self.shared.lock();
            let taskmanagers = state.taskmanagers.clone();
            let entry = state.jobs.get_mut(&id).ok_or(Error::JobNotFound(id))?;
            let command = entry.job.cancel().map_err(|status| Error::IllegalState {
                job: id,
                status: status.to_string(),
                action: "cancel".into(),
            })?;
            let _ = entry.status.send(entry.job.status);
            (command, taskmanagers)
        };
        info!(job_id = %id, "cancelling job");
        if let Some(command) = command {
            execute(command, id, taskmanagers).await;
        }
        Ok(())
    }

    /// The code of a job (for taskmanagers that fetch it).
    pub fn artifact(&self, id: JobId) -> Result<JobArtifact> {
        self.shared.lock().jobs.get(&id).map(|e| e.artifact.clone()).ok_or(Error::JobNotFound(id))
    }
}

/// One line per sink saying where it writes.
fn describe_sinks(job: &weir_api::graph::JobDescriptor) -> Vec<String> {
    use weir_api::connectors::SinkDescriptor;
    use weir_api::graph::NodeKind;
    job.nodes
        .iter()
        .filter_map(|node| match &node.kind {
            NodeKind::Sink(SinkDescriptor::TextFiles { directory }) => {
                Some(format!("{}: text files in {directory}", node.name))
            }
            NodeKind::Sink(SinkDescriptor::Stdout) => Some(format!("{}: standard output", node.name)),
            NodeKind::Sink(SinkDescriptor::Blackhole) => Some(format!("{}: discarded (blackhole)", node.name)),
            _ => None,
        })
        .collect()
}

impl From<weir_api::Error> for Error {
    fn from(e: weir_api::Error) -> Self {
        Self::Job(weir_runtime::Error::Job(e))
    }
}

impl From<crate::plan::PlanError> for Error {
    fn from(e: crate::plan::PlanError) -> Self {
        Self::InvalidJob(e.0)
    }
}
