//! `weir-taskmanager`: a worker process of a Weir cluster.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use weir_taskmanager::process::TaskManagerProcessConfig;

/// The Weir taskmanager: runs the subtasks the jobmanager deploys in its slots.
#[derive(Parser)]
#[command(name = "weir-taskmanager", version)]
struct Args {
    /// TOML configuration file; `WEIR_<KEY>` variables and flags override it.
    #[arg(long, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
    /// The jobmanager's RPC URL, e.g. `http://127.0.0.1:6123` (key `jobmanager_rpc`,
    /// `WEIR_JOBMANAGER_RPC`; the older `--jobmanager` still works, with a warning).
    #[arg(long, alias = "jobmanager", value_name = "URL")]
    jobmanager_rpc: Option<String>,
    /// Task slots to offer.
    #[arg(long)]
    slots: Option<u32>,
    /// This taskmanager's id (default: random).
    #[arg(long)]
    id: Option<String>,
    /// gRPC address, `host:port` (port 0 picks a free port).
    #[arg(long)]
    rpc_addr: Option<String>,
    /// Data-plane address, `host:port` (port 0 picks a free port).
    #[arg(long)]
    data_addr: Option<String>,
    /// Name or IP other processes reach this taskmanager at.
    #[arg(long)]
    advertised_host: Option<String>,
    /// Address of the HTTP endpoint with `/healthz` and `/readyz`, `host:port`.
    #[arg(long)]
    http_addr: Option<String>,
    /// Local directory for the working state of tasks (RocksDB).
    #[arg(long)]
    state_dir: Option<String>,
    /// Memory shared by the RocksDB databases of all tasks (block cache and memtables), MiB.
    #[arg(long, value_name = "MIB")]
    rocksdb_memory_mb: Option<u64>,
    /// A checkpoint storage option, `KEY=VALUE` with object_store's keys (`aws_endpoint`,
    /// `aws_region`, `aws_access_key_id`, `aws_secret_access_key`, `aws_allow_http`,
    /// `aws_virtual_hosted_style_request`); repeatable.
    #[arg(long = "storage-option", value_name = "KEY=VALUE")]
    storage_options: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: container logs and files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Fault injection for tests and soaks (feature `failpoints`, `FAILPOINTS` variable).
    let _faults = weir_runtime::faults::setup();
    let mut config: TaskManagerProcessConfig = match weir_runtime::config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("weir-taskmanager: {e}");
            return ExitCode::from(2);
        }
    };
    let file_text = args.config.as_deref().and_then(|path| std::fs::read_to_string(path).ok());
    let flag_alias = std::env::args().any(|a| a == "--jobmanager" || a.starts_with("--jobmanager="));
    let warnings = weir_taskmanager::process::deprecations(
        file_text.as_deref(),
        |name| std::env::var(name).ok(),
        flag_alias,
        args.jobmanager_rpc.is_some(),
    );
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    if let Some(v) = args.jobmanager_rpc {
        config.jobmanager_rpc = v;
    }
    if let Some(v) = args.slots {
        config.slots = v;
    }
    if let Some(v) = args.id {
        config.id = v;
    }
    if let Some(v) = args.rpc_addr {
        config.rpc_addr = v;
    }
    if let Some(v) = args.data_addr {
        config.data_addr = v;
    }
    if let Some(v) = args.advertised_host {
        config.advertised_host = v;
    }
    if let Some(v) = args.http_addr {
        config.http_addr = v;
    }
    if let Some(v) = args.state_dir {
        config.state_dir = v;
    }
    if let Some(v) = args.rocksdb_memory_mb {
        config.rocksdb_memory_mb = v;
    }
    for option in &args.storage_options {
        let Some((key, value)) = option.split_once('=') else {
            eprintln!("weir-taskmanager: --storage-option {option:?} is not KEY=VALUE");
            return ExitCode::from(2);
        };
        config.storage_options.insert(key.trim().to_owned(), value.to_owned());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weir-taskmanager: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let running = match weir_taskmanager::process::start(&config).await {
            Ok(running) => running,
            Err(e) => {
                eprintln!("weir-taskmanager: {e}");
                return ExitCode::from(2);
            }
        };
        let http = running.http_addr.map(|a| format!(" http=http://{a}")).unwrap_or_default();
        println!(
            "weir-taskmanager id={} rpc=http://{} data={}{http}",
            running.taskmanager.id(),
            running.rpc_addr,
            running.data_addr
        );
        shutdown_signal().await;
        // Kubernetes sends SIGTERM before it stops a pod: leave the cluster so that the
        // jobmanager fails the tasks here over at once.
        tracing::info!("shutting down: leaving the cluster");
        running.shut_down("the taskmanager is shutting down", Duration::from_secs(3)).await;
        ExitCode::SUCCESS
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
