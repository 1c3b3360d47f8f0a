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
//! in a byte-level backend, and the watermark per key group (`window_progress.rs`), from which a
//! restored operator knows which windows fired already instead of firing them again.

use crate::chain::{Downstream, Output, StreamRecord, min_time};
use crate::codec::encode_into;
use crate::error::{Error, Result};
use crate::functions::{Collector, ProcessWindowFunction};
use crate::operators::side_outputs::SideOutputs;
use crate::operators::window::Accumulate;
use crate::operators::window_progress::KeyGroupWatermarks;
use crate::runtime::{LogLevel, TaskRuntime};
use crate::time::{MIN_WATERMARK, NO_TIMESTAMP, Timestamp};
use crate::window::{TimeWindow, WindowAssigner, WindowTime};
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
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
    /// Restored key groups ahead of `watermark` (see `window_progress`).
    pub(crate) progress: KeyGroupWatermarks,
    /// Windows the watermark has not reached that fired before the restore for some keys (of key
    /// groups restored ahead of `watermark`): those keys, which must not fire when the watermark
    /// passes the window unless a record arrives for them. Empty except after such a restore.
    pub(crate) fired_ahead: BTreeMap<TimeWindow, FxHashSet<KeyBytes>>,
    /// The key groups this subtask owns (set in `open`).
    pub(crate) key_groups: RangeInclusive<u16>,
    pub(crate) now: Timestamp,
    pub(crate) out: Output<O>,
    pub(crate) late: Option<Output<T>>,
    /// Side outputs the window function emits to.
    pub(crate) side: SideOutputs,
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
            progress: KeyGroupWatermarks::default(),
            fired_ahead: BTreeMap::new(),
            key_groups: crate::keygroup::key_group_range(crate::keygroup::DEFAULT_MAX_PARALLELISM, 1, 0),
            now: 0,
            out,
            late,
            side: SideOutputs::default(),
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
    /// writes them), and for event time the watermark: the windows it passed fired already.
    /// For the keys of key groups restored ahead of it, a window up to their own watermark fired
    /// too (`fired_ahead`), unless an end-of-window timer entry says it is due to fire again.
    fn restore(&mut self, groups: &[crate::runtime::KeyGroupState], key_groups: &RangeInclusive<u16>) -> Result<()> {
        let (progress, watermark) = match self.assigner.time {
            WindowTime::EventTime => KeyGroupWatermarks::restore(groups, key_groups)?,
            WindowTime::ProcessingTime => (KeyGroupWatermarks::default(), MIN_WATERMARK),
        };
        // End-of-window timers of windows that may have fired: only these keys fire again.
        let mut due_again: FxHashSet<(TimeWindow, KeyBytes)> = FxHashSet::default();
        for group in groups.iter().filter(|g| key_groups.contains(&g.key_group)) {
            for entry in crate::runtime::state_entries(&group.entries) {
                let entry = entry?;
                let is_timer = entry.state == "__timers/event";
                if entry.state != "window-contents" && !(is_timer && progress.any_ahead()) {
                    continue;
                }
                let window = TimeWindow::from_bytes(entry.namespace)
                    .ok_or_else(|| Error::serialization("deserialize", "window", "namespace is not a time window"))?;
                if is_timer {
                    if entry.value == window.max_timestamp().to_be_bytes() {
                        due_again.insert((window, KeyBytes::from_slice(entry.key)));
                    }
                    continue;
                }
                let key: K = crate::codec::decode(entry.key, "key")?;
                let acc: A::Acc = crate::codec::decode(entry.value, "window accumulator")?;
                self.windows.entry(window).or_default().insert(KeyBytes::from_slice(entry.key), (key, Some(acc)));
            }
        }
        if progress.any_ahead() {
            for (window, keys) in &self.windows {
                if window.max_timestamp() <= watermark || !progress.may_have_fired(window.max_timestamp()) {
                    continue;
                }
                let fired: FxHashSet<KeyBytes> = keys
                    .keys()
                    .filter(|key| {
                        let key_group = crate::keygroup::key_group_for_key_bytes(key, self.max_parallelism);
                        window.max_timestamp() <= progress.of(key_group, watermark)
                            && !due_again.contains(&(*window, (*key).clone()))
                    })
                    .cloned()
                    .collect();
                if !fired.is_empty() {
                    self.fired_ahead.insert(*window, fired);
                }
            }
        }
        self.watermark = watermark;
        self.progress = progress;
        Ok(())
    }

    /// Emits the result of one key's accumulator for `window`.
    fn emit(
        window_fn: &W,
        acc: &A,
        (out, side): (&mut Output<O>, &mut SideOutputs),
        key: &K,
        window: &TimeWindow,
        value: A::Acc,
    ) {
        let mut collector = Collector::with_side_outputs(&mut out.buffer, window.max_timestamp(), side);
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
            if self.assigner.time == WindowTime::EventTime {
                if window.max_timestamp() <= self.watermark {
                    // A window the watermark already passed (within the allowed lateness) fires
                    // again.
                    if let Some(current) = slot.clone() {
                        Self::emit(&self.window_fn, &self.acc, (&mut self.out, &mut self.side), &key, window, current);
                    }
                } else if !self.fired_ahead.is_empty()
                    && let Some(fired) = self.fired_ahead.get_mut(window)
                {
                    // It fired before the restore for this key; now it fires again when the
                    // watermark passes it.
                    fired.remove(&self.key_buffer[..]);
                }
            }
        }
        self.assigned = assigned;
        Ok(())
    }

    /// Time (the watermark, or the wall clock for processing-time windows) moved from `previous`
    /// to `time`: fires every due window not fired before, and drops those whose cleanup time
    /// passed. Only an event-time window kept for its allowed lateness fires before it is dropped.
    /// A window fired before a restore for some keys (`fired_ahead`) does not fire for them.
    fn advance(&mut self, previous: Timestamp, time: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        let event_time = self.assigner.time == WindowTime::EventTime;
        // One window size: ordered by start, the windows are ordered by end too.
        let due: Vec<TimeWindow> = self.windows.keys().take_while(|w| w.max_timestamp() <= time).copied().collect();
        for window in due {
            let fired_before = event_time && window.max_timestamp() <= previous;
            let fired_ahead = if self.fired_ahead.is_empty() { None } else { self.fired_ahead.remove(&window) };
            let fired = |key: &KeyBytes| fired_ahead.as_ref().is_some_and(|keys| keys.contains(key));
            if self.cleanup_time(&window) <= time {
                let keys = self.windows.remove(&window).unwrap_or_default();
                self.last_window_keys = keys.len();
                if !fired_before {
                    for (key_bytes, (key, value)) in keys {
                        if let Some(value) = value
                            && !fired(&key_bytes)
                        {
                            Self::emit(
                                &self.window_fn,
                                &self.acc,
                                (&mut self.out, &mut self.side),
                                &key,
                                &window,
                                value,
                            );
                        }
                        if self.out.buffer.len() >= 4096 {
                            self.out.flush(rt)?;
                        }
                    }
                }
            } else if !fired_before {
                if let Some(keys) = self.windows.get(&window) {
                    for (key_bytes, (key, value)) in keys {
                        if let Some(value) = value.clone()
                            && !fired(key_bytes)
                        {
                            Self::emit(
                                &self.window_fn,
                                &self.acc,
                                (&mut self.out, &mut self.side),
                                key,
                                &window,
                                value,
                            );
                        }
                    }
                }
                self.out.flush(rt)?;
            }
        }
        if event_time {
            self.progress.advance(time);
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
        self.key_groups = rt.info().key_groups();
        if let Some(restored) = rt.restored_state(&self.uid) {
            let key_groups = self.key_groups.clone();
            self.restore(&restored.keyed, &key_groups)?;
        }
        if let Some(late) = self.late.as_mut() {
            late.open(rt)?;
        }
        self.side.open(rt)?;
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
        self.side.flush(rt)?;
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
        self.side.watermark(watermark, rt)?;
        self.out.watermark(watermark, rt)
    }

    fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        if let Some(late) = self.late.as_mut() {
            late.idleness(idle, rt)?;
        }
        self.side.idleness(idle, rt)?;
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
        self.side.time(now, rt)?;
        self.out.time(now, rt)
    }

    fn next_time(&self) -> Option<Timestamp> {
        let due = match self.assigner.time {
            WindowTime::ProcessingTime => self.windows.keys().next().map(TimeWindow::max_timestamp),
            WindowTime::EventTime => None,
        };
        let late = min_time(self.late.as_ref().and_then(Output::next_time), self.side.next_time());
        min_time(min_time(due, late), self.out.next_time())
    }

    fn snapshot(
        &mut self,
        checkpoint: crate::runtime::CheckpointId,
        into: &mut Vec<crate::runtime::OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        // The same entries the generic window operator keeps in a state backend: state
        // `window-contents`, namespace = the window, value = the accumulator; then the watermark
        // per key group (event time), from which a restore knows which windows fired.
        let mut groups: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
        let mut value = Vec::new();
        for (window, keys) in &self.windows {
            let namespace = window.to_bytes();
            let max_timestamp = window.max_timestamp();
            // Only after a restore from key groups at different watermarks: in a window that fired
            // for the keys of key groups ahead, those that must fire again keep an end-of-window
            // timer, as in the generic operator.
            let ahead = max_timestamp > self.watermark && self.progress.may_have_fired(max_timestamp);
            let fired = self.fired_ahead.get(window);
            for (key, (_, acc)) in keys {
                let Some(acc) = acc else { continue };
                value.clear();
                encode_into(acc, &mut value, "window accumulator")?;
                let key_group = crate::keygroup::key_group_for_key_bytes(key, self.max_parallelism);
                let entries = groups.entry(key_group).or_default();
                crate::runtime::encode_state_entry(
                    entries,
                    crate::runtime::StateEntry {
                        state: "window-contents",
                        key,
                        namespace: &namespace,
                        user_key: &[],
                        value: &value,
                    },
                )?;
                if ahead
                    && max_timestamp <= self.progress.of(key_group, self.watermark)
                    && !fired.is_some_and(|keys| keys.contains(key))
                {
                    crate::runtime::encode_state_entry(
                        entries,
                        crate::runtime::StateEntry {
                            state: "__timers/event",
                            key,
                            namespace: &namespace,
                            user_key: &[],
                            value: &max_timestamp.to_be_bytes(),
                        },
                    )?;
                }
            }
        }
        if self.assigner.time == WindowTime::EventTime {
            self.progress.snapshot_into(self.watermark, &self.key_groups, &mut groups)?;
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
        self.side.snapshot(checkpoint, into, rt)?;
        self.out.snapshot(checkpoint, into, rt)
    }

    fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        if self.dropped_late > 0 {
            rt.log(LogLevel::Info, &format!("window '{}' dropped {} late records", self.name, self.dropped_late));
        }
        if let Some(late) = self.late.as_mut() {
            late.end(rt)?;
        }
        self.side.end(rt)?;
        self.out.end(rt)
    }

    fn close(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        let late = self.late.as_mut().map_or(Ok(()), |late| late.close(rt));
        late.and(self.side.close(rt)).and(self.out.close(rt))
    }
}
