//! The `weir` command's library: the local mini-cluster, usable from tests and embedders.

pub mod local;

pub use local::MiniCluster;
