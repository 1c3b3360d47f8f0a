//! Keyed operators: the harness they share (current key, key group, state, timers) and the keyed
//! process function and rolling reduce operators.

use crate::chain::{Downstream, Output, StreamRecord, min_time};
use crate::codec::{decode, encode_into};
use crate::error::{Error, Result};
use crate::functions::{Collector, KeyedContext, KeyedProcessFunction, RuntimeContext, TimeDomain};
use crate::keygroup::key_group_for_key_bytes;
use crate::operators::side_outputs::SideOutputs;
use crate::operators::window_progress::KeyGroupWatermarks;
use crate::runtime::{
    CheckpointId, KeyGroupState, KeyedStateBackend, OperatorSnapshot, RestoredState, StateId, StateKey, StateKind,
    TaskRuntime,
};
use crate::state::{KeyedState, StateRegistry};
use crate::time::{MIN_WATERMARK, NO_TIMESTAMP, Timestamp};
use crate::timer::{Timer, TimerService, Timers};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The keyed context of an operator in one subtask.
pub(crate) struct KeyedHarness<K> {
    pub(crate) uid: String,
    pub(crate) name: String,
    pub(crate) backend: Option<Box<dyn KeyedStateBackend>>,
    pub(crate) registry: StateRegistry,
    pub(crate) timers: Timers,
    pub(crate) key: Option<K>,
    pub(crate) key_bytes: Vec<u8>,
    pub(crate) key_group: u16,
    pub(crate) max_parallelism: u32,
    /// The key groups this subtask owns (set in `open`).
    pub(crate) key_groups: std::ops::RangeInclusive<u16>,
    pub(crate) watermark: Timestamp,
    /// Restored key groups ahead of `watermark` (window operators, which snapshot their
    /// watermark: see `window_progress`).
    pub(crate) progress: KeyGroupWatermarks,
    pub(crate) now: Timestamp,
    /// When expired entries of states with a time-to-live are next removed (none without such
    /// states).
    next_cleanup: Option<Timestamp>,
}

impl<K: crate::Data> KeyedHarness<K> {
    pub(crate) fn new(uid: &str, name: &str) -> Self {
        Self {
            uid: uid.to_owned(),
            name: name.to_owned(),
            backend: None,
            registry: StateRegistry::default(),
            timers: Timers::default(),
            key: None,
            key_bytes: Vec::new(),
            key_group: 0,
            max_parallelism: crate::keygroup::DEFAULT_MAX_PARALLELISM,
            key_groups: crate::keygroup::key_group_range(crate::keygroup::DEFAULT_MAX_PARALLELISM, 1, 0),
            watermark: MIN_WATERMARK,
            progress: KeyGroupWatermarks::default(),
            now: 0,
            next_cleanup: None,
        }
    }

    /// How often expired entries are removed: the shortest time-to-live, within 1 s and 60 s.
    fn cleanup_interval(&self) -> Option<Timestamp> {
        self.registry.ttls.iter().map(|(_, _, ttl)| *ttl).min().map(|ttl| ttl.clamp(1_000, 60_000))
    }

    /// The earliest processing time this operator's timers or state cleanup need.
    pub(crate) fn next_processing_time(&self) -> Option<Timestamp> {
        crate::chain::min_time(self.timers.next_processing(), self.next_cleanup)
    }

    /// Removes the expired entries of the states with a time-to-live when the cleanup is due (or
    /// schedules the first one); returns how many it removed.
    pub(crate) fn clean_up_expired(&mut self) -> Result<u64> {
        let Some(interval) = self.cleanup_interval() else { return Ok(0) };
        match self.next_cleanup {
            Some(due) if due <= self.now => {}
            Some(_) => return Ok(0),
            None => {
                self.next_cleanup = Some(self.now.saturating_add(interval));
                return Ok(0);
            }
        }
        self.next_cleanup = Some(self.now.saturating_add(interval));
        let now = self.now;
        let ttls = self.registry.ttls.clone();
        let backend = self.backend()?;
        let mut removed = 0;
        for (id, kind, ttl_ms) in ttls {
            removed += backend.remove_expired(id, kind, crate::runtime::Expiry { ttl_ms, now })?;
        }
        Ok(removed)
    }

    /// Opens the state backend; after a failure, restores this subtask's key groups of the
    /// operator's state and timers from the checkpoint, and the watermark if the operator
    /// snapshotted it ([`KeyedHarness::snapshot_with_watermark`]). Returns the restored state,
    /// for operators that derive more from it.
    pub(crate) fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<Option<RestoredState>> {
        self.key_groups = rt.info().key_groups();
        let mut backend = rt.keyed_state_backend(&self.uid)?;
        let restored = rt.restored_state(&self.uid);
        if let Some(restored) = &restored {
            backend.restore(&restored.keyed)?;
            self.timers.restore(&restored.keyed, &self.key_groups)?;
            (self.progress, self.watermark) = KeyGroupWatermarks::restore(&restored.keyed, &self.key_groups)?;
        }
        self.backend = Some(backend);
        self.max_parallelism = rt.info().max_parallelism;
        self.now = rt.processing_time();
        Ok(restored)
    }

    /// Makes `key` the current key.
    #[inline]
    pub(crate) fn set_key(&mut self, key: K) -> Result<()> {
        self.key_bytes.clear();
        encode_into(&key, &mut self.key_bytes, "key")?;
        self.key_group = key_group_for_key_bytes(&self.key_bytes, self.max_parallelism);
        self.key = Some(key);
        Ok(())
    }

    /// This operator's keyed state and timers, by key group, in the canonical format.
    pub(crate) fn snapshot(&mut self) -> Result<OperatorSnapshot> {
        self.snapshot_with(false)
    }

    /// [`KeyedHarness::snapshot`] and the watermark of each key group (see `window_progress`).
    pub(crate) fn snapshot_with_watermark(&mut self) -> Result<OperatorSnapshot> {
        self.snapshot_with(true)
    }

    fn snapshot_with(&mut self, watermark: bool) -> Result<OperatorSnapshot> {
        self.clean_up_expired()?;
        let mut groups: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
        for group in self.backend()?.snapshot()? {
            groups.entry(group.key_group).or_default().extend_from_slice(&group.entries);
        }
        self.timers.snapshot_into(&mut groups)?;
        if watermark {
            self.progress.snapshot_into(self.watermark, &self.key_groups, &mut groups)?;
        }
        Ok(OperatorSnapshot {
            uid: self.uid.clone(),
            keyed: groups.into_iter().map(|(key_group, entries)| KeyGroupState { key_group, entries }).collect(),
            operator_state: Vec::new(),
        })
    }

    /// Makes the key of `timer` the current key.
    pub(crate) fn set_key_of(&mut self, timer: &Timer) -> Result<()> {
        self.key_bytes.clear();
        self.key_bytes.extend_from_slice(timer.key());
        self.key_group = timer.key_group();
        self.key = Some(decode(timer.key(), "key of a timer")?);
        Ok(())
    }

    pub(crate) fn backend(&mut self) -> Result<&mut (dyn KeyedStateBackend + 'static)> {
        self.backend
            .as_deref_mut()
            .ok_or_else(|| Error::InvalidJob(format!("keyed operator '{}' used before open", self.name)))
    }

    pub(crate) fn state_id(&mut self, name: &'static str, kind: StateKind) -> Result<StateId> {
        let backend = self
            .backend
            .as_deref_mut()
            .ok_or_else(|| Error::InvalidJob(format!("keyed operator '{}' used before open", self.name)))?;
        self.registry.id(backend, name, kind)
    }

    /// The context handed to user functions for the current key.
    pub(crate) fn context<'a, O>(
        &'a mut self,
        out: &'a mut Vec<StreamRecord<O>>,
        side: &'a mut SideOutputs,
        timestamp: Timestamp,
        time_domain: Option<TimeDomain>,
    ) -> Result<KeyedContext<'a, K, O>> {
        let name = &self.name;
        let backend: &'a mut dyn KeyedStateBackend = self
            .backend
            .as_deref_mut()
            .ok_or_else(|| Error::InvalidJob(format!("keyed operator '{name}' used before open")))?;
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| Error::InvalidJob(format!("keyed operator '{name}' has no current key")))?;
        let state_key = StateKey { key_group: self.key_group, key: &self.key_bytes, namespace: &[] };
        Ok(KeyedContext {
            key,
            timestamp,
            out: Collector::new(out, timestamp),
            side,
            state: KeyedState { backend, registry: &mut self.registry, key: state_key, now: self.now },
            timers: TimerService {
                timers: &mut self.timers,
                key_group: self.key_group,
                key: &self.key_bytes,
                watermark: self.watermark,
                now: self.now,
            },
            time_domain,
        })
    }
}

impl<K: crate::Data> KeyedHarness<K> {
    /// Fires the due timers of `domain` (event-time timers up to the watermark `time`,
    /// processing-time timers up to `time`), calling `on_timer` with each timer's key in scope;
    /// output is flushed downstream every 4096 records.
    pub(crate) fn fire_timers<O: crate::Data>(
        &mut self,
        domain: TimeDomain,
        time: Timestamp,
        out: &mut Output<O>,
        side: &mut SideOutputs,
        rt: &mut dyn TaskRuntime,
        mut on_timer: impl FnMut(Timestamp, &mut KeyedContext<'_, K, O>) -> Result<()>,
    ) -> Result<()> {
        match domain {
            TimeDomain::EventTime => self.watermark = time,
            TimeDomain::ProcessingTime => {
                self.now = time;
                self.clean_up_expired()?;
            }
        }
        loop {
            let timer = match domain {
                TimeDomain::EventTime => self.timers.pop_event(time),
                TimeDomain::ProcessingTime => self.timers.pop_processing(time),
            };
            let Some(timer) = timer else { return Ok(()) };
            self.set_key_of(&timer)?;
            let timestamp = if domain == TimeDomain::EventTime { timer.timestamp } else { NO_TIMESTAMP };
            let mut ctx = self.context(&mut out.buffer, side, timestamp, Some(domain))?;
            on_timer(timer.timestamp, &mut ctx)?;
            if out.buffer.len() >= 4096 {
                out.flush(rt)?;
            }
            side.flush_if_full(rt)?;
        }
    }
}

impl<K: crate::Data> KeyedHarness<K> {
    /// The watermark advanced: fires the due event-time timers with `on_timer`, then passes the
    /// watermark through the side and main outputs.
    pub(crate) fn advance_watermark<O: crate::Data>(
        &mut self,
        watermark: Timestamp,
        (out, side): (&mut Output<O>, &mut SideOutputs),
        rt: &mut dyn TaskRuntime,
        on_timer: impl FnMut(Timestamp, &mut KeyedContext<'_, K, O>) -> Result<()>,
    ) -> Result<()> {
        self.now = rt.processing_time();
        self.fire_timers(TimeDomain::EventTime, watermark, out, side, rt, on_timer)?;
        side.watermark(watermark, rt)?;
        out.watermark(watermark, rt)
    }

    /// Processing time advanced: fires the due processing-time timers (and the state cleanup)
    /// with `on_timer`, then passes the time through the side and main outputs.
    pub(crate) fn advance_time<O: crate::Data>(
        &mut self,
        now: Timestamp,
        (out, side): (&mut Output<O>, &mut SideOutputs),
        rt: &mut dyn TaskRuntime,
        on_timer: impl FnMut(Timestamp, &mut KeyedContext<'_, K, O>) -> Result<()>,
    ) -> Result<()> {
        self.fire_timers(TimeDomain::ProcessingTime, now, out, side, rt, on_timer)?;
        side.time(now, rt)?;
        out.time(now, rt)
    }
}

/// `key_by(..).process(f)`.
pub(crate) struct KeyedProcessOperator<K, I, O, KF, F> {
    pub(crate) key_fn: Arc<KF>,
    pub(crate) function: F,
    pub(crate) harness: KeyedHarness<K>,
    pub(crate) out: Output<O>,
    pub(crate) side: SideOutputs,
    pub(crate) _input: std::marker::PhantomData<fn(I)>,
}

impl<K, I, O, KF, F> Downstream<I> for KeyedProcessOperator<K, I, O, KF, F>
where
    K: crate::Data,
    I: crate::Data,
    O: crate::Data,
    KF: Fn(&I) -> K + Send + Sync + 'static,
    F: KeyedProcessFunction<K, I, O>,
{
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.harness.open(rt)?;
        self.function.open(&RuntimeContext { rt, operator: &self.harness.name })?;
        self.side.open(rt)?;
        self.out.open(rt)
    }

    fn push(&mut self, batch: &mut Vec<StreamRecord<I>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.harness.now = rt.processing_time();
        for record in batch.drain(..) {
            self.harness.set_key((self.key_fn)(&record.value))?;
            let mut ctx = self.harness.context(&mut self.out.buffer, &mut self.side, record.timestamp, None)?;
            self.function.process_element(record.value, &mut ctx)?;
            if self.out.buffer.len() >= 4096 {
                self.out.flush(rt)?;
            }
            self.side.flush_if_full(rt)?;
        }
        self.harness.clean_up_expired()?;
        self.side.flush(rt)?;
        self.out.flush(rt)
    }

    fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        let function = &mut self.function;
        self.harness
            .advance_watermark(watermark, (&mut self.out, &mut self.side), rt, |ts, ctx| function.on_timer(ts, ctx))
    }

    fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.side.idleness(idle, rt)?;
        self.out.idleness(idle, rt)
    }

    fn time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        let function = &mut self.function;
        self.harness.advance_time(now, (&mut self.out, &mut self.side), rt, |ts, ctx| function.on_timer(ts, ctx))
    }

    fn next_time(&self) -> Option<Timestamp> {
        min_time(min_time(self.harness.next_processing_time(), self.side.next_time()), self.out.next_time())
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
        self.harness.now = rt.processing_time();
        into.push(self.harness.snapshot()?);
        self.side.snapshot(checkpoint, into, rt)?;
        self.out.snapshot(checkpoint, into, rt)
    }
}

/// `key_by(..).reduce(f)`: emits the running reduction of each key for every element.
pub(crate) struct ReduceOperator<K, T, KF, F> {
    pub(crate) key_fn: Arc<KF>,
    pub(crate) function: Arc<F>,
    pub(crate) harness: KeyedHarness<K>,
    pub(crate) state: StateId,
    pub(crate) scratch: Vec<u8>,
    pub(crate) out: Output<T>,
}

impl<K, T, KF, F> Downstream<T> for ReduceOperator<K, T, KF, F>
where
    K: crate::Data,
    T: crate::Data,
    KF: Fn(&T) -> K + Send + Sync + 'static,
    F: Fn(T, T) -> T + Send + Sync + 'static,
{
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.harness.open(rt)?;
        self.state = self.harness.state_id("reduce", StateKind::Value)?;
        self.out.open(rt)
    }

    fn push(&mut self, batch: &mut Vec<StreamRecord<T>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        for record in batch.drain(..) {
            self.harness.set_key((self.key_fn)(&record.value))?;
            let state = self.state;
            let key = StateKey { key_group: self.harness.key_group, key: &self.harness.key_bytes, namespace: &[] };
            let backend = self
                .harness
                .backend
                .as_deref_mut()
                .ok_or_else(|| Error::InvalidJob("reduce used before open".into()))?;
            let reduced = match backend.get(state, key)? {
                Some(bytes) => (self.function)(decode(bytes, "reduce state")?, record.value),
                None => record.value,
            };
            self.scratch.clear();
            encode_into(&reduced, &mut self.scratch, "reduce state")?;
            backend.put(state, key, &self.scratch)?;
            self.out.emit(reduced, record.timestamp);
        }
        self.out.flush(rt)
    }

    fn snapshot(
        &mut self,
        checkpoint: CheckpointId,
        into: &mut Vec<OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        into.push(self.harness.snapshot()?);
        self.out.snapshot(checkpoint, into, rt)
    }

    super::forward_control!(out, control_only);
}
