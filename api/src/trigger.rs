//! Triggers and evictors: when a window fires and which of its elements the window function
//! sees (Flink's `Trigger` and `Evictor`), for `window(..).trigger(..)`, `.evictor(..)`, global
//! windows and count windows.
//!
//! A window with a trigger or an evictor (or a global window) keeps its elements with their
//! timestamps, per key and window, in keyed state. Every element asks the trigger
//! ([`Trigger::on_element`]); timers it registers call it again ([`Trigger::on_event_time`],
//! [`Trigger::on_processing_time`]). On `Fire` the evictor may drop elements before the function
//! sees them and after; on `Purge` the window's elements are dropped. Time windows are cleaned
//! up (elements and trigger state) when the watermark (or clock) passes their end plus the
//! allowed lateness; global windows only when purged.

use crate::error::Result;
use crate::state::{KeyedState, ValueStateDescriptor};
use crate::time::Timestamp;
use crate::timer::Timers;
use crate::window::TimeWindow;
use std::time::Duration;

/// What a trigger decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerResult {
    /// Nothing happens.
    Continue,
    /// The window function runs over the window's elements, which stay.
    Fire,
    /// The window's elements are dropped without firing.
    Purge,
    /// The window function runs, then the elements are dropped.
    FireAndPurge,
}

impl TriggerResult {
    /// Whether the window fires.
    pub fn fires(self) -> bool {
        matches!(self, Self::Fire | Self::FireAndPurge)
    }

    /// Whether the window's elements are dropped.
    pub fn purges(self) -> bool {
        matches!(self, Self::Purge | Self::FireAndPurge)
    }
}

/// What a trigger may do for the current key and window: read the clocks, register timers
/// (they call the trigger back for this window) and keep state scoped to the window.
pub struct TriggerContext<'a> {
    pub(crate) state: KeyedState<'a>,
    pub(crate) timers: &'a mut Timers,
    pub(crate) key_group: u16,
    pub(crate) key: &'a [u8],
    pub(crate) namespace: &'a [u8],
    pub(crate) watermark: Timestamp,
    pub(crate) now: Timestamp,
}

impl TriggerContext<'_> {
    /// The operator's current watermark.
    pub fn current_watermark(&self) -> Timestamp {
        self.watermark
    }

    /// The current processing time.
    pub fn current_processing_time(&self) -> Timestamp {
        self.now
    }

    /// Calls [`Trigger::on_event_time`] for this window once the watermark reaches `time`.
    pub fn register_event_time_timer(&mut self, time: Timestamp) {
        self.timers.register(crate::functions::TimeDomain::EventTime, time, self.key_group, self.key, self.namespace);
    }

    /// Calls [`Trigger::on_processing_time`] for this window once the clock reaches `time`.
    pub fn register_processing_time_timer(&mut self, time: Timestamp) {
        let domain = crate::functions::TimeDomain::ProcessingTime;
        self.timers.register(domain, time, self.key_group, self.key, self.namespace);
    }

    /// Deletes an event-time timer of this window.
    pub fn delete_event_time_timer(&mut self, time: Timestamp) {
        self.timers.delete(crate::functions::TimeDomain::EventTime, time, self.key_group, self.key, self.namespace);
    }

    /// Deletes a processing-time timer of this window.
    pub fn delete_processing_time_timer(&mut self, time: Timestamp) {
        let domain = crate::functions::TimeDomain::ProcessingTime;
        self.timers.delete(domain, time, self.key_group, self.key, self.namespace);
    }

    /// The trigger's value state `descriptor` for the current key and window.
    pub fn value_state<V: crate::Data>(
        &mut self,
        descriptor: &ValueStateDescriptor<V>,
    ) -> Result<crate::state::ValueState<'_, V>> {
        self.state.value(descriptor)
    }
}

/// Decides when a window fires (Flink's `Trigger`). One instance per subtask; keep state per
/// window in [`TriggerContext::value_state`], not in fields.
pub trait Trigger<T>: Clone + Send + Sync + 'static {
    /// An element at `timestamp` was added to `window`.
    fn on_element(
        &mut self,
        element: &T,
        timestamp: Timestamp,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult>;

    /// An event-time timer this trigger registered for `window` fired at `time`.
    fn on_event_time(
        &mut self,
        time: Timestamp,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        let _ = (time, window, ctx);
        Ok(TriggerResult::Continue)
    }

    /// A processing-time timer this trigger registered for `window` fired at `time`.
    fn on_processing_time(
        &mut self,
        time: Timestamp,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        let _ = (time, window, ctx);
        Ok(TriggerResult::Continue)
    }

    /// `window` is cleaned up: delete the timers and state the trigger keeps for it.
    fn clear(&mut self, window: &TimeWindow, ctx: &mut TriggerContext<'_>) -> Result<()> {
        let _ = (window, ctx);
        Ok(())
    }
}

/// Fires when the watermark passes the window's end (the default of event-time windows).
#[derive(Debug, Clone, Copy, Default)]
pub struct EventTimeTrigger;

impl<T> Trigger<T> for EventTimeTrigger {
    fn on_element(
        &mut self,
        _: &T,
        _: Timestamp,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        if window.max_timestamp() <= ctx.current_watermark() {
            return Ok(TriggerResult::Fire);
        }
        ctx.register_event_time_timer(window.max_timestamp());
        Ok(TriggerResult::Continue)
    }
    fn on_event_time(
        &mut self,
        time: Timestamp,
        window: &TimeWindow,
        _: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        Ok(if time == window.max_timestamp() { TriggerResult::Fire } else { TriggerResult::Continue })
    }
    fn clear(&mut self, window: &TimeWindow, ctx: &mut TriggerContext<'_>) -> Result<()> {
        ctx.delete_event_time_timer(window.max_timestamp());
        Ok(())
    }
}

/// Fires when the clock passes the window's end (the default of processing-time windows).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessingTimeTrigger;

impl<T> Trigger<T> for ProcessingTimeTrigger {
    fn on_element(
        &mut self,
        _: &T,
        _: Timestamp,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        ctx.register_processing_time_timer(window.max_timestamp());
        Ok(TriggerResult::Continue)
    }
    fn on_processing_time(
        &mut self,
        time: Timestamp,
        window: &TimeWindow,
        _: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        Ok(if time == window.max_timestamp() { TriggerResult::Fire } else { TriggerResult::Continue })
    }
    fn clear(&mut self, window: &TimeWindow, ctx: &mut TriggerContext<'_>) -> Result<()> {
        ctx.delete_processing_time_timer(window.max_timestamp());
        Ok(())
    }
}

/// Never fires (the default of global windows: give them a trigger).
#[derive(Debug, Clone, Copy, Default)]
pub struct NeverTrigger;

impl<T> Trigger<T> for NeverTrigger {
    fn on_element(&mut self, _: &T, _: Timestamp, _: &TimeWindow, _: &mut TriggerContext<'_>) -> Result<TriggerResult> {
        Ok(TriggerResult::Continue)
    }
}

const COUNT: ValueStateDescriptor<u64> = ValueStateDescriptor::new("__trigger/count");

/// Fires when the window holds `count` more elements than at its last firing (Flink's
/// `CountTrigger`).
#[derive(Debug, Clone, Copy)]
pub struct CountTrigger {
    count: u64,
}

impl CountTrigger {
    /// Fires every `count` elements (at least 1).
    pub fn of(count: u64) -> Self {
        Self { count: count.max(1) }
    }
}

impl<T> Trigger<T> for CountTrigger {
    fn on_element(
        &mut self,
        _: &T,
        _: Timestamp,
        _: &TimeWindow,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        let mut seen = ctx.value_state(&COUNT)?;
        let n = seen.value()?.unwrap_or(0) + 1;
        if n >= self.count {
            seen.clear()?;
            return Ok(TriggerResult::Fire);
        }
        seen.update(&n)?;
        Ok(TriggerResult::Continue)
    }
    fn clear(&mut self, _: &TimeWindow, ctx: &mut TriggerContext<'_>) -> Result<()> {
        ctx.value_state(&COUNT)?.clear()
    }
}

const NEXT_FIRE: ValueStateDescriptor<Timestamp> = ValueStateDescriptor::new("__trigger/next-fire");

/// Fires every `interval` of event time while the window has elements, and at its end (Flink's
/// `ContinuousEventTimeTrigger`): early results of long windows.
#[derive(Debug, Clone, Copy)]
pub struct ContinuousEventTimeTrigger {
    interval: Timestamp,
}

impl ContinuousEventTimeTrigger {
    /// Fires at every multiple of `interval` (at least 1 ms).
    pub fn of(interval: Duration) -> Self {
        Self { interval: crate::time::duration_ms(interval).max(1) }
    }
}

impl<T> Trigger<T> for ContinuousEventTimeTrigger {
    fn on_element(
        &mut self,
        _: &T,
        timestamp: Timestamp,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        if window.max_timestamp() <= ctx.current_watermark() {
            return Ok(TriggerResult::Fire);
        }
        ctx.register_event_time_timer(window.max_timestamp());
        if ctx.value_state(&NEXT_FIRE)?.value()?.is_none() {
            let next = timestamp - timestamp.rem_euclid(self.interval) + self.interval;
            ctx.register_event_time_timer(next);
            ctx.value_state(&NEXT_FIRE)?.update(&next)?;
        }
        Ok(TriggerResult::Continue)
    }
    fn on_event_time(
        &mut self,
        time: Timestamp,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        if time == window.max_timestamp() {
            return Ok(TriggerResult::Fire);
        }
        if ctx.value_state(&NEXT_FIRE)?.value()? == Some(time) {
            let next = time + self.interval;
            ctx.register_event_time_timer(next);
            ctx.value_state(&NEXT_FIRE)?.update(&next)?;
            return Ok(TriggerResult::Fire);
        }
        Ok(TriggerResult::Continue)
    }
    fn clear(&mut self, window: &TimeWindow, ctx: &mut TriggerContext<'_>) -> Result<()> {
        if let Some(next) = ctx.value_state(&NEXT_FIRE)?.value()? {
            ctx.delete_event_time_timer(next);
        }
        ctx.delete_event_time_timer(window.max_timestamp());
        ctx.value_state(&NEXT_FIRE)?.clear()
    }
}

/// Fires every `interval` of processing time while the window has elements (Flink's
/// `ContinuousProcessingTimeTrigger`).
#[derive(Debug, Clone, Copy)]
pub struct ContinuousProcessingTimeTrigger {
    interval: Timestamp,
}

impl ContinuousProcessingTimeTrigger {
    /// Fires at every multiple of `interval` of the clock (at least 1 ms).
    pub fn of(interval: Duration) -> Self {
        Self { interval: crate::time::duration_ms(interval).max(1) }
    }
}

impl<T> Trigger<T> for ContinuousProcessingTimeTrigger {
    fn on_element(
        &mut self,
        _: &T,
        _: Timestamp,
        _: &TimeWindow,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        if ctx.value_state(&NEXT_FIRE)?.value()?.is_none() {
            let now = ctx.current_processing_time();
            let next = now - now.rem_euclid(self.interval) + self.interval;
            ctx.register_processing_time_timer(next);
            ctx.value_state(&NEXT_FIRE)?.update(&next)?;
        }
        Ok(TriggerResult::Continue)
    }
    fn on_processing_time(
        &mut self,
        time: Timestamp,
        _: &TimeWindow,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        if ctx.value_state(&NEXT_FIRE)?.value()? == Some(time) {
            ctx.value_state(&NEXT_FIRE)?.clear()?;
            return Ok(TriggerResult::Fire);
        }
        Ok(TriggerResult::Continue)
    }
    fn clear(&mut self, _: &TimeWindow, ctx: &mut TriggerContext<'_>) -> Result<()> {
        if let Some(next) = ctx.value_state(&NEXT_FIRE)?.value()? {
            ctx.delete_processing_time_timer(next);
        }
        ctx.value_state(&NEXT_FIRE)?.clear()
    }
}

/// Makes every firing of `trigger` purge the window (Flink's `PurgingTrigger`).
#[derive(Debug, Clone, Copy)]
pub struct PurgingTrigger<Tr> {
    trigger: Tr,
}

impl<Tr> PurgingTrigger<Tr> {
    /// `trigger`, purging when it fires.
    pub fn of(trigger: Tr) -> Self {
        Self { trigger }
    }
}

fn purging(result: TriggerResult) -> TriggerResult {
    if result.fires() { TriggerResult::FireAndPurge } else { result }
}

impl<T, Tr: Trigger<T>> Trigger<T> for PurgingTrigger<Tr> {
    fn on_element(
        &mut self,
        element: &T,
        timestamp: Timestamp,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        self.trigger.on_element(element, timestamp, window, ctx).map(purging)
    }
    fn on_event_time(
        &mut self,
        time: Timestamp,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        self.trigger.on_event_time(time, window, ctx).map(purging)
    }
    fn on_processing_time(
        &mut self,
        time: Timestamp,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        self.trigger.on_processing_time(time, window, ctx).map(purging)
    }
    fn clear(&mut self, window: &TimeWindow, ctx: &mut TriggerContext<'_>) -> Result<()> {
        self.trigger.clear(window, ctx)
    }
}

/// Drops elements of a firing window before or after the window function sees them (Flink's
/// `Evictor`). Elements come with their timestamps, in arrival order.
pub trait Evictor<T>: Clone + Send + Sync + 'static {
    /// Before the window function: remove what it should not see.
    fn evict_before(&self, elements: &mut Vec<(Timestamp, T)>, window: &TimeWindow) {
        let _ = (elements, window);
    }
    /// After the window function: remove what the window should no longer keep.
    fn evict_after(&self, elements: &mut Vec<(Timestamp, T)>, window: &TimeWindow) {
        let _ = (elements, window);
    }
}

/// No evictor (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvictor;

impl<T> Evictor<T> for NoEvictor {}

/// Keeps the last `count` elements (Flink's `CountEvictor`), before the function by default.
#[derive(Debug, Clone, Copy)]
pub struct CountEvictor {
    count: usize,
    after: bool,
}

impl CountEvictor {
    /// Keeps the last `count` elements before the window function runs.
    pub fn of(count: usize) -> Self {
        Self { count, after: false }
    }

    /// Keeps the last `count` elements after the window function ran.
    pub fn after(count: usize) -> Self {
        Self { count, after: true }
    }

    fn evict<T>(&self, elements: &mut Vec<(Timestamp, T)>) {
        let excess = elements.len().saturating_sub(self.count);
        elements.drain(..excess);
    }
}

impl<T> Evictor<T> for CountEvictor {
    fn evict_before(&self, elements: &mut Vec<(Timestamp, T)>, _: &TimeWindow) {
        if !self.after {
            self.evict(elements);
        }
    }
    fn evict_after(&self, elements: &mut Vec<(Timestamp, T)>, _: &TimeWindow) {
        if self.after {
            self.evict(elements);
        }
    }
}

/// Keeps the elements within `keep` of the newest element's timestamp (Flink's `TimeEvictor`).
#[derive(Debug, Clone, Copy)]
pub struct TimeEvictor {
    keep: Timestamp,
}

impl TimeEvictor {
    /// Keeps elements whose timestamp is more than `newest - keep`, before the function runs.
    pub fn of(keep: Duration) -> Self {
        Self { keep: crate::time::duration_ms(keep) }
    }
}

impl<T> Evictor<T> for TimeEvictor {
    fn evict_before(&self, elements: &mut Vec<(Timestamp, T)>, _: &TimeWindow) {
        if let Some(newest) = elements.iter().map(|(t, _)| *t).max() {
            let cut = newest.saturating_sub(self.keep);
            elements.retain(|(t, _)| *t > cut);
        }
    }
}

/// The default trigger of an assigner: its clock's end-of-window trigger, none for global
/// windows.
#[derive(Debug, Clone, Copy)]
pub enum DefaultTrigger {
    /// [`EventTimeTrigger`].
    EventTime,
    /// [`ProcessingTimeTrigger`].
    ProcessingTime,
    /// [`NeverTrigger`].
    Never,
}

impl<T> Trigger<T> for DefaultTrigger {
    fn on_element(
        &mut self,
        e: &T,
        t: Timestamp,
        w: &TimeWindow,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        match self {
            Self::EventTime => EventTimeTrigger.on_element(e, t, w, ctx),
            Self::ProcessingTime => ProcessingTimeTrigger.on_element(e, t, w, ctx),
            Self::Never => Ok(TriggerResult::Continue),
        }
    }
    fn on_event_time(
        &mut self,
        time: Timestamp,
        w: &TimeWindow,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        match self {
            Self::EventTime => <EventTimeTrigger as Trigger<T>>::on_event_time(&mut EventTimeTrigger, time, w, ctx),
            _ => Ok(TriggerResult::Continue),
        }
    }
    fn on_processing_time(
        &mut self,
        time: Timestamp,
        w: &TimeWindow,
        ctx: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        match self {
            Self::ProcessingTime => {
                <ProcessingTimeTrigger as Trigger<T>>::on_processing_time(&mut ProcessingTimeTrigger, time, w, ctx)
            }
            _ => Ok(TriggerResult::Continue),
        }
    }
    fn clear(&mut self, w: &TimeWindow, ctx: &mut TriggerContext<'_>) -> Result<()> {
        match self {
            Self::EventTime => <EventTimeTrigger as Trigger<T>>::clear(&mut EventTimeTrigger, w, ctx),
            Self::ProcessingTime => <ProcessingTimeTrigger as Trigger<T>>::clear(&mut ProcessingTimeTrigger, w, ctx),
            Self::Never => Ok(()),
        }
    }
}
