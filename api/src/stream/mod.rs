//! The DataStream API: build a job's logical graph from sources, transformations and sinks.

use crate::chain::{ErasedDownstream, Output, StreamRecord};
use crate::codec::encode_into;
use crate::connectors::kafka::{KafkaRecord, KafkaSink, KafkaSource};
use crate::connectors::{SinkDescriptor, SourceDescriptor};
use crate::error::{Error, Result};
use crate::factory::{
    GraphFactories, HeadOnlyFactory, KeyBytesFn, MakeHead, NodeFactory, NodeFactoryBox, OneInputFactory, OutputKit,
    TypedOutput,
};
use crate::functions::{
    AggregateFunction, CoProcessFunction, Collector, KeyedCoProcessFunction, KeyedProcessFunction, ProcessFunction,
    ProcessWindowFunction, RichFilterFunction, RichFlatMapFunction, RichMapFunction,
};
use crate::graph::{EdgeDescriptor, EdgeId, JobDescriptor, NodeDescriptor, NodeId, NodeKind, Partitioning};
use crate::keygroup::{DEFAULT_MAX_PARALLELISM, UPPER_MAX_PARALLELISM};
use crate::operators::async_wait::AsyncWaitOperator;
use crate::operators::basic::{FilterOperator, FlatMapOperator, MapOperator};
use crate::operators::keyed::{KeyedHarness, KeyedProcessOperator, ReduceOperator};
use crate::operators::process::{
    CoProcessHead, ProcessOperator, ProcessOutputs, RichFilterOperator, RichFlatMapOperator, RichMapOperator,
};
use crate::operators::side_outputs::SideOutputs;
use crate::operators::sink::{FormatFn, SinkFormat, SinkOperator};
use crate::operators::source::{ConvertRaw, Converted, SourceHead, SourceKind};
use crate::operators::two_input::{CoMapHead, KeyedCoProcessHead};
use crate::operators::watermarks::WatermarkAssigner;
use crate::operators::window::{
    AggregateAcc, Aggregating, Buffering, Collect, EmitResult, ProcessCollected, ReduceAcc, WindowContents,
    WindowOperator,
};
use crate::operators::window_heap::HeapWindowOperator;
use crate::runtime::{JobGraph, MalformedRecord, RawBatch};
use crate::state::DeclaredState;
use crate::time::{NO_TIMESTAMP, Timestamp, WatermarkStrategy, duration_ms};
use crate::trigger::{CountEvictor, CountTrigger, NoEvictor, PurgingTrigger};
use crate::window::{GlobalWindows, OutputTag, TimeWindow, WindowAssigner};
use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::{Display, Write as _};
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

mod broadcast;
mod connected;
mod join;
mod windowed;

pub use broadcast::{BroadcastConnectedStream, BroadcastStream, Connectable, KeyedBroadcastConnectedStream};
pub use connected::{ConnectedStreams, KeyedConnectedStreams};
pub use join::{
    CoGroup, CoGroupedStreams, IntervalJoinBuilder, IntervalJoined, Join, JoinInput, JoinedStreams, TableJoinBuilder,
    TwoStreamKeys, TwoStreamWindows,
};
pub use windowed::WindowedStream;

/// One step of a scripted source ([`StreamExecutionEnvironment::from_timed_events`]).
#[derive(Debug, Clone)]
pub enum TimedEvent<T> {
    /// A record with its event timestamp.
    Record {
        /// The record.
        value: T,
        /// Its event timestamp (ms).
        timestamp: Timestamp,
    },
    /// A watermark.
    Watermark(Timestamp),
    /// Nothing for this long (processing time); timers and idleness checks keep running.
    Pause(Duration),
}

impl<T> TimedEvent<T> {
    /// A record at `timestamp`.
    pub fn record(value: T, timestamp: Timestamp) -> Self {
        Self::Record { value, timestamp }
    }
}

/// A generator of sequence numbers `1, 2, ...` (see [`SourceDescriptor::Generator`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeneratorSource {
    count: Option<u64>,
    rate: Option<f64>,
}

impl GeneratorSource {
    /// `1..=count`.
    pub fn bounded(count: u64) -> Self {
        Self { count: Some(count), rate: None }
    }

    /// `1, 2, ...` without end.
    pub fn unbounded() -> Self {
        Self { count: None, rate: None }
    }

    /// At most `events_per_second` over all subtasks.
    pub fn with_rate(mut self, events_per_second: f64) -> Self {
        self.rate = Some(events_per_second);
        self
    }
}

struct Builder {
    name: String,
    parallelism: Option<u32>,
    max_parallelism: u32,
    nodes: Vec<NodeDescriptor>,
    factories: Vec<NodeFactoryBox>,
    output_types: Vec<Vec<TypeId>>,
    edges: Vec<EdgeDescriptor>,
    edge_keys: HashMap<EdgeId, Box<dyn Any + Send + Sync>>,
    fixed_parallelism: Vec<bool>,
    /// Nodes whose uid the job set (`uid`), as opposed to the generated `<kind>-<index>`.
    explicit_uids: std::collections::HashSet<NodeId>,
    /// See [`StreamExecutionEnvironment::allow_generated_uids`].
    allow_generated_uids: bool,
    /// Nodes whose functions emit to side outputs chosen at run time (process functions): a
    /// `side_output(&tag)` of their stream adds the output.
    open_side_outputs: std::collections::HashSet<NodeId>,
    /// Non-keyed operators that snapshot state of their own (broadcast state): like keyed ones,
    /// they need a uid.
    operator_state_nodes: std::collections::HashSet<NodeId>,
    /// How each node's declared states are read back (`weir savepoint check`).
    state_checks: HashMap<NodeId, Vec<(String, crate::state::StateCheck)>>,
    errors: Vec<String>,
}

type Graph = Rc<RefCell<Builder>>;

impl Builder {
    fn add_node(
        &mut self,
        kind: NodeKind,
        default_name: &str,
        factory: Box<dyn NodeFactory>,
        outputs: Vec<(String, Box<dyn OutputKit>, TypeId)>,
    ) -> NodeId {
        let id = self.nodes.len() as NodeId;
        let slug: String = default_name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .collect();
        let mut names = Vec::new();
        let mut kits = Vec::new();
        let mut types = Vec::new();
        for (name, kit, ty) in outputs {
            names.push(name);
            kits.push(kit);
            types.push(ty);
        }
        self.nodes.push(NodeDescriptor {
            id,
            uid: format!("{slug}-{id}"),
            name: default_name.to_owned(),
            kind,
            parallelism: None,
            outputs: names,
            states: Vec::new(),
            subtask_state: false,
        });
        self.factories.push(NodeFactoryBox { factory, outputs: kits });
        self.output_types.push(types);
        self.fixed_parallelism.push(false);
        id
    }

    fn connect<T: crate::Data>(
        &mut self,
        producers: &[(NodeId, u32)],
        target: NodeId,
        target_input: u32,
        partitioning: Partitioning,
        key: Option<&KeyBytesFn<T>>,
    ) {
        for &(source, source_output) in producers {
            let id = self.edges.len() as EdgeId;
            self.edges.push(EdgeDescriptor { id, source, source_output, target, target_input, partitioning });
            if let Some(key) = key {
                self.edge_keys.insert(id, Box::new(key.clone()));
            }
        }
    }
}

/// Where a job is declared: sources come from here (Flink's `StreamExecutionEnvironment`).
pub struct StreamExecutionEnvironment {
    graph: Graph,
}

impl std::fmt::Debug for StreamExecutionEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamExecutionEnvironment").finish_non_exhaustive()
    }
}

impl Default for StreamExecutionEnvironment {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamExecutionEnvironment {
    /// An empty job.
    pub fn new() -> Self {
        Self {
            graph: Rc::new(RefCell::new(Builder {
                name: "weir job".to_owned(),
                parallelism: None,
                max_parallelism: DEFAULT_MAX_PARALLELISM,
                nodes: Vec::new(),
                factories: Vec::new(),
                output_types: Vec::new(),
                edges: Vec::new(),
                edge_keys: HashMap::new(),
                fixed_parallelism: Vec::new(),
                explicit_uids: std::collections::HashSet::new(),
                allow_generated_uids: false,
                open_side_outputs: std::collections::HashSet::new(),
                operator_state_nodes: std::collections::HashSet::new(),
                state_checks: HashMap::new(),
                errors: Vec::new(),
            })),
        }
    }

    /// Names the job.
    pub fn set_job_name(&mut self, name: impl Into<String>) -> &mut Self {
        self.graph.borrow_mut().name = name.into();
        self
    }

    /// Default parallelism of the job's operators (else the submitter's `-p`).
    pub fn set_parallelism(&mut self, parallelism: u32) -> &mut Self {
        let mut g = self.graph.borrow_mut();
        if parallelism == 0 {
            g.errors.push("parallelism must be at least 1".into());
        }
        g.parallelism = Some(parallelism);
        drop(g);
        self
    }

    /// Lets stateful operators go without an explicit `uid` (they get one from their kind and
    /// position in the graph, which changes when the graph does): for jobs that will never
    /// restore a savepoint into a changed graph (tests, experiments). By default a job with a
    /// stateful operator (a source, a sink that commits, a keyed operator) without `uid` is
    /// refused when it is built, naming the operators, as Flink's
    /// `pipeline.auto-generate-uids: false`.
    pub fn allow_generated_uids(&mut self) -> &mut Self {
        self.graph.borrow_mut().allow_generated_uids = true;
        self
    }

    /// Number of key groups, the upper bound of any keyed operator's parallelism (default 128).
    pub fn set_max_parallelism(&mut self, max_parallelism: u32) -> &mut Self {
        let mut g = self.graph.borrow_mut();
        if max_parallelism == 0 || max_parallelism > UPPER_MAX_PARALLELISM {
            g.errors.push(format!("max parallelism must be in 1..={UPPER_MAX_PARALLELISM}, got {max_parallelism}"));
        }
        g.max_parallelism = max_parallelism;
        drop(g);
        self
    }

    fn source<T: crate::Data>(&self, descriptor: SourceDescriptor, name: &str, kind: SourceKind<T>) -> DataStream<T> {
        let make: MakeHead = Arc::new(move |setup, mut outputs| {
            let out = Output::new(outputs.remove(0), setup.name)?;
            Ok(Box::new(SourceHead::new(kind.clone(), out, setup.name, setup.uid)))
        });
        let id = self.graph.borrow_mut().add_node(
            NodeKind::Source(descriptor),
            name,
            Box::new(HeadOnlyFactory { make }),
            vec![main_output::<T>()],
        );
        DataStream::of_node(&self.graph, id)
    }

    /// Sequence numbers from a generator, mapped to records by `f` (see [`GeneratorSource`]).
    pub fn from_generator<T, F>(&self, generator: GeneratorSource, f: F) -> DataStream<T>
    where
        T: crate::Data,
        F: Fn(u64) -> T + Send + Sync + 'static,
    {
        if let Some(rate) = generator.rate
            && !(rate > 0.0 && rate.is_finite())
        {
            self.graph.borrow_mut().errors.push(format!("generator rate must be positive, got {rate}"));
        }
        let descriptor = SourceDescriptor::Generator { count: generator.count, rate: generator.rate };
        let convert: ConvertRaw<T> =
            Arc::new(move |raw: &mut RawBatch, out: &mut Vec<StreamRecord<T>>, _: &mut Converted| {
                if let Some((first, stride, count)) = raw.sequence {
                    // An exact-size iterator: one reservation, no capacity check per record.
                    out.extend(
                        (0..count).map(|i| StreamRecord { timestamp: NO_TIMESTAMP, value: f(first + i * stride) }),
                    );
                }
                out.extend(raw.numbers.iter().map(|&seq| StreamRecord { timestamp: NO_TIMESTAMP, value: f(seq) }));
            });
        self.source(descriptor.clone(), "generator", SourceKind::External { descriptor, convert, watermarks: None })
    }

    /// The lines of a text file, or of the files in a directory (see [`SourceDescriptor::TextFiles`]).
    pub fn read_text_file(&self, path: impl Into<String>) -> DataStream<String> {
        let descriptor = SourceDescriptor::TextFiles { path: path.into() };
        let convert: ConvertRaw<String> =
            Arc::new(|raw: &mut RawBatch, out: &mut Vec<StreamRecord<String>>, _: &mut Converted| {
                out.extend(raw.lines.drain(..).map(|value| StreamRecord { timestamp: NO_TIMESTAMP, value }));
            });
        self.source(descriptor.clone(), "text files", SourceKind::External { descriptor, convert, watermarks: None })
    }

    /// The records of Kafka topics, one split per partition, with `watermarks` generated per
    /// partition (the source emits the minimum over its partitions that are not idle; a subtask
    /// without partitions is idle). Records carry their Kafka timestamp as event time unless the
    /// strategy assigns one. Flink's `env.fromSource(kafkaSource, watermarkStrategy, name)`.
    pub fn from_kafka<T: crate::Data>(
        &self,
        source: KafkaSource<T>,
        watermarks: WatermarkStrategy<T>,
    ) -> DataStream<T> {
        self.graph.borrow_mut().errors.extend(source.errors);
        let deserializer = source.deserializer;
        let convert: ConvertRaw<T> =
            Arc::new(move |raw: &mut RawBatch, out: &mut Vec<StreamRecord<T>>, converted: &mut Converted| {
                let batch = &raw.kafka;
                out.reserve(batch.records.len());
                for (index, record) in batch.records.iter().enumerate() {
                    match (deserializer.0)(&KafkaRecord::of(batch, record)) {
                        Ok(value) => {
                            out.push(StreamRecord { timestamp: record.timestamp.unwrap_or(NO_TIMESTAMP), value });
                            converted.splits.push(record.split);
                        }
                        Err(error) => converted.malformed.push(MalformedRecord { index, error }),
                    }
                }
            });
        let descriptor = SourceDescriptor::Kafka(source.spec);
        self.source(
            descriptor.clone(),
            "kafka",
            SourceKind::External { descriptor, convert, watermarks: Some(watermarks) },
        )
    }

    /// The records of a source the job implements, read by split (see [`crate::source`]), with
    /// `watermarks` generated per split (the minimum over the subtask's splits that are not
    /// idle; `None`: assign them downstream). Flink's `env.fromSource(source, strategy, name)`.
    pub fn from_source<T, S>(&self, source: S, watermarks: Option<WatermarkStrategy<T>>) -> DataStream<T>
    where
        T: crate::Data,
        S: crate::source::SplitSource<T>,
    {
        let name = std::any::type_name::<S>().rsplit("::").next().unwrap_or("source").to_owned();
        let descriptor = SourceDescriptor::Custom { name: name.clone(), bounded: source.is_bounded() };
        let make: MakeHead = Arc::new(move |setup, mut outputs| {
            let out = Output::new(outputs.remove(0), setup.name)?;
            let watermarks = watermarks.clone().map(crate::operators::split_watermarks::SplitWatermarks::new);
            Ok(Box::new(crate::operators::split_source::SplitSourceHead::new(
                source.clone(),
                watermarks,
                out,
                setup.name,
                setup.uid,
            )))
        });
        let id = self.graph.borrow_mut().add_node(
            NodeKind::Source(descriptor),
            &name,
            Box::new(HeadOnlyFactory { make }),
            vec![main_output::<T>()],
        );
        DataStream::of_node(&self.graph, id)
    }

    /// The elements of a collection, split across subtasks.
    pub fn from_collection<T: crate::Data>(&self, items: Vec<T>) -> DataStream<T> {
        let descriptor = SourceDescriptor::Collection { len: items.len() };
        self.source(descriptor, "collection", SourceKind::Collection(Arc::new(items)))
    }

    /// A scripted sequence of records, watermarks and pauses, at parallelism 1.
    pub fn from_timed_events<T: crate::Data>(&self, events: Vec<TimedEvent<T>>) -> DataStream<T> {
        let descriptor = SourceDescriptor::TimedEvents { len: events.len() };
        let stream = self.source(descriptor, "timed events", SourceKind::Timed(Arc::new(events)));
        let id = stream.node.expect("source node");
        let mut g = self.graph.borrow_mut();
        g.nodes[id as usize].parallelism = Some(1);
        g.fixed_parallelism[id as usize] = true;
        drop(g);
        stream
    }

    /// Finishes the job: validates the graph and returns it.
    pub(crate) fn into_graph(self) -> Result<JobGraph> {
        let graph = Rc::try_unwrap(self.graph)
            .map_err(|_| Error::InvalidJob("a DataStream outlived the build function".into()))?
            .into_inner();
        if !graph.errors.is_empty() {
            return Err(Error::InvalidJob(graph.errors.join("; ")));
        }
        if graph.nodes.is_empty() {
            return Err(Error::InvalidJob("the job has no operators".into()));
        }
        if !graph.nodes.iter().any(|n| matches!(n.kind, NodeKind::Sink(_))) {
            return Err(Error::InvalidJob(
                "the job has no sink: add print(), write_as_text() or sink_to_blackhole()".into(),
            ));
        }
        let anonymous: Vec<String> = graph
            .nodes
            .iter()
            .filter(|n| {
                let stateful = keeps_state(&n.kind) || graph.operator_state_nodes.contains(&n.id);
                !graph.allow_generated_uids && stateful && !graph.explicit_uids.contains(&n.id)
            })
            .map(|n| format!("'{}'", n.name))
            .collect();
        if !anonymous.is_empty() {
            return Err(Error::InvalidJob(format!(
                "stateful operators without a uid: {}; set one on each with .uid(\"...\") (savepoints map state by \
                 uid, and a generated one changes when the job's graph does), or call env.allow_generated_uids()",
                anonymous.join(", ")
            )));
        }
        let mut uids = std::collections::HashSet::new();
        for node in &graph.nodes {
            if !uids.insert(node.uid.as_str()) {
                return Err(Error::InvalidJob(format!("uid '{}' is used by more than one operator", node.uid)));
            }
        }
        Ok(JobGraph {
            descriptor: JobDescriptor {
                name: graph.name,
                parallelism: graph.parallelism,
                max_parallelism: graph.max_parallelism,
                nodes: graph.nodes,
                edges: graph.edges,
            },
            factories: GraphFactories {
                nodes: graph.factories,
                edge_keys: graph.edge_keys,
                state_checks: graph.state_checks,
            }
            .boxed(),
        })
    }
}

fn main_output<T: crate::Data>() -> (String, Box<dyn OutputKit>, TypeId) {
    ("main".to_owned(), TypedOutput::<T>::boxed(), TypeId::of::<T>())
}

fn key_bytes_fn<T: crate::Data, K: crate::Data, KF: Fn(&T) -> K + Send + Sync + 'static>(
    key: &Arc<KF>,
) -> KeyBytesFn<T> {
    let key = key.clone();
    Arc::new(move |value: &T, out: &mut Vec<u8>| encode_into(&key(value), out, "key"))
}

/// A stream of records of type `T` (Flink's `DataStream` / `SingleOutputStreamOperator`).
pub struct DataStream<T> {
    graph: Graph,
    producers: Vec<(NodeId, u32)>,
    node: Option<NodeId>,
    partitioning: Partitioning,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for DataStream<T> {
    fn clone(&self) -> Self {
        Self {
            graph: self.graph.clone(),
            producers: self.producers.clone(),
            node: self.node,
            partitioning: self.partitioning,
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for DataStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataStream").field("producers", &self.producers).finish_non_exhaustive()
    }
}

/// Setting `uid`, `name` and parallelism on the operator that produced a stream or a sink.
/// Whether an operator of `kind` keeps state that a savepoint holds: sources (their position),
/// sinks that commit (text files, Kafka), keyed operators.
fn keeps_state(kind: &NodeKind) -> bool {
    match kind {
        NodeKind::Source(_) => true,
        NodeKind::Sink(sink) => {
            !matches!(sink, SinkDescriptor::Stdout | SinkDescriptor::Blackhole | SinkDescriptor::Custom { .. })
        }
        NodeKind::Operator { keyed, .. } => *keyed,
    }
}

fn configure_node(
    graph: &Graph,
    node: Option<NodeId>,
    what: &str,
    apply: impl FnOnce(&mut NodeDescriptor, bool) -> Option<String>,
) {
    let mut g = graph.borrow_mut();
    match node {
        Some(id) => {
            let fixed = g.fixed_parallelism[id as usize];
            if let Some(err) = apply(&mut g.nodes[id as usize], fixed) {
                g.errors.push(err);
            }
        }
        None => g
            .errors
            .push(format!("{what} can only be set on a stream produced by one operator (not a union or side output)")),
    }
}

fn set_uid(node: &mut NodeDescriptor, uid: &str) -> Option<String> {
    if uid.is_empty() {
        return Some(format!("operator '{}' has an empty uid", node.name));
    }
    node.uid = uid.to_owned();
    None
}

fn set_parallelism(node: &mut NodeDescriptor, fixed: bool, parallelism: u32) -> Option<String> {
    if parallelism == 0 {
        return Some(format!("operator '{}': parallelism must be at least 1", node.name));
    }
    if fixed && parallelism != 1 {
        return Some(format!("operator '{}' runs at parallelism 1 only", node.name));
    }
    node.parallelism = Some(parallelism);
    None
}

impl<T: crate::Data> DataStream<T> {
    /// Records the keyed states of the operator that produces this stream.
    fn declaring<K>(self, states: &[DeclaredState]) -> Self {
        if let Some(id) = self.node {
            let mut g = self.graph.borrow_mut();
            g.nodes[id as usize].states = states.iter().map(DeclaredState::with_key::<K>).collect();
            let checks = states.iter().filter_map(|s| Some((s.name.to_owned(), s.check?))).collect();
            g.state_checks.insert(id, checks);
        }
        self
    }

    /// Gives the operator that produces this stream the parallelism `input`'s producer was set
    /// to, if any, so that it chains to it (keeping the input's order) instead of receiving its
    /// records round robin.
    fn at_parallelism_of<I>(self, input: &DataStream<I>) -> Self {
        let mut g = self.graph.borrow_mut();
        if let (Some(id), &[(producer, _)]) = (self.node, input.producers.as_slice())
            && let Some(parallelism) = g.nodes[producer as usize].parallelism
        {
            g.nodes[id as usize].parallelism = Some(parallelism);
        }
        drop(g);
        self
    }

    /// Lets the function of the operator that produces this stream emit to any side output.
    fn with_open_side_outputs(self) -> Self {
        if let Some(id) = self.node {
            self.graph.borrow_mut().open_side_outputs.insert(id);
        }
        self
    }

    fn of_node(graph: &Graph, id: NodeId) -> Self {
        Self::of_output(graph, id, 0, Some(id))
    }

    fn of_output(graph: &Graph, id: NodeId, output: u32, node: Option<NodeId>) -> Self {
        Self {
            graph: graph.clone(),
            producers: vec![(id, output)],
            node,
            partitioning: Partitioning::Auto,
            _t: PhantomData,
        }
    }

    /// Sets the stable id that the operator's state is addressed by; keep it across job versions.
    pub fn uid(self, uid: &str) -> Self {
        configure_node(&self.graph, self.node, "uid", |n, _| set_uid(n, uid));
        if let Some(id) = self.node {
            self.graph.borrow_mut().explicit_uids.insert(id);
        }
        self
    }

    /// Sets the operator's display name.
    pub fn name(self, name: &str) -> Self {
        configure_node(&self.graph, self.node, "name", |n, _| {
            n.name = name.to_owned();
            None
        });
        self
    }

    /// Sets the operator's parallelism.
    pub fn set_parallelism(self, parallelism: u32) -> Self {
        configure_node(&self.graph, self.node, "parallelism", |n, fixed| set_parallelism(n, fixed, parallelism));
        self
    }

    /// Distributes records round robin to the next operator.
    pub fn rebalance(&self) -> Self {
        Self { partitioning: Partitioning::Rebalance, node: None, ..self.clone() }
    }

    /// Sends every record to every subtask of the next operator.
    pub fn broadcast(&self) -> Self {
        Self { partitioning: Partitioning::Broadcast, node: None, ..self.clone() }
    }

    fn one_input<O: crate::Data>(
        &self,
        description: &str,
        default_name: &str,
        keyed: bool,
        key: Option<&KeyBytesFn<T>>,
        make: crate::factory::MakeOneInput<T>,
        extra_outputs: Vec<(String, Box<dyn OutputKit>, TypeId)>,
    ) -> DataStream<O> {
        // A keyed operator's input is hash-partitioned by its key; others keep this stream's.
        let partitioning = if key.is_some() { Partitioning::Hash } else { self.partitioning };
        let mut outputs = vec![main_output::<O>()];
        outputs.extend(extra_outputs);
        let mut g = self.graph.borrow_mut();
        let id = g.add_node(
            NodeKind::Operator { description: description.to_owned(), keyed },
            default_name,
            Box::new(OneInputFactory { make }),
            outputs,
        );
        g.connect::<T>(&self.producers, id, 0, partitioning, key);
        drop(g);
        DataStream::of_node(&self.graph, id)
    }

    /// Applies `f` to every record.
    pub fn map<O, F>(&self, f: F) -> DataStream<O>
    where
        O: crate::Data,
        F: Fn(T) -> O + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let make: crate::factory::MakeOneInput<T> = Arc::new(move |setup, mut outputs: Vec<ErasedDownstream>| {
            Ok(Box::new(MapOperator {
                f: f.clone(),
                out: Output::new(outputs.remove(0), setup.name)?,
                _input: PhantomData,
            }))
        });
        self.one_input("map", "map", false, None, make, Vec::new())
    }

    /// Keeps the records for which `f` is true.
    pub fn filter<F>(&self, f: F) -> DataStream<T>
    where
        F: Fn(&T) -> bool + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let make: crate::factory::MakeOneInput<T> = Arc::new(move |setup, mut outputs: Vec<ErasedDownstream>| {
            Ok(Box::new(FilterOperator { f: f.clone(), out: Output::new(outputs.remove(0), setup.name)? }))
        });
        self.one_input("filter", "filter", false, None, make, Vec::new())
    }

    /// Emits zero or more records per record.
    pub fn flat_map<O, F>(&self, f: F) -> DataStream<O>
    where
        O: crate::Data,
        F: Fn(T, &mut Collector<'_, O>) + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let make: crate::factory::MakeOneInput<T> = Arc::new(move |setup, mut outputs: Vec<ErasedDownstream>| {
            Ok(Box::new(FlatMapOperator {
                f: f.clone(),
                out: Output::new(outputs.remove(0), setup.name)?,
                _input: PhantomData,
            }))
        });
        self.one_input("flat_map", "flat map", false, None, make, Vec::new())
    }

    /// Processes each record with a [`ProcessFunction`]: side outputs (`ctx.output(&tag, v)`,
    /// read with [`DataStream::side_output`]), the element's timestamp and the operator's clocks,
    /// `open` and `close`; no keyed state or timers (those need `key_by`).
    pub fn process<O, F>(&self, function: F) -> DataStream<O>
    where
        O: crate::Data,
        F: ProcessFunction<T, O>,
    {
        let make: crate::factory::MakeOneInput<T> = Arc::new(move |setup, mut outputs: Vec<ErasedDownstream>| {
            let out = Output::new(outputs.remove(0), setup.name)?;
            let side = SideOutputs::new(setup, outputs)?;
            Ok(Box::new(ProcessOperator {
                function: function.clone(),
                outputs: ProcessOutputs::new(out, side, setup.name),
                _input: PhantomData,
            }))
        });
        self.one_input("process", "process", false, None, make, Vec::new()).with_open_side_outputs()
    }

    /// Maps every record with a [`RichMapFunction`] (per-subtask fields, `open` and `close`,
    /// errors that fail the task); plain closures go to [`DataStream::map`].
    pub fn map_rich<O, F>(&self, function: F) -> DataStream<O>
    where
        O: crate::Data,
        F: RichMapFunction<T, O>,
    {
        let make: crate::factory::MakeOneInput<T> = Arc::new(move |setup, mut outputs: Vec<ErasedDownstream>| {
            Ok(Box::new(RichMapOperator {
                function: function.clone(),
                out: Output::new(outputs.remove(0), setup.name)?,
                name: setup.name.to_owned(),
                _input: PhantomData,
            }))
        });
        self.one_input("map", "map", false, None, make, Vec::new())
    }

    /// Keeps the records a [`RichFilterFunction`] accepts (see [`DataStream::map_rich`]).
    pub fn filter_rich<F>(&self, function: F) -> DataStream<T>
    where
        F: RichFilterFunction<T>,
    {
        let make: crate::factory::MakeOneInput<T> = Arc::new(move |setup, mut outputs: Vec<ErasedDownstream>| {
            Ok(Box::new(RichFilterOperator {
                function: function.clone(),
                out: Output::new(outputs.remove(0), setup.name)?,
                name: setup.name.to_owned(),
            }))
        });
        self.one_input("filter", "filter", false, None, make, Vec::new())
    }

    /// Emits zero or more records per record with a [`RichFlatMapFunction`] (see
    /// [`DataStream::map_rich`]).
    pub fn flat_map_rich<O, F>(&self, function: F) -> DataStream<O>
    where
        O: crate::Data,
        F: RichFlatMapFunction<T, O>,
    {
        let make: crate::factory::MakeOneInput<T> = Arc::new(move |setup, mut outputs: Vec<ErasedDownstream>| {
            Ok(Box::new(RichFlatMapOperator {
                function: function.clone(),
                out: Output::new(outputs.remove(0), setup.name)?,
                name: setup.name.to_owned(),
                _input: PhantomData,
            }))
        });
        self.one_input("flat_map", "flat map", false, None, make, Vec::new())
    }

    /// Calls an external service for each record with `function` (Flink's
    /// `AsyncDataStream.orderedWait`): at most `capacity` requests in flight, each given
    /// `timeout`; results leave in input order. In-flight requests are checkpointed and issued
    /// again after a restore (see [`crate::async_io`]); set the operator's uid on the result.
    pub fn ordered_wait<O, F>(&self, function: F, timeout: Duration, capacity: usize) -> DataStream<O>
    where
        O: crate::Data,
        F: crate::async_io::AsyncFunction<T, O>,
    {
        self.async_wait(function, (true, timeout, capacity))
    }

    /// [`DataStream::ordered_wait`] whose results leave as their requests complete (Flink's
    /// `AsyncDataStream.unorderedWait`); no result passes a watermark that followed its input.
    pub fn unordered_wait<O, F>(&self, function: F, timeout: Duration, capacity: usize) -> DataStream<O>
    where
        O: crate::Data,
        F: crate::async_io::AsyncFunction<T, O>,
    {
        self.async_wait(function, (false, timeout, capacity))
    }

    fn async_wait<O, F>(&self, function: F, mode: (bool, Duration, usize)) -> DataStream<O>
    where
        O: crate::Data,
        F: crate::async_io::AsyncFunction<T, O>,
    {
        if mode.2 == 0 {
            self.graph.borrow_mut().errors.push("async I/O: the capacity must be at least 1".into());
        }
        let make: crate::factory::MakeOneInput<T> = Arc::new(move |setup, mut outputs: Vec<ErasedDownstream>| {
            let out = Output::new(outputs.remove(0), setup.name)?;
            Ok(Box::new(AsyncWaitOperator::new(function.clone(), mode, (setup.uid, setup.name), out)))
        });
        let description = format!(
            "async I/O ({}, capacity {}, timeout {} ms)",
            if mode.0 { "ordered" } else { "unordered" },
            mode.2,
            mode.1.as_millis()
        );
        let stream = self.one_input(&description, "async I/O", false, None, make, Vec::new());
        if let Some(id) = stream.node {
            let mut g = self.graph.borrow_mut();
            g.operator_state_nodes.insert(id);
            g.nodes[id as usize].subtask_state = true;
        }
        stream
    }

    /// Assigns event timestamps and generates watermarks.
    pub fn assign_timestamps_and_watermarks(&self, strategy: WatermarkStrategy<T>) -> DataStream<T> {
        let make: crate::factory::MakeOneInput<T> = Arc::new(move |setup, mut outputs: Vec<ErasedDownstream>| {
            Ok(Box::new(WatermarkAssigner::new(strategy.clone(), Output::new(outputs.remove(0), setup.name)?)))
        });
        self.one_input("timestamps/watermarks", "timestamps and watermarks", false, None, make, Vec::new())
    }

    /// Groups the whole stream into windows, in one subtask (Flink's `windowAll`): the window
    /// functions see the key `()`.
    pub fn window_all(&self, assigner: WindowAssigner) -> WindowedStream<(), T, fn(&T)> {
        let key: fn(&T) = |_| ();
        WindowedStream::new(self.key_by(key), assigner, true)
    }

    /// Partitions the stream by key: records with equal keys go to the same subtask and share
    /// keyed state.
    pub fn key_by<K, KF>(&self, key: KF) -> KeyedStream<K, T, KF>
    where
        K: crate::Data,
        KF: Fn(&T) -> K + Send + Sync + 'static,
    {
        KeyedStream { stream: self.clone(), key: Arc::new(key), _k: PhantomData }
    }

    /// Merges streams of the same type.
    pub fn union(&self, others: &[&DataStream<T>]) -> DataStream<T> {
        let mut producers = self.producers.clone();
        for other in others {
            if !Rc::ptr_eq(&self.graph, &other.graph) {
                self.graph.borrow_mut().errors.push("union of streams from different environments".into());
            }
            producers.extend(other.producers.iter().copied());
        }
        DataStream {
            graph: self.graph.clone(),
            producers,
            node: None,
            partitioning: self.partitioning,
            _t: PhantomData,
        }
    }

    /// Connects a second stream of another type, for a two-input operator, or a broadcast
    /// stream ([`DataStream::broadcast_state`]) for the broadcast state pattern.
    pub fn connect<C: Connectable<T>>(&self, other: &C) -> C::Connected {
        other.connected_to(self)
    }

    /// The side output `tag` of the operator that produced this stream.
    pub fn side_output<S: crate::Data>(&self, tag: &OutputTag<S>) -> DataStream<S> {
        let Some(node) = self.node else {
            self.graph.borrow_mut().errors.push(format!("side output '{}' asked of a union or side output", tag.name));
            return DataStream {
                graph: self.graph.clone(),
                producers: Vec::new(),
                node: None,
                partitioning: Partitioning::Auto,
                _t: PhantomData,
            };
        };
        let mut g = self.graph.borrow_mut();
        if g.open_side_outputs.contains(&node) && !g.nodes[node as usize].outputs[1..].contains(&tag.name) {
            let n = node as usize;
            g.nodes[n].outputs.push(tag.name.clone());
            g.factories[n].outputs.push(TypedOutput::<S>::boxed());
            g.output_types[n].push(TypeId::of::<S>());
        }
        let desc = &g.nodes[node as usize];
        let found = desc.outputs.iter().position(|n| *n == tag.name).filter(|&i| i > 0);
        match found {
            Some(i) if g.output_types[node as usize][i] == TypeId::of::<S>() => {
                drop(g);
                DataStream::of_output(&self.graph, node, i as u32, None)
            }
            Some(_) => {
                let msg = format!("side output '{}' of '{}' has another type", tag.name, desc.name);
                g.errors.push(msg);
                drop(g);
                DataStream {
                    graph: self.graph.clone(),
                    producers: Vec::new(),
                    node: None,
                    partitioning: Partitioning::Auto,
                    _t: PhantomData,
                }
            }
            None => {
                let msg = format!("operator '{}' has no side output '{}'", desc.name, tag.name);
                g.errors.push(msg);
                drop(g);
                DataStream {
                    graph: self.graph.clone(),
                    producers: Vec::new(),
                    node: None,
                    partitioning: Partitioning::Auto,
                    _t: PhantomData,
                }
            }
        }
    }

    fn sink(&self, descriptor: SinkDescriptor, name: &str, format: Option<SinkFormat<T>>) -> DataStreamSink {
        let descriptor2 = descriptor.clone();
        let make: crate::factory::MakeOneInput<T> = Arc::new(move |setup, _outputs: Vec<ErasedDownstream>| {
            Ok(Box::new(SinkOperator::new(setup.uid, descriptor2.clone(), format.clone())))
        });
        let mut g = self.graph.borrow_mut();
        let id = g.add_node(NodeKind::Sink(descriptor), name, Box::new(OneInputFactory { make }), Vec::new());
        g.connect::<T>(&self.producers, id, 0, self.partitioning, None);
        drop(g);
        DataStreamSink { graph: self.graph.clone(), node: id }
    }

    /// Writes records as lines (their `Display` form) to `part-<subtask>.txt` files in `directory`.
    pub fn write_as_text(&self, directory: impl Into<String>) -> DataStreamSink
    where
        T: Display,
    {
        let format: FormatFn<T> = Arc::new(|v: &T, line: &mut String| {
            let _ = write!(line, "{v}");
        });
        self.sink(
            SinkDescriptor::TextFiles { directory: directory.into() },
            "text file sink",
            Some(SinkFormat::Lines(format)),
        )
    }

    /// Writes records to Kafka (see [`KafkaSink`]): exactly-once, at-least-once or without a
    /// guarantee, as the sink says. Flink's `stream.sinkTo(kafkaSink)`.
    pub fn sink_to_kafka(&self, sink: KafkaSink<T>) -> DataStreamSink {
        self.graph.borrow_mut().errors.extend(sink.errors);
        self.sink(SinkDescriptor::Kafka(sink.spec), "kafka sink", Some(SinkFormat::Kafka(sink.serializer)))
    }

    /// Prints records (their `Display` form) on the taskmanager's standard output.
    pub fn print(&self) -> DataStreamSink
    where
        T: Display,
    {
        let format: FormatFn<T> = Arc::new(|v: &T, line: &mut String| {
            let _ = write!(line, "{v}");
        });
        self.sink(SinkDescriptor::Stdout, "print sink", Some(SinkFormat::Lines(format)))
    }

    /// Writes records with a sink the job implements, at least once (see
    /// [`crate::sink::SinkFunction`]). Flink's `addSink(sinkFunction)`.
    pub fn sink_to<S: crate::sink::SinkFunction<T>>(&self, sink: S) -> DataStreamSink {
        let make: crate::factory::MakeOneInput<T> = Arc::new(move |setup, _outputs: Vec<ErasedDownstream>| {
            Ok(Box::new(crate::operators::custom_sink::CustomSinkOperator {
                sink: sink.clone(),
                name: setup.name.to_owned(),
            }))
        });
        self.custom_sink::<S>(make, false)
    }

    /// Adds a sink the job implements, of type `S`, made by `make`; `stateful` when it keeps
    /// operator state.
    fn custom_sink<S>(&self, make: crate::factory::MakeOneInput<T>, stateful: bool) -> DataStreamSink {
        let name = std::any::type_name::<S>().rsplit("::").next().unwrap_or("sink").to_owned();
        let descriptor = SinkDescriptor::Custom { name: name.clone() };
        let mut g = self.graph.borrow_mut();
        let id = g.add_node(NodeKind::Sink(descriptor), &name, Box::new(OneInputFactory { make }), Vec::new());
        g.connect::<T>(&self.producers, id, 0, self.partitioning, None);
        if stateful {
            g.operator_state_nodes.insert(id);
        }
        drop(g);
        DataStreamSink { graph: self.graph.clone(), node: id }
    }

    /// Writes records exactly once with a sink the job implements through two-phase commit
    /// (see [`crate::sink::TwoPhaseCommitSink`]): what it pre-commits at a barrier becomes
    /// visible once the checkpoint is complete. Flink's `sinkTo(twoPhaseCommittingSink)`. The
    /// sink keeps state (its pending commits): give it a `uid`.
    pub fn sink_to_transactional<S: crate::sink::TwoPhaseCommitSink<T>>(&self, sink: S) -> DataStreamSink {
        let make: crate::factory::MakeOneInput<T> = Arc::new(move |setup, _outputs: Vec<ErasedDownstream>| {
            Ok(Box::new(crate::operators::custom_sink::TwoPhaseSinkOperator::new(sink.clone(), setup.name, setup.uid)))
        });
        self.custom_sink::<S>(make, true)
    }

    /// Discards records (benchmarks).
    pub fn sink_to_blackhole(&self) -> DataStreamSink {
        self.sink(SinkDescriptor::Blackhole, "blackhole sink", None)
    }
}

/// A sink, for setting its uid, name and parallelism.
pub struct DataStreamSink {
    graph: Graph,
    node: NodeId,
}

impl std::fmt::Debug for DataStreamSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataStreamSink").field("node", &self.node).finish()
    }
}

impl DataStreamSink {
    /// Sets the sink's stable id.
    pub fn uid(self, uid: &str) -> Self {
        configure_node(&self.graph, Some(self.node), "uid", |n, _| set_uid(n, uid));
        self.graph.borrow_mut().explicit_uids.insert(self.node);
        self
    }

    /// Sets the sink's display name.
    pub fn name(self, name: &str) -> Self {
        configure_node(&self.graph, Some(self.node), "name", |n, _| {
            n.name = name.to_owned();
            None
        });
        self
    }

    /// Sets the sink's parallelism.
    pub fn set_parallelism(self, parallelism: u32) -> Self {
        configure_node(&self.graph, Some(self.node), "parallelism", |n, fixed| set_parallelism(n, fixed, parallelism));
        self
    }
}

/// A stream partitioned by key (Flink's `KeyedStream`).
pub struct KeyedStream<K, T, KF> {
    stream: DataStream<T>,
    key: Arc<KF>,
    _k: PhantomData<fn() -> K>,
}

impl<K, T, KF> KeyedStream<K, T, KF>
where
    K: crate::Data,
    T: crate::Data,
    KF: Fn(&T) -> K + Send + Sync + 'static,
{
    fn keyed_input<O: crate::Data>(
        &self,
        description: &str,
        default_name: &str,
        make: crate::factory::MakeOneInput<T>,
        extra_outputs: Vec<(String, Box<dyn OutputKit>, TypeId)>,
    ) -> DataStream<O> {
        let key = key_bytes_fn::<T, K, KF>(&self.key);
        self.stream.one_input(description, default_name, true, Some(&key), make, extra_outputs)
    }

    /// Processes each record with keyed state and timers.
    pub fn process<O, F>(&self, function: F) -> DataStream<O>
    where
        O: crate::Data,
        F: KeyedProcessFunction<K, T, O>,
    {
        let key = self.key.clone();
        let states = function.states();
        let make: crate::factory::MakeOneInput<T> = Arc::new(move |setup, mut outputs: Vec<ErasedDownstream>| {
            let out = Output::new(outputs.remove(0), setup.name)?;
            Ok(Box::new(KeyedProcessOperator {
                key_fn: key.clone(),
                function: function.clone(),
                harness: KeyedHarness::new(setup.uid, setup.name),
                out,
                side: SideOutputs::new(setup, outputs)?,
                _input: PhantomData,
            }))
        });
        self.keyed_input("keyed process", "keyed process", make, Vec::new())
            .declaring::<K>(&states)
            .with_open_side_outputs()
    }

    /// Emits the running reduction of each key for every record.
    pub fn reduce<F>(&self, f: F) -> DataStream<T>
    where
        F: Fn(T, T) -> T + Send + Sync + 'static,
    {
        let (key, f) = (self.key.clone(), Arc::new(f));
        let make: crate::factory::MakeOneInput<T> = Arc::new(move |setup, mut outputs: Vec<ErasedDownstream>| {
            Ok(Box::new(ReduceOperator {
                key_fn: key.clone(),
                function: f.clone(),
                harness: KeyedHarness::new(setup.uid, setup.name),
                state: 0,
                scratch: Vec::new(),
                out: Output::new(outputs.remove(0), setup.name)?,
            }))
        });
        let state = DeclaredState {
            name: "reduce",
            kind: "value",
            value_type: std::any::type_name::<T>().to_owned(),
            check: None,
        };
        self.keyed_input("reduce", "reduce", make, Vec::new()).declaring::<K>(&[state])
    }

    /// Groups each key's records into windows.
    pub fn window(&self, assigner: WindowAssigner) -> WindowedStream<K, T, KF> {
        WindowedStream::new(self.clone(), assigner, false)
    }

    /// Windows of `size` elements per key, firing and emptying when full (Flink's
    /// `countWindow(size)`: global windows with a purging count trigger). Elements of a window
    /// not full at the end of the input are not emitted.
    pub fn count_window(&self, size: u64) -> WindowedStream<K, T, KF, PurgingTrigger<CountTrigger>, NoEvictor> {
        self.window(GlobalWindows::create()).trigger(PurgingTrigger::of(CountTrigger::of(size)))
    }

    /// Windows of the last `size` elements per key, firing every `slide` elements (Flink's
    /// `countWindow(size, slide)`: global windows, a count trigger and a count evictor).
    pub fn count_window_sliding(&self, size: u64, slide: u64) -> WindowedStream<K, T, KF, CountTrigger, CountEvictor> {
        self.window(GlobalWindows::create())
            .evictor(CountEvictor::of(usize::try_from(size).unwrap_or(usize::MAX)))
            .trigger(CountTrigger::of(slide))
    }
}

impl<K, T, KF> Clone for KeyedStream<K, T, KF> {
    fn clone(&self) -> Self {
        Self { stream: self.stream.clone(), key: self.key.clone(), _k: PhantomData }
    }
}

#[cfg(test)]
mod tests {
    use crate::prelude::*;

    fn built(build: crate::plugin::BuildFn) -> crate::Result<crate::runtime::JobGraph> {
        crate::plugin::job_entry(build).build(&[])
    }

    #[test]
    fn stateful_operators_need_a_uid_unless_generated_ones_are_allowed() {
        fn without(env: &mut StreamExecutionEnvironment, _: &JobArgs) -> crate::Result<()> {
            env.from_collection(vec![1_u64])
                .name("numbers")
                .map(|x: u64| x)
                .key_by(|x: &u64| *x)
                .reduce(|a: u64, b: u64| a + b)
                .name("sums")
                .print();
            Ok(())
        }
        let e = built(without).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("stateful operators without a uid: 'numbers', 'sums'"), "{e}");
        assert!(!e.contains("'map'") && !e.contains("'print'") && e.lines().count() == 1, "{e}");
        fn allowed(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> crate::Result<()> {
            env.allow_generated_uids();
            without(env, args)
        }
        assert!(built(allowed).is_ok());
        fn with(env: &mut StreamExecutionEnvironment, _: &JobArgs) -> crate::Result<()> {
            let sums = env.from_collection(vec![1_u64]).uid("numbers").key_by(|x: &u64| *x);
            sums.reduce(|a: u64, b: u64| a + b).uid("sums").write_as_text("/tmp/weir-unused").uid("out");
            Ok(())
        }
        assert!(built(with).is_ok());
    }

    #[test]
    fn keyed_operators_declare_their_states_with_types() {
        const COUNT: ValueStateDescriptor<u64> = ValueStateDescriptor::new("count");
        const SEEN: MapStateDescriptor<String, bool> = MapStateDescriptor::new("seen");
        #[derive(Clone)]
        struct Counting;
        impl KeyedProcessFunction<u32, u32, u32> for Counting {
            fn states(&self) -> Vec<DeclaredState> {
                vec![COUNT.declared(), SEEN.declared()]
            }
            fn process_element(&mut self, _: u32, _: &mut KeyedContext<'_, u32, u32>) -> crate::Result<()> {
                Ok(())
            }
        }
        fn job(env: &mut StreamExecutionEnvironment, _: &JobArgs) -> crate::Result<()> {
            env.allow_generated_uids();
            let keyed = env.from_collection(vec![1_u32]).key_by(|x: &u32| *x);
            keyed.process(Counting).print();
            keyed.reduce(|a: u32, b: u32| a + b).print();
            keyed
                .window(TumblingProcessingTimeWindows::of(std::time::Duration::from_secs(1)))
                .reduce(|a, b| a + b)
                .print();
            Ok(())
        }
        let graph = built(job).unwrap();
        let states: Vec<Vec<(String, String, String, String)>> = graph
            .descriptor
            .nodes
            .iter()
            .filter(|n| !n.states.is_empty())
            .map(|n| {
                n.states
                    .iter()
                    .map(|s| (s.name.clone(), s.kind.clone(), s.key_type.clone(), s.value_type.clone()))
                    .collect()
            })
            .collect();
        let s = |name: &str, kind: &str, value: &str| {
            (name.to_owned(), kind.to_owned(), "u32".to_owned(), value.to_owned())
        };
        assert_eq!(
            states,
            vec![
                vec![s("count", "value", "u64"), s("seen", "map", "alloc::string::String -> bool")],
                vec![s("reduce", "value", "u32")],
                vec![s("window-contents", "window", "u32")],
            ]
        );
    }
}
