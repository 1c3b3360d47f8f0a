//! What the Weir jobmanager and taskmanager share: loading job plugins safely, job and task
//! identities, and the deployment descriptor the jobmanager sends to taskmanagers.

pub mod checkpoint;
pub mod checksummed;
pub mod config;
pub mod convert;
pub mod deployment;
pub mod error;
pub mod faults;
pub mod gateway;
pub mod metrics;
pub mod plugin;
pub mod savepoint;
pub mod storage;

pub use deployment::{ChannelId, ChannelLocation, InputSpec, JobId, TaskDeployment, TaskId};
pub use error::{Error, Result};
pub use gateway::{
    BoxFuture, FailureKind, GatewayError, GatewayErrorKind, GatewayResult, HeartbeatTask, TaskEvent, TaskEventSink,
    TaskExecutionState, TaskManagerGateway, TimeShares,
};
pub use plugin::{JobArtifact, LoadedJob, Plugged};
