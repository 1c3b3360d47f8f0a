//! The head of a source the job implements ([`SplitSource`]): reads this subtask's splits in
//! turn, keeps their positions as its checkpoint state, and generates watermarks per split.

use super::source::SOURCE_BATCH;
use super::split_watermarks::{ReadingClock, SplitWatermarks};
use crate::chain::{HeadOperator, Output};
use crate::codec::{decode, encode_into};
use crate::error::Result;
use crate::functions::RuntimeContext;
use crate::runtime::{CheckpointId, OperatorSnapshot, SourceStatus, SplitStatus, TaskRuntime};
use crate::source::{ReadStatus, SourceContext, SplitSource};
use crate::time::{MAX_WATERMARK, Timestamp};

/// How long a subtask whose splits are all idle waits before reading again.
const IDLE_WAIT_MS: Timestamp = 10;

/// One split of this subtask.
struct OwnedSplit<S> {
    /// Its index in the source's list of splits (what assigns it to a subtask).
    index: u64,
    split: S,
    done: bool,
}

pub(crate) struct SplitSourceHead<T, S: SplitSource<T>> {
    pub(crate) source: S,
    pub(crate) watermarks: Option<SplitWatermarks<T>>,
    pub(crate) out: Output<T>,
    pub(crate) name: String,
    pub(crate) uid: String,
    splits: Vec<OwnedSplit<S::Split>>,
    /// The split read next (round robin).
    next: usize,
    reading_clock: ReadingClock,
    /// Per record of the current batch, the number of its split (for the watermarks).
    record_splits: Vec<u32>,
    status: SplitStatus,
    subtask: u32,
    finished: bool,
}

impl<T: crate::Data, S: SplitSource<T>> SplitSourceHead<T, S> {
    pub(crate) fn new(
        source: S,
        watermarks: Option<SplitWatermarks<T>>,
        out: Output<T>,
        name: &str,
        uid: &str,
    ) -> Self {
        Self {
            source,
            watermarks,
            out,
            name: name.to_owned(),
            uid: uid.to_owned(),
            splits: Vec::new(),
            next: 0,
            reading_clock: ReadingClock::default(),
            record_splits: Vec::new(),
            status: SplitStatus::default(),
            subtask: 0,
            finished: false,
        }
    }

    fn finish(&mut self, rt: &mut dyn TaskRuntime) -> Result<SourceStatus> {
        self.finished = true;
        self.out.flush(rt)?;
        self.out.watermark(MAX_WATERMARK, rt)?;
        Ok(SourceStatus::Finished)
    }

    /// Reads one batch from the next splits that have records; whether any split had some.
    fn read_batch(&mut self) -> Result<bool> {
        let count = self.splits.len();
        for _ in 0..count {
            let at = self.next % count;
            self.next = (at + 1) % count;
            let owned = &mut self.splits[at];
            if owned.done {
                continue;
            }
            let before = self.out.buffer.len();
            let mut ctx = SourceContext { buffer: &mut self.out.buffer };
            let (source, split) = (&mut self.source, &mut owned.split);
            let status = self.reading_clock.reading(|| source.read(split, SOURCE_BATCH, &mut ctx))?;
            let read = self.out.buffer.len() - before;
            self.record_splits.extend(std::iter::repeat_n(at as u32, read));
            match status {
                ReadStatus::Finished => {
                    owned.done = true;
                    self.status.finished.push(at as u32);
                }
                ReadStatus::More | ReadStatus::Idle if read == 0 => continue,
                ReadStatus::More | ReadStatus::Idle => {}
            }
            if read > 0 || status == ReadStatus::Finished {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl<T: crate::Data, S: SplitSource<T>> HeadOperator for SplitSourceHead<T, S> {
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.source.open(&RuntimeContext { rt, operator: &self.name })?;
        let info = rt.info();
        let (subtask, parallelism) = (info.subtask, u64::from(info.parallelism));
        self.subtask = subtask;
        let mine = |index: u64| index % parallelism == u64::from(subtask);
        let owned: Vec<(u64, S::Split)> = match rt.restored_state(&self.uid) {
            // Every old subtask's unfinished splits (all of them after a change of
            // parallelism): this subtask keeps its share.
            Some(restored) => {
                let mut owned = Vec::new();
                for bytes in &restored.operator_states {
                    let (_, splits): (u32, Vec<(u64, S::Split)>) = decode(bytes, "source splits")?;
                    owned.extend(splits.into_iter().filter(|(index, _)| mine(*index)));
                }
                owned.sort_by_key(|(index, _)| *index);
                owned
            }
            None => self
                .source
                .splits()
                .map_err(|e| e.in_operator(&self.name))?
                .into_iter()
                .enumerate()
                .map(|(i, split)| (i as u64, split))
                .filter(|(index, _)| mine(*index))
                .collect(),
        };
        self.splits = owned.into_iter().map(|(index, split)| OwnedSplit { index, split, done: false }).collect();
        self.status.assigned = self.splits.len() as u32;
        self.out.open(rt)
    }

    fn poll_source(&mut self, rt: &mut dyn TaskRuntime) -> Result<SourceStatus> {
        if self.finished {
            return Ok(SourceStatus::Finished);
        }
        let any = self.read_batch().map_err(|e| e.in_operator(&self.name))?;
        rt.add_records_in(self.record_splits.len() as u64);
        match self.watermarks.as_mut() {
            Some(watermarks) => {
                let now = self.reading_clock.now();
                watermarks.observe(&mut self.out.buffer, &self.record_splits, &self.status, now);
                if !self.out.buffer.is_empty() {
                    watermarks.before_records(&mut self.out, rt)?;
                }
                self.out.flush(rt)?;
                watermarks.emit(&mut self.out, now, rt)?;
            }
            None => self.out.flush(rt)?,
        }
        self.record_splits.clear();
        self.status.finished.clear();
        let all_done = self.splits.iter().all(|s| s.done);
        if all_done && self.source.is_bounded() {
            return self.finish(rt);
        }
        if any && !all_done {
            return Ok(SourceStatus::Ready);
        }
        self.reading_clock.wait();
        Ok(SourceStatus::WaitUntil(rt.processing_time() + IDLE_WAIT_MS))
    }

    crate::operators::source_control!();
    fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        if !self.finished {
            self.finish(rt)?;
        }
        self.out.end(rt)
    }
    fn close(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        let closed = self.source.close();
        closed.and(self.out.close(rt))
    }
    fn snapshot(
        &mut self,
        checkpoint: CheckpointId,
        into: &mut Vec<OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        self.out.flush(rt)?;
        let unfinished: Vec<(u64, &S::Split)> =
            self.splits.iter().filter(|s| !s.done).map(|s| (s.index, &s.split)).collect();
        let mut operator_state = Vec::new();
        encode_into(&(self.subtask, unfinished), &mut operator_state, "source splits")?;
        into.push(OperatorSnapshot { uid: self.uid.clone(), keyed: Vec::new(), operator_state });
        self.out.snapshot(checkpoint, into, rt)
    }
}
