//! Joins of two streams: window joins and co-groups (Flink's `JoinedStreams` and
//! `CoGroupedStreams`) and interval joins of keyed streams (`KeyedStream::intervalJoin`).
//!
//! A window join is built the way Flink builds it: both inputs are tagged and unioned, keyed by
//! their own key selectors, and collected into windows of the given assigner; when a window
//! fires, its elements of each side for one key are co-grouped (a join emits every pair). Its
//! output carries the window's largest timestamp.

use super::*;
use crate::functions::ProcessJoinFunction;
use crate::operators::interval_join::{Interval, IntervalJoin};
use crate::operators::interval_join_heap::HeapIntervalJoinHead;
use crate::operators::table_join::TableJoin;
use crate::window::TimeWindow;

/// An element of either input of a window join.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum JoinInput<A, B> {
    /// An element of the first input.
    First(A),
    /// An element of the second input.
    Second(B),
}

/// `a.join(&b)` (Flink's `JoinedStreams`): say the key of each side, then the windows.
pub struct JoinedStreams<A, B> {
    first: DataStream<A>,
    second: DataStream<B>,
}

/// `a.co_group(&b)` (Flink's `CoGroupedStreams`).
pub struct CoGroupedStreams<A, B> {
    first: DataStream<A>,
    second: DataStream<B>,
}

impl<T: crate::Data> DataStream<T> {
    /// Joins this stream with `other` in windows: every pair of elements with equal keys in the
    /// same window (an inner join), as Flink's `a.join(b).where(..).equalTo(..).window(..)`.
    pub fn join<B: crate::Data>(&self, other: &DataStream<B>) -> JoinedStreams<T, B> {
        JoinedStreams { first: self.clone(), second: other.clone() }
    }

    /// Co-groups this stream with `other` in windows: for every key and window with elements on
    /// either side, one call with both sides' elements (Flink's `coGroup`; outer joins are
    /// built with it).
    pub fn co_group<B: crate::Data>(&self, other: &DataStream<B>) -> CoGroupedStreams<T, B> {
        CoGroupedStreams { first: self.clone(), second: other.clone() }
    }
}

/// Marks a two-stream window operation as a join ([`DataStream::join`]).
#[derive(Debug, Clone, Copy)]
pub struct Join;

/// Marks a two-stream window operation as a co-group ([`DataStream::co_group`]).
#[derive(Debug, Clone, Copy)]
pub struct CoGroup;

/// The keys of both sides of a two-stream window operation `M` ([`Join`] or [`CoGroup`]).
pub struct TwoStreamKeys<K, A, B, K1, K2, M> {
    first: DataStream<A>,
    second: DataStream<B>,
    key1: Arc<K1>,
    key2: Option<Arc<K2>>,
    _k: PhantomData<fn() -> (K, M)>,
}

macro_rules! where_key {
    ($streams:ident, $marker:ident, $doc:literal) => {
        impl<A: crate::Data, B: crate::Data> $streams<A, B> {
            #[doc = $doc]
            pub fn where_key<K, K1>(self, key1: K1) -> TwoStreamKeys<K, A, B, K1, fn(&B) -> K, $marker>
            where
                K: crate::Data,
                K1: Fn(&A) -> K + Send + Sync + 'static,
            {
                TwoStreamKeys {
                    first: self.first,
                    second: self.second,
                    key1: Arc::new(key1),
                    key2: None,
                    _k: PhantomData,
                }
            }
        }
    };
}

where_key!(
    JoinedStreams,
    Join,
    "The key of the first input (Flink's `where`, a keyword in Rust); then `equal_to` with the second's."
);
where_key!(CoGroupedStreams, CoGroup, "The key of the first input; then `equal_to` with the second's.");

impl<K, A, B, K1, X, M> TwoStreamKeys<K, A, B, K1, X, M>
where
    K: crate::Data,
    A: crate::Data,
    B: crate::Data,
    K1: Fn(&A) -> K + Send + Sync + 'static,
{
    /// The key of the second input, of the same type as the first's.
    pub fn equal_to<K2>(self, key2: K2) -> TwoStreamKeys<K, A, B, K1, K2, M>
    where
        K2: Fn(&B) -> K + Send + Sync + 'static,
    {
        TwoStreamKeys {
            first: self.first,
            second: self.second,
            key1: self.key1,
            key2: Some(Arc::new(key2)),
            _k: PhantomData,
        }
    }
}

impl<K, A, B, K1, K2, M> TwoStreamKeys<K, A, B, K1, K2, M>
where
    K: crate::Data,
    A: crate::Data,
    B: crate::Data,
    K1: Fn(&A) -> K + Send + Sync + 'static,
    K2: Fn(&B) -> K + Send + Sync + 'static,
{
    /// Groups both inputs into the windows of `assigner`.
    pub fn window(self, assigner: WindowAssigner) -> TwoStreamWindows<K, A, B, K1, K2, M> {
        TwoStreamWindows { keys: self, assigner, allowed_lateness: Duration::ZERO }
    }
}

/// Two keyed inputs grouped into windows, waiting for the join or co-group function.
pub struct TwoStreamWindows<K, A, B, K1, K2, M> {
    keys: TwoStreamKeys<K, A, B, K1, K2, M>,
    assigner: WindowAssigner,
    allowed_lateness: Duration,
}

impl<K, A, B, K1, K2, M> TwoStreamWindows<K, A, B, K1, K2, M>
where
    K: crate::Data,
    A: crate::Data,
    B: crate::Data,
    K1: Fn(&A) -> K + Send + Sync + 'static,
    K2: Fn(&B) -> K + Send + Sync + 'static,
{
    /// Keeps windows for `lateness` after they fire; late elements in that time fire the window
    /// again with everything it holds (see [`WindowedStream::allowed_lateness`]).
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.allowed_lateness = lateness;
        self
    }

    /// For each key and window with elements on either side, calls `f` with the elements of
    /// each side (in arrival order).
    fn grouped<O, F>(self, name: &str, f: F) -> DataStream<O>
    where
        O: crate::Data,
        F: Fn(Vec<A>, Vec<B>, &mut Collector<'_, O>) + Send + Sync + 'static,
    {
        let keys = self.keys;
        let Some(key2) = keys.key2 else {
            keys.first.graph.borrow_mut().errors.push(format!("{name}: equal_to(..) is missing"));
            return DataStream::of_output(&keys.first.graph, 0, 0, None);
        };
        let first = keys.first.map(JoinInput::<A, B>::First).name(&format!("{name}: first input"));
        let second = keys.second.map(JoinInput::<A, B>::Second).name(&format!("{name}: second input"));
        let (first, second) = (first.at_parallelism_of(&keys.first), second.at_parallelism_of(&keys.second));
        let key1 = keys.key1;
        let tagged = first.union(&[&second]).key_by(move |e: &JoinInput<A, B>| match e {
            JoinInput::First(a) => key1(a),
            JoinInput::Second(b) => key2(b),
        });
        tagged
            .window(self.assigner)
            .allowed_lateness(self.allowed_lateness)
            .process(move |_: &K, _: &TimeWindow, elements: Vec<JoinInput<A, B>>, out: &mut Collector<'_, O>| {
                let (mut firsts, mut seconds) = (Vec::new(), Vec::new());
                for e in elements {
                    match e {
                        JoinInput::First(a) => firsts.push(a),
                        JoinInput::Second(b) => seconds.push(b),
                    }
                }
                f(firsts, seconds, out);
            })
            .name(name)
    }
}

impl<K, A, B, K1, K2> TwoStreamWindows<K, A, B, K1, K2, Join>
where
    K: crate::Data,
    A: crate::Data,
    B: crate::Data,
    K1: Fn(&A) -> K + Send + Sync + 'static,
    K2: Fn(&B) -> K + Send + Sync + 'static,
{
    /// `f` for every pair of elements of the two inputs with equal keys in the same window
    /// (Flink's `JoinFunction`); set the window operator's uid on the result.
    pub fn apply<O, F>(self, f: F) -> DataStream<O>
    where
        O: crate::Data,
        F: Fn(A, B) -> O + Send + Sync + 'static,
    {
        self.grouped("window join", move |firsts, seconds, out| {
            for a in &firsts {
                for b in &seconds {
                    out.collect(f(a.clone(), b.clone()));
                }
            }
        })
    }
}

impl<K, A, B, K1, K2> TwoStreamWindows<K, A, B, K1, K2, CoGroup>
where
    K: crate::Data,
    A: crate::Data,
    B: crate::Data,
    K1: Fn(&A) -> K + Send + Sync + 'static,
    K2: Fn(&B) -> K + Send + Sync + 'static,
{
    /// `f` once per key and window that has elements on either side, with each side's elements
    /// in arrival order (Flink's `CoGroupFunction`); set the window operator's uid on the result.
    pub fn apply<O, F>(self, f: F) -> DataStream<O>
    where
        O: crate::Data,
        F: Fn(Vec<A>, Vec<B>, &mut Collector<'_, O>) + Send + Sync + 'static,
    {
        self.grouped("window co-group", f)
    }
}

/// `a.key_by(k1).interval_join(&b.key_by(k2))`: say the interval next.
pub struct IntervalJoinBuilder<K, A, B, KA, KB> {
    first: KeyedStream<K, A, KA>,
    second: KeyedStream<K, B, KB>,
}

impl<K, T, KF> KeyedStream<K, T, KF>
where
    K: crate::Data,
    T: crate::Data,
    KF: Fn(&T) -> K + Send + Sync + 'static,
{
    /// Joins every element of this stream with the elements of `other` with the same key whose
    /// timestamps lie in an interval around its own (Flink's `intervalJoin`); both streams need
    /// event timestamps.
    pub fn interval_join<B, KB>(&self, other: &KeyedStream<K, B, KB>) -> IntervalJoinBuilder<K, T, B, KF, KB>
    where
        B: crate::Data,
        KB: Fn(&B) -> K + Send + Sync + 'static,
    {
        IntervalJoinBuilder { first: self.clone(), second: other.clone() }
    }
}

impl<K, A, B, KA, KB> IntervalJoinBuilder<K, A, B, KA, KB>
where
    K: crate::Data,
    A: crate::Data,
    B: crate::Data,
    KA: Fn(&A) -> K + Send + Sync + 'static,
    KB: Fn(&B) -> K + Send + Sync + 'static,
{
    /// Joins a left element at `t` with right elements in `[t + lower_ms, t + upper_ms]`
    /// (milliseconds, negative for "before"; inclusive unless made exclusive).
    pub fn between(self, lower_ms: i64, upper_ms: i64) -> IntervalJoined<K, A, B, KA, KB> {
        if lower_ms > upper_ms {
            self.first.stream.graph.borrow_mut().errors.push(format!(
                "interval join: the lower bound ({lower_ms} ms) is above the upper bound ({upper_ms} ms)"
            ));
        }
        IntervalJoined {
            builder: self,
            interval: Interval { lower: lower_ms, upper: upper_ms, lower_inclusive: true, upper_inclusive: true },
            left_late: None,
            right_late: None,
        }
    }
}

/// An interval join with its bounds, waiting for the join function.
pub struct IntervalJoined<K, A, B, KA, KB> {
    builder: IntervalJoinBuilder<K, A, B, KA, KB>,
    interval: Interval,
    left_late: Option<String>,
    right_late: Option<String>,
}

impl<K, A, B, KA, KB> IntervalJoined<K, A, B, KA, KB>
where
    K: crate::Data,
    A: crate::Data,
    B: crate::Data,
    KA: Fn(&A) -> K + Send + Sync + 'static,
    KB: Fn(&B) -> K + Send + Sync + 'static,
{
    /// Excludes the lower bound.
    pub fn lower_bound_exclusive(mut self) -> Self {
        self.interval.lower_inclusive = false;
        self
    }

    /// Excludes the upper bound.
    pub fn upper_bound_exclusive(mut self) -> Self {
        self.interval.upper_inclusive = false;
        self
    }

    /// Sends late elements of the first input (at or behind the watermark) to `tag` instead of
    /// dropping them.
    pub fn side_output_left_late_data(mut self, tag: &OutputTag<A>) -> Self {
        self.left_late = Some(tag.name.to_string());
        self
    }

    /// Sends late elements of the second input to `tag` instead of dropping them.
    pub fn side_output_right_late_data(mut self, tag: &OutputTag<B>) -> Self {
        self.right_late = Some(tag.name.to_string());
        self
    }

    /// Calls `function` for every joined pair; its output carries the larger timestamp of the
    /// pair. Set the join operator's uid on the result (it keeps both sides' buffers).
    pub fn process<O, F>(self, function: F) -> DataStream<O>
    where
        O: crate::Data,
        F: ProcessJoinFunction<A, B, O>,
    {
        let (first, second) = (self.builder.first, self.builder.second);
        let (key1, key2) = (first.key.clone(), second.key.clone());
        let interval = self.interval;
        let late = (self.left_late, self.right_late);
        let join = IntervalJoin {
            interval,
            function: function.clone(),
            left_late: late.0.clone(),
            right_late: late.1.clone(),
            _types: PhantomData,
        };
        let states = crate::functions::KeyedCoProcessFunction::<K, A, B, O>::states(&join);
        let lower = if interval.lower_inclusive { "[" } else { "(" };
        let upper = if interval.upper_inclusive { "]" } else { ")" };
        let description = format!("interval join {lower}{} ms, {} ms{upper}", interval.lower, interval.upper);
        let connected = first.stream.connect(&second.stream).key_by(
            {
                let key1 = key1.clone();
                move |a: &A| key1(a)
            },
            {
                let key2 = key2.clone();
                move |b: &B| key2(b)
            },
        );
        // With the heap backend, the elements stay typed in memory (see `interval_join_heap`);
        // byte-level backends get the generic keyed co-process operator over map state.
        let generic = connected.generic_head(join);
        let make: MakeHead = Arc::new(move |setup, mut outputs| {
            if !setup.heap_state {
                return generic(setup, outputs);
            }
            let out = Output::new(outputs.remove(0), setup.name)?;
            let side = SideOutputs::new(setup, outputs)?;
            Ok(Box::new(HeapIntervalJoinHead::new(
                (key1.clone(), key2.clone()),
                interval,
                function.clone(),
                late.clone(),
                out,
                side,
                setup.name,
                setup.uid,
            )))
        });
        connected.process_with(&description, "interval join", make, &states)
    }
}

/// `stream.key_by(k).join_table(&changelog)`: a stream–table join (see
/// [`KeyedStream::join_table`]); choose the versioning, then `inner` or `left`.
pub struct TableJoinBuilder<K, T, V, KF> {
    stream: KeyedStream<K, T, KF>,
    table: DataStream<(K, Option<V>)>,
    versioned: bool,
}

impl<K, T, KF> KeyedStream<K, T, KF>
where
    K: crate::Data,
    T: crate::Data,
    KF: Fn(&T) -> K + Send + Sync + 'static,
{
    /// Joins each element with the row of its key in the table that the changelog `table`
    /// describes: `(key, Some(value))` upserts the key's row, `(key, None)` (a tombstone)
    /// deletes it, as a compacted Kafka topic does. Kafka Streams' KStream–KTable join; by
    /// default an element joins the row as it is when the element is processed (see
    /// [`TableJoinBuilder::versioned`] for event-time versions).
    pub fn join_table<V: crate::Data>(&self, table: &DataStream<(K, Option<V>)>) -> TableJoinBuilder<K, T, V, KF> {
        TableJoinBuilder { stream: self.clone(), table: table.clone(), versioned: false }
    }
}

impl<K, T, V, KF> TableJoinBuilder<K, T, V, KF>
where
    K: crate::Data,
    T: crate::Data,
    V: crate::Data,
    KF: Fn(&T) -> K + Send + Sync + 'static,
{
    /// Event-time versioning (Flink's temporal join): an element at `t` joins the row that was
    /// valid at `t` (the latest change at or before `t`), whatever order elements and changes
    /// arrive in. Elements wait until the watermark reaches them; both inputs need event
    /// timestamps.
    pub fn versioned(mut self) -> Self {
        self.versioned = true;
        self
    }

    fn finish<O, J>(self, kind: &str, join: J) -> DataStream<O>
    where
        O: crate::Data,
        J: Fn(T, Option<V>) -> Option<O> + Clone + Send + Sync + 'static,
    {
        let versioned = self.versioned;
        let function = TableJoin { versioned, join, _types: PhantomData };
        let key = self.stream.key.clone();
        let description = format!("{kind} table join ({})", if versioned { "versioned" } else { "latest" });
        self.stream
            .stream
            .connect(&self.table)
            .key_by(move |t: &T| key(t), |change: &(K, Option<V>)| change.0.clone())
            .process_described(&description, "table join", function)
    }

    /// Emits `f(element, row)` for each element whose key has a row; others are dropped.
    pub fn inner<O, F>(self, f: F) -> DataStream<O>
    where
        O: crate::Data,
        F: Fn(T, V) -> O + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.finish("inner", move |t: T, row: Option<V>| row.map(|v| f(t, v)))
    }

    /// Emits `f(element, row)` for every element, with `None` when its key has no row.
    pub fn left<O, F>(self, f: F) -> DataStream<O>
    where
        O: crate::Data,
        F: Fn(T, Option<V>) -> O + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.finish("left", move |t: T, row: Option<V>| Some(f(t, row)))
    }
}
