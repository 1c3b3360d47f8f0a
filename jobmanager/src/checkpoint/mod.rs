//! Checkpoints: the coordinator's decision logic, as a pure state machine.
//!
//! # The protocol
//!
//! 1. The coordinator triggers checkpoint `n` (periodically, or on demand for a savepoint): the
//!    job master sends the trigger to every source task. Sources record their position and emit
//!    barrier `n`; operators align barriers, snapshot their state and forward the barrier.
//! 2. Every task to acknowledge (all tasks of the job) acknowledges `n` with handles to what it
//!    wrote ([`TaskSnapshot`]), or declines it (it could not take its snapshot).
//! 3. Once every task acknowledged, the job master writes the checkpoint's metadata file, **last**: a
//!    checkpoint without metadata does not exist.
//! 4. Only when the metadata is written is `n` complete: tasks are notified (sinks commit), older
//!    pending checkpoints are aborted (subsumed), and completed checkpoints beyond the number to
//!    retain are discarded. Files shared by incremental checkpoints are reference counted and
//!    deleted when no retained checkpoint uses them any more.
//!
//! A checkpoint fails when a task declines it, when it is not acknowledged within the timeout,
//! when writing its metadata fails, when a task it waits on fails, or when the job stops. More
//! than [`CheckpointConfig::tolerable_failures`] consecutive failures of the first three kinds fail
//! the job.
//!
//! # The state machine
//!
//! ```text
//!           trigger            all acks                  metadata_written
//! (none) ----------> ACKING ------------> WRITING_METADATA ----------------> COMPLETED --> DISCARDED
//!                      |  decline, timeout,        | metadata_failed,          (retained)   (beyond
//!                      |  task failure, subsumed,  | or subsumed by a newer                  `retained`)
//!                      v  stop                     v completed checkpoint
//!                   ABORTED <--------------------- +
//! ```
//!
//! [`Coordinator`] holds the pending and completed checkpoints and the reference counts of shared
//! files ([`SharedRegistry`]). It performs no IO and reads no clock: every input carries the
//! current time (`now_ms`) and returns the [`Action`]s the job's owner loop (the job master,
//! `crate::job::master`) must carry out, in order. A checkpoint whose metadata is being written
//! belongs to the loop until it reports [`Coordinator::metadata_written`] or
//! [`Coordinator::metadata_failed`]: it neither expires nor is aborted in between, so nothing
//! deletes files that a write in flight is about to reference, and no restore point is chosen
//! before it is decided.
//!
//! Savepoints follow the same protocol but belong to the user: they never count towards (or
//! reset) the tolerable failures, are never subsumed, and are not retained (nor discarded) by the
//! coordinator.

pub mod coordinator;
pub(crate) mod files;
pub mod report;
pub mod shared;
pub mod stats;

pub use coordinator::{Coordinator, TriggerRefused};

/// The checkpointing setup of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSettings {
    /// Timing, retention and failure tolerance.
    pub config: CheckpointConfig,
    /// The keyed state backend of the job's tasks.
    pub backend: weir_runtime::checkpoint::StateBackendKind,
    /// The storage root (`<root>/<job-id>/chk-<n>/...`).
    pub storage_url: String,
    /// The savepoint the job was submitted with, as given.
    pub savepoint_path: Option<String>,
}
pub use shared::SharedRegistry;
pub use stats::{
    CheckpointCounts, CheckpointStatus, CompletedCheckpoint, HistoryEntry, PendingView, RestoredCheckpoint,
    VertexCheckpointStats,
};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use weir_runtime::TaskId;

/// When and how checkpoints are taken (Flink's `execution.checkpointing.*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Time between two periodic triggers, in ms. Default 10000.
    pub interval_ms: i64,
    /// A checkpoint not acknowledged by every task this long after its trigger expires, in ms.
    /// Default 600000.
    pub timeout_ms: i64,
    /// Checkpoints in progress at once (at least 1). Default 1.
    pub max_concurrent: usize,
    /// Minimum time between the end (completion or abort) of a checkpoint and the next periodic
    /// trigger, in ms. Default 0.
    pub min_pause_ms: i64,
    /// Consecutive failed checkpoints tolerated; one more fails the job. Default 0.
    pub tolerable_failures: u32,
    /// Completed checkpoints to keep (at least 1). Default 1.
    pub retained: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            interval_ms: 10_000,
            timeout_ms: 600_000,
            max_concurrent: 1,
            min_pause_ms: 0,
            tolerable_failures: 0,
            retained: 1,
        }
    }
}

impl CheckpointConfig {
    /// Checks that the values make sense.
    ///
    /// # Errors
    ///
    /// [`InvalidCheckpointConfig`] (the user's mistake) naming the first bad field.
    pub fn validate(&self) -> Result<(), InvalidCheckpointConfig> {
        let bad = |field: &'static str, value: String, expected: &'static str| {
            Err(InvalidCheckpointConfig { field, value, expected })
        };
        if self.interval_ms <= 0 {
            return bad("interval_ms", self.interval_ms.to_string(), "> 0");
        }
        if self.timeout_ms <= 0 {
            return bad("timeout_ms", self.timeout_ms.to_string(), "> 0");
        }
        if self.max_concurrent == 0 {
            return bad("max_concurrent", "0".into(), ">= 1");
        }
        if self.min_pause_ms < 0 {
            return bad("min_pause_ms", self.min_pause_ms.to_string(), ">= 0");
        }
        if self.retained == 0 {
            return bad("retained", "0".into(), ">= 1");
        }
        Ok(())
    }
}

/// Checkpoint and state backend options of a submission as the user wrote them (flags, form
/// fields).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointOptions {
    /// Interval, a duration such as `500ms` or `10s`; checkpointing is off without it.
    pub interval: Option<String>,
    /// `heap` or `rocksdb` (the default is `heap`); independent of checkpointing.
    pub backend: Option<String>,
    /// Storage URL for this job's checkpoints.
    pub storage_url: Option<String>,
    /// Completed checkpoints to retain.
    pub retained: Option<String>,
    /// Timeout of a checkpoint, a duration.
    pub timeout: Option<String>,
    /// Minimum pause between the end of a checkpoint and the next trigger, a duration.
    pub min_pause: Option<String>,
    /// Checkpoints in progress at once.
    pub max_concurrent: Option<String>,
    /// Consecutive checkpoint failures tolerated before the job fails.
    pub tolerable_failures: Option<String>,
}

/// What [`CheckpointOptions`] resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedOptions {
    /// The job's keyed state backend.
    pub state_backend: weir_runtime::checkpoint::StateBackendKind,
    /// Its checkpointing; `None` when no interval is given.
    pub checkpointing: Option<crate::submission::CheckpointSubmission>,
}

impl CheckpointOptions {
    /// The state backend and checkpointing to submit the job with.
    ///
    /// # Errors
    /// One line naming the bad option and what is expected (the user's mistake).
    pub fn resolve(&self) -> Result<ResolvedOptions, String> {
        let state_backend = match &self.backend {
            Some(b) => b.trim().parse()?,
            None => weir_runtime::checkpoint::StateBackendKind::Heap,
        };
        Ok(ResolvedOptions { state_backend, checkpointing: self.checkpointing()? })
    }

    fn checkpointing(&self) -> Result<Option<crate::submission::CheckpointSubmission>, String> {
        let Some(interval) = &self.interval else {
            let others = [&self.storage_url, &self.retained, &self.timeout, &self.min_pause];
            if others.iter().any(|o| o.is_some()) || self.max_concurrent.is_some() || self.tolerable_failures.is_some()
            {
                return Err(
                    "checkpoint options need a checkpoint interval (for example --checkpoint-interval 10s)".into()
                );
            }
            return Ok(None);
        };
        let duration_ms = |what: &str, text: &str| {
            humantime::parse_duration(text.trim())
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .map_err(|e| format!("{what} '{text}' is not a duration such as 500ms or 10s: {e}"))
        };
        let interval_ms = duration_ms("checkpoint interval", interval)?;
        let mut config = CheckpointConfig { interval_ms, ..CheckpointConfig::default() };
        let count = |what: &str, text: &str| {
            text.trim().parse::<u32>().map_err(|_| format!("{what} '{text}' is not a whole number"))
        };
        if let Some(retained) = &self.retained {
            config.retained = count("checkpoints retained", retained)? as usize;
        }
        if let Some(timeout) = &self.timeout {
            config.timeout_ms = duration_ms("checkpoint timeout", timeout)?;
        }
        if let Some(pause) = &self.min_pause {
            config.min_pause_ms = duration_ms("minimum pause between checkpoints", pause)?;
        }
        if let Some(max) = &self.max_concurrent {
            config.max_concurrent = count("concurrent checkpoints", max)? as usize;
        }
        if let Some(tolerable) = &self.tolerable_failures {
            config.tolerable_failures = count("tolerable checkpoint failures", tolerable)?;
        }
        config.validate().map_err(|e| e.to_string())?;
        let storage_url = self.storage_url.as_ref().map(|u| u.trim().to_owned()).filter(|u| !u.is_empty());
        Ok(Some(crate::submission::CheckpointSubmission { config, storage_url }))
    }
}

#[cfg(test)]
mod options_tests {
    use super::*;

    #[test]
    fn options_resolve_to_a_validated_config_or_one_line_errors() {
        use weir_runtime::checkpoint::StateBackendKind;
        let defaults = ResolvedOptions { state_backend: StateBackendKind::Heap, checkpointing: None };
        assert_eq!(CheckpointOptions::default().resolve(), Ok(defaults));
        // The state backend does not need checkpointing.
        let rocksdb = CheckpointOptions { backend: Some("rocksdb".into()), ..Default::default() };
        let expected = ResolvedOptions { state_backend: StateBackendKind::Rocksdb, checkpointing: None };
        assert_eq!(rocksdb.resolve(), Ok(expected));
        let options = CheckpointOptions {
            interval: Some("500ms".into()),
            backend: Some("rocksdb".into()),
            retained: Some("3".into()),
            timeout: Some("1m".into()),
            min_pause: Some("100ms".into()),
            max_concurrent: Some("2".into()),
            tolerable_failures: Some("4".into()),
            storage_url: Some("s3://b/p".into()),
        };
        let resolved = options.resolve().unwrap();
        assert_eq!(resolved.state_backend, StateBackendKind::Rocksdb);
        let resolved = resolved.checkpointing.unwrap();
        let expected = CheckpointConfig {
            interval_ms: 500,
            timeout_ms: 60_000,
            max_concurrent: 2,
            min_pause_ms: 100,
            tolerable_failures: 4,
            retained: 3,
        };
        assert_eq!(resolved.config, expected);
        assert_eq!(resolved.storage_url.as_deref(), Some("s3://b/p"));
        for (options, message) in [
            (CheckpointOptions { retained: Some("2".into()), ..Default::default() }, "need a checkpoint interval"),
            (CheckpointOptions { backend: Some("memory".into()), ..Default::default() }, "expected heap or rocksdb"),
            (CheckpointOptions { interval: Some("5".into()), ..Default::default() }, "not a duration"),
            (CheckpointOptions { interval: Some("0s".into()), ..Default::default() }, "interval_ms = 0"),
            (
                CheckpointOptions { interval: Some("1s".into()), retained: Some("0".into()), ..Default::default() },
                "retained = 0",
            ),
            (
                CheckpointOptions {
                    interval: Some("1s".into()),
                    max_concurrent: Some("x".into()),
                    ..Default::default()
                },
                "concurrent checkpoints 'x'",
            ),
        ] {
            let err = options.resolve().unwrap_err();
            assert!(err.contains(message), "{err}");
        }
    }
}

/// A [`CheckpointConfig`] field has a value that makes no sense (the user's mistake; retrying
/// does not help).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid checkpoint configuration: {field} = {value}, expected {expected}")]
pub struct InvalidCheckpointConfig {
    /// The field.
    pub field: &'static str,
    /// Its value.
    pub value: String,
    /// What it should be.
    pub expected: &'static str,
}

/// Whether a checkpoint belongs to the system or to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CheckpointKind {
    /// Periodic, owned and discarded by the coordinator.
    Checkpoint,
    /// Triggered by the user, owned by the user.
    Savepoint,
}

pub use weir_runtime::checkpoint::{StateHandle, TaskSnapshot};

/// Why a checkpoint was aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortReason {
    /// A task could not take its snapshot.
    Declined {
        /// The task.
        task: TaskId,
        /// Its reason.
        reason: String,
    },
    /// Not every task acknowledged within the timeout.
    Expired,
    /// A task the checkpoint waited on failed.
    TaskFailed(TaskId),
    /// A newer checkpoint completed first.
    Subsumed,
    /// Writing the metadata file failed.
    MetadataFailed(String),
    /// The job is ending.
    Stopped,
    /// The job restarted: the tasks it waited on belong to an old attempt.
    Restarted,
    /// A task it waited on finished before taking part (without a final snapshot).
    TaskFinished(TaskId),
    /// Sending its trigger failed.
    TriggerFailed(String),
    /// A task reused a shared file that no retained checkpoint references any more.
    ReusedDiscardedFile {
        /// The task.
        task: TaskId,
        /// The file.
        uri: String,
    },
}

impl AbortReason {
    /// Whether the abort counts towards [`CheckpointConfig::tolerable_failures`].
    pub fn counts_as_failure(&self) -> bool {
        matches!(self, Self::Declined { .. } | Self::Expired | Self::MetadataFailed(_) | Self::TriggerFailed(_))
    }
}

impl fmt::Display for AbortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Declined { task, reason } => write!(f, "declined by task {task}: {reason}"),
            Self::Expired => f.write_str("expired before every task acknowledged it"),
            Self::TaskFailed(task) => write!(f, "task {task} failed"),
            Self::Subsumed => f.write_str("subsumed by a newer completed checkpoint"),
            Self::MetadataFailed(reason) => write!(f, "writing the metadata failed: {reason}"),
            Self::Stopped => f.write_str("the job stopped"),
            Self::Restarted => f.write_str("the job restarted"),
            Self::TaskFinished(task) => write!(f, "task {task} finished before taking part"),
            Self::TriggerFailed(reason) => write!(f, "its trigger failed: {reason}"),
            Self::ReusedDiscardedFile { task, uri } => {
                write!(f, "task {task} reused {uri}, which no retained checkpoint references any more")
            }
        }
    }
}

/// What the job master must do, in order, after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a trigger for the checkpoint to every source task ([`Coordinator::sources`]).
    Trigger {
        /// The new checkpoint.
        checkpoint_id: u64,
        /// Checkpoint or savepoint.
        kind: CheckpointKind,
        /// Trigger time, ms, as given to the input.
        timestamp_ms: i64,
    },
    /// Every task acknowledged: write the metadata file, then report
    /// [`Coordinator::metadata_written`] or [`Coordinator::metadata_failed`].
    WriteMetadata {
        /// The checkpoint.
        checkpoint_id: u64,
        /// Checkpoint or savepoint.
        kind: CheckpointKind,
        /// Every task's acknowledgement.
        acknowledgements: BTreeMap<TaskId, TaskSnapshot>,
    },
    /// The checkpoint is complete: tell every task (sinks commit).
    NotifyComplete {
        /// The checkpoint.
        checkpoint_id: u64,
    },
    /// The checkpoint failed: tell the tasks, delete its own (non-shared) files and metadata, and
    /// fail the savepoint request if it was one.
    Abort {
        /// The checkpoint.
        checkpoint_id: u64,
        /// Why.
        reason: AbortReason,
    },
    /// A completed checkpoint is no longer retained: delete its own (non-shared) files and
    /// metadata.
    Discard {
        /// The checkpoint.
        checkpoint_id: u64,
    },
    /// Delete these shared files: no retained or pending checkpoint uses them any more.
    DeleteShared {
        /// Their URLs, sorted.
        uris: Vec<String>,
    },
    /// Delete these files: a late acknowledgement named them, and nothing uses them.
    DeleteFiles {
        /// Their URLs.
        uris: Vec<String>,
    },
    /// Reserve checkpoint ids up to (excluding) `up_to` in the job's record, then report
    /// [`Coordinator::ids_reserved`] (or [`Coordinator::ids_not_reserved`]).
    ReserveIds {
        /// The new limit.
        up_to: u64,
    },
    /// Too many consecutive checkpoints failed: fail the job.
    FailJob {
        /// Why, for the job's failure message.
        reason: String,
    },
}
