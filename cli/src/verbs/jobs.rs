//! Jobs and taskmanagers: `weir list`, `weir status`, `weir cancel`, `weir taskmanagers`.

use super::output::{format_duration, format_start, print_json, print_table};
use anyhow::Context as _;
use serde_json::Value;
use std::process::ExitCode;
use weir_cli::client::{JobList, JobSummary, RestClient, TaskManagerList};

/// States of a job that has ended.
const ENDED: [&str; 3] = ["FINISHED", "FAILED", "CANCELED"];

#[derive(clap::Args)]
pub struct ListArgs {
    /// Show every job, also those that ended (by default only jobs that have not ended:
    /// created, running, restarting, failing or cancelling).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Print the server's JSON (`{"jobs": [...]}`, filtered the same way) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct JsonArg {
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct JobArg {
    /// The job's id (as `weir list` shows it).
    pub job: String,
    /// Print the server's JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `weir list [-a]`: jobs that have not ended (all with `-a`), newest first.
pub async fn list(client: &RestClient, args: ListArgs) -> anyhow::Result<ExitCode> {
    let mut answer: Value = client.jobs().await.context("cannot list jobs")?;
    if !args.all
        && let Some(jobs) = answer.get_mut("jobs").and_then(Value::as_array_mut)
    {
        jobs.retain(|job| !ENDED.contains(&job.get("status").and_then(Value::as_str).unwrap_or_default()));
    }
    if args.json {
        print_json(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let list: JobList = serde_json::from_value(answer).context("unexpected job list")?;
    if list.jobs.is_empty() {
        outln!("{}", if args.all { "No jobs." } else { "No running jobs (weir list -a shows every job)." });
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
pub async fn status(client: &RestClient, args: JobArg) -> anyhow::Result<ExitCode> {
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
pub async fn cancel(client: &RestClient, args: JobArg) -> anyhow::Result<ExitCode> {
    let answer: Value = client.cancel(&args.job).await.with_context(|| format!("cannot cancel job {}", args.job))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        outln!("Cancellation of job {} requested.", args.job);
    }
    Ok(ExitCode::SUCCESS)
}

/// `weir taskmanagers`.
pub async fn taskmanagers(client: &RestClient, json: bool) -> anyhow::Result<ExitCode> {
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
