//! What every process's `/metrics` shares: the Prometheus text of a registry, and the process's
//! own metrics (resident memory, CPU time, threads: what the JVM metrics tell Flink users), in the
//! names Prometheus client libraries use.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`encode`]'s text (OpenMetrics, which Prometheus scrapes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry's metrics as text.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        text.clear();
    }
    text
}

/// What a process uses: what the JVM metrics tell Flink users.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessStats {
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// CPU time used (user and system), ms.
    pub cpu_time_ms: u64,
    /// Threads.
    pub threads: u64,
}

/// This process's [`ProcessStats`] (`None` where `/proc` cannot be read).
pub fn process_stats() -> Option<ProcessStats> {
    let stat = procfs::process::Process::myself().and_then(|p| p.stat()).ok()?;
    let ticks = procfs::ticks_per_second().max(1);
    Some(ProcessStats {
        rss_bytes: stat.rss * procfs::page_size(),
        cpu_time_ms: (stat.utime + stat.stime) * 1000 / ticks,
        threads: u64::try_from(stat.num_threads).unwrap_or(0),
    })
}

/// Encodes `process_resident_memory_bytes`, `process_cpu_seconds_total` and `process_threads`
/// of this process (nothing where `/proc` cannot be read).
///
/// # Errors
/// The encoder's.
pub fn encode_process(encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let Some(stats) = process_stats() else { return Ok(()) };
    let memory = encoder.encode_descriptor(
        "process_resident_memory_bytes",
        "Resident memory of the process.",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(stats.rss_bytes as f64).encode(memory)?;
    let cpu = encoder.encode_descriptor(
        "process_cpu_seconds",
        "CPU time the process used (user and system).",
        None,
        MetricType::Counter,
    )?;
    ConstCounter::new(stats.cpu_time_ms as f64 / 1000.0).encode(cpu)?;
    let threads = encoder.encode_descriptor("process_threads", "Threads of the process.", None, MetricType::Gauge)?;
    ConstGauge::new(stats.threads as f64).encode(threads)
}

/// A collector of the process's metrics alone.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        encode_process(&mut encoder)
    }
}
