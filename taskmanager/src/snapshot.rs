//! The asynchronous part of checkpoints on a taskmanager: writing a task's snapshot to checkpoint
//! storage and acknowledging it with handles, reading a task's state back on restore, and the
//! job's transactional sinks that commit when a checkpoint completes.

use crate::connectors::CheckpointCommitter;
use crate::state::task_db::{LocalCheckpoint, SharedUploads, TaskDatabase, UploadedSst};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tracing::{debug, warn};
use weir_api::runtime::{ChainSnapshot, CheckpointId, FINAL_CHECKPOINT, RestoredState};
use weir_api::{Error, Result};
use weir_runtime::checkpoint::{StateHandle, TaskRestore, TaskSnapshot};
use weir_runtime::storage::{CheckpointLayout, Storage, StorageError};
use weir_runtime::{TaskEventSink, TaskId};

/// Writes one task's snapshots under its job's checkpoint directory, off the task thread.
pub(crate) struct SnapshotWriter {
    pub(crate) storage: Storage,
    pub(crate) layout: CheckpointLayout,
    pub(crate) runtime: tokio::runtime::Handle,
    /// Uploads in progress: a task ends only after they did, so that nothing it wrote lands in
    /// storage after the jobmanager saw it stop.
    pub(crate) in_flight: Vec<tokio::task::JoinHandle<()>>,
    /// The task's metrics: the sizes of its last acknowledged checkpoint go there.
    pub(crate) metrics: Arc<crate::context::TaskMetrics>,
}

/// A native RocksDB checkpoint to upload with the chain's snapshot.
pub(crate) struct DatabaseCheckpoint {
    pub(crate) local: LocalCheckpoint,
    pub(crate) uploads: Arc<SharedUploads>,
    pub(crate) instance_id: String,
}

/// Uploads the files of a native RocksDB checkpoint: SST files of the newest checkpoint this task
/// was told completed are reused (see [`SharedUploads`]), new ones go to `shared/`, the others
/// (`CURRENT`, `MANIFEST-*`, `OPTIONS-*`) to the checkpoint's own directory. Every object it
/// writes (or starts writing) is pushed to `written` first, so that a caller that declines the
/// checkpoint can delete them.
async fn upload_database(
    storage: &Storage,
    layout: &CheckpointLayout,
    task: TaskId,
    checkpoint: CheckpointId,
    database: &DatabaseCheckpoint,
    written: &mut Vec<String>,
) -> Result<Vec<StateHandle>, String> {
    let mut handles = Vec::with_capacity(database.local.files.len());
    for file in &database.local.files {
        if file.is_sst
            && let Some(uploaded) = database.uploads.reusable(&file.name)
        {
            handles.push(StateHandle {
                uri: uploaded.uri.clone(),
                size_bytes: uploaded.size_bytes,
                incremental_bytes: 0,
                shared: true,
            });
            database.uploads.record(checkpoint, &file.name, uploaded);
            continue;
        }
        let path = database.local.dir.join(&file.name);
        let bytes = tokio::fs::read(&path).await.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let uri = if file.is_sst {
            layout.shared_file_url(&format!(
                "{}-{}-{}-{checkpoint}-{}",
                task.vertex, task.subtask, database.instance_id, file.name
            ))
        } else {
            layout.task_file_url(checkpoint, &format!("{}-{}.rocksdb/{}", task.vertex, task.subtask, file.name))
        };
        let size = bytes.len() as u64;
        written.push(uri.clone());
        storage.put(&uri, bytes.into()).await.map_err(|e| e.to_string())?;
        if file.is_sst {
            database.uploads.record(checkpoint, &file.name, UploadedSst { uri: uri.clone(), size_bytes: size });
        }
        handles.push(StateHandle { uri, size_bytes: size, incremental_bytes: size, shared: file.is_sst });
    }
    Ok(handles)
}

/// Uploads one task's part of checkpoint `snapshot.checkpoint`: the native database checkpoint
/// (if any), then the serialized chain snapshot at `url`. Returns the handles to acknowledge.
///
/// # Errors
/// Why the checkpoint must be declined. Everything this call wrote for the checkpoint is then
/// deleted again (best effort: a failed delete is logged), so that a declined checkpoint leaves
/// no orphans; files reused from an earlier checkpoint are left alone.
async fn upload_task_snapshot(
    storage: &Storage,
    layout: &CheckpointLayout,
    task: TaskId,
    snapshot: ChainSnapshot,
    url: String,
    database: Option<&DatabaseCheckpoint>,
) -> Result<Vec<StateHandle>, String> {
    let checkpoint = snapshot.checkpoint;
    let mut written = Vec::new();
    let result = async {
        if weir_runtime::faults::fires("taskmanager::upload").is_some() {
            return Err(format!("injected fault: failpoint taskmanager::upload (checkpoint {checkpoint})"));
        }
        let mut handles = Vec::new();
        if let Some(database) = database {
            let uploaded = upload_database(storage, layout, task, checkpoint, database, &mut written).await;
            let _ = tokio::fs::remove_dir_all(&database.local.dir).await;
            handles = uploaded.map_err(|e| format!("cannot upload the RocksDB checkpoint: {e}"))?;
        }
        let bytes = tokio::task::spawn_blocking(move || postcard::to_allocvec(&snapshot))
            .await
            .map_err(|e| format!("snapshot serialization failed: {e}"))?
            .map_err(|e| format!("cannot serialize the snapshot: {e}"))?;
        let size = bytes.len() as u64;
        written.push(url.clone());
        storage.put(&url, bytes.into()).await.map_err(|e| format!("cannot write the snapshot: {e}"))?;
        debug!(job_id = %task.job, vertex = task.vertex, subtask = task.subtask, checkpoint_id = checkpoint, size, "snapshot written");
        handles.push(StateHandle { uri: url, size_bytes: size, incremental_bytes: size, shared: false });
        Ok(handles)
    }
    .await;
    if result.is_err() {
        if let Some(database) = database {
            database.uploads.abort(checkpoint);
        }
        for uri in &written {
            if let Err(e) = storage.delete(uri).await {
                warn!(job_id = %task.job, vertex = task.vertex, subtask = task.subtask, checkpoint_id = checkpoint, "cannot delete {uri} of a declined checkpoint: {e}");
            }
        }
    }
    result
}

/// The uids of the operators that have state in `snapshot`.
fn operators_of(snapshot: &ChainSnapshot) -> Vec<String> {
    snapshot.operators.iter().map(|o| o.uid.clone()).collect()
}

impl SnapshotWriter {
    /// The name of a task's own file in a checkpoint directory.
    fn file_name(task: TaskId) -> String {
        format!("{}-{}", task.vertex, task.subtask)
    }

    /// Serializes and uploads `snapshot` in the background, then acknowledges it to `events` with
    /// the file's handle (or declines the checkpoint if the upload fails, after deleting what it
    /// wrote). Returns at once.
    pub(crate) fn write(
        &mut self,
        task: TaskId,
        snapshot: ChainSnapshot,
        database: Option<DatabaseCheckpoint>,
        alignment_ms: u64,
        events: Arc<dyn TaskEventSink>,
    ) {
        let url = self.layout.task_file_url(snapshot.checkpoint, &Self::file_name(task));
        let storage = self.storage.clone();
        let sizes = Some(Arc::clone(&self.metrics));
        self.upload(task, snapshot, storage, url, database, alignment_ms, events, sizes);
    }

    /// Writes `snapshot`, a savepoint's canonical part of this task, into the savepoint's
    /// directory in the background, then acknowledges it (or declines the savepoint, after
    /// deleting what it wrote). Returns at once.
    pub(crate) fn write_savepoint(
        &mut self,
        task: TaskId,
        snapshot: ChainSnapshot,
        target: &crate::savepoint::SavepointTarget,
        alignment_ms: u64,
        events: Arc<dyn TaskEventSink>,
    ) {
        if weir_runtime::faults::fires("taskmanager::savepoint::decline").is_some() {
            let reason = format!(
                "injected fault: failpoint taskmanager::savepoint::decline (savepoint {})",
                snapshot.checkpoint
            );
            warn!(job_id = %task.job, vertex = task.vertex, subtask = task.subtask, "declining the savepoint: {reason}");
            events.checkpoint_declined(task, snapshot.checkpoint, reason);
            return;
        }
        let storage = target.storage.clone();
        let url = storage.url_of(&Self::file_name(task));
        self.upload(task, snapshot, storage, url, None, alignment_ms, events, None);
    }

    /// Uploads `snapshot` (and `database`'s files) in the background, then acknowledges it with
    /// its handles (recording its sizes in `sizes`, for a checkpoint), or declines it (after
    /// deleting what it wrote).
    #[allow(clippy::too_many_arguments)]
    fn upload(
        &mut self,
        task: TaskId,
        snapshot: ChainSnapshot,
        storage: Storage,
        url: String,
        database: Option<DatabaseCheckpoint>,
        alignment_ms: u64,
        events: Arc<dyn TaskEventSink>,
        sizes: Option<Arc<crate::context::TaskMetrics>>,
    ) {
        let checkpoint = snapshot.checkpoint;
        let operators = operators_of(&snapshot);
        let layout = self.layout.clone();
        self.in_flight.retain(|h| !h.is_finished());
        let handle = self.runtime.spawn(async move {
            match upload_task_snapshot(&storage, &layout, task, snapshot, url, database.as_ref()).await {
                Ok(handles) => {
                    if let Some(metrics) = sizes {
                        let bytes = |f: fn(&StateHandle) -> u64| {
                            i64::try_from(handles.iter().map(f).sum::<u64>()).unwrap_or(i64::MAX)
                        };
                        metrics.checkpoint_full_bytes.store(bytes(|h| h.size_bytes), Ordering::Relaxed);
                        metrics.checkpoint_incremental_bytes.store(bytes(|h| h.incremental_bytes), Ordering::Relaxed);
                    }
                    events.checkpoint_acknowledged(task, checkpoint, TaskSnapshot { handles, alignment_ms, operators });
                }
                Err(reason) => {
                    warn!(job_id = %task.job, vertex = task.vertex, subtask = task.subtask, checkpoint_id = checkpoint, "declining the checkpoint: {reason}");
                    events.checkpoint_declined(task, checkpoint, reason);
                }
            }
        });
        self.in_flight.push(handle);
    }

    /// Writes a finished task's final snapshot (FLIP-147) and returns its handle, blocking the
    /// task thread until it is written. Keyed state is left out: a finished task's input ended,
    /// so no record will ever read it again (its timers and windows fired at the final
    /// watermark); what matters on a restore is its operators' own state (a source's position at
    /// the end, a sink's pending transactions). The file is shared (`shared/final-...`): every
    /// later checkpoint of the attempt references it, and it lives as long as one of them.
    ///
    /// # Errors
    /// The snapshot cannot be encoded or written (the task then reports no final snapshot).
    pub(crate) fn write_final(&self, task: TaskId, mut snapshot: ChainSnapshot) -> Result<TaskSnapshot, String> {
        for operator in &mut snapshot.operators {
            operator.keyed.clear();
        }
        let operators = operators_of(&snapshot);
        let bytes = postcard::to_allocvec(&snapshot).map_err(|e| format!("cannot encode the final snapshot: {e}"))?;
        let uri = self.layout.shared_file_url(&format!("final-{}-{}-{}", task.vertex, task.subtask, task.attempt));
        let size = bytes.len() as u64;
        self.runtime.block_on(self.storage.put(&uri, bytes.into())).map_err(|e| e.to_string())?;
        let handle = StateHandle { uri, size_bytes: size, incremental_bytes: size, shared: true };
        Ok(TaskSnapshot { handles: vec![handle], alignment_ms: 0, operators })
    }

    /// Waits (from the task thread) until every upload started by [`SnapshotWriter::write`]
    /// ended.
    pub(crate) fn wait_for_uploads(&mut self) {
        for handle in self.in_flight.drain(..) {
            let _ = self.runtime.block_on(handle);
        }
    }
}

/// Reads a task's part of a completed checkpoint: its operators' state by uid; the files of a
/// native RocksDB checkpoint go into `database` (which must then be given).
///
/// # Errors
/// [`Error::Runtime`] naming the file when a handle cannot be read or does not decode as a
/// snapshot of that checkpoint.
pub(crate) fn read_restored(
    storage_of: &dyn Fn(&str) -> Result<Storage, String>,
    restore: &TaskRestore,
    runtime: &tokio::runtime::Handle,
    mut database: Option<&mut TaskDatabase>,
) -> Result<HashMap<String, RestoredState>, RestoreFailure> {
    let checkpoint = restore.checkpoint_id;
    let unusable = |message: String| RestoreFailure::unusable(checkpoint, message);
    let read = |uri: &str| {
        let storage = storage_of(uri).map_err(|e| unusable(format!("checkpoint {checkpoint}: {uri}: {e}")))?;
        read_with_retries(&storage, runtime, checkpoint, uri)
    };
    let mut operators = HashMap::new();
    let mut restored_ssts = HashMap::new();
    for handle in &restore.handles {
        // Shared files are named as such even when the handle does not say so: a restore from
        // another job's retained checkpoint reads them without sharing them (no-claim).
        let in_shared = handle.shared || handle.uri.rsplit_once('/').is_some_and(|(dir, _)| dir.ends_with("/shared"));
        let database_file = if in_shared && !is_final_snapshot(&handle.uri) {
            // `shared/<vertex>-<subtask>-<instance>-<checkpoint>-<name>`
            handle.uri.rsplit_once('-').map(|(_, name)| name)
        } else {
            handle.uri.rsplit_once(".rocksdb/").map(|(_, name)| name)
        };
        if let Some(name) = database_file {
            let database = database.as_deref_mut().ok_or_else(|| {
                RestoreFailure::failed(Error::runtime(
                    "checkpoint restore",
                    format!("checkpoint {checkpoint} holds RocksDB files but the job uses the heap backend"),
                ))
            })?;
            database.restore_file(name, &read(&handle.uri)?).map_err(RestoreFailure::failed)?;
            if handle.shared {
                let file = UploadedSst { uri: handle.uri.clone(), size_bytes: handle.size_bytes };
                restored_ssts.insert(name.to_owned(), file);
            }
            continue;
        }
        let bytes = read(&handle.uri)?;
        let snapshot: ChainSnapshot = postcard::from_bytes(&bytes)
            .map_err(|e| unusable(format!("checkpoint {checkpoint}: {} is corrupt: {e}", handle.uri)))?;
        // A finished task's final snapshot stands in for it in every later checkpoint.
        if snapshot.checkpoint != checkpoint && snapshot.checkpoint != FINAL_CHECKPOINT {
            return Err(unusable(format!(
                "{} holds checkpoint {}, expected {checkpoint}",
                handle.uri, snapshot.checkpoint
            )));
        }
        // A restore from a savepoint at another parallelism reads several old subtasks' files:
        // an operator's keyed state is the union of theirs (the backends keep only this task's
        // key groups), and its non-keyed states are all kept (sources and sinks take their share).
        for operator in snapshot.operators {
            let restored: &mut RestoredState = operators.entry(operator.uid).or_default();
            restored.keyed.extend(operator.keyed);
            if !operator.operator_state.is_empty() {
                restored.operator_states.push(operator.operator_state);
            }
        }
    }
    for operator in operators.values_mut() {
        operator.keyed.sort_by_key(|group| group.key_group);
    }
    if let Some(database) = database {
        database.uploads.restored(checkpoint, restored_ssts);
    }
    Ok(operators)
}

/// Whether a shared file is a finished task's final snapshot (`shared/final-...`).
fn is_final_snapshot(uri: &str) -> bool {
    uri.rsplit_once("/shared/").is_some_and(|(_, name)| name.starts_with("final-"))
}

/// Attempts to read a checkpoint file before a transient error fails the task.
const RESTORE_READ_ATTEMPTS: u32 = 6;

/// Reads `uri` of `checkpoint`, retrying transient storage errors with backoff (100 ms doubling,
/// about 6 s in all). A missing file makes the checkpoint unusable; a storage that keeps failing
/// fails the task (the job restarts and tries again, from the same checkpoint).
fn read_with_retries(
    storage: &Storage,
    runtime: &tokio::runtime::Handle,
    checkpoint: CheckpointId,
    uri: &str,
) -> Result<bytes::Bytes, RestoreFailure> {
    let mut backoff = std::time::Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match runtime.block_on(storage.get(uri)) {
            Ok(bytes) => return Ok(bytes),
            Err(StorageError::NotFound { .. }) => {
                return Err(RestoreFailure::unusable(
                    checkpoint,
                    format!("checkpoint {checkpoint}: {uri} does not exist"),
                ));
            }
            Err(e @ StorageError::Config(_)) => {
                return Err(RestoreFailure::unusable(checkpoint, format!("checkpoint {checkpoint}: {e}")));
            }
            Err(e) if attempt < RESTORE_READ_ATTEMPTS => {
                warn!(checkpoint_id = checkpoint, "cannot read {uri} (retrying in {} ms): {e}", backoff.as_millis());
                std::thread::sleep(backoff);
                backoff *= 2;
            }
            Err(e) => {
                return Err(RestoreFailure::failed(Error::runtime(
                    "checkpoint restore",
                    format!("checkpoint {checkpoint}: {e}"),
                )));
            }
        }
    }
}

/// Why a task could not restore its state.
#[derive(Debug)]
pub(crate) struct RestoreFailure {
    /// The task's failure.
    pub(crate) error: Error,
    /// `Some(n)`: a file of checkpoint `n` is missing or corrupt, so `n` is unusable (the
    /// jobmanager falls back to the previous checkpoint); `None`: a failure a retry may cure.
    pub(crate) unusable: Option<CheckpointId>,
}

impl RestoreFailure {
    fn unusable(checkpoint: CheckpointId, message: String) -> Self {
        Self { error: Error::runtime("checkpoint restore", message), unusable: Some(checkpoint) }
    }

    fn failed(error: Error) -> Self {
        Self { error, unusable: None }
    }
}

/// What happens on this taskmanager when a checkpoint of a job completes.
pub(crate) enum CompletionListener {
    /// A transactional sink commits.
    Sink(Arc<dyn CheckpointCommitter>),
    /// A sink the job implements commits (its code stays loaded while the committer lives).
    Plugin(weir_runtime::Plugged<Arc<dyn CheckpointCommitter>>),
    /// A RocksDB database may reuse the SST files uploaded for the checkpoint.
    Database(Arc<SharedUploads>),
}

impl CompletionListener {
    fn checkpoint_complete(&self, checkpoint: CheckpointId) -> Result<()> {
        match self {
            Self::Sink(committer) => committer.commit(checkpoint),
            Self::Plugin(committer) => committer.commit(checkpoint),
            Self::Database(uploads) => {
                uploads.confirm(checkpoint);
                Ok(())
            }
        }
    }
}

/// The checkpoint listeners (transactional sinks, databases) of one job on this taskmanager, by
/// attempt. They outlive their tasks: a sink that finished still commits when the job's final
/// notification arrives.
#[derive(Default)]
pub(crate) struct JobCommitters {
    committers: Mutex<Vec<(u32, Arc<CompletionListener>)>>,
}

impl JobCommitters {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u32, Arc<CompletionListener>)>> {
        self.committers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a listener of attempt `attempt`.
    pub(crate) fn add(&self, attempt: u32, listener: CompletionListener) {
        self.lock().push((attempt, Arc::new(listener)));
    }

    /// Forgets the listeners of attempts up to `attempt` (released by the jobmanager).
    pub(crate) fn release_up_to(&self, attempt: u32) {
        self.lock().retain(|(a, _)| *a > attempt);
    }

    /// Commits checkpoint `checkpoint` (and earlier) in every sink of attempt `attempt`, and
    /// lets the databases reuse its files unless it is a `savepoint` (whose files are not
    /// theirs to reuse).
    ///
    /// # Errors
    /// The first commit that failed (the others are still attempted).
    pub(crate) fn commit(&self, attempt: u32, checkpoint: CheckpointId, savepoint: bool) -> Result<()> {
        weir_runtime::faults::crash("taskmanager::commit::crash");
        let committers: Vec<_> = self
            .lock()
            .iter()
            .filter(|(a, c)| *a == attempt && !(savepoint && matches!(**c, CompletionListener::Database(_))))
            .map(|(_, c)| c.clone())
            .collect();
        let mut first_error = None;
        for committer in committers {
            if let Err(e) = committer.checkpoint_complete(checkpoint) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::rocksdb::RocksDbMemory;
    use crate::state::task_db::TaskDatabase;
    use std::collections::BTreeSet;
    use weir_api::runtime::{KeyedStateBackend, StateKey, StateKind};
    use weir_runtime::JobId;
    use weir_runtime::storage::StorageConfig;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_missing_or_corrupt_task_file_makes_its_checkpoint_unusable_and_final_snapshots_restore() {
        // Regression: every restore failure was an ordinary task failure, so a checkpoint with a
        // missing task file was restored again and again until the restart strategy gave up.
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&StorageConfig {
            url: format!("file://{}", dir.path().display()),
            options: std::collections::BTreeMap::new(),
        })
        .unwrap();
        let layout = CheckpointLayout::new(&storage, JobId(uuid::Uuid::nil()));
        let put = |name: &str, snapshot: &ChainSnapshot| {
            let uri = layout.task_file_url(5, name);
            std::fs::create_dir_all(dir.path().join(format!("{}/chk-5", JobId(uuid::Uuid::nil())))).unwrap();
            let path = uri.strip_prefix("file://").unwrap().to_owned();
            std::fs::write(path, postcard::to_allocvec(snapshot).unwrap()).unwrap();
            uri
        };
        let handle = |uri: String| StateHandle { uri, size_bytes: 1, incremental_bytes: 1, shared: false };
        let good = put("0-0", &ChainSnapshot { checkpoint: 5, operators: Vec::new() });
        let other = put("0-1", &ChainSnapshot { checkpoint: 4, operators: Vec::new() });
        let final_one = put("0-2", &ChainSnapshot { checkpoint: FINAL_CHECKPOINT, operators: Vec::new() });
        let corrupt = layout.task_file_url(5, "0-3");
        std::fs::write(corrupt.strip_prefix("file://").unwrap(), b"\xff\xff\xff not postcard").unwrap();
        let missing = layout.task_file_url(5, "0-4");
        let runtime = tokio::runtime::Handle::current();
        let outcome = move |uri: String| {
            let (storage, runtime) = (storage.clone(), runtime.clone());
            std::thread::spawn(move || {
                let restore = TaskRestore { checkpoint_id: 5, handles: vec![handle(uri)] };
                let storage_of = |_: &str| Ok(storage.clone());
                read_restored(&storage_of, &restore, &runtime, None).map(|_| ()).map_err(|f| f.unusable)
            })
            .join()
            .unwrap()
        };
        assert_eq!(outcome(good), Ok(()));
        assert_eq!(outcome(final_one), Ok(()), "a finished task's final snapshot stands in any later checkpoint");
        assert_eq!(outcome(other), Err(Some(5)), "a file of another checkpoint");
        assert_eq!(outcome(corrupt), Err(Some(5)));
        assert_eq!(outcome(missing), Err(Some(5)));
    }

    fn put_keys(database: &mut TaskDatabase, keys: std::ops::Range<u32>) {
        let mut backend = database.backend("op", 0..=127).unwrap();
        let state = backend.register_state("s", StateKind::Value).unwrap();
        for k in keys {
            let key = k.to_be_bytes();
            let value = [k as u8; 100];
            backend.put(state, StateKey { key_group: (k % 128) as u16, key: &key, namespace: &[] }, &value).unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_checkpoint_after_a_small_change_uploads_only_the_new_sst_files() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&StorageConfig {
            url: format!("file://{}", dir.path().join("storage").display()),
            options: std::collections::BTreeMap::new(),
        })
        .unwrap();
        let task = TaskId { job: JobId(uuid::Uuid::nil()), attempt: 0, vertex: 1, subtask: 0 };
        let layout = CheckpointLayout::new(&storage, task.job);
        let mut database = TaskDatabase::new(dir.path().join("db"), RocksDbMemory::new(64 << 20));
        let upload = |database: &mut TaskDatabase, checkpoint| {
            let local = database.checkpoint(checkpoint).unwrap().expect("the database is open");
            DatabaseCheckpoint { local, uploads: database.uploads.clone(), instance_id: database.instance_id.clone() }
        };

        put_keys(&mut database, 0..20_000);
        let first = upload(&mut database, 1);
        let handles1 = upload_database(&storage, &layout, task, 1, &first, &mut Vec::new()).await.unwrap();
        let ssts1: Vec<&StateHandle> = handles1.iter().filter(|h| h.shared).collect();
        assert!(!ssts1.is_empty());
        assert!(ssts1.iter().all(|h| h.incremental_bytes == h.size_bytes), "everything is new");
        let big: u64 = ssts1.iter().map(|h| h.size_bytes).sum();
        assert!(big > 100_000, "20 000 values of 100 bytes: {big} bytes of SST files");
        // Before checkpoint 1 completed, its files must not be reused (it may still be aborted).
        put_keys(&mut database, 20_000..20_001);
        let unconfirmed = upload(&mut database, 2);
        let handles2 = upload_database(&storage, &layout, task, 2, &unconfirmed, &mut Vec::new()).await.unwrap();
        assert!(handles2.iter().filter(|h| h.shared).all(|h| h.incremental_bytes == h.size_bytes));

        // Checkpoint 2 completed: a checkpoint after one more key uploads one small SST file.
        database.uploads.confirm(2);
        put_keys(&mut database, 20_001..20_002);
        let third = upload(&mut database, 3);
        let handles3 = upload_database(&storage, &layout, task, 3, &third, &mut Vec::new()).await.unwrap();
        let new: Vec<&StateHandle> = handles3.iter().filter(|h| h.shared && h.incremental_bytes > 0).collect();
        let reused: Vec<&StateHandle> = handles3.iter().filter(|h| h.shared && h.incremental_bytes == 0).collect();
        assert_eq!(new.len(), 1, "only the SST file flushed for the new key is uploaded: {handles3:?}");
        assert!(new[0].size_bytes < big / 10, "{} bytes for one key", new[0].size_bytes);
        let reused_uris: BTreeSet<&str> = reused.iter().map(|h| h.uri.as_str()).collect();
        let uploaded2: BTreeSet<&str> = handles2.iter().filter(|h| h.shared).map(|h| h.uri.as_str()).collect();
        assert!(!reused.is_empty() && reused_uris.is_subset(&uploaded2), "reused files are checkpoint 2's");
        // The private files (CURRENT, MANIFEST, OPTIONS) are uploaded every time.
        assert!(handles3.iter().any(|h| !h.shared && h.uri.ends_with(".rocksdb/CURRENT")));
        assert!(!third.local.dir.exists() || std::fs::read_dir(&third.local.dir).is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_restored_database_has_the_state_and_reuses_the_restored_files() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&StorageConfig {
            url: format!("file://{}", dir.path().join("storage").display()),
            options: std::collections::BTreeMap::new(),
        })
        .unwrap();
        let task = TaskId { job: JobId(uuid::Uuid::nil()), attempt: 0, vertex: 0, subtask: 0 };
        let layout = CheckpointLayout::new(&storage, task.job);
        let mut database = TaskDatabase::new(dir.path().join("db-1"), RocksDbMemory::new(64 << 20));
        put_keys(&mut database, 0..1000);
        let local = database.checkpoint(5).unwrap().unwrap();
        let checkpoint = DatabaseCheckpoint { local, uploads: database.uploads.clone(), instance_id: "a".into() };
        let handles = upload_database(&storage, &layout, task, 5, &checkpoint, &mut Vec::new()).await.unwrap();
        drop(database);

        let restore = TaskRestore { checkpoint_id: 5, handles: handles.clone() };
        let runtime = tokio::runtime::Handle::current();
        let dir2 = dir.path().join("db-2");
        let (restored, operators) = tokio::task::spawn_blocking(move || {
            let mut restored = TaskDatabase::new(dir2, RocksDbMemory::new(64 << 20));
            let storage_of = |_: &str| Ok(storage.clone());
            let operators = read_restored(&storage_of, &restore, &runtime, Some(&mut restored)).unwrap();
            (restored, operators)
        })
        .await
        .unwrap();
        assert!(operators.is_empty(), "no chain snapshot among these handles");
        let mut restored = restored;
        let mut backend = restored.backend("op", 0..=127).unwrap();
        let state = backend.register_state("s", StateKind::Value).unwrap();
        let key = 999u32.to_be_bytes();
        let value = backend.get(state, StateKey { key_group: (999 % 128) as u16, key: &key, namespace: &[] }).unwrap();
        assert_eq!(value, Some(&[999u32 as u8; 100][..]));
        assert_eq!(restored.uploads.confirmed(), (Some(5), handles.iter().filter(|h| h.shared).count()));
    }

    /// Storage in a temporary directory, and the layout of a job in it.
    fn temp_storage(dir: &std::path::Path) -> (Storage, CheckpointLayout, TaskId) {
        let storage = Storage::open(&StorageConfig {
            url: format!("file://{}", dir.join("storage").display()),
            options: std::collections::BTreeMap::new(),
        })
        .unwrap();
        let task = TaskId { job: JobId(uuid::Uuid::nil()), attempt: 0, vertex: 2, subtask: 1 };
        let layout = CheckpointLayout::new(&storage, task.job);
        (storage, layout, task)
    }

    fn local_checkpoint(database: &mut TaskDatabase, checkpoint: CheckpointId) -> DatabaseCheckpoint {
        let local = database.checkpoint(checkpoint).unwrap().expect("the database is open");
        DatabaseCheckpoint { local, uploads: database.uploads.clone(), instance_id: database.instance_id.clone() }
    }

    /// Every object under the job's directory.
    async fn stored(storage: &Storage, layout: &CheckpointLayout) -> BTreeSet<String> {
        storage.list(layout.job_url()).await.unwrap().into_iter().map(|(uri, _)| uri).collect()
    }

    fn shared_uris(handles: &[StateHandle]) -> BTreeSet<String> {
        handles.iter().filter(|h| h.shared).map(|h| h.uri.clone()).collect()
    }

    /// Checkpoints 5 and 6 run concurrently and both upload the same SST files; 6's uploads end
    /// first. Both complete (5, then 6), so with `retained = 1` the coordinator discards 5 and
    /// deletes the copies only 5 references. Checkpoint 7 must reference 6's copies.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn concurrent_checkpoints_reuse_only_the_files_of_the_newest_completed_one() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, layout, task) = temp_storage(dir.path());
        let mut database = TaskDatabase::new(dir.path().join("db"), RocksDbMemory::new(64 << 20));
        put_keys(&mut database, 0..5_000);
        let fifth = local_checkpoint(&mut database, 5);
        let sixth = local_checkpoint(&mut database, 6);
        let names = |c: &DatabaseCheckpoint| -> BTreeSet<String> {
            c.local.files.iter().filter(|f| f.is_sst).map(|f| f.name.clone()).collect()
        };
        assert!(!names(&fifth).is_empty() && names(&fifth) == names(&sixth), "nothing changed in between");

        let handles6 = upload_database(&storage, &layout, task, 6, &sixth, &mut Vec::new()).await.unwrap();
        let handles5 = upload_database(&storage, &layout, task, 5, &fifth, &mut Vec::new()).await.unwrap();
        let (uris5, uris6) = (shared_uris(&handles5), shared_uris(&handles6));
        assert!(uris5.is_disjoint(&uris6), "neither may reuse the other's unconfirmed uploads");
        database.uploads.confirm(5);
        database.uploads.confirm(6);
        // The coordinator discarded checkpoint 5 and deleted the files only it referenced.
        for uri in uris5.difference(&uris6) {
            storage.delete(uri).await.unwrap();
        }

        put_keys(&mut database, 5_000..5_001);
        let seventh = local_checkpoint(&mut database, 7);
        let handles7 = upload_database(&storage, &layout, task, 7, &seventh, &mut Vec::new()).await.unwrap();
        let reused: BTreeSet<String> =
            handles7.iter().filter(|h| h.shared && h.incremental_bytes == 0).map(|h| h.uri.clone()).collect();
        assert!(!reused.is_empty(), "checkpoint 7 reuses files: {handles7:?}");
        assert!(reused.is_subset(&uris6), "checkpoint 7 reuses checkpoint 5's files {:?}", reused.difference(&uris6));
        for handle in handles7.iter().filter(|h| h.shared) {
            storage.get(&handle.uri).await.unwrap_or_else(|e| panic!("checkpoint 7 references a missing file: {e}"));
        }

        // A late confirmation of an older checkpoint changes nothing.
        database.uploads.confirm(7);
        database.uploads.confirm(6);
        let eighth = local_checkpoint(&mut database, 8);
        let handles8 = upload_database(&storage, &layout, task, 8, &eighth, &mut Vec::new()).await.unwrap();
        assert!(handles8.iter().filter(|h| h.shared).all(|h| h.incremental_bytes == 0), "all reused: {handles8:?}");
        assert_eq!(shared_uris(&handles8), shared_uris(&handles7));
    }

    /// A task that declines a checkpoint after uploading part of it deletes what it uploaded for
    /// it, and only that: the files it reused from the completed checkpoint stay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_declined_checkpoint_leaves_no_files_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, layout, task) = temp_storage(dir.path());
        let mut database = TaskDatabase::new(dir.path().join("db"), RocksDbMemory::new(64 << 20));
        put_keys(&mut database, 0..5_000);
        let first = local_checkpoint(&mut database, 1);
        let snapshot = |checkpoint| ChainSnapshot { checkpoint, operators: Vec::new() };
        let url = |checkpoint| layout.task_file_url(checkpoint, "2-1");
        let handles1 = upload_task_snapshot(&storage, &layout, task, snapshot(1), url(1), Some(&first)).await.unwrap();
        database.uploads.confirm(1);
        let after_first = stored(&storage, &layout).await;
        assert_eq!(after_first, handles1.iter().map(|h| h.uri.clone()).collect::<BTreeSet<_>>());

        // Checkpoint 2 has a new SST file; its upload fails at the last file (after the SST
        // files, CURRENT and MANIFEST were written).
        put_keys(&mut database, 5_000..5_001);
        let second = local_checkpoint(&mut database, 2);
        let last = second.local.files.last().expect("checkpoint files").name.clone();
        assert!(second.local.files.iter().filter(|f| f.is_sst).count() > 1);
        std::fs::remove_file(second.local.dir.join(&last)).unwrap();
        let err = upload_task_snapshot(&storage, &layout, task, snapshot(2), url(2), Some(&second)).await.unwrap_err();
        assert!(err.contains(&last), "{err}");
        assert_eq!(stored(&storage, &layout).await, after_first, "checkpoint 2 left files behind");

        // Checkpoint 3 reuses checkpoint 1's files, never the deleted ones.
        let third = local_checkpoint(&mut database, 3);
        let handles3 = upload_task_snapshot(&storage, &layout, task, snapshot(3), url(3), Some(&third)).await.unwrap();
        let reused: BTreeSet<String> =
            handles3.iter().filter(|h| h.shared && h.incremental_bytes == 0).map(|h| h.uri.clone()).collect();
        assert_eq!(reused, shared_uris(&handles1));
    }
}
