//! The write-back cache of the RocksDB backend's value state.
//!
//! A keyed aggregation on RocksDB does a read-modify-write per record. Both halves search
//! RocksDB's memtable (a skip list of every version written since the last flush), and most
//! records hit a few hot keys, so most of that work is repeated on the same entries. The cache
//! keeps the values of recently used keys in memory: reads of cached keys do not touch RocksDB,
//! and writes update the cached value and reach RocksDB once, in one write batch, when the cache
//! is flushed.
//!
//! Contract (kept by [`super::rocksdb::RocksDbKeyedStateBackend`]):
//! - Only value state is cached. List state is appended with RocksDB merges and map state is
//!   scanned by prefix: both always go to the database.
//! - The cache is flushed before anything reads the database behind the backend's back: the
//!   backend's `snapshot` (which the task calls before the native checkpoint of the database),
//!   and dropping the backend. When its entries exceed their byte budget it is flushed and
//!   emptied.
//! - An entry knows whether the database may hold a value for its key, so removing a key that
//!   was created and removed between two flushes (a window that opened and fired) writes nothing
//!   and drops the entry.

use std::collections::HashMap;

/// Keys are arbitrary bytes with long shared prefixes (key group, length, key, namespace): a
/// hasher that mixes every byte well keeps probe sequences short.
type KeyMap = HashMap<Vec<u8>, CachedValue, foldhash::fast::RandomState>;

/// Bytes counted per entry besides its key and value (hash map slot, vectors, flags).
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// One cached key of one state.
#[derive(Debug)]
pub(crate) struct CachedValue {
    /// The current value; `None` when the key has none.
    pub(crate) value: Option<Vec<u8>>,
    /// Whether `value` differs from what the database holds.
    pub(crate) dirty: bool,
    /// Whether the database may hold a value for the key (so removing it must write a delete).
    pub(crate) in_database: bool,
}

impl CachedValue {
    fn bytes(key: &[u8], value: Option<&Vec<u8>>) -> usize {
        key.len() + value.map_or(0, Vec::len) + ENTRY_OVERHEAD_BYTES
    }
}

/// A write that a flush applies to the database.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CacheWrite<'a> {
    /// Store `value` at `key`.
    Put { key: &'a [u8], value: &'a [u8] },
    /// Delete `key`.
    Delete { key: &'a [u8] },
}

/// Cached value-state entries of one backend, by state index and encoded key.
#[derive(Debug)]
pub(crate) struct WriteCache {
    states: Vec<KeyMap>,
    bytes: usize,
    budget_bytes: usize,
    dirty: usize,
}

impl WriteCache {
    /// An empty cache that asks to be flushed once its entries take more than `budget_bytes`.
    pub(crate) fn new(budget_bytes: usize) -> Self {
        Self { states: Vec::new(), bytes: 0, budget_bytes, dirty: 0 }
    }

    fn ensure_state(&mut self, state: usize) {
        if self.states.len() <= state {
            self.states.resize_with(state + 1, KeyMap::default);
        }
    }

    /// The cached entry of `key`, if any.
    pub(crate) fn get(&self, state: usize, key: &[u8]) -> Option<&CachedValue> {
        self.states.get(state)?.get(key)
    }

    /// Caches `value`, just read from the database at `key` (clean).
    pub(crate) fn insert_loaded(&mut self, state: usize, key: &[u8], value: Option<&[u8]>) -> &CachedValue {
        let value = value.map(<[u8]>::to_vec);
        let in_database = value.is_some();
        self.bytes += CachedValue::bytes(key, value.as_ref());
        let entry = CachedValue { value, dirty: false, in_database };
        self.ensure_state(state);
        self.states[state].entry(key.to_vec()).insert_entry(entry).into_mut()
    }

    /// Sets `key` to `value` (or removes it when `None`), to be written at the next flush.
    /// Reuses the cached value's buffer when the key is cached.
    pub(crate) fn write(&mut self, state: usize, key: &[u8], value: Option<&[u8]>) {
        self.ensure_state(state);
        let map = &mut self.states[state];
        match map.get_mut(key) {
            Some(entry) => {
                let before = CachedValue::bytes(key, entry.value.as_ref());
                match (value, &mut entry.value) {
                    (Some(new), Some(old)) => {
                        old.clear();
                        old.extend_from_slice(new);
                    }
                    (new, old) => *old = new.map(<[u8]>::to_vec),
                }
                if entry.value.is_none() && !entry.in_database {
                    // A removed key the database never saw: nothing to write, nothing to keep
                    // (most such keys, like fired windows, are not read again).
                    if entry.dirty {
                        self.dirty -= 1;
                    }
                    map.remove(key);
                    self.bytes -= before;
                    return;
                }
                let after = CachedValue::bytes(key, entry.value.as_ref());
                if !entry.dirty {
                    entry.dirty = true;
                    self.dirty += 1;
                }
                self.bytes = self.bytes + after - before;
            }
            None => {
                let value = value.map(<[u8]>::to_vec);
                self.bytes += CachedValue::bytes(key, value.as_ref());
                self.dirty += 1;
                map.insert(key.to_vec(), CachedValue { value, dirty: true, in_database: true });
            }
        }
    }

    /// Read-modify-write of the cached `key`: `merge` gets the current value and writes the new
    /// one into `out` (cleared first), which then becomes the cached value (to be written at the
    /// next flush; `out` receives the old value's buffer, so a steady stream of updates allocates
    /// nothing). Returns whether a value existed before, or `None` (changing nothing) when `key`
    /// is not cached.
    ///
    /// # Errors
    /// Whatever `merge` returns; the entry is then unchanged.
    pub(crate) fn update<E>(
        &mut self,
        state: usize,
        key: &[u8],
        out: &mut Vec<u8>,
        merge: impl FnOnce(Option<&[u8]>, &mut Vec<u8>) -> Result<(), E>,
    ) -> Option<Result<bool, E>> {
        let entry = self.states.get_mut(state)?.get_mut(key)?;
        let existed = entry.value.is_some();
        out.clear();
        if let Err(e) = merge(entry.value.as_deref(), out) {
            return Some(Err(e));
        }
        let before = CachedValue::bytes(key, entry.value.as_ref());
        match &mut entry.value {
            Some(old) => std::mem::swap(old, out),
            None => entry.value = Some(std::mem::take(out)),
        }
        out.clear();
        if !entry.dirty {
            entry.dirty = true;
            self.dirty += 1;
        }
        self.bytes = self.bytes + CachedValue::bytes(key, entry.value.as_ref()) - before;
        Some(Ok(existed))
    }

    /// Whether the entries take more than the budget: time to flush and empty the cache.
    pub(crate) fn over_budget(&self) -> bool {
        self.bytes > self.budget_bytes
    }

    /// Whether any entry must still be written.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty > 0
    }

    /// Calls `apply` with state index and write for every dirty entry (once `apply` succeeded for
    /// all of them, call [`Self::flushed`]).
    pub(crate) fn dirty_writes(&self, mut apply: impl FnMut(usize, CacheWrite<'_>)) {
        for (state, map) in self.states.iter().enumerate() {
            for (key, entry) in map.iter().filter(|(_, e)| e.dirty) {
                match &entry.value {
                    Some(value) => apply(state, CacheWrite::Put { key, value }),
                    None => apply(state, CacheWrite::Delete { key }),
                }
            }
        }
    }

    /// The dirty writes are in the database: marks every entry clean, and empties the cache when
    /// it is over its budget (or `empty`).
    pub(crate) fn flushed(&mut self, empty: bool) {
        if empty || self.over_budget() {
            for map in &mut self.states {
                map.clear();
            }
            self.bytes = 0;
        } else {
            for map in &mut self.states {
                map.retain(|_, entry| {
                    entry.dirty = false;
                    entry.in_database = entry.value.is_some();
                    // Absent keys need no entry once written: keep only the values.
                    entry.in_database
                });
            }
            self.bytes = self.states.iter().flatten().map(|(k, e)| CachedValue::bytes(k, e.value.as_ref())).sum();
        }
        self.dirty = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(cache: &WriteCache) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        cache.dirty_writes(|state, write| {
            out.push((
                state,
                match write {
                    CacheWrite::Put { key, value } => {
                        format!("put {}={}", String::from_utf8_lossy(key), String::from_utf8_lossy(value))
                    }
                    CacheWrite::Delete { key } => format!("delete {}", String::from_utf8_lossy(key)),
                },
            ));
        });
        out.sort();
        out
    }

    #[test]
    fn writes_reach_the_database_once_per_key_and_flush() {
        let mut cache = WriteCache::new(1 << 20);
        cache.insert_loaded(0, b"a", Some(b"1"));
        assert!(!cache.is_dirty(), "a loaded value is clean");
        cache.write(0, b"a", Some(b"2"));
        cache.write(0, b"a", Some(b"3"));
        cache.write(1, b"b", Some(b"x"));
        assert_eq!(writes(&cache), vec![(0, "put a=3".into()), (1, "put b=x".into())]);
        cache.flushed(false);
        assert!(!cache.is_dirty());
        assert!(writes(&cache).is_empty());
        assert_eq!(cache.get(0, b"a").and_then(|e| e.value.as_deref()), Some(&b"3"[..]), "still cached");
    }

    #[test]
    fn removing_a_key_the_database_never_saw_writes_nothing() {
        let mut cache = WriteCache::new(1 << 20);
        cache.insert_loaded(0, b"new", None);
        cache.write(0, b"new", Some(b"1"));
        cache.write(0, b"new", None);
        assert!(!cache.is_dirty());
        assert!(writes(&cache).is_empty());
        assert!(cache.get(0, b"new").is_none(), "the removed entry is dropped");
        // A key that is in the database gets a delete.
        cache.insert_loaded(0, b"old", Some(b"1"));
        cache.write(0, b"old", None);
        assert_eq!(writes(&cache), vec![(0, "delete old".into())]);
        // A key written without a load may be in the database.
        cache.write(0, b"blind", None);
        assert_eq!(writes(&cache), vec![(0, "delete blind".into()), (0, "delete old".into())]);
        cache.flushed(false);
        assert!(cache.get(0, b"old").is_none(), "absent keys are not kept after a flush");
    }

    #[test]
    fn update_replaces_the_cached_value_and_keeps_it_on_error() {
        let mut cache = WriteCache::new(1 << 20);
        let mut out = Vec::new();
        let append = |current: Option<&[u8]>, out: &mut Vec<u8>| -> Result<(), ()> {
            out.extend_from_slice(current.unwrap_or_default());
            out.push(b'+');
            Ok(())
        };
        assert!(cache.update(0, b"k", &mut out, append).is_none(), "not cached: nothing happens");
        cache.insert_loaded(0, b"k", None);
        assert_eq!(cache.update(0, b"k", &mut out, append), Some(Ok(false)));
        assert_eq!(cache.update(0, b"k", &mut out, append), Some(Ok(true)));
        assert!(out.is_empty());
        assert_eq!(cache.update(0, b"k", &mut out, |_, _| Err("bad")), Some(Err("bad")));
        assert_eq!(writes(&cache), vec![(0, "put k=++".into())]);
    }

    #[test]
    fn a_cache_over_its_budget_is_emptied_by_the_flush() {
        let mut cache = WriteCache::new(4 * (ENTRY_OVERHEAD_BYTES + 3));
        for i in 0..4u8 {
            cache.write(0, &[b'k', i], Some(&[i]));
        }
        assert!(!cache.over_budget());
        cache.write(0, b"k9", Some(b"9"));
        assert!(cache.over_budget());
        assert_eq!(writes(&cache).len(), 5);
        cache.flushed(false);
        assert!(!cache.over_budget());
        assert!(cache.get(0, b"k9").is_none());
    }
}
