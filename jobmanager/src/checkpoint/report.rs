//! `GET /jobs/{id}/checkpoints`: what the coordinator reports, in Flink's shape
//! (`CheckpointingStatistics`), with Weir's settings and retained checkpoints beside it.

use super::stats::vertex_stats;
use super::{
    CheckpointCounts, CheckpointKind, CheckpointSettings, CheckpointStatus, CompletedCheckpoint, Coordinator,
    HistoryEntry, PendingView, VertexCheckpointStats,
};
use serde::Serialize;
use std::collections::BTreeMap;
use weir_runtime::storage::CheckpointLayout;

/// Flink's `CheckpointStatistics`: one checkpoint or savepoint, in progress, completed or failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointReport {
    /// `in_progress`, `completed` or `failed` (Flink's subtype tag).
    #[serde(rename = "className")]
    pub class_name: &'static str,
    /// Its id.
    pub id: u64,
    /// `IN_PROGRESS`, `COMPLETED` or `FAILED`.
    pub status: &'static str,
    /// A savepoint.
    pub is_savepoint: bool,
    /// `CANONICAL` for a savepoint (Weir's savepoints are backend-independent), else absent.
    #[serde(rename = "savepointFormat")]
    pub savepoint_format: Option<&'static str>,
    /// `CHECKPOINT` or `SAVEPOINT`.
    pub checkpoint_type: &'static str,
    /// Trigger time, ms since the epoch.
    pub trigger_timestamp: i64,
    /// Time of the latest acknowledgement (of the metadata write when completed), ms since the
    /// epoch; -1 before any.
    pub latest_ack_timestamp: i64,
    /// Bytes written for this checkpoint alone (its incremental size).
    pub checkpointed_size: u64,
    /// Size of its whole state, shared files included.
    pub state_size: u64,
    /// Trigger to completion, failure or now, ms.
    pub end_to_end_duration: i64,
    /// Bytes buffered during alignment (0: Weir aligns without spilling).
    pub alignment_buffered: u64,
    /// In-flight bytes processed during alignment (0, as Flink reports for aligned checkpoints).
    pub processed_data: u64,
    /// In-flight bytes persisted (0: no unaligned checkpoints).
    pub persisted_data: u64,
    /// Subtasks that take part.
    pub num_subtasks: usize,
    /// Subtasks that acknowledged.
    pub num_acknowledged_subtasks: usize,
    /// The longest barrier alignment of any subtask, ms (Weir's).
    pub alignment_duration: u64,
    /// Per vertex id.
    pub tasks: BTreeMap<String, TaskCheckpointReport>,
    /// Where the metadata of a completed checkpoint or savepoint is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_path: Option<String>,
    /// A completed checkpoint's files were deleted (no longer retained).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discarded: Option<bool>,
    /// When a failed one was aborted, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_timestamp: Option<i64>,
    /// Why a failed one was aborted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
}

/// Flink's `TaskCheckpointStatistics`: one vertex's part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskCheckpointReport {
    /// The checkpoint's id.
    pub id: u64,
    /// The checkpoint's status.
    pub status: &'static str,
    /// Its subtasks' latest acknowledgement, ms since the epoch; -1 before any.
    pub latest_ack_timestamp: i64,
    /// Bytes its subtasks wrote for this checkpoint alone.
    pub checkpointed_size: u64,
    /// Size of its subtasks' state.
    pub state_size: u64,
    /// Trigger to its latest acknowledgement, ms; -1 before any.
    pub end_to_end_duration: i64,
    /// 0 (see [`CheckpointReport::alignment_buffered`]).
    pub alignment_buffered: u64,
    /// 0.
    pub processed_data: u64,
    /// 0.
    pub persisted_data: u64,
    /// Its subtasks.
    pub num_subtasks: usize,
    /// Its subtasks that acknowledged.
    pub num_acknowledged_subtasks: usize,
    /// Its longest barrier alignment, ms (Weir's).
    pub alignment_duration: u64,
}

/// Flink's `StatsSummaryDto`: minimum, maximum, average and percentiles of one quantity over the
/// completed checkpoints in the history.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatsSummary {
    /// Smallest.
    pub min: i64,
    /// Largest.
    pub max: i64,
    /// Mean, rounded down.
    pub avg: i64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

impl StatsSummary {
    /// The summary of `values` (all zero when there are none). Percentiles interpolate linearly
    /// between the closest ranks.
    pub fn of(mut values: Vec<i64>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_unstable();
        let n = values.len();
        let quantile = |q: f64| {
            let rank = q * (n - 1) as f64;
            let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
            let (a, b) = (values[low] as f64, values[high] as f64);
            a + (b - a) * (rank - low as f64)
        };
        let sum: i128 = values.iter().map(|&v| i128::from(v)).sum();
        Self {
            min: values[0],
            max: values[n - 1],
            avg: i64::try_from(sum / n as i128).unwrap_or(i64::MAX),
            p50: quantile(0.5),
            p90: quantile(0.9),
            p95: quantile(0.95),
            p99: quantile(0.99),
            p999: quantile(0.999),
        }
    }
}

/// Flink's checkpoint `summary`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CheckpointSummary {
    /// Incremental sizes.
    pub checkpointed_size: StatsSummary,
    /// Full state sizes.
    pub state_size: StatsSummary,
    /// Durations, ms.
    pub end_to_end_duration: StatsSummary,
    /// Always zero (see [`CheckpointReport::alignment_buffered`]).
    pub alignment_buffered: StatsSummary,
    /// Always zero.
    pub processed_data: StatsSummary,
    /// Always zero.
    pub persisted_data: StatsSummary,
}

/// Flink's `latest.restored`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoredReport {
    /// The checkpoint or savepoint id.
    pub id: u64,
    /// When the attempt that restored it was deployed, ms since the epoch.
    pub restore_timestamp: i64,
    /// It is a savepoint.
    pub is_savepoint: bool,
    /// Where its metadata is, when known.
    pub external_path: Option<String>,
}

/// The latest checkpoints of each kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatestReport {
    /// The newest completed checkpoint (retained, or in the history).
    pub completed: Option<CheckpointReport>,
    /// The newest completed savepoint.
    pub savepoint: Option<CheckpointReport>,
    /// The newest failed checkpoint or savepoint.
    pub failed: Option<CheckpointReport>,
    /// What the current attempt restored.
    pub restored: Option<RestoredReport>,
}

/// The answer of `GET /jobs/{id}/checkpoints`: Flink's `counts`, `summary`, `latest` and
/// `history`, and Weir's settings and retained checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointsReport {
    /// Counts.
    pub counts: CheckpointCounts,
    /// Over the completed checkpoints in the history.
    pub summary: CheckpointSummary,
    /// The newest completed checkpoint and savepoint, the newest failed one, the restored one.
    pub latest: LatestReport,
    /// In-progress checkpoints (newest first), then the last finished ones, newest first.
    pub history: Vec<CheckpointReport>,
    /// Checkpoint interval, ms.
    pub interval_ms: i64,
    /// State backend.
    pub state_backend: String,
    /// Storage location of the job's checkpoints.
    pub checkpoint_storage: String,
    /// Timing, retention and failure tolerance (also `GET /jobs/{id}/checkpoints/config`).
    pub config: super::CheckpointConfig,
    /// Retained completed checkpoints (what the job restarts from), oldest first.
    pub retained: Vec<CheckpointReport>,
}

impl CheckpointsReport {
    /// The report of a job's checkpoints as `coordinator` has them at `now_ms`.
    pub fn of(
        coordinator: &Coordinator,
        settings: &CheckpointSettings,
        layout: &CheckpointLayout,
        now_ms: i64,
    ) -> Self {
        let retained_ids: Vec<u64> = coordinator.completed().iter().map(|c| c.checkpoint_id).collect();
        let finished: Vec<CheckpointReport> = coordinator
            .history()
            .map(|h| {
                let discarded = h.kind == CheckpointKind::Checkpoint && !retained_ids.contains(&h.checkpoint_id);
                finished_report(h, layout, discarded)
            })
            .collect();
        let retained: Vec<CheckpointReport> = coordinator
            .completed()
            .iter()
            .map(|c| match finished.iter().find(|f| f.id == c.checkpoint_id) {
                Some(f) => f.clone(),
                None => retained_report(c, layout),
            })
            .collect();
        let mut history: Vec<CheckpointReport> =
            coordinator.pending().iter().rev().map(|p| pending_report(p, now_ms)).collect();
        history.extend(finished);
        let completed: Vec<&CheckpointReport> = history.iter().filter(|c| c.status == "COMPLETED").collect();
        let summary = CheckpointSummary {
            checkpointed_size: StatsSummary::of(completed.iter().map(|c| size(c.checkpointed_size)).collect()),
            state_size: StatsSummary::of(completed.iter().map(|c| size(c.state_size)).collect()),
            end_to_end_duration: StatsSummary::of(completed.iter().map(|c| c.end_to_end_duration).collect()),
            ..CheckpointSummary::default()
        };
        let newest = |savepoint: bool| completed.iter().find(|c| c.is_savepoint == savepoint).map(|c| (*c).clone());
        let latest = LatestReport {
            completed: newest(false).or_else(|| retained.last().cloned()),
            savepoint: newest(true),
            failed: history.iter().find(|c| c.status == "FAILED").cloned(),
            restored: coordinator.restored().map(|r| RestoredReport {
                id: r.checkpoint_id,
                restore_timestamp: r.restore_ms,
                is_savepoint: r.is_savepoint,
                external_path: r
                    .external_path
                    .clone()
                    .or_else(|| (!r.is_savepoint).then(|| layout.metadata_url(r.checkpoint_id))),
            }),
        };
        Self {
            counts: coordinator.stats(),
            summary,
            latest,
            history,
            interval_ms: settings.config.interval_ms,
            state_backend: settings.backend.to_string(),
            checkpoint_storage: layout.job_url().to_owned(),
            config: settings.config.clone(),
            retained,
        }
    }

    /// The checkpoint `id` among the in-progress, finished and retained ones.
    pub fn checkpoint(&self, id: u64) -> Option<&CheckpointReport> {
        self.history.iter().chain(&self.retained).find(|c| c.id == id)
    }
}

fn size(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// The fields every kind of report shares.
struct Common {
    id: u64,
    kind: CheckpointKind,
    status: &'static str,
    trigger_ms: i64,
    latest_ack_ms: Option<i64>,
    checkpointed_size: u64,
    state_size: u64,
    duration_ms: i64,
}

fn report(common: Common, vertices: &BTreeMap<u32, VertexCheckpointStats>) -> CheckpointReport {
    let is_savepoint = common.kind == CheckpointKind::Savepoint;
    let tasks = vertices
        .iter()
        .map(|(vertex, v)| {
            let report = TaskCheckpointReport {
                id: common.id,
                status: common.status,
                latest_ack_timestamp: v.latest_ack_ms.unwrap_or(-1),
                checkpointed_size: v.incremental_size_bytes,
                state_size: v.state_size_bytes,
                end_to_end_duration: v.latest_ack_ms.map_or(-1, |at| at.saturating_sub(common.trigger_ms).max(0)),
                alignment_buffered: 0,
                processed_data: 0,
                persisted_data: 0,
                num_subtasks: v.subtasks,
                num_acknowledged_subtasks: v.acknowledged,
                alignment_duration: v.max_alignment_ms,
            };
            (vertex.to_string(), report)
        })
        .collect();
    CheckpointReport {
        class_name: match common.status {
            "COMPLETED" => "completed",
            "FAILED" => "failed",
            _ => "in_progress",
        },
        id: common.id,
        status: common.status,
        is_savepoint,
        savepoint_format: is_savepoint.then_some("CANONICAL"),
        checkpoint_type: if is_savepoint { "SAVEPOINT" } else { "CHECKPOINT" },
        trigger_timestamp: common.trigger_ms,
        latest_ack_timestamp: common.latest_ack_ms.unwrap_or(-1),
        checkpointed_size: common.checkpointed_size,
        state_size: common.state_size,
        end_to_end_duration: common.duration_ms,
        alignment_buffered: 0,
        processed_data: 0,
        persisted_data: 0,
        num_subtasks: vertices.values().map(|v| v.subtasks).sum(),
        num_acknowledged_subtasks: vertices.values().map(|v| v.acknowledged).sum(),
        alignment_duration: vertices.values().map(|v| v.max_alignment_ms).max().unwrap_or(0),
        tasks,
        external_path: None,
        discarded: None,
        failure_timestamp: None,
        failure_message: None,
    }
}

fn pending_report(p: &PendingView, now_ms: i64) -> CheckpointReport {
    let common = Common {
        id: p.checkpoint_id,
        kind: p.kind,
        status: "IN_PROGRESS",
        trigger_ms: p.trigger_ms,
        latest_ack_ms: p.latest_ack_ms,
        checkpointed_size: p.incremental_size_bytes,
        state_size: p.state_size_bytes,
        duration_ms: now_ms.saturating_sub(p.trigger_ms).max(0),
    };
    report(common, &p.vertices)
}

fn finished_report(h: &HistoryEntry, layout: &CheckpointLayout, discarded: bool) -> CheckpointReport {
    let completed = h.status == CheckpointStatus::Completed;
    let common = Common {
        id: h.checkpoint_id,
        kind: h.kind,
        status: if completed { "COMPLETED" } else { "FAILED" },
        trigger_ms: h.trigger_ms,
        // Flink's latest acknowledgement of a completed checkpoint is its completion.
        latest_ack_ms: if completed { Some(h.end_ms) } else { h.latest_ack_ms },
        checkpointed_size: h.incremental_size_bytes,
        state_size: h.state_size_bytes,
        duration_ms: h.duration_ms,
    };
    let mut report = report(common, &h.vertices);
    if completed {
        report.external_path = match h.kind {
            CheckpointKind::Checkpoint => Some(layout.metadata_url(h.checkpoint_id)),
            CheckpointKind::Savepoint => h.external_path.clone(),
        };
        report.discarded = Some(discarded);
    } else {
        report.failure_timestamp = Some(h.end_ms);
        report.failure_message.clone_from(&h.failure);
    }
    report
}

/// A retained checkpoint no longer in the history (read back after a jobmanager restart, or
/// older than the history): its acknowledgements say what the history would have.
fn retained_report(c: &CompletedCheckpoint, layout: &CheckpointLayout) -> CheckpointReport {
    let ack_ms = c.acknowledgements.keys().map(|t| (*t, c.completion_ms)).collect();
    let vertices = vertex_stats(c.acknowledgements.keys(), &c.acknowledgements, &ack_ms);
    let common = Common {
        id: c.checkpoint_id,
        kind: c.kind,
        status: "COMPLETED",
        trigger_ms: c.trigger_ms,
        latest_ack_ms: Some(c.completion_ms),
        checkpointed_size: c.incremental_size_bytes,
        state_size: c.state_size_bytes,
        duration_ms: c.duration_ms,
    };
    let mut report = report(common, &vertices);
    report.external_path = Some(layout.metadata_url(c.checkpoint_id));
    report.discarded = Some(false);
    report
}

#[cfg(test)]
mod tests {
    use super::StatsSummary;

    #[test]
    fn summaries_interpolate_between_ranks() {
        let s = StatsSummary::of(vec![40, 10, 30, 20]);
        assert_eq!((s.min, s.max, s.avg), (10, 40, 25));
        // Ranks 0..3; the median sits halfway between 20 and 30, p90 at rank 2.7.
        assert!((s.p50 - 25.0).abs() < 1e-9, "{s:?}");
        assert!((s.p90 - 37.0).abs() < 1e-9, "{s:?}");
        assert_eq!(StatsSummary::of(vec![7]).p999, 7.0);
        assert_eq!(StatsSummary::of(Vec::new()), StatsSummary::default());
    }
}
