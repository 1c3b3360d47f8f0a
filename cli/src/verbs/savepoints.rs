//! Savepoints: `weir savepoint`, `weir stop`, `weir savepoint check|inspect`, `weir savepoint
//! --dispose`.

use super::output::{ProgressTimer, one_line, print_json, progress, storage_location};
use anyhow::Context as _;
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use weir_cli::client::{JobSummary, RestClient};

/// How often the savepoint's and the job's state are asked for while waiting.
const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

#[derive(clap::Args)]
pub struct StopArgs {
    /// The job's id (as `weir list` shows it).
    pub job: String,
    /// Where the savepoint's directory goes: a storage URL or a path; default the jobmanager's
    /// `--savepoint-dir`.
    #[arg(short = 'p', long, value_name = "DIR")]
    pub savepoint_path: Option<String>,
    /// Emit the maximum watermark before the savepoint, so that every window and event-time
    /// timer fires (for a job that will not be resumed).
    #[arg(short = 'd', long)]
    pub drain: bool,
    /// Print the savepoint's final status as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SavepointArgs {
    #[command(subcommand)]
    pub action: Option<SavepointAction>,
    /// The job's id (as `weir list` shows it).
    #[arg(required_unless_present = "dispose")]
    pub job: Option<String>,
    /// Where the savepoint's directory goes: a storage URL (`s3://bucket/savepoints`) or a path;
    /// default the jobmanager's `--savepoint-dir`.
    pub target_dir: Option<String>,
    /// Return once the savepoint is triggered; prints the request id to poll.
    #[arg(long, conflicts_with = "wait")]
    pub detached: bool,
    /// Wait until the savepoint completed (the default).
    #[arg(long)]
    pub wait: bool,
    /// Print the final status as JSON.
    #[arg(long)]
    pub json: bool,
    /// Delete the savepoint at this path (its directory or its `_metadata`) instead.
    #[arg(short = 'd', long, value_name = "PATH", conflicts_with_all = ["job", "target_dir", "detached"])]
    pub dispose: Option<String>,
}

#[derive(clap::Subcommand)]
pub enum SavepointAction {
    /// Upgrade preflight: whether the job of PLUGIN (as `weir run -p N PLUGIN JOB_ARGS` would
    /// plan it) can start from the savepoint, operator by operator; exit 0 only if it can.
    Check(CheckArgs),
    /// List what a savepoint holds: its vertices, operators with state, subtasks, key groups and
    /// sizes.
    Inspect(InspectArgs),
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Default parallelism, as for `weir run`.
    #[arg(short = 'p', long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub parallelism: u32,
    /// As `weir run -n`: state of operators the job no longer has is dropped.
    #[arg(short = 'n', long)]
    pub allow_non_restored_state: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// The new job plugin, the savepoint (its directory or its `_metadata`; a storage URL or a
    /// path), then the arguments for the job's build function (everything after the savepoint
    /// goes to the job).
    #[arg(required = true, num_args = 2.., trailing_var_arg = true, value_names = ["PLUGIN", "SAVEPOINT", "JOB_ARGS"])]
    pub values: Vec<String>,
}

impl CheckArgs {
    /// The plugin, the savepoint and the job arguments.
    fn parts(&self) -> (PathBuf, &str, Vec<String>) {
        let (positional, job_args) = weir_cli::args::split_values(&self.values, 2);
        (PathBuf::from(&positional[0]), &positional[1], job_args.to_vec())
    }
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// The savepoint (its directory or its `_metadata`; a storage URL or a path).
    pub path: String,
    /// Print its metadata as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `weir savepoint JOB [TARGET_DIR]` and `weir savepoint --dispose PATH`: Flink's `flink
/// savepoint`.
pub async fn savepoint(client: &RestClient, args: SavepointArgs) -> anyhow::Result<ExitCode> {
    let job = match (&args.dispose, &args.job) {
        (Some(path), _) => return dispose(client, path, args.json).await,
        (None, Some(job)) => job.clone(),
        (None, None) => anyhow::bail!("name the job to take a savepoint of, or --dispose PATH"),
    };
    let mut body = serde_json::json!({});
    if let Some(dir) = &args.target_dir {
        body["target-directory"] = Value::String(storage_location(dir)?);
    }
    if !args.json {
        outln!("Triggering savepoint for job {}.", job);
    }
    let answer: Value = client
        .trigger_savepoint(&job, &body)
        .await
        .with_context(|| format!("cannot trigger a savepoint of job {}", job))?;
    let request_id = answer
        .get("request-id")
        .and_then(Value::as_str)
        .context("the jobmanager's answer has no request-id")?
        .to_owned();
    if args.detached {
        if args.json {
            print_json(&answer)?;
        } else {
            outln!("Savepoint triggered in detached mode; request id: {request_id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.json {
        outln!("Waiting for response...");
    }
    let status = await_savepoint(client, &job, &request_id).await?;
    if args.json {
        print_json(&status)?;
    }
    if let Some(location) = status.pointer("/operation/location").and_then(Value::as_str) {
        if !args.json {
            outln!("Savepoint completed. Path: {location}");
            outln!("You can resume your program from this savepoint with the run command.");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let reason = status.pointer("/operation/failure-cause/stack-trace").and_then(Value::as_str).unwrap_or("unknown");
    eprintln!("weir: the savepoint of job {job} failed: {}", one_line(reason));
    Ok(ExitCode::from(1))
}

/// Polls savepoint request `request_id` of `job` until it completed; returns its status. Shows
/// progress on standard error while it takes long.
async fn await_savepoint(client: &RestClient, job: &str, request_id: &str) -> anyhow::Result<Value> {
    let mut timer = ProgressTimer::start();
    loop {
        let status: Value = client
            .savepoint_status(job, request_id)
            .await
            .with_context(|| format!("cannot get the savepoint's status (job {job}, request {request_id})"))?;
        if status.pointer("/status/id").and_then(Value::as_str) == Some("COMPLETED") {
            return Ok(status);
        }
        if let Some(waited) = timer.due() {
            progress(&format!(
                "weir: the savepoint of job {job} is in progress ({} s; request {request_id})",
                waited.as_secs()
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `weir stop JOB [-p DIR] [--drain]`: Flink's `flink stop`.
pub async fn stop(client: &RestClient, args: StopArgs) -> anyhow::Result<ExitCode> {
    let mut body = serde_json::json!({ "drain": args.drain });
    if let Some(dir) = &args.savepoint_path {
        body["targetDirectory"] = Value::String(storage_location(dir)?);
    }
    if !args.json {
        let how = if args.drain { "Draining" } else { "Suspending" };
        outln!("{how} job \"{}\" with a savepoint.", args.job);
    }
    let answer: Value = client.stop(&args.job, &body).await.with_context(|| format!("cannot stop job {}", args.job))?;
    let request_id = answer
        .get("request-id")
        .and_then(Value::as_str)
        .context("the jobmanager's answer has no request-id")?
        .to_owned();
    let status = await_savepoint(client, &args.job, &request_id).await?;
    let Some(location) = status.pointer("/operation/location").and_then(Value::as_str) else {
        let reason =
            status.pointer("/operation/failure-cause/stack-trace").and_then(Value::as_str).unwrap_or("unknown");
        eprintln!("weir: could not stop job {} with a savepoint: {}; the job goes on", args.job, one_line(reason));
        return Ok(ExitCode::from(1));
    };
    // The sources end once the savepoint completed: wait for the job to finish.
    let mut timer = ProgressTimer::start();
    let end = loop {
        let summary: JobSummary =
            client.job(&args.job).await.with_context(|| format!("cannot follow job {}", args.job))?;
        if summary.is_terminal() {
            break summary.state;
        }
        if let Some(waited) = timer.due() {
            progress(&format!(
                "weir: savepoint {location} completed; waiting for job {} to finish ({} s, {})",
                args.job,
                waited.as_secs(),
                summary.state
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    if args.json {
        print_json(&status)?;
    } else {
        outln!("Savepoint completed. Path: {location}");
    }
    if end != "FINISHED" {
        eprintln!("weir: job {} ended {end} after its savepoint {location}", args.job);
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Storage options for reading savepoints directly (object_store's `AWS_*` variables apply).
fn storage_options() -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::new()
}

/// Builds and plans the job of `plugin` and tries its declared state types on the savepoint's
/// `sample` (see [`weir_jobmanager::state_evolution`]): the descriptor, the plan, and the first
/// state that does not read (`(uid, reason)`).
async fn plan_and_try_state(
    plugin: std::path::PathBuf,
    job_args: Vec<String>,
    parallelism: u32,
    sample: weir_jobmanager::state_evolution::StateSample,
    metadata: weir_runtime::savepoint::SavepointMetadata,
) -> anyhow::Result<(weir_api::graph::JobDescriptor, weir_jobmanager::plan::ExecutionPlan, Option<(String, String)>)> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let loaded = weir_runtime::plugin::LoadedJob::load(&weir_runtime::JobArtifact::Plugin(plugin))?;
        let graph = loaded.build(&job_args)?;
        let descriptor = graph.descriptor.clone();
        let plan = weir_jobmanager::plan::plan(&descriptor, parallelism).map_err(|e| anyhow::anyhow!("{e}"))?;
        let nodes = descriptor.nodes.iter().map(|n| (n.uid.clone(), n.id)).collect();
        let check = |node, name: &str, value: &[u8]| {
            loaded.check_state_value(&graph, node, name, value).map_err(|e| e.to_string())
        };
        let incompatible =
            weir_jobmanager::state_evolution::incompatible_state(&sample, &metadata, &plan, &nodes, check);
        Ok((descriptor, plan, incompatible))
    })
    .await
    .map_err(|e| anyhow::anyhow!("the job's build function did not complete: {e}"))?
}

/// `weir savepoint check [-p N] [-n] PLUGIN PATH [JOB_ARGS]`.
pub async fn savepoint_check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    use weir_jobmanager::savepoint_restore::{OperatorVerdict, check, read};
    let (plugin, savepoint, job_args) = args.parts();
    let path = storage_location(savepoint)?;
    let (dir, metadata, source) = read(&path, &storage_options()).await.map_err(anyhow::Error::msg)?;
    let sample = weir_jobmanager::state_evolution::sample_state(&dir, &metadata, source, &storage_options())
        .await
        .map_err(anyhow::Error::msg)?;
    let (descriptor, plan, incompatible) =
        plan_and_try_state(plugin, job_args, args.parallelism, sample, metadata.clone()).await?;
    let stateful: std::collections::BTreeSet<String> = descriptor
        .nodes
        .iter()
        .filter(|n| {
            matches!(
                n.kind,
                weir_api::graph::NodeKind::Source(_)
                    | weir_api::graph::NodeKind::Sink(_)
                    | weir_api::graph::NodeKind::Operator { keyed: true, .. }
            )
        })
        .map(|n| n.uid.clone())
        .collect();
    let name = &descriptor.name;
    let mut result = check(&dir, &metadata, source, &plan, &stateful, args.allow_non_restored_state);
    // State whose stored values the job's types do not read: a mismatch, as when submitted.
    if let Some((uid, reason)) = incompatible {
        if let Some(operator) = result.operators.iter_mut().find(|o| o.uid == uid) {
            operator.verdict = OperatorVerdict::Mismatch { reason: reason.clone() };
        }
        result.error.get_or_insert_with(|| {
            format!("the savepoint's state does not restore into the job: operator '{uid}': {reason}")
        });
    }
    if args.json {
        let mut value = serde_json::to_value(&result)?;
        value["compatible"] = Value::Bool(result.error.is_none());
        print_json(&value)?;
    } else {
        outln!(
            "Savepoint {dir} (job '{}' {}, checkpoint {}, max parallelism {}) against '{name}' at -p {}:",
            metadata.job_name,
            metadata.job_id,
            metadata.checkpoint_id,
            metadata.max_parallelism,
            args.parallelism
        );
        let width = result.operators.iter().map(|o| o.uid.len()).max().unwrap_or(0);
        for operator in &result.operators {
            let what = match &operator.verdict {
                OperatorVerdict::Restores { from_parallelism, to_parallelism }
                    if from_parallelism == to_parallelism =>
                {
                    format!("restores (parallelism {to_parallelism})")
                }
                OperatorVerdict::Restores { from_parallelism, to_parallelism } => {
                    format!("restores (parallelism {from_parallelism} -> {to_parallelism}, key groups reassigned)")
                }
                OperatorVerdict::Dropped if args.allow_non_restored_state => {
                    "dropped: no such operator in the job (-n)".to_owned()
                }
                OperatorVerdict::Dropped => "dropped: no such operator in the job (needs -n)".to_owned(),
                OperatorVerdict::New => "new: starts without state".to_owned(),
                OperatorVerdict::Mismatch { reason } => format!("mismatch: {reason}"),
            };
            outln!("  {:width$}  {what}", operator.uid);
        }
    }
    match result.error {
        None => {
            if !args.json {
                outln!("Compatible: `weir run -s {path}` with these arguments restores this savepoint.");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(error) => {
            eprintln!("weir: not compatible: {error}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `weir savepoint inspect PATH`.
pub async fn savepoint_inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let path = storage_location(&args.path)?;
    let (dir, metadata, source) =
        weir_jobmanager::savepoint_restore::read(&path, &storage_options()).await.map_err(anyhow::Error::msg)?;
    if args.json {
        print_json(&metadata)?;
        return Ok(ExitCode::SUCCESS);
    }
    match source {
        weir_jobmanager::savepoint_restore::RestoreSource::Savepoint => outln!("Savepoint {dir}"),
        weir_jobmanager::savepoint_restore::RestoreSource::Checkpoint { .. } => outln!("Retained checkpoint {dir}"),
    }
    outln!(
        "  job '{}' {}, checkpoint {}, taken {} ms after the epoch, {} backend, max parallelism {}, {} bytes",
        metadata.job_name,
        metadata.job_id,
        metadata.checkpoint_id,
        metadata.trigger_ms,
        metadata.backend,
        metadata.max_parallelism,
        metadata.state_size_bytes()
    );
    for vertex in &metadata.vertices {
        let size: u64 = vertex.subtasks.iter().flat_map(|s| &s.files).map(|f| f.size_bytes).sum();
        outln!(
            "  vertex '{}' (uids {}), parallelism {}, {size} bytes",
            vertex.name,
            vertex.uids.join(", "),
            vertex.parallelism
        );
        for (uid, states) in &vertex.states {
            for state in states {
                outln!(
                    "    {uid}: {} state '{}' of {} keyed by {}",
                    state.kind,
                    state.name,
                    state.value_type,
                    state.key_type
                );
            }
        }
        for subtask in &vertex.subtasks {
            let groups = subtask.key_groups.map_or_else(String::new, |(a, b)| format!(" key groups {a}..={b},"));
            let files: Vec<String> =
                subtask.files.iter().map(|f| format!("{} ({} bytes)", f.path, f.size_bytes)).collect();
            let state = if subtask.operators.is_empty() { "no state".to_owned() } else { subtask.operators.join(", ") };
            outln!("    subtask {}:{groups} state of {state}; {}", subtask.subtask, files.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `weir savepoint --dispose PATH`.
async fn dispose(client: &RestClient, path: &str, json: bool) -> anyhow::Result<ExitCode> {
    let path = storage_location(path)?;
    if !json {
        outln!("Disposing savepoint '{path}'.");
        outln!("Waiting for response...");
    }
    let answer: Value =
        client.dispose_savepoint(&path).await.with_context(|| format!("cannot dispose of the savepoint {path}"))?;
    let request_id = answer
        .get("request-id")
        .and_then(Value::as_str)
        .context("the jobmanager's answer has no request-id")?
        .to_owned();
    let mut timer = ProgressTimer::start();
    let status: Value = loop {
        let status: Value = client
            .disposal_status(&request_id)
            .await
            .with_context(|| format!("cannot get the status of the disposal of {path}"))?;
        if status.pointer("/status/id").and_then(Value::as_str) == Some("COMPLETED") {
            break status;
        }
        if let Some(waited) = timer.due() {
            progress(&format!("weir: disposing of the savepoint {path} ({} s)", waited.as_secs()));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    if json {
        print_json(&status)?;
    }
    match status.pointer("/operation/failure-cause/stack-trace").and_then(Value::as_str) {
        None => {
            if !json {
                outln!("Savepoint '{path}' disposed.");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(reason) => {
            eprintln!("weir: disposing the savepoint {path} failed: {}", one_line(reason));
            Ok(ExitCode::from(1))
        }
    }
}
