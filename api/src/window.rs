//! Windows: time windows, the assigners that put records into them, and output tags for late data.

use crate::time::{Timestamp, duration_ms};
use std::marker::PhantomData;
use std::time::Duration;

/// A window of event or processing time, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct TimeWindow {
    /// First millisecond in the window.
    pub start: Timestamp,
    /// First millisecond after the window.
    pub end: Timestamp,
}

impl TimeWindow {
    /// The window `[start, end)`.
    pub fn new(start: Timestamp, end: Timestamp) -> Self {
        Self { start, end }
    }

    /// The largest timestamp in the window; results of the window carry it.
    pub fn max_timestamp(&self) -> Timestamp {
        self.end - 1
    }

    /// Whether the windows overlap or touch (session windows merge then, as in Flink).
    pub fn intersects(&self, other: &TimeWindow) -> bool {
        self.start <= other.end && self.end >= other.start
    }

    /// The smallest window covering both.
    pub fn cover(&self, other: &TimeWindow) -> TimeWindow {
        TimeWindow::new(self.start.min(other.start), self.end.max(other.end))
    }

    pub(crate) fn to_bytes(self) -> [u8; 16] {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.start.to_be_bytes());
        bytes[8..].copy_from_slice(&self.end.to_be_bytes());
        bytes
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let start = i64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let end = i64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
        Some(Self { start, end })
    }
}

/// Which clock a window assigner uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowTime {
    /// Record timestamps; windows fire when the watermark passes their end.
    EventTime,
    /// The wall clock when the record is processed; windows fire when it passes their end.
    ProcessingTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AssignerKind {
    Tumbling { size: i64, offset: i64 },
    Sliding { size: i64, slide: i64, offset: i64 },
    Session { gap: i64 },
    Global,
}

/// Puts records into windows. Build one with [`TumblingEventTimeWindows`],
/// [`SlidingEventTimeWindows`], [`EventTimeSessionWindows`] or their processing-time twins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowAssigner {
    pub(crate) kind: AssignerKind,
    pub(crate) time: WindowTime,
}

impl WindowAssigner {
    /// Shifts the window boundaries by `offset` (for example for time zones).
    pub fn with_offset(mut self, offset: Duration) -> Self {
        let o = duration_ms(offset);
        match &mut self.kind {
            AssignerKind::Tumbling { offset, .. } | AssignerKind::Sliding { offset, .. } => *offset = o,
            AssignerKind::Session { .. } | AssignerKind::Global => {}
        }
        self
    }

    /// Which clock the assigner uses.
    pub fn time(&self) -> WindowTime {
        self.time
    }

    pub(crate) fn is_merging(&self) -> bool {
        matches!(self.kind, AssignerKind::Session { .. })
    }

    /// Whether this is [`GlobalWindows`]: one window per key that never ends.
    pub(crate) fn is_global(&self) -> bool {
        matches!(self.kind, AssignerKind::Global)
    }

    /// The trigger windows of this assigner have unless the job sets one.
    pub(crate) fn default_trigger(&self) -> crate::trigger::DefaultTrigger {
        match (self.kind, self.time) {
            (AssignerKind::Global, _) => crate::trigger::DefaultTrigger::Never,
            (_, WindowTime::EventTime) => crate::trigger::DefaultTrigger::EventTime,
            (_, WindowTime::ProcessingTime) => crate::trigger::DefaultTrigger::ProcessingTime,
        }
    }

    /// Appends the windows `timestamp` belongs to.
    pub(crate) fn assign(&self, timestamp: Timestamp, out: &mut Vec<TimeWindow>) {
        match self.kind {
            AssignerKind::Tumbling { size, offset } => {
                let start = timestamp - (timestamp - offset).rem_euclid(size);
                out.push(TimeWindow::new(start, start.saturating_add(size)));
            }
            AssignerKind::Sliding { size, slide, offset } => {
                let last_start = timestamp - (timestamp - offset).rem_euclid(slide);
                let mut start = last_start;
                while start > timestamp - size {
                    out.push(TimeWindow::new(start, start.saturating_add(size)));
                    start -= slide;
                }
            }
            AssignerKind::Session { gap } => out.push(TimeWindow::new(timestamp, timestamp.saturating_add(gap))),
            AssignerKind::Global => out.push(GLOBAL_WINDOW),
        }
    }

    pub(crate) fn describe(&self) -> String {
        let time = match self.time {
            WindowTime::EventTime => "event-time",
            WindowTime::ProcessingTime => "processing-time",
        };
        match self.kind {
            AssignerKind::Tumbling { size, .. } => format!("tumbling {size}ms {time}"),
            AssignerKind::Sliding { size, slide, .. } => {
                format!("sliding {size}ms/{slide}ms {time}")
            }
            AssignerKind::Session { gap } => format!("session gap {gap}ms {time}"),
            AssignerKind::Global => "global".to_owned(),
        }
    }
}

/// The one window of [`GlobalWindows`]: all of time (its results carry the largest timestamp
/// before the end of time, as Flink's `GlobalWindow`).
pub const GLOBAL_WINDOW: TimeWindow = TimeWindow { start: Timestamp::MIN, end: Timestamp::MAX };

/// One window per key holding all its elements, which fires only as its trigger says (Flink's
/// `GlobalWindows`): give it one with `.trigger(..)` (see [`crate::trigger`]), or use
/// `count_window`.
#[derive(Debug)]
pub struct GlobalWindows;

impl GlobalWindows {
    /// The assigner.
    pub fn create() -> WindowAssigner {
        WindowAssigner { kind: AssignerKind::Global, time: WindowTime::EventTime }
    }
}

fn positive(d: Duration) -> i64 {
    duration_ms(d).max(1)
}

macro_rules! assigners {
    ($time:expr, $tumbling:ident, $sliding:ident, $session:ident) => {
        /// Fixed-size, non-overlapping windows.
        #[derive(Debug)]
        pub struct $tumbling;
        impl $tumbling {
            /// Windows of `size` (at least 1 ms).
            pub fn of(size: Duration) -> WindowAssigner {
                WindowAssigner { kind: AssignerKind::Tumbling { size: positive(size), offset: 0 }, time: $time }
            }
        }

        /// Fixed-size windows starting every `slide`; a record belongs to `size / slide` windows.
        #[derive(Debug)]
        pub struct $sliding;
        impl $sliding {
            /// Windows of `size` starting every `slide` (both at least 1 ms).
            pub fn of(size: Duration, slide: Duration) -> WindowAssigner {
                WindowAssigner {
                    kind: AssignerKind::Sliding { size: positive(size), slide: positive(slide), offset: 0 },
                    time: $time,
                }
            }
        }

        /// Windows per key that close after a gap of inactivity; overlapping sessions merge.
        #[derive(Debug)]
        pub struct $session;
        impl $session {
            /// Sessions that close after `gap` without records (at least 1 ms).
            pub fn with_gap(gap: Duration) -> WindowAssigner {
                WindowAssigner { kind: AssignerKind::Session { gap: positive(gap) }, time: $time }
            }
        }
    };
}

assigners!(WindowTime::EventTime, TumblingEventTimeWindows, SlidingEventTimeWindows, EventTimeSessionWindows);
assigners!(
    WindowTime::ProcessingTime,
    TumblingProcessingTimeWindows,
    SlidingProcessingTimeWindows,
    ProcessingTimeSessionWindows
);

/// Names a side output of type `T`, for example the late records of a window.
#[derive(Debug)]
pub struct OutputTag<T> {
    pub(crate) name: String,
    _t: PhantomData<fn() -> T>,
}

impl<T> OutputTag<T> {
    /// A tag named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), _t: PhantomData }
    }

    /// The tag's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<T> Clone for OutputTag<T> {
    fn clone(&self) -> Self {
        Self::new(self.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(a: WindowAssigner, ts: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        a.assign(ts, &mut out);
        out.into_iter().map(|w| (w.start, w.end)).collect()
    }

    #[test]
    fn tumbling_and_sliding_windows_cover_the_timestamp() {
        let t = TumblingEventTimeWindows::of(Duration::from_secs(10));
        assert_eq!(windows(t, 0), vec![(0, 10_000)]);
        assert_eq!(windows(t, 9_999), vec![(0, 10_000)]);
        assert_eq!(windows(t, 10_000), vec![(10_000, 20_000)]);
        assert_eq!(windows(t, -1), vec![(-10_000, 0)]);
        let s = SlidingEventTimeWindows::of(Duration::from_secs(10), Duration::from_secs(2));
        assert_eq!(
            windows(s, 11_000),
            vec![(10_000, 20_000), (8_000, 18_000), (6_000, 16_000), (4_000, 14_000), (2_000, 12_000)]
        );
        let o = TumblingEventTimeWindows::of(Duration::from_secs(10)).with_offset(Duration::from_secs(3));
        assert_eq!(windows(o, 2_000), vec![(-7_000, 3_000)]);
    }
}
