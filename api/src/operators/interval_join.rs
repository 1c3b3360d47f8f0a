//! The interval join (Flink's `IntervalJoinOperator`), as a keyed co-process function over keyed
//! state: each side's elements are buffered by key and timestamp; an element joins the buffered
//! elements of the other side whose timestamps lie in its interval; a buffer entry is dropped by
//! an event-time timer once no element that is not late can join it any more.
//!
//! With `left.ts + lower <= right.ts <= left.ts + upper` (bounds inclusive unless made
//! exclusive): a left element at `t` is needed while a right element at up to `t + upper` may
//! come, so until the watermark reaches `t + max(upper, 0)`; a right element at `t` until
//! `t + max(-lower, 0)`. An element is late when its timestamp is at or below the watermark (the
//! watermark says no such element follows, as for windows); late elements join nothing and go
//! to the side output for their side when one is set, else they are dropped.

use crate::error::{Error, Result};
use crate::functions::{Collector, JoinContext, KeyedCoProcessFunction, KeyedContext, ProcessJoinFunction};
use crate::state::{DeclaredState, MapStateDescriptor};
use crate::time::{MIN_WATERMARK, Timestamp};
use std::marker::PhantomData;

/// The bounds of an interval join, relative to the left element's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interval {
    pub(crate) lower: Timestamp,
    pub(crate) upper: Timestamp,
    pub(crate) lower_inclusive: bool,
    pub(crate) upper_inclusive: bool,
}

impl Interval {
    /// Whether a right element at `right` joins a left element at `left`.
    #[inline]
    pub(crate) fn contains(&self, left: Timestamp, right: Timestamp) -> bool {
        let low = left.saturating_add(self.lower);
        let high = left.saturating_add(self.upper);
        let above = if self.lower_inclusive { right >= low } else { right > low };
        let below = if self.upper_inclusive { right <= high } else { right < high };
        above && below
    }

    /// When the watermark makes a left element at `t` useless.
    pub(crate) fn left_cleanup(&self, t: Timestamp) -> Timestamp {
        t.saturating_add(self.upper.max(0))
    }

    /// When the watermark makes a right element at `t` useless.
    pub(crate) fn right_cleanup(&self, t: Timestamp) -> Timestamp {
        t.saturating_add(self.lower.saturating_neg().max(0))
    }
}

/// The buffered elements of one side: by timestamp.
pub(crate) const LEFT: &str = "interval-join-left";
pub(crate) const RIGHT: &str = "interval-join-right";

/// The keyed co-process function of `interval_join(..).between(..).process(f)`.
pub(crate) struct IntervalJoin<A, B, F> {
    pub(crate) interval: Interval,
    pub(crate) function: F,
    /// Side output names for late elements of each side.
    pub(crate) left_late: Option<String>,
    pub(crate) right_late: Option<String>,
    pub(crate) _types: PhantomData<fn(A, B)>,
}

impl<A, B, F: Clone> Clone for IntervalJoin<A, B, F> {
    fn clone(&self) -> Self {
        Self {
            interval: self.interval,
            function: self.function.clone(),
            left_late: self.left_late.clone(),
            right_late: self.right_late.clone(),
            _types: PhantomData,
        }
    }
}

fn left_buffer<A: crate::Data>() -> MapStateDescriptor<Timestamp, Vec<A>> {
    MapStateDescriptor::new(LEFT).internal()
}

fn right_buffer<B: crate::Data>() -> MapStateDescriptor<Timestamp, Vec<B>> {
    MapStateDescriptor::new(RIGHT).internal()
}

/// The element's timestamp, or the error of a stream without event time.
fn timestamp_of<K, O>(ctx: &KeyedContext<'_, K, O>) -> Result<Timestamp> {
    ctx.timestamp().ok_or_else(|| {
        Error::InvalidJob(
            "an interval join needs event timestamps on both inputs: assign them with \
             assign_timestamps_and_watermarks (or read a source that has them)"
                .into(),
        )
    })
}

fn is_late<K, O>(ctx: &KeyedContext<'_, K, O>, timestamp: Timestamp) -> bool {
    let watermark = ctx.current_watermark();
    watermark != MIN_WATERMARK && timestamp <= watermark
}

impl<K, A, B, O, F> KeyedCoProcessFunction<K, A, B, O> for IntervalJoin<A, B, F>
where
    K: crate::Data,
    A: crate::Data,
    B: crate::Data,
    O: crate::Data,
    F: ProcessJoinFunction<A, B, O>,
{
    fn states(&self) -> Vec<DeclaredState> {
        vec![left_buffer::<A>().declared(), right_buffer::<B>().declared()]
    }

    fn open(&mut self, ctx: &crate::functions::RuntimeContext<'_>) -> Result<()> {
        self.function.open(ctx)
    }

    fn process_element1(&mut self, left: A, ctx: &mut KeyedContext<'_, K, O>) -> Result<()> {
        let t = timestamp_of(ctx)?;
        if is_late(ctx, t) {
            if let Some(tag) = &self.left_late {
                ctx.side.emit(tag, left, t);
            }
            return Ok(());
        }
        let mut buffered = ctx.map_state(&left_buffer::<A>())?;
        let mut bucket = buffered.get(&t)?.unwrap_or_default();
        bucket.push(left.clone());
        buffered.put(&t, &bucket)?;
        let interval = self.interval;
        let joined = ctx.map_state(&right_buffer::<B>())?.entries_where(|&right_t| interval.contains(t, right_t))?;
        for (right_t, rights) in joined {
            for right in rights {
                self.join(left.clone(), right, (t, right_t), ctx)?;
            }
        }
        ctx.timer_service().register_event_time_timer(self.interval.left_cleanup(t));
        Ok(())
    }

    fn process_element2(&mut self, right: B, ctx: &mut KeyedContext<'_, K, O>) -> Result<()> {
        let t = timestamp_of(ctx)?;
        if is_late(ctx, t) {
            if let Some(tag) = &self.right_late {
                ctx.side.emit(tag, right, t);
            }
            return Ok(());
        }
        let mut buffered = ctx.map_state(&right_buffer::<B>())?;
        let mut bucket = buffered.get(&t)?.unwrap_or_default();
        bucket.push(right.clone());
        buffered.put(&t, &bucket)?;
        let interval = self.interval;
        let joined = ctx.map_state(&left_buffer::<A>())?.entries_where(|&left_t| interval.contains(left_t, t))?;
        for (left_t, lefts) in joined {
            for left in lefts {
                self.join(left, right.clone(), (left_t, t), ctx)?;
            }
        }
        ctx.timer_service().register_event_time_timer(self.interval.right_cleanup(t));
        Ok(())
    }

    fn on_timer(&mut self, timestamp: Timestamp, ctx: &mut KeyedContext<'_, K, O>) -> Result<()> {
        // A timer at T is the cleanup time of the left bucket at T - max(upper, 0) and of the
        // right bucket at T - max(-lower, 0), whichever side registered it.
        let left_t = timestamp.saturating_sub(self.interval.upper.max(0));
        let right_t = timestamp.saturating_sub(self.interval.lower.saturating_neg().max(0));
        if self.interval.left_cleanup(left_t) == timestamp {
            ctx.map_state(&left_buffer::<A>())?.remove(&left_t)?;
        }
        if self.interval.right_cleanup(right_t) == timestamp {
            ctx.map_state(&right_buffer::<B>())?.remove(&right_t)?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        self.function.close()
    }
}

impl<A, B, F> IntervalJoin<A, B, F> {
    fn join<K, O>(
        &mut self,
        left: A,
        right: B,
        (left_timestamp, right_timestamp): (Timestamp, Timestamp),
        ctx: &mut KeyedContext<'_, K, O>,
    ) -> Result<()>
    where
        F: ProcessJoinFunction<A, B, O>,
    {
        let timestamp = left_timestamp.max(right_timestamp);
        let mut join_ctx = JoinContext {
            left_timestamp,
            right_timestamp,
            out: Collector::new(&mut *ctx.out.buffer, timestamp),
            side: &mut *ctx.side,
        };
        self.function.process_element(left, right, &mut join_ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_unless_made_exclusive() {
        let mut i = Interval { lower: -2, upper: 3, lower_inclusive: true, upper_inclusive: true };
        let joined: Vec<i64> = (0..20).filter(|&r| i.contains(10, r)).collect();
        assert_eq!(joined, vec![8, 9, 10, 11, 12, 13]);
        i.lower_inclusive = false;
        i.upper_inclusive = false;
        let joined: Vec<i64> = (0..20).filter(|&r| i.contains(10, r)).collect();
        assert_eq!(joined, vec![9, 10, 11, 12]);
        // A left element at 10 is needed until a right one at 13 can no longer come; a right one
        // at 10 until a left one at 12 (10 - lower) can no longer come.
        assert_eq!(i.left_cleanup(10), 13);
        assert_eq!(i.right_cleanup(10), 12);
    }
}
