//! From the logical job graph to the execution plan: parallelism per operator, operator chains
//! (forward edges with equal parallelism into single-input operators are fused), and the
//! resolved partitioning of every edge between tasks.

use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use weir_api::graph::{
    ChainSpec, EdgeDescriptor, JobDescriptor, NodeDescriptor, NodeId, NodeKind, OutputSpec, Partitioning,
};
use weir_runtime::InputSpec;

/// Why a job graph cannot be planned (the job author's mistake).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError(pub String);

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Result<T> = std::result::Result<T, PlanError>;

/// One vertex of the execution plan: a chain of operators run by `parallelism` subtasks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExecutionVertex {
    /// Index in [`ExecutionPlan::vertices`].
    pub id: u32,
    /// Chained operator names joined by ` -> `.
    pub name: String,
    /// Number of subtasks.
    pub parallelism: u32,
    /// The operators and outputs of the chain.
    pub chain: ChainSpec,
    /// Edges entering the chain.
    pub inputs: Vec<InputSpec>,
    /// Whether the chain starts with a source.
    pub is_source: bool,
    /// The uids of the chain's operators, in chain order (state is addressed by them).
    pub uids: Vec<String>,
    /// Its sources and sinks: their state (a position, pending commits) belongs to a subtask,
    /// not to key groups.
    pub subtask_state: Vec<SubtaskState>,
    /// The keyed states its operators declare, by uid (operators without any are left out).
    pub states: std::collections::BTreeMap<String, Vec<weir_api::graph::StateDeclaration>>,
}

/// A source or sink of a vertex, whose state belongs to a subtask.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubtaskState {
    /// The operator's uid.
    pub uid: String,
    /// Whether its state restores at another parallelism: every new subtask is then given every
    /// old subtask's state and keeps its share (see `SourceDescriptor::rescales` and
    /// `SinkDescriptor::rescales`).
    pub rescales: bool,
}

/// The execution plan of a job.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExecutionPlan {
    /// Vertices in topological order.
    pub vertices: Vec<ExecutionVertex>,
    /// Number of key groups.
    pub max_parallelism: u32,
}

impl ExecutionPlan {
    /// Slots the job needs with slot sharing: one subtask of every vertex per slot.
    pub fn required_slots(&self) -> u32 {
        self.vertices.iter().map(|v| v.parallelism).max().unwrap_or(0)
    }

    /// Total number of subtasks.
    pub fn task_count(&self) -> usize {
        self.vertices.iter().map(|v| v.parallelism as usize).sum()
    }
}

/// Plans `job` with `default_parallelism` for operators that set none.
///
/// # Errors
/// A [`PlanError`] when a parallelism is out of range or a forward edge connects
/// operators of different parallelism.
pub fn plan(job: &JobDescriptor, default_parallelism: u32) -> Result<ExecutionPlan> {
    let invalid = PlanError;
    let default = job.parallelism.unwrap_or(default_parallelism);
    if default == 0 {
        return Err(invalid("parallelism must be at least 1".into()));
    }
    let parallelism: Vec<u32> = job.nodes.iter().map(|n| n.parallelism.unwrap_or(default)).collect();
    for node in &job.nodes {
        let p = parallelism[node.id as usize];
        if matches!(node.kind, NodeKind::Operator { keyed: true, .. }) && p > job.max_parallelism {
            return Err(invalid(format!(
                "keyed operator '{}' has parallelism {p}, above the job's max parallelism {}",
                node.name, job.max_parallelism
            )));
        }
    }
    let in_degree = |node: NodeId| job.edges.iter().filter(|e| e.target == node).count();
    let resolve = |edge: &EdgeDescriptor| -> Result<Partitioning> {
        let (ps, pt) = (parallelism[edge.source as usize], parallelism[edge.target as usize]);
        Ok(match edge.partitioning {
            Partitioning::Auto if ps == pt => Partitioning::Forward,
            Partitioning::Auto => Partitioning::Rebalance,
            Partitioning::Forward if ps != pt => {
                return Err(invalid(format!(
                    "forward edge from '{}' (parallelism {ps}) to '{}' (parallelism {pt}): parallelism must match",
                    job.nodes[edge.source as usize].name, job.nodes[edge.target as usize].name
                )));
            }
            other => other,
        })
    };
    // An edge is fused into a chain when its target has no other input and records would stay
    // on the same subtask anyway: a forward edge, or any edge between two operators of
    // parallelism 1 (a hash or rebalance edge with one producer and one consumer is forward).
    // State stays addressed by operator uid and key group, so chaining never affects it.
    let mut chainable = vec![false; job.edges.len()];
    for edge in &job.edges {
        let single = parallelism[edge.source as usize] == 1 && parallelism[edge.target as usize] == 1;
        chainable[edge.id as usize] =
            (single || resolve(edge)? == Partitioning::Forward) && in_degree(edge.target) == 1;
    }

    let mut vertex_of: Vec<Option<u32>> = vec![None; job.nodes.len()];
    let mut vertices = Vec::new();
    for head in &job.nodes {
        let is_chained_into = job.edges.iter().any(|e| e.target == head.id && chainable[e.id as usize]);
        if is_chained_into {
            continue;
        }
        let vertex_id = vertices.len() as u32;
        let mut nodes = Vec::new();
        let mut chained_edges = Vec::new();
        let mut queue = VecDeque::from([head.id]);
        while let Some(node) = queue.pop_front() {
            vertex_of[node as usize] = Some(vertex_id);
            nodes.push(node);
            for edge in job.edges.iter().filter(|e| e.source == node && chainable[e.id as usize]) {
                chained_edges.push(edge.id);
                queue.push_back(edge.target);
            }
        }
        let mut outputs = Vec::new();
        for edge in job.edges.iter().filter(|e| nodes.contains(&e.source) && !chainable[e.id as usize]) {
            outputs.push(OutputSpec {
                edge: edge.id,
                consumer_parallelism: parallelism[edge.target as usize],
                partitioning: resolve(edge)?,
            });
        }
        let mut inputs = Vec::new();
        for edge in job.edges.iter().filter(|e| e.target == head.id) {
            inputs.push(InputSpec {
                edge: edge.id,
                input: edge.target_input,
                producer_parallelism: parallelism[edge.source as usize],
                partitioning: resolve(edge)?,
            });
        }
        let name = nodes.iter().map(|&n| job.nodes[n as usize].name.as_str()).collect::<Vec<_>>().join(" -> ");
        let uids = nodes.iter().map(|&n| job.nodes[n as usize].uid.clone()).collect();
        let subtask_state = nodes
            .iter()
            .map(|&n| &job.nodes[n as usize])
            .filter_map(|n| match &n.kind {
                NodeKind::Source(source) => Some(SubtaskState { uid: n.uid.clone(), rescales: source.rescales() }),
                NodeKind::Sink(sink) => Some(SubtaskState { uid: n.uid.clone(), rescales: sink.rescales() }),
                NodeKind::Operator { .. } if n.subtask_state => {
                    Some(SubtaskState { uid: n.uid.clone(), rescales: true })
                }
                NodeKind::Operator { .. } => None,
            })
            .collect();
        let states = nodes
            .iter()
            .map(|&n| &job.nodes[n as usize])
            .filter(|n| !n.states.is_empty())
            .map(|n| (n.uid.clone(), n.states.clone()))
            .collect();
        vertices.push(ExecutionVertex {
            uids,
            subtask_state,
            states,
            id: vertex_id,
            name,
            parallelism: parallelism[head.id as usize],
            is_source: matches!(head.kind, NodeKind::Source(_)),
            chain: ChainSpec { head: head.id, nodes, chained_edges, outputs },
            inputs,
        });
    }
    if vertex_of.iter().any(Option::is_none) {
        return Err(invalid("the job graph has a cycle".into()));
    }
    Ok(ExecutionPlan { vertices, max_parallelism: job.max_parallelism })
}

/// The plan in the shape of Flink's `GET /jobs/{id}/plan` (`plan.nodes[]` with `id`,
/// `parallelism`, `description` and `inputs[]` with `num`, `id`, `ship_strategy`, `exchange`),
/// with Weir's details beside Flink's fields: the slots and tasks the job needs, each vertex's
/// chained operators (uid, kind, keyed state) and whether it starts with a source.
pub fn flink_plan(descriptor: &JobDescriptor, plan: &ExecutionPlan, parallelism: u32) -> Value {
    let producer: HashMap<u32, u32> =
        plan.vertices.iter().flat_map(|v| v.chain.outputs.iter().map(move |o| (o.edge, v.id))).collect();
    let nodes: Vec<Value> = plan
        .vertices
        .iter()
        .map(|vertex| {
            let inputs: Vec<Value> = vertex
                .inputs
                .iter()
                .enumerate()
                .map(|(num, input)| {
                    json!({
                        "num": num,
                        "id": producer.get(&input.edge).map(u32::to_string),
                        "ship_strategy": ship_strategy(input.partitioning),
                        "exchange": "pipelined_bounded",
                        "edge": input.edge,
                        "input": input.input,
                    })
                })
                .collect();
            let operators: Vec<Value> = vertex
                .chain
                .nodes
                .iter()
                .filter_map(|n| descriptor.nodes.get(*n as usize))
                .map(operator_json)
                .collect();
            json!({
                "id": vertex.id.to_string(),
                "parallelism": vertex.parallelism,
                "operator": "",
                "operator_strategy": "",
                "description": vertex.name,
                "optimizer_properties": {},
                "inputs": inputs,
                "is_source": vertex.is_source,
                "uids": vertex.uids,
                "operators": operators,
            })
        })
        .collect();
    json!({
        "plan": {
            "name": descriptor.name,
            "type": "STREAMING",
            "parallelism": descriptor.parallelism.unwrap_or(parallelism),
            "max_parallelism": plan.max_parallelism,
            "required_slots": plan.required_slots(),
            "tasks": plan.task_count(),
            "nodes": nodes,
        }
    })
}

fn operator_json(node: &NodeDescriptor) -> Value {
    let (kind, keyed, description, connector) = match &node.kind {
        NodeKind::Source(source) => ("source", false, None, serde_json::to_value(source).ok()),
        NodeKind::Operator { description, keyed } => ("operator", *keyed, Some(description.clone()), None),
        NodeKind::Sink(sink) => ("sink", false, None, serde_json::to_value(sink).ok()),
    };
    json!({
        "id": node.id,
        "uid": node.uid,
        "name": node.name,
        "kind": kind,
        "description": description,
        "keyed": keyed,
        "connector": connector,
        "parallelism": node.parallelism,
        "states": node.states,
    })
}

/// Flink's name of how records cross an edge.
fn ship_strategy(partitioning: Partitioning) -> &'static str {
    match partitioning {
        Partitioning::Auto | Partitioning::Forward => "FORWARD",
        Partitioning::Rebalance => "REBALANCE",
        Partitioning::Hash => "HASH",
        Partitioning::Broadcast => "BROADCAST",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_api::connectors::{SinkDescriptor, SourceDescriptor};
    use weir_api::graph::NodeDescriptor;

    fn node(id: NodeId, kind: NodeKind, parallelism: Option<u32>) -> NodeDescriptor {
        NodeDescriptor {
            id,
            uid: format!("n{id}"),
            name: format!("n{id}"),
            kind,
            parallelism,
            outputs: vec!["main".into()],
            states: Vec::new(),
            subtask_state: false,
        }
    }

    fn op(id: NodeId, keyed: bool, p: Option<u32>) -> NodeDescriptor {
        node(id, NodeKind::Operator { description: "op".into(), keyed }, p)
    }

    fn edge(id: u32, source: NodeId, target: NodeId, partitioning: Partitioning) -> EdgeDescriptor {
        EdgeDescriptor { id, source, source_output: 0, target, target_input: 0, partitioning }
    }

    fn job(nodes: Vec<NodeDescriptor>, edges: Vec<EdgeDescriptor>) -> JobDescriptor {
        JobDescriptor { name: "t".into(), parallelism: None, max_parallelism: 128, nodes, edges }
    }

    #[test]
    fn forward_edges_chain_and_keyed_edges_split() {
        // source -> map -> keyed -> sink: two vertices, [source, map] and [keyed, sink].
        let j = job(
            vec![
                node(0, NodeKind::Source(SourceDescriptor::Generator { count: Some(1), rate: None }), None),
                op(1, false, None),
                op(2, true, None),
                node(3, NodeKind::Sink(SinkDescriptor::Blackhole), None),
            ],
            vec![
                edge(0, 0, 1, Partitioning::Auto),
                edge(1, 1, 2, Partitioning::Hash),
                edge(2, 2, 3, Partitioning::Auto),
            ],
        );
        let p = plan(&j, 4).unwrap();
        assert_eq!(p.vertices.len(), 2);
        assert_eq!(p.vertices[0].chain.nodes, vec![0, 1]);
        assert_eq!(
            p.vertices[0].chain.outputs,
            vec![OutputSpec { edge: 1, consumer_parallelism: 4, partitioning: Partitioning::Hash }]
        );
        assert_eq!(p.vertices[1].chain.nodes, vec![2, 3]);
        assert_eq!(p.vertices[1].inputs[0].producer_parallelism, 4);
        assert_eq!(p.required_slots(), 4);
        assert_eq!(p.task_count(), 8);
    }

    #[test]
    fn keyed_edges_between_single_subtasks_are_chained() {
        let j = job(
            vec![
                node(0, NodeKind::Source(SourceDescriptor::Generator { count: Some(1), rate: None }), None),
                op(1, true, None),
                node(2, NodeKind::Sink(SinkDescriptor::Blackhole), None),
            ],
            vec![edge(0, 0, 1, Partitioning::Hash), edge(1, 1, 2, Partitioning::Auto)],
        );
        let p = plan(&j, 1).unwrap();
        assert_eq!(p.vertices.len(), 1);
        assert_eq!(p.vertices[0].chain.chained_edges, vec![0, 1]);
        assert_eq!(plan(&j, 2).unwrap().vertices.len(), 2);
    }

    #[test]
    fn parallelism_changes_rebalance_and_unions_do_not_chain() {
        let j = job(
            vec![
                node(0, NodeKind::Source(SourceDescriptor::Collection { len: 1 }), Some(1)),
                node(1, NodeKind::Source(SourceDescriptor::Collection { len: 1 }), Some(1)),
                op(2, false, Some(1)),
                node(3, NodeKind::Sink(SinkDescriptor::Stdout), Some(3)),
            ],
            vec![
                edge(0, 0, 2, Partitioning::Auto),
                edge(1, 1, 2, Partitioning::Auto),
                edge(2, 2, 3, Partitioning::Auto),
            ],
        );
        let p = plan(&j, 2).unwrap();
        assert_eq!(p.vertices.len(), 4, "{p:#?}");
        let union = &p.vertices[2];
        assert_eq!(union.inputs.len(), 2);
        assert!(union.inputs.iter().all(|i| i.partitioning == Partitioning::Forward));
        assert_eq!(union.chain.outputs[0].partitioning, Partitioning::Rebalance);
    }

    #[test]
    fn bad_parallelism_is_rejected() {
        let j = job(
            vec![
                node(0, NodeKind::Source(SourceDescriptor::Collection { len: 1 }), Some(2)),
                op(1, true, Some(200)),
                node(2, NodeKind::Sink(SinkDescriptor::Stdout), Some(3)),
            ],
            vec![edge(0, 0, 1, Partitioning::Hash), edge(1, 1, 2, Partitioning::Forward)],
        );
        assert!(plan(&j, 1).unwrap_err().to_string().contains("max parallelism"));
        assert!(plan(&job(vec![], vec![]), 0).is_err());
    }
}
