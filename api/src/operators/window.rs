//! The window operator, with Flink's semantics: a record goes into the windows its timestamp
//! belongs to unless every one of them is late (its cleanup time `max_timestamp + allowed
//! lateness` is at or before the watermark), in which case it goes to the late side output or is
//! dropped. An event-time window fires when the watermark reaches its `max_timestamp`, and again
//! for each record that arrives within the allowed lateness; its state is dropped at cleanup time.
//! Session windows merge when they overlap or touch. Results carry the window's `max_timestamp`.
//! Event-time windows snapshot their watermark per key group and go on from it after a restore
//! (`window_progress.rs`), as the in-memory operator (`window_heap.rs`) does.

use crate::chain::{Downstream, Output, StreamRecord, min_time};
use crate::codec::{decode, encode_into};
use crate::error::{Error, Result};
use crate::functions::{AggregateFunction, Collector, ProcessWindowFunction, TimeDomain};
use crate::operators::keyed::KeyedHarness;
use crate::operators::side_outputs::SideOutputs;
use crate::runtime::{KeyedStateBackend, StateId, StateKey, StateKind, TaskRuntime, list_elements};
use crate::time::{NO_TIMESTAMP, Timestamp};
use crate::timer::Timer;
use crate::window::{TimeWindow, WindowAssigner, WindowTime};
use std::marker::PhantomData;
use std::sync::Arc;

/// Incremental aggregation behind `reduce` and `aggregate`.
pub(crate) trait Accumulate<T>: Send + Sync + 'static {
    type Acc: crate::Data;
    type Output;
    fn add(&self, acc: Option<Self::Acc>, value: T) -> Self::Acc;
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Self::Acc;
    fn result(&self, acc: Self::Acc) -> Self::Output;
}

pub(crate) struct ReduceAcc<F>(pub(crate) Arc<F>);

impl<T: crate::Data, F: Fn(T, T) -> T + Send + Sync + 'static> Accumulate<T> for ReduceAcc<F> {
    type Acc = T;
    type Output = T;
    fn add(&self, acc: Option<T>, value: T) -> T {
        match acc {
            Some(acc) => (self.0)(acc, value),
            None => value,
        }
    }
    fn merge(&self, a: T, b: T) -> T {
        (self.0)(a, b)
    }
    fn result(&self, acc: T) -> T {
        acc
    }
}

pub(crate) struct AggregateAcc<A, Acc, R>(pub(crate) Arc<A>, pub(crate) PhantomData<fn() -> (Acc, R)>);

impl<T, Acc, R, A> Accumulate<T> for AggregateAcc<A, Acc, R>
where
    Acc: crate::Data,
    R: 'static,
    A: AggregateFunction<T, Acc, R>,
{
    type Acc = Acc;
    type Output = R;
    fn add(&self, acc: Option<Acc>, value: T) -> Acc {
        let acc = acc.unwrap_or_else(|| self.0.create_accumulator());
        self.0.add(value, acc)
    }
    fn merge(&self, a: Acc, b: Acc) -> Acc {
        self.0.merge(a, b)
    }
    fn result(&self, acc: Acc) -> R {
        self.0.get_result(acc)
    }
}

/// Collects a window's elements (`process` on windows kept in memory).
pub(crate) struct Collect;

impl<T: crate::Data> Accumulate<T> for Collect {
    type Acc = Vec<T>;
    type Output = Vec<T>;
    fn add(&self, acc: Option<Vec<T>>, value: T) -> Vec<T> {
        let mut elements = acc.unwrap_or_default();
        elements.push(value);
        elements
    }
    fn merge(&self, mut a: Vec<T>, b: Vec<T>) -> Vec<T> {
        a.extend(b);
        a
    }
    fn result(&self, acc: Vec<T>) -> Vec<T> {
        acc
    }
}

/// Hands the collected elements to a `process` window function.
pub(crate) struct ProcessCollected<P>(pub(crate) Arc<P>);

impl<K, T, O, P> ProcessWindowFunction<K, Vec<T>, O> for ProcessCollected<P>
where
    K: 'static,
    T: 'static,
    O: 'static,
    P: ProcessWindowFunction<K, T, O>,
{
    fn process(&self, key: &K, window: &TimeWindow, elements: Vec<Vec<T>>, out: &mut Collector<'_, O>) {
        for collected in elements {
            self.0.process(key, window, collected, out);
        }
    }
}

/// Emits the aggregate result as it is (`reduce`/`aggregate` without a window function).
pub(crate) struct EmitResult;

impl<K, R: Send + 'static> ProcessWindowFunction<K, R, R> for EmitResult {
    fn process(&self, _key: &K, _window: &TimeWindow, elements: Vec<R>, out: &mut Collector<'_, R>) {
        for element in elements {
            out.collect(element);
        }
    }
}

/// How a window's contents are stored in keyed state and turned into output.
pub(crate) trait WindowContents<K, T, O>: Send {
    fn kind(&self) -> StateKind;
    /// Adds `value`; returns whether the contents may not have existed before (`true` when that
    /// is unknown: registering a window's timers again does nothing).
    fn add(&mut self, backend: &mut dyn KeyedStateBackend, state: StateId, at: StateKey<'_>, value: T) -> Result<bool>;
    /// Moves the contents at `source` into `target`.
    fn merge(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        state: StateId,
        target: StateKey<'_>,
        source: StateKey<'_>,
    ) -> Result<()>;
    /// Emits the window's output, if it has contents.
    fn emit(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        state: StateId,
        at: StateKey<'_>,
        key: &K,
        window: &TimeWindow,
        out: &mut Collector<'_, O>,
    ) -> Result<()>;
}

/// Contents kept as one accumulator (`reduce`, `aggregate`).
pub(crate) struct Aggregating<A, W, K, T, O> {
    pub(crate) acc: Arc<A>,
    pub(crate) window_fn: Arc<W>,
    pub(crate) scratch: Vec<u8>,
    pub(crate) _types: PhantomData<fn(K, T) -> O>,
}

impl<A, W, K, T, O> WindowContents<K, T, O> for Aggregating<A, W, K, T, O>
where
    K: 'static,
    T: 'static,
    O: 'static,
    A: Accumulate<T>,
    W: ProcessWindowFunction<K, A::Output, O>,
{
    fn kind(&self) -> StateKind {
        StateKind::Value
    }

    fn add(&mut self, backend: &mut dyn KeyedStateBackend, state: StateId, at: StateKey<'_>, value: T) -> Result<bool> {
        let acc = &self.acc;
        let mut value = Some(value);
        let existed = backend.update(state, at, &mut |current, out| {
            let old = match current {
                Some(bytes) => Some(decode::<A::Acc>(bytes, "window accumulator")?),
                None => None,
            };
            let value = value.take().ok_or_else(|| Error::InvalidJob("window update merged twice".into()))?;
            encode_into(&acc.add(old, value), out, "window accumulator")
        })?;
        Ok(!existed)
    }

    fn merge(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        state: StateId,
        target: StateKey<'_>,
        source: StateKey<'_>,
    ) -> Result<()> {
        let Some(bytes) = backend.get(state, source)? else {
            return Ok(());
        };
        let source_acc: A::Acc = decode(bytes, "window accumulator")?;
        let merged = match backend.get(state, target)? {
            Some(bytes) => self.acc.merge(decode(bytes, "window accumulator")?, source_acc),
            None => source_acc,
        };
        self.scratch.clear();
        encode_into(&merged, &mut self.scratch, "window accumulator")?;
        backend.put(state, target, &self.scratch)?;
        backend.remove(state, source)
    }

    fn emit(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        state: StateId,
        at: StateKey<'_>,
        key: &K,
        window: &TimeWindow,
        out: &mut Collector<'_, O>,
    ) -> Result<()> {
        let Some(bytes) = backend.get(state, at)? else {
            return Ok(());
        };
        let acc: A::Acc = decode(bytes, "window accumulator")?;
        self.window_fn.process(key, window, vec![self.acc.result(acc)], out);
        Ok(())
    }
}

/// Contents kept as the list of all elements (`process`).
pub(crate) struct Buffering<P, K, T, O> {
    pub(crate) window_fn: Arc<P>,
    pub(crate) scratch: Vec<u8>,
    pub(crate) _types: PhantomData<fn(K, T) -> O>,
}

impl<P, K, T, O> WindowContents<K, T, O> for Buffering<P, K, T, O>
where
    K: 'static,
    T: crate::Data,
    O: 'static,
    P: ProcessWindowFunction<K, T, O>,
{
    fn kind(&self) -> StateKind {
        StateKind::List
    }

    fn add(&mut self, backend: &mut dyn KeyedStateBackend, state: StateId, at: StateKey<'_>, value: T) -> Result<bool> {
        self.scratch.clear();
        encode_into(&value, &mut self.scratch, "window element")?;
        backend.append(state, at, &self.scratch)?;
        // Reading the list to learn whether it existed would cost a read of the whole list per
        // record (a RocksDB merge of every appended element): quadratic per window. Timers are
        // idempotent, so "maybe new" is enough.
        Ok(true)
    }

    fn merge(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        state: StateId,
        target: StateKey<'_>,
        source: StateKey<'_>,
    ) -> Result<()> {
        let Some(bytes) = backend.get(state, source)? else {
            return Ok(());
        };
        let elements: Vec<Vec<u8>> = list_elements(bytes).map(|e| e.map(<[u8]>::to_vec)).collect::<Result<_>>()?;
        for element in &elements {
            backend.append(state, target, element)?;
        }
        backend.remove(state, source)
    }

    fn emit(
        &mut self,
        backend: &mut dyn KeyedStateBackend,
        state: StateId,
        at: StateKey<'_>,
        key: &K,
        window: &TimeWindow,
        out: &mut Collector<'_, O>,
    ) -> Result<()> {
        let Some(bytes) = backend.get(state, at)? else {
            return Ok(());
        };
        let elements = list_elements(bytes).map(|e| decode::<T>(e?, "window element")).collect::<Result<Vec<T>>>()?;
        self.window_fn.process(key, window, elements, out);
        Ok(())
    }
}

pub(crate) struct WindowOperator<K, T, O, KF, C> {
    pub(crate) key_fn: Arc<KF>,
    pub(crate) assigner: WindowAssigner,
    pub(crate) allowed_lateness: Timestamp,
    pub(crate) contents: C,
    pub(crate) harness: KeyedHarness<K>,
    pub(crate) state: StateId,
    pub(crate) sessions: StateId,
    pub(crate) out: Output<O>,
    pub(crate) late: Option<Output<T>>,
    /// Side outputs the window function emits to.
    pub(crate) side: SideOutputs,
    pub(crate) windows: Vec<TimeWindow>,
    pub(crate) dropped_late: u64,
}

impl<K, T, O, KF, C> WindowOperator<K, T, O, KF, C>
where
    K: crate::Data,
    T: crate::Data,
    O: crate::Data,
    KF: Fn(&T) -> K + Send + Sync + 'static,
    C: WindowContents<K, T, O>,
{
    fn domain(&self) -> TimeDomain {
        match self.assigner.time {
            WindowTime::EventTime => TimeDomain::EventTime,
            WindowTime::ProcessingTime => TimeDomain::ProcessingTime,
        }
    }

    fn cleanup_time(&self, window: &TimeWindow) -> Timestamp {
        match self.assigner.time {
            WindowTime::EventTime => window.max_timestamp().saturating_add(self.allowed_lateness),
            WindowTime::ProcessingTime => window.max_timestamp(),
        }
    }

    fn is_late(&self, window: &TimeWindow) -> bool {
        self.assigner.time == WindowTime::EventTime && self.cleanup_time(window) <= self.harness.watermark
    }

    fn backend(&mut self) -> Result<&mut (dyn KeyedStateBackend + 'static)> {
        self.harness.backend()
    }

    /// Emits the current key's window `window`.
    fn fire(&mut self, window: TimeWindow) -> Result<()> {
        let ns = window.to_bytes();
        let h = &mut self.harness;
        let backend = h.backend.as_deref_mut().ok_or_else(|| Error::InvalidJob("window used before open".into()))?;
        let at = StateKey { key_group: h.key_group, key: &h.key_bytes, namespace: &ns };
        let key = h.key.as_ref().ok_or_else(|| Error::InvalidJob("window fired without key".into()))?;
        let mut collector = Collector::with_side_outputs(&mut self.out.buffer, window.max_timestamp(), &mut self.side);
        self.contents.emit(backend, self.state, at, key, &window, &mut collector)
    }

    /// Drops the current key's window `window`.
    fn clear(&mut self, window: TimeWindow) -> Result<()> {
        let ns = window.to_bytes();
        let state = self.state;
        let h = &mut self.harness;
        let backend = h.backend.as_deref_mut().ok_or_else(|| Error::InvalidJob("window used before open".into()))?;
        backend.remove(state, StateKey { key_group: h.key_group, key: &h.key_bytes, namespace: &ns })?;
        if self.assigner.is_merging() {
            let mut sessions = self.load_sessions()?;
            sessions.retain(|w| *w != window);
            self.store_sessions(&sessions)?;
        }
        Ok(())
    }

    fn add(&mut self, window: TimeWindow, value: T) -> Result<bool> {
        let ns = window.to_bytes();
        let h = &mut self.harness;
        let backend = h.backend.as_deref_mut().ok_or_else(|| Error::InvalidJob("window used before open".into()))?;
        let at = StateKey { key_group: h.key_group, key: &h.key_bytes, namespace: &ns };
        self.contents.add(backend, self.state, at, value)
    }

    fn register(&mut self, domain: TimeDomain, timestamp: Timestamp, window: TimeWindow) {
        let h = &mut self.harness;
        h.timers.register(domain, timestamp, h.key_group, &h.key_bytes, &window.to_bytes());
    }

    fn delete_timers(&mut self, window: TimeWindow) {
        let domain = self.domain();
        let cleanup = self.cleanup_time(&window);
        let h = &mut self.harness;
        let ns = window.to_bytes();
        h.timers.delete(domain, window.max_timestamp(), h.key_group, &h.key_bytes, &ns);
        h.timers.delete(domain, cleanup, h.key_group, &h.key_bytes, &ns);
    }

    /// Registers the timers of every restored window that has not fired (and of its cleanup):
    /// a snapshot of the heap window operator, which keeps no timers, restores here with its
    /// windows firing as they would have (timers are idempotent, so those a snapshot of this
    /// operator holds are not doubled).
    fn restore_timers(&mut self, restored: &crate::runtime::RestoredState) -> Result<()> {
        let domain = self.domain();
        for group in restored.keyed.iter().filter(|g| self.harness.key_groups.contains(&g.key_group)) {
            for entry in crate::runtime::state_entries(&group.entries) {
                let entry = entry?;
                if entry.state != "window-contents" {
                    continue;
                }
                let window = TimeWindow::from_bytes(entry.namespace)
                    .ok_or_else(|| Error::serialization("deserialize", "window of restored contents", "bad length"))?;
                let fired_up_to = match self.assigner.time {
                    WindowTime::EventTime => self.harness.progress.of(group.key_group, self.harness.watermark),
                    WindowTime::ProcessingTime => crate::time::MIN_WATERMARK,
                };
                let end = window.max_timestamp();
                if end > fired_up_to {
                    self.harness.timers.register(domain, end, group.key_group, entry.key, entry.namespace);
                }
                let cleanup = self.cleanup_time(&window);
                if cleanup != end {
                    self.harness.timers.register(domain, cleanup, group.key_group, entry.key, entry.namespace);
                }
            }
        }
        Ok(())
    }

    /// After adding to `window`: fire late windows at once, register timers for new ones.
    fn after_add(&mut self, window: TimeWindow, created: bool) -> Result<()> {
        let domain = self.domain();
        match self.assigner.time {
            WindowTime::EventTime => {
                if window.max_timestamp() <= self.harness.watermark {
                    self.fire(window)?;
                } else if created || self.harness.progress.may_have_fired(window.max_timestamp()) {
                    // A window that fired before a restore for keys of a key group that was
                    // ahead has no end-of-window timer: it fires again, with this record, when
                    // the watermark passes it (timers are idempotent).
                    self.register(domain, window.max_timestamp(), window);
                }
                let cleanup = self.cleanup_time(&window);
                if created && cleanup != window.max_timestamp() {
                    self.register(domain, cleanup, window);
                }
            }
            WindowTime::ProcessingTime => {
                if created {
                    self.register(domain, window.max_timestamp(), window);
                }
            }
        }
        Ok(())
    }

    fn load_sessions(&mut self) -> Result<Vec<TimeWindow>> {
        let state = self.sessions;
        let h = &mut self.harness;
        let backend = h.backend.as_deref_mut().ok_or_else(|| Error::InvalidJob("window used before open".into()))?;
        match backend.get(state, StateKey { key_group: h.key_group, key: &h.key_bytes, namespace: &[] })? {
            Some(bytes) => decode(bytes, "session windows"),
            None => Ok(Vec::new()),
        }
    }

    fn store_sessions(&mut self, sessions: &[TimeWindow]) -> Result<()> {
        let state = self.sessions;
        let h = &mut self.harness;
        let backend = h.backend.as_deref_mut().ok_or_else(|| Error::InvalidJob("window used before open".into()))?;
        let at = StateKey { key_group: h.key_group, key: &h.key_bytes, namespace: &[] };
        if sessions.is_empty() {
            return backend.remove(state, at);
        }
        let mut bytes = Vec::new();
        encode_into(sessions, &mut bytes, "session windows")?;
        backend.put(state, at, &bytes)
    }

    fn late_record(&mut self, record: StreamRecord<T>) {
        match self.late.as_mut() {
            Some(late) => late.emit(record.value, record.timestamp),
            None => self.dropped_late += 1,
        }
    }

    fn process(&mut self, record: StreamRecord<T>) -> Result<()> {
        let timestamp = match self.assigner.time {
            WindowTime::EventTime if record.timestamp == NO_TIMESTAMP => {
                return Err(Error::InvalidJob(format!(
                    "event-time window '{}' received a record without a timestamp: \
                     call assign_timestamps_and_watermarks upstream or use a processing-time window",
                    self.harness.name
                )));
            }
            WindowTime::EventTime => record.timestamp,
            WindowTime::ProcessingTime => self.harness.now,
        };
        self.harness.set_key((self.key_fn)(&record.value))?;
        if self.assigner.is_merging() {
            return self.process_session(timestamp, record);
        }
        let mut windows = std::mem::take(&mut self.windows);
        windows.clear();
        self.assigner.assign(timestamp, &mut windows);
        let mut all_late = true;
        let live = windows.iter().filter(|w| !self.is_late(w)).count();
        let mut value = Some(record.value);
        let mut seen = 0;
        for &window in &windows {
            if self.is_late(&window) {
                continue;
            }
            all_late = false;
            seen += 1;
            let v = if seen == live { value.take().expect("moved once") } else { value.clone().expect("present") };
            let created = self.add(window, v)?;
            self.after_add(window, created)?;
        }
        self.windows = windows;
        if all_late {
            let value = value.expect("not moved when all windows are late");
            self.late_record(StreamRecord { timestamp: record.timestamp, value });
        }
        Ok(())
    }

    fn process_session(&mut self, timestamp: Timestamp, record: StreamRecord<T>) -> Result<()> {
        let mut proto = Vec::with_capacity(1);
        self.assigner.assign(timestamp, &mut proto);
        let proto = proto[0];
        let mut sessions = self.load_sessions()?;
        let mut merged = proto;
        for w in sessions.iter().filter(|w| w.intersects(&proto)) {
            merged = merged.cover(w);
        }
        if self.is_late(&merged) {
            self.late_record(record);
            return Ok(());
        }
        let existed = sessions.contains(&merged);
        let absorbed: Vec<TimeWindow> =
            sessions.iter().copied().filter(|w| w.intersects(&proto) && *w != merged).collect();
        for source in &absorbed {
            let (t_ns, s_ns) = (merged.to_bytes(), source.to_bytes());
            let h = &mut self.harness;
            let backend =
                h.backend.as_deref_mut().ok_or_else(|| Error::InvalidJob("window used before open".into()))?;
            let target = StateKey { key_group: h.key_group, key: &h.key_bytes, namespace: &t_ns };
            let src = StateKey { key_group: h.key_group, key: &h.key_bytes, namespace: &s_ns };
            self.contents.merge(backend, self.state, target, src)?;
            self.delete_timers(*source);
        }
        sessions.retain(|w| !absorbed.contains(w));
        if !existed {
            sessions.push(merged);
            sessions.sort();
        }
        self.store_sessions(&sessions)?;
        self.add(merged, record.value)?;
        self.after_add(merged, !existed)
    }

    fn on_timer(&mut self, timer: &Timer, domain: TimeDomain) -> Result<()> {
        let window = TimeWindow::from_bytes(timer.namespace())
            .ok_or_else(|| Error::serialization("deserialize", "window of a timer", "bad length"))?;
        self.harness.set_key_of(timer)?;
        match domain {
            TimeDomain::EventTime => {
                if timer.timestamp == window.max_timestamp() {
                    self.fire(window)?;
                }
                if timer.timestamp == self.cleanup_time(&window) {
                    self.clear(window)?;
                }
            }
            TimeDomain::ProcessingTime => {
                self.fire(window)?;
                self.clear(window)?;
            }
        }
        Ok(())
    }
}

impl<K, T, O, KF, C> Downstream<T> for WindowOperator<K, T, O, KF, C>
where
    K: crate::Data,
    T: crate::Data,
    O: crate::Data,
    KF: Fn(&T) -> K + Send + Sync + 'static,
    C: WindowContents<K, T, O>,
{
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        if let Some(restored) = self.harness.open(rt)? {
            self.restore_timers(&restored)?;
        }
        let kind = self.contents.kind();
        self.state = self.harness.state_id("window-contents", kind)?;
        self.sessions = self.harness.state_id("window-sessions", StateKind::Value)?;
        let _ = self.backend()?;
        if let Some(late) = self.late.as_mut() {
            late.open(rt)?;
        }
        self.side.open(rt)?;
        self.out.open(rt)
    }

    fn push(&mut self, batch: &mut Vec<StreamRecord<T>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.harness.now = rt.processing_time();
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
        // Never back: after a restore, the input's watermarks start again below the restored one.
        if watermark > self.harness.watermark {
            self.harness.watermark = watermark;
            self.harness.progress.advance(watermark);
        }
        while let Some(timer) = self.harness.timers.pop_event(self.harness.watermark) {
            self.on_timer(&timer, TimeDomain::EventTime)?;
            if self.out.buffer.len() >= 4096 {
                self.out.flush(rt)?;
            }
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
        self.harness.now = now;
        while let Some(timer) = self.harness.timers.pop_processing(now) {
            self.on_timer(&timer, TimeDomain::ProcessingTime)?;
        }
        if let Some(late) = self.late.as_mut() {
            late.time(now, rt)?;
        }
        self.side.time(now, rt)?;
        self.out.time(now, rt)
    }

    fn next_time(&self) -> Option<Timestamp> {
        let late = min_time(self.late.as_ref().and_then(Output::next_time), self.side.next_time());
        min_time(min_time(self.harness.timers.next_processing(), late), self.out.next_time())
    }

    fn snapshot(
        &mut self,
        checkpoint: crate::runtime::CheckpointId,
        into: &mut Vec<crate::runtime::OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        // Event-time windows keep their watermark, so that a restore knows which windows fired.
        into.push(match self.assigner.time {
            WindowTime::EventTime => self.harness.snapshot_with_watermark()?,
            WindowTime::ProcessingTime => self.harness.snapshot()?,
        });
        if let Some(late) = self.late.as_mut() {
            late.snapshot(checkpoint, into, rt)?;
        }
        self.side.snapshot(checkpoint, into, rt)?;
        self.out.snapshot(checkpoint, into, rt)
    }

    fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        if self.dropped_late > 0 {
            rt.log(
                crate::runtime::LogLevel::Info,
                &format!("window '{}' dropped {} late records", self.harness.name, self.dropped_late),
            );
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
