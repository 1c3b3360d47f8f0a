//! Watermarks per split (Kafka partition) inside a source, as Flink's `WatermarkOutputMultiplexer`:
//! the strategy runs for every split on its own records; the source emits the minimum over the
//! splits that are neither idle nor finished. A split that advances slowly in event time then
//! holds the subtask's watermark back instead of seeing its records dropped as late because a
//! faster split of the same subtask moved the watermark on.
//!
//! - A split without records for the strategy's idleness timeout is idle and does not count;
//!   its next record makes it active again. The timeout runs on a [`ReadingClock`]: only while
//!   the source reads or waits for data, not while its output is blocked (backpressure) or its
//!   task does other work, as Flink's `PausableRelativeClock`. On wall-clock time, a subtask held
//!   up by slow consumers would find its slower partitions idle, let the watermark follow the
//!   faster one and make the slower one's records late.
//! - A finished split (bounded reading reached its end) does not count.
//! - A subtask with no split, or whose unfinished splits are all idle, is idle: it never holds
//!   back the job's watermark (downstream tasks ignore idle inputs).
//! - A subtask whose splits are **all finished** is not idle: its stream ends next, and the end
//!   carries the maximum watermark through every channel in order. Announcing idleness first
//!   would let downstream tasks that see it before its last records' effects (a keyed exchange
//!   reaches each of them at its own pace) advance past event time that the others still emit
//!   records for, and a stage further down would drop those records as late.

use crate::chain::{Output, StreamRecord};
use crate::error::Result;
use crate::runtime::{SplitStatus, TaskRuntime};
use crate::time::{MIN_WATERMARK, Timestamp, WatermarkStrategy};

/// What is known of one split's event time.
#[derive(Debug, Clone, Copy)]
struct SplitClock {
    /// The largest timestamp seen.
    max_timestamp: Timestamp,
    /// When it last had a record (processing time).
    last_record_at: Timestamp,
    finished: bool,
}

/// Time a source spent reading or waiting for data, ms: the clock split idleness runs on.
#[derive(Debug, Default)]
pub(crate) struct ReadingClock {
    elapsed: std::time::Duration,
    /// Since when the source has been waiting for data outside its reader (it asked to be polled
    /// later).
    waiting_since: Option<std::time::Instant>,
}

impl ReadingClock {
    /// The clock's time, ms.
    pub(crate) fn now(&self) -> Timestamp {
        Timestamp::try_from(self.elapsed.as_millis()).unwrap_or(Timestamp::MAX)
    }

    /// Runs `read` (a call of the reader) with the clock running; a wait for data since
    /// [`Self::wait`] counts as well.
    pub(crate) fn reading<R>(&mut self, read: impl FnOnce() -> R) -> R {
        if let Some(since) = self.waiting_since.take() {
            self.elapsed += since.elapsed();
        }
        let started = std::time::Instant::now();
        let result = read();
        self.elapsed += started.elapsed();
        result
    }

    /// The source has no data for now and waits until it is polled again.
    pub(crate) fn wait(&mut self) {
        self.waiting_since = Some(std::time::Instant::now());
    }
}

pub(crate) struct SplitWatermarks<T> {
    strategy: WatermarkStrategy<T>,
    splits: Vec<SplitClock>,
    emitted: Timestamp,
    /// The idleness last announced downstream.
    idle: Option<bool>,
}

impl<T> SplitWatermarks<T> {
    pub(crate) fn new(strategy: WatermarkStrategy<T>) -> Self {
        Self { strategy, splits: Vec::new(), emitted: MIN_WATERMARK, idle: None }
    }

    /// Takes in the records of one poll (`splits[i]` is the split of `records[i]`) and the
    /// source's split status: assigns timestamps when the strategy has an assigner, and tracks
    /// each split's event time.
    pub(crate) fn observe(
        &mut self,
        records: &mut [StreamRecord<T>],
        splits: &[u32],
        status: &SplitStatus,
        now: Timestamp,
    ) {
        while self.splits.len() < status.assigned as usize {
            self.splits.push(SplitClock { max_timestamp: MIN_WATERMARK, last_record_at: now, finished: false });
        }
        for (record, &split) in records.iter_mut().zip(splits) {
            if let Some(assign) = &self.strategy.timestamp_fn {
                record.timestamp = assign(&record.value, record.timestamp);
            }
            if let Some(clock) = self.splits.get_mut(split as usize) {
                clock.max_timestamp = clock.max_timestamp.max(record.timestamp);
                clock.last_record_at = now;
            }
        }
        for &split in &status.finished {
            if let Some(clock) = self.splits.get_mut(split as usize) {
                clock.finished = true;
            }
        }
    }

    /// Records are about to be emitted: a subtask announced idle becomes active first.
    pub(crate) fn before_records(&mut self, out: &mut Output<T>, rt: &mut dyn TaskRuntime) -> Result<()>
    where
        T: crate::Data,
    {
        if self.idle == Some(true) {
            self.idle = Some(false);
            out.idleness(false, rt)?;
        }
        Ok(())
    }

    /// Emits what the splits' clocks say now: activity, then a newer watermark, or idleness.
    pub(crate) fn emit(&mut self, out: &mut Output<T>, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()>
    where
        T: crate::Data,
    {
        let idle_after = self.strategy.idleness_ms;
        if !self.splits.is_empty() && self.splits.iter().all(|s| s.finished) {
            return Ok(());
        }
        let active = self
            .splits
            .iter()
            .filter(|s| !s.finished)
            .filter(|s| idle_after.is_none_or(|after| now.saturating_sub(s.last_record_at) < after));
        let mut any = false;
        let mut min = Timestamp::MAX;
        for split in active {
            any = true;
            min = min.min(split.max_timestamp);
        }
        if !any {
            if self.idle != Some(true) {
                self.idle = Some(true);
                out.idleness(true, rt)?;
            }
            return Ok(());
        }
        if self.idle == Some(true) {
            out.idleness(false, rt)?;
        }
        self.idle = Some(false);
        if min != MIN_WATERMARK {
            let watermark = min.saturating_sub(self.strategy.out_of_orderness_ms).saturating_sub(1);
            if watermark > self.emitted {
                self.emitted = watermark;
                out.watermark(watermark, rt)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::testing::{Collecting, Received, TestRuntime};
    use std::time::Duration;

    fn records(items: &[(u32, i64)]) -> (Vec<StreamRecord<i64>>, Vec<u32>) {
        let records = items.iter().map(|&(_, ts)| StreamRecord { timestamp: ts, value: ts }).collect();
        (records, items.iter().map(|&(split, _)| split).collect())
    }

    fn status(assigned: u32, finished: &[u32]) -> SplitStatus {
        SplitStatus { assigned, finished: finished.to_vec() }
    }

    #[test]
    fn the_slowest_partition_holds_the_watermark_so_its_records_are_not_late() {
        // Partition 0 runs ten seconds ahead of partition 1 in event time: a watermark per
        // subtask (the largest timestamp seen) would make partition 1's records late.
        let strategy = WatermarkStrategy::<i64>::for_bounded_out_of_orderness(Duration::ZERO);
        let mut w = SplitWatermarks::new(strategy);
        let (mut out, received) = Collecting::output();
        let mut rt = TestRuntime::new(0, 1, true);
        let (mut batch, splits) = records(&[(0, 10_000), (1, 100), (0, 10_500)]);
        w.observe(&mut batch, &splits, &status(2, &[]), 0);
        w.emit(&mut out, 0, &mut rt).unwrap();
        assert_eq!(*received.lock().unwrap(), vec![Received::Watermark(99)]);
        let (mut batch, splits) = records(&[(1, 150)]);
        w.observe(&mut batch, &splits, &status(2, &[]), 1);
        w.emit(&mut out, 1, &mut rt).unwrap();
        assert_eq!(received.lock().unwrap().last(), Some(&Received::Watermark(149)), "partition 1 leads now");
        // Partition 1 ends (bounded): partition 0 alone decides.
        let (mut batch, splits) = records(&[]);
        w.observe(&mut batch, &splits, &status(2, &[1]), 2);
        w.emit(&mut out, 2, &mut rt).unwrap();
        assert_eq!(received.lock().unwrap().last(), Some(&Received::Watermark(10_499)));
    }

    #[test]
    fn the_reading_clock_stands_still_while_the_source_is_blocked_elsewhere() {
        let ms = Duration::from_millis;
        let mut clock = ReadingClock::default();
        clock.reading(|| std::thread::sleep(ms(30)));
        // Blocked on a full output (backpressure): does not count.
        std::thread::sleep(ms(200));
        let after_read = clock.now();
        assert!((30..200).contains(&after_read), "{after_read}");
        // Waiting for data between polls counts.
        clock.wait();
        std::thread::sleep(ms(40));
        clock.reading(|| ());
        assert!(clock.now() >= after_read + 40, "{} {after_read}", clock.now());
    }

    #[test]
    fn idle_partitions_do_not_count_and_a_subtask_without_partitions_is_idle() {
        let strategy = WatermarkStrategy::<i64>::for_bounded_out_of_orderness(Duration::from_millis(10))
            .with_idleness(Duration::from_secs(1));
        let mut w = SplitWatermarks::new(strategy);
        let (mut out, received) = Collecting::output();
        let mut rt = TestRuntime::new(0, 1, true);
        // No partition assigned (more subtasks than partitions): idle at once.
        let (mut none, no_splits) = records(&[]);
        w.observe(&mut none, &no_splits, &status(0, &[]), 0);
        w.emit(&mut out, 0, &mut rt).unwrap();
        assert_eq!(*received.lock().unwrap(), vec![Received::Idle(true)]);
        // Two partitions appear; only partition 0 has records; partition 1 holds the watermark
        // back until it is idle for a second.
        let (mut batch, splits) = records(&[(0, 5_000)]);
        w.observe(&mut batch, &splits, &status(2, &[]), 10);
        w.before_records(&mut out, &mut rt).unwrap();
        w.emit(&mut out, 10, &mut rt).unwrap();
        assert_eq!(received.lock().unwrap().last(), Some(&Received::Idle(false)));
        assert!(!received.lock().unwrap().iter().any(|r| matches!(r, Received::Watermark(_))), "partition 1 holds it");
        let (mut batch, splits) = records(&[(0, 6_000)]);
        w.observe(&mut batch, &splits, &status(2, &[]), 1_011);
        w.emit(&mut out, 1_011, &mut rt).unwrap();
        assert_eq!(received.lock().unwrap().last(), Some(&Received::Watermark(5_989)), "partition 1 is idle");
        // Nothing from either for a second: the subtask is idle.
        w.observe(&mut none, &no_splits, &status(2, &[]), 2_100);
        w.emit(&mut out, 2_100, &mut rt).unwrap();
        assert_eq!(received.lock().unwrap().last(), Some(&Received::Idle(true)));
    }

    #[test]
    fn a_subtask_whose_splits_all_finished_is_not_idle() {
        // Found by the Kafka exactly-once test (q5 lost the tail of one sliding window in 1 run of
        // 4): a bounded source subtask whose partitions ended announced idleness before its end;
        // the count subtasks that saw it first let the next stage's watermark pass the window
        // while the others still had its counts to send.
        let strategy = WatermarkStrategy::<i64>::for_bounded_out_of_orderness(Duration::ZERO)
            .with_idleness(Duration::from_secs(1));
        let mut w = SplitWatermarks::new(strategy);
        let (mut out, received) = Collecting::output();
        let mut rt = TestRuntime::new(0, 1, true);
        let (mut batch, splits) = records(&[(0, 100), (1, 200)]);
        w.observe(&mut batch, &splits, &status(2, &[]), 0);
        w.emit(&mut out, 0, &mut rt).unwrap();
        let (mut batch, splits) = records(&[(0, 300), (1, 400)]);
        w.observe(&mut batch, &splits, &status(2, &[0, 1]), 10);
        w.emit(&mut out, 10, &mut rt).unwrap();
        // Long after, still finished and not yet ended: neither idle nor a watermark.
        w.emit(&mut out, 5_000, &mut rt).unwrap();
        assert_eq!(*received.lock().unwrap(), vec![Received::Watermark(99)]);
    }
}
