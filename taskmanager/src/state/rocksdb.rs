//! The RocksDB keyed state backend: state on local disk, one RocksDB database per subtask.
//!
//! A [`RocksDbInstance`] is one database in a local directory, opened by a subtask and shared by
//! the keyed operators of its chain; each operator gets a [`RocksDbKeyedStateBackend`] from it.
//! Every registered state is a column family named `<operator uid>/<state name>`, so operators
//! (and states) never see each other's entries.
//!
//! Key layout within a column family (integers big-endian, so that keys sort by key group first):
//!
//! - value and list state: `key group: u16`, `key length: u32`, key, namespace;
//! - map state: `key group: u16`, `key length: u32`, key, `namespace length: u32`, namespace,
//!   user key.
//!
//! - The leading key group makes every key-group range a contiguous key range
//!   ([`key_group_range_bounds`]): that is what lets state be split by key group on rescaling.
//! - The length prefixes make the encoding unambiguous. Map state also prefixes the namespace
//!   with its length: the entries of one map are the keys that start with everything before the
//!   user key, and without the length the map at namespace `a` (user key `bc`) and the map at
//!   namespace `ab` (user key `c`) would share keys. With it, every part of a key can be decoded
//!   again (for canonical snapshots).
//! - List values are concatenations of [`encode_list_element`] records; appending is a RocksDB
//!   merge with the `weir-list-append` merge operator, which concatenates operands.
//!
//! Besides RocksDB's own checkpoints ([`RocksDbInstance::checkpoint`], incremental by SST file),
//! the backend takes and restores canonical snapshots ([`KeyedStateBackend::snapshot`]) like the
//! heap backend, so state moves between backends.
//!
//! Value and list state go through a write-back cache ([`super::write_cache`]) in each backend.
//!
//! Values are compressed with LZ4. Writes skip the write-ahead log (like Flink's RocksDB
//! backend): the local database is a working copy, durability comes from checkpoints
//! ([`RocksDbInstance::checkpoint`] flushes first); a clean close flushes memtables too.

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{
    BlockBasedOptions, BoundColumnFamily, Cache, ColumnFamilyDescriptor, DBCompressionType, DBWithThreadMode,
    FlushOptions, MergeOperands, MultiThreaded, Options, ReadOptions, WriteBatch, WriteBufferManager, WriteOptions,
};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use weir_api::runtime::{
    Expiry, KeyGroupState, KeyedStateBackend, MergeFn, StateEntry, StateId, StateKey, StateKind, encode_list_element,
    encode_state_entry,
};
use weir_api::{Error, Result};

use super::write_cache::{CacheWrite, CachedValue, WriteCache};

/// Service name used in this backend's errors.
const SERVICE: &str = "rocksdb state backend";

/// Name of the merge operator that appends to list state. Stored in the database's OPTIONS file:
/// do not rename it, or existing databases no longer open.
const LIST_APPEND_MERGE_OPERATOR: &str = "weir-list-append";

/// Budget of each backend's write-back cache of value and list state ([`super::write_cache`]):
/// keys, values and per-entry overhead. Above it the cache is written to the database and emptied.
pub const WRITE_CACHE_BYTES: usize = 8 << 20;

/// The column family RocksDB always has; Weir keeps no state in it.
const DEFAULT_COLUMN_FAMILY: &str = "default";

type Db = DBWithThreadMode<MultiThreaded>;

/// One file of a RocksDB checkpoint directory (see [`RocksDbInstance::checkpoint`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SstFile {
    /// File name within the checkpoint directory.
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Whether this is an SST file (`*.sst`): immutable, and named uniquely within one database's
    /// lineage, so an incremental checkpoint uploads only the SST files the previous one did not
    /// have (prefixed by something unique to the database, since another subtask's database uses
    /// the same names). The other files (`CURRENT`, `MANIFEST-*`, `OPTIONS-*`, write-ahead logs)
    /// change from one checkpoint to the next and are uploaded every time.
    pub is_sst: bool,
}

/// The key range `[start, end)` of the key groups `range` in every column family of a
/// [`RocksDbInstance`]: keys start with their key group as a big-endian `u16`, so the entries of
/// a key-group range are exactly the keys `>= start` and `< end`.
///
/// For rescaling: after restoring a checkpoint of a database that held more key groups than the
/// new subtask owns, delete the key groups outside the owned range (`delete_range` over the
/// bounds of the ranges before and after it), or copy a range into another database by
/// iterating between the bounds.
///
/// `end` is empty when `range` ends at key group `u16::MAX`: no byte string is greater than
/// every key of that group, so the range is unbounded above. An empty `range` (`start > end`)
/// yields `start == end` (an empty key range).
pub fn key_group_range_bounds(range: RangeInclusive<u16>) -> (Vec<u8>, Vec<u8>) {
    let (first, last) = (*range.start(), *range.end());
    let start = first.to_be_bytes().to_vec();
    if first > last {
        return (start.clone(), start);
    }
    let end = match last.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => Vec::new(),
    };
    (start, end)
}

/// The merge operator of list state: concatenates the existing value and the operands in order
/// (each operand is one or more [`encode_list_element`] records). Used for full and partial merges
/// (concatenation is associative).
fn concatenate(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let len = existing.map_or(0, <[u8]>::len) + operands.iter().map(<[u8]>::len).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    if let Some(existing) = existing {
        out.extend_from_slice(existing);
    }
    for operand in operands {
        out.extend_from_slice(operand);
    }
    Some(out)
}

/// Memory of a database opened without a taskmanager's [`RocksDbMemory`] (tests, tools).
const STANDALONE_MEMORY_BYTES: usize = 64 << 20;

/// The memory that the RocksDB databases of one taskmanager share (Flink's managed memory for
/// RocksDB): one LRU block cache of `bytes` (decompressed SST blocks, index and filter blocks),
/// and a write buffer manager that charges the memtables of every database to that cache and
/// makes the database being written switch to a new memtable (and flush the old one) once all
/// memtables take more than half of it. Blocks and memtables together stay near `bytes` however
/// many tasks, states and column families there are; it is a soft limit (writes never stall:
/// stalling one database's writer until another flushes can deadlock a task thread that writes
/// to several): while flushes catch up, memtables may take more than their half (measured: four
/// databases written flat out peaked at 54 MB of memtables with a 64 MiB budget, 97 MB without
/// one). Not included: each backend's write-back cache ([`WRITE_CACHE_BYTES`]) and RocksDB's
/// per-database overhead.
#[derive(Clone)]
pub struct RocksDbMemory {
    cache: Cache,
    write_buffers: WriteBufferManager,
    bytes: usize,
}

impl std::fmt::Debug for RocksDbMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbMemory").field("bytes", &self.bytes).finish_non_exhaustive()
    }
}

impl RocksDbMemory {
    /// A budget of `bytes` (block cache and memtables together).
    pub fn new(bytes: usize) -> Self {
        let cache = Cache::new_lru_cache(bytes);
        // Half of it for memtables, as Flink's default `write-buffer-ratio` of 0.5.
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(bytes / 2, false, cache.clone());
        Self { cache, write_buffers, bytes }
    }

    /// The budget, bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Memory the memtables of every database take now, bytes.
    pub fn memtable_usage(&self) -> usize {
        self.write_buffers.get_usage()
    }
}

/// Size of one memtable of a column family (RocksDB's default is 64 MiB). Every write and every
/// read of a key that is not cached searches the memtable, a skip list: smaller ones stay in the
/// CPU caches better (measured on Nexmark q5 and wcount, BENCHMARKS.md), and are flushed to SST
/// files (which incremental checkpoints upload) more often.
const WRITE_BUFFER_BYTES: usize = 16 << 20;

/// Options of every column family (the merge operator and compression are per column family).
///
/// Keyed state is read by point lookups, many of keys that do not exist yet (a new key, a new
/// window): whole-key Bloom filters in the memtable and in the SST files answer those without a
/// search; the taskmanager's block cache keeps the blocks that are read.
fn column_family_options(memory: &RocksDbMemory) -> Options {
    let mut options = Options::default();
    options.set_compression_type(DBCompressionType::Lz4);
    options.set_merge_operator_associative(LIST_APPEND_MERGE_OPERATOR, concatenate);
    options.set_write_buffer_size(WRITE_BUFFER_BYTES);
    options.set_memtable_prefix_bloom_ratio(0.1);
    options.set_memtable_whole_key_filtering(true);
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_whole_key_filtering(true);
    table.set_block_cache(&memory.cache);
    options.set_block_based_table_factory(&table);
    options
}

/// The smallest byte string greater than every string starting with `prefix`, `None` when there
/// is none (the prefix is empty or all `0xff`).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// One RocksDB database in a local directory, holding the keyed state of one subtask's operators.
///
/// Shared (as `Arc`) by the [`RocksDbKeyedStateBackend`]s of the subtask's keyed operators; the
/// database closes when the last of them is dropped (which flushes memtables to disk).
pub struct RocksDbInstance {
    db: Db,
    path: PathBuf,
    write_options: WriteOptions,
    /// Shared by the column families (new ones too).
    memory: RocksDbMemory,
    /// Names of the database's column families. Also serializes column family creation.
    column_families: Mutex<BTreeSet<String>>,
    /// While set, the snapshots of backends with native snapshots are canonical and complete
    /// (a savepoint's), not only their pending restored entries.
    canonical_snapshots: AtomicBool,
}

impl std::fmt::Debug for RocksDbInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbInstance").field("path", &self.path).finish_non_exhaustive()
    }
}

impl RocksDbInstance {
    /// Opens (creating it if needed) the database in directory `dir`, with all its existing
    /// column families.
    ///
    /// # Errors
    /// [`Error::Runtime`] when the directory cannot be created or RocksDB fails to open the
    /// database (for example while another instance has it open).
    pub fn open(dir: &Path) -> Result<Arc<Self>> {
        Self::open_with(dir, &RocksDbMemory::new(STANDALONE_MEMORY_BYTES))
    }

    /// [`Self::open`] within a taskmanager's shared memory budget.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn open_with(dir: &Path, memory: &RocksDbMemory) -> Result<Arc<Self>> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::runtime(SERVICE, format!("cannot create directory {}: {e}", dir.display())))?;
        let mut options = column_family_options(memory);
        options.set_write_buffer_manager(&memory.write_buffers);
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_keep_log_file_num(4);
        let mut names = BTreeSet::from([DEFAULT_COLUMN_FAMILY.to_owned()]);
        if dir.join("CURRENT").exists() {
            let existing = Db::list_cf(&options, dir).map_err(|e| {
                Error::runtime(SERVICE, format!("cannot list the column families of {}: {e}", dir.display()))
            })?;
            names.extend(existing);
        }
        let descriptors: Vec<_> =
            names.iter().map(|name| ColumnFamilyDescriptor::new(name, column_family_options(memory))).collect();
        let db = Db::open_cf_descriptors(&options, dir, descriptors)
            .map_err(|e| Error::runtime(SERVICE, format!("cannot open {}: {e}", dir.display())))?;
        let mut write_options = WriteOptions::default();
        write_options.disable_wal(true);
        Ok(Arc::new(Self {
            db,
            path: dir.to_owned(),
            write_options,
            memory: memory.clone(),
            column_families: Mutex::new(names),
            canonical_snapshots: AtomicBool::new(false),
        }))
    }

    /// The database's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A backend for the state of operator `operator_uid` in key groups `key_groups`, in this
    /// database. State registered in it lives in column families named `<operator_uid>/<state>`;
    /// a backend of the same operator on a reopened (or restored) database sees that state again.
    ///
    /// An empty range (`start > end`) yields a backend that rejects every key group.
    ///
    /// # Errors
    /// [`Error::Runtime`] when `operator_uid` is empty.
    pub fn backend(
        self: &Arc<Self>,
        operator_uid: &str,
        key_groups: RangeInclusive<u16>,
    ) -> Result<RocksDbKeyedStateBackend> {
        if operator_uid.is_empty() {
            return Err(Error::runtime(SERVICE, format!("empty operator uid for state in {}", self.path.display())));
        }
        Ok(RocksDbKeyedStateBackend {
            instance: Arc::clone(self),
            operator_uid: operator_uid.to_owned(),
            key_groups,
            states: Vec::new(),
            key_buf: Vec::new(),
            value_buf: Vec::new(),
            update_buf: Vec::new(),
            read_options: ReadOptions::default(),
            pending: super::PendingRestore::default(),
            native_snapshots: false,
            cache: WriteCache::new(WRITE_CACHE_BYTES),
        })
    }

    /// Writes a RocksDB checkpoint of the database into directory `target` (which must not exist;
    /// its parent must) after flushing every column family, and returns the checkpoint's files
    /// sorted by name.
    ///
    /// SST files are hard links into the live database when `target` is on the same file system
    /// (copies otherwise), so a checkpoint costs little local space until compaction replaces the
    /// files. The directory is a complete database: [`RocksDbInstance::open`] on it (or on a copy
    /// of its files) restores the state as of the checkpoint.
    ///
    /// # Errors
    /// [`Error::Runtime`] when the flush or the checkpoint fails, or the directory cannot be read.
    pub fn checkpoint(&self, target: &Path) -> Result<Vec<SstFile>> {
        self.flush()?;
        let checkpoint = Checkpoint::new(&self.db).map_err(|e| {
            Error::runtime(SERVICE, format!("cannot start a checkpoint of {}: {e}", self.path.display()))
        })?;
        checkpoint.create_checkpoint(target).map_err(|e| {
            Error::runtime(
                SERVICE,
                format!("cannot write a checkpoint of {} to {}: {e}", self.path.display(), target.display()),
            )
        })?;
        let read_error =
            |e: std::io::Error| Error::runtime(SERVICE, format!("cannot read checkpoint {}: {e}", target.display()));
        let mut files = Vec::new();
        for entry in std::fs::read_dir(target).map_err(read_error)? {
            let entry = entry.map_err(read_error)?;
            let metadata = entry.metadata().map_err(read_error)?;
            if !metadata.is_file() {
                continue;
            }
            let name = entry.file_name().into_string().map_err(|name| {
                Error::runtime(SERVICE, format!("checkpoint {} holds a file named {name:?}", target.display()))
            })?;
            let is_sst = name.ends_with(".sst");
            files.push(SstFile { name, size_bytes: metadata.len(), is_sst });
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    /// Flushes the memtables of every column family to SST files and waits for it.
    ///
    /// # Errors
    /// [`Error::Runtime`] when RocksDB fails.
    pub fn flush(&self) -> Result<()> {
        let names: Vec<String> = self.lock_column_families().iter().cloned().collect();
        let mut handles = Vec::with_capacity(names.len());
        for name in &names {
            handles.push(self.column_family(name, "flush")?);
        }
        let handle_refs: Vec<_> = handles.iter().collect();
        let mut flush_options = FlushOptions::default();
        flush_options.set_wait(true);
        self.db
            .flush_cfs_opt(&handle_refs, &flush_options)
            .map_err(|e| Error::runtime(SERVICE, format!("cannot flush {}: {e}", self.path.display())))
    }

    fn lock_column_families(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // The set stays consistent even if a holder panicked: insertions happen after creation.
        self.column_families.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The handle of an existing column family.
    fn column_family(&self, name: &str, operation: &str) -> Result<Arc<BoundColumnFamily<'_>>> {
        self.db.cf_handle(name).ok_or_else(|| {
            Error::runtime(SERVICE, format!("{operation}: no column family {}/{name}", self.path.display()))
        })
    }

    /// Makes the snapshots of every backend of this database canonical and complete (for a
    /// savepoint: every state of the backend's operator in its key groups, registered since the
    /// last restore or not), or native again.
    pub fn set_canonical_snapshots(&self, canonical: bool) {
        self.canonical_snapshots.store(canonical, Ordering::Relaxed);
    }

    /// Records in the default column family that column family `cf` holds `kind` state, so that
    /// a canonical snapshot can decode its keys before the state is registered again (after a
    /// native restore, user state registers lazily, on first use).
    ///
    /// The record is flushed at once: a memtable left in the default column family would be the
    /// oldest of the database, which the write buffer manager flushes first when memory runs
    /// short, instead of the state's own large one (measured: memtables then overshot the
    /// budget).
    fn record_kind(&self, cf: &str, kind: StateKind) -> Result<()> {
        self.db
            .put_opt(kind_key(cf), [kind_byte(kind)], &self.write_options)
            .map_err(|e| self.error("record the state kind", cf, e))?;
        let mut flush_options = FlushOptions::default();
        flush_options.set_wait(true);
        self.db.flush_opt(&flush_options).map_err(|e| self.error("flush the state kind", cf, e))
    }

    /// The kind recorded for column family `cf` by [`Self::record_kind`].
    fn recorded_kind(&self, cf: &str) -> Result<Option<StateKind>> {
        let value = self.db.get_pinned(kind_key(cf)).map_err(|e| self.error("read the state kind", cf, e))?;
        Ok(value.and_then(|v| v.first().copied()).and_then(kind_of_byte))
    }

    /// The column families whose names start with `prefix`.
    fn column_families_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.lock_column_families().iter().filter(|name| name.starts_with(prefix)).cloned().collect()
    }

    /// Creates column family `name` unless it exists.
    fn ensure_column_family(&self, name: &str) -> Result<()> {
        let mut names = self.lock_column_families();
        if names.contains(name) {
            return Ok(());
        }
        self.db.create_cf(name, &column_family_options(&self.memory)).map_err(|e| {
            Error::runtime(SERVICE, format!("cannot create column family {}/{name}: {e}", self.path.display()))
        })?;
        names.insert(name.to_owned());
        Ok(())
    }

    /// The error of a failed RocksDB operation on column family `cf`.
    fn error(&self, operation: &str, cf: &str, e: rocksdb::Error) -> Error {
        Error::runtime(SERVICE, format!("{operation} in {}/{cf}: {e}", self.path.display()))
    }
}

/// The key of the default column family under which the kind of column family `cf` is kept.
fn kind_key(cf: &str) -> Vec<u8> {
    format!("kind/{cf}").into_bytes()
}

fn kind_byte(kind: StateKind) -> u8 {
    match kind {
        StateKind::Value => 0,
        StateKind::List => 1,
        StateKind::Map => 2,
    }
}

fn kind_of_byte(byte: u8) -> Option<StateKind> {
    match byte {
        0 => Some(StateKind::Value),
        1 => Some(StateKind::List),
        2 => Some(StateKind::Map),
        _ => None,
    }
}

/// The parts of a stored key: key group, key, namespace and user key (empty for value and list
/// state).
type KeyParts<'a> = (u16, &'a [u8], &'a [u8], &'a [u8]);

/// The parts of a key of a `kind` state; `None` when the bytes are not such a key.
fn decode_key(kind: StateKind, bytes: &[u8]) -> Option<KeyParts<'_>> {
    fn take_len(bytes: &[u8]) -> Option<(usize, &[u8])> {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        Some((usize::try_from(u32::from_be_bytes(*len)).ok()?, rest))
    }
    let (key_group, rest) = bytes.split_first_chunk::<2>()?;
    let (key_len, rest) = take_len(rest)?;
    let (key, rest) = rest.split_at_checked(key_len)?;
    if kind != StateKind::Map {
        return Some((u16::from_be_bytes(*key_group), key, rest, &[]));
    }
    let (namespace_len, rest) = take_len(rest)?;
    let (namespace, user_key) = rest.split_at_checked(namespace_len)?;
    Some((u16::from_be_bytes(*key_group), key, namespace, user_key))
}

/// One registered state.
struct RegisteredState {
    name: String,
    /// `<operator uid>/<name>`.
    column_family: String,
    kind: StateKind,
}

/// Keyed state of one operator in one subtask, in a [`RocksDbInstance`].
///
/// Behaves like [`super::heap::HeapKeyedStateBackend`] (same contract, checked by the same tests):
/// - A key group outside the backend's range and an unknown [`StateId`] are [`Error::Runtime`]
///   errors, never panics.
/// - Operations must match the registered kind: `get`, `put` and `update` accept value and list
///   state, `append` list state, `map_*` map state, and `remove` any kind (on map state it removes
///   the whole map at `(key, namespace)`). A mismatch is an [`Error::Runtime`].
/// - The kind of a state is remembered by the backend, not the database: register states with
///   the same kinds after reopening.
/// - Every RocksDB failure is an [`Error::Runtime`] naming the database path and column family.
/// - [`KeyedStateBackend::snapshot`] writes the entries of the registered states in the backend's
///   key groups; [`KeyedStateBackend::restore`] keeps the entries of states not registered yet in
///   memory until they are (their kind decides the key layout), and every snapshot holds them
///   until then; it skips internal structures (state names starting with `__`).
pub struct RocksDbKeyedStateBackend {
    instance: Arc<RocksDbInstance>,
    operator_uid: String,
    key_groups: RangeInclusive<u16>,
    states: Vec<RegisteredState>,
    /// Reused buffer for encoded keys.
    key_buf: Vec<u8>,
    /// Reused buffer that `map_get` copies values into.
    value_buf: Vec<u8>,
    /// Reused buffer for `update`'s new value and `append`'s encoded element.
    update_buf: Vec<u8>,
    read_options: ReadOptions,
    /// Restored entries of states not registered yet, by state name.
    pending: super::PendingRestore,
    /// Checkpoints copy the database's files ([`RocksDbInstance::checkpoint`]): the canonical
    /// [`KeyedStateBackend::snapshot`] then holds only the pending restored entries.
    native_snapshots: bool,
    /// Value and list state of recently used keys, written to the database in batches.
    cache: WriteCache,
}

impl Drop for RocksDbKeyedStateBackend {
    /// Writes the cached changes, so that a backend of the same operator on the database sees them.
    fn drop(&mut self) {
        if let Err(e) = self.flush_cache(true) {
            tracing::warn!(operator = %self.operator_uid, error = %e, "cannot write cached state changes");
        }
    }
}

impl std::fmt::Debug for RocksDbKeyedStateBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbKeyedStateBackend")
            .field("path", &self.instance.path)
            .field("operator_uid", &self.operator_uid)
            .field("key_groups", &self.key_groups)
            .field("states", &self.states.iter().map(|s| (&s.name, s.kind)).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Which kinds an operation accepts.
#[derive(Clone, Copy)]
enum Accepts {
    /// Value and list state.
    Flat,
    /// List state.
    List,
    /// Map state.
    Map,
    /// Every kind.
    Any,
}

impl Accepts {
    fn accepts(self, kind: StateKind) -> bool {
        match self {
            Accepts::Flat => matches!(kind, StateKind::Value | StateKind::List),
            Accepts::List => kind == StateKind::List,
            Accepts::Map => kind == StateKind::Map,
            Accepts::Any => true,
        }
    }
}

impl RocksDbKeyedStateBackend {
    /// Makes [`KeyedStateBackend::snapshot`] return only the restored entries of states not
    /// registered yet (which are not in the database): the task checkpoints the whole database
    /// natively (incrementally, by SST file) instead.
    #[must_use]
    pub fn with_native_snapshots(mut self) -> Self {
        self.native_snapshots = true;
        self
    }

    /// Writes the cached changes to the database in one batch; empties the cache
    /// when it is over its budget or `empty`. [`KeyedStateBackend::snapshot`] calls this first:
    /// call either before reading the database directly (for example
    /// [`RocksDbInstance::checkpoint`]), and this with `empty` before changing it directly (for
    /// example deleting the key groups a subtask no longer owns after rescaling).
    ///
    /// # Errors
    /// [`Error::Runtime`] when the batch cannot be written (the cache keeps its entries).
    pub fn flush_cache(&mut self, empty: bool) -> Result<()> {
        if self.cache.is_dirty() {
            let instance = &*self.instance;
            let handles = self
                .states
                .iter()
                .map(|state| instance.column_family(&state.column_family, "flush"))
                .collect::<Result<Vec<_>>>()?;
            let mut batch = WriteBatch::default();
            self.cache.dirty_writes(|state, write| match write {
                CacheWrite::Put { key, value } => batch.put_cf(&handles[state], key, value),
                CacheWrite::Delete { key } => batch.delete_cf(&handles[state], key),
                CacheWrite::Append { key, elements } => batch.merge_cf(&handles[state], key, elements),
            });
            instance.db.write_opt(batch, &instance.write_options).map_err(|e| {
                Error::runtime(
                    SERVICE,
                    format!(
                        "cannot write the cached state of operator '{}' to {}: {e}",
                        self.operator_uid,
                        instance.path.display()
                    ),
                )
            })?;
        }
        self.cache.flushed(empty);
        Ok(())
    }

    /// Flushes and empties the cache when it is over its budget.
    fn bound_cache(&mut self) -> Result<()> {
        if self.cache.over_budget() { self.flush_cache(true) } else { Ok(()) }
    }

    /// Loads the current value of `key_buf` in state `index` into the cache, reading the
    /// database unless the cache has it already.
    fn load(&mut self, index: usize, operation: &str) -> Result<()> {
        if self.cache.is_loaded(index, &self.key_buf) {
            return Ok(());
        }
        self.read_into_cache(index, operation)
    }

    /// Reads the value of `key_buf` in state `index` from the database into the cache (behind
    /// the elements appended since the last flush, if any).
    fn read_into_cache(&mut self, index: usize, operation: &str) -> Result<()> {
        let instance = &*self.instance;
        let cf_name = &self.states[index].column_family;
        let cf = instance.column_family(cf_name, operation)?;
        let value = instance
            .db
            .get_pinned_cf_opt(&cf, &self.key_buf, &self.read_options)
            .map_err(|e| instance.error(operation, cf_name, e))?;
        self.cache.load(index, &self.key_buf, value.as_deref());
        Ok(())
    }

    /// The uid of the operator whose state this is.
    pub fn operator_uid(&self) -> &str {
        &self.operator_uid
    }

    /// The key groups this backend holds.
    pub fn key_groups(&self) -> RangeInclusive<u16> {
        self.key_groups.clone()
    }

    /// The database this backend's state is in.
    pub fn instance(&self) -> &Arc<RocksDbInstance> {
        &self.instance
    }

    /// Checks the key group, the state id and its kind, and encodes the key of `key` into
    /// `key_buf` (for map state: the prefix of the map's entries). Returns the state's index.
    fn prepare(&mut self, state: StateId, key: &StateKey<'_>, operation: &str, accepts: Accepts) -> Result<usize> {
        if !self.key_groups.contains(&key.key_group) {
            return Err(Error::runtime(
                SERVICE,
                format!(
                    "{operation}: key group {} is outside the key groups {:?} of operator '{}'",
                    key.key_group, self.key_groups, self.operator_uid
                ),
            ));
        }
        let Some((index, registered)) =
            usize::try_from(state).ok().and_then(|i| self.states.get(i).map(|registered| (i, registered)))
        else {
            return Err(Error::runtime(
                SERVICE,
                format!("{operation}: unknown state id {state} of operator '{}'", self.operator_uid),
            ));
        };
        if !accepts.accepts(registered.kind) {
            return Err(Error::runtime(
                SERVICE,
                format!("{operation} is not supported by {:?} state '{}'", registered.kind, registered.name),
            ));
        }
        let too_long = |what: &str, len: usize| {
            Error::runtime(
                SERVICE,
                format!("{operation}: {what} of {len} bytes is too long (state '{}')", registered.name),
            )
        };
        let key_len = u32::try_from(key.key.len()).map_err(|_| too_long("key", key.key.len()))?;
        self.key_buf.clear();
        self.key_buf.extend_from_slice(&key.key_group.to_be_bytes());
        self.key_buf.extend_from_slice(&key_len.to_be_bytes());
        self.key_buf.extend_from_slice(key.key);
        if registered.kind == StateKind::Map {
            let namespace_len =
                u32::try_from(key.namespace.len()).map_err(|_| too_long("namespace", key.namespace.len()))?;
            self.key_buf.extend_from_slice(&namespace_len.to_be_bytes());
        }
        self.key_buf.extend_from_slice(key.namespace);
        Ok(index)
    }

    /// Deletes every entry whose key starts with `key_buf` (a whole map).
    fn delete_prefix(&mut self, index: usize, operation: &str) -> Result<()> {
        let instance = &*self.instance;
        let cf_name = &self.states[index].column_family;
        let cf = instance.column_family(cf_name, operation)?;
        let mut read_options = ReadOptions::default();
        if let Some(end) = prefix_successor(&self.key_buf) {
            read_options.set_iterate_upper_bound(end);
        }
        let mut batch = WriteBatch::default();
        let mut iter = instance.db.raw_iterator_cf_opt(&cf, read_options);
        iter.seek(&self.key_buf);
        while let Some(key) = iter.key() {
            if !key.starts_with(&self.key_buf) {
                break;
            }
            batch.delete_cf(&cf, key);
            iter.next();
        }
        iter.status().map_err(|e| instance.error(operation, cf_name, e))?;
        drop(iter);
        if !batch.is_empty() {
            instance.db.write_opt(batch, &instance.write_options).map_err(|e| instance.error(operation, cf_name, e))?;
        }
        Ok(())
    }
}

impl RocksDbKeyedStateBackend {
    /// Writes the restored entries of state `id` now that its kind is known.
    fn apply_pending(&mut self, id: StateId) -> Result<()> {
        let (name, kind) = {
            let state = &self.states[id as usize];
            (state.name.clone(), state.kind)
        };
        let pending = self.pending.take(&name);
        super::PendingRestore::load_into(self, pending, id, kind)
    }
}

impl KeyedStateBackend for RocksDbKeyedStateBackend {
    fn register_state(&mut self, name: &str, kind: StateKind) -> Result<StateId> {
        let registered = self.states.iter().map(|s| (s.name.as_str(), s.kind));
        if let Some(id) = super::registered_state(SERVICE, &self.operator_uid, registered, name, kind)? {
            return Ok(id);
        }
        let id = super::state_id(SERVICE, &self.operator_uid, self.states.len())?;
        let column_family = format!("{}/{name}", self.operator_uid);
        self.instance.ensure_column_family(&column_family)?;
        // Written once per state (a write per registration would leave a new SST file of the
        // default column family in every incremental checkpoint).
        if self.instance.recorded_kind(&column_family)? != Some(kind) {
            self.instance.record_kind(&column_family, kind)?;
        }
        self.states.push(RegisteredState { name: name.to_owned(), column_family, kind });
        self.apply_pending(id)?;
        Ok(id)
    }

    fn get(&mut self, state: StateId, key: StateKey<'_>) -> Result<Option<&[u8]>> {
        let index = self.prepare(state, &key, "get", Accepts::Flat)?;
        self.bound_cache()?;
        self.load(index, "get")?;
        Ok(self.cache.get(index, &self.key_buf).and_then(CachedValue::value).flatten())
    }

    fn put(&mut self, state: StateId, key: StateKey<'_>, value: &[u8]) -> Result<()> {
        let index = self.prepare(state, &key, "put", Accepts::Flat)?;
        self.cache.write(index, &self.key_buf, Some(value));
        self.bound_cache()
    }

    fn update(&mut self, state: StateId, key: StateKey<'_>, merge: &mut MergeFn<'_>) -> Result<bool> {
        let index = self.prepare(state, &key, "update", Accepts::Flat)?;
        self.bound_cache()?;
        // One lookup when the value is cached (the common case: hot keys).
        if let Some(updated) = self.cache.update(index, &self.key_buf, &mut self.update_buf, &mut *merge) {
            return updated;
        }
        self.read_into_cache(index, "update")?;
        self.cache
            .update(index, &self.key_buf, &mut self.update_buf, merge)
            .ok_or_else(|| Error::runtime(SERVICE, "update: the loaded value is not cached"))?
    }

    fn append(&mut self, state: StateId, key: StateKey<'_>, element: &[u8]) -> Result<()> {
        let index = self.prepare(state, &key, "append", Accepts::List)?;
        self.update_buf.clear();
        encode_list_element(&mut self.update_buf, element);
        self.cache.append(index, &self.key_buf, &self.update_buf);
        self.bound_cache()
    }

    fn remove(&mut self, state: StateId, key: StateKey<'_>) -> Result<()> {
        let index = self.prepare(state, &key, "remove", Accepts::Any)?;
        if self.states[index].kind == StateKind::Map {
            return self.delete_prefix(index, "remove");
        }
        self.cache.write(index, &self.key_buf, None);
        self.bound_cache()
    }

    fn remove_expired(&mut self, state: StateId, kind: StateKind, expiry: Expiry) -> Result<u64> {
        // The cache is written and emptied first, so that it holds no value removed here.
        self.flush_cache(true)?;
        let index = usize::try_from(state)
            .ok()
            .filter(|&i| i < self.states.len())
            .ok_or_else(|| Error::runtime(SERVICE, format!("remove_expired: unknown state id {state}")))?;
        let instance = &*self.instance;
        let cf_name = &self.states[index].column_family;
        let cf = instance.column_family(cf_name, "remove_expired")?;
        let (start, end) = key_group_range_bounds(self.key_groups.clone());
        let mut read_options = ReadOptions::default();
        if !end.is_empty() {
            read_options.set_iterate_upper_bound(end);
        }
        let mut batch = WriteBatch::default();
        let mut removed = 0;
        let mut live = Vec::new();
        let mut iter = instance.db.raw_iterator_cf_opt(&cf, read_options);
        iter.seek(&start);
        while let Some((stored_key, value)) = iter.item() {
            if kind == StateKind::List {
                let expired = expiry.live_elements(value, &mut live)?;
                if expired > 0 {
                    removed += expired;
                    if live.is_empty() {
                        batch.delete_cf(&cf, stored_key);
                    } else {
                        batch.put_cf(&cf, stored_key, &live);
                    }
                }
            } else if expiry.expired(value) {
                removed += 1;
                batch.delete_cf(&cf, stored_key);
            }
            iter.next();
        }
        iter.status().map_err(|e| instance.error("remove_expired", cf_name, e))?;
        drop(iter);
        instance
            .db
            .write_opt(batch, &instance.write_options)
            .map_err(|e| instance.error("remove_expired", cf_name, e))?;
        Ok(removed)
    }

    fn snapshot(&mut self) -> Result<Vec<KeyGroupState>> {
        self.flush_cache(false)?;
        // Restored entries of states not registered yet are not in the database (their kind,
        // and so their key layout, is unknown): they are snapshotted canonically either way.
        let mut groups: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
        for (key_group, entry) in self.pending.entries() {
            encode_state_entry(groups.entry(key_group).or_default(), entry)?;
        }
        let instance = &*self.instance;
        if self.native_snapshots && !instance.canonical_snapshots.load(Ordering::Relaxed) {
            return Ok(groups.into_iter().map(|(key_group, entries)| KeyGroupState { key_group, entries }).collect());
        }
        let (start, end) = key_group_range_bounds(self.key_groups.clone());
        // Every state of the operator in the database: the registered ones, and those restored
        // natively but not registered again yet (their kinds were recorded when they were).
        let prefix = format!("{}/", self.operator_uid);
        let mut states: Vec<(String, String, StateKind)> =
            self.states.iter().map(|s| (s.name.clone(), s.column_family.clone(), s.kind)).collect();
        for cf_name in instance.column_families_with_prefix(&prefix) {
            if states.iter().any(|(_, cf, _)| *cf == cf_name) {
                continue;
            }
            let kind = instance.recorded_kind(&cf_name)?.ok_or_else(|| {
                Error::runtime(
                    SERVICE,
                    format!("snapshot: the kind of state {cf_name} in {} is not recorded", instance.path.display()),
                )
            })?;
            let name = cf_name[prefix.len()..].to_owned();
            states.push((name, cf_name, kind));
        }
        for (name, cf_name, kind) in &states {
            let cf = instance.column_family(cf_name, "snapshot")?;
            let mut read_options = ReadOptions::default();
            if !end.is_empty() {
                read_options.set_iterate_upper_bound(end.clone());
            }
            let mut iter = instance.db.raw_iterator_cf_opt(&cf, read_options);
            iter.seek(&start);
            while let Some((stored_key, value)) = iter.item() {
                let (key_group, key, namespace, user_key) = decode_key(*kind, stored_key).ok_or_else(|| {
                    Error::runtime(
                        SERVICE,
                        format!("snapshot: corrupt key {stored_key:02x?} in {}/{cf_name}", instance.path.display()),
                    )
                })?;
                let entry = StateEntry { state: name, key, namespace, user_key, value };
                encode_state_entry(groups.entry(key_group).or_default(), entry)?;
                iter.next();
            }
            iter.status().map_err(|e| instance.error("snapshot", cf_name, e))?;
        }
        Ok(groups.into_iter().map(|(key_group, entries)| KeyGroupState { key_group, entries }).collect())
    }

    fn restore(&mut self, groups: &[KeyGroupState]) -> Result<()> {
        self.pending.add(groups, &self.key_groups)?;
        for id in 0..self.states.len() as StateId {
            self.apply_pending(id)?;
        }
        Ok(())
    }

    fn map_get(&mut self, state: StateId, key: StateKey<'_>, user_key: &[u8]) -> Result<Option<&[u8]>> {
        let index = self.prepare(state, &key, "map_get", Accepts::Map)?;
        self.key_buf.extend_from_slice(user_key);
        let instance = &*self.instance;
        let cf_name = &self.states[index].column_family;
        let cf = instance.column_family(cf_name, "map_get")?;
        let value = instance
            .db
            .get_pinned_cf_opt(&cf, &self.key_buf, &self.read_options)
            .map_err(|e| instance.error("map_get", cf_name, e))?;
        match value {
            Some(value) => {
                self.value_buf.clear();
                self.value_buf.extend_from_slice(&value);
                Ok(Some(&self.value_buf))
            }
            None => Ok(None),
        }
    }

    fn map_put(&mut self, state: StateId, key: StateKey<'_>, user_key: &[u8], value: &[u8]) -> Result<()> {
        let index = self.prepare(state, &key, "map_put", Accepts::Map)?;
        self.key_buf.extend_from_slice(user_key);
        let instance = &*self.instance;
        let cf_name = &self.states[index].column_family;
        let cf = instance.column_family(cf_name, "map_put")?;
        instance
            .db
            .put_cf_opt(&cf, &self.key_buf, value, &instance.write_options)
            .map_err(|e| instance.error("map_put", cf_name, e))
    }

    fn map_remove(&mut self, state: StateId, key: StateKey<'_>, user_key: &[u8]) -> Result<()> {
        let index = self.prepare(state, &key, "map_remove", Accepts::Map)?;
        self.key_buf.extend_from_slice(user_key);
        let instance = &*self.instance;
        let cf_name = &self.states[index].column_family;
        let cf = instance.column_family(cf_name, "map_remove")?;
        instance
            .db
            .delete_cf_opt(&cf, &self.key_buf, &instance.write_options)
            .map_err(|e| instance.error("map_remove", cf_name, e))
    }

    fn map_scan(
        &mut self,
        state: StateId,
        key: StateKey<'_>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let index = self.prepare(state, &key, "map_scan", Accepts::Map)?;
        let instance = &*self.instance;
        let cf_name = &self.states[index].column_family;
        let cf = instance.column_family(cf_name, "map_scan")?;
        let prefix = self.key_buf.as_slice();
        let mut read_options = ReadOptions::default();
        if let Some(end) = prefix_successor(prefix) {
            read_options.set_iterate_upper_bound(end);
        }
        let mut iter = instance.db.raw_iterator_cf_opt(&cf, read_options);
        iter.seek(prefix);
        while let Some((entry_key, value)) = iter.item() {
            let Some(user_key) = entry_key.strip_prefix(prefix) else {
                break;
            };
            if !visit(user_key, value) {
                break;
            }
            iter.next();
        }
        iter.status().map_err(|e| instance.error("map_scan", cf_name, e))
    }

    fn map_scan_range(
        &mut self,
        state: StateId,
        key: StateKey<'_>,
        (from, to): (&[u8], Option<&[u8]>),
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let index = self.prepare(state, &key, "map_scan", Accepts::Map)?;
        let instance = &*self.instance;
        let cf_name = &self.states[index].column_family;
        let cf = instance.column_family(cf_name, "map_scan")?;
        let prefix = self.key_buf.as_slice();
        let mut read_options = ReadOptions::default();
        let end = match to {
            Some(to) => Some([prefix, to].concat()),
            None => prefix_successor(prefix),
        };
        if let Some(end) = end {
            read_options.set_iterate_upper_bound(end);
        }
        let mut iter = instance.db.raw_iterator_cf_opt(&cf, read_options);
        // Seeking to the first key of the range skips whatever lies before it, tombstones
        // of removed entries included.
        iter.seek([prefix, from].concat());
        while let Some((entry_key, value)) = iter.item() {
            let Some(user_key) = entry_key.strip_prefix(prefix) else {
                break;
            };
            if !visit(user_key, value) {
                break;
            }
            iter.next();
        }
        iter.status().map_err(|e| instance.error("map_scan", cf_name, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_api::runtime::list_elements;

    fn key<'a>(key_group: u16, key: &'a [u8], namespace: &'a [u8]) -> StateKey<'a> {
        StateKey { key_group, key, namespace }
    }

    fn scan(backend: &mut RocksDbKeyedStateBackend, state: StateId, at: StateKey<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut seen = Vec::new();
        backend
            .map_scan(state, at, &mut |user_key, value| {
                seen.push((user_key.to_vec(), value.to_vec()));
                true
            })
            .unwrap();
        seen
    }

    /// Deterministic bytes that LZ4 cannot compress much.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn meets_the_backend_contract() {
        let dir = tempfile::tempdir().unwrap();
        let instance = RocksDbInstance::open(dir.path()).unwrap();
        // Every backend is a new operator of the same database, so it starts empty.
        let next = std::cell::Cell::new(0);
        crate::state::contract::check_backend_contract(|key_groups| {
            next.set(next.get() + 1);
            Box::new(instance.backend(&format!("op-{}", next.get()), key_groups).unwrap())
        });
    }

    #[test]
    fn operators_on_one_instance_do_not_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let instance = RocksDbInstance::open(dir.path()).unwrap();
        let mut a = instance.backend("a", 0..=7).unwrap();
        let mut b = instance.backend("b", 0..=7).unwrap();
        let (av, bv) =
            (a.register_state("s", StateKind::Value).unwrap(), b.register_state("s", StateKind::Value).unwrap());
        let (am, bm) = (a.register_state("m", StateKind::Map).unwrap(), b.register_state("m", StateKind::Map).unwrap());
        let k = key(3, b"k", b"");
        a.put(av, k, b"from a").unwrap();
        assert_eq!(b.get(bv, k).unwrap(), None);
        b.put(bv, k, b"from b").unwrap();
        assert_eq!(a.get(av, k).unwrap(), Some(&b"from a"[..]));
        assert_eq!(b.get(bv, k).unwrap(), Some(&b"from b"[..]));
        a.map_put(am, k, b"u", b"1").unwrap();
        assert!(scan(&mut b, bm, k).is_empty());
        b.remove(bm, k).unwrap();
        b.remove(bv, k).unwrap();
        assert_eq!(a.get(av, k).unwrap(), Some(&b"from a"[..]));
        assert_eq!(scan(&mut a, am, k), vec![(b"u".to_vec(), b"1".to_vec())]);
        // The same state name may have another kind in another operator.
        assert!(b.register_state("l", StateKind::List).is_ok());
        assert!(a.register_state("l", StateKind::Map).is_ok());
        let names: BTreeSet<String> = instance.lock_column_families().clone();
        for name in ["a/s", "a/m", "a/l", "b/s", "b/m", "b/l", "default"] {
            assert!(names.contains(name), "{name} missing from {names:?}");
        }
        assert!(instance.backend("", 0..=1).is_err());
    }

    #[test]
    fn cached_value_state_reaches_the_database_at_the_snapshot_and_beyond_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoints = tempfile::tempdir().unwrap();
        let instance = RocksDbInstance::open(&dir.path().join("db")).unwrap();
        let mut backend = instance.backend("op", 0..=127).unwrap().with_native_snapshots();
        let value = backend.register_state("v", StateKind::Value).unwrap();
        // Three times the cache's budget: the cache is written out and emptied on the way.
        let keys = (3 * WRITE_CACHE_BYTES / 164) as u32;
        fn at(i: u32, k: &[u8; 4]) -> StateKey<'_> {
            key((i % 128) as u16, k, b"w")
        }
        for i in 0..keys {
            backend.put(value, at(i, &i.to_be_bytes()), &noise(u64::from(i), 100)).unwrap();
        }
        for i in (0..keys).step_by(997) {
            assert_eq!(owned(backend.get(value, at(i, &i.to_be_bytes())).unwrap()), Some(noise(u64::from(i), 100)));
        }
        // Changes in the cache only: an update, a removal of a stored key, a key created and
        // removed again, a new key.
        let mut add_one = |current: Option<&[u8]>, out: &mut Vec<u8>| -> Result<()> {
            out.extend_from_slice(current.unwrap_or_default());
            out.push(1);
            Ok(())
        };
        assert!(backend.update(value, at(1, &1u32.to_be_bytes()), &mut add_one).unwrap());
        backend.remove(value, at(2, &2u32.to_be_bytes())).unwrap();
        let (transient, fresh) = (keys.to_be_bytes(), (keys + 1).to_be_bytes());
        assert!(!backend.update(value, at(keys, &transient), &mut add_one).unwrap());
        backend.remove(value, at(keys, &transient)).unwrap();
        backend.put(value, at(keys + 1, &fresh), b"new").unwrap();

        // At a barrier: the backend's snapshot, then the database's checkpoint.
        assert!(backend.snapshot().unwrap().is_empty());
        instance.checkpoint(&checkpoints.path().join("a")).unwrap();
        drop(backend);
        drop(instance);
        let restored = RocksDbInstance::open(&checkpoints.path().join("a")).unwrap();
        let mut backend = restored.backend("op", 0..=127).unwrap();
        let value = backend.register_state("v", StateKind::Value).unwrap();
        let mut updated = noise(1, 100);
        updated.push(1);
        assert_eq!(owned(backend.get(value, at(1, &1u32.to_be_bytes())).unwrap()), Some(updated));
        assert_eq!(backend.get(value, at(2, &2u32.to_be_bytes())).unwrap(), None);
        assert_eq!(backend.get(value, at(keys, &transient)).unwrap(), None);
        assert_eq!(backend.get(value, at(keys + 1, &fresh)).unwrap(), Some(&b"new"[..]));
        for i in (3..keys).step_by(991) {
            assert_eq!(owned(backend.get(value, at(i, &i.to_be_bytes())).unwrap()), Some(noise(u64::from(i), 100)));
        }
        let mut count = 0;
        let cf = restored.column_family("op/v", "test").unwrap();
        let mut iter = restored.db.raw_iterator_cf(&cf);
        iter.seek_to_first();
        while iter.valid() {
            count += 1;
            iter.next();
        }
        assert_eq!(count, keys, "every key but the removed one, plus the new one");
    }

    #[test]
    fn native_snapshots_hold_the_restored_entries_of_states_not_registered_yet() {
        use crate::state::contract::snapshot_entries;

        let dir = tempfile::tempdir().unwrap();
        let checkpoints = tempfile::tempdir().unwrap();
        // A canonical snapshot (as from the heap backend) of a value and a map state.
        let canonical = {
            let source = RocksDbInstance::open(&dir.path().join("source")).unwrap();
            let mut backend = source.backend("op", 0..=3).unwrap();
            let value = backend.register_state("v", StateKind::Value).unwrap();
            let map = backend.register_state("m", StateKind::Map).unwrap();
            backend.put(value, key(1, b"k", b""), b"value").unwrap();
            backend.map_put(map, key(2, b"k", b""), b"u", b"mapped").unwrap();
            backend.snapshot().unwrap()
        };
        let instance = RocksDbInstance::open(&dir.path().join("db")).unwrap();
        let mut backend = instance.backend("op", 0..=3).unwrap().with_native_snapshots();
        backend.restore(&canonical).unwrap();
        backend.register_state("v", StateKind::Value).unwrap();
        // "v" is in the database now; "m" is not, so the snapshot carries it.
        let snapshot = backend.snapshot().unwrap();
        let pending: Vec<_> = snapshot_entries(&canonical).into_iter().filter(|e| e.1 == "m").collect();
        assert_eq!(snapshot_entries(&snapshot), pending);
        instance.checkpoint(&checkpoints.path().join("a")).unwrap();
        drop(backend);
        drop(instance);

        // Restored as a task restores: the database's files, then the canonical part.
        let restored = RocksDbInstance::open(&checkpoints.path().join("a")).unwrap();
        let mut backend = restored.backend("op", 0..=3).unwrap().with_native_snapshots();
        backend.restore(&snapshot).unwrap();
        let map = backend.register_state("m", StateKind::Map).unwrap();
        let value = backend.register_state("v", StateKind::Value).unwrap();
        assert_eq!(backend.get(value, key(1, b"k", b"")).unwrap(), Some(&b"value"[..]));
        assert_eq!(backend.map_get(map, key(2, b"k", b""), b"u").unwrap(), Some(&b"mapped"[..]));
        assert!(backend.snapshot().unwrap().is_empty(), "everything is in the database now");
    }

    #[test]
    fn canonical_snapshots_hold_every_state_of_a_natively_restored_database() {
        // A savepoint of a task restored from a native checkpoint: user state registers lazily,
        // so states not used since the restore must be found by their column families.
        use crate::state::contract::snapshot_entries;

        let dir = tempfile::tempdir().unwrap();
        let checkpoints = tempfile::tempdir().unwrap();
        let instance = RocksDbInstance::open(&dir.path().join("db")).unwrap();
        let mut backend = instance.backend("op", 0..=7).unwrap().with_native_snapshots();
        let value = backend.register_state("v", StateKind::Value).unwrap();
        let list = backend.register_state("l", StateKind::List).unwrap();
        let map = backend.register_state("m", StateKind::Map).unwrap();
        backend.put(value, key(1, b"k1", b""), b"one").unwrap();
        backend.append(list, key(2, b"k2", b"ns"), b"a").unwrap();
        backend.append(list, key(2, b"k2", b"ns"), b"b").unwrap();
        backend.map_put(map, key(7, b"k3", b"w"), b"u", b"mapped").unwrap();
        let mut other = instance.backend("other", 0..=7).unwrap().with_native_snapshots();
        let foreign = other.register_state("v", StateKind::Value).unwrap();
        other.put(foreign, key(1, b"x", b""), b"not op's").unwrap();
        assert!(backend.snapshot().unwrap().is_empty(), "native: nothing canonical");
        instance.set_canonical_snapshots(true);
        let expected = snapshot_entries(&backend.snapshot().unwrap());
        instance.set_canonical_snapshots(false);
        assert_eq!(expected.len(), 3, "{expected:?}");
        instance.checkpoint(&checkpoints.path().join("a")).unwrap();
        drop((backend, other, instance));

        let restored = RocksDbInstance::open(&checkpoints.path().join("a")).unwrap();
        let mut backend = restored.backend("op", 0..=7).unwrap().with_native_snapshots();
        backend.register_state("v", StateKind::Value).unwrap();
        restored.set_canonical_snapshots(true);
        let mut got = snapshot_entries(&backend.snapshot().unwrap());
        let mut want = expected.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want, "registered or not, every state of 'op' and only of 'op'");
        // Only the backend's key groups.
        let mut narrow = restored.backend("op", 0..=1).unwrap().with_native_snapshots();
        let keys: Vec<_> = snapshot_entries(&narrow.snapshot().unwrap()).into_iter().map(|e| e.0).collect();
        assert_eq!(keys, vec![1], "key groups 0..=1 hold only the value in group 1");
    }

    #[test]
    fn cached_lists_reach_the_database_as_merges_and_whole_values() {
        fn elements(backend: &mut RocksDbKeyedStateBackend, state: StateId, k: &[u8]) -> Vec<Vec<u8>> {
            let stored = owned(backend.get(state, key(1, k, b"")).unwrap()).unwrap_or_default();
            list_elements(&stored).map(|e| e.unwrap().to_vec()).collect()
        }
        let dir = tempfile::tempdir().unwrap();
        let checkpoints = tempfile::tempdir().unwrap();
        let instance = RocksDbInstance::open(&dir.path().join("db")).unwrap();
        let mut backend = instance.backend("op", 0..=127).unwrap().with_native_snapshots();
        let list = backend.register_state("l", StateKind::List).unwrap();
        // Appended without reads, written at the snapshot as one merge.
        backend.append(list, key(1, b"a", b""), b"1").unwrap();
        backend.append(list, key(1, b"a", b""), b"2").unwrap();
        backend.snapshot().unwrap();
        // More appended, then read: the stored elements come first.
        backend.append(list, key(1, b"a", b""), b"3").unwrap();
        assert_eq!(elements(&mut backend, list, b"a"), [b"1", b"2", b"3"]);
        backend.append(list, key(1, b"a", b""), b"4").unwrap();
        // A list that only lives in the cache.
        backend.append(list, key(1, b"gone", b""), b"x").unwrap();
        assert_eq!(elements(&mut backend, list, b"gone"), [b"x"]);
        backend.remove(list, key(1, b"gone", b"")).unwrap();
        // A long list: the cache goes over its budget and is written out on the way.
        let big = noise(7, 1000);
        let count = 3 * WRITE_CACHE_BYTES / 1000;
        for _ in 0..count {
            backend.append(list, key(1, b"long", b""), &big).unwrap();
        }
        backend.snapshot().unwrap();
        instance.checkpoint(&checkpoints.path().join("a")).unwrap();
        drop(backend);
        drop(instance);

        let restored = RocksDbInstance::open(&checkpoints.path().join("a")).unwrap();
        let mut backend = restored.backend("op", 0..=127).unwrap();
        let list = backend.register_state("l", StateKind::List).unwrap();
        assert_eq!(elements(&mut backend, list, b"a"), [b"1", b"2", b"3", b"4"]);
        assert!(elements(&mut backend, list, b"gone").is_empty());
        let long = elements(&mut backend, list, b"long");
        assert_eq!(long.len(), count);
        assert!(long.iter().all(|e| *e == big));
    }

    #[test]
    fn databases_share_the_taskmanagers_memory_budget() {
        const DATABASES: u32 = 4;
        let dir = tempfile::tempdir().unwrap();
        let memory = RocksDbMemory::new(64 << 20);
        let instances: Vec<_> = (0..DATABASES)
            .map(|i| RocksDbInstance::open_with(&dir.path().join(format!("db-{i}")), &memory).unwrap())
            .collect();
        let mut backends: Vec<_> = instances.iter().map(|db| db.backend("op", 0..=127).unwrap()).collect();
        let mut value = 0;
        for backend in &mut backends {
            value = backend.register_state("v", StateKind::Value).unwrap();
        }
        // 40 MiB of values into each database: on their own, four databases would hold up to two
        // 16 MiB memtables each (128 MiB); the shared budget gives memtables 32 MiB.
        let (mut peak, mut active_peak, mut charged) = (0, 0, 0);
        for i in 0..DATABASES * 40 * 1024 {
            let backend = &mut backends[(i % DATABASES) as usize];
            backend.put(value, key((i % 128) as u16, &i.to_be_bytes(), b""), &noise(u64::from(i), 1024)).unwrap();
            if i % 512 == 0 {
                backend.flush_cache(false).unwrap();
                // What RocksDB reports for the memtables of every database (not the budget's
                // own counter).
                let size = |property: &str| {
                    let sizes = instances.iter().map(|db| {
                        let cf = db.column_family("op/v", "test").unwrap();
                        db.db.property_int_value_cf(&cf, property).unwrap().unwrap_or(0)
                    });
                    sizes.sum::<u64>() as usize
                };
                peak = peak.max(size("rocksdb.size-all-mem-tables"));
                active_peak = active_peak.max(size("rocksdb.cur-size-active-mem-table"));
                charged = charged.max(memory.memtable_usage());
            }
        }
        eprintln!(
            "peak memtable usage of {DATABASES} databases: {peak} bytes ({active_peak} in active memtables), \
             charged {charged}"
        );
        assert!(charged > 0, "the memtables are charged to the shared budget");
        // The budget switches the active memtables when together they pass it, on the write that
        // passes it: deterministic, as opposed to when the background flushes of the switched
        // ones finish (a loaded machine lags; the budget is soft, as Flink's). Without the shared
        // budget the active memtables of the four databases reach 64 MiB together.
        let write_buffers = memory.bytes() / 2;
        assert!(
            active_peak <= write_buffers + (4 << 20),
            "active memtables of the databases took up to {active_peak} bytes, budget {write_buffers}"
        );
        // All memtables, flushing ones included: about 97 MB without the shared budget.
        assert!(peak <= memory.bytes() + (16 << 20), "memtables of the databases took up to {peak} bytes");
        for i in (0..DATABASES * 40 * 1024).step_by(101) {
            let backend = &mut backends[(i % DATABASES) as usize];
            let stored = owned(backend.get(value, key((i % 128) as u16, &i.to_be_bytes(), b"")).unwrap());
            assert_eq!(stored, Some(noise(u64::from(i), 1024)));
        }
    }

    #[test]
    fn state_survives_reopening_the_instance() {
        let dir = tempfile::tempdir().unwrap();
        {
            let instance = RocksDbInstance::open(dir.path()).unwrap();
            let mut backend = instance.backend("op", 0..=15).unwrap();
            let value = backend.register_state("v", StateKind::Value).unwrap();
            let list = backend.register_state("l", StateKind::List).unwrap();
            let map = backend.register_state("m", StateKind::Map).unwrap();
            backend.put(value, key(1, b"k", b""), b"kept").unwrap();
            backend.put(value, key(2, b"gone", b""), b"removed").unwrap();
            backend.remove(value, key(2, b"gone", b"")).unwrap();
            for element in [&b"x"[..], b"y"] {
                backend.append(list, key(15, b"k", b"w"), element).unwrap();
            }
            backend.map_put(map, key(0, b"k", b""), b"b", b"2").unwrap();
            backend.map_put(map, key(0, b"k", b""), b"a", b"1").unwrap();
            // The backend holds the instance; both must go to close the database.
        }
        let instance = RocksDbInstance::open(dir.path()).unwrap();
        // A second open of the same directory fails while the first is open, naming the path.
        let err = RocksDbInstance::open(dir.path()).unwrap_err();
        assert!(
            matches!(&err, Error::Runtime { service, message } if service == SERVICE
                && message.contains(&dir.path().display().to_string())),
            "{err}"
        );
        let mut backend = instance.backend("op", 0..=15).unwrap();
        let map = backend.register_state("m", StateKind::Map).unwrap();
        let value = backend.register_state("v", StateKind::Value).unwrap();
        let list = backend.register_state("l", StateKind::List).unwrap();
        assert_eq!(backend.get(value, key(1, b"k", b"")).unwrap(), Some(&b"kept"[..]));
        assert_eq!(backend.get(value, key(2, b"gone", b"")).unwrap(), None);
        let stored = backend.get(list, key(15, b"k", b"w")).unwrap().unwrap().to_vec();
        assert_eq!(list_elements(&stored).collect::<Result<Vec<_>>>().unwrap(), vec![&b"x"[..], b"y"]);
        backend.append(list, key(15, b"k", b"w"), b"z").unwrap();
        let stored = backend.get(list, key(15, b"k", b"w")).unwrap().unwrap().to_vec();
        assert_eq!(list_elements(&stored).count(), 3);
        assert_eq!(
            scan(&mut backend, map, key(0, b"k", b"")),
            vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"2".to_vec())]
        );
    }

    #[test]
    fn incremental_checkpoints_share_sst_files() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoints = tempfile::tempdir().unwrap();
        let instance = RocksDbInstance::open(&dir.path().join("db")).unwrap();
        let mut backend = instance.backend("op", 0..=127).unwrap();
        let value = backend.register_state("v", StateKind::Value).unwrap();
        let list = backend.register_state("l", StateKind::List).unwrap();
        for i in 0..20_000u32 {
            let k = i.to_be_bytes();
            backend.put(value, key((i % 128) as u16, &k, b""), &noise(u64::from(i), 100)).unwrap();
            if i % 10 == 0 {
                backend.append(list, key((i % 128) as u16, &k, b""), &noise(u64::from(i) + 1, 50)).unwrap();
            }
        }

        // As at a barrier: the backend's snapshot writes its cache, then the database checkpoints.
        backend.flush_cache(false).unwrap();
        let a = instance.checkpoint(&checkpoints.path().join("a")).unwrap();
        let a_sst: Vec<&SstFile> = a.iter().filter(|f| f.is_sst).collect();
        assert!(!a_sst.is_empty(), "{a:?}");
        assert!(a.iter().any(|f| f.name == "CURRENT" && !f.is_sst), "{a:?}");
        assert!(a.iter().any(|f| f.name.starts_with("MANIFEST-")), "{a:?}");
        let a_total: u64 = a_sst.iter().map(|f| f.size_bytes).sum();
        assert!(a_total > 1_000_000, "the data should not compress away: {a:?}");

        for i in 0..10u32 {
            backend.put(value, key(5, &(1_000_000 + i).to_be_bytes(), b""), &noise(u64::from(i), 100)).unwrap();
        }
        backend.append(list, key(0, &0u32.to_be_bytes(), b""), b"more").unwrap();
        backend.flush_cache(false).unwrap();
        let b = instance.checkpoint(&checkpoints.path().join("b")).unwrap();
        let b_sst: Vec<&SstFile> = b.iter().filter(|f| f.is_sst).collect();
        for file in &a_sst {
            assert!(b_sst.contains(file), "{} of checkpoint a is missing from b: {b:?}", file.name);
        }
        let new: Vec<&&SstFile> = b_sst.iter().filter(|f| !a_sst.contains(f)).collect();
        assert!(!new.is_empty(), "checkpoint b has no new SST file: {b:?}");
        let new_total: u64 = new.iter().map(|f| f.size_bytes).sum();
        let b_total: u64 = b_sst.iter().map(|f| f.size_bytes).sum();
        assert!(new_total * 20 < b_total, "new {new_total} bytes of {b_total}: {new:?}");

        // Each checkpoint directory is a complete database with the state of its time.
        drop(backend);
        let restored = RocksDbInstance::open(&checkpoints.path().join("a")).unwrap();
        let mut backend = restored.backend("op", 0..=127).unwrap();
        let value = backend.register_state("v", StateKind::Value).unwrap();
        let list = backend.register_state("l", StateKind::List).unwrap();
        let k = 1234u32.to_be_bytes();
        assert_eq!(owned(backend.get(value, key((1234 % 128) as u16, &k, b"")).unwrap()), Some(noise(1234, 100)));
        assert_eq!(backend.get(value, key(5, &1_000_000u32.to_be_bytes(), b"")).unwrap(), None);
        let stored = backend.get(list, key(0, &0u32.to_be_bytes(), b"")).unwrap().unwrap().to_vec();
        assert_eq!(list_elements(&stored).count(), 1);
    }

    fn owned(value: Option<&[u8]>) -> Option<Vec<u8>> {
        value.map(<[u8]>::to_vec)
    }

    #[test]
    fn key_group_range_bounds_cover_exactly_their_key_groups() {
        assert_eq!(key_group_range_bounds(3..=5), (vec![0, 3], vec![0, 6]));
        assert_eq!(key_group_range_bounds(255..=255), (vec![0, 255], vec![1, 0]));
        assert_eq!(key_group_range_bounds(7..=u16::MAX), (vec![0, 7], vec![]));
        let (start, end) = (5, 4);
        assert_eq!(key_group_range_bounds(start..=end), (vec![0, 5], vec![0, 5]));

        let dir = tempfile::tempdir().unwrap();
        let instance = RocksDbInstance::open(dir.path()).unwrap();
        let mut backend = instance.backend("op", 0..=u16::MAX).unwrap();
        let value = backend.register_state("v", StateKind::Value).unwrap();
        let map = backend.register_state("m", StateKind::Map).unwrap();
        let groups = [0u16, 1, 2, 254, 255, 256, 1000, u16::MAX - 1, u16::MAX];
        for group in groups {
            for k in [&b""[..], b"k", b"\xff\xff\xff\xff\xff\xff"] {
                backend.put(value, key(group, k, b"\xff"), b"v").unwrap();
                backend.map_put(map, key(group, k, b"\xff"), b"\xff\xff", b"v").unwrap();
            }
        }
        backend.flush_cache(false).unwrap();
        // The groups found between the bounds of a range, in each column family.
        let groups_in = |range: RangeInclusive<u16>, cf_name: &str| -> Vec<u16> {
            let (start, end) = key_group_range_bounds(range);
            let cf = instance.column_family(cf_name, "test").unwrap();
            let mut read_options = ReadOptions::default();
            if !end.is_empty() {
                read_options.set_iterate_upper_bound(end);
            }
            let mut iter = instance.db.raw_iterator_cf_opt(&cf, read_options);
            iter.seek(&start);
            let mut found = Vec::new();
            while let Some(k) = iter.key() {
                found.push(u16::from_be_bytes([k[0], k[1]]));
                iter.next();
            }
            iter.status().unwrap();
            found.dedup();
            found
        };
        for cf in ["op/v", "op/m"] {
            assert_eq!(groups_in(0..=u16::MAX, cf), groups);
            assert_eq!(groups_in(1..=255, cf), [1, 2, 254, 255]);
            assert_eq!(groups_in(256..=u16::MAX - 1, cf), [256, 1000, u16::MAX - 1]);
            assert_eq!(groups_in(u16::MAX..=u16::MAX, cf), [u16::MAX]);
            assert_eq!(groups_in(3..=253, cf), Vec::<u16>::new());
            assert_eq!(groups_in(start..=end, cf), Vec::<u16>::new());
        }

        // Dropping the key groups a subtask does not own (as after rescaling) keeps the others.
        // The database changes behind the backend's back: its cache must be empty.
        backend.flush_cache(true).unwrap();
        let (start, end) = key_group_range_bounds(256..=u16::MAX);
        let cf = instance.column_family("op/v", "test").unwrap();
        assert!(end.is_empty());
        instance.db.delete_range_cf(&cf, &start, &vec![0xff; 16]).unwrap();
        drop(cf);
        assert_eq!(groups_in(0..=u16::MAX, "op/v"), [0, 1, 2, 254, 255]);
        assert_eq!(backend.get(value, key(255, b"k", b"\xff")).unwrap(), Some(&b"v"[..]));
        assert_eq!(backend.get(value, key(256, b"k", b"\xff")).unwrap(), None);
    }

    #[test]
    fn snapshots_move_between_heap_and_rocksdb() {
        use crate::state::contract::snapshot_entries;
        use crate::state::heap::HeapKeyedStateBackend;

        let mut heap = HeapKeyedStateBackend::new("op", 0..=9);
        let value = heap.register_state("v", StateKind::Value).unwrap();
        let list = heap.register_state("l", StateKind::List).unwrap();
        let map = heap.register_state("m", StateKind::Map).unwrap();
        for i in 0..100u32 {
            let group = (i % 10) as u16;
            heap.put(value, key(group, &i.to_le_bytes(), b"ns"), &noise(u64::from(i), 10)).unwrap();
            heap.append(list, key(group, b"k", &i.to_le_bytes()), &i.to_le_bytes()).unwrap();
            heap.map_put(map, key(group, b"k", b""), &i.to_be_bytes(), &noise(u64::from(i), 3)).unwrap();
        }
        let from_heap = heap.snapshot().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let instance = RocksDbInstance::open(dir.path()).unwrap();
        let mut rocks = instance.backend("op", 0..=9).unwrap();
        rocks.restore(&from_heap).unwrap();
        for (name, kind) in [("v", StateKind::Value), ("l", StateKind::List), ("m", StateKind::Map)] {
            rocks.register_state(name, kind).unwrap();
        }
        let from_rocks = rocks.snapshot().unwrap();
        assert_eq!(snapshot_entries(&from_rocks), snapshot_entries(&from_heap));

        let mut back = HeapKeyedStateBackend::new("op", 0..=9);
        back.restore(&from_rocks).unwrap();
        for (name, kind) in [("v", StateKind::Value), ("l", StateKind::List), ("m", StateKind::Map)] {
            back.register_state(name, kind).unwrap();
        }
        assert_eq!(snapshot_entries(&back.snapshot().unwrap()), snapshot_entries(&from_heap));
        assert_eq!(back.entry_count(), heap.entry_count());
    }

    #[test]
    fn prefix_successor_is_the_least_greater_string_without_the_prefix() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
        assert_eq!(prefix_successor(b""), None);
    }
}
