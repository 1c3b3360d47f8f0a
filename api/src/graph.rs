//! The logical job graph: what the job's build function declares, in a serializable form the
//! jobmanager plans from (`JobDescriptor`), plus the typed operator factories that only the plugin
//! can instantiate.

use crate::connectors::{SinkDescriptor, SourceDescriptor};
use serde::{Deserialize, Serialize};

/// Index of a node in [`JobDescriptor::nodes`].
pub type NodeId = u32;
/// Index of an edge in [`JobDescriptor::edges`].
pub type EdgeId = u32;

/// How records are distributed over an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Partitioning {
    /// Forward when both sides have the same parallelism, else rebalance; resolved by the
    /// planner, which never hands `Auto` to a task.
    Auto,
    /// Subtask `i` sends to subtask `i`; requires equal parallelism (chained when possible).
    Forward,
    /// Round robin over all downstream subtasks.
    Rebalance,
    /// By key group of the record's key (`key_by`).
    Hash,
    /// Every record to every downstream subtask.
    Broadcast,
}

/// What a node does, as far as the planner needs to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeKind {
    /// Produces records; has no inputs.
    Source(SourceDescriptor),
    /// Transforms records; `keyed` when it uses keyed state or timers.
    Operator {
        /// Operator type, for example `map` or `window(tumbling 10s event-time)`.
        description: String,
        /// Whether the operator runs on a keyed stream.
        keyed: bool,
    },
    /// Consumes records; has no outputs.
    Sink(SinkDescriptor),
}

/// One operator of the logical graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeDescriptor {
    /// Index in [`JobDescriptor::nodes`].
    pub id: NodeId,
    /// Stable identifier that state is addressed by (set with `uid`, else derived from the
    /// node's position and kind).
    pub uid: String,
    /// Display name (set with `name`).
    pub name: String,
    /// What the node does.
    pub kind: NodeKind,
    /// Parallelism set on this operator; `None` takes the job's default.
    pub parallelism: Option<u32>,
    /// Names of the node's logical outputs: index 0 is the main output, further ones are side
    /// outputs (for example late data of a window).
    pub outputs: Vec<String>,
    /// The keyed states it declares (built-in operators always; user functions through
    /// [`KeyedProcessFunction::states`](crate::functions::KeyedProcessFunction::states)).
    pub states: Vec<StateDeclaration>,
    /// Whether an operator (not a source or sink) keeps non-keyed state per subtask that
    /// rescales by shares, as sources do (the in-flight requests of async I/O): after a change
    /// of parallelism every new subtask is handed every old subtask's state and keeps its share.
    #[serde(default)]
    pub subtask_state: bool,
}

/// A keyed state an operator declares, with its types: a savepoint records them, and a job
/// restored from it whose operator declares the state with another kind or type is refused
/// before it starts (`weir savepoint check` says so first), since the stored bytes could not be
/// read. Types are compared by name (`std::any::type_name`), which is exact for one compiler
/// version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StateDeclaration {
    /// The state's name, unique within its operator.
    pub name: String,
    /// `value`, `list` or `map`.
    pub kind: String,
    /// The type of the operator's key.
    pub key_type: String,
    /// The type of its values; for map state `UserKey -> Value`.
    pub value_type: String,
}

/// A connection from one node's output to another node's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeDescriptor {
    /// Index in [`JobDescriptor::edges`].
    pub id: EdgeId,
    /// Producing node.
    pub source: NodeId,
    /// Which output of the producer (0 = main).
    pub source_output: u32,
    /// Consuming node.
    pub target: NodeId,
    /// Which input of the consumer (0, or 1 for the second input of a two-input operator).
    pub target_input: u32,
    /// How records are distributed.
    pub partitioning: Partitioning,
}

/// The serializable logical graph of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDescriptor {
    /// Job name (set with `StreamExecutionEnvironment::set_job_name`).
    pub name: String,
    /// Default parallelism requested by the job; `None` takes the submitter's.
    pub parallelism: Option<u32>,
    /// Number of key groups.
    pub max_parallelism: u32,
    /// Nodes in creation order (a topological order).
    pub nodes: Vec<NodeDescriptor>,
    /// Edges in creation order.
    pub edges: Vec<EdgeDescriptor>,
}

impl JobDescriptor {
    /// The edges into `node`, in order.
    pub fn inputs_of(&self, node: NodeId) -> impl Iterator<Item = &EdgeDescriptor> {
        self.edges.iter().filter(move |e| e.target == node)
    }

    /// The edges out of `node`, in order.
    pub fn outputs_of(&self, node: NodeId) -> impl Iterator<Item = &EdgeDescriptor> {
        self.edges.iter().filter(move |e| e.source == node)
    }
}

/// A network output of a task: an edge leaving the chain, and how many consumers it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSpec {
    /// The edge leaving the chain.
    pub edge: EdgeId,
    /// Parallelism of the consuming vertex (number of channels).
    pub consumer_parallelism: u32,
    /// How records are distributed over the channels (never `Auto`).
    pub partitioning: Partitioning,
}

/// Which logical nodes one task runs, and how its edges are wired; computed by the jobmanager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainSpec {
    /// The node that receives the task's input (or the source node).
    pub head: NodeId,
    /// All nodes of the chain, head first.
    pub nodes: Vec<NodeId>,
    /// Edges inside the chain (forward, fused: no serialization, no channel).
    pub chained_edges: Vec<EdgeId>,
    /// Edges leaving the chain; a task's output index is its position here.
    pub outputs: Vec<OutputSpec>,
}
