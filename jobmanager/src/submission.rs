//! Accepting a job: loading its plugin, building and planning its graph, and checking its
//! checkpoint storage, before anything about it is recorded or runs.

use crate::checkpoint::{CheckpointConfig, CheckpointSettings};
use crate::error::{Error, Result};
use crate::plan::{ExecutionPlan, plan};
use std::time::Duration;
use weir_runtime::checkpoint::StateBackendKind;
use weir_runtime::storage::{CheckpointLayout, Storage, StorageConfig};
use weir_runtime::{JobArtifact, JobId, LoadedJob};

/// A job to run.
#[derive(Debug, Clone)]
pub struct JobSubmission {
    /// The job's code.
    pub artifact: JobArtifact,
    /// Arguments of its build function.
    pub args: Vec<String>,
    /// Parallelism for operators that set none (the job may override it).
    pub parallelism: u32,
    /// Checkpointing; `None` turns it off.
    pub checkpointing: Option<CheckpointSubmission>,
    /// The keyed state backend of the job's tasks (with or without checkpointing).
    pub state_backend: StateBackendKind,
    /// Start from this savepoint (Flink's `-s`); `None`: from nothing.
    pub savepoint: Option<crate::savepoint_restore::SavepointRestoreSettings>,
    /// The job's restart strategy (Flink's `restart-strategy.*` of the job); `None`: the
    /// jobmanager's.
    pub restart: Option<crate::restart::RestartPolicy>,
}

/// How a submitted job takes checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSubmission {
    /// Timing, retention and failure tolerance.
    pub config: CheckpointConfig,
    /// Where checkpoints go; `None` uses the jobmanager's storage.
    pub storage_url: Option<String>,
}

/// A job whose code loaded and whose graph planned.
#[derive(Debug, Clone)]
pub(crate) struct PlannedJob {
    pub(crate) name: String,
    /// One line per sink saying where it writes.
    pub(crate) sinks: Vec<String>,
    /// What may go wrong with the job as configured, one line each (it runs anyway).
    pub(crate) warnings: Vec<String>,
    pub(crate) plan: ExecutionPlan,
    /// The plan as `GET /jobs/{id}/plan` shows it ([`crate::plan::flink_plan`]).
    pub(crate) plan_json: std::sync::Arc<serde_json::Value>,
}

/// The state of the savepoint a job is submitted with, to try on the job's types.
#[derive(Debug)]
pub(crate) struct SavepointState {
    pub(crate) metadata: weir_runtime::savepoint::SavepointMetadata,
    pub(crate) sample: crate::state_evolution::StateSample,
}

/// Loads the job's code, runs its build function with `args` and plans the graph, off the async
/// workers (the build function is user code and may block). `checkpoint_interval_ms`: the job's
/// checkpoint interval, `None` without checkpointing (for the warnings).
///
/// # Errors
/// A bad plugin, bad job arguments or an invalid job graph (the user's mistakes, 400).
pub(crate) async fn plan_job(
    artifact: JobArtifact,
    args: Vec<String>,
    parallelism: u32,
    checkpoint_interval_ms: Option<u64>,
    savepoint_state: Option<SavepointState>,
) -> Result<PlannedJob> {
    if parallelism == 0 {
        return Err(Error::InvalidRequest("parallelism must be at least 1".into()));
    }
    tokio::task::spawn_blocking(move || -> Result<PlannedJob> {
        let loaded = LoadedJob::load(&artifact)?;
        let graph = loaded.build(&args)?;
        let plan = plan(&graph.descriptor, parallelism)?;
        if let Some(state) = &savepoint_state {
            let nodes = graph.descriptor.nodes.iter().map(|n| (n.uid.clone(), n.id)).collect();
            let check = |node, name: &str, value: &[u8]| {
                loaded.check_state_value(&graph, node, name, value).map_err(|e| e.to_string())
            };
            if let Some((uid, reason)) =
                crate::state_evolution::incompatible_state(&state.sample, &state.metadata, &plan, &nodes, check)
            {
                return Err(Error::InvalidRequest(format!(
                    "the savepoint's state does not restore into the job: operator '{uid}': {reason}"
                )));
            }
        }
        let plan_json = std::sync::Arc::new(crate::plan::flink_plan(&graph.descriptor, &plan, parallelism));
        Ok(PlannedJob {
            plan_json,
            name: graph.descriptor.name.clone(),
            sinks: describe_sinks(&graph.descriptor),
            warnings: warnings(&graph.descriptor, checkpoint_interval_ms),
            plan,
        })
    })
    .await
    .map_err(|e| Error::InvalidJob(format!("the job's build function did not complete: {e}")))?
}

/// Opens the checkpoint storage of a job (`storage_url`, or the jobmanager's `default`).
///
/// # Errors
/// A malformed URL or options (the user's mistake, 400).
pub(crate) fn open_checkpoint_storage(storage_url: Option<&str>, default: &StorageConfig) -> Result<Storage> {
    let config =
        StorageConfig { url: storage_url.unwrap_or(&default.url).to_owned(), options: default.options.clone() };
    Storage::open(&config).map_err(|e| Error::InvalidRequest(format!("checkpoint storage: {e}")))
}

/// The checkpoint settings of a submission whose storage is `storage`, started from the savepoint
/// at `savepoint_path`.
pub(crate) fn checkpoint_settings(
    submission: &CheckpointSubmission,
    backend: StateBackendKind,
    storage: &Storage,
    savepoint_path: Option<&str>,
) -> CheckpointSettings {
    CheckpointSettings {
        config: submission.config.clone(),
        backend,
        storage_url: storage.url().to_owned(),
        savepoint_path: savepoint_path.map(str::to_owned),
    }
}

/// How long the write probe of a job's checkpoint storage may take at submission.
const STORAGE_PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Refuses a submission whose checkpoint storage the jobmanager cannot write to (as Flink, which
/// creates the job's checkpoint directory when the job starts): a wrong URL, bucket or credentials
/// is the user's mistake, better reported now than at the first checkpoint.
///
/// # Errors
/// [`Error::InvalidRequest`] naming the storage and the problem.
pub(crate) async fn check_checkpoint_storage(storage: &Storage, job: JobId) -> Result<()> {
    let job_url = CheckpointLayout::new(storage, job).job_url().to_owned();
    let Err(problem) = probe_writable(storage, &job_url).await else { return Ok(()) };
    Err(Error::InvalidRequest(format!(
        "checkpoint storage {} is not writable: {problem} (check --checkpoint-dir or the jobmanager's \
         --storage, and the storage options and credentials)",
        storage.url()
    )))
}

/// Whether `storage` lets the jobmanager write under `dir_url` (a probe object written and
/// deleted), within the probe's timeout; else why not, in one line.
pub(crate) async fn probe_writable(storage: &Storage, dir_url: &str) -> std::result::Result<(), String> {
    let probe = retry_transient(PROBE_ATTEMPTS, || storage.check_writable(dir_url));
    match tokio::time::timeout(STORAGE_PROBE_TIMEOUT, probe).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", STORAGE_PROBE_TIMEOUT.as_secs())),
    }
}

/// How often the write probe tries before the storage counts as not writable: one failed request
/// (a storage hiccup) must not refuse a job.
const PROBE_ATTEMPTS: u32 = 3;

/// Runs `operation` up to `attempts` times while it fails with a storage error that may pass
/// (`StorageError::Io`; not a configuration error), 200 ms apart, doubling.
async fn retry_transient<F, Fut>(attempts: u32, mut operation: F) -> weir_runtime::storage::StorageResult<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = weir_runtime::storage::StorageResult<()>>,
{
    let mut pause = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match operation().await {
            Err(weir_runtime::storage::StorageError::Io { .. }) if attempt < attempts => {
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// One line per sink saying where it writes.
fn describe_sinks(job: &weir_api::graph::JobDescriptor) -> Vec<String> {
    use weir_api::connectors::SinkDescriptor;
    use weir_api::graph::NodeKind;
    job.nodes
        .iter()
        .filter_map(|node| match &node.kind {
            NodeKind::Sink(SinkDescriptor::TextFiles { directory }) => {
                Some(format!("{}: text files in {directory}", node.name))
            }
            NodeKind::Sink(SinkDescriptor::Stdout) => Some(format!("{}: standard output", node.name)),
            NodeKind::Sink(SinkDescriptor::Blackhole) => Some(format!("{}: discarded (blackhole)", node.name)),
            NodeKind::Sink(SinkDescriptor::Kafka(spec)) => Some(format!(
                "{}: Kafka topic {} at {} ({:?})",
                node.name,
                spec.topic.as_deref().unwrap_or("(per record)"),
                spec.bootstrap_servers,
                spec.delivery
            )),
            _ => None,
        })
        .collect()
}

/// What may go wrong with `job` as configured, one line each: an exactly-once Kafka sink whose
/// transaction timeout is shorter than the checkpoint interval plus a commit, or that runs
/// without checkpoints (and so commits its whole output at the end).
fn warnings(job: &weir_api::graph::JobDescriptor, checkpoint_interval_ms: Option<u64>) -> Vec<String> {
    use weir_api::connectors::SinkDescriptor;
    use weir_api::connectors::kafka::{Delivery, check_transaction_timeout};
    use weir_api::graph::NodeKind;
    let mut warnings = Vec::new();
    for node in &job.nodes {
        let NodeKind::Sink(SinkDescriptor::Kafka(spec)) = &node.kind else { continue };
        if spec.delivery != Delivery::ExactlyOnce {
            continue;
        }
        match checkpoint_interval_ms {
            Some(interval) => {
                if let Some(warning) = check_transaction_timeout(spec.transaction_timeout_ms, interval) {
                    warnings.push(format!("{}: {warning}", node.name));
                }
            }
            None => warnings.push(format!(
                "{}: an exactly-once Kafka sink commits at checkpoints, and checkpointing is off: the job's \
                 whole output is held until it finishes (set --checkpoint-interval)",
                node.name
            )),
        }
    }
    warnings
}

impl From<weir_api::Error> for Error {
    fn from(e: weir_api::Error) -> Self {
        Self::Job(weir_runtime::Error::Job(e))
    }
}

impl From<crate::plan::PlanError> for Error {
    fn from(e: crate::plan::PlanError) -> Self {
        Self::InvalidJob(e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_api::connectors::SinkDescriptor;
    use weir_api::connectors::kafka::{Delivery, KafkaSinkSpec};
    use weir_api::graph::{JobDescriptor, NodeDescriptor, NodeKind};

    fn kafka_sink_job(delivery: Delivery, transaction_timeout_ms: u64) -> JobDescriptor {
        let spec = KafkaSinkSpec {
            bootstrap_servers: "b:9092".into(),
            topic: Some("out".into()),
            delivery,
            transactional_id_prefix: "p".into(),
            progress_topic: "p.progress".into(),
            transaction_timeout_ms,
            properties: Default::default(),
        };
        let sink = NodeDescriptor {
            id: 0,
            uid: "sink".into(),
            name: "to kafka".into(),
            kind: NodeKind::Sink(SinkDescriptor::Kafka(spec)),
            parallelism: None,
            outputs: Vec::new(),
            states: Vec::new(),
            subtask_state: false,
        };
        JobDescriptor {
            name: "j".into(),
            parallelism: None,
            max_parallelism: 128,
            nodes: vec![sink],
            edges: Vec::new(),
        }
    }

    #[test]
    fn exactly_once_kafka_sinks_warn_of_short_transaction_timeouts_and_missing_checkpoints() {
        let short = kafka_sink_job(Delivery::ExactlyOnce, 30_000);
        let found = warnings(&short, Some(10_000));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("to kafka: ") && found[0].contains("at least 70000 ms"), "{found:?}");
        let long = kafka_sink_job(Delivery::ExactlyOnce, 900_000);
        assert!(warnings(&long, Some(10_000)).is_empty());
        let off = warnings(&long, None);
        assert!(off.len() == 1 && off[0].contains("checkpointing is off"), "{off:?}");
        // Other delivery modes do not use transactions.
        assert!(warnings(&kafka_sink_job(Delivery::AtLeastOnce, 1), None).is_empty());
    }

    #[tokio::test]
    async fn the_write_probe_tries_again_after_a_transient_storage_error_but_not_after_a_configuration_error() {
        use weir_runtime::storage::StorageError;
        let io = || StorageError::Io { action: "cannot write", url: "s3://b/x".into(), message: "503".into() };
        let calls = std::sync::atomic::AtomicU32::new(0);
        let flaky = || {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { if n < 2 { Err(io()) } else { Ok(()) } }
        };
        assert!(retry_transient(3, flaky).await.is_ok(), "two hiccups, then it writes");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
        let calls = std::sync::atomic::AtomicU32::new(0);
        let broken = || {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Err(io()) }
        };
        assert!(retry_transient(3, broken).await.is_err());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3, "gives up after three attempts");
        let calls = std::sync::atomic::AtomicU32::new(0);
        let misconfigured = || {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Err(StorageError::Config("bad".into())) }
        };
        assert!(retry_transient(3, misconfigured).await.is_err());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1, "a configuration error is final");
    }
}
