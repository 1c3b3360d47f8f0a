//! The heap keyed state backend: hash maps in memory, one per registered state and key group.
//!
//! Layout: for every registered state there is one table per key group of the backend's range
//! (indexed by `key_group - range.start()`), so that a snapshot can later be written per key group.
//! Within a table, the address `(key, namespace)` is encoded into one composite byte string:
//! the key's length as a little-endian `u32`, the key bytes, then the namespace bytes. The length
//! prefix makes the encoding unambiguous (`("ab", "c")` and `("a", "bc")` differ).
//!
//! - Value and list state: `composite -> value` (list values are the concatenation of elements in
//!   the [`encode_list_element`] format, so [`weir_api::runtime::list_elements`] decodes them).
//! - Map state: `composite -> BTreeMap<user key, value>`, so scans yield user-key byte order.
//!   An empty map is never stored: removing the last entry removes the map.
//!
//! Lookups do not allocate: the composite key is built in a reusable scratch buffer and tables are
//! probed with `&[u8]`. Only inserting a new address copies the composite key.

use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use weir_api::runtime::{
    Expiry, KeyGroupState, KeyedStateBackend, StateEntry, StateId, StateKey, StateKind, encode_list_element,
    encode_state_entry,
};
use weir_api::{Error, Result};

/// Service name used in this backend's errors.
const SERVICE: &str = "heap state backend";

/// A composite `(key, namespace)`, inline up to 48 bytes (no allocation for typical keys).
type Composite = SmallVec<[u8; 48]>;
/// A stored value, inline up to 24 bytes (counters and small accumulators).
type Value = SmallVec<[u8; 24]>;
/// Values of value and list state of one key group, by composite `(key, namespace)`.
type FlatTable = FxHashMap<Composite, Value>;
/// Maps of map state of one key group, by composite `(key, namespace)`.
type MapTable = FxHashMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>;

/// Storage of one registered state: one table per key group of the backend.
enum Tables {
    /// Value and list state.
    Flat(Vec<FlatTable>),
    /// Map state.
    Map(Vec<MapTable>),
}

/// One registered state.
struct RegisteredState {
    name: String,
    kind: StateKind,
    tables: Tables,
}

/// Keyed state of one operator in one subtask, held in memory.
///
/// Contract, beyond [`KeyedStateBackend`]:
/// - A key group outside the backend's range and an unknown [`StateId`] are
///   [`Error::Runtime`] errors, never panics.
/// - Operations must match the registered kind: `get` and `put` accept value and list state,
///   `append` list state, `map_*` map state, and `remove` any kind (on map state it removes the
///   whole map at `(key, namespace)`). A mismatch is an [`Error::Runtime`].
pub struct HeapKeyedStateBackend {
    operator_uid: String,
    /// The range given at construction.
    key_groups: RangeInclusive<u16>,
    first_key_group: u16,
    key_group_count: usize,
    states: Vec<RegisteredState>,
    /// Reused buffer for composite keys, so lookups do not allocate.
    scratch: Vec<u8>,
    /// Reused buffer for new values (`update`, `append`).
    update_scratch: Vec<u8>,
    /// Restored entries of states not registered yet, by state name (their kind is only known
    /// when the operator registers them).
    pending: super::PendingRestore,
}

impl std::fmt::Debug for HeapKeyedStateBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeapKeyedStateBackend")
            .field("operator_uid", &self.operator_uid)
            .field("key_groups", &self.key_groups())
            .field("states", &self.states.iter().map(|s| (&s.name, s.kind)).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl HeapKeyedStateBackend {
    /// An empty backend for the state of operator `operator_uid` in key groups `key_groups`.
    ///
    /// An empty range (`start > end`) yields a backend that rejects every key group.
    pub fn new(operator_uid: &str, key_groups: RangeInclusive<u16>) -> Self {
        let (start, end) = (*key_groups.start(), *key_groups.end());
        let key_group_count = if start <= end { usize::from(end - start) + 1 } else { 0 };
        Self {
            operator_uid: operator_uid.to_owned(),
            key_groups,
            first_key_group: start,
            key_group_count,
            states: Vec::new(),
            scratch: Vec::new(),
            update_scratch: Vec::new(),
            pending: super::PendingRestore::default(),
        }
    }

    /// The uid of the operator whose state this is.
    pub fn operator_uid(&self) -> &str {
        &self.operator_uid
    }

    /// The key groups this backend holds, as given to [`HeapKeyedStateBackend::new`].
    pub fn key_groups(&self) -> RangeInclusive<u16> {
        self.key_groups.clone()
    }

    /// Total number of stored entries over all states and key groups: one per `(key, namespace)`
    /// of value and list state, one per user key of map state.
    pub fn entry_count(&self) -> usize {
        self.states
            .iter()
            .map(|state| match &state.tables {
                Tables::Flat(tables) => tables.iter().map(FxHashMap::len).sum::<usize>(),
                Tables::Map(tables) => tables.iter().flat_map(|t| t.values()).map(BTreeMap::len).sum(),
            })
            .sum()
    }

    /// Builds the composite key of `key` into the scratch buffer and finds the state and the
    /// table index of `key.key_group`.
    ///
    /// Returns the state's tables and the composite key (borrowed from the scratch buffer).
    fn locate<'a>(
        &'a mut self,
        state: StateId,
        key: &StateKey<'_>,
        operation: &str,
    ) -> Result<(&'a mut RegisteredState, usize, &'a [u8])> {
        let index = usize::from(key.key_group.wrapping_sub(self.first_key_group));
        if key.key_group < self.first_key_group || index >= self.key_group_count {
            return Err(Error::runtime(
                SERVICE,
                format!(
                    "{operation}: key group {} is outside the key groups {:?} of operator '{}'",
                    key.key_group,
                    self.key_groups(),
                    self.operator_uid
                ),
            ));
        }
        let Some(registered) = usize::try_from(state).ok().and_then(|i| self.states.get_mut(i)) else {
            return Err(Error::runtime(
                SERVICE,
                format!("{operation}: unknown state id {state} of operator '{}'", self.operator_uid),
            ));
        };
        let key_len = u32::try_from(key.key.len()).map_err(|_| {
            Error::runtime(
                SERVICE,
                format!("{operation}: key of {} bytes is too long (state '{}')", key.key.len(), registered.name),
            )
        })?;
        self.scratch.clear();
        self.scratch.extend_from_slice(&key_len.to_le_bytes());
        self.scratch.extend_from_slice(key.key);
        self.scratch.extend_from_slice(key.namespace);
        Ok((registered, index, &self.scratch))
    }
}

/// Splits a composite `(u32 LE key length, key, namespace)` into key and namespace.
fn split_composite(composite: &[u8]) -> Result<(&[u8], &[u8])> {
    let corrupt = || Error::runtime(SERVICE, "corrupt composite key in heap state");
    let (len, rest) = composite.split_first_chunk::<4>().ok_or_else(corrupt)?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return Err(corrupt());
    }
    Ok(rest.split_at(len))
}

impl HeapKeyedStateBackend {
    /// Loads the restored entries of state `id` now that its kind is known.
    fn apply_pending(&mut self, id: StateId) -> Result<()> {
        let (name, kind) = {
            let state = &self.states[id as usize];
            (state.name.clone(), state.kind)
        };
        let pending = self.pending.take(&name);
        super::PendingRestore::load_into(self, pending, id, kind)
    }
}

/// The error of an operation that does not fit the state's registered kind.
fn wrong_kind(operation: &str, state: &RegisteredState) -> Error {
    Error::runtime(SERVICE, format!("{operation} is not supported by {:?} state '{}'", state.kind, state.name))
}

impl KeyedStateBackend for HeapKeyedStateBackend {
    fn register_state(&mut self, name: &str, kind: StateKind) -> Result<StateId> {
        let registered = self.states.iter().map(|s| (s.name.as_str(), s.kind));
        if let Some(id) = super::registered_state(SERVICE, &self.operator_uid, registered, name, kind)? {
            return Ok(id);
        }
        let id = super::state_id(SERVICE, &self.operator_uid, self.states.len())?;
        let tables = match kind {
            StateKind::Value | StateKind::List => {
                Tables::Flat((0..self.key_group_count).map(|_| FlatTable::default()).collect())
            }
            StateKind::Map => Tables::Map((0..self.key_group_count).map(|_| MapTable::default()).collect()),
        };
        self.states.push(RegisteredState { name: name.to_owned(), kind, tables });
        self.apply_pending(id)?;
        Ok(id)
    }

    fn get(&mut self, state: StateId, key: StateKey<'_>) -> Result<Option<&[u8]>> {
        let (registered, index, composite) = self.locate(state, &key, "get")?;
        match &registered.tables {
            Tables::Flat(tables) => Ok(tables[index].get(composite).map(Value::as_slice)),
            Tables::Map(_) => Err(wrong_kind("get", registered)),
        }
    }

    fn put(&mut self, state: StateId, key: StateKey<'_>, value: &[u8]) -> Result<()> {
        let (registered, index, composite) = self.locate(state, &key, "put")?;
        let Tables::Flat(tables) = &mut registered.tables else {
            return Err(wrong_kind("put", registered));
        };
        let table = &mut tables[index];
        if let Some(stored) = table.get_mut(composite) {
            stored.clear();
            stored.extend_from_slice(value);
        } else {
            table.insert(Composite::from_slice(composite), Value::from_slice(value));
        }
        Ok(())
    }

    fn update(
        &mut self,
        state: StateId,
        key: StateKey<'_>,
        merge: &mut weir_api::runtime::MergeFn<'_>,
    ) -> Result<bool> {
        let mut out = std::mem::take(&mut self.update_scratch);
        out.clear();
        let (registered, index, composite) = self.locate(state, &key, "update")?;
        let Tables::Flat(tables) = &mut registered.tables else {
            return Err(wrong_kind("update", registered));
        };
        let table = &mut tables[index];
        let existed = match table.get_mut(composite) {
            Some(stored) => {
                merge(Some(stored), &mut out)?;
                stored.clear();
                stored.extend_from_slice(&out);
                true
            }
            None => {
                merge(None, &mut out)?;
                table.insert(Composite::from_slice(composite), Value::from_slice(&out));
                false
            }
        };
        self.update_scratch = out;
        Ok(existed)
    }

    fn append(&mut self, state: StateId, key: StateKey<'_>, element: &[u8]) -> Result<()> {
        let mut encoded = std::mem::take(&mut self.update_scratch);
        encoded.clear();
        encode_list_element(&mut encoded, element);
        let (registered, index, composite) = self.locate(state, &key, "append")?;
        if registered.kind != StateKind::List {
            return Err(wrong_kind("append", registered));
        }
        let Tables::Flat(tables) = &mut registered.tables else {
            return Err(wrong_kind("append", registered));
        };
        let table = &mut tables[index];
        match table.get_mut(composite) {
            Some(stored) => stored.extend_from_slice(&encoded),
            None => {
                table.insert(Composite::from_slice(composite), Value::from_slice(&encoded));
            }
        }
        self.update_scratch = encoded;
        Ok(())
    }

    fn remove(&mut self, state: StateId, key: StateKey<'_>) -> Result<()> {
        let (registered, index, composite) = self.locate(state, &key, "remove")?;
        match &mut registered.tables {
            Tables::Flat(tables) => {
                tables[index].remove(composite);
            }
            Tables::Map(tables) => {
                tables[index].remove(composite);
            }
        }
        Ok(())
    }

    fn remove_expired(&mut self, state: StateId, kind: StateKind, expiry: Expiry) -> Result<u64> {
        let Some(registered) = usize::try_from(state).ok().and_then(|i| self.states.get_mut(i)) else {
            return Err(Error::runtime(SERVICE, format!("remove_expired: unknown state id {state}")));
        };
        let mut removed = 0;
        match &mut registered.tables {
            Tables::Flat(tables) if kind == StateKind::List => {
                let mut live = Vec::new();
                for table in tables.iter_mut() {
                    let mut failure = None;
                    table.retain(|_, value| match expiry.live_elements(value, &mut live) {
                        Ok(0) => true,
                        Ok(expired) => {
                            removed += expired;
                            *value = Value::from_slice(&live);
                            !value.is_empty()
                        }
                        Err(e) => {
                            failure.get_or_insert(e);
                            true
                        }
                    });
                    if let Some(e) = failure {
                        return Err(e);
                    }
                }
            }
            Tables::Flat(tables) => {
                for table in tables.iter_mut() {
                    let before = table.len();
                    table.retain(|_, value| !expiry.expired(value));
                    removed += (before - table.len()) as u64;
                }
            }
            Tables::Map(tables) => {
                for table in tables.iter_mut() {
                    table.retain(|_, map| {
                        let before = map.len();
                        map.retain(|_, value| !expiry.expired(value));
                        removed += (before - map.len()) as u64;
                        !map.is_empty()
                    });
                }
            }
        }
        Ok(removed)
    }

    fn snapshot(&mut self) -> Result<Vec<KeyGroupState>> {
        let mut groups: Vec<KeyGroupState> = (0..self.key_group_count)
            .map(|i| KeyGroupState { key_group: self.first_key_group + i as u16, entries: Vec::new() })
            .collect();
        for state in &self.states {
            match &state.tables {
                Tables::Flat(tables) => {
                    for (index, table) in tables.iter().enumerate() {
                        for (composite, value) in table {
                            let (key, namespace) = split_composite(composite)?;
                            let entry = StateEntry { state: &state.name, key, namespace, user_key: &[], value };
                            encode_state_entry(&mut groups[index].entries, entry)?;
                        }
                    }
                }
                Tables::Map(tables) => {
                    for (index, table) in tables.iter().enumerate() {
                        for (composite, map) in table {
                            let (key, namespace) = split_composite(composite)?;
                            for (user_key, value) in map {
                                let entry = StateEntry { state: &state.name, key, namespace, user_key, value };
                                encode_state_entry(&mut groups[index].entries, entry)?;
                            }
                        }
                    }
                }
            }
        }
        // Restored entries of states not registered yet are state too.
        for (key_group, entry) in self.pending.entries() {
            let group = usize::from(key_group.wrapping_sub(self.first_key_group));
            let Some(group) = groups.get_mut(group).filter(|g| g.key_group == key_group) else {
                return Err(Error::runtime(
                    SERVICE,
                    format!("snapshot: restored entry of key group {key_group} outside {:?}", self.key_groups),
                ));
            };
            encode_state_entry(&mut group.entries, entry)?;
        }
        groups.retain(|g| !g.entries.is_empty());
        Ok(groups)
    }

    fn restore(&mut self, groups: &[KeyGroupState]) -> Result<()> {
        self.pending.add(groups, &self.key_groups)?;
        for id in 0..self.states.len() as StateId {
            self.apply_pending(id)?;
        }
        Ok(())
    }

    fn map_get(&mut self, state: StateId, key: StateKey<'_>, user_key: &[u8]) -> Result<Option<&[u8]>> {
        let (registered, index, composite) = self.locate(state, &key, "map_get")?;
        match &registered.tables {
            Tables::Map(tables) => {
                Ok(tables[index].get(composite).and_then(|map| map.get(user_key)).map(Vec::as_slice))
            }
            Tables::Flat(_) => Err(wrong_kind("map_get", registered)),
        }
    }

    fn map_put(&mut self, state: StateId, key: StateKey<'_>, user_key: &[u8], value: &[u8]) -> Result<()> {
        let (registered, index, composite) = self.locate(state, &key, "map_put")?;
        let Tables::Map(tables) = &mut registered.tables else {
            return Err(wrong_kind("map_put", registered));
        };
        let table = &mut tables[index];
        let map = match table.get_mut(composite) {
            Some(map) => map,
            None => table.entry(composite.to_vec()).or_default(),
        };
        if let Some(stored) = map.get_mut(user_key) {
            stored.clear();
            stored.extend_from_slice(value);
        } else {
            map.insert(user_key.to_vec(), value.to_vec());
        }
        Ok(())
    }

    fn map_remove(&mut self, state: StateId, key: StateKey<'_>, user_key: &[u8]) -> Result<()> {
        let (registered, index, composite) = self.locate(state, &key, "map_remove")?;
        let Tables::Map(tables) = &mut registered.tables else {
            return Err(wrong_kind("map_remove", registered));
        };
        let table = &mut tables[index];
        if let Some(map) = table.get_mut(composite) {
            map.remove(user_key);
            if map.is_empty() {
                table.remove(composite);
            }
        }
        Ok(())
    }

    fn map_scan(
        &mut self,
        state: StateId,
        key: StateKey<'_>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let (registered, index, composite) = self.locate(state, &key, "map_scan")?;
        let Tables::Map(tables) = &registered.tables else {
            return Err(wrong_kind("map_scan", registered));
        };
        if let Some(map) = tables[index].get(composite) {
            for (user_key, value) in map {
                if !visit(user_key, value) {
                    break;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_api::runtime::list_elements;

    fn key<'a>(key_group: u16, key: &'a [u8], namespace: &'a [u8]) -> StateKey<'a> {
        StateKey { key_group, key, namespace }
    }

    #[test]
    fn meets_the_backend_contract() {
        crate::state::contract::check_backend_contract(|key_groups| {
            Box::new(HeapKeyedStateBackend::new("op", key_groups))
        });
    }

    #[test]
    fn value_put_get_remove() {
        let mut backend = HeapKeyedStateBackend::new("op", 0..=3);
        let id = backend.register_state("v", StateKind::Value).unwrap();
        assert_eq!(backend.get(id, key(1, b"k", b"")).unwrap(), None);
        backend.put(id, key(1, b"k", b""), b"one").unwrap();
        assert_eq!(backend.get(id, key(1, b"k", b"")).unwrap(), Some(&b"one"[..]));
        backend.put(id, key(1, b"k", b""), b"two").unwrap();
        assert_eq!(backend.get(id, key(1, b"k", b"")).unwrap(), Some(&b"two"[..]));
        // Other namespace, and an ambiguous split of the same bytes, are different entries.
        assert_eq!(backend.get(id, key(1, b"k", b"w")).unwrap(), None);
        backend.put(id, key(1, b"ab", b"c"), b"x").unwrap();
        assert_eq!(backend.get(id, key(1, b"a", b"bc")).unwrap(), None);
        assert_eq!(backend.entry_count(), 2);
        backend.remove(id, key(1, b"k", b"")).unwrap();
        assert_eq!(backend.get(id, key(1, b"k", b"")).unwrap(), None);
        assert_eq!(backend.entry_count(), 1);
        // Removing an absent entry is fine.
        backend.remove(id, key(1, b"k", b"")).unwrap();
    }

    #[test]
    fn list_append_decodes_with_list_elements() {
        let mut backend = HeapKeyedStateBackend::new("op", 5..=5);
        let id = backend.register_state("l", StateKind::List).unwrap();
        for element in [&b"a"[..], b"", b"ccc"] {
            backend.append(id, key(5, b"k", b"ns"), element).unwrap();
        }
        let stored = backend.get(id, key(5, b"k", b"ns")).unwrap().unwrap();
        let elements: Vec<&[u8]> = list_elements(stored).collect::<Result<_>>().unwrap();
        assert_eq!(elements, vec![&b"a"[..], b"", b"ccc"]);
        backend.remove(id, key(5, b"k", b"ns")).unwrap();
        assert_eq!(backend.get(id, key(5, b"k", b"ns")).unwrap(), None);
        assert_eq!(backend.entry_count(), 0);
    }

    #[test]
    fn map_put_get_remove_scan_order() {
        let mut backend = HeapKeyedStateBackend::new("op", 0..=0);
        let id = backend.register_state("m", StateKind::Map).unwrap();
        let k = key(0, b"k", b"");
        for user_key in [&b"b"[..], b"a", b"c", b"ab"] {
            backend.map_put(id, k, user_key, user_key).unwrap();
        }
        backend.map_put(id, k, b"a", b"A").unwrap();
        assert_eq!(backend.map_get(id, k, b"a").unwrap(), Some(&b"A"[..]));
        assert_eq!(backend.map_get(id, k, b"z").unwrap(), None);
        assert_eq!(backend.entry_count(), 4);

        let mut seen = Vec::new();
        backend
            .map_scan(id, k, &mut |uk, v| {
                seen.push((uk.to_vec(), v.to_vec()));
                true
            })
            .unwrap();
        let expected: Vec<(Vec<u8>, Vec<u8>)> = [("a", "A"), ("ab", "ab"), ("b", "b"), ("c", "c")]
            .iter()
            .map(|(a, b)| (a.as_bytes().to_vec(), b.as_bytes().to_vec()))
            .collect();
        assert_eq!(seen, expected);

        // Early stop.
        let mut count = 0;
        backend
            .map_scan(id, k, &mut |_, _| {
                count += 1;
                count < 2
            })
            .unwrap();
        assert_eq!(count, 2);

        backend.map_remove(id, k, b"a").unwrap();
        assert_eq!(backend.map_get(id, k, b"a").unwrap(), None);
        assert_eq!(backend.entry_count(), 3);
        for user_key in [&b"ab"[..], b"b", b"c"] {
            backend.map_remove(id, k, user_key).unwrap();
        }
        // The last removal removed the map itself.
        let Tables::Map(tables) = &backend.states[id as usize].tables else {
            panic!("map state stored as flat");
        };
        assert!(tables[0].is_empty());

        backend.map_put(id, k, b"x", b"1").unwrap();
        backend.map_put(id, k, b"y", b"2").unwrap();
        backend.remove(id, k).unwrap();
        assert_eq!(backend.map_get(id, k, b"x").unwrap(), None);
        assert_eq!(backend.entry_count(), 0);
        let mut visited = false;
        backend
            .map_scan(id, k, &mut |_, _| {
                visited = true;
                true
            })
            .unwrap();
        assert!(!visited);
    }

    #[test]
    fn key_groups_are_isolated() {
        let mut backend = HeapKeyedStateBackend::new("op", 10..=12);
        let value = backend.register_state("v", StateKind::Value).unwrap();
        let map = backend.register_state("m", StateKind::Map).unwrap();
        backend.put(value, key(10, b"k", b""), b"ten").unwrap();
        backend.put(value, key(12, b"k", b""), b"twelve").unwrap();
        assert_eq!(backend.get(value, key(10, b"k", b"")).unwrap(), Some(&b"ten"[..]));
        assert_eq!(backend.get(value, key(12, b"k", b"")).unwrap(), Some(&b"twelve"[..]));
        assert_eq!(backend.get(value, key(11, b"k", b"")).unwrap(), None);
        backend.map_put(map, key(11, b"k", b""), b"u", b"1").unwrap();
        assert_eq!(backend.map_get(map, key(12, b"k", b""), b"u").unwrap(), None);
        backend.remove(value, key(10, b"k", b"")).unwrap();
        assert_eq!(backend.get(value, key(12, b"k", b"")).unwrap(), Some(&b"twelve"[..]));
        assert_eq!(backend.entry_count(), 2);
    }

    #[test]
    fn out_of_range_key_group_and_unknown_state_are_errors() {
        let mut backend = HeapKeyedStateBackend::new("op", 10..=12);
        let id = backend.register_state("v", StateKind::Value).unwrap();
        for group in [0, 9, 13, u16::MAX] {
            let err = backend.put(id, key(group, b"k", b""), b"x").unwrap_err();
            assert!(matches!(err, Error::Runtime { .. }), "{err}");
            assert!(backend.get(id, key(group, b"k", b"")).is_err());
        }
        assert!(backend.get(id + 1, key(10, b"k", b"")).is_err());
        assert!(backend.map_put(7, key(10, b"k", b""), b"u", b"v").is_err());

        let (start, end) = (5, 4);
        let mut empty = HeapKeyedStateBackend::new("op", start..=end);
        let id = empty.register_state("v", StateKind::Value).unwrap();
        assert!(empty.put(id, key(5, b"k", b""), b"x").is_err());
        assert!(empty.put(id, key(4, b"k", b""), b"x").is_err());

        let mut full = HeapKeyedStateBackend::new("op", 0..=u16::MAX);
        let id = full.register_state("v", StateKind::Value).unwrap();
        full.put(id, key(u16::MAX, b"k", b""), b"x").unwrap();
        assert_eq!(full.get(id, key(u16::MAX, b"k", b"")).unwrap(), Some(&b"x"[..]));
    }

    #[test]
    fn registration_ids_and_kind_mismatch() {
        let mut backend = HeapKeyedStateBackend::new("op", 0..=1);
        let a = backend.register_state("a", StateKind::Value).unwrap();
        let b = backend.register_state("b", StateKind::Map).unwrap();
        let c = backend.register_state("c", StateKind::List).unwrap();
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(backend.register_state("b", StateKind::Map).unwrap(), b);
        let err = backend.register_state("b", StateKind::Value).unwrap_err();
        assert!(matches!(&err, Error::Runtime { service, .. } if service == SERVICE), "{err}");
        assert!(backend.register_state("a", StateKind::List).is_err());

        // Operations must fit the kind.
        let k = key(0, b"k", b"");
        assert!(backend.get(b, k).is_err());
        assert!(backend.put(b, k, b"x").is_err());
        assert!(backend.append(b, k, b"x").is_err());
        assert!(backend.append(a, k, b"x").is_err());
        assert!(backend.map_put(a, k, b"u", b"v").is_err());
        assert!(backend.map_get(c, k, b"u").is_err());
        assert!(backend.map_remove(a, k, b"u").is_err());
        assert!(backend.map_scan(c, k, &mut |_, _| true).is_err());
        assert_eq!(backend.entry_count(), 0);
    }
}
