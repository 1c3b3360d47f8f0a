//! `weir-jobmanager`: the coordinator process of a Weir cluster.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use weir_jobmanager::config::JobManagerConfig;

/// The Weir jobmanager: schedules jobs onto taskmanagers, serves the REST API and the RPC service.
#[derive(Parser)]
#[command(name = "weir-jobmanager", version)]
struct Args {
    /// TOML configuration file (keys as in ARCHITECTURE.md); `WEIR_<KEY>` variables and flags override it.
    #[arg(long, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
    /// REST API address, `host:port` (port 0 picks a free port).
    #[arg(long)]
    rest_addr: Option<String>,
    /// gRPC address for taskmanagers, `host:port` (port 0 picks a free port).
    #[arg(long)]
    rpc_addr: Option<String>,
    /// Storage URL for uploaded plugins, e.g. `file:///var/lib/weir`.
    #[arg(long)]
    storage: Option<String>,
    /// Heartbeat timeout in ms after which a taskmanager is lost.
    #[arg(long)]
    heartbeat_timeout_ms: Option<u64>,
    /// How long a job waits for slots, in ms.
    #[arg(long)]
    slot_request_timeout_ms: Option<u64>,
    /// Restart strategy: none, fixed-delay, exponential-backoff or failure-rate.
    #[arg(long)]
    restart_strategy: Option<String>,
    /// Restarts of a failed job (fixed delay, exponential backoff; 0 disables restarts), or
    /// failures tolerated per interval (failure rate).
    #[arg(long)]
    restart_attempts: Option<u32>,
    /// Pause before a restart, in ms (the first one for exponential backoff).
    #[arg(long)]
    restart_delay_ms: Option<u64>,
    /// A checkpoint storage option, `KEY=VALUE` with object_store's keys (`aws_endpoint`,
    /// `aws_region`, `aws_access_key_id`, `aws_secret_access_key`, `aws_allow_http`,
    /// `aws_virtual_hosted_style_request`); repeatable.
    #[arg(long = "storage-option", value_name = "KEY=VALUE")]
    storage_options: Vec<String>,
    /// Default directory of savepoints whose request names none (a storage URL, e.g.
    /// `s3://bucket/savepoints`).
    #[arg(long)]
    savepoint_dir: Option<String>,
    /// High availability: stand by until this jobmanager wins the leader election on the
    /// storage, then resume the recorded jobs and serve; exit when the leadership is lost.
    #[arg(long)]
    ha: bool,
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
    let mut config: JobManagerConfig = match weir_runtime::config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("weir-jobmanager: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(v) = args.rest_addr {
        config.rest_addr = v;
    }
    if let Some(v) = args.rpc_addr {
        config.rpc_addr = v;
    }
    if let Some(v) = args.storage {
        config.storage = v;
    }
    if let Some(v) = args.heartbeat_timeout_ms {
        config.heartbeat_timeout_ms = v;
    }
    if let Some(v) = args.slot_request_timeout_ms {
        config.slot_request_timeout_ms = v;
    }
    if let Some(v) = args.restart_strategy {
        config.restart_strategy = v;
    }
    if let Some(v) = args.restart_attempts {
        config.restart_attempts = v;
    }
    for option in &args.storage_options {
        let Some((key, value)) = option.split_once('=') else {
            eprintln!("weir-jobmanager: --storage-option {option:?} is not KEY=VALUE");
            return ExitCode::from(2);
        };
        config.storage_options.insert(key.trim().to_owned(), value.to_owned());
    }
    if let Some(v) = args.restart_delay_ms {
        config.restart_delay_ms = v;
    }
    if let Some(v) = args.savepoint_dir {
        config.savepoint_dir = v;
    }
    if args.ha {
        config.high_availability = true;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weir-jobmanager: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        if config.high_availability {
            return run_ha(&config).await;
        }
        let running = match weir_jobmanager::server::start(&config).await {
            Ok(running) => running,
            Err(e) => {
                eprintln!("weir-jobmanager: {e}");
                return ExitCode::from(2);
            }
        };
        // One machine-readable line, for scripts and tests that pick port 0.
        println!("weir-jobmanager rest=http://{} rpc=http://{}", running.rest_addr, running.rpc_addr);
        shutdown_signal().await;
        tracing::info!("shutting down");
        ExitCode::SUCCESS
    })
}

/// With high availability: stand by, lead, and exit (1) when the leadership is lost, so that a
/// supervisor (Kubernetes) starts the process again as a standby.
async fn run_ha(config: &JobManagerConfig) -> ExitCode {
    let on_bound = |rest, rpc| {
        println!("weir-jobmanager rest=http://{rest} rpc=http://{rpc}");
    };
    let leading = tokio::select! {
        leading = weir_jobmanager::server::start_ha(config, on_bound) => match leading {
            Ok(leading) => leading,
            Err(e) => {
                eprintln!("weir-jobmanager: {e}");
                return ExitCode::from(2);
            }
        },
        () = shutdown_signal() => {
            tracing::info!("shutting down (standing by)");
            return ExitCode::SUCCESS;
        }
    };
    tokio::select! {
        lost = leading.lost => {
            let reason = lost.map_or_else(|e| format!("the lease task failed: {e}"), |lost| lost.to_string());
            eprintln!("weir-jobmanager: leadership of epoch {} lost: {reason}; exiting", leading.leadership.epoch());
            ExitCode::from(1)
        }
        () = shutdown_signal() => {
            // Kubernetes sends SIGTERM before it stops a pod: stop acting and let a standby
            // take over now rather than after a whole lease.
            tracing::info!(epoch = leading.leadership.epoch(), "shutting down: handing the leadership over");
            leading.leadership.hand_over(std::time::Duration::from_secs(5)).await;
            ExitCode::SUCCESS
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
