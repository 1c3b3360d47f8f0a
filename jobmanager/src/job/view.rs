//! What a job master publishes for readers (REST, waiters): a snapshot taken after every input.

use super::lifecycle::{Job, JobDetails};
use super::master::SavepointStatus;
use crate::checkpoint::report::CheckpointsReport;
use std::sync::Arc;
use std::time::Instant;

/// A job as its master last published it.
#[derive(Debug, Clone)]
pub struct JobView {
    /// The job's details.
    pub details: JobDetails,
    /// Its checkpoints (`None` when checkpointing is off).
    pub checkpoints: Option<CheckpointsReport>,
    /// The job reached a terminal state and everything it leaves behind is settled: its record
    /// says how it ended and its checkpoint directory holds only retained checkpoints.
    pub ended: bool,
    /// Its savepoint requests and where they stand, oldest first (they outlive the job's
    /// master: a request that cancelled the job is still answered).
    pub savepoints: Arc<Vec<(String, SavepointStatus)>>,
    /// Its plan in Flink's shape (`GET /jobs/{id}/plan`).
    pub plan: Arc<serde_json::Value>,
}

impl JobView {
    pub(crate) fn of(
        job: &Job,
        checkpoints: Option<CheckpointsReport>,
        ended: bool,
        savepoints: Arc<Vec<(String, SavepointStatus)>>,
        now: Instant,
    ) -> Self {
        Self { details: job.details(now), checkpoints, ended, savepoints, plan: Arc::clone(&job.plan_json) }
    }

    /// The status of savepoint request `request_id`.
    pub fn savepoint(&self, request_id: &str) -> Option<&SavepointStatus> {
        self.savepoints.iter().find(|(id, _)| id == request_id).map(|(_, status)| status)
    }
}
