//! What the jobmanager and taskmanagers exchange about checkpoints: handles to the files a task
//! wrote, acknowledgements, the checkpoint metadata file, and what a task restores from.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One file (or object) a task wrote for a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateHandle {
    /// Where it is, as a storage URL.
    pub uri: String,
    /// Its full size.
    pub size_bytes: u64,
    /// Bytes newly written for this checkpoint (0 for a shared file reused from an earlier one).
    pub incremental_bytes: u64,
    /// Whether it is under `<root>/<job-id>/shared/`, possibly used by several checkpoints, and
    /// reference counted by the coordinator; otherwise it belongs to this checkpoint alone.
    pub shared: bool,
}

/// A task's acknowledgement of a checkpoint: what it wrote (opaque to the coordinator).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSnapshot {
    /// The files written (or reused) for the task's state.
    pub handles: Vec<StateHandle>,
    /// How long the task waited for barriers to align, in ms.
    pub alignment_ms: u64,
    /// The uids of the task's operators that have state in it (what a savepoint restores by).
    #[serde(default)]
    pub operators: Vec<String>,
}

/// The keyed state backend of a job's tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackendKind {
    /// In memory, with full snapshots: for small state.
    #[default]
    Heap,
    /// RocksDB on local disk, with incremental snapshots: for large state.
    Rocksdb,
}

impl fmt::Display for StateBackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Heap => "heap",
            Self::Rocksdb => "rocksdb",
        })
    }
}

impl std::str::FromStr for StateBackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "heap" | "hashmap" => Ok(Self::Heap),
            "rocksdb" => Ok(Self::Rocksdb),
            _ => Err(format!("unknown state backend '{s}': expected heap or rocksdb")),
        }
    }
}

/// How a job's tasks take checkpoints (part of every deployment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointingSpec {
    /// The storage root checkpoints go under (`<root>/<job-id>/chk-<n>/...`).
    pub storage_url: String,
}

/// The state a redeployed task starts from: its part of a completed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRestore {
    /// The checkpoint.
    pub checkpoint_id: u64,
    /// The files the task (same vertex and subtask, an earlier attempt) acknowledged it with.
    pub handles: Vec<StateHandle>,
}

/// One task's entry in a checkpoint's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStateEntry {
    /// Vertex index.
    pub vertex: u32,
    /// Subtask index.
    pub subtask: u32,
    /// What the task acknowledged.
    pub snapshot: TaskSnapshot,
}

/// The content of `chk-<n>/_metadata`: written last; its presence makes the checkpoint exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// Format version.
    pub version: u32,
    /// The job (32 hex digits).
    pub job_id: String,
    /// The checkpoint.
    pub checkpoint_id: u64,
    /// `CHECKPOINT` or `SAVEPOINT`.
    pub kind: String,
    /// Trigger time, ms since the epoch.
    pub trigger_ms: i64,
    /// The keyed state backend that wrote it.
    pub backend: StateBackendKind,
    /// The job's number of key groups (0: not recorded, by an earlier version).
    #[serde(default)]
    pub max_parallelism: u32,
    /// The leader epoch of the jobmanager that wrote it (0: without high availability).
    #[serde(default)]
    pub leader_epoch: u64,
    /// Every task's acknowledgement.
    pub tasks: Vec<TaskStateEntry>,
}

/// Leading bytes of an encoded metadata file.
const METADATA_MAGIC: &[u8; 8] = b"WEIRMD01";

/// A metadata file that cannot be decoded (truncated, altered, or not Weir's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt checkpoint metadata: {0}")]
pub struct CorruptMetadata(pub String);

impl CheckpointMetadata {
    /// The file's bytes: magic, xxh3-64 checksum of the payload (little endian), JSON payload.
    pub fn encode(&self) -> Vec<u8> {
        crate::checksummed::encode(METADATA_MAGIC, self)
    }

    /// Decodes and verifies a metadata file.
    ///
    /// # Errors
    /// [`CorruptMetadata`] when the magic, the checksum or the payload is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, CorruptMetadata> {
        crate::checksummed::decode(METADATA_MAGIC, bytes, "checkpoint metadata file").map_err(CorruptMetadata)
    }

    /// The snapshot of task (`vertex`, `subtask`).
    pub fn task(&self, vertex: u32, subtask: u32) -> Option<&TaskSnapshot> {
        self.tasks.iter().find(|t| t.vertex == vertex && t.subtask == subtask).map(|t| &t.snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> CheckpointMetadata {
        CheckpointMetadata {
            version: 1,
            job_id: "00".repeat(16),
            checkpoint_id: 7,
            kind: "CHECKPOINT".into(),
            trigger_ms: 1,
            backend: StateBackendKind::Rocksdb,
            max_parallelism: 128,
            leader_epoch: 3,
            tasks: vec![TaskStateEntry {
                vertex: 1,
                subtask: 0,
                snapshot: TaskSnapshot {
                    handles: vec![StateHandle {
                        uri: "file:///x/chk-7/1-0".into(),
                        size_bytes: 10,
                        incremental_bytes: 10,
                        shared: false,
                    }],
                    alignment_ms: 3,
                    operators: vec!["op".into()],
                },
            }],
        }
    }

    #[test]
    fn metadata_round_trips_and_detects_corruption() {
        let m = metadata();
        let bytes = m.encode();
        assert_eq!(CheckpointMetadata::decode(&bytes), Ok(m.clone()));
        assert_eq!(m.task(1, 0).map(|s| s.alignment_ms), Some(3));
        assert!(m.task(0, 0).is_none());
        let mut flipped = bytes.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 1;
        assert!(CheckpointMetadata::decode(&flipped).unwrap_err().0.contains("checksum mismatch"));
        assert!(CheckpointMetadata::decode(&bytes[..12]).unwrap_err().0.contains("truncated"));
        assert!(CheckpointMetadata::decode(b"garbage!garbage!").unwrap_err().0.contains("bad magic"));
    }

    #[test]
    fn backends_parse_case_insensitively() {
        assert_eq!("RocksDB".parse::<StateBackendKind>(), Ok(StateBackendKind::Rocksdb));
        assert_eq!("heap".parse::<StateBackendKind>(), Ok(StateBackendKind::Heap));
        assert!("memory".parse::<StateBackendKind>().unwrap_err().contains("expected heap or rocksdb"));
    }
}
