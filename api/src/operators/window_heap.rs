//! Event-time and processing-time windows without merging (tumbling, sliding) with incremental
//! aggregation (`reduce`, `aggregate`), kept in memory as typed accumulators.
//!
//! Semantics are the window operator's (see `window.rs`): a record goes into each of its windows
//! unless all of them are late (cleanup time `max_timestamp + allowed lateness` at or before the
//! watermark), then it goes to the late side output; a window fires when the watermark reaches
//! its `max_timestamp`, again for each record within the allowed lateness, and its state is
//! dropped at cleanup time. Results carry the window's `max_timestamp`.
//!
//! Instead of a state entry and a timer per (key, window), windows are kept in a map ordered by
//! start (for a fixed-size assigner also by end), each holding its keys' accumulators. A
//! watermark fires the windows it passed by walking that map; nothing is encoded per record. This
//! is the heap state backend's representation of window contents: a snapshot writes each entry
//! as (key group of the key, key, window, accumulator), the same layout the generic operator keeps
//! in a byte-level backend.

use crate::chain::{Downstream, Output, StreamRecord, min_time};
use crate::codec::encode_into;
use crate::error::{Error, Result};
use crate::functions::{Collector, ProcessWindowFunction};
use crate::operators::window::Accumulate;
use crate::runtime::{LogLevel, TaskRuntime};
use crate::time::{MIN_WATERMARK, NO_TIMESTAMP, Timestamp};
use crate::window::{TimeWindow, WindowAssigner, WindowTime};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A serialized key, inline when short.
type KeyBytes = SmallVec<[u8; 24]>;
/// The accumulators of one window by key (`None` only transiently, while one is updated).
type WindowContents<K, Acc> = FxHashMap<KeyBytes, (K, Option<Acc>)>;

pub(crate) struct HeapWindowOperator<K, T, O, KF, A: Accumulate<T>, W> {
    pub(crate) key_fn: Arc<KF>,
    pub(crate) assigner: WindowAssigner,
    pub(crate) allowed_lateness: Timestamp,
    pub(crate) acc: Arc<A>,
    pub(crate) window_fn: Arc<W>,
    /// Each live window's accumulators by key.
    pub(crate) windows: BTreeMap<TimeWindow, WindowContents<K, A::Acc>>,
    pub(crate) watermark: Timestamp,
    pub(crate) now: Timestamp,
    pub(crate) out: Output<O>,
    pub(crate) late: Option<Output<T>>,
    pub(crate) key_buffer: Vec<u8>,
    pub(crate) assigned: Vec<TimeWindow>,
    pub(crate) dropped_late: u64,
    /// Keys in the most recently dropped window, to size new windows.
    pub(crate) last_window_keys: usize,
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) max_parallelism: u32,
}

impl<K, T, O, KF, A, W> HeapWindowOperator<K, T, O, KF, A, W>
where
    K: crate::Data,
    T: crate::Data,
    O: crate::Data,
    KF: Fn(&T) -> K + Send + Sync + 'static,
    A: Accumulate<T>,
    W: ProcessWindowFunction<K, A::Output, O>,
{
    pub(crate) fn new(
        key_fn: Arc<KF>,
        assigner: WindowAssigner,
        allowed_lateness: Timestamp,
        acc: Arc<A>,
        window_fn: Arc<W>,
        (out, late): (Output<O>, Option<Output<T>>),
        name: &str,
    ) -> Self {
        Self {
            key_fn,
            assigner,
            allowed_lateness: if assigner.time == WindowTime::EventTime { allowed_lateness } else { 0 },
            acc,
            window_fn,
            windows: BTreeMap::new(),
            watermark: MIN_WATERMARK,
            now: 0,
            out,
            late,
            key_buffer: Vec::new(),
            assigned: Vec::new(),
            dropped_late: 0,
            last_window_keys: 0,
            name: name.to_owned(),
            uid: name.to_owned(),
            max_parallelism: crate::keygroup::DEFAULT_MAX_PARALLELISM,
        }
    }

    fn cleanup_time(&self, window: &TimeWindow) -> Timestamp {
        window.max_timestamp().saturating_add(self.allowed_lateness)
    }

    fn is_late(&self, window: &TimeWindow) -> bool {
        self.assigner.time == WindowTime::EventTime && self.cleanup_time(window) <= self.watermark
    }

    /// Loads the `window-contents` entries of the key groups in `key_groups` (as `snapshot`
    /// writes them).
    fn restore(
        &mut self,
        groups: &[crate::runtime::KeyGroupState],
        key_groups: &std::ops::RangeInclusive<u16>,
    ) -> Result<()> {
        for group in groups.iter().filter(|g| key_groups.contains(&g.key_group)) {
            for entry in crate::runtime::state_entries(&group.entries) {
                let entry = entry?;
                if entry.state != "window-contents" {
                    continue;
                }
                let window = TimeWindow::from_bytes(entry.namespace)
                    .ok_or_else(|| Error::serialization("deserialize", "window", "namespace is not a time window"))?;
                let key: K = crate::codec::decode(entry.key, "key")?;
                let acc: A::Acc = crate::codec::decode(entry.value, "window accumulator")?;
                self.windows.entry(window).or_default().insert(KeyBytes::from_slice(entry.key), (key, Some(acc)));
            }
        }
        Ok(())
    }

    /// Emits the result of one key's accumulator for `window`.
    fn emit(window_fn: &W, acc: &A, out: &mut Output<O>, key: &K, window: &TimeWindow, value: A::Acc) {
        let mut collector = Collector::new(&mut out.buffer, window.max_timestamp());
        window_fn.process(key, window, vec![acc.result(value)], &mut collector);
    }

    fn process(&mut self, record: StreamRecord<T>) -> Result<()> {
        let timestamp = match self.assigner.time {
            WindowTime::EventTime if record.timestamp == NO_TIMESTAMP => {
                return Err(Error::InvalidJob(format!(
                    "event-time window '{}' received a record without a timestamp: \
                     call assign_timestamps_and_watermarks upstream or use a processing-time window",
                    self.name
                )));
            }
            WindowTime::EventTime => record.timestamp,
            WindowTime::ProcessingTime => self.now,
        };
        let mut assigned = std::mem::take(&mut self.assigned);
        assigned.clear();
        self.assigner.assign(timestamp, &mut assigned);
        assigned.retain(|w| !self.is_late(w));
        if assigned.is_empty() {
            self.assigned = assigned;
            match self.late.as_mut() {
                Some(late) => late.emit(record.value, record.timestamp),
                None => self.dropped_late += 1,
            }
            return Ok(());
        }
        let key = (self.key_fn)(&record.value);
        self.key_buffer.clear();
        encode_into(&key, &mut self.key_buffer, "key")?;
        let mut value = Some(record.value);
        let last = assigned.len() - 1;
        for (i, window) in assigned.iter().enumerate() {
            let v = if i == last { value.take() } else { value.clone() };
            let Some(v) = v else { break };
            // Consecutive windows hold similar numbers of keys: size a new one like the last,
            // instead of growing it through repeated rehashing.
            let capacity = self.last_window_keys;
            let keys = self
                .windows
                .entry(*window)
                .or_insert_with(|| WindowContents::with_capacity_and_hasher(capacity, Default::default()));
            let slot = match keys.get_mut(&self.key_buffer[..]) {
                Some((_, slot)) => slot,
                None => {
                    &mut keys.entry(KeyBytes::from_slice(&self.key_buffer)).or_insert_with(|| (key.clone(), None)).1
                }
            };
            *slot = Some(self.acc.add(slot.take(), v));
            // A window the watermark already passed (within the allowed lateness) fires again.
            if self.assigner.time == WindowTime::EventTime
                && window.max_timestamp() <= self.watermark
                && let Some(current) = slot.clone()
            {
                Self::emit(&self.window_fn, &self.acc, &mut self.out, &key, window, current);
            }
        }
        self.assigned = assigned;
        Ok(())
    }

    /// Time (the watermark, or the wall clock for processing-time windows) moved from `previous`
    /// to `time`: fires every due window not fired before, and drops those whose cleanup time
    /// passed. Only an event-time window kept for its allowed lateness fires before it is dropped.
    fn advance(&mut self, previous: Timestamp, time: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        let event_time = self.assigner.time == WindowTime::EventTime;
        // One window size: ordered by start, the windows are ordered by end too.
        let due: Vec<TimeWindow> = self.windows.keys().take_while(|w| w.max_timestamp() <= time).copied().collect();
        for window in due {
            let fired_before = event_time && window.max_timestamp() <= previous;
            if self.cleanup_time(&window) <= time {
                let keys = self.windows.remove(&window).unwrap_or_default();
                self.last_window_keys = keys.len();
                if !fired_before {
                    for (key, value) in keys.into_values() {
                        if let Some(value) = value {
                            Self::emit(&self.window_fn, &self.acc, &mut self.out, &key, &window, value);
                        }
                        if self.out.buffer.len() >= 4096 {
                            self.out.flush(rt)?;
                        }
                    }
                }
            } else if !fired_before {
                if let Some(keys) = self.windows.get(&window) {
                    for (key, value) in keys.values() {
                        if let Some(value) = value.clone() {
                            Self::emit(&self.window_fn, &self.acc, &mut self.out, key, &window, value);
                        }
                    }
                }
                self.out.flush(rt)?;
            }
        }
        Ok(())
    }
}

impl<K, T, O, KF, A, W> Downstream<T> for HeapWindowOperator<K, T, O, KF, A, W>
where
    K: crate::Data,
    T: crate::Data,
    O: crate::Data,
    KF: Fn(&T) -> K + Send + Sync + 'static,
    A: Accumulate<T>,
    W: ProcessWindowFunction<K, A::Output, O>,
{
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.now = rt.processing_time();
        self.max_parallelism = rt.info().max_parallelism;
        if let Some(restored) = rt.restored_state(&self.uid) {
            self.restore(&restored.keyed, &rt.info().key_groups())?;
        }
        if let Some(late) = self.late.as_mut() {
            late.open(rt)?;
        }
        self.out.open(rt)
    }

    fn push(&mut self, batch: &mut Vec<StreamRecord<T>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        if self.assigner.time == WindowTime::ProcessingTime {
            self.now = rt.processing_time();
        }
        for record in batch.drain(..) {
            self.process(record)?;
            if self.out.buffer.len() >= 4096 {
                self.out.flush(rt)?;
            }
        }
        if let Some(late) = self.late.as_mut() {
            late.flush(rt)?;
        }
        self.out.flush(rt)
    }

    fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        if self.assigner.time == WindowTime::EventTime && watermark > self.watermark {
            let previous = self.watermark;
            self.watermark = watermark;
            self.advance(previous, watermark, rt)?;
        }
        if let Some(late) = self.late.as_mut() {
            late.watermark(watermark, rt)?;
        }
        self.out.watermark(watermark, rt)
    }

    fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        if let Some(late) = self.late.as_mut() {
            late.idleness(idle, rt)?;
        }
        self.out.idleness(idle, rt)
    }

    fn time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        if self.assigner.time == WindowTime::ProcessingTime {
            let previous = self.now.max(now);
            self.now = previous;
            self.advance(previous, now, rt)?;
        }
        if let Some(late) = self.late.as_mut() {
            late.time(now, rt)?;
        }
        self.out.time(now, rt)
    }

    fn next_time(&self) -> Option<Timestamp> {
        let due = match self.assigner.time {
            WindowTime::ProcessingTime => self.windows.keys().next().map(TimeWindow::max_timestamp),
            WindowTime::EventTime => None,
        };
        let late = self.late.as_ref().and_then(Output::next_time);
        min_time(min_time(due, late), self.out.next_time())
    }

    fn snapshot(
        &mut self,
        checkpoint: crate::runtime::CheckpointId,
        into: &mut Vec<crate::runtime::OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        // The same entries the generic window operator keeps in a state backend: state
        // `window-contents`, namespace = the window, value = the accumulator.
        let mut groups: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
        let mut value = Vec::new();
        for (window, keys) in &self.windows {
            let namespace = window.to_bytes();
            for (key, (_, acc)) in keys {
                let Some(acc) = acc else { continue };
                value.clear();
                encode_into(acc, &mut value, "window accumulator")?;
                let key_group = crate::keygroup::key_group_for_key_bytes(key, self.max_parallelism);
                crate::runtime::encode_state_entry(
                    groups.entry(key_group).or_default(),
                    crate::runtime::StateEntry {
                        state: "window-contents",
                        key,
                        namespace: &namespace,
                        user_key: &[],
                        value: &value,
                    },
                )?;
            }
        }
        into.push(crate::runtime::OperatorSnapshot {
            uid: self.uid.clone(),
            keyed: groups
                .into_iter()
                .map(|(key_group, entries)| crate::runtime::KeyGroupState { key_group, entries })
                .collect(),
            operator_state: Vec::new(),
        });
        if let Some(late) = self.late.as_mut() {
            late.snapshot(checkpoint, into, rt)?;
        }
        self.out.snapshot(checkpoint, into, rt)
    }

    fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        if self.dropped_late > 0 {
            rt.log(LogLevel::Info, &format!("window '{}' dropped {} late records", self.name, self.dropped_late));
        }
        if let Some(late) = self.late.as_mut() {
            late.end(rt)?;
        }
        self.out.end(rt)
    }
}
