//! The interval join on the heap state backend: both sides' elements kept in memory as typed
//! values, per key ordered by timestamp, so that an element probes exactly the other side's
//! timestamps in its interval and nothing is encoded per record.
//!
//! Semantics are those of the generic operator (`interval_join.rs`: a keyed co-process function
//! over map state, used with byte-level backends). Instead of one event-time timer per element,
//! each key with buffered elements is queued once, at its earliest cleanup time; when the
//! watermark passes it, every element of the key that can join nothing any more is dropped and
//! the key is queued again at its next cleanup time (or forgotten when it holds nothing). A
//! snapshot writes the entries the generic operator keeps in a state backend (states
//! `interval-join-left` and `interval-join-right`: user key the timestamp, value the elements at
//! it; and an event-time timer at each bucket's cleanup time), so either operator restores the
//! other's checkpoints and savepoints.

use crate::chain::{HeadOperator, Output, StreamRecord, min_time};
use crate::codec::{decode, encode_into, take_batch};
use crate::error::{Error, Result};
use crate::functions::{Collector, JoinContext, ProcessJoinFunction, RuntimeContext};
use crate::keygroup::key_group_for_key_bytes;
use crate::operators::interval_join::{Interval, LEFT, OrderedTime, RIGHT};
use crate::operators::side_outputs::SideOutputs;
use crate::runtime::{
    CheckpointId, InputBatch, KeyGroupState, OperatorSnapshot, SourceStatus, StateEntry, TaskRuntime,
    encode_state_entry, state_entries,
};
use crate::time::{MIN_WATERMARK, NO_TIMESTAMP, Timestamp};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::ops::{Bound, RangeInclusive};
use std::sync::Arc;

/// A serialized key, inline when short.
type KeyBytes = SmallVec<[u8; 24]>;

/// The elements of one side at one timestamp: usually one, kept inline.
type Bucket<T> = SmallVec<[T; 1]>;

/// How many joined pairs are buffered before they go downstream.
const FLUSH_AT: usize = 4096;

/// One key's buffered elements, by timestamp.
struct KeyBuffers<A, B> {
    key: KeyBytes,
    left: BTreeMap<Timestamp, Bucket<A>>,
    right: BTreeMap<Timestamp, Bucket<B>>,
    /// The cleanup time this key is queued at (the earliest of its queue entries that counts).
    scheduled: Option<Timestamp>,
}

/// The interval join's operator with the heap backend.
pub(crate) struct HeapIntervalJoinHead<K, A, B, O, K1, K2, F> {
    pub(crate) key1: Arc<K1>,
    pub(crate) key2: Arc<K2>,
    pub(crate) interval: Interval,
    pub(crate) function: F,
    pub(crate) left_late: Option<String>,
    pub(crate) right_late: Option<String>,
    /// Each key's slot in `buffers`.
    slots: FxHashMap<KeyBytes, u32>,
    buffers: Vec<Option<KeyBuffers<A, B>>>,
    free: Vec<u32>,
    /// Keys by the time the watermark must reach to drop some of their elements.
    cleanup: BTreeMap<Timestamp, SmallVec<[u32; 2]>>,
    watermark: Timestamp,
    first: Vec<StreamRecord<A>>,
    second: Vec<StreamRecord<B>>,
    key_buffer: Vec<u8>,
    pub(crate) out: Output<O>,
    pub(crate) side: SideOutputs,
    key_groups: RangeInclusive<u16>,
    max_parallelism: u32,
    pub(crate) name: String,
    pub(crate) uid: String,
    _key: std::marker::PhantomData<fn() -> K>,
}

impl<K, A, B, O, K1, K2, F> HeapIntervalJoinHead<K, A, B, O, K1, K2, F> {
    #[allow(clippy::too_many_arguments, reason = "the parts of one join, assembled in one place")]
    pub(crate) fn new(
        (key1, key2): (Arc<K1>, Arc<K2>),
        interval: Interval,
        function: F,
        (left_late, right_late): (Option<String>, Option<String>),
        out: Output<O>,
        side: SideOutputs,
        name: &str,
        uid: &str,
    ) -> Self {
        Self {
            key1,
            key2,
            interval,
            function,
            left_late,
            right_late,
            slots: FxHashMap::default(),
            buffers: Vec::new(),
            free: Vec::new(),
            cleanup: BTreeMap::new(),
            watermark: MIN_WATERMARK,
            first: Vec::new(),
            second: Vec::new(),
            key_buffer: Vec::new(),
            out,
            side,
            key_groups: crate::keygroup::key_group_range(crate::keygroup::DEFAULT_MAX_PARALLELISM, 1, 0),
            max_parallelism: crate::keygroup::DEFAULT_MAX_PARALLELISM,
            name: name.to_owned(),
            uid: uid.to_owned(),
            _key: std::marker::PhantomData,
        }
    }

    fn is_late(&self, timestamp: Timestamp) -> bool {
        self.watermark != MIN_WATERMARK && timestamp <= self.watermark
    }

    /// The slot of the key in `key_buffer`, made when the key has none.
    fn slot(&mut self) -> u32 {
        if let Some(&slot) = self.slots.get(&self.key_buffer[..]) {
            return slot;
        }
        let key = KeyBytes::from_slice(&self.key_buffer);
        let buffers = KeyBuffers { key: key.clone(), left: BTreeMap::new(), right: BTreeMap::new(), scheduled: None };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.buffers[slot as usize] = Some(buffers);
                slot
            }
            None => {
                self.buffers.push(Some(buffers));
                (self.buffers.len() - 1) as u32
            }
        };
        self.slots.insert(key, slot);
        slot
    }

    /// Queues `slot` for cleanup at `due` unless it is queued earlier already.
    fn schedule(&mut self, slot: u32, due: Timestamp) {
        let Some(buffers) = self.buffers[slot as usize].as_mut() else { return };
        if buffers.scheduled.is_none_or(|at| due < at) {
            buffers.scheduled = Some(due);
            self.cleanup.entry(due).or_default().push(slot);
        }
    }

    /// The earliest time the watermark must reach to drop some element of `buffers`.
    fn next_cleanup(interval: &Interval, buffers: &KeyBuffers<A, B>) -> Option<Timestamp> {
        let left = buffers.left.keys().next().map(|&t| interval.left_cleanup(t));
        let right = buffers.right.keys().next().map(|&t| interval.right_cleanup(t));
        match (left, right) {
            (Some(l), Some(r)) => Some(l.min(r)),
            (l, r) => l.or(r),
        }
    }

    /// The watermark reached `watermark`: drops the elements that can join nothing any more.
    fn clean_up(&mut self, watermark: Timestamp) {
        while let Some(entry) = self.cleanup.first_entry() {
            if *entry.key() > watermark {
                break;
            }
            let (time, slots) = entry.remove_entry();
            for slot in slots {
                let Some(buffers) = self.buffers[slot as usize].as_mut() else { continue };
                if buffers.scheduled != Some(time) {
                    continue; // queued earlier again since, or a reused slot: that entry counts
                }
                let interval = self.interval;
                retain_after(&mut buffers.left, |t| interval.left_cleanup(t) <= watermark);
                retain_after(&mut buffers.right, |t| interval.right_cleanup(t) <= watermark);
                match Self::next_cleanup(&interval, buffers) {
                    Some(due) => {
                        buffers.scheduled = Some(due);
                        self.cleanup.entry(due).or_default().push(slot);
                    }
                    None => {
                        let key = std::mem::take(&mut buffers.key);
                        self.buffers[slot as usize] = None;
                        self.slots.remove(&key[..]);
                        self.free.push(slot);
                    }
                }
            }
        }
    }
}

/// Drops the leading entries of `map` (ordered by timestamp) for which `done` holds; `done` must
/// hold for a prefix of the timestamps.
fn retain_after<V>(map: &mut BTreeMap<Timestamp, V>, done: impl Fn(Timestamp) -> bool) {
    while let Some(entry) = map.first_entry() {
        if !done(*entry.key()) {
            break;
        }
        entry.remove();
    }
}

/// The range of timestamps `(low, high)` with its bounds' inclusivity, or `None` when empty
/// (`BTreeMap::range` panics on a reversed range or on equal excluded bounds).
fn bounds(
    low: Timestamp,
    high: Timestamp,
    low_inclusive: bool,
    high_inclusive: bool,
) -> Option<(Bound<Timestamp>, Bound<Timestamp>)> {
    if low > high || (low == high && !(low_inclusive && high_inclusive)) {
        return None;
    }
    let low = if low_inclusive { Bound::Included(low) } else { Bound::Excluded(low) };
    let high = if high_inclusive { Bound::Included(high) } else { Bound::Excluded(high) };
    Some((low, high))
}

/// Joins an element at `t` with the other side's elements in `range` (through `join`, given
/// this side's element first), then buffers it.
fn probe_and_buffer<T: Clone, U: Clone>(
    mine: &mut BTreeMap<Timestamp, Bucket<T>>,
    other: &BTreeMap<Timestamp, Bucket<U>>,
    range: Option<(Bound<Timestamp>, Bound<Timestamp>)>,
    (element, t): (T, Timestamp),
    mut join: impl FnMut((T, Timestamp), (U, Timestamp)) -> Result<()>,
) -> Result<()> {
    if let Some(range) = range {
        for (&other_t, others) in other.range(range) {
            for o in others {
                join((element.clone(), t), (o.clone(), other_t))?;
            }
        }
    }
    mine.entry(t).or_default().push(element);
    Ok(())
}

/// A late element goes to the side output `tag` when there is one; else it is dropped.
fn late<T: Send + 'static>(side: &mut SideOutputs, tag: Option<&str>, element: T, t: Timestamp) {
    if let Some(tag) = tag {
        side.emit(tag, element, t);
    }
}

/// Appends one side's buffered elements of `key` to `entries` as the generic operator keeps
/// them: map state `state` (user key the timestamp, value the elements) and an event-time timer
/// at each bucket's cleanup time.
fn snapshot_side<T: crate::Data>(
    entries: &mut Vec<u8>,
    key: &[u8],
    state: &str,
    side: &BTreeMap<Timestamp, Bucket<T>>,
    cleanup: impl Fn(Timestamp) -> Timestamp,
) -> Result<()> {
    let (mut user_key, mut value) = (Vec::new(), Vec::new());
    for (&t, elements) in side {
        user_key.clear();
        value.clear();
        encode_into(&OrderedTime::new(t), &mut user_key, state)?;
        encode_into(&elements[..], &mut value, state)?;
        encode_state_entry(entries, StateEntry { state, key, namespace: &[], user_key: &user_key, value: &value })?;
        let due = cleanup(t).to_be_bytes();
        let timer = StateEntry { state: "__timers/event", key, namespace: &[], user_key: &[], value: &due };
        encode_state_entry(entries, timer)?;
    }
    Ok(())
}

/// The event timestamp of an element, or the error of a stream without event time.
fn timestamp_of(timestamp: Timestamp) -> Result<Timestamp> {
    if timestamp == NO_TIMESTAMP {
        return Err(Error::InvalidJob(
            "an interval join needs event timestamps on both inputs: assign them with \
             assign_timestamps_and_watermarks (or read a source that has them)"
                .into(),
        ));
    }
    Ok(timestamp)
}

impl<K, A, B, O, K1, K2, F> HeapIntervalJoinHead<K, A, B, O, K1, K2, F>
where
    K: crate::Data,
    A: crate::Data,
    B: crate::Data,
    O: crate::Data,
    K1: Fn(&A) -> K + Send + Sync + 'static,
    K2: Fn(&B) -> K + Send + Sync + 'static,
    F: ProcessJoinFunction<A, B, O>,
{
    /// Calls the join function for one pair; the output carries the larger timestamp.
    fn join(
        function: &mut F,
        (out, side): (&mut Output<O>, &mut SideOutputs),
        (left, left_timestamp): (A, Timestamp),
        (right, right_timestamp): (B, Timestamp),
    ) -> Result<()> {
        let mut ctx = JoinContext {
            left_timestamp,
            right_timestamp,
            out: Collector::new(&mut out.buffer, left_timestamp.max(right_timestamp)),
            side,
        };
        function.process_element(left, right, &mut ctx)
    }

    /// The slot of `key`, made when the key has none.
    fn slot_of(&mut self, key: &K) -> Result<u32> {
        self.key_buffer.clear();
        encode_into(key, &mut self.key_buffer, "key")?;
        Ok(self.slot())
    }

    fn process_left(&mut self, left: A, timestamp: Timestamp) -> Result<()> {
        let t = timestamp_of(timestamp)?;
        if self.is_late(t) {
            late(&mut self.side, self.left_late.as_deref(), left, t);
            return Ok(());
        }
        let slot = self.slot_of(&(self.key1)(&left))?;
        let interval = self.interval;
        // Right elements at `t + lower ..= t + upper`.
        let range = bounds(
            t.saturating_add(interval.lower),
            t.saturating_add(interval.upper),
            interval.lower_inclusive,
            interval.upper_inclusive,
        );
        let (function, out, side) = (&mut self.function, &mut self.out, &mut self.side);
        let buffers = self.buffers[slot as usize].as_mut().ok_or_else(|| Error::runtime(&self.name, "lost a key"))?;
        probe_and_buffer(&mut buffers.left, &buffers.right, range, (left, t), |left, right| {
            Self::join(function, (out, side), left, right)
        })?;
        self.schedule(slot, interval.left_cleanup(t));
        Ok(())
    }

    fn process_right(&mut self, right: B, timestamp: Timestamp) -> Result<()> {
        let t = timestamp_of(timestamp)?;
        if self.is_late(t) {
            late(&mut self.side, self.right_late.as_deref(), right, t);
            return Ok(());
        }
        let slot = self.slot_of(&(self.key2)(&right))?;
        let interval = self.interval;
        // Left elements `l` with `l + lower <= t <= l + upper`: `t - upper ..= t - lower`.
        let range = bounds(
            t.saturating_sub(interval.upper),
            t.saturating_sub(interval.lower),
            interval.upper_inclusive,
            interval.lower_inclusive,
        );
        let (function, out, side) = (&mut self.function, &mut self.out, &mut self.side);
        let buffers = self.buffers[slot as usize].as_mut().ok_or_else(|| Error::runtime(&self.name, "lost a key"))?;
        probe_and_buffer(&mut buffers.right, &buffers.left, range, (right, t), |right, left| {
            Self::join(function, (out, side), left, right)
        })?;
        self.schedule(slot, interval.right_cleanup(t));
        Ok(())
    }

    /// Loads both sides' buffers of the key groups this subtask owns from canonical entries (as
    /// `snapshot` or the generic operator write them) and queues their cleanup.
    fn restore(&mut self, groups: &[KeyGroupState]) -> Result<()> {
        let key_groups = self.key_groups.clone();
        for group in groups.iter().filter(|g| key_groups.contains(&g.key_group)) {
            for entry in state_entries(&group.entries) {
                let entry = entry?;
                let is_left = match entry.state {
                    LEFT => true,
                    RIGHT => false,
                    _ => continue,
                };
                let t = decode::<OrderedTime>(entry.user_key, entry.state)?.timestamp();
                self.key_buffer.clear();
                self.key_buffer.extend_from_slice(entry.key);
                let slot = self.slot();
                let buffers =
                    self.buffers[slot as usize].as_mut().ok_or_else(|| Error::runtime(&self.name, "lost a key"))?;
                if is_left {
                    let elements: Vec<A> = decode(entry.value, entry.state)?;
                    buffers.left.entry(t).or_default().extend(elements);
                } else {
                    let elements: Vec<B> = decode(entry.value, entry.state)?;
                    buffers.right.entry(t).or_default().extend(elements);
                }
            }
        }
        let interval = self.interval;
        for slot in 0..self.buffers.len() as u32 {
            let due = self.buffers[slot as usize].as_ref().and_then(|b| Self::next_cleanup(&interval, b));
            if let Some(due) = due {
                self.schedule(slot, due);
            }
        }
        Ok(())
    }

    fn snapshot_state(&self) -> Result<OperatorSnapshot> {
        let mut groups: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
        let interval = self.interval;
        for buffers in self.buffers.iter().flatten() {
            let key = &buffers.key[..];
            let entries = groups.entry(key_group_for_key_bytes(key, self.max_parallelism)).or_default();
            snapshot_side(entries, key, LEFT, &buffers.left, |t| interval.left_cleanup(t))?;
            snapshot_side(entries, key, RIGHT, &buffers.right, |t| interval.right_cleanup(t))?;
        }
        Ok(OperatorSnapshot {
            uid: self.uid.clone(),
            keyed: groups.into_iter().map(|(key_group, entries)| KeyGroupState { key_group, entries }).collect(),
            operator_state: Vec::new(),
        })
    }
}

impl<K, A, B, O, K1, K2, F> HeadOperator for HeapIntervalJoinHead<K, A, B, O, K1, K2, F>
where
    K: crate::Data,
    A: crate::Data,
    B: crate::Data,
    O: crate::Data,
    K1: Fn(&A) -> K + Send + Sync + 'static,
    K2: Fn(&B) -> K + Send + Sync + 'static,
    F: ProcessJoinFunction<A, B, O>,
{
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.key_groups = rt.info().key_groups();
        self.max_parallelism = rt.info().max_parallelism;
        if let Some(restored) = rt.restored_state(&self.uid) {
            self.restore(&restored.keyed)?;
        }
        self.function.open(&RuntimeContext { rt, operator: &self.name })?;
        self.side.open(rt)?;
        self.out.open(rt)
    }

    fn poll_source(&mut self, _rt: &mut dyn TaskRuntime) -> Result<SourceStatus> {
        Err(Error::InvalidJob(format!("operator '{}' is not a source", self.name)))
    }

    fn process_batch(&mut self, input: usize, batch: InputBatch<'_>, rt: &mut dyn TaskRuntime) -> Result<()> {
        match input {
            0 => {
                take_batch(batch, &mut self.first, &self.name)?;
                rt.add_records_in(self.first.len() as u64);
                let mut records = std::mem::take(&mut self.first);
                for record in records.drain(..) {
                    self.process_left(record.value, record.timestamp)?;
                    if self.out.buffer.len() >= FLUSH_AT {
                        self.out.flush(rt)?;
                    }
                    self.side.flush_if_full(rt)?;
                }
                self.first = records;
            }
            1 => {
                take_batch(batch, &mut self.second, &self.name)?;
                rt.add_records_in(self.second.len() as u64);
                let mut records = std::mem::take(&mut self.second);
                for record in records.drain(..) {
                    self.process_right(record.value, record.timestamp)?;
                    if self.out.buffer.len() >= FLUSH_AT {
                        self.out.flush(rt)?;
                    }
                    self.side.flush_if_full(rt)?;
                }
                self.second = records;
            }
            other => return Err(Error::InvalidJob(format!("operator '{}' has no input {other}", self.name))),
        }
        self.side.flush(rt)?;
        self.out.flush(rt)
    }

    fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        if watermark > self.watermark {
            self.watermark = watermark;
            self.clean_up(watermark);
        }
        self.side.watermark(watermark, rt)?;
        self.out.watermark(watermark, rt)
    }

    fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.side.idleness(idle, rt)?;
        self.out.idleness(idle, rt)
    }

    fn time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.side.time(now, rt)?;
        self.out.time(now, rt)
    }

    fn next_time(&self) -> Option<Timestamp> {
        min_time(self.side.next_time(), self.out.next_time())
    }

    fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.side.end(rt)?;
        self.out.end(rt)
    }

    fn close(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        let closed = self.function.close();
        closed.and(self.side.close(rt)).and(self.out.close(rt))
    }

    fn snapshot(
        &mut self,
        checkpoint: CheckpointId,
        into: &mut Vec<OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        into.push(self.snapshot_state()?);
        self.side.snapshot(checkpoint, into, rt)?;
        self.out.snapshot(checkpoint, into, rt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::interval_join::IntervalJoin;
    use crate::operators::keyed::KeyedHarness;
    use crate::operators::testing::{Collecting, Received, ReceivedLog, TestRuntime};
    use crate::operators::two_input::KeyedCoProcessHead;
    use crate::runtime::TypedBatch;
    use std::marker::PhantomData;

    /// An element: its key and a sequence number.
    type Element = (u8, u32);
    type Pair = (u32, u32);

    fn pair(l: Element, r: Element) -> Pair {
        (l.1, r.1)
    }

    fn key(e: &Element) -> u8 {
        e.0
    }

    const INTERVAL: Interval = Interval { lower: -30, upper: 20, lower_inclusive: true, upper_inclusive: false };

    fn generic() -> (Box<dyn HeadOperator>, ReceivedLog<Pair>) {
        let (out, received) = Collecting::output();
        let join = IntervalJoin {
            interval: INTERVAL,
            function: pair as fn(Element, Element) -> Pair,
            left_late: None,
            right_late: None,
            _types: PhantomData,
        };
        let head = KeyedCoProcessHead {
            key1: Arc::new(key),
            key2: Arc::new(key),
            function: join,
            harness: KeyedHarness::new("join", "join"),
            first: Vec::new(),
            second: Vec::new(),
            out,
            side: SideOutputs::default(),
        };
        (Box::new(head), received)
    }

    fn heap() -> (Box<dyn HeadOperator>, ReceivedLog<Pair>) {
        let (out, received) = Collecting::output();
        let head = HeapIntervalJoinHead::new(
            (Arc::new(key), Arc::new(key)),
            INTERVAL,
            pair as fn(Element, Element) -> Pair,
            (None, None),
            out,
            SideOutputs::default(),
            "join",
            "join",
        );
        (Box::new(head), received)
    }

    /// Input events: an element of a side at a time, or a watermark.
    #[derive(Clone, Copy, Debug)]
    enum Event {
        Element { right: bool, element: Element, timestamp: Timestamp },
        Watermark(Timestamp),
    }

    /// Elements of 5 keys on both sides, up to 40 ms out of order, with a watermark 25 ms behind
    /// the largest timestamp every 7 elements (so some elements are late), from a fixed seed.
    fn events(count: u32) -> Vec<Event> {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut events, mut max) = (Vec::new(), i64::MIN);
        for seq in 0..count {
            let timestamp = i64::from(seq) * 3 - (next() % 40) as i64;
            max = max.max(timestamp);
            let element = ((next() % 5) as u8, seq);
            events.push(Event::Element { right: next() % 2 == 0, element, timestamp });
            if seq % 7 == 6 {
                events.push(Event::Watermark(max - 25));
            }
        }
        events
    }

    fn feed(head: &mut dyn HeadOperator, events: &[Event], rt: &mut TestRuntime) {
        for event in events {
            match *event {
                Event::Element { right, element, timestamp } => {
                    let batch = TypedBatch::new(vec![StreamRecord { timestamp, value: element }]);
                    head.process_batch(usize::from(right), InputBatch::Records(batch), rt).unwrap();
                }
                Event::Watermark(watermark) => head.watermark(watermark, rt).unwrap(),
            }
        }
    }

    fn pairs(received: &ReceivedLog<Pair>) -> Vec<(Timestamp, Pair)> {
        let mut pairs: Vec<(Timestamp, Pair)> = received
            .lock()
            .unwrap()
            .iter()
            .filter_map(|r| match r {
                Received::Record(timestamp, pair) => Some((*timestamp, *pair)),
                _ => None,
            })
            .collect();
        pairs.sort_unstable();
        pairs
    }

    fn snapshot(head: &mut dyn HeadOperator, rt: &mut TestRuntime) -> OperatorSnapshot {
        let mut into = Vec::new();
        head.snapshot(1, &mut into, rt).unwrap();
        into.into_iter().find(|s| s.uid == "join").unwrap()
    }

    /// The pairs of `events` by the definition: a left and a right element of one key whose
    /// timestamps are in the interval, neither late when it arrived.
    fn reference(events: &[Event]) -> Vec<(Timestamp, Pair)> {
        let mut watermark = MIN_WATERMARK;
        let (mut lefts, mut rights) = (Vec::new(), Vec::new());
        for event in events {
            match *event {
                Event::Element { timestamp, .. } if watermark != MIN_WATERMARK && timestamp <= watermark => {}
                Event::Element { right: false, element, timestamp } => lefts.push((element, timestamp)),
                Event::Element { right: true, element, timestamp } => rights.push((element, timestamp)),
                Event::Watermark(w) => watermark = watermark.max(w),
            }
        }
        let mut pairs = Vec::new();
        for &(l, lt) in &lefts {
            for &(r, rt) in &rights {
                if l.0 == r.0 && INTERVAL.contains(lt, rt) {
                    pairs.push((lt.max(rt), (l.1, r.1)));
                }
            }
        }
        pairs.sort_unstable();
        pairs
    }

    #[test]
    fn the_heap_join_joins_what_the_definition_and_the_generic_operator_join() {
        let events = events(3000);
        let expected = reference(&events);
        assert!(expected.len() > 1000, "{} pairs", expected.len());
        for make in [generic, heap] {
            let mut rt = TestRuntime::new(0, 1, true);
            let (mut head, received) = make();
            head.open(&mut rt).unwrap();
            feed(&mut *head, &events, &mut rt);
            assert!(pairs(&received) == expected, "{} pairs, {} expected", pairs(&received).len(), expected.len());
        }
    }

    #[test]
    fn each_operator_restores_the_others_snapshot_and_the_heap_one_forgets_what_can_join_nothing() {
        let events = events(3000);
        let expected = reference(&events);
        // Six runs of 500 elements' events, each restored from the previous one's snapshot,
        // alternating the operators (every pair of them in both directions).
        let kinds = [heap as fn() -> _, generic, heap, heap, generic, generic, heap];
        let chunks: Vec<&[Event]> = events.chunks(events.len() / 6 + 1).collect();
        let (mut all, mut state, mut watermark) = (Vec::new(), None, None);
        for (chunk, make) in chunks.iter().zip(kinds) {
            let mut rt = TestRuntime::new(0, 1, true).restoring(state.take());
            let (mut head, received) = make();
            head.open(&mut rt).unwrap();
            // A restored operator starts without a watermark; give it the last one.
            if let Some(watermark) = watermark {
                head.watermark(watermark, &mut rt).unwrap();
            }
            feed(&mut *head, chunk, &mut rt);
            state = Some(snapshot(&mut *head, &mut rt));
            watermark = chunk.iter().rev().find_map(|e| match e {
                Event::Watermark(w) => Some(*w),
                Event::Element { .. } => None,
            });
            all.extend(pairs(&received));
        }
        all.sort_unstable();
        assert!(all == expected, "{} pairs, {} expected", all.len(), expected.len());
        // With every element past its cleanup time, the heap operator keeps nothing.
        let mut rt = TestRuntime::new(0, 1, true);
        let (mut head, _) = heap();
        head.open(&mut rt).unwrap();
        feed(&mut *head, &events, &mut rt);
        head.watermark(i64::from(3000_u32) * 3 + 100, &mut rt).unwrap();
        assert!(snapshot(&mut *head, &mut rt).keyed.is_empty());
    }
}
