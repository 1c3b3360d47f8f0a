//! The RocksDB database of one task when its job uses the RocksDB backend: opened lazily in the
//! task's local state directory (removed when the task ends), checkpointed natively, and the
//! record of which SST files are already in checkpoint storage (for incremental checkpoints).

use super::rocksdb::{RocksDbInstance, RocksDbKeyedStateBackend, RocksDbMemory, SstFile};
use std::collections::HashMap;
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
    /// The checkpoint it was uploaded for.
    pub(crate) checkpoint: CheckpointId,
    /// Whether a completed checkpoint references it: only then may later checkpoints reuse it
    /// (the file of an aborted checkpoint is deleted by the coordinator).
    pub(crate) confirmed: bool,
}

/// The SST files of one task's database in checkpoint storage, by local file name.
#[derive(Debug, Default)]
pub(crate) struct SharedUploads {
    files: Mutex<HashMap<String, UploadedSst>>,
}

impl SharedUploads {
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<String, UploadedSst>> {
        self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checkpoint `checkpoint` completed: the files uploaded for it may be reused.
    pub(crate) fn confirm(&self, checkpoint: CheckpointId) {
        for file in self.lock().values_mut().filter(|f| f.checkpoint == checkpoint) {
            file.confirmed = true;
        }
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
