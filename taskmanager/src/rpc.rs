//! The taskmanager's gRPC side: the service the jobmanager calls (deploy, cancel, release), the
//! client that registers, sends heartbeats and reports task states, and the plugin cache filled
//! from the jobmanager.

use crate::taskmanager::TaskManager;
use sha2::{Digest as _, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};
use weir_api::runtime::{CheckpointBarrier, CheckpointId};
use weir_proto::control::v1 as pb;
use weir_proto::control::v1::job_manager_service_client::JobManagerServiceClient;
use weir_proto::control::v1::task_manager_service_server::{TaskManagerService, TaskManagerServiceServer};
use weir_runtime::checkpoint::TaskSnapshot;
use weir_runtime::{JobArtifact, TaskEvent, TaskEventSink, TaskId, convert};

/// Local copies of job plugins, fetched from the jobmanager by SHA-256 and verified.
pub(crate) struct PluginCache {
    dir: PathBuf,
    client: JobManagerServiceClient<Channel>,
    fetching: tokio::sync::Mutex<()>,
}

impl PluginCache {
    pub(crate) fn new(dir: PathBuf, client: JobManagerServiceClient<Channel>) -> Self {
        Self { dir, client, fetching: tokio::sync::Mutex::new(()) }
    }

    /// The local path of plugin `sha256`, fetching it first if needed.
    pub(crate) async fn ensure(&self, sha256: &str) -> Result<PathBuf, String> {
        let path = self.dir.join(format!("{sha256}.so"));
        let _guard = self.fetching.lock().await;
        if path.exists() {
            return Ok(path);
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| format!("cannot create the plugin cache {}: {e}", self.dir.display()))?;
        let mut stream = self
            .client
            .clone()
            .fetch_plugin(pb::FetchPluginRequest { sha256: sha256.to_owned() })
            .await
            .map_err(|s| format!("cannot fetch plugin {sha256} from the jobmanager: {}", s.message()))?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) =
            stream.message().await.map_err(|s| format!("fetching plugin {sha256}: {}", s.message()))?
        {
            bytes.extend_from_slice(&chunk.data);
        }
        let digest = Sha256::digest(&bytes);
        let actual: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        if actual != sha256 {
            return Err(format!("plugin {sha256} arrived with SHA-256 {actual}; refusing to load it"));
        }
        let partial = self.dir.join(format!(".{sha256}.{}.partial", std::process::id()));
        tokio::fs::write(&partial, &bytes).await.map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
        tokio::fs::rename(&partial, &path).await.map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        info!(sha256, bytes = bytes.len(), "fetched a job plugin");
        Ok(path)
    }
}

/// The service the jobmanager calls.
pub(crate) struct TaskManagerRpc {
    pub(crate) taskmanager: TaskManager,
    pub(crate) plugins: Arc<PluginCache>,
}

impl TaskManagerRpc {
    /// The tonic service, behind `fence`.
    pub(crate) fn into_server(
        self,
        fence: LeaderFence,
    ) -> tonic::codegen::InterceptedService<TaskManagerServiceServer<Self>, LeaderFence> {
        tonic::codegen::InterceptedService::new(
            TaskManagerServiceServer::new(self).max_decoding_message_size(64 << 20),
            fence,
        )
    }
}

/// The metadata key of the jobmanager's leader epoch (as `weir_jobmanager::rpc` sends it).
const LEADER_EPOCH_HEADER: &str = "weir-leader-epoch";

/// Fences off deposed jobmanagers: remembers the highest leader epoch seen (in calls and in
/// registration answers) and refuses calls of a lower one, so that a jobmanager that lost its
/// leadership (paused, partitioned) cannot deploy, cancel, trigger or commit anything once its
/// successor has reached this taskmanager. Calls without an epoch are epoch 0 (a jobmanager
/// without high availability).
#[derive(Debug, Clone, Default)]
pub(crate) struct LeaderFence {
    highest: Arc<std::sync::atomic::AtomicU64>,
}

impl LeaderFence {
    /// Admits a call of `epoch` (raising the highest epoch seen), or refuses it.
    ///
    /// # Errors
    /// `FAILED_PRECONDITION` naming both epochs when `epoch` is below the highest seen.
    pub(crate) fn admit(&self, epoch: u64) -> Result<(), Status> {
        let highest = self.highest.fetch_max(epoch, std::sync::atomic::Ordering::SeqCst);
        if epoch < highest {
            return Err(Status::failed_precondition(format!(
                "refused: this jobmanager leads epoch {epoch}, and the taskmanager follows the leader of epoch {highest} \
                 (this jobmanager was deposed)"
            )));
        }
        Ok(())
    }
}

impl tonic::service::Interceptor for LeaderFence {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let epoch = match request.metadata().get(LEADER_EPOCH_HEADER) {
            None => 0,
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| Status::invalid_argument(format!("{LEADER_EPOCH_HEADER} is not a number")))?,
        };
        self.admit(epoch)?;
        Ok(request)
    }
}

#[tonic::async_trait]
impl TaskManagerService for TaskManagerRpc {
    async fn deploy_task(
        &self,
        request: Request<pb::DeployTaskRequest>,
    ) -> Result<Response<pb::DeployTaskResponse>, Status> {
        let (deployment, sha256) = convert::deployment_from_request(request.into_inner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let path = self.plugins.ensure(&sha256).await.map_err(Status::failed_precondition)?;
        let taskmanager = self.taskmanager.clone();
        let task = deployment.task;
        // Loading the plugin and running its build function block: keep them off the async workers.
        tokio::task::spawn_blocking(move || taskmanager.deploy_task(deployment, &JobArtifact::Stored { sha256, path }))
            .await
            .map_err(|e| Status::internal(format!("deploying {task}: {e}")))?
            .map_err(Status::failed_precondition)?;
        Ok(Response::new(pb::DeployTaskResponse {}))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let request = request.into_inner();
        let job = convert::job_id("job_id", &request.job_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.taskmanager.cancel_job(job, request.attempt);
        Ok(Response::new(pb::CancelJobResponse {}))
    }

    async fn release_job(
        &self,
        request: Request<pb::ReleaseJobRequest>,
    ) -> Result<Response<pb::ReleaseJobResponse>, Status> {
        let request = request.into_inner();
        let job = convert::job_id("job_id", &request.job_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.taskmanager.release_job(job, request.attempt);
        Ok(Response::new(pb::ReleaseJobResponse {}))
    }

    async fn trigger_checkpoint(
        &self,
        request: Request<pb::TriggerCheckpointRequest>,
    ) -> Result<Response<pb::TriggerCheckpointResponse>, Status> {
        let request = request.into_inner();
        let job = convert::job_id("job_id", &request.job_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if request.checkpoint_id == 0 {
            return Err(Status::invalid_argument("invalid checkpoint_id: 0"));
        }
        let barrier = CheckpointBarrier { id: request.checkpoint_id, timestamp: request.timestamp_ms };
        let triggered = self.taskmanager.trigger_checkpoint(job, request.attempt, barrier);
        Ok(Response::new(pb::TriggerCheckpointResponse { triggered_tasks: triggered as u32 }))
    }

    async fn prepare_savepoint(
        &self,
        request: Request<pb::PrepareSavepointRequest>,
    ) -> Result<Response<pb::PrepareSavepointResponse>, Status> {
        let request = request.into_inner();
        let job = convert::job_id("job_id", &request.job_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if request.checkpoint_id == 0 || request.savepoint_dir.is_empty() {
            return Err(Status::invalid_argument("a savepoint needs a checkpoint id and a directory"));
        }
        self.taskmanager
            .prepare_savepoint(
                job,
                request.attempt,
                request.checkpoint_id,
                &request.savepoint_dir,
                request.stop.then_some(request.drain),
            )
            .map_err(|e| match e.kind {
                weir_runtime::GatewayErrorKind::Refused => Status::failed_precondition(e.message),
                _ => Status::internal(e.message),
            })?;
        Ok(Response::new(pb::PrepareSavepointResponse {}))
    }

    async fn abort_checkpoint(
        &self,
        request: Request<pb::AbortCheckpointRequest>,
    ) -> Result<Response<pb::AbortCheckpointResponse>, Status> {
        let request = request.into_inner();
        let job = convert::job_id("job_id", &request.job_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.taskmanager.abort_checkpoint(job, request.attempt, request.checkpoint_id);
        Ok(Response::new(pb::AbortCheckpointResponse {}))
    }

    async fn notify_checkpoint_complete(
        &self,
        request: Request<pb::NotifyCheckpointCompleteRequest>,
    ) -> Result<Response<pb::NotifyCheckpointCompleteResponse>, Status> {
        let request = request.into_inner();
        let job = convert::job_id("job_id", &request.job_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let taskmanager = self.taskmanager.clone();
        tokio::task::spawn_blocking(move || {
            taskmanager.notify_checkpoint_complete(job, request.attempt, request.checkpoint_id)
        })
        .await
        .map_err(|e| Status::internal(format!("commit: {e}")))?
        .map_err(|e| match e.kind {
            weir_runtime::GatewayErrorKind::Refused => Status::failed_precondition(e.message),
            _ => Status::internal(e.message),
        })?;
        Ok(Response::new(pb::NotifyCheckpointCompleteResponse {}))
    }
}

/// What a taskmanager reports to the jobmanager, in order.
#[derive(Debug)]
pub(crate) enum Report {
    /// A task's state changed.
    Task(TaskEvent),
    /// A task acknowledged a checkpoint.
    Acknowledge(TaskId, CheckpointId, TaskSnapshot),
    /// A task declined a checkpoint.
    Decline(TaskId, CheckpointId, String),
}

/// Task events and checkpoint acknowledgements, forwarded to the jobmanager in order by a
/// background task.
pub(crate) struct RemoteEventSink {
    pub(crate) events: mpsc::UnboundedSender<Report>,
}

impl TaskEventSink for RemoteEventSink {
    fn task_event(&self, event: TaskEvent) {
        let _ = self.events.send(Report::Task(event));
    }

    fn checkpoint_acknowledged(&self, task: TaskId, checkpoint: CheckpointId, snapshot: TaskSnapshot) {
        let _ = self.events.send(Report::Acknowledge(task, checkpoint, snapshot));
    }

    fn checkpoint_declined(&self, task: TaskId, checkpoint: CheckpointId, reason: String) {
        let _ = self.events.send(Report::Decline(task, checkpoint, reason));
    }
}

/// Sends one report.
async fn send_report(
    taskmanager_id: &str,
    client: &mut JobManagerServiceClient<Channel>,
    report: &Report,
) -> Result<(), Status> {
    match report {
        Report::Task(event) => {
            client.update_task_state(convert::task_event_to_update(taskmanager_id, event)).await?;
        }
        Report::Acknowledge(task, checkpoint_id, snapshot) => {
            client
                .acknowledge_checkpoint(pb::AcknowledgeCheckpointRequest {
                    taskmanager_id: taskmanager_id.to_owned(),
                    task: Some((*task).into()),
                    checkpoint_id: *checkpoint_id,
                    handles: convert::handles_to_pb(&snapshot.handles),
                    alignment_ms: snapshot.alignment_ms,
                    operators: snapshot.operators.clone(),
                })
                .await?;
        }
        Report::Decline(task, checkpoint_id, reason) => {
            client
                .decline_checkpoint(pb::DeclineCheckpointRequest {
                    taskmanager_id: taskmanager_id.to_owned(),
                    task: Some((*task).into()),
                    checkpoint_id: *checkpoint_id,
                    reason: reason.clone(),
                })
                .await?;
        }
    }
    Ok(())
}

/// Reports task events to the jobmanager, in order, retrying each for up to `give_up_after`.
pub(crate) async fn report_events(
    taskmanager_id: String,
    client: JobManagerServiceClient<Channel>,
    mut events: mpsc::UnboundedReceiver<Report>,
    give_up_after: Duration,
) {
    let mut client = client;
    while let Some(report) = events.recv().await {
        if weir_runtime::faults::fires("taskmanager::report::drop").is_some() {
            warn!(?report, "fault injection: report dropped");
            continue;
        }
        if weir_runtime::faults::fires("taskmanager::report::duplicate").is_some() {
            warn!(?report, "fault injection: report sent twice");
            let _ = send_report(&taskmanager_id, &mut client, &report).await;
        }
        let started = Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            match send_report(&taskmanager_id, &mut client, &report).await {
                Ok(()) => break,
                Err(status) if started.elapsed() < give_up_after => {
                    debug!(?report, "reporting to the jobmanager failed ({}); retrying", status.message());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(status) => {
                    warn!(?report, "cannot report to the jobmanager: {}", status.message());
                    break;
                }
            }
        }
    }
}

/// What a taskmanager tells the jobmanager when it registers.
pub(crate) struct Registration {
    pub(crate) request: pb::RegisterTaskManagerRequest,
    pub(crate) jobmanager_url: String,
    /// Raised to the epoch of the jobmanager this taskmanager registers with.
    pub(crate) fence: LeaderFence,
    /// Set while registered (`/readyz`).
    pub(crate) readiness: crate::http::Readiness,
}

/// Registers with the jobmanager and keeps sending heartbeats; registers again whenever the
/// jobmanager forgot this taskmanager or was unreachable for longer than the heartbeat timeout
/// (its tasks are cancelled then: the jobmanager has given up on them).
pub(crate) async fn stay_registered(
    registration: Registration,
    client: JobManagerServiceClient<Channel>,
    taskmanager: TaskManager,
) {
    let id = registration.request.taskmanager_id.clone();
    let url = registration.jobmanager_url.clone();
    let mut backoff = Duration::from_millis(200);
    loop {
        let response = match client.clone().register_task_manager(registration.request.clone()).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                warn!(
                    taskmanager = %id,
                    "cannot register with the jobmanager at {url}: {}; retrying in {:.1} s",
                    one_line(status.message()),
                    backoff.as_secs_f64()
                );
                tokio::time::sleep(backoff).await;
                // At most a second apart: a new leader is found within a second of its start.
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        // A jobmanager of an older epoch than one already followed is a deposed leader.
        if let Err(refused) = registration.fence.admit(response.leader_epoch) {
            warn!(taskmanager = %id, "not following the jobmanager at {url}: {}", refused.message());
            tokio::time::sleep(backoff).await;
            continue;
        }
        let interval = Duration::from_millis(response.heartbeat_interval_ms.max(10));
        let timeout = Duration::from_millis(response.heartbeat_timeout_ms.max(response.heartbeat_interval_ms));
        info!(taskmanager = %id, jobmanager = %response.jobmanager_id, "registered with the jobmanager at {url}");
        registration.readiness.set_registered(true);
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(interval).await;
            let tasks = taskmanager
                .task_metrics()
                .into_iter()
                .map(|t| pb::TaskMetrics {
                    task: Some(t.task.into()),
                    records_in: t.records_in,
                    records_out: t.records_out,
                    state: pb::TaskState::from(t.state) as i32,
                    busy_permille: u32::from(t.time.busy_permille),
                    idle_permille: u32::from(t.time.idle_permille),
                    backpressured_permille: u32::from(t.time.backpressured_permille),
                    input_watermark: t.input_watermark,
                })
                .collect();
            let process = weir_runtime::metrics::process_stats().map(|p| pb::ProcessMetrics {
                rss_bytes: p.rss_bytes,
                cpu_time_ms: p.cpu_time_ms,
                threads: p.threads,
            });
            let mut request = Request::new(pb::HeartbeatRequest { taskmanager_id: id.clone(), tasks, process });
            request.set_timeout(interval.max(Duration::from_millis(500)));
            match client.clone().heartbeat(request).await {
                Ok(r) if r.get_ref().reregister => {
                    warn!(taskmanager = %id, "the jobmanager does not know this taskmanager: cancelling its tasks and registering again");
                    taskmanager.cancel_all("the jobmanager no longer knows this taskmanager");
                    registration.readiness.set_registered(false);
                    break;
                }
                Ok(_) => last_ok = Instant::now(),
                Err(status) => {
                    warn!(taskmanager = %id, "heartbeat to the jobmanager at {url} failed: {}", one_line(status.message()));
                    if last_ok.elapsed() > timeout {
                        warn!(taskmanager = %id, "no contact with the jobmanager for {:.1} s: cancelling all tasks and registering again", last_ok.elapsed().as_secs_f64());
                        taskmanager.cancel_all("the taskmanager lost contact with the jobmanager");
                        registration.readiness.set_registered(false);
                        break;
                    }
                }
            }
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor as _;

    fn call(fence: &mut LeaderFence, epoch: Option<&str>) -> Result<(), Status> {
        let mut request = tonic::Request::new(());
        if let Some(epoch) = epoch {
            request.metadata_mut().insert(LEADER_EPOCH_HEADER, epoch.parse().unwrap());
        }
        fence.call(request).map(|_| ())
    }

    #[test]
    fn calls_of_a_deposed_leader_are_refused_once_its_successor_was_seen() {
        let mut fence = LeaderFence::default();
        assert!(call(&mut fence, None).is_ok(), "no high availability: epoch 0");
        assert!(call(&mut fence, Some("1")).is_ok());
        assert!(call(&mut fence, Some("1")).is_ok());
        assert!(call(&mut fence, Some("2")).is_ok(), "the successor");
        let refused = call(&mut fence, Some("1")).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(refused.message().contains("epoch 1") && refused.message().contains("epoch 2"), "{refused:?}");
        assert!(call(&mut fence, None).is_err(), "nor a jobmanager without high availability");
        assert_eq!(call(&mut fence, Some("x")).unwrap_err().code(), tonic::Code::InvalidArgument);
        assert!(fence.admit(3).is_ok() && fence.admit(2).is_err(), "registration answers raise it too");
    }
}
