//! Fault injection against a real cluster (built with the `failpoints` feature; run by
//! `scripts/test.sh` in a step of its own): storage errors and latency, dropped and duplicated
//! reports, and crashes at the exact points between a checkpoint's completion and its commit.
//! Every run must still commit exactly the reference output and leave only the retained
//! checkpoints' files behind.
#![cfg(feature = "failpoints")]

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use weir_tests::cluster::{Cluster, FAULT_TOLERANT, submitted_job_id};
use weir_tests::harness::artifact;
use weir_tests::s3::S3Server;
use weir_tests::verify::{assert_only_retained_checkpoint_files, assert_output_is_the_reference};

/// One cluster at a time: they share the machine's (one) core.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

const EVENTS: u64 = 90_000;

/// A cluster of a jobmanager (with `jobmanager_faults`) and three taskmanagers (with
/// `taskmanager_faults`), all checkpointing to a fresh moto bucket.
fn cluster(s3: &S3Server, jobmanager_faults: &str, taskmanager_faults: &str) -> Cluster {
    let mut cluster = Cluster::start_with_env(&FAULT_TOLERANT, &[], &s3.env());
    if !jobmanager_faults.is_empty() {
        cluster.set_jobmanager_env(&[("FAILPOINTS", jobmanager_faults)]);
        cluster.restart_jobmanager();
    }
    for id in ["tm-1", "tm-2", "tm-3"] {
        cluster.start_taskmanager_with_env(id, 2, &[("FAILPOINTS", taskmanager_faults)]);
    }
    cluster
}

/// Submits nexmark wcount (`EVENTS` at 5000/s, parallelism 3, checkpoints every 500 ms to S3);
/// returns the job id.
fn submit(cluster: &Cluster, output: &Path, backend: &str) -> String {
    let events = EVENTS.to_string();
    let out = cluster.weir(&[
        "run",
        artifact("libweir_example_nexmark.so").to_str().unwrap(),
        "-p",
        "3",
        "--detached",
        "--checkpoint-interval",
        "500ms",
        "--checkpoint-timeout",
        "5s",
        "--checkpoint-tolerable-failures",
        "1000",
        "--state-backend",
        backend,
        "--checkpoint-dir",
        "s3://weir/checkpoints",
        "--checkpoints-retained",
        "2",
        "--",
        "--query",
        "wcount",
        "--events",
        &events,
        "--rate",
        "5000",
        "--output",
        output.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
    submitted_job_id(&out)
}

/// Waits for the job's end and checks it finished with exactly the reference output and only
/// the retained checkpoints' files left.
fn finishes_exactly_once(
    cluster: &Cluster,
    s3: &S3Server,
    job: &str,
    output: &Path,
    backend: &str,
) -> serde_json::Value {
    let end = cluster.wait_for_end(job);
    assert_eq!(end["state"], "FINISHED", "{end}\n{}", cluster.logs());
    assert_output_is_the_reference(output, "wcount", EVENTS, cluster);
    assert_only_retained_checkpoint_files(cluster, s3, job, backend == "rocksdb");
    end
}

fn injected(log: &str) -> usize {
    log.matches("fault injection").count() + log.matches("injected fault").count()
}

#[test]
fn storage_errors_and_latency_lose_and_duplicate_nothing() {
    let _serial = serial();
    let s3 = S3Server::start("weir").expect("start the S3 server (moto): run ./scripts/setup.sh");
    // Every process: 3 % of writes and reads fail, 5 % of operations wait 300 ms.
    let faults = "storage::put=3%return;storage::get=3%return;storage::delay=5%return(300)";
    let cluster = cluster(&s3, faults, faults);
    let output = tempfile::tempdir().unwrap();
    let job = submit(&cluster, output.path(), "rocksdb");
    let end = finishes_exactly_once(&cluster, &s3, &job, output.path(), "rocksdb");
    let logs = format!("{}{}", cluster.jobmanager_stderr(), cluster.taskmanager_stderr("tm-1"));
    assert!(injected(&logs) > 0, "faults were injected: {end}");
}

#[test]
fn dropped_and_duplicated_reports_lose_and_duplicate_nothing() {
    let _serial = serial();
    let s3 = S3Server::start("weir").expect("start the S3 server (moto): run ./scripts/setup.sh");
    // Taskmanagers: 10 % of reports are sent twice, 1 % are lost (task states, acknowledgements,
    // declines); lost end reports are found through heartbeats, lost acknowledgements expire.
    let cluster = cluster(&s3, "", "taskmanager::report::duplicate=10%return;taskmanager::report::drop=1%return");
    let output = tempfile::tempdir().unwrap();
    let job = submit(&cluster, output.path(), "heap");
    finishes_exactly_once(&cluster, &s3, &job, output.path(), "heap");
    let logs: String = ["tm-1", "tm-2", "tm-3"].iter().map(|tm| cluster.taskmanager_stderr(tm)).collect();
    assert!(logs.contains("report sent twice"), "reports were duplicated");
}

// The jobmanager dies right after writing a checkpoint's metadata, before any sink was told to
// commit it: the restarted jobmanager restores that checkpoint, whose sinks commit what it lists.
#[test]
fn a_jobmanager_crash_between_a_checkpoint_and_its_commit_loses_and_duplicates_nothing() {
    let _serial = serial();
    let s3 = S3Server::start("weir").expect("start the S3 server (moto): run ./scripts/setup.sh");
    let mut cluster = cluster(&s3, "jobmanager::metadata::crash=4*off->return", "");
    let output = tempfile::tempdir().unwrap();
    let job = submit(&cluster, output.path(), "heap");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cluster.jobmanager_exited() {
        assert!(Instant::now() < deadline, "the jobmanager did not crash at its fifth checkpoint\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(cluster.jobmanager_stderr().contains("jobmanager::metadata::crash: aborting"), "{}", cluster.logs());
    cluster.set_jobmanager_env(&[]);
    cluster.restart_jobmanager();
    cluster.wait_for_taskmanagers(&["tm-1", "tm-2", "tm-3"]);
    let end = finishes_exactly_once(&cluster, &s3, &job, output.path(), "heap");
    assert!(end["restarts"].as_u64().unwrap_or(0) >= 1, "{end}");
}

// A taskmanager dies just before its sinks commit a completed checkpoint.
#[test]
fn a_taskmanager_crash_before_a_sink_commit_loses_and_duplicates_nothing() {
    let _serial = serial();
    let s3 = S3Server::start("weir").expect("start the S3 server (moto): run ./scripts/setup.sh");
    let mut cluster = Cluster::start_with_env(&FAULT_TOLERANT, &[], &s3.env());
    cluster.start_taskmanager_with_env("tm-1", 2, &[("FAILPOINTS", "taskmanager::commit::crash=3*off->return")]);
    cluster.start_taskmanager("tm-2", 2);
    cluster.start_taskmanager("tm-3", 2);
    let output = tempfile::tempdir().unwrap();
    let job = submit(&cluster, output.path(), "rocksdb");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cluster.taskmanager_exited("tm-1") {
        assert!(Instant::now() < deadline, "tm-1 did not crash at a commit\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.reap_taskmanager("tm-1");
    cluster.start_taskmanager("tm-4", 2);
    let end = finishes_exactly_once(&cluster, &s3, &job, output.path(), "rocksdb");
    assert!(end["restarts"].as_u64().unwrap_or(0) >= 1, "{end}");
}

// A stop whose savepoint fails (each taskmanager declines its first savepoint write) does not
// stop the job: without drain the sources, which waited after the barrier, read on; with drain,
// whose maximum watermark cannot be taken back, the job restarts from its latest checkpoint.
// Either way it then finishes with exactly the reference output.
#[test]
fn a_stop_whose_savepoint_fails_leaves_the_job_running_and_loses_nothing() {
    let _serial = serial();
    for drain in [false, true] {
        let s3 = S3Server::start("weir").expect("start the S3 server (moto): run ./scripts/setup.sh");
        let cluster = cluster(&s3, "", "taskmanager::savepoint::decline=1*return->off");
        let output = tempfile::tempdir().unwrap();
        let job = submit(&cluster, output.path(), "heap");
        cluster.wait_for_progress(&job, 1);
        let mut args = vec!["stop", &job, "-p", "s3://weir/savepoints"];
        if drain {
            args.push("--drain");
        }
        let out = cluster.weir(&args);
        assert_ne!(out.code, Some(0), "drain {drain}: {out:?}\n{}", cluster.logs());
        let line = out.stderr.trim();
        assert_eq!(line.lines().count(), 1, "{out:?}");
        assert!(line.contains("failpoint taskmanager::savepoint::decline"), "{line}");
        let state = cluster.details(&job)["state"].clone();
        // With drain the job restarts: RESTARTING, then CREATED while the new attempt is scheduled.
        let restarting = state == "RESTARTING" || state == "CREATED";
        assert!(state == "RUNNING" || (drain && restarting), "drain {drain}: {state}");
        let end = finishes_exactly_once(&cluster, &s3, &job, output.path(), "heap");
        let restarts = end["restarts"].as_u64().unwrap_or(0);
        assert_eq!(restarts >= 1, drain, "drain {drain}: only a drained stop restarts the job: {end}");
    }
}

// A sink the job implements (two-phase commit) on a taskmanager that dies just before it
// commits a completed checkpoint: the restore commits what that checkpoint pre-committed (its
// lines would be lost otherwise), and nothing written after it.
#[test]
fn a_taskmanager_crash_before_a_custom_sinks_commit_loses_and_duplicates_nothing() {
    let _serial = serial();
    let s3 = S3Server::start("weir").expect("start the S3 server (moto): run ./scripts/setup.sh");
    let mut cluster = Cluster::start_with_env(&FAULT_TOLERANT, &[], &s3.env());
    // Every task on tm-1, which crashes at its fourth commit.
    cluster.start_taskmanager_with_env("tm-1", 2, &[("FAILPOINTS", "taskmanager::commit::crash=3*off->return")]);
    let output = tempfile::tempdir().unwrap();
    let (splits, per_split) = (4_u64, 10_000_u64);
    let out = cluster.weir(&[
        "run",
        artifact("libweir_test_jobs.so").to_str().unwrap(),
        "-p",
        "2",
        "--detached",
        "--checkpoint-interval",
        "500ms",
        "--checkpoint-dir",
        "s3://weir/checkpoints",
        "--",
        "--job",
        "custom-source",
        "--splits",
        &splits.to_string(),
        "--per-split",
        &per_split.to_string(),
        "--rate",
        "1250",
        "--sink",
        "transactional",
        "--output",
        output.path().to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
    let job = submitted_job_id(&out);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cluster.taskmanager_exited("tm-1") {
        assert!(Instant::now() < deadline, "tm-1 did not crash at a commit\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.reap_taskmanager("tm-1");
    let staged = std::fs::read_dir(output.path())
        .unwrap()
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().starts_with(".txn-")));
    assert!(staged.count() > 0, "the crash left pre-committed transactions uncommitted");
    cluster.start_taskmanager("tm-2", 2);
    let end = cluster.wait_for_end(&job);
    assert_eq!(end["state"], "FINISHED", "{end}\n{}", cluster.logs());
    assert!(end["restarts"].as_u64().unwrap_or(0) >= 1, "{end}");
    let lines = weir_tests::harness::read_lines(output.path());
    let mut reference: Vec<String> = (0..splits * per_split).map(|n| n.to_string()).collect();
    reference.sort();
    assert_eq!(lines.len(), reference.len(), "line count");
    assert!(lines == reference, "the output differs from the reference");
}
