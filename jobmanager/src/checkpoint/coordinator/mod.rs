//! The checkpoint coordinator: inputs in, [`Action`]s out (see the [module docs](super)).

use super::stats::{
    CheckpointCounts, CheckpointStatus, CompletedCheckpoint, HistoryEntry, PendingView, RestoredCheckpoint,
    vertex_stats,
};
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
    /// No checkpoint id is reserved yet (the job's record is being written); a retry later may
    /// succeed.
    #[error("no checkpoint id is reserved yet")]
    NoIdReserved,
    /// A savepoint is in progress (one at a time); a retry later may succeed.
    #[error("savepoint {0} is in progress")]
    SavepointInProgress(u64),
}

/// A checkpoint in progress. It waits for acknowledgements while `waiting` is not empty, then
/// for its metadata to be written.
#[derive(Debug)]
struct Pending {
    kind: CheckpointKind,
    trigger_ms: i64,
    waiting: BTreeSet<TaskId>,
    acks: BTreeMap<TaskId, TaskSnapshot>,
    /// When each task (not a finished one) acknowledged.
    ack_ms: BTreeMap<TaskId, i64>,
    latest_ack_ms: Option<i64>,
}

impl Pending {
    fn writing_metadata(&self) -> bool {
        self.waiting.is_empty()
    }

    fn state_size(&self) -> u64 {
        self.acks.values().flat_map(|s| &s.handles).map(|h| h.size_bytes).sum()
    }

    fn incremental_size(&self) -> u64 {
        self.acks.values().flat_map(|s| &s.handles).map(|h| h.incremental_bytes).sum()
    }

    fn vertices(&self) -> BTreeMap<u32, super::VertexCheckpointStats> {
        vertex_stats(self.acks.keys().chain(&self.waiting), &self.acks, &self.ack_ms)
    }
}

/// The checkpoint coordinator of one job.
#[derive(Debug)]
pub struct Coordinator {
    config: CheckpointConfig,
    tasks_to_ack: BTreeSet<TaskId>,
    /// The source tasks of the attempt that still run: they receive triggers.
    sources: BTreeSet<TaskId>,
    /// Final snapshots of the attempt's finished tasks: every later checkpoint includes them in
    /// place of an acknowledgement (FLIP-147).
    finished: BTreeMap<TaskId, TaskSnapshot>,
    next_id: u64,
    /// Checkpoint ids below this one may be used; one at or above it waits for
    /// [`Coordinator::ids_reserved`] (the job's record reserves ids, so that none is used twice,
    /// even across jobmanager restarts).
    id_limit: u64,
    /// Whether an [`Action::ReserveIds`] is outstanding.
    reserving: bool,
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
    /// What the current attempt restored.
    restored: Option<RestoredCheckpoint>,
    /// Newest last.
    history: VecDeque<HistoryEntry>,
    shared: SharedRegistry,
    stopped: bool,
}

/// How many checkpoint ids one [`Action::ReserveIds`] reserves.
pub const ID_BLOCK: u64 = 1000;

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
            finished: BTreeMap::new(),
            next_id: latest_completed.map_or(1, |id| id.saturating_add(1)),
            id_limit: u64::MAX,
            reserving: false,
            pending: BTreeMap::new(),
            completed: Vec::new(),
            latest_completed_id: latest_completed,
            last_trigger_ms: None,
            last_end_ms: None,
            consecutive_failures: 0,
            counts: CheckpointCounts { restored: 0, total: 0, in_progress: 0, completed: 0, failed: 0 },
            restored: None,
            history: VecDeque::new(),
            shared: SharedRegistry::default(),
            stopped: false,
        })
    }

    /// A coordinator that continues a job's checkpoints after a jobmanager restart: `completed`
    /// are its retained completed checkpoints (oldest first, read back from their metadata),
    /// and ids start at `next_id` (at least after the newest of them), below `id_limit`.
    ///
    /// # Errors
    ///
    /// The config is invalid ([`CheckpointConfig::validate`]).
    pub fn recover(
        config: CheckpointConfig,
        completed: Vec<CompletedCheckpoint>,
        next_id: u64,
        id_limit: u64,
    ) -> Result<Self, InvalidCheckpointConfig> {
        let latest = completed.last().map(|c| c.checkpoint_id);
        let mut coordinator = Self::new(config, BTreeSet::new(), BTreeSet::new(), latest)?;
        coordinator.next_id = coordinator.next_id.max(next_id);
        coordinator.id_limit = id_limit;
        for checkpoint in &completed {
            coordinator.shared.register(&checkpoint.shared_uris());
        }
        coordinator.counts.completed = completed.len() as u64;
        coordinator.completed = completed;
        Ok(coordinator)
    }

    /// Only ids below `limit` may be used until more are reserved (the job's record reserved
    /// them at submission). Without a call, every id may be used (a job without a record).
    pub fn limit_ids(&mut self, limit: u64) {
        self.id_limit = limit;
    }

    /// Ids from [`Coordinator::next_id`] up to (excluding) `limit` may be used: an
    /// [`Action::ReserveIds`] was carried out.
    pub fn ids_reserved(&mut self, limit: u64) {
        self.id_limit = self.id_limit.max(limit);
        self.reserving = false;
    }

    /// Reserving ids failed: the next tick asks again.
    pub fn ids_not_reserved(&mut self) {
        self.reserving = false;
    }

    /// The id the next checkpoint gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// The id limit in force (see [`Coordinator::ids_reserved`]).
    pub fn id_limit(&self) -> u64 {
        self.id_limit
    }

    /// A new execution attempt of the job runs `tasks_to_ack`, of which `sources` receive
    /// triggers: checkpoints still waiting for the old attempt's tasks are aborted (not counted
    /// as failures), and triggering resumes. Completed checkpoints, shared-file references, ids
    /// and counts carry over. `restored` is the checkpoint the attempt restores from.
    pub fn new_attempt(
        &mut self,
        tasks_to_ack: BTreeSet<TaskId>,
        sources: BTreeSet<TaskId>,
        restored: Option<RestoredCheckpoint>,
        now_ms: i64,
    ) -> Vec<Action> {
        let ids: Vec<u64> = self.pending.iter().filter(|(_, p)| !p.writing_metadata()).map(|(id, _)| *id).collect();
        let mut actions = Vec::new();
        for id in ids {
            self.abort(id, AbortReason::Restarted, now_ms, &mut actions);
        }
        // Final snapshots of the old attempt that no retained checkpoint took up are garbage.
        let finished: BTreeSet<String> = std::mem::take(&mut self.finished)
            .into_values()
            .flat_map(|s| s.handles)
            .map(|h| h.uri)
            .filter(|uri| self.shared.references(uri) == 0)
            .collect();
        self.delete_shared(finished, &mut actions);
        self.tasks_to_ack = tasks_to_ack;
        self.sources = sources;
        self.stopped = false;
        self.last_trigger_ms = None;
        self.last_end_ms = Some(now_ms);
        if restored.is_some() {
            self.counts.restored += 1;
        }
        self.restored = restored;
        actions
    }

    /// `task` finished (its input ended) with `final_snapshot`, its operators' state at the end
    /// (FLIP-147): checkpoints waiting for it take that snapshot as its acknowledgement, and so
    /// does every later one; it receives no more triggers. A finished task's state is consistent
    /// with every later barrier: it emitted all its records, and the end of its output counts as
    /// aligned downstream. Without a final snapshot (a task that finished without one), the
    /// checkpoints waiting for it are aborted (not counted as failures) and none is triggered
    /// any more in this attempt.
    pub fn task_finished(&mut self, task: TaskId, final_snapshot: Option<TaskSnapshot>, now_ms: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        if !self.tasks_to_ack.contains(&task) || self.finished.contains_key(&task) {
            return actions;
        }
        self.sources.remove(&task);
        let ids: Vec<u64> = self.pending.iter().filter(|(_, p)| p.waiting.contains(&task)).map(|(id, _)| *id).collect();
        let Some(snapshot) = final_snapshot else {
            // Nothing can stand in for it: no checkpoint of this attempt can complete any more.
            self.sources.clear();
            for id in ids {
                self.abort(id, AbortReason::TaskFinished(task), now_ms, &mut actions);
            }
            return actions;
        };
        self.finished.insert(task, snapshot.clone());
        for id in ids {
            actions.extend(self.acknowledge(task, id, snapshot.clone(), now_ms));
        }
        actions
    }

    /// Sending the trigger of `checkpoint_id` failed: it is aborted (a failure that counts).
    pub fn trigger_failed(&mut self, checkpoint_id: u64, reason: String, now_ms: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.pending.get(&checkpoint_id).is_some_and(|p| !p.writing_metadata()) {
            self.abort(checkpoint_id, AbortReason::TriggerFailed(reason), now_ms, &mut actions);
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
        let due = !self.sources.is_empty()
            && self.pending_checkpoints() < self.config.max_concurrent
            && elapsed(self.last_trigger_ms, self.config.interval_ms)
            && elapsed(self.last_end_ms, self.config.min_pause_ms)
            && !actions.iter().any(|a| matches!(a, Action::FailJob { .. }));
        if due && self.next_id >= self.id_limit {
            if !self.reserving {
                self.reserving = true;
                actions.push(Action::ReserveIds { up_to: self.next_id.saturating_add(ID_BLOCK) });
            }
        } else if due {
            self.trigger(CheckpointKind::Checkpoint, now_ms, &mut actions);
        }
        actions
    }

    /// Triggers a checkpoint or savepoint now, regardless of the interval and the minimum pause.
    ///
    /// A savepoint does not count against `max_concurrent` and does not move the periodic
    /// schedule (interval, minimum pause): periodic checkpoints go on beside it, as in Flink.
    ///
    /// # Errors
    ///
    /// [`TriggerRefused`] if the coordinator is stopped, `max_concurrent` checkpoints are in
    /// progress (for a checkpoint) or a savepoint is (for a savepoint); the request is not
    /// queued.
    pub fn trigger_now(&mut self, now_ms: i64, kind: CheckpointKind) -> Result<Vec<Action>, TriggerRefused> {
        if self.stopped {
            return Err(TriggerRefused::Stopped);
        }
        match kind {
            CheckpointKind::Checkpoint if self.pending_checkpoints() >= self.config.max_concurrent => {
                return Err(TriggerRefused::TooManyPending {
                    pending: self.pending_checkpoints(),
                    max: self.config.max_concurrent,
                });
            }
            CheckpointKind::Savepoint => {
                if let Some((id, _)) = self.pending.iter().find(|(_, p)| p.kind == CheckpointKind::Savepoint) {
                    return Err(TriggerRefused::SavepointInProgress(*id));
                }
            }
            CheckpointKind::Checkpoint => {}
        }
        if self.next_id >= self.id_limit {
            return Err(TriggerRefused::NoIdReserved);
        }
        let mut actions = Vec::new();
        self.trigger(kind, now_ms, &mut actions);
        Ok(actions)
    }

    /// `task` acknowledged `checkpoint_id`. The last acknowledgement emits
    /// [`Action::WriteMetadata`].
    ///
    /// - A duplicate (a retried report), or an acknowledgement from a task the checkpoint does
    ///   not wait for, changes nothing.
    /// - A late one (the checkpoint was aborted or discarded, or belongs to an older attempt)
    ///   names files nothing else will reference: [`Action::DeleteFiles`] for its own files and
    ///   for the shared files it uploaded that no retained, pending or finished-task snapshot
    ///   uses. One of a retained completed checkpoint changes nothing: its files are in use.
    /// - One that reuses a shared file no retained checkpoint references any more (its upload
    ///   raced with the discard of the checkpoint it came from) aborts the checkpoint (not
    ///   counted as a failure): completing it would reference a deleted file.
    pub fn acknowledge(
        &mut self,
        task: TaskId,
        checkpoint_id: u64,
        snapshot: TaskSnapshot,
        now_ms: i64,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        if !self.pending.contains_key(&checkpoint_id) {
            self.late_acknowledgement(task, checkpoint_id, snapshot, &mut actions);
            return actions;
        }
        let discarded = snapshot
            .handles
            .iter()
            .find(|h| h.shared && h.incremental_bytes == 0 && !self.is_live(&h.uri, Some(checkpoint_id)))
            .map(|h| h.uri.clone());
        let Some(p) = self.pending.get_mut(&checkpoint_id) else { return actions };
        if !p.waiting.contains(&task) {
            tracing::debug!(checkpoint_id, %task, "acknowledgement from an unknown task or a duplicate ignored");
            return actions;
        }
        if let Some(uri) = discarded {
            p.waiting.remove(&task);
            p.acks.insert(task, snapshot);
            self.abort(checkpoint_id, AbortReason::ReusedDiscardedFile { task, uri }, now_ms, &mut actions);
            return actions;
        }
        p.waiting.remove(&task);
        p.acks.insert(task, snapshot);
        p.ack_ms.insert(task, now_ms);
        p.latest_ack_ms = Some(now_ms);
        if !p.writing_metadata() {
            return Vec::new();
        }
        actions.push(Action::WriteMetadata { checkpoint_id, kind: p.kind, acknowledgements: p.acks.clone() });
        actions
    }

    fn late_acknowledgement(
        &self,
        task: TaskId,
        checkpoint_id: u64,
        snapshot: TaskSnapshot,
        actions: &mut Vec<Action>,
    ) {
        if checkpoint_id >= self.next_id || self.completed.iter().any(|c| c.checkpoint_id == checkpoint_id) {
            tracing::debug!(checkpoint_id, %task, "acknowledgement of a retained or unknown checkpoint ignored");
            return;
        }
        let uris: Vec<String> = snapshot
            .handles
            .into_iter()
            .filter(|h| !h.shared || (h.incremental_bytes > 0 && !self.is_live(&h.uri, None)))
            .map(|h| h.uri)
            .collect();
        tracing::debug!(checkpoint_id, %task, files = uris.len(), "late acknowledgement: deleting what it wrote");
        if !uris.is_empty() {
            actions.push(Action::DeleteFiles { uris });
        }
    }

    /// Whether a shared file is in use: by a retained checkpoint, a pending one (other than
    /// `except`), or a finished task's final snapshot.
    fn is_live(&self, uri: &str, except: Option<u64>) -> bool {
        self.shared.references(uri) > 0
            || self
                .pending
                .iter()
                .filter(|(id, _)| Some(**id) != except)
                .any(|(_, p)| p.acks.values().flat_map(|s| &s.handles).any(|h| h.uri == uri))
            || self.finished.values().flat_map(|s| &s.handles).any(|h| h.uri == uri)
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

    /// Whether a checkpoint's metadata is being written: it may still complete, so no restore
    /// point may be chosen and no sweep may run until it is reported.
    pub fn writing_metadata(&self) -> bool {
        self.pending.values().any(Pending::writing_metadata)
    }

    /// What a sweep of the job's directory must keep: the directories (`chk-<n>`) of retained
    /// and pending checkpoints, and the shared files any of them or a finished task's final
    /// snapshot uses.
    pub fn live_files(&self) -> (BTreeSet<u64>, BTreeSet<String>) {
        let dirs = self.completed.iter().map(|c| c.checkpoint_id).chain(self.pending.keys().copied()).collect();
        let mut files: BTreeSet<String> = self.completed.iter().flat_map(|c| c.shared_uris()).collect();
        files.extend(
            self.pending.values().flat_map(|p| p.acks.values()).flat_map(|s| &s.handles).map(|h| h.uri.clone()),
        );
        files.extend(self.finished.values().flat_map(|s| &s.handles).map(|h| h.uri.clone()));
        (dirs, files)
    }

    /// Every task of the attempt finished: a **terminal checkpoint** made of their final
    /// snapshots (no task is asked for anything; its metadata is written at once), so that a
    /// failure of the final commit restores the job at its end (sources at their end, sinks with
    /// their last pre-committed output) instead of running its tail again, whose records could
    /// take other routes to the sinks (round-robin partitioning is not checkpointed) and meet
    /// sinks that already committed everything (FLIP-147's final checkpoint). Returns its id and
    /// actions; `None` when a task finished without a final snapshot, the coordinator is stopped
    /// or no id is reserved (the final commit then goes ahead without it).
    pub fn terminal_checkpoint(&mut self, now_ms: i64) -> Option<(u64, Vec<Action>)> {
        let all_finished =
            !self.tasks_to_ack.is_empty() && self.tasks_to_ack.iter().all(|t| self.finished.contains_key(t));
        if self.stopped || !all_finished || self.next_id >= self.id_limit {
            return None;
        }
        let checkpoint_id = self.next_id;
        let mut actions = Vec::new();
        self.trigger(CheckpointKind::Checkpoint, now_ms, &mut actions);
        Some((checkpoint_id, actions))
    }

    /// The job is ending: checkpoints waiting for acknowledgements are aborted and nothing is
    /// triggered any more. Those whose metadata is being written still complete or fail when the
    /// job master reports.
    pub fn stop(&mut self, now_ms: i64) -> Vec<Action> {
        self.stopped = true;
        let ids: Vec<u64> = self.pending.iter().filter(|(_, p)| !p.writing_metadata()).map(|(id, _)| *id).collect();
        let mut actions = Vec::new();
        for id in ids {
            self.abort(id, AbortReason::Stopped, now_ms, &mut actions);
        }
        // No later checkpoint will take up the final snapshots: those no retained (or still
        // completing) checkpoint uses go.
        let finished: BTreeSet<String> = std::mem::take(&mut self.finished)
            .into_values()
            .flat_map(|s| s.handles)
            .map(|h| h.uri)
            .filter(|uri| self.shared.references(uri) == 0)
            .collect();
        self.delete_shared(finished, &mut actions);
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
            incremental_size_bytes: p.incremental_size(),
            writing_metadata: p.writing_metadata(),
            vertices: p.vertices(),
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

    /// What the current attempt restored (`None` for a fresh start).
    pub fn restored(&self) -> Option<&RestoredCheckpoint> {
        self.restored.as_ref()
    }

    /// Savepoint `checkpoint_id` completed in `path`: its history entry says so.
    pub fn savepoint_written(&mut self, checkpoint_id: u64, path: String) {
        if let Some(entry) = self.history.iter_mut().find(|h| h.checkpoint_id == checkpoint_id) {
            entry.external_path = Some(path);
        }
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

    /// Checkpoints (not savepoints) in progress.
    fn pending_checkpoints(&self) -> usize {
        self.pending.values().filter(|p| p.kind == CheckpointKind::Checkpoint).count()
    }

    fn trigger(&mut self, kind: CheckpointKind, now_ms: i64, actions: &mut Vec<Action>) {
        let checkpoint_id = self.next_id;
        self.next_id += 1;
        if kind == CheckpointKind::Checkpoint {
            self.last_trigger_ms = Some(now_ms);
        }
        self.counts.total += 1;
        let p = Pending {
            kind,
            trigger_ms: now_ms,
            waiting: self.tasks_to_ack.iter().filter(|t| !self.finished.contains_key(t)).copied().collect(),
            acks: self.finished.clone(),
            ack_ms: BTreeMap::new(),
            latest_ack_ms: None,
        };
        actions.push(Action::Trigger { checkpoint_id, kind, timestamp_ms: now_ms });
        if p.writing_metadata() {
            // Every task finished: the final snapshots stand for them.
            actions.push(Action::WriteMetadata { checkpoint_id, kind, acknowledgements: p.acks.clone() });
        }
        self.pending.insert(checkpoint_id, p);
    }

    fn complete(&mut self, checkpoint_id: u64, now_ms: i64, actions: &mut Vec<Action>) {
        let Some(p) = self.pending.remove(&checkpoint_id) else { return };
        let vertices = p.vertices();
        let done = CompletedCheckpoint::new(checkpoint_id, p.kind, p.trigger_ms, now_ms, p.acks);
        self.counts.completed += 1;
        if p.kind == CheckpointKind::Checkpoint {
            self.last_end_ms = Some(now_ms);
        }
        self.record(HistoryEntry {
            checkpoint_id,
            kind: done.kind,
            status: CheckpointStatus::Completed,
            trigger_ms: done.trigger_ms,
            end_ms: now_ms,
            duration_ms: done.duration_ms,
            state_size_bytes: done.state_size_bytes,
            incremental_size_bytes: done.incremental_size_bytes,
            latest_ack_ms: p.latest_ack_ms,
            vertices,
            external_path: None,
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
        if p.kind == CheckpointKind::Checkpoint {
            self.last_end_ms = Some(now_ms);
        }
        self.record(HistoryEntry {
            checkpoint_id,
            kind: p.kind,
            status: CheckpointStatus::Failed,
            trigger_ms: p.trigger_ms,
            end_ms: now_ms,
            duration_ms: now_ms.saturating_sub(p.trigger_ms).max(0),
            state_size_bytes: p.state_size(),
            incremental_size_bytes: p.incremental_size(),
            latest_ack_ms: p.latest_ack_ms,
            vertices: p.vertices(),
            external_path: None,
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
        // Shared files uploaded for it that nothing else uses go with it; reused ones (no new
        // bytes) belong to the checkpoints that uploaded them.
        let uploaded: BTreeSet<String> = p
            .acks
            .values()
            .flat_map(|s| &s.handles)
            .filter(|h| h.shared && h.incremental_bytes > 0 && !self.is_live(&h.uri, Some(checkpoint_id)))
            .map(|h| h.uri.clone())
            .collect();
        self.delete_shared(uploaded, actions);
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
    /// that no pending checkpoint (it deletes them itself if it is aborted) or finished task's
    /// final snapshot uses either.
    fn delete_shared(&self, mut candidates: BTreeSet<String>, actions: &mut Vec<Action>) {
        for p in self.pending.values() {
            for h in p.acks.values().flat_map(|s| &s.handles) {
                candidates.remove(&h.uri);
            }
        }
        for h in self.finished.values().flat_map(|s| &s.handles) {
            candidates.remove(&h.uri);
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
mod tests;
