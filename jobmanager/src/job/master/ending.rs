//! The job's record, and the end of the job: releases, the final sweep, the last record.

use super::*;

impl JobMaster {
    /// Writes the job's record now (as the job stands) for `purpose`; the completion comes back
    /// as [`Effect::Recorded`]. Without a store, it completes at once.
    pub(super) fn record(&mut self, purpose: RecordPurpose) {
        let Some(recorder) = self.recorder.as_mut() else {
            let _ = self.mailbox.send(JobInput::Effect(Effect::Recorded(purpose)));
            return;
        };
        let record = &mut recorder.record;
        record.attempt = self.job.attempt;
        record.restarts = self.job.restarts;
        record.failure = self.job.failure.clone();
        if let RecordPurpose::Ids(up_to) = purpose {
            record.checkpoint_ids_reserved = record.checkpoint_ids_reserved.max(up_to);
        }
        record.status = match self.job.status {
            JobStatus::Finished => RecordedStatus::Finished,
            JobStatus::Failed => RecordedStatus::Failed,
            JobStatus::Canceled => RecordedStatus::Canceled,
            JobStatus::Cancelling => RecordedStatus::Cancelling,
            _ => RecordedStatus::Running,
        };
        let _ = recorder.queue.send((record.clone(), purpose));
        let _ = &recorder.store;
    }

    pub(super) fn recorded(&mut self, purpose: RecordPurpose, now: Now) {
        match purpose {
            RecordPurpose::Attempt(attempt) if attempt == self.job.attempt => self.prepared(false, true),
            RecordPurpose::Attempt(_) => {}
            RecordPurpose::Ids(up_to) => {
                if let Some(c) = self.checkpoints.as_mut() {
                    c.coordinator.ids_reserved(up_to);
                }
            }
            RecordPurpose::Cancelling => {
                if let Some(commands) = self.cancel_after_record.take() {
                    self.apply(commands, now);
                }
            }
            RecordPurpose::Ended => self.ending.recorded = true,
        }
    }

    /// The job reached a terminal state: its tasks' resources are released, its checkpoints
    /// stop, and its record says how it ended.
    pub(super) fn end(&mut self, now: Now) {
        self.ending.started = true;
        self.stage = None;
        let status = self.job.status;
        match &self.job.failure {
            Some(failure) if status == JobStatus::Failed => warn!(job_id = %self.id, %status, "job ended: {failure}"),
            _ => info!(job_id = %self.id, %status, "job ended"),
        }
        if let Some(commands) = self.cancel_after_record.take() {
            self.apply(commands, now);
        }
        self.release_attempt(self.job.attempt);
        if let Some(c) = self.checkpoints.as_mut() {
            let actions = c.coordinator.stop(now.epoch_ms);
            self.perform(actions, now);
        } else {
            self.ending.swept = true;
        }
        self.record(RecordPurpose::Ended);
    }

    /// Once no checkpoint's metadata is being written, deletes every file under the job's
    /// directory that no retained checkpoint uses.
    pub(super) fn final_sweep(&mut self) {
        let Some(c) = self.checkpoints.as_mut() else { return };
        if c.coordinator.writing_metadata() || self.ending.sweep_requested {
            return;
        }
        self.ending.sweep_requested = true;
        let (keep_checkpoints, keep_files) = c.coordinator.live_files();
        let mailbox = self.mailbox.clone();
        c.deleter.send(Deletion::Sweep {
            keep_checkpoints,
            keep_files,
            done: Box::new(move || {
                let _ = mailbox.send(JobInput::Effect(Effect::FinalSweepDone));
            }),
        });
    }
}
