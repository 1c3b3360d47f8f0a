//! The verbs of `weir`, one module per noun.

pub mod checkpoints;
pub mod info;
pub mod jobs;
pub mod output;
pub mod run;
pub mod savepoints;
