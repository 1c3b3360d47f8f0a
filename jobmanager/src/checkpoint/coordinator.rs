//! The checkpoint coordinator: inputs in, [`Action`]s out (see the [module docs](super)).

use super::stats::{self, CheckpointCounts, CheckpointStatus, CompletedCheckpoint, HistoryEntry, PendingView};
use super::{AbortReason, Action, CheckpointConfig, CheckpointKind, InvalidCheckpointConfig, TaskSnapshot};
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

/// Reference counts of shared files: one reference per retained completed checkpoint using it.
#[derive(Debug, Default)]
pub struct SharedRegistry {
    refs: BTreeMap<String, u32>,
}

impl SharedRegistry {
    /// How many retained checkpoints use `uri`.
    pub fn references(&self, uri: &str) -> u32 {
        self.refs.get(uri).copied().unwrap_or(0)
    }

    fn register(&mut self, uris: &BTreeSet<String>) {
        for uri in uris {
            *self.refs.entry(uri.clone()).or_insert(0) += 1;
        }
    }

    /// Drops one reference to each of `uris`; returns those no longer referenced.
    fn release(&mut self, uris: BTreeSet<String>) -> BTreeSet<String> {
        uris.into_iter()
            .filter(|uri| match self.refs.get_mut(uri) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    self.refs.remove(uri);
                    true
                }
                None => false,
            })
            .collect()
    }
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
    restored: Option<u64>,
    last_trigger_ms: Option<i64>,
    /// When the latest checkpoint completed or was aborted.
    last_end_ms: Option<i64>,
    consecutive_failures: u32,
    counts: CheckpointCounts,
    /// Newest last.
    history: VecDeque<HistoryEntry>,
    shared: SharedRegistry,
    stopped: bool,
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
            restored: latest_completed,
            last_trigger_ms: None,
            last_end_ms: None,
            consecutive_failures: 0,
            counts: CheckpointCounts { triggered: 0, in_progress: 0, completed: 0, failed: 0, restored: latest_completed },
            history: VecDeque::new(),
            shared: SharedRegistry::default(),
            stopped: false,
        })
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
        let due = self.pending.len() < self.config.max_concurrent
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
            return Err(TriggerRefused::TooManyPending { pending: self.pending.len(), max: self.config.max_concurrent });
        }
        let mut actions = Vec::new();
        self.trigger(kind, now_ms, &mut actions);
        Ok(actions)
    }

    /// `task` acknowledged `checkpoint_id`. The last acknowledgement emits
    /// [`Action::WriteMetadata`]. Ignored for unknown or finished checkpoints, unknown tasks and
    /// duplicates.
    pub fn acknowledge(&mut self, task: TaskId, checkpoint_id: u64, snapshot: TaskSnapshot, now_ms: i64) -> Vec<Action> {
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
