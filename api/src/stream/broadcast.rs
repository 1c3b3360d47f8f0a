//! The broadcast state pattern: `stream.connect(&rules.broadcast_state(&descriptor))` (see
//! [`crate::broadcast`]).

use super::*;
use crate::broadcast::BroadcastState;
use crate::functions::{BroadcastProcessFunction, KeyedBroadcastProcessFunction};
use crate::operators::broadcast::{BroadcastProcessHead, KeyedBroadcastProcessHead};
use crate::state::MapStateDescriptor;

/// A stream whose elements go to every subtask of the operator it is connected to, which keeps
/// them in broadcast state (Flink's `BroadcastStream`).
pub struct BroadcastStream<B> {
    stream: DataStream<B>,
}

impl<T: crate::Data> DataStream<T> {
    /// Broadcasts this stream for the broadcast state pattern: connect a stream to it and
    /// process both with a [`BroadcastProcessFunction`] (or a keyed stream with a
    /// [`KeyedBroadcastProcessFunction`]), which keeps what it learns from this stream in
    /// broadcast state such as `descriptor` (Flink's `broadcast(descriptor)`).
    pub fn broadcast_state<K, V>(&self, descriptor: &MapStateDescriptor<K, V>) -> BroadcastStream<T> {
        let _ = descriptor;
        BroadcastStream { stream: self.clone() }
    }
}

/// What [`DataStream::connect`] connects to: another stream (two inputs) or a broadcast stream.
pub trait Connectable<A> {
    /// The connected streams.
    type Connected;
    /// Connects `first` to this.
    fn connected_to(&self, first: &DataStream<A>) -> Self::Connected;
}

impl<A: crate::Data, B: crate::Data> Connectable<A> for DataStream<B> {
    type Connected = ConnectedStreams<A, B>;
    fn connected_to(&self, first: &DataStream<A>) -> ConnectedStreams<A, B> {
        ConnectedStreams { first: first.clone(), second: self.clone() }
    }
}

impl<A: crate::Data, B: crate::Data> Connectable<A> for BroadcastStream<B> {
    type Connected = BroadcastConnectedStream<A, B>;
    fn connected_to(&self, first: &DataStream<A>) -> BroadcastConnectedStream<A, B> {
        BroadcastConnectedStream { first: first.clone(), broadcast: self.stream.clone() }
    }
}

/// A stream connected to a broadcast stream (Flink's `BroadcastConnectedStream`).
pub struct BroadcastConnectedStream<A, B> {
    first: DataStream<A>,
    broadcast: DataStream<B>,
}

/// Adds the two-input node of a broadcast pattern: input 0 from `first` (hash-partitioned by
/// `key` when given), input 1 broadcast.
fn broadcast_node<A: crate::Data, B: crate::Data, O: crate::Data>(
    first: &DataStream<A>,
    broadcast: &DataStream<B>,
    (description, keyed): (&str, bool),
    make: MakeHead,
    key: Option<KeyBytesFn<A>>,
) -> DataStream<O> {
    let mut g = first.graph.borrow_mut();
    let id = g.add_node(
        NodeKind::Operator { description: description.to_owned(), keyed },
        description,
        Box::new(HeadOnlyFactory { make }),
        vec![main_output::<O>()],
    );
    g.operator_state_nodes.insert(id);
    let partitioning = if key.is_some() { Partitioning::Hash } else { first.partitioning };
    g.connect::<A>(&first.producers, id, 0, partitioning, key.as_ref());
    g.connect::<B>(&broadcast.producers, id, 1, Partitioning::Broadcast, None);
    drop(g);
    DataStream::of_node(&first.graph, id).with_open_side_outputs()
}

impl<A: crate::Data, B: crate::Data> BroadcastConnectedStream<A, B> {
    /// Processes both inputs with a [`BroadcastProcessFunction`]; set the operator's uid on the
    /// result (its broadcast state is snapshotted).
    pub fn process<O, F>(&self, function: F) -> DataStream<O>
    where
        O: crate::Data,
        F: BroadcastProcessFunction<A, B, O>,
    {
        let make: MakeHead = Arc::new(move |setup, mut outputs| {
            let out = Output::new(outputs.remove(0), setup.name)?;
            let side = SideOutputs::new(setup, outputs)?;
            Ok(Box::new(BroadcastProcessHead {
                function: function.clone(),
                uid: setup.uid.to_owned(),
                state: BroadcastState::default(),
                first: Vec::new(),
                second: Vec::new(),
                outputs: ProcessOutputs::new(out, side, setup.name),
            }))
        });
        broadcast_node(&self.first, &self.broadcast, ("broadcast process", false), make, None)
    }
}

/// A keyed stream connected to a broadcast stream.
pub struct KeyedBroadcastConnectedStream<K, A, B, KA> {
    keyed: KeyedStream<K, A, KA>,
    broadcast: DataStream<B>,
}

impl<K, T, KF> KeyedStream<K, T, KF>
where
    K: crate::Data,
    T: crate::Data,
    KF: Fn(&T) -> K + Send + Sync + 'static,
{
    /// Connects this keyed stream to a broadcast stream, for a
    /// [`KeyedBroadcastProcessFunction`].
    pub fn connect<B: crate::Data>(
        &self,
        broadcast: &BroadcastStream<B>,
    ) -> KeyedBroadcastConnectedStream<K, T, B, KF> {
        KeyedBroadcastConnectedStream { keyed: self.clone(), broadcast: broadcast.stream.clone() }
    }
}

impl<K, A, B, KA> KeyedBroadcastConnectedStream<K, A, B, KA>
where
    K: crate::Data,
    A: crate::Data,
    B: crate::Data,
    KA: Fn(&A) -> K + Send + Sync + 'static,
{
    /// Processes both inputs with a [`KeyedBroadcastProcessFunction`]; set the operator's uid
    /// on the result (its keyed and broadcast state are snapshotted).
    pub fn process<O, F>(&self, function: F) -> DataStream<O>
    where
        O: crate::Data,
        F: KeyedBroadcastProcessFunction<K, A, B, O>,
    {
        let states = function.states();
        let key = self.keyed.key.clone();
        let make: MakeHead = Arc::new(move |setup, mut outputs| {
            let out = Output::new(outputs.remove(0), setup.name)?;
            Ok(Box::new(KeyedBroadcastProcessHead {
                key: key.clone(),
                function: function.clone(),
                harness: KeyedHarness::new(setup.uid, setup.name),
                state: BroadcastState::default(),
                first: Vec::new(),
                second: Vec::new(),
                out,
                side: SideOutputs::new(setup, outputs)?,
            }))
        });
        let key_bytes = key_bytes_fn::<A, K, KA>(&self.keyed.key);
        broadcast_node(&self.keyed.stream, &self.broadcast, ("keyed broadcast process", true), make, Some(key_bytes))
            .declaring::<K>(&states)
    }
}
