//! A job in the jobmanager: its lifecycle as a pure state machine ([`lifecycle`]) and the one
//! task that owns it ([`master`]), with what the master needs to carry out its decisions
//! (deployment descriptors, the ordered command queue per taskmanager) and what it publishes.

pub(crate) mod deploy;
pub mod lifecycle;
pub(crate) mod master;
pub(crate) mod outbox;
#[cfg(test)]
pub(crate) mod tests;
pub mod view;

pub use lifecycle::{JobCommand, JobDetails, JobStatus, SubtaskStatus, VertexDetails};
pub use master::SavepointStatus;
pub(crate) use master::{JobHandle, JobInput, SavepointRequest};
pub use view::JobView;
