//! The jobmanager's metrics at `/metrics` of its REST address, in the Prometheus text format
//! under the names Flink's Prometheus reporter gives them (`flink_jobmanager_<metric>` and
//! `flink_jobmanager_job_<metric>` with the labels `job_id` and `job_name`), read at scrape time
//! from the snapshots the job masters and the registry publish.

use crate::checkpoint::report::{CheckpointReport, CheckpointsReport};
use crate::job::view::JobView;
use crate::jobmanager::JobManager;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The collector of a serving jobmanager.
#[derive(Debug)]
struct JobManagerCollector {
    jobmanager: JobManager,
}

/// A job metric: Flink's name, its help, and its value in a job's view (`None`: the job does
/// not have it, e.g. checkpoint figures of a job with checkpointing off).
pub(crate) struct JobMetric {
    /// Flink's name (`numRestarts`).
    pub(crate) name: &'static str,
    help: &'static str,
    /// The value.
    pub(crate) value: fn(&JobView) -> Option<f64>,
}

/// Every job metric, at `/metrics` (`flink_jobmanager_job_<name>`) and `GET /jobs/{id}/metrics`.
pub(crate) const JOB_METRICS: &[JobMetric] = &[
    JobMetric {
        name: "uptime",
        help: "How long the job has been running (ms; 0 once it ended).",
        value: |v| Some(if v.details.state.is_terminal() { 0.0 } else { v.details.duration_ms as f64 }),
    },
    JobMetric {
        name: "numRestarts",
        help: "How often the job restarted.",
        value: |v| Some(f64::from(v.details.restarts)),
    },
    JobMetric {
        name: "lastCheckpointDuration",
        help: "End-to-end duration of the newest completed checkpoint (ms).",
        value: |v| latest(v).map(|c| c.end_to_end_duration as f64),
    },
    JobMetric {
        name: "lastCheckpointSize",
        help: "Bytes the newest completed checkpoint wrote (incremental).",
        value: |v| latest(v).map(|c| c.checkpointed_size as f64),
    },
    JobMetric {
        name: "lastCheckpointFullSize",
        help: "Full state size of the newest completed checkpoint (bytes).",
        value: |v| latest(v).map(|c| c.state_size as f64),
    },
    JobMetric {
        name: "numberOfCompletedCheckpoints",
        help: "Completed checkpoints.",
        value: |v| checkpoints(v).map(|c| c.counts.completed as f64),
    },
    JobMetric {
        name: "numberOfFailedCheckpoints",
        help: "Failed checkpoints.",
        value: |v| checkpoints(v).map(|c| c.counts.failed as f64),
    },
    JobMetric {
        name: "numberOfInProgressCheckpoints",
        help: "Checkpoints in progress.",
        value: |v| checkpoints(v).map(|c| c.counts.in_progress as f64),
    },
    JobMetric {
        name: "totalNumberOfCheckpoints",
        help: "Checkpoints triggered.",
        value: |v| checkpoints(v).map(|c| c.counts.total as f64),
    },
];

impl Collector for JobManagerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let overview = self.jobmanager.overview();
        let cluster: [(&str, &str, f64); 4] = [
            ("numRegisteredTaskManagers", "Registered taskmanagers.", overview.taskmanagers as f64),
            ("taskSlotsTotal", "Task slots of every taskmanager.", f64::from(overview.slots_total)),
            ("taskSlotsAvailable", "Task slots no job holds.", f64::from(overview.slots_available)),
            ("numRunningJobs", "Jobs that have not ended.", overview.jobs_running as f64),
        ];
        for (name, help, value) in cluster {
            let name = format!("flink_jobmanager_{name}");
            let metric = encoder.encode_descriptor(&name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(metric)?;
        }

        let views = self.jobmanager.job_views();
        for metric in JOB_METRICS {
            let name = format!("flink_jobmanager_job_{}", metric.name);
            let mut family = encoder.encode_descriptor(&name, metric.help, None, MetricType::Gauge)?;
            for view in views.iter() {
                let Some(value) = (metric.value)(view) else { continue };
                let labels = [("job_id", view.details.jid.as_str()), ("job_name", view.details.name.as_str())];
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        weir_runtime::metrics::encode_process(&mut encoder)
    }
}

fn checkpoints(view: &JobView) -> Option<&CheckpointsReport> {
    view.checkpoints.as_ref()
}

fn latest(view: &JobView) -> Option<&CheckpointReport> {
    checkpoints(view).and_then(|c| c.latest.completed.as_ref())
}

/// The registry of a serving jobmanager.
pub(crate) fn registry(jobmanager: JobManager) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(JobManagerCollector { jobmanager }));
    registry
}

/// The registry of a standby jobmanager: its process alone (the leader reports the cluster).
pub(crate) fn standby_registry() -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(weir_runtime::metrics::ProcessCollector));
    registry
}
