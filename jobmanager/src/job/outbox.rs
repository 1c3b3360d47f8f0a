//! A job's commands to one taskmanager, carried out in order by a task of their own.
//!
//! The job master never waits for a taskmanager: it queues commands here and goes on; failures
//! come back to its mailbox as [`Effect`]s. One queue per (job, taskmanager) keeps the order the
//! master decided (a deployment before its cancellation, trigger `n` before trigger `n + 1`,
//! the release of an attempt before the deployment of the next), while a slow taskmanager delays
//! only its own commands.

use super::master::{Effect, JobInput};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use weir_api::runtime::{CheckpointBarrier, CheckpointId, FINAL_CHECKPOINT};
use weir_runtime::{GatewayError, JobArtifact, JobId, TaskDeployment, TaskManagerGateway};

/// One command to a taskmanager about one job.
pub(crate) enum Command {
    /// Deploy a task (skipped once its attempt is being cancelled: reported as not deployed).
    Deploy(Box<TaskDeployment>, JobArtifact),
    /// Cancel the tasks of attempts up to this one.
    Cancel(u32),
    /// Release what attempts up to this one hold.
    Release(u32),
    /// Trigger a checkpoint at the attempt's sources.
    Trigger(u32, CheckpointBarrier),
    /// Tell the taskmanager where a savepoint of the attempt goes (the answer goes to the
    /// master).
    PrepareSavepoint(u32, CheckpointId, String, Option<bool>),
    /// A checkpoint of the attempt was aborted.
    Abort(u32, CheckpointId),
    /// A checkpoint of the attempt completed.
    Notify(u32, CheckpointId),
    /// The attempt finished: commit everything (the answer goes to the master).
    CommitFinal(u32),
}

/// The queue of one job's commands to one taskmanager.
pub(crate) struct Outbox {
    queue: mpsc::UnboundedSender<Command>,
    gateway: Arc<dyn TaskManagerGateway>,
    /// Attempts up to this one are being cancelled: their queued deployments are skipped.
    cancelled_up_to: Arc<AtomicI64>,
    worker: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("taskmanager", &self.gateway.id()).finish_non_exhaustive()
    }
}

impl Outbox {
    /// Starts the queue of `job`'s commands to `gateway`; effects go to `mailbox`.
    pub(crate) fn start(
        job: JobId,
        gateway: Arc<dyn TaskManagerGateway>,
        mailbox: mpsc::UnboundedSender<JobInput>,
    ) -> Self {
        let (queue, commands) = mpsc::unbounded_channel();
        let cancelled_up_to = Arc::new(AtomicI64::new(-1));
        let worker = tokio::spawn(work(job, gateway.clone(), commands, mailbox, cancelled_up_to.clone()));
        Self { queue, gateway, cancelled_up_to, worker }
    }

    /// Whether this queue talks to `gateway` (a taskmanager that registered again has a new one).
    pub(crate) fn reaches(&self, gateway: &Arc<dyn TaskManagerGateway>) -> bool {
        Arc::ptr_eq(&self.gateway, gateway)
    }

    /// Queues `command`.
    pub(crate) fn send(&self, command: Command) {
        if let Command::Cancel(attempt) = command {
            self.cancelled_up_to.fetch_max(i64::from(attempt), Ordering::Relaxed);
        }
        let _ = self.queue.send(command);
    }
}

impl Outbox {
    /// The taskmanager is lost: what is still queued for it is moot. (Dropping an outbox
    /// instead lets it carry out what is queued, such as the release of a finished job.)
    pub(crate) fn abandon(self) {
        self.worker.abort();
    }
}

async fn work(
    job: JobId,
    gateway: Arc<dyn TaskManagerGateway>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mailbox: mpsc::UnboundedSender<JobInput>,
    cancelled_up_to: Arc<AtomicI64>,
) {
    let taskmanager = gateway.id().to_owned();
    let effect = |effect: Effect| {
        let _ = mailbox.send(JobInput::Effect(effect));
    };
    while let Some(command) = commands.recv().await {
        match command {
            Command::Deploy(deployment, artifact) => {
                let task = deployment.task;
                if i64::from(task.attempt) <= cancelled_up_to.load(Ordering::Relaxed) {
                    effect(Effect::NotDeployed { task });
                    continue;
                }
                if let Err(error) = gateway.deploy(*deployment, artifact).await {
                    effect(Effect::DeployFailed { task, taskmanager: taskmanager.clone(), error });
                }
            }
            Command::Cancel(attempt) => {
                if let Err(error) = gateway.cancel_job(job, attempt).await {
                    warn!(job_id = %job, %taskmanager, attempt, "cancelling the job's tasks failed: {error}");
                    effect(Effect::CancelFailed { taskmanager: taskmanager.clone(), error });
                }
            }
            Command::Release(attempt) => {
                if let Err(error) = gateway.release_job(job, attempt).await {
                    warn!(job_id = %job, %taskmanager, attempt, "releasing the job failed: {error}");
                }
            }
            Command::Trigger(attempt, barrier) => match gateway.trigger_checkpoint(job, attempt, barrier).await {
                Ok(triggered) => {
                    debug!(job_id = %job, %taskmanager, checkpoint_id = barrier.id, triggered, "checkpoint triggered")
                }
                Err(error) => effect(Effect::TriggerFailed {
                    attempt,
                    checkpoint: barrier.id,
                    reason: format!("cannot trigger at taskmanager {taskmanager}: {error}"),
                }),
            },
            Command::PrepareSavepoint(attempt, checkpoint, dir, stop) => {
                let result = gateway.prepare_savepoint(job, attempt, checkpoint, dir, stop).await;
                effect(Effect::SavepointPrepared { attempt, checkpoint, taskmanager: taskmanager.clone(), result });
            }
            Command::Abort(attempt, checkpoint) => {
                if let Err(error) = gateway.abort_checkpoint(job, attempt, checkpoint).await {
                    debug!(job_id = %job, %taskmanager, checkpoint_id = checkpoint, "announcing the abort failed: {error}");
                }
            }
            Command::Notify(attempt, checkpoint) => {
                if let Err(error) = gateway.notify_checkpoint_complete(job, attempt, checkpoint).await {
                    warn!(job_id = %job, %taskmanager, checkpoint_id = checkpoint, "notifying checkpoint completion failed: {error}");
                }
            }
            Command::CommitFinal(attempt) => {
                let result = gateway.notify_checkpoint_complete(job, attempt, FINAL_CHECKPOINT).await;
                effect(Effect::FinalCommit { attempt, taskmanager: taskmanager.clone(), result });
            }
        }
    }
}

/// Why a command failed, for logs and failure messages.
pub(crate) fn describe(taskmanager: &str, error: &GatewayError) -> String {
    format!("taskmanager {taskmanager}: {error}")
}
