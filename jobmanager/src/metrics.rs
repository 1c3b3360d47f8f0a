//! The jobmanager's metrics at `/metrics` of its REST address, in the Prometheus text format
//! under the names Flink's Prometheus reporter gives them (`flink_jobmanager_<metric>` and
//! `flink_jobmanager_job_<metric>` with the labels `job_id` and `job_name`), read at scrape time
//! from the snapshots the job masters and the registry publish.

use crate::checkpoint::report::{CheckpointsReport, CompletedReport};
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

/// One series: the labels and the value.
type Series = (Vec<(&'static str, String)>, f64);

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
        let series = |value: &dyn Fn(&JobView) -> Option<f64>| -> Vec<Series> {
            views
                .iter()
                .filter_map(|view| {
                    let labels = vec![("job_id", view.details.jid.clone()), ("job_name", view.details.name.clone())];
                    Some((labels, value(view)?))
                })
                .collect()
        };
        let jobs: Vec<(&str, &str, Vec<Series>)> = vec![
            (
                "uptime",
                "How long the job has been running (ms; 0 once it ended).",
                series(&|v| Some(if v.details.state.is_terminal() { 0.0 } else { v.details.duration_ms as f64 })),
            ),
            ("numRestarts", "How often the job restarted.", series(&|v| Some(f64::from(v.details.restarts)))),
            (
                "lastCheckpointDuration",
                "End-to-end duration of the newest completed checkpoint (ms).",
                series(&|v| latest(v).map(|c| c.end_to_end_duration as f64)),
            ),
            (
                "lastCheckpointSize",
                "Bytes the newest completed checkpoint wrote (incremental).",
                series(&|v| latest(v).map(|c| c.incremental_size as f64)),
            ),
            (
                "lastCheckpointFullSize",
                "Full state size of the newest completed checkpoint (bytes).",
                series(&|v| latest(v).map(|c| c.state_size as f64)),
            ),
            (
                "numberOfCompletedCheckpoints",
                "Completed checkpoints.",
                series(&|v| checkpoints(v).map(|c| c.counts.completed as f64)),
            ),
            (
                "numberOfFailedCheckpoints",
                "Failed checkpoints.",
                series(&|v| checkpoints(v).map(|c| c.counts.failed as f64)),
            ),
            (
                "numberOfInProgressCheckpoints",
                "Checkpoints in progress.",
                series(&|v| checkpoints(v).map(|c| c.counts.in_progress as f64)),
            ),
            (
                "totalNumberOfCheckpoints",
                "Checkpoints triggered.",
                series(&|v| checkpoints(v).map(|c| c.counts.triggered as f64)),
            ),
        ];
        for (name, help, series) in jobs {
            let name = format!("flink_jobmanager_job_{name}");
            let mut metric = encoder.encode_descriptor(&name, help, None, MetricType::Gauge)?;
            for (labels, value) in series {
                ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
            }
        }
        weir_runtime::metrics::encode_process(&mut encoder)
    }
}

fn checkpoints(view: &JobView) -> Option<&CheckpointsReport> {
    view.checkpoints.as_ref()
}

fn latest(view: &JobView) -> Option<&CompletedReport> {
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
