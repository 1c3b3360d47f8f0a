//! The `weir-jobmanager` process: the jobmanager component with its REST API and gRPC service.

use crate::artifacts::PluginStore;
use crate::config::JobManagerConfig;
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

/// Starts the REST API and the gRPC service on the current tokio runtime.
///
/// # Errors
/// An address that cannot be bound, or storage that cannot be opened.
pub async fn start(config: &JobManagerConfig) -> Result<RunningJobManager, StartError> {
    let settings = config.settings().map_err(StartError::Config)?;
    let plugins = Arc::new(PluginStore::new(&config.storage, config.plugin_cache_dir.clone())?);
    let storage =
        weir_runtime::storage::StorageConfig { url: config.storage.clone(), options: config.storage_options.clone() };
    let records = weir_runtime::storage::Storage::open(&storage)
        .map_err(|e| StartError::Config(format!("storage {}: {e}", config.storage)))?;

    let rpc_listener = TcpListener::bind(&config.rpc_addr).await.map_err(|source| StartError::Bind {
        what: "RPC",
        address: config.rpc_addr.clone(),
        source,
    })?;
    let rpc_addr = rpc_listener.local_addr().map_err(|source| StartError::Bind {
        what: "RPC",
        address: config.rpc_addr.clone(),
        source,
    })?;
    let rest_listener = TcpListener::bind(&config.rest_addr).await.map_err(|source| StartError::Bind {
        what: "REST",
        address: config.rest_addr.clone(),
        source,
    })?;
    let rest_addr = rest_listener.local_addr().map_err(|source| StartError::Bind {
        what: "REST",
        address: config.rest_addr.clone(),
        source,
    })?;

    // Jobs an earlier jobmanager on this storage ran and that have not ended resume now.
    let jobmanager = JobManager::recover(settings, storage, JobStore::new(records), &plugins).await?;

    let service = JobManagerRpc::new(
        jobmanager.clone(),
        plugins.clone(),
        Duration::from_millis(config.heartbeat_interval_ms.max(1)),
    )
    .into_server();
    let incoming = tonic::transport::server::TcpIncoming::from(rpc_listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(10)));
    tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await {
            error!("the RPC server stopped: {e}");
        }
    });
    let app = router(RestState { jobmanager: jobmanager.clone(), plugins });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(rest_listener, app).await {
            error!("the REST server stopped: {e}");
        }
    });
    info!(%rest_addr, %rpc_addr, storage = %config.storage, "jobmanager started");
    Ok(RunningJobManager { jobmanager, rest_addr, rpc_addr })
}
