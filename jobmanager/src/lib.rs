//! # weir-jobmanager
//!
//! The coordinator of a Weir cluster: turns a job's logical graph into an execution plan
//! ([`plan`]), deploys its tasks onto taskmanager slots, and tracks the job's lifecycle ([`job`]).

pub mod error;
pub mod job;
pub mod jobmanager;
pub mod plan;

pub use error::{Error, Result};
pub use job::{JobDetails, JobStatus};
pub use jobmanager::{JobManager, JobSubmission};
