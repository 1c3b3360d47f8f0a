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
