//! The stream–table join (Kafka Streams' KStream–KTable join), as a keyed co-process function:
//! the second input is a changelog `(key, Some(value))` / `(key, None)` (an upsert or a
//! tombstone) kept as keyed state, the table; each element of the first input is joined with the
//! table row of its key.
//!
//! - **Latest** (the default, Kafka Streams' semantics): an element joins the row as it is when
//!   the element is processed; the table keeps one value per key.
//! - **Versioned** (event time, Flink's temporal join): an element at `t` joins the row that was
//!   valid at `t`: the change with the largest timestamp at or before `t`. Elements wait in state
//!   until the watermark reaches `t`, so that every change up to `t` has arrived; the table
//!   keeps, per key, the versions that a waiting or future element may still need (older ones
//!   are dropped as the watermark passes them). An element that arrives late (at or behind the
//!   watermark) is joined at once with the versions still kept.
//!
//! Inner joins emit only elements whose row exists; left joins emit every element, with `None`
//! when there is no row. Results carry the element's timestamp.

use crate::error::{Error, Result};
use crate::functions::{KeyedCoProcessFunction, KeyedContext};
use crate::state::{DeclaredState, MapStateDescriptor, ValueStateDescriptor};
use crate::time::{MIN_WATERMARK, Timestamp};
use std::marker::PhantomData;

const LATEST: &str = "table";
const VERSIONS: &str = "table-versions";
const WAITING: &str = "table-join-waiting";

fn latest<V: crate::Data>() -> ValueStateDescriptor<V> {
    ValueStateDescriptor::new(LATEST)
}

fn versions<V: crate::Data>() -> MapStateDescriptor<Timestamp, Option<V>> {
    MapStateDescriptor::new(VERSIONS)
}

fn waiting<T: crate::Data>() -> MapStateDescriptor<Timestamp, Vec<T>> {
    MapStateDescriptor::new(WAITING).internal()
}

/// The keyed co-process function of `join_table(..)`. `join` returns the result of an element
/// and its row (`None` for an inner join without a row).
pub(crate) struct TableJoin<T, V, J> {
    pub(crate) versioned: bool,
    pub(crate) join: J,
    pub(crate) _types: PhantomData<fn(T, V)>,
}

impl<T, V, J: Clone> Clone for TableJoin<T, V, J> {
    fn clone(&self) -> Self {
        Self { versioned: self.versioned, join: self.join.clone(), _types: PhantomData }
    }
}

fn event_time<K, O>(ctx: &KeyedContext<'_, K, O>, what: &str) -> Result<Timestamp> {
    ctx.timestamp().ok_or_else(|| {
        Error::InvalidJob(format!(
            "a versioned table join needs event timestamps on its {what}: assign them with \
             assign_timestamps_and_watermarks (or join the latest rows: drop .versioned())"
        ))
    })
}

impl<T, V, J> TableJoin<T, V, J> {
    /// The row valid at `t`: the version with the largest timestamp at or before `t`.
    fn version_at<K, O>(ctx: &mut KeyedContext<'_, K, O>, t: Timestamp) -> Result<Option<V>>
    where
        V: crate::Data,
    {
        let mut row = None;
        let mut best = MIN_WATERMARK;
        for (version, value) in ctx.map_state(&versions::<V>())?.entries()? {
            if version <= t && (row.is_none() || version >= best) {
                best = version;
                row = Some(value);
            }
        }
        Ok(row.flatten())
    }

    fn emit<K, O>(&self, element: T, row: Option<V>, timestamp: Timestamp, ctx: &mut KeyedContext<'_, K, O>)
    where
        J: Fn(T, Option<V>) -> Option<O>,
    {
        if let Some(result) = (self.join)(element, row) {
            ctx.collect_with_timestamp(result, timestamp);
        }
    }
}

impl<K, T, V, O, J> KeyedCoProcessFunction<K, T, (K, Option<V>), O> for TableJoin<T, V, J>
where
    K: crate::Data,
    T: crate::Data,
    V: crate::Data,
    O: crate::Data,
    J: Fn(T, Option<V>) -> Option<O> + Clone + Send + Sync + 'static,
{
    fn states(&self) -> Vec<DeclaredState> {
        if self.versioned {
            vec![versions::<V>().declared(), waiting::<T>().declared()]
        } else {
            vec![latest::<V>().declared()]
        }
    }

    fn process_element1(&mut self, element: T, ctx: &mut KeyedContext<'_, K, O>) -> Result<()> {
        let timestamp = ctx.timestamp;
        if !self.versioned {
            let row = ctx.value_state(&latest::<V>())?.value()?;
            self.emit(element, row, timestamp, ctx);
            return Ok(());
        }
        let t = event_time(ctx, "stream input")?;
        let watermark = ctx.current_watermark();
        if watermark != MIN_WATERMARK && t <= watermark {
            let row = Self::version_at(ctx, t)?;
            self.emit(element, row, t, ctx);
            return Ok(());
        }
        let mut waiting = ctx.map_state(&waiting::<T>())?;
        let mut bucket = waiting.get(&t)?.unwrap_or_default();
        bucket.push(element);
        waiting.put(&t, &bucket)?;
        ctx.timer_service().register_event_time_timer(t);
        Ok(())
    }

    fn process_element2(&mut self, (_, row): (K, Option<V>), ctx: &mut KeyedContext<'_, K, O>) -> Result<()> {
        if !self.versioned {
            let mut latest = ctx.value_state(&latest::<V>())?;
            return match row {
                Some(value) => latest.update(&value),
                None => latest.clear(),
            };
        }
        let t = event_time(ctx, "table changelog")?;
        ctx.map_state(&versions::<V>())?.put(&t, &row)
    }

    fn on_timer(&mut self, timestamp: Timestamp, ctx: &mut KeyedContext<'_, K, O>) -> Result<()> {
        let row = Self::version_at(ctx, timestamp)?;
        if let Some(elements) = ctx.map_state(&waiting::<T>())?.get(&timestamp)? {
            for element in elements {
                self.emit(element, row.clone(), timestamp, ctx);
            }
            ctx.map_state(&waiting::<T>())?.remove(&timestamp)?;
        }
        // Every element at or before `timestamp` is joined: versions older than the one valid
        // at `timestamp` can serve no one any more.
        let mut kept = ctx.map_state(&versions::<V>())?;
        let versions: Vec<Timestamp> = kept.keys()?;
        if let Some(valid) = versions.iter().copied().filter(|&v| v <= timestamp).max() {
            for old in versions.into_iter().filter(|&v| v < valid) {
                kept.remove(&old)?;
            }
        }
        Ok(())
    }
}
