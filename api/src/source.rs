//! Sources a job implements (Flink's FLIP-27 split-based sources, reduced to what a subtask
//! needs): the input is divided into **splits** (files, key ranges, shards, partitions), each
//! with its reading position; every subtask reads its share of the splits and the positions are
//! the source's checkpoint state, so a restore reads each split on from where it was, also at
//! another parallelism; watermarks are generated per split and combined as the minimum, as for
//! Kafka partitions.
//!
//! ```
//! use weir_api::prelude::*;
//! use weir_api::source::{ReadStatus, SourceContext, SplitSource};
//!
//! /// The numbers `start..end` of each range, one range per split.
//! #[derive(Clone)]
//! struct Ranges(Vec<(u64, u64)>);
//!
//! impl SplitSource<u64> for Ranges {
//!     type Split = (u64, u64); // the next number to read, the end
//!     fn splits(&mut self) -> weir_api::Result<Vec<(u64, u64)>> {
//!         Ok(self.0.clone())
//!     }
//!     fn read(&mut self, split: &mut (u64, u64), max: usize, out: &mut SourceContext<'_, u64>) -> weir_api::Result<ReadStatus> {
//!         for _ in 0..max {
//!             if split.0 == split.1 {
//!                 return Ok(ReadStatus::Finished);
//!             }
//!             out.collect_with_timestamp(split.0, split.0 as i64);
//!             split.0 += 1;
//!         }
//!         Ok(ReadStatus::More)
//!     }
//! }
//! ```

use crate::chain::StreamRecord;
use crate::error::Result;
use crate::functions::RuntimeContext;
use crate::time::Timestamp;

/// What a read says about its split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStatus {
    /// Records may follow at once.
    More,
    /// Nothing now (an unbounded split waiting for data): read it again in a little while.
    Idle,
    /// The split is exhausted (a bounded source ends when all its splits are).
    Finished,
}

/// Where a read puts its records.
pub struct SourceContext<'a, T> {
    pub(crate) buffer: &'a mut Vec<StreamRecord<T>>,
}

impl<T> SourceContext<'_, T> {
    /// Emits a record without an event timestamp (assign one downstream, or with the source's
    /// watermark strategy).
    pub fn collect(&mut self, value: T) {
        self.buffer.push(StreamRecord { timestamp: crate::time::NO_TIMESTAMP, value });
    }

    /// Emits a record with its event timestamp.
    pub fn collect_with_timestamp(&mut self, value: T, timestamp: Timestamp) {
        self.buffer.push(StreamRecord { timestamp, value });
    }
}

/// A source the job implements, read by split (see [the module](self)). One instance per
/// subtask, cloned from the job's.
pub trait SplitSource<T>: Clone + Send + Sync + 'static {
    /// A unit of input with its reading position. It is the source's checkpoint state: keep in
    /// it everything needed to read on after a restore.
    type Split: crate::Data;

    /// Whether the source ends by itself once its splits are read (default). An unbounded
    /// source's subtasks never finish.
    fn is_bounded(&self) -> bool {
        true
    }

    /// Called once per subtask before any read.
    fn open(&mut self, _ctx: &RuntimeContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Every split of the input, on a fresh start (a restore takes them from the checkpoint).
    /// Every subtask gets the same list and reads the splits whose index `i` has
    /// `i % parallelism == subtask`: it must not depend on the subtask.
    fn splits(&mut self) -> Result<Vec<Self::Split>>;

    /// Reads up to `max` records of `split` into `out`, advancing the split's position.
    fn read(&mut self, split: &mut Self::Split, max: usize, out: &mut SourceContext<'_, T>) -> Result<ReadStatus>;

    /// Called once per subtask when its task is over.
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}
