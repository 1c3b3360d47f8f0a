//! The jobmanager component: accepts jobs, plans them, schedules them onto taskmanager slots,
//! tracks their lifecycle from task events, detects lost taskmanagers, and restarts failed jobs.
//!
//! Transport-independent: taskmanagers are reached through [`TaskManagerGateway`]s and report
//! through the [`TaskEventSink`] this component provides; the gRPC service and the local
//! mini-cluster plug in the same way.

use crate::checkpoint::{CheckpointConfig, CheckpointContext, CheckpointSettings, JobCheckpoints};
use crate::error::{Error, Result};
use crate::job::{Job, JobCommand, JobDetails, JobStatus};
use crate::plan::{ExecutionPlan, plan};
use crate::restart::RestartPolicy;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tracing::{debug, error, info, warn};
use weir_api::runtime::FINAL_CHECKPOINT;
use weir_runtime::checkpoint::{CheckpointMetadata, CheckpointingSpec, StateBackendKind, TaskRestore, TaskSnapshot};
use weir_runtime::storage::{Storage, StorageConfig};
use weir_runtime::{
    ChannelLocation, JobArtifact, JobId, LoadedJob, TaskDeployment, TaskEvent, TaskEventSink, TaskExecutionState,
    TaskId, TaskManagerGateway,
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
    /// Checkpointing; `None` turns it off.
    pub checkpointing: Option<CheckpointSubmission>,
    /// The keyed state backend of the job's tasks (with or without checkpointing).
    pub state_backend: StateBackendKind,
}

/// How a submitted job takes checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSubmission {
    /// Timing, retention, failure tolerance.
    pub config: CheckpointConfig,
    /// Where checkpoints go; `None` uses the jobmanager's storage.
    pub storage_url: Option<String>,
}

/// How the jobmanager schedules and recovers jobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobManagerSettings {
    /// How long a job waits for enough free slots before it fails.
    pub slot_request_timeout: Duration,
    /// A taskmanager that sent no heartbeat for this long is lost.
    pub heartbeat_timeout: Duration,
    /// What happens to a job whose execution failed.
    pub restart: RestartPolicy,
}

impl Default for JobManagerSettings {
    fn default() -> Self {
        Self {
            slot_request_timeout: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(5),
            restart: RestartPolicy::default(),
        }
    }
}

/// A registered taskmanager, as reported by `GET /taskmanagers`.
#[derive(Debug, Clone, Serialize)]
pub struct TaskManagerInfo {
    /// Its id.
    pub id: String,
    /// Slots it offers.
    pub slots: u32,
    /// Slots no job holds.
    pub free_slots: u32,
    /// Its data-plane address (`host:port`), empty in the local mini-cluster.
    pub data_address: String,
    /// Seconds since its last heartbeat (0 for the local mini-cluster's).
    pub seconds_since_heartbeat: f64,
}

/// The cluster at a glance, as reported by `GET /overview`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterOverview {
    /// Registered taskmanagers.
    pub taskmanagers: usize,
    /// Slots they offer.
    pub slots_total: u32,
    /// Slots no job holds.
    pub slots_available: u32,
    /// Jobs not yet ended.
    pub jobs_running: usize,
    /// Jobs that finished.
    pub jobs_finished: usize,
    /// Jobs that were cancelled.
    pub jobs_cancelled: usize,
    /// Jobs that failed.
    pub jobs_failed: usize,
    /// Weir's version.
    pub weir_version: &'static str,
}

struct RegisteredTaskManager {
    gateway: Arc<dyn TaskManagerGateway>,
    data_address: String,
    last_heartbeat: Instant,
    /// Whether heartbeats are expected (not for the in-process taskmanager).
    monitored: bool,
}

struct JobEntry {
    job: Job,
    plan: ExecutionPlan,
    artifact: JobArtifact,
    args: Vec<String>,
    status: watch::Sender<JobStatus>,
    checkpoints: Option<Arc<JobCheckpoints>>,
}

#[derive(Default)]
struct State {
    taskmanagers: BTreeMap<String, RegisteredTaskManager>,
    jobs: HashMap<JobId, JobEntry>,
}

impl State {
    fn gateways(&self) -> Vec<Arc<dyn TaskManagerGateway>> {
        self.taskmanagers.values().map(|tm| tm.gateway.clone()).collect()
    }

    /// Free slots per taskmanager: offered minus held by jobs that have not ended.
    fn free_slots(&self) -> BTreeMap<String, u32> {
        let mut free: BTreeMap<String, u32> =
            self.taskmanagers.iter().map(|(id, tm)| (id.clone(), tm.gateway.slots())).collect();
        for entry in self.jobs.values() {
            for tm in &entry.job.slots {
                if let Some(n) = free.get_mut(tm) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        free
    }
}

struct Shared {
    state: Mutex<State>,
    runtime: tokio::runtime::Handle,
    settings: JobManagerSettings,
    /// Where checkpoints go unless a job names another location, and the store's options.
    storage: StorageConfig,
    /// Signalled when slots may have become free (registration, job end, restart).
    slots_changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes a job's status and carries out its commands in the background.
    fn after_change(self: &Arc<Self>, state: &mut State, id: JobId, was_terminal: bool, mut commands: Vec<JobCommand>) {
        let Some(entry) = state.jobs.get_mut(&id) else { return };
        let _ = entry.status.send_replace(entry.job.status);
        let status = entry.job.status;
        if status.is_terminal() && !was_terminal {
            match &entry.job.failure {
                Some(failure) => warn!(job_id = %id, %status, "job ended: {failure}"),
                None => info!(job_id = %id, %status, "job ended"),
            }
            commands.push(JobCommand::ReleaseResources);
            if let Some(checkpoints) = &entry.checkpoints {
                checkpoints.stop();
            }
            self.slots_changed.notify_waiters();
        }
        if commands.is_empty() {
            return;
        }
        let gateways = state.gateways();
        let shared = self.clone();
        self.runtime.spawn(async move {
            for command in commands {
                shared.execute(command, id, &gateways).await;
            }
        });
    }

    async fn execute(self: &Arc<Self>, command: JobCommand, job: JobId, gateways: &[Arc<dyn TaskManagerGateway>]) {
        match command {
            JobCommand::CancelTasks | JobCommand::ReleaseResources => {
                for tm in gateways {
                    let result = match command {
                        JobCommand::CancelTasks => tm.cancel_job(job).await,
                        _ => tm.release_job(job).await,
                    };
                    if let Err(e) = result {
                        warn!(job_id = %job, taskmanager = tm.id(), ?command, "taskmanager request failed: {e}");
                        // A taskmanager that refuses connections is gone: declaring it lost now
                        // (instead of after the heartbeat timeout) lets the job restart at once.
                        if command == JobCommand::CancelTasks && e.starts_with("unreachable") {
                            let mut state = self.lock();
                            self.taskmanager_lost(
                                &mut state,
                                tm.id(),
                                &format!("cannot reach it to cancel tasks ({e})"),
                            );
                        }
                    }
                }
            }
            JobCommand::CommitFinal => {
                let attempt = self.lock().jobs.get(&job).map(|e| e.job.attempt);
                let Some(attempt) = attempt else { return };
                let mut failure = None;
                for tm in gateways {
                    if let Err(e) = tm.notify_checkpoint_complete(job, attempt, FINAL_CHECKPOINT).await {
                        failure.get_or_insert(format!("taskmanager {}: {e}", tm.id()));
                    }
                }
                let mut state = self.lock();
                let Some(entry) = state.jobs.get_mut(&job).filter(|e| e.job.attempt == attempt) else { return };
                let was_terminal = entry.job.status.is_terminal();
                let commands = match failure {
                    None => entry.job.final_committed(),
                    Some(message) => entry.job.final_commit_failed(message),
                };
                self.after_change(&mut state, job, was_terminal, commands);
            }
            JobCommand::Restart(delay) => {
                for tm in gateways {
                    if let Err(e) = tm.release_job(job).await {
                        warn!(job_id = %job, taskmanager = tm.id(), "cannot release the failed attempt: {e}");
                    }
                }
                self.slots_changed.notify_waiters();
                tokio::time::sleep(delay).await;
                let restarted = {
                    let mut state = self.lock();
                    let Some(entry) = state.jobs.get_mut(&job) else { return };
                    let restarted = entry.job.next_attempt();
                    let _ = entry.status.send_replace(entry.job.status);
                    if restarted {
                        info!(job_id = %job, attempt = entry.job.attempt, "restarting the job");
                    }
                    restarted
                };
                if restarted {
                    let shared = self.clone();
                    self.runtime.spawn(async move { shared.schedule(job).await });
                }
            }
        }
    }

    /// Waits for slots for the job's current attempt, then deploys its tasks.
    async fn schedule(self: Arc<Self>, id: JobId) {
        let deadline = Instant::now() + self.settings.slot_request_timeout;
        let checkpoints = self.lock().jobs.get(&id).and_then(|e| e.checkpoints.clone());
        let restore = match &checkpoints {
            Some(checkpoints) => checkpoints.restore_point().await,
            None => None,
        };
        if let Some(metadata) = &restore {
            info!(job_id = %id, checkpoint_id = metadata.checkpoint_id, "restoring the job from checkpoint {}", metadata.checkpoint_id);
        }
        let (deployments, artifact, gateways) = loop {
            let notified = self.slots_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                let free = state.free_slots();
                let gateways: HashMap<String, Arc<dyn TaskManagerGateway>> =
                    state.taskmanagers.iter().map(|(k, v)| (k.clone(), v.gateway.clone())).collect();
                let addresses: HashMap<String, String> =
                    state.taskmanagers.iter().map(|(k, v)| (k.clone(), v.data_address.clone())).collect();
                let Some(entry) = state.jobs.get_mut(&id) else { return };
                if entry.job.status != JobStatus::Created {
                    return;
                }
                let needed = entry.plan.required_slots();
                if let Some(slots) = allocate(&free, needed) {
                    entry.job.scheduled(slots.clone());
                    let deployments = deployments(id, entry, &slots, &addresses, restore.as_ref());
                    if let Some(checkpoints) = &entry.checkpoints {
                        let tasks = deployments.iter().map(|(d, _)| d.task).collect();
                        let sources = deployments.iter().filter(|(d, _)| d.is_source()).map(|(d, _)| d.task).collect();
                        let restored = restore.as_ref().map(|m| m.checkpoint_id);
                        checkpoints.new_attempt(entry.job.attempt, tasks, sources, restored);
                    }
                    for (deployment, tm) in &deployments {
                        entry.job.task_deployed(deployment.task, tm);
                    }
                    let artifact = entry.artifact.clone();
                    let _ = entry.status.send_replace(entry.job.status);
                    info!(job_id = %id, attempt = entry.job.attempt, slots = needed, "deploying the job's tasks");
                    break (deployments, artifact, gateways);
                }
                if Instant::now() >= deadline {
                    let available: u32 = free.values().sum();
                    let message = format!(
                        "could not get {needed} task slots within {:?}: {available} free on {} taskmanagers",
                        self.settings.slot_request_timeout,
                        free.len()
                    );
                    let was_terminal = entry.job.status.is_terminal();
                    entry.job.scheduling_failed(message);
                    self.after_change(&mut state, id, was_terminal, Vec::new());
                    return;
                }
            }
            let _ = tokio::time::timeout_at(deadline.into(), notified).await;
        };
        let mut pending: Vec<TaskId> = deployments.iter().map(|(d, _)| d.task).collect();
        pending.reverse();
        for (deployment, tm) in deployments {
            let task = deployment.task;
            pending.pop();
            let result = match gateways.get(&tm) {
                Some(gateway) => gateway.deploy(deployment, artifact.clone()).await,
                None => Err("the taskmanager is no longer registered".to_owned()),
            };
            if let Err(message) = result {
                let failure = Error::TaskManager { taskmanager: tm.clone(), message }.to_string();
                error!(job_id = %id, %task, "deployment failed: {failure}");
                let mut state = self.lock();
                if let Some(entry) = state.jobs.get_mut(&id).filter(|e| e.job.attempt == task.attempt) {
                    let was_terminal = entry.job.status.is_terminal();
                    // The tasks after this one were never deployed: none of them will report.
                    let commands = entry.job.deployment_failed(task, &pending, failure);
                    self.after_change(&mut state, id, was_terminal, commands);
                }
                return;
            }
        }
    }

    /// Declares a taskmanager lost and fails the jobs that had slots on it.
    fn taskmanager_lost(self: &Arc<Self>, state: &mut State, id: &str, reason: &str) {
        if state.taskmanagers.remove(id).is_none() {
            return;
        }
        warn!(taskmanager = id, "taskmanager lost: {reason}");
        let jobs: Vec<JobId> = state.jobs.keys().copied().collect();
        for job in jobs {
            let Some(entry) = state.jobs.get_mut(&job) else { continue };
            let was_terminal = entry.job.status.is_terminal();
            let commands = entry.job.taskmanager_lost(id, reason);
            if !commands.is_empty() || entry.job.status.is_terminal() != was_terminal {
                self.after_change(state, job, was_terminal, commands);
            }
        }
        self.slots_changed.notify_waiters();
    }
}

/// Picks `needed` slots from the free ones, round robin over taskmanagers so that subtasks
/// spread across them.
fn allocate(free: &BTreeMap<String, u32>, needed: u32) -> Option<Vec<String>> {
    if free.values().sum::<u32>() < needed {
        return None;
    }
    let mut left = free.clone();
    let mut slots = Vec::with_capacity(needed as usize);
    while slots.len() < needed as usize {
        for (tm, n) in left.iter_mut() {
            if *n > 0 && slots.len() < needed as usize {
                *n -= 1;
                slots.push(tm.clone());
            }
        }
    }
    Some(slots)
}

/// How long the write probe of a job's checkpoint storage may take at submission.
const STORAGE_PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Refuses a submission whose checkpoint storage the jobmanager cannot write to (as Flink, which
/// creates the job's checkpoint directory when the job starts): a wrong URL, bucket or credentials
/// is the user's mistake, better reported now than at the first checkpoint.
async fn check_checkpoint_storage(storage: &Storage, job: JobId) -> Result<()> {
    let job_url = weir_runtime::storage::CheckpointLayout::new(storage, job).job_url().to_owned();
    let problem = match tokio::time::timeout(STORAGE_PROBE_TIMEOUT, storage.check_writable(&job_url)).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {} s", STORAGE_PROBE_TIMEOUT.as_secs()),
    };
    Err(Error::InvalidRequest(format!(
        "checkpoint storage {} is not writable: {problem} (check --checkpoint-dir or the jobmanager's \
         --storage, and the storage options and credentials)",
        storage.url()
    )))
}

/// The deployments of the job's current attempt: subtask `i` of every vertex runs in slot `i`.
fn deployments(
    id: JobId,
    entry: &JobEntry,
    slots: &[String],
    addresses: &HashMap<String, String>,
    restore: Option<&CheckpointMetadata>,
) -> Vec<(TaskDeployment, String)> {
    let checkpointing =
        entry.checkpoints.as_ref().map(|c| CheckpointingSpec { storage_url: c.settings().storage_url.clone() });
    let plan = &entry.plan;
    let attempt = entry.job.attempt;
    let location = |edge: u32, producer: u32| {
        let tm = slots[producer as usize].clone();
        ChannelLocation {
            edge,
            producer,
            data_address: addresses.get(&tm).cloned().unwrap_or_default(),
            taskmanager: tm,
        }
    };
    let mut out = Vec::new();
    for vertex in &plan.vertices {
        for subtask in 0..vertex.parallelism {
            let mut input_locations = Vec::new();
            for input in &vertex.inputs {
                for producer in input.producers_for(subtask) {
                    input_locations.push(location(input.edge, producer));
                }
            }
            let deployment = TaskDeployment {
                task: TaskId { job: id, attempt, vertex: vertex.id, subtask },
                job_name: entry.job.name.clone(),
                task_name: vertex.name.clone(),
                parallelism: vertex.parallelism,
                max_parallelism: plan.max_parallelism,
                job_args: entry.args.clone(),
                chain: vertex.chain.clone(),
                inputs: vertex.inputs.clone(),
                input_locations,
                output_taskmanagers: vertex
                    .chain
                    .outputs
                    .iter()
                    .map(|o| (0..o.consumer_parallelism).map(|c| slots[c as usize].clone()).collect())
                    .collect(),
                checkpointing: checkpointing.clone(),
                state_backend: entry.job.state_backend,
                restore: restore.map(|m| TaskRestore {
                    checkpoint_id: m.checkpoint_id,
                    handles: m.task(vertex.id, subtask).map(|s| s.handles.clone()).unwrap_or_default(),
                }),
            };
            out.push((deployment, slots[subtask as usize].clone()));
        }
    }
    out
}

/// Task events from taskmanagers, applied to the jobs.
struct EventSink(Arc<Shared>);

impl TaskEventSink for EventSink {
    fn task_event(&self, event: TaskEvent) {
        let shared = &self.0;
        let mut state = shared.lock();
        let Some(entry) = state.jobs.get_mut(&event.task.job) else { return };
        if let Some(failure) = &event.failure {
            warn!(job_id = %event.task.job, vertex = event.task.vertex, subtask = event.task.subtask, "task failed: {failure}");
        }
        let was_terminal = entry.job.status.is_terminal();
        let current = event.task.attempt == entry.job.attempt;
        let commands = entry.job.on_task_event(&event);
        if let Some(checkpoints) = entry.checkpoints.as_ref().filter(|_| current) {
            match event.state {
                TaskExecutionState::Finished => checkpoints.task_finished(event.task),
                TaskExecutionState::Failed | TaskExecutionState::Canceled => checkpoints.task_failed(event.task),
                _ => {}
            }
        }
        shared.after_change(&mut state, event.task.job, was_terminal, commands);
    }

    fn checkpoint_acknowledged(&self, task: TaskId, checkpoint: u64, snapshot: TaskSnapshot) {
        let checkpoints = self.0.lock().jobs.get(&task.job).and_then(|e| e.checkpoints.clone());
        if let Some(checkpoints) = checkpoints {
            checkpoints.acknowledge(task, checkpoint, snapshot);
        }
    }

    fn checkpoint_declined(&self, task: TaskId, checkpoint: u64, reason: String) {
        let checkpoints = self.0.lock().jobs.get(&task.job).and_then(|e| e.checkpoints.clone());
        if let Some(checkpoints) = checkpoints {
            debug!(job_id = %task.job, checkpoint_id = checkpoint, %task, "checkpoint declined: {reason}");
            checkpoints.decline(task, checkpoint, reason);
        }
    }
}

/// What the checkpoint drivers need from the jobmanager.
struct DriverContext(std::sync::Weak<Shared>);

impl CheckpointContext for DriverContext {
    fn running_attempt(&self, job: JobId) -> Option<u32> {
        let shared = self.0.upgrade()?;
        let state = shared.lock();
        let entry = state.jobs.get(&job)?;
        let job = &entry.job;
        let all_running = job.status == JobStatus::Running
            && job.tasks.len() == entry.plan.task_count()
            && job.tasks.values().all(|t| t.state == TaskExecutionState::Running);
        all_running.then_some(job.attempt)
    }

    fn taskmanagers(&self, job: JobId, attempt: u32, sources_only: bool) -> Vec<Arc<dyn TaskManagerGateway>> {
        let Some(shared) = self.0.upgrade() else { return Vec::new() };
        let state = shared.lock();
        let Some(entry) = state.jobs.get(&job) else { return Vec::new() };
        let ids: std::collections::BTreeSet<&str> = entry
            .job
            .tasks
            .iter()
            .filter(|(id, _)| id.attempt == attempt)
            .filter(|(id, _)| !sources_only || entry.plan.vertices.get(id.vertex as usize).is_some_and(|v| v.is_source))
            .map(|(_, t)| t.taskmanager.as_str())
            .collect();
        ids.into_iter().filter_map(|id| state.taskmanagers.get(id)).map(|tm| tm.gateway.clone()).collect()
    }

    fn fail_job(&self, job: JobId, reason: String) {
        let Some(shared) = self.0.upgrade() else { return };
        let mut state = shared.lock();
        let Some(entry) = state.jobs.get_mut(&job) else { return };
        let was_terminal = entry.job.status.is_terminal();
        let commands = entry.job.fail(reason);
        shared.after_change(&mut state, job, was_terminal, commands);
    }
}

/// The jobmanager. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct JobManager {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for JobManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobManager").field("settings", &self.shared.settings).finish_non_exhaustive()
    }
}

impl JobManager {
    /// A jobmanager that runs its background work (scheduling, failure detection, restarts) on
    /// the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(settings: JobManagerSettings) -> Self {
        let storage = StorageConfig {
            url: format!("file://{}", std::env::temp_dir().join("weir").join("checkpoints").display()),
            options: BTreeMap::new(),
        };
        Self::with_storage(settings, storage)
    }

    /// A jobmanager whose jobs checkpoint to `storage` unless they name another location.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn with_storage(settings: JobManagerSettings, storage: StorageConfig) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            runtime: tokio::runtime::Handle::current(),
            settings,
            storage,
            slots_changed: Notify::new(),
        });
        let detector = Arc::downgrade(&shared);
        shared.runtime.spawn(async move {
            let period = (settings.heartbeat_timeout / 5).max(Duration::from_millis(50));
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let Some(shared) = detector.upgrade() else { break };
                let mut state = shared.lock();
                let lost: Vec<(String, Duration)> = state
                    .taskmanagers
                    .iter()
                    .filter(|(_, tm)| tm.monitored && tm.last_heartbeat.elapsed() > settings.heartbeat_timeout)
                    .map(|(id, tm)| (id.clone(), tm.last_heartbeat.elapsed()))
                    .collect();
                for (id, silent) in lost {
                    let reason = format!("no heartbeat for {:.1} s", silent.as_secs_f64());
                    shared.taskmanager_lost(&mut state, &id, &reason);
                }
            }
        });
        Self { shared }
    }

    /// The settings it runs with.
    pub fn settings(&self) -> JobManagerSettings {
        self.shared.settings
    }

    /// Where taskmanagers report task events.
    pub fn event_sink(&self) -> Arc<dyn TaskEventSink> {
        Arc::new(EventSink(self.shared.clone()))
    }

    /// Adds a taskmanager's slots to the cluster. A taskmanager registering again under a known
    /// id lost its earlier tasks (it restarted), so its jobs fail over first.
    ///
    /// `monitored`: whether it sends heartbeats (and is declared lost when they stop).
    pub fn register_taskmanager(&self, gateway: Arc<dyn TaskManagerGateway>, data_address: String, monitored: bool) {
        let id = gateway.id().to_owned();
        let mut state = self.shared.lock();
        if state.taskmanagers.contains_key(&id) {
            self.shared.taskmanager_lost(&mut state, &id, "it registered again (restarted)");
        }
        info!(taskmanager = %id, slots = gateway.slots(), %data_address, "taskmanager registered");
        state
            .taskmanagers
            .insert(id, RegisteredTaskManager { gateway, data_address, last_heartbeat: Instant::now(), monitored });
        drop(state);
        self.shared.slots_changed.notify_waiters();
    }

    /// Records a heartbeat with the counters of the taskmanager's running tasks. Returns `false`
    /// for an unknown taskmanager, which must register (again).
    pub fn heartbeat(&self, taskmanager: &str, tasks: &[(TaskId, u64, u64)]) -> bool {
        let mut state = self.shared.lock();
        let Some(tm) = state.taskmanagers.get_mut(taskmanager) else { return false };
        tm.last_heartbeat = Instant::now();
        for &(task, records_in, records_out) in tasks {
            if let Some(entry) = state.jobs.get_mut(&task.job) {
                entry.job.task_metrics(task, records_in, records_out);
            }
        }
        true
    }

    /// Declares a taskmanager lost now (for example when it is known to be gone).
    pub fn taskmanager_lost(&self, taskmanager: &str, reason: &str) {
        let mut state = self.shared.lock();
        self.shared.taskmanager_lost(&mut state, taskmanager, reason);
    }

    /// The registered taskmanagers.
    pub fn taskmanagers(&self) -> Vec<TaskManagerInfo> {
        let state = self.shared.lock();
        let free = state.free_slots();
        state
            .taskmanagers
            .iter()
            .map(|(id, tm)| TaskManagerInfo {
                id: id.clone(),
                slots: tm.gateway.slots(),
                free_slots: free.get(id).copied().unwrap_or(0),
                data_address: tm.data_address.clone(),
                seconds_since_heartbeat: if tm.monitored { tm.last_heartbeat.elapsed().as_secs_f64() } else { 0.0 },
            })
            .collect()
    }

    /// The cluster at a glance.
    pub fn overview(&self) -> ClusterOverview {
        let state = self.shared.lock();
        let free = state.free_slots();
        let count = |status: JobStatus| state.jobs.values().filter(|e| e.job.status == status).count();
        ClusterOverview {
            taskmanagers: state.taskmanagers.len(),
            slots_total: state.taskmanagers.values().map(|tm| tm.gateway.slots()).sum(),
            slots_available: free.values().sum(),
            jobs_running: state.jobs.values().filter(|e| !e.job.status.is_terminal()).count(),
            jobs_finished: count(JobStatus::Finished),
            jobs_cancelled: count(JobStatus::Canceled),
            jobs_failed: count(JobStatus::Failed),
            weir_version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// Total slots of the registered taskmanagers.
    pub fn total_slots(&self) -> u32 {
        self.shared.lock().taskmanagers.values().map(|tm| tm.gateway.slots()).sum()
    }

    /// Loads and plans a job and queues it for scheduling; returns its id. The job then waits
    /// for free slots (up to the slot request timeout) and runs.
    ///
    /// # Errors
    /// A bad plugin, bad job arguments or an invalid job graph ([`Error::status_code`] 400);
    /// no job is created then.
    pub async fn submit(&self, submission: JobSubmission) -> Result<JobId> {
        if submission.parallelism == 0 {
            return Err(Error::InvalidRequest("parallelism must be at least 1".into()));
        }
        let artifact = submission.artifact.clone();
        let args = submission.args.clone();
        let parallelism = submission.parallelism;
        // Loading runs the plugin's build function: keep it off the async workers.
        let (name, sinks, plan) = tokio::task::spawn_blocking(move || -> Result<_> {
            let loaded = LoadedJob::load(&artifact)?;
            let graph = loaded.build(&args)?;
            let plan = plan(&graph.descriptor, parallelism)?;
            Ok((graph.descriptor.name.clone(), describe_sinks(&graph.descriptor), plan))
        })
        .await
        .map_err(|e| Error::InvalidJob(format!("the job's build function did not complete: {e}")))??;

        let id = JobId::random();
        let checkpoints = match &submission.checkpointing {
            Some(c) => {
                let storage_url = c.storage_url.clone().unwrap_or_else(|| self.shared.storage.url.clone());
                let storage = Storage::open(&StorageConfig {
                    url: storage_url.clone(),
                    options: self.shared.storage.options.clone(),
                })
                .map_err(|e| Error::InvalidRequest(format!("checkpoint storage: {e}")))?;
                check_checkpoint_storage(&storage, id).await?;
                let settings = CheckpointSettings {
                    config: c.config.clone(),
                    backend: submission.state_backend,
                    storage_url: storage.url().to_owned(),
                };
                let context = Arc::new(DriverContext(Arc::downgrade(&self.shared)));
                let started = JobCheckpoints::start(id, settings, storage, context)
                    .map_err(|e| Error::InvalidRequest(e.to_string()))?;
                info!(job_id = %id, interval_ms = c.config.interval_ms, backend = %submission.state_backend, storage = %started.layout().job_url(), "checkpointing enabled");
                Some(started)
            }
            None => None,
        };
        let mut job = Job::new(id, name.clone(), plan.clone());
        job.sinks = sinks;
        job.state_backend = submission.state_backend;
        job.restart = self.shared.settings.restart;
        let (status, _) = watch::channel(JobStatus::Created);
        info!(job_id = %id, job_name = %name, tasks = plan.task_count(), slots = plan.required_slots(), "job submitted");
        self.shared.lock().jobs.insert(
            id,
            JobEntry { job, plan, artifact: submission.artifact, args: submission.args, status, checkpoints },
        );
        let shared = self.shared.clone();
        self.shared.runtime.spawn(async move { shared.schedule(id).await });
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
        // Its checkpoint storage is tidied (only retained checkpoints left) before it counts as
        // ended for waiters.
        if let Some(checkpoints) = self.checkpoints(id)? {
            let _ = tokio::time::timeout(Duration::from_secs(30), checkpoints.wait_stopped()).await;
        }
        self.job(id)
    }

    /// Cancels a job that has not ended.
    pub async fn cancel(&self, id: JobId) -> Result<()> {
        let mut state = self.shared.lock();
        let entry = state.jobs.get_mut(&id).ok_or(Error::JobNotFound(id))?;
        let was_terminal = entry.job.status.is_terminal();
        let command = entry.job.cancel().map_err(|status| Error::IllegalState {
            job: id,
            status: status.to_string(),
            action: "cancel".into(),
        })?;
        info!(job_id = %id, "cancelling the job");
        self.shared.after_change(&mut state, id, was_terminal, command.into_iter().collect());
        Ok(())
    }

    /// The job's checkpoints (`None` when it has checkpointing off).
    pub fn checkpoints(&self, id: JobId) -> Result<Option<Arc<JobCheckpoints>>> {
        self.shared.lock().jobs.get(&id).map(|e| e.checkpoints.clone()).ok_or(Error::JobNotFound(id))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_spreads_slots_round_robin() {
        let free: BTreeMap<String, u32> = [("a".to_owned(), 2), ("b".to_owned(), 3)].into();
        assert_eq!(allocate(&free, 4).unwrap(), vec!["a", "b", "a", "b"]);
        assert_eq!(allocate(&free, 5).unwrap(), vec!["a", "b", "a", "b", "b"]);
        assert_eq!(allocate(&free, 6), None);
    }
}
