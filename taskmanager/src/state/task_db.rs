//! The RocksDB database of one task when its job uses the RocksDB backend: opened lazily in the
//! task's local state directory (removed when the task ends), checkpointed natively, and the
//! record of which SST files are already in checkpoint storage (for incremental checkpoints).

use super::rocksdb::{RocksDbInstance, RocksDbKeyedStateBackend, RocksDbMemory, SstFile};
use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use weir_api::runtime::CheckpointId;
use weir_api::{Error, Result};

/// Service name used in errors.
const SERVICE: &str = "rocksdb state backend";

/// An SST file in checkpoint storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UploadedSst {
    /// Its URL under `<root>/<job-id>/shared/`.
    pub(crate) uri: String,
    /// Its size.
    pub(crate) size_bytes: u64,
}

/// SST files of one checkpoint, by local file name.
type SstFiles = HashMap<String, UploadedSst>;

/// At most this many checkpoints' file lists wait for their confirmation; older ones are
/// forgotten (a later confirmation of one of them then makes nothing reusable, which costs
/// uploads, never correctness). Lists of checkpoints aborted elsewhere are dropped this way.
const MAX_UNCONFIRMED_CHECKPOINTS: usize = 32;

/// Which SST files of one task's database are in checkpoint storage, and which of them a new
/// checkpoint may reference instead of uploading them again.
///
/// Contract: a checkpoint reuses only the SST files of the newest checkpoint this task was told
/// completed (or restored from). Only those are safe: the coordinator deletes the files of
/// aborted checkpoints, and with `retained = 1` those of every completed checkpoint but the
/// newest. Every checkpoint keeps the list of the SST files it references (uploaded or reused);
/// when checkpoint `n` is confirmed, the reusable files become exactly `n`'s and the lists up to
/// `n` are dropped; confirming a checkpoint older than the newest confirmed one does nothing.
/// Two concurrent checkpoints that both upload a file keep their own copies: neither overwrites
/// the other's record (a single map by file name did, and could make a later checkpoint
/// reference the copy of a checkpoint the coordinator had discarded).
#[derive(Debug, Default)]
pub(crate) struct SharedUploads {
    state: Mutex<Uploads>,
}

#[derive(Debug, Default)]
struct Uploads {
    /// The newest checkpoint confirmed (or restored from).
    confirmed: Option<CheckpointId>,
    /// Its SST files: the only ones a new checkpoint may reuse.
    reusable: SstFiles,
    /// The SST files referenced by each checkpoint newer than `confirmed`, by checkpoint.
    unconfirmed: BTreeMap<CheckpointId, SstFiles>,
}

impl SharedUploads {
    fn lock(&self) -> MutexGuard<'_, Uploads> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stored copy of SST file `name` that a new checkpoint may reference, if any.
    pub(crate) fn reusable(&self, name: &str) -> Option<UploadedSst> {
        self.lock().reusable.get(name).cloned()
    }

    /// Checkpoint `checkpoint` references SST file `name` stored as `file` (uploaded for it, or
    /// reused). Ignored when a checkpoint at least as new was confirmed: `checkpoint` is then
    /// subsumed and its files are never reused.
    pub(crate) fn record(&self, checkpoint: CheckpointId, name: &str, file: UploadedSst) {
        let mut uploads = self.lock();
        if uploads.confirmed.is_some_and(|confirmed| checkpoint <= confirmed) {
            return;
        }
        uploads.unconfirmed.entry(checkpoint).or_default().insert(name.to_owned(), file);
        while uploads.unconfirmed.len() > MAX_UNCONFIRMED_CHECKPOINTS {
            uploads.unconfirmed.pop_first();
        }
    }

    /// Checkpoint `checkpoint` completed: its SST files, and only those, may be reused. A
    /// checkpoint older than (or equal to) the newest confirmed one changes nothing. A completed
    /// checkpoint this task recorded no files for (its database had none, or its list was
    /// forgotten) leaves nothing reusable.
    pub(crate) fn confirm(&self, checkpoint: CheckpointId) {
        let mut uploads = self.lock();
        if uploads.confirmed.is_some_and(|confirmed| checkpoint <= confirmed) {
            return;
        }
        let newer = match checkpoint.checked_add(1) {
            Some(next) => uploads.unconfirmed.split_off(&next),
            None => BTreeMap::new(),
        };
        let mut done = std::mem::replace(&mut uploads.unconfirmed, newer);
        uploads.reusable = done.remove(&checkpoint).unwrap_or_default();
        uploads.confirmed = Some(checkpoint);
    }

    /// This task declined checkpoint `checkpoint`: forgets what it recorded for it.
    pub(crate) fn abort(&self, checkpoint: CheckpointId) {
        self.lock().unconfirmed.remove(&checkpoint);
    }

    /// The database was restored from checkpoint `checkpoint`, whose SST files are `files`: they
    /// are in storage and referenced by a completed checkpoint, so they may be reused.
    pub(crate) fn restored(&self, checkpoint: CheckpointId, files: HashMap<String, UploadedSst>) {
        let mut uploads = self.lock();
        uploads.confirmed = Some(checkpoint);
        uploads.reusable = files;
        uploads.unconfirmed.clear();
    }

    /// The newest confirmed checkpoint and how many SST files it made reusable.
    #[cfg(test)]
    pub(crate) fn confirmed(&self) -> (Option<CheckpointId>, usize) {
        let uploads = self.lock();
        (uploads.confirmed, uploads.reusable.len())
    }
}

/// A native checkpoint of the database in a local directory, to upload.
#[derive(Debug)]
pub(crate) struct LocalCheckpoint {
    /// The directory (removed after the upload).
    pub(crate) dir: PathBuf,
    /// Its files.
    pub(crate) files: Vec<SstFile>,
}

/// One task's RocksDB database.
pub(crate) struct TaskDatabase {
    dir: PathBuf,
    memory: RocksDbMemory,
    instance: Option<Arc<RocksDbInstance>>,
    /// Unique per database lineage segment: part of the names of the SST files it uploads.
    pub(crate) instance_id: String,
    pub(crate) uploads: Arc<SharedUploads>,
}

impl TaskDatabase {
    /// A database in the new directory `dir` (created on first use), within the taskmanager's
    /// RocksDB `memory`.
    pub(crate) fn new(dir: PathBuf, memory: RocksDbMemory) -> Self {
        let instance_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        Self { dir, memory, instance: None, instance_id, uploads: Arc::default() }
    }

    fn db_dir(&self) -> PathBuf {
        self.dir.join("db")
    }

    fn instance(&mut self) -> Result<&Arc<RocksDbInstance>> {
        if self.instance.is_none() {
            self.instance = Some(RocksDbInstance::open_with(&self.db_dir(), &self.memory)?);
        }
        self.instance.as_ref().ok_or_else(|| Error::runtime(SERVICE, "database not open"))
    }

    /// The state of operator `operator_uid` in `key_groups`, checkpointed natively.
    pub(crate) fn backend(
        &mut self,
        operator_uid: &str,
        key_groups: RangeInclusive<u16>,
    ) -> Result<RocksDbKeyedStateBackend> {
        Ok(self.instance()?.backend(operator_uid, key_groups)?.with_native_snapshots())
    }

    /// Writes a restored checkpoint's file `name` into the database directory, before the
    /// database opens.
    pub(crate) fn restore_file(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        if self.instance.is_some() || name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(Error::runtime(SERVICE, format!("cannot restore file {name:?} into an open database")));
        }
        let dir = self.db_dir();
        std::fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, &e))?;
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| io_error("write", &path, &e))
    }

    /// Opens the database (restored files included) now, so a restore fails early.
    pub(crate) fn open(&mut self) -> Result<()> {
        self.instance().map(|_| ())
    }

    /// Makes the snapshots of the database's backends canonical and complete (a savepoint's),
    /// or native again.
    pub(crate) fn set_canonical_snapshots(&self, canonical: bool) {
        if let Some(instance) = &self.instance {
            instance.set_canonical_snapshots(canonical);
        }
    }

    /// The synchronous part of checkpoint `checkpoint`: flushes and hard-links the database's
    /// files into a local directory. `None` when no operator opened the database.
    pub(crate) fn checkpoint(&mut self, checkpoint: CheckpointId) -> Result<Option<LocalCheckpoint>> {
        let Some(instance) = &self.instance else { return Ok(None) };
        let target = self.dir.join(format!("chk-{checkpoint}"));
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(|e| io_error("remove", &target, &e))?;
        }
        let files = instance.checkpoint(&target)?;
        Ok(Some(LocalCheckpoint { dir: target, files }))
    }
}

impl Drop for TaskDatabase {
    fn drop(&mut self) {
        self.instance = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn io_error(action: &str, path: &Path, e: &std::io::Error) -> Error {
    Error::runtime(SERVICE, format!("cannot {action} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sst(uri: &str) -> UploadedSst {
        UploadedSst { uri: uri.to_owned(), size_bytes: 1 }
    }

    fn reusable_uri(uploads: &SharedUploads, name: &str) -> Option<String> {
        uploads.reusable(name).map(|file| file.uri)
    }

    #[test]
    fn only_the_files_of_the_newest_confirmed_checkpoint_are_reusable() {
        let uploads = SharedUploads::default();
        // Checkpoints 5 and 6 upload file "x" concurrently; 6 finishes first.
        uploads.record(6, "x", sst("x@6"));
        uploads.record(5, "x", sst("x@5"));
        uploads.record(5, "y", sst("y@5"));
        assert_eq!(reusable_uri(&uploads, "x"), None, "nothing is confirmed yet");
        uploads.confirm(5);
        assert_eq!(reusable_uri(&uploads, "x").as_deref(), Some("x@5"));
        assert_eq!(reusable_uri(&uploads, "y").as_deref(), Some("y@5"));
        uploads.confirm(6);
        assert_eq!(reusable_uri(&uploads, "x").as_deref(), Some("x@6"));
        assert_eq!(reusable_uri(&uploads, "y"), None, "checkpoint 6 does not reference y");
        // A late confirmation of an older checkpoint, and records for one, change nothing.
        uploads.confirm(5);
        uploads.record(4, "z", sst("z@4"));
        uploads.confirm(6);
        assert_eq!(uploads.confirmed(), (Some(6), 1));
        assert_eq!(reusable_uri(&uploads, "x").as_deref(), Some("x@6"));
    }

    #[test]
    fn a_confirmation_drops_older_lists_and_an_unknown_one_leaves_nothing_reusable() {
        let uploads = SharedUploads::default();
        uploads.record(1, "a", sst("a@1"));
        uploads.record(2, "a", sst("a@1"));
        uploads.record(2, "b", sst("b@2"));
        uploads.record(3, "c", sst("c@3"));
        uploads.confirm(2);
        assert_eq!(uploads.confirmed(), (Some(2), 2));
        // Checkpoint 1's list went with checkpoint 2's confirmation; checkpoint 3's is kept.
        uploads.confirm(1);
        assert_eq!(uploads.confirmed(), (Some(2), 2));
        uploads.confirm(3);
        assert_eq!(reusable_uri(&uploads, "c").as_deref(), Some("c@3"));
        assert_eq!(reusable_uri(&uploads, "a"), None);
        // A declined checkpoint's list is forgotten; so its confirmation (which cannot come)
        // would make nothing reusable rather than files that may have been deleted.
        uploads.record(4, "d", sst("d@4"));
        uploads.abort(4);
        uploads.confirm(4);
        assert_eq!(uploads.confirmed(), (Some(4), 0));
        // The job's final notification.
        uploads.confirm(u64::MAX);
        assert_eq!(uploads.confirmed(), (Some(u64::MAX), 0));
    }

    #[test]
    fn restored_files_are_reusable_and_unconfirmed_lists_are_bounded() {
        let uploads = SharedUploads::default();
        uploads.restored(9, HashMap::from([("r".to_owned(), sst("r@9"))]));
        assert_eq!(reusable_uri(&uploads, "r").as_deref(), Some("r@9"));
        uploads.record(9, "late", sst("late@9"));
        for checkpoint in 10..10 + MAX_UNCONFIRMED_CHECKPOINTS as u64 + 5 {
            uploads.record(checkpoint, "f", sst(&format!("f@{checkpoint}")));
        }
        assert_eq!(uploads.lock().unconfirmed.len(), MAX_UNCONFIRMED_CHECKPOINTS);
        // The oldest lists were forgotten: confirming one of them leaves nothing reusable.
        uploads.confirm(10);
        assert_eq!(uploads.confirmed(), (Some(10), 0));
        let newest = 10 + MAX_UNCONFIRMED_CHECKPOINTS as u64 + 4;
        uploads.confirm(newest);
        assert_eq!(reusable_uri(&uploads, "f"), Some(format!("f@{newest}")));
    }
}
