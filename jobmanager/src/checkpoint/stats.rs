//! What the coordinator reports about its checkpoints (for the REST API).

use super::{CheckpointKind, TaskSnapshot};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use weir_runtime::TaskId;

/// How a finished checkpoint ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CheckpointStatus {
    /// Its metadata was written; tasks were notified.
    Completed,
    /// Aborted; see the failure reason.
    Failed,
}

/// A checkpoint in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingView {
    /// Its id.
    pub checkpoint_id: u64,
    /// Checkpoint or savepoint.
    pub kind: CheckpointKind,
    /// Trigger time, ms.
    pub trigger_ms: i64,
    /// Tasks that acknowledged it.
    pub acknowledged: usize,
    /// Tasks that must acknowledge it.
    pub total: usize,
    /// Time of the latest acknowledgement, ms.
    pub latest_ack_ms: Option<i64>,
    /// Size of the state acknowledged so far.
    pub state_size_bytes: u64,
    /// Every task acknowledged; the metadata is being written.
    pub writing_metadata: bool,
}

/// A completed checkpoint (retained by the coordinator) or savepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedCheckpoint {
    /// Its id.
    pub checkpoint_id: u64,
    /// Checkpoint or savepoint.
    pub kind: CheckpointKind,
    /// Trigger time, ms.
    pub trigger_ms: i64,
    /// Time its metadata was reported written, ms.
    pub completion_ms: i64,
    /// Completion minus trigger time, ms.
    pub duration_ms: i64,
    /// Total size of its state (shared files included).
    pub state_size_bytes: u64,
    /// Bytes written for this checkpoint alone.
    pub incremental_size_bytes: u64,
    /// The longest barrier alignment of any task, ms.
    pub max_alignment_ms: u64,
    /// Every task's acknowledgement (to restore from).
    pub acknowledgements: BTreeMap<TaskId, TaskSnapshot>,
}

impl CompletedCheckpoint {
    pub(crate) fn new(
        checkpoint_id: u64,
        kind: CheckpointKind,
        trigger_ms: i64,
        completion_ms: i64,
        acknowledgements: BTreeMap<TaskId, TaskSnapshot>,
    ) -> Self {
        let handles = || acknowledgements.values().flat_map(|s| &s.handles);
        Self {
            checkpoint_id,
            kind,
            trigger_ms,
            completion_ms,
            duration_ms: completion_ms.saturating_sub(trigger_ms).max(0),
            state_size_bytes: handles().map(|h| h.size_bytes).sum(),
            incremental_size_bytes: handles().map(|h| h.incremental_bytes).sum(),
            max_alignment_ms: acknowledgements.values().map(|s| s.alignment_ms).max().unwrap_or(0),
            acknowledgements,
        }
    }

    /// The shared files it uses.
    pub fn shared_uris(&self) -> BTreeSet<String> {
        shared_uris(&self.acknowledgements)
    }
}

/// The shared files among acknowledgements.
pub(crate) fn shared_uris(acks: &BTreeMap<TaskId, TaskSnapshot>) -> BTreeSet<String> {
    acks.values().flat_map(|s| &s.handles).filter(|h| h.shared).map(|h| h.uri.clone()).collect()
}

/// A finished checkpoint in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// Its id.
    pub checkpoint_id: u64,
    /// Checkpoint or savepoint.
    pub kind: CheckpointKind,
    /// Completed or failed.
    pub status: CheckpointStatus,
    /// Trigger time, ms.
    pub trigger_ms: i64,
    /// Completion or abort time, ms.
    pub end_ms: i64,
    /// End minus trigger time, ms.
    pub duration_ms: i64,
    /// Size of the state acknowledged.
    pub state_size_bytes: u64,
    /// Why it failed.
    pub failure: Option<String>,
}

/// Checkpoint counts, as Flink's `/jobs/{id}/checkpoints` `counts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CheckpointCounts {
    /// Checkpoints and savepoints triggered.
    pub triggered: u64,
    /// Pending now.
    pub in_progress: usize,
    /// Completed.
    pub completed: u64,
    /// Aborted, for whatever reason.
    pub failed: u64,
    /// The checkpoint the job was restored from.
    pub restored: Option<u64>,
}
