//! Running jobs: `weir run` submits to a cluster and follows the job, `weir local run` runs it on
//! a mini-cluster in this process.

use super::output::{ProgressTimer, one_line, print_json, print_summary, progress, storage_location};
use anyhow::Context as _;
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::signal::unix::{Signal, SignalKind, signal};
use weir_cli::MiniCluster;
use weir_cli::client::{ClientError, DEFAULT_JOBMANAGER, JobSummary, RestClient, Submitted};
use weir_cli::settings::{JobSettings, MAX_PARALLELISM, checkpoint_form_fields};
use weir_jobmanager::checkpoint::CheckpointOptions;
use weir_jobmanager::{JobStatus, JobSubmission, SavepointRestoreSettings};
use weir_runtime::JobArtifact;

/// How often `weir run` asks for the job's state while it waits.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long a job waits for slots before `weir run` says so.
const SLOT_WAIT_NOTICE: Duration = Duration::from_secs(2);
/// The exit code after Ctrl-C (128 + SIGINT, as shells report an interrupted command).
pub const EXIT_INTERRUPTED: u8 = 130;
/// The exit code after SIGTERM (128 + SIGTERM).
const EXIT_TERMINATED: u8 = 143;

/// The `-D` keys, for `--help`.
const SETTINGS_HELP: &str = "\
-D KEY=VALUE takes Flink's configuration keys (repeatable; a key given twice takes the later \
value; durations as 500ms, 10s, 1min, or a plain number of milliseconds):
  execution.checkpointing.interval                  --checkpoint-interval
  execution.checkpointing.timeout                   --checkpoint-timeout
  execution.checkpointing.min-pause                 --checkpoint-min-pause
  execution.checkpointing.max-concurrent-checkpoints  --checkpoint-max-concurrent
  execution.checkpointing.tolerable-failed-checkpoints  --checkpoint-tolerable-failures
  execution.checkpointing.dir, state.checkpoints.dir  --checkpoint-dir
  execution.checkpointing.num-retained, state.checkpoints.num-retained  --checkpoints-retained
  state.backend.type (hashmap, rocksdb)             --state-backend (heap, rocksdb)
  parallelism.default                               -p
  execution.savepoint.path                          -s
  execution.savepoint.ignore-unclaimed-state        -n
  restart-strategy.type (none, fixed-delay, failure-rate, exponential-delay) and
  restart-strategy.<type>.* (fixed-delay.attempts, fixed-delay.delay,
  failure-rate.max-failures-per-interval, failure-rate.failure-rate-interval, failure-rate.delay,
  exponential-delay.initial-backoff, .max-backoff, .backoff-multiplier,
  .reset-backoff-threshold, .attempts-before-reset-backoff, .jitter-factor=0): the job's
  restart strategy (without them, the jobmanager's restart_strategy applies).
An unknown key, a bad value, or a key given together with its flag is an error naming the key.";

const RUN_AFTER_HELP: &str = "\
Everything after PLUGIN goes to the job: `weir run -p 4 job.so --input x`. The older form \
`weir run job.so -p 4 -- --input x` still works: when every option between the plugin and the \
first `--` is one of weir's, they are weir's.

Ctrl-C stops waiting and leaves the job running (exit code 130; `weir cancel JOB` cancels it); \
with --shutdown-on-attached-exit (Flink's -sae) Ctrl-C or SIGTERM cancels the job.

Exit codes: 0 the job finished (or was submitted, with -d); 1 it failed or was cancelled; 2 bad \
input or an unreachable cluster; 130 interrupted (Ctrl-C).";

/// Checkpointing of a job (off unless an interval is given) and its state backend.
#[derive(clap::Args, Clone)]
pub struct CheckpointArgs {
    /// Take a checkpoint this often, for example `500ms` or `10s`.
    #[arg(long, value_name = "DURATION")]
    pub checkpoint_interval: Option<String>,
    /// Keyed state backend: `heap` (in memory, full snapshots) or `rocksdb` (on disk,
    /// incremental snapshots); with or without checkpoints.
    #[arg(long, value_name = "BACKEND")]
    pub state_backend: Option<String>,
    /// Where this job's checkpoints go (`file:///path`, `s3://bucket/prefix`); default the
    /// jobmanager's storage.
    #[arg(long, value_name = "URL")]
    pub checkpoint_dir: Option<String>,
    /// Completed checkpoints to keep (default 1).
    #[arg(long, value_name = "N")]
    pub checkpoints_retained: Option<String>,
    /// A checkpoint not complete this long after its trigger fails (default 10m).
    #[arg(long, value_name = "DURATION")]
    pub checkpoint_timeout: Option<String>,
    /// Minimum pause between the end of a checkpoint and the next (default 0).
    #[arg(long, value_name = "DURATION")]
    pub checkpoint_min_pause: Option<String>,
    /// Checkpoints in progress at once (default 1).
    #[arg(long, value_name = "N")]
    pub checkpoint_max_concurrent: Option<String>,
    /// Consecutive checkpoint failures tolerated before the job fails (default 0).
    #[arg(long, value_name = "N")]
    pub checkpoint_tolerable_failures: Option<String>,
}

impl CheckpointArgs {
    fn options(&self) -> CheckpointOptions {
        CheckpointOptions {
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
}

/// Starting a job from a savepoint (Flink's `-s` and `-n`).
#[derive(clap::Args, Clone)]
pub struct RestoreArgs {
    /// Start from this savepoint (its directory or its `_metadata`; a storage URL or a path).
    #[arg(short = 's', long = "from-savepoint", value_name = "PATH")]
    pub from_savepoint: Option<String>,
    /// Start even if the savepoint holds state of operators the job no longer has (dropped).
    #[arg(short = 'n', long)]
    pub allow_non_restored_state: bool,
}

/// What `weir run` and `weir local run` share.
#[derive(clap::Args)]
pub struct JobArgs {
    /// Default parallelism of the job's operators (default 1, or -D parallelism.default).
    #[arg(short = 'p', long, value_parser = clap::value_parser!(u32).range(1..=MAX_PARALLELISM as i64))]
    pub parallelism: Option<u32>,
    #[command(flatten)]
    pub checkpoints: CheckpointArgs,
    #[command(flatten)]
    pub savepoint: RestoreArgs,
    /// A per-job setting under Flink's configuration key, `KEY=VALUE` (repeatable; the keys are
    /// listed below), for example `-D execution.checkpointing.interval=10s`.
    #[arg(short = 'D', value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    /// The job plugin (a shared library built from a crate that calls
    /// `weir_api::export_job!`), then the arguments for the job's build function: everything
    /// after the plugin goes to the job.
    #[arg(required = true, trailing_var_arg = true, value_names = ["PLUGIN", "JOB_ARGS"])]
    pub values: Vec<String>,
}

/// A submission as the command line describes it, checked.
struct Prepared {
    plugin: PathBuf,
    job_args: Vec<String>,
    parallelism: u32,
    checkpoints: CheckpointOptions,
    savepoint: Option<SavepointRestoreSettings>,
    settings: JobSettings,
}

impl JobArgs {
    fn prepare(&self) -> anyhow::Result<Prepared> {
        let (positional, job_args) = weir_cli::args::split_values(&self.values, 1);
        let settings = JobSettings::parse(&self.settings)?;
        let checkpoints = settings.checkpoint_options(&self.checkpoints.options())?;
        checkpoints.resolve().map_err(anyhow::Error::msg)?;
        let parallelism = settings.parallelism(self.parallelism)?;
        let savepoint = settings
            .savepoint(self.savepoint.from_savepoint.as_deref(), self.savepoint.allow_non_restored_state)?
            .map(|(path, allow_non_restored_state)| {
                Ok::<_, anyhow::Error>(SavepointRestoreSettings {
                    path: storage_location(&path)?,
                    allow_non_restored_state,
                })
            })
            .transpose()?;
        if self.savepoint.allow_non_restored_state && savepoint.is_none() {
            anyhow::bail!("-n (--allow-non-restored-state) needs a savepoint to start from (-s PATH)");
        }
        Ok(Prepared {
            plugin: PathBuf::from(&positional[0]),
            job_args: job_args.to_vec(),
            parallelism,
            checkpoints,
            savepoint,
            settings,
        })
    }
}

#[derive(clap::Args)]
#[command(after_help = format!("{RUN_AFTER_HELP}\n\n{SETTINGS_HELP}"))]
pub struct ClusterRunArgs {
    /// Return once the job is submitted instead of waiting for its end (Flink's -d).
    #[arg(short = 'd', long)]
    pub detached: bool,
    /// Cancel the job when this command stops waiting for it early: on Ctrl-C or SIGTERM
    /// (Flink's -sae, which is accepted too). Without it, Ctrl-C leaves the job running.
    #[arg(long, visible_alias = "sae", alias = "shutdownOnAttachedExit", conflicts_with = "detached")]
    pub shutdown_on_attached_exit: bool,
    /// Print the server's JSON on standard output (the final job details; with --detached the
    /// submission's answer; after Ctrl-C the job's details then).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub job: JobArgs,
}

#[derive(clap::Args)]
#[command(after_help = format!(
    "Everything after PLUGIN goes to the job (the older form `PLUGIN [OPTIONS] -- JOB_ARGS` \
     still works). Ctrl-C cancels the job: the mini-cluster ends with this process.\n\n{SETTINGS_HELP}"
))]
pub struct LocalRunArgs {
    /// Print the final job details as JSON on standard output.
    #[arg(long)]
    pub json: bool,
    /// Restart a failed job up to this many times (fixed delay of 1 s). Default as Flink: a job
    /// with checkpoints restarts without limit (exponential delay, 1 s up to 1 min), one without
    /// does not restart. -D restart-strategy.* sets any of Flink's strategies instead.
    #[arg(long, value_name = "N")]
    pub restart_attempts: Option<u32>,
    #[command(flatten)]
    pub job: JobArgs,
}

/// `weir local run`: the job on a mini-cluster in this process, until it ends; Ctrl-C cancels it
/// (the mini-cluster does not outlive the process).
pub async fn local_run(args: LocalRunArgs) -> anyhow::Result<ExitCode> {
    // Fault injection for tests and soaks (feature `failpoints`, `FAILPOINTS` variable).
    let _faults = weir_runtime::faults::setup();
    let prepared = args.job.prepare()?;
    let restart = prepared.settings.restart.policy()?;
    if let (Some(_), Some(key)) = (args.restart_attempts, prepared.settings.restart.first_key()) {
        return Err(weir_cli::Error::setting(key, "is given together with --restart-attempts; give one of them").into());
    }
    let resolved = prepared.checkpoints.resolve().map_err(anyhow::Error::msg)?;
    let cluster = match restart {
        Some(policy) => MiniCluster::start_with_policy(Some(policy)),
        None => MiniCluster::start_with_restarts(args.restart_attempts),
    };
    let shown = prepared.plugin.display().to_string();
    let submission = JobSubmission {
        artifact: JobArtifact::Plugin(prepared.plugin),
        args: prepared.job_args,
        parallelism: prepared.parallelism,
        checkpointing: resolved.checkpointing,
        state_backend: resolved.state_backend,
        savepoint: prepared.savepoint,
        // The mini-cluster's jobmanager has the policy (above).
        restart: None,
    };
    let id = cluster.submit(submission).await.with_context(|| format!("cannot run {shown}"))?;
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
        print_json(&details)?;
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

/// The signals `weir run` listens for while it follows a job.
struct Signals {
    interrupt: Signal,
    /// Only with --shutdown-on-attached-exit: SIGTERM then cancels the job too.
    terminate: Option<Signal>,
}

impl Signals {
    fn listen(shutdown_on_exit: bool) -> anyhow::Result<Self> {
        let interrupt = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
        let terminate = if shutdown_on_exit {
            Some(signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?)
        } else {
            None
        };
        Ok(Self { interrupt, terminate })
    }
}

/// The next SIGTERM, if listened for (never otherwise).
async fn terminated(terminate: &mut Option<Signal>) {
    match terminate {
        Some(terminate) => {
            terminate.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// `weir run`: upload, submit, and (unless detached) follow the job to its end.
pub async fn cluster_run(client: &RestClient, args: ClusterRunArgs) -> anyhow::Result<ExitCode> {
    let prepared = args.job.prepare()?;
    let restart = prepared.settings.restart.policy()?;
    let shown = prepared.plugin.display().to_string();
    let plugin = std::fs::read(&prepared.plugin).with_context(|| format!("cannot read the job plugin {shown}"))?;
    let file_name =
        prepared.plugin.file_name().map_or_else(|| "job.so".to_owned(), |n| n.to_string_lossy().into_owned());
    let mut form_fields = checkpoint_form_fields(&prepared.checkpoints);
    if let Some(savepoint) = &prepared.savepoint {
        // Flink's names (`POST /jars/:jarid/run`).
        form_fields.push(("savepointPath", savepoint.path.clone()));
        form_fields.push(("allowNonRestoredState", savepoint.allow_non_restored_state.to_string()));
    }
    if let Some(policy) = restart {
        form_fields.push(("restart_strategy", serde_json::to_string(&policy)?));
    }
    // Listening from here on: Ctrl-C during the upload must not leave the job's fate unknown.
    let mut signals = Signals::listen(args.shutdown_on_attached_exit)?;
    let answer: Value = tokio::select! {
        answer = client.submit(plugin, &file_name, &prepared.job_args, prepared.parallelism, &form_fields) => {
            answer.with_context(|| format!("cannot submit {shown}"))?
        }
        _ = signals.interrupt.recv() => {
            eprintln!("weir: interrupted while submitting {shown}; the job may have been submitted (weir list shows it)");
            return Ok(ExitCode::from(EXIT_INTERRUPTED));
        }
    };
    let submitted: Submitted = serde_json::from_value(answer.clone())
        .with_context(|| format!("unexpected answer from {} to the submission: {answer}", client.base()))?;
    let id = submitted.jobid;
    for warning in &submitted.warnings {
        eprintln!("weir: warning: {warning}");
    }
    if args.detached {
        if args.json {
            print_json(&answer)?;
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

    match follow(client, &id, args.shutdown_on_attached_exit, &mut signals).await? {
        Followed::Ended { details, summary, interrupted } => {
            if args.json {
                print_json(&details)?;
            } else {
                print_summary(&summary);
            }
            if interrupted {
                eprintln!("weir: job {id} {} after Ctrl-C (--shutdown-on-attached-exit)", summary.state);
                return Ok(ExitCode::from(EXIT_INTERRUPTED));
            }
            Ok(match summary.state.as_str() {
                "FINISHED" => ExitCode::SUCCESS,
                state => {
                    let reason = summary.failure.as_deref().unwrap_or(if state == "CANCELED" {
                        "cancelled on request"
                    } else {
                        "no reason given"
                    });
                    eprintln!("weir: job {id} {state}: {}", one_line(reason));
                    ExitCode::from(1)
                }
            })
        }
        Followed::LeftRunning { details } => {
            if args.json
                && let Some(details) = details
            {
                print_json(&details)?;
            }
            let address =
                if client.base() == DEFAULT_JOBMANAGER { String::new() } else { format!("-m {} ", client.base()) };
            eprintln!(
                "weir: stopped waiting for job {id} (Ctrl-C); it keeps running. Cancel it with: weir {address}cancel {id}"
            );
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
        Followed::GaveUp => {
            eprintln!("weir: stopped waiting for job {id}, which is being cancelled");
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
        Followed::Terminated => {
            eprintln!("weir: job {id} is being cancelled (SIGTERM, --shutdown-on-attached-exit)");
            Ok(ExitCode::from(EXIT_TERMINATED))
        }
    }
}

/// How following a job ended.
enum Followed {
    /// The job ended; `interrupted` if it was cancelled on Ctrl-C (--shutdown-on-attached-exit).
    Ended { details: Value, summary: Box<JobSummary>, interrupted: bool },
    /// Ctrl-C without --shutdown-on-attached-exit: the job runs on (its last details, if any).
    LeftRunning { details: Option<Value> },
    /// A second Ctrl-C while the job was being cancelled.
    GaveUp,
    /// SIGTERM with --shutdown-on-attached-exit: cancellation requested.
    Terminated,
}

/// Polls the job until it ended, showing progress on standard error (waiting for slots,
/// restarts). Ctrl-C stops following and leaves the job running; with `cancel_on_exit` it
/// cancels the job and waits for its end (a second Ctrl-C stops waiting), and SIGTERM cancels
/// it and returns.
async fn follow(
    client: &RestClient,
    id: &str,
    cancel_on_exit: bool,
    signals: &mut Signals,
) -> anyhow::Result<Followed> {
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    let mut cancelling = false;
    let mut last: Option<Value> = None;
    let mut watch = StateWatch::new(id);
    loop {
        tokio::select! {
            _ = poll.tick() => {
                let details: Value = client.job(id).await.with_context(|| format!("cannot follow job {id}"))?;
                let summary: JobSummary = serde_json::from_value(details.clone())
                    .with_context(|| format!("unexpected details of job {id} from {}", client.base()))?;
                if summary.is_terminal() {
                    return Ok(Followed::Ended { details, summary: Box::new(summary), interrupted: cancelling });
                }
                watch.observe(client, &summary).await;
                last = Some(details);
            }
            _ = signals.interrupt.recv() => {
                if !cancel_on_exit {
                    return Ok(Followed::LeftRunning { details: last });
                }
                if cancelling {
                    return Ok(Followed::GaveUp);
                }
                cancelling = true;
                eprintln!("weir: cancelling job {id} (Ctrl-C, --shutdown-on-attached-exit; Ctrl-C again stops waiting)");
                request_cancel(client, id).await?;
            }
            () = terminated(&mut signals.terminate) => {
                request_cancel(client, id).await?;
                return Ok(Followed::Terminated);
            }
        }
    }
}

async fn request_cancel(client: &RestClient, id: &str) -> anyhow::Result<()> {
    match client.cancel::<Value>(id).await {
        // 409: it ended meanwhile; the next poll sees how.
        Ok(_) | Err(ClientError::Api { status: 409, .. }) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot cancel job {id}"))),
    }
}

/// Progress of a followed job on standard error: a job waiting for task slots (after
/// [`SLOT_WAIT_NOTICE`], then every few seconds) and changes of state other than the first
/// start (restarts, failing, cancelling).
struct StateWatch<'a> {
    id: &'a str,
    state: Option<String>,
    waiting: Option<ProgressTimer>,
}

impl<'a> StateWatch<'a> {
    fn new(id: &'a str) -> Self {
        Self { id, state: None, waiting: None }
    }

    async fn observe(&mut self, client: &RestClient, job: &JobSummary) {
        let id = self.id;
        let changed = self.state.as_deref() != Some(job.state.as_str());
        if changed {
            self.state = Some(job.state.clone());
            self.waiting = (job.state == "CREATED").then(|| ProgressTimer::starting_after(SLOT_WAIT_NOTICE));
            match job.state.as_str() {
                "CREATED" => {}
                "RUNNING" if job.restarts == 0 => {}
                "RUNNING" => progress(&format!("weir: job {id} is RUNNING again (restarts: {})", job.restarts)),
                state => progress(&format!("weir: job {id} is {state}")),
            }
        }
        if let Some(waited) = self.waiting.as_mut().and_then(ProgressTimer::due) {
            let needed = job.vertices.iter().map(|v| v.parallelism).max();
            let needed = needed.map_or_else(|| "its task slots".to_owned(), |n| format!("{n} task slot(s)"));
            let cluster = match client.overview::<Value>().await {
                Ok(overview) => {
                    let field = |a: &str, b: &str| overview.get(a).or_else(|| overview.get(b)).and_then(Value::as_u64);
                    match (field("slots_available", "slots-available"), field("slots_total", "slots-total")) {
                        (Some(free), Some(total)) => format!("; {free} of {total} free"),
                        _ => String::new(),
                    }
                }
                Err(_) => String::new(),
            };
            progress(&format!("weir: job {id} is waiting for {needed}{cluster} ({} s)", waited.as_secs()));
        }
    }
}
