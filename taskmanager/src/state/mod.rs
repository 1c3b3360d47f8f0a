//! Keyed state backends: the runtime's implementations of
//! [`weir_api::runtime::KeyedStateBackend`].
//!
//! Every backend keeps the state of one operator in one subtask, partitioned by key group so that
//! state can later be snapshotted and redistributed per key group.

#[cfg(test)]
mod contract;
pub mod heap;
pub mod rocksdb;
pub(crate) mod task_db;
mod write_cache;

use rustc_hash::FxHashMap;
use std::ops::RangeInclusive;
use weir_api::runtime::{KeyGroupState, KeyedStateBackend, StateEntry, StateId, StateKey, StateKind, state_entries};
use weir_api::{Error, Result};

/// A restored entry waiting for its state to be registered.
pub(crate) struct PendingEntry {
    key_group: u16,
    key: Vec<u8>,
    namespace: Vec<u8>,
    user_key: Vec<u8>,
    value: Vec<u8>,
}

/// Restored entries by state name, until the operator registers each state: only then is its
/// kind, and so how to store it, known. Shared by the backends' `restore`, `register_state` and
/// `snapshot`.
///
/// Contract: pending entries are state like any other. A backend's snapshot holds them (in their
/// key groups, beside the registered states' entries) until their state is registered, so state
/// that user code does not touch after a restore survives the next failure too.
#[derive(Default)]
pub(crate) struct PendingRestore {
    by_state: FxHashMap<String, Vec<PendingEntry>>,
}

impl PendingRestore {
    /// Keeps the entries of `groups` in `key_groups`, except internal structures (`__*`, such as
    /// timers), which their operators restore.
    pub(crate) fn add(&mut self, groups: &[KeyGroupState], key_groups: &RangeInclusive<u16>) -> Result<()> {
        for group in groups.iter().filter(|g| key_groups.contains(&g.key_group)) {
            for entry in state_entries(&group.entries) {
                let e = entry?;
                if e.state.starts_with("__") {
                    continue;
                }
                self.by_state.entry(e.state.to_owned()).or_default().push(PendingEntry {
                    key_group: group.key_group,
                    key: e.key.to_vec(),
                    namespace: e.namespace.to_vec(),
                    user_key: e.user_key.to_vec(),
                    value: e.value.to_vec(),
                });
            }
        }
        Ok(())
    }

    /// Moves the pending entries of state `name` into state `id` (of `kind`) of `backend`.
    pub(crate) fn load_into(
        backend: &mut dyn KeyedStateBackend,
        pending: Option<Vec<PendingEntry>>,
        id: StateId,
        kind: StateKind,
    ) -> Result<()> {
        for e in pending.into_iter().flatten() {
            let key = StateKey { key_group: e.key_group, key: &e.key, namespace: &e.namespace };
            match kind {
                StateKind::Map => backend.map_put(id, key, &e.user_key, &e.value)?,
                StateKind::Value | StateKind::List => backend.put(id, key, &e.value)?,
            }
        }
        Ok(())
    }

    /// Takes the pending entries of state `name`.
    pub(crate) fn take(&mut self, name: &str) -> Option<Vec<PendingEntry>> {
        self.by_state.remove(name)
    }

    /// Every pending entry with its key group, for snapshots. Key groups are those of the backend
    /// ([`PendingRestore::add`] keeps no others).
    pub(crate) fn entries(&self) -> impl Iterator<Item = (u16, StateEntry<'_>)> {
        self.by_state.iter().flat_map(|(state, entries)| {
            entries.iter().map(move |e| {
                let entry =
                    StateEntry { state, key: &e.key, namespace: &e.namespace, user_key: &e.user_key, value: &e.value };
                (e.key_group, entry)
            })
        })
    }
}

/// Registration shared by the backends: the id of state `name` if it is registered already
/// (an error if with another kind), else `None`; `registered` lists (name, kind) by id.
pub(crate) fn registered_state<'a>(
    service: &str,
    operator_uid: &str,
    registered: impl Iterator<Item = (&'a str, StateKind)>,
    name: &str,
    kind: StateKind,
) -> Result<Option<StateId>> {
    let Some((position, (_, existing))) = registered.enumerate().find(|(_, (n, _))| *n == name) else {
        return Ok(None);
    };
    if existing != kind {
        return Err(Error::runtime(
            service,
            format!("state '{name}' of operator '{operator_uid}' is registered as {existing:?} state, not {kind:?}"),
        ));
    }
    state_id(service, operator_uid, position).map(Some)
}

/// The id of the state at `position`, or an error when there are too many states.
pub(crate) fn state_id(service: &str, operator_uid: &str, position: usize) -> Result<StateId> {
    StateId::try_from(position)
        .map_err(|_| Error::runtime(service, format!("too many states in operator '{operator_uid}'")))
}
