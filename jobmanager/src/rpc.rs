//! The jobmanager's gRPC side: the service taskmanagers call (registration, heartbeats, task
//! states, plugin downloads) and the gateway through which it calls each taskmanager.

use crate::artifacts::PluginStore;
use crate::error::Error;
use crate::jobmanager::JobManager;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tonic::codegen::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tracing::info;
use weir_proto::control::v1 as pb;
use weir_proto::control::v1::job_manager_service_server::{JobManagerService, JobManagerServiceServer};
use weir_proto::control::v1::task_manager_service_client::TaskManagerServiceClient;
use weir_runtime::{
    BoxFuture, GatewayError, GatewayErrorKind, GatewayResult, JobArtifact, JobId, TaskDeployment, TaskEventSink,
    TaskManagerGateway, convert,
};

/// Bytes per plugin chunk streamed to taskmanagers.
const PLUGIN_CHUNK: usize = 1 << 20;

/// Maps a jobmanager error to a gRPC status, keeping its message.
fn status(error: &Error) -> Status {
    let message = error.to_string();
    match error.status_code() {
        400 => Status::invalid_argument(message),
        404 => Status::not_found(message),
        409 => Status::failed_precondition(message),
        503 => Status::unavailable(message),
        _ => Status::internal(message),
    }
}

/// The service taskmanagers call.
pub struct JobManagerRpc {
    jobmanager: JobManager,
    events: Arc<dyn TaskEventSink>,
    plugins: Arc<PluginStore>,
    jobmanager_id: String,
    heartbeat_interval: Duration,
    /// The leader epoch stamped on calls to taskmanagers (0 without high availability).
    leader_epoch: u64,
}

impl std::fmt::Debug for JobManagerRpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobManagerRpc").field("jobmanager_id", &self.jobmanager_id).finish_non_exhaustive()
    }
}

impl JobManagerRpc {
    /// The service of `jobmanager`, serving plugins from `plugins`; taskmanagers send heartbeats
    /// every `heartbeat_interval`.
    pub fn new(jobmanager: JobManager, plugins: Arc<PluginStore>, heartbeat_interval: Duration) -> Self {
        let events = jobmanager.event_sink();
        let jobmanager_id = format!("jobmanager-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        Self { jobmanager, events, plugins, jobmanager_id, heartbeat_interval, leader_epoch: 0 }
    }

    /// Stamps `epoch` (this jobmanager's leadership) on every call to taskmanagers.
    #[must_use]
    pub fn with_leader_epoch(mut self, epoch: u64) -> Self {
        self.leader_epoch = epoch;
        self
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> JobManagerServiceServer<Self> {
        JobManagerServiceServer::new(self).max_decoding_message_size(64 << 20)
    }
}

#[tonic::async_trait]
impl JobManagerService for JobManagerRpc {
    async fn register_task_manager(
        &self,
        request: Request<pb::RegisterTaskManagerRequest>,
    ) -> Result<Response<pb::RegisterTaskManagerResponse>, Status> {
        let r = request.into_inner();
        if r.taskmanager_id.is_empty() {
            return Err(Status::invalid_argument("taskmanager_id is empty"));
        }
        if r.slots == 0 {
            return Err(Status::invalid_argument("a taskmanager must offer at least one slot"));
        }
        let version = env!("CARGO_PKG_VERSION");
        if r.version != version {
            return Err(Status::failed_precondition(format!(
                "taskmanager version {} cannot join jobmanager version {version}",
                r.version
            )));
        }
        let endpoint = Endpoint::from_shared(r.rpc_address.clone())
            .map_err(|e| Status::invalid_argument(format!("rpc_address {:?}: {e}", r.rpc_address)))?
            .connect_timeout(Duration::from_secs(5))
            // A taskmanager that stops answering with its connection open is dropped within
            // seconds instead of holding calls until the operating system gives up.
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(3))
            .keep_alive_while_idle(true);
        let gateway = RemoteTaskManager {
            id: r.taskmanager_id.clone(),
            slots: r.slots,
            client: TaskManagerServiceClient::with_interceptor(endpoint.connect_lazy(), LeaderEpoch(self.leader_epoch))
                .max_decoding_message_size(64 << 20),
        };
        self.jobmanager.register_taskmanager_instance(Arc::new(gateway), r.data_address, r.instance_id);
        let timeout = self.jobmanager.settings().heartbeat_timeout;
        Ok(Response::new(pb::RegisterTaskManagerResponse {
            jobmanager_id: self.jobmanager_id.clone(),
            heartbeat_interval_ms: self.heartbeat_interval.as_millis() as u64,
            heartbeat_timeout_ms: timeout.as_millis() as u64,
            leader_epoch: self.leader_epoch,
        }))
    }

    async fn deregister_task_manager(
        &self,
        request: Request<pb::DeregisterTaskManagerRequest>,
    ) -> Result<Response<pb::DeregisterTaskManagerResponse>, Status> {
        let r = request.into_inner();
        if r.taskmanager_id.is_empty() || r.instance_id.is_empty() {
            return Err(Status::invalid_argument("taskmanager_id and instance_id must be set"));
        }
        let reason =
            if r.reason.is_empty() { "it shut down".to_owned() } else { format!("it shut down: {}", r.reason) };
        let deregistered = self.jobmanager.deregister_taskmanager(&r.taskmanager_id, &r.instance_id, &reason).await;
        Ok(Response::new(pb::DeregisterTaskManagerResponse { deregistered }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = request.into_inner();
        let metrics: Vec<_> = r
            .tasks
            .into_iter()
            .filter_map(|m| {
                let task = weir_runtime::TaskId::try_from(m.task).ok()?;
                let state = match convert::task_state(m.state) {
                    Ok(state) => state,
                    Err(_) => weir_runtime::TaskExecutionState::Running,
                };
                let permille = |v: u32| v.min(1000) as u16;
                let time = weir_runtime::TimeShares {
                    busy_permille: permille(m.busy_permille),
                    idle_permille: permille(m.idle_permille),
                    backpressured_permille: permille(m.backpressured_permille),
                };
                Some(weir_runtime::HeartbeatTask {
                    task,
                    state,
                    records_in: m.records_in,
                    records_out: m.records_out,
                    time,
                    input_watermark: m.input_watermark,
                })
            })
            .collect();
        let process = r.process.map(|p| weir_runtime::metrics::ProcessStats {
            rss_bytes: p.rss_bytes,
            cpu_time_ms: p.cpu_time_ms,
            threads: p.threads,
        });
        let known = self.jobmanager.heartbeat(&r.taskmanager_id, &metrics, process).await;
        if !known {
            info!(taskmanager = %r.taskmanager_id, "heartbeat from an unknown taskmanager: asking it to register");
        }
        Ok(Response::new(pb::HeartbeatResponse { reregister: !known }))
    }

    async fn update_task_state(
        &self,
        request: Request<pb::UpdateTaskStateRequest>,
    ) -> Result<Response<pb::UpdateTaskStateResponse>, Status> {
        let event = convert::task_event_from_update(request.into_inner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.events.task_event(event);
        Ok(Response::new(pb::UpdateTaskStateResponse {}))
    }

    type FetchPluginStream = Pin<Box<dyn futures::Stream<Item = Result<pb::PluginChunk, Status>> + Send>>;

    async fn fetch_plugin(
        &self,
        request: Request<pb::FetchPluginRequest>,
    ) -> Result<Response<Self::FetchPluginStream>, Status> {
        let sha256 = request.into_inner().sha256;
        let bytes = self.plugins.get(&sha256).await.map_err(|e| status(&e))?;
        let chunks: Vec<Result<pb::PluginChunk, Status>> = (0..bytes.len())
            .step_by(PLUGIN_CHUNK)
            .map(|start| {
                Ok(pb::PluginChunk { data: bytes.slice(start..(start + PLUGIN_CHUNK).min(bytes.len())).to_vec() })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn acknowledge_checkpoint(
        &self,
        request: Request<pb::AcknowledgeCheckpointRequest>,
    ) -> Result<Response<pb::AcknowledgeCheckpointResponse>, Status> {
        let r = request.into_inner();
        let task = weir_runtime::TaskId::try_from(r.task).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let handles = convert::handles_from_pb(r.handles).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let snapshot =
            weir_runtime::checkpoint::TaskSnapshot { handles, alignment_ms: r.alignment_ms, operators: r.operators };
        self.events.checkpoint_acknowledged(task, r.checkpoint_id, snapshot);
        Ok(Response::new(pb::AcknowledgeCheckpointResponse {}))
    }

    async fn decline_checkpoint(
        &self,
        request: Request<pb::DeclineCheckpointRequest>,
    ) -> Result<Response<pb::DeclineCheckpointResponse>, Status> {
        let r = request.into_inner();
        let task = weir_runtime::TaskId::try_from(r.task).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.events.checkpoint_declined(task, r.checkpoint_id, r.reason);
        Ok(Response::new(pb::DeclineCheckpointResponse {}))
    }
}

/// A taskmanager process, reached over gRPC.
struct RemoteTaskManager {
    id: String,
    slots: u32,
    client: TaskManagerServiceClient<InterceptedService<Channel, LeaderEpoch>>,
}

/// The metadata key that carries the jobmanager's leader epoch on every call to a taskmanager.
pub const LEADER_EPOCH_HEADER: &str = "weir-leader-epoch";

/// Stamps the jobmanager's leader epoch (the fencing token of high availability) on a call.
#[derive(Debug, Clone, Copy)]
pub struct LeaderEpoch(pub u64);

impl tonic::service::Interceptor for LeaderEpoch {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert(LEADER_EPOCH_HEADER, tonic::metadata::MetadataValue::from(self.0));
        Ok(request)
    }
}

/// The gateway error of a failed call: no answer is `Unreachable`; a refusal (the taskmanager
/// does not know the job or attempt, or the request is invalid) is `Refused`.
fn rpc_error(status: Status) -> GatewayError {
    let kind = match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            GatewayErrorKind::Unreachable
        }
        tonic::Code::FailedPrecondition
        | tonic::Code::InvalidArgument
        | tonic::Code::NotFound
        | tonic::Code::AlreadyExists
        | tonic::Code::ResourceExhausted => GatewayErrorKind::Refused,
        _ => GatewayErrorKind::Failed,
    };
    let message = status.message().split_whitespace().collect::<Vec<_>>().join(" ");
    let message = if kind == GatewayErrorKind::Unreachable { format!("unreachable: {message}") } else { message };
    GatewayError::new(kind, message)
}

impl RemoteTaskManager {
    fn request<T>(message: T, timeout: Duration) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(timeout);
        request
    }
}

impl TaskManagerGateway for RemoteTaskManager {
    fn id(&self) -> &str {
        &self.id
    }

    fn slots(&self) -> u32 {
        self.slots
    }

    fn deploy(&self, deployment: TaskDeployment, artifact: JobArtifact) -> BoxFuture<'_, GatewayResult<()>> {
        Box::pin(async move {
            let JobArtifact::Stored { sha256, .. } = &artifact else {
                return Err(GatewayError::refused(format!(
                    "{artifact:?} cannot run on a remote taskmanager: submit the plugin through the REST API"
                )));
            };
            // Includes fetching the plugin the first time.
            let request = Self::request(convert::deployment_to_request(&deployment, sha256), Duration::from_secs(60));
            self.client.clone().deploy_task(request).await.map(|_| ()).map_err(rpc_error)
        })
    }

    fn cancel_job(&self, job: JobId, attempt: u32) -> BoxFuture<'_, GatewayResult<()>> {
        Box::pin(async move {
            let request =
                Self::request(pb::CancelJobRequest { job_id: job.to_string(), attempt }, Duration::from_secs(10));
            self.client.clone().cancel_job(request).await.map(|_| ()).map_err(rpc_error)
        })
    }

    fn release_job(&self, job: JobId, attempt: u32) -> BoxFuture<'_, GatewayResult<()>> {
        Box::pin(async move {
            let request =
                Self::request(pb::ReleaseJobRequest { job_id: job.to_string(), attempt }, Duration::from_secs(10));
            self.client.clone().release_job(request).await.map(|_| ()).map_err(rpc_error)
        })
    }

    fn trigger_checkpoint(
        &self,
        job: JobId,
        attempt: u32,
        barrier: weir_api::runtime::CheckpointBarrier,
    ) -> BoxFuture<'_, GatewayResult<u32>> {
        Box::pin(async move {
            let request = Self::request(
                pb::TriggerCheckpointRequest {
                    job_id: job.to_string(),
                    attempt,
                    checkpoint_id: barrier.id,
                    timestamp_ms: barrier.timestamp,
                },
                Duration::from_secs(10),
            );
            self.client
                .clone()
                .trigger_checkpoint(request)
                .await
                .map(|r| r.into_inner().triggered_tasks)
                .map_err(rpc_error)
        })
    }

    fn prepare_savepoint(
        &self,
        job: JobId,
        attempt: u32,
        checkpoint: weir_api::runtime::CheckpointId,
        dir: String,
        stop: Option<bool>,
    ) -> BoxFuture<'_, GatewayResult<()>> {
        Box::pin(async move {
            let request = Self::request(
                pb::PrepareSavepointRequest {
                    job_id: job.to_string(),
                    attempt,
                    checkpoint_id: checkpoint,
                    savepoint_dir: dir,
                    stop: stop.is_some(),
                    drain: stop.unwrap_or(false),
                },
                Duration::from_secs(10),
            );
            self.client.clone().prepare_savepoint(request).await.map(|_| ()).map_err(rpc_error)
        })
    }

    fn abort_checkpoint(
        &self,
        job: JobId,
        attempt: u32,
        checkpoint: weir_api::runtime::CheckpointId,
    ) -> BoxFuture<'_, GatewayResult<()>> {
        Box::pin(async move {
            let request = Self::request(
                pb::AbortCheckpointRequest { job_id: job.to_string(), attempt, checkpoint_id: checkpoint },
                Duration::from_secs(10),
            );
            self.client.clone().abort_checkpoint(request).await.map(|_| ()).map_err(rpc_error)
        })
    }

    fn notify_checkpoint_complete(
        &self,
        job: JobId,
        attempt: u32,
        checkpoint: weir_api::runtime::CheckpointId,
    ) -> BoxFuture<'_, GatewayResult<()>> {
        Box::pin(async move {
            let request = Self::request(
                pb::NotifyCheckpointCompleteRequest { job_id: job.to_string(), attempt, checkpoint_id: checkpoint },
                Duration::from_secs(60),
            );
            self.client.clone().notify_checkpoint_complete(request).await.map(|_| ()).map_err(rpc_error)
        })
    }
}
