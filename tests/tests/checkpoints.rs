//! Checkpoint barriers through running jobs on the mini-cluster's components: every task
//! acknowledges every checkpoint, and the snapshots form a consistent cut.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir_api::prelude::*;
use weir_api::runtime::{ChainSnapshot, CheckpointBarrier, state_entries};
use weir_jobmanager::{JobManager, JobManagerSettings, JobStatus, JobSubmission};
use weir_runtime::{JobArtifact, TaskEvent, TaskEventSink, TaskId};
use weir_taskmanager::{TaskManager, TaskManagerConfig};

/// Forwards task events to the jobmanager and records checkpoint acknowledgements.
struct Recorder {
    jobmanager: Arc<dyn TaskEventSink>,
    acks: Mutex<Vec<(TaskId, ChainSnapshot)>>,
    declines: Mutex<Vec<(TaskId, u64, String)>>,
}

impl TaskEventSink for Recorder {
    fn task_event(&self, event: TaskEvent) {
        self.jobmanager.task_event(event);
    }
    fn checkpoint_acknowledged(&self, task: TaskId, snapshot: ChainSnapshot) {
        self.acks.lock().unwrap().push((task, snapshot));
    }
    fn checkpoint_declined(&self, task: TaskId, checkpoint: u64, reason: String) {
        self.declines.lock().unwrap().push((task, checkpoint, reason));
    }
}

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
    let (next, _remaining): (u64, u64) = postcard::from_bytes(position).expect("generator position");
    (next - 1 - u64::from(subtask)) / u64::from(parallelism)
}

#[test]
fn checkpoints_are_consistent_cuts_across_a_union_and_a_keyed_exchange() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let jobmanager = JobManager::new(JobManagerSettings::default());
        let recorder = Arc::new(Recorder {
            jobmanager: jobmanager.event_sink(),
            acks: Mutex::new(Vec::new()),
            declines: Mutex::new(Vec::new()),
        });
        let config = TaskManagerConfig { id: "tm".into(), slots: 64, ..TaskManagerConfig::default() };
        let taskmanager = TaskManager::new(config, recorder.clone());
        jobmanager.register_taskmanager(Arc::new(taskmanager.clone()), String::new(), false);
        let entry = weir_api::plugin::job_entry(counting);
        let submission = JobSubmission {
            artifact: JobArtifact::InProcess { name: "counting".into(), entry: entry.into() },
            args: Vec::new(),
            parallelism: 2,
        };
        let job = jobmanager.submit(submission).await.unwrap();
        // Wait until every task runs: 2 x 2 source subtasks and 2 counting subtasks.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let details = jobmanager.job(job).unwrap();
            let running = details
                .vertices
                .iter()
                .flat_map(|v| &v.subtasks)
                .filter(|t| format!("{:?}", t.state) == "Running")
                .count();
            if running == 6 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "tasks did not start: {details:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for id in 1..=4u64 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let triggered = taskmanager.trigger_checkpoint(job, CheckpointBarrier { id, timestamp: id as i64 });
            assert_eq!(triggered, 4, "four source subtasks");
        }
        // Let the last barriers travel, then stop the job.
        tokio::time::sleep(Duration::from_millis(500)).await;
        jobmanager.cancel(job).await.unwrap();
        let details = jobmanager.wait_for_termination(job).await.unwrap();
        assert_eq!(details.state, JobStatus::Canceled);

        assert!(recorder.declines.lock().unwrap().is_empty(), "{:?}", recorder.declines.lock().unwrap());
        let acks = recorder.acks.lock().unwrap().clone();
        for id in 1..=4u64 {
            let of: Vec<&(TaskId, ChainSnapshot)> = acks.iter().filter(|(_, s)| s.checkpoint == id).collect();
            assert_eq!(of.len(), 6, "checkpoint {id}: every task acknowledges once");
            let mut emitted_total = 0;
            let mut counted_total = 0;
            let mut keys = BTreeMap::new();
            for (task, snapshot) in of {
                for operator in &snapshot.operators {
                    match operator.uid.as_str() {
                        "fast" | "slow" => emitted_total += emitted(&operator.operator_state, task.subtask, 2),
                        "count" => {
                            for group in &operator.keyed {
                                for entry in state_entries(&group.entries) {
                                    let entry = entry.unwrap();
                                    assert_eq!(entry.state, "count");
                                    let n: u64 = postcard::from_bytes(entry.value).unwrap();
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
    });
}
