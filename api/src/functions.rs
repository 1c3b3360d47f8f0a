//! User function traits: process functions, rich map/filter/flat_map functions, aggregate
//! functions, window functions, and the collector they emit through.
//!
//! Stateful function traits (process functions, rich functions) have Flink's lifecycle: one
//! instance per subtask (cloned from the job's), `open` once before the first element, `close`
//! once when the task is over, whether it finished, was stopped, cancelled or failed. `close` is
//! where connections and files are released; an error from it fails a task that had otherwise
//! finished.

use crate::chain::StreamRecord;
use crate::error::Result;
use crate::operators::side_outputs::SideOutputs;
use crate::runtime::{LogLevel, TaskInfo, TaskRuntime};
use crate::state::{
    KeyedState, ListState, ListStateDescriptor, MapState, MapStateDescriptor, ValueState, ValueStateDescriptor,
};
use crate::time::Timestamp;
use crate::timer::TimerService;
use crate::window::{OutputTag, TimeWindow};

/// Emits records from a user function: to the main output, and from window functions to side
/// outputs ([`Collector::output`]).
pub struct Collector<'a, O> {
    pub(crate) buffer: &'a mut Vec<StreamRecord<O>>,
    pub(crate) timestamp: Timestamp,
    pub(crate) side: Option<&'a mut SideOutputs>,
    /// A side output was asked of a collector without any (a flat map's): the operator fails.
    pub(crate) refused_side_output: bool,
}

impl<'a, O> Collector<'a, O> {
    pub(crate) fn new(buffer: &'a mut Vec<StreamRecord<O>>, timestamp: Timestamp) -> Self {
        Self { buffer, timestamp, side: None, refused_side_output: false }
    }

    pub(crate) fn with_side_outputs(
        buffer: &'a mut Vec<StreamRecord<O>>,
        timestamp: Timestamp,
        side: &'a mut SideOutputs,
    ) -> Self {
        Self { buffer, timestamp, side: Some(side), refused_side_output: false }
    }

    /// Emits `value` to the side output `tag` with the current timestamp (window functions; read
    /// it with [`DataStream::side_output`](crate::DataStream::side_output), dropped when no
    /// stream reads the tag). A flat map has no side outputs: asking fails its task (use
    /// `process` instead).
    pub fn output<S: crate::Data>(&mut self, tag: &OutputTag<S>, value: S) {
        match self.side.as_deref_mut() {
            Some(side) => side.emit(&tag.name, value, self.timestamp),
            None => self.refused_side_output = true,
        }
    }

    /// Emits `value` with the timestamp of the input (or of the window or timer being processed).
    #[inline]
    pub fn collect(&mut self, value: O) {
        self.buffer.push(StreamRecord { timestamp: self.timestamp, value });
    }

    /// Emits `value` with an explicit event timestamp.
    #[inline]
    pub fn collect_with_timestamp(&mut self, value: O, timestamp: Timestamp) {
        self.buffer.push(StreamRecord { timestamp, value });
    }
}

/// What a function can learn about the subtask it runs in, how it logs and where it registers
/// its metrics.
pub struct RuntimeContext<'a> {
    pub(crate) rt: &'a dyn TaskRuntime,
    /// The name of the function's operator.
    pub(crate) operator: &'a str,
}

impl RuntimeContext<'_> {
    /// The subtask: index, parallelism, job id.
    pub fn task_info(&self) -> &TaskInfo {
        self.rt.info()
    }

    /// Logs through the taskmanager's logger, tagged with job, task and subtask.
    pub fn log(&self, level: LogLevel, message: &str) {
        self.rt.log(level, message);
    }

    /// The operator's metric group, to register counters, gauges and histograms in `open`
    /// (see [`crate::metrics`]).
    pub fn metric_group(&self) -> crate::metrics::MetricGroup<'_> {
        crate::metrics::MetricGroup { rt: self.rt, operator: self.operator }
    }
}

/// Which clock fired a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeDomain {
    /// The watermark passed the timer.
    EventTime,
    /// The wall clock passed the timer.
    ProcessingTime,
}

/// The context of a keyed function call: the current key, keyed state, timers, output.
pub struct KeyedContext<'a, K, O> {
    pub(crate) key: &'a K,
    pub(crate) timestamp: Timestamp,
    pub(crate) out: Collector<'a, O>,
    pub(crate) side: &'a mut SideOutputs,
    pub(crate) state: KeyedState<'a>,
    pub(crate) timers: TimerService<'a>,
    pub(crate) time_domain: Option<TimeDomain>,
}

impl<'a, K, O> KeyedContext<'a, K, O> {
    /// The key of the element or timer being processed.
    pub fn key(&self) -> &K {
        self.key
    }

    /// Event timestamp of the element (or of the event-time timer) being processed, if any.
    pub fn timestamp(&self) -> Option<Timestamp> {
        (self.timestamp != crate::time::NO_TIMESTAMP).then_some(self.timestamp)
    }

    /// Which clock fired the timer being processed; `None` when processing an element.
    pub fn time_domain(&self) -> Option<TimeDomain> {
        self.time_domain
    }

    /// Emits a record with the current timestamp.
    pub fn collect(&mut self, value: O) {
        self.out.collect(value);
    }

    /// Emits a record with an explicit timestamp.
    pub fn collect_with_timestamp(&mut self, value: O, timestamp: Timestamp) {
        self.out.collect_with_timestamp(value, timestamp);
    }

    /// Emits `value` to the side output `tag`, with the current timestamp (read it with
    /// [`DataStream::side_output`](crate::DataStream::side_output); dropped when no stream
    /// reads the tag, as in Flink).
    pub fn output<S: crate::Data>(&mut self, tag: &OutputTag<S>, value: S) {
        self.side.emit(&tag.name, value, self.timestamp);
    }

    /// The current event-time watermark of this operator.
    pub fn current_watermark(&self) -> Timestamp {
        self.timers.watermark
    }

    /// The current processing time (ms since the epoch).
    pub fn current_processing_time(&self) -> Timestamp {
        self.timers.now
    }

    /// Timers of the current key.
    pub fn timer_service(&mut self) -> &mut TimerService<'a> {
        &mut self.timers
    }

    /// The value state `descriptor` of the current key.
    pub fn value_state<V: crate::Data>(&mut self, descriptor: &ValueStateDescriptor<V>) -> Result<ValueState<'_, V>> {
        self.state.value(descriptor)
    }

    /// The list state `descriptor` of the current key.
    pub fn list_state<V: crate::Data>(&mut self, descriptor: &ListStateDescriptor<V>) -> Result<ListState<'_, V>> {
        self.state.list(descriptor)
    }

    /// The reducing state `descriptor` of the current key.
    pub fn reducing_state<V: crate::Data>(
        &mut self,
        descriptor: &crate::state::ReducingStateDescriptor<V>,
    ) -> Result<crate::state::ReducingState<'_, V>> {
        self.state.reducing(descriptor)
    }

    /// The aggregating state `descriptor` of the current key.
    pub fn aggregating_state<I, Acc: crate::Data, R>(
        &mut self,
        descriptor: &crate::state::AggregatingStateDescriptor<I, Acc, R>,
    ) -> Result<crate::state::AggregatingState<'_, I, Acc, R>> {
        self.state.aggregating(descriptor)
    }

    /// The map state `descriptor` of the current key.
    pub fn map_state<UK: crate::Data, UV: crate::Data>(
        &mut self,
        descriptor: &MapStateDescriptor<UK, UV>,
    ) -> Result<MapState<'_, UK, UV>> {
        self.state.map(descriptor)
    }
}

/// Processes the elements of a keyed stream one by one, with keyed state and timers (Flink's
/// `KeyedProcessFunction`). One instance per subtask (cloned from the job's instance).
pub trait KeyedProcessFunction<K, I, O>: Clone + Send + Sync + 'static {
    /// The keyed states the function uses (`vec![COUNT.declared()]`): restoring a savepoint
    /// whose state of the same name has another kind or type is refused before the job starts,
    /// and `weir savepoint check` reports it. Undeclared states are not checked.
    fn states(&self) -> Vec<crate::state::DeclaredState> {
        Vec::new()
    }

    /// Called once per subtask before any element.
    fn open(&mut self, _ctx: &RuntimeContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Processes one element of the current key.
    fn process_element(&mut self, value: I, ctx: &mut KeyedContext<'_, K, O>) -> Result<()>;

    /// A timer registered for the current key fired at `timestamp`.
    fn on_timer(&mut self, _timestamp: Timestamp, _ctx: &mut KeyedContext<'_, K, O>) -> Result<()> {
        Ok(())
    }

    /// Called once per subtask when its task is over, however it ended (see [the module](self)).
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Processes the two inputs of keyed connected streams with shared keyed state and timers
/// (Flink's `KeyedCoProcessFunction`).
pub trait KeyedCoProcessFunction<K, I1, I2, O>: Clone + Send + Sync + 'static {
    /// The keyed states the function uses (see [`KeyedProcessFunction::states`]).
    fn states(&self) -> Vec<crate::state::DeclaredState> {
        Vec::new()
    }

    /// Called once per subtask before any element.
    fn open(&mut self, _ctx: &RuntimeContext<'_>) -> Result<()> {
        Ok(())
    }
    /// Processes one element of the first input.
    fn process_element1(&mut self, value: I1, ctx: &mut KeyedContext<'_, K, O>) -> Result<()>;
    /// Processes one element of the second input.
    fn process_element2(&mut self, value: I2, ctx: &mut KeyedContext<'_, K, O>) -> Result<()>;
    /// A timer registered for the current key fired.
    fn on_timer(&mut self, _timestamp: Timestamp, _ctx: &mut KeyedContext<'_, K, O>) -> Result<()> {
        Ok(())
    }
    /// Called once per subtask when its task is over (see [the module](self)).
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// The context of a non-keyed process function call: the element's timestamp, the operator's
/// clocks, the main output and side outputs.
pub struct ProcessContext<'a, O> {
    pub(crate) timestamp: Timestamp,
    pub(crate) watermark: Timestamp,
    pub(crate) now: Timestamp,
    pub(crate) out: Collector<'a, O>,
    pub(crate) side: &'a mut SideOutputs,
}

impl<O> ProcessContext<'_, O> {
    /// Event timestamp of the element being processed, if it has one.
    pub fn timestamp(&self) -> Option<Timestamp> {
        (self.timestamp != crate::time::NO_TIMESTAMP).then_some(self.timestamp)
    }

    /// The current event-time watermark of this operator.
    pub fn current_watermark(&self) -> Timestamp {
        self.watermark
    }

    /// The current processing time (ms since the epoch).
    pub fn current_processing_time(&self) -> Timestamp {
        self.now
    }

    /// Emits a record with the element's timestamp.
    pub fn collect(&mut self, value: O) {
        self.out.collect(value);
    }

    /// Emits a record with an explicit timestamp.
    pub fn collect_with_timestamp(&mut self, value: O, timestamp: Timestamp) {
        self.out.collect_with_timestamp(value, timestamp);
    }

    /// Emits `value` to the side output `tag`, with the element's timestamp (see
    /// [`KeyedContext::output`]).
    pub fn output<S: crate::Data>(&mut self, tag: &OutputTag<S>, value: S) {
        self.side.emit(&tag.name, value, self.timestamp);
    }
}

/// Processes the elements of a stream one by one, with side outputs but without keyed state or
/// timers (Flink's `ProcessFunction` on a non-keyed stream). One instance per subtask.
pub trait ProcessFunction<I, O>: Clone + Send + Sync + 'static {
    /// Called once per subtask before any element.
    fn open(&mut self, _ctx: &RuntimeContext<'_>) -> Result<()> {
        Ok(())
    }
    /// Called once per subtask when its task is over (see [the module](self)).
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
    /// Processes one element.
    fn process_element(&mut self, value: I, ctx: &mut ProcessContext<'_, O>) -> Result<()>;
}

/// Processes the two inputs of connected, non-keyed streams (Flink's `CoProcessFunction`).
pub trait CoProcessFunction<I1, I2, O>: Clone + Send + Sync + 'static {
    /// Called once per subtask before any element.
    fn open(&mut self, _ctx: &RuntimeContext<'_>) -> Result<()> {
        Ok(())
    }
    /// Called once per subtask when its task is over (see [the module](self)).
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
    /// Processes one element of the first input.
    fn process_element1(&mut self, value: I1, ctx: &mut ProcessContext<'_, O>) -> Result<()>;
    /// Processes one element of the second input.
    fn process_element2(&mut self, value: I2, ctx: &mut ProcessContext<'_, O>) -> Result<()>;
}

/// A map with a lifecycle and mutable per-subtask fields (Flink's `RichMapFunction`), for
/// [`DataStream::map_rich`](crate::DataStream::map_rich). Plain closures go to `map`.
pub trait RichMapFunction<I, O>: Clone + Send + Sync + 'static {
    /// Called once per subtask before any element.
    fn open(&mut self, _ctx: &RuntimeContext<'_>) -> Result<()> {
        Ok(())
    }
    /// Called once per subtask when its task is over (see [the module](self)).
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
    /// Maps one element; an error fails the task.
    fn map(&mut self, value: I) -> Result<O>;
}

/// A filter with a lifecycle (Flink's `RichFilterFunction`), for
/// [`DataStream::filter_rich`](crate::DataStream::filter_rich).
pub trait RichFilterFunction<T>: Clone + Send + Sync + 'static {
    /// Called once per subtask before any element.
    fn open(&mut self, _ctx: &RuntimeContext<'_>) -> Result<()> {
        Ok(())
    }
    /// Called once per subtask when its task is over (see [the module](self)).
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
    /// Whether to keep `value`; an error fails the task.
    fn filter(&mut self, value: &T) -> Result<bool>;
}

/// A flat map with a lifecycle (Flink's `RichFlatMapFunction`), for
/// [`DataStream::flat_map_rich`](crate::DataStream::flat_map_rich).
pub trait RichFlatMapFunction<I, O>: Clone + Send + Sync + 'static {
    /// Called once per subtask before any element.
    fn open(&mut self, _ctx: &RuntimeContext<'_>) -> Result<()> {
        Ok(())
    }
    /// Called once per subtask when its task is over (see [the module](self)).
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
    /// Emits zero or more records for `value`; an error fails the task.
    fn flat_map(&mut self, value: I, out: &mut Collector<'_, O>) -> Result<()>;
}

/// Incremental aggregation of a window or keyed stream (Flink's `AggregateFunction`).
pub trait AggregateFunction<I, Acc, R>: Send + Sync + 'static {
    /// A new, empty accumulator.
    fn create_accumulator(&self) -> Acc;
    /// Adds one element.
    fn add(&self, value: I, accumulator: Acc) -> Acc;
    /// The result of an accumulator.
    fn get_result(&self, accumulator: Acc) -> R;
    /// Merges two accumulators (session windows merge).
    fn merge(&self, a: Acc, b: Acc) -> Acc;
}

/// Computes the output of a fired window from its contents (Flink's `ProcessWindowFunction`).
///
/// With `aggregate` or `reduce`, `elements` holds the single aggregate result.
pub trait ProcessWindowFunction<K, I, O>: Send + Sync + 'static {
    /// Emits the output for window `window` of key `key`.
    fn process(&self, key: &K, window: &TimeWindow, elements: Vec<I>, out: &mut Collector<'_, O>);
}

impl<K, I, O, F> ProcessWindowFunction<K, I, O> for F
where
    F: Fn(&K, &TimeWindow, Vec<I>, &mut Collector<'_, O>) + Send + Sync + 'static,
{
    fn process(&self, key: &K, window: &TimeWindow, elements: Vec<I>, out: &mut Collector<'_, O>) {
        self(key, window, elements, out)
    }
}

/// The context of a join function call: the timestamps of the pair, the output, side outputs.
pub struct JoinContext<'a, O> {
    pub(crate) left_timestamp: Timestamp,
    pub(crate) right_timestamp: Timestamp,
    pub(crate) out: Collector<'a, O>,
    pub(crate) side: &'a mut SideOutputs,
}

impl<O> JoinContext<'_, O> {
    /// Event timestamp of the left (first) element of the pair.
    pub fn left_timestamp(&self) -> Timestamp {
        self.left_timestamp
    }

    /// Event timestamp of the right (second) element of the pair.
    pub fn right_timestamp(&self) -> Timestamp {
        self.right_timestamp
    }

    /// The timestamp results carry: the larger of the pair's, as in Flink.
    pub fn timestamp(&self) -> Timestamp {
        self.left_timestamp.max(self.right_timestamp)
    }

    /// Emits a record with the pair's timestamp.
    pub fn collect(&mut self, value: O) {
        self.out.collect(value);
    }

    /// Emits `value` to the side output `tag` (see [`KeyedContext::output`]).
    pub fn output<S: crate::Data>(&mut self, tag: &OutputTag<S>, value: S) {
        let timestamp = self.timestamp();
        self.side.emit(&tag.name, value, timestamp);
    }
}

/// Joins the pairs of an interval join (Flink's `ProcessJoinFunction`). Closures
/// `|left: A, right: B| -> O` are join functions too (annotate the argument types).
pub trait ProcessJoinFunction<A, B, O>: Clone + Send + Sync + 'static {
    /// Called once per subtask before any element.
    fn open(&mut self, _ctx: &RuntimeContext<'_>) -> Result<()> {
        Ok(())
    }
    /// Processes one joined pair.
    fn process_element(&mut self, left: A, right: B, ctx: &mut JoinContext<'_, O>) -> Result<()>;
    /// Called once per subtask when its task is over (see [the module](self)).
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

impl<A, B, O, F> ProcessJoinFunction<A, B, O> for F
where
    F: Fn(A, B) -> O + Clone + Send + Sync + 'static,
{
    fn process_element(&mut self, left: A, right: B, ctx: &mut JoinContext<'_, O>) -> Result<()> {
        ctx.collect(self(left, right));
        Ok(())
    }
}

/// Processes a stream together with a broadcast stream whose elements every subtask sees and
/// keeps in [`BroadcastState`](crate::broadcast::BroadcastState) (Flink's
/// `BroadcastProcessFunction`, on a non-keyed stream).
pub trait BroadcastProcessFunction<I, B, O>: Clone + Send + Sync + 'static {
    /// Called once per subtask before any element.
    fn open(&mut self, _ctx: &RuntimeContext<'_>) -> Result<()> {
        Ok(())
    }
    /// Processes one element of the stream, reading the broadcast state.
    fn process_element(
        &mut self,
        value: I,
        ctx: &mut ProcessContext<'_, O>,
        broadcast: &crate::broadcast::BroadcastState,
    ) -> Result<()>;
    /// Processes one broadcast element, updating the broadcast state (the same way on every
    /// subtask: depend only on the element and the state).
    fn process_broadcast_element(
        &mut self,
        value: B,
        ctx: &mut ProcessContext<'_, O>,
        broadcast: &mut crate::broadcast::BroadcastState,
    ) -> Result<()>;
    /// Called once per subtask when its task is over (see [the module](self)).
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Processes a keyed stream together with a broadcast stream (Flink's
/// `KeyedBroadcastProcessFunction`): elements of the keyed stream have keyed state and timers
/// and read the broadcast state; broadcast elements update it.
pub trait KeyedBroadcastProcessFunction<K, I, B, O>: Clone + Send + Sync + 'static {
    /// The keyed states the function uses (see [`KeyedProcessFunction::states`]).
    fn states(&self) -> Vec<crate::state::DeclaredState> {
        Vec::new()
    }
    /// Called once per subtask before any element.
    fn open(&mut self, _ctx: &RuntimeContext<'_>) -> Result<()> {
        Ok(())
    }
    /// Processes one element of the keyed stream, reading the broadcast state.
    fn process_element(
        &mut self,
        value: I,
        ctx: &mut KeyedContext<'_, K, O>,
        broadcast: &crate::broadcast::BroadcastState,
    ) -> Result<()>;
    /// Processes one broadcast element, updating the broadcast state (no current key: see
    /// [`BroadcastProcessFunction::process_broadcast_element`]).
    fn process_broadcast_element(
        &mut self,
        value: B,
        ctx: &mut ProcessContext<'_, O>,
        broadcast: &mut crate::broadcast::BroadcastState,
    ) -> Result<()>;
    /// A timer registered for the current key fired.
    fn on_timer(
        &mut self,
        _timestamp: Timestamp,
        _ctx: &mut KeyedContext<'_, K, O>,
        _broadcast: &crate::broadcast::BroadcastState,
    ) -> Result<()> {
        Ok(())
    }
    /// Called once per subtask when its task is over (see [the module](self)).
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}
