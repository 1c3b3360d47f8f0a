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
    /// Whether a right element at `right` joins a left element at `left`: the definition the
    /// tests check the operators' ranges against.
    #[cfg(test)]
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

/// A timestamp as a map key whose encoding sorts as the timestamps do (big-endian with the
/// sign bit flipped, 8 bytes): a probe reads only its interval, seeking past the older
/// timestamps (and, in RocksDB, past the tombstones their cleanup left).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct OrderedTime([u8; 8]);

impl OrderedTime {
    pub(crate) fn new(timestamp: Timestamp) -> Self {
        Self(((timestamp as u64) ^ (1 << 63)).to_be_bytes())
    }

    pub(crate) fn timestamp(self) -> Timestamp {
        (u64::from_be_bytes(self.0) ^ (1 << 63)) as Timestamp
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

fn left_buffer<A: crate::Data>() -> MapStateDescriptor<OrderedTime, Vec<A>> {
    MapStateDescriptor::new(LEFT).internal()
}

fn right_buffer<B: crate::Data>() -> MapStateDescriptor<OrderedTime, Vec<B>> {
    MapStateDescriptor::new(RIGHT).internal()
}

/// The inclusive range of timestamps from `low` to `high` with the bounds' inclusivity, as
/// map keys (the end exclusive; `None`: to the end), or `None` when it is empty.
fn key_range(
    (low, low_inclusive): (Timestamp, bool),
    (high, high_inclusive): (Timestamp, bool),
) -> Option<(OrderedTime, Option<OrderedTime>)> {
    let first = if low_inclusive { Some(low) } else { low.checked_add(1) }?;
    let last = if high_inclusive { Some(high) } else { high.checked_sub(1) }?;
    (first <= last).then(|| (OrderedTime::new(first), last.checked_add(1).map(OrderedTime::new)))
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
        let mut bucket = buffered.get(&OrderedTime::new(t))?.unwrap_or_default();
        bucket.push(left.clone());
        buffered.put(&OrderedTime::new(t), &bucket)?;
        let interval = self.interval;
        // Right elements at `t + lower ..= t + upper`.
        let range = key_range(
            (t.saturating_add(interval.lower), interval.lower_inclusive),
            (t.saturating_add(interval.upper), interval.upper_inclusive),
        );
        if let Some((from, to)) = range {
            for (right_t, rights) in ctx.map_state(&right_buffer::<B>())?.entries_between(&from, to.as_ref())? {
                for right in rights {
                    self.join(left.clone(), right, (t, right_t.timestamp()), ctx)?;
                }
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
        let mut bucket = buffered.get(&OrderedTime::new(t))?.unwrap_or_default();
        bucket.push(right.clone());
        buffered.put(&OrderedTime::new(t), &bucket)?;
        let interval = self.interval;
        // Left elements `l` with `l + lower <= t <= l + upper`: `t - upper ..= t - lower`.
        let range = key_range(
            (t.saturating_sub(interval.upper), interval.upper_inclusive),
            (t.saturating_sub(interval.lower), interval.lower_inclusive),
        );
        if let Some((from, to)) = range {
            for (left_t, lefts) in ctx.map_state(&left_buffer::<A>())?.entries_between(&from, to.as_ref())? {
                for left in lefts {
                    self.join(left, right.clone(), (left_t.timestamp(), t), ctx)?;
                }
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
            ctx.map_state(&left_buffer::<A>())?.remove(&OrderedTime::new(left_t))?;
        }
        if self.interval.right_cleanup(right_t) == timestamp {
            ctx.map_state(&right_buffer::<B>())?.remove(&OrderedTime::new(right_t))?;
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
    fn ordered_times_encode_in_the_order_of_the_timestamps_and_ranges_cover_their_bounds() {
        let times = [i64::MIN, -1_000, -1, 0, 1, 1_000, i64::MAX];
        let encoded: Vec<Vec<u8>> = times
            .iter()
            .map(|&t| {
                let mut bytes = Vec::new();
                crate::codec::encode_into(&OrderedTime::new(t), &mut bytes, "t").unwrap();
                assert_eq!(bytes.len(), 8);
                assert_eq!(crate::codec::decode::<OrderedTime>(&bytes, "t").unwrap().timestamp(), t);
                bytes
            })
            .collect();
        assert!(encoded.windows(2).all(|w| w[0] < w[1]), "{encoded:?}");
        let t = OrderedTime::new;
        assert_eq!(key_range((5, true), (9, true)), Some((t(5), Some(t(10)))));
        assert_eq!(key_range((5, false), (9, false)), Some((t(6), Some(t(9)))));
        assert_eq!(key_range((5, false), (6, false)), None);
        assert_eq!(key_range((5, true), (5, true)), Some((t(5), Some(t(6)))));
        assert_eq!(key_range((0, true), (i64::MAX, true)), Some((t(0), None)));
        assert_eq!(key_range((i64::MAX, false), (i64::MAX, true)), None);
    }

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
