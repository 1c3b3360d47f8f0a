//! Checkpoints: ticks, manual triggers, and the coordinator's actions carried out.

use super::*;

impl JobMaster {
    pub(super) fn tick(&mut self, now: Now) {
        if !self.job.can_checkpoint() {
            return;
        }
        if let Some(c) = self.checkpoints.as_mut() {
            let actions = c.coordinator.tick(now.epoch_ms);
            self.perform(actions, now);
        }
    }

    pub(super) fn trigger_checkpoint(&mut self, now: Now) -> Result<u64, Error> {
        let id = self.id;
        let Some(c) = self.checkpoints.as_mut() else {
            return Err(Error::InvalidRequest(format!("job {id} has checkpointing off")));
        };
        if !self.job.can_checkpoint() {
            return Err(Error::IllegalState {
                job: id,
                status: self.job.status.to_string(),
                action: "a checkpoint (not every task runs)".into(),
            });
        }
        let actions = c
            .coordinator
            .trigger_now(now.epoch_ms, crate::checkpoint::CheckpointKind::Checkpoint)
            .map_err(|refused| trigger_refused(id, "a checkpoint", refused))?;
        let checkpoint = actions.iter().find_map(|a| match a {
            Action::Trigger { checkpoint_id, .. } => Some(*checkpoint_id),
            _ => None,
        });
        self.perform(actions, now);
        checkpoint.ok_or_else(|| Error::Unavailable("no checkpoint was triggered".into()))
    }

    /// Carries out the coordinator's actions, in order.
    pub(super) fn perform(&mut self, actions: Vec<Action>, now: Now) {
        let attempt = self.job.attempt;
        for action in actions {
            let Some(c) = self.checkpoints.as_mut() else { return };
            match action {
                Action::Trigger { checkpoint_id, timestamp_ms, kind } => {
                    debug!(job_id = %self.id, checkpoint_id, ?kind, "triggering checkpoint");
                    let barrier = CheckpointBarrier { id: checkpoint_id, timestamp: timestamp_ms };
                    if self.is_savepoint(checkpoint_id) {
                        self.prepare_savepoint(barrier);
                    } else {
                        self.trigger_checkpoint_sources(barrier);
                    }
                }
                Action::WriteMetadata { checkpoint_id, kind, acknowledgements } => {
                    let trigger_ms = c
                        .coordinator
                        .pending()
                        .iter()
                        .find(|p| p.checkpoint_id == checkpoint_id)
                        .map_or(0, |p| p.trigger_ms);
                    if self.savepoints.is_savepoint(checkpoint_id) {
                        self.write_savepoint_metadata(checkpoint_id, trigger_ms, &acknowledgements);
                        continue;
                    }
                    let metadata = files::metadata(
                        self.id,
                        checkpoint_id,
                        kind,
                        trigger_ms,
                        c.settings.backend,
                        self.plan.max_parallelism,
                        acknowledgements,
                    );
                    let (storage, url, mailbox) =
                        (c.storage.clone(), c.layout.metadata_url(checkpoint_id), self.mailbox.clone());
                    tokio::spawn(async move {
                        weir_runtime::faults::delay("jobmanager::metadata::delay").await;
                        let effect = match storage.put(&url, metadata.encode().into()).await {
                            Ok(()) => {
                                weir_runtime::faults::crash("jobmanager::metadata::crash");
                                Effect::MetadataWritten { checkpoint: checkpoint_id }
                            }
                            Err(e) => Effect::MetadataFailed { checkpoint: checkpoint_id, reason: e.to_string() },
                        };
                        let _ = mailbox.send(JobInput::Effect(effect));
                    });
                }
                Action::NotifyComplete { checkpoint_id } => {
                    if let Some(done) = c.coordinator.latest_completed().filter(|d| d.checkpoint_id == checkpoint_id) {
                        info!(
                            job_id = %self.id,
                            checkpoint_id,
                            duration_ms = done.duration_ms,
                            state_size = done.state_size_bytes,
                            incremental_size = done.incremental_size_bytes,
                            "checkpoint completed"
                        );
                    }
                    // Completed after its attempt ended (its metadata write outlived the
                    // attempt): the next attempt restores it, and its sinks commit it then.
                    if self.job.status == JobStatus::Running {
                        for tm in self.job.attempt_taskmanagers() {
                            if let Some(outbox) = self.outboxes.get(&tm) {
                                outbox.send(Command::Notify(attempt, checkpoint_id));
                            }
                        }
                    }
                    self.savepoint_ended(checkpoint_id, None, now);
                }
                Action::Abort { checkpoint_id, reason } => {
                    if reason.counts_as_failure() {
                        warn!(job_id = %self.id, checkpoint_id, "checkpoint failed: {reason}");
                    } else {
                        debug!(job_id = %self.id, checkpoint_id, "checkpoint aborted: {reason}");
                    }
                    c.deleter.send(Deletion::Checkpoint(checkpoint_id));
                    if self.job.status == JobStatus::Running {
                        for tm in self.job.attempt_taskmanagers() {
                            if let Some(outbox) = self.outboxes.get(&tm) {
                                outbox.send(Command::Abort(attempt, checkpoint_id));
                            }
                        }
                    }
                    self.savepoint_ended(checkpoint_id, Some(reason.to_string()), now);
                }
                Action::Discard { checkpoint_id } => {
                    debug!(job_id = %self.id, checkpoint_id, "discarding a checkpoint no longer retained");
                    c.deleter.send(Deletion::Checkpoint(checkpoint_id));
                }
                Action::DeleteShared { uris } | Action::DeleteFiles { uris } => c.deleter.send(Deletion::Files(uris)),
                Action::ReserveIds { up_to } => match &self.recorder {
                    Some(_) => self.record(RecordPurpose::Ids(up_to)),
                    None => c.coordinator.ids_reserved(up_to),
                },
                Action::FailJob { reason } => {
                    let commands = self.job.fail(reason, now.instant);
                    self.apply(commands, now);
                }
            }
        }
    }
}

/// The answer to a manual trigger of `what` the coordinator refused: 409 while the job ends or
/// an earlier checkpoint or savepoint is in progress (as many as allowed), 503 while checkpoint
/// ids are being reserved.
pub(super) fn trigger_refused(job: JobId, what: &str, refused: TriggerRefused) -> Error {
    match refused {
        TriggerRefused::Stopped => Error::IllegalState { job, status: "ending".into(), action: what.into() },
        busy @ (TriggerRefused::TooManyPending { .. } | TriggerRefused::SavepointInProgress(_)) => {
            Error::Busy(busy.to_string())
        }
        TriggerRefused::NoIdReserved => {
            Error::Unavailable(format!("cannot trigger {what} yet: {}", TriggerRefused::NoIdReserved))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_refused_while_one_is_in_progress_is_a_conflict_to_retry_not_a_server_error() {
        let job = JobId::random();
        let busy = trigger_refused(job, "a checkpoint", TriggerRefused::TooManyPending { pending: 1, max: 1 });
        assert_eq!(busy.status_code(), 409);
        assert_eq!(busy.to_string(), "1 checkpoints are in progress, the maximum is 1: retry when it has ended");
        let savepoint = trigger_refused(job, "a savepoint", TriggerRefused::SavepointInProgress(3));
        assert_eq!(savepoint.status_code(), 409);
        assert_eq!(trigger_refused(job, "a savepoint", TriggerRefused::Stopped).status_code(), 409);
        assert_eq!(trigger_refused(job, "a checkpoint", TriggerRefused::NoIdReserved).status_code(), 503);
    }
}
