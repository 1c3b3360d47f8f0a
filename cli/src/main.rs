//! `weir`: run jobs on a local mini-cluster (and, with a cluster, drive it).

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use weir_cli::MiniCluster;
use weir_jobmanager::{JobDetails, JobStatus, JobSubmission};
use weir_runtime::JobArtifact;

#[derive(Parser)]
#[command(name = "weir", version, about = "Weir: a distributed dataflow engine for Rust jobs")]
struct Cli {
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
    /// Arguments for the job's build function.
    #[arg(last = true)]
    job_args: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weir: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Local { command: LocalCommand::Run(args) } => local_run(args).await,
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
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

fn one_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn local_run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let cluster = MiniCluster::start();
    let submission = JobSubmission {
        artifact: JobArtifact::Plugin(args.plugin.clone()),
        args: args.job_args,
        parallelism: args.parallelism,
    };
    let id = cluster.submit(submission).await.with_context(|| format!("cannot run {}", args.plugin.display()))?;
    let jobmanager = cluster.jobmanager().clone();
    let details = tokio::select! {
        details = jobmanager.wait_for_termination(id) => details?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("weir: cancelling job {id} (Ctrl-C)");
            jobmanager.cancel(id).await?;
            jobmanager.wait_for_termination(id).await?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&details)?);
    } else {
        print_summary(&details);
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

fn print_summary(details: &JobDetails) {
    let seconds = details.duration_ms as f64 / 1000.0;
    let rate = if seconds > 0.0 { details.source_records as f64 / seconds } else { 0.0 };
    println!("Job '{}' ({}) {} in {seconds:.3} s", details.name, details.jid, details.state);
    println!("  {} records from sources, {rate:.0} records/s", details.source_records);
    for sink in &details.sinks {
        println!("  output {sink}");
    }
}
