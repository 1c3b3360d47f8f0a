//! Job records in storage: what a jobmanager needs to resume a job after it restarted.
//!
//! ```text
//! <storage>/jobs/<job-id>.json    magic, xxh3 checksum, JSON JobRecord
//! ```
//!
//! A job's record is written before the job runs, again before every new execution attempt
//! (with the attempt number), when more checkpoint ids are reserved, when the job is cancelled
//! (before any task is told) and when it ends. A jobmanager that starts lists the records and
//! resumes every job that has not ended, from its latest completed checkpoint, with a higher
//! attempt and checkpoint ids above every id reserved before: nothing an earlier jobmanager's
//! tasks may still write can collide with what the resumed job writes.

use crate::checkpoint::CheckpointConfig;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weir_runtime::JobId;
use weir_runtime::checkpoint::StateBackendKind;
use weir_runtime::storage::{Storage, StorageError};

/// Leading bytes of an encoded record.
const RECORD_MAGIC: &[u8; 8] = b"WEIRJR01";

/// Where a job stands, as far as resuming it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecordedStatus {
    /// Not ended: resumed by a restarted jobmanager.
    Running,
    /// The user cancelled it: a restarted jobmanager marks it CANCELED without running it.
    Cancelling,
    /// Ended; never resumed.
    Finished,
    /// Ended; never resumed.
    Failed,
    /// Ended; never resumed.
    Canceled,
}

impl RecordedStatus {
    /// Whether the job ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Finished | Self::Failed | Self::Canceled)
    }
}

/// The checkpointing of a recorded job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedCheckpointing {
    /// Timing, retention and failure tolerance.
    pub config: CheckpointConfig,
    /// The storage root of its checkpoints.
    pub storage_url: String,
}

/// What is kept of a job so that another jobmanager can resume it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Format version.
    pub version: u32,
    /// The job's id.
    pub job_id: JobId,
    /// Its name.
    pub name: String,
    /// SHA-256 of its plugin in the plugin store.
    pub plugin_sha256: String,
    /// Arguments of its build function.
    pub args: Vec<String>,
    /// Default parallelism it was submitted with.
    pub parallelism: u32,
    /// Its keyed state backend.
    pub state_backend: StateBackendKind,
    /// Its checkpointing, if on.
    pub checkpointing: Option<RecordedCheckpointing>,
    /// Submission time, ms since the epoch.
    pub submitted_ms: u64,
    /// The newest execution attempt that was (or was about to be) deployed.
    pub attempt: u32,
    /// How often it restarted.
    pub restarts: u32,
    /// Checkpoint ids below this one may have been used; a resumed job uses ids from here on.
    pub checkpoint_ids_reserved: u64,
    /// Where it stands.
    pub status: RecordedStatus,
    /// Why it failed.
    pub failure: Option<String>,
    /// The savepoint it started from (restored again by a resume before its first checkpoint).
    #[serde(default)]
    pub savepoint: Option<crate::savepoint_restore::SavepointRestoreSettings>,
    /// The restart strategy it was submitted with (`None`: the jobmanager's).
    #[serde(default)]
    pub restart: Option<crate::restart::RestartPolicy>,
    /// The leader epoch of the jobmanager that wrote this version (0: without high
    /// availability); set by [`JobStore::put`].
    #[serde(default)]
    pub leader_epoch: u64,
}

/// A record that cannot be read back (truncated, altered, or not Weir's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt job record: {0}")]
pub struct CorruptRecord(pub String);

impl JobRecord {
    /// The record's bytes: magic, xxh3-64 checksum of the payload (little endian), JSON payload.
    pub fn encode(&self) -> Vec<u8> {
        weir_runtime::checksummed::encode(RECORD_MAGIC, self)
    }

    /// Decodes and verifies a record.
    ///
    /// # Errors
    /// [`CorruptRecord`] when the magic, the checksum or the payload is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, CorruptRecord> {
        weir_runtime::checksummed::decode(RECORD_MAGIC, bytes, "job record").map_err(CorruptRecord)
    }
}

/// The job records under a storage root.
#[derive(Debug, Clone)]
pub struct JobStore {
    storage: Storage,
}

impl JobStore {
    /// The records under `<storage>/jobs/`.
    pub fn new(storage: Storage) -> Self {
        Self { storage }
    }

    fn url(&self, job: JobId) -> String {
        self.storage.url_of(&format!("jobs/{job}.json"))
    }

    /// Writes `record` (replacing the job's earlier one).
    ///
    /// # Errors
    /// The storage failed (retrying may help).
    pub async fn put(&self, record: &JobRecord) -> Result<(), StorageError> {
        let record = JobRecord { leader_epoch: weir_runtime::storage::writer_epoch(), ..record.clone() };
        self.storage.put(&self.url(record.job_id), Bytes::from(record.encode())).await
    }

    /// Every record, and the ones that could not be read (with their URL and why).
    ///
    /// # Errors
    /// Listing failed (retrying may help).
    pub async fn list(&self) -> Result<(Vec<JobRecord>, Vec<(String, String)>), StorageError> {
        let mut records = Vec::new();
        let mut unreadable = Vec::new();
        for (url, _) in self.storage.list(&self.storage.url_of("jobs")).await? {
            if !url.ends_with(".json") {
                continue;
            }
            match self.storage.get(&url).await {
                Ok(bytes) => match JobRecord::decode(&bytes) {
                    Ok(record) => records.push(record),
                    Err(e) => unreadable.push((url, e.to_string())),
                },
                Err(StorageError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        records.sort_by_key(|r| r.submitted_ms);
        Ok((records, unreadable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use weir_runtime::storage::StorageConfig;

    fn record() -> JobRecord {
        JobRecord {
            version: 1,
            job_id: JobId(uuid::Uuid::from_u128(7)),
            name: "wcount".into(),
            plugin_sha256: "ab".repeat(32),
            args: vec!["--query".into(), "wcount".into()],
            parallelism: 2,
            state_backend: StateBackendKind::Rocksdb,
            checkpointing: Some(RecordedCheckpointing {
                config: CheckpointConfig::default(),
                storage_url: "s3://bucket/checkpoints".into(),
            }),
            submitted_ms: 5,
            attempt: 3,
            restarts: 3,
            checkpoint_ids_reserved: 2001,
            status: RecordedStatus::Running,
            failure: None,
            savepoint: None,
            restart: Some(crate::restart::RestartPolicy::fixed_delay(3, std::time::Duration::from_millis(250))),
            leader_epoch: 0,
        }
    }

    #[test]
    fn records_round_trip_and_corruption_is_detected() {
        let bytes = record().encode();
        assert_eq!(JobRecord::decode(&bytes), Ok(record()));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 1;
        assert!(JobRecord::decode(&flipped).unwrap_err().0.contains("checksum mismatch"));
        assert!(JobRecord::decode(b"WEIRMD01xxxxxxxx{}").unwrap_err().0.contains("bad magic"));
    }

    #[tokio::test]
    async fn the_store_lists_what_was_put_and_names_unreadable_records() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let storage = Storage::open(&StorageConfig { url, options: BTreeMap::new() }).unwrap();
        let store = JobStore::new(storage);
        let mut second = record();
        second.job_id = JobId(uuid::Uuid::from_u128(8));
        second.submitted_ms = 9;
        store.put(&second).await.unwrap();
        store.put(&record()).await.unwrap();
        std::fs::write(dir.path().join("jobs").join("garbage.json"), b"{}").unwrap();
        let (records, unreadable) = store.list().await.unwrap();
        assert_eq!(records, vec![record(), second], "oldest submission first");
        assert_eq!(unreadable.len(), 1);
        assert!(unreadable[0].0.ends_with("jobs/garbage.json") && unreadable[0].1.contains("bad magic"));
    }
}
