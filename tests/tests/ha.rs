//! Jobmanager high availability with real processes: two `weir-jobmanager --ha` on one storage
//! elect a leader; the standby answers only its liveness probe and names the leader; when the
//! leader is SIGKILLed the standby takes over within the lease and resumes the leader's jobs
//! from storage; a leader paused past its lease (SIGSTOP) and resumed (SIGCONT) finds itself
//! deposed and exits.

use std::time::{Duration, Instant};
use weir_tests::cluster::{Cluster, submitted_job_id};
use weir_tests::harness::artifact;

/// `GET url` with its status and JSON body (status 0 when unreachable).
fn get(url: &str) -> (u16, serde_json::Value) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        match reqwest::get(url).await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or(serde_json::Value::Null))
            }
            Err(_) => (0, serde_json::Value::Null),
        }
    })
}

/// Waits (up to 30 s) until the jobmanager at `rest` is ready; the time it took.
fn wait_ready(rest: &str, cluster: &Cluster) -> Duration {
    let started = Instant::now();
    while get(&format!("{rest}/readyz")).0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(30), "{rest} did not take over\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

#[test]
fn a_paused_leader_that_comes_back_finds_itself_deposed_and_exits() {
    let mut cluster = Cluster::start(&["--ha"], &[("tm-1", 2)]);
    let standby = cluster.start_standby_jobmanager("jobmanager-2");
    cluster.signal_jobmanager("STOP");
    wait_ready(&standby, &cluster);
    cluster.signal_jobmanager("CONT");
    let code = cluster.wait_for_jobmanager_exit(Duration::from_secs(10));
    assert_eq!(code, Some(1), "the resumed leader exits\n{}", cluster.logs());
    let stderr = cluster.jobmanager_stderr();
    assert!(stderr.contains("leadership of epoch 1 lost"), "{stderr}");
    assert_eq!(get(&format!("{standby}/readyz")).0, 200, "the new leader goes on");
}

#[test]
fn a_standby_jobmanager_takes_over_a_killed_leader_and_resumes_its_jobs() {
    let mut cluster = Cluster::start(&["--ha"], &[("tm-1", 2)]);
    let leader = cluster.rest_url().to_owned();
    assert_eq!(get(&format!("{leader}/readyz")).0, 200, "the first jobmanager leads");
    let standby = cluster.start_standby_jobmanager("jobmanager-2");
    assert_eq!(get(&format!("{standby}/healthz")).0, 200, "the standby is alive");
    let (status, body) = get(&format!("{standby}/readyz"));
    assert_eq!(status, 503, "the standby is not ready: {body}");
    assert_eq!(body["leader"]["rest_url"], leader.as_str(), "{body}");
    let (status, body) = get(&format!("{standby}/jobs"));
    assert_eq!(status, 503);
    let error = body["errors"][0].as_str().unwrap_or_default();
    assert!(error.contains("standby") && error.contains(&leader), "{body}");

    let out = cluster.weir(&[
        "run",
        artifact("libweir_example_nexmark.so").to_str().unwrap(),
        "-p",
        "2",
        "--detached",
        "--checkpoint-interval",
        "300ms",
        "--",
        "--query",
        "wcount",
        "--events",
        "100000000",
        "--rate",
        "2000",
        "--sink",
        "blackhole",
    ]);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
    let job = submitted_job_id(&out);
    cluster.wait_for_progress(&job, 1);

    cluster.kill_jobmanager();
    let failover = wait_ready(&standby, &cluster);
    eprintln!("the standby leads {failover:?} after the leader was killed");
    assert!(failover < Duration::from_secs(10), "failover took {failover:?}");
    let (status, details) = get(&format!("{standby}/jobs/{job}"));
    assert_eq!(status, 200, "the new leader knows the job: {details}\n{}", cluster.logs());
    let state = details["state"].as_str().unwrap_or_default();
    assert!(!["FINISHED", "FAILED", "CANCELED"].contains(&state), "the job was resumed, not ended: {details}");
}
