//! The job master driven through scripted races: fake taskmanagers record every command and
//! answer as the test says, the test sends the task reports, and checkpoint storage is an
//! in-memory store (optionally slowed down). What each test expects is derived from the protocol,
//! not from the code under test.

use super::lifecycle::{Job, JobStatus};
use super::master::{CheckpointingSetup, JobHandle, JobInput, JobSetup};
use crate::checkpoint::{CheckpointConfig, CheckpointSettings, Coordinator};
use crate::plan::{ExecutionPlan, ExecutionVertex};
use crate::registry::RegistryHandle;
use crate::restart::RestartPolicy;
use object_store::memory::InMemory;
use object_store::throttle::{ThrottleConfig, ThrottledStore};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_api::graph::ChainSpec;
use weir_api::runtime::{CheckpointBarrier, CheckpointId, FINAL_CHECKPOINT};
use weir_runtime::checkpoint::{StateHandle, TaskSnapshot};
use weir_runtime::storage::{CheckpointLayout, Storage};
use weir_runtime::{
    BoxFuture, GatewayError, GatewayResult, JobArtifact, JobId, TaskDeployment, TaskEvent, TaskExecutionState, TaskId,
    TaskManagerGateway,
};

/// A command a fake taskmanager received.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Deploy { task: TaskId, restore: Option<CheckpointId> },
    Cancel(u32),
    Release(u32),
    Trigger(u32, CheckpointId),
    Prepare(u32, CheckpointId),
    Abort(u32, CheckpointId),
    Notify(u32, CheckpointId),
}

/// A taskmanager that records what it is told; the final commit answers as the test says.
pub(crate) struct FakeTaskManager {
    id: String,
    seen: Mutex<Vec<Seen>>,
    final_commit: Mutex<GatewayResult<()>>,
    /// How long the preparation of a savepoint takes to be answered.
    prepare_latency: Mutex<Duration>,
}

impl FakeTaskManager {
    pub(crate) fn new(id: &str) -> Arc<Self> {
        Arc::new(Self {
            id: id.to_owned(),
            seen: Mutex::new(Vec::new()),
            final_commit: Mutex::new(Ok(())),
            prepare_latency: Mutex::new(Duration::ZERO),
        })
    }

    fn record(&self, seen: Seen) {
        self.seen.lock().unwrap().push(seen);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until a received command matches; returns it.
    async fn wait_for(&self, what: &str, matches: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(found) = self.seen().into_iter().find(|s| matches(s)) {
                return found;
            }
            assert!(Instant::now() < deadline, "no {what} within 10 s; seen: {:?}", self.seen());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl TaskManagerGateway for FakeTaskManager {
    fn id(&self) -> &str {
        &self.id
    }

    fn slots(&self) -> u32 {
        4
    }

    fn deploy(&self, deployment: TaskDeployment, _: JobArtifact) -> BoxFuture<'_, GatewayResult<()>> {
        self.record(Seen::Deploy { task: deployment.task, restore: deployment.restore.map(|r| r.checkpoint_id) });
        Box::pin(async { Ok(()) })
    }

    fn cancel_job(&self, _: JobId, attempt: u32) -> BoxFuture<'_, GatewayResult<()>> {
        self.record(Seen::Cancel(attempt));
        Box::pin(async { Ok(()) })
    }

    fn release_job(&self, _: JobId, attempt: u32) -> BoxFuture<'_, GatewayResult<()>> {
        self.record(Seen::Release(attempt));
        Box::pin(async { Ok(()) })
    }

    fn trigger_checkpoint(
        &self,
        _: JobId,
        attempt: u32,
        barrier: CheckpointBarrier,
    ) -> BoxFuture<'_, GatewayResult<u32>> {
        self.record(Seen::Trigger(attempt, barrier.id));
        Box::pin(async { Ok(1) })
    }

    fn prepare_savepoint(
        &self,
        _: JobId,
        attempt: u32,
        checkpoint: CheckpointId,
        _: String,
        _: Option<bool>,
    ) -> BoxFuture<'_, GatewayResult<()>> {
        self.record(Seen::Prepare(attempt, checkpoint));
        let latency = *self.prepare_latency.lock().unwrap();
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            Ok(())
        })
    }

    fn abort_checkpoint(&self, _: JobId, attempt: u32, checkpoint: CheckpointId) -> BoxFuture<'_, GatewayResult<()>> {
        self.record(Seen::Abort(attempt, checkpoint));
        Box::pin(async { Ok(()) })
    }

    fn notify_checkpoint_complete(
        &self,
        _: JobId,
        attempt: u32,
        checkpoint: CheckpointId,
    ) -> BoxFuture<'_, GatewayResult<()>> {
        let result = if checkpoint == FINAL_CHECKPOINT { self.final_commit.lock().unwrap().clone() } else { Ok(()) };
        self.record(Seen::Notify(attempt, checkpoint));
        Box::pin(async move { result })
    }
}

/// A job of one source vertex with two subtasks on one fake taskmanager.
struct Harness {
    job: JobId,
    handle: JobHandle,
    tm: Arc<FakeTaskManager>,
    storage: Option<Storage>,
}

struct Options {
    restart: RestartPolicy,
    checkpointing: Option<CheckpointConfig>,
    /// Every storage write waits this long (metadata writes in flight, in effect).
    put_latency: Duration,
    /// How long a running task may be missing from heartbeats.
    report_grace: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            restart: RestartPolicy::fixed_delay(3, Duration::from_millis(10)),
            checkpointing: Some(CheckpointConfig {
                interval_ms: 30,
                tolerable_failures: 100,
                ..CheckpointConfig::default()
            }),
            put_latency: Duration::ZERO,
            report_grace: Duration::from_secs(60),
        }
    }
}

fn plan() -> ExecutionPlan {
    let vertex = ExecutionVertex {
        id: 0,
        name: "source".into(),
        parallelism: 2,
        chain: ChainSpec { head: 0, nodes: vec![0], chained_edges: vec![], outputs: vec![] },
        inputs: vec![],
        is_source: true,
        uids: vec!["source".into()],
        subtask_state: vec![crate::plan::SubtaskState { uid: "source".into(), rescales: true }],
        states: Default::default(),
    };
    ExecutionPlan { vertices: vec![vertex], max_parallelism: 128 }
}

fn unused_build(
    _: &mut weir_api::prelude::StreamExecutionEnvironment,
    _: &weir_api::prelude::JobArgs,
) -> weir_api::Result<()> {
    Ok(())
}

impl Harness {
    fn start(options: Options) -> Self {
        let job = JobId::random();
        let registry = RegistryHandle::start(Duration::from_secs(60));
        let tm = FakeTaskManager::new("tm-a");
        registry.register(tm.clone(), "127.0.0.1:1".into(), false);
        let mut lifecycle = Job::new(job, "scripted".into(), plan(), Instant::now(), 0);
        lifecycle.restart = options.restart;
        let storage = options.checkpointing.as_ref().map(|_| {
            let config = ThrottleConfig { wait_put_per_call: options.put_latency, ..ThrottleConfig::default() };
            Storage::from_object_store(Arc::new(ThrottledStore::new(InMemory::new(), config)), "memory://checkpoints")
        });
        let checkpointing = options.checkpointing.zip(storage.clone()).map(|(config, storage)| CheckpointingSetup {
            coordinator: Coordinator::new(config.clone(), Default::default(), Default::default(), None).unwrap(),
            settings: CheckpointSettings {
                config,
                backend: Default::default(),
                storage_url: storage.url().to_owned(),
                savepoint_path: None,
            },
            storage,
        });
        let (handle, master) = JobHandle::new(JobSetup {
            id: job,
            job: lifecycle,
            plan: plan(),
            artifact: JobArtifact::InProcess {
                name: "unused".into(),
                entry: weir_api::plugin::job_entry(unused_build).into(),
            },
            args: Vec::new(),
            checkpointing,
            initial_restore: None,
            slot_request_timeout: Duration::from_secs(10),
            report_grace: options.report_grace,
            registry,
            record: None,
        });
        master.start();
        Self { job, handle, tm, storage }
    }

    fn task(&self, attempt: u32, subtask: u32) -> TaskId {
        TaskId { job: self.job, attempt, vertex: 0, subtask }
    }

    fn report(&self, task: TaskId, state: TaskExecutionState) {
        let event = TaskEvent {
            failure: (state == TaskExecutionState::Failed).then(|| "scripted failure".to_owned()),
            ..TaskEvent::new(task, state, 0, 0)
        };
        self.handle.send(JobInput::Task(event));
    }

    /// Waits for both tasks of `attempt` to be deployed, then reports them running.
    async fn run_attempt(&self, attempt: u32) -> Vec<Option<CheckpointId>> {
        let mut restores = Vec::new();
        for subtask in 0..2 {
            let task = self.task(attempt, subtask);
            let deployed =
                self.tm.wait_for("deployment", |s| matches!(s, Seen::Deploy { task: t, .. } if *t == task)).await;
            if let Seen::Deploy { restore, .. } = deployed {
                restores.push(restore);
            }
            self.report(task, TaskExecutionState::Deploying);
            self.report(task, TaskExecutionState::Running);
        }
        restores
    }

    /// A snapshot of one task-owned file of `checkpoint`, written to storage first.
    async fn snapshot(&self, checkpoint: CheckpointId, task: TaskId) -> TaskSnapshot {
        let storage = self.storage.as_ref().expect("checkpointing");
        let uri = CheckpointLayout::new(storage, self.job).task_file_url(checkpoint, &format!("0-{}", task.subtask));
        storage.put(&uri, bytes::Bytes::from_static(b"state")).await.unwrap();
        TaskSnapshot {
            handles: vec![StateHandle { uri, size_bytes: 5, incremental_bytes: 5, shared: false }],
            alignment_ms: 0,
            operators: vec!["source".into()],
        }
    }

    async fn exists(&self, uri: &str) -> bool {
        self.storage.as_ref().unwrap().get(uri).await.is_ok()
    }

    async fn state(&self, wanted: JobStatus) {
        let mut view = self.handle.view.clone();
        let waited = tokio::time::timeout(Duration::from_secs(10), view.wait_for(|v| v.details.state == wanted)).await;
        assert!(waited.is_ok(), "the job is not {wanted}: {:?}", self.handle.view.borrow().details);
    }
}

fn trigger_of(attempt: u32) -> impl Fn(&Seen) -> bool {
    move |s| matches!(s, Seen::Trigger(a, _) if *a == attempt)
}

// A periodic checkpoint triggered while a savepoint with a lower id is being prepared reaches the
// sources after the savepoint's trigger: a source drops a trigger older than a barrier it
// emitted. Regression: the checkpoint's trigger went first, the sources dropped the savepoint's
// as stale, and `weir stop` waited for the savepoint until it expired (10 minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_reach_the_sources_in_id_order_while_a_savepoint_is_being_prepared() {
    let h = Harness::start(Options::default());
    *h.tm.prepare_latency.lock().unwrap() = Duration::from_millis(300);
    h.run_attempt(0).await;
    let Seen::Trigger(_, first) = h.tm.wait_for("trigger", trigger_of(0)).await else { unreachable!() };
    let storage = h.storage.clone().unwrap();
    let request = super::master::SavepointRequest {
        dir_url: storage.url_of("savepoints/sp-1"),
        storage: Ok(storage),
        cancel_job: false,
        stop: None,
        request_id: "sp-1".into(),
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    h.handle.send(JobInput::TriggerSavepoint(request, reply));
    assert_eq!(answer.await.unwrap().unwrap(), "sp-1");
    let Seen::Prepare(_, savepoint) = h.tm.wait_for("preparation", |s| matches!(s, Seen::Prepare(0, _))).await else {
        unreachable!()
    };
    assert!(savepoint > first);
    // The first checkpoint completes: the next periodic one is triggered while the savepoint
    // is still being prepared (300 ms).
    for subtask in 0..2 {
        let task = h.task(0, subtask);
        let snapshot = h.snapshot(first, task).await;
        h.handle.send(JobInput::Acknowledge(task, first, snapshot));
    }
    h.tm.wait_for("the savepoint's trigger", |s| *s == Seen::Trigger(0, savepoint)).await;
    h.tm.wait_for("a later checkpoint's trigger", |s| matches!(s, Seen::Trigger(0, id) if *id > savepoint)).await;
    let triggers: Vec<CheckpointId> =
        h.tm.seen().iter().filter_map(|s| if let Seen::Trigger(0, id) = s { Some(*id) } else { None }).collect();
    assert!(triggers.windows(2).all(|w| w[0] < w[1]), "triggers in id order: {triggers:?}");
}

// Item 3: a checkpoint whose `_metadata` write is in flight when a restart begins is waited for
// before the restore point is chosen. Regression: the restore point was read at once, so the
// new attempt started from nothing (or an older checkpoint) although the checkpoint completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_waits_for_a_metadata_write_in_flight_and_restores_that_checkpoint() {
    let h = Harness::start(Options { put_latency: Duration::from_millis(600), ..Options::default() });
    h.run_attempt(0).await;
    let Seen::Trigger(_, checkpoint) = h.tm.wait_for("trigger", trigger_of(0)).await else { unreachable!() };
    for subtask in 0..2 {
        let task = h.task(0, subtask);
        let snapshot = h.snapshot(checkpoint, task).await;
        h.handle.send(JobInput::Acknowledge(task, checkpoint, snapshot));
    }
    // Every task acknowledged: the metadata write (600 ms) is in flight. Now a task fails.
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.report(h.task(0, 0), TaskExecutionState::Failed);
    h.tm.wait_for("cancellation", |s| *s == Seen::Cancel(0)).await;
    h.report(h.task(0, 1), TaskExecutionState::Canceled);
    let restores = h.run_attempt(1).await;
    assert_eq!(restores, vec![Some(checkpoint); 2], "the new attempt restores the checkpoint that completed meanwhile");
    let layout = CheckpointLayout::new(h.storage.as_ref().unwrap(), h.job);
    assert!(h.exists(&layout.metadata_url(checkpoint)).await);
    assert!(h.exists(&layout.task_file_url(checkpoint, "0-0")).await, "the sweep left the restored checkpoint alone");
    assert!(!h.tm.seen().contains(&Seen::Notify(1, checkpoint)), "no notification under the wrong attempt");
}

// Item 8: an aborted checkpoint is announced to the attempt's tasks, so that tasks aligning its
// barriers release their inputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_checkpoint_is_announced_to_the_tasks_of_the_attempt() {
    let h = Harness::start(Options::default());
    h.run_attempt(0).await;
    let Seen::Trigger(_, checkpoint) = h.tm.wait_for("trigger", trigger_of(0)).await else { unreachable!() };
    h.handle.send(JobInput::Decline(h.task(0, 1), checkpoint, "no space".into()));
    h.tm.wait_for("abort announcement", |s| *s == Seen::Abort(0, checkpoint)).await;
    // Checkpoints go on.
    h.tm.wait_for("next trigger", |s| matches!(s, Seen::Trigger(0, id) if *id > checkpoint)).await;
}

// Item 2: a repeated acknowledgement of a completed checkpoint (the taskmanager retries its
// reports) deletes nothing; a late one of an aborted checkpoint deletes what it wrote (item 9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_acknowledgements_keep_completed_files_and_late_ones_of_aborted_checkpoints_are_deleted() {
    let h = Harness::start(Options::default());
    h.run_attempt(0).await;
    let Seen::Trigger(_, first) = h.tm.wait_for("trigger", trigger_of(0)).await else { unreachable!() };
    let snapshots = [h.snapshot(first, h.task(0, 0)).await, h.snapshot(first, h.task(0, 1)).await];
    for (subtask, snapshot) in snapshots.iter().enumerate() {
        h.handle.send(JobInput::Acknowledge(h.task(0, subtask as u32), first, snapshot.clone()));
    }
    h.tm.wait_for("completion", |s| *s == Seen::Notify(0, first)).await;
    for (subtask, snapshot) in snapshots.iter().enumerate() {
        h.handle.send(JobInput::Acknowledge(h.task(0, subtask as u32), first, snapshot.clone()));
    }
    // The next checkpoint is declined; one task's upload lands afterwards.
    let Seen::Trigger(_, second) = h.tm.wait_for("trigger", |s| matches!(s, Seen::Trigger(0, id) if *id > first)).await
    else {
        unreachable!()
    };
    h.handle.send(JobInput::Decline(h.task(0, 0), second, "no space".into()));
    h.tm.wait_for("abort", |s| *s == Seen::Abort(0, second)).await;
    let late = h.snapshot(second, h.task(0, 1)).await;
    let late_uri = late.handles[0].uri.clone();
    h.handle.send(JobInput::Acknowledge(h.task(0, 1), second, late));
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.exists(&late_uri).await {
        assert!(Instant::now() < deadline, "the late upload {late_uri} was not deleted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for snapshot in &snapshots {
        assert!(h.exists(&snapshot.handles[0].uri).await, "a file of completed checkpoint {first} was deleted");
    }
}

// Item 7: the job is FINISHED only when every taskmanager that ran its tasks committed; a
// taskmanager that does not know the attempt (it restarted) refuses, and the attempt fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_final_commit_fails_the_attempt_instead_of_finishing_the_job() {
    let h = Harness::start(Options { checkpointing: None, ..Options::default() });
    *h.tm.final_commit.lock().unwrap() = Err(GatewayError::refused("taskmanager tm-a holds no tasks of the job"));
    h.run_attempt(0).await;
    h.report(h.task(0, 0), TaskExecutionState::Finished);
    h.report(h.task(0, 1), TaskExecutionState::Finished);
    h.tm.wait_for("final commit", |s| *s == Seen::Notify(0, FINAL_CHECKPOINT)).await;
    // Refused: the job restarts; the next attempt's commit succeeds.
    *h.tm.final_commit.lock().unwrap() = Ok(());
    h.run_attempt(1).await;
    assert_ne!(h.handle.view.borrow().details.state, JobStatus::Finished);
    h.report(h.task(1, 0), TaskExecutionState::Finished);
    h.report(h.task(1, 1), TaskExecutionState::Finished);
    h.state(JobStatus::Finished).await;
    let details = h.handle.view.borrow().details.clone();
    assert_eq!(details.restarts, 1);
    assert!(details.restart_failures[0].contains("holds no tasks of the job"), "{details:?}");
}

// Lost reports: a task whose end report never arrives (dropped) is no longer listed by its
// taskmanager's heartbeats; after the grace period it counts as failed and the job restarts
// instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_ended_without_its_report_arriving_fails_the_attempt_after_the_grace_period() {
    let options = Options { checkpointing: None, report_grace: Duration::from_millis(300), ..Options::default() };
    let h = Harness::start(options);
    h.run_attempt(0).await;
    let listed = |subtasks: &[u32]| JobInput::Heartbeat {
        taskmanager: "tm-a".into(),
        tasks: subtasks
            .iter()
            .map(|s| weir_runtime::HeartbeatTask {
                task: h.task(0, *s),
                state: TaskExecutionState::Running,
                records_in: 0,
                records_out: 0,
                time: weir_runtime::TimeShares::default(),
                input_watermark: None,
            })
            .collect(),
    };
    h.handle.send(listed(&[0, 1]));
    // Task 1 ends; its report is lost; heartbeats stop listing it.
    h.handle.send(listed(&[0]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.handle.send(listed(&[0]));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(h.handle.view.borrow().details.state, JobStatus::Running, "within the grace period nothing happens");
    assert!(!h.tm.seen().contains(&Seen::Cancel(0)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.handle.send(listed(&[0]));
    h.tm.wait_for("cancellation of the attempt", |s| *s == Seen::Cancel(0)).await;
    h.report(h.task(0, 0), TaskExecutionState::Canceled);
    h.run_attempt(1).await;
    let details = h.handle.view.borrow().details.clone();
    assert!(details.restart_failures[0].contains("no longer running on taskmanager tm-a"), "{details:?}");
}
