//! The checkpoint coordinator: inputs in, [`Action`]s out (see the [module docs](super)).

use super::stats::{self, CheckpointCounts, CheckpointStatus, CompletedCheckpoint, HistoryEntry, PendingView};
use super::{
    AbortReason, Action, CheckpointConfig, CheckpointKind, InvalidCheckpointConfig, SharedRegistry, TaskSnapshot,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use weir_runtime::TaskId;

/// Finished checkpoints kept in the history.
pub const HISTORY_LEN: usize = 32;

/// Why [`Coordinator::trigger_now`] did not trigger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerRefused {
    /// The job is ending (the coordinator was stopped).
    #[error("the checkpoint coordinator is stopped")]
    Stopped,
    /// As many checkpoints as allowed are in progress; a retry later may succeed.
    #[error("{pending} checkpoints are in progress, the maximum is {max}")]
    TooManyPending {
        /// Checkpoints in progress.
        pending: usize,
        /// [`CheckpointConfig::max_concurrent`].
        max: usize,
    },
}

/// A checkpoint in progress. It waits for acknowledgements while `waiting` is not empty, then
/// for its metadata to be written.
#[derive(Debug)]
struct Pending {
    kind: CheckpointKind,
    trigger_ms: i64,
    waiting: BTreeSet<TaskId>,
    acks: BTreeMap<TaskId, TaskSnapshot>,
    latest_ack_ms: Option<i64>,
}

impl Pending {
    fn writing_metadata(&self) -> bool {
        self.waiting.is_empty()
    }

    fn state_size(&self) -> u64 {
        self.acks.values().flat_map(|s| &s.handles).map(|h| h.size_bytes).sum()
    }
}

/// The checkpoint coordinator of one job.
#[derive(Debug)]
pub struct Coordinator {
    config: CheckpointConfig,
    tasks_to_ack: BTreeSet<TaskId>,
    sources: BTreeSet<TaskId>,
    next_id: u64,
    pending: BTreeMap<u64, Pending>,
    /// Retained completed checkpoints, oldest first.
    completed: Vec<CompletedCheckpoint>,
    /// The newest completed checkpoint (not savepoint), restored or taken here.
    latest_completed_id: Option<u64>,
    last_trigger_ms: Option<i64>,
    /// When the latest checkpoint completed or was aborted.
    last_end_ms: Option<i64>,
    consecutive_failures: u32,
    counts: CheckpointCounts,
    /// Newest last.
    history: VecDeque<HistoryEntry>,
    shared: SharedRegistry,
    stopped: bool,
    /// A task of the current attempt finished: no checkpoint can include it any more, so none is
    /// triggered until the next attempt.
    task_finished: bool,
}

impl Coordinator {
    /// A coordinator for a job whose tasks are `tasks_to_ack`, of which `sources` receive
    /// triggers; `latest_completed` is the checkpoint the job was restored from (ids continue
    /// after it).
    ///
    /// # Errors
    ///
    /// The config is invalid ([`CheckpointConfig::validate`]).
    pub fn new(
        config: CheckpointConfig,
        tasks_to_ack: BTreeSet<TaskId>,
        sources: BTreeSet<TaskId>,
        latest_completed: Option<u64>,
    ) -> Result<Self, InvalidCheckpointConfig> {
        config.validate()?;
        Ok(Self {
            config,
            tasks_to_ack,
            sources,
            next_id: latest_completed.map_or(1, |id| id.saturating_add(1)),
            pending: BTreeMap::new(),
            completed: Vec::new(),
            latest_completed_id: latest_completed,
            last_trigger_ms: None,
            last_end_ms: None,
            consecutive_failures: 0,
            counts: CheckpointCounts {
                triggered: 0,
                in_progress: 0,
                completed: 0,
                failed: 0,
                restored: latest_completed,
            },
            history: VecDeque::new(),
            shared: SharedRegistry::default(),
            stopped: false,
            task_finished: false,
        })
    }

    /// A new execution attempt of the job runs `tasks_to_ack`, of which `sources` receive
    /// triggers: checkpoints still waiting for the old attempt's tasks are aborted (not counted
    /// as failures), and triggering resumes. Completed checkpoints, shared-file references, ids
    /// and counts carry over. `restored` is the checkpoint the attempt restores from.
    pub fn new_attempt(
        &mut self,
        tasks_to_ack: BTreeSet<TaskId>,
        sources: BTreeSet<TaskId>,
        restored: Option<u64>,
        now_ms: i64,
    ) -> Vec<Action> {
        let ids: Vec<u64> = self.pending.iter().filter(|(_, p)| !p.writing_metadata()).map(|(id, _)| *id).collect();
        let mut actions = Vec::new();
        for id in ids {
            self.abort(id, AbortReason::Restarted, now_ms, &mut actions);
        }
        self.tasks_to_ack = tasks_to_ack;
        self.sources = sources;
        self.stopped = false;
        self.task_finished = false;
        self.last_trigger_ms = None;
        self.last_end_ms = Some(now_ms);
        if restored.is_some() {
            self.counts.restored = restored;
        }
        actions
    }

    /// `task` finished (its input ended): checkpoints still waiting for it are aborted (not
    /// counted as failures), and no more are triggered in this attempt: a checkpoint without a
    /// finished task's state could not restore it.
    pub fn task_finished(&mut self, task: TaskId, now_ms: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        if !self.tasks_to_ack.contains(&task) {
            return actions;
        }
        self.task_finished = true;
        let ids: Vec<u64> = self.pending.iter().filter(|(_, p)| p.waiting.contains(&task)).map(|(id, _)| *id).collect();
        for id in ids {
            self.abort(id, AbortReason::TaskFinished(task), now_ms, &mut actions);
        }
        actions
    }

    /// The retained checkpoint `checkpoint_id` turned out unusable (its metadata is unreadable):
    /// it is no longer retained, and the previous one becomes the latest completed checkpoint.
    /// Emits [`Action::Discard`] and [`Action::DeleteShared`] for files only it used.
    pub fn discard_completed(&mut self, checkpoint_id: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(index) = self.completed.iter().position(|c| c.checkpoint_id == checkpoint_id) else {
            return actions;
        };
        let old = self.completed.remove(index);
        actions.push(Action::Discard { checkpoint_id });
        let unreferenced = self.shared.release(old.shared_uris());
        self.delete_shared(unreferenced, &mut actions);
        self.latest_completed_id = self.completed.last().map(|c| c.checkpoint_id);
        actions
    }

    /// Whether `checkpoint_id` is in progress (waiting for acknowledgements or its metadata).
    pub fn is_pending(&self, checkpoint_id: u64) -> bool {
        self.pending.contains_key(&checkpoint_id)
    }

    /// Time passes: expires checkpoints still waiting for acknowledgements `timeout_ms` after
    /// their trigger, then triggers a checkpoint if one is due: `interval_ms` after the previous
    /// trigger (the first tick triggers at once), `min_pause_ms` after the latest completion or
    /// abort, with fewer than `max_concurrent` in progress, and the job not failed by this tick.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.stopped {
            return actions;
        }
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.writing_metadata() && now_ms.saturating_sub(p.trigger_ms) >= self.config.timeout_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.abort(id, AbortReason::Expired, now_ms, &mut actions);
        }
        let elapsed = |since: Option<i64>, pause: i64| since.is_none_or(|t| now_ms.saturating_sub(t) >= pause);
        let due = !self.task_finished
            && self.pending.len() < self.config.max_concurrent
            && elapsed(self.last_trigger_ms, self.config.interval_ms)
            && elapsed(self.last_end_ms, self.config.min_pause_ms)
            && !actions.iter().any(|a| matches!(a, Action::FailJob { .. }));
        if due {
            self.trigger(CheckpointKind::Checkpoint, now_ms, &mut actions);
        }
        actions
    }

    /// Triggers a checkpoint or savepoint now, regardless of the interval and the minimum pause.
    ///
    /// # Errors
    ///
    /// [`TriggerRefused`] if the coordinator is stopped or `max_concurrent` checkpoints are in
    /// progress (the request is not queued).
    pub fn trigger_now(&mut self, now_ms: i64, kind: CheckpointKind) -> Result<Vec<Action>, TriggerRefused> {
        if self.stopped {
            return Err(TriggerRefused::Stopped);
        }
        if self.pending.len() >= self.config.max_concurrent {
            return Err(TriggerRefused::TooManyPending {
                pending: self.pending.len(),
                max: self.config.max_concurrent,
            });
        }
        let mut actions = Vec::new();
        self.trigger(kind, now_ms, &mut actions);
        Ok(actions)
    }

    /// `task` acknowledged `checkpoint_id`. The last acknowledgement emits
    /// [`Action::WriteMetadata`]. Ignored for unknown or finished checkpoints, unknown tasks and
    /// duplicates.
    pub fn acknowledge(
        &mut self,
        task: TaskId,
        checkpoint_id: u64,
        snapshot: TaskSnapshot,
        now_ms: i64,
    ) -> Vec<Action> {
        let Some(p) = self.pending.get_mut(&checkpoint_id) else {
            tracing::debug!(checkpoint_id, %task, "acknowledgement of a checkpoint not in progress ignored");
            return Vec::new();
        };
        if !p.waiting.remove(&task) {
            tracing::debug!(checkpoint_id, %task, "acknowledgement from an unknown task or a duplicate ignored");
            return Vec::new();
        }
        p.acks.insert(task, snapshot);
        p.latest_ack_ms = Some(now_ms);
        if !p.writing_metadata() {
            return Vec::new();
        }
        vec![Action::WriteMetadata { checkpoint_id, kind: p.kind, acknowledgements: p.acks.clone() }]
    }

    /// `task` could not snapshot `checkpoint_id`: the checkpoint is aborted. Ignored for unknown
    /// tasks and checkpoints not waiting for acknowledgements.
    pub fn decline(&mut self, task: TaskId, checkpoint_id: u64, reason: String, now_ms: i64) -> Vec<Action> {
        let waiting = self.pending.get(&checkpoint_id).is_some_and(|p| !p.writing_metadata());
        let mut actions = Vec::new();
        if waiting && self.tasks_to_ack.contains(&task) {
            self.abort(checkpoint_id, AbortReason::Declined { task, reason }, now_ms, &mut actions);
        }
        actions
    }

    /// `task` failed: every checkpoint still waiting for its acknowledgement is aborted (not
    /// counted as a checkpoint failure: the job restarts anyway).
    pub fn task_failed(&mut self, task: TaskId, now_ms: i64) -> Vec<Action> {
        let ids: Vec<u64> = self.pending.iter().filter(|(_, p)| p.waiting.contains(&task)).map(|(id, _)| *id).collect();
        let mut actions = Vec::new();
        for id in ids {
            self.abort(id, AbortReason::TaskFailed(task), now_ms, &mut actions);
        }
        actions
    }

    /// The metadata of `checkpoint_id` is written: it is complete, unless a newer checkpoint
    /// completed meanwhile (then it is aborted as subsumed). Ignored unless its metadata was
    /// being written.
    pub fn metadata_written(&mut self, checkpoint_id: u64, now_ms: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(kind) = self.pending.get(&checkpoint_id).filter(|p| p.writing_metadata()).map(|p| p.kind) else {
            return actions;
        };
        if kind == CheckpointKind::Checkpoint && self.latest_completed_id.is_some_and(|l| l >= checkpoint_id) {
            self.abort(checkpoint_id, AbortReason::Subsumed, now_ms, &mut actions);
        } else {
            self.complete(checkpoint_id, now_ms, &mut actions);
        }
        actions
    }

    /// Writing the metadata of `checkpoint_id` failed: it is aborted. Ignored unless its metadata
    /// was being written.
    pub fn metadata_failed(&mut self, checkpoint_id: u64, reason: String, now_ms: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.pending.get(&checkpoint_id).is_some_and(Pending::writing_metadata) {
            self.abort(checkpoint_id, AbortReason::MetadataFailed(reason), now_ms, &mut actions);
        }
        actions
    }

    /// The job is ending: checkpoints waiting for acknowledgements are aborted and nothing is
    /// triggered any more. Those whose metadata is being written still complete or fail when the
    /// driver reports.
    pub fn stop(&mut self, now_ms: i64) -> Vec<Action> {
        self.stopped = true;
        let ids: Vec<u64> = self.pending.iter().filter(|(_, p)| !p.writing_metadata()).map(|(id, _)| *id).collect();
        let mut actions = Vec::new();
        for id in ids {
            self.abort(id, AbortReason::Stopped, now_ms, &mut actions);
        }
        actions
    }

    /// Checkpoints in progress, oldest first.
    pub fn pending(&self) -> Vec<PendingView> {
        let total = self.tasks_to_ack.len();
        let view = |(&checkpoint_id, p): (&u64, &Pending)| PendingView {
            checkpoint_id,
            kind: p.kind,
            trigger_ms: p.trigger_ms,
            acknowledged: p.acks.len(),
            total,
            latest_ack_ms: p.latest_ack_ms,
            state_size_bytes: p.state_size(),
            writing_metadata: p.writing_metadata(),
        };
        self.pending.iter().map(view).collect()
    }

    /// Retained completed checkpoints (not savepoints), oldest first.
    pub fn completed(&self) -> &[CompletedCheckpoint] {
        &self.completed
    }

    /// The newest retained completed checkpoint: what the job restarts from.
    pub fn latest_completed(&self) -> Option<&CompletedCheckpoint> {
        self.completed.last()
    }

    /// The id of the newest completed checkpoint, including the one the job was restored from.
    pub fn latest_completed_id(&self) -> Option<u64> {
        self.latest_completed_id
    }

    /// Counts of checkpoints.
    pub fn stats(&self) -> CheckpointCounts {
        CheckpointCounts { in_progress: self.pending.len(), ..self.counts }
    }

    /// The last [`HISTORY_LEN`] finished checkpoints and savepoints, newest first.
    pub fn history(&self) -> impl Iterator<Item = &HistoryEntry> {
        self.history.iter().rev()
    }

    /// The tasks that receive triggers.
    pub fn sources(&self) -> &BTreeSet<TaskId> {
        &self.sources
    }

    /// Reference counts of shared files.
    pub fn shared(&self) -> &SharedRegistry {
        &self.shared
    }

    fn trigger(&mut self, kind: CheckpointKind, now_ms: i64, actions: &mut Vec<Action>) {
        let checkpoint_id = self.next_id;
        self.next_id += 1;
        self.last_trigger_ms = Some(now_ms);
        self.counts.triggered += 1;
        let p = Pending {
            kind,
            trigger_ms: now_ms,
            waiting: self.tasks_to_ack.clone(),
            acks: BTreeMap::new(),
            latest_ack_ms: None,
        };
        actions.push(Action::Trigger { checkpoint_id, kind, timestamp_ms: now_ms });
        if p.writing_metadata() {
            actions.push(Action::WriteMetadata { checkpoint_id, kind, acknowledgements: BTreeMap::new() });
        }
        self.pending.insert(checkpoint_id, p);
    }

    fn complete(&mut self, checkpoint_id: u64, now_ms: i64, actions: &mut Vec<Action>) {
        let Some(p) = self.pending.remove(&checkpoint_id) else { return };
        let done = CompletedCheckpoint::new(checkpoint_id, p.kind, p.trigger_ms, now_ms, p.acks);
        self.counts.completed += 1;
        self.last_end_ms = Some(now_ms);
        self.record(HistoryEntry {
            checkpoint_id,
            kind: done.kind,
            status: CheckpointStatus::Completed,
            trigger_ms: done.trigger_ms,
            end_ms: now_ms,
            duration_ms: done.duration_ms,
            state_size_bytes: done.state_size_bytes,
            failure: None,
        });
        actions.push(Action::NotifyComplete { checkpoint_id });
        if done.kind == CheckpointKind::Savepoint {
            return;
        }
        self.consecutive_failures = 0;
        self.latest_completed_id = Some(checkpoint_id);
        self.shared.register(&done.shared_uris());
        self.completed.push(done);
        let subsumed: Vec<u64> = self
            .pending
            .range(..checkpoint_id)
            .filter(|(_, p)| p.kind == CheckpointKind::Checkpoint && !p.writing_metadata())
            .map(|(id, _)| *id)
            .collect();
        for id in subsumed {
            self.abort(id, AbortReason::Subsumed, now_ms, actions);
        }
        while self.completed.len() > self.config.retained {
            let old = self.completed.remove(0);
            actions.push(Action::Discard { checkpoint_id: old.checkpoint_id });
            let unreferenced = self.shared.release(old.shared_uris());
            self.delete_shared(unreferenced, actions);
        }
    }

    fn abort(&mut self, checkpoint_id: u64, reason: AbortReason, now_ms: i64, actions: &mut Vec<Action>) {
        let Some(p) = self.pending.remove(&checkpoint_id) else { return };
        self.counts.failed += 1;
        self.last_end_ms = Some(now_ms);
        self.record(HistoryEntry {
            checkpoint_id,
            kind: p.kind,
            status: CheckpointStatus::Failed,
            trigger_ms: p.trigger_ms,
            end_ms: now_ms,
            duration_ms: now_ms.saturating_sub(p.trigger_ms).max(0),
            state_size_bytes: p.state_size(),
            failure: Some(reason.to_string()),
        });
        // Failures of checkpoints older than the latest completed one do not count (as Flink's
        // CheckpointFailureManager).
        let counts = reason.counts_as_failure()
            && p.kind == CheckpointKind::Checkpoint
            && self.latest_completed_id.is_none_or(|l| checkpoint_id > l)
            && !self.stopped;
        let failure = counts.then(|| reason.to_string());
        actions.push(Action::Abort { checkpoint_id, reason });
        let unregistered = stats::shared_uris(&p.acks).into_iter().filter(|u| self.shared.references(u) == 0);
        self.delete_shared(unregistered.collect(), actions);
        if let Some(last) = failure {
            self.consecutive_failures += 1;
            if self.consecutive_failures > self.config.tolerable_failures {
                self.consecutive_failures = 0;
                actions.push(Action::FailJob {
                    reason: format!(
                        "more than {} consecutive checkpoint failures; the last: checkpoint {checkpoint_id} {last}",
                        self.config.tolerable_failures
                    ),
                });
            }
        }
    }

    /// Emits [`Action::DeleteShared`] for those of `candidates` (no retained checkpoint uses them)
    /// that no pending checkpoint uses either (it deletes them itself if it is aborted).
    fn delete_shared(&self, mut candidates: BTreeSet<String>, actions: &mut Vec<Action>) {
        for p in self.pending.values() {
            for h in p.acks.values().flat_map(|s| &s.handles) {
                candidates.remove(&h.uri);
            }
        }
        if !candidates.is_empty() {
            actions.push(Action::DeleteShared { uris: candidates.into_iter().collect() });
        }
    }

    fn record(&mut self, entry: HistoryEntry) {
        if self.history.len() == HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::StateHandle;
    use CheckpointKind::{Checkpoint, Savepoint};
    use weir_runtime::JobId;

    const SOURCE: TaskId = TaskId { job: JobId(uuid::Uuid::nil()), attempt: 0, vertex: 0, subtask: 0 };
    const SINK: TaskId = TaskId { job: JobId(uuid::Uuid::nil()), attempt: 0, vertex: 1, subtask: 0 };
    /// The source of another execution attempt: not a task to acknowledge.
    const STRANGER: TaskId = TaskId { job: JobId(uuid::Uuid::nil()), attempt: 1, vertex: 0, subtask: 0 };

    fn config() -> CheckpointConfig {
        CheckpointConfig {
            interval_ms: 100,
            timeout_ms: 1000,
            max_concurrent: 1,
            min_pause_ms: 0,
            tolerable_failures: 10,
            retained: 1,
        }
    }

    fn coordinator(config: CheckpointConfig) -> Coordinator {
        Coordinator::new(config, [SOURCE, SINK].into(), [SOURCE].into(), None).unwrap()
    }

    /// A snapshot of files of 10 bytes, 4 of them new; those under `shared/` are shared.
    fn snapshot(uris: &[&str]) -> TaskSnapshot {
        let handles = uris
            .iter()
            .map(|uri| StateHandle {
                uri: (*uri).to_owned(),
                size_bytes: 10,
                incremental_bytes: 4,
                shared: uri.starts_with("shared/"),
            })
            .collect();
        TaskSnapshot { handles, alignment_ms: 0 }
    }

    fn triggered(checkpoint_id: u64, timestamp_ms: i64) -> Action {
        Action::Trigger { checkpoint_id, kind: Checkpoint, timestamp_ms }
    }

    fn aborted(checkpoint_id: u64, reason: AbortReason) -> Action {
        Action::Abort { checkpoint_id, reason }
    }

    fn decline(c: &mut Coordinator, checkpoint_id: u64, now_ms: i64) -> Vec<Action> {
        c.decline(SINK, checkpoint_id, "no space".into(), now_ms)
    }

    fn declined(checkpoint_id: u64) -> Action {
        aborted(checkpoint_id, AbortReason::Declined { task: SINK, reason: "no space".into() })
    }

    fn delete(uris: &[&str]) -> Action {
        Action::DeleteShared { uris: uris.iter().map(|u| (*u).to_owned()).collect() }
    }

    /// Both tasks acknowledge with these files (the second emits the metadata write).
    fn ack_all(c: &mut Coordinator, id: u64, source: &[&str], sink: &[&str], now_ms: i64) {
        assert_eq!(c.acknowledge(SOURCE, id, snapshot(source), now_ms), vec![]);
        let actions = c.acknowledge(SINK, id, snapshot(sink), now_ms);
        assert!(matches!(actions[..], [Action::WriteMetadata { checkpoint_id, .. }] if checkpoint_id == id));
    }

    /// Both tasks acknowledge, then the metadata is written: the actions of the latter.
    fn complete(c: &mut Coordinator, id: u64, source: &[&str], sink: &[&str], now_ms: i64) -> Vec<Action> {
        ack_all(c, id, source, sink, now_ms);
        c.metadata_written(id, now_ms)
    }

    fn is_fail_job(action: &Action) -> bool {
        matches!(action, Action::FailJob { .. })
    }

    #[test]
    fn completes_once_every_task_acknowledged_and_the_metadata_is_written() {
        let mut c = coordinator(config());
        assert_eq!(c.tick(0), vec![triggered(1, 0)]);
        let source = snapshot(&["chk-1/source"]);
        let sink = TaskSnapshot { alignment_ms: 7, ..snapshot(&["chk-1/sink"]) };
        assert_eq!(c.acknowledge(SOURCE, 1, source.clone(), 10), vec![]);
        let acknowledgements = BTreeMap::from([(SOURCE, source), (SINK, sink.clone())]);
        let write = Action::WriteMetadata { checkpoint_id: 1, kind: Checkpoint, acknowledgements };
        assert_eq!(c.acknowledge(SINK, 1, sink.clone(), 20), vec![write]);
        // Nothing is complete before the metadata is written, and it is written once.
        assert_eq!(c.acknowledge(SINK, 1, sink, 25), vec![]);
        assert_eq!(c.tick(100), vec![], "the checkpoint writing its metadata holds the only slot");
        assert!(c.latest_completed().is_none() && c.latest_completed_id().is_none());
        assert_eq!(
            c.stats(),
            CheckpointCounts { triggered: 1, in_progress: 1, completed: 0, failed: 0, restored: None }
        );
        assert!(c.pending()[0].writing_metadata);
        assert_eq!(c.metadata_written(1, 130), vec![Action::NotifyComplete { checkpoint_id: 1 }]);
        assert_eq!(c.metadata_written(1, 131), vec![]);
        let done = c.latest_completed().unwrap();
        let figures = (done.checkpoint_id, done.completion_ms, done.duration_ms, done.state_size_bytes);
        assert_eq!(figures, (1, 130, 130, 20));
        assert_eq!((done.incremental_size_bytes, done.max_alignment_ms), (8, 7));
        assert_eq!(
            c.stats(),
            CheckpointCounts { triggered: 1, in_progress: 0, completed: 1, failed: 0, restored: None }
        );
        assert_eq!(c.history().next().map(|h| (h.checkpoint_id, h.status)), Some((1, CheckpointStatus::Completed)));
        assert_eq!(c.tick(130), vec![triggered(2, 130)]);
    }

    #[test]
    fn a_finished_task_aborts_checkpoints_waiting_for_it_and_stops_triggers() {
        let mut c = coordinator(CheckpointConfig { tolerable_failures: 0, ..config() });
        c.tick(0);
        c.acknowledge(SINK, 1, snapshot(&["chk-1/sink"]), 5);
        let actions = c.task_finished(SOURCE, 10);
        assert_eq!(actions, vec![aborted(1, AbortReason::TaskFinished(SOURCE))], "not a failure: no FailJob");
        assert_eq!(c.tick(1000), vec![], "no checkpoint can include the finished task");
        assert_eq!(c.task_finished(STRANGER, 1000), vec![]);
    }

    #[test]
    fn a_new_attempt_aborts_old_checkpoints_and_keeps_completed_ones_and_ids() {
        let mut c = coordinator(CheckpointConfig { tolerable_failures: 0, ..config() });
        c.tick(0);
        complete(&mut c, 1, &["chk-1/source", "shared/a"], &[], 10);
        assert_eq!(c.tick(100), vec![triggered(2, 100)]);
        c.task_finished(SINK, 105);
        let actions = c.new_attempt([STRANGER].into(), [STRANGER].into(), Some(1), 110);
        assert!(actions.is_empty(), "checkpoint 2 was already aborted: {actions:?}");
        assert_eq!(c.tick(110), vec![triggered(3, 110)], "triggers resume at once in the new attempt");
        assert_eq!(c.stats().restored, Some(1));
        let actions = c.new_attempt([SOURCE, SINK].into(), [SOURCE].into(), Some(1), 120);
        assert_eq!(actions, vec![aborted(3, AbortReason::Restarted)], "a restart is not a checkpoint failure");
        assert_eq!(c.latest_completed_id(), Some(1));
        assert_eq!(c.shared().references("shared/a"), 1);
    }

    #[test]
    fn discarding_an_unusable_completed_checkpoint_falls_back_to_the_previous_one() {
        let mut c = coordinator(CheckpointConfig { retained: 2, ..config() });
        c.tick(0);
        complete(&mut c, 1, &["chk-1/source", "shared/a"], &[], 10);
        c.tick(100);
        complete(&mut c, 2, &["chk-2/source", "shared/a", "shared/b"], &[], 110);
        assert_eq!(c.discard_completed(2), vec![Action::Discard { checkpoint_id: 2 }, delete(&["shared/b"])]);
        assert_eq!(c.latest_completed_id(), Some(1));
        assert_eq!(c.shared().references("shared/a"), 1);
        assert_eq!(c.discard_completed(2), vec![]);
        assert_eq!(c.discard_completed(1), vec![Action::Discard { checkpoint_id: 1 }, delete(&["shared/a"])]);
        assert_eq!(c.latest_completed_id(), None);
    }

    #[test]
    fn a_failed_metadata_write_aborts_the_checkpoint_and_counts_as_a_failure() {
        let mut c = coordinator(CheckpointConfig { tolerable_failures: 0, ..config() });
        c.tick(0);
        assert_eq!(c.metadata_failed(1, "disk full".into(), 5), vec![], "not all tasks acknowledged yet");
        ack_all(&mut c, 1, &["chk-1/source"], &[], 10);
        let actions = c.metadata_failed(1, "disk full".into(), 40);
        assert_eq!(actions[0], aborted(1, AbortReason::MetadataFailed("disk full".into())));
        assert!(matches!(&actions[1..], [Action::FailJob { reason }] if reason.contains("disk full")));
        assert_eq!(c.metadata_written(1, 50), vec![]);
        assert!(c.latest_completed().is_none());
        assert_eq!((c.stats().completed, c.stats().failed), (0, 1));
        let entry = c.history().next().unwrap();
        assert_eq!((entry.status, entry.end_ms, entry.state_size_bytes), (CheckpointStatus::Failed, 40, 10));
        assert!(entry.failure.as_deref().unwrap().contains("disk full"));
    }

    #[test]
    fn a_decline_aborts_the_checkpoint_and_the_next_one_is_still_triggered() {
        let mut c = coordinator(config());
        assert_eq!(c.tick(0), vec![triggered(1, 0)]);
        assert_eq!(decline(&mut c, 1, 10), vec![declined(1)]);
        assert_eq!(c.acknowledge(SOURCE, 1, snapshot(&[]), 20), vec![]);
        assert_eq!(c.tick(50), vec![], "the interval counts from the previous trigger");
        assert_eq!(c.tick(100), vec![triggered(2, 100)]);
    }

    #[test]
    fn a_checkpoint_expires_on_the_first_tick_after_its_timeout() {
        let mut c = coordinator(config());
        c.tick(0);
        c.acknowledge(SOURCE, 1, snapshot(&[]), 10);
        assert_eq!(c.tick(999), vec![]);
        assert_eq!(c.tick(1000), vec![aborted(1, AbortReason::Expired), triggered(2, 1000)]);
        assert_eq!(c.acknowledge(SINK, 1, snapshot(&[]), 1001), vec![], "too late");
        // Once every task acknowledged, the metadata write is the driver's: it does not expire.
        ack_all(&mut c, 2, &[], &[], 1010);
        assert_eq!(c.tick(2500), vec![]);
        assert_eq!(c.metadata_written(2, 2600), vec![Action::NotifyComplete { checkpoint_id: 2 }]);
    }

    #[test]
    fn a_task_failure_aborts_the_checkpoints_waiting_on_it_without_counting_as_a_failure() {
        let mut c = coordinator(CheckpointConfig { max_concurrent: 2, tolerable_failures: 1, ..config() });
        c.tick(0);
        c.acknowledge(SINK, 1, snapshot(&[]), 10);
        c.tick(100);
        assert_eq!(c.task_failed(SINK, 110), vec![aborted(2, AbortReason::TaskFailed(SINK))], "1 has its ack");
        assert_eq!(c.task_failed(SOURCE, 120), vec![aborted(1, AbortReason::TaskFailed(SOURCE))]);
        assert_eq!(c.tick(200), vec![triggered(3, 200)]);
        assert_eq!(c.task_failed(SOURCE, 210), vec![aborted(3, AbortReason::TaskFailed(SOURCE))]);
        // Three task failures did not count: the first counted failure is tolerated, the second is not.
        assert_eq!(c.tick(300), vec![triggered(4, 300)]);
        assert_eq!(decline(&mut c, 4, 310), vec![declined(4)]);
        assert_eq!(c.tick(400), vec![triggered(5, 400)]);
        let actions = decline(&mut c, 5, 410);
        assert_eq!(actions[0], declined(5));
        assert!(matches!(&actions[1..], [a] if is_fail_job(a)));
    }

    #[test]
    fn completing_a_checkpoint_subsumes_older_pending_ones_and_discards_beyond_retained() {
        let mut c = coordinator(CheckpointConfig { max_concurrent: 3, ..config() });
        c.tick(0);
        c.tick(100);
        c.tick(200);
        ack_all(&mut c, 1, &[], &[], 210);
        let subsumed = aborted(2, AbortReason::Subsumed);
        assert_eq!(complete(&mut c, 3, &[], &[], 250), vec![Action::NotifyComplete { checkpoint_id: 3 }, subsumed]);
        // 1 was writing its metadata: it is subsumed when the driver reports.
        assert_eq!(c.pending().iter().map(|p| p.checkpoint_id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(c.metadata_written(1, 270), vec![aborted(1, AbortReason::Subsumed)]);
        assert_eq!(c.tick(300), vec![triggered(4, 300)]);
        let actions = complete(&mut c, 4, &[], &[], 350);
        assert_eq!(actions, vec![Action::NotifyComplete { checkpoint_id: 4 }, Action::Discard { checkpoint_id: 3 }]);
        assert_eq!(c.completed().iter().map(|c| c.checkpoint_id).collect::<Vec<_>>(), vec![4]);
        assert_eq!(
            c.stats(),
            CheckpointCounts { triggered: 4, in_progress: 0, completed: 2, failed: 2, restored: None }
        );
    }

    #[test]
    fn shared_files_are_deleted_once_no_retained_checkpoint_uses_them() {
        let mut c = coordinator(config());
        c.tick(0);
        let actions = complete(&mut c, 1, &["shared/a", "chk-1/s"], &["shared/b"], 10);
        assert_eq!(actions, vec![Action::NotifyComplete { checkpoint_id: 1 }]);
        c.tick(100);
        // 2 reuses a: only b is no longer used.
        let actions = complete(&mut c, 2, &["shared/a", "shared/c"], &["chk-2/k"], 110);
        let notify = |checkpoint_id| Action::NotifyComplete { checkpoint_id };
        assert_eq!(actions, vec![notify(2), Action::Discard { checkpoint_id: 1 }, delete(&["shared/b"])]);
        assert_eq!(c.shared().references("shared/a"), 1);
        c.tick(200);
        let actions = complete(&mut c, 3, &["shared/c"], &["shared/d"], 210);
        assert_eq!(actions, vec![notify(3), Action::Discard { checkpoint_id: 2 }, delete(&["shared/a"])]);
        assert_eq!((c.shared().references("shared/c"), c.shared().references("shared/a")), (1, 0));
    }

    #[test]
    fn an_aborted_checkpoint_deletes_only_shared_files_nobody_uses() {
        let mut c = coordinator(CheckpointConfig { max_concurrent: 2, ..config() });
        c.tick(0);
        complete(&mut c, 1, &["shared/a"], &[], 10);
        c.tick(100);
        c.tick(200);
        c.acknowledge(SOURCE, 2, snapshot(&["shared/a", "shared/x", "chk-2/s"]), 210);
        c.acknowledge(SOURCE, 3, snapshot(&["shared/a", "shared/x", "shared/y"]), 220);
        assert_eq!(decline(&mut c, 2, 230), vec![declined(2)], "a is retained, x used by 3");
        assert_eq!(decline(&mut c, 3, 240), vec![declined(3), delete(&["shared/x", "shared/y"])]);
        assert_eq!(c.shared().references("shared/a"), 1);
    }

    #[test]
    fn max_concurrent_limits_overlapping_checkpoints() {
        let mut c = coordinator(config());
        assert_eq!(c.tick(0), vec![triggered(1, 0)]);
        assert_eq!(c.tick(100), vec![]);
        assert_eq!(c.tick(200), vec![]);
        assert_eq!(c.trigger_now(250, Savepoint), Err(TriggerRefused::TooManyPending { pending: 1, max: 1 }));
        complete(&mut c, 1, &[], &[], 300);
        assert_eq!(c.tick(300), vec![triggered(2, 300)]);

        let mut c = coordinator(CheckpointConfig { max_concurrent: 2, ..config() });
        assert_eq!(c.tick(0), vec![triggered(1, 0)]);
        assert_eq!(c.tick(100), vec![triggered(2, 100)]);
        assert_eq!(c.tick(200), vec![]);
        assert_eq!(complete(&mut c, 1, &[], &[], 250), vec![Action::NotifyComplete { checkpoint_id: 1 }]);
        assert_eq!(c.tick(250), vec![triggered(3, 250)]);
    }

    #[test]
    fn min_pause_delays_the_next_trigger_after_a_completion_or_an_abort() {
        let mut c = coordinator(CheckpointConfig { min_pause_ms: 300, ..config() });
        c.tick(0);
        complete(&mut c, 1, &[], &[], 50);
        assert_eq!(c.tick(100), vec![], "the interval elapsed, not the pause");
        assert_eq!(c.tick(349), vec![]);
        assert_eq!(c.tick(350), vec![triggered(2, 350)]);
        decline(&mut c, 2, 360);
        assert_eq!(c.tick(659), vec![]);
        assert_eq!(c.tick(660), vec![triggered(3, 660)]);
    }

    #[test]
    fn one_more_than_the_tolerable_consecutive_failures_fails_the_job() {
        let mut c = coordinator(CheckpointConfig { tolerable_failures: 2, ..config() });
        c.tick(0);
        assert_eq!(decline(&mut c, 1, 10), vec![declined(1)]);
        assert_eq!(c.tick(100), vec![triggered(2, 100)]);
        assert_eq!(c.tick(1100), vec![aborted(2, AbortReason::Expired), triggered(3, 1100)]);
        let actions = c.tick(2100);
        assert_eq!(actions[0], aborted(3, AbortReason::Expired));
        assert!(matches!(&actions[1..], [Action::FailJob { reason }] if reason.contains("more than 2")), "no trigger");
        // The count starts again.
        assert_eq!(c.tick(2101), vec![triggered(4, 2101)]);
        assert_eq!(decline(&mut c, 4, 2110), vec![declined(4)]);
    }

    #[test]
    fn a_completed_checkpoint_resets_the_failure_count() {
        let mut c = coordinator(CheckpointConfig { tolerable_failures: 2, ..config() });
        for (id, now) in [(1, 0), (2, 100)] {
            c.tick(now);
            assert_eq!(decline(&mut c, id, now + 10), vec![declined(id)]);
        }
        c.tick(200);
        complete(&mut c, 3, &[], &[], 210);
        for (id, now) in [(4, 300), (5, 400)] {
            c.tick(now);
            assert_eq!(decline(&mut c, id, now + 10), vec![declined(id)]);
        }
        c.tick(500);
        assert!(matches!(&decline(&mut c, 6, 510)[..], [abort, fail] if *abort == declined(6) && is_fail_job(fail)));
    }

    #[test]
    fn failures_of_checkpoints_older_than_the_latest_completed_do_not_count() {
        let mut c = coordinator(CheckpointConfig { max_concurrent: 2, tolerable_failures: 0, ..config() });
        c.tick(0);
        c.tick(100);
        ack_all(&mut c, 1, &[], &[], 110);
        assert_eq!(complete(&mut c, 2, &[], &[], 120), vec![Action::NotifyComplete { checkpoint_id: 2 }]);
        let failed = aborted(1, AbortReason::MetadataFailed("disk full".into()));
        assert_eq!(c.metadata_failed(1, "disk full".into(), 130), vec![failed]);
    }

    #[test]
    fn unknown_duplicate_and_late_messages_are_ignored() {
        let mut c = coordinator(config());
        assert_eq!(c.acknowledge(SOURCE, 1, snapshot(&[]), 0), vec![]);
        assert_eq!(decline(&mut c, 1, 0), vec![]);
        assert_eq!(c.metadata_written(1, 0), vec![]);
        assert_eq!(c.metadata_failed(1, "?".into(), 0), vec![]);
        c.tick(0);
        assert_eq!(c.acknowledge(STRANGER, 1, snapshot(&[]), 1), vec![]);
        assert_eq!(c.decline(STRANGER, 1, "?".into(), 1), vec![]);
        assert_eq!(c.task_failed(STRANGER, 1), vec![]);
        assert_eq!(c.acknowledge(SOURCE, 7, snapshot(&[]), 1), vec![]);
        assert_eq!(c.metadata_written(1, 1), vec![], "still waiting for acknowledgements");
        assert_eq!(c.acknowledge(SOURCE, 1, snapshot(&[]), 2), vec![]);
        assert_eq!(c.acknowledge(SOURCE, 1, snapshot(&[]), 3), vec![]);
        assert_eq!(c.pending()[0].acknowledged, 1);
        assert_eq!(c.acknowledge(SINK, 1, snapshot(&[]), 4).len(), 1);
        assert_eq!(c.acknowledge(SINK, 1, snapshot(&[]), 5), vec![]);
        assert_eq!(c.decline(SOURCE, 1, "?".into(), 5), vec![], "every task acknowledged");
        assert_eq!(c.task_failed(SOURCE, 5), vec![]);
        c.metadata_written(1, 6);
        assert_eq!(c.acknowledge(SINK, 1, snapshot(&[]), 7), vec![]);
        assert_eq!(decline(&mut c, 1, 7), vec![]);
        assert_eq!(c.metadata_failed(1, "?".into(), 7), vec![]);
        c.tick(100);
        decline(&mut c, 2, 110);
        assert_eq!(c.acknowledge(SOURCE, 2, snapshot(&[]), 111), vec![]);
        assert_eq!(decline(&mut c, 2, 112), vec![]);
        assert_eq!(c.tick(50), vec![], "time going backwards triggers nothing");
        assert_eq!((c.stats().triggered, c.stats().completed, c.stats().failed), (2, 1, 1));
    }

    #[test]
    fn ids_continue_after_the_restored_checkpoint() {
        let mut c = Coordinator::new(config(), [SOURCE, SINK].into(), [SOURCE].into(), Some(41)).unwrap();
        assert_eq!((c.stats().restored, c.latest_completed_id()), (Some(41), Some(41)));
        assert_eq!(c.acknowledge(SOURCE, 41, snapshot(&[]), 0), vec![]);
        assert_eq!(c.tick(0), vec![triggered(42, 0)]);
        complete(&mut c, 42, &[], &[], 10);
        assert_eq!(c.latest_completed_id(), Some(42));
        assert_eq!(c.tick(100), vec![triggered(43, 100)]);
    }

    #[test]
    fn savepoints_are_never_subsumed_retained_or_counted_as_failures() {
        let mut c = coordinator(CheckpointConfig { max_concurrent: 2, tolerable_failures: 0, ..config() });
        c.tick(0);
        let savepoint = Action::Trigger { checkpoint_id: 2, kind: Savepoint, timestamp_ms: 10 };
        assert_eq!(c.trigger_now(10, Savepoint), Ok(vec![savepoint]));
        assert_eq!(c.trigger_now(20, Checkpoint), Err(TriggerRefused::TooManyPending { pending: 2, max: 2 }));
        assert_eq!(complete(&mut c, 2, &[], &[], 30), vec![Action::NotifyComplete { checkpoint_id: 2 }]);
        assert!(c.completed().is_empty() && c.latest_completed_id().is_none());
        assert_eq!(complete(&mut c, 1, &[], &[], 40), vec![Action::NotifyComplete { checkpoint_id: 1 }]);
        assert_eq!(c.latest_completed_id(), Some(1));
        c.trigger_now(50, Savepoint).unwrap();
        assert_eq!(decline(&mut c, 3, 60), vec![declined(3)]);
        let history: Vec<_> = c.history().map(|h| (h.checkpoint_id, h.kind, h.status)).collect();
        let (completed, failed) = (CheckpointStatus::Completed, CheckpointStatus::Failed);
        assert_eq!(history, vec![(3, Savepoint, failed), (1, Checkpoint, completed), (2, Savepoint, completed)]);
    }

    #[test]
    fn stop_aborts_the_waiting_checkpoints_and_triggers_nothing_more() {
        let mut c = coordinator(CheckpointConfig { max_concurrent: 2, ..config() });
        c.tick(0);
        c.tick(100);
        ack_all(&mut c, 1, &[], &[], 110);
        assert_eq!(c.stop(150), vec![aborted(2, AbortReason::Stopped)]);
        assert_eq!(c.tick(5000), vec![]);
        assert_eq!(c.trigger_now(5000, Savepoint), Err(TriggerRefused::Stopped));
        assert_eq!(c.metadata_written(1, 5001), vec![Action::NotifyComplete { checkpoint_id: 1 }]);
        assert_eq!(c.stop(5002), vec![]);
    }

    #[test]
    fn the_history_keeps_the_latest_finished_checkpoints() {
        let mut c = coordinator(CheckpointConfig { tolerable_failures: 100, ..config() });
        for id in 1..=40 {
            c.tick(id as i64 * 100);
            decline(&mut c, id, id as i64 * 100 + 1);
        }
        let ids: Vec<u64> = c.history().map(|h| h.checkpoint_id).collect();
        assert_eq!(ids, (9..=40).rev().collect::<Vec<_>>());
    }

    #[test]
    fn nonsense_configs_are_rejected() {
        assert_eq!(CheckpointConfig::default().validate(), Ok(()));
        let bad = [
            CheckpointConfig { interval_ms: 0, ..config() },
            CheckpointConfig { timeout_ms: -1, ..config() },
            CheckpointConfig { max_concurrent: 0, ..config() },
            CheckpointConfig { min_pause_ms: -5, ..config() },
            CheckpointConfig { retained: 0, ..config() },
        ];
        let fields: Vec<_> = bad.iter().map(|c| c.validate().unwrap_err().field).collect();
        assert_eq!(fields, ["interval_ms", "timeout_ms", "max_concurrent", "min_pause_ms", "retained"]);
        assert!(Coordinator::new(bad[0].clone(), BTreeSet::new(), BTreeSet::new(), None).is_err());
    }
}
