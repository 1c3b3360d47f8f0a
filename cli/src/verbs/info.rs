//! `weir info PLUGIN [JOB_ARGS]`: the job's execution plan as JSON, built and planned here
//! without a cluster (Flink's `flink info`).

use super::output::print_json;
use anyhow::Context as _;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use weir_api::graph::{JobDescriptor, NodeDescriptor, NodeKind, Partitioning};
use weir_jobmanager::plan::ExecutionPlan;
use weir_runtime::JobArtifact;

#[derive(clap::Args)]
pub struct InfoArgs {
    /// Default parallelism of the job's operators, as for `weir run`.
    #[arg(short = 'p', long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub parallelism: u32,
    /// The plan is JSON in any case; accepted as on every verb.
    #[arg(long)]
    pub json: bool,
    /// The job plugin, then the arguments for the job's build function (everything after the
    /// plugin goes to the job).
    #[arg(required = true, trailing_var_arg = true, value_names = ["PLUGIN", "JOB_ARGS"])]
    pub values: Vec<String>,
}

/// Loads `plugin`, builds its job with `job_args` and plans it at `parallelism`, as the
/// jobmanager would on submission (on a blocking thread: a build function may take its time).
pub async fn build_plan(
    plugin: PathBuf,
    job_args: Vec<String>,
    parallelism: u32,
) -> anyhow::Result<(JobDescriptor, ExecutionPlan)> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let loaded = weir_runtime::plugin::LoadedJob::load(&JobArtifact::Plugin(plugin))?;
        let graph = loaded.build(&job_args)?;
        let descriptor = graph.descriptor.clone();
        let plan = weir_jobmanager::plan::plan(&descriptor, parallelism).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok((descriptor, plan))
    })
    .await
    .context("the job's build function did not complete")?
}

/// `weir info [-p N] PLUGIN [JOB_ARGS]`.
pub async fn info(args: InfoArgs) -> anyhow::Result<ExitCode> {
    let (positional, job_args) = weir_cli::args::split_values(&args.values, 1);
    let plugin = PathBuf::from(&positional[0]);
    let (descriptor, plan) = build_plan(plugin, job_args.to_vec(), args.parallelism).await?;
    print_json(&plan_json(&descriptor, &plan, args.parallelism))?;
    Ok(ExitCode::SUCCESS)
}

/// The plan in the shape of Flink's `GET /jobs/{id}/plan` (`plan.nodes[]` with `id`,
/// `parallelism`, `description` and `inputs[]` with `num`, `id`, `ship_strategy`, `exchange`),
/// with Weir's details beside Flink's fields: the slots and tasks the job needs, each vertex's
/// chained operators (uid, kind, keyed state) and whether it starts with a source.
pub fn plan_json(descriptor: &JobDescriptor, plan: &ExecutionPlan, parallelism: u32) -> Value {
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
