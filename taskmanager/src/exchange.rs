//! Channels between tasks of one taskmanager: bounded queues of serialized batches, watermarks,
//! idleness changes and end-of-stream, in order per channel. A full queue blocks the producer,
//! which is how backpressure propagates upstream. (Channels between taskmanagers arrive with the
//! network data plane and feed the same queues.)

use crossbeam_channel::{Receiver, Sender, bounded};
use std::collections::HashMap;
use std::sync::Mutex;
use weir_api::time::Timestamp;
use weir_runtime::{ChannelId, JobId};

/// What flows through a channel, in order.
#[derive(Debug)]
pub enum ChannelEvent {
    /// A serialized batch of records.
    Batch(Vec<u8>),
    /// Records as Rust values, between two tasks of this process (never sent over the network).
    Records(weir_api::runtime::TypedBatch),
    /// The producer's watermark advanced.
    Watermark(Timestamp),
    /// The producer became idle (`true`) or active again (`false`).
    Idle(bool),
    /// A checkpoint barrier: the producer's records before it belong to the checkpoint.
    Barrier(weir_api::runtime::CheckpointBarrier),
    /// The producer finished; nothing follows.
    EndOfStream,
    /// The channel broke (for example the connection to a remote producer was lost); the
    /// consuming task fails with this message.
    Failed(String),
}

struct Endpoint {
    sender: Sender<ChannelEvent>,
    receiver: Option<Receiver<ChannelEvent>>,
}

/// The channels of all tasks on this taskmanager, created on first use by either side.
pub struct LocalExchange {
    capacity: usize,
    channels: Mutex<HashMap<ChannelId, Endpoint>>,
}

impl std::fmt::Debug for LocalExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalExchange").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

impl LocalExchange {
    /// Channels that hold up to `capacity` events each (batches are at most ~32 KiB), bounding
    /// memory per channel.
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), channels: Mutex::new(HashMap::new()) }
    }

    fn with<R>(&self, id: ChannelId, f: impl FnOnce(&mut Endpoint) -> R) -> R {
        let mut channels = self.channels.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let endpoint = channels.entry(id).or_insert_with(|| {
            let (sender, receiver) = bounded(self.capacity);
            Endpoint { sender, receiver: Some(receiver) }
        });
        f(endpoint)
    }

    /// The producing end of channel `id`.
    pub fn sender(&self, id: ChannelId) -> Sender<ChannelEvent> {
        self.with(id, |e| e.sender.clone())
    }

    /// The consuming end of channel `id`; `None` if already taken.
    pub fn take_receiver(&self, id: ChannelId) -> Option<Receiver<ChannelEvent>> {
        self.with(id, |e| e.receiver.take())
    }

    /// Forgets every channel of attempts up to `attempt` of `job` (channels of newer attempts
    /// stay).
    pub fn release_job(&self, job: JobId, attempt: u32) {
        let mut channels = self.channels.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        channels.retain(|id, _| id.job != job || id.attempt > attempt);
    }
}
