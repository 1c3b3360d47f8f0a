//! The `weir` command's library: the local mini-cluster and the jobmanager's REST client, usable
//! from tests and embedders.

pub mod client;
pub mod local;

pub use local::MiniCluster;
