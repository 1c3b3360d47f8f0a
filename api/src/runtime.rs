//! The runtime interface: what the taskmanager calls on a job's operators and what it hands them.
//!
//! Not for job authors. These object-safe traits are the whole boundary between the runtime and a
//! job plugin: the runtime implements [`TaskRuntime`], [`KeyedStateBackend`], [`SourceReader`] and
//! [`SinkWriter`]; the plugin implements [`JobEntry`] and [`TaskChain`]. Every call into the plugin
//! catches panics on the plugin's side and returns them as [`Error::UserPanic`], and so do the
//! drops of what the plugin creates ([`TaskChain`]s, [`JobGraph`]s, [`TypedBatch`]es), which
//! report a panic on stderr.
//!
//! [`Error::UserPanic`]: crate::Error::UserPanic

use crate::connectors::{SinkDescriptor, SourceDescriptor};
use crate::error::Result;
use crate::graph::{ChainSpec, JobDescriptor};
use crate::time::Timestamp;
use std::ops::RangeInclusive;

/// Records passed between two tasks of one process as Rust values. Opaque to the runtime, which
/// only moves it from the producing task to the consuming one (or drops it with the channel):
/// both are instances of the same loaded plugin, which alone creates and opens it.
pub struct TypedBatch(Box<dyn std::any::Any + Send>);

impl TypedBatch {
    /// Wraps `records`. Generic, so it runs in the plugin, which makes the box's vtable: dropping
    /// the batch in the runtime runs the plugin's guarded drop of the records.
    pub(crate) fn new<T: Send + 'static>(records: T) -> Self {
        Self(Box::new(crate::plugin::DropGuarded::new(records, "a batch of records in a channel")))
    }

    /// The records, if they are a `T`; else the batch back.
    pub(crate) fn take<T: 'static>(self) -> std::result::Result<T, Self> {
        match self.0.downcast::<crate::plugin::DropGuarded<T>>() {
            Ok(records) => Ok(records.into_inner()),
            Err(other) => Err(Self(other)),
        }
    }
}

impl std::fmt::Debug for TypedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TypedBatch")
    }
}

/// A batch of records arriving at a task: serialized (from another process, or a byte channel)
/// or as Rust values (from a task of the same process).
#[derive(Debug)]
pub enum InputBatch<'a> {
    /// Serialized records.
    Bytes(&'a [u8]),
    /// Records as values.
    Records(TypedBatch),
}

/// Identifies a checkpoint of a job; ids increase.
pub type CheckpointId = u64;

/// The marker that separates the records before a checkpoint from those after it; it travels
/// in-band, in order with the records, from the sources through every task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointBarrier {
    /// The checkpoint.
    pub id: CheckpointId,
    /// When the coordinator triggered it (ms since the epoch).
    pub timestamp: Timestamp,
}

/// The keyed state of one key group, as canonical entries (see [`encode_state_entry`]): the same
/// format whichever backend or operator wrote it, so a snapshot can be restored into another
/// backend or parallelism.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyGroupState {
    /// The key group.
    pub key_group: u16,
    /// Concatenated canonical entries.
    pub entries: Vec<u8>,
}

/// What one operator contributes to a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OperatorSnapshot {
    /// The operator's uid (state is addressed by it).
    pub uid: String,
    /// Keyed state by key group (only groups with state).
    pub keyed: Vec<KeyGroupState>,
    /// Non-keyed state owned by the operator (a source's position, a sink's pending commits).
    pub operator_state: Vec<u8>,
}

/// What an operator restores from (see [`TaskRuntime::restored_state`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoredState {
    /// Keyed state of the old subtasks whose key groups overlap this subtask's, ordered by key
    /// group (groups outside this subtask's range may be included: backends keep their own).
    pub keyed: Vec<KeyGroupState>,
    /// The non-keyed states (a source's position, a sink's pending commits) of the old subtasks
    /// this one restores from, each once: at the parallelism they were
    /// taken with, only this subtask's own; after a change of parallelism (a savepoint restored
    /// with another `-p`, for operators whose descriptor `rescales`), every old subtask's, and
    /// the connector keeps its share (each state records which subtask took it).
    pub operator_states: Vec<Vec<u8>>,
}

/// The snapshot of one task's chain for one checkpoint: the synchronous, consistent part.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChainSnapshot {
    /// The checkpoint.
    pub checkpoint: CheckpointId,
    /// The operators that have state, in chain order.
    pub operators: Vec<OperatorSnapshot>,
}

/// One entry of keyed state, as written by [`encode_state_entry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateEntry<'a> {
    /// Name of the state (or of an internal structure such as timers).
    pub state: &'a str,
    /// Serialized key.
    pub key: &'a [u8],
    /// Serialized namespace (a window; empty for plain keyed state).
    pub namespace: &'a [u8],
    /// User key of map state; empty otherwise.
    pub user_key: &'a [u8],
    /// The stored value bytes.
    pub value: &'a [u8],
}

/// Appends one canonical state entry to `out`.
pub fn encode_state_entry(out: &mut Vec<u8>, entry: StateEntry<'_>) -> Result<()> {
    crate::codec::encode_into(
        &(entry.state, entry.key, entry.namespace, entry.user_key, entry.value),
        out,
        "state entry",
    )
}

/// Iterates the canonical entries of a key group's state.
pub fn state_entries(mut bytes: &[u8]) -> impl Iterator<Item = Result<StateEntry<'_>>> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        match postcard::take_from_bytes::<(&str, &[u8], &[u8], &[u8], &[u8])>(bytes) {
            Ok(((state, key, namespace, user_key, value), rest)) => {
                bytes = rest;
                Some(Ok(StateEntry { state, key, namespace, user_key, value }))
            }
            Err(e) => {
                bytes = &[];
                Some(Err(crate::Error::serialization("deserialize", "state entry", e)))
            }
        }
    })
}

/// Identity and placement of one running subtask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    /// Job id.
    pub job_id: String,
    /// Job name.
    pub job_name: String,
    /// Name of the task (its chained operators' names joined by ` -> `).
    pub task_name: String,
    /// Index of this subtask, `0..parallelism`.
    pub subtask: u32,
    /// Parallelism of the task's vertex.
    pub parallelism: u32,
    /// Number of key groups of the job.
    pub max_parallelism: u32,
    /// Execution attempt (0 for the first deployment).
    pub attempt: u32,
    /// Whether the keyed state backend keeps state in memory (`false` for RocksDB): operators
    /// that can keep typed state in memory do so only then.
    pub heap_state: bool,
}

impl TaskInfo {
    /// The key groups this subtask owns.
    pub fn key_groups(&self) -> RangeInclusive<u16> {
        crate::keygroup::key_group_range(self.max_parallelism, self.parallelism, self.subtask)
    }
}

/// Log levels of user and operator messages forwarded to the runtime's logger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something is suspicious.
    Warn,
    /// Normal operation.
    Info,
    /// Detail for debugging.
    Debug,
}

/// Services the runtime provides to one task's operator chain.
pub trait TaskRuntime {
    /// Who this task is.
    fn info(&self) -> &TaskInfo;

    /// Current processing time, milliseconds since the epoch.
    fn processing_time(&self) -> Timestamp;

    /// Sends a serialized batch of `records` records to channel `channel` of task output `output`
    /// (and counts them as records out).
    ///
    /// # Errors
    /// [`crate::Error::Cancelled`] when the task is cancelled while the channel is full.
    ///
    /// Blocks while the channel has no room: this is how backpressure reaches producers.
    fn send_batch(&mut self, output: usize, channel: usize, batch: Vec<u8>, records: usize) -> Result<()>;

    /// Whether channel `channel` of task output `output` stays inside this process, so that
    /// [`TaskRuntime::send_records`] can hand over Rust values instead of bytes.
    fn is_local(&self, output: usize, channel: usize) -> bool;

    /// Sends a batch of `records` records as Rust values to a local channel (see
    /// [`TaskRuntime::is_local`]). Blocks like [`TaskRuntime::send_batch`].
    fn send_records(&mut self, output: usize, channel: usize, batch: TypedBatch, records: usize) -> Result<()>;

    /// Sends a watermark to every channel of task output `output`.
    fn send_watermark(&mut self, output: usize, watermark: Timestamp) -> Result<()>;

    /// Marks task output `output` idle (no records expected for now) or active again.
    fn send_idleness(&mut self, output: usize, idle: bool) -> Result<()>;

    /// Opens the keyed state of operator `operator_uid` for this subtask's key groups.
    fn keyed_state_backend(&mut self, operator_uid: &str) -> Result<Box<dyn KeyedStateBackend>>;

    /// Opens this subtask's share of a taskmanager-side source.
    fn open_source(&mut self, source: &SourceDescriptor) -> Result<Box<dyn SourceReader>>;

    /// Opens this subtask's writer for a sink. `restored` holds the states its
    /// [`SinkWriter::pre_commit`] returned for the checkpoint the job restarts from
    /// ([`RestoredState::operator_states`]: this subtask's own, or every old subtask's after a
    /// change of parallelism); empty on a fresh start, when the writer discards whatever an
    /// earlier run of the sink left.
    fn open_sink(&mut self, sink: &SinkDescriptor, restored: &[Vec<u8>]) -> Result<Box<dyn SinkWriter>>;

    /// The state operator `operator_uid` contributed to the checkpoint this task restarts from,
    /// handed out once (`None` on a fresh start or when the operator had no state). Operators
    /// take it in `open`.
    fn restored_state(&mut self, operator_uid: &str) -> Option<RestoredState> {
        let _ = operator_uid;
        None
    }

    /// Registers what commits this subtask's sink when a checkpoint of the attempt completes
    /// (and, for [`FINAL_CHECKPOINT`], when the whole job has finished). It lives until the
    /// attempt is over on this process, past the end of the task.
    ///
    /// # Errors
    /// [`crate::Error::InvalidJob`] when the runtime cannot commit (no checkpoint ever
    /// completes in it).
    fn add_committer(&mut self, committer: std::sync::Arc<dyn CheckpointCommitter>) -> Result<()> {
        let _ = committer;
        Err(crate::Error::InvalidJob("this runtime does not commit sinks".into()))
    }

    /// Counts records that entered the task's chain (from a source or an input channel).
    fn add_records_in(&mut self, records: u64);

    /// Counts records that left the chain (to an output channel or a sink).
    fn add_records_out(&mut self, records: u64);

    /// Forwards a message to the runtime's logger, tagged with the task's ids.
    fn log(&self, level: LogLevel, message: &str);

    /// Registers a user metric of operator `operator` (its name) in this subtask; the runtime
    /// serves it with the task's metrics. A runtime without metrics keeps nothing.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] when the operator registered `name` already.
    fn register_metric(&self, operator: &str, name: &str, metric: crate::metrics::UserMetric) -> Result<()> {
        let _ = (operator, name, metric);
        Ok(())
    }

    /// The input watermark of operator `operator` (its name) of the chain advanced to
    /// `watermark` (for its `currentInputWatermark` metric). Called per watermark, never per
    /// record; a runtime without metrics ignores it.
    fn operator_input_watermark(&self, operator: &str, watermark: Timestamp) {
        let _ = (operator, watermark);
    }
}

/// The merge function of [`KeyedStateBackend::update`]: current value in, new value out.
pub type MergeFn<'a> = dyn FnMut(Option<&[u8]>, &mut Vec<u8>) -> Result<()> + 'a;

/// Kinds of keyed state, which decide how a backend stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    /// One value per key and namespace.
    Value,
    /// An appendable list per key and namespace (elements length-prefixed by [`KeyedStateBackend::append`]).
    List,
    /// A map from user key to value per key and namespace; supports scans.
    Map,
}

/// Dense handle of a registered state within one backend.
pub type StateId = u32;

/// The address of a state entry: `(key group, key, namespace)` plus a user key for map state.
#[derive(Debug, Clone, Copy)]
pub struct StateKey<'a> {
    /// Key group of `key`; must be in the backend's range.
    pub key_group: u16,
    /// Serialized key.
    pub key: &'a [u8],
    /// Serialized namespace (a window for window state; empty for plain keyed state).
    pub namespace: &'a [u8],
}

/// Byte-level keyed state of one operator in one subtask, partitioned by key group.
///
/// The typed state handles ([`crate::state`]) encode keys and values and call this. The runtime
/// provides implementations (heap, and RocksDB in a later version); their contract is a sorted
/// key-value store per key group.
pub trait KeyedStateBackend: Send {
    /// Registers state `name` (or returns its id if already registered with the same kind).
    ///
    /// # Errors
    /// [`crate::Error::Runtime`] when `name` is registered with another kind.
    fn register_state(&mut self, name: &str, kind: StateKind) -> Result<StateId>;

    /// The value at `key` (value and list state), `None` when absent.
    fn get(&mut self, state: StateId, key: StateKey<'_>) -> Result<Option<&[u8]>>;

    /// Replaces the value at `key`.
    fn put(&mut self, state: StateId, key: StateKey<'_>, value: &[u8]) -> Result<()>;

    /// Read-modify-write of the value at `key` (value state) in one lookup: `merge` gets the
    /// current value (`None` when absent) and writes the new value into `out`, which is empty
    /// when it is called. Returns whether a value existed before.
    ///
    /// # Errors
    /// Whatever `merge` returns (the value is then unchanged), or a backend failure.
    fn update(&mut self, state: StateId, key: StateKey<'_>, merge: &mut MergeFn<'_>) -> Result<bool> {
        let mut out = Vec::new();
        let existed = match self.get(state, key)? {
            Some(current) => {
                merge(Some(current), &mut out)?;
                true
            }
            None => {
                merge(None, &mut out)?;
                false
            }
        };
        self.put(state, key, &out)?;
        Ok(existed)
    }

    /// Appends one encoded element to the list at `key` (creating it).
    fn append(&mut self, state: StateId, key: StateKey<'_>, element: &[u8]) -> Result<()>;

    /// Removes the value (or list, or whole map) at `key`.
    fn remove(&mut self, state: StateId, key: StateKey<'_>) -> Result<()>;

    /// Map state: the value of `user_key` in the map at `key`.
    fn map_get(&mut self, state: StateId, key: StateKey<'_>, user_key: &[u8]) -> Result<Option<&[u8]>>;

    /// Map state: sets `user_key` to `value` in the map at `key`.
    fn map_put(&mut self, state: StateId, key: StateKey<'_>, user_key: &[u8], value: &[u8]) -> Result<()>;

    /// Map state: removes `user_key` from the map at `key`.
    fn map_remove(&mut self, state: StateId, key: StateKey<'_>, user_key: &[u8]) -> Result<()>;

    /// The synchronous part of a snapshot: every entry, grouped by key group, in the canonical
    /// format (named by the registered state names).
    ///
    /// # Errors
    /// Backends that cannot snapshot this way say so.
    fn snapshot(&mut self) -> Result<Vec<KeyGroupState>> {
        Err(crate::Error::runtime("state backend", "this backend does not take snapshots"))
    }

    /// Loads the entries of a snapshot (of any backend) for the key groups this backend owns;
    /// entries of other key groups are ignored.
    fn restore(&mut self, groups: &[KeyGroupState]) -> Result<()> {
        let _ = groups;
        Err(crate::Error::runtime("state backend", "this backend does not restore snapshots"))
    }

    /// Removes the expired entries of state `state` (of kind `kind`), whose values carry their
    /// write time ([`Expiry`]): a value or map entry when it expired, a list's expired elements
    /// (the list when none is left). Returns how many entries or elements it removed. This is how
    /// keys that are never read again leave a state with a time-to-live.
    fn remove_expired(&mut self, state: StateId, kind: StateKind, expiry: Expiry) -> Result<u64>;

    /// Map state: calls `visit` for every entry of the map at `key`, in user-key byte order,
    /// until it returns `false`.
    fn map_scan(
        &mut self,
        state: StateId,
        key: StateKey<'_>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()>;

    /// Map state: [`KeyedStateBackend::map_scan`] of the user keys from `from` (inclusive) to
    /// `to` (exclusive; `None`: to the end), in byte order. A backend that keeps maps sorted
    /// seeks to `from` instead of walking (and, after deletions, skipping the tombstones of) the
    /// entries before it; the default filters a whole scan.
    fn map_scan_range(
        &mut self,
        state: StateId,
        key: StateKey<'_>,
        (from, to): (&[u8], Option<&[u8]>),
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.map_scan(state, key, &mut |user_key, value| {
            if user_key < from {
                return true;
            }
            if to.is_some_and(|to| user_key >= to) {
                return false;
            }
            visit(user_key, value)
        })
    }
}

/// Records read by a taskmanager-side source, in a form both sides understand without sharing
/// Rust types beyond the standard library.
#[derive(Debug, Default)]
pub struct RawBatch {
    /// Lines of a text source.
    pub lines: Vec<String>,
    /// Sequence numbers of a generator: `first, first + stride, ...`, `count` of them.
    pub sequence: Option<(u64, u64, u64)>,
    /// Sequence numbers of a generator subtask that reads several progressions (after a change
    /// of parallelism), in increasing order; used instead of `sequence`.
    pub numbers: Vec<u64>,
    /// Records of a Kafka source.
    pub kafka: KafkaBatch,
    /// The source's splits (Kafka partitions) as of this batch, for per-split watermarks.
    pub splits: SplitStatus,
}

impl RawBatch {
    /// Empties the batch, keeping its allocations (and what stays valid across batches: topic
    /// names, the split count).
    pub fn clear(&mut self) {
        self.lines.clear();
        self.sequence = None;
        self.numbers.clear();
        self.kafka.clear();
        self.splits.finished.clear();
    }
}

/// The splits of a source subtask. Splits are numbered `0..assigned` in the order the reader
/// took them (a split's number never changes); records name theirs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SplitStatus {
    /// Splits assigned so far (discovery may add more; none are taken away).
    pub assigned: u32,
    /// Splits that ended in this batch (bounded reading reached its end offset).
    pub finished: Vec<u32>,
}

/// A byte range `start..end` in a batch's data buffer.
pub type ByteRange = (u32, u32);

/// Kafka records read by a source, keys, values and header values back to back in one buffer:
/// no allocation per record.
#[derive(Debug, Default)]
pub struct KafkaBatch {
    /// Keys, values, header names and header values.
    pub data: Vec<u8>,
    /// The records, in the order they were read.
    pub records: Vec<KafkaRawRecord>,
    /// Headers of all records; each record names its range.
    pub headers: Vec<RawHeader>,
    /// Topic names by index (kept across batches; the reader only appends).
    pub topics: Vec<String>,
}

impl KafkaBatch {
    fn clear(&mut self) {
        self.data.clear();
        self.records.clear();
        self.headers.clear();
    }

    /// Appends `bytes` to the data buffer; returns their range.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> ByteRange {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(bytes);
        (start, self.data.len() as u32)
    }

    /// The bytes of `range`.
    pub fn bytes(&self, range: ByteRange) -> &[u8] {
        self.data.get(range.0 as usize..range.1 as usize).unwrap_or_default()
    }
}

/// One record of a [`KafkaBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KafkaRawRecord {
    /// The split (partition of this subtask) it came from.
    pub split: u32,
    /// Index into [`KafkaBatch::topics`].
    pub topic: u32,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The record's timestamp (create or log-append time), ms since the epoch, if it has one.
    pub timestamp: Option<i64>,
    /// Key bytes.
    pub key: Option<ByteRange>,
    /// Value bytes (`None`: a tombstone).
    pub value: Option<ByteRange>,
    /// Range in [`KafkaBatch::headers`].
    pub headers: (u32, u32),
}

/// A header of a Kafka record: its name and value as ranges of the batch's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHeader {
    /// The name (UTF-8).
    pub name: ByteRange,
    /// The value.
    pub value: Option<ByteRange>,
}

/// A record a source could not deserialize, for its malformed-record policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedRecord {
    /// Index of the record in the batch's [`KafkaBatch::records`].
    pub index: usize,
    /// Why it could not be deserialized.
    pub error: String,
}

/// Records for a taskmanager-side sink that writes records with keys, headers and a topic
/// (Kafka), keys, values and header values back to back in one buffer.
#[derive(Debug, Default)]
pub struct SinkRecords {
    /// Topic names, keys, values, header names and header values.
    pub data: Vec<u8>,
    /// The records, in order.
    pub records: Vec<SinkRecord>,
    /// Headers of all records.
    pub headers: Vec<RawHeader>,
}

impl SinkRecords {
    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.data.clear();
        self.records.clear();
        self.headers.clear();
    }

    /// Appends `bytes` to the data buffer; returns their range.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> ByteRange {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(bytes);
        (start, self.data.len() as u32)
    }

    /// The bytes of `range`.
    pub fn bytes(&self, range: ByteRange) -> &[u8] {
        self.data.get(range.0 as usize..range.1 as usize).unwrap_or_default()
    }
}

/// One record of [`SinkRecords`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkRecord {
    /// The topic (UTF-8); `None`: the sink's default topic.
    pub topic: Option<ByteRange>,
    /// The partition; `None`: chosen by the key (or spread when there is none).
    pub partition: Option<i32>,
    /// Timestamp, ms since the epoch; `None`: the time it is produced.
    pub timestamp: Option<i64>,
    /// Key bytes.
    pub key: Option<ByteRange>,
    /// Value bytes (`None`: a tombstone).
    pub value: Option<ByteRange>,
    /// Range in [`SinkRecords::headers`].
    pub headers: (u32, u32),
}

/// What a source poll produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceStatus {
    /// Records were produced (possibly zero); poll again.
    Ready,
    /// Nothing before processing time `until` (rate limit, pause); the task may wait.
    WaitUntil(Timestamp),
    /// The source is exhausted.
    Finished,
}

/// This subtask's share of a taskmanager-side source.
pub trait SourceReader: Send {
    /// Reads up to `max_records` records into `out` (cleared by the caller).
    fn read(&mut self, max_records: usize, out: &mut RawBatch) -> Result<SourceStatus>;

    /// The position after the last record read, for a checkpoint (opaque to the operator).
    fn position(&self) -> Vec<u8>;

    /// Continues from positions [`SourceReader::position`] returned
    /// ([`RestoredState::operator_states`]): this subtask's own at the parallelism they were
    /// taken with; after a change of parallelism, every old subtask's, of which the reader keeps
    /// its share of the splits (readers of sources that do not
    /// [`rescale`](crate::connectors::SourceDescriptor::rescales) refuse them).
    ///
    /// # Errors
    /// A position that does not belong to this source or subtask.
    fn restore(&mut self, positions: &[Vec<u8>]) -> Result<()>;

    /// The position of checkpoint `checkpoint` was just taken ([`SourceReader::position`]): a
    /// reader that reports progress elsewhere when the checkpoint completes (Kafka commits
    /// offsets to its consumer group) remembers it. The default does nothing.
    fn checkpoint(&mut self, checkpoint: CheckpointId) {
        let _ = checkpoint;
    }

    /// Records of the last batch that could not be deserialized, for a dead-letter policy: the
    /// reader writes them (original bytes, the error in a header) to `topic`.
    ///
    /// # Errors
    /// The reader has no dead-letter output, or writing failed.
    fn dead_letter(&mut self, topic: &str, batch: &RawBatch, records: &[MalformedRecord]) -> Result<()> {
        let _ = (topic, batch, records);
        Err(crate::Error::InvalidJob("this source has no dead-letter output".into()))
    }
}

/// The checkpoint id that stands for the end of a bounded job: committing it makes everything a
/// sink finished visible (see [`SinkWriter::finish`]).
pub const FINAL_CHECKPOINT: CheckpointId = CheckpointId::MAX;

/// This subtask's writer of a sink.
///
/// Transactional writers (the exactly-once file sink) follow two-phase commit: records written
/// between two barriers belong to one transaction; [`SinkWriter::pre_commit`] at barrier `n`
/// closes it (durably, still invisible) and returns the writer's state, which the checkpoint
/// stores; the runtime commits transaction `n` once checkpoint `n` is complete. A writer opened
/// with restored state commits what that state had pending and discards everything written after
/// it. Non-transactional writers (stdout) keep the defaults.
pub trait SinkWriter: Send {
    /// Writes newline-terminated records.
    fn write(&mut self, data: &[u8]) -> Result<()>;

    /// Writes records with keys, headers and topics (Kafka sinks).
    ///
    /// # Errors
    /// The writer takes only lines (the default), or writing failed.
    fn write_records(&mut self, records: &SinkRecords) -> Result<()> {
        let _ = records;
        Err(crate::Error::InvalidJob("this sink writes lines, not records with keys".into()))
    }

    /// Barrier `checkpoint` reached the sink: everything written so far is pre-committed
    /// (durable, not yet visible). Returns the state to store in the checkpoint (what is pending
    /// commit), restored through [`TaskRuntime::open_sink`].
    fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<Vec<u8>> {
        let _ = checkpoint;
        Ok(Vec::new())
    }

    /// Completes the output at end of input (flush, sync, close). Transactional writers
    /// pre-commit what they hold as [`FINAL_CHECKPOINT`], which the runtime commits when the whole
    /// job has finished.
    fn finish(&mut self) -> Result<()>;
}

/// What a sink runs when a checkpoint completes: makes visible what it pre-committed for
/// checkpoints up to it. Made by a sink the job implements
/// ([`TwoPhaseCommitSink`](crate::sink::TwoPhaseCommitSink)) and registered with
/// [`TaskRuntime::add_committer`]; the runtime calls it from any thread, after the task may
/// have ended.
pub trait CheckpointCommitter: Send + Sync {
    /// Commits everything pre-committed for checkpoints `<= checkpoint`
    /// ([`FINAL_CHECKPOINT`] commits everything). Idempotent.
    ///
    /// # Errors
    /// A commit that failed: what it covered stays pending, and the next call tries again.
    fn commit(&self, checkpoint: CheckpointId) -> Result<()>;
}

/// One task's instantiated operator chain, owned and driven by the task thread.
///
/// Calls happen on one thread, in order. After any method returns an error the chain is failed
/// and only dropped.
pub trait TaskChain: Send {
    /// Opens the operators (state, connectors, user `open` hooks).
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()>;

    /// Source chains: produce the next batch and push it through the chain.
    fn poll_source(&mut self, rt: &mut dyn TaskRuntime) -> Result<SourceStatus>;

    /// Processes one batch that arrived on input `input` of the head operator.
    fn process_batch(&mut self, input: usize, batch: InputBatch<'_>, rt: &mut dyn TaskRuntime) -> Result<()>;

    /// The combined input watermark advanced to `watermark`.
    fn process_watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()>;

    /// All inputs became idle (`true`) or one became active again (`false`).
    fn process_idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()>;

    /// Processing time reached `now`: fire due processing-time timers and periodic work.
    fn process_time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()>;

    /// The earliest processing time at which [`TaskChain::process_time`] has work to do.
    ///
    /// A panic here cannot be returned: the chain keeps it and answers `Some(Timestamp::MIN)`,
    /// so that the task calls it at once, and that call returns the panic.
    fn next_processing_time(&self) -> Option<Timestamp>;

    /// All inputs ended: flush and finish every operator (sinks complete their output).
    fn end_input(&mut self, rt: &mut dyn TaskRuntime) -> Result<()>;

    /// Source chains, stop with a savepoint: the source emits nothing more (its next
    /// [`TaskChain::end_input`] adds no final watermark); with `drain`, it first emits the
    /// maximum watermark, so that every window and event-time timer downstream fires before the
    /// savepoint's barrier.
    fn stop_source(&mut self, drain: bool, rt: &mut dyn TaskRuntime) -> Result<()>;

    /// The task is over, however it ended (finished, stopped, cancelled, failed): the user
    /// functions' `close` hooks run and the operators release what they hold. The runtime calls
    /// it once, last, even after another method failed; nothing is emitted after it.
    fn close(&mut self, rt: &mut dyn TaskRuntime) -> Result<()>;

    /// Takes the synchronous part of checkpoint `barrier`: every operator flushes what it emitted
    /// before the barrier to its outputs and contributes its state. The runtime sends the barrier
    /// downstream right after, so it follows exactly the records before it.
    fn snapshot(&mut self, barrier: CheckpointBarrier, rt: &mut dyn TaskRuntime) -> Result<ChainSnapshot>;
}

/// The logical job a plugin builds: its descriptor, and its factories (opaque to the runtime).
pub struct JobGraph {
    /// The serializable graph the jobmanager plans from.
    pub descriptor: JobDescriptor,
    /// A trait object made by the code that built the graph, so that the runtime's drop of the
    /// graph runs that code's guarded drop of the user functions the factories hold.
    pub(crate) factories: Box<dyn crate::factory::BuiltFactories>,
}

impl std::fmt::Debug for JobGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobGraph").field("descriptor", &self.descriptor).finish_non_exhaustive()
    }
}

/// A job as the runtime sees it: what `export_job!` exports from a plugin.
pub trait JobEntry: Send + Sync {
    /// Runs the job's build function with `args`.
    fn build(&self, args: &[String]) -> Result<JobGraph>;

    /// Instantiates the operator chain `spec` of `graph` for one subtask.
    fn instantiate(&self, graph: &JobGraph, spec: &ChainSpec, info: &TaskInfo) -> Result<Box<dyn TaskChain>>;

    /// Reads `value`, a stored value of state `state` of node `node` (a canonical entry's
    /// value, as a snapshot holds it), as the type the node declares for that state: whether a
    /// savepoint's state restores into this job (`weir savepoint check`). `Ok(false)` when the
    /// node declares no such state with a type to check.
    ///
    /// # Errors
    /// The value does not read as the declared type, with the codec's reason.
    fn check_state_value(
        &self,
        graph: &JobGraph,
        node: crate::graph::NodeId,
        state: &str,
        value: &[u8],
    ) -> Result<bool>;
}

/// Encodes one list element the way [`KeyedStateBackend::append`] stores it: a little-endian
/// `u32` length, then the bytes. Backends must use this format for list values.
pub fn encode_list_element(out: &mut Vec<u8>, element: &[u8]) {
    out.extend_from_slice(&(element.len() as u32).to_le_bytes());
    out.extend_from_slice(element);
}

/// Iterates the elements of a stored list value.
pub fn list_elements(mut bytes: &[u8]) -> impl Iterator<Item = Result<&[u8]>> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
            bytes = &[];
            return Some(Err(crate::Error::serialization("deserialize", "list state", "truncated element length")));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            bytes = &[];
            return Some(Err(crate::Error::serialization("deserialize", "list state", "truncated element")));
        }
        let (element, rest) = rest.split_at(len);
        bytes = rest;
        Some(Ok(element))
    })
}

/// When the values of a state with a time-to-live expire: each stored value (each list
/// element) starts with its write time, a little-endian `i64` of processing time, and expires
/// `ttl_ms` after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// The time-to-live, ms.
    pub ttl_ms: i64,
    /// The current processing time, ms since the epoch.
    pub now: Timestamp,
}

impl Expiry {
    /// Whether the stored value (or list element) `stored` expired. A value too short to carry a
    /// write time is kept.
    pub fn expired(&self, stored: &[u8]) -> bool {
        stored
            .first_chunk::<8>()
            .is_some_and(|stamp| self.now.saturating_sub(i64::from_le_bytes(*stamp)) >= self.ttl_ms)
    }

    /// The live elements of the stored list `list` into `out` (cleared first); returns how many
    /// elements expired.
    ///
    /// # Errors
    /// A corrupt list.
    pub fn live_elements(&self, list: &[u8], out: &mut Vec<u8>) -> Result<u64> {
        out.clear();
        let mut expired = 0;
        for element in list_elements(list) {
            let element = element?;
            if self.expired(element) {
                expired += 1;
            } else {
                encode_list_element(out, element);
            }
        }
        Ok(expired)
    }
}
