//! Checkpoints through running jobs on the mini-cluster's components: the coordinator triggers
//! them periodically, every task writes its snapshot to storage, the metadata names them all, and
//! the snapshots form a consistent cut.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use weir_api::prelude::*;
use weir_api::runtime::{ChainSnapshot, state_entries};
use weir_jobmanager::checkpoint::CheckpointOptions;
use weir_jobmanager::{JobManager, JobManagerSettings, JobStatus, JobSubmission};
use weir_runtime::JobArtifact;
use weir_runtime::checkpoint::CheckpointMetadata;
use weir_runtime::storage::StorageConfig;
use weir_taskmanager::connectors::generator;
use weir_taskmanager::{TaskManager, TaskManagerConfig};

const COUNT: ValueStateDescriptor<u64> = ValueStateDescriptor::new("count");

#[derive(Clone)]
struct CountPerKey;

impl KeyedProcessFunction<u64, u64, u64> for CountPerKey {
    fn process_element(&mut self, _value: u64, ctx: &mut KeyedContext<'_, u64, u64>) -> Result<()> {
        let mut count = ctx.value_state(&COUNT)?;
        let n = count.value()?.unwrap_or(0) + 1;
        count.update(&n)
    }
}

// Two rate-limited generators of different speeds, unioned, counted per key.
fn counting(env: &mut StreamExecutionEnvironment, _args: &JobArgs) -> Result<()> {
    let fast = env.from_generator(GeneratorSource::bounded(10_000_000).with_rate(40_000.0), |seq| seq % 10).uid("fast");
    let slow =
        env.from_generator(GeneratorSource::bounded(10_000_000).with_rate(8_000.0), |seq| 100 + seq % 7).uid("slow");
    fast.union(&[&slow]).key_by(|k: &u64| *k).process(CountPerKey).uid("count").sink_to_blackhole();
    Ok(())
}

/// Records a generator subtask emitted before its snapshot: its position is `(next, remaining)`
/// and it emits `1 + subtask, 1 + subtask + parallelism, ...`.
fn emitted(position: &[u8], subtask: u32, parallelism: u32) -> u64 {
    let (_, _, progressions) = generator::Position::decode(position).expect("generator position");
    let [progression] = progressions.as_slice() else { panic!("an unbounded generator subtask: {progressions:?}") };
    (progression.next - 1 - u64::from(subtask)) / u64::from(parallelism)
}

#[test]
fn checkpoints_are_consistent_cuts_across_a_union_and_a_keyed_exchange() {
    let storage_dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let completed = runtime.block_on(async {
        let storage =
            StorageConfig { url: format!("file://{}", storage_dir.path().display()), options: BTreeMap::new() };
        let jobmanager = JobManager::with_storage(JobManagerSettings::default(), storage);
        let config = TaskManagerConfig { id: "tm".into(), slots: 64, ..TaskManagerConfig::default() };
        let taskmanager = TaskManager::new(config, jobmanager.event_sink());
        jobmanager.register_taskmanager(Arc::new(taskmanager.clone()), String::new(), false);
        let entry = weir_api::plugin::job_entry(counting);
        let options = CheckpointOptions {
            interval: Some("150ms".into()),
            retained: Some("100".into()),
            ..CheckpointOptions::default()
        };
        let submission = JobSubmission {
            artifact: JobArtifact::InProcess { name: "counting".into(), entry: entry.into() },
            args: Vec::new(),
            parallelism: 2,
            checkpointing: options.resolve().unwrap().checkpointing,
            state_backend: Default::default(),
            savepoint: None,
            restart: None,
        };
        let job = jobmanager.submit(submission).await.unwrap();
        let report = || jobmanager.checkpoints(job).unwrap().expect("checkpointing is on");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while report().retained.len() < 4 {
            assert!(std::time::Instant::now() < deadline, "4 checkpoints did not complete: {:?}", report().history);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        jobmanager.cancel(job).await.unwrap();
        let details = jobmanager.wait_for_termination(job).await.unwrap();
        assert_eq!(details.state, JobStatus::Canceled);
        let completed: Vec<u64> = report().retained.iter().map(|c| c.id).collect();
        (job, completed)
    });
    let (job, completed) = completed;
    assert!(completed.len() >= 4, "{completed:?}");
    for id in completed {
        let dir = storage_dir.path().join(job.to_string()).join(format!("chk-{id}"));
        let metadata = CheckpointMetadata::decode(&std::fs::read(dir.join("_metadata")).unwrap()).unwrap();
        assert_eq!(metadata.checkpoint_id, id);
        assert_eq!(metadata.tasks.len(), 6, "checkpoint {id}: 2 x 2 sources and 2 counting subtasks acknowledged");
        let mut emitted_total = 0;
        let mut counted_total = 0;
        let mut keys = BTreeMap::new();
        for task in &metadata.tasks {
            assert_eq!(task.snapshot.handles.len(), 1);
            let handle = &task.snapshot.handles[0];
            let path = handle.uri.strip_prefix("file://").unwrap();
            let bytes = std::fs::read(path).unwrap();
            assert_eq!(bytes.len() as u64, handle.size_bytes);
            let snapshot: ChainSnapshot = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(snapshot.checkpoint, id);
            for operator in &snapshot.operators {
                match operator.uid.as_str() {
                    "fast" | "slow" => emitted_total += emitted(&operator.operator_state, task.subtask, 2),
                    "count" => {
                        for group in &operator.keyed {
                            for entry in state_entries(&group.entries) {
                                let entry = entry.unwrap();
                                assert_eq!(entry.state, "count");
                                // User state values are MessagePack (self-describing; keys stay postcard).
                                let n: u64 = rmp_serde::from_slice(entry.value).unwrap();
                                let key: u64 = postcard::from_bytes(entry.key).unwrap();
                                counted_total += n;
                                *keys.entry(key).or_insert(0) += 1;
                            }
                        }
                    }
                    other => panic!("unexpected operator with state: {other}"),
                }
            }
        }
        assert!(emitted_total > 0, "checkpoint {id} came after some records");
        assert_eq!(
            counted_total, emitted_total,
            "checkpoint {id}: the counts are exactly the records before the barriers"
        );
        // Each key is owned by exactly one subtask: no key appears in two snapshots.
        assert!(keys.values().all(|&n| n == 1), "checkpoint {id}: {keys:?}");
    }
}

static FAIL_ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
static SEEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Lines read from one file at parallelism 4 (three source subtasks have nothing to read and
/// finish at once), slowed down, counted per word; fails once after 1500 records.
fn one_file_word_count(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    let input = args.required("input")?;
    let output = args.required("output")?;
    env.read_text_file(input)
        .uid("lines")
        .map(|line: String| {
            std::thread::sleep(Duration::from_micros(700));
            let seen = SEEN.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            if seen == 1500 && FAIL_ONCE.swap(false, std::sync::atomic::Ordering::SeqCst) {
                panic!("injected failure after 1500 records");
            }
            (line, 1u64)
        })
        .key_by(|(word, _): &(String, u64)| word.clone())
        .reduce(|a: (String, u64), b: (String, u64)| (a.0, a.1 + b.1))
        .uid("counts")
        .map(|(word, n): (String, u64)| format!("{word} {n}"))
        .write_as_text(output)
        .uid("out");
    Ok(())
}

// Regression (FLIP-147): once one task had finished, no checkpoint was triggered any more, so a
// source over one file at -p 4 (three subtasks finish at once) never checkpointed, and a failure
// replayed the whole input. Finished tasks now report a final snapshot that every later
// checkpoint includes; the job restores from a checkpoint and its output is exactly once.
#[test]
fn finished_tasks_do_not_stop_checkpoints_and_a_bounded_job_commits_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("words.txt");
    let words = ["ash", "birch", "cedar", "elm", "fir", "oak", "pine"];
    let lines: Vec<&str> = (0..3000).map(|i| words[(i * 7 + i / 11) % words.len()]).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for line in &lines {
        *expected.entry(line).or_default() += 1;
    }
    // A rolling reduce emits every intermediate count.
    let mut expected: Vec<String> =
        expected.iter().flat_map(|(w, n)| (1..=*n).map(move |i| format!("{w} {i}"))).collect();
    expected.sort();
    let output = dir.path().join("out");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (details, report) = runtime.block_on(async {
        let storage =
            StorageConfig { url: format!("file://{}", dir.path().join("cp").display()), options: BTreeMap::new() };
        let jobmanager = JobManager::with_storage(JobManagerSettings::default(), storage);
        let config = TaskManagerConfig { id: "tm".into(), slots: 64, ..TaskManagerConfig::default() };
        let taskmanager = TaskManager::new(config, jobmanager.event_sink());
        jobmanager.register_taskmanager(Arc::new(taskmanager.clone()), String::new(), false);
        let options = CheckpointOptions { interval: Some("100ms".into()), ..CheckpointOptions::default() };
        let submission = JobSubmission {
            artifact: JobArtifact::InProcess {
                name: "one file".into(),
                entry: weir_api::plugin::job_entry(one_file_word_count).into(),
            },
            args: vec!["--input".into(), input.display().to_string(), "--output".into(), output.display().to_string()],
            parallelism: 4,
            checkpointing: options.resolve().unwrap().checkpointing,
            state_backend: Default::default(),
            savepoint: None,
            restart: None,
        };
        let job = jobmanager.submit(submission).await.unwrap();
        let details = tokio::time::timeout(Duration::from_secs(120), jobmanager.wait_for_termination(job))
            .await
            .unwrap()
            .unwrap();
        (details, jobmanager.checkpoints(job).unwrap().unwrap())
    });
    assert_eq!(details.state, JobStatus::Finished, "{details:?}");
    assert_eq!(details.restarts, 1, "the injected failure restarted the job once: {details:?}");
    let restored = report.latest.restored.as_ref().expect("the restart restored a checkpoint, not the start");
    assert!(restored.id >= 1 && !restored.is_savepoint, "{report:?}");
    assert!(report.counts.completed >= 2, "checkpoints went on while three sources were finished: {:?}", report.counts);
    let mut actual: Vec<String> = std::fs::read_dir(&output)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("part-"))
        .flat_map(|p| std::fs::read_to_string(p).unwrap().lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    actual.sort();
    let duplicates = actual.windows(2).filter(|w| w[0] == w[1]).count();
    assert_eq!((actual.len(), duplicates), (expected.len(), 0), "every count exactly once");
    assert!(actual == expected, "the counts differ from the expected ones");
}

/// Windows in event time over records that have no timestamps: the job as written cannot run.
fn no_timestamps(env: &mut StreamExecutionEnvironment, _args: &JobArgs) -> Result<()> {
    env.from_generator(GeneratorSource::bounded(1000), |seq| seq % 10)
        .uid("numbers")
        .key_by(|k: &u64| *k)
        .window(TumblingEventTimeWindows::of(Duration::from_secs(1)))
        .reduce(|a: u64, b: u64| a + b)
        .uid("sums")
        .sink_to_blackhole();
    Ok(())
}

// A job that cannot run as written fails at once, even with checkpoints on, where the default
// restart strategy would restart it without limit (each attempt failing the same way).
#[test]
fn a_job_that_cannot_run_as_written_fails_without_restarting() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let details = runtime.block_on(async {
        let storage = StorageConfig { url: format!("file://{}", dir.path().display()), options: BTreeMap::new() };
        let jobmanager = JobManager::with_storage(JobManagerSettings::default(), storage);
        let config = TaskManagerConfig { id: "tm".into(), slots: 8, ..TaskManagerConfig::default() };
        let taskmanager = TaskManager::new(config, jobmanager.event_sink());
        jobmanager.register_taskmanager(Arc::new(taskmanager.clone()), String::new(), false);
        let options = CheckpointOptions { interval: Some("100ms".into()), ..CheckpointOptions::default() };
        let submission = JobSubmission {
            artifact: JobArtifact::InProcess {
                name: "no timestamps".into(),
                entry: weir_api::plugin::job_entry(no_timestamps).into(),
            },
            args: Vec::new(),
            parallelism: 2,
            checkpointing: options.resolve().unwrap().checkpointing,
            state_backend: Default::default(),
            savepoint: None,
            restart: None,
        };
        let job = jobmanager.submit(submission).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), jobmanager.wait_for_termination(job)).await.unwrap().unwrap()
    });
    assert_eq!(details.state, JobStatus::Failed, "{details:?}");
    assert_eq!(details.restarts, 0, "{details:?}");
    assert!(details.failure.as_deref().unwrap_or_default().contains("without a timestamp"), "{details:?}");
}
