//! Flink's checkpoint routes: statistics, one checkpoint's details, the configuration, and a
//! manual trigger with its status.

use super::{ApiError, ApiResult, AppState, job_id, optional_json};
use crate::checkpoint::report::{CheckpointReport, CheckpointsReport};
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bytes::Bytes;
use serde_json::json;
use weir_runtime::JobId;

fn checkpoints_of(state: &AppState, id: JobId) -> ApiResult<CheckpointsReport> {
    state.rest.jobmanager.checkpoints(id)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("job {id} has checkpointing off (submit it with a checkpoint interval)"),
        )
    })
}

/// Flink's `GET /jobs/:jobid/checkpoints`: counts, summary, latest, history (and Weir's settings
/// and retained checkpoints).
pub(super) async fn job_checkpoints(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<impl IntoResponse> {
    let id = job_id(id?)?;
    Ok(Json(checkpoints_of(&state, id)?))
}

/// A checkpoint id in a path.
fn checkpoint_id(text: &str) -> ApiResult<u64> {
    text.parse().map_err(|_| {
        let shown: String = text.chars().take(40).collect();
        ApiError::invalid(format!("'{shown}' is not a checkpoint id (expected a number)"))
    })
}

/// The checkpoint `checkpoint` of job `id`, among those the jobmanager still reports.
fn checkpoint_of(state: &AppState, id: JobId, checkpoint: u64) -> ApiResult<CheckpointReport> {
    checkpoints_of(state, id)?.checkpoint(checkpoint).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "job {id} has no checkpoint {checkpoint} in its history (only the latest {} and the retained ones are kept)",
                crate::checkpoint::coordinator::HISTORY_LEN
            ),
        )
    })
}

/// Flink's `GET /jobs/:jobid/checkpoints/details/:checkpointid`: one checkpoint with its
/// per-vertex statistics.
pub(super) async fn checkpoint_details(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<impl IntoResponse> {
    let Path((id, checkpoint)) = path?;
    let id = job_id(Path(id))?;
    Ok(Json(checkpoint_of(&state, id, checkpoint_id(&checkpoint)?)?))
}

/// Flink's `GET /jobs/:jobid/checkpoints/config`: the job's checkpointing settings, under Flink's
/// names and Weir's.
pub(super) async fn checkpoint_config(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<impl IntoResponse> {
    let id = job_id(id?)?;
    let report = checkpoints_of(&state, id)?;
    let config = &report.config;
    Ok(Json(json!({
        "mode": "exactly_once",
        "interval": config.interval_ms,
        "timeout": config.timeout_ms,
        "min_pause": config.min_pause_ms,
        "max_concurrent": config.max_concurrent,
        "externalization": { "enabled": true, "delete_on_cancellation": false },
        "unaligned_checkpoints": false,
        "tolerable_failed_checkpoints": config.tolerable_failures,
        "state_backend": report.state_backend,
        "checkpoint_storage": report.checkpoint_storage,
        "interval_ms": config.interval_ms,
        "timeout_ms": config.timeout_ms,
        "min_pause_ms": config.min_pause_ms,
        "retained": config.retained,
    })))
}

/// The body of Flink's `POST /jobs/:jobid/checkpoints`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CheckpointTrigger {
    checkpoint_type: Option<String>,
    trigger_id: Option<String>,
}

/// Flink's `POST /jobs/:jobid/checkpoints`: triggers a checkpoint now (of the configured kind),
/// 202 `{"request-id"}`, polled at `GET /jobs/:jobid/checkpoints/:request-id`. The request id is
/// the checkpoint's id.
pub(super) async fn trigger_checkpoint(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let id = job_id(id?)?;
    let trigger: CheckpointTrigger = optional_json(&body, "checkpoint trigger")?;
    match trigger.checkpoint_type.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("CONFIGURED") => {}
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "checkpointType {other} is not supported: a manual checkpoint is of the kind the job is configured \
                 with (CONFIGURED)"
            )));
        }
    }
    if trigger.trigger_id.is_some() {
        return Err(ApiError::invalid(
            "triggerId is not supported for checkpoints: the answer's request-id names the checkpoint",
        ));
    }
    let checkpoint = state.rest.jobmanager.trigger_checkpoint(id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "request-id": checkpoint.to_string() }))))
}

/// Flink's `GET /jobs/:jobid/checkpoints/:triggerid`: `{"status": {"id"}, "operation"}` with the
/// checkpoint id once it completed, or the failure cause.
pub(super) async fn trigger_status(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<impl IntoResponse> {
    let Path((id, request)) = path?;
    let id = job_id(Path(id))?;
    let checkpoint = checkpoint_of(&state, id, checkpoint_id(&request)?)?;
    Ok(Json(match checkpoint.status {
        "COMPLETED" => json!({ "status": { "id": "COMPLETED" }, "operation": { "checkpointId": checkpoint.id } }),
        "FAILED" => json!({
            "status": { "id": "COMPLETED" },
            "operation": { "failure-cause": {
                "class": "weir.CheckpointFailed",
                "stack-trace": checkpoint.failure_message.clone().unwrap_or_default(),
            } },
        }),
        _ => json!({ "status": { "id": "IN_PROGRESS" }, "operation": null }),
    }))
}
