//! `weir info PLUGIN [JOB_ARGS]`: the job's execution plan as JSON, built and planned here
//! without a cluster (Flink's `flink info`).

use super::output::print_json;
use anyhow::Context as _;
use std::path::PathBuf;
use std::process::ExitCode;
use weir_api::graph::JobDescriptor;
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
    print_json(&weir_jobmanager::plan::flink_plan(&descriptor, &plan, args.parallelism))?;
    Ok(ExitCode::SUCCESS)
}
