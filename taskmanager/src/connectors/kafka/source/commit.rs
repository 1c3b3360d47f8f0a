//! Offsets committed to the consumer group when a checkpoint completes, for lag tools only (the
//! job's position lives in its checkpoints).
//!
//! The reader (task thread) remembers the offsets of each checkpoint it took; the committer
//! (called by the taskmanager from another thread, possibly after the task ended) commits the
//! offsets of the newest remembered checkpoint `<=` the completed one and forgets the older ones.
//! The two share only a mutex-protected map; the committer has its own consumer, used by its own
//! worker thread for nothing but synchronous commits, so it never touches the reader's fetch
//! queue and the caller never waits for the broker.

use super::client::{ClientLog, Owner, SourceMetrics};
use crate::connectors::CheckpointCommitter;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use weir_api::Result;
use weir_api::runtime::CheckpointId;

/// Checkpoints remembered at most: when completions stop coming (checkpoints that keep failing),
/// the oldest are forgotten.
const MAX_PENDING: usize = 64;

/// `(topic, partition, next offset)` of every split whose offset is known.
pub(crate) type Offsets = Vec<(String, i32, i64)>;

/// Offsets by checkpoint, waiting for their checkpoint to complete.
#[derive(Debug, Default)]
pub(crate) struct PendingOffsets(Mutex<BTreeMap<CheckpointId, Offsets>>);

impl PendingOffsets {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<CheckpointId, Offsets>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers the offsets of `checkpoint`.
    pub(crate) fn remember(&self, checkpoint: CheckpointId, offsets: Offsets) {
        let mut pending = self.lock();
        pending.insert(checkpoint, offsets);
        while pending.len() > MAX_PENDING {
            pending.pop_first();
        }
    }

    /// The offsets of the newest checkpoint `<= checkpoint`, forgetting it and every older one.
    pub(crate) fn take_up_to(&self, checkpoint: CheckpointId) -> Option<(CheckpointId, Offsets)> {
        let mut pending = self.lock();
        let newest = *pending.range(..=checkpoint).next_back()?.0;
        let offsets = pending.remove(&newest);
        pending.retain(|&c, _| c > newest);
        offsets.map(|o| (newest, o))
    }
}

/// Commits a source subtask's offsets to its consumer group when checkpoints complete: the
/// newest offsets wait for a worker thread that commits them synchronously, one commit at a
/// time (so an older commit never lands after a newer one, and a slow or unreachable broker
/// holds up nothing but this worker; newer offsets replace ones still waiting).
pub(crate) struct OffsetCommitter {
    pending: Arc<PendingOffsets>,
    next: Arc<(Mutex<NextCommit>, Condvar)>,
}

/// What the worker commits next.
#[derive(Default)]
struct NextCommit {
    offsets: Option<(CheckpointId, Offsets)>,
    closed: bool,
}

impl OffsetCommitter {
    pub(crate) fn new(
        consumer: BaseConsumer<ClientLog>,
        pending: Arc<PendingOffsets>,
        owner: Owner,
        group: String,
        metrics: Arc<SourceMetrics>,
    ) -> Self {
        let next: Arc<(Mutex<NextCommit>, Condvar)> = Arc::default();
        let worker = Arc::clone(&next);
        let spawned = std::thread::Builder::new()
            .name(format!("kafka-commit-{}", owner.subtask))
            .spawn(move || commit_worker(&consumer, &worker, &owner, &group, &metrics));
        if let Err(e) = spawned {
            tracing::warn!("Kafka source: cannot start the offset committer thread ({e}): offsets are not committed");
        }
        Self { pending, next }
    }
}

impl Drop for OffsetCommitter {
    fn drop(&mut self) {
        let (lock, wake) = &*self.next;
        lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner).closed = true;
        wake.notify_all();
    }
}

fn commit_worker(
    consumer: &BaseConsumer<ClientLog>,
    next: &(Mutex<NextCommit>, Condvar),
    owner: &Owner,
    group: &str,
    metrics: &SourceMetrics,
) {
    let (job_id, subtask) = (owner.job.as_str(), owner.subtask);
    let (lock, wake) = next;
    loop {
        let (taken, offsets) = {
            let mut next = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            loop {
                if let Some(offsets) = next.offsets.take() {
                    break offsets;
                }
                if next.closed {
                    return;
                }
                next = wake.wait(next).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        let mut list = TopicPartitionList::with_capacity(offsets.len());
        for (topic, partition, offset) in &offsets {
            if let Err(e) = list.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                tracing::warn!(
                    job_id,
                    subtask,
                    "Kafka source: cannot commit offset {offset} of {topic}/{partition}: {e}"
                );
            }
        }
        let result = consumer.commit(&list, CommitMode::Sync);
        metrics.count_commit(result.is_ok());
        match result {
            Ok(()) => tracing::debug!(
                job_id,
                subtask,
                checkpoint_id = taken,
                "Kafka source: committed offsets of {} partitions to group '{group}'",
                offsets.len()
            ),
            Err(e) => tracing::warn!(
                job_id,
                subtask,
                checkpoint_id = taken,
                "Kafka source: committing offsets to group '{group}' failed (they only inform lag tools; the job's \
                 position is in its checkpoints): {e}"
            ),
        }
    }
}

impl CheckpointCommitter for OffsetCommitter {
    /// Hands the offsets remembered for the newest checkpoint `<= checkpoint` to the commit
    /// worker. Never fails and never waits for the broker: a failing commit is logged and
    /// counted, and the next completed checkpoint commits newer offsets.
    fn commit(&self, checkpoint: CheckpointId) -> Result<()> {
        let Some((taken, offsets)) = self.pending.take_up_to(checkpoint) else {
            return Ok(());
        };
        if offsets.is_empty() {
            return Ok(());
        }
        let (lock, wake) = &*self.next;
        lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner).offsets = Some((taken, offsets));
        wake.notify_one();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_checkpoint_up_to_the_completed_one_is_taken_and_older_ones_forgotten() {
        let pending = PendingOffsets::default();
        let at = |offset| vec![("t".to_owned(), 0, offset)];
        for checkpoint in [3, 5, 8] {
            pending.remember(checkpoint, at(checkpoint as i64 * 10));
        }
        assert_eq!(pending.take_up_to(2), None);
        assert_eq!(pending.take_up_to(6), Some((5, at(50))));
        assert_eq!(pending.take_up_to(6), None, "3 and 5 are forgotten");
        pending.remember(CheckpointId::MAX, at(99));
        assert_eq!(pending.take_up_to(CheckpointId::MAX), Some((CheckpointId::MAX, at(99))));
        assert_eq!(pending.take_up_to(CheckpointId::MAX), None, "8 was forgotten with the final one");
        for checkpoint in 0..(MAX_PENDING as u64 + 10) {
            pending.remember(checkpoint, at(1));
        }
        assert_eq!(pending.lock().len(), MAX_PENDING);
    }
}
