//! # weir-jobmanager
//!
//! The coordinator of a Weir cluster: turns a job's logical graph into an execution plan
//! ([`plan`]), deploys its tasks onto taskmanager slots, and tracks the job's lifecycle ([`job`]).

pub mod artifacts;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod job;
pub mod jobmanager;
pub mod plan;
pub mod rest;
pub mod restart;
pub mod rpc;
pub mod server;

pub use error::{Error, Result};
pub use job::{JobDetails, JobStatus};
pub use jobmanager::{
    CheckpointSubmission, ClusterOverview, JobManager, JobManagerSettings, JobSubmission, TaskManagerInfo,
};
pub use restart::{RestartPolicy, RestartStrategy};
