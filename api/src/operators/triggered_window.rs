//! The window operator for windows with a trigger or an evictor, and for global windows (see
//! [`crate::trigger`]): elements are kept with their timestamps in a list per key and window,
//! the trigger decides when the window function runs over them.
//!
//! Windows without a custom trigger or evictor keep using the aggregating operators of
//! `window.rs` and `window_heap.rs`, which keep one accumulator per window instead of every
//! element.

use crate::chain::{Downstream, Output, StreamRecord, min_time};
use crate::codec::{decode, encode_into};
use crate::error::{Error, Result};
use crate::functions::{Collector, ProcessWindowFunction};
use crate::operators::keyed::KeyedHarness;
use crate::operators::side_outputs::SideOutputs;
use crate::runtime::{CheckpointId, OperatorSnapshot, StateId, StateKey, StateKind, TaskRuntime, list_elements};
use crate::state::KeyedState;
use crate::time::{NO_TIMESTAMP, Timestamp};
use crate::timer::Timer;
use crate::trigger::{Evictor, Trigger, TriggerContext, TriggerResult};
use crate::window::{TimeWindow, WindowAssigner, WindowTime};
use std::sync::Arc;

/// The name of the elements' list state.
pub(crate) const ELEMENTS: &str = "window-elements";

pub(crate) struct TriggeredWindowOperator<K, T, O, KF, Tr, Ev, W> {
    pub(crate) key_fn: Arc<KF>,
    pub(crate) assigner: WindowAssigner,
    pub(crate) allowed_lateness: Timestamp,
    pub(crate) trigger: Tr,
    pub(crate) evictor: Ev,
    pub(crate) window_fn: Arc<W>,
    pub(crate) harness: KeyedHarness<K>,
    pub(crate) elements: StateId,
    pub(crate) out: Output<O>,
    pub(crate) late: Option<Output<T>>,
    /// Side outputs the window function emits to.
    pub(crate) side: SideOutputs,
    pub(crate) windows: Vec<TimeWindow>,
    pub(crate) scratch: Vec<u8>,
    pub(crate) dropped_late: u64,
}

impl<K, T, O, KF, Tr, Ev, W> TriggeredWindowOperator<K, T, O, KF, Tr, Ev, W>
where
    K: crate::Data,
    T: crate::Data,
    O: crate::Data,
    KF: Fn(&T) -> K + Send + Sync + 'static,
    Tr: Trigger<T>,
    Ev: Evictor<T>,
    W: ProcessWindowFunction<K, T, O>,
{
    /// When `window`'s state is dropped: its end plus the allowed lateness (never for global
    /// windows).
    fn cleanup_time(&self, window: &TimeWindow) -> Option<Timestamp> {
        (!self.assigner.is_global()).then(|| window.max_timestamp().saturating_add(self.allowed_lateness))
    }

    fn is_late(&self, window: &TimeWindow) -> bool {
        self.assigner.time == WindowTime::EventTime
            && self.cleanup_time(window).is_some_and(|cleanup| cleanup <= self.harness.watermark)
    }

    /// The trigger's context for the current key and `window`.
    fn trigger_context<'a>(harness: &'a mut KeyedHarness<K>, namespace: &'a [u8]) -> Result<TriggerContext<'a>> {
        let KeyedHarness { backend, registry, timers, key_bytes, key_group, watermark, now, name, .. } = harness;
        let backend =
            backend.as_deref_mut().ok_or_else(|| Error::InvalidJob(format!("window '{name}' used before open")))?;
        let key = StateKey { key_group: *key_group, key: key_bytes, namespace };
        Ok(TriggerContext {
            state: KeyedState { backend, registry, key, now: *now },
            timers,
            key_group: *key_group,
            key: key_bytes,
            namespace,
            watermark: *watermark,
            now: *now,
        })
    }

    /// The elements of the current key's `window`, with their timestamps, in arrival order.
    fn read(&mut self, namespace: &[u8]) -> Result<Vec<(Timestamp, T)>> {
        let h = &mut self.harness;
        let key = StateKey { key_group: h.key_group, key: &h.key_bytes, namespace };
        let backend = h.backend.as_deref_mut().ok_or_else(|| Error::InvalidJob("window used before open".into()))?;
        match backend.get(self.elements, key)? {
            Some(bytes) => list_elements(bytes).map(|e| decode(e?, ELEMENTS)).collect(),
            None => Ok(Vec::new()),
        }
    }

    fn write(&mut self, namespace: &[u8], elements: &[(Timestamp, T)]) -> Result<()> {
        let h = &mut self.harness;
        let key = StateKey { key_group: h.key_group, key: &h.key_bytes, namespace };
        let backend = h.backend.as_deref_mut().ok_or_else(|| Error::InvalidJob("window used before open".into()))?;
        backend.remove(self.elements, key)?;
        for element in elements {
            self.scratch.clear();
            encode_into(element, &mut self.scratch, ELEMENTS)?;
            backend.append(self.elements, key, &self.scratch)?;
        }
        Ok(())
    }

    fn purge(&mut self, namespace: &[u8]) -> Result<()> {
        let h = &mut self.harness;
        let key = StateKey { key_group: h.key_group, key: &h.key_bytes, namespace };
        let backend = h.backend.as_deref_mut().ok_or_else(|| Error::InvalidJob("window used before open".into()))?;
        backend.remove(self.elements, key)
    }

    /// Runs the window function over the current key's `window` (with the evictor around it).
    fn fire(&mut self, window: &TimeWindow, namespace: &[u8]) -> Result<()> {
        let mut elements = self.read(namespace)?;
        let before = elements.len();
        self.evictor.evict_before(&mut elements, window);
        let values: Vec<T> = elements.iter().map(|(_, v)| v.clone()).collect();
        if !values.is_empty() {
            let key = self.harness.key.as_ref().ok_or_else(|| Error::InvalidJob("window without a key".into()))?;
            let mut out = Collector::with_side_outputs(&mut self.out.buffer, window.max_timestamp(), &mut self.side);
            self.window_fn.process(key, window, values, &mut out);
        }
        let evicted_before = elements.len() != before;
        let kept = elements.len();
        self.evictor.evict_after(&mut elements, window);
        if evicted_before || elements.len() != kept {
            self.write(namespace, &elements)?;
        }
        Ok(())
    }

    /// Acts on what the trigger decided for `window`.
    fn apply(&mut self, result: TriggerResult, window: &TimeWindow, namespace: &[u8]) -> Result<()> {
        if result.fires() {
            self.fire(window, namespace)?;
        }
        if result.purges() {
            self.purge(namespace)?;
        }
        Ok(())
    }

    /// Drops `window`'s elements and the trigger's state for it.
    fn clear(&mut self, window: &TimeWindow, namespace: &[u8]) -> Result<()> {
        self.purge(namespace)?;
        let mut ctx = Self::trigger_context(&mut self.harness, namespace)?;
        self.trigger.clear(window, &mut ctx)
    }

    fn process(&mut self, record: StreamRecord<T>, rt: &mut dyn TaskRuntime) -> Result<()> {
        let timestamp = match self.assigner.time {
            WindowTime::EventTime if record.timestamp == NO_TIMESTAMP && !self.assigner.is_global() => {
                return Err(Error::InvalidJob(format!(
                    "event-time window '{}' received a record without a timestamp: call \
                     assign_timestamps_and_watermarks upstream or use a processing-time window",
                    self.harness.name
                )));
            }
            WindowTime::EventTime if record.timestamp == NO_TIMESTAMP => self.harness.now,
            WindowTime::EventTime => record.timestamp,
            WindowTime::ProcessingTime => self.harness.now,
        };
        let mut windows = std::mem::take(&mut self.windows);
        windows.clear();
        self.assigner.assign(timestamp, &mut windows);
        windows.retain(|w| !self.is_late(w));
        if windows.is_empty() {
            self.windows = windows;
            match self.late.as_mut() {
                Some(late) => late.emit(record.value, record.timestamp),
                None => self.dropped_late += 1,
            }
            return Ok(());
        }
        self.harness.set_key((self.key_fn)(&record.value))?;
        let element = (timestamp, record.value);
        for window in &windows {
            let namespace = window.to_bytes();
            self.scratch.clear();
            encode_into(&element, &mut self.scratch, ELEMENTS)?;
            {
                let h = &mut self.harness;
                let key = StateKey { key_group: h.key_group, key: &h.key_bytes, namespace: &namespace };
                let backend =
                    h.backend.as_deref_mut().ok_or_else(|| Error::InvalidJob("window used before open".into()))?;
                backend.append(self.elements, key, &self.scratch)?;
            }
            let result = {
                let mut ctx = Self::trigger_context(&mut self.harness, &namespace)?;
                self.trigger.on_element(&element.1, timestamp, window, &mut ctx)?
            };
            self.apply(result, window, &namespace)?;
            if let Some(cleanup) = self.cleanup_time(window) {
                let domain = match self.assigner.time {
                    WindowTime::EventTime => crate::functions::TimeDomain::EventTime,
                    WindowTime::ProcessingTime => crate::functions::TimeDomain::ProcessingTime,
                };
                let h = &mut self.harness;
                h.timers.register(domain, cleanup, h.key_group, &h.key_bytes, &namespace);
            }
            if self.out.buffer.len() >= 4096 {
                self.out.flush(rt)?;
            }
        }
        self.windows = windows;
        Ok(())
    }

    /// A timer of the current key's window fired at `time`: the trigger's, the cleanup, or both.
    fn on_timer(&mut self, timer: &Timer, event_time: bool) -> Result<()> {
        self.harness.set_key_of(timer)?;
        let namespace = timer.namespace().to_vec();
        let window = TimeWindow::from_bytes(&namespace)
            .ok_or_else(|| Error::serialization("deserialize", "window of a timer", "not 16 bytes"))?;
        let result = {
            let mut ctx = Self::trigger_context(&mut self.harness, &namespace)?;
            if event_time {
                self.trigger.on_event_time(timer.timestamp, &window, &mut ctx)?
            } else {
                self.trigger.on_processing_time(timer.timestamp, &window, &mut ctx)?
            }
        };
        self.apply(result, &window, &namespace)?;
        let own_clock = (self.assigner.time == WindowTime::EventTime) == event_time;
        if own_clock && self.cleanup_time(&window) == Some(timer.timestamp) {
            self.clear(&window, &namespace)?;
        }
        Ok(())
    }

    fn fire_timers(&mut self, event_time: bool, time: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        if event_time {
            self.harness.watermark = time;
        } else {
            self.harness.now = time;
        }
        loop {
            let timer =
                if event_time { self.harness.timers.pop_event(time) } else { self.harness.timers.pop_processing(time) };
            let Some(timer) = timer else { return Ok(()) };
            self.on_timer(&timer, event_time)?;
            if self.out.buffer.len() >= 4096 {
                self.out.flush(rt)?;
            }
        }
    }
}

impl<K, T, O, KF, Tr, Ev, W> Downstream<T> for TriggeredWindowOperator<K, T, O, KF, Tr, Ev, W>
where
    K: crate::Data,
    T: crate::Data,
    O: crate::Data,
    KF: Fn(&T) -> K + Send + Sync + 'static,
    Tr: Trigger<T>,
    Ev: Evictor<T>,
    W: ProcessWindowFunction<K, T, O>,
{
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.harness.open(rt)?;
        self.elements = self.harness.state_id(ELEMENTS, StateKind::List)?;
        if let Some(late) = self.late.as_mut() {
            late.open(rt)?;
        }
        self.side.open(rt)?;
        self.out.open(rt)
    }

    fn push(&mut self, batch: &mut Vec<StreamRecord<T>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.harness.now = rt.processing_time();
        for record in batch.drain(..) {
            self.process(record, rt)?;
        }
        if let Some(late) = self.late.as_mut() {
            late.flush(rt)?;
        }
        self.side.flush(rt)?;
        self.out.flush(rt)
    }

    fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.harness.now = rt.processing_time();
        self.fire_timers(true, watermark, rt)?;
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
        self.fire_timers(false, now, rt)?;
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

    fn snapshot(
        &mut self,
        checkpoint: CheckpointId,
        into: &mut Vec<OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        into.push(self.harness.snapshot()?);
        // Every output passes the checkpoint on, so that what is chained behind it snapshots.
        if let Some(late) = self.late.as_mut() {
            late.snapshot(checkpoint, into, rt)?;
        }
        self.side.snapshot(checkpoint, into, rt)?;
        self.out.snapshot(checkpoint, into, rt)
    }
}
