//! The `weir-taskmanager` process: a taskmanager with its gRPC service and data server,
//! registered with a jobmanager.

use crate::http::Readiness;
use crate::rpc::{PluginCache, Registration, RemoteEventSink, TaskManagerRpc, report_events, stay_registered};
use crate::taskmanager::{TaskManager, TaskManagerConfig};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::Endpoint;
use tracing::{error, info};
use weir_proto::control::v1 as pb;
use weir_proto::control::v1::job_manager_service_client::JobManagerServiceClient;

/// The jobmanager's RPC URL unless told otherwise.
pub const DEFAULT_JOBMANAGER_RPC: &str = "http://127.0.0.1:6123";

/// Configuration of `weir-taskmanager`: defaults, then a TOML file (`--config`), then
/// `WEIR_<KEY>` environment variables, then flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskManagerProcessConfig {
    /// The jobmanager's RPC URL (`WEIR_JOBMANAGER_RPC`, `--jobmanager-rpc`). Default
    /// `http://127.0.0.1:6123`. The older key `jobmanager` is still read from a file, with a
    /// warning ([`deprecations`]); `WEIR_JOBMANAGER` is not read: it is the `weir` CLI's REST URL.
    #[serde(alias = "jobmanager")]
    pub jobmanager_rpc: String,
    /// This taskmanager's id; empty picks `taskmanager-<random>`.
    pub id: String,
    /// Task slots offered. Default 1.
    pub slots: u32,
    /// Address of this taskmanager's gRPC service (`host:port`; port 0 picks one). Default `127.0.0.1:0`.
    pub rpc_addr: String,
    /// Address of the data server other taskmanagers read channels from. Default `127.0.0.1:0`.
    pub data_addr: String,
    /// Host name or IP other processes reach this one at; empty uses the bound IP (which must
    /// then not be a wildcard such as 0.0.0.0).
    pub advertised_host: String,
    /// Address of the HTTP endpoint with `/healthz` and `/readyz` (Kubernetes probes); empty:
    /// none. Default empty.
    pub http_addr: String,
    /// Directory for fetched job plugins. Default `<temp dir>/weir/taskmanager-<id>-plugins`.
    pub plugin_dir: String,
    /// Capacity of each channel between tasks, in batches of up to ~32 KiB. Default 16.
    pub channel_capacity: usize,
    /// Options of the checkpoint storage, with `object_store`'s keys (`aws_endpoint`,
    /// `aws_region`, `aws_access_key_id`, `aws_secret_access_key`, `aws_allow_http`,
    /// `aws_virtual_hosted_style_request`), on top of the standard `AWS_*` environment variables.
    /// Default none.
    pub storage_options: std::collections::BTreeMap<String, String>,
    /// Local directory for tasks' working state (RocksDB). Default
    /// `<temp dir>/weir/<id>-state`.
    pub state_dir: String,
    /// Memory shared by the RocksDB databases of all tasks (block cache and memtables together),
    /// MiB. At least 16; default 256.
    pub rocksdb_memory_mb: u64,
}

impl Default for TaskManagerProcessConfig {
    fn default() -> Self {
        Self {
            jobmanager_rpc: DEFAULT_JOBMANAGER_RPC.into(),
            id: String::new(),
            slots: 1,
            rpc_addr: "127.0.0.1:0".into(),
            data_addr: "127.0.0.1:0".into(),
            advertised_host: String::new(),
            http_addr: String::new(),
            plugin_dir: String::new(),
            channel_capacity: 16,
            storage_options: std::collections::BTreeMap::new(),
            state_dir: String::new(),
            rocksdb_memory_mb: (crate::taskmanager::DEFAULT_ROCKSDB_MEMORY_BYTES >> 20) as u64,
        }
    }
}

/// Why the process could not start (each the user's configuration, or the machine).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An address could not be bound.
    #[error("cannot listen on {what} address {address}: {source}")]
    Bind {
        /// `RPC` or `data`.
        what: &'static str,
        /// The configured address.
        address: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// A started taskmanager process.
#[derive(Debug)]
pub struct RunningTaskManager {
    /// The taskmanager component.
    pub taskmanager: TaskManager,
    /// Where its gRPC service listens.
    pub rpc_addr: SocketAddr,
    /// Where its data server listens.
    pub data_addr: SocketAddr,
    /// Where its HTTP endpoint listens (`None`: not configured).
    pub http_addr: Option<SocketAddr>,
    readiness: Readiness,
    registration: tokio::task::JoinHandle<()>,
    deregistration: pb::DeregisterTaskManagerRequest,
    client: JobManagerServiceClient<tonic::transport::Channel>,
}

impl RunningTaskManager {
    /// Leaves the cluster (on SIGTERM): stops registering and sending heartbeats, tells the
    /// jobmanager (which declares this taskmanager lost at once, so its jobs fail over without
    /// waiting for the heartbeat timeout), then cancels every task. Returns whether the
    /// jobmanager ended the registration; an unreachable jobmanager (within `timeout`) finds
    /// out by the heartbeat timeout instead.
    pub async fn shut_down(self, reason: &str, timeout: Duration) -> bool {
        self.readiness.set_stopping();
        self.registration.abort();
        let id = self.taskmanager.id().to_owned();
        let mut request = tonic::Request::new(pb::DeregisterTaskManagerRequest {
            reason: reason.to_owned(),
            ..self.deregistration.clone()
        });
        request.set_timeout(timeout);
        let deregistered = match tokio::time::timeout(timeout, self.client.clone().deregister_task_manager(request))
            .await
        {
            Ok(Ok(response)) => response.into_inner().deregistered,
            Ok(Err(status)) => {
                tracing::warn!(taskmanager = %id, "cannot deregister from the jobmanager: {}", status.message());
                false
            }
            Err(_) => {
                tracing::warn!(taskmanager = %id, "cannot deregister from the jobmanager: no answer within {timeout:?}");
                false
            }
        };
        info!(taskmanager = %id, deregistered, "left the cluster: cancelling tasks");
        self.taskmanager.cancel_all(reason);
        deregistered
    }
}

fn advertised(host: &str, bound: SocketAddr, what: &str) -> Result<String, StartError> {
    if !host.is_empty() {
        return Ok(format!("{host}:{}", bound.port()));
    }
    if bound.ip().is_unspecified() {
        return Err(StartError::Config(format!(
            "the {what} address {bound} is a wildcard: set advertised_host (--advertised-host) to the name other processes reach this one at"
        )));
    }
    Ok(bound.to_string())
}

/// Starts the taskmanager, its gRPC service and data server on the current tokio runtime, and
/// registers it with the jobmanager in the background (retrying until it is reachable).
///
/// # Errors
/// Invalid configuration or an address that cannot be bound.
pub async fn start(config: &TaskManagerProcessConfig) -> Result<RunningTaskManager, StartError> {
    if config.slots == 0 {
        return Err(StartError::Config("slots must be at least 1".into()));
    }
    if config.rocksdb_memory_mb < 16 {
        return Err(StartError::Config(format!(
            "rocksdb_memory_mb must be at least 16 (MiB), not {}",
            config.rocksdb_memory_mb
        )));
    }
    let endpoint = Endpoint::from_shared(config.jobmanager_rpc.clone())
        .map_err(|e| StartError::Config(format!("jobmanager URL {:?}: {e}", config.jobmanager_rpc)))?
        .connect_timeout(Duration::from_secs(3))
        // A jobmanager that stops answering (paused, partitioned) while its connection stays
        // open is dropped within seconds, so that the next call connects anew, through a
        // Service to whichever jobmanager leads now; without pings the connection would be
        // reused until the operating system gives up on it.
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true);
    let client = JobManagerServiceClient::new(endpoint.connect_lazy()).max_decoding_message_size(64 << 20);
    let id = if config.id.is_empty() {
        format!("taskmanager-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
    } else {
        config.id.clone()
    };
    let plugin_dir = if config.plugin_dir.is_empty() {
        std::env::temp_dir().join("weir").join(format!("{id}-plugins"))
    } else {
        PathBuf::from(&config.plugin_dir)
    };

    let (events, pending) = tokio::sync::mpsc::unbounded_channel();
    let tm_config = TaskManagerConfig {
        id: id.clone(),
        slots: config.slots,
        channel_capacity: config.channel_capacity,
        storage_options: config.storage_options.clone(),
        state_dir: if config.state_dir.is_empty() {
            std::env::temp_dir().join("weir").join(format!("{id}-state"))
        } else {
            PathBuf::from(&config.state_dir)
        },
        rocksdb_memory_bytes: usize::try_from(config.rocksdb_memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
    };
    let taskmanager = TaskManager::new(tm_config, Arc::new(RemoteEventSink { events }));

    let data_bind: SocketAddr = tokio::net::lookup_host(&config.data_addr)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| StartError::Config(format!("data_addr {:?} is not a host:port", config.data_addr)))?;
    let data_addr = taskmanager.start_data_server(data_bind).map_err(|source| StartError::Bind {
        what: "data",
        address: config.data_addr.clone(),
        source,
    })?;
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
    let readiness = Readiness::default();
    let http_addr = if config.http_addr.is_empty() {
        None
    } else {
        let listener = TcpListener::bind(&config.http_addr).await.map_err(|source| StartError::Bind {
            what: "HTTP",
            address: config.http_addr.clone(),
            source,
        })?;
        let bound = listener.local_addr().map_err(|source| StartError::Bind {
            what: "HTTP",
            address: config.http_addr.clone(),
            source,
        })?;
        let metrics = Arc::new(crate::metrics::registry(taskmanager.clone()));
        let app = crate::http::router(readiness.clone(), id.clone(), metrics);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                error!("the HTTP endpoint stopped: {e}");
            }
        });
        Some(bound)
    };
    let advertised_rpc = advertised(&config.advertised_host, rpc_addr, "RPC")?;
    let advertised_data = advertised(&config.advertised_host, data_addr, "data")?;

    let fence = crate::rpc::LeaderFence::default();
    let service = TaskManagerRpc {
        taskmanager: taskmanager.clone(),
        plugins: Arc::new(PluginCache::new(plugin_dir, client.clone())),
    }
    .into_server(fence.clone());
    let incoming = tonic::transport::server::TcpIncoming::from(rpc_listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(10)));
    tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await {
            error!("the RPC server stopped: {e}");
        }
    });
    tokio::spawn(report_events(id.clone(), client.clone(), pending, Duration::from_secs(30)));
    // This start of the process: a deregistration ends this registration and no later one.
    let instance_id = uuid::Uuid::new_v4().simple().to_string();
    let registration = Registration {
        request: pb::RegisterTaskManagerRequest {
            taskmanager_id: id.clone(),
            slots: config.slots,
            data_address: advertised_data,
            rpc_address: format!("http://{advertised_rpc}"),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            instance_id: instance_id.clone(),
        },
        jobmanager_url: config.jobmanager_rpc.clone(),
        fence,
        readiness: readiness.clone(),
    };
    let deregistration =
        pb::DeregisterTaskManagerRequest { taskmanager_id: id.clone(), instance_id, reason: String::new() };
    let registration = tokio::spawn(stay_registered(registration, client.clone(), taskmanager.clone()));
    info!(taskmanager = %id, %rpc_addr, %data_addr, http_addr = ?http_addr, slots = config.slots, jobmanager = %config.jobmanager_rpc, "taskmanager started");
    Ok(RunningTaskManager {
        taskmanager,
        rpc_addr,
        data_addr,
        http_addr,
        readiness,
        registration,
        deregistration,
        client,
    })
}

/// Warnings about names the taskmanager's configuration no longer takes, one line each: the key
/// `jobmanager` in the file `file_text` (now `jobmanager_rpc`), the flag `--jobmanager` (now
/// `--jobmanager-rpc`; `flag_alias` whether it was used), and `WEIR_JOBMANAGER` in the
/// environment `env`, which is the `weir` CLI's REST URL and no longer the taskmanager's RPC URL:
/// it is mentioned when the RPC URL is set nowhere (`rpc_flag` whether a flag set it), as the
/// taskmanager then tries the default instead.
pub fn deprecations(
    file_text: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
    flag_alias: bool,
    rpc_flag: bool,
) -> Vec<String> {
    let file_keys: toml::Table = file_text.and_then(|text| text.parse().ok()).unwrap_or_default();
    let mut warnings = Vec::new();
    if file_keys.contains_key("jobmanager") {
        warnings.push(
            "the configuration key `jobmanager` is deprecated: name the jobmanager's RPC URL `jobmanager_rpc` \
             (WEIR_JOBMANAGER_RPC, --jobmanager-rpc)"
                .to_owned(),
        );
    }
    if flag_alias {
        warnings
            .push("the flag --jobmanager is deprecated: use --jobmanager-rpc (the jobmanager's RPC URL)".to_owned());
    }
    let set_somewhere = rpc_flag
        || env("WEIR_JOBMANAGER_RPC").is_some()
        || file_keys.contains_key("jobmanager_rpc")
        || file_keys.contains_key("jobmanager");
    if !set_somewhere && let Some(rest) = env("WEIR_JOBMANAGER") {
        warnings.push(format!(
            "WEIR_JOBMANAGER ({rest}) is the weir CLI's REST URL and is not read by the taskmanager; the jobmanager's \
             RPC URL is jobmanager_rpc (WEIR_JOBMANAGER_RPC, --jobmanager-rpc), here the default {DEFAULT_JOBMANAGER_RPC}"
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_rpc_url_is_jobmanager_rpc_and_weir_jobmanager_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("taskmanager.toml");
        // The CLI's variable does not reach the taskmanager.
        let config: TaskManagerProcessConfig =
            weir_runtime::config::load_with_env(None, env(&[("WEIR_JOBMANAGER", "http://jm:8081")])).unwrap();
        assert_eq!(config.jobmanager_rpc, DEFAULT_JOBMANAGER_RPC);
        // Its own does.
        let config: TaskManagerProcessConfig =
            weir_runtime::config::load_with_env(None, env(&[("WEIR_JOBMANAGER_RPC", "http://jm:6123")])).unwrap();
        assert_eq!(config.jobmanager_rpc, "http://jm:6123");
        // The new key and the old one in a file.
        for key in ["jobmanager_rpc", "jobmanager"] {
            std::fs::write(&file, format!("{key} = \"http://jm:6123\"\nslots = 2\n")).unwrap();
            let config: TaskManagerProcessConfig = weir_runtime::config::load_with_env(Some(&file), env(&[])).unwrap();
            assert_eq!((config.jobmanager_rpc.as_str(), config.slots), ("http://jm:6123", 2), "{key}");
            // The environment overrides the old key too.
            let config: TaskManagerProcessConfig =
                weir_runtime::config::load_with_env(Some(&file), env(&[("WEIR_JOBMANAGER_RPC", "http://other:6123")]))
                    .unwrap();
            assert_eq!(config.jobmanager_rpc, "http://other:6123", "{key}");
        }
        // Both at once is a mistake that names the key.
        std::fs::write(&file, "jobmanager_rpc = \"http://a:6123\"\njobmanager = \"http://b:6123\"\n").unwrap();
        let err = weir_runtime::config::load_with_env::<TaskManagerProcessConfig>(Some(&file), env(&[])).unwrap_err();
        assert!(err.to_string().contains("jobmanager_rpc"), "{err}");
    }

    #[test]
    fn old_names_get_one_line_warnings() {
        let none = env(&[]);
        assert!(deprecations(Some("jobmanager_rpc = \"http://jm:6123\""), &none, false, false).is_empty());
        let warnings = deprecations(Some("jobmanager = \"http://jm:6123\""), &none, false, false);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("`jobmanager` is deprecated") && warnings[0].contains("jobmanager_rpc"));
        let warnings = deprecations(None, &none, true, true);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("--jobmanager-rpc"), "{warnings:?}");
        // WEIR_JOBMANAGER alone: the taskmanager says why it does not use it.
        let cli = env(&[("WEIR_JOBMANAGER", "http://jm:8081")]);
        let warnings = deprecations(None, &cli, false, false);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("WEIR_JOBMANAGER (http://jm:8081) is the weir CLI's REST URL"), "{warnings:?}");
        assert!(warnings.iter().all(|w| !w.contains('\n')));
        // ... but not when the RPC URL is set anyway.
        assert!(deprecations(None, &cli, false, true).is_empty());
        assert!(deprecations(Some("jobmanager_rpc = \"http://jm:6123\""), &cli, false, false).is_empty());
        let both = env(&[("WEIR_JOBMANAGER", "http://jm:8081"), ("WEIR_JOBMANAGER_RPC", "http://jm:6123")]);
        assert!(deprecations(None, &both, false, false).is_empty());
    }
}
