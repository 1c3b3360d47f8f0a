//! Event time: timestamps, watermarks and watermark strategies.

use std::sync::Arc;
use std::time::Duration;

/// Milliseconds since the Unix epoch; event time and processing time alike.
pub type Timestamp = i64;

/// The watermark before any input: nothing is known about event time yet.
pub const MIN_WATERMARK: Timestamp = i64::MIN;
/// The final watermark a bounded source emits when it ends: fires all pending event-time timers.
pub const MAX_WATERMARK: Timestamp = i64::MAX;
/// Timestamp of a record that has none (no timestamp assigner, no event-time source).
pub const NO_TIMESTAMP: Timestamp = i64::MIN;

pub(crate) type TimestampFn<T> = Arc<dyn Fn(&T, Timestamp) -> Timestamp + Send + Sync>;

/// How a stream gets event-time timestamps and watermarks, as Flink's `WatermarkStrategy`.
///
/// The generated watermark is `max_timestamp_seen - out_of_orderness - 1`; it is emitted after each
/// batch of records and, with [`WatermarkStrategy::with_idleness`], a subtask that has seen no record
/// for the idle timeout is marked idle so that downstream operators stop waiting for it.
pub struct WatermarkStrategy<T> {
    pub(crate) timestamp_fn: Option<TimestampFn<T>>,
    pub(crate) out_of_orderness_ms: i64,
    pub(crate) idleness_ms: Option<i64>,
    pub(crate) interval_ms: i64,
}

impl<T> Clone for WatermarkStrategy<T> {
    fn clone(&self) -> Self {
        Self {
            timestamp_fn: self.timestamp_fn.clone(),
            out_of_orderness_ms: self.out_of_orderness_ms,
            idleness_ms: self.idleness_ms,
            interval_ms: self.interval_ms,
        }
    }
}

impl<T> WatermarkStrategy<T> {
    /// Timestamps never decrease within a subtask: the watermark follows the largest timestamp.
    pub fn for_monotonous_timestamps() -> Self {
        Self::for_bounded_out_of_orderness(Duration::ZERO)
    }

    /// Records may arrive up to `bound` later than the largest timestamp seen so far.
    pub fn for_bounded_out_of_orderness(bound: Duration) -> Self {
        Self { timestamp_fn: None, out_of_orderness_ms: duration_ms(bound), idleness_ms: None, interval_ms: 200 }
    }

    /// Extracts the event timestamp of a record; the second argument is the timestamp the record
    /// already carries ([`NO_TIMESTAMP`] when none).
    pub fn with_timestamp_assigner(
        mut self,
        assigner: impl Fn(&T, Timestamp) -> Timestamp + Send + Sync + 'static,
    ) -> Self {
        self.timestamp_fn = Some(Arc::new(assigner));
        self
    }

    /// Marks a subtask idle after it has seen no record for `timeout` (processing time), so that the
    /// minimum watermark downstream ignores it until it produces records again.
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idleness_ms = Some(duration_ms(timeout).max(1));
        self
    }

    /// How often (processing time) idleness is checked; default 200 ms.
    pub fn with_check_interval(mut self, interval: Duration) -> Self {
        self.interval_ms = duration_ms(interval).max(1);
        self
    }
}

pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
