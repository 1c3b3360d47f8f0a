//! `weir checkpoints JOB`: a job's checkpoint settings, counts and history.

use super::jobs::JobArg;
use super::output::{format_start, print_table};
use anyhow::Context as _;
use serde_json::Value;
use std::process::ExitCode;
use weir_cli::client::RestClient;

/// `weir checkpoints JOB`.
pub async fn checkpoints(client: &RestClient, args: JobArg) -> anyhow::Result<ExitCode> {
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
    let restored = report.latest.restored.as_ref().map_or_else(
        || "-".to_owned(),
        |r| format!("{} {}", if r.is_savepoint { "savepoint" } else { "checkpoint" }, r.id),
    );
    outln!(
        "  triggered {}, in progress {}, completed {}, failed {}, restored {} times (now from {restored})",
        c.total,
        c.in_progress,
        c.completed,
        c.failed,
        c.restored,
    );
    if let Some(latest) = &report.latest.completed {
        outln!(
            "  latest completed: {} ({} bytes, {} incremental, {} ms) at {}",
            latest.id,
            latest.state_size,
            latest.checkpointed_size,
            latest.end_to_end_duration,
            latest.external_path.as_deref().unwrap_or("-")
        );
    }
    let rows: Vec<Vec<String>> = report
        .history
        .iter()
        .map(|h| {
            vec![
                h.id.to_string(),
                if h.is_savepoint { format!("{} (savepoint)", h.status) } else { h.status.clone() },
                format_start(u64::try_from(h.trigger_timestamp).unwrap_or(0)),
                format!("{} ms", h.end_to_end_duration),
                h.state_size.to_string(),
                h.failure_message.clone().unwrap_or_default(),
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
    history: Vec<CheckpointSummary>,
}

#[derive(serde::Deserialize)]
struct CheckpointCountsSummary {
    restored: u64,
    total: u64,
    in_progress: u64,
    completed: u64,
    failed: u64,
}

#[derive(serde::Deserialize)]
struct LatestSummary {
    completed: Option<CheckpointSummary>,
    restored: Option<RestoredSummary>,
}

#[derive(serde::Deserialize)]
struct RestoredSummary {
    id: u64,
    is_savepoint: bool,
}

/// One checkpoint of the report (Flink's `CheckpointStatistics`).
#[derive(serde::Deserialize)]
struct CheckpointSummary {
    id: u64,
    status: String,
    is_savepoint: bool,
    trigger_timestamp: i64,
    end_to_end_duration: i64,
    state_size: u64,
    checkpointed_size: u64,
    external_path: Option<String>,
    failure_message: Option<String>,
}
