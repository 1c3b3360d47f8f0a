//! A job's checkpoint files, handled off the job's loop: the metadata file (written last; read
//! back with retries at restore), and deletions and sweeps, which run in the job's own deleter
//! task so that acknowledgements never queue behind a large delete.
//!
//! A transient storage error never makes a checkpoint unusable: reads are retried with backoff;
//! only a missing metadata file or one that fails its checksum does.

use super::CheckpointKind;
use super::stats::CompletedCheckpoint;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, warn};
use weir_runtime::checkpoint::{CheckpointMetadata, StateBackendKind, TaskSnapshot, TaskStateEntry};
use weir_runtime::storage::{CheckpointLayout, Storage, StorageError};
use weir_runtime::{JobId, TaskId};

/// Longest pause between two attempts to read a metadata file.
const MAX_READ_BACKOFF: Duration = Duration::from_secs(5);

/// The metadata of checkpoint `checkpoint_id` of `job`, from its acknowledgements.
pub(crate) fn metadata(
    job: JobId,
    checkpoint_id: u64,
    kind: CheckpointKind,
    trigger_ms: i64,
    backend: StateBackendKind,
    max_parallelism: u32,
    acknowledgements: BTreeMap<TaskId, TaskSnapshot>,
) -> CheckpointMetadata {
    CheckpointMetadata {
        max_parallelism,
        leader_epoch: weir_runtime::storage::writer_epoch(),
        version: 1,
        job_id: job.to_string(),
        checkpoint_id,
        kind: match kind {
            CheckpointKind::Checkpoint => "CHECKPOINT".into(),
            CheckpointKind::Savepoint => "SAVEPOINT".into(),
        },
        trigger_ms,
        backend,
        tasks: acknowledgements
            .into_iter()
            .map(|(task, snapshot)| TaskStateEntry { vertex: task.vertex, subtask: task.subtask, snapshot })
            .collect(),
    }
}

/// A completed checkpoint as the coordinator keeps it, from its metadata (after a jobmanager
/// restart). Tasks are named with `attempt`, the attempt that took it as far as anyone can tell
/// now; the coordinator only uses the vertex and subtask.
pub(crate) fn completed_from_metadata(job: JobId, metadata: &CheckpointMetadata) -> CompletedCheckpoint {
    let acknowledgements = metadata
        .tasks
        .iter()
        .map(|t| (TaskId { job, attempt: 0, vertex: t.vertex, subtask: t.subtask }, t.snapshot.clone()))
        .collect();
    let kind = if metadata.kind == "SAVEPOINT" { CheckpointKind::Savepoint } else { CheckpointKind::Checkpoint };
    CompletedCheckpoint::new(metadata.checkpoint_id, kind, metadata.trigger_ms, metadata.trigger_ms, acknowledgements)
}

/// Why a checkpoint cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unusable {
    pub(crate) checkpoint_id: u64,
    pub(crate) reason: String,
}

/// Reads the metadata of `checkpoint_id`, retrying transient storage errors with backoff until
/// it reads (then `Ok`) or turns out missing or corrupt (then `Err`). Cancel-safe: dropping the
/// future stops retrying.
pub(crate) async fn read_metadata(
    storage: &Storage,
    layout: &CheckpointLayout,
    job: JobId,
    checkpoint_id: u64,
) -> Result<CheckpointMetadata, Unusable> {
    let url = layout.metadata_url(checkpoint_id);
    let unusable = |reason: String| Unusable { checkpoint_id, reason };
    let mut backoff = Duration::from_millis(100);
    loop {
        match storage.get(&url).await {
            Ok(bytes) => {
                let metadata = CheckpointMetadata::decode(&bytes)
                    .map_err(|e| unusable(format!("its metadata {url} is unreadable: {e}")))?;
                if metadata.checkpoint_id != checkpoint_id || metadata.job_id != job.to_string() {
                    return Err(unusable(format!(
                        "its metadata {url} describes checkpoint {} of job {}",
                        metadata.checkpoint_id, metadata.job_id
                    )));
                }
                return Ok(metadata);
            }
            Err(StorageError::NotFound { .. }) => return Err(unusable(format!("its metadata {url} does not exist"))),
            Err(e) => {
                warn!(job_id = %job, checkpoint_id, "cannot read the checkpoint's metadata (retrying in {} ms): {e}", backoff.as_millis());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_READ_BACKOFF);
            }
        }
    }
}

/// The restore point among `candidates` (newest first): the first whose metadata reads; those
/// before it are unusable. `None` when none is usable.
pub(crate) async fn choose_restore_point(
    storage: &Storage,
    layout: &CheckpointLayout,
    job: JobId,
    candidates: Vec<u64>,
) -> (Option<CheckpointMetadata>, Vec<Unusable>) {
    let mut unusable = Vec::new();
    for checkpoint_id in candidates {
        match read_metadata(storage, layout, job, checkpoint_id).await {
            Ok(metadata) => return (Some(metadata), unusable),
            Err(e) => {
                warn!(job_id = %job, checkpoint_id, "checkpoint {checkpoint_id} is unusable, falling back to the previous checkpoint: {}", e.reason);
                unusable.push(e);
            }
        }
    }
    (None, unusable)
}

/// Every checkpoint id with a metadata file under the job's directory, and the highest
/// checkpoint id any file names (`chk-<n>/` directories of completed or unfinished checkpoints).
///
/// # Errors
/// The listing failed (retrying may help).
pub(crate) async fn list_checkpoints(
    storage: &Storage,
    layout: &CheckpointLayout,
) -> Result<(Vec<u64>, u64), StorageError> {
    let prefix = format!("{}/chk-", layout.job_url());
    let mut with_metadata = BTreeSet::new();
    let mut highest = 0;
    for (url, _) in storage.list(layout.job_url()).await? {
        let Some(rest) = url.strip_prefix(&prefix) else { continue };
        let Some((id, file)) = rest.split_once('/') else { continue };
        let Ok(id) = id.parse::<u64>() else { continue };
        highest = highest.max(id);
        if file == weir_runtime::storage::METADATA_FILE {
            with_metadata.insert(id);
        }
    }
    Ok((with_metadata.into_iter().collect(), highest))
}

/// Work for a job's deleter.
pub(crate) enum Deletion {
    /// Delete `chk-<n>/`: the metadata first, so that a partly deleted checkpoint never looks
    /// complete.
    Checkpoint(u64),
    /// Delete these files.
    Files(Vec<String>),
    /// Delete every file under the job's directory except the `chk-<n>/` directories and the
    /// files listed; then call `done`. Must only run when no checkpoint is being written.
    Sweep { keep_checkpoints: BTreeSet<u64>, keep_files: BTreeSet<String>, done: Box<dyn FnOnce() + Send> },
}

/// The handle of one job's deleter task: deletions run in order, one at a time, off the job's
/// loop. Failed deletions are logged and left for the next sweep.
#[derive(Clone)]
pub(crate) struct Deleter {
    queue: mpsc::UnboundedSender<Deletion>,
}

impl std::fmt::Debug for Deleter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deleter").finish_non_exhaustive()
    }
}

impl Deleter {
    /// Starts the deleter of `job`'s files on the current tokio runtime; it ends when every
    /// handle is dropped and its queue is empty.
    pub(crate) fn start(job: JobId, storage: Storage, layout: CheckpointLayout) -> Self {
        let (queue, mut work) = mpsc::unbounded_channel::<Deletion>();
        tokio::spawn(async move {
            while let Some(deletion) = work.recv().await {
                match deletion {
                    Deletion::Checkpoint(id) => delete_checkpoint(&storage, &layout, job, id).await,
                    Deletion::Files(uris) => {
                        for uri in uris {
                            if let Err(e) = storage.delete(&uri).await {
                                warn!(job_id = %job, "cannot delete {uri}: {e}");
                            }
                        }
                    }
                    Deletion::Sweep { keep_checkpoints, keep_files, done } => {
                        sweep(&storage, &layout, job, &keep_checkpoints, &keep_files).await;
                        done();
                    }
                }
            }
        });
        Self { queue }
    }

    /// Queues a deletion.
    pub(crate) fn send(&self, deletion: Deletion) {
        // The task runs as long as a handle exists.
        let _ = self.queue.send(deletion);
    }
}

async fn delete_checkpoint(storage: &Storage, layout: &CheckpointLayout, job: JobId, checkpoint: u64) {
    let result = async {
        storage.delete(&layout.metadata_url(checkpoint)).await?;
        storage.delete_prefix(&layout.checkpoint_url(checkpoint)).await
    }
    .await;
    if let Err(e) = result {
        warn!(job_id = %job, checkpoint_id = checkpoint, "cannot delete the checkpoint's files: {e}");
    }
}

async fn sweep(
    storage: &Storage,
    layout: &CheckpointLayout,
    job: JobId,
    keep_checkpoints: &BTreeSet<u64>,
    keep_files: &BTreeSet<String>,
) {
    let objects = match storage.list(layout.job_url()).await {
        Ok(objects) => objects,
        Err(e) => {
            warn!(job_id = %job, "cannot list the job's checkpoint files: {e}");
            return;
        }
    };
    let keep_dirs: Vec<String> = keep_checkpoints.iter().map(|id| format!("{}/", layout.checkpoint_url(*id))).collect();
    for (url, _) in objects {
        let kept = keep_files.contains(&url) || keep_dirs.iter().any(|d| url.starts_with(d.as_str()));
        if !kept {
            debug!(job_id = %job, "deleting unreferenced checkpoint file {url}");
            if let Err(e) = storage.delete(&url).await {
                warn!(job_id = %job, "cannot delete {url}: {e}");
            }
        }
    }
}
