//! The taskmanager's metrics at `/metrics` of its HTTP endpoint, in the Prometheus text format
//! under the names Flink's Prometheus reporter gives them (`flink_taskmanager_job_task_<metric>`
//! with the labels `job_id`, `job_name`, `task_id`, `task_name`, `subtask_index`,
//! `task_attempt_num`, `tm_id`), so that dashboards and alerts written for Flink work unchanged.
//!
//! Values are read at scrape time from each task's [`TaskMetrics`] (atomics the task updates per
//! batch or per wait, never per record). Rates and time shares are averages over the last minute,
//! as Flink's `MeterView` (60 s): each scrape adds a sample, and a rate compares it with the oldest
//! sample of the last minute (or the task's start).

use crate::context::TaskMetrics;
use crate::taskmanager::TaskManager;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use weir_api::metrics::UserMetric;
use weir_runtime::{TaskId, TaskManagerGateway as _};

/// The window of rates and time shares (Flink's `MeterView` default).
const WINDOW: Duration = Duration::from_secs(60);

/// A task's counters at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    records_in: u64,
    records_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    idle_ns: u64,
    backpressured_ns: u64,
}

impl Sample {
    fn of(metrics: &TaskMetrics, at: Instant) -> Self {
        Self {
            at,
            records_in: metrics.records_in.load(Ordering::Relaxed),
            records_out: metrics.records_out.load(Ordering::Relaxed),
            bytes_in: metrics.bytes_in.load(Ordering::Relaxed),
            bytes_out: metrics.bytes_out.load(Ordering::Relaxed),
            idle_ns: metrics.idle_ns.load(Ordering::Relaxed),
            backpressured_ns: metrics.backpressured_ns.load(Ordering::Relaxed),
        }
    }

    /// The counters of a task that just started.
    fn zero(at: Instant) -> Self {
        Self { at, records_in: 0, records_out: 0, bytes_in: 0, bytes_out: 0, idle_ns: 0, backpressured_ns: 0 }
    }
}

/// Rates of a task over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rates {
    records_in: f64,
    records_out: f64,
    bytes_in: f64,
    bytes_out: f64,
    /// Milliseconds per second: busy + idle + backpressured = 1000.
    busy_ms: f64,
    idle_ms: f64,
    backpressured_ms: f64,
}

/// A task's samples of the last window.
#[derive(Debug)]
struct Meter {
    samples: VecDeque<Sample>,
}

impl Meter {
    fn new(started: Instant) -> Self {
        Self { samples: VecDeque::from([Sample::zero(started)]) }
    }

    /// Adds `now` and gives the rates since the oldest sample of the window.
    fn rates(&mut self, now: Sample) -> Rates {
        // Keep the newest sample older than the window as the baseline.
        while self.samples.len() > 1 && now.at.duration_since(self.samples[1].at) >= WINDOW {
            self.samples.pop_front();
        }
        let base = self.samples.front().copied().unwrap_or(now);
        self.samples.push_back(now);
        let seconds = now.at.duration_since(base.at).as_secs_f64();
        if seconds <= 0.0 {
            return Rates {
                records_in: 0.0,
                records_out: 0.0,
                bytes_in: 0.0,
                bytes_out: 0.0,
                busy_ms: 0.0,
                idle_ms: 1000.0,
                backpressured_ms: 0.0,
            };
        }
        let per_second = |now: u64, base: u64| now.saturating_sub(base) as f64 / seconds;
        // Time shares in ms per second, capped to the wall time (a wait may straddle samples).
        let idle_ms = (per_second(now.idle_ns, base.idle_ns) / 1e6).min(1000.0);
        let backpressured_ms = (per_second(now.backpressured_ns, base.backpressured_ns) / 1e6).min(1000.0 - idle_ms);
        Rates {
            records_in: per_second(now.records_in, base.records_in),
            records_out: per_second(now.records_out, base.records_out),
            bytes_in: per_second(now.bytes_in, base.bytes_in),
            bytes_out: per_second(now.bytes_out, base.bytes_out),
            busy_ms: (1000.0 - idle_ms - backpressured_ms).max(0.0),
            idle_ms,
            backpressured_ms,
        }
    }
}

/// The taskmanager's collector: its tasks' metrics and the process's.
#[derive(Debug)]
struct TaskManagerCollector {
    taskmanager: TaskManager,
    meters: Mutex<HashMap<TaskId, Meter>>,
}

/// One series: the labels and the value.
type Series = (Vec<(&'static str, String)>, f64);

impl TaskManagerCollector {
    /// Every task metric: name, help, series.
    fn task_series(&self) -> Vec<(&'static str, &'static str, Vec<Series>)> {
        let tasks = self.taskmanager.task_metric_handles();
        let now = Instant::now();
        let mut meters = self.meters.lock().unwrap_or_else(PoisonError::into_inner);
        meters.retain(|id, _| tasks.iter().any(|(t, _)| t == id));
        let tm_id = self.taskmanager.id().to_owned();
        let mut rows = Vec::with_capacity(tasks.len());
        for (id, metrics) in &tasks {
            let sample = Sample::of(metrics, now);
            let rates = meters.entry(*id).or_insert_with(|| Meter::new(metrics.started)).rates(sample);
            let labels = vec![
                ("job_id", id.job.to_string()),
                ("job_name", metrics.job_name.clone()),
                ("task_id", id.vertex.to_string()),
                ("task_name", metrics.task_name.clone()),
                ("subtask_index", id.subtask.to_string()),
                ("task_attempt_num", id.attempt.to_string()),
                ("tm_id", tm_id.clone()),
            ];
            rows.push((labels, sample, rates, Arc::clone(metrics)));
        }
        drop(meters);
        let series = |value: &dyn Fn(&Sample, &Rates, &TaskMetrics) -> Option<f64>| -> Vec<Series> {
            rows.iter()
                .filter_map(|(labels, sample, rates, metrics)| Some((labels.clone(), value(sample, rates, metrics)?)))
                .collect()
        };
        let watermark = |w: i64| (w != i64::MIN).then_some(w as f64);
        let size = |bytes: i64| (bytes >= 0).then_some(bytes as f64);
        let now_ms = crate::context::now_ms();
        vec![
            ("numRecordsIn", "Records the task received.", series(&|s, _, _| Some(s.records_in as f64))),
            ("numRecordsOut", "Records the task emitted.", series(&|s, _, _| Some(s.records_out as f64))),
            (
                "numBytesIn",
                "Bytes the task received from other taskmanagers.",
                series(&|s, _, _| Some(s.bytes_in as f64)),
            ),
            ("numBytesOut", "Bytes the task sent to other taskmanagers.", series(&|s, _, _| Some(s.bytes_out as f64))),
            (
                "numRecordsInPerSecond",
                "Records received per second (last minute).",
                series(&|_, r, _| Some(r.records_in)),
            ),
            (
                "numRecordsOutPerSecond",
                "Records emitted per second (last minute).",
                series(&|_, r, _| Some(r.records_out)),
            ),
            ("numBytesInPerSecond", "Bytes received per second (last minute).", series(&|_, r, _| Some(r.bytes_in))),
            ("numBytesOutPerSecond", "Bytes sent per second (last minute).", series(&|_, r, _| Some(r.bytes_out))),
            (
                "busyTimeMsPerSecond",
                "Milliseconds per second the task was busy (last minute).",
                series(&|_, r, _| Some(r.busy_ms)),
            ),
            (
                "idleTimeMsPerSecond",
                "Milliseconds per second the task waited for input (last minute).",
                series(&|_, r, _| Some(r.idle_ms)),
            ),
            (
                "backPressuredTimeMsPerSecond",
                "Milliseconds per second the task waited for room in its outputs (last minute).",
                series(&|_, r, _| Some(r.backpressured_ms)),
            ),
            (
                "isBackPressured",
                "1 while the task waits for room in an output channel.",
                series(&|_, _, m| Some(f64::from(u8::from(m.backpressured.load(Ordering::Relaxed))))),
            ),
            (
                "currentInputWatermark",
                "The task's input watermark (ms; absent before the first).",
                series(&|_, _, m| watermark(m.input_watermark.load(Ordering::Relaxed))),
            ),
            (
                "currentOutputWatermark",
                "The last watermark the task emitted (ms; absent before the first).",
                series(&|_, _, m| watermark(m.output_watermark.load(Ordering::Relaxed))),
            ),
            (
                "lastCheckpointFullSize",
                "Full size of the task's state in its last acknowledged checkpoint (bytes; absent before one).",
                series(&|_, _, m| size(m.checkpoint_full_bytes.load(Ordering::Relaxed))),
            ),
            (
                "lastCheckpointSize",
                "Bytes the task wrote for its last acknowledged checkpoint alone (absent before one).",
                series(&|_, _, m| size(m.checkpoint_incremental_bytes.load(Ordering::Relaxed))),
            ),
            (
                "watermarkLag",
                "How far the input watermark is behind the wall clock (ms).",
                series(&|_, _, m| watermark(m.input_watermark.load(Ordering::Relaxed)).map(|w| now_ms as f64 - w)),
            ),
        ]
    }
}

impl Collector for TaskManagerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (name, help, series) in self.task_series() {
            let name = format!("flink_taskmanager_job_task_{name}");
            let mut metric = encoder.encode_descriptor(&name, help, None, MetricType::Gauge)?;
            for (labels, value) in series {
                ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
            }
        }
        // Connector metrics under Flink's operator scope, named by the chain's head (the source),
        // and the metrics the job's functions registered, named by their operators.
        let mut operator: BTreeMap<String, Family> = BTreeMap::new();
        let tm_id = self.taskmanager.id().to_owned();
        for (id, metrics) in self.taskmanager.task_metric_handles() {
            let labels = |operator: &str| {
                vec![
                    ("job_id", id.job.to_string()),
                    ("job_name", metrics.job_name.clone()),
                    ("task_id", id.vertex.to_string()),
                    ("task_name", metrics.task_name.clone()),
                    ("operator_name", operator.to_owned()),
                    ("subtask_index", id.subtask.to_string()),
                    ("task_attempt_num", id.attempt.to_string()),
                    ("tm_id", tm_id.clone()),
                ]
            };
            if let Some(values) = metrics.connector.get().map(|c| c.values()) {
                let head = labels(metrics.task_name.split(" -> ").next().unwrap_or_default());
                for (name, value) in values {
                    add(&mut operator, name, Kind::Connector, &head, value);
                }
            }
            let marks = metrics.operator_watermarks.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let now_ms = crate::context::now_ms() as f64;
            for (name, mark) in marks.into_iter().filter(|(_, mark)| *mark != i64::MIN) {
                let labels = labels(&name);
                add(&mut operator, "currentInputWatermark", Kind::Watermark, &labels, mark as f64);
                add(&mut operator, "watermarkLag", Kind::Watermark, &labels, now_ms - mark as f64);
            }
            let user = metrics.user.lock().unwrap_or_else(PoisonError::into_inner).clone();
            for m in user {
                let labels = labels(&m.operator);
                match &m.metric {
                    UserMetric::Counter(c) => add(&mut operator, &m.name, Kind::Counter, &labels, c.count() as f64),
                    UserMetric::Gauge(g) => add(&mut operator, &m.name, Kind::Gauge, &labels, g.value()),
                    UserMetric::Histogram(h) => {
                        let stats = h.statistics();
                        for q in QUANTILES {
                            let mut with_quantile = labels.clone();
                            with_quantile.push(("quantile", q.to_string()));
                            add(&mut operator, &m.name, Kind::Histogram, &with_quantile, stats.quantile(q));
                        }
                        add(&mut operator, &format!("{}_count", m.name), Kind::Histogram, &labels, stats.count as f64);
                    }
                }
            }
        }
        for (name, family) in operator {
            let name = format!("flink_taskmanager_job_task_operator_{name}");
            let mut metric = encoder.encode_descriptor(&name, family.kind.help(), None, MetricType::Gauge)?;
            for (labels, value) in family.series {
                ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
            }
        }
        let tm_id = [("tm_id", self.taskmanager.id().to_owned())];
        let slots = self.taskmanager.slots();
        let mut metric = encoder.encode_descriptor(
            "flink_taskmanager_Status_numTaskSlots",
            "Task slots offered.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(slots)).encode(metric.encode_family(&tm_id)?)?;
        weir_runtime::metrics::encode_process(&mut encoder)
    }
}

/// The quantiles of a user histogram, as Flink's Prometheus reporter gives them.
const QUANTILES: [f64; 6] = [0.5, 0.75, 0.95, 0.98, 0.99, 0.999];

/// What an operator-scope metric family holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connector,
    Watermark,
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn help(self) -> &'static str {
        match self {
            Self::Connector => "A source connector's metric (Flink's name).",
            Self::Watermark => "An operator's input watermark (ms), or how far it is behind the wall clock (ms).",
            Self::Counter => "A counter the job's code registered.",
            Self::Gauge => "A gauge the job's code registered.",
            Self::Histogram => "A histogram the job's code registered (quantiles of its latest values; _count: all).",
        }
    }
}

/// One operator-scope family: its kind and series.
struct Family {
    kind: Kind,
    series: Vec<Series>,
}

/// Adds a series to the family `name`. A name already taken by another kind of metric (a user
/// counter named as a connector metric, or a counter and a histogram of the same name in two
/// operators) keeps the first kind; the other is left out rather than made a second family.
fn add(families: &mut BTreeMap<String, Family>, name: &str, kind: Kind, labels: &[(&'static str, String)], value: f64) {
    let family = families.entry(name.to_owned()).or_insert_with(|| Family { kind, series: Vec::new() });
    if family.kind == kind {
        family.series.push((labels.to_vec(), value));
    } else {
        tracing::debug!(metric = name, "a metric of another kind has this name already: left out");
    }
}

/// The registry of a taskmanager process.
pub(crate) fn registry(taskmanager: TaskManager) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(TaskManagerCollector { taskmanager, meters: Mutex::default() }));
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, records: u64, idle_ms: u64, backpressured_ms: u64) -> Sample {
        Sample {
            at,
            records_in: records,
            records_out: records * 2,
            bytes_in: 0,
            bytes_out: records * 10,
            idle_ns: idle_ms * 1_000_000,
            backpressured_ns: backpressured_ms * 1_000_000,
        }
    }

    #[test]
    fn rates_are_averages_over_the_last_minute() {
        let start = Instant::now();
        let mut meter = Meter::new(start);
        let at = |s: u64| start + Duration::from_secs(s);
        // 10 s: 1000 records, 2 s idle, 5 s backpressured.
        let r = meter.rates(sample(at(10), 1000, 2000, 5000));
        assert_eq!((r.records_in, r.records_out, r.bytes_out), (100.0, 200.0, 1000.0));
        assert_eq!((r.idle_ms, r.backpressured_ms, r.busy_ms), (200.0, 500.0, 300.0));
        // 70 s: the 10 s sample is the baseline now (the start fell out of the window).
        let r = meter.rates(sample(at(70), 7000, 2000, 65_000));
        assert_eq!(r.records_in, 100.0);
        assert_eq!((r.idle_ms, r.backpressured_ms, r.busy_ms), (0.0, 1000.0, 0.0));
        // 200 s without a scrape in between: over the last gap.
        let r = meter.rates(sample(at(200), 7000, 132_000, 65_000));
        assert_eq!(r.records_in, 0.0);
        assert_eq!(r.idle_ms, 1000.0);
    }

    #[test]
    fn a_user_metric_registered_twice_is_refused_and_a_name_keeps_its_first_kind() {
        use weir_api::metrics::{Counter, Gauge};
        let metrics = TaskMetrics::new("job", "count -> sink");
        metrics.register_user("count", "seen", UserMetric::Counter(Counter::default())).unwrap();
        metrics.register_user("sink", "seen", UserMetric::Counter(Counter::default())).unwrap();
        let e = metrics.register_user("count", "seen", UserMetric::Gauge(Gauge::default())).unwrap_err();
        assert!(e.to_string().contains("operator 'count' registers the metric 'seen' twice"), "{e}");
        let mut families = BTreeMap::new();
        let labels = [("operator_name", "count".to_owned())];
        add(&mut families, "pendingRecords", Kind::Connector, &labels, 5.0);
        add(&mut families, "pendingRecords", Kind::Counter, &labels, 7.0);
        add(&mut families, "seen", Kind::Counter, &labels, 1.0);
        add(&mut families, "seen", Kind::Counter, &[("operator_name", "sink".to_owned())], 2.0);
        let values = |name: &str| families[name].series.iter().map(|(_, v)| *v).collect::<Vec<_>>();
        assert_eq!(values("pendingRecords"), [5.0], "the connector's metric keeps the name");
        assert_eq!(values("seen"), [1.0, 2.0], "one family, a series per operator");
    }

    #[test]
    fn time_shares_never_exceed_a_second_per_second() {
        let start = Instant::now();
        let mut meter = Meter::new(start);
        // A wait counted in full at its end may exceed the wall time since the last sample.
        let r = meter.rates(sample(start + Duration::from_secs(1), 0, 700, 900));
        assert_eq!((r.idle_ms, r.backpressured_ms, r.busy_ms), (700.0, 300.0, 0.0));
    }
}
