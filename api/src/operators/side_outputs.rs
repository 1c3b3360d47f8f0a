//! Side outputs of process functions (`ctx.output(&tag, value)`): the outputs a node has beside its
//! main one, addressed by tag name and typed by the tag.
//!
//! The set of side outputs is fixed when the job is built: each `side_output(&tag)` asked of a
//! process operator's stream adds one. A function may emit to any tag; records for a tag that no
//! stream reads are dropped, as in Flink.

use crate::chain::{ErasedDownstream, OperatorSetup, Output};
use crate::error::{Error, Result};
use crate::runtime::{CheckpointId, OperatorSnapshot, TaskRuntime};
use crate::time::Timestamp;
use std::any::Any;

/// Buffered records are pushed downstream once this many wait in all side outputs together.
const FLUSH_AT: usize = 4096;

/// An [`Output`] of some record type, with its type erased.
pub(crate) trait SideOutput: Send {
    fn as_any(&mut self) -> &mut dyn Any;
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()>;
    fn flush(&mut self, rt: &mut dyn TaskRuntime) -> Result<()>;
    fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()>;
    fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()>;
    fn time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()>;
    fn next_time(&self) -> Option<Timestamp>;
    fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()>;
    fn close(&mut self, rt: &mut dyn TaskRuntime) -> Result<()>;
    fn snapshot(
        &mut self,
        checkpoint: CheckpointId,
        into: &mut Vec<OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()>;
}

impl<T: Send + 'static> SideOutput for Output<T> {
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        Output::open(self, rt)
    }
    fn flush(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        Output::flush(self, rt)
    }
    fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        Output::watermark(self, watermark, rt)
    }
    fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        Output::idleness(self, idle, rt)
    }
    fn time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        Output::time(self, now, rt)
    }
    fn next_time(&self) -> Option<Timestamp> {
        Output::next_time(self)
    }
    fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        Output::end(self, rt)
    }
    fn close(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        Output::close(self, rt)
    }
    fn snapshot(
        &mut self,
        checkpoint: CheckpointId,
        into: &mut Vec<OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        Output::snapshot(self, checkpoint, into, rt)
    }
}

/// The side outputs of one operator instance.
#[derive(Default)]
pub(crate) struct SideOutputs {
    outputs: Vec<(String, Box<dyn SideOutput>)>,
    /// Records buffered since the last flush.
    buffered: usize,
    /// A record emitted with a tag whose type differs from the stream that reads it; returned by
    /// the next flush.
    error: Option<Error>,
}

impl SideOutputs {
    /// The side outputs of the node `setup` describes: its outputs after the main one, which are
    /// `outputs` (the main output already taken).
    pub(crate) fn new(setup: &OperatorSetup<'_>, outputs: Vec<ErasedDownstream>) -> Result<Self> {
        Self::from_output(setup, outputs, 1)
    }

    /// The side outputs of the node `setup` describes from its output `first` on, which are
    /// `outputs` (a window's late-data output, when it has one, comes before them).
    pub(crate) fn from_output(setup: &OperatorSetup<'_>, outputs: Vec<ErasedDownstream>, first: usize) -> Result<Self> {
        let mut side = Self::default();
        for (index, erased) in outputs.into_iter().enumerate() {
            let (Some(name), Some(kit)) = (setup.output_names.get(index + first), setup.output_kits.get(index + first))
            else {
                return Err(Error::InvalidJob(format!("operator '{}' has more outputs than it declares", setup.name)));
            };
            side.outputs.push((name.clone(), kit.side_output(erased, setup.name)?));
        }
        Ok(side)
    }

    /// Emits `value` to the side output `tag` (dropped when no stream reads it).
    #[inline]
    pub(crate) fn emit<S: Send + 'static>(&mut self, tag: &str, value: S, timestamp: Timestamp) {
        let Some((_, output)) = self.outputs.iter_mut().find(|(name, _)| name == tag) else {
            return;
        };
        match output.as_any().downcast_mut::<Output<S>>() {
            Some(output) => {
                output.emit(value, timestamp);
                self.buffered += 1;
            }
            None => {
                self.error.get_or_insert_with(|| {
                    Error::InvalidJob(format!(
                        "side output '{tag}' is emitted as {} but read as another type",
                        std::any::type_name::<S>()
                    ))
                });
            }
        }
    }

    /// Pushes buffered records downstream once enough wait.
    #[inline]
    pub(crate) fn flush_if_full(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        if self.buffered >= FLUSH_AT || self.error.is_some() { self.flush(rt) } else { Ok(()) }
    }

    /// Pushes every buffered record downstream.
    pub(crate) fn flush(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        if self.buffered > 0 {
            self.buffered = 0;
            self.outputs.iter_mut().try_for_each(|(_, o)| o.flush(rt))?;
        }
        Ok(())
    }

    pub(crate) fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.outputs.iter_mut().try_for_each(|(_, o)| o.open(rt))
    }

    pub(crate) fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.flush(rt)?;
        self.outputs.iter_mut().try_for_each(|(_, o)| o.watermark(watermark, rt))
    }

    pub(crate) fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.flush(rt)?;
        self.outputs.iter_mut().try_for_each(|(_, o)| o.idleness(idle, rt))
    }

    pub(crate) fn time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.flush(rt)?;
        self.outputs.iter_mut().try_for_each(|(_, o)| o.time(now, rt))
    }

    pub(crate) fn next_time(&self) -> Option<Timestamp> {
        self.outputs.iter().fold(None, |acc, (_, o)| crate::chain::min_time(acc, o.next_time()))
    }

    pub(crate) fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.flush(rt)?;
        self.outputs.iter_mut().try_for_each(|(_, o)| o.end(rt))
    }

    /// Closes every side output's downstream, even after one fails; returns the first error.
    pub(crate) fn close(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        crate::chain::close_all(self.outputs.iter_mut(), |(_, o)| o.close(rt))
    }

    pub(crate) fn snapshot(
        &mut self,
        checkpoint: CheckpointId,
        into: &mut Vec<OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        self.flush(rt)?;
        self.outputs.iter_mut().try_for_each(|(_, o)| o.snapshot(checkpoint, into, rt))
    }
}
