//! Prometheus metrics of a real cluster: `/metrics` of the jobmanager and of a taskmanager,
//! scraped while a backpressured job (the slow-sink test job) and a job with event time (nexmark
//! wcount) run with checkpoints, parsed by the Prometheus project's own OpenMetrics parser
//! (`scripts/parse_metrics.py`), with Flink's names and labels.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weir_tests::cluster::{Cluster, submitted_job_id};
use weir_tests::harness::artifact;
use weir_tests::kube::repo_root;

/// One parsed sample.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// `GET url` as text.
fn scrape(url: &str) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let response = reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(response.status().as_u16(), 200, "GET {url}");
        let content_type = response.headers()["content-type"].to_str().unwrap_or_default().to_owned();
        assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
        response.text().await.expect("the body")
    })
}

/// Parses `text` with the Prometheus project's parser; panics with its message when invalid.
fn parse(text: &str) -> Vec<Sample> {
    let python = weir_tests::s3::moto_server_binary().parent().expect("the venv's bin").join("python");
    let mut child = Command::new(&python)
        .arg(repo_root().join("scripts/parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {} (run ./scripts/setup.sh): {e}", python.display()));
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write the scrape");
    let out = child.wait_with_output().expect("the parser's output");
    assert!(out.status.success(), "{}\n{text}", String::from_utf8_lossy(&out.stderr));
    let samples: Vec<Value> = serde_json::from_slice(&out.stdout).expect("the parser's JSON");
    samples
        .into_iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap_or_default().to_owned(),
            labels: s["labels"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
                .unwrap_or_default(),
            value: s["value"].as_f64().unwrap_or(f64::NAN),
        })
        .collect()
}

fn find<'a>(samples: &'a [Sample], name: &str, job: &str) -> Vec<&'a Sample> {
    samples.iter().filter(|s| s.name == name && s.labels.get("job_id").map(String::as_str) == Some(job)).collect()
}

/// Scrapes `url` until `check` finds what it wants in the parsed samples (at most 60 s).
fn scrape_until<T>(url: &str, what: &str, cluster: &Cluster, check: impl Fn(&[Sample]) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let samples = parse(&scrape(url));
        if let Some(found) = check(&samples) {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not seen at {url}\n{samples:#?}\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn the_jobmanager_and_a_taskmanager_serve_flinks_metrics_of_a_backpressured_job() {
    let cluster = Cluster::start(&[], &[("tm-1", 4)]);
    let output = tempfile::tempdir().unwrap();
    let slow = cluster.weir(&[
        "run",
        artifact("libweir_test_jobs.so").to_str().unwrap(),
        "-p",
        "2",
        "--detached",
        "--checkpoint-interval",
        "300ms",
        "--",
        "--job",
        "slow-sink",
        "--records",
        "100000",
        "--payload-bytes",
        "1024",
        "--sleep-every",
        "2",
        "--output",
        output.path().to_str().unwrap(),
    ]);
    assert_eq!(slow.code, Some(0), "{slow:?}\n{}", cluster.logs());
    let slow = submitted_job_id(&slow);
    let timed = cluster.weir(&[
        "run",
        artifact("libweir_example_nexmark.so").to_str().unwrap(),
        // Two tasks (the key-by is an exchange): the window task's input watermark is the
        // source task's output watermark.
        "-p",
        "2",
        "--detached",
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
    assert_eq!(timed.code, Some(0), "{timed:?}\n{}", cluster.logs());
    let timed = submitted_job_id(&timed);

    let taskmanager = format!("{}/metrics", cluster.taskmanager_http("tm-1"));
    // The generator of the slow job waits for room in its outputs: backpressured.
    let producer = scrape_until(&taskmanager, "a backpressured producer", &cluster, |samples| {
        find(samples, "flink_taskmanager_job_task_isBackPressured", &slow).into_iter().find(|s| s.value == 1.0).cloned()
    });
    let labels: Vec<&str> = producer.labels.keys().map(String::as_str).collect();
    assert_eq!(
        labels,
        ["job_id", "job_name", "subtask_index", "task_attempt_num", "task_id", "task_name", "tm_id"],
        "Flink's task labels: {producer:?}"
    );
    assert_eq!(producer.labels["tm_id"], "tm-1");
    assert!(producer.labels["task_name"].contains("numbers"), "the producer is the source: {producer:?}");
    let samples = scrape_until(&taskmanager, "time shares of a minute", &cluster, |samples| {
        let producer_busy = find(samples, "flink_taskmanager_job_task_backPressuredTimeMsPerSecond", &slow)
            .into_iter()
            .any(|s| s.labels["task_name"] == producer.labels["task_name"] && s.value > 100.0);
        producer_busy.then(|| samples.to_vec())
    });
    for sample in find(&samples, "flink_taskmanager_job_task_busyTimeMsPerSecond", &slow) {
        let share = |name: &str| {
            find(&samples, name, &slow).into_iter().find(|s| s.labels == sample.labels).map_or(f64::NAN, |s| s.value)
        };
        let total = sample.value
            + share("flink_taskmanager_job_task_idleTimeMsPerSecond")
            + share("flink_taskmanager_job_task_backPressuredTimeMsPerSecond");
        assert!((total - 1000.0).abs() < 1.0, "busy + idle + backpressured = 1000 ms/s: {total} for {sample:?}");
    }
    let records_out: f64 =
        find(&samples, "flink_taskmanager_job_task_numRecordsOut", &slow).iter().map(|s| s.value).sum();
    assert!(records_out > 0.0, "records flow");
    // One taskmanager: no bytes cross the network, but the series are there (0).
    assert!(!find(&samples, "flink_taskmanager_job_task_numBytesOut", &slow).is_empty());

    // The user metrics of the slow job's keyed function, under Flink's operator scope: all of
    // its single key's elements go to one subtask, whose counter counts them; the gauge holds the
    // latest element, the histogram the last digits (0 to 9).
    let samples = scrape_until(&taskmanager, "the job's own metrics", &cluster, |samples| {
        let counted = find(samples, "flink_taskmanager_job_task_operator_countedRecords", &slow);
        counted.iter().any(|s| s.value > 0.0).then(|| samples.to_vec())
    });
    let counted = find(&samples, "flink_taskmanager_job_task_operator_countedRecords", &slow);
    assert_eq!(counted.len(), 2, "one series per subtask: {counted:?}");
    assert!(counted.iter().all(|s| s.labels["operator_name"] == "count and sum"), "{counted:?}");
    let busy = counted.iter().find(|s| s.value > 0.0).unwrap();
    assert!(busy.value <= 100_000.0, "{busy:?}");
    let subtask = |s: &Sample| s.labels["subtask_index"].clone();
    let last = find(&samples, "flink_taskmanager_job_task_operator_lastSequence", &slow);
    let last = last.iter().find(|s| subtask(s) == subtask(busy)).expect("the gauge of the busy subtask");
    assert!((0.0..100_000.0).contains(&last.value), "{last:?}");
    let quantiles: Vec<&Sample> = find(&samples, "flink_taskmanager_job_task_operator_sequenceLastDigit", &slow)
        .into_iter()
        .filter(|s| subtask(s) == subtask(busy))
        .collect();
    let mut levels: Vec<&str> = quantiles.iter().map(|s| s.labels["quantile"].as_str()).collect();
    levels.sort_unstable();
    assert_eq!(levels, ["0.5", "0.75", "0.95", "0.98", "0.99", "0.999"], "{quantiles:?}");
    assert!(quantiles.iter().all(|s| (0.0..=9.0).contains(&s.value)), "{quantiles:?}");
    let count = find(&samples, "flink_taskmanager_job_task_operator_sequenceLastDigit_count", &slow);
    let count = count.iter().find(|s| subtask(s) == subtask(busy)).unwrap();
    // Read after the counter; the element being processed may be counted and not yet recorded.
    assert!(count.value + 1.0 >= busy.value, "every element went into the histogram: {count:?} {busy:?}");

    // Each task's share of the checkpoints: the keyed count-and-sum task has state.
    scrape_until(&taskmanager, "the tasks' checkpoint sizes", &cluster, |samples| {
        let full = find(samples, "flink_taskmanager_job_task_lastCheckpointFullSize", &slow);
        let incremental = find(samples, "flink_taskmanager_job_task_lastCheckpointSize", &slow);
        let keyed = full.iter().find(|s| s.labels["task_name"].contains("count and sum") && s.value > 0.0)?;
        incremental.iter().any(|s| s.labels == keyed.labels && s.value > 0.0 && s.value <= keyed.value).then_some(())
    });

    // The same through REST, in Flink's shape: the source vertex (0) is backpressured.
    let deadline = Instant::now() + Duration::from_secs(30);
    let pressure = loop {
        let (status, body) = cluster.rest_get(&format!("/jobs/{slow}/vertices/0/backpressure"));
        assert_eq!(status, 200, "{body}");
        if body["backpressure-level"] == "high" {
            break body;
        }
        assert!(Instant::now() < deadline, "the source vertex never showed high backpressure: {body}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(pressure["status"], "ok", "{pressure}");
    assert!(pressure["end-timestamp"].as_u64().is_some_and(|t| t > 0), "{pressure}");
    let subtasks = pressure["subtasks"].as_array().expect("subtasks");
    assert_eq!(subtasks.len(), 2, "{pressure}");
    for subtask in subtasks {
        let sum: f64 =
            ["ratio", "busyRatio", "idleRatio"].iter().map(|k| subtask[*k].as_f64().unwrap_or(f64::NAN)).sum();
        assert!((sum - 1.0).abs() < 0.01, "the shares add up to 1: {subtask}");
        assert!(subtask["backpressure-level"].is_string() && subtask["attempt-number"] == 0, "{subtask}");
    }
    assert!(subtasks.iter().any(|s| s["ratio"].as_f64().unwrap_or(0.0) > 0.5), "{pressure}");
    let (status, body) = cluster.rest_get(&format!("/jobs/{slow}/vertices/99/backpressure"));
    assert_eq!(status, 404, "{body}");

    // Flink's overview of jobs and of a taskmanager.
    let (status, overview) = cluster.rest_get("/jobs/overview");
    assert_eq!(status, 200, "{overview}");
    let job = overview["jobs"].as_array().and_then(|jobs| jobs.iter().find(|j| j["jid"] == slow.as_str())).cloned();
    let job = job.unwrap_or_else(|| panic!("the slow job is listed: {overview}"));
    assert_eq!((job["state"].as_str(), job["end-time"].as_i64()), (Some("RUNNING"), Some(-1)), "{job}");
    let total = job["tasks"]["total"].as_u64().unwrap_or(0);
    assert!(total >= 2 && job["tasks"]["running"] == total, "{job}");
    for key in ["name", "start-time", "duration", "last-modification"] {
        assert!(!job[key].is_null(), "{key}: {job}");
    }
    let (status, details) = cluster.rest_get(&format!("/jobs/{slow}"));
    assert_eq!(status, 200, "{details}");
    assert_eq!((details["end-time"].as_i64(), details["state"].as_str()), (Some(-1), Some("RUNNING")), "{details}");
    assert!(details["now"].as_u64().is_some_and(|n| n >= details["start-time"].as_u64().unwrap_or(u64::MAX)));
    assert!(details["timestamps"]["CREATED"].is_u64(), "{details}");
    for vertex in details["vertices"].as_array().cloned().unwrap_or_default() {
        assert_eq!(vertex["status"], "RUNNING", "{vertex}");
        assert!(vertex["id"].is_string(), "vertex ids are strings, as in the plan: {vertex}");
        assert_eq!(vertex["tasks"]["total"], vertex["parallelism"], "{vertex}");
        assert_eq!(vertex["tasks"]["running"], vertex["parallelism"], "{vertex}");
        assert!(vertex["metrics"]["read-records"].is_u64() && vertex["metrics"]["write-records"].is_u64());
    }
    let (status, tm) = cluster.rest_get("/taskmanagers/tm-1");
    assert_eq!(status, 200, "{tm}");
    assert_eq!(
        (tm["id"].as_str(), tm["slotsNumber"].as_u64(), tm["freeSlots"].as_u64()),
        (Some("tm-1"), Some(4), Some(0))
    );
    assert!(tm["timeSinceLastHeartbeat"].as_u64().is_some_and(|ms| ms < 5000), "{tm}");

    // The event-time job's plan in Flink's shape: the source vertex, then the window vertex
    // fed through the key-by (a hash exchange), each at parallelism 2.
    let (status, plan) = cluster.rest_get(&format!("/jobs/{timed}/plan"));
    assert_eq!(status, 200, "{plan}");
    let nodes = plan["plan"]["nodes"].as_array().unwrap_or_else(|| panic!("plan.nodes: {plan}"));
    assert_eq!(nodes.len(), 2, "{plan}");
    assert_eq!((nodes[0]["id"].as_str(), nodes[0]["parallelism"].as_u64()), (Some("0"), Some(2)), "{plan}");
    assert!(nodes[0]["inputs"].as_array().is_some_and(Vec::is_empty), "the source has no inputs: {plan}");
    let input = &nodes[1]["inputs"][0];
    assert_eq!((input["id"].as_str(), input["ship_strategy"].as_str()), (Some("0"), Some("HASH")), "{plan}");
    assert_eq!(plan["plan"]["name"], "nexmark wcount", "{plan}");

    // The window vertex's subtasks and their input watermarks through REST (Flink's shapes).
    let (status, vertex) = cluster.rest_get(&format!("/jobs/{timed}/vertices/1"));
    assert_eq!(status, 200, "{vertex}");
    let subtasks = vertex["subtasks"].as_array().cloned().unwrap_or_default();
    assert_eq!((vertex["parallelism"].as_u64(), subtasks.len()), (Some(2), 2), "{vertex}");
    for subtask in &subtasks {
        assert_eq!((subtask["status"].as_str(), subtask["taskmanager-id"].as_str()), (Some("RUNNING"), Some("tm-1")));
        assert!(subtask["metrics"]["read-records"].is_u64(), "{subtask}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, marks) = cluster.rest_get(&format!("/jobs/{timed}/vertices/1/watermarks"));
        assert_eq!(status, 200, "{marks}");
        let marks = marks.as_array().cloned().unwrap_or_default();
        assert_eq!(marks.len(), 2, "{marks:?}");
        let values: Vec<i64> = marks.iter().filter_map(|m| m["value"].as_str()?.parse().ok()).collect();
        if values.len() == 2 && values.iter().all(|v| *v > 0) {
            assert_eq!(marks[0]["id"], "0.currentInputWatermark");
            break;
        }
        assert!(Instant::now() < deadline, "no input watermarks through REST: {marks:?}");
        std::thread::sleep(Duration::from_millis(300));
    }

    // Event time: the window task's input watermark and the source's output watermark advance.
    scrape_until(&taskmanager, "watermarks of the event-time job", &cluster, |samples| {
        let input = find(samples, "flink_taskmanager_job_task_currentInputWatermark", &timed);
        let output = find(samples, "flink_taskmanager_job_task_currentOutputWatermark", &timed);
        let lag = find(samples, "flink_taskmanager_job_task_watermarkLag", &timed);
        (input.iter().any(|s| s.value > 0.0) && output.iter().any(|s| s.value > 0.0) && !lag.is_empty()).then_some(())
    });

    // The same per operator of the window task's chain: the window (the head) and the sink
    // chained after it, which gets the watermarks the window passes on (never ahead of it).
    scrape_until(&taskmanager, "watermarks per operator", &cluster, |samples| {
        let marks = find(samples, "flink_taskmanager_job_task_operator_currentInputWatermark", &timed);
        let lags = find(samples, "flink_taskmanager_job_task_operator_watermarkLag", &timed);
        let of = |operator: &str| -> Vec<&Sample> {
            marks.iter().copied().filter(|s| s.labels["operator_name"] == operator).collect()
        };
        let (window, sink) = (of("wcount bids per auction and window"), of("wcount sink"));
        let ready = window.len() == 2 && sink.len() == 2 && window.iter().chain(&sink).all(|s| s.value > 0.0);
        if !ready {
            return None;
        }
        for w in &window {
            let s = sink.iter().find(|s| s.labels["subtask_index"] == w.labels["subtask_index"])?;
            assert!(s.value <= w.value, "the sink's input watermark is not ahead of the window's: {s:?} {w:?}");
        }
        assert_eq!(lags.len(), marks.len(), "a lag per operator watermark: {lags:?}");
        Some(())
    });

    // The jobmanager: the slow job's checkpoints and the cluster's slots.
    let jobmanager = format!("{}/metrics", cluster.rest_url());
    let samples = scrape_until(&jobmanager, "completed checkpoints", &cluster, |samples| {
        find(samples, "flink_jobmanager_job_numberOfCompletedCheckpoints", &slow)
            .first()
            .is_some_and(|s| s.value >= 2.0)
            .then(|| samples.to_vec())
    });
    let one = |name: &str| {
        let found = find(&samples, name, &slow);
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        found[0].clone()
    };
    assert!(one("flink_jobmanager_job_lastCheckpointDuration").value >= 0.0);
    assert!(one("flink_jobmanager_job_lastCheckpointFullSize").value > 0.0, "the slow job's keyed state");
    assert_eq!(one("flink_jobmanager_job_numRestarts").value, 0.0);
    assert!(one("flink_jobmanager_job_uptime").value > 0.0);
    assert_eq!(one("flink_jobmanager_job_uptime").labels["job_name"], "test slow-sink");
    let gauge = |name: &str| samples.iter().find(|s| s.name == name).map(|s| s.value);
    assert_eq!(gauge("flink_jobmanager_numRegisteredTaskManagers"), Some(1.0));
    assert_eq!(gauge("flink_jobmanager_taskSlotsTotal"), Some(4.0));
    assert_eq!(gauge("flink_jobmanager_numRunningJobs"), Some(2.0));
    assert!(gauge("process_resident_memory_bytes").is_some_and(|b| b > 1e6));
    assert!(samples.iter().any(|s| s.name == "process_cpu_seconds_total"), "a counter's samples end in _total");
    for job in [&slow, &timed] {
        assert_eq!(cluster.weir(&["cancel", job]).code, Some(0));
    }
}
