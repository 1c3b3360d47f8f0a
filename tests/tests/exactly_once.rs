//! Exactly-once recovery on a real cluster: a jobmanager and three taskmanager processes,
//! checkpoints every 500 ms to an S3 server (moto, on loopback), taskmanagers and the jobmanager
//! killed with SIGKILL during the run (taskmanagers replaced, the jobmanager restarted on the same
//! storage); the committed output must equal the reference line for line, and the bucket must
//! hold only the retained checkpoints' files afterwards.

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt as _, PutPayload};
use serde_json::Value;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
use weir_tests::cluster::{Cluster, submitted_job_id, taskmanagers_of};
use weir_tests::harness::artifact;
use weir_tests::s3::S3Server;
use weir_tests::verify::{assert_only_retained_checkpoint_files, assert_output_is_the_reference};

/// One cluster at a time: they share the machine's (one) core.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// A small deterministic pseudo-random sequence (seed printed for reproduction).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % bound as u64) as usize
    }
}

/// Objects of the job under the bucket's `checkpoints/` prefix.
fn job_objects(s3: &S3Server, job: &str) -> Vec<(String, u64)> {
    s3.list(&format!("checkpoints/{job}")).expect("list the bucket")
}

/// What a test kills (SIGKILL) once a checkpoint completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// A taskmanager running tasks of the job; a new one takes its place.
    TaskManager,
    /// The jobmanager; it is restarted on the same addresses and storage.
    JobManager,
    /// A taskmanager and the jobmanager at the same moment.
    Both,
}

struct Run {
    query: &'static str,
    backend: &'static str,
    events: u64,
    rate: u64,
    kills: &'static [Kill],
}

/// Runs `run` with checkpoints to S3 and `run.kills` taskmanager kills; checks the output and the
/// bucket. Returns the job's final details.
fn exactly_once(run: &Run) -> Value {
    let _serial = serial();
    let s3 = S3Server::start("weir").expect("start the S3 server (moto): run ./scripts/setup.sh");
    let mut cluster = Cluster::start_with_env(
        &["--heartbeat-timeout-ms", "2000", "--restart-attempts", "20", "--restart-delay-ms", "200"],
        &[("tm-1", 2), ("tm-2", 2), ("tm-3", 2)],
        &s3.env(),
    );
    let output = tempfile::tempdir().unwrap();
    let (events, rate) = (run.events.to_string(), run.rate.to_string());
    let out = cluster.weir(&[
        "run",
        path_str(&artifact("libweir_example_nexmark.so")),
        "-p",
        "3",
        "--detached",
        "--checkpoint-interval",
        "500ms",
        "--state-backend",
        run.backend,
        "--checkpoint-dir",
        "s3://weir/checkpoints",
        "--checkpoints-retained",
        "2",
        "--",
        "--query",
        run.query,
        "--events",
        &events,
        "--rate",
        &rate,
        "--output",
        path_str(output.path()),
    ]);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
    let job = submitted_job_id(&out);
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    eprintln!("{} {}: victim seed {seed}", run.query, run.backend);
    let mut random = Lcg(seed);
    let mut completed = 0;
    let mut live: Vec<String> = ["tm-1", "tm-2", "tm-3"].map(str::to_owned).to_vec();
    for (n, kill) in run.kills.iter().enumerate() {
        completed = cluster.wait_for_progress(&job, completed);
        // Checkpoint files are in the bucket while the job runs.
        let objects = job_objects(&s3, &job);
        assert!(
            objects.iter().any(|(key, _)| key.contains("/chk-") && key.ends_with("/_metadata")),
            "no checkpoint metadata in the bucket during the run: {objects:?}"
        );
        let busy: Vec<String> = taskmanagers_of(&cluster.details(&job)).into_iter().collect();
        let victim = busy[random.next(busy.len())].clone();
        if *kill != Kill::JobManager {
            eprintln!("kill {}: SIGKILL {victim} after {completed} completed checkpoints", n + 1);
            cluster.kill_taskmanager(&victim);
            live.retain(|tm| *tm != victim);
        }
        if *kill != Kill::TaskManager {
            eprintln!("kill {}: SIGKILL the jobmanager after {completed} completed checkpoints", n + 1);
            cluster.restart_jobmanager();
            let ids: Vec<&str> = live.iter().map(String::as_str).collect();
            cluster.wait_for_taskmanagers(&ids);
            // The restarted jobmanager resumed the job from its record.
            let resumed = cluster.details(&job);
            assert!(resumed["state"].is_string(), "the restarted jobmanager knows the job: {resumed}");
            // Its checkpoint counts start again; progress means a checkpoint of the resumed job.
            completed = 0;
        }
        if *kill != Kill::JobManager {
            let replacement = format!("tm-{}", n + 4);
            cluster.start_taskmanager(&replacement, 2);
            live.push(replacement);
        }
    }
    let end = cluster.wait_for_end(&job);
    assert_eq!(end["state"], "FINISHED", "{end}\n{}", cluster.logs());
    assert!(end["restarts"].as_u64().unwrap_or(0) >= run.kills.len() as u64, "every kill restarted the job: {end}");
    assert!(end["last_recovery_time_ms"].as_u64().is_some(), "recovery time reported: {end}");
    assert_eq!(end["state_backend"], run.backend, "{end}");

    assert_output_is_the_reference(output.path(), run.query, run.events, &cluster);
    let report = cluster.checkpoints(&job);
    assert_eq!(report["config"]["interval_ms"], 500, "{report}");
    assert_eq!(report["config"]["retained"], 2, "{report}");
    assert_eq!(report["state_backend"], run.backend, "{report}");
    assert!(report["retained"].as_array().is_some_and(|r| r.len() <= 2), "{report}");
    assert_only_retained_checkpoint_files(&cluster, &s3, &job, run.backend == "rocksdb");
    end
}

const THREE_TASKMANAGERS: &[Kill] = &[Kill::TaskManager, Kill::TaskManager, Kill::TaskManager];

#[test]
fn wcount_is_exactly_once_through_taskmanager_kills_with_heap_state() {
    exactly_once(&Run { query: "wcount", backend: "heap", events: 150_000, rate: 6_000, kills: THREE_TASKMANAGERS });
}

#[test]
fn wcount_is_exactly_once_through_two_jobmanager_kills() {
    let kills = &[Kill::JobManager, Kill::JobManager];
    exactly_once(&Run { query: "wcount", backend: "heap", events: 150_000, rate: 6_000, kills });
}

#[test]
fn wcount_is_exactly_once_when_a_taskmanager_and_the_jobmanager_die_together() {
    exactly_once(&Run { query: "wcount", backend: "rocksdb", events: 120_000, rate: 6_000, kills: &[Kill::Both] });
}

#[test]
fn q5_is_exactly_once_through_taskmanager_kills_with_heap_state() {
    exactly_once(&Run { query: "q5", backend: "heap", events: 150_000, rate: 6_000, kills: THREE_TASKMANAGERS });
}

#[test]
fn wcount_is_exactly_once_through_taskmanager_kills_with_rocksdb_state() {
    exactly_once(&Run { query: "wcount", backend: "rocksdb", events: 150_000, rate: 6_000, kills: THREE_TASKMANAGERS });
}

#[test]
fn q5_is_exactly_once_through_taskmanager_kills_with_rocksdb_state() {
    exactly_once(&Run { query: "q5", backend: "rocksdb", events: 150_000, rate: 6_000, kills: THREE_TASKMANAGERS });
}

fn store(s3: &S3Server) -> object_store::aws::AmazonS3 {
    let mut builder = AmazonS3Builder::new().with_bucket_name(s3.bucket());
    for (k, v) in s3.options() {
        builder = builder.with_config(k.parse::<AmazonS3ConfigKey>().unwrap(), v);
    }
    builder.build().unwrap()
}

/// Overwrites an object of the bucket.
fn overwrite(s3: &S3Server, key: &str, bytes: &'static [u8]) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(store(s3).put(&ObjectPath::from(key), PutPayload::from_static(bytes))).unwrap();
}

/// Deletes an object of the bucket.
fn delete(s3: &S3Server, key: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(store(s3).delete(&ObjectPath::from(key))).unwrap();
}

/// How a test damages the newest retained checkpoint.
#[derive(Clone, Copy)]
enum Damage {
    /// Its `_metadata` no longer decodes.
    CorruptMetadata,
    /// A task's file is gone: the metadata reads, the restore of that task fails.
    MissingTaskFile,
}

#[test]
fn a_corrupt_latest_checkpoint_falls_back_to_the_previous_one() {
    falls_back_past_a_damaged_checkpoint(Damage::CorruptMetadata);
}

// Regression: a checkpoint whose metadata read back but one of whose task files was missing made
// every restart fail in the restore, until the restart strategy gave up (FAILED).
#[test]
fn a_checkpoint_with_a_missing_task_file_falls_back_to_the_previous_one() {
    falls_back_past_a_damaged_checkpoint(Damage::MissingTaskFile);
}

fn falls_back_past_a_damaged_checkpoint(damage: Damage) {
    const EVENTS: u64 = 100_000;
    let _serial = serial();
    let s3 = S3Server::start("weir").expect("start the S3 server (moto): run ./scripts/setup.sh");
    let mut cluster = Cluster::start_with_env(
        &["--heartbeat-timeout-ms", "2000", "--restart-attempts", "5", "--restart-delay-ms", "200"],
        &[("tm-1", 2), ("tm-2", 2)],
        &s3.env(),
    );
    let output = tempfile::tempdir().unwrap();
    let events = EVENTS.to_string();
    let out = cluster.weir(&[
        "run",
        path_str(&artifact("libweir_example_nexmark.so")),
        "-p",
        "2",
        "--detached",
        "--checkpoint-interval",
        "3s",
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
        path_str(output.path()),
    ]);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
    let job = submitted_job_id(&out);
    // Two retained checkpoints; right after the second completes (the next is 3 s away), damage
    // it and kill a taskmanager.
    cluster.wait_for_progress(&job, 0);
    let completed = cluster.wait_for_progress(&job, 1);
    let report = cluster.checkpoints(&job);
    let retained: Vec<u64> = report["retained"].as_array().unwrap().iter().map(|c| c["id"].as_u64().unwrap()).collect();
    assert_eq!(retained.len(), 2, "{report}");
    let (previous, newest) = (retained[0], retained[1]);
    match damage {
        Damage::CorruptMetadata => {
            overwrite(&s3, &format!("checkpoints/{job}/chk-{newest}/_metadata"), b"this is not a checkpoint");
        }
        Damage::MissingTaskFile => delete(&s3, &format!("checkpoints/{job}/chk-{newest}/0-0")),
    }
    let victim = taskmanagers_of(&cluster.details(&job)).into_iter().next().unwrap();
    eprintln!("damaged checkpoint {newest} (completed: {completed}); killing {victim}");
    cluster.kill_taskmanager(&victim);
    cluster.start_taskmanager("tm-3", 2);

    let end = cluster.wait_for_end(&job);
    assert_eq!(end["state"], "FINISHED", "{end}\n{}", cluster.logs());
    let log = cluster.jobmanager_stderr();
    let said = match damage {
        Damage::CorruptMetadata => format!("checkpoint {newest} is unusable, falling back to the previous checkpoint"),
        Damage::MissingTaskFile => format!("checkpoint {newest} is unusable (a task cannot restore it)"),
    };
    assert!(log.contains(&said), "the jobmanager says why it fell back:\n{log}");
    assert!(log.contains(&format!("restoring the job from checkpoint {previous}")), "{log}");
    assert_output_is_the_reference(output.path(), "wcount", EVENTS, &cluster);
}
