//! Savepoints on a taskmanager: where each pending savepoint of a job goes.
//!
//! A savepoint travels as an ordinary checkpoint barrier. Before the jobmanager triggers its
//! sources, it tells every taskmanager of the attempt the savepoint's directory
//! ([`SavepointTargets::prepare`]), so that every task that sees the barrier knows, without a
//! wider barrier on the wire, that it must write a canonical, self-contained snapshot there
//! instead of an incremental checkpoint (see ARCHITECTURE.md "Savepoints").

use std::collections::BTreeMap;
use std::sync::Mutex;
use weir_api::runtime::CheckpointId;
use weir_runtime::storage::Storage;

/// Where one savepoint's task files go.
#[derive(Clone)]
pub(crate) struct SavepointTarget {
    /// The store opened at the savepoint's directory: task files are `url_of(<vertex>-<subtask>)`.
    pub(crate) storage: Storage,
    /// The job stops with it: `Some(drain)`.
    pub(crate) stop: Option<bool>,
}

/// The pending savepoints of one job on this taskmanager, by checkpoint id.
#[derive(Default)]
pub(crate) struct SavepointTargets {
    pending: Mutex<BTreeMap<CheckpointId, SavepointTarget>>,
}

/// At most this many savepoints wait here for their end; older entries are forgotten (their
/// savepoints have long timed out).
const MAX_PENDING: usize = 16;

impl SavepointTargets {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<CheckpointId, SavepointTarget>> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checkpoint `checkpoint` is a savepoint into `target`.
    pub(crate) fn prepare(&self, checkpoint: CheckpointId, target: SavepointTarget) {
        let mut pending = self.lock();
        pending.insert(checkpoint, target);
        while pending.len() > MAX_PENDING {
            pending.pop_first();
        }
    }

    /// The target of checkpoint `checkpoint` if it is a savepoint.
    pub(crate) fn target(&self, checkpoint: CheckpointId) -> Option<SavepointTarget> {
        self.lock().get(&checkpoint).cloned()
    }

    /// Whether checkpoint `checkpoint` is a pending savepoint.
    pub(crate) fn is_savepoint(&self, checkpoint: CheckpointId) -> bool {
        self.lock().contains_key(&checkpoint)
    }

    /// Savepoint `checkpoint` ended (completed or aborted): forgets it.
    pub(crate) fn end(&self, checkpoint: CheckpointId) {
        self.lock().remove(&checkpoint);
    }
}
