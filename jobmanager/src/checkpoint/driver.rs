//! The checkpoint driver: one async loop per job that owns the [`Coordinator`], feeds it inputs
//! (time, acknowledgements, task events, attempts) and carries out its [`Action`]s: triggers and
//! notifications through the job's taskmanagers ([`CheckpointContext`]), metadata and deletions
//! in checkpoint storage.

use super::{Action, CheckpointConfig, CheckpointKind, Coordinator, TaskSnapshot};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};
use weir_api::runtime::CheckpointBarrier;
use weir_runtime::checkpoint::{CheckpointMetadata, StateBackendKind, TaskStateEntry};
use weir_runtime::storage::{CheckpointLayout, METADATA_FILE, Storage};
use weir_runtime::{JobId, TaskId, TaskManagerGateway};

/// What the driver needs from the rest of the jobmanager (replaceable in tests).
pub trait CheckpointContext: Send + Sync + 'static {
    /// The job's current attempt if every one of its tasks is running (a checkpoint can be
    /// triggered), else `None`.
    fn running_attempt(&self, job: JobId) -> Option<u32>;

    /// The taskmanagers running tasks of `attempt` of the job (only those with source tasks when
    /// `sources_only`).
    fn taskmanagers(&self, job: JobId, attempt: u32, sources_only: bool) -> Vec<Arc<dyn TaskManagerGateway>>;

    /// Fails the job's current attempt (the restart strategy applies).
    fn fail_job(&self, job: JobId, reason: String);
}

/// The checkpointing setup of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSettings {
    /// Timing, retention and failure tolerance.
    pub config: CheckpointConfig,
    /// The keyed state backend of the job's tasks.
    pub backend: StateBackendKind,
    /// The storage root (`<root>/<job-id>/chk-<n>/...`).
    pub storage_url: String,
}

enum Input {
    Acknowledge(TaskId, u64, TaskSnapshot),
    Decline(TaskId, u64, String),
    TaskFailed(TaskId),
    TaskFinished(TaskId),
    NewAttempt {
        attempt: u32,
        tasks: BTreeSet<TaskId>,
        sources: BTreeSet<TaskId>,
        restored: Option<u64>,
    },
    MetadataWritten(u64),
    MetadataFailed(u64, String),
    TriggerFailed(u64, String),
    /// Picks the checkpoint to restore from (falling back past unreadable ones).
    RestorePoint(oneshot::Sender<Option<CheckpointMetadata>>),
    Stop,
}

/// The checkpointing of one job: the coordinator (readable by the REST API) and the handle to
/// its driver loop.
pub struct JobCheckpoints {
    job: JobId,
    settings: CheckpointSettings,
    storage: Storage,
    layout: CheckpointLayout,
    coordinator: Mutex<Coordinator>,
    inputs: mpsc::UnboundedSender<Input>,
    /// Becomes `true` when the driver stopped (after the final sweep).
    stopped: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for JobCheckpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobCheckpoints")
            .field("job", &self.job)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl JobCheckpoints {
    /// Starts the driver of `job`'s checkpoints on the current tokio runtime. It idles until
    /// [`JobCheckpoints::new_attempt`] and stops after [`JobCheckpoints::stop`].
    ///
    /// # Errors
    /// An invalid configuration (the user's).
    pub fn start(
        job: JobId,
        settings: CheckpointSettings,
        storage: Storage,
        context: Arc<dyn CheckpointContext>,
    ) -> Result<Arc<Self>, super::InvalidCheckpointConfig> {
        let coordinator = Coordinator::new(settings.config.clone(), BTreeSet::new(), BTreeSet::new(), None)?;
        let (inputs, receiver) = mpsc::unbounded_channel();
        let layout = CheckpointLayout::new(&storage, job);
        let (stopped, _) = tokio::sync::watch::channel(false);
        let this =
            Arc::new(Self { job, settings, storage, layout, coordinator: Mutex::new(coordinator), inputs, stopped });
        let driver = Driver { checkpoints: this.clone(), context, attempt: 0 };
        tokio::spawn(driver.run(receiver));
        Ok(this)
    }

    /// The coordinator, to read its state.
    pub fn coordinator(&self) -> MutexGuard<'_, Coordinator> {
        self.coordinator.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The settings.
    pub fn settings(&self) -> &CheckpointSettings {
        &self.settings
    }

    /// The layout of the job's checkpoints.
    pub fn layout(&self) -> &CheckpointLayout {
        &self.layout
    }

    fn send(&self, input: Input) {
        let _ = self.inputs.send(input);
    }

    /// A task acknowledged a checkpoint.
    pub fn acknowledge(&self, task: TaskId, checkpoint: u64, snapshot: TaskSnapshot) {
        self.send(Input::Acknowledge(task, checkpoint, snapshot));
    }

    /// A task declined a checkpoint.
    pub fn decline(&self, task: TaskId, checkpoint: u64, reason: String) {
        self.send(Input::Decline(task, checkpoint, reason));
    }

    /// A task failed.
    pub fn task_failed(&self, task: TaskId) {
        self.send(Input::TaskFailed(task));
    }

    /// A task finished.
    pub fn task_finished(&self, task: TaskId) {
        self.send(Input::TaskFinished(task));
    }

    /// Attempt `attempt` was deployed with `tasks`, of which `sources` take triggers, restored
    /// from `restored`.
    pub fn new_attempt(&self, attempt: u32, tasks: BTreeSet<TaskId>, sources: BTreeSet<TaskId>, restored: Option<u64>) {
        self.send(Input::NewAttempt { attempt, tasks, sources, restored });
    }

    /// The checkpoint a new attempt restores from: the newest retained completed one whose
    /// metadata reads back intact; unreadable ones are discarded with a warning. `None` when
    /// there is none (or the driver stopped).
    pub async fn restore_point(&self) -> Option<CheckpointMetadata> {
        let (reply, answer) = oneshot::channel();
        self.send(Input::RestorePoint(reply));
        answer.await.ok().flatten()
    }

    /// Waits until the driver stopped after [`JobCheckpoints::stop`] (its final sweep done).
    pub async fn wait_stopped(&self) {
        let mut stopped = self.stopped.subscribe();
        let _ = stopped.wait_for(|s| *s).await;
    }

    /// The job ended: pending checkpoints are aborted, and once none is in progress, every file
    /// under the job's directory that no retained checkpoint uses is deleted.
    pub fn stop(&self) {
        self.send(Input::Stop);
    }
}

struct Driver {
    checkpoints: Arc<JobCheckpoints>,
    context: Arc<dyn CheckpointContext>,
    attempt: u32,
}

impl Driver {
    async fn run(mut self, inputs: mpsc::UnboundedReceiver<Input>) {
        self.drive(inputs).await;
        self.checkpoints.stopped.send_replace(true);
    }

    async fn drive(&mut self, mut inputs: mpsc::UnboundedReceiver<Input>) {
        let job = self.checkpoints.job;
        let interval = self.checkpoints.settings.config.interval_ms.max(1) as u64;
        let mut tick = tokio::time::interval(Duration::from_millis((interval / 10).clamp(5, 1000)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut started = false;
        let mut stopping = false;
        loop {
            let actions = tokio::select! {
                _ = tick.tick(), if started && !stopping => {
                    if self.context.running_attempt(job) == Some(self.attempt) {
                        self.checkpoints.coordinator().tick(now_ms())
                    } else {
                        Vec::new()
                    }
                }
                input = inputs.recv() => {
                    let Some(input) = input else { break };
                    match input {
                        Input::NewAttempt { attempt, tasks, sources, restored } => {
                            started = true;
                            self.attempt = attempt;
                            let actions = self.checkpoints.coordinator().new_attempt(tasks, sources, restored, now_ms());
                            self.perform(actions).await;
                            // Files of the previous attempt's unfinished checkpoints (uploads
                            // that landed after their abort) go before the new attempt writes.
                            self.sweep().await;
                            Vec::new()
                        }
                        Input::Stop => {
                            stopping = true;
                            self.checkpoints.coordinator().stop(now_ms())
                        }
                        Input::RestorePoint(reply) => {
                            let point = self.restore_point().await;
                            let _ = reply.send(point);
                            Vec::new()
                        }
                        other => self.apply(other).await,
                    }
                }
            };
            self.perform(actions).await;
            if stopping && self.checkpoints.coordinator().pending().is_empty() {
                self.sweep().await;
                debug!(job_id = %job, "checkpoint driver stopped");
                break;
            }
        }
    }

    async fn apply(&mut self, input: Input) -> Vec<Action> {
        let now = now_ms();
        let checkpoints = &self.checkpoints;
        match input {
            Input::Acknowledge(task, checkpoint, snapshot) => {
                let pending = checkpoints.coordinator().is_pending(checkpoint);
                if !pending {
                    // Too late (aborted or a stale attempt): its own files would be orphans.
                    for handle in snapshot.handles.iter().filter(|h| !h.shared) {
                        if let Err(e) = checkpoints.storage.delete(&handle.uri).await {
                            warn!(job_id = %checkpoints.job, checkpoint_id = checkpoint, "cannot delete a late snapshot: {e}");
                        }
                    }
                    return Vec::new();
                }
                checkpoints.coordinator().acknowledge(task, checkpoint, snapshot, now)
            }
            Input::Decline(task, checkpoint, reason) => {
                checkpoints.coordinator().decline(task, checkpoint, reason, now)
            }
            Input::TaskFailed(task) => checkpoints.coordinator().task_failed(task, now),
            Input::TaskFinished(task) => checkpoints.coordinator().task_finished(task, now),
            Input::MetadataWritten(checkpoint) => checkpoints.coordinator().metadata_written(checkpoint, now),
            Input::MetadataFailed(checkpoint, reason) => {
                checkpoints.coordinator().metadata_failed(checkpoint, reason, now)
            }
            Input::TriggerFailed(checkpoint, reason) => {
                let mut coordinator = checkpoints.coordinator();
                match coordinator.sources().iter().next().copied() {
                    Some(source) => coordinator.decline(source, checkpoint, reason, now),
                    None => Vec::new(),
                }
            }
            Input::NewAttempt { .. } | Input::Stop | Input::RestorePoint(_) => Vec::new(),
        }
    }

    async fn restore_point(&mut self) -> Option<CheckpointMetadata> {
        let checkpoints = self.checkpoints.clone();
        loop {
            let latest = checkpoints.coordinator().latest_completed().map(|c| c.checkpoint_id)?;
            let url = checkpoints.layout.metadata_url(latest);
            let read = match checkpoints.storage.get(&url).await {
                Ok(bytes) => CheckpointMetadata::decode(&bytes).map_err(|e| e.to_string()).and_then(|m| {
                    if m.checkpoint_id == latest && m.job_id == checkpoints.job.to_string() {
                        Ok(m)
                    } else {
                        Err(format!("it describes checkpoint {} of job {}", m.checkpoint_id, m.job_id))
                    }
                }),
                Err(e) => Err(e.to_string()),
            };
            match read {
                Ok(metadata) => return Some(metadata),
                Err(e) => {
                    warn!(
                        job_id = %checkpoints.job,
                        checkpoint_id = latest,
                        "checkpoint {latest} is unusable, falling back to the previous checkpoint: its metadata {url} is unreadable: {e}"
                    );
                    let actions = checkpoints.coordinator().discard_completed(latest);
                    self.perform(actions).await;
                }
            }
        }
    }

    async fn perform(&mut self, actions: Vec<Action>) {
        for action in actions {
            self.perform_one(action).await;
        }
    }

    async fn perform_one(&mut self, action: Action) {
        let checkpoints = self.checkpoints.clone();
        let job = checkpoints.job;
        match action {
            Action::Trigger { checkpoint_id, kind, timestamp_ms } => {
                debug!(job_id = %job, checkpoint_id, ?kind, "triggering checkpoint");
                let gateways = self.context.taskmanagers(job, self.attempt, true);
                let attempt = self.attempt;
                let barrier = CheckpointBarrier { id: checkpoint_id, timestamp: timestamp_ms };
                tokio::spawn(async move {
                    let mut triggered = 0;
                    for gateway in gateways {
                        match gateway.trigger_checkpoint(job, attempt, barrier).await {
                            Ok(n) => triggered += n,
                            Err(e) => {
                                let reason = format!("cannot trigger at taskmanager {}: {e}", gateway.id());
                                checkpoints.send(Input::TriggerFailed(checkpoint_id, reason));
                                return;
                            }
                        }
                    }
                    if triggered == 0 {
                        checkpoints.send(Input::TriggerFailed(checkpoint_id, "no source task to trigger".into()));
                    }
                });
            }
            Action::WriteMetadata { checkpoint_id, kind, acknowledgements } => {
                let metadata = CheckpointMetadata {
                    version: 1,
                    job_id: job.to_string(),
                    checkpoint_id,
                    kind: match kind {
                        CheckpointKind::Checkpoint => "CHECKPOINT".into(),
                        CheckpointKind::Savepoint => "SAVEPOINT".into(),
                    },
                    trigger_ms: checkpoints
                        .coordinator()
                        .pending()
                        .iter()
                        .find(|p| p.checkpoint_id == checkpoint_id)
                        .map_or(0, |p| p.trigger_ms),
                    backend: checkpoints.settings.backend,
                    tasks: entries(acknowledgements),
                };
                let url = checkpoints.layout.metadata_url(checkpoint_id);
                tokio::spawn(async move {
                    match checkpoints.storage.put(&url, metadata.encode().into()).await {
                        Ok(()) => checkpoints.send(Input::MetadataWritten(checkpoint_id)),
                        Err(e) => checkpoints.send(Input::MetadataFailed(checkpoint_id, e.to_string())),
                    }
                });
            }
            Action::NotifyComplete { checkpoint_id } => {
                if let Some(done) =
                    checkpoints.coordinator().latest_completed().filter(|c| c.checkpoint_id == checkpoint_id)
                {
                    info!(
                        job_id = %job,
                        checkpoint_id,
                        duration_ms = done.duration_ms,
                        state_size = done.state_size_bytes,
                        incremental_size = done.incremental_size_bytes,
                        "checkpoint completed"
                    );
                }
                let gateways = self.context.taskmanagers(job, self.attempt, false);
                let attempt = self.attempt;
                tokio::spawn(async move {
                    for gateway in gateways {
                        if let Err(e) = gateway.notify_checkpoint_complete(job, attempt, checkpoint_id).await {
                            warn!(job_id = %job, checkpoint_id, taskmanager = gateway.id(), "notifying checkpoint completion failed: {e}");
                        }
                    }
                });
            }
            Action::Abort { checkpoint_id, reason } => {
                if reason.counts_as_failure() {
                    warn!(job_id = %job, checkpoint_id, "checkpoint failed: {reason}");
                } else {
                    debug!(job_id = %job, checkpoint_id, "checkpoint aborted: {reason}");
                }
                self.delete_checkpoint(checkpoint_id).await;
            }
            Action::Discard { checkpoint_id } => {
                debug!(job_id = %job, checkpoint_id, "discarding a checkpoint no longer retained");
                self.delete_checkpoint(checkpoint_id).await;
            }
            Action::DeleteShared { uris } => {
                for uri in uris {
                    if let Err(e) = checkpoints.storage.delete(&uri).await {
                        warn!(job_id = %job, "cannot delete the shared file {uri}: {e}");
                    }
                }
            }
            Action::FailJob { reason } => self.context.fail_job(job, reason),
        }
    }

    /// Deletes `chk-<n>/`: the metadata first, so that a partly deleted checkpoint never looks
    /// complete.
    async fn delete_checkpoint(&self, checkpoint: u64) {
        let checkpoints = &self.checkpoints;
        let result = async {
            checkpoints.storage.delete(&checkpoints.layout.metadata_url(checkpoint)).await?;
            checkpoints.storage.delete_prefix(&checkpoints.layout.checkpoint_url(checkpoint)).await
        }
        .await;
        if let Err(e) = result {
            warn!(job_id = %checkpoints.job, checkpoint_id = checkpoint, "cannot delete the checkpoint's files: {e}");
        }
    }

    /// Deletes every file under the job's directory that neither a retained completed checkpoint
    /// nor a checkpoint in progress uses.
    async fn sweep(&self) {
        let checkpoints = &self.checkpoints;
        let layout = &checkpoints.layout;
        let (keep_dirs, keep_files) = {
            let coordinator = checkpoints.coordinator();
            let mut dirs: Vec<String> = coordinator
                .completed()
                .iter()
                .map(|c| c.checkpoint_id)
                .chain(coordinator.pending().iter().map(|p| p.checkpoint_id))
                .map(|id| format!("{}/", layout.checkpoint_url(id)))
                .collect();
            dirs.sort();
            let files: BTreeSet<String> = coordinator.completed().iter().flat_map(|c| c.shared_uris()).collect();
            (dirs, files)
        };
        let objects = match checkpoints.storage.list(layout.job_url()).await {
            Ok(objects) => objects,
            Err(e) => {
                warn!(job_id = %checkpoints.job, "cannot list the job's checkpoint files: {e}");
                return;
            }
        };
        for (url, _) in objects {
            let kept = keep_files.contains(&url) || keep_dirs.iter().any(|d| url.starts_with(d.as_str()));
            if !kept {
                debug!(job_id = %checkpoints.job, "deleting unreferenced checkpoint file {url}");
                if let Err(e) = checkpoints.storage.delete(&url).await {
                    warn!(job_id = %checkpoints.job, "cannot delete {url}: {e}");
                }
            }
        }
        let _ = METADATA_FILE;
    }
}

/// Metadata entries from acknowledgements, by vertex and subtask.
fn entries(acknowledgements: BTreeMap<TaskId, TaskSnapshot>) -> Vec<TaskStateEntry> {
    acknowledgements
        .into_iter()
        .map(|(task, snapshot)| TaskStateEntry { vertex: task.vertex, subtask: task.subtask, snapshot })
        .collect()
}
