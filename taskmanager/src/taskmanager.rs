//! The taskmanager component: accepts task deployments, runs each task on its own thread, wires
//! tasks together through the exchange, and reports task states to the jobmanager.

use crate::context::{OutputChannels, TaskContext, TaskMetrics};
use crate::exchange::LocalExchange;
use crate::input_gate::InputGate;
use crate::savepoint::{SavepointTarget, SavepointTargets};
use crate::snapshot::{JobCommitters, SnapshotWriter};
use crate::state::task_db::TaskDatabase;
use crate::task::{TaskControl, TaskOutcome, run_inputs, run_source};
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tracing::{debug, error, info, warn};
use weir_api::runtime::{CheckpointBarrier, CheckpointId, FINAL_CHECKPOINT};
use weir_api::runtime::{JobGraph, TaskInfo};
use weir_runtime::checkpoint::StateBackendKind;
use weir_runtime::storage::{CheckpointLayout, Storage, StorageConfig};
use weir_runtime::{
    BoxFuture, ChannelId, GatewayError, GatewayResult, JobArtifact, JobId, LoadedJob, Plugged, TaskDeployment,
    TaskEvent, TaskEventSink, TaskExecutionState, TaskId, TaskManagerGateway,
};

/// Configuration of a taskmanager.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TaskManagerConfig {
    /// Id reported to the jobmanager; default a random one.
    pub id: String,
    /// Task slots offered (one subtask of every vertex of a job per slot); default 1.
    pub slots: u32,
    /// Capacity of each channel between tasks, in events (batches of up to ~32 KiB); default 16.
    pub channel_capacity: usize,
    /// Options of the checkpoint storage (`object_store` keys such as `aws_endpoint`), on top of
    /// the standard `AWS_*` environment variables; default none.
    pub storage_options: std::collections::BTreeMap<String, String>,
    /// Local directory for the working state of tasks (RocksDB databases); each task's part is
    /// removed when it ends. Default `<temp dir>/weir/<id>-state`.
    pub state_dir: std::path::PathBuf,
    /// Memory shared by the RocksDB databases of all tasks (block cache and memtables), bytes;
    /// default 256 MiB.
    pub rocksdb_memory_bytes: usize,
}

/// Default of [`TaskManagerConfig::rocksdb_memory_bytes`].
pub const DEFAULT_ROCKSDB_MEMORY_BYTES: usize = 256 << 20;

impl Default for TaskManagerConfig {
    fn default() -> Self {
        let id = format!("taskmanager-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let state_dir = std::env::temp_dir().join("weir").join(format!("{id}-state"));
        Self {
            id,
            slots: 1,
            channel_capacity: 16,
            storage_options: std::collections::BTreeMap::new(),
            state_dir,
            rocksdb_memory_bytes: DEFAULT_ROCKSDB_MEMORY_BYTES,
        }
    }
}

/// The tokio runtime that runs snapshot uploads and restores: the caller's, or else one of our
/// own, created once per process.
fn background_runtime() -> tokio::runtime::Handle {
    static OWN: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    tokio::runtime::Handle::try_current().unwrap_or_else(|_| {
        OWN.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("weir-snapshots")
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("cannot start the snapshot runtime: {e}"))
        })
        .handle()
        .clone()
    })
}

/// A job's code and graph, loaded once per taskmanager. Fields drop in order: the graph (plugin
/// objects) before the code.
pub(crate) struct JobResources {
    graph: Plugged<JobGraph>,
    pub(crate) loaded: LoadedJob,
}

struct RunningTask {
    cancel: Arc<AtomicBool>,
    /// Set when the taskmanager cancels the task on its own (it lost the jobmanager, or it shuts
    /// down): the task then reports FAILED with this reason, so that the job's restart strategy
    /// applies, instead of CANCELED, which only the jobmanager may ask for.
    failure_on_cancel: Arc<OnceLock<String>>,
    metrics: Arc<TaskMetrics>,
    control: crossbeam_channel::Sender<TaskControl>,
    is_source: bool,
}

struct JobTasks {
    resources: Arc<JobResources>,
    /// Where the job's code came from; an uploaded plugin's local copy is deleted with the job.
    artifact: JobArtifact,
    tasks: HashMap<TaskId, RunningTask>,
    /// The newest attempt deployed here: the job's current attempt on this taskmanager.
    attempt: u32,
    /// The jobmanager released the attempts up to this one: what they hold goes once their
    /// last task stopped, and the whole job once no task of it is left.
    released: Option<u32>,
    /// The job's transactional sinks here (they outlive their tasks until the job is released).
    committers: Arc<JobCommitters>,
    /// The job's pending savepoints here.
    savepoints: Arc<SavepointTargets>,
}

impl JobTasks {
    /// Whether a task of an attempt up to `attempt` still runs.
    fn runs_attempt_up_to(&self, attempt: u32) -> bool {
        self.tasks.keys().any(|t| t.attempt <= attempt)
    }
}

struct Inner {
    config: TaskManagerConfig,
    exchange: Arc<LocalExchange>,
    data_server: Mutex<Option<crate::network::DataServer>>,
    jobs: Mutex<HashMap<JobId, JobTasks>>,
    /// The newest attempt of each job ever deployed here (outlives the job's resources), so that a
    /// stale deployment of an older attempt is refused even after the job was released.
    newest_attempts: Mutex<HashMap<JobId, u32>>,
    events: Arc<dyn TaskEventSink>,
    /// Open checkpoint stores by root URL.
    storages: Mutex<HashMap<String, Storage>>,
    runtime: tokio::runtime::Handle,
    /// Shared by every task's RocksDB database.
    rocksdb_memory: crate::state::rocksdb::RocksDbMemory,
}

impl Inner {
    fn jobs(&self) -> MutexGuard<'_, HashMap<JobId, JobTasks>> {
        self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The checkpoint store at `url`, opened once.
    fn storage(&self, url: &str) -> Result<Storage, String> {
        let mut storages = self.storages.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(storage) = storages.get(url) {
            return Ok(storage.clone());
        }
        let config = StorageConfig { url: url.to_owned(), options: self.config.storage_options.clone() };
        let storage = Storage::open(&config).map_err(|e| e.to_string())?;
        storages.insert(url.to_owned(), storage.clone());
        Ok(storage)
    }

    fn report(&self, event: TaskEvent, metrics: &TaskMetrics) {
        self.events.task_event(TaskEvent {
            records_in: metrics.records_in.load(Ordering::Relaxed),
            records_out: metrics.records_out.load(Ordering::Relaxed),
            ..event
        });
    }

    fn report_state(&self, task: TaskId, state: TaskExecutionState, metrics: &TaskMetrics) {
        self.report(TaskEvent::new(task, state, 0, 0), metrics);
    }

    /// Forgets a task that stopped; applies a release that waited for it.
    fn task_stopped(&self, task: TaskId) {
        let released = {
            let mut jobs = self.jobs();
            let Some(job) = jobs.get_mut(&task.job) else {
                return;
            };
            job.tasks.remove(&task);
            job.released
        };
        if let Some(attempt) = released {
            self.release_job(task.job, attempt);
        }
    }

    fn drop_job(&self, id: JobId, job: JobTasks) {
        self.exchange.release_job(id, u32::MAX);
        let artifact = job.artifact.clone();
        drop(job);
        if let JobArtifact::Stored { path, .. } = &artifact {
            let in_use =
                self.jobs().values().any(|j| matches!(&j.artifact, JobArtifact::Stored { path: p, .. } if p == path));
            if !in_use {
                let _ = std::fs::remove_file(path);
            }
        }
        debug!(job_id = %id, "released the job's resources");
    }

    /// Releases what attempts up to `attempt` of `job` hold: their channels and committers once
    /// none of their tasks runs, and the job's code once no task of it is left and no newer
    /// attempt was deployed. What cannot go yet goes when the last such task stops.
    fn release_job(&self, id: JobId, attempt: u32) {
        let dropped = {
            let mut jobs = self.jobs();
            let Some(job) = jobs.get_mut(&id) else {
                drop(jobs);
                // Channels may exist for a job none of whose tasks reached this taskmanager.
                self.exchange.release_job(id, attempt);
                return;
            };
            let attempt = job.released.map_or(attempt, |a| a.max(attempt));
            if job.runs_attempt_up_to(attempt) {
                job.released = Some(attempt);
                return;
            }
            job.released = None;
            job.committers.release_up_to(attempt);
            if job.tasks.is_empty() && attempt >= job.attempt { jobs.remove(&id) } else { None }
        };
        match dropped {
            Some(job) => self.drop_job(id, job),
            None => self.exchange.release_job(id, attempt),
        }
    }

    /// Cancels the tasks of attempts up to `attempt` of `job`; `failure`: the taskmanager cancels
    /// them on its own, and they report FAILED with this reason.
    fn cancel_job(&self, job: JobId, attempt: u32, failure: Option<&str>) {
        if let Some(tasks) = self.jobs().get(&job) {
            for (id, task) in tasks.tasks.iter().filter(|(id, _)| id.attempt <= attempt) {
                if let Some(reason) = failure {
                    let _ = task.failure_on_cancel.set(reason.to_owned());
                }
                task.cancel.store(true, Ordering::Relaxed);
                debug!(job_id = %job, task = %id, "cancelling the task");
            }
        }
    }
}

/// A taskmanager. Cheap to clone; clones share the same slots and tasks.
#[derive(Clone)]
pub struct TaskManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TaskManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskManager").field("id", &self.inner.config.id).finish_non_exhaustive()
    }
}

impl TaskManager {
    /// A taskmanager that reports task events to `events`.
    pub fn new(config: TaskManagerConfig, events: Arc<dyn TaskEventSink>) -> Self {
        let exchange = Arc::new(LocalExchange::new(config.channel_capacity));
        let rocksdb_memory = crate::state::rocksdb::RocksDbMemory::new(config.rocksdb_memory_bytes);
        Self {
            inner: Arc::new(Inner {
                rocksdb_memory,
                config,
                exchange,
                data_server: Mutex::new(None),
                jobs: Mutex::new(HashMap::new()),
                newest_attempts: Mutex::new(HashMap::new()),
                events,
                storages: Mutex::new(HashMap::new()),
                runtime: background_runtime(),
            }),
        }
    }

    /// The taskmanager's id.
    pub fn id(&self) -> &str {
        &self.inner.config.id
    }

    /// Serves this taskmanager's output channels to consumers on other taskmanagers; returns the
    /// bound address.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn start_data_server(&self, bind: std::net::SocketAddr) -> std::io::Result<std::net::SocketAddr> {
        let server = crate::network::DataServer::start(bind, self.inner.exchange.clone())?;
        let address = server.local_addr();
        *self.inner.data_server.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(server);
        Ok(address)
    }

    /// The tasks deployed here that have not ended, with their state and counters (for
    /// heartbeats).
    /// The counters of every task deployed here.
    pub(crate) fn task_metric_handles(&self) -> Vec<(TaskId, Arc<TaskMetrics>)> {
        self.inner
            .jobs()
            .values()
            .flat_map(|job| job.tasks.iter())
            .map(|(id, t)| (*id, Arc::clone(&t.metrics)))
            .collect()
    }

    pub fn task_metrics(&self) -> Vec<weir_runtime::HeartbeatTask> {
        self.inner
            .jobs()
            .values()
            .flat_map(|job| job.tasks.iter())
            .map(|(id, t)| weir_runtime::HeartbeatTask {
                task: *id,
                state: if t.metrics.running.load(Ordering::Relaxed) {
                    TaskExecutionState::Running
                } else {
                    TaskExecutionState::Deploying
                },
                time: t.metrics.take_time_shares(),
                input_watermark: Some(t.metrics.input_watermark.load(Ordering::Relaxed)).filter(|w| *w != i64::MIN),
                records_in: t.metrics.records_in.load(Ordering::Relaxed),
                records_out: t.metrics.records_out.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Triggers checkpoint `barrier` at every running source task of attempt `attempt` of `job`
    /// here; returns how many were triggered. Each snapshots its chain, emits the barrier
    /// downstream, and acknowledges through the event sink once its state is written;
    /// downstream tasks align and acknowledge in turn.
    pub fn trigger_checkpoint(&self, job: JobId, attempt: u32, barrier: CheckpointBarrier) -> usize {
        let jobs = self.inner.jobs();
        let Some(job) = jobs.get(&job) else { return 0 };
        job.tasks
            .iter()
            .filter(|(id, t)| t.is_source && id.attempt == attempt)
            .filter(|(_, t)| t.control.send(TaskControl::TriggerCheckpoint(barrier)).is_ok())
            .count()
    }

    /// Checkpoint `checkpoint` of attempt `attempt` of `job` will be a savepoint into directory
    /// `dir` (a storage URL): every task of the attempt here that sees its barrier writes a
    /// canonical snapshot there. The jobmanager prepares every taskmanager of the attempt before
    /// it triggers the sources.
    ///
    /// # Errors
    /// Refused when this taskmanager does not run that attempt of the job; failed when the
    /// directory's store cannot be opened.
    pub fn prepare_savepoint(
        &self,
        job: JobId,
        attempt: u32,
        checkpoint: CheckpointId,
        dir: &str,
        stop: Option<bool>,
    ) -> GatewayResult<()> {
        let storage =
            Storage::open(&StorageConfig { url: dir.to_owned(), options: self.inner.config.storage_options.clone() })
                .map_err(|e| GatewayError::failed(format!("savepoint {checkpoint} of job {job}: {e}")))?;
        match self.inner.jobs().get(&job) {
            Some(j) if j.attempt == attempt => {
                j.savepoints.prepare(checkpoint, SavepointTarget { storage, stop });
                Ok(())
            }
            _ => Err(GatewayError::refused(format!(
                "taskmanager {} does not run attempt {attempt} of job {job}",
                self.id()
            ))),
        }
    }

    /// Checkpoint `checkpoint` of attempt `attempt` of `job` was aborted: every task of that
    /// attempt here stops aligning its barriers (and ignores those still to come).
    pub fn abort_checkpoint(&self, job: JobId, attempt: u32, checkpoint: CheckpointId) {
        if let Some(job) = self.inner.jobs().get(&job) {
            job.savepoints.end(checkpoint);
            for (_, task) in job.tasks.iter().filter(|(id, _)| id.attempt == attempt) {
                let _ = task.control.send(TaskControl::AbortCheckpoint(checkpoint));
            }
        }
    }

    /// Checkpoint `checkpoint` of attempt `attempt` of `job` completed: the job's transactional
    /// sinks here commit it.
    ///
    /// # Errors
    /// Refused when this taskmanager does not hold that attempt of the job (it restarted, or the
    /// notification is stale: nothing was committed); failed when a sink could not commit.
    pub fn notify_checkpoint_complete(&self, job: JobId, attempt: u32, checkpoint: u64) -> GatewayResult<()> {
        let (committers, savepoints) = match self.inner.jobs().get(&job) {
            Some(j) if j.attempt == attempt => {
                // A stop with a savepoint: its sources, waiting since its barrier, end now.
                if j.savepoints.target(checkpoint).is_some_and(|t| t.stop.is_some()) {
                    for (_, task) in j.tasks.iter().filter(|(id, t)| t.is_source && id.attempt == attempt) {
                        let _ = task.control.send(TaskControl::SavepointComplete(checkpoint));
                    }
                }
                (j.committers.clone(), j.savepoints.clone())
            }
            Some(j) => {
                return Err(GatewayError::refused(format!(
                    "attempt {attempt} of job {job} is not current on taskmanager {} (attempt {} is)",
                    self.id(),
                    j.attempt
                )));
            }
            None => {
                return Err(GatewayError::refused(format!(
                    "taskmanager {} holds no tasks of job {job} (it restarted or released the job)",
                    self.id()
                )));
            }
        };
        let what = if checkpoint == FINAL_CHECKPOINT {
            "the final commit".to_owned()
        } else {
            format!("checkpoint {checkpoint}")
        };
        // A savepoint commits the sinks' side effects (as Flink's do), but its files are not
        // incremental: the databases keep reusing the files of the newest checkpoint.
        let savepoint = savepoints.is_savepoint(checkpoint);
        let committed = committers.commit(attempt, checkpoint, savepoint);
        if savepoint {
            savepoints.end(checkpoint);
        }
        committed.map_err(|e| GatewayError::failed(format!("{what} of job {job}: {e}")))
    }

    /// Cancels every running task on the taskmanager's own account (the jobmanager is gone or
    /// forgot this taskmanager, or the process shuts down): the tasks report FAILED with
    /// `reason`, so that their jobs restart under their restart strategies.
    pub fn cancel_all(&self, reason: &str) {
        let jobs: Vec<JobId> = self.inner.jobs().keys().copied().collect();
        for job in jobs {
            self.inner.cancel_job(job, u32::MAX, Some(reason));
        }
    }

    /// Releases what attempts up to `attempt` of `job` hold (see
    /// [`TaskManagerGateway::release_job`]).
    pub fn release_job(&self, job: JobId, attempt: u32) {
        self.inner.release_job(job, attempt);
    }

    /// Number of jobs whose resources (code, channels) are held here.
    pub fn held_jobs(&self) -> usize {
        self.inner.jobs().len()
    }

    /// Number of tasks currently running.
    pub fn running_tasks(&self) -> usize {
        self.inner.jobs().values().map(|j| j.tasks.len()).sum()
    }

    /// Starts a task. Returns once its thread is started; the task then reports its states.
    ///
    /// # Errors
    /// The job's code cannot be loaded or built here, or the task is already running.
    pub fn deploy_task(&self, deployment: TaskDeployment, artifact: &JobArtifact) -> Result<(), String> {
        let task = deployment.task;
        {
            let mut newest = self.inner.newest_attempts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let seen = newest.entry(task.job).or_insert(task.attempt);
            if *seen > task.attempt {
                return Err(format!(
                    "stale deployment of {task}: attempt {} of the job was already deployed here",
                    *seen
                ));
            }
            *seen = task.attempt;
        }
        let resources = self.job_resources(&deployment, artifact)?;
        let info = TaskInfo {
            job_id: task.job.to_string(),
            job_name: deployment.job_name.clone(),
            task_name: deployment.task_name.clone(),
            subtask: task.subtask,
            parallelism: deployment.parallelism,
            max_parallelism: deployment.max_parallelism,
            attempt: task.attempt,
            heap_state: deployment.state_backend == StateBackendKind::Heap,
        };
        let exchange = &self.inner.exchange;
        let outputs: Vec<OutputChannels> = deployment
            .chain
            .outputs
            .iter()
            .map(|output| {
                (0..output.consumer_parallelism)
                    .map(|consumer| {
                        let sends =
                            output.partitioning != weir_api::graph::Partitioning::Forward || consumer == task.subtask;
                        sends.then(|| {
                            exchange.sender(ChannelId {
                                job: task.job,
                                attempt: task.attempt,
                                edge: output.edge,
                                producer: task.subtask,
                                consumer,
                            })
                        })
                    })
                    .collect()
            })
            .collect();
        let mut receivers = Vec::new();
        let mut inputs = Vec::new();
        for input in &deployment.inputs {
            for producer in input.producers_for(task.subtask) {
                let id = ChannelId {
                    job: task.job,
                    attempt: task.attempt,
                    edge: input.edge,
                    producer,
                    consumer: task.subtask,
                };
                let receiver = exchange.take_receiver(id).ok_or_else(|| format!("task {task} is already deployed"))?;
                // A producer on another taskmanager: read the channel over the network into the
                // local queue this task consumes.
                let remote = deployment.input_locations.iter().find(|l| {
                    l.edge == input.edge
                        && l.producer == producer
                        && l.taskmanager != self.inner.config.id
                        && !l.data_address.is_empty()
                });
                if let Some(location) = remote {
                    crate::network::connect_channel(id, location.data_address.clone(), exchange.clone());
                }
                receivers.push(receiver);
                inputs.push(input.input as usize);
            }
        }
        let metrics = Arc::new(TaskMetrics::new(&deployment.job_name, &deployment.task_name));
        let checkpoints = match &deployment.checkpointing {
            Some(spec) => {
                let storage = self.inner.storage(&spec.storage_url)?;
                let layout = CheckpointLayout::new(&storage, task.job);
                Some(SnapshotWriter {
                    storage,
                    layout,
                    runtime: self.inner.runtime.clone(),
                    in_flight: Vec::new(),
                    metrics: Arc::clone(&metrics),
                })
            }
            None => None,
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let failure_on_cancel = Arc::new(OnceLock::new());
        let (control_tx, control_rx) = crossbeam_channel::unbounded();
        let committers;
        let savepoints;
        let database = (!info.heap_state).then(|| {
            let name = format!("{}-{}-{}-{}", task.job, task.vertex, task.subtask, task.attempt);
            TaskDatabase::new(self.inner.config.state_dir.join(name), self.inner.rocksdb_memory.clone())
        });
        {
            let mut jobs = self.inner.jobs();
            let job = jobs.entry(task.job).or_insert_with(|| JobTasks {
                resources: resources.clone(),
                artifact: artifact.clone(),
                tasks: HashMap::new(),
                attempt: task.attempt,
                released: None,
                committers: Arc::new(JobCommitters::default()),
                savepoints: Arc::default(),
            });
            if job.attempt > task.attempt || job.released.is_some_and(|r| r >= task.attempt) {
                return Err(format!("stale deployment of {task}: the attempt is over on this taskmanager"));
            }
            job.attempt = task.attempt;
            committers = job.committers.clone();
            savepoints = job.savepoints.clone();
            let running = RunningTask {
                cancel: cancel.clone(),
                failure_on_cancel: failure_on_cancel.clone(),
                metrics: metrics.clone(),
                control: control_tx,
                is_source: deployment.is_source(),
            };
            if job.tasks.insert(task, running).is_some() {
                return Err(format!("task {task} is already deployed"));
            }
        }
        self.inner.report_state(task, TaskExecutionState::Deploying, &metrics);
        // A consumer on this taskmanager gets records as values; a missing location (a
        // deployment from an older jobmanager) conservatively means remote.
        let own = &self.inner.config.id;
        let local = deployment
            .chain
            .outputs
            .iter()
            .enumerate()
            .map(|(o, output)| {
                (0..output.consumer_parallelism as usize)
                    .map(|c| {
                        deployment.output_taskmanagers.get(o).and_then(|ids| ids.get(c)).is_some_and(|tm| tm == own)
                    })
                    .collect()
            })
            .collect();
        let events = self.inner.events.clone();
        let mut cx = TaskContext {
            id: task,
            info,
            outputs,
            local,
            cancel,
            metrics,
            events,
            checkpoints,
            restored: HashMap::new(),
            committers,
            code: resources.clone(),
            savepoints,
            database,
            final_snapshot: None,
            unusable_checkpoint: None,
        };
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("weir-task-{}-{}", task.vertex, task.subtask))
            .spawn(move || {
                let result = catch_unwind(AssertUnwindSafe(|| run_task(&resources, &deployment, &mut cx, (receivers, inputs, control_rx), &inner)))
                    .unwrap_or_else(|payload| {
                        let message = payload
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| payload.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "panic".to_owned());
                        Err(weir_api::Error::runtime("taskmanager", format!("internal error: {message}")))
                    });
                let mut event = TaskEvent::new(task, TaskExecutionState::Finished, 0, 0);
                match result {
                    Ok(TaskOutcome::Finished) => event.final_snapshot = cx.final_snapshot.take(),
                    Ok(TaskOutcome::Canceled) | Err(weir_api::Error::Cancelled) => match failure_on_cancel.get() {
                        Some(reason) => {
                            warn!(job_id = %task.job, task = %cx.info.task_name, subtask = task.subtask, "task cancelled by the taskmanager: {reason}");
                            event.state = TaskExecutionState::Failed;
                            event.failure = Some(format!("cancelled by taskmanager {}: {reason}", inner.config.id));
                        }
                        None => event.state = TaskExecutionState::Canceled,
                    },
                    Err(e) => {
                        error!(job_id = %task.job, task = %cx.info.task_name, subtask = task.subtask, "task failed: {e}");
                        event.state = TaskExecutionState::Failed;
                        event.failure_kind = match (&e, cx.unusable_checkpoint) {
                            (_, Some(checkpoint)) => weir_runtime::FailureKind::CheckpointUnusable(checkpoint),
                            // The job as written cannot run: every attempt would fail alike.
                            (weir_api::Error::InvalidJob(_) | weir_api::Error::InvalidArgument(_), None) => {
                                weir_runtime::FailureKind::Unrecoverable
                            }
                            _ => weir_runtime::FailureKind::Task,
                        };
                        event.failure = Some(e.to_string());
                    }
                };
                // Nothing this task wrote may land in storage after it reported its end.
                if let Some(writer) = cx.checkpoints.as_mut() {
                    writer.wait_for_uploads();
                }
                // Drop this task's share of the job before reporting, so that once the jobmanager
                // has seen every task stop, releasing the job leaves nothing behind.
                let metrics = cx.metrics.clone();
                drop(cx);
                drop(resources);
                inner.task_stopped(task);
                inner.report(event, &metrics);
            });
        if let Err(e) = spawned {
            self.inner.task_stopped(task);
            return Err(format!("cannot start a thread for task {task}: {e}"));
        }
        Ok(())
    }

    fn job_resources(&self, deployment: &TaskDeployment, artifact: &JobArtifact) -> Result<Arc<JobResources>, String> {
        if let Some(job) = self.inner.jobs().get(&deployment.task.job) {
            return Ok(job.resources.clone());
        }
        let loaded = LoadedJob::load(artifact).map_err(|e| e.to_string())?;
        let graph = loaded.build(&deployment.job_args).map_err(|e| e.to_string())?;
        info!(job_id = %deployment.task.job, plugin = loaded.name(), "loaded the job's code");
        Ok(Arc::new(JobResources { graph, loaded }))
    }

    /// Cancels the tasks of attempts up to `attempt` of `job` running here (as the jobmanager
    /// asks: they report CANCELED).
    pub fn cancel_job(&self, job: JobId, attempt: u32) {
        self.inner.cancel_job(job, attempt, None);
    }
}

/// The channels a task reads: its input channels, the input index of each, its control channel.
type TaskInputs = (
    Vec<crossbeam_channel::Receiver<crate::exchange::ChannelEvent>>,
    Vec<usize>,
    crossbeam_channel::Receiver<TaskControl>,
);

fn run_task(
    resources: &JobResources,
    deployment: &TaskDeployment,
    cx: &mut TaskContext,
    task_inputs: TaskInputs,
    inner: &Inner,
) -> weir_api::Result<TaskOutcome> {
    if let Some(database) = &cx.database {
        cx.committers.add(cx.id.attempt, crate::snapshot::CompletionListener::Database(database.uploads.clone()));
    }
    if let Some(restore) = &deployment.restore {
        // The job's checkpoint storage, or the directory of a savepoint's file.
        let checkpoint_storage = cx.checkpoints.as_ref().map(|w| w.storage.clone());
        let storage_of = |uri: &str| -> Result<Storage, String> {
            if let Some(storage) = checkpoint_storage.as_ref().filter(|s| uri.starts_with(&format!("{}/", s.url()))) {
                return Ok(storage.clone());
            }
            let dir = uri.rsplit_once('/').map_or(uri, |(dir, _)| dir);
            inner.storage(dir)
        };
        cx.restored = match crate::snapshot::read_restored(&storage_of, restore, &inner.runtime, cx.database.as_mut()) {
            Ok(restored) => restored,
            Err(failure) => {
                cx.unusable_checkpoint = failure.unusable;
                return Err(failure.error);
            }
        };
        if let Some(database) = cx.database.as_mut() {
            database.open()?;
        }
        info!(job_id = %cx.id.job, vertex = cx.id.vertex, subtask = cx.id.subtask, checkpoint_id = restore.checkpoint_id, operators = cx.restored.len(), "restoring from checkpoint");
    }
    let mut chain =
        resources.loaded.instantiate(&resources.graph, &deployment.chain, &cx.info).map_err(|e| match e {
            weir_runtime::Error::Job(e) => e,
            other => weir_api::Error::runtime("plugin", other.to_string()),
        })?;
    let outcome = drive(&mut **chain, cx, deployment, task_inputs, inner);
    // User functions' `close` runs however the task ended; its error fails a task that had
    // otherwise succeeded, and is only logged after another failure.
    match (outcome, chain.close(cx)) {
        (Ok(outcome), Ok(())) => Ok(outcome),
        (Ok(_), Err(error)) => Err(error),
        (Err(error), closed) => {
            if let Err(close_error) = closed {
                warn!(job_id = %cx.id.job, vertex = cx.id.vertex, subtask = cx.id.subtask, error = %close_error, "closing the operators of a failed task failed too");
            }
            Err(error)
        }
    }
}

/// Opens `chain` and runs it until its inputs end or the task is cancelled or stopped.
fn drive(
    chain: &mut dyn weir_api::runtime::TaskChain,
    cx: &mut TaskContext,
    deployment: &TaskDeployment,
    (receivers, inputs, control): TaskInputs,
    inner: &Inner,
) -> weir_api::Result<TaskOutcome> {
    chain.open(cx)?;
    cx.metrics.running.store(true, Ordering::Relaxed);
    inner.report_state(cx.id, TaskExecutionState::Running, &cx.metrics);
    let outcome = if deployment.is_source() {
        run_source(chain, cx, &control)?
    } else {
        run_inputs(chain, cx, receivers, InputGate::new(inputs), &control)?
    };
    if outcome == TaskOutcome::Finished {
        cx.take_final_snapshot(chain);
    }
    Ok(outcome)
}

impl TaskManagerGateway for TaskManager {
    fn id(&self) -> &str {
        &self.inner.config.id
    }

    fn slots(&self) -> u32 {
        self.inner.config.slots
    }

    fn deploy(&self, deployment: TaskDeployment, artifact: JobArtifact) -> BoxFuture<'_, GatewayResult<()>> {
        Box::pin(async move { self.deploy_task(deployment, &artifact).map_err(GatewayError::refused) })
    }

    fn cancel_job(&self, job: JobId, attempt: u32) -> BoxFuture<'_, GatewayResult<()>> {
        Box::pin(async move {
            TaskManager::cancel_job(self, job, attempt);
            Ok(())
        })
    }

    fn release_job(&self, job: JobId, attempt: u32) -> BoxFuture<'_, GatewayResult<()>> {
        Box::pin(async move {
            self.inner.release_job(job, attempt);
            Ok(())
        })
    }

    fn trigger_checkpoint(
        &self,
        job: JobId,
        attempt: u32,
        barrier: CheckpointBarrier,
    ) -> BoxFuture<'_, GatewayResult<u32>> {
        Box::pin(async move { Ok(TaskManager::trigger_checkpoint(self, job, attempt, barrier) as u32) })
    }

    fn prepare_savepoint(
        &self,
        job: JobId,
        attempt: u32,
        checkpoint: CheckpointId,
        dir: String,
        stop: Option<bool>,
    ) -> BoxFuture<'_, GatewayResult<()>> {
        Box::pin(async move { TaskManager::prepare_savepoint(self, job, attempt, checkpoint, &dir, stop) })
    }

    fn abort_checkpoint(&self, job: JobId, attempt: u32, checkpoint: CheckpointId) -> BoxFuture<'_, GatewayResult<()>> {
        Box::pin(async move {
            TaskManager::abort_checkpoint(self, job, attempt, checkpoint);
            Ok(())
        })
    }

    fn notify_checkpoint_complete(
        &self,
        job: JobId,
        attempt: u32,
        checkpoint: CheckpointId,
    ) -> BoxFuture<'_, GatewayResult<()>> {
        let this = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || this.notify_checkpoint_complete(job, attempt, checkpoint))
                .await
                .map_err(|e| GatewayError::failed(format!("the commit task failed: {e}")))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use weir_api::prelude::{GeneratorSource, JobArgs, StreamExecutionEnvironment};

    struct Ignore;

    impl TaskEventSink for Ignore {
        fn task_event(&self, _event: TaskEvent) {}
    }

    /// Records every task event.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<TaskEvent>>);

    impl TaskEventSink for Recorder {
        fn task_event(&self, event: TaskEvent) {
            self.0.lock().unwrap().push(event);
        }
    }

    impl Recorder {
        /// Waits (up to 10 s) for the terminal event of `task`.
        fn end_of(&self, task: TaskId) -> TaskEvent {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let found = self.0.lock().unwrap().iter().find(|e| e.task == task && e.state.is_terminal()).cloned();
                if let Some(event) = found {
                    return event;
                }
                assert!(Instant::now() < deadline, "task {task} did not end");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// An endless, slow source into a blackhole: one task that runs until cancelled.
    fn endless(env: &mut StreamExecutionEnvironment, _args: &JobArgs) -> weir_api::Result<()> {
        env.from_generator(GeneratorSource::unbounded().with_rate(100.0), |seq| seq).uid("numbers").sink_to_blackhole();
        Ok(())
    }

    fn deployment(job: JobId, attempt: u32) -> TaskDeployment {
        TaskDeployment {
            task: TaskId { job, attempt, vertex: 0, subtask: 0 },
            job_name: "endless".into(),
            task_name: "generator -> blackhole".into(),
            parallelism: 1,
            max_parallelism: 128,
            job_args: Vec::new(),
            chain: weir_api::graph::ChainSpec { head: 0, nodes: vec![0, 1], chained_edges: vec![0], outputs: vec![] },
            inputs: Vec::new(),
            input_locations: Vec::new(),
            output_taskmanagers: Vec::new(),
            checkpointing: None,
            state_backend: StateBackendKind::Heap,
            restore: None,
        }
    }

    fn wait_until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "{what} within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn commands_of_an_old_attempt_never_touch_a_newer_one() {
        // Regression: CancelJob and ReleaseJob named no attempt, so a delayed cancel of a failed
        // attempt cancelled the next attempt's tasks; a delayed deployment of an old attempt ran.
        let events = Arc::new(Recorder::default());
        let config = TaskManagerConfig { id: "tm".into(), slots: 4, ..TaskManagerConfig::default() };
        let taskmanager = TaskManager::new(config, events.clone());
        let artifact =
            JobArtifact::InProcess { name: "endless".into(), entry: weir_api::plugin::job_entry(endless).into() };
        let job = JobId::random();
        taskmanager.deploy_task(deployment(job, 1), &artifact).unwrap();
        let stale = taskmanager.deploy_task(deployment(job, 0), &artifact).unwrap_err();
        assert!(stale.contains("stale deployment"), "{stale}");
        taskmanager.cancel_job(job, 0);
        taskmanager.release_job(job, 0);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(taskmanager.running_tasks(), 1, "attempt 1 keeps running");
        taskmanager.cancel_job(job, 1);
        assert_eq!(events.end_of(deployment(job, 1).task).state, TaskExecutionState::Canceled);
        wait_until("the task stopped", || taskmanager.running_tasks() == 0);
        // Cancelled by the taskmanager itself (it lost the jobmanager): reported as a failure.
        taskmanager.deploy_task(deployment(job, 2), &artifact).unwrap();
        taskmanager.cancel_all("the taskmanager lost contact with the jobmanager");
        let end = events.end_of(deployment(job, 2).task);
        assert_eq!(end.state, TaskExecutionState::Failed);
        assert!(end.failure.unwrap().contains("lost contact with the jobmanager"));
        wait_until("the task stopped", || taskmanager.running_tasks() == 0);
        taskmanager.release_job(job, 2);
        assert_eq!(taskmanager.held_jobs(), 0, "released up to the newest attempt: nothing is held");
    }

    #[test]
    fn a_final_commit_for_a_job_or_attempt_this_taskmanager_does_not_hold_is_refused() {
        // Regression: a taskmanager that did not know the job (it restarted and lost its tasks)
        // answered the final commit with OK, and the job went FINISHED without its output.
        let config = TaskManagerConfig { id: "tm".into(), ..TaskManagerConfig::default() };
        let taskmanager = TaskManager::new(config, Arc::new(Ignore));
        let job = JobId::random();
        let error = taskmanager.notify_checkpoint_complete(job, 0, FINAL_CHECKPOINT).unwrap_err();
        assert_eq!(error.kind, weir_runtime::GatewayErrorKind::Refused);
        assert!(error.message.contains("holds no tasks of job"), "{error}");
    }
}
