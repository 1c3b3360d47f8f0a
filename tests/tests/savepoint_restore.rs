//! Restoring jobs from savepoints on the in-process components (a real jobmanager and
//! taskmanager, local storage): keyed state moves to another parallelism and another backend,
//! checkpoint ids continue above the savepoint's, and savepoints that do not fit the job are
//! refused at submission in one line.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_api::prelude::*;
use weir_jobmanager::checkpoint::CheckpointOptions;
use weir_jobmanager::job::SavepointStatus;
use weir_jobmanager::{JobManager, JobManagerSettings, JobStatus, JobSubmission, SavepointRestoreSettings};
use weir_runtime::checkpoint::StateBackendKind;
use weir_runtime::storage::StorageConfig;
use weir_runtime::{JobArtifact, JobId};
use weir_taskmanager::{TaskManager, TaskManagerConfig};

const KEYS: u64 = 1000;

/// Numbers 1..=events at `rate`/s from one source subtask, counted per `n % 1000` by a rolling
/// reduce at the job's parallelism; every count goes to one text sink.
fn counting(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    let events: u64 = args.parse_required("events")?;
    let rate: f64 = args.parse_required("rate")?;
    let output = args.required("output")?;
    env.from_generator(GeneratorSource::bounded(events).with_rate(rate), |seq| seq)
        .uid("numbers")
        .set_parallelism(1)
        .map(|n: u64| (n % KEYS, 1u64))
        .key_by(|(key, _): &(u64, u64)| *key)
        .reduce(|a: (u64, u64), b: (u64, u64)| (a.0, a.1 + b.1))
        .uid("counts")
        .map(|(key, count): (u64, u64)| format!("{key} {count}"))
        .write_as_text(output)
        .uid("out")
        .set_parallelism(1);
    Ok(())
}

struct Components {
    jobmanager: JobManager,
    _taskmanager: TaskManager,
}

fn start(dir: &Path) -> Components {
    let storage = StorageConfig { url: format!("file://{}", dir.join("storage").display()), options: BTreeMap::new() };
    let jobmanager = JobManager::with_storage(JobManagerSettings::default(), storage);
    let config = TaskManagerConfig { id: "tm".into(), slots: 64, ..TaskManagerConfig::default() };
    let taskmanager = TaskManager::new(config, jobmanager.event_sink());
    jobmanager.register_taskmanager(Arc::new(taskmanager.clone()), String::new(), false);
    Components { jobmanager, _taskmanager: taskmanager }
}

fn submission(
    parallelism: u32,
    backend: StateBackendKind,
    events: u64,
    output: &Path,
    savepoint: Option<SavepointRestoreSettings>,
) -> JobSubmission {
    let options = CheckpointOptions { interval: Some("100ms".into()), ..CheckpointOptions::default() };
    JobSubmission {
        artifact: JobArtifact::InProcess {
            name: "counting".into(),
            entry: weir_api::plugin::job_entry(counting).into(),
        },
        args: ["--events", &events.to_string(), "--rate", "20000", "--output", &output.display().to_string()]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        parallelism,
        checkpointing: options.resolve().unwrap().checkpointing,
        state_backend: backend,
        savepoint,
        restart: None,
    }
}

/// Takes a savepoint of `job` into `dir` and cancels the job with it (Flink's cancel-job);
/// returns the savepoint's location.
async fn savepoint_and_cancel(jobmanager: &JobManager, job: JobId, dir: &Path) -> String {
    let target = format!("file://{}", dir.display());
    let request = jobmanager.trigger_savepoint(job, Some(&target), true, None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match jobmanager.savepoint_status(job, &request).await.unwrap() {
            SavepointStatus::Completed { location } => return location,
            SavepointStatus::Failed { reason } => panic!("the savepoint failed: {reason}"),
            SavepointStatus::InProgress => {}
        }
        assert!(Instant::now() < deadline, "the savepoint did not complete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The highest count per key in the `part-*` files of `dir`.
fn highest_counts(dir: &Path) -> HashMap<u64, u64> {
    let mut counts = HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.file_name().unwrap().to_str().unwrap().starts_with("part-") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let (key, count) = line.split_once(' ').unwrap();
            let (key, count): (u64, u64) = (key.parse().unwrap(), count.parse().unwrap());
            let highest = counts.entry(key).or_insert(0);
            *highest = count.max(*highest);
        }
    }
    counts
}

#[test]
fn keyed_state_moves_from_two_heap_subtasks_to_four_rocksdb_subtasks_through_a_savepoint() {
    const EVENTS: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    // Both jobs write to one directory (as an upgraded job does): the restored sink finds the
    // files the first one committed with the savepoint.
    let (output, savepoints) = (dir.path().join("out"), dir.path().join("savepoints"));
    let (first_output, second_output) = (&output, &output);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let c = start(dir.path());
        let first =
            c.jobmanager.submit(submission(2, StateBackendKind::Heap, EVENTS, first_output, None)).await.unwrap();
        // Let it count for a while (about a quarter of the numbers).
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let location = savepoint_and_cancel(&c.jobmanager, first, &savepoints).await;
        let details = c.jobmanager.wait_for_termination(first).await.unwrap();
        assert_eq!(details.state, JobStatus::Canceled, "{details:?}");
        let counted_before = highest_counts(first_output).values().sum::<u64>();
        assert!(counted_before > 0 && counted_before < EVENTS, "stopped mid-stream: {counted_before}");

        let restore = SavepointRestoreSettings { path: location.clone(), allow_non_restored_state: false };
        let second = c
            .jobmanager
            .submit(submission(4, StateBackendKind::Rocksdb, EVENTS, second_output, Some(restore)))
            .await
            .unwrap();
        let Ok(details) =
            tokio::time::timeout(Duration::from_secs(60), c.jobmanager.wait_for_termination(second)).await
        else {
            panic!("the restored job did not finish: {:?}", c.jobmanager.job(second));
        };
        let details = details.unwrap();
        assert_eq!(details.state, JobStatus::Finished, "{details:?}");
        let report = c.jobmanager.checkpoints(second).unwrap().unwrap();
        let savepoint_id = report.latest.restored.as_ref().map(|r| r.id).expect("restored from the savepoint");
        assert!(report.history.iter().all(|h| h.id > savepoint_id), "ids continue above the savepoint's: {report:?}");
    });
    // The second job's counts go on from the first's: every key ends at its total.
    let counts = highest_counts(second_output);
    assert_eq!(counts.len() as u64, KEYS);
    let wrong: Vec<_> = counts.iter().filter(|(_, count)| **count != EVENTS / KEYS).take(5).collect();
    assert!(wrong.is_empty(), "keys whose count is not {}: {wrong:?}", EVENTS / KEYS);
}

#[test]
fn savepoints_that_do_not_fit_the_job_are_refused_at_submission_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let c = start(dir.path());
        let output = dir.path().join("out");
        let job = c.jobmanager.submit(submission(2, StateBackendKind::Heap, 1_000_000, &output, None)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let location = savepoint_and_cancel(&c.jobmanager, job, &dir.path().join("savepoints")).await;
        c.jobmanager.wait_for_termination(job).await.unwrap();

        let refused = |savepoint: SavepointRestoreSettings| {
            let sub = submission(2, StateBackendKind::Heap, 1_000_000, &output, Some(savepoint));
            let jobmanager = c.jobmanager.clone();
            async move { jobmanager.submit(sub).await.unwrap_err().to_string() }
        };
        let missing = dir.path().join("nothing-here").display().to_string();
        let missing = refused(SavepointRestoreSettings { path: missing, allow_non_restored_state: false }).await;
        assert!(missing.contains("no savepoint at") && missing.contains("_metadata does not exist"), "{missing}");
        let corrupt_dir = dir.path().join("corrupt");
        std::fs::create_dir_all(&corrupt_dir).unwrap();
        std::fs::write(corrupt_dir.join("_metadata"), b"WEIRSP01 not really").unwrap();
        let path = corrupt_dir.display().to_string();
        let corrupt = refused(SavepointRestoreSettings { path, allow_non_restored_state: false }).await;
        assert!(corrupt.contains("corrupt"), "{corrupt}");
        for e in [missing, corrupt] {
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        // The `_metadata` file names the savepoint as well as its directory.
        let by_file = format!("{location}/_metadata");
        let restored = c
            .jobmanager
            .submit(submission(
                2,
                StateBackendKind::Heap,
                1_000_000,
                &output,
                Some(SavepointRestoreSettings { path: by_file, allow_non_restored_state: false }),
            ))
            .await
            .unwrap();
        c.jobmanager.cancel(restored).await.unwrap();
    });
}
