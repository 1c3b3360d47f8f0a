//! User metrics: counters, gauges and histograms a function registers in `open` through
//! [`crate::functions::RuntimeContext::metric_group`] (Flink's `getMetricGroup()`), which the
//! taskmanager serves at `/metrics` under the operator's scope
//! (`flink_taskmanager_job_task_operator_<name>` with the task's labels and `operator_name`).
//!
//! ```
//! use weir_api::prelude::*;
//! use weir_api::metrics::Counter;
//!
//! #[derive(Clone, Default)]
//! struct CountLate {
//!     late: Option<Counter>,
//! }
//!
//! impl KeyedProcessFunction<u64, i64, i64> for CountLate {
//!     fn open(&mut self, ctx: &RuntimeContext<'_>) -> Result<()> {
//!         self.late = Some(ctx.metric_group().counter("lateEvents")?);
//!         Ok(())
//!     }
//!
//!     fn process_element(&mut self, value: i64, ctx: &mut KeyedContext<'_, u64, i64>) -> Result<()> {
//!         if value < 0 {
//!             self.late.as_ref().map(Counter::inc);
//!         }
//!         ctx.collect(value);
//!         Ok(())
//!     }
//! }
//! ```
//!
//! Updating a counter or gauge is one relaxed atomic operation; a histogram update takes an
//! uncontended lock (the scrape reads it rarely). The handles are cheap to clone and may be kept
//! in the function.

use crate::error::{Error, Result};
use crate::runtime::TaskRuntime;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A count that only grows (Flink's `Counter`; Prometheus sees its value).
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    #[inline]
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value the function sets (Flink's `Gauge`, whose value is read at scrape time: here the
/// latest value set). Starts at 0.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    /// Sets the value.
    #[inline]
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    /// The value.
    pub fn value(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// The distribution of the latest values (Flink's `DescriptiveStatisticsHistogram`): count of
/// all updates, and quantiles, minimum, maximum and mean over a window of the latest ones.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<Mutex<HistogramWindow>>);

#[derive(Debug)]
struct HistogramWindow {
    capacity: usize,
    values: VecDeque<i64>,
    count: u64,
}

/// What a [`Histogram`] shows at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramStatistics {
    /// Updates since the histogram was registered.
    pub count: u64,
    /// The window's values, sorted.
    sorted: Vec<i64>,
}

impl HistogramStatistics {
    /// The `q` quantile (0 to 1) of the window, interpolated between the closest ranks; 0 for
    /// an empty window.
    pub fn quantile(&self, q: f64) -> f64 {
        let Some(last) = self.sorted.len().checked_sub(1) else { return 0.0 };
        let rank = q.clamp(0.0, 1.0) * last as f64;
        let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
        let (a, b) = (self.sorted[low] as f64, self.sorted[high] as f64);
        a + (b - a) * (rank - low as f64)
    }

    /// The window's smallest value (0 when empty).
    pub fn min(&self) -> i64 {
        self.sorted.first().copied().unwrap_or(0)
    }

    /// The window's largest value (0 when empty).
    pub fn max(&self) -> i64 {
        self.sorted.last().copied().unwrap_or(0)
    }

    /// The window's mean (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.sorted.is_empty() {
            return 0.0;
        }
        self.sorted.iter().map(|&v| v as f64).sum::<f64>() / self.sorted.len() as f64
    }
}

/// The window of a histogram registered without one.
pub const DEFAULT_HISTOGRAM_WINDOW: usize = 1024;

impl Histogram {
    fn new(window: usize) -> Self {
        let capacity = window.max(1);
        Self(Arc::new(Mutex::new(HistogramWindow { capacity, values: VecDeque::with_capacity(capacity), count: 0 })))
    }

    /// Records a value.
    pub fn update(&self, value: i64) {
        let mut w = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if w.values.len() == w.capacity {
            w.values.pop_front();
        }
        w.values.push_back(value);
        w.count += 1;
    }

    /// The count and the window's distribution now.
    pub fn statistics(&self) -> HistogramStatistics {
        let (mut sorted, count) = {
            let w = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            (w.values.iter().copied().collect::<Vec<i64>>(), w.count)
        };
        sorted.sort_unstable();
        HistogramStatistics { count, sorted }
    }
}

/// A registered metric, as the runtime keeps it.
#[derive(Debug, Clone)]
pub enum UserMetric {
    /// See [`Counter`].
    Counter(Counter),
    /// See [`Gauge`].
    Gauge(Gauge),
    /// See [`Histogram`].
    Histogram(Histogram),
}

/// Where a function registers its metrics: its operator's scope in its subtask.
pub struct MetricGroup<'a> {
    pub(crate) rt: &'a dyn TaskRuntime,
    pub(crate) operator: &'a str,
}

impl MetricGroup<'_> {
    /// Registers a counter.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `name` is not a metric name (letters, digits and `_`, not
    /// starting with a digit) or the operator registered it already in this subtask.
    pub fn counter(&self, name: &str) -> Result<Counter> {
        let counter = Counter::default();
        self.register(name, UserMetric::Counter(counter.clone()))?;
        Ok(counter)
    }

    /// Registers a gauge (errors as [`MetricGroup::counter`]).
    ///
    /// # Errors
    /// As [`MetricGroup::counter`].
    pub fn gauge(&self, name: &str) -> Result<Gauge> {
        let gauge = Gauge::default();
        self.register(name, UserMetric::Gauge(gauge.clone()))?;
        Ok(gauge)
    }

    /// Registers a histogram over the latest [`DEFAULT_HISTOGRAM_WINDOW`] values.
    ///
    /// # Errors
    /// As [`MetricGroup::counter`].
    pub fn histogram(&self, name: &str) -> Result<Histogram> {
        self.histogram_with_window(name, DEFAULT_HISTOGRAM_WINDOW)
    }

    /// Registers a histogram over the latest `window` values (at least 1).
    ///
    /// # Errors
    /// As [`MetricGroup::counter`].
    pub fn histogram_with_window(&self, name: &str, window: usize) -> Result<Histogram> {
        let histogram = Histogram::new(window);
        self.register(name, UserMetric::Histogram(histogram.clone()))?;
        Ok(histogram)
    }

    fn register(&self, name: &str, metric: UserMetric) -> Result<()> {
        check_name(name)?;
        self.rt.register_metric(self.operator, name, metric)
    }
}

/// Metric names Prometheus accepts as part of a name: `[A-Za-z_][A-Za-z0-9_]*`.
fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "metric name '{name}' is not valid: use letters, digits and '_', not starting with a digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_keeps_the_latest_values_and_counts_all() {
        let h = Histogram::new(4);
        for v in [100, 1, 2, 3, 4] {
            h.update(v);
        }
        let s = h.statistics();
        assert_eq!((s.count, s.min(), s.max()), (5, 1, 4), "100 left the window");
        assert!((s.quantile(0.5) - 2.5).abs() < 1e-9);
        assert!((s.mean() - 2.5).abs() < 1e-9);
        assert_eq!(Histogram::new(8).statistics().quantile(0.99), 0.0);
    }

    #[test]
    fn counters_and_gauges_are_shared_by_their_clones() {
        let c = Counter::default();
        c.clone().inc();
        c.inc_by(2);
        assert_eq!(c.count(), 3);
        let g = Gauge::default();
        g.clone().set(-1.5);
        assert_eq!(g.value(), -1.5);
    }

    #[test]
    fn names_must_be_prometheus_names() {
        assert!(check_name("lateEvents_2").is_ok());
        for bad in ["", "2fast", "late-events", "late events", "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
