//! Support code for Weir's integration tests.

pub mod cluster;
pub mod harness;
pub mod kafka;
pub mod kube;
pub mod reference;
pub mod s3;
pub mod service;
pub mod verify;
