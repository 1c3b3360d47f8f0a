//! Starting an attempt, in stages: wait for metadata writes in flight, read the restore point,
//! sweep and record, request slots, deploy.

use super::*;
use crate::checkpoint::RestoredCheckpoint;
use crate::job::deploy::{AttemptSpec, deployments};

impl JobMaster {
    pub(super) fn start_attempt(&mut self) {
        info!(job_id = %self.id, attempt = self.job.attempt, "scheduling the job");
        self.stage = Some(Stage::AwaitMetadata);
        self.advance();
    }

    /// Moves the attempt being started on as far as it can go now.
    pub(super) fn advance(&mut self) {
        let attempt = self.job.attempt;
        match self.stage.take() {
            Some(Stage::AwaitMetadata) => match &self.checkpoints {
                Some(c) if c.coordinator.writing_metadata() => self.stage = Some(Stage::AwaitMetadata),
                Some(c) => {
                    let candidates: Vec<u64> =
                        c.coordinator.completed().iter().rev().map(|c| c.checkpoint_id).collect();
                    let (storage, layout, job, mailbox) =
                        (c.storage.clone(), c.layout.clone(), self.id, self.mailbox.clone());
                    tokio::spawn(async move {
                        let (metadata, unusable) =
                            files::choose_restore_point(&storage, &layout, job, candidates).await;
                        let metadata = metadata.map(Box::new);
                        let _ = mailbox.send(JobInput::Effect(Effect::RestorePoint { attempt, metadata, unusable }));
                    });
                    self.stage = Some(Stage::ReadRestorePoint);
                }
                None => {
                    let restore = self.initial_restore.clone();
                    self.stage = Some(Stage::Prepare { restore, swept: true, recorded: false });
                    self.record(RecordPurpose::Attempt(attempt));
                }
            },
            Some(Stage::Prepare { restore, swept: true, recorded: true }) => {
                let result = self.registry.request_slots(
                    self.id,
                    self.plan.required_slots(),
                    self.slot_request_timeout,
                    self.mailbox.clone(),
                );
                let mailbox = self.mailbox.clone();
                tokio::spawn(async move {
                    if let Ok(result) = result.await {
                        let _ = mailbox.send(JobInput::Effect(Effect::Slots { attempt, result }));
                    }
                });
                self.stage = Some(Stage::AwaitSlots { restore });
            }
            other => self.stage = other,
        }
    }

    pub(super) fn restore_point_read(
        &mut self,
        metadata: Option<Box<CheckpointMetadata>>,
        unusable: Vec<Unusable>,
        now: Now,
    ) {
        if !matches!(self.stage, Some(Stage::ReadRestorePoint)) {
            return;
        }
        let Some(c) = self.checkpoints.as_mut() else { return };
        let mut actions = Vec::new();
        for u in unusable {
            actions.extend(c.coordinator.discard_completed(u.checkpoint_id));
        }
        self.perform(actions, now);
        let attempt = self.job.attempt;
        if let Some(c) = &self.checkpoints {
            // Files of the previous attempt's unfinished checkpoints (uploads that landed after
            // their abort) go before the new attempt writes.
            let (keep_checkpoints, keep_files) = c.coordinator.live_files();
            let mailbox = self.mailbox.clone();
            c.deleter.send(Deletion::Sweep {
                keep_checkpoints,
                keep_files,
                done: Box::new(move || {
                    let _ = mailbox.send(JobInput::Effect(Effect::Swept { attempt }));
                }),
            });
        }
        // Without a checkpoint of its own, the job restores the savepoint it started from.
        let metadata = metadata.or_else(|| self.initial_restore.clone());
        if let Some(m) = &metadata {
            info!(job_id = %self.id, checkpoint_id = m.checkpoint_id, kind = %m.kind, "restoring the job from {} {}", m.kind.to_lowercase(), m.checkpoint_id);
        }
        self.stage = Some(Stage::Prepare { restore: metadata, swept: false, recorded: false });
        self.record(RecordPurpose::Attempt(attempt));
    }

    pub(super) fn prepared(&mut self, swept_now: bool, recorded_now: bool) {
        if let Some(Stage::Prepare { swept, recorded, .. }) = self.stage.as_mut() {
            *swept |= swept_now;
            *recorded |= recorded_now;
            self.advance();
        }
    }

    pub(super) fn slots_granted(&mut self, result: Result<Vec<AssignedSlot>, SlotShortage>, now: Now) {
        let Some(Stage::AwaitSlots { restore }) = self.stage.take() else {
            if result.is_ok() {
                self.registry.release_slots(self.id);
            }
            return;
        };
        let slots = match result {
            Ok(slots) => slots,
            Err(shortage) => {
                self.job.scheduling_failed(shortage.to_string(), now.instant);
                return;
            }
        };
        let attempt = self.job.attempt;
        if !self.job.scheduled(slots.iter().map(|s| s.taskmanager.clone()).collect(), now.instant) {
            self.registry.release_slots(self.id);
            return;
        }
        let checkpointing =
            self.checkpoints.as_ref().map(|c| CheckpointingSpec { storage_url: c.settings.storage_url.clone() });
        let spec = AttemptSpec {
            job: self.id,
            attempt,
            job_name: &self.job.name,
            args: &self.args,
            plan: &self.plan,
            checkpointing,
            state_backend: self.job.state_backend,
            restore: restore.as_deref(),
        };
        let deployments = deployments(&spec, &slots);
        if let Some(c) = self.checkpoints.as_mut() {
            let tasks = deployments.iter().map(|(d, _)| d.task).collect();
            let sources = deployments.iter().filter(|(d, _)| d.is_source()).map(|(d, _)| d.task).collect();
            let restored = restore.as_ref().map(|m| {
                let is_savepoint = m.kind == "SAVEPOINT";
                RestoredCheckpoint {
                    checkpoint_id: m.checkpoint_id,
                    restore_ms: now.epoch_ms,
                    is_savepoint,
                    external_path: if is_savepoint { c.settings.savepoint_path.clone() } else { None },
                }
            });
            let actions = c.coordinator.new_attempt(tasks, sources, restored, now.epoch_ms);
            self.perform(actions, now);
        }
        for slot in &slots {
            let fresh = self.outboxes.get(&slot.taskmanager).is_none_or(|o| !o.reaches(&slot.gateway));
            if fresh {
                let outbox = Outbox::start(self.id, slot.gateway.clone(), self.mailbox.clone());
                self.outboxes.insert(slot.taskmanager.clone(), outbox);
            }
        }
        info!(job_id = %self.id, attempt, slots = slots.len(), tasks = deployments.len(), "deploying the job's tasks");
        for (deployment, slot) in deployments {
            let tm = &slots[slot].taskmanager;
            self.job.task_deployed(deployment.task, tm);
            if let Some(outbox) = self.outboxes.get(tm) {
                outbox.send(Command::Deploy(Box::new(deployment), self.artifact.clone()));
            }
        }
    }
}
