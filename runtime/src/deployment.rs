//! Identities of jobs, tasks and channels, and the descriptor of a task deployment.

use serde::{Deserialize, Serialize};
use std::fmt;
use weir_api::graph::{ChainSpec, EdgeId, Partitioning};

/// A job's id: 32 lowercase hex digits, as Flink's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub uuid::Uuid);

impl JobId {
    /// A new random id.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.simple())
    }
}

impl std::str::FromStr for JobId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(Self)
    }
}

/// One subtask of one vertex of one execution attempt of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId {
    /// The job.
    pub job: JobId,
    /// Execution attempt of the whole job (restarts increment it).
    pub attempt: u32,
    /// Vertex (task chain) index in the execution plan.
    pub vertex: u32,
    /// Subtask index.
    pub subtask: u32,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}#{}", self.job, self.vertex, self.subtask, self.attempt)
    }
}

/// One channel of an edge between two tasks: producer subtask to consumer subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChannelId {
    /// The job.
    pub job: JobId,
    /// Execution attempt.
    pub attempt: u32,
    /// The logical edge.
    pub edge: EdgeId,
    /// Producing subtask.
    pub producer: u32,
    /// Consuming subtask.
    pub consumer: u32,
}

/// An edge entering a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSpec {
    /// The logical edge.
    pub edge: EdgeId,
    /// Which input of the head operator it feeds (0, or 1 for a two-input operator).
    pub input: u32,
    /// Parallelism of the producing vertex: the number of channels on this edge.
    pub producer_parallelism: u32,
    /// How the producer distributes records (decides which producers send to this subtask).
    pub partitioning: Partitioning,
}

impl InputSpec {
    /// The producer subtasks that send to consumer `subtask`.
    pub fn producers_for(&self, subtask: u32) -> Vec<u32> {
        match self.partitioning {
            Partitioning::Forward => vec![subtask],
            _ => (0..self.producer_parallelism).collect(),
        }
    }
}

/// Where the producer of one input channel runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelLocation {
    /// The input edge.
    pub edge: EdgeId,
    /// The producing subtask.
    pub producer: u32,
    /// Id of the taskmanager running it.
    pub taskmanager: String,
    /// That taskmanager's data-plane address (`host:port`); empty in a single-process cluster.
    pub data_address: String,
}

/// Everything a taskmanager needs to run one subtask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDeployment {
    /// Which subtask.
    pub task: TaskId,
    /// Job name.
    pub job_name: String,
    /// Task name (chained operator names joined by ` -> `).
    pub task_name: String,
    /// Parallelism of the vertex.
    pub parallelism: u32,
    /// Number of key groups.
    pub max_parallelism: u32,
    /// Arguments of the job's build function.
    pub job_args: Vec<String>,
    /// The chain to instantiate and its outputs.
    pub chain: ChainSpec,
    /// Edges entering the chain.
    pub inputs: Vec<InputSpec>,
    /// Where the producer of every input channel runs.
    pub input_locations: Vec<ChannelLocation>,
    /// For each output (as in `chain.outputs`), the taskmanager id of each consumer subtask.
    pub output_taskmanagers: Vec<Vec<String>>,
    /// How the task takes checkpoints; `None` when checkpointing is off.
    pub checkpointing: Option<crate::checkpoint::CheckpointingSpec>,
    /// The job's keyed state backend (with or without checkpointing).
    pub state_backend: crate::checkpoint::StateBackendKind,
    /// The checkpoint state to start from; `None` for a fresh start.
    pub restore: Option<crate::checkpoint::TaskRestore>,
}

impl TaskDeployment {
    /// Whether the task's head is a source.
    pub fn is_source(&self) -> bool {
        self.inputs.is_empty()
    }
}
