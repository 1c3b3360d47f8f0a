//! The asynchronous part of checkpoints on a taskmanager: writing a task's snapshot to checkpoint
//! storage and acknowledging it with handles, reading a task's state back on restore, and the
//! job's transactional sinks that commit when a checkpoint completes.

use crate::connectors::SinkCommitter;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tracing::{debug, warn};
use weir_api::runtime::{ChainSnapshot, CheckpointId, OperatorSnapshot};
use weir_api::{Error, Result};
use weir_runtime::checkpoint::{StateHandle, TaskRestore, TaskSnapshot};
use weir_runtime::storage::{CheckpointLayout, Storage};
use weir_runtime::{TaskEventSink, TaskId};

/// Writes one task's snapshots under its job's checkpoint directory, off the task thread.
#[derive(Clone)]
pub(crate) struct SnapshotWriter {
    pub(crate) storage: Storage,
    pub(crate) layout: CheckpointLayout,
    pub(crate) runtime: tokio::runtime::Handle,
}

impl SnapshotWriter {
    /// The name of a task's own file in a checkpoint directory.
    fn file_name(task: TaskId) -> String {
        format!("{}-{}", task.vertex, task.subtask)
    }

    /// Serializes and uploads `snapshot` in the background, then acknowledges it to `events` with
    /// the file's handle (or declines the checkpoint if the upload fails). Returns at once.
    pub(crate) fn write(
        &self,
        task: TaskId,
        snapshot: ChainSnapshot,
        alignment_ms: u64,
        events: Arc<dyn TaskEventSink>,
    ) {
        let checkpoint = snapshot.checkpoint;
        let url = self.layout.task_file_url(checkpoint, &Self::file_name(task));
        let storage = self.storage.clone();
        self.runtime.spawn(async move {
            let encoded = tokio::task::spawn_blocking(move || postcard::to_allocvec(&snapshot)).await;
            let bytes = match encoded {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(e)) => {
                    events.checkpoint_declined(task, checkpoint, format!("cannot serialize the snapshot: {e}"));
                    return;
                }
                Err(e) => {
                    events.checkpoint_declined(task, checkpoint, format!("snapshot serialization failed: {e}"));
                    return;
                }
            };
            let size = bytes.len() as u64;
            match storage.put(&url, bytes.into()).await {
                Ok(()) => {
                    debug!(job_id = %task.job, vertex = task.vertex, subtask = task.subtask, checkpoint_id = checkpoint, size, "snapshot written");
                    let handle = StateHandle { uri: url, size_bytes: size, incremental_bytes: size, shared: false };
                    events.checkpoint_acknowledged(task, checkpoint, TaskSnapshot { handles: vec![handle], alignment_ms });
                }
                Err(e) => {
                    warn!(job_id = %task.job, vertex = task.vertex, subtask = task.subtask, checkpoint_id = checkpoint, "cannot write the snapshot: {e}");
                    events.checkpoint_declined(task, checkpoint, format!("cannot write the snapshot: {e}"));
                }
            }
        });
    }
}

/// Reads a task's part of a completed checkpoint: its operators' state by uid.
///
/// # Errors
/// [`Error::Runtime`] naming the file when a handle cannot be read or does not decode as a
/// snapshot of that checkpoint.
pub(crate) fn read_restored(
    storage: &Storage,
    restore: &TaskRestore,
    runtime: &tokio::runtime::Handle,
) -> Result<HashMap<String, OperatorSnapshot>> {
    let mut operators = HashMap::new();
    for handle in restore.handles.iter().filter(|h| !h.shared) {
        let bytes = runtime
            .block_on(storage.get(&handle.uri))
            .map_err(|e| Error::runtime("checkpoint restore", format!("checkpoint {}: {e}", restore.checkpoint_id)))?;
        let snapshot: ChainSnapshot = postcard::from_bytes(&bytes).map_err(|e| {
            Error::runtime(
                "checkpoint restore",
                format!("checkpoint {}: {} is corrupt: {e}", restore.checkpoint_id, handle.uri),
            )
        })?;
        if snapshot.checkpoint != restore.checkpoint_id {
            return Err(Error::runtime(
                "checkpoint restore",
                format!("{} holds checkpoint {}, expected {}", handle.uri, snapshot.checkpoint, restore.checkpoint_id),
            ));
        }
        for operator in snapshot.operators {
            operators.insert(operator.uid.clone(), operator);
        }
    }
    Ok(operators)
}

/// The transactional sinks of one job on this taskmanager, by attempt. They outlive their tasks:
/// a sink that finished still commits when the job's final notification arrives.
#[derive(Default)]
pub(crate) struct JobCommitters {
    committers: Mutex<Vec<(u32, Arc<dyn SinkCommitter>)>>,
}

impl JobCommitters {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u32, Arc<dyn SinkCommitter>)>> {
        self.committers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a sink of attempt `attempt`.
    pub(crate) fn add(&self, attempt: u32, committer: Arc<dyn SinkCommitter>) {
        self.lock().push((attempt, committer));
    }

    /// Commits checkpoint `checkpoint` (and earlier) in every sink of attempt `attempt`.
    ///
    /// # Errors
    /// The first commit that failed (the others are still attempted).
    pub(crate) fn commit(&self, attempt: u32, checkpoint: CheckpointId) -> Result<()> {
        let committers: Vec<_> = self.lock().iter().filter(|(a, _)| *a == attempt).map(|(_, c)| c.clone()).collect();
        let mut first_error = None;
        for committer in committers {
            if let Err(e) = committer.commit(checkpoint) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
