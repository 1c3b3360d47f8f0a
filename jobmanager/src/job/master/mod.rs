//! The job master: the one task that owns a job.
//!
//! It holds the job's lifecycle state machine ([`Job`]), its execution plan, its checkpoint
//! coordinator and its restart timer, and takes [`JobInput`]s from one mailbox: task events and
//! checkpoint reports routed from taskmanagers, lost taskmanagers from the registry, requests
//! from REST, and the completions of its own side effects ([`Effect`]). The decisions are pure
//! (the lifecycle and the coordinator take `now` as an input and return commands and actions);
//! the master carries them out in order, without waiting for any of them: commands to a
//! taskmanager go to that taskmanager's [`Outbox`], storage writes and reads are spawned, and
//! deletions go to the job's [`Deleter`]. Each completes by sending an [`Effect`] back, tagged
//! with the attempt it belongs to, so that a late completion never acts on a newer attempt.
//! After every input it publishes a [`JobView`] for readers (REST), who never lock anything of
//! the job.
//!
//! An attempt starts in stages: wait until no checkpoint's metadata is being written (a
//! checkpoint that may still complete decides the restore point), read the restore point (the
//! newest retained checkpoint whose metadata reads back; unreadable ones are discarded), sweep
//! the job's checkpoint directory and record the attempt, then ask the registry for slots and
//! deploy.

mod attempt;
mod checkpoints;
mod ending;
mod savepoints;

pub(crate) use savepoints::SavepointRequest;
pub use savepoints::SavepointStatus;

use super::lifecycle::{Job, JobCommand, JobStatus};
use super::outbox::{Command, Outbox, describe};
use super::view::JobView;
use crate::checkpoint::files::{self, Deleter, Deletion, Unusable};
use crate::checkpoint::report::CheckpointsReport;
use crate::checkpoint::{Action, CheckpointSettings, Coordinator, TriggerRefused};
use crate::error::Error;
use crate::jobstore::{JobRecord, JobStore, RecordedStatus};
use crate::plan::ExecutionPlan;
use crate::registry::{AssignedSlot, RegistryHandle, SlotShortage};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};
use weir_api::runtime::CheckpointBarrier;
use weir_runtime::checkpoint::{CheckpointMetadata, CheckpointingSpec, TaskSnapshot};
use weir_runtime::storage::{CheckpointLayout, Storage};
use weir_runtime::{
    FailureKind, GatewayError, GatewayResult, HeartbeatTask, JobArtifact, JobId, TaskEvent, TaskExecutionState, TaskId,
};

/// What a job master takes from its mailbox.
pub(crate) enum JobInput {
    /// A task's state changed.
    Task(TaskEvent),
    /// A task acknowledged a checkpoint.
    Acknowledge(TaskId, u64, TaskSnapshot),
    /// A task declined a checkpoint.
    Decline(TaskId, u64, String),
    /// The job's tasks a taskmanager's heartbeat lists (deployed and not ended), with their
    /// state and counters.
    Heartbeat { taskmanager: String, tasks: Vec<HeartbeatTask> },
    /// A taskmanager holding slots of the job is gone.
    TaskManagerLost { taskmanager: String, reason: String },
    /// The user asks to cancel the job.
    Cancel(oneshot::Sender<Result<(), Error>>),
    /// The user asks for a checkpoint now; the answer is its id.
    TriggerCheckpoint(oneshot::Sender<Result<u64, Error>>),
    /// The user asks for a savepoint; the answer is the request's id.
    TriggerSavepoint(SavepointRequest, oneshot::Sender<Result<String, Error>>),

    /// One of the master's side effects completed.
    Effect(Effect),
}

/// The completion of one of the master's side effects.
pub(crate) enum Effect {
    /// The pause before the next attempt is over.
    RestartDue { attempt: u32 },
    /// The restore point of an attempt was read.
    RestorePoint { attempt: u32, metadata: Option<Box<CheckpointMetadata>>, unusable: Vec<Unusable> },
    /// The sweep before an attempt is done.
    Swept { attempt: u32 },
    /// The final sweep after the job ended is done.
    FinalSweepDone,
    /// A record write completed.
    Recorded(RecordPurpose),
    /// The registry answered a slot request.
    Slots { attempt: u32, result: Result<Vec<AssignedSlot>, SlotShortage> },
    /// A task was not deployed because its attempt is being cancelled.
    NotDeployed { task: TaskId },
    /// Deploying a task failed.
    DeployFailed { task: TaskId, taskmanager: String, error: GatewayError },
    /// Cancelling tasks on a taskmanager failed.
    CancelFailed { taskmanager: String, error: GatewayError },
    /// Triggering a checkpoint failed.
    TriggerFailed { attempt: u32, checkpoint: u64, reason: String },
    /// A taskmanager answered the preparation of a savepoint.
    SavepointPrepared { attempt: u32, checkpoint: u64, taskmanager: String, result: GatewayResult<()> },
    /// A checkpoint's metadata is written.
    MetadataWritten { checkpoint: u64 },
    /// Writing a checkpoint's metadata failed.
    MetadataFailed { checkpoint: u64, reason: String },
    /// A taskmanager answered the final commit of an attempt.
    FinalCommit { attempt: u32, taskmanager: String, result: GatewayResult<()> },
}

/// Why the job's record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordPurpose {
    /// Before attempt `n` is deployed.
    Attempt(u32),
    /// Checkpoint ids up to `n` (excluding) are reserved.
    Ids(u64),
    /// The user cancelled: the job's tasks may now be cancelled.
    Cancelling,
    /// The job ended.
    Ended,
}

/// Everything a job master starts with.
pub(crate) struct JobSetup {
    pub(crate) id: JobId,
    pub(crate) job: Job,
    pub(crate) plan: ExecutionPlan,
    pub(crate) artifact: JobArtifact,
    pub(crate) args: Vec<String>,
    pub(crate) checkpointing: Option<CheckpointingSetup>,
    /// The savepoint the job started from, mapped onto its plan: the restore point while the
    /// job has no completed checkpoint of its own.
    pub(crate) initial_restore: Option<Box<CheckpointMetadata>>,
    pub(crate) slot_request_timeout: Duration,
    /// How long a task believed running may be missing from its taskmanager's heartbeats before
    /// it counts as ended without a report.
    pub(crate) report_grace: Duration,
    pub(crate) registry: RegistryHandle,
    /// Where the job's record goes, with the record as written at submission (or found at
    /// recovery); `None` keeps nothing (in-process jobs).
    pub(crate) record: Option<(JobStore, JobRecord)>,
}

/// A job's checkpointing.
pub(crate) struct CheckpointingSetup {
    pub(crate) coordinator: Coordinator,
    pub(crate) settings: CheckpointSettings,
    pub(crate) storage: Storage,
}

/// The handle of a running job master.
#[derive(Clone)]
pub(crate) struct JobHandle {
    pub(crate) mailbox: mpsc::UnboundedSender<JobInput>,
    pub(crate) view: watch::Receiver<Arc<JobView>>,
}

impl std::fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle").finish_non_exhaustive()
    }
}

/// A job master that is set up but not running yet.
pub(crate) struct PendingMaster {
    master: JobMaster,
    inputs: mpsc::UnboundedReceiver<JobInput>,
}

impl PendingMaster {
    /// Starts the master on the current tokio runtime; the job starts its first attempt at once
    /// (or, recovered as cancelling, ends). Its handle must be reachable (in the jobmanager's
    /// directory) before: its tasks report at once.
    pub(crate) fn start(self) {
        tokio::spawn(self.master.run(self.inputs));
    }
}

impl JobHandle {
    /// The master of a job and its handle; nothing runs before [`PendingMaster::start`].
    pub(crate) fn new(setup: JobSetup) -> (Self, PendingMaster) {
        let (mailbox, inputs) = mpsc::unbounded_channel();
        let master = JobMaster::new(setup, mailbox.clone());
        let view = master.view.subscribe();
        (Self { mailbox, view }, PendingMaster { master, inputs })
    }

    /// Sends `input` to the master (dropped if it already ended).
    pub(crate) fn send(&self, input: JobInput) {
        let _ = self.mailbox.send(input);
    }
}

/// The stages of starting an attempt.
enum Stage {
    /// Waiting until no checkpoint's metadata is being written.
    AwaitMetadata,
    /// Reading the restore point.
    ReadRestorePoint,
    /// Sweeping the checkpoint directory and recording the attempt.
    Prepare { restore: Option<Box<CheckpointMetadata>>, swept: bool, recorded: bool },
    /// Waiting for slots.
    AwaitSlots { restore: Option<Box<CheckpointMetadata>> },
}

/// The checkpointing of a job, owned by its master.
struct Checkpointing {
    coordinator: Coordinator,
    settings: CheckpointSettings,
    storage: Storage,
    layout: CheckpointLayout,
    deleter: Deleter,
}

/// The final commit of a finished attempt: taskmanagers still to answer, the first failure.
struct FinalCommits {
    attempt: u32,
    waiting: BTreeSet<String>,
    failure: Option<String>,
}

/// Record writes, one at a time, each retried until it lands.
struct Recorder {
    store: JobStore,
    record: JobRecord,
    queue: mpsc::UnboundedSender<(JobRecord, RecordPurpose)>,
}

/// The end of a job: what must happen before the master stops.
#[derive(Default)]
struct Ending {
    started: bool,
    sweep_requested: bool,
    swept: bool,
    recorded: bool,
}

struct JobMaster {
    id: JobId,
    job: Job,
    plan: ExecutionPlan,
    artifact: JobArtifact,
    args: Vec<String>,
    checkpoints: Option<Checkpointing>,
    initial_restore: Option<Box<CheckpointMetadata>>,
    slot_request_timeout: Duration,
    report_grace: Duration,
    /// Tasks believed running that heartbeats of their taskmanager no longer list, since when.
    unlisted: std::collections::HashMap<TaskId, Instant>,
    registry: RegistryHandle,
    mailbox: mpsc::UnboundedSender<JobInput>,
    outboxes: BTreeMap<String, Outbox>,
    stage: Option<Stage>,
    final_commits: Option<FinalCommits>,
    /// The terminal checkpoint being written before the final commit: (attempt, id).
    terminal_checkpoint: Option<(u32, u64)>,
    recorder: Option<Recorder>,
    /// Cancellation commands held back until the `Cancelling` record is written.
    cancel_after_record: Option<Vec<JobCommand>>,
    ending: Ending,
    savepoints: savepoints::Savepoints,
    view: watch::Sender<Arc<JobView>>,
}

/// The time, as the pure parts take it.
#[derive(Clone, Copy)]
struct Now {
    instant: Instant,
    epoch_ms: i64,
}

impl Now {
    fn read() -> Self {
        let epoch_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        Self { instant: Instant::now(), epoch_ms }
    }
}

/// Longest pause between two attempts to write a job record.
const MAX_RECORD_BACKOFF: Duration = Duration::from_secs(5);

impl JobMaster {
    fn new(setup: JobSetup, mailbox: mpsc::UnboundedSender<JobInput>) -> Self {
        let checkpoints = setup.checkpointing.map(|c| {
            let layout = CheckpointLayout::new(&c.storage, setup.id);
            let deleter = Deleter::start(setup.id, c.storage.clone(), layout.clone());
            Checkpointing { coordinator: c.coordinator, settings: c.settings, storage: c.storage, layout, deleter }
        });
        let recorder = setup.record.map(|(store, record)| {
            let (queue, writes) = mpsc::unbounded_channel();
            tokio::spawn(write_records(setup.id, store.clone(), writes, mailbox.clone()));
            Recorder { store, record, queue }
        });
        let report = checkpoints
            .as_ref()
            .map(|c| CheckpointsReport::of(&c.coordinator, &c.settings, &c.layout, Now::read().epoch_ms));
        let (view, _) =
            watch::channel(Arc::new(JobView::of(&setup.job, report, false, Arc::default(), Instant::now())));
        Self {
            id: setup.id,
            job: setup.job,
            plan: setup.plan,
            artifact: setup.artifact,
            args: setup.args,
            checkpoints,
            initial_restore: setup.initial_restore,
            slot_request_timeout: setup.slot_request_timeout,
            report_grace: setup.report_grace,
            unlisted: std::collections::HashMap::new(),
            registry: setup.registry,
            mailbox,
            outboxes: BTreeMap::new(),
            stage: None,
            final_commits: None,
            terminal_checkpoint: None,
            recorder,
            cancel_after_record: None,
            ending: Ending::default(),
            savepoints: savepoints::Savepoints::default(),
            view,
        }
    }

    async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<JobInput>) {
        let now = Now::read();
        if self.job.status == JobStatus::Created {
            self.start_attempt();
        }
        self.after_input(now);
        let interval = self.checkpoints.as_ref().map_or(1000, |c| c.settings.config.interval_ms.max(1) as u64);
        let mut tick = tokio::time::interval(Duration::from_millis((interval / 10).clamp(5, 1000)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.done() {
            let ticking = self.checkpoints.is_some() && self.job.can_checkpoint();
            tokio::select! {
                input = inputs.recv() => {
                    let Some(input) = input else { break };
                    let now = Now::read();
                    self.handle(input, now);
                    self.after_input(now);
                }
                _ = tick.tick(), if ticking => {
                    let now = Now::read();
                    self.tick(now);
                    self.after_input(now);
                }
            }
        }
        debug!(job_id = %self.id, "job master stopped");
    }

    fn done(&self) -> bool {
        self.ending.started && self.ending.swept && self.ending.recorded
    }

    fn handle(&mut self, input: JobInput, now: Now) {
        match input {
            JobInput::Task(event) => self.task_event(event, now),
            JobInput::Acknowledge(task, checkpoint, snapshot) => {
                if let Some(c) = self.checkpoints.as_mut() {
                    let actions = c.coordinator.acknowledge(task, checkpoint, snapshot, now.epoch_ms);
                    self.perform(actions, now);
                }
            }
            JobInput::Decline(task, checkpoint, reason) => {
                if let Some(c) = self.checkpoints.as_mut() {
                    debug!(job_id = %self.id, checkpoint_id = checkpoint, %task, "checkpoint declined: {reason}");
                    let actions = c.coordinator.decline(task, checkpoint, reason, now.epoch_ms);
                    self.perform(actions, now);
                }
            }
            JobInput::Heartbeat { taskmanager, tasks } => self.reconcile(&taskmanager, &tasks, now),
            JobInput::TaskManagerLost { taskmanager, reason } => self.taskmanager_lost(&taskmanager, &reason, now),
            JobInput::Cancel(reply) => {
                let _ = reply.send(self.cancel(now));
            }
            JobInput::TriggerCheckpoint(reply) => {
                let _ = reply.send(self.trigger_checkpoint(now));
            }
            JobInput::TriggerSavepoint(request, reply) => {
                let answer = self.trigger_savepoint(request, now);
                // Readers find the request as soon as its id is known.
                self.publish(now);
                let _ = reply.send(answer);
            }

            JobInput::Effect(effect) => self.effect(effect, now),
        }
    }

    /// After every input: a job that just ended starts winding down; readers see the news.
    fn after_input(&mut self, now: Now) {
        if self.job.status.is_terminal() && !self.ending.started {
            self.end(now);
        }
        if self.ending.started && !self.ending.swept {
            self.final_sweep();
        }
        self.publish(now);
    }

    fn publish(&mut self, now: Now) {
        let report = self
            .checkpoints
            .as_ref()
            .map(|c| CheckpointsReport::of(&c.coordinator, &c.settings, &c.layout, now.epoch_ms));
        let savepoints = self.savepoints.published();
        self.view.send_replace(Arc::new(JobView::of(&self.job, report, self.done(), savepoints, now.instant)));
    }

    // ---------------------------------------------------------------------------------------
    // Task events and failures
    // ---------------------------------------------------------------------------------------

    fn task_event(&mut self, event: TaskEvent, now: Now) {
        if event.task.attempt != self.job.attempt {
            debug!(job_id = %self.id, task = %event.task, state = ?event.state, "event of another attempt ignored");
            return;
        }
        if let Some(failure) = &event.failure {
            warn!(job_id = %self.id, vertex = event.task.vertex, subtask = event.task.subtask, "task failed: {failure}");
        }
        let mut event = event;
        if let FailureKind::CheckpointUnusable(checkpoint) = event.failure_kind
            && self.initial_restore.as_ref().is_some_and(|m| m.checkpoint_id == checkpoint)
            && self.checkpoints.as_ref().is_none_or(|c| c.coordinator.latest_completed_id().is_none())
        {
            // The savepoint the job started from cannot be restored: nothing to fall back to.
            warn!(job_id = %self.id, checkpoint_id = checkpoint, "the savepoint the job started from cannot be restored");
            event.failure_kind = FailureKind::Unrecoverable;
        }
        if let (FailureKind::CheckpointUnusable(checkpoint), Some(c)) = (event.failure_kind, self.checkpoints.as_mut())
        {
            warn!(job_id = %self.id, checkpoint_id = checkpoint, "checkpoint {checkpoint} is unusable (a task cannot restore it), falling back to the previous checkpoint");
            let actions = c.coordinator.discard_completed(checkpoint);
            self.perform(actions, now);
        }
        let commands = self.job.on_task_event(&event, now.instant);
        if let Some(c) = self.checkpoints.as_mut() {
            let actions = match event.state {
                TaskExecutionState::Finished => {
                    c.coordinator.task_finished(event.task, event.final_snapshot.clone(), now.epoch_ms)
                }
                TaskExecutionState::Failed | TaskExecutionState::Canceled => {
                    c.coordinator.task_failed(event.task, now.epoch_ms)
                }
                _ => Vec::new(),
            };
            self.perform(actions, now);
        }
        self.apply(commands, now);
    }

    /// Reconciles the job's view of its tasks on `taskmanager` with what the taskmanager's
    /// heartbeat lists, for reports that were lost: a task believed deploying that runs is
    /// running; a task believed running that no heartbeat has listed for `report_grace` ended
    /// without its report arriving, and counts as failed (the attempt fails and restarts; a lost
    /// end report never hangs a job).
    fn reconcile(&mut self, taskmanager: &str, listed: &[HeartbeatTask], now: Now) {
        let attempt = self.job.attempt;
        let mut events = Vec::new();
        for (id, task) in self.job.tasks.iter().filter(|(id, t)| id.attempt == attempt && t.taskmanager == taskmanager)
        {
            if task.state.is_terminal() {
                self.unlisted.remove(id);
                continue;
            }
            match listed.iter().find(|h| h.task == *id) {
                Some(h) => {
                    self.unlisted.remove(id);
                    if task.state == TaskExecutionState::Deploying && h.state == TaskExecutionState::Running {
                        events.push(TaskEvent::new(*id, TaskExecutionState::Running, h.records_in, h.records_out));
                    }
                }
                None if task.state == TaskExecutionState::Running => {
                    let since = *self.unlisted.entry(*id).or_insert(now.instant);
                    if now.instant.saturating_duration_since(since) > self.report_grace {
                        self.unlisted.remove(id);
                        warn!(job_id = %self.id, task = %id, %taskmanager, "the task ended on its taskmanager without its report arriving");
                        events.push(TaskEvent {
                            failure: Some(format!(
                                "it is no longer running on taskmanager {taskmanager}, which did not report how it ended"
                            )),
                            ..TaskEvent::new(*id, TaskExecutionState::Failed, task.records_in, task.records_out)
                        });
                    }
                }
                None => {}
            }
        }
        for h in listed.iter().filter(|h| h.task.attempt == attempt) {
            self.job.task_metrics(h);
        }
        for event in events {
            self.task_event(event, now);
        }
    }

    fn taskmanager_lost(&mut self, taskmanager: &str, reason: &str, now: Now) {
        if let Some(outbox) = self.outboxes.remove(taskmanager) {
            outbox.abandon();
        }
        let lost: Vec<TaskId> = self
            .job
            .tasks
            .iter()
            .filter(|(_, t)| t.taskmanager == taskmanager && !t.state.is_terminal())
            .map(|(id, _)| *id)
            .collect();
        let commands = self.job.taskmanager_lost(taskmanager, reason, now.instant);
        if let Some(c) = self.checkpoints.as_mut() {
            let actions: Vec<Action> =
                lost.into_iter().flat_map(|t| c.coordinator.task_failed(t, now.epoch_ms)).collect();
            self.perform(actions, now);
        }
        if let Some(commits) = self.final_commits.as_mut()
            && commits.waiting.remove(taskmanager)
        {
            commits.failure.get_or_insert_with(|| format!("taskmanager {taskmanager} lost: {reason}"));
            self.final_commit_settled(now);
        }
        self.apply(commands, now);
    }

    fn cancel(&mut self, now: Now) -> Result<(), Error> {
        let command = self.job.cancel(now.instant).map_err(|status| Error::IllegalState {
            job: self.id,
            status: status.to_string(),
            action: "cancel".into(),
        })?;
        info!(job_id = %self.id, "cancelling the job");
        self.stage = None;
        let commands: Vec<JobCommand> = command.into_iter().collect();
        if self.recorder.is_some() && !self.job.status.is_terminal() {
            // Recorded first: a jobmanager that restarts before the job ends must not resume it.
            self.cancel_after_record = Some(commands);
            self.record(RecordPurpose::Cancelling);
        } else {
            self.apply(commands, now);
        }
        Ok(())
    }

    /// Carries out the lifecycle's commands.
    fn apply(&mut self, commands: Vec<JobCommand>, now: Now) {
        let attempt = self.job.attempt;
        for command in commands {
            match command {
                JobCommand::CancelTasks => {
                    for tm in self.job.attempt_taskmanagers() {
                        if let Some(outbox) = self.outboxes.get(&tm) {
                            outbox.send(Command::Cancel(attempt));
                        }
                    }
                }
                // Handled when the job ends (`end`).
                JobCommand::ReleaseResources => {}
                JobCommand::Restart(delay) => {
                    self.release_attempt(attempt);
                    info!(job_id = %self.id, attempt, delay_ms = delay.as_millis() as u64, "restarting the job after a pause");
                    let mailbox = self.mailbox.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = mailbox.send(JobInput::Effect(Effect::RestartDue { attempt }));
                    });
                }
                JobCommand::CommitFinal => {
                    // First the terminal checkpoint (see `Coordinator::terminal_checkpoint`);
                    // the final commit follows once its metadata is written (or failed).
                    if let Some(c) = self.checkpoints.as_mut()
                        && let Some((checkpoint_id, actions)) = c.coordinator.terminal_checkpoint(now.epoch_ms)
                    {
                        info!(job_id = %self.id, attempt, checkpoint_id, "every task finished: writing the terminal checkpoint");
                        self.terminal_checkpoint = Some((attempt, checkpoint_id));
                        self.perform(actions, now);
                    } else {
                        self.commit_final(attempt, now);
                    }
                }
            }
        }
    }

    /// Every taskmanager that ran a task of the attempt commits what its sinks hold; one that is
    /// gone cannot, and the attempt fails.
    fn commit_final(&mut self, attempt: u32, now: Now) {
        let (reachable, gone): (BTreeSet<String>, BTreeSet<String>) =
            self.job.attempt_taskmanagers().into_iter().partition(|tm| self.outboxes.contains_key(tm));
        for tm in &reachable {
            if let Some(outbox) = self.outboxes.get(tm) {
                outbox.send(Command::CommitFinal(attempt));
            }
        }
        let failure = gone.first().map(|tm| format!("taskmanager {tm} is gone"));
        self.final_commits = Some(FinalCommits { attempt, waiting: reachable, failure });
        self.final_commit_settled(now);
    }

    /// Checkpoint `checkpoint`'s metadata was written or failed: if it is the terminal
    /// checkpoint of the current attempt, the final commit goes ahead.
    fn terminal_checkpoint_settled(&mut self, checkpoint: u64, now: Now) {
        if let Some((attempt, id)) = self.terminal_checkpoint
            && id == checkpoint
        {
            self.terminal_checkpoint = None;
            if attempt == self.job.attempt {
                self.commit_final(attempt, now);
            }
        }
    }

    /// Releases what an attempt holds on its taskmanagers and in the registry.
    fn release_attempt(&mut self, attempt: u32) {
        for tm in self.job.attempt_taskmanagers() {
            if let Some(outbox) = self.outboxes.get(&tm) {
                outbox.send(Command::Release(attempt));
            }
        }
        self.registry.release_slots(self.id);
    }

    fn final_commit_settled(&mut self, now: Now) {
        let Some(commits) = self.final_commits.as_ref().filter(|c| c.waiting.is_empty()) else { return };
        let commands = match commits.failure.clone() {
            None => {
                info!(job_id = %self.id, attempt = commits.attempt, "the job's output is committed");
                self.job.final_committed(now.instant)
            }
            Some(failure) => self.job.final_commit_failed(failure, now.instant),
        };
        self.final_commits = None;
        self.apply(commands, now);
    }

    // ---------------------------------------------------------------------------------------
    // Effects
    // ---------------------------------------------------------------------------------------

    fn effect(&mut self, effect: Effect, now: Now) {
        let current = self.job.attempt;
        match effect {
            Effect::RestartDue { attempt } if attempt == current && self.job.next_attempt(now.instant) => {
                self.start_attempt();
            }
            Effect::RestorePoint { attempt, metadata, unusable } if attempt == current => {
                self.restore_point_read(metadata, unusable, now);
            }
            Effect::Swept { attempt } if attempt == current => self.prepared(true, false),
            Effect::FinalSweepDone => self.ending.swept = true,
            Effect::Recorded(purpose) => self.recorded(purpose, now),
            Effect::Slots { attempt, result } if attempt == current => self.slots_granted(result, now),
            Effect::Slots { result: Ok(_), .. } => self.registry.release_slots(self.id),
            Effect::NotDeployed { task } if task.attempt == current => {
                let commands = self.job.task_not_deployed(task, now.instant);
                if let Some(c) = self.checkpoints.as_mut() {
                    let actions = c.coordinator.task_failed(task, now.epoch_ms);
                    self.perform(actions, now);
                }
                self.apply(commands, now);
            }
            Effect::DeployFailed { task, taskmanager, error } if task.attempt == current => {
                if error.is_unreachable() {
                    self.registry.lost(&taskmanager, &format!("cannot reach it to deploy a task ({error})"));
                }
                let message = format!("deploying {task} failed: {}", describe(&taskmanager, &error));
                warn!(job_id = %self.id, "{message}");
                let commands = self.job.deployment_failed(task, &[], message, now.instant);
                if let Some(c) = self.checkpoints.as_mut() {
                    let actions = c.coordinator.task_failed(task, now.epoch_ms);
                    self.perform(actions, now);
                }
                self.apply(commands, now);
            }
            // A taskmanager that cannot be reached is gone: declaring it lost now (instead of
            // after the heartbeat timeout) lets the job restart at once.
            Effect::CancelFailed { taskmanager, error } if error.is_unreachable() => {
                self.registry.lost(&taskmanager, &format!("cannot reach it to cancel tasks ({error})"));
            }
            Effect::TriggerFailed { attempt, checkpoint, reason } if attempt == current => {
                if let Some(c) = self.checkpoints.as_mut() {
                    let actions = c.coordinator.trigger_failed(checkpoint, reason, now.epoch_ms);
                    self.perform(actions, now);
                }
            }
            Effect::SavepointPrepared { attempt, checkpoint, taskmanager, result } if attempt == current => {
                self.savepoint_prepared(checkpoint, &taskmanager, result, now);
            }
            Effect::MetadataWritten { checkpoint } => {
                if let Some(c) = self.checkpoints.as_mut() {
                    let actions = c.coordinator.metadata_written(checkpoint, now.epoch_ms);
                    self.perform(actions, now);
                }
                self.metadata_settled();
                self.terminal_checkpoint_settled(checkpoint, now);
            }
            Effect::MetadataFailed { checkpoint, reason } => {
                if let Some(c) = self.checkpoints.as_mut() {
                    let actions = c.coordinator.metadata_failed(checkpoint, reason, now.epoch_ms);
                    self.perform(actions, now);
                }
                self.metadata_settled();
                self.terminal_checkpoint_settled(checkpoint, now);
            }
            Effect::FinalCommit { attempt, taskmanager, result } => {
                let Some(commits) = self.final_commits.as_mut().filter(|c| c.attempt == attempt) else { return };
                commits.waiting.remove(&taskmanager);
                if let Err(error) = result {
                    commits.failure.get_or_insert_with(|| describe(&taskmanager, &error));
                }
                self.final_commit_settled(now);
            }
            // Completions of an attempt that is over.
            _ => {}
        }
    }

    /// A metadata write ended: a restart or the end of the job may have waited for it.
    fn metadata_settled(&mut self) {
        if matches!(self.stage, Some(Stage::AwaitMetadata)) {
            self.advance();
        }
    }
}

/// Writes records in order; each is retried with backoff until it lands (a storage outage
/// delays what waits for it, and loses nothing).
async fn write_records(
    job: JobId,
    store: JobStore,
    mut writes: mpsc::UnboundedReceiver<(JobRecord, RecordPurpose)>,
    mailbox: mpsc::UnboundedSender<JobInput>,
) {
    while let Some((record, purpose)) = writes.recv().await {
        let mut backoff = Duration::from_millis(100);
        while let Err(e) = store.put(&record).await {
            warn!(job_id = %job, ?purpose, "cannot write the job's record (retrying in {} ms): {e}", backoff.as_millis());
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_RECORD_BACKOFF);
        }
        let _ = mailbox.send(JobInput::Effect(Effect::Recorded(purpose)));
    }
}
