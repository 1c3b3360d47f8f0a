//! Connected streams: two inputs of possibly different types feeding one two-input operator.

use super::*;

/// Two streams feeding one two-input operator (Flink's `ConnectedStreams`).
pub struct ConnectedStreams<A, B> {
    pub(super) first: DataStream<A>,
    pub(super) second: DataStream<B>,
}

impl<A: crate::Data, B: crate::Data> ConnectedStreams<A, B> {
    fn two_input<O: crate::Data>(
        &self,
        (description, name): (&str, &str),
        keyed: bool,
        make: MakeHead,
        keys: (Option<KeyBytesFn<A>>, Option<KeyBytesFn<B>>),
    ) -> DataStream<O> {
        let mut g = self.first.graph.borrow_mut();
        let id = g.add_node(
            NodeKind::Operator { description: description.to_owned(), keyed },
            name,
            Box::new(HeadOnlyFactory { make }),
            vec![main_output::<O>()],
        );
        let (p1, p2) = match keys {
            (Some(_), Some(_)) => (Partitioning::Hash, Partitioning::Hash),
            _ => (self.first.partitioning, self.second.partitioning),
        };
        g.connect::<A>(&self.first.producers, id, 0, p1, keys.0.as_ref());
        g.connect::<B>(&self.second.producers, id, 1, p2, keys.1.as_ref());
        drop(g);
        DataStream::of_node(&self.first.graph, id)
    }

    /// Maps each input with its own function into one output type.
    pub fn map<O, F1, F2>(&self, f1: F1, f2: F2) -> DataStream<O>
    where
        O: crate::Data,
        F1: Fn(A) -> O + Send + Sync + 'static,
        F2: Fn(B) -> O + Send + Sync + 'static,
    {
        let (f1, f2) = (Arc::new(f1), Arc::new(f2));
        let make: MakeHead = Arc::new(move |setup, mut outputs| {
            Ok(Box::new(CoMapHead {
                f1: f1.clone(),
                f2: f2.clone(),
                first: Vec::new(),
                second: Vec::new(),
                out: Output::new(outputs.remove(0), setup.name)?,
                name: setup.name.to_owned(),
            }))
        });
        self.two_input(("co-map", "co-map"), false, make, (None, None))
    }

    /// Processes both inputs with a [`CoProcessFunction`] (side outputs, `open` and `close`;
    /// no keyed state: key both inputs for that).
    pub fn process<O, F>(&self, function: F) -> DataStream<O>
    where
        O: crate::Data,
        F: CoProcessFunction<A, B, O>,
    {
        let make: MakeHead = Arc::new(move |setup, mut outputs| {
            let out = Output::new(outputs.remove(0), setup.name)?;
            let side = SideOutputs::new(setup, outputs)?;
            Ok(Box::new(CoProcessHead {
                function: function.clone(),
                first: Vec::new(),
                second: Vec::new(),
                outputs: ProcessOutputs::new(out, side, setup.name),
            }))
        });
        self.two_input(("co-process", "co-process"), false, make, (None, None)).with_open_side_outputs()
    }

    /// Partitions both inputs by key, for a keyed two-input function.
    pub fn key_by<K, K1, K2>(&self, key1: K1, key2: K2) -> KeyedConnectedStreams<K, A, B, K1, K2>
    where
        K: crate::Data,
        K1: Fn(&A) -> K + Send + Sync + 'static,
        K2: Fn(&B) -> K + Send + Sync + 'static,
    {
        KeyedConnectedStreams {
            streams: ConnectedStreams { first: self.first.clone(), second: self.second.clone() },
            key1: Arc::new(key1),
            key2: Arc::new(key2),
            _k: PhantomData,
        }
    }
}

/// Two keyed streams with the same key type feeding one keyed two-input operator.
pub struct KeyedConnectedStreams<K, A, B, K1, K2> {
    streams: ConnectedStreams<A, B>,
    key1: Arc<K1>,
    key2: Arc<K2>,
    _k: PhantomData<fn() -> K>,
}

impl<K, A, B, K1, K2> KeyedConnectedStreams<K, A, B, K1, K2>
where
    K: crate::Data,
    A: crate::Data,
    B: crate::Data,
    K1: Fn(&A) -> K + Send + Sync + 'static,
    K2: Fn(&B) -> K + Send + Sync + 'static,
{
    /// Processes both inputs with shared keyed state and timers.
    pub fn process<O, F>(&self, function: F) -> DataStream<O>
    where
        O: crate::Data,
        F: KeyedCoProcessFunction<K, A, B, O>,
    {
        self.process_described("keyed co-process", "keyed co-process", function)
    }

    /// [`KeyedConnectedStreams::process`] with the operator's description and default name.
    pub(super) fn process_described<O, F>(&self, description: &str, name: &str, function: F) -> DataStream<O>
    where
        O: crate::Data,
        F: KeyedCoProcessFunction<K, A, B, O>,
    {
        let states = function.states();
        self.process_with(description, name, self.generic_head(function), &states)
    }

    /// What makes the generic operator of `function` (a keyed co-process head over the task's
    /// state backend).
    pub(super) fn generic_head<O, F>(&self, function: F) -> MakeHead
    where
        O: crate::Data,
        F: KeyedCoProcessFunction<K, A, B, O>,
    {
        let (key1, key2) = (self.key1.clone(), self.key2.clone());
        Arc::new(move |setup, mut outputs| {
            let out = Output::new(outputs.remove(0), setup.name)?;
            Ok(Box::new(KeyedCoProcessHead {
                key1: key1.clone(),
                key2: key2.clone(),
                function: function.clone(),
                harness: KeyedHarness::new(setup.uid, setup.name),
                first: Vec::new(),
                second: Vec::new(),
                out,
                side: SideOutputs::new(setup, outputs)?,
            }))
        })
    }

    /// Adds the keyed two-input operator `make` makes, which keeps `states`.
    pub(super) fn process_with<O: crate::Data>(
        &self,
        description: &str,
        name: &str,
        make: MakeHead,
        states: &[crate::state::DeclaredState],
    ) -> DataStream<O> {
        let keys = (Some(key_bytes_fn::<A, K, K1>(&self.key1)), Some(key_bytes_fn::<B, K, K2>(&self.key2)));
        self.streams.two_input((description, name), true, make, keys).declaring::<K>(states).with_open_side_outputs()
    }
}
