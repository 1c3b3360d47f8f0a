//! # weir-taskmanager
//!
//! The worker of a Weir cluster: runs the subtasks the jobmanager deploys, each on its own
//! thread, with their operator chains instantiated from the job's plugin; connects them through
//! bounded channels; provides state backends and connectors.

pub mod connectors;
mod context;
mod exchange;
mod http;
mod input_gate;
mod metrics;
mod network;
pub mod process;
mod rpc;
mod savepoint;
mod snapshot;
pub mod state;
mod task;
pub mod taskmanager;

pub use context::now_ms;
pub use taskmanager::{TaskManager, TaskManagerConfig};
