//! The jobmanager's REST API, shaped like Flink's.
//!
//! | Request | Answer |
//! |---|---|
//! | `GET /overview` | cluster overview |
//! | `GET /taskmanagers` | `{"taskmanagers": [...]}` |
//! | `POST /jobs` (multipart: `plugin`, optional `args` JSON array, optional `parallelism`) | 202 `{"jobid": "...", "warnings": [...]}` |
//! | `GET /jobs` | `{"jobs": [{"id", "name", "status", "start_time", "duration_ms"}]}`, newest first |
//! | `GET /jobs/{id}` | the job's details |
//! | `PATCH /jobs/{id}?mode=cancel` | 202 `{}` |
//! | `GET /jobs/{id}/checkpoints` | Flink's `counts`, `summary` (percentiles), `latest` (`completed`, `savepoint`, `failed`, `restored`), `history` (in progress, then finished, newest first), and Weir's settings and `retained` (404 when the job has checkpointing off) |
//! | `GET /jobs/{id}/checkpoints/details/{checkpoint}` | one checkpoint as in the history, with per-vertex `tasks` |
//! | `POST /jobs/{id}/checkpoints` (JSON, optional `checkpointType`: `CONFIGURED`) | 202 `{"request-id"}` (the checkpoint id), polled at `GET /jobs/{id}/checkpoints/{request-id}`: `{"status": {"id"}, "operation": null \| {"checkpointId"} \| {"failure-cause"}}` |
//! | `GET /jobs/{id}/metrics[?get=a,b]` | `[{"id"}]`, or `[{"id", "value"}]` for the named ones (Flink's job metrics) |
//! | `GET /taskmanagers/{id}/metrics[?get=a,b]` | the same for a taskmanager: slots and its process (memory, CPU time, threads) |
//! | `GET /jobs/{id}/vertices/{vertex}/backpressure` | Flink's shape: `backpressure-level` (`ok`, `low`, `high`), per subtask `ratio`, `busyRatio`, `idleRatio` over the last heartbeat interval |
//! | `GET /metrics` | Prometheus metrics in Flink's names |
//! | `GET /jobs/{id}/checkpoints/config` | interval, timeout, minimum pause, max concurrent, tolerable failures, retained, state backend, storage (404 when off) |
//! | `POST /jobs/{id}/savepoints` (JSON, all optional: `target-directory`, `cancel-job`, `triggerId`, `formatType`) | 202 `{"request-id": "..."}` |
//! | `POST /jobs/{id}/stop` (JSON, all optional: `targetDirectory`, `drain`, `triggerId`, `formatType`) | 202 `{"request-id": "..."}`, polled at `/jobs/{id}/savepoints/{request-id}`; the job ends FINISHED after the savepoint |
//! | `POST /savepoint-disposal` (JSON `{"savepoint-path"}`) | 200 `{"request-id": "..."}`; the savepoint's files are deleted in the background |
//! | `GET /savepoint-disposal/{request-id}` | `{"status": {"id"}, "operation": null \| {} \| {"failure-cause"}}` |
//! | `GET /jobs/{id}/savepoints/{request-id}` | `{"status": {"id": "IN_PROGRESS"\|"COMPLETED"}, "operation": null \| {"location"} \| {"failure-cause": {"class", "stack-trace"}}}` |
//!
//! `POST /jobs` also takes the optional fields `checkpoint_interval` (a duration such as `500ms`
//! or `10s`; checkpointing is off without it), `state_backend` (`heap` or `rocksdb`),
//! `checkpoint_dir` (a storage URL; default the jobmanager's storage), `checkpoints_retained`,
//! `checkpoint_timeout`, `checkpoint_min_pause`, `checkpoint_max_concurrent`,
//! `checkpoint_tolerable_failures`, and `restart_strategy` (JSON: `strategy` as Flink names it,
//! `max_attempts`, `delay_ms`, `max_delay_ms`, `backoff_multiplier`, `reset_backoff_after_ms`,
//! `failure_rate_interval_ms`; the jobmanager's strategy without it).
//!
//! Errors are `{"errors": ["<message>"]}` with a 4xx status for the caller's mistakes and a 5xx
//! status for the cluster's.

mod checkpoints;
mod metrics;
mod web;

use crate::artifacts::{PluginStore, chain, sha256_hex};
use crate::checkpoint::CheckpointOptions;
use crate::error::Error;
use crate::job::JobStatus;
use crate::jobmanager::JobManager;
use crate::submission::JobSubmission;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, Request, State};
use axum::http::{StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tracing::{Instrument as _, error, error_span, warn};
use weir_runtime::{JobArtifact, JobId, TaskExecutionState};

/// Largest accepted request body (a job plugin upload) unless configured otherwise
/// (`max_upload_mb`).
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 512 * 1024 * 1024;

/// What the REST handlers work on.
#[derive(Debug, Clone)]
pub struct RestState {
    /// The jobmanager.
    pub jobmanager: JobManager,
    /// Where uploaded plugins are kept.
    pub plugins: Arc<PluginStore>,
    /// Largest accepted request body (a job plugin upload), in bytes.
    pub max_upload_bytes: usize,
    /// The jobmanager's configuration as `GET /jobmanager/config` shows it (secrets masked).
    pub config: Vec<(String, String)>,
}

#[derive(Clone)]
struct AppState {
    rest: RestState,
    uploads: Arc<UploadLocks>,
    metrics: Arc<prometheus_client::registry::Registry>,
}

/// `GET /metrics`: the jobmanager's metrics (Prometheus).
async fn scrape_metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, weir_runtime::metrics::CONTENT_TYPE)],
        weir_runtime::metrics::encode(&state.metrics),
    )
}

/// The OpenAPI document of this API (checked against a live server by `tests/tests/openapi.rs`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// `GET /openapi.json`.
async fn openapi() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// `/healthz` and `/readyz` of a serving jobmanager (the leader, with high availability; a
/// standby answers them in [`crate::standby`]).
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The REST API's routes.
pub fn router(state: RestState) -> Router {
    let metrics = Arc::new(crate::metrics::registry(state.jobmanager.clone()));
    let state = AppState { rest: state, uploads: Arc::default(), metrics };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi))
        .route("/readyz", get(healthz))
        .route("/metrics", get(scrape_metrics))
        .route("/overview", get(overview))
        .route("/taskmanagers", get(taskmanagers))
        .route("/taskmanagers/{id}", get(taskmanager))
        .route("/taskmanagers/{id}/metrics", get(metrics::taskmanager_metrics))
        .route("/jobs/overview", get(jobs_overview))
        .route("/config", get(web_config))
        .route("/jobmanager/config", get(jobmanager_config))
        .route("/jobs", get(list_jobs).post(submit_job))
        .route("/jobs/{id}", get(job_details).patch(patch_job))
        .route("/jobs/{id}/checkpoints", get(checkpoints::job_checkpoints).post(checkpoints::trigger_checkpoint))
        .route("/jobs/{id}/checkpoints/details/{checkpoint}", get(checkpoints::checkpoint_details))
        .route("/jobs/{id}/checkpoints/{request_id}", get(checkpoints::trigger_status))
        .route("/jobs/{id}/plan", get(job_plan))
        .route("/jobs/{id}/metrics", get(metrics::job_metrics))
        .route("/jobs/{id}/exceptions", get(job_exceptions))
        .route("/jobs/{id}/vertices/{vertex}", get(vertex_details))
        .route("/jobs/{id}/vertices/{vertex}/backpressure", get(vertex_backpressure))
        .route("/jobs/{id}/vertices/{vertex}/watermarks", get(vertex_watermarks))
        .route("/jobs/{id}/checkpoints/config", get(checkpoints::checkpoint_config))
        .route("/jobs/{id}/savepoints", axum::routing::post(trigger_savepoint))
        .route("/jobs/{id}/stop", axum::routing::post(stop_job))
        .route("/jobs/{id}/savepoints/{request_id}", get(savepoint_status))
        .route("/savepoint-disposal", axum::routing::post(dispose_savepoint))
        .route("/savepoint-disposal/{request_id}", get(disposal_status))
        .merge(web::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.rest.max_upload_bytes))
        .layer(axum::middleware::from_fn(request_span))
        .with_state(state)
}

/// Runs each request in a span naming it, so errors logged while answering say which request.
/// The span is at ERROR level so that it is enabled whenever the errors logged in it are.
async fn request_span(request: Request, next: Next) -> Response {
    let span = error_span!("rest", method = %request.method(), path = %request.uri().path());
    next.run(request).instrument(span).await
}

/// An error answer: `{"errors": ["<message>"]}` with its status. Every handler error goes
/// through here.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: one_line(&message.into()) }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidRequest(message.into()).into()
    }

    /// A body over the limit (413) says what the limit is and where it is set.
    fn too_large_names_the_limit(self, limit: usize) -> Self {
        if self.status != StatusCode::PAYLOAD_TOO_LARGE {
            return self;
        }
        let message = format!(
            "the upload is larger than this jobmanager accepts ({} MiB, its max_upload_mb setting): {}",
            limit >> 20,
            self.message
        );
        Self::new(self.status, message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = StatusCode::from_u16(e.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(status, chain(&e))
    }
}

impl From<MultipartError> for ApiError {
    fn from(e: MultipartError) -> Self {
        Self::new(e.status(), e.body_text())
    }
}

impl From<MultipartRejection> for ApiError {
    fn from(e: MultipartRejection) -> Self {
        Self::new(e.status(), format!("{} (POST /jobs expects a multipart/form-data body)", e.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::new(e.status(), e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::new(e.status(), e.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status.as_u16();
        if self.status.is_server_error() {
            error!(status, "request failed: {}", self.message);
        } else {
            warn!(status, "request rejected: {}", self.message);
        }
        (self.status, Json(json!({ "errors": [self.message] }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Flink's `GET /overview` (`slots-total`, `jobs-running`, ...) with Weir's names beside them.
async fn overview(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let o = state.rest.jobmanager.overview();
    let mut body =
        serde_json::to_value(&o).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let Value::Object(map) = &mut body {
        for (key, value) in [
            ("slots-total", json!(o.slots_total)),
            ("slots-available", json!(o.slots_available)),
            ("jobs-running", json!(o.jobs_running)),
            ("jobs-finished", json!(o.jobs_finished)),
            ("jobs-cancelled", json!(o.jobs_cancelled)),
            ("jobs-failed", json!(o.jobs_failed)),
            ("flink-version", json!(o.weir_version)),
            ("flink-commit", json!("weir")),
        ] {
            map.insert(key.into(), value);
        }
    }
    Ok(Json(body))
}

/// A taskmanager as `GET /taskmanagers` lists it: Weir's fields and Flink's names for them.
fn taskmanager_json(tm: &crate::registry::TaskManagerInfo) -> Value {
    let data_port = tm.data_address.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
    json!({
        "id": tm.id,
        "slots": tm.slots,
        "free_slots": tm.free_slots,
        "data_address": tm.data_address,
        "seconds_since_heartbeat": tm.seconds_since_heartbeat,
        "path": tm.data_address,
        "dataPort": data_port,
        "slotsNumber": tm.slots,
        "freeSlots": tm.free_slots,
        "timeSinceLastHeartbeat": (tm.seconds_since_heartbeat * 1000.0).round() as u64,
    })
}

async fn taskmanagers(State(state): State<AppState>) -> impl IntoResponse {
    let taskmanagers: Vec<Value> = state.rest.jobmanager.taskmanagers().iter().map(taskmanager_json).collect();
    Json(json!({ "taskmanagers": taskmanagers }))
}

/// `GET /taskmanagers/{id}`: one taskmanager (404 when unknown).
async fn taskmanager(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<impl IntoResponse> {
    let Path(id) = id?;
    let taskmanagers = state.rest.jobmanager.taskmanagers();
    let tm = taskmanagers.iter().find(|tm| tm.id == id).ok_or_else(|| {
        let shown: String = id.chars().take(80).collect();
        ApiError::new(StatusCode::NOT_FOUND, format!("no taskmanager '{shown}' is registered"))
    })?;
    Ok(Json(taskmanager_json(tm)))
}

/// Flink's name of a job state (they are the same words).
fn flink_state(status: JobStatus) -> Value {
    serde_json::to_value(status).unwrap_or(Value::Null)
}

/// `GET /jobs/overview` in Flink's shape: per job `jid`, `name`, `state`, `start-time`,
/// `end-time` (-1 while running), `duration`, `last-modification` and the count of its tasks by
/// state.
async fn jobs_overview(State(state): State<AppState>) -> impl IntoResponse {
    let now_ms = crate::jobmanager::epoch_ms();
    let jobs: Vec<Value> = state
        .rest
        .jobmanager
        .jobs()
        .into_iter()
        .map(|job| {
            let end = job.state.is_terminal().then(|| job.start_time + job.duration_ms);
            let tasks = task_counts(job.vertices.iter().flat_map(|v| &v.subtasks));
            json!({
                "jid": job.jid,
                "name": job.name,
                "state": flink_state(job.state),
                "start-time": job.start_time,
                "end-time": end.map_or(-1, |e| e as i64),
                "duration": job.duration_ms,
                "last-modification": end.unwrap_or(now_ms),
                "tasks": tasks,
            })
        })
        .collect();
    Json(json!({ "jobs": jobs }))
}

/// `GET /config`: what a dashboard needs to know about the server (Flink's shape).
async fn web_config() -> impl IntoResponse {
    Json(json!({
        "refresh-interval": 3000,
        "timezone-name": "Coordinated Universal Time",
        "timezone-offset": 0,
        "flink-version": env!("CARGO_PKG_VERSION"),
        "flink-revision": "weir",
        "weir-version": env!("CARGO_PKG_VERSION"),
        "features": { "web-submit": true, "web-cancel": true, "web-rescale": false, "web-history": false },
    }))
}

/// `GET /jobmanager/config`: the jobmanager's configuration as `[{"key", "value"}]` (Flink's
/// shape), with secrets masked.
async fn jobmanager_config(State(state): State<AppState>) -> impl IntoResponse {
    let entries: Vec<Value> =
        state.rest.config.iter().map(|(key, value)| json!({ "key": key, "value": value })).collect();
    Json(Value::Array(entries))
}

async fn list_jobs(State(state): State<AppState>) -> impl IntoResponse {
    let jobs: Vec<Value> = state
        .rest
        .jobmanager
        .jobs()
        .into_iter()
        .map(|job| {
            json!({
                "id": job.jid,
                "name": job.name,
                "status": job.state,
                "start_time": job.start_time,
                "duration_ms": job.duration_ms,
            })
        })
        .collect();
    Json(json!({ "jobs": jobs }))
}

/// Counts of `subtasks` by Flink's task state names (`tasks` of `/jobs/overview` and of each
/// vertex of `/jobs/{id}`), with `total`.
fn task_counts<'a>(subtasks: impl Iterator<Item = &'a crate::job::lifecycle::SubtaskStatus>) -> Value {
    let mut tasks = serde_json::Map::new();
    for key in ["created", "scheduled", "deploying", "running", "finished", "canceling", "canceled", "failed"] {
        tasks.insert(key.to_owned(), json!(0));
    }
    let mut total = 0u64;
    for subtask in subtasks {
        total += 1;
        let key = match subtask.state {
            TaskExecutionState::Deploying => "deploying",
            TaskExecutionState::Running => "running",
            TaskExecutionState::Finished => "finished",
            TaskExecutionState::Failed => "failed",
            TaskExecutionState::Canceled => "canceled",
        };
        let count = tasks.get(key).and_then(Value::as_u64).unwrap_or(0);
        tasks.insert(key.to_owned(), json!(count + 1));
    }
    tasks.insert("total".to_owned(), json!(total));
    Value::Object(tasks)
}

/// `GET /jobs/{id}`: Weir's job details with Flink's fields beside them: `jid`, `name`,
/// `state`, `start-time`, `end-time` (-1 while running), `duration`, `now`, `timestamps`, and per
/// vertex `id` as a string, `status`, `tasks` (counts by state) and `metrics` (`read-records`,
/// `write-records`).
async fn job_details(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<impl IntoResponse> {
    let id = job_id(id?)?;
    let details = state.rest.jobmanager.job(id)?;
    let now = crate::jobmanager::epoch_ms();
    let end = details.state.is_terminal().then(|| details.start_time + details.duration_ms);
    let mut body =
        serde_json::to_value(&details).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let (Value::Object(map), Some(Value::Array(vertices))) =
        (&mut body, serde_json::to_value(&details.vertices).ok())
    {
        map.insert("start-time".into(), json!(details.start_time));
        map.insert("end-time".into(), json!(end.map_or(-1, |e| e as i64)));
        map.insert("duration".into(), json!(details.duration_ms));
        map.insert("now".into(), json!(now));
        let mut timestamps = serde_json::Map::new();
        timestamps.insert("CREATED".into(), json!(details.start_time));
        if let Some(end) = end {
            timestamps.insert(flink_state(details.state).as_str().unwrap_or("FINISHED").to_owned(), json!(end));
        }
        map.insert("timestamps".into(), Value::Object(timestamps));
        let flink_vertices: Vec<Value> = vertices
            .into_iter()
            .zip(&details.vertices)
            .map(|(mut v, vertex)| {
                let tasks = task_counts(vertex.subtasks.iter());
                let count = |k: &str| tasks[k].as_u64().unwrap_or(0);
                let status = if count("failed") > 0 {
                    "FAILED"
                } else if count("running") > 0 {
                    "RUNNING"
                } else if count("deploying") > 0 {
                    "DEPLOYING"
                } else if count("total") > 0 && count("finished") == count("total") {
                    "FINISHED"
                } else if count("canceled") > 0 {
                    "CANCELED"
                } else {
                    "CREATED"
                };
                if let Value::Object(v) = &mut v {
                    // Flink's vertex ids are strings (as in the plan and the vertex routes).
                    v.insert("id".into(), json!(vertex.id.to_string()));
                    v.insert("status".into(), json!(status));
                    v.insert("tasks".into(), tasks);
                    v.insert(
                        "metrics".into(),
                        json!({ "read-records": vertex.records_in, "write-records": vertex.records_out }),
                    );
                }
                v
            })
            .collect();
        map.insert("vertices".into(), Value::Array(flink_vertices));
    }
    Ok(Json(body))
}

/// `GET /jobs/{id}/plan`: the job's plan in Flink's shape (`plan.nodes[]` with `id`,
/// `parallelism`, `description`, `inputs[]` with `ship_strategy`), with Weir's chained operators.
async fn job_plan(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<impl IntoResponse> {
    let id = job_id(id?)?;
    Ok(Json((*state.rest.jobmanager.view(id)?.plan).clone()))
}

/// `GET /jobs/{id}/exceptions` in Flink's shape: the newest failure as `root-exception` and
/// `timestamp`, and `exceptionHistory.entries` (newest first) with `exceptionName`,
/// `stacktrace` (Weir's message), `timestamp`, `taskName`, `location` and `taskManagerId`.
async fn job_exceptions(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<impl IntoResponse> {
    let details = state.rest.jobmanager.job(job_id(id?)?)?;
    let taskmanagers = state.rest.jobmanager.taskmanagers();
    let entries: Vec<Value> = details
        .exceptions
        .iter()
        .map(|e| {
            let location = e
                .taskmanager
                .as_ref()
                .and_then(|tm| taskmanagers.iter().find(|t| &t.id == tm))
                .map(|t| t.data_address.clone());
            json!({
                "exceptionName": "weir.TaskFailure",
                "stacktrace": e.message,
                "timestamp": e.timestamp,
                "taskName": e.task_name,
                "location": location,
                "endpoint": location,
                "taskManagerId": e.taskmanager,
                "failureLabels": {},
                "concurrentExceptions": [],
            })
        })
        .collect();
    let root = details.exceptions.first();
    Ok(Json(json!({
        "root-exception": root.map(|e| e.message.clone()),
        "timestamp": root.map(|e| e.timestamp),
        "all-exceptions": [],
        "truncated": false,
        "exceptionHistory": { "entries": entries, "truncated": false },
    })))
}

/// The job and its vertex named in a `/jobs/{id}/vertices/{vertex}` path (404 when unknown).
fn job_vertex(state: &AppState, id: String, vertex: &str) -> ApiResult<(crate::JobDetails, usize)> {
    let details = state.rest.jobmanager.job(job_id(Path(id))?)?;
    let index =
        vertex.parse::<u32>().ok().and_then(|v| details.vertices.iter().position(|d| d.id == v)).ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("job {} has no vertex '{vertex}'", details.jid))
        })?;
    Ok((details, index))
}

/// `GET /jobs/{id}/vertices/{vertex}` in Flink's shape: the vertex and each subtask's status,
/// attempt, taskmanager and records read and written (Weir's time shares beside them).
async fn vertex_details(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<impl IntoResponse> {
    let Path((id, vertex)) = path?;
    let (details, index) = job_vertex(&state, id, &vertex)?;
    let vertex = &details.vertices[index];
    let taskmanagers = state.rest.jobmanager.taskmanagers();
    let now = crate::jobmanager::epoch_ms();
    let subtasks: Vec<Value> = vertex
        .subtasks
        .iter()
        .map(|t| {
            let endpoint = taskmanagers.iter().find(|tm| tm.id == t.taskmanager).map(|tm| tm.data_address.clone());
            json!({
                "subtask": t.subtask,
                "status": t.state,
                "attempt": details.attempt,
                "endpoint": endpoint,
                "taskmanager-id": t.taskmanager,
                "metrics": {
                    "read-records": t.records_in,
                    "read-records-complete": true,
                    "write-records": t.records_out,
                    "write-records-complete": true,
                },
                "busy_permille": t.time.busy_permille,
                "idle_permille": t.time.idle_permille,
                "backpressured_permille": t.time.backpressured_permille,
            })
        })
        .collect();
    Ok(Json(json!({
        "id": vertex.id.to_string(),
        "name": vertex.name,
        "parallelism": vertex.parallelism,
        "now": now,
        "subtasks": subtasks,
    })))
}

/// `GET /jobs/{id}/vertices/{vertex}/watermarks` in Flink's shape: per subtask
/// `{"id": "<subtask>.currentInputWatermark", "value": "<ms>"}` (Long.MIN_VALUE, as Flink
/// shows it, before the subtask's first watermark), as of the last heartbeat.
async fn vertex_watermarks(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<impl IntoResponse> {
    let Path((id, vertex)) = path?;
    let (details, index) = job_vertex(&state, id, &vertex)?;
    let watermarks: Vec<Value> = details.vertices[index]
        .subtasks
        .iter()
        .map(|t| {
            json!({
                "id": format!("{}.currentInputWatermark", t.subtask),
                "value": t.input_watermark.unwrap_or(i64::MIN).to_string(),
            })
        })
        .collect();
    Ok(Json(Value::Array(watermarks)))
}

/// Flink's back-pressure level of a share of time spent waiting for room in the outputs.
fn backpressure_level(ratio: f64) -> &'static str {
    if ratio <= 0.10 {
        "ok"
    } else if ratio <= 0.5 {
        "low"
    } else {
        "high"
    }
}

/// `GET /jobs/{id}/vertices/{vertex}/backpressure` in Flink's shape: per subtask the share of
/// time it waited for room in its outputs (`ratio`), was busy and idle, over its taskmanager's
/// last heartbeat interval; the vertex's level is its worst subtask's.
async fn vertex_backpressure(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<impl IntoResponse> {
    let Path((id, vertex)) = path?;
    let (details, index) = job_vertex(&state, id, &vertex)?;
    let vertex = &details.vertices[index];
    let ratio = |permille: u16| f64::from(permille) / 1000.0;
    let subtasks: Vec<Value> = vertex
        .subtasks
        .iter()
        .map(|t| {
            let backpressured = ratio(t.time.backpressured_permille);
            json!({
                "subtask": t.subtask,
                "attempt-number": details.attempt,
                "backpressure-level": backpressure_level(backpressured),
                "ratio": backpressured,
                "busyRatio": ratio(t.time.busy_permille),
                "idleRatio": ratio(t.time.idle_permille),
                "taskmanager": t.taskmanager,
            })
        })
        .collect();
    let worst = vertex.subtasks.iter().map(|t| ratio(t.time.backpressured_permille)).fold(0.0, f64::max);
    let now = crate::jobmanager::epoch_ms();
    Ok(Json(json!({
        "status": "ok",
        "backpressure-level": backpressure_level(worst),
        "end-timestamp": now,
        "subtasks": subtasks,
    })))
}

/// The checkpoints of job `id` as its master last published them; 404 when it has
/// checkpointing off.
async fn patch_job(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    let id = job_id(id?)?;
    let Query(query) = query?;
    match query.get("mode").map(String::as_str) {
        Some("cancel") => {}
        Some(other) => return Err(ApiError::invalid(format!("unsupported mode '{other}' (supported: cancel)"))),
        None => {
            return Err(ApiError::invalid("missing query parameter 'mode' (use PATCH /jobs/{id}?mode=cancel)"));
        }
    }
    state.rest.jobmanager.cancel(id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({}))))
}

/// The body of Flink's `POST /jobs/:jobid/savepoints` (its mixed kebab and camel case).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SavepointTrigger {
    #[serde(rename = "target-directory")]
    target_directory: Option<String>,
    #[serde(rename = "cancel-job", default)]
    cancel_job: bool,
    #[serde(rename = "triggerId")]
    trigger_id: Option<String>,
    #[serde(rename = "formatType")]
    format_type: Option<String>,
}

/// Flink's `POST /jobs/:jobid/savepoints`: starts a savepoint; 202 with the request id to poll.
async fn trigger_savepoint(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let id = job_id(id?)?;
    let trigger: SavepointTrigger = optional_json(&body, "savepoint request")?;
    check_savepoint_options(trigger.format_type.as_deref(), trigger.trigger_id.as_deref())?;
    let request_id = state
        .rest
        .jobmanager
        .trigger_savepoint(id, trigger.target_directory.as_deref(), trigger.cancel_job, trigger.trigger_id)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "request-id": request_id }))))
}

/// A JSON request body whose fields are all optional: an empty body is the default.
fn optional_json<T: Default + serde::de::DeserializeOwned>(body: &[u8], what: &str) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    json_object(body, what)
}

/// A JSON object request body. Other JSON (an array, which serde would read into a struct field
/// by field) is refused.
fn json_object<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> ApiResult<T> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("{what}: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::invalid(format!("{what}: expected a JSON object, got {}", json_kind(&value))));
    }
    serde_json::from_value(value).map_err(|e| ApiError::invalid(format!("{what}: {e}")))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The `formatType` and `triggerId` of a savepoint or stop request.
fn check_savepoint_options(format_type: Option<&str>, trigger_id: Option<&str>) -> ApiResult<()> {
    match format_type.map(str::to_ascii_uppercase).as_deref() {
        None | Some("CANONICAL") => {}
        Some("NATIVE") => {
            return Err(ApiError::invalid(
                "formatType NATIVE is not supported: Weir's savepoints are canonical (they restore into any backend)",
            ));
        }
        Some(other) => return Err(ApiError::invalid(format!("unknown formatType '{other}' (expected CANONICAL)"))),
    }
    if let Some(trigger_id) = trigger_id
        && !(trigger_id.len() == 32 && trigger_id.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ApiError::invalid(format!("triggerId '{trigger_id}' is not 32 hex digits")));
    }
    Ok(())
}

/// The body of Flink's `POST /jobs/:jobid/stop` (camel case, unlike the savepoint trigger's).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StopRequest {
    target_directory: Option<String>,
    #[serde(default)]
    drain: bool,
    trigger_id: Option<String>,
    format_type: Option<String>,
}

/// Flink's `POST /jobs/:jobid/stop`: stops the job with a savepoint; 202 with the request id,
/// polled at `GET /jobs/:jobid/savepoints/:triggerid`.
async fn stop_job(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let id = job_id(id?)?;
    let stop: StopRequest = optional_json(&body, "stop request")?;
    check_savepoint_options(stop.format_type.as_deref(), stop.trigger_id.as_deref())?;
    let request_id = state
        .rest
        .jobmanager
        .stop_with_savepoint(id, stop.target_directory.as_deref(), stop.drain, stop.trigger_id)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "request-id": request_id }))))
}

/// Flink's `GET /jobs/:jobid/savepoints/:triggerid`: where a savepoint request stands (a failed
/// one is `COMPLETED` with a `failure-cause`, as in Flink).
async fn savepoint_status(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<impl IntoResponse> {
    let Path((id, request_id)) = path?;
    let id = job_id(Path(id))?;
    let status = state.rest.jobmanager.savepoint_status(id, &request_id).await?;
    Ok(Json(savepoint_status_json(&status)))
}

/// Flink's `POST /savepoint-disposal` (`{"savepoint-path"}`): deletes a savepoint in the
/// background; 200 with the request id to poll.
async fn dispose_savepoint(State(state): State<AppState>, body: Bytes) -> ApiResult<impl IntoResponse> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Disposal {
        #[serde(rename = "savepoint-path")]
        savepoint_path: String,
    }
    let disposal: Disposal = json_object(&body, "savepoint disposal")?;
    if disposal.savepoint_path.trim().is_empty() {
        return Err(ApiError::invalid("savepoint disposal: 'savepoint-path' is empty"));
    }
    let request_id = state.rest.jobmanager.dispose_savepoint(&disposal.savepoint_path);
    Ok(Json(json!({ "request-id": request_id })))
}

/// Flink's `GET /savepoint-disposal/:triggerid`: `operation` is `{}` once disposed, or holds the
/// `failure-cause`.
async fn disposal_status(
    State(state): State<AppState>,
    request_id: Result<Path<String>, PathRejection>,
) -> ApiResult<impl IntoResponse> {
    let Path(request_id) = request_id?;
    let status = state.rest.jobmanager.disposal_status(&request_id)?;
    use crate::job::SavepointStatus;
    Ok(Json(match status {
        SavepointStatus::InProgress => json!({ "status": { "id": "IN_PROGRESS" }, "operation": null }),
        SavepointStatus::Completed { .. } => json!({ "status": { "id": "COMPLETED" }, "operation": {} }),
        SavepointStatus::Failed { reason } => json!({
            "status": { "id": "COMPLETED" },
            "operation": { "failure-cause": { "class": "weir.SavepointDisposalFailed", "stack-trace": reason } }
        }),
    }))
}

/// A savepoint request's status in Flink's shape.
fn savepoint_status_json(status: &crate::job::SavepointStatus) -> Value {
    use crate::job::SavepointStatus;
    match status {
        SavepointStatus::InProgress => json!({ "status": { "id": "IN_PROGRESS" }, "operation": null }),
        SavepointStatus::Completed { location } => {
            json!({ "status": { "id": "COMPLETED" }, "operation": { "location": location } })
        }
        SavepointStatus::Failed { reason } => json!({
            "status": { "id": "COMPLETED" },
            "operation": { "failure-cause": { "class": "weir.SavepointFailed", "stack-trace": reason } }
        }),
    }
}

fn job_id(Path(id): Path<String>) -> ApiResult<JobId> {
    id.parse().map_err(|_| {
        let shown: String = id.chars().take(80).collect();
        ApiError::invalid(format!("'{shown}' is not a job id (expected 32 hex digits)"))
    })
}

/// The parts of a job upload.
struct Upload {
    plugin: Bytes,
    args: Vec<String>,
    parallelism: u32,
    checkpointing: CheckpointOptions,
    savepoint: Option<crate::savepoint_restore::SavepointRestoreSettings>,
    restart: Option<crate::restart::RestartPolicy>,
}

async fn read_upload(mut multipart: Multipart) -> ApiResult<Upload> {
    let mut plugin = None;
    let mut args = Vec::new();
    let mut parallelism = 1;
    let mut checkpointing = CheckpointOptions::default();
    let mut savepoint_path: Option<String> = None;
    let mut allow_non_restored_state = false;
    let mut restart = None;
    while let Some(field) = multipart.next_field().await? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "plugin" => plugin = Some(field.bytes().await?),
            "args" => {
                let text = field.text().await?;
                args = serde_json::from_str(&text).map_err(|e| {
                    ApiError::invalid(format!("form field 'args' must be a JSON array of strings: {e}"))
                })?;
            }
            "parallelism" => {
                let text = field.text().await?;
                parallelism = match text.trim().parse::<u32>() {
                    Ok(n) if n >= 1 => n,
                    _ => {
                        let shown: String = text.chars().take(40).collect();
                        return Err(ApiError::invalid(format!(
                            "form field 'parallelism' must be a whole number of at least 1, got '{shown}'"
                        )));
                    }
                };
            }
            "checkpoint_interval" => checkpointing.interval = Some(field.text().await?),
            "state_backend" => checkpointing.backend = Some(field.text().await?),
            "checkpoint_dir" => checkpointing.storage_url = Some(field.text().await?),
            "checkpoints_retained" => checkpointing.retained = Some(field.text().await?),
            "checkpoint_timeout" => checkpointing.timeout = Some(field.text().await?),
            "checkpoint_min_pause" => checkpointing.min_pause = Some(field.text().await?),
            "checkpoint_max_concurrent" => checkpointing.max_concurrent = Some(field.text().await?),
            "checkpoint_tolerable_failures" => checkpointing.tolerable_failures = Some(field.text().await?),
            "restart_strategy" => {
                let text = field.text().await?;
                restart = Some(serde_json::from_str(&text).map_err(|e| {
                    ApiError::invalid(format!(
                        "form field 'restart_strategy' must be a JSON object (strategy, max_attempts, delay_ms, \
                         max_delay_ms, backoff_multiplier, reset_backoff_after_ms, failure_rate_interval_ms): {e}"
                    ))
                })?);
            }
            // Flink's names (`POST /jars/:jarid/run`).
            "savepointPath" => savepoint_path = Some(field.text().await?).filter(|p| !p.trim().is_empty()),
            "allowNonRestoredState" => {
                let text = field.text().await?;
                allow_non_restored_state = match text.trim() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(ApiError::invalid(format!(
                            "form field 'allowNonRestoredState' must be true or false, got '{}'",
                            other.chars().take(40).collect::<String>()
                        )));
                    }
                };
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown form field '{other}' (expected plugin, args, parallelism, checkpoint_interval, \
                     state_backend, checkpoint_dir, checkpoints_retained, checkpoint_timeout, checkpoint_min_pause, \
                     checkpoint_max_concurrent, checkpoint_tolerable_failures, restart_strategy, savepointPath, \
                     allowNonRestoredState)"
                )));
            }
        }
    }
    let plugin = plugin.ok_or_else(|| ApiError::invalid("form field 'plugin' (the job's .so file) is missing"))?;
    if plugin.is_empty() {
        return Err(ApiError::invalid("form field 'plugin' is empty"));
    }
    if allow_non_restored_state && savepoint_path.is_none() {
        return Err(ApiError::invalid("form field 'allowNonRestoredState' needs 'savepointPath'"));
    }
    let savepoint = savepoint_path
        .map(|path| crate::savepoint_restore::SavepointRestoreSettings { path, allow_non_restored_state });
    Ok(Upload { plugin, args, parallelism, checkpointing, savepoint, restart })
}

async fn submit_job(
    State(state): State<AppState>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<impl IntoResponse> {
    let limit = state.rest.max_upload_bytes;
    let multipart = multipart.map_err(|e| ApiError::from(e).too_large_names_the_limit(limit))?;
    let upload = read_upload(multipart).await.map_err(|e| e.too_large_names_the_limit(limit))?;
    let resolved = upload.checkpointing.resolve().map_err(ApiError::invalid)?;
    // Submissions of the same plugin run one at a time, so the removal of a rejected upload
    // cannot pull the plugin from under a concurrent submission of the same bytes.
    let sha256 = sha256_hex(&upload.plugin);
    let _guard = state.uploads.lock(&sha256).await;
    let (artifact, newly_stored) = state.rest.plugins.put_hashed(sha256.clone(), upload.plugin).await?;
    debug_assert!(matches!(&artifact, JobArtifact::Stored { sha256: s, .. } if *s == sha256));
    let submission = JobSubmission {
        artifact,
        args: upload.args,
        parallelism: upload.parallelism,
        checkpointing: resolved.checkpointing,
        state_backend: resolved.state_backend,
        savepoint: upload.savepoint,
        restart: upload.restart,
    };
    match state.rest.jobmanager.submit(submission).await {
        Ok(id) => {
            let warnings = state.rest.jobmanager.job(id).map(|d| d.warnings).unwrap_or_default();
            Ok((StatusCode::ACCEPTED, Json(json!({ "jobid": id.to_string(), "warnings": warnings }))))
        }
        Err(e) => {
            if newly_stored
                && (400..500).contains(&e.status_code())
                && let Err(delete_error) = state.rest.plugins.delete(&sha256).await
            {
                error!(plugin = %sha256, "cannot remove the rejected plugin: {}", chain(&delete_error));
            }
            Err(e.into())
        }
    }
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("not found: {}", uri.path()))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {} is not allowed on {}", request.method(), request.uri().path()),
    )
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One async lock per plugin hash, dropped when nobody holds or waits for it.
#[derive(Default)]
struct UploadLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

struct UploadGuard<'a> {
    locks: &'a UploadLocks,
    sha256: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl UploadLocks {
    async fn lock(&self, sha256: &str) -> UploadGuard<'_> {
        let lock = self.map().entry(sha256.to_owned()).or_default().clone();
        let guard = lock.lock_owned().await;
        UploadGuard { locks: self, sha256: sha256.to_owned(), guard: Some(guard) }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for UploadGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.map();
        // Only the map's reference left: nobody holds or waits for this lock.
        if map.get(&self.sha256).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            map.remove(&self.sha256);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::tests::TempDir;
    use crate::jobmanager::JobManagerSettings;
    use std::io::{Read as _, Write as _};
    use std::net::SocketAddr;

    struct Server {
        addr: SocketAddr,
        dir: TempDir,
    }

    async fn start() -> Server {
        start_with_limit(DEFAULT_MAX_UPLOAD_BYTES).await
    }

    async fn start_with_limit(max_upload_bytes: usize) -> Server {
        let dir = TempDir::new();
        let url = format!("file://{}", dir.path().join("storage").display());
        let plugins = Arc::new(PluginStore::at(&url, dir.path().join("cache")).unwrap());
        let config = vec![("rest_addr".to_owned(), "127.0.0.1:0".to_owned())];
        let state =
            RestState { jobmanager: JobManager::new(JobManagerSettings::default()), plugins, max_upload_bytes, config };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(state)).await });
        Server { addr, dir }
    }

    /// One HTTP/1.1 request over a plain socket; returns the status and the JSON body.
    async fn request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            content_type.map(|t| format!("Content-Type: {t}\r\n")).unwrap_or_default(),
        );
        let response = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(&body).unwrap();
            let mut response = Vec::new();
            stream.read_to_end(&mut response).unwrap();
            response
        })
        .await
        .unwrap();
        let text = String::from_utf8(response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("a complete HTTP response");
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            dechunk(body)
        } else {
            body.to_owned()
        };
        let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
        (status, json)
    }

    fn dechunk(mut body: &str) -> String {
        let mut out = String::new();
        while let Some((size, rest)) = body.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            out.push_str(&rest[..size]);
            body = &rest[size + 2..];
        }
        out
    }

    const BOUNDARY: &str = "weirtestboundary";

    fn multipart(parts: &[(&str, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, content) in parts {
            let filename = if *name == "plugin" { "; filename=\"libjob.so\"" } else { "" };
            body.extend_from_slice(
                format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(content);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        body
    }

    fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut files = Vec::new();
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() { files.extend(files_under(&path)) } else { files.push(path) }
        }
        files
    }

    fn error_message(body: &Value) -> &str {
        let errors = body["errors"].as_array().unwrap_or_else(|| panic!("no errors array: {body}"));
        assert_eq!(errors.len(), 1, "{body}");
        errors[0].as_str().unwrap()
    }

    #[tokio::test]
    async fn request_bodies_must_be_json_objects_not_arrays_read_field_by_field() {
        let server = start().await;
        let job = "0123456789abcdef0123456789abcdef";
        for (path, body) in [
            ("/savepoint-disposal".to_owned(), r#"["/tmp/savepoint"]"#),
            (format!("/jobs/{job}/checkpoints"), "[null, null]"),
            (format!("/jobs/{job}/savepoints"), r#"["/tmp/target", true]"#),
            (format!("/jobs/{job}/stop"), "[null, false]"),
        ] {
            let (status, answer) =
                request(server.addr, "POST", &path, Some("application/json"), body.as_bytes().to_vec()).await;
            assert_eq!(status, 400, "POST {path} {body}: {answer}");
            assert!(answer["errors"][0].as_str().unwrap().contains("expected a JSON object, got an array"), "{answer}");
        }
    }

    #[tokio::test]
    async fn every_operation_of_the_openapi_document_is_routed() {
        let server = start().await;
        let (status, served) = request(server.addr, "GET", "/openapi.json", None, Vec::new()).await;
        assert_eq!(status, 200);
        let document: Value = serde_json::from_str(OPENAPI).expect("the document is JSON");
        assert_eq!(served, document);
        let paths = document["paths"].as_object().unwrap();
        assert!(paths.len() >= 28, "{}", paths.len());
        for (path, operations) in paths {
            // Sample parameters: a job id of the right shape, a vertex and a checkpoint.
            let concrete = path
                .replace("{jobid}", "0123456789abcdef0123456789abcdef")
                .replace("{vertexid}", "0")
                .replace("{checkpointid}", "1")
                .replace("{triggerid}", "1")
                .replace("{taskmanagerid}", "tm-1");
            for method in operations.as_object().unwrap().keys() {
                if path == "/metrics" || (path == "/jobs" && method == "post") {
                    continue; // not JSON / a multipart body
                }
                let (status, body) =
                    request(server.addr, &method.to_uppercase(), &concrete, Some("application/json"), b"{}".to_vec())
                        .await;
                let message = body["errors"][0].as_str().unwrap_or_default();
                assert!(
                    !message.starts_with("not found: /") && !message.starts_with("method "),
                    "{method} {path} is not routed: {status} {body}"
                );
                assert!(
                    operations[method]["responses"].get(status.to_string()).is_some(),
                    "{method} {path} answered {status}, which the document does not list: {body}"
                );
            }
        }
    }

    #[tokio::test]
    async fn overview_and_taskmanagers_answer_json() {
        let server = start().await;
        let (status, body) = request(server.addr, "GET", "/overview", None, Vec::new()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["taskmanagers"], 0, "{body}");
        assert_eq!((&body["slots-total"], &body["jobs-running"]), (&json!(0), &json!(0)), "Flink's names: {body}");
        assert_eq!(body["slots_total"], 0, "{body}");
        assert_eq!(body["jobs_running"], 0, "{body}");
        let (status, body) = request(server.addr, "GET", "/taskmanagers", None, Vec::new()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["taskmanagers"], json!([]), "{body}");
        let (status, body) = request(server.addr, "GET", "/jobs", None, Vec::new()).await;
        assert_eq!((status, body), (200, json!({ "jobs": [] })));
    }

    #[tokio::test]
    async fn flinks_routes_answer_in_flinks_shapes() {
        let server = start().await;
        let (status, body) = request(server.addr, "GET", "/jobs/overview", None, Vec::new()).await;
        assert_eq!((status, body), (200, json!({ "jobs": [] })));
        let (status, body) = request(server.addr, "GET", "/config", None, Vec::new()).await;
        assert_eq!(status, 200, "{body}");
        for key in ["refresh-interval", "timezone-name", "timezone-offset", "flink-version", "features"] {
            assert!(!body[key].is_null(), "{key}: {body}");
        }
        assert_eq!(body["features"]["web-submit"], true, "{body}");
        let (status, body) = request(server.addr, "GET", "/jobmanager/config", None, Vec::new()).await;
        assert_eq!((status, body), (200, json!([{ "key": "rest_addr", "value": "127.0.0.1:0" }])));
        let (status, body) = request(server.addr, "GET", "/taskmanagers/tm-x", None, Vec::new()).await;
        assert_eq!(status, 404, "{body}");
        assert!(error_message(&body).contains("tm-x"), "{body}");
    }

    #[tokio::test]
    async fn a_file_that_is_no_plugin_is_rejected_and_not_kept() {
        let server = start().await;
        let body = multipart(&[
            ("plugin", b"this is not a shared library"),
            ("args", br#"["--input", "x"]"#),
            ("parallelism", b"2"),
        ]);
        let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
        let (status, response) = request(server.addr, "POST", "/jobs", Some(&content_type), body).await;
        assert_eq!(status, 400, "{response}");
        assert!(error_message(&response).contains("cannot load job plugin"), "{response}");
        assert_eq!(files_under(&server.dir.path().join("storage")), Vec::<std::path::PathBuf>::new());
        assert_eq!(files_under(&server.dir.path().join("cache")), Vec::<std::path::PathBuf>::new());
        let (_, jobs) = request(server.addr, "GET", "/jobs", None, Vec::new()).await;
        assert_eq!(jobs, json!({ "jobs": [] }));
    }

    #[tokio::test]
    async fn an_upload_over_the_limit_is_refused_naming_the_limit() {
        let server = start_with_limit(2 << 20).await;
        let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
        let body = multipart(&[("plugin", &vec![7u8; 3 << 20])]);
        let (status, response) = request(server.addr, "POST", "/jobs", Some(&content_type), body).await;
        assert_eq!(status, 413, "{response}");
        let message = error_message(&response);
        assert!(message.contains("2 MiB") && message.contains("max_upload_mb"), "{response}");
        assert!(files_under(&server.dir.path().join("storage")).is_empty());
    }

    #[tokio::test]
    async fn malformed_uploads_are_rejected_before_storing() {
        let server = start().await;
        let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (multipart(&[("plugin", b"x"), ("parallelism", b"0")]), "parallelism"),
            (multipart(&[("plugin", b"x"), ("parallelism", b"two")]), "parallelism"),
            (multipart(&[("plugin", b"x"), ("args", b"not json")]), "args"),
            (multipart(&[("args", b"[]")]), "plugin"),
            (multipart(&[("plugin", b"x"), ("jar", b"x")]), "unknown form field"),
        ];
        for (body, expected) in cases {
            let (status, response) = request(server.addr, "POST", "/jobs", Some(&content_type), body).await;
            assert_eq!(status, 400, "{response}");
            assert!(error_message(&response).contains(expected), "{expected}: {response}");
        }
        let (status, response) = request(server.addr, "POST", "/jobs", Some("application/json"), b"{}".to_vec()).await;
        assert_eq!(status, 400, "{response}");
        assert!(error_message(&response).contains("multipart"), "{response}");
        assert!(files_under(&server.dir.path().join("storage")).is_empty());
    }

    #[tokio::test]
    async fn job_ids_are_checked() {
        let server = start().await;
        let id = JobId::random();
        let (status, body) = request(server.addr, "GET", &format!("/jobs/{id}"), None, Vec::new()).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(error_message(&body), format!("job {id} not found"));
        for route in ["checkpoints", "checkpoints/config"] {
            let (status, body) = request(server.addr, "GET", &format!("/jobs/{id}/{route}"), None, Vec::new()).await;
            assert_eq!(status, 404, "{route}: {body}");
            assert_eq!(error_message(&body), format!("job {id} not found"), "{route}");
        }
        let (status, body) = request(server.addr, "GET", "/jobs/not-an-id", None, Vec::new()).await;
        assert_eq!(status, 400, "{body}");
        assert!(error_message(&body).contains("not a job id"), "{body}");
    }

    #[tokio::test]
    async fn cancel_needs_a_mode_and_a_known_job() {
        let server = start().await;
        let id = JobId::random();
        let (status, body) = request(server.addr, "PATCH", &format!("/jobs/{id}"), None, Vec::new()).await;
        assert_eq!(status, 400, "{body}");
        assert!(error_message(&body).contains("mode"), "{body}");
        let (status, body) = request(server.addr, "PATCH", &format!("/jobs/{id}?mode=stop"), None, Vec::new()).await;
        assert_eq!(status, 400, "{body}");
        let (status, body) = request(server.addr, "PATCH", &format!("/jobs/{id}?mode=cancel"), None, Vec::new()).await;
        assert_eq!(status, 404, "{body}");
        let (status, body) = request(server.addr, "PATCH", "/jobs/nope?mode=cancel", None, Vec::new()).await;
        assert_eq!(status, 400, "{body}");
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_answer_json() {
        let server = start().await;
        let (status, body) = request(server.addr, "GET", "/nope", None, Vec::new()).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(error_message(&body), "not found: /nope");
        let (status, body) = request(server.addr, "DELETE", "/jobs", None, Vec::new()).await;
        assert_eq!(status, 405, "{body}");
        assert!(error_message(&body).contains("DELETE"), "{body}");
    }
}
