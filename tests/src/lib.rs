//! Support code for Weir's integration tests.

pub mod harness;
pub mod reference;
