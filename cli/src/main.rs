//! `weir`: run jobs on a local mini-cluster, or drive a cluster through its jobmanager's REST API.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};
use weir_cli::MiniCluster;
use weir_cli::client::{ClientError, DEFAULT_JOBMANAGER, JobList, JobSummary, RestClient, Submitted, TaskManagerList};
use weir_jobmanager::{JobStatus, JobSubmission};
use weir_runtime::JobArtifact;

/// How often `weir run` asks for the job's state while it waits.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Prints a line on standard output; a closed pipe (`weir list | head -1`) ends the program
/// quietly, as Unix tools do, instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("weir: cannot write to standard output: {e}");
            std::process::exit(2);
        }
    }};
}

#[derive(Parser)]
#[command(name = "weir", version, about = "Weir: a distributed dataflow engine for Rust jobs")]
struct Cli {
    /// The jobmanager's REST address.
    #[arg(long, global = true, env = "WEIR_JOBMANAGER", default_value = DEFAULT_JOBMANAGER, value_name = "URL")]
    jobmanager: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run jobs in this process, without a cluster.
    Local {
        #[command(subcommand)]
        command: LocalCommand,
    },
    /// Submit a job plugin to the cluster and, unless --detached, wait for the job to end
    /// (Ctrl-C cancels it).
    Run(ClusterRunArgs),
    /// List the cluster's jobs, newest first.
    List(JsonArg),
    /// Show a job's state, vertices and subtasks.
    Status(JobArg),
    /// Cancel a running job.
    Cancel(JobArg),
    /// List the cluster's taskmanagers.
    Taskmanagers(JsonArg),
    /// Show a job's checkpoints: counts, latest, history.
    Checkpoints(JobArg),
    /// Take a savepoint of a running job and wait for it; prints its path.
    Savepoint(SavepointArgs),
    /// Stop a running job with a savepoint: its sources end after it and the job finishes.
    Stop(StopArgs),
}

#[derive(clap::Args)]
struct StopArgs {
    /// The job's id (as `weir list` shows it).
    job: String,
    /// Where the savepoint's directory goes: a storage URL or a path; default the jobmanager's
    /// `--savepoint-dir`.
    #[arg(short = 'p', long, value_name = "DIR")]
    savepoint_path: Option<String>,
    /// Emit the maximum watermark before the savepoint, so that every window and event-time
    /// timer fires (for a job that will not be resumed).
    #[arg(short = 'd', long)]
    drain: bool,
    /// Print the savepoint's final status as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct SavepointArgs {
    #[command(subcommand)]
    action: Option<SavepointAction>,
    /// The job's id (as `weir list` shows it).
    #[arg(required_unless_present = "dispose")]
    job: Option<String>,
    /// Where the savepoint's directory goes: a storage URL (`s3://bucket/savepoints`) or a path;
    /// default the jobmanager's `--savepoint-dir`.
    target_dir: Option<String>,
    /// Return once the savepoint is triggered; prints the request id to poll.
    #[arg(long, conflicts_with = "wait")]
    detached: bool,
    /// Wait until the savepoint completed (the default).
    #[arg(long)]
    wait: bool,
    /// Print the final status as JSON.
    #[arg(long)]
    json: bool,
    /// Delete the savepoint at this path (its directory or its `_metadata`) instead.
    #[arg(short = 'd', long, value_name = "PATH", conflicts_with_all = ["job", "target_dir", "detached"])]
    dispose: Option<String>,
}

#[derive(Subcommand)]
enum SavepointAction {
    /// Upgrade preflight: whether the job of PLUGIN (as `weir run -p N ... -- JOB_ARGS` would
    /// plan it) can start from the savepoint, operator by operator; exit 0 only if it can.
    Check(CheckArgs),
    /// List what a savepoint holds: its vertices, operators with state, subtasks, key groups and
    /// sizes.
    Inspect(InspectArgs),
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The new job plugin.
    plugin: PathBuf,
    /// The savepoint (its directory or its `_metadata`; a storage URL or a path).
    path: String,
    /// Default parallelism, as for `weir run`.
    #[arg(short = 'p', long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    parallelism: u32,
    /// As `weir run -n`: state of operators the job no longer has is dropped.
    #[arg(short = 'n', long)]
    allow_non_restored_state: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Arguments for the job's build function.
    #[arg(last = true)]
    job_args: Vec<String>,
}

#[derive(clap::Args)]
struct InspectArgs {
    /// The savepoint (its directory or its `_metadata`; a storage URL or a path).
    path: String,
    /// Print its metadata as JSON.
    #[arg(long)]
    json: bool,
}

/// Checkpointing of a job (off unless an interval is given) and its state backend.
#[derive(clap::Args, Clone)]
struct CheckpointArgs {
    /// Take a checkpoint this often, for example `500ms` or `10s`.
    #[arg(long, value_name = "DURATION")]
    checkpoint_interval: Option<String>,
    /// Keyed state backend: `heap` (in memory, full snapshots) or `rocksdb` (on disk,
    /// incremental snapshots); with or without checkpoints.
    #[arg(long, value_name = "BACKEND")]
    state_backend: Option<String>,
    /// Where this job's checkpoints go (`file:///path`, `s3://bucket/prefix`); default the
    /// jobmanager's storage.
    #[arg(long, value_name = "URL")]
    checkpoint_dir: Option<String>,
    /// Completed checkpoints to keep (default 1).
    #[arg(long, value_name = "N")]
    checkpoints_retained: Option<String>,
    /// A checkpoint not complete this long after its trigger fails (default 10m).
    #[arg(long, value_name = "DURATION")]
    checkpoint_timeout: Option<String>,
    /// Minimum pause between the end of a checkpoint and the next (default 0).
    #[arg(long, value_name = "DURATION")]
    checkpoint_min_pause: Option<String>,
    /// Checkpoints in progress at once (default 1).
    #[arg(long, value_name = "N")]
    checkpoint_max_concurrent: Option<String>,
    /// Consecutive checkpoint failures tolerated before the job fails (default 0).
    #[arg(long, value_name = "N")]
    checkpoint_tolerable_failures: Option<String>,
}

impl CheckpointArgs {
    fn options(&self) -> weir_jobmanager::checkpoint::CheckpointOptions {
        weir_jobmanager::checkpoint::CheckpointOptions {
            interval: self.checkpoint_interval.clone(),
            backend: self.state_backend.clone(),
            storage_url: self.checkpoint_dir.clone(),
            retained: self.checkpoints_retained.clone(),
            timeout: self.checkpoint_timeout.clone(),
            min_pause: self.checkpoint_min_pause.clone(),
            max_concurrent: self.checkpoint_max_concurrent.clone(),
            tolerable_failures: self.checkpoint_tolerable_failures.clone(),
        }
    }

    /// The REST form fields.
    fn form_fields(&self) -> Vec<(&'static str, String)> {
        [
            ("checkpoint_interval", &self.checkpoint_interval),
            ("state_backend", &self.state_backend),
            ("checkpoint_dir", &self.checkpoint_dir),
            ("checkpoints_retained", &self.checkpoints_retained),
            ("checkpoint_timeout", &self.checkpoint_timeout),
            ("checkpoint_min_pause", &self.checkpoint_min_pause),
            ("checkpoint_max_concurrent", &self.checkpoint_max_concurrent),
            ("checkpoint_tolerable_failures", &self.checkpoint_tolerable_failures),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.clone().map(|v| (name, v)))
        .collect()
    }
}

/// Starting a job from a savepoint (Flink's `-s` and `-n`).
#[derive(clap::Args, Clone)]
struct RestoreArgs {
    /// Start from this savepoint (its directory or its `_metadata`; a storage URL or a path).
    #[arg(short = 's', long = "from-savepoint", value_name = "PATH")]
    from_savepoint: Option<String>,
    /// Start even if the savepoint holds state of operators the job no longer has (dropped).
    #[arg(short = 'n', long, requires = "from_savepoint")]
    allow_non_restored_state: bool,
}

impl RestoreArgs {
    fn settings(&self) -> anyhow::Result<Option<weir_jobmanager::SavepointRestoreSettings>> {
        self.from_savepoint
            .as_deref()
            .map(|path| {
                Ok(weir_jobmanager::SavepointRestoreSettings {
                    path: storage_location(path)?,
                    allow_non_restored_state: self.allow_non_restored_state,
                })
            })
            .transpose()
    }

    /// The REST form fields (Flink's names).
    fn form_fields(&self) -> anyhow::Result<Vec<(&'static str, String)>> {
        let mut fields = Vec::new();
        if let Some(settings) = self.settings()? {
            fields.push(("savepointPath", settings.path));
            fields.push(("allowNonRestoredState", settings.allow_non_restored_state.to_string()));
        }
        Ok(fields)
    }
}

#[derive(Subcommand)]
enum LocalCommand {
    /// Run a job plugin on a local mini-cluster until its sources end (Ctrl-C stops it).
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The job plugin: a shared library built from a crate that calls `weir_api::export_job!`.
    plugin: PathBuf,
    /// Default parallelism of the job's operators.
    #[arg(short = 'p', long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    parallelism: u32,
    /// Print the final job details as JSON on standard output.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    checkpoints: CheckpointArgs,
    #[command(flatten)]
    savepoint: RestoreArgs,
    /// Restart a failed job up to this many times (fixed delay of 1 s). Default as Flink: a job
    /// with checkpoints restarts without limit (exponential delay, 1 s up to 1 min), one without
    /// does not restart.
    #[arg(long, value_name = "N")]
    restart_attempts: Option<u32>,
    /// Arguments for the job's build function.
    #[arg(last = true)]
    job_args: Vec<String>,
}

#[derive(clap::Args)]
struct ClusterRunArgs {
    /// The job plugin: a shared library built from a crate that calls `weir_api::export_job!`.
    plugin: PathBuf,
    /// Default parallelism of the job's operators.
    #[arg(short = 'p', long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    parallelism: u32,
    /// Return once the job is submitted instead of waiting for its end.
    #[arg(long)]
    detached: bool,
    /// Print the server's JSON on standard output (the final job details, or with --detached
    /// the submission's answer).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    checkpoints: CheckpointArgs,
    #[command(flatten)]
    savepoint: RestoreArgs,
    /// Arguments for the job's build function.
    #[arg(last = true)]
    job_args: Vec<String>,
}

#[derive(clap::Args)]
struct JsonArg {
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct JobArg {
    /// The job's id (as `weir list` shows it).
    job: String,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weir: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Local { command: LocalCommand::Run(args) } => local_run(args).await,
            Command::Run(args) => cluster_run(&RestClient::new(&cli.jobmanager)?, args).await,
            Command::List(args) => list(&RestClient::new(&cli.jobmanager)?, args.json).await,
            Command::Status(args) => status(&RestClient::new(&cli.jobmanager)?, args).await,
            Command::Cancel(args) => cancel(&RestClient::new(&cli.jobmanager)?, args).await,
            Command::Taskmanagers(args) => taskmanagers(&RestClient::new(&cli.jobmanager)?, args.json).await,
            Command::Checkpoints(args) => checkpoints(&RestClient::new(&cli.jobmanager)?, args).await,
            Command::Savepoint(SavepointArgs { action: Some(SavepointAction::Check(args)), .. }) => {
                savepoint_check(args).await
            }
            Command::Savepoint(SavepointArgs { action: Some(SavepointAction::Inspect(args)), .. }) => {
                savepoint_inspect(args).await
            }
            Command::Savepoint(args) => savepoint(&RestClient::new(&cli.jobmanager)?, args).await,
            Command::Stop(args) => stop(&RestClient::new(&cli.jobmanager)?, args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weir: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: container logs and files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

fn one_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn local_run(args: RunArgs) -> anyhow::Result<ExitCode> {
    // Fault injection for tests and soaks (feature `failpoints`, `FAILPOINTS` variable).
    let _faults = weir_runtime::faults::setup();
    let resolved = args.checkpoints.options().resolve().map_err(anyhow::Error::msg)?;
    let cluster = MiniCluster::start_with_restarts(args.restart_attempts);
    let submission = JobSubmission {
        artifact: JobArtifact::Plugin(args.plugin.clone()),
        args: args.job_args,
        parallelism: args.parallelism,
        checkpointing: resolved.checkpointing,
        state_backend: resolved.state_backend,
        savepoint: args.savepoint.settings()?,
    };
    let id = cluster.submit(submission).await.with_context(|| format!("cannot run {}", args.plugin.display()))?;
    let jobmanager = cluster.jobmanager().clone();
    for warning in jobmanager.job(id).map(|d| d.warnings).unwrap_or_default() {
        eprintln!("weir: warning: {warning}");
    }
    let details = tokio::select! {
        details = jobmanager.wait_for_termination(id) => details?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("weir: cancelling job {id} (Ctrl-C)");
            jobmanager.cancel(id).await?;
            jobmanager.wait_for_termination(id).await?
        }
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&details)?);
    } else {
        print_summary(&serde_json::from_value(serde_json::to_value(&details)?)?);
    }
    Ok(match details.state {
        JobStatus::Finished | JobStatus::Canceled => ExitCode::SUCCESS,
        _ => {
            eprintln!(
                "weir: job {} {}: {}",
                details.jid,
                details.state,
                details.failure.as_deref().unwrap_or("no reason given")
            );
            ExitCode::from(1)
        }
    })
}

/// `weir run`: upload, submit, and (unless detached) wait for the end.
async fn cluster_run(client: &RestClient, args: ClusterRunArgs) -> anyhow::Result<ExitCode> {
    let shown = args.plugin.display().to_string();
    let plugin = std::fs::read(&args.plugin).with_context(|| format!("cannot read the job plugin {shown}"))?;
    let file_name = args.plugin.file_name().map_or_else(|| "job.so".to_owned(), |n| n.to_string_lossy().into_owned());
    args.checkpoints.options().resolve().map_err(anyhow::Error::msg)?;
    let mut form_fields = args.checkpoints.form_fields();
    form_fields.extend(args.savepoint.form_fields()?);
    let answer: Value = client
        .submit(plugin, &file_name, &args.job_args, args.parallelism, &form_fields)
        .await
        .with_context(|| format!("cannot submit {shown}"))?;
    let submitted: Submitted = serde_json::from_value(answer.clone())
        .with_context(|| format!("unexpected answer from {} to the submission: {answer}", client.base()))?;
    let id = submitted.jobid;
    for warning in &submitted.warnings {
        eprintln!("weir: warning: {warning}");
    }
    if args.detached {
        if args.json {
            outln!("{}", serde_json::to_string_pretty(&answer)?);
        } else {
            outln!("Job submitted: {id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.json {
        // Standard output carries only the final JSON.
        eprintln!("Job submitted: {id}");
    } else {
        outln!("Job submitted: {id}");
    }

    let (details, summary) = wait_for_end(client, &id).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&details)?);
    } else {
        print_summary(&summary);
    }
    Ok(match summary.state.as_str() {
        "FINISHED" => ExitCode::SUCCESS,
        state => {
            let reason = summary.failure.as_deref().unwrap_or(if state == "CANCELED" {
                "cancelled on request"
            } else {
                "no reason given"
            });
            eprintln!("weir: job {id} {state}: {reason}");
            ExitCode::from(1)
        }
    })
}

/// Polls the job until it ended; the first Ctrl-C cancels it (then waits on), a second one
/// stops waiting.
async fn wait_for_end(client: &RestClient, id: &str) -> anyhow::Result<(Value, JobSummary)> {
    let mut interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot listen for Ctrl-C")?;
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    let mut cancelling = false;
    loop {
        tokio::select! {
            _ = poll.tick() => {
                let details: Value = client.job(id).await.with_context(|| format!("cannot follow job {id}"))?;
                let summary: JobSummary = serde_json::from_value(details.clone())
                    .with_context(|| format!("unexpected details of job {id} from {}", client.base()))?;
                if summary.is_terminal() {
                    return Ok((details, summary));
                }
            }
            _ = interrupts.recv() => {
                if cancelling {
                    anyhow::bail!("stopped waiting for job {id}, which is being cancelled");
                }
                cancelling = true;
                eprintln!("weir: cancelling job {id} (Ctrl-C; press again to stop waiting)");
                match client.cancel::<Value>(id).await {
                    // 409: it ended meanwhile; the next poll sees how.
                    Ok(_) | Err(ClientError::Api { status: 409, .. }) => {}
                    Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot cancel job {id}"))),
                }
            }
        }
    }
}

/// `weir list`.
async fn list(client: &RestClient, json: bool) -> anyhow::Result<ExitCode> {
    let answer: Value = client.jobs().await.context("cannot list jobs")?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list: JobList = serde_json::from_value(answer).context("unexpected job list")?;
    if list.jobs.is_empty() {
        outln!("No jobs.");
        return Ok(ExitCode::SUCCESS);
    }
    let rows = list
        .jobs
        .iter()
        .map(|job| {
            vec![
                job.id.clone(),
                job.name.clone(),
                job.status.clone(),
                format_start(job.start_time),
                format_duration(job.duration_ms),
            ]
        })
        .collect();
    print_table(&["ID", "NAME", "STATUS", "STARTED", "DURATION"], rows);
    Ok(ExitCode::SUCCESS)
}

/// `weir status JOB`.
async fn status(client: &RestClient, args: JobArg) -> anyhow::Result<ExitCode> {
    let answer: Value = client.job(&args.job).await.with_context(|| format!("cannot get job {}", args.job))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    let job: JobSummary = serde_json::from_value(answer).context("unexpected job details")?;
    outln!("Job '{}' ({}) {}", job.name, job.jid, job.state);
    outln!("  started {}, running for {}", format_start(job.start_time), format_duration(job.duration_ms));
    outln!("  {} records from sources", job.source_records);
    if job.restarts > 0 {
        outln!("  restarted {} time(s)", job.restarts);
    }
    if let Some(failure) = &job.failure {
        outln!("  failure: {failure}");
    }
    for sink in &job.sinks {
        outln!("  output {sink}");
    }
    for warning in &job.warnings {
        outln!("  warning: {warning}");
    }
    let mut rows = Vec::new();
    for vertex in &job.vertices {
        rows.push(vec![
            vertex.name.clone(),
            vertex.parallelism.to_string(),
            String::new(),
            String::new(),
            vertex.records_in.to_string(),
            vertex.records_out.to_string(),
        ]);
        for subtask in &vertex.subtasks {
            rows.push(vec![
                format!("  subtask {}", subtask.subtask),
                String::new(),
                subtask.state.clone(),
                subtask.taskmanager.clone(),
                subtask.records_in.to_string(),
                subtask.records_out.to_string(),
            ]);
        }
    }
    if !rows.is_empty() {
        outln!();
        print_table(&["VERTEX", "PARALLELISM", "STATE", "TASKMANAGER", "RECORDS IN", "RECORDS OUT"], rows);
    }
    Ok(ExitCode::SUCCESS)
}

/// `weir cancel JOB`.
async fn cancel(client: &RestClient, args: JobArg) -> anyhow::Result<ExitCode> {
    let answer: Value = client.cancel(&args.job).await.with_context(|| format!("cannot cancel job {}", args.job))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        outln!("Cancellation of job {} requested.", args.job);
    }
    Ok(ExitCode::SUCCESS)
}

/// A path given for a storage location made absolute (the jobmanager does not share our working
/// directory); URLs unchanged.
fn storage_location(location: &str) -> anyhow::Result<String> {
    if location.contains("://") {
        return Ok(location.to_owned());
    }
    let path = std::path::absolute(location).with_context(|| format!("cannot resolve the path {location}"))?;
    Ok(format!("file://{}", path.display()))
}

/// `weir savepoint JOB [TARGET_DIR]` and `weir savepoint --dispose PATH`: Flink's `flink
/// savepoint`.
async fn savepoint(client: &RestClient, args: SavepointArgs) -> anyhow::Result<ExitCode> {
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
            outln!("{}", serde_json::to_string_pretty(&answer)?);
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
        outln!("{}", serde_json::to_string_pretty(&status)?);
    }
    if let Some(location) = status.pointer("/operation/location").and_then(Value::as_str) {
        if !args.json {
            outln!("Savepoint completed. Path: {location}");
            outln!("You can resume your program from this savepoint with the run command.");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let reason = status.pointer("/operation/failure-cause/stack-trace").and_then(Value::as_str).unwrap_or("unknown");
    eprintln!("weir: the savepoint of job {} failed: {}", job, reason.split_whitespace().collect::<Vec<_>>().join(" "));
    Ok(ExitCode::from(1))
}

/// Polls savepoint request `request_id` of `job` until it completed; returns its status.
async fn await_savepoint(client: &RestClient, job: &str, request_id: &str) -> anyhow::Result<Value> {
    loop {
        let status: Value = client
            .savepoint_status(job, request_id)
            .await
            .with_context(|| format!("cannot get the savepoint's status (job {job}, request {request_id})"))?;
        if status.pointer("/status/id").and_then(Value::as_str) == Some("COMPLETED") {
            return Ok(status);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `weir stop JOB [-p DIR] [--drain]`: Flink's `flink stop`.
async fn stop(client: &RestClient, args: StopArgs) -> anyhow::Result<ExitCode> {
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
        let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
        eprintln!("weir: could not stop job {} with a savepoint: {reason}; the job goes on", args.job);
        return Ok(ExitCode::from(1));
    };
    // The sources end once the savepoint completed: wait for the job to finish.
    let end = loop {
        let summary: JobSummary =
            client.job(&args.job).await.with_context(|| format!("cannot follow job {}", args.job))?;
        if summary.is_terminal() {
            break summary.state;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&status)?);
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

/// `weir savepoint check PLUGIN PATH [-p N] [-n] [-- JOB_ARGS]`.
async fn savepoint_check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    use weir_jobmanager::savepoint_restore::{OperatorVerdict, check, read};
    let path = storage_location(&args.path)?;
    let (dir, metadata, source) = read(&path, &storage_options()).await.map_err(anyhow::Error::msg)?;
    let plugin = args.plugin.clone();
    let job_args = args.job_args.clone();
    let parallelism = args.parallelism;
    let (plan, stateful, name) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let loaded = weir_runtime::plugin::LoadedJob::load(&JobArtifact::Plugin(plugin.clone()))?;
        let graph = loaded.build(&job_args)?;
        let plan = weir_jobmanager::plan::plan(&graph.descriptor, parallelism).map_err(|e| anyhow::anyhow!("{e}"))?;
        let stateful: std::collections::BTreeSet<String> = graph
            .descriptor
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
        Ok((plan, stateful, graph.descriptor.name.clone()))
    })
    .await
    .context("the job's build function did not complete")??;
    let result = check(&dir, &metadata, source, &plan, &stateful, args.allow_non_restored_state);
    if args.json {
        let mut value = serde_json::to_value(&result)?;
        value["compatible"] = Value::Bool(result.error.is_none());
        outln!("{}", serde_json::to_string_pretty(&value)?);
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
async fn savepoint_inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let path = storage_location(&args.path)?;
    let (dir, metadata, source) =
        weir_jobmanager::savepoint_restore::read(&path, &storage_options()).await.map_err(anyhow::Error::msg)?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&metadata)?);
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
    let status: Value = loop {
        let status: Value = client
            .disposal_status(&request_id)
            .await
            .with_context(|| format!("cannot get the status of the disposal of {path}"))?;
        if status.pointer("/status/id").and_then(Value::as_str) == Some("COMPLETED") {
            break status;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&status)?);
    }
    match status.pointer("/operation/failure-cause/stack-trace").and_then(Value::as_str) {
        None => {
            if !json {
                outln!("Savepoint '{path}' disposed.");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(reason) => {
            eprintln!(
                "weir: disposing the savepoint {path} failed: {}",
                reason.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// `weir checkpoints JOB`.
async fn checkpoints(client: &RestClient, args: JobArg) -> anyhow::Result<ExitCode> {
    let answer: Value = client
        .checkpoints(&args.job)
        .await
        .with_context(|| format!("cannot get the checkpoints of job {}", args.job))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    let report: CheckpointsSummary = serde_json::from_value(answer).context("unexpected checkpoint report")?;
    let c = &report.counts;
    outln!(
        "Checkpoints of job {} every {} ms ({} backend) in {}",
        args.job,
        report.interval_ms,
        report.state_backend,
        report.checkpoint_storage
    );
    let config = &report.config;
    outln!(
        "  timeout {} ms, minimum pause {} ms, at most {} at once, {} failures tolerated, {} retained",
        config.timeout_ms,
        config.min_pause_ms,
        config.max_concurrent,
        config.tolerable_failures,
        config.retained
    );
    outln!(
        "  triggered {}, in progress {}, completed {}, failed {}, restored from {}",
        c.triggered,
        c.in_progress,
        c.completed,
        c.failed,
        c.restored.map_or_else(|| "-".to_owned(), |r| r.to_string())
    );
    if let Some(latest) = &report.latest.completed {
        outln!(
            "  latest completed: {} ({} bytes, {} incremental, {} ms) at {}",
            latest.id,
            latest.state_size,
            latest.incremental_size,
            latest.end_to_end_duration,
            latest.external_path
        );
    }
    let rows: Vec<Vec<String>> = report
        .history
        .iter()
        .map(|h| {
            vec![
                h.checkpoint_id.to_string(),
                h.status.clone(),
                format_start(u64::try_from(h.trigger_ms).unwrap_or(0)),
                format!("{} ms", h.duration_ms),
                h.state_size_bytes.to_string(),
                h.failure.clone().unwrap_or_default(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        outln!();
        print_table(&["ID", "STATUS", "TRIGGERED", "DURATION", "STATE SIZE", "FAILURE"], rows);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(serde::Deserialize)]
struct CheckpointsSummary {
    counts: CheckpointCountsSummary,
    interval_ms: i64,
    state_backend: String,
    checkpoint_storage: String,
    config: weir_jobmanager::checkpoint::CheckpointConfig,
    latest: LatestSummary,
    history: Vec<HistorySummary>,
}

#[derive(serde::Deserialize)]
struct CheckpointCountsSummary {
    triggered: u64,
    in_progress: u64,
    completed: u64,
    failed: u64,
    restored: Option<u64>,
}

#[derive(serde::Deserialize)]
struct LatestSummary {
    completed: Option<CompletedSummary>,
}

#[derive(serde::Deserialize)]
struct CompletedSummary {
    id: u64,
    state_size: u64,
    incremental_size: u64,
    end_to_end_duration: i64,
    external_path: String,
}

#[derive(serde::Deserialize)]
struct HistorySummary {
    checkpoint_id: u64,
    status: String,
    trigger_ms: i64,
    duration_ms: i64,
    state_size_bytes: u64,
    failure: Option<String>,
}

/// `weir taskmanagers`.
async fn taskmanagers(client: &RestClient, json: bool) -> anyhow::Result<ExitCode> {
    let answer: Value = client.taskmanagers().await.context("cannot list taskmanagers")?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list: TaskManagerList = serde_json::from_value(answer).context("unexpected taskmanager list")?;
    if list.taskmanagers.is_empty() {
        outln!("No taskmanagers registered.");
        return Ok(ExitCode::SUCCESS);
    }
    let rows = list
        .taskmanagers
        .iter()
        .map(|tm| {
            vec![
                tm.id.clone(),
                tm.slots.to_string(),
                tm.free_slots.to_string(),
                if tm.data_address.is_empty() { "-".to_owned() } else { tm.data_address.clone() },
                format!("{:.1} s ago", tm.seconds_since_heartbeat),
            ]
        })
        .collect();
    print_table(&["ID", "SLOTS", "FREE", "DATA ADDRESS", "LAST HEARTBEAT"], rows);
    Ok(ExitCode::SUCCESS)
}

fn print_summary(details: &JobSummary) {
    let seconds = details.duration_ms as f64 / 1000.0;
    let rate = if seconds > 0.0 { details.source_records as f64 / seconds } else { 0.0 };
    outln!("Job '{}' ({}) {} in {seconds:.3} s", details.name, details.jid, details.state);
    outln!("  {} records from sources, {rate:.0} records/s", details.source_records);
    for sink in &details.sinks {
        outln!("  output {sink}");
    }
}

/// Left-aligned columns, two spaces apart.
fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        outln!("{}", text.trim_end());
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// An epoch-milliseconds time as RFC 3339 (UTC), or `-` if unknown.
fn format_start(epoch_ms: u64) -> String {
    if epoch_ms == 0 {
        return "-".to_owned();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(epoch_ms)).to_string()
}

/// A duration for people: `0.250 s`, `12.3 s`, `4m 05s`, `2h 03m 04s`.
fn format_duration(ms: u64) -> String {
    let seconds = ms / 1000;
    match seconds {
        0 => format!("{:.3} s", ms as f64 / 1000.0),
        1..60 => format!("{:.1} s", ms as f64 / 1000.0),
        60..3600 => format!("{}m {:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h {:02}m {:02}s", seconds / 3600, seconds / 60 % 60, seconds % 60),
    }
}
