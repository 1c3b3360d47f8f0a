//! The savepoint format: a directory that holds everything a job needs to restore, with paths
//! relative to it, so that it can be copied to another bucket or prefix.
//!
//! ```text
//! <target>/savepoint-<first 6 hex of the job id>-<12 hex>/
//!     _metadata          this module's SavepointMetadata (magic, checksum, JSON)
//!     <vertex>-<subtask> each task's canonical ChainSnapshot (postcard): per operator uid, keyed
//!                        state per key group as canonical entries, and operator state
//! ```
//!
//! Keyed state is canonical whatever backend wrote it (see
//! `weir_api::runtime::encode_state_entry`), so a savepoint restores into either backend and
//! any parallelism up to its max parallelism.

use crate::checkpoint::{CorruptMetadata, StateBackendKind};
use serde::{Deserialize, Serialize};

/// The file name of a savepoint's metadata, inside its directory (as Flink's).
pub const METADATA_FILE: &str = "_metadata";

/// Leading bytes of an encoded savepoint metadata file.
const SAVEPOINT_MAGIC: &[u8; 8] = b"WEIRSP01";

/// The current format version.
pub const SAVEPOINT_VERSION: u32 = 1;

/// The content of a savepoint's `_metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavepointMetadata {
    /// Format version ([`SAVEPOINT_VERSION`]).
    pub version: u32,
    /// The job that took it (32 hex digits).
    pub job_id: String,
    /// The job's name.
    pub job_name: String,
    /// The checkpoint id it was taken as (a job restored from it continues above it).
    pub checkpoint_id: u64,
    /// Trigger time, ms since the epoch.
    pub trigger_ms: i64,
    /// The keyed state backend of the job that took it (the state itself is canonical).
    pub backend: StateBackendKind,
    /// The job's number of key groups.
    pub max_parallelism: u32,
    /// Every vertex of the job that took it.
    pub vertices: Vec<SavepointVertex>,
}

/// One vertex (operator chain) of the job that took a savepoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavepointVertex {
    /// Its operator names joined by ` -> `.
    pub name: String,
    /// The uids of its operators, in chain order.
    pub uids: Vec<String>,
    /// Its parallelism.
    pub parallelism: u32,
    /// The keyed states its operators declared, by uid.
    #[serde(default)]
    pub states: std::collections::BTreeMap<String, Vec<weir_api::graph::StateDeclaration>>,
    /// Its subtasks' files.
    pub subtasks: Vec<SavepointSubtask>,
}

/// One subtask's part of a savepoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavepointSubtask {
    /// The subtask index.
    pub subtask: u32,
    /// The key groups it owned (first, last).
    pub key_groups: Option<(u16, u16)>,
    /// The uids of its operators that have state in its files.
    #[serde(default)]
    pub operators: Vec<String>,
    /// Its files, relative to the savepoint's directory.
    pub files: Vec<SavepointFile>,
}

/// A file of a savepoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavepointFile {
    /// Path relative to the savepoint's directory (no `..`, no leading `/`).
    pub path: String,
    /// Size in bytes.
    pub size_bytes: u64,
}

impl SavepointMetadata {
    /// The file's bytes: magic, xxh3-64 checksum of the payload (little endian), JSON payload.
    pub fn encode(&self) -> Vec<u8> {
        crate::checksummed::encode(SAVEPOINT_MAGIC, self)
    }

    /// Decodes and verifies a savepoint's metadata file.
    ///
    /// # Errors
    /// [`CorruptMetadata`] when the magic, the checksum, the payload or a path is wrong, or the
    /// version is newer than this build reads.
    pub fn decode(bytes: &[u8]) -> Result<Self, CorruptMetadata> {
        let metadata: Self =
            crate::checksummed::decode(SAVEPOINT_MAGIC, bytes, "savepoint metadata file").map_err(CorruptMetadata)?;
        if metadata.version > SAVEPOINT_VERSION {
            return Err(CorruptMetadata(format!(
                "savepoint format version {} is newer than this build reads ({SAVEPOINT_VERSION})",
                metadata.version
            )));
        }
        for file in metadata.vertices.iter().flat_map(|v| &v.subtasks).flat_map(|s| &s.files) {
            if !is_relative_path(&file.path) {
                return Err(CorruptMetadata(format!("file path {:?} is not relative to the savepoint", file.path)));
            }
        }
        Ok(metadata)
    }

    /// Total size of its files.
    pub fn state_size_bytes(&self) -> u64 {
        self.vertices.iter().flat_map(|v| &v.subtasks).flat_map(|s| &s.files).map(|f| f.size_bytes).sum()
    }
}

/// Whether `path` stays inside the directory it is relative to.
pub fn is_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains("://")
        && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

/// The name of a new savepoint directory of job `job_id` (32 hex digits), as Flink names them:
/// `savepoint-<first 6 hex of the job id>-<12 random hex>`.
pub fn directory_name(job_id: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("savepoint-{}-{}", job_id.get(..6).unwrap_or(job_id), &random[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> SavepointMetadata {
        SavepointMetadata {
            version: SAVEPOINT_VERSION,
            job_id: "ab".repeat(16),
            job_name: "wcount".into(),
            checkpoint_id: 9,
            trigger_ms: 5,
            backend: StateBackendKind::Heap,
            max_parallelism: 128,
            vertices: vec![SavepointVertex {
                name: "window".into(),
                uids: vec!["wcount-count".into()],
                parallelism: 2,
                states: Default::default(),
                subtasks: vec![SavepointSubtask {
                    subtask: 1,
                    key_groups: Some((64, 127)),
                    operators: vec!["wcount-count".into()],
                    files: vec![SavepointFile { path: "1-1".into(), size_bytes: 42 }],
                }],
            }],
        }
    }

    #[test]
    fn metadata_round_trips_and_refuses_corruption_and_escaping_paths() {
        let m = metadata();
        assert_eq!(SavepointMetadata::decode(&m.encode()), Ok(m.clone()));
        assert_eq!(m.state_size_bytes(), 42);
        let mut bytes = m.encode();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        assert!(SavepointMetadata::decode(&bytes).unwrap_err().0.contains("checksum"));
        let checkpoint = crate::checkpoint::CheckpointMetadata {
            version: 1,
            job_id: String::new(),
            checkpoint_id: 1,
            kind: "CHECKPOINT".into(),
            trigger_ms: 0,
            backend: StateBackendKind::Heap,
            max_parallelism: 128,
            leader_epoch: 0,
            tasks: Vec::new(),
        };
        assert!(SavepointMetadata::decode(&checkpoint.encode()).unwrap_err().0.contains("bad magic"));
        for path in ["../x", "/abs", "s3://b/x", "a//b", "./a", ""] {
            let mut m = metadata();
            m.vertices[0].subtasks[0].files[0].path = path.into();
            assert!(SavepointMetadata::decode(&m.encode()).unwrap_err().0.contains("not relative"), "{path}");
        }
        let mut newer = metadata();
        newer.version = SAVEPOINT_VERSION + 1;
        assert!(SavepointMetadata::decode(&newer.encode()).unwrap_err().0.contains("newer"));
    }

    #[test]
    fn directories_are_named_as_flinks() {
        let name = directory_name(&"cca7bc".repeat(5));
        assert!(name.starts_with("savepoint-cca7bc-") && name.len() == "savepoint-cca7bc-".len() + 12, "{name}");
        assert_ne!(directory_name("cca7bc"), directory_name("cca7bc"));
    }
}
