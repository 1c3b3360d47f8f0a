//! Flink's metric routes: `GET /jobs/{id}/metrics` and `GET /taskmanagers/{id}/metrics`. Without
//! `get`, the names of the metrics available; with `get=a,b`, `[{"id", "value"}]` for those of
//! them that exist (values as strings, as Flink gives them); unknown names are left out.

use super::{ApiError, ApiResult, AppState, job_id};
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;

/// The answer for `metrics` (name, value), given the query.
fn answer(query: &HashMap<String, String>, metrics: Vec<(&str, f64)>) -> Json<Value> {
    let Some(get) = query.get("get") else {
        return Json(metrics.iter().map(|(name, _)| json!({ "id": name })).collect());
    };
    let wanted: Vec<&str> = get.split(',').map(str::trim).filter(|n| !n.is_empty()).collect();
    let values = metrics
        .iter()
        .filter(|(name, _)| wanted.contains(name))
        .map(|(name, value)| json!({ "id": name, "value": format_value(*value) }))
        .collect();
    Json(values)
}

/// A value as Flink prints it: integers without a fraction.
fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 9.0e15 { format!("{}", value as i64) } else { value.to_string() }
}

/// Flink's `GET /jobs/:jobid/metrics[?get=...]`: the job metrics of
/// [`crate::metrics::JOB_METRICS`] (those checkpointing gives only when it is on).
pub(super) async fn job_metrics(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let id = job_id(id?)?;
    let Query(query) = query?;
    let view = state.rest.jobmanager.view(id)?;
    let metrics = crate::metrics::JOB_METRICS.iter().filter_map(|m| Some((m.name, (m.value)(&view)?))).collect();
    Ok(answer(&query, metrics))
}

/// Flink's `GET /taskmanagers/:taskmanagerid/metrics[?get=...]`: what the taskmanager's process
/// uses (as of its last heartbeat; Weir's process figures in place of the JVM's) and its slots.
pub(super) async fn taskmanager_metrics(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Path(id) = id?;
    let Query(query) = query?;
    let taskmanagers = state.rest.jobmanager.taskmanagers();
    let tm = taskmanagers.iter().find(|tm| tm.id == id).ok_or_else(|| {
        let shown: String = id.chars().take(80).collect();
        ApiError::new(StatusCode::NOT_FOUND, format!("no taskmanager '{shown}' is registered"))
    })?;
    // The local mini-cluster's taskmanager runs in this process.
    let process =
        tm.process.or_else(|| if tm.data_address.is_empty() { weir_runtime::metrics::process_stats() } else { None });
    let mut metrics =
        vec![("Status.Slots.Total", f64::from(tm.slots)), ("Status.Slots.Free", f64::from(tm.free_slots))];
    if let Some(p) = process {
        metrics.extend([
            ("Status.Process.Memory.RSS", p.rss_bytes as f64),
            ("Status.Process.CPU.Time", p.cpu_time_ms as f64),
            ("Status.Process.Threads.Count", p.threads as f64),
        ]);
    }
    Ok(answer(&query, metrics))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_picks_known_metrics_and_prints_integers_as_flink_does() {
        let metrics = vec![("numRestarts", 2.0), ("lastCheckpointDuration", 12.5)];
        let all = answer(&HashMap::new(), metrics.clone()).0;
        assert_eq!(all, json!([{ "id": "numRestarts" }, { "id": "lastCheckpointDuration" }]));
        let query = HashMap::from([("get".to_owned(), "numRestarts, lastCheckpointDuration,unknown".to_owned())]);
        let picked = answer(&query, metrics).0;
        assert_eq!(
            picked,
            json!([{ "id": "numRestarts", "value": "2" }, { "id": "lastCheckpointDuration", "value": "12.5" }])
        );
    }
}
