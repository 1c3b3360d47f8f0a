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
    /// Bytes written for it alone so far.
    pub incremental_size_bytes: u64,
    /// Every task acknowledged; the metadata is being written.
    pub writing_metadata: bool,
    /// Per vertex.
    pub vertices: BTreeMap<u32, VertexCheckpointStats>,
}

/// One vertex's part of a checkpoint (Flink's `TaskCheckpointStatistics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VertexCheckpointStats {
    /// Its subtasks.
    pub subtasks: usize,
    /// Subtasks that acknowledged (a finished subtask's final snapshot counts).
    pub acknowledged: usize,
    /// Size of their state.
    pub state_size_bytes: u64,
    /// Bytes they wrote for this checkpoint alone.
    pub incremental_size_bytes: u64,
    /// Time of their latest acknowledgement, ms.
    pub latest_ack_ms: Option<i64>,
    /// Their longest barrier alignment, ms.
    pub max_alignment_ms: u64,
}

/// Per-vertex statistics of a checkpoint over `tasks` (every task it waits or waited for), of
/// which those in `acks` acknowledged, at the times in `ack_ms` (absent for final snapshots of
/// finished tasks).
pub(crate) fn vertex_stats<'a>(
    tasks: impl IntoIterator<Item = &'a TaskId>,
    acks: &BTreeMap<TaskId, TaskSnapshot>,
    ack_ms: &BTreeMap<TaskId, i64>,
) -> BTreeMap<u32, VertexCheckpointStats> {
    let mut vertices: BTreeMap<u32, VertexCheckpointStats> = BTreeMap::new();
    for task in tasks {
        let v = vertices.entry(task.vertex).or_default();
        v.subtasks += 1;
        if let Some(snapshot) = acks.get(task) {
            v.acknowledged += 1;
            v.state_size_bytes += snapshot.handles.iter().map(|h| h.size_bytes).sum::<u64>();
            v.incremental_size_bytes += snapshot.handles.iter().map(|h| h.incremental_bytes).sum::<u64>();
            v.max_alignment_ms = v.max_alignment_ms.max(snapshot.alignment_ms);
        }
        if let Some(&at) = ack_ms.get(task) {
            v.latest_ack_ms = Some(v.latest_ack_ms.map_or(at, |l| l.max(at)));
        }
    }
    vertices
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
    /// Bytes written for it alone.
    pub incremental_size_bytes: u64,
    /// Time of the latest acknowledgement, ms.
    pub latest_ack_ms: Option<i64>,
    /// Per vertex.
    pub vertices: BTreeMap<u32, VertexCheckpointStats>,
    /// Where a completed savepoint is (set when the savepoint's directory is known).
    pub external_path: Option<String>,
    /// Why it failed.
    pub failure: Option<String>,
}

/// Checkpoint counts, as Flink's `/jobs/{id}/checkpoints` `counts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CheckpointCounts {
    /// Restores of the job from a checkpoint or savepoint.
    pub restored: u64,
    /// Checkpoints and savepoints triggered.
    pub total: u64,
    /// Pending now.
    pub in_progress: usize,
    /// Completed.
    pub completed: u64,
    /// Aborted, for whatever reason.
    pub failed: u64,
}

/// The checkpoint or savepoint the current attempt of a job restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoredCheckpoint {
    /// Its id.
    pub checkpoint_id: u64,
    /// When the attempt that restored it was deployed, ms.
    pub restore_ms: i64,
    /// It is a savepoint (the job was submitted with it), not a checkpoint.
    pub is_savepoint: bool,
    /// Where its metadata is, when known (a savepoint the job was submitted with).
    pub external_path: Option<String>,
}
