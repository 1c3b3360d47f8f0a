//! Keyed state backends: the runtime's implementations of
//! [`weir_api::runtime::KeyedStateBackend`].
//!
//! Every backend keeps the state of one operator in one subtask, partitioned by key group so that
//! state can later be snapshotted and redistributed per key group.

#[cfg(test)]
mod contract;
pub mod heap;
pub mod rocksdb;
