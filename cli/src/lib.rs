//! The `weir` command's library: the local mini-cluster, the jobmanager's REST client, and the
//! parsing of Flink-style job settings and command lines, usable from tests and embedders.

pub mod args;
pub mod client;
pub mod error;
pub mod local;
pub mod settings;

pub use error::{Error, Result};
pub use local::MiniCluster;
