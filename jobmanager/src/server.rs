//! The `weir-jobmanager` process: the jobmanager component with its REST API and gRPC service.

use crate::artifacts::PluginStore;
use crate::config::JobManagerConfig;
use crate::ha::{LeaderElection, LeaderInfo, Leadership, LeadershipLost};
use crate::jobmanager::JobManager;
use crate::jobstore::JobStore;
use crate::rest::{RestState, router};
use crate::rpc::JobManagerRpc;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{error, info};

/// Why the process could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An address could not be bound.
    #[error("cannot listen on {what} address {address}: {source}")]
    Bind {
        /// `REST` or `RPC`.
        what: &'static str,
        /// The configured address.
        address: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The storage could not be opened, or the jobs recorded in it could not be listed.
    #[error(transparent)]
    Storage(#[from] crate::Error),
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// A started jobmanager process.
#[derive(Debug)]
pub struct RunningJobManager {
    /// The jobmanager component.
    pub jobmanager: JobManager,
    /// Where the REST API listens.
    pub rest_addr: SocketAddr,
    /// Where the gRPC service listens.
    pub rpc_addr: SocketAddr,
}

/// The process's listening sockets, bound before anything else so that their addresses are
/// known (and printed) at once.
struct Listeners {
    rest: std::net::TcpListener,
    rpc: std::net::TcpListener,
    rest_addr: SocketAddr,
    rpc_addr: SocketAddr,
}

/// Binds the REST and RPC addresses.
async fn bind(config: &JobManagerConfig) -> Result<Listeners, StartError> {
    let bind_one = |what: &'static str, address: &str| {
        let address = address.to_owned();
        async move {
            let error = |source| StartError::Bind { what, address: address.clone(), source };
            let listener = TcpListener::bind(&address).await.map_err(error)?;
            let local = listener.local_addr().map_err(error)?;
            Ok::<_, StartError>((listener.into_std().map_err(error)?, local))
        }
    };
    let (rpc, rpc_addr) = bind_one("RPC", &config.rpc_addr).await?;
    let (rest, rest_addr) = bind_one("REST", &config.rest_addr).await?;
    Ok(Listeners { rest, rpc, rest_addr, rpc_addr })
}

/// A tokio listener on `listener` (switched to non-blocking).
fn tokio_listener(
    listener: std::net::TcpListener,
    what: &'static str,
    addr: SocketAddr,
) -> Result<TcpListener, StartError> {
    let error = |source| StartError::Bind { what, address: addr.to_string(), source };
    listener.set_nonblocking(true).map_err(error)?;
    TcpListener::from_std(listener).map_err(error)
}

/// Starts the REST API and the gRPC service on the current tokio runtime.
///
/// # Errors
/// An address that cannot be bound, or storage that cannot be opened.
pub async fn start(config: &JobManagerConfig) -> Result<RunningJobManager, StartError> {
    let listeners = bind(config).await?;
    serve(config, listeners, 0).await
}

/// A jobmanager started with high availability, leading.
pub struct LeadingJobManager {
    /// The running jobmanager.
    pub running: RunningJobManager,
    /// Its leadership (the epoch is the fencing token).
    pub leadership: Leadership,
    /// Ends when the leadership is lost, saying why: the process must then stop.
    pub lost: tokio::task::JoinHandle<LeadershipLost>,
}

/// Starts a jobmanager with high availability: binds its addresses (`on_bound` learns them at
/// once), stands by (its REST address answers `/healthz` with 200 and everything else with
/// 503, naming the leader) until it wins the leader election on the storage, then resumes
/// every job recorded there, as a restarted jobmanager does, and serves.
///
/// # Errors
/// An address that cannot be bound, storage that cannot be opened, or lease timing that cannot
/// work.
pub async fn start_ha(
    config: &JobManagerConfig,
    on_bound: impl FnOnce(SocketAddr, SocketAddr),
) -> Result<LeadingJobManager, StartError> {
    let timing = config.lease_timing().map_err(StartError::Config)?;
    let storage_config =
        weir_runtime::storage::StorageConfig { url: config.storage.clone(), options: config.storage_options.clone() };
    let storage = weir_runtime::storage::Storage::open(&storage_config)
        .map_err(|e| StartError::Config(format!("storage {}: {e}", config.storage)))?;
    let listeners = bind(config).await?;
    on_bound(listeners.rest_addr, listeners.rpc_addr);
    let advertised = |bound: SocketAddr| match config.advertised_host.trim() {
        "" => bound.to_string(),
        host => format!("{host}:{}", bound.port()),
    };
    let candidate = LeaderInfo {
        id: format!("jobmanager-{}", uuid::Uuid::new_v4().simple()),
        rest_url: format!("http://{}", advertised(listeners.rest_addr)),
        rpc_url: format!("http://{}", advertised(listeners.rpc_addr)),
    };
    let election = LeaderElection::new(storage, candidate.clone(), timing);
    // Standing by: both addresses are served, as the leader's proxy, by clones of their sockets.
    let clone = |listener: &std::net::TcpListener, what: &'static str, addr: SocketAddr| {
        let socket =
            listener.try_clone().map_err(|source| StartError::Bind { what, address: addr.to_string(), source })?;
        tokio_listener(socket, what, addr)
    };
    let standby = crate::standby::Standby::start(
        clone(&listeners.rest, "REST", listeners.rest_addr)?,
        clone(&listeners.rpc, "RPC", listeners.rpc_addr)?,
        election.clone(),
        candidate,
    );
    let leadership = election.acquire().await;
    // Heartbeats start at once: recovering the jobs may take longer than a lease.
    let lost = tokio::spawn({
        let leadership = leadership.clone();
        async move { leadership.hold().await }
    });
    standby.stop().await;
    // From now on every storage this process opens refuses changes unless it still leads.
    weir_runtime::storage::fence_process_writes(
        leadership.epoch(),
        Arc::new({
            let leadership = leadership.clone();
            move || leadership.is_current()
        }),
    );
    // Recovering writes job records: only once the first heartbeat made the leadership current.
    let deadline = std::time::Instant::now() + timing.renew_deadline;
    while !leadership.is_current() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let running = serve(config, listeners, leadership.epoch()).await?;
    info!(epoch = leadership.epoch(), "leading: jobs recorded in the storage resumed");
    Ok(LeadingJobManager { running, leadership, lost })
}

/// Serves on `listeners`: resumes the jobs recorded in the storage, then the REST API and the
/// gRPC service; calls to taskmanagers carry `leader_epoch`.
async fn serve(
    config: &JobManagerConfig,
    listeners: Listeners,
    leader_epoch: u64,
) -> Result<RunningJobManager, StartError> {
    let settings = config.settings().map_err(StartError::Config)?;
    let storage =
        weir_runtime::storage::StorageConfig { url: config.storage.clone(), options: config.storage_options.clone() };
    let plugins = Arc::new(PluginStore::new(&storage, config.plugin_cache_dir.clone())?);
    let records = weir_runtime::storage::Storage::open(&storage)
        .map_err(|e| StartError::Config(format!("storage {}: {e}", config.storage)))?;
    let Listeners { rest, rpc, rest_addr, rpc_addr } = listeners;
    let rpc_listener = tokio_listener(rpc, "RPC", rpc_addr)?;
    let rest_listener = tokio_listener(rest, "REST", rest_addr)?;

    // Jobs an earlier jobmanager on this storage ran and that have not ended resume now.
    let jobmanager = JobManager::recover(settings, storage, JobStore::new(records), &plugins).await?;

    let service = JobManagerRpc::new(
        jobmanager.clone(),
        plugins.clone(),
        Duration::from_millis(config.heartbeat_interval_ms.max(1)),
    )
    .with_leader_epoch(leader_epoch)
    .into_server();
    let incoming = tonic::transport::server::TcpIncoming::from(rpc_listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(10)));
    tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await {
            error!("the RPC server stopped: {e}");
        }
    });
    let max_upload_bytes = usize::try_from(config.max_upload_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
    let app = router(RestState { jobmanager: jobmanager.clone(), plugins, max_upload_bytes, config: config.entries() });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(rest_listener, app).await {
            error!("the REST server stopped: {e}");
        }
    });
    info!(%rest_addr, %rpc_addr, storage = %config.storage, "jobmanager started");
    Ok(RunningJobManager { jobmanager, rest_addr, rpc_addr })
}
