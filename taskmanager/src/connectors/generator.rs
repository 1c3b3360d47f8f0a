//! The generator source: sequence numbers, optionally rate-limited, as rescalable splits.

use serde::{Deserialize, Serialize};
use weir_api::runtime::{RawBatch, SourceReader, SourceStatus};
use weir_api::time::Timestamp;
use weir_api::{Error, Result};

/// Service name used in this source's errors.
const SERVICE: &str = "generator source";

/// Numbers still to emit: `next, next + stride, ...`, `remaining` of them (Flink's
/// number-sequence splits, as arithmetic progressions so that splitting one keeps each subtask's
/// numbers increasing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progression {
    /// The next number.
    pub next: u64,
    /// The distance between numbers.
    pub stride: u64,
    /// How many numbers remain.
    pub remaining: u64,
}

impl Progression {
    /// The two halves of `self` (alternate numbers; the first takes the odd one out).
    fn halves(self) -> [Self; 2] {
        let stride = self.stride.saturating_mul(2);
        let second = Self {
            // A second half with numbers has its first below the last number: no overflow.
            next: if self.remaining >= 2 { self.next + self.stride } else { self.next },
            stride,
            remaining: self.remaining / 2,
        };
        [Self { next: self.next, stride, remaining: self.remaining.div_ceil(2) }, second]
    }

    /// Numbers `next, ...` after taking `k <= remaining` of them.
    fn advance(&mut self, k: u64) {
        self.remaining -= k;
        // Saturating: after the last number of an unbounded generator there is no next.
        self.next = self.next.saturating_add(k.saturating_mul(self.stride));
    }
}

/// A generator subtask's position, versioned (the variant index is the version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Position {
    /// Version 1.
    V1 {
        /// The subtask that took it.
        subtask: u32,
        /// The source's parallelism then.
        parallelism: u32,
        /// The numbers it still had to emit.
        progressions: Vec<Progression>,
    },
}

impl Position {
    /// Decodes a position [`GeneratorReader`] wrote.
    ///
    /// # Errors
    /// One line when `bytes` is not a generator position.
    pub fn decode(bytes: &[u8]) -> Result<(u32, u32, Vec<Progression>)> {
        match postcard::from_bytes::<Self>(bytes) {
            Ok(Self::V1 { subtask, parallelism, progressions }) if subtask < parallelism => {
                Ok((subtask, parallelism, progressions))
            }
            Ok(Self::V1 { subtask, parallelism, .. }) => Err(Error::runtime(
                SERVICE,
                format!("invalid generator position: subtask {subtask} of parallelism {parallelism}"),
            )),
            Err(e) => Err(Error::runtime(SERVICE, format!("invalid generator position: {e}"))),
        }
    }
}

/// Subtask `subtask`'s share, at parallelism `parallelism`, of the numbers that old subtasks
/// left (`old`, their progressions in old subtask order): deterministic, so that the new
/// subtasks, each computing it from the same positions, partition those numbers exactly. The
/// largest progression (the first of equals) is halved until there are at least `parallelism`
/// of them (or none can be split), then progression `k` goes to subtask `k % parallelism`.
pub fn share(old: Vec<Progression>, subtask: u32, parallelism: u32) -> Vec<Progression> {
    let mut all: Vec<Progression> = old.into_iter().filter(|p| p.remaining > 0).collect();
    let parallelism = parallelism.max(1) as usize;
    while all.len() < parallelism {
        let Some((index, largest)) =
            all.iter().enumerate().rev().max_by_key(|(_, p)| p.remaining).map(|(i, p)| (i, *p))
        else {
            break;
        };
        if largest.remaining < 2 {
            break;
        }
        let [first, second] = largest.halves();
        all[index] = first;
        all.insert(index + 1, second);
    }
    all.into_iter().enumerate().filter(|(k, _)| k % parallelism == subtask as usize).map(|(_, p)| p).collect()
}

/// Subtask `subtask` of `parallelism`'s share of a [`Generator`] source.
///
/// The generator produces `1..=count` (unbounded when `count` is `None`; an "unbounded"
/// generator actually ends after `u64::MAX`), split by stride: subtask `i` of `n` produces
/// `1 + i, 1 + i + n, 1 + i + 2n, ...`, nothing when `count < i + 1`. The shares of all subtasks
/// partition `1..=count` exactly.
///
/// **Rescaling.** A position holds the subtask's remaining numbers as progressions. Restored at
/// another parallelism, every new subtask is given every old subtask's position and takes its
/// [`share`] of their progressions; a subtask with several emits their numbers merged in
/// increasing order (event time derived from the number stays monotonous per subtask).
///
/// Each [`SourceReader::read`] fills [`RawBatch::sequence`] with `(first, n, k)`: `k` records
/// `first, first + n, ...`, at most `max_records` (with several progressions,
/// [`RawBatch::numbers`] instead). The status is:
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
    subtask: u32,
    parallelism: u32,
    /// The numbers this subtask still has to emit, without empty progressions.
    progressions: Vec<Progression>,
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
            .field("subtask", &self.subtask)
            .field("parallelism", &self.parallelism)
            .field("progressions", &self.progressions)
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
        super::check_subtask(SERVICE, subtask, parallelism)?;
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
        let progressions =
            [Progression { next: first, stride, remaining }].into_iter().filter(|p| p.remaining > 0).collect();
        Ok(Self {
            subtask,
            parallelism,
            progressions,
            rate_per_ms,
            start_ms: None,
            emitted: 0,
            now_ms: Box::new(now_ms),
        })
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

    /// Moves the `k` smallest numbers of several progressions, in increasing order, to `numbers`.
    fn merge(&mut self, k: u64, numbers: &mut Vec<u64>) {
        for _ in 0..k {
            let Some(smallest) = self.progressions.iter_mut().filter(|p| p.remaining > 0).min_by_key(|p| p.next) else {
                break;
            };
            numbers.push(smallest.next);
            smallest.advance(1);
        }
        self.progressions.retain(|p| p.remaining > 0);
    }
}

impl SourceReader for GeneratorReader {
    /// [`Position::V1`]: the subtask, the parallelism and the remaining progressions.
    fn position(&self) -> Vec<u8> {
        let position = Position::V1 {
            subtask: self.subtask,
            parallelism: self.parallelism,
            progressions: self.progressions.clone(),
        };
        postcard::to_allocvec(&position).unwrap_or_default()
    }

    fn restore(&mut self, positions: &[Vec<u8>]) -> Result<()> {
        let decoded = positions.iter().map(|bytes| Position::decode(bytes)).collect::<Result<Vec<_>>>()?;
        let progressions = if let Some((_, _, own)) = decoded
            .iter()
            .find(|(subtask, parallelism, _)| *parallelism == self.parallelism && *subtask == self.subtask)
        {
            own.clone()
        } else {
            // Another parallelism: every old subtask's position must be here, or numbers are lost.
            let old = decoded.first().map_or(0, |(_, parallelism, _)| *parallelism);
            let mut subtasks: Vec<u32> = decoded.iter().map(|(subtask, _, _)| *subtask).collect();
            subtasks.sort_unstable();
            if decoded.iter().any(|(_, parallelism, _)| *parallelism != old) || subtasks != (0..old).collect::<Vec<_>>()
            {
                return Err(Error::runtime(
                    SERVICE,
                    format!(
                        "subtask {} of {} was given the positions of subtasks {subtasks:?} of a generator that ran at \
                         parallelism {old}: every old subtask's position is needed to take a share of them",
                        self.subtask, self.parallelism
                    ),
                ));
            }
            let mut ordered = decoded;
            ordered.sort_by_key(|(subtask, _, _)| *subtask);
            share(ordered.into_iter().flat_map(|(_, _, p)| p).collect(), self.subtask, self.parallelism)
        };
        self.progressions = progressions.into_iter().filter(|p| p.remaining > 0).collect();
        // The rate limit starts over from the restored position.
        self.emitted = 0;
        self.start_ms = None;
        Ok(())
    }

    fn read(&mut self, max_records: usize, out: &mut RawBatch) -> Result<SourceStatus> {
        let remaining = self.progressions.iter().fold(0u64, |sum, p| sum.saturating_add(p.remaining));
        if remaining == 0 {
            return Ok(SourceStatus::Finished);
        }
        let mut k = remaining.min(u64::try_from(max_records).unwrap_or(u64::MAX));
        if let Some(rate_per_ms) = self.rate_per_ms {
            match self.allowance(rate_per_ms) {
                Ok(allowed) => k = k.min(allowed),
                Err(due) => return Ok(SourceStatus::WaitUntil(due)),
            }
        }
        if k == 0 {
            return Ok(SourceStatus::Ready);
        }
        self.emitted += k;
        match self.progressions.as_mut_slice() {
            [single] => {
                out.sequence = Some((single.next, single.stride, k));
                single.advance(k);
                if single.remaining == 0 {
                    self.progressions.clear();
                }
            }
            _ => self.merge(k, &mut out.numbers),
        }
        Ok(if self.progressions.is_empty() { SourceStatus::Finished } else { SourceStatus::Ready })
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
            assert!(out.numbers.len() <= max);
            numbers.extend(&out.numbers);
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
    fn a_restore_at_another_parallelism_partitions_the_remaining_numbers() {
        for old in 1..=4u32 {
            for new in 1..=5u32 {
                for count in [0u64, 1, 5, 100, 1001] {
                    // Old subtasks read different amounts before the savepoint.
                    let mut emitted = Vec::new();
                    let mut positions = Vec::new();
                    for i in 0..old {
                        let mut reader = GeneratorReader::new(Some(count), None, i, old, || 0).unwrap();
                        for _ in 0..=i {
                            let mut out = RawBatch::default();
                            reader.read(7, &mut out).unwrap();
                            let (first, stride, k) = out.sequence.unwrap_or((0, 0, 0));
                            emitted.extend((0..k).map(|j| first + j * stride));
                        }
                        positions.push(reader.position());
                    }
                    // Handed out in any order.
                    positions.reverse();
                    let mut all = emitted;
                    for i in 0..new {
                        let mut reader = GeneratorReader::new(Some(count), None, i, new, || 0).unwrap();
                        reader.restore(&positions).unwrap();
                        let numbers = drain(&mut reader, 5);
                        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{old}->{new}, {count}: {numbers:?}");
                        all.extend(numbers);
                    }
                    all.sort_unstable();
                    assert_eq!(all, (1..=count).collect::<Vec<_>>(), "{old} -> {new}, count {count}");
                }
            }
        }
    }

    #[test]
    fn doubling_the_parallelism_gives_each_subtask_one_progression() {
        let positions: Vec<Vec<u8>> = (0..2)
            .map(|i| {
                let mut reader = GeneratorReader::new(Some(100), None, i, 2, || 0).unwrap();
                reader.read(10, &mut RawBatch::default()).unwrap();
                reader.position()
            })
            .collect();
        let mut reader = GeneratorReader::new(Some(100), None, 3, 4, || 0).unwrap();
        reader.restore(&positions).unwrap();
        let mut out = RawBatch::default();
        reader.read(3, &mut out).unwrap();
        assert_eq!(out.sequence, Some((24, 4, 3)), "old subtask 1's second half");
    }

    #[test]
    fn missing_foreign_and_corrupt_positions_are_refused() {
        let position = |i, n| GeneratorReader::new(Some(10), None, i, n, || 0).unwrap().position();
        let mut reader = GeneratorReader::new(Some(10), None, 0, 3, || 0).unwrap();
        let e = reader.restore(&[position(0, 2)]).unwrap_err().to_string();
        assert!(e.contains("subtasks [0] of a generator that ran at parallelism 2"), "{e}");
        let e = reader.restore(&[vec![9, 9, 9]]).unwrap_err().to_string();
        assert!(e.contains("invalid generator position"), "{e}");
        reader.restore(&[position(1, 2), position(0, 2)]).unwrap();
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
