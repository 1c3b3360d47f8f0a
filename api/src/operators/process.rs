//! Non-keyed operators that run user functions with a lifecycle: `process` and co-process with
//! side outputs, and the rich map, filter and flat map.

use crate::chain::{Downstream, HeadOperator, Output, StreamRecord, min_time};
use crate::codec::take_batch;
use crate::error::{Error, Result};
use crate::functions::{
    CoProcessFunction, Collector, ProcessContext, ProcessFunction, RichFilterFunction, RichFlatMapFunction,
    RichMapFunction, RuntimeContext,
};
use crate::operators::side_outputs::SideOutputs;
use crate::runtime::{CheckpointId, InputBatch, OperatorSnapshot, SourceStatus, TaskRuntime};
use crate::time::{MIN_WATERMARK, Timestamp};

/// Records are pushed downstream once this many wait in the main output.
const FLUSH_AT: usize = 4096;

/// The outputs and clocks of a non-keyed process operator.
pub(crate) struct ProcessOutputs<O> {
    pub(crate) out: Output<O>,
    pub(crate) side: SideOutputs,
    pub(crate) watermark: Timestamp,
    pub(crate) now: Timestamp,
    pub(crate) name: String,
}

impl<O: crate::Data> ProcessOutputs<O> {
    pub(crate) fn new(out: Output<O>, side: SideOutputs, name: &str) -> Self {
        Self { out, side, watermark: MIN_WATERMARK, now: 0, name: name.to_owned() }
    }

    pub(crate) fn context(&mut self, timestamp: Timestamp) -> ProcessContext<'_, O> {
        ProcessContext {
            timestamp,
            watermark: self.watermark,
            now: self.now,
            out: Collector::new(&mut self.out.buffer, timestamp),
            side: &mut self.side,
        }
    }

    pub(crate) fn flush_if_full(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        if self.out.buffer.len() >= FLUSH_AT {
            self.out.flush(rt)?;
        }
        self.side.flush_if_full(rt)
    }

    pub(crate) fn flush(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.side.flush(rt)?;
        self.out.flush(rt)
    }

    pub(crate) fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.now = rt.processing_time();
        self.side.open(rt)?;
        self.out.open(rt)
    }

    pub(crate) fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.watermark = watermark;
        self.side.watermark(watermark, rt)?;
        self.out.watermark(watermark, rt)
    }

    pub(crate) fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.side.idleness(idle, rt)?;
        self.out.idleness(idle, rt)
    }

    pub(crate) fn time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.now = now;
        self.side.time(now, rt)?;
        self.out.time(now, rt)
    }

    pub(crate) fn next_time(&self) -> Option<Timestamp> {
        min_time(self.side.next_time(), self.out.next_time())
    }

    pub(crate) fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.side.end(rt)?;
        self.out.end(rt)
    }

    /// Closes the function (its result first), then the outputs.
    pub(crate) fn close(&mut self, closed: Result<()>, rt: &mut dyn TaskRuntime) -> Result<()> {
        closed.and(self.side.close(rt)).and(self.out.close(rt))
    }

    pub(crate) fn snapshot(
        &mut self,
        checkpoint: CheckpointId,
        into: &mut Vec<OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        self.side.snapshot(checkpoint, into, rt)?;
        self.out.snapshot(checkpoint, into, rt)
    }
}

/// `stream.process(f)` on a non-keyed stream.
pub(crate) struct ProcessOperator<I, O, F> {
    pub(crate) function: F,
    pub(crate) outputs: ProcessOutputs<O>,
    pub(crate) _input: std::marker::PhantomData<fn(I)>,
}

impl<I, O, F> Downstream<I> for ProcessOperator<I, O, F>
where
    I: crate::Data,
    O: crate::Data,
    F: ProcessFunction<I, O>,
{
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.function.open(&RuntimeContext { rt, operator: &self.outputs.name })?;
        self.outputs.open(rt)
    }

    fn push(&mut self, batch: &mut Vec<StreamRecord<I>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.outputs.now = rt.processing_time();
        for record in batch.drain(..) {
            let mut ctx = self.outputs.context(record.timestamp);
            self.function.process_element(record.value, &mut ctx).map_err(|e| e.in_operator(&self.outputs.name))?;
            self.outputs.flush_if_full(rt)?;
        }
        self.outputs.flush(rt)
    }

    fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.outputs.watermark(watermark, rt)
    }
    fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.outputs.idleness(idle, rt)
    }
    fn time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.outputs.time(now, rt)
    }
    fn next_time(&self) -> Option<Timestamp> {
        self.outputs.next_time()
    }
    fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.outputs.end(rt)
    }
    fn close(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        let closed = self.function.close();
        self.outputs.close(closed, rt)
    }
    fn snapshot(
        &mut self,
        checkpoint: CheckpointId,
        into: &mut Vec<OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        self.outputs.snapshot(checkpoint, into, rt)
    }
}

/// `a.connect(b).process(f)` on non-keyed streams.
pub(crate) struct CoProcessHead<A, B, O, F> {
    pub(crate) function: F,
    pub(crate) first: Vec<StreamRecord<A>>,
    pub(crate) second: Vec<StreamRecord<B>>,
    pub(crate) outputs: ProcessOutputs<O>,
}

impl<A, B, O, F> HeadOperator for CoProcessHead<A, B, O, F>
where
    A: crate::Data,
    B: crate::Data,
    O: crate::Data,
    F: CoProcessFunction<A, B, O>,
{
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.function.open(&RuntimeContext { rt, operator: &self.outputs.name })?;
        self.outputs.open(rt)
    }

    fn poll_source(&mut self, _rt: &mut dyn TaskRuntime) -> Result<SourceStatus> {
        Err(Error::InvalidJob(format!("operator '{}' is not a source", self.outputs.name)))
    }

    fn process_batch(&mut self, input: usize, batch: InputBatch<'_>, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.outputs.now = rt.processing_time();
        match input {
            0 => {
                take_batch(batch, &mut self.first, &self.outputs.name)?;
                rt.add_records_in(self.first.len() as u64);
                for record in self.first.drain(..) {
                    let mut ctx = self.outputs.context(record.timestamp);
                    self.function
                        .process_element1(record.value, &mut ctx)
                        .map_err(|e| e.in_operator(&self.outputs.name))?;
                    self.outputs.flush_if_full(rt)?;
                }
            }
            1 => {
                take_batch(batch, &mut self.second, &self.outputs.name)?;
                rt.add_records_in(self.second.len() as u64);
                for record in self.second.drain(..) {
                    let mut ctx = self.outputs.context(record.timestamp);
                    self.function
                        .process_element2(record.value, &mut ctx)
                        .map_err(|e| e.in_operator(&self.outputs.name))?;
                    self.outputs.flush_if_full(rt)?;
                }
            }
            other => {
                return Err(Error::InvalidJob(format!("operator '{}' has no input {other}", self.outputs.name)));
            }
        }
        self.outputs.flush(rt)
    }

    fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.outputs.watermark(watermark, rt)
    }
    fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.outputs.idleness(idle, rt)
    }
    fn time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.outputs.time(now, rt)
    }
    fn next_time(&self) -> Option<Timestamp> {
        self.outputs.next_time()
    }
    fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.outputs.end(rt)
    }
    fn close(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        let closed = self.function.close();
        self.outputs.close(closed, rt)
    }
    fn snapshot(
        &mut self,
        checkpoint: CheckpointId,
        into: &mut Vec<OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        self.outputs.snapshot(checkpoint, into, rt)
    }
}

/// Implements the `Downstream` control methods of a rich one-input operator: `open` and `close`
/// call the function's hooks; the rest forward to `self.out` (`forward_control!`).
macro_rules! rich_control {
    () => {
        fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
            self.function.open(&RuntimeContext { rt, operator: &self.name })?;
            self.out.open(rt)
        }
        fn close(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
            let closed = self.function.close();
            closed.and(self.out.close(rt))
        }
        fn snapshot(
            &mut self,
            checkpoint: CheckpointId,
            into: &mut Vec<OperatorSnapshot>,
            rt: &mut dyn TaskRuntime,
        ) -> Result<()> {
            self.out.snapshot(checkpoint, into, rt)
        }
        crate::operators::forward_control!(out, events);
    };
}

/// `stream.map_rich(f)`.
pub(crate) struct RichMapOperator<I, O, F> {
    pub(crate) function: F,
    pub(crate) out: Output<O>,
    pub(crate) name: String,
    pub(crate) _input: std::marker::PhantomData<fn(I)>,
}

impl<I, O, F> Downstream<I> for RichMapOperator<I, O, F>
where
    I: crate::Data,
    O: crate::Data,
    F: RichMapFunction<I, O>,
{
    fn push(&mut self, batch: &mut Vec<StreamRecord<I>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.out.buffer.reserve(batch.len());
        for record in batch.drain(..) {
            let value = self.function.map(record.value).map_err(|e| e.in_operator(&self.name))?;
            self.out.buffer.push(StreamRecord { timestamp: record.timestamp, value });
        }
        self.out.flush(rt)
    }
    rich_control!();
}

/// `stream.filter_rich(f)`.
pub(crate) struct RichFilterOperator<T, F> {
    pub(crate) function: F,
    pub(crate) out: Output<T>,
    pub(crate) name: String,
}

impl<T, F> Downstream<T> for RichFilterOperator<T, F>
where
    T: crate::Data,
    F: RichFilterFunction<T>,
{
    fn push(&mut self, batch: &mut Vec<StreamRecord<T>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        let mut failed = None;
        let function = &mut self.function;
        batch.retain(|r| {
            if failed.is_some() {
                return false;
            }
            function.filter(&r.value).unwrap_or_else(|e| {
                failed = Some(e.in_operator(&self.name));
                false
            })
        });
        if let Some(error) = failed {
            batch.clear();
            return Err(error);
        }
        if !batch.is_empty() {
            self.out.downstream.push(batch, rt)?;
        }
        batch.clear();
        Ok(())
    }
    rich_control!();
}

/// `stream.flat_map_rich(f)`.
pub(crate) struct RichFlatMapOperator<I, O, F> {
    pub(crate) function: F,
    pub(crate) out: Output<O>,
    pub(crate) name: String,
    pub(crate) _input: std::marker::PhantomData<fn(I)>,
}

impl<I, O, F> Downstream<I> for RichFlatMapOperator<I, O, F>
where
    I: crate::Data,
    O: crate::Data,
    F: RichFlatMapFunction<I, O>,
{
    fn push(&mut self, batch: &mut Vec<StreamRecord<I>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        for record in batch.drain(..) {
            let mut collector = Collector::new(&mut self.out.buffer, record.timestamp);
            self.function.flat_map(record.value, &mut collector).map_err(|e| e.in_operator(&self.name))?;
            if collector.refused_side_output {
                return Err(Error::InvalidJob(format!(
                    "flat map '{}' has no side outputs: emit them from a process function",
                    self.name
                )));
            }
            if self.out.buffer.len() >= FLUSH_AT {
                self.out.flush(rt)?;
            }
        }
        self.out.flush(rt)
    }
    rich_control!();
}
