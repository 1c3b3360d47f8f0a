//! What a job master publishes for readers (REST, waiters): a snapshot taken after every input.

use super::lifecycle::{Job, JobDetails};
use crate::checkpoint::report::CheckpointsReport;
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
}

impl JobView {
    pub(crate) fn of(job: &Job, checkpoints: Option<CheckpointsReport>, ended: bool, now: Instant) -> Self {
        Self { details: job.details(now), checkpoints, ended }
    }
}
