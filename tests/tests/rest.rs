//! Flink's checkpoint and metric routes on a live cluster, asserted against Flink's field names:
//! `/jobs/{id}/checkpoints` (counts, summary, latest, history), `.../details/{id}`, the manual
//! trigger and its status, `.../config`, `/jobs/{id}/metrics` and `/taskmanagers/{id}/metrics`.

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use weir_tests::cluster::{Cluster, submitted_job_id};
use weir_tests::harness::artifact;

/// The keys of a JSON object.
fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// Flink's `CheckpointStatistics` fields, present in every checkpoint of any status.
const CHECKPOINT_FIELDS: &[&str] = &[
    "className",
    "id",
    "status",
    "is_savepoint",
    "savepointFormat",
    "checkpoint_type",
    "trigger_timestamp",
    "latest_ack_timestamp",
    "checkpointed_size",
    "state_size",
    "end_to_end_duration",
    "alignment_buffered",
    "processed_data",
    "persisted_data",
    "num_subtasks",
    "num_acknowledged_subtasks",
    "tasks",
];

/// Flink's `TaskCheckpointStatistics` fields.
const TASK_FIELDS: &[&str] = &[
    "id",
    "status",
    "latest_ack_timestamp",
    "checkpointed_size",
    "state_size",
    "end_to_end_duration",
    "alignment_buffered",
    "processed_data",
    "persisted_data",
    "num_subtasks",
    "num_acknowledged_subtasks",
];

/// Asserts `c` is a completed checkpoint in Flink's shape whose per-vertex statistics cover
/// `parallelism` (vertex id → subtasks) and add up.
fn assert_completed_checkpoint(c: &Value, parallelism: &[(String, u64)]) {
    let fields = keys(c);
    assert!(fields.is_superset(&set(CHECKPOINT_FIELDS)), "missing fields: {c}");
    assert!(fields.is_superset(&set(&["external_path", "discarded"])), "{c}");
    assert_eq!((c["className"].as_str(), c["status"].as_str()), (Some("completed"), Some("COMPLETED")), "{c}");
    let id = c["id"].as_u64().unwrap();
    assert!(c["external_path"].as_str().unwrap().ends_with(&format!("/chk-{id}/_metadata")), "{c}");
    let (trigger, ack) = (c["trigger_timestamp"].as_i64().unwrap(), c["latest_ack_timestamp"].as_i64().unwrap());
    assert_eq!(c["end_to_end_duration"].as_i64().unwrap(), ack - trigger, "{c}");
    let vertices: Vec<(String, u64)> =
        c["tasks"].as_object().unwrap().iter().map(|(v, t)| (v.clone(), t["num_subtasks"].as_u64().unwrap())).collect();
    assert_eq!(vertices, parallelism, "one entry per vertex with its subtasks: {c}");
    let total: u64 = parallelism.iter().map(|(_, p)| p).sum();
    assert_eq!((c["num_subtasks"].as_u64(), c["num_acknowledged_subtasks"].as_u64()), (Some(total), Some(total)));
    let mut state_size = 0;
    for task in c["tasks"].as_object().unwrap().values() {
        assert_eq!(keys(task), set(TASK_FIELDS).union(&set(&["alignment_duration"])).cloned().collect(), "{task}");
        assert_eq!((task["id"].as_u64(), task["status"].as_str()), (Some(id), Some("COMPLETED")), "{task}");
        assert_eq!(task["num_acknowledged_subtasks"], task["num_subtasks"], "{task}");
        let task_ack = task["latest_ack_timestamp"].as_i64().unwrap();
        assert!(trigger <= task_ack && task_ack <= ack, "a vertex acknowledged between trigger and completion: {c}");
        state_size += task["state_size"].as_u64().unwrap();
    }
    assert_eq!(c["state_size"].as_u64(), Some(state_size), "the vertices' state adds up: {c}");
}

fn poll<T>(what: &str, cluster: &Cluster, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what} did not happen in 60 s\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn checkpoint_and_metric_routes_answer_in_flinks_shape() {
    let cluster = Cluster::start(&[], &[("tm-1", 4)]);
    let savepoints = tempfile::tempdir().unwrap();
    let out = cluster.weir(&[
        "run",
        artifact("libweir_example_nexmark.so").to_str().unwrap(),
        "-p",
        "2",
        "--detached",
        "--checkpoint-interval",
        "400ms",
        "--",
        "--query",
        "wcount",
        "--events",
        "100000000",
        "--rate",
        "5000",
        "--sink",
        "blackhole",
    ]);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
    let job = submitted_job_id(&out);
    let details = cluster.wait_for_running_subtasks(&job, Duration::from_secs(60));
    let parallelism: Vec<(String, u64)> = details["vertices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["id"].as_str().unwrap().to_owned(), v["parallelism"].as_u64().unwrap()))
        .collect();
    assert_eq!(parallelism.len(), 2, "source and window: {details}");

    // Statistics once two checkpoints completed.
    let report = poll("two completed checkpoints", &cluster, || {
        let (status, report) = cluster.rest_get(&format!("/jobs/{job}/checkpoints"));
        assert_eq!(status, 200, "{report}");
        (report["counts"]["completed"].as_u64()? >= 2).then_some(report)
    });
    assert!(keys(&report).is_superset(&set(&["counts", "summary", "latest", "history"])), "{report}");
    assert_eq!(keys(&report["counts"]), set(&["restored", "total", "in_progress", "completed", "failed"]));
    assert_eq!(report["counts"]["restored"], 0, "a fresh start: {report}");
    let stats = set(&["min", "max", "avg", "p50", "p90", "p95", "p99", "p999"]);
    for quantity in [
        "checkpointed_size",
        "state_size",
        "end_to_end_duration",
        "alignment_buffered",
        "processed_data",
        "persisted_data",
    ] {
        assert_eq!(keys(&report["summary"][quantity]), stats, "summary.{quantity}: {report}");
    }
    let durations = &report["summary"]["end_to_end_duration"];
    assert!(durations["min"].as_i64() <= durations["max"].as_i64(), "{durations}");
    assert!(durations["p50"].as_f64().unwrap() <= durations["p99"].as_f64().unwrap(), "{durations}");
    assert_eq!(keys(&report["latest"]), set(&["completed", "savepoint", "failed", "restored"]));
    assert!(report["latest"]["restored"].is_null() && report["latest"]["savepoint"].is_null(), "{report}");
    assert_completed_checkpoint(&report["latest"]["completed"], &parallelism);
    let history = report["history"].as_array().unwrap();
    let completed: Vec<&Value> = history.iter().filter(|c| c["status"] == "COMPLETED").collect();
    assert!(completed.len() >= 2, "{report}");
    for c in &completed {
        assert_completed_checkpoint(c, &parallelism);
    }
    assert_eq!(completed[0]["id"], report["latest"]["completed"]["id"], "history newest first: {report}");
    let ids: Vec<u64> = history.iter().map(|c| c["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "history newest first: {ids:?}");

    // Details of one checkpoint; an unknown one is 404, a malformed id 400.
    let id = completed[1]["id"].as_u64().unwrap();
    let (status, one) = cluster.rest_get(&format!("/jobs/{job}/checkpoints/details/{id}"));
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["id"], id);
    assert_completed_checkpoint(&one, &parallelism);
    let (status, missing) = cluster.rest_get(&format!("/jobs/{job}/checkpoints/details/999999"));
    assert_eq!(status, 404, "{missing}");
    assert!(missing["errors"][0].as_str().unwrap().contains("no checkpoint 999999"), "{missing}");
    let (status, bad) = cluster.rest_get(&format!("/jobs/{job}/checkpoints/details/latest"));
    assert_eq!(status, 400, "{bad}");

    // A manual checkpoint, polled to completion as Flink's trigger.
    let (status, trigger) = cluster.rest_post(&format!("/jobs/{job}/checkpoints"), &json!({}));
    assert_eq!(status, 202, "{trigger}");
    let request = trigger["request-id"].as_str().unwrap().to_owned();
    let done = poll("the manual checkpoint", &cluster, || {
        let (status, answer) = cluster.rest_get(&format!("/jobs/{job}/checkpoints/{request}"));
        assert_eq!(status, 200, "{answer}");
        (answer["status"]["id"] == "COMPLETED").then_some(answer)
    });
    assert_eq!(done["operation"]["checkpointId"].as_u64().map(|c| c.to_string()), Some(request.clone()), "{done}");
    let (status, refused) =
        cluster.rest_post(&format!("/jobs/{job}/checkpoints"), &json!({ "checkpointType": "FULL" }));
    assert_eq!(status, 400, "{refused}");
    assert!(refused["errors"][0].as_str().unwrap().contains("CONFIGURED"), "{refused}");

    // A savepoint shows as latest.savepoint with its directory.
    let (status, trigger) = cluster.rest_post(
        &format!("/jobs/{job}/savepoints"),
        &json!({ "target-directory": savepoints.path().to_str().unwrap() }),
    );
    assert_eq!(status, 202, "{trigger}");
    let request = trigger["request-id"].as_str().unwrap().to_owned();
    let location = poll("the savepoint", &cluster, || {
        let (_, answer) = cluster.rest_get(&format!("/jobs/{job}/savepoints/{request}"));
        answer["operation"]["location"].as_str().map(str::to_owned)
    });
    let (_, report) = cluster.rest_get(&format!("/jobs/{job}/checkpoints"));
    let savepoint = &report["latest"]["savepoint"];
    assert_eq!(
        (&savepoint["is_savepoint"], &savepoint["checkpoint_type"], &savepoint["savepointFormat"]),
        (&json!(true), &json!("SAVEPOINT"), &json!("CANONICAL")),
        "{report}"
    );
    assert_eq!(savepoint["external_path"].as_str(), Some(location.as_str()), "{report}");
    assert_eq!(savepoint["discarded"], false, "{savepoint}");

    let (status, config) = cluster.rest_get(&format!("/jobs/{job}/checkpoints/config"));
    assert_eq!(status, 200, "{config}");
    assert_eq!((config["mode"].as_str(), config["interval"].as_i64()), (Some("exactly_once"), Some(400)), "{config}");
    assert!(keys(&config).is_superset(&set(&["timeout", "min_pause", "max_concurrent", "externalization"])));

    // Job metrics: the names, then values as strings; unknown names are left out.
    let (status, names) = cluster.rest_get(&format!("/jobs/{job}/metrics"));
    assert_eq!(status, 200, "{names}");
    let names: BTreeSet<String> = names.as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().into()).collect();
    assert!(names.is_superset(&set(&["uptime", "numRestarts", "lastCheckpointDuration", "totalNumberOfCheckpoints"])));
    let (status, values) =
        cluster.rest_get(&format!("/jobs/{job}/metrics?get=numRestarts,numberOfCompletedCheckpoints,nonsense"));
    assert_eq!(status, 200, "{values}");
    let values = values.as_array().unwrap();
    assert_eq!(values.len(), 2, "{values:?}");
    assert_eq!(values[0], json!({ "id": "numRestarts", "value": "0" }));
    let completed: u64 = values[1]["value"].as_str().unwrap().parse().unwrap();
    assert!(completed >= 3, "two periodic, one manual, one savepoint: {values:?}");

    // Taskmanager metrics, from its heartbeats.
    let rss = poll("the taskmanager's process metrics", &cluster, || {
        let (status, values) = cluster
            .rest_get("/taskmanagers/tm-1/metrics?get=Status.Process.Memory.RSS,Status.Slots.Total,Status.Slots.Free");
        assert_eq!(status, 200, "{values}");
        let values = values.as_array()?.clone();
        (values.len() == 3).then_some(values)
    });
    assert_eq!(rss[0], json!({ "id": "Status.Slots.Total", "value": "4" }));
    assert_eq!(rss[1], json!({ "id": "Status.Slots.Free", "value": "2" }));
    let bytes: u64 = rss[2]["value"].as_str().unwrap().parse().unwrap();
    assert!(bytes > 1 << 20, "{rss:?}");
    let (status, missing) = cluster.rest_get("/taskmanagers/tm-9/metrics");
    assert_eq!(status, 404, "{missing}");

    assert_eq!(cluster.weir(&["cancel", &job]).code, Some(0));
    let (status, off) = cluster.rest_get("/jobs/00000000000000000000000000000000/checkpoints");
    assert_eq!(status, 404, "{off}");
}
