//! `GET /jobs/{id}/checkpoints`: what the coordinator reports, shaped like Flink's answer.

use super::{CheckpointCounts, CheckpointSettings, Coordinator, HistoryEntry, PendingView};
use serde::Serialize;
use std::collections::BTreeMap;
use weir_runtime::storage::CheckpointLayout;

/// A retained completed checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct CompletedReport {
    /// Its id.
    pub id: u64,
    /// Trigger time, ms since the epoch.
    pub trigger_timestamp: i64,
    /// Completion time, ms since the epoch.
    pub latest_ack_timestamp: i64,
    /// Trigger to completion, ms.
    pub end_to_end_duration: i64,
    /// Size of its state, bytes.
    pub state_size: u64,
    /// Bytes written for it alone.
    pub incremental_size: u64,
    /// Where its metadata is.
    pub external_path: String,
    /// The longest barrier alignment per vertex, ms.
    pub alignment_ms_by_vertex: BTreeMap<u32, u64>,
}

/// The answer of `GET /jobs/{id}/checkpoints`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointsReport {
    /// Counts.
    pub counts: CheckpointCounts,
    /// Checkpoint interval, ms.
    pub interval_ms: i64,
    /// State backend.
    pub state_backend: String,
    /// Storage location of the job's checkpoints.
    pub checkpoint_storage: String,
    /// Timing, retention and failure tolerance (also `GET /jobs/{id}/checkpoints/config`).
    pub config: super::CheckpointConfig,
    /// The newest completed checkpoint, the newest failed one, the one restored from.
    pub latest: LatestReport,
    /// Retained completed checkpoints, oldest first.
    pub retained: Vec<CompletedReport>,
    /// Checkpoints in progress.
    pub in_progress: Vec<PendingView>,
    /// Finished checkpoints, newest first.
    pub history: Vec<HistoryEntry>,
}

/// The latest checkpoints of each kind.
#[derive(Debug, Clone, Serialize)]
pub struct LatestReport {
    /// The newest retained completed checkpoint.
    pub completed: Option<CompletedReport>,
    /// The newest failed checkpoint.
    pub failed: Option<HistoryEntry>,
    /// The checkpoint the current attempt restored from.
    pub restored: Option<u64>,
}

impl CheckpointsReport {
    /// The report of a job's checkpoints as `coordinator` has them.
    pub fn of(coordinator: &Coordinator, settings: &CheckpointSettings, layout: &CheckpointLayout) -> Self {
        let retained: Vec<CompletedReport> = coordinator
            .completed()
            .iter()
            .map(|c| {
                let mut alignment_ms_by_vertex = BTreeMap::new();
                for (task, snapshot) in &c.acknowledgements {
                    let entry = alignment_ms_by_vertex.entry(task.vertex).or_insert(0);
                    *entry = (*entry).max(snapshot.alignment_ms);
                }
                CompletedReport {
                    id: c.checkpoint_id,
                    trigger_timestamp: c.trigger_ms,
                    latest_ack_timestamp: c.completion_ms,
                    end_to_end_duration: c.duration_ms,
                    state_size: c.state_size_bytes,
                    incremental_size: c.incremental_size_bytes,
                    external_path: layout.metadata_url(c.checkpoint_id),
                    alignment_ms_by_vertex,
                }
            })
            .collect();
        let history: Vec<HistoryEntry> = coordinator.history().cloned().collect();
        let counts = coordinator.stats();
        Self {
            counts,
            interval_ms: settings.config.interval_ms,
            state_backend: settings.backend.to_string(),
            checkpoint_storage: layout.job_url().to_owned(),
            config: settings.config.clone(),
            latest: LatestReport {
                completed: retained.last().cloned(),
                failed: history.iter().find(|h| h.status == super::CheckpointStatus::Failed).cloned(),
                restored: counts.restored,
            },
            retained,
            in_progress: coordinator.pending(),
            history,
        }
    }
}
