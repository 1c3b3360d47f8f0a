//! Jobmanager high availability with real processes: two `weir-jobmanager --ha` on one storage
//! elect a leader; the standby is ready too and forwards REST requests and RPC connections to
//! the leader; when the leader is SIGKILLed the standby takes over within the lease and resumes
//! the leader's jobs from storage; a leader paused past its lease (SIGSTOP) and resumed
//! (SIGCONT) finds itself deposed and exits.

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

/// Submits a long-running checkpointed wcount job (2000 bids/s, blackhole sink) and waits for
/// its first completed checkpoint; returns its id.
fn run_endless_wcount(cluster: &Cluster) -> String {
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
    job
}

/// Whether the jobmanager at `rest` leads (a standby's `/readyz` says `standby`).
fn leads(rest: &str) -> bool {
    let (status, body) = get(&format!("{rest}/readyz"));
    status == 200 && body["status"] == "ok"
}

/// Waits (up to 30 s) until the jobmanager at `rest` leads; the time it took.
fn wait_leading(rest: &str, cluster: &Cluster) -> Duration {
    let started = Instant::now();
    while !leads(rest) {
        assert!(started.elapsed() < Duration::from_secs(30), "{rest} did not take over\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

#[test]
fn a_paused_leader_that_comes_back_finds_itself_deposed_and_exits() {
    let mut cluster = Cluster::start(&["--ha"], &[("tm-1", 2)]);
    let (standby, _) = cluster.start_standby_jobmanager("jobmanager-2");
    cluster.signal_jobmanager("STOP");
    wait_leading(&standby, &cluster);
    cluster.signal_jobmanager("CONT");
    let code = cluster.wait_for_jobmanager_exit(Duration::from_secs(10));
    assert_eq!(code, Some(1), "the resumed leader exits\n{}", cluster.logs());
    let stderr = cluster.jobmanager_stderr();
    assert!(stderr.contains("leadership of epoch 1 lost"), "{stderr}");
    assert!(leads(&standby), "the new leader goes on");
}

#[test]
fn a_standby_jobmanager_takes_over_a_killed_leader_and_resumes_its_jobs() {
    let mut cluster = Cluster::start(&["--ha"], &[("tm-1", 2)]);
    let leader = cluster.rest_url().to_owned();
    assert_eq!(get(&format!("{leader}/readyz")).0, 200, "the first jobmanager leads");
    let (standby, _) = cluster.start_standby_jobmanager("jobmanager-2");
    assert_eq!(get(&format!("{standby}/healthz")).0, 200, "the standby is alive");
    let (status, body) = get(&format!("{standby}/readyz"));
    assert_eq!(status, 200, "a standby is ready, as the leader's proxy: {body}");
    assert_eq!(body["status"], "standby", "{body}");
    assert_eq!(body["leader"]["rest_url"], leader.as_str(), "{body}");

    // Submitted through the standby: the plugin upload is forwarded, the answers are the leader's.
    cluster.use_rest_url(&standby);
    let job = run_endless_wcount(&cluster);
    let (status, listed) = get(&format!("{leader}/jobs"));
    assert_eq!(status, 200);
    assert_eq!(listed["jobs"][0]["id"], job.as_str(), "the leader runs it: {listed}");
    let (status, forwarded) = get(&format!("{standby}/jobs"));
    assert_eq!(status, 200, "{forwarded}");
    let same = |v: &serde_json::Value| (v["jobs"][0]["id"].clone(), v["jobs"][0]["start_time"].clone());
    assert_eq!(same(&forwarded), same(&listed), "the standby answers as the leader: {forwarded}");

    cluster.kill_jobmanager();
    let failover = wait_leading(&standby, &cluster);
    eprintln!("the standby leads {failover:?} after the leader was killed");
    assert!(failover < Duration::from_secs(10), "failover took {failover:?}");
    let (status, details) = get(&format!("{standby}/jobs/{job}"));
    assert_eq!(status, 200, "the new leader knows the job: {details}\n{}", cluster.logs());
    let state = details["state"].as_str().unwrap_or_default();
    assert!(!["FINISHED", "FAILED", "CANCELED"].contains(&state), "the job was resumed, not ended: {details}");
}

/// Kubernetes stops a pod with SIGTERM: the leader hands over, and the standby leads within
/// its next look at the storage (1 s) instead of after a whole lease (6 s).
#[test]
fn a_leader_stopped_with_sigterm_hands_over_at_once() {
    let mut cluster = Cluster::start(&["--ha"], &[("tm-1", 2)]);
    let (standby, _) = cluster.start_standby_jobmanager("jobmanager-2");
    let job = run_endless_wcount(&cluster);
    cluster.signal_jobmanager("TERM");
    let stopped = Instant::now();
    assert_eq!(cluster.wait_for_jobmanager_exit(Duration::from_secs(10)), Some(0), "{}", cluster.logs());
    wait_leading(&standby, &cluster);
    let took = stopped.elapsed();
    eprintln!("the standby leads {took:?} after the leader got SIGTERM");
    assert!(took < Duration::from_secs(4), "hand-over took {took:?}\n{}", cluster.logs());
    assert!(cluster.jobmanager_stderr().contains("handed the leadership over"), "{}", cluster.logs());
    let (status, details) = get(&format!("{standby}/jobs/{job}"));
    assert_eq!(status, 200, "the new leader knows the job: {details}\n{}", cluster.logs());
    let state = details["state"].as_str().unwrap_or_default();
    assert!(!["FINISHED", "FAILED", "CANCELED"].contains(&state), "the job was resumed, not ended: {details}");
}

/// The id of `job`'s newest completed checkpoint, as the jobmanager the CLI talks to says (0
/// when none or unreachable).
fn latest_checkpoint(cluster: &Cluster, job: &str) -> u64 {
    let out = cluster.weir(&["checkpoints", job, "--json"]);
    serde_json::from_str::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["latest"]["completed"]["id"].as_u64())
        .unwrap_or(0)
}

/// Taskmanagers and the CLI reach the jobmanagers through a Service (here a loopback stand-in
/// that forwards to the ready one, as kube-proxy does): when the leader is SIGKILLed, the
/// taskmanagers register with the new leader through the same address and the job checkpoints
/// again; the time from the kill to the first new checkpoint is printed.
#[test]
fn taskmanagers_follow_the_new_leader_through_a_service_and_the_job_runs_again() {
    use weir_tests::service::{Backend, Service};
    let mut cluster = Cluster::start(&["--ha"], &[]);
    let (standby_rest, standby_rpc) = cluster.start_standby_jobmanager("jobmanager-2");
    let host = |url: &str| url.trim_start_matches("http://").to_owned();
    let leaders = [(cluster.rest_url().to_owned(), cluster.rpc_url().to_owned()), (standby_rest, standby_rpc)];
    let ready = |rest: &str| format!("{rest}/readyz");
    let rest = Service::start(leaders.iter().map(|(r, _)| Backend { ready: ready(r), target: host(r) }).collect());
    let rpc = Service::start(leaders.iter().map(|(r, p)| Backend { ready: ready(r), target: host(p) }).collect());
    cluster.use_rest_url(&rest.url());
    cluster.start_taskmanager_at("tm-1", 2, &rpc.url());
    cluster.wait_for_taskmanagers(&["tm-1"]);
    let job = run_endless_wcount(&cluster);
    let before = latest_checkpoint(&cluster, &job);
    cluster.kill_jobmanager();
    let killed = Instant::now();
    loop {
        if latest_checkpoint(&cluster, &job) > before {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(60), "the job did not run again\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("the job checkpoints again {:?} after the leader was killed", killed.elapsed());
}
