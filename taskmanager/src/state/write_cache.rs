//! The write-back cache of the RocksDB backend's value and list state.
//!
//! A keyed aggregation on RocksDB does a read-modify-write per record, and a window that keeps
//! its elements appends one RocksDB merge operand per record, then reads them all back when it
//! fires. Every one of those operations searches RocksDB's memtable (a skip list of every version
//! written since the last flush), and most records hit a few hot keys, so most of that work is
//! repeated on the same entries. The cache keeps recently used keys in memory: reads of cached
//! keys do not touch RocksDB, and writes and appends reach RocksDB once per key, in one write
//! batch, when the cache is flushed.
//!
//! Contract (kept by [`super::rocksdb::RocksDbKeyedStateBackend`]):
//! - Value and list state are cached; map state (scanned by prefix) always goes to the database.
//! - An entry is either *loaded* (its value is the whole current value: read from the database,
//!   or written in full) or holds only list elements appended since the last flush (*pending*,
//!   written as one RocksDB merge operand); reading such a key loads it first.
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
const ENTRY_OVERHEAD_BYTES: usize = 72;

/// One cached key of one state.
#[derive(Debug)]
pub(crate) struct CachedValue {
    /// The current value when `loaded`; `None` when the key has none.
    value: Option<Vec<u8>>,
    /// Encoded list elements appended since the last flush, not loaded: what a merge must add to
    /// the database's value. Empty when `loaded`.
    pending: Vec<u8>,
    /// Whether `value` is the whole current value.
    loaded: bool,
    /// Whether the database is behind this entry.
    dirty: bool,
    /// Whether the database may hold a value for the key (so removing it must write a delete).
    in_database: bool,
}

impl CachedValue {
    /// The current value, when it is known without reading the database.
    pub(crate) fn value(&self) -> Option<Option<&[u8]>> {
        self.loaded.then_some(self.value.as_deref())
    }

    fn bytes(&self, key: &[u8]) -> usize {
        key.len() + self.value.as_ref().map_or(0, Vec::len) + self.pending.len() + ENTRY_OVERHEAD_BYTES
    }
}

/// A write that a flush applies to the database.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CacheWrite<'a> {
    /// Store `value` at `key`.
    Put { key: &'a [u8], value: &'a [u8] },
    /// Delete `key`.
    Delete { key: &'a [u8] },
    /// Append the encoded list elements `elements` to the list at `key` (a RocksDB merge).
    Append { key: &'a [u8], elements: &'a [u8] },
}

/// Cached value- and list-state entries of one backend, by state index and encoded key.
#[derive(Debug)]
pub(crate) struct WriteCache {
    states: Vec<KeyMap>,
    totals: Totals,
    budget_bytes: usize,
}

/// What the entries of a [`WriteCache`] add up to (kept up to date by every change, so that the
/// budget and dirtiness checks do not scan).
#[derive(Debug, Default)]
struct Totals {
    /// [`CachedValue::bytes`] of every entry.
    bytes: usize,
    /// Entries with `dirty` set.
    dirty: usize,
}

impl Totals {
    /// Inserts the new `entry` at `key` into `map`.
    fn insert(&mut self, map: &mut KeyMap, key: &[u8], entry: CachedValue) {
        self.bytes += entry.bytes(key);
        self.dirty += usize::from(entry.dirty);
        map.insert(key.to_vec(), entry);
    }

    /// Marks `entry` dirty.
    fn mark_dirty(&mut self, entry: &mut CachedValue) {
        if !entry.dirty {
            entry.dirty = true;
            self.dirty += 1;
        }
    }

    /// An entry that took `before` bytes takes `after` now.
    fn resized(&mut self, before: usize, after: usize) {
        self.bytes = self.bytes + after - before;
    }
}

/// The entries of state `state` (created empty if needed).
fn map_of(states: &mut Vec<KeyMap>, state: usize) -> &mut KeyMap {
    if states.len() <= state {
        states.resize_with(state + 1, KeyMap::default);
    }
    &mut states[state]
}

impl WriteCache {
    /// An empty cache that asks to be flushed once its entries take more than `budget_bytes`.
    pub(crate) fn new(budget_bytes: usize) -> Self {
        Self { states: Vec::new(), totals: Totals::default(), budget_bytes }
    }

    /// The cached entry of `key`, if any.
    pub(crate) fn get(&self, state: usize, key: &[u8]) -> Option<&CachedValue> {
        self.states.get(state)?.get(key)
    }

    /// Whether the current value of `key` is cached (no database read needed).
    pub(crate) fn is_loaded(&self, state: usize, key: &[u8]) -> bool {
        self.get(state, key).is_some_and(|e| e.loaded)
    }

    /// Loads `key` with `stored`, just read from the database: the cached value becomes `stored`
    /// followed by the elements appended since the last flush (if any, the entry stays dirty:
    /// the flush writes the whole value).
    pub(crate) fn load(&mut self, state: usize, key: &[u8], stored: Option<&[u8]>) {
        let map = map_of(&mut self.states, state);
        match map.get_mut(key) {
            Some(entry) => {
                let before = entry.bytes(key);
                let mut value = stored.map(<[u8]>::to_vec);
                if !entry.pending.is_empty() {
                    value.get_or_insert_default().extend_from_slice(&entry.pending);
                    entry.pending = Vec::new();
                }
                entry.value = value;
                entry.loaded = true;
                entry.in_database = stored.is_some();
                self.totals.resized(before, entry.bytes(key));
            }
            None => {
                let entry = CachedValue {
                    value: stored.map(<[u8]>::to_vec),
                    pending: Vec::new(),
                    loaded: true,
                    dirty: false,
                    in_database: stored.is_some(),
                };
                self.totals.insert(map, key, entry);
            }
        }
    }

    /// Sets `key` to `value` (or removes it when `None`), to be written at the next flush.
    /// Reuses the cached value's buffer when the key is cached.
    pub(crate) fn write(&mut self, state: usize, key: &[u8], value: Option<&[u8]>) {
        let map = map_of(&mut self.states, state);
        let Some(entry) = map.get_mut(key) else {
            let entry = CachedValue {
                value: value.map(<[u8]>::to_vec),
                pending: Vec::new(),
                loaded: true,
                dirty: true,
                // Not read: the database may hold a value.
                in_database: true,
            };
            self.totals.insert(map, key, entry);
            return;
        };
        let before = entry.bytes(key);
        if !entry.loaded {
            // Appended elements the database never got are overwritten; what the database holds
            // is unknown.
            entry.pending = Vec::new();
            entry.loaded = true;
        }
        if value.is_none() && !entry.in_database {
            // A removed key the database never saw: nothing to write, nothing to keep (most
            // such keys, like fired windows, are not read again).
            self.totals.dirty -= usize::from(entry.dirty);
            self.totals.bytes -= before;
            map.remove(key);
            return;
        }
        match (value, &mut entry.value) {
            (Some(new), Some(old)) => {
                old.clear();
                old.extend_from_slice(new);
            }
            (new, old) => *old = new.map(<[u8]>::to_vec),
        }
        self.totals.mark_dirty(entry);
        self.totals.resized(before, entry.bytes(key));
    }

    /// Appends the encoded list elements `elements` to the list at `key`, to be written at the
    /// next flush; does not read the database.
    pub(crate) fn append(&mut self, state: usize, key: &[u8], elements: &[u8]) {
        let map = map_of(&mut self.states, state);
        let Some(entry) = map.get_mut(key) else {
            let entry =
                CachedValue { value: None, pending: elements.to_vec(), loaded: false, dirty: true, in_database: true };
            self.totals.insert(map, key, entry);
            return;
        };
        if entry.loaded {
            entry.value.get_or_insert_default().extend_from_slice(elements);
        } else {
            entry.pending.extend_from_slice(elements);
        }
        self.totals.bytes += elements.len();
        self.totals.mark_dirty(entry);
    }

    /// Read-modify-write of the loaded `key`: `merge` gets the current value and writes the new
    /// one into `out` (cleared first), which then becomes the cached value (to be written at the
    /// next flush; `out` receives the old value's buffer, so a steady stream of updates allocates
    /// nothing). Returns whether a value existed before, or `None` (changing nothing) when `key`
    /// is not loaded.
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
        let entry = self.states.get_mut(state)?.get_mut(key).filter(|e| e.loaded)?;
        let existed = entry.value.is_some();
        out.clear();
        if let Err(e) = merge(entry.value.as_deref(), out) {
            return Some(Err(e));
        }
        let before = entry.bytes(key);
        match &mut entry.value {
            Some(old) => std::mem::swap(old, out),
            None => entry.value = Some(std::mem::take(out)),
        }
        out.clear();
        self.totals.mark_dirty(entry);
        self.totals.resized(before, entry.bytes(key));
        Some(Ok(existed))
    }

    /// Whether the entries take more than the budget: time to flush and empty the cache.
    pub(crate) fn over_budget(&self) -> bool {
        self.totals.bytes > self.budget_bytes
    }

    /// Whether any entry must still be written.
    pub(crate) fn is_dirty(&self) -> bool {
        self.totals.dirty > 0
    }

    /// Calls `apply` with state index and write for every dirty entry (once `apply` succeeded for
    /// all of them, call [`Self::flushed`]).
    pub(crate) fn dirty_writes(&self, mut apply: impl FnMut(usize, CacheWrite<'_>)) {
        for (state, map) in self.states.iter().enumerate() {
            for (key, entry) in map.iter().filter(|(_, e)| e.dirty) {
                match (&entry.value, entry.loaded) {
                    (_, false) => apply(state, CacheWrite::Append { key, elements: &entry.pending }),
                    (Some(value), true) => apply(state, CacheWrite::Put { key, value }),
                    (None, true) => apply(state, CacheWrite::Delete { key }),
                }
            }
        }
    }

    /// The dirty writes are in the database: keeps the loaded values (clean), drops everything
    /// else, and empties the cache when it is over its budget (or `empty`).
    pub(crate) fn flushed(&mut self, empty: bool) {
        if empty || self.over_budget() {
            for map in &mut self.states {
                map.clear();
            }
            self.totals.bytes = 0;
        } else {
            for map in &mut self.states {
                // Absent keys need no entry once written, appended elements are in the database.
                map.retain(|_, entry| {
                    entry.dirty = false;
                    entry.in_database = entry.value.is_some();
                    entry.loaded && entry.in_database
                });
            }
            self.totals.bytes = self.states.iter().flatten().map(|(key, entry)| entry.bytes(key)).sum();
        }
        self.totals.dirty = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes(cache: &WriteCache) -> Vec<(usize, String)> {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let mut out = Vec::new();
        cache.dirty_writes(|state, write| {
            out.push((
                state,
                match write {
                    CacheWrite::Put { key, value } => format!("put {}={}", text(key), text(value)),
                    CacheWrite::Delete { key } => format!("delete {}", text(key)),
                    CacheWrite::Append { key, elements } => format!("append {}+{}", text(key), text(elements)),
                },
            ));
        });
        out.sort();
        out
    }

    fn value<'a>(cache: &'a WriteCache, key: &[u8]) -> Option<Option<&'a [u8]>> {
        cache.get(0, key).and_then(CachedValue::value)
    }

    #[test]
    fn writes_reach_the_database_once_per_key_and_flush() {
        let mut cache = WriteCache::new(1 << 20);
        cache.load(0, b"a", Some(b"1"));
        assert!(!cache.is_dirty(), "a loaded value is clean");
        cache.write(0, b"a", Some(b"2"));
        cache.write(0, b"a", Some(b"3"));
        cache.write(1, b"b", Some(b"x"));
        assert_eq!(writes(&cache), vec![(0, "put a=3".into()), (1, "put b=x".into())]);
        cache.flushed(false);
        assert!(!cache.is_dirty());
        assert!(writes(&cache).is_empty());
        assert_eq!(value(&cache, b"a"), Some(Some(&b"3"[..])), "still cached");
    }

    #[test]
    fn removing_a_key_the_database_never_saw_writes_nothing() {
        let mut cache = WriteCache::new(1 << 20);
        cache.load(0, b"new", None);
        cache.write(0, b"new", Some(b"1"));
        cache.write(0, b"new", None);
        assert!(!cache.is_dirty());
        assert!(writes(&cache).is_empty());
        assert!(cache.get(0, b"new").is_none(), "the removed entry is dropped");
        // A key that is in the database gets a delete.
        cache.load(0, b"old", Some(b"1"));
        cache.write(0, b"old", None);
        assert_eq!(writes(&cache), vec![(0, "delete old".into())]);
        // A key written without a load may be in the database.
        cache.write(0, b"blind", None);
        assert_eq!(writes(&cache), vec![(0, "delete blind".into()), (0, "delete old".into())]);
        cache.flushed(false);
        assert!(cache.get(0, b"old").is_none(), "absent keys are not kept after a flush");
    }

    #[test]
    fn appends_without_a_load_become_one_merge_and_a_load_puts_them_behind_the_stored_list() {
        let mut cache = WriteCache::new(1 << 20);
        cache.append(0, b"l", b"a");
        cache.append(0, b"l", b"b");
        assert!(!cache.is_loaded(0, b"l"));
        assert_eq!(value(&cache, b"l"), None, "unknown without a read");
        assert_eq!(writes(&cache), vec![(0, "append l+ab".into())]);
        cache.flushed(false);
        assert!(cache.get(0, b"l").is_none(), "appended elements are in the database");

        cache.append(0, b"l", b"c");
        cache.load(0, b"l", Some(b"ab"));
        assert_eq!(value(&cache, b"l"), Some(Some(&b"abc"[..])));
        cache.append(0, b"l", b"d");
        assert_eq!(writes(&cache), vec![(0, "put l=abcd".into())]);
        // A list that only lived in the cache (a window's elements) leaves nothing behind.
        cache.append(0, b"w", b"x");
        cache.load(0, b"w", None);
        cache.write(0, b"w", None);
        assert_eq!(writes(&cache), vec![(0, "put l=abcd".into())]);
    }

    #[test]
    fn update_replaces_the_loaded_value_and_keeps_it_on_error() {
        let mut cache = WriteCache::new(1 << 20);
        let mut out = Vec::new();
        let append = |current: Option<&[u8]>, out: &mut Vec<u8>| -> Result<(), ()> {
            out.extend_from_slice(current.unwrap_or_default());
            out.push(b'+');
            Ok(())
        };
        assert!(cache.update(0, b"k", &mut out, append).is_none(), "not cached: nothing happens");
        cache.append(0, b"k", b"x");
        assert!(cache.update(0, b"k", &mut out, append).is_none(), "not loaded: nothing happens");
        cache.write(0, b"k", None);
        cache.load(0, b"k", None);
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
        cache.append(0, b"k1", b"z");
        assert!(cache.over_budget());
        assert_eq!(writes(&cache).len(), 5);
        cache.flushed(false);
        assert!(!cache.over_budget());
        assert!(cache.get(0, b"k1").is_none());
    }
}
