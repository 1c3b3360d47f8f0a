//! The generator source: sequence numbers, optionally rate-limited.

use weir_api::runtime::{RawBatch, SourceReader, SourceStatus};
use weir_api::time::Timestamp;
use weir_api::{Error, Result};

/// Subtask `subtask` of `parallelism`'s share of a [`Generator`] source.
///
/// The generator produces `1..=count` (unbounded when `count` is `None`; an "unbounded"
/// generator actually ends after `u64::MAX`), split by stride: subtask `i` of `n` produces
/// `1 + i, 1 + i + n, 1 + i + 2n, ...`, nothing when `count < i + 1`. The shares of all subtasks
/// partition `1..=count` exactly.
///
/// Each [`SourceReader::read`] fills [`RawBatch::sequence`] with `(first, n, k)`: `k` records
/// `first, first + n, ...`, at most `max_records`. The status is:
/// - [`SourceStatus::Ready`] when records may remain;
/// - [`SourceStatus::Finished`] when none remain. **It can come together with the last records
///   in the same call**, so the caller must process `out` before looking at the status.
/// - [`SourceStatus::WaitUntil`]`(t)` (only with a rate, and without records) when the subtask is
///   ahead of its schedule; `t` is the processing time at which the next record is due.
///
/// With `rate: Some(r)` (events per second over all subtasks), each subtask produces at `r / n`
/// per second, measured from its first read with the injected clock: by processing time
/// `start + t` ms it has emitted at most `floor(t * r / n / 1000) + 1` records, so the first
/// record is due at the first read. Records are emitted in chunks of at most `max_records`.
///
/// [`Generator`]: weir_api::connectors::SourceDescriptor::Generator
pub struct GeneratorReader {
    /// The next sequence number this subtask emits.
    next: u64,
    /// The distance between this subtask's numbers (the parallelism).
    stride: u64,
    /// How many numbers this subtask has still to emit.
    remaining: u64,
    /// Events per millisecond of this subtask, when rate-limited.
    rate_per_ms: Option<f64>,
    /// Processing time of the first read (rate-limited generators only).
    start_ms: Option<Timestamp>,
    /// Records emitted so far.
    emitted: u64,
    now_ms: Box<dyn Fn() -> Timestamp + Send>,
}

impl std::fmt::Debug for GeneratorReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratorReader")
            .field("next", &self.next)
            .field("stride", &self.stride)
            .field("remaining", &self.remaining)
            .field("rate_per_ms", &self.rate_per_ms)
            .field("start_ms", &self.start_ms)
            .field("emitted", &self.emitted)
            .finish_non_exhaustive()
    }
}

impl GeneratorReader {
    /// Subtask `subtask` of `parallelism`'s share of a generator of `count` events (`None`:
    /// unbounded) at `rate` events per second over all subtasks (`None` or `+inf`: unlimited).
    ///
    /// # Errors
    /// [`Error::InvalidJob`] when `subtask >= parallelism` or `rate` is zero, negative or NaN.
    pub fn new(
        count: Option<u64>,
        rate: Option<f64>,
        subtask: u32,
        parallelism: u32,
        now_ms: impl Fn() -> Timestamp + Send + 'static,
    ) -> Result<Self> {
        super::check_subtask("generator source", subtask, parallelism)?;
        let rate_per_ms = match rate {
            None => None,
            Some(r) if r.is_nan() || r <= 0.0 => {
                return Err(Error::InvalidJob(format!(
                    "generator rate must be a positive number of events per second, got {r}"
                )));
            }
            Some(r) if r.is_infinite() => None,
            Some(r) => Some(r / f64::from(parallelism) / 1000.0),
        };
        let count = count.unwrap_or(u64::MAX);
        let stride = u64::from(parallelism);
        let first = u64::from(subtask) + 1;
        let remaining = if count < first { 0 } else { (count - first) / stride + 1 };
        Ok(Self { next: first, stride, remaining, rate_per_ms, start_ms: None, emitted: 0, now_ms: Box::new(now_ms) })
    }

    /// How many records the rate limit allows now, or the processing time at which the next one
    /// is due.
    fn allowance(&mut self, rate_per_ms: f64) -> std::result::Result<u64, Timestamp> {
        let now = (self.now_ms)();
        let start = *self.start_ms.get_or_insert(now);
        let elapsed = now.saturating_sub(start).max(0);
        // `as` saturates: a huge product becomes u64::MAX.
        let due_by_now = ((elapsed as f64 * rate_per_ms).floor() as u64).saturating_add(1);
        if due_by_now > self.emitted {
            return Ok(due_by_now - self.emitted);
        }
        let offset = (self.emitted as f64 / rate_per_ms).ceil();
        let due = start.saturating_add(offset as i64);
        // Floating-point rounding must not yield a wait that has already passed.
        Err(due.max(now.saturating_add(1)))
    }
}

impl SourceReader for GeneratorReader {
    /// `(next, remaining)`: where the sequence continues.
    fn position(&self) -> Vec<u8> {
        postcard::to_allocvec(&(self.next, self.remaining)).unwrap_or_default()
    }

    fn seek(&mut self, position: &[u8]) -> Result<()> {
        let invalid = |message: String| Error::runtime("generator source", message);
        let (next, remaining): (u64, u64) =
            postcard::from_bytes(position).map_err(|e| invalid(format!("invalid generator position: {e}")))?;
        let stride = self.stride.max(1);
        if next % stride != self.next % stride {
            return Err(invalid(format!("position {next} does not belong to this subtask")));
        }
        self.next = next;
        self.remaining = remaining;
        // The rate limit starts over from the restored position.
        self.emitted = 0;
        self.start_ms = None;
        Ok(())
    }

    fn read(&mut self, max_records: usize, out: &mut RawBatch) -> Result<SourceStatus> {
        if self.remaining == 0 {
            return Ok(SourceStatus::Finished);
        }
        let mut k = self.remaining.min(u64::try_from(max_records).unwrap_or(u64::MAX));
        if let Some(rate_per_ms) = self.rate_per_ms {
            match self.allowance(rate_per_ms) {
                Ok(allowed) => k = k.min(allowed),
                Err(due) => return Ok(SourceStatus::WaitUntil(due)),
            }
        }
        if k == 0 {
            return Ok(SourceStatus::Ready);
        }
        out.sequence = Some((self.next, self.stride, k));
        self.remaining -= k;
        self.emitted += k;
        // Saturating: after the last number of an unbounded generator there is no next.
        self.next = self.next.saturating_add(k.saturating_mul(self.stride));
        Ok(if self.remaining == 0 { SourceStatus::Finished } else { SourceStatus::Ready })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    fn drain(reader: &mut GeneratorReader, max: usize) -> Vec<u64> {
        let mut numbers = Vec::new();
        let mut out = RawBatch::default();
        loop {
            out.clear();
            let status = reader.read(max, &mut out).unwrap();
            if let Some((first, stride, k)) = out.sequence {
                assert!(k as usize <= max);
                numbers.extend((0..k).map(|j| first + j * stride));
            }
            match status {
                SourceStatus::Ready => {}
                SourceStatus::Finished => return numbers,
                SourceStatus::WaitUntil(_) => panic!("unlimited generator waited"),
            }
        }
    }

    #[test]
    fn subtasks_partition_the_sequence() {
        for n in 1..=5u32 {
            for count in [0u64, 1, 2, 3, 4, 7, 10, 1000, 1001] {
                let mut all = Vec::new();
                for i in 0..n {
                    let mut reader = GeneratorReader::new(Some(count), None, i, n, || 0).unwrap();
                    let numbers = drain(&mut reader, 7);
                    let expected: Vec<u64> = (1..=count).filter(|x| (x - 1) % u64::from(n) == u64::from(i)).collect();
                    assert_eq!(numbers, expected, "subtask {i} of {n}, count {count}");
                    all.extend(numbers);
                    // Stays finished.
                    let mut out = RawBatch::default();
                    assert_eq!(reader.read(7, &mut out).unwrap(), SourceStatus::Finished);
                    assert_eq!(out.sequence, None);
                }
                all.sort_unstable();
                assert_eq!(all, (1..=count).collect::<Vec<_>>(), "n {n}, count {count}");
            }
        }
    }

    #[test]
    fn finished_comes_with_the_last_records_and_unbounded_keeps_going() {
        let mut reader = GeneratorReader::new(Some(5), None, 0, 1, || 0).unwrap();
        let mut out = RawBatch::default();
        assert_eq!(reader.read(5, &mut out).unwrap(), SourceStatus::Finished);
        assert_eq!(out.sequence, Some((1, 1, 5)));

        let mut reader = GeneratorReader::new(None, None, 1, 2, || 0).unwrap();
        for round in 0..3u64 {
            out.clear();
            assert_eq!(reader.read(100, &mut out).unwrap(), SourceStatus::Ready);
            assert_eq!(out.sequence, Some((2 + round * 200, 2, 100)));
        }
    }

    #[test]
    fn invalid_arguments_are_errors() {
        assert!(GeneratorReader::new(Some(1), None, 2, 2, || 0).is_err());
        assert!(GeneratorReader::new(Some(1), None, 0, 0, || 0).is_err());
        for rate in [0.0, -1.0, f64::NAN] {
            assert!(GeneratorReader::new(Some(1), Some(rate), 0, 1, || 0).is_err());
        }
        let mut unlimited = GeneratorReader::new(Some(10), Some(f64::INFINITY), 0, 1, || 0).unwrap();
        assert_eq!(drain(&mut unlimited, 100), (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn rate_limit_follows_the_fake_clock() {
        let clock = Arc::new(AtomicI64::new(1_000_000));
        let now = {
            let clock = Arc::clone(&clock);
            move || clock.load(Ordering::SeqCst)
        };
        // 200 events/s over 2 subtasks: 100/s each, one every 10 ms.
        let mut reader = GeneratorReader::new(Some(1000), Some(200.0), 1, 2, now).unwrap();
        let mut out = RawBatch::default();

        // First read: the first record is due immediately.
        assert_eq!(reader.read(50, &mut out).unwrap(), SourceStatus::Ready);
        assert_eq!(out.sequence, Some((2, 2, 1)));
        out.clear();
        // Ahead of schedule: wait for the next record, no records.
        assert_eq!(reader.read(50, &mut out).unwrap(), SourceStatus::WaitUntil(1_000_010));
        assert_eq!(out.sequence, None);

        clock.store(1_000_009, Ordering::SeqCst);
        assert_eq!(reader.read(50, &mut out).unwrap(), SourceStatus::WaitUntil(1_000_010));
        clock.store(1_000_010, Ordering::SeqCst);
        assert_eq!(reader.read(50, &mut out).unwrap(), SourceStatus::Ready);
        assert_eq!(out.sequence, Some((4, 2, 1)));
        out.clear();

        // 1 s later, 100 more are due, but a read emits at most `max`.
        clock.store(1_001_010, Ordering::SeqCst);
        assert_eq!(reader.read(60, &mut out).unwrap(), SourceStatus::Ready);
        assert_eq!(out.sequence, Some((6, 2, 60)));
        out.clear();
        assert_eq!(reader.read(60, &mut out).unwrap(), SourceStatus::Ready);
        assert_eq!(out.sequence, Some((126, 2, 40)));
        out.clear();
        // Emitted 102 records = records 0..=101; record 102 is due at 1020 ms.
        assert_eq!(reader.read(60, &mut out).unwrap(), SourceStatus::WaitUntil(1_001_020));
        assert_eq!(out.sequence, None);

        // Far in the future: everything that remains, in chunks, then Finished.
        clock.store(2_000_000, Ordering::SeqCst);
        let mut total = 102;
        loop {
            out.clear();
            let status = reader.read(100, &mut out).unwrap();
            total += out.sequence.map_or(0, |(_, _, k)| k);
            if status == SourceStatus::Finished {
                break;
            }
            assert_eq!(status, SourceStatus::Ready);
        }
        assert_eq!(total, 500);
    }

    #[test]
    fn clock_going_backwards_does_not_release_records() {
        let clock = Arc::new(AtomicI64::new(500));
        let now = {
            let clock = Arc::clone(&clock);
            move || clock.load(Ordering::SeqCst)
        };
        let mut reader = GeneratorReader::new(None, Some(1.0), 0, 1, now).unwrap();
        let mut out = RawBatch::default();
        assert_eq!(reader.read(10, &mut out).unwrap(), SourceStatus::Ready);
        clock.store(0, Ordering::SeqCst);
        out.clear();
        assert_eq!(reader.read(10, &mut out).unwrap(), SourceStatus::WaitUntil(1500));
        assert_eq!(out.sequence, None);
    }
}
