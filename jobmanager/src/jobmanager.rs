//! The jobmanager component: accepts jobs, hands each to its own job master, routes what
//! taskmanagers report to the masters, and answers readers from published snapshots.
//!
//! Owners and their mailboxes (see ARCHITECTURE.md, "The jobmanager"):
//! - the cluster registry ([`crate::registry`]): taskmanagers, slots, heartbeats;
//! - one job master per job ([`crate::job::master`]): lifecycle, plan, checkpoint coordinator,
//!   restart timer.
//!
//! This type holds no job state: a directory of the masters' handles (a published, copy-on-write
//! map) and the registry's handle. Transport-independent: taskmanagers are reached through
//! [`TaskManagerGateway`]s and report through the [`TaskEventSink`] this component provides;
//! the gRPC service and the local mini-cluster plug in the same way.

use crate::artifacts::PluginStore;
use crate::checkpoint::coordinator::ID_BLOCK;
use crate::checkpoint::files;
use crate::checkpoint::report::CheckpointsReport;
use crate::checkpoint::{CheckpointConfig, Coordinator};
use crate::error::{Error, Result};
use crate::job::lifecycle::Job;
use crate::job::master::{CheckpointingSetup, JobSetup};
use crate::job::{JobDetails, JobHandle, JobInput, JobStatus, JobView, SavepointRequest, SavepointStatus};
use crate::jobstore::{JobRecord, JobStore, RecordedCheckpointing, RecordedStatus};
use crate::registry::{RegistryHandle, TaskManagerInfo};
use crate::restart::RestartPolicy;
use crate::submission::{self, JobSubmission, PlannedJob};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};
use weir_runtime::checkpoint::TaskSnapshot;
use weir_runtime::savepoint;
use weir_runtime::storage::{CheckpointLayout, Storage, StorageConfig};

use weir_runtime::{HeartbeatTask, JobArtifact, JobId, TaskEvent, TaskEventSink, TaskId, TaskManagerGateway};

pub use crate::submission::CheckpointSubmission;

/// How the jobmanager schedules and recovers jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct JobManagerSettings {
    /// How long a job waits for enough free slots before it fails.
    pub slot_request_timeout: Duration,
    /// A taskmanager that sent no heartbeat for this long is lost.
    pub heartbeat_timeout: Duration,
    /// What happens to a job whose execution failed; `None`: Flink's default
    /// ([`RestartPolicy::default_for`]: restart without limit when the job takes checkpoints).
    pub restart: Option<RestartPolicy>,
    /// Where savepoints go when a request names no directory (Flink's
    /// `execution.checkpointing.savepoint-dir`), a storage URL; `None`: requests must name one.
    pub savepoint_dir: Option<String>,
}

impl Default for JobManagerSettings {
    fn default() -> Self {
        Self {
            slot_request_timeout: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(5),
            restart: None,
            savepoint_dir: None,
        }
    }
}

impl JobManagerSettings {
    /// The restart policy of a job.
    fn restart_policy(&self, checkpointing: bool) -> RestartPolicy {
        self.restart.unwrap_or_else(|| RestartPolicy::default_for(checkpointing))
    }
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

/// The masters' handles by job, replaced (never mutated in place) when a job is added.
type Directory = Arc<HashMap<JobId, JobHandle>>;

struct Inner {
    settings: JobManagerSettings,
    /// Where checkpoints go unless a job names another location, and the store's options.
    storage: StorageConfig,
    registry: RegistryHandle,
    directory: watch::Sender<Directory>,
    /// Job records, when jobs must survive a restart of the jobmanager.
    store: Option<JobStore>,
    /// Savepoint disposals by request id, as their tasks last published them.
    disposals: watch::Sender<Arc<BTreeMap<String, SavepointStatus>>>,
}

/// How many disposal requests are remembered.
const DISPOSALS_KEPT: usize = 64;

/// The jobmanager. Cheap to clone; all clones share one component.
#[derive(Clone)]
pub struct JobManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JobManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobManager").field("settings", &self.inner.settings).finish_non_exhaustive()
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn epoch_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl JobManager {
    /// A jobmanager whose jobs checkpoint under the temporary directory unless they name another
    /// location; jobs do not survive it. Runs its owners on the current tokio runtime.
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

    /// A jobmanager whose jobs checkpoint to `storage` unless they name another location; jobs
    /// do not survive it.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn with_storage(settings: JobManagerSettings, storage: StorageConfig) -> Self {
        Self::build(settings, storage, None)
    }

    fn build(settings: JobManagerSettings, storage: StorageConfig, store: Option<JobStore>) -> Self {
        let registry = RegistryHandle::start(settings.heartbeat_timeout);
        let (directory, _) = watch::channel(Directory::default());
        let (disposals, _) = watch::channel(Arc::default());
        Self { inner: Arc::new(Inner { settings, storage, registry, directory, store, disposals }) }
    }

    /// A jobmanager that records every job submitted through the plugin store in `store`, and
    /// resumes the jobs recorded there that have not ended (an earlier jobmanager on the same
    /// storage ran them): each from its latest completed checkpoint, with an attempt and
    /// checkpoint ids above every earlier one. Jobs that cannot be resumed (their plugin is
    /// gone, their record unreadable) are logged and left alone.
    ///
    /// # Errors
    /// The records cannot be listed (the storage is unreachable; retrying may help).
    pub async fn recover(
        settings: JobManagerSettings,
        storage: StorageConfig,
        store: JobStore,
        plugins: &PluginStore,
    ) -> Result<Self> {
        let this = Self::build(settings, storage, Some(store.clone()));
        let (records, unreadable) = store.list().await.map_err(|e| Error::Record(e.to_string()))?;
        for (url, why) in unreadable {
            error!("cannot resume the job recorded in {url}: {why}");
        }
        for record in records.into_iter().filter(|r| !r.status.is_terminal()) {
            let id = record.job_id;
            match this.resume(record, plugins).await {
                Ok(()) => {}
                Err(e) => error!(job_id = %id, "cannot resume the job: {}", crate::artifacts::chain(&e)),
            }
        }
        Ok(this)
    }

    /// The settings it runs with.
    pub fn settings(&self) -> JobManagerSettings {
        self.inner.settings.clone()
    }

    /// Where taskmanagers report task events.
    pub fn event_sink(&self) -> Arc<dyn TaskEventSink> {
        Arc::new(EventSink(self.inner.directory.subscribe()))
    }

    /// Adds a taskmanager's slots to the cluster. A taskmanager registering again under a known
    /// id lost its earlier tasks (it restarted), so its jobs fail over first.
    ///
    /// `monitored`: whether it sends heartbeats (and is declared lost when they stop).
    pub fn register_taskmanager(&self, gateway: Arc<dyn TaskManagerGateway>, data_address: String, monitored: bool) {
        self.inner.registry.register(gateway, data_address, monitored);
    }

    /// Records a heartbeat with the counters of the taskmanager's running tasks. Returns `false`
    /// for an unknown taskmanager, which must register (again).
    ///
    /// Every job that has not ended hears which of its tasks the taskmanager lists (none is news
    /// too: a task that ended without its report arriving is no longer listed).
    pub async fn heartbeat(
        &self,
        taskmanager: &str,
        tasks: &[HeartbeatTask],
        process: Option<weir_runtime::metrics::ProcessStats>,
    ) -> bool {
        let known = self.inner.registry.heartbeat(taskmanager, process).await;
        if known {
            let mut by_job: HashMap<JobId, Vec<HeartbeatTask>> = HashMap::new();
            for task in tasks {
                by_job.entry(task.task.job).or_default().push(*task);
            }
            for (job, handle) in self.directory().iter() {
                if handle.view.borrow().details.state.is_terminal() {
                    continue;
                }
                let tasks = by_job.remove(job).unwrap_or_default();
                handle.send(JobInput::Heartbeat { taskmanager: taskmanager.to_owned(), tasks });
            }
        }
        known
    }

    /// [`Self::register_taskmanager`] of a monitored taskmanager process started as `instance`
    /// (see [`Self::deregister_taskmanager`]).
    pub fn register_taskmanager_instance(
        &self,
        gateway: Arc<dyn TaskManagerGateway>,
        data_address: String,
        instance: String,
    ) {
        self.inner.registry.register_instance(gateway, data_address, instance);
    }

    /// A taskmanager that shuts down ends its registration `instance`: it is lost at once, and
    /// its jobs fail over without waiting for the heartbeat timeout. Returns whether that
    /// registration existed (a late or repeated call, or one from before a restart under the
    /// same id, changes nothing).
    pub async fn deregister_taskmanager(&self, taskmanager: &str, instance: &str, reason: &str) -> bool {
        self.inner.registry.deregister(taskmanager, instance, reason).await
    }

    /// Declares a taskmanager lost now (for example when it is known to be gone).
    pub fn taskmanager_lost(&self, taskmanager: &str, reason: &str) {
        self.inner.registry.lost(taskmanager, reason);
    }

    /// The registered taskmanagers.
    pub fn taskmanagers(&self) -> Vec<TaskManagerInfo> {
        self.inner.registry.view().taskmanagers()
    }

    /// What every job's master published last.
    pub(crate) fn job_views(&self) -> Vec<Arc<crate::job::view::JobView>> {
        self.directory().values().map(|h| h.view.borrow().clone()).collect()
    }

    /// The cluster at a glance.
    pub fn overview(&self) -> ClusterOverview {
        let registry = self.inner.registry.view();
        let states: Vec<JobStatus> = self.directory().values().map(|h| h.view.borrow().details.state).collect();
        let count = |status: JobStatus| states.iter().filter(|s| **s == status).count();
        ClusterOverview {
            taskmanagers: registry.len(),
            slots_total: registry.slots_total(),
            slots_available: registry.slots_free(),
            jobs_running: states.iter().filter(|s| !s.is_terminal()).count(),
            jobs_finished: count(JobStatus::Finished),
            jobs_cancelled: count(JobStatus::Canceled),
            jobs_failed: count(JobStatus::Failed),
            weir_version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// Total slots of the registered taskmanagers.
    pub fn total_slots(&self) -> u32 {
        self.inner.registry.view().slots_total()
    }

    fn directory(&self) -> Directory {
        self.inner.directory.borrow().clone()
    }

    fn handle(&self, id: JobId) -> Result<JobHandle> {
        self.directory().get(&id).cloned().ok_or(Error::JobNotFound(id))
    }

    fn add(&self, id: JobId, handle: JobHandle) {
        self.inner.directory.send_modify(|directory| {
            Arc::make_mut(directory).insert(id, handle);
        });
    }

    /// Loads and plans a job, records it (when the jobmanager keeps records and the plugin is
    /// in the plugin store) and starts its master; returns its id. The job then waits for free
    /// slots (up to the slot request timeout) and runs.
    ///
    /// # Errors
    /// A bad plugin, bad job arguments, an invalid job graph or checkpoint storage the
    /// jobmanager cannot write to ([`Error::status_code`] 400); no job is created then. The
    /// record cannot be written (500).
    pub async fn submit(&self, submission: JobSubmission) -> Result<JobId> {
        let interval = submission.checkpointing.as_ref().map(|c| c.config.interval_ms.max(0).unsigned_abs());
        // The savepoint, read once: its state is tried on the job's types, then mapped on its plan.
        let savepoint = self.read_savepoint(&submission).await?;
        let savepoint_state = match &savepoint {
            Some((dir, metadata, source)) => {
                let options = &self.inner.storage.options;
                let sample = crate::state_evolution::sample_state(dir, metadata, *source, options).await?;
                Some(submission::SavepointState { metadata: metadata.clone(), sample })
            }
            None => None,
        };
        let planned = submission::plan_job(
            submission.artifact.clone(),
            submission.args.clone(),
            submission.parallelism,
            interval,
            savepoint_state,
        )
        .await?;
        let id = JobId::random();
        let initial_restore = self.initial_restore(&submission, savepoint, &planned.plan)?;
        // Checkpoint ids continue above the savepoint's (a Kafka sink's progress markers are
        // checkpoint ids).
        let restored_id = initial_restore.as_ref().map(|m| m.checkpoint_id);
        let checkpointing = match &submission.checkpointing {
            Some(c) => {
                let storage = submission::open_checkpoint_storage(c.storage_url.as_deref(), &self.inner.storage)?;
                submission::check_checkpoint_storage(&storage, id).await?;
                let savepoint_path = submission.savepoint.as_ref().map(|s| s.path.as_str());
                let settings = submission::checkpoint_settings(c, submission.state_backend, &storage, savepoint_path);
                let coordinator =
                    Coordinator::new(c.config.clone(), Default::default(), Default::default(), restored_id)
                        .map_err(|e| Error::InvalidRequest(e.to_string()))?;
                info!(job_id = %id, interval_ms = c.config.interval_ms, backend = %submission.state_backend, storage = %CheckpointLayout::new(&storage, id).job_url(), "checkpointing enabled");
                Some(CheckpointingSetup { coordinator, settings, storage })
            }
            None => None,
        };
        let submitted_ms = epoch_ms();
        let record = match (&self.inner.store, &submission.artifact) {
            (Some(store), JobArtifact::Stored { sha256, .. }) => {
                let record = JobRecord {
                    version: 1,
                    job_id: id,
                    name: planned.name.clone(),
                    plugin_sha256: sha256.clone(),
                    args: submission.args.clone(),
                    parallelism: submission.parallelism,
                    state_backend: submission.state_backend,
                    checkpointing: checkpointing.as_ref().map(|c| RecordedCheckpointing {
                        config: c.settings.config.clone(),
                        storage_url: c.settings.storage_url.clone(),
                    }),
                    submitted_ms,
                    attempt: 0,
                    restarts: 0,
                    checkpoint_ids_reserved: restored_id.unwrap_or(0) + 1 + ID_BLOCK,
                    status: RecordedStatus::Running,
                    failure: None,
                    savepoint: submission.savepoint.clone(),
                    restart: submission.restart,
                    leader_epoch: 0,
                };
                store.put(&record).await.map_err(|e| Error::Record(e.to_string()))?;
                Some((store.clone(), record))
            }
            _ => None,
        };
        let mut checkpointing = checkpointing;
        if let Some(c) = checkpointing.as_mut() {
            let limit = record.as_ref().map_or(u64::MAX, |(_, r)| r.checkpoint_ids_reserved);
            c.coordinator.limit_ids(limit);
        }
        info!(job_id = %id, job_name = %planned.name, tasks = planned.plan.task_count(), slots = planned.plan.required_slots(), "job submitted");
        for warning in &planned.warnings {
            warn!(job_id = %id, "{warning}");
        }
        let job = self.new_job(id, &planned, &submission, submitted_ms);
        let (handle, master) = JobHandle::new(JobSetup {
            id,
            job,
            plan: planned.plan,
            artifact: submission.artifact,
            args: submission.args,
            checkpointing,
            initial_restore,
            slot_request_timeout: self.inner.settings.slot_request_timeout,
            report_grace: self.inner.settings.heartbeat_timeout * 2,
            registry: self.inner.registry.clone(),
            record,
        });
        self.add(id, handle);
        master.start();
        Ok(id)
    }

    fn new_job(&self, id: JobId, planned: &PlannedJob, submission: &JobSubmission, submitted_ms: u64) -> Job {
        let mut job = Job::new(id, planned.name.clone(), planned.plan.clone(), Instant::now(), submitted_ms);
        job.sinks = planned.sinks.clone();
        job.warnings = planned.warnings.clone();
        job.plan_json = std::sync::Arc::clone(&planned.plan_json);
        job.state_backend = submission.state_backend;
        job.restart = submission
            .restart
            .unwrap_or_else(|| self.inner.settings.restart_policy(submission.checkpointing.is_some()));
        job
    }

    /// Resumes a recorded job that has not ended.
    async fn resume(&self, mut record: JobRecord, plugins: &PluginStore) -> Result<()> {
        let id = record.job_id;
        let artifact = plugins.artifact(&record.plugin_sha256).await?;
        let submission = JobSubmission {
            artifact: artifact.clone(),
            args: record.args.clone(),
            parallelism: record.parallelism,
            checkpointing: record
                .checkpointing
                .as_ref()
                .map(|c| CheckpointSubmission { config: c.config.clone(), storage_url: Some(c.storage_url.clone()) }),
            state_backend: record.state_backend,
            savepoint: record.savepoint.clone(),
            restart: record.restart,
        };
        let interval = record.checkpointing.as_ref().map(|c| c.config.interval_ms.max(0).unsigned_abs());
        let planned = submission::plan_job(artifact, record.args.clone(), record.parallelism, interval, None).await?;
        let mut job = self.new_job(id, &planned, &submission, record.submitted_ms);
        // Resuming is a restart: a new attempt above every earlier one.
        job.attempt = record.attempt.saturating_add(1);
        job.restarts = record.restarts.saturating_add(1);
        job.resumed(Instant::now());
        let checkpointing = match &record.checkpointing {
            Some(c) => Some(self.recover_checkpoints(id, c, &record, &submission).await?),
            None => None,
        };
        if record.status == RecordedStatus::Cancelling {
            info!(job_id = %id, "the job was being cancelled: it ends CANCELED");
            let _ = job.cancel(Instant::now());
        } else {
            info!(job_id = %id, job_name = %record.name, attempt = job.attempt, "resuming the job");
        }
        if let Some(c) = &checkpointing {
            record.checkpoint_ids_reserved = c.coordinator.id_limit();
        }
        let savepoint = self.read_savepoint(&submission).await?;
        let initial_restore = self.initial_restore(&submission, savepoint, &planned.plan)?;
        let (handle, master) = JobHandle::new(JobSetup {
            id,
            job,
            plan: planned.plan,
            artifact: submission.artifact,
            args: submission.args,
            checkpointing,
            initial_restore,
            slot_request_timeout: self.inner.settings.slot_request_timeout,
            report_grace: self.inner.settings.heartbeat_timeout * 2,
            registry: self.inner.registry.clone(),
            record: self.inner.store.clone().map(|store| (store, record)),
        });
        self.add(id, handle);
        master.start();
        Ok(())
    }

    /// The savepoint a job is submitted with, read: its directory, metadata and kind.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] (one line) when the savepoint cannot be read.
    async fn read_savepoint(
        &self,
        submission: &JobSubmission,
    ) -> Result<Option<(String, weir_runtime::savepoint::SavepointMetadata, crate::savepoint_restore::RestoreSource)>>
    {
        match &submission.savepoint {
            Some(settings) => {
                Ok(Some(crate::savepoint_restore::read(&settings.path, &self.inner.storage.options).await?))
            }
            None => Ok(None),
        }
    }

    /// The restore point of a job submitted with a savepoint (`savepoint`, as
    /// [`Self::read_savepoint`] read it): the savepoint's state mapped onto `plan`.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] (one line) when the savepoint does not map.
    fn initial_restore(
        &self,
        submission: &JobSubmission,
        savepoint: Option<(
            String,
            weir_runtime::savepoint::SavepointMetadata,
            crate::savepoint_restore::RestoreSource,
        )>,
        plan: &crate::plan::ExecutionPlan,
    ) -> Result<Option<Box<weir_runtime::checkpoint::CheckpointMetadata>>> {
        let (Some(settings), Some((dir, metadata, source))) = (&submission.savepoint, savepoint) else {
            return Ok(None);
        };
        let restore =
            crate::savepoint_restore::restore_point(&dir, &metadata, source, plan, settings.allow_non_restored_state)?;
        info!(savepoint = %dir, checkpoint_id = metadata.checkpoint_id, job_name = %metadata.job_name, ?source, "restoring from a savepoint or retained checkpoint");
        Ok(Some(Box::new(restore)))
    }

    /// The checkpoint coordinator of a resumed job: its retained checkpoints read back from
    /// storage, and ids above every id used or reserved before.
    async fn recover_checkpoints(
        &self,
        id: JobId,
        recorded: &RecordedCheckpointing,
        record: &JobRecord,
        submission: &JobSubmission,
    ) -> Result<CheckpointingSetup> {
        let storage: Storage = submission::open_checkpoint_storage(Some(&recorded.storage_url), &self.inner.storage)?;
        let layout = CheckpointLayout::new(&storage, id);
        let (with_metadata, highest) = retry_storage(|| files::list_checkpoints(&storage, &layout)).await;
        let mut completed = Vec::new();
        for checkpoint_id in with_metadata.iter().rev() {
            if completed.len() == recorded.config.retained {
                break;
            }
            match files::read_metadata(&storage, &layout, id, *checkpoint_id).await {
                Ok(metadata) => completed.push(files::completed_from_metadata(id, &metadata)),
                Err(unusable) => {
                    warn!(job_id = %id, checkpoint_id, "checkpoint {checkpoint_id} is unusable: {}", unusable.reason)
                }
            }
        }
        completed.reverse();
        let next_id = record.checkpoint_ids_reserved.max(highest + 1);
        info!(job_id = %id, retained = ?completed.iter().map(|c| c.checkpoint_id).collect::<Vec<_>>(), next_id, "recovered the job's checkpoints");
        let config: CheckpointConfig = recorded.config.clone();
        let coordinator = Coordinator::recover(config, completed, next_id, next_id)
            .map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let settings = submission::checkpoint_settings(
            &CheckpointSubmission { config: recorded.config.clone(), storage_url: Some(recorded.storage_url.clone()) },
            submission.state_backend,
            &storage,
            submission.savepoint.as_ref().map(|s| s.path.as_str()),
        );
        Ok(CheckpointingSetup { coordinator, settings, storage })
    }

    /// The job's current details.
    ///
    /// # Errors
    /// [`Error::JobNotFound`].
    pub fn job(&self, id: JobId) -> Result<JobDetails> {
        Ok(self.view(id)?.details.clone())
    }

    /// The job as its master last published it.
    ///
    /// # Errors
    /// [`Error::JobNotFound`].
    pub fn view(&self, id: JobId) -> Result<Arc<JobView>> {
        Ok(self.handle(id)?.view.borrow().clone())
    }

    /// Every job's details, newest first.
    pub fn jobs(&self) -> Vec<JobDetails> {
        let mut jobs: Vec<JobDetails> = self.directory().values().map(|h| h.view.borrow().details.clone()).collect();
        jobs.sort_by_key(|job| std::cmp::Reverse(job.start_time));
        jobs
    }

    /// Waits until the job is FINISHED, FAILED or CANCELED and what it leaves behind is settled
    /// (its record, its checkpoint directory).
    ///
    /// # Errors
    /// [`Error::JobNotFound`].
    pub async fn wait_for_termination(&self, id: JobId) -> Result<JobDetails> {
        let mut view = self.handle(id)?.view;
        let ended = view.wait_for(|v| v.ended).await.map(|v| v.details.clone());
        // The master stopped without ending (the runtime shuts down): report what it last had.
        Ok(ended.unwrap_or_else(|_| view.borrow().details.clone()))
    }

    /// Cancels a job that has not ended.
    ///
    /// # Errors
    /// [`Error::JobNotFound`]; [`Error::IllegalState`] when it already ended.
    pub async fn cancel(&self, id: JobId) -> Result<()> {
        let handle = self.handle(id)?;
        let (reply, answer) = oneshot::channel();
        handle.send(JobInput::Cancel(reply));
        answer.await.unwrap_or_else(|_| {
            Err(Error::IllegalState {
                job: id,
                status: handle.view.borrow().details.state.to_string(),
                action: "cancel".into(),
            })
        })
    }

    /// Triggers a checkpoint of the job now; returns its id.
    ///
    /// # Errors
    /// [`Error::JobNotFound`]; [`Error::InvalidRequest`] when the job has checkpointing off;
    /// [`Error::IllegalState`] when not all its tasks run; [`Error::Unavailable`] when as many
    /// checkpoints as allowed are in progress.
    pub async fn trigger_checkpoint(&self, id: JobId) -> Result<u64> {
        let handle = self.handle(id)?;
        let (reply, answer) = oneshot::channel();
        handle.send(JobInput::TriggerCheckpoint(reply));
        answer.await.unwrap_or_else(|_| {
            Err(Error::IllegalState { job: id, status: "ended".into(), action: "a checkpoint".into() })
        })
    }

    /// Starts a savepoint of job `id` into a new directory under `target_dir` (or the
    /// configured default), as Flink's `POST /jobs/{id}/savepoints`: the answer is the request
    /// id to poll with [`Self::savepoint_status`]. A target the jobmanager cannot write to gives
    /// a request that completes as failed at once (the job goes on). `request_id` makes retries
    /// idempotent (a new one is made when `None`).
    ///
    /// # Errors
    /// [`Error::JobNotFound`]; [`Error::InvalidRequest`] when no directory is given or
    /// configured, or the job has checkpointing off; [`Error::IllegalState`] when not all its
    /// tasks run; [`Error::Unavailable`] when a savepoint is already in progress.
    pub async fn trigger_savepoint(
        &self,
        id: JobId,
        target_dir: Option<&str>,
        cancel_job: bool,
        request_id: Option<String>,
    ) -> Result<String> {
        self.savepoint(id, target_dir, cancel_job, None, request_id).await
    }

    /// Stops job `id` with a savepoint, as Flink's `POST /jobs/{id}/stop`: its sources emit
    /// nothing after the savepoint's barrier (with `drain`, the maximum watermark before it, so
    /// that every window fires) and end once it completed; the job then finishes. The answer is
    /// the request id to poll with [`Self::savepoint_status`]. If the savepoint fails, the job
    /// goes on (with `drain`, it restarts from its latest checkpoint).
    ///
    /// # Errors
    /// As [`Self::trigger_savepoint`].
    pub async fn stop_with_savepoint(
        &self,
        id: JobId,
        target_dir: Option<&str>,
        drain: bool,
        request_id: Option<String>,
    ) -> Result<String> {
        self.savepoint(id, target_dir, false, Some(drain), request_id).await
    }

    async fn savepoint(
        &self,
        id: JobId,
        target_dir: Option<&str>,
        cancel_job: bool,
        stop: Option<bool>,
        request_id: Option<String>,
    ) -> Result<String> {
        let handle = self.handle(id)?;
        if let Some(request_id) = &request_id
            && self.savepoint_status(id, request_id).await.is_ok()
        {
            // A retry: the request exists (its master answers the trigger alike, but no new
            // directory is probed for it).
            return Ok(request_id.clone());
        }
        let target = target_dir
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .or_else(|| self.inner.settings.savepoint_dir.clone())
            .ok_or_else(|| {
                Error::InvalidRequest(
                    "no savepoint directory: name one (target-directory), or start the jobmanager with --savepoint-dir"
                        .into(),
                )
            })?;
        let target = if target.contains("://") { target } else { format!("file://{target}") };
        let dir_url = format!("{}/{}", target.trim_end_matches('/'), savepoint::directory_name(&id.to_string()));
        let options = self.inner.storage.options.clone();
        let storage = match Storage::open(&StorageConfig { url: dir_url.clone(), options }) {
            Ok(storage) => submission::probe_writable(&storage, &dir_url).await.map(|()| storage),
            Err(e) => Err(e.to_string()),
        }
        .map_err(|problem| format!("cannot write the savepoint to {target}: {problem}"));
        let request_id = request_id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let request = SavepointRequest { dir_url, storage, cancel_job, stop, request_id };
        let (reply, answer) = oneshot::channel();
        handle.send(JobInput::TriggerSavepoint(request, reply));
        answer.await.unwrap_or_else(|_| {
            Err(Error::IllegalState { job: id, status: "ended".into(), action: "a savepoint".into() })
        })
    }

    /// Deletes the savepoint at `path` (Flink's `POST /savepoint-disposal`) in the background;
    /// the answer is the request id to poll with [`Self::disposal_status`] (`Completed` with the
    /// directory once its files are gone, `Failed` when it is not a savepoint or a delete failed).
    pub fn dispose_savepoint(&self, path: &str) -> String {
        let request_id = uuid::Uuid::new_v4().simple().to_string();
        self.set_disposal(&request_id, SavepointStatus::InProgress);
        let (this, path, id) = (self.clone(), path.to_owned(), request_id.clone());
        tokio::spawn(async move {
            let status = match crate::savepoint_restore::dispose(&path, &this.inner.storage.options).await {
                Ok(location) => {
                    info!(savepoint = %location, "savepoint disposed");
                    SavepointStatus::Completed { location }
                }
                Err(e) => {
                    warn!(savepoint = %path, "savepoint disposal failed: {e}");
                    SavepointStatus::Failed { reason: e.to_string() }
                }
            };
            this.set_disposal(&id, status);
        });
        request_id
    }

    fn set_disposal(&self, request_id: &str, status: SavepointStatus) {
        self.inner.disposals.send_modify(|disposals| {
            let mut updated = (**disposals).clone();
            updated.insert(request_id.to_owned(), status);
            while updated.len() > DISPOSALS_KEPT {
                let Some(done) =
                    updated.iter().find(|(_, s)| **s != SavepointStatus::InProgress).map(|(k, _)| k.clone())
                else {
                    break;
                };
                updated.remove(&done);
            }
            *disposals = Arc::new(updated);
        });
    }

    /// Where disposal request `request_id` stands.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown request.
    pub fn disposal_status(&self, request_id: &str) -> Result<SavepointStatus> {
        self.inner
            .disposals
            .borrow()
            .get(request_id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("there is no savepoint disposal with triggerId={request_id}")))
    }

    /// Where savepoint request `request_id` of job `id` stands.
    ///
    /// # Errors
    /// [`Error::JobNotFound`] for an unknown job, or a job that ended (its requests are
    /// forgotten with it); [`Error::NotFound`] for an unknown request.
    pub async fn savepoint_status(&self, id: JobId, request_id: &str) -> Result<SavepointStatus> {
        self.view(id)?.savepoint(request_id).cloned().ok_or_else(|| {
            Error::NotFound(format!("there is no savepoint operation with triggerId={request_id} for job {id}"))
        })
    }

    /// The job's checkpoints as its master last published them (`None` when it has
    /// checkpointing off).
    ///
    /// # Errors
    /// [`Error::JobNotFound`].
    pub fn checkpoints(&self, id: JobId) -> Result<Option<CheckpointsReport>> {
        Ok(self.view(id)?.checkpoints.clone())
    }
}

/// Retries a storage operation with backoff until it succeeds.
async fn retry_storage<T, F, Fut>(mut operation: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, weir_runtime::storage::StorageError>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match operation().await {
            Ok(value) => return value,
            Err(e) => {
                warn!("storage operation failed (retrying in {} ms): {e}", backoff.as_millis());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Task events from taskmanagers, routed to their jobs' masters.
struct EventSink(watch::Receiver<Directory>);

impl EventSink {
    fn send(&self, job: JobId, input: JobInput) {
        let handle = self.0.borrow().get(&job).cloned();
        if let Some(handle) = handle {
            handle.send(input);
        }
    }
}

impl TaskEventSink for EventSink {
    fn task_event(&self, event: TaskEvent) {
        self.send(event.task.job, JobInput::Task(event));
    }

    fn checkpoint_acknowledged(&self, task: TaskId, checkpoint: u64, snapshot: TaskSnapshot) {
        self.send(task.job, JobInput::Acknowledge(task, checkpoint, snapshot));
    }

    fn checkpoint_declined(&self, task: TaskId, checkpoint: u64, reason: String) {
        self.send(task.job, JobInput::Decline(task, checkpoint, reason));
    }
}
