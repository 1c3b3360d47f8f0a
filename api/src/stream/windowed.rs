//! Windowed keyed streams: `key_by(..).window(assigner)` and the window functions.

use super::*;
use crate::operators::triggered_window::{ELEMENTS, TriggeredWindowOperator};
use crate::trigger::{DefaultTrigger, Evictor, NoEvictor, Trigger};

/// A keyed stream grouped into windows (Flink's `WindowedStream`), with the trigger `Tr` that
/// fires them and the evictor `Ev` (see [`crate::trigger`]).
pub struct WindowedStream<K, T, KF, Tr = DefaultTrigger, Ev = NoEvictor> {
    pub(super) keyed: KeyedStream<K, T, KF>,
    pub(super) assigner: WindowAssigner,
    pub(super) allowed_lateness: i64,
    pub(super) late_tag: Option<String>,
    pub(super) trigger: Tr,
    pub(super) evictor: Ev,
    /// Whether the windows need the triggered operator (a trigger or evictor was set, or the
    /// windows are global).
    pub(super) triggered: bool,
    /// `window_all`: the window operator runs at parallelism 1.
    pub(super) all: bool,
}

impl<K, T, KF> WindowedStream<K, T, KF>
where
    K: crate::Data,
    T: crate::Data,
    KF: Fn(&T) -> K + Send + Sync + 'static,
{
    pub(super) fn new(keyed: KeyedStream<K, T, KF>, assigner: WindowAssigner, all: bool) -> Self {
        WindowedStream {
            keyed,
            assigner,
            allowed_lateness: 0,
            late_tag: None,
            trigger: assigner.default_trigger(),
            evictor: NoEvictor,
            triggered: assigner.is_global(),
            all,
        }
    }
}

impl<K, T, KF, Tr, Ev> WindowedStream<K, T, KF, Tr, Ev>
where
    K: crate::Data,
    T: crate::Data,
    KF: Fn(&T) -> K + Send + Sync + 'static,
    Tr: Trigger<T>,
    Ev: Evictor<T>,
{
    /// Fires the windows with `trigger` instead of the assigner's default (see
    /// [`crate::trigger`]); the windows then keep their elements.
    pub fn trigger<Tr2: Trigger<T>>(self, trigger: Tr2) -> WindowedStream<K, T, KF, Tr2, Ev> {
        WindowedStream {
            keyed: self.keyed,
            assigner: self.assigner,
            allowed_lateness: self.allowed_lateness,
            late_tag: self.late_tag,
            trigger,
            evictor: self.evictor,
            triggered: true,
            all: self.all,
        }
    }

    /// Drops elements of firing windows with `evictor` (see [`crate::trigger::Evictor`]); the
    /// windows then keep their elements.
    pub fn evictor<Ev2: Evictor<T>>(self, evictor: Ev2) -> WindowedStream<K, T, KF, Tr, Ev2> {
        WindowedStream {
            keyed: self.keyed,
            assigner: self.assigner,
            allowed_lateness: self.allowed_lateness,
            late_tag: self.late_tag,
            trigger: self.trigger,
            evictor,
            triggered: true,
            all: self.all,
        }
    }

    /// The windows through the triggered operator, with `window_fn` over their elements.
    fn triggered<O, W>(self, function: &str, window_fn: W) -> DataStream<O>
    where
        O: crate::Data,
        W: ProcessWindowFunction<K, T, O>,
    {
        if self.assigner.is_merging() {
            self.keyed.stream.graph.borrow_mut().errors.push(
                "session windows take no custom trigger or evictor in this version: use tumbling, sliding or                  global windows"
                    .into(),
            );
        }
        let key = self.keyed.key.clone();
        let (assigner, lateness, has_late) = (self.assigner, self.allowed_lateness, self.late_tag.is_some());
        let (trigger, evictor, window_fn) = (self.trigger.clone(), self.evictor.clone(), Arc::new(window_fn));
        let make: crate::factory::MakeOneInput<T> = Arc::new(move |setup, mut outputs: Vec<ErasedDownstream>| {
            let out = Output::new(outputs.remove(0), setup.name)?;
            let late = if has_late { Some(Output::new(outputs.remove(0), setup.name)?) } else { None };
            let side = SideOutputs::from_output(setup, outputs, if has_late { 2 } else { 1 })?;
            Ok(Box::new(TriggeredWindowOperator {
                key_fn: key.clone(),
                assigner,
                allowed_lateness: lateness,
                trigger: trigger.clone(),
                evictor: evictor.clone(),
                window_fn: window_fn.clone(),
                harness: KeyedHarness::new(setup.uid, setup.name),
                elements: 0,
                out,
                late,
                side,
                windows: Vec::new(),
                scratch: Vec::new(),
                dropped_late: 0,
            }))
        });
        let state = DeclaredState {
            name: ELEMENTS,
            kind: "list",
            value_type: std::any::type_name::<(Timestamp, T)>().to_owned(),
            check: None,
        };
        self.finish(&format!("{function} (triggered)"), make).declaring::<K>(&[state])
    }
    /// Keeps event-time windows for `lateness` after they fire; records arriving in that time
    /// update and fire the window again.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.allowed_lateness = duration_ms(lateness);
        self
    }

    /// Sends records that arrive after their windows' allowed lateness to the side output `tag`
    /// (read it with [`DataStream::side_output`]) instead of dropping them.
    pub fn side_output_late_data(mut self, tag: &OutputTag<T>) -> Self {
        self.late_tag = Some(tag.name.clone());
        self
    }

    /// Adds the window node with the operator factory `make`.
    fn finish<O: crate::Data>(self, function: &str, make: crate::factory::MakeOneInput<T>) -> DataStream<O> {
        let extra = match &self.late_tag {
            Some(tag) => vec![(tag.clone(), TypedOutput::<T>::boxed(), TypeId::of::<T>())],
            None => Vec::new(),
        };
        let description = format!("window({}) {function}", self.assigner.describe());
        let all = self.all;
        let stream = self
            .keyed
            .keyed_input(&description, if all { "window all" } else { "window" }, make, extra)
            .with_open_side_outputs();
        if all { stream.set_parallelism(1) } else { stream }
    }

    /// The factory of the generic window operator, whose contents live in the keyed state
    /// backend.
    fn generic_make<O, C>(&self, contents: impl Fn() -> C + Send + Sync + 'static) -> crate::factory::MakeOneInput<T>
    where
        O: crate::Data,
        C: WindowContents<K, T, O> + 'static,
    {
        let key = self.keyed.key.clone();
        let (assigner, lateness, has_late) = (self.assigner, self.allowed_lateness, self.late_tag.is_some());
        Arc::new(move |setup, mut outputs: Vec<ErasedDownstream>| {
            let out = Output::new(outputs.remove(0), setup.name)?;
            let late = if has_late { Some(Output::new(outputs.remove(0), setup.name)?) } else { None };
            let side = SideOutputs::from_output(setup, outputs, if has_late { 2 } else { 1 })?;
            Ok(Box::new(WindowOperator {
                key_fn: key.clone(),
                assigner,
                allowed_lateness: lateness,
                contents: contents(),
                harness: KeyedHarness::new(setup.uid, setup.name),
                state: 0,
                sessions: 0,
                out,
                late,
                side,
                windows: Vec::new(),
                dropped_late: 0,
            }))
        })
    }

    /// Incremental aggregation. With in-memory keyed state, windows that do not merge keep typed
    /// accumulators in memory; with an on-disk backend (and for merging windows) accumulators
    /// live in the keyed state backend. The choice is made per task, when it is instantiated.
    fn aggregating<O, A, W>(self, function: &str, acc: Arc<A>, window_fn: Arc<W>) -> DataStream<O>
    where
        O: crate::Data,
        A: crate::operators::window::Accumulate<T>,
        W: ProcessWindowFunction<K, A::Output, O>,
    {
        let (generic_acc, generic_window_fn) = (acc.clone(), window_fn.clone());
        let generic = self.generic_make(move || Aggregating {
            acc: generic_acc.clone(),
            window_fn: generic_window_fn.clone(),
            scratch: Vec::new(),
            _types: PhantomData,
        });
        self.aggregating_or(function, acc, window_fn, generic)
    }

    /// [`WindowedStream::aggregating`] with `generic` as the operator for on-disk state.
    fn aggregating_or<O, A, W>(
        self,
        function: &str,
        acc: Arc<A>,
        window_fn: Arc<W>,
        generic: crate::factory::MakeOneInput<T>,
    ) -> DataStream<O>
    where
        O: crate::Data,
        A: crate::operators::window::Accumulate<T>,
        W: ProcessWindowFunction<K, A::Output, O>,
    {
        let contents = DeclaredState {
            name: "window-contents",
            kind: "window",
            value_type: std::any::type_name::<A::Acc>().to_owned(),
            check: None,
        };
        let states = vec![contents];
        if self.assigner.is_merging() {
            return self.finish(function, generic).declaring::<K>(&states);
        }
        let key = self.keyed.key.clone();
        let (assigner, lateness, has_late) = (self.assigner, self.allowed_lateness, self.late_tag.is_some());
        let make: crate::factory::MakeOneInput<T> = Arc::new(move |setup, mut outputs: Vec<ErasedDownstream>| {
            if !setup.heap_state {
                return generic(setup, outputs);
            }
            let out = Output::new(outputs.remove(0), setup.name)?;
            let late = if has_late { Some(Output::new(outputs.remove(0), setup.name)?) } else { None };
            let side = SideOutputs::from_output(setup, outputs, if has_late { 2 } else { 1 })?;
            let mut operator = HeapWindowOperator::new(
                key.clone(),
                assigner,
                lateness,
                acc.clone(),
                window_fn.clone(),
                (out, late),
                setup.name,
            );
            operator.uid = setup.uid.to_owned();
            operator.side = side;
            Ok(Box::new(operator))
        });
        self.finish(function, make).declaring::<K>(&states)
    }

    /// Reduces each window's records to one.
    pub fn reduce<F>(self, f: F) -> DataStream<T>
    where
        F: Fn(T, T) -> T + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        if self.triggered {
            return self.triggered(
                "reduce",
                move |_: &K, _: &TimeWindow, elements: Vec<T>, out: &mut Collector<'_, T>| {
                    if let Some(reduced) = elements.into_iter().reduce(|a, b| f(a, b)) {
                        out.collect(reduced);
                    }
                },
            );
        }
        self.aggregating("reduce", Arc::new(ReduceAcc(f)), Arc::new(EmitResult))
    }

    /// Reduces each window's records, then passes the result to `window_fn` with the key and window.
    pub fn reduce_with<O, F, W>(self, f: F, window_fn: W) -> DataStream<O>
    where
        O: crate::Data,
        F: Fn(T, T) -> T + Send + Sync + 'static,
        W: ProcessWindowFunction<K, T, O>,
    {
        let f = Arc::new(f);
        if self.triggered {
            return self.triggered(
                "reduce",
                move |k: &K, w: &TimeWindow, elements: Vec<T>, out: &mut Collector<'_, O>| {
                    if let Some(reduced) = elements.into_iter().reduce(|a, b| f(a, b)) {
                        window_fn.process(k, w, vec![reduced], out);
                    }
                },
            );
        }
        self.aggregating("reduce", Arc::new(ReduceAcc(f)), Arc::new(window_fn))
    }

    /// Aggregates each window incrementally.
    pub fn aggregate<Acc, R, A>(self, aggregate: A) -> DataStream<R>
    where
        Acc: crate::Data,
        R: crate::Data,
        A: AggregateFunction<T, Acc, R>,
    {
        let aggregate = Arc::new(aggregate);
        if self.triggered {
            return self.triggered(
                "aggregate",
                move |_: &K, _: &TimeWindow, elements: Vec<T>, out: &mut Collector<'_, R>| {
                    let acc = elements.into_iter().fold(aggregate.create_accumulator(), |acc, v| aggregate.add(v, acc));
                    out.collect(aggregate.get_result(acc));
                },
            );
        }
        self.aggregating("aggregate", Arc::new(AggregateAcc(aggregate, PhantomData)), Arc::new(EmitResult))
    }

    /// Aggregates each window incrementally, then passes the result to `window_fn` with the key
    /// and window.
    pub fn aggregate_with<Acc, R, O, A, W>(self, aggregate: A, window_fn: W) -> DataStream<O>
    where
        Acc: crate::Data,
        R: 'static,
        O: crate::Data,
        A: AggregateFunction<T, Acc, R>,
        W: ProcessWindowFunction<K, R, O>,
    {
        let aggregate = Arc::new(aggregate);
        if self.triggered {
            return self.triggered(
                "aggregate",
                move |k: &K, w: &TimeWindow, elements: Vec<T>, out: &mut Collector<'_, O>| {
                    let acc = elements.into_iter().fold(aggregate.create_accumulator(), |acc, v| aggregate.add(v, acc));
                    window_fn.process(k, w, vec![aggregate.get_result(acc)], out);
                },
            );
        }
        self.aggregating("aggregate", Arc::new(AggregateAcc(aggregate, PhantomData)), Arc::new(window_fn))
    }

    /// Buffers each window's records and passes them all to `window_fn` when it fires.
    pub fn process<O, P>(self, window_fn: P) -> DataStream<O>
    where
        O: crate::Data,
        P: ProcessWindowFunction<K, T, O>,
    {
        if self.triggered {
            return self.triggered("process", window_fn);
        }
        let w = Arc::new(window_fn);
        let buffered = w.clone();
        // In a state backend, a window's elements are a list appended to per record (not a
        // vector accumulator rewritten per record).
        let generic = self.generic_make(move || Buffering {
            window_fn: buffered.clone(),
            scratch: Vec::new(),
            _types: PhantomData,
        });
        self.aggregating_or("process", Arc::new(Collect), Arc::new(ProcessCollected(w)), generic)
    }
}
