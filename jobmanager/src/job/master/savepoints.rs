//! Savepoints: requests, their preparation on the taskmanagers, their metadata and outcome.
//!
//! A savepoint is a checkpoint of kind [`CheckpointKind::Savepoint`] that the user owns. The
//! master asks the coordinator for one, then prepares every taskmanager of the attempt with its
//! directory ([`Command::PrepareSavepoint`]) and triggers the sources only once all of them
//! answered, so that no task sees the barrier before it knows where to write. When every task
//! acknowledged, the master writes `_metadata` into the savepoint's directory (copying in the
//! final snapshots of finished tasks, which live in the job's checkpoint storage), so that the
//! directory is self-contained. The outcome of each request is kept for REST (by request id).

use super::*;
use crate::checkpoint::CheckpointKind;
use std::collections::VecDeque;
use weir_runtime::savepoint::{METADATA_FILE, SavepointFile, SavepointMetadata, SavepointSubtask, SavepointVertex};

/// What a user asks for.
pub(crate) struct SavepointRequest {
    /// The savepoint's own directory (`<target>/savepoint-<job>-<random>`), a storage URL.
    pub(crate) dir_url: String,
    /// The store opened at `dir_url` and found writable, or why not (the request then completes
    /// as failed at once, and the job goes on).
    pub(crate) storage: Result<Storage, String>,
    /// Cancel the job once the savepoint completed.
    pub(crate) cancel_job: bool,
    /// Stop the job with the savepoint (Flink's stop-with-savepoint): `Some(drain)`.
    pub(crate) stop: Option<bool>,
    /// The client's id of the request (a retry with the same id starts nothing new).
    pub(crate) request_id: String,
}

/// Where a savepoint request stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SavepointStatus {
    /// Being taken.
    InProgress,
    /// Complete: the savepoint's directory.
    Completed {
        /// The directory, a storage URL.
        location: String,
    },
    /// Failed; the job went on.
    Failed {
        /// Why, one line.
        reason: String,
    },
}

/// How many finished requests are remembered for status queries.
const FINISHED_REQUESTS_KEPT: usize = 64;

/// The savepoint requests of one job.
#[derive(Default)]
pub(super) struct Savepoints {
    /// Every request's status, oldest first (finished ones bounded).
    requests: VecDeque<(String, SavepointStatus)>,
    /// `requests` as last published (shared by the views until it changes).
    published: Arc<Vec<(String, SavepointStatus)>>,
    /// Savepoints in progress, by checkpoint id.
    pending: BTreeMap<u64, PendingSavepoint>,
    /// Triggers of checkpoints with ids above a savepoint that is still being prepared: sent
    /// after the savepoint's, since a source drops a trigger older than a barrier it emitted.
    deferred: Vec<CheckpointBarrier>,
}

struct PendingSavepoint {
    request_id: String,
    dir_url: String,
    storage: Storage,
    cancel_job: bool,
    stop: Option<bool>,
    /// The barrier, sent to the sources once every taskmanager is prepared.
    barrier: Option<CheckpointBarrier>,
    /// Taskmanagers that have not confirmed the preparation yet.
    preparing: BTreeSet<String>,
}

impl Savepoints {
    /// The status of request `request_id`.
    pub(super) fn status(&self, request_id: &str) -> Option<SavepointStatus> {
        self.requests.iter().find(|(id, _)| id == request_id).map(|(_, status)| status.clone())
    }

    /// The requests for the job's view.
    pub(super) fn published(&mut self) -> Arc<Vec<(String, SavepointStatus)>> {
        if self.published.len() != self.requests.len() || !self.published.iter().eq(self.requests.iter()) {
            self.published = Arc::new(self.requests.iter().cloned().collect());
        }
        self.published.clone()
    }

    fn set(&mut self, request_id: &str, status: SavepointStatus) {
        match self.requests.iter_mut().find(|(id, _)| id == request_id) {
            Some(entry) => entry.1 = status,
            None => self.requests.push_back((request_id.to_owned(), status)),
        }
        let finished = self.requests.iter().filter(|(_, s)| *s != SavepointStatus::InProgress).count();
        if finished > FINISHED_REQUESTS_KEPT
            && let Some(oldest) = self.requests.iter().position(|(_, s)| *s != SavepointStatus::InProgress)
        {
            self.requests.remove(oldest);
        }
    }

    pub(super) fn is_savepoint(&self, checkpoint: u64) -> bool {
        self.pending.contains_key(&checkpoint)
    }

    /// Whether a savepoint with an id below `checkpoint` is still being prepared (its trigger
    /// not sent yet).
    fn preparing_below(&self, checkpoint: u64) -> bool {
        self.pending.range(..checkpoint).any(|(_, p)| p.barrier.is_some())
    }
}

impl JobMaster {
    /// Starts a savepoint for `request`; the answer is the request id to poll.
    pub(super) fn trigger_savepoint(&mut self, request: SavepointRequest, now: Now) -> Result<String, Error> {
        let id = self.id;
        let request_id = request.request_id;
        if self.savepoints.status(&request_id).is_some() {
            return Ok(request_id);
        }
        let Some(c) = self.checkpoints.as_mut() else {
            return Err(Error::InvalidRequest(format!(
                "job {id} has checkpointing off: savepoints need a job submitted with --checkpoint-interval"
            )));
        };
        if !self.job.can_checkpoint() {
            return Err(Error::IllegalState {
                job: id,
                status: self.job.status.to_string(),
                action: "a savepoint (not every task runs)".into(),
            });
        }
        let storage = match request.storage {
            Ok(storage) => storage,
            Err(reason) => {
                warn!(job_id = %id, "savepoint failed: {reason}");
                self.savepoints.set(&request_id, SavepointStatus::Failed { reason });
                return Ok(request_id);
            }
        };
        let actions = c
            .coordinator
            .trigger_now(now.epoch_ms, CheckpointKind::Savepoint)
            .map_err(|refused| super::checkpoints::trigger_refused(id, "a savepoint", refused))?;
        let Some(checkpoint) = actions.iter().find_map(|a| match a {
            Action::Trigger { checkpoint_id, .. } => Some(*checkpoint_id),
            _ => None,
        }) else {
            return Err(Error::Unavailable("no savepoint was triggered".into()));
        };
        match request.stop {
            None => info!(job_id = %id, checkpoint_id = checkpoint, dir = %request.dir_url, "triggering a savepoint"),
            Some(drain) => {
                info!(job_id = %id, checkpoint_id = checkpoint, dir = %request.dir_url, drain, "stopping the job with a savepoint");
            }
        }
        self.savepoints.set(&request_id, SavepointStatus::InProgress);
        self.savepoints.pending.insert(
            checkpoint,
            PendingSavepoint {
                request_id: request_id.clone(),
                dir_url: request.dir_url,
                storage,
                cancel_job: request.cancel_job,
                stop: request.stop,
                barrier: None,
                preparing: BTreeSet::new(),
            },
        );
        self.perform(actions, now);
        Ok(request_id)
    }

    /// Savepoint `barrier.id` was triggered by the coordinator: tells every taskmanager of the
    /// attempt where it goes; the sources are triggered once all of them confirmed.
    pub(super) fn prepare_savepoint(&mut self, barrier: CheckpointBarrier) {
        let attempt = self.job.attempt;
        let taskmanagers = self.job.attempt_taskmanagers();
        let Some(p) = self.savepoints.pending.get_mut(&barrier.id) else { return };
        p.barrier = Some(barrier);
        for tm in &taskmanagers {
            if let Some(outbox) = self.outboxes.get(tm) {
                outbox.send(Command::PrepareSavepoint(attempt, barrier.id, p.dir_url.clone(), p.stop));
                p.preparing.insert(tm.clone());
            }
        }
        if p.preparing.is_empty() {
            // No taskmanager to prepare: trigger at once (rather than hold it, and the
            // checkpoints after it, until it expires).
            p.barrier = None;
            self.trigger_sources(barrier);
        }
    }

    /// A taskmanager answered the preparation of savepoint `checkpoint`.
    pub(super) fn savepoint_prepared(
        &mut self,
        checkpoint: u64,
        taskmanager: &str,
        result: GatewayResult<()>,
        now: Now,
    ) {
        let Some(p) = self.savepoints.pending.get_mut(&checkpoint) else { return };
        if let Err(error) = result {
            let reason = format!("cannot prepare the savepoint at {}", describe(taskmanager, &error));
            if let Some(c) = self.checkpoints.as_mut() {
                let actions = c.coordinator.trigger_failed(checkpoint, reason, now.epoch_ms);
                self.perform(actions, now);
            }
            return;
        }
        p.preparing.remove(taskmanager);
        if p.preparing.is_empty()
            && let Some(barrier) = p.barrier.take()
        {
            self.trigger_sources(barrier);
            self.release_deferred_triggers();
        }
    }

    /// Sends the trigger of checkpoint `barrier` to the sources, or holds it while a savepoint
    /// with a lower id is still being prepared: triggers must reach the sources in id order (a
    /// source drops a trigger older than a barrier it emitted, and a savepoint dropped so would
    /// wait for its timeout).
    pub(super) fn trigger_checkpoint_sources(&mut self, barrier: CheckpointBarrier) {
        if self.savepoints.preparing_below(barrier.id) {
            debug!(job_id = %self.id, checkpoint_id = barrier.id, "checkpoint trigger held until the savepoint before it is triggered");
            self.savepoints.deferred.push(barrier);
        } else {
            self.trigger_sources(barrier);
        }
    }

    /// Sends the held triggers that no savepoint being prepared precedes any more, in id order
    /// (those of checkpoints aborted meanwhile are dropped).
    fn release_deferred_triggers(&mut self) {
        let deferred = std::mem::take(&mut self.savepoints.deferred);
        for barrier in deferred {
            let pending = self.checkpoints.as_ref().is_some_and(|c| c.coordinator.is_pending(barrier.id));
            if !pending {
                continue;
            }
            if self.savepoints.preparing_below(barrier.id) {
                self.savepoints.deferred.push(barrier);
            } else {
                self.trigger_sources(barrier);
            }
        }
    }

    /// Sends the trigger of `barrier` to the taskmanagers that run the attempt's sources.
    pub(super) fn trigger_sources(&self, barrier: CheckpointBarrier) {
        let Some(c) = self.checkpoints.as_ref() else { return };
        let sources: BTreeSet<String> = c
            .coordinator
            .sources()
            .iter()
            .filter_map(|t| self.job.tasks.get(t))
            .map(|t| t.taskmanager.clone())
            .collect();
        for tm in sources {
            if let Some(outbox) = self.outboxes.get(&tm) {
                outbox.send(Command::Trigger(self.job.attempt, barrier));
            }
        }
    }

    /// Every task acknowledged savepoint `checkpoint`: writes its `_metadata` (after copying in
    /// the files that are not in its directory yet), then reports the outcome as an effect.
    pub(super) fn write_savepoint_metadata(
        &self,
        checkpoint: u64,
        trigger_ms: i64,
        acknowledgements: &BTreeMap<TaskId, TaskSnapshot>,
    ) {
        let (Some(p), Some(c)) = (self.savepoints.pending.get(&checkpoint), self.checkpoints.as_ref()) else {
            return;
        };
        let prefix = format!("{}/", p.dir_url);
        let mut copies = Vec::new();
        let mut vertices = Vec::with_capacity(self.plan.vertices.len());
        for vertex in &self.plan.vertices {
            let mut subtasks = Vec::with_capacity(vertex.parallelism as usize);
            for subtask in 0..vertex.parallelism {
                let snapshot = acknowledgements
                    .iter()
                    .find(|(t, _)| t.vertex == vertex.id && t.subtask == subtask)
                    .map(|(_, s)| s);
                let mut files = Vec::new();
                let operators = snapshot.map(|s| s.operators.clone()).unwrap_or_default();
                for handle in snapshot.into_iter().flat_map(|s| &s.handles) {
                    let path = match handle.uri.strip_prefix(&prefix) {
                        Some(relative) => relative.to_owned(),
                        None => {
                            // A finished task's final snapshot, in the job's checkpoint storage.
                            let path = format!("final-{}-{subtask}-{}", vertex.id, files.len());
                            copies.push((handle.uri.clone(), p.storage.url_of(&path)));
                            path
                        }
                    };
                    files.push(SavepointFile { path, size_bytes: handle.size_bytes });
                }
                let range = weir_api::keygroup::key_group_range(self.plan.max_parallelism, vertex.parallelism, subtask);
                let key_groups = Some((*range.start(), *range.end()));
                subtasks.push(SavepointSubtask { subtask, key_groups, operators, files });
            }
            vertices.push(SavepointVertex {
                name: vertex.name.clone(),
                uids: vertex.uids.clone(),
                parallelism: vertex.parallelism,
                states: vertex.states.clone(),
                subtasks,
            });
        }
        let metadata = SavepointMetadata {
            version: weir_runtime::savepoint::SAVEPOINT_VERSION,
            job_id: self.id.to_string(),
            job_name: self.job.name.clone(),
            checkpoint_id: checkpoint,
            trigger_ms,
            backend: c.settings.backend,
            max_parallelism: self.plan.max_parallelism,
            vertices,
        };
        let (source, target, mailbox) = (c.storage.clone(), p.storage.clone(), self.mailbox.clone());
        let url = target.url_of(METADATA_FILE);
        tokio::spawn(async move {
            let written = async {
                for (from, to) in copies {
                    let bytes = source.get(&from).await.map_err(|e| format!("cannot copy {from}: {e}"))?;
                    target.put(&to, bytes).await.map_err(|e| format!("cannot write {to}: {e}"))?;
                }
                target.put(&url, metadata.encode().into()).await.map_err(|e| format!("cannot write {url}: {e}"))
            }
            .await;
            let effect = match written {
                Ok(()) => Effect::MetadataWritten { checkpoint },
                Err(reason) => Effect::MetadataFailed { checkpoint, reason },
            };
            let _ = mailbox.send(JobInput::Effect(effect));
        });
    }

    /// Savepoint `checkpoint` completed (`true`) or was aborted for `reason`: records the outcome,
    /// removes an aborted one's directory, and cancels the job if the request said so. Returns
    /// whether `checkpoint` was a savepoint.
    pub(super) fn savepoint_ended(&mut self, checkpoint: u64, failure: Option<String>, now: Now) -> bool {
        let Some(p) = self.savepoints.pending.remove(&checkpoint) else { return false };
        // Aborted while being prepared: the checkpoints held behind it go now.
        self.release_deferred_triggers();
        match failure {
            None => {
                info!(job_id = %self.id, checkpoint_id = checkpoint, location = %p.dir_url, "savepoint completed");
                if let Some(c) = self.checkpoints.as_mut() {
                    c.coordinator.savepoint_written(checkpoint, p.dir_url.clone());
                }
                self.savepoints.set(&p.request_id, SavepointStatus::Completed { location: p.dir_url });
                if p.cancel_job
                    && let Err(e) = self.cancel(now)
                {
                    warn!(job_id = %self.id, "cannot cancel the job after its savepoint: {e}");
                }
            }
            Some(reason) => {
                warn!(job_id = %self.id, checkpoint_id = checkpoint, "savepoint failed: {reason}");
                self.savepoints.set(&p.request_id, SavepointStatus::Failed { reason });
                let (storage, dir) = (p.storage, p.dir_url);
                tokio::spawn(async move {
                    if let Err(e) = storage.delete_prefix(&dir).await {
                        warn!("cannot delete the failed savepoint {dir}: {e}");
                    }
                });
            }
        }
        true
    }

    /// Whether checkpoint `checkpoint` is a savepoint in progress.
    pub(super) fn is_savepoint(&self, checkpoint: u64) -> bool {
        self.savepoints.is_savepoint(checkpoint)
    }
}
