//! # weir-jobmanager
//!
//! The coordinator of a Weir cluster: turns a job's logical graph into an execution plan
//! ([`plan`]), gives each job an owner task that deploys it onto taskmanager slots and drives
//! its lifecycle and checkpoints ([`job`]), keeps the cluster registry ([`registry`]), and
//! records jobs so that a restarted jobmanager resumes them ([`jobstore`]).

pub mod artifacts;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod ha;
pub mod job;
pub mod jobmanager;
pub mod jobstore;
mod metrics;
pub mod plan;
pub mod registry;
pub mod rest;
pub mod restart;
pub mod rpc;
pub mod savepoint_restore;
pub mod server;
mod standby;
pub mod state_evolution;
pub mod submission;

pub use error::{Error, Result};
pub use job::{JobDetails, JobStatus, JobView};
pub use jobmanager::{ClusterOverview, JobManager, JobManagerSettings};
pub use registry::TaskManagerInfo;
pub use restart::{RestartPolicy, RestartStrategy};
pub use savepoint_restore::SavepointRestoreSettings;
pub use submission::{CheckpointSubmission, JobSubmission};
