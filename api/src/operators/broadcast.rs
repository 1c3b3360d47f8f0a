//! The two-input operators of the broadcast state pattern: input 0 is the processed stream
//! (keyed or not), input 1 the broadcast stream. The broadcast state is the operator's non-keyed
//! snapshot state; every subtask restores a copy (see [`BroadcastState::restore`]).

use crate::broadcast::BroadcastState;
use crate::chain::{HeadOperator, Output, StreamRecord, min_time};
use crate::codec::take_batch;
use crate::error::{Error, Result};
use crate::functions::{
    BroadcastProcessFunction, Collector, KeyedBroadcastProcessFunction, ProcessContext, RuntimeContext,
};
use crate::operators::keyed::KeyedHarness;
use crate::operators::process::ProcessOutputs;
use crate::operators::side_outputs::SideOutputs;
use crate::runtime::{CheckpointId, InputBatch, OperatorSnapshot, SourceStatus, TaskRuntime};
use crate::time::Timestamp;
use std::sync::Arc;

/// `stream.connect(&rules.broadcast_state(..)).process(f)` on a non-keyed stream.
pub(crate) struct BroadcastProcessHead<A, B, O, F> {
    pub(crate) function: F,
    pub(crate) uid: String,
    pub(crate) state: BroadcastState,
    pub(crate) first: Vec<StreamRecord<A>>,
    pub(crate) second: Vec<StreamRecord<B>>,
    pub(crate) outputs: ProcessOutputs<O>,
}

impl<A, B, O, F> HeadOperator for BroadcastProcessHead<A, B, O, F>
where
    A: crate::Data,
    B: crate::Data,
    O: crate::Data,
    F: BroadcastProcessFunction<A, B, O>,
{
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        if let Some(restored) = rt.restored_state(&self.uid) {
            self.state = BroadcastState::restore(&restored.operator_states)?;
        }
        self.function.open(&RuntimeContext { rt, operator: &self.outputs.name })?;
        self.outputs.open(rt)
    }

    fn poll_source(&mut self, _rt: &mut dyn TaskRuntime) -> Result<SourceStatus> {
        Err(Error::InvalidJob(format!("operator '{}' is not a source", self.outputs.name)))
    }

    fn process_batch(&mut self, input: usize, batch: InputBatch<'_>, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.outputs.now = rt.processing_time();
        let name = self.outputs.name.clone();
        match input {
            0 => {
                take_batch(batch, &mut self.first, &name)?;
                rt.add_records_in(self.first.len() as u64);
                for record in self.first.drain(..) {
                    let mut ctx = self.outputs.context(record.timestamp);
                    self.function
                        .process_element(record.value, &mut ctx, &self.state)
                        .map_err(|e| e.in_operator(&name))?;
                    self.outputs.flush_if_full(rt)?;
                }
            }
            1 => {
                take_batch(batch, &mut self.second, &name)?;
                rt.add_records_in(self.second.len() as u64);
                for record in self.second.drain(..) {
                    let mut ctx = self.outputs.context(record.timestamp);
                    self.function
                        .process_broadcast_element(record.value, &mut ctx, &mut self.state)
                        .map_err(|e| e.in_operator(&name))?;
                    self.outputs.flush_if_full(rt)?;
                }
            }
            other => return Err(Error::InvalidJob(format!("operator '{name}' has no input {other}"))),
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
        into.push(OperatorSnapshot {
            uid: self.uid.clone(),
            keyed: Vec::new(),
            operator_state: self.state.snapshot()?,
        });
        self.outputs.snapshot(checkpoint, into, rt)
    }
}

/// `keyed.connect(&rules.broadcast_state(..)).process(f)`.
pub(crate) struct KeyedBroadcastProcessHead<K, A, B, O, KA, F> {
    pub(crate) key: Arc<KA>,
    pub(crate) function: F,
    pub(crate) harness: KeyedHarness<K>,
    pub(crate) state: BroadcastState,
    pub(crate) first: Vec<StreamRecord<A>>,
    pub(crate) second: Vec<StreamRecord<B>>,
    pub(crate) out: Output<O>,
    pub(crate) side: SideOutputs,
}

impl<K, A, B, O, KA, F> HeadOperator for KeyedBroadcastProcessHead<K, A, B, O, KA, F>
where
    K: crate::Data,
    A: crate::Data,
    B: crate::Data,
    O: crate::Data,
    KA: Fn(&A) -> K + Send + Sync + 'static,
    F: KeyedBroadcastProcessFunction<K, A, B, O>,
{
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        if let Some(restored) = self.harness.open(rt)? {
            self.state = BroadcastState::restore(&restored.operator_states)?;
        }
        self.function.open(&RuntimeContext { rt, operator: &self.harness.name })?;
        self.side.open(rt)?;
        self.out.open(rt)
    }

    fn poll_source(&mut self, _rt: &mut dyn TaskRuntime) -> Result<SourceStatus> {
        Err(Error::InvalidJob(format!("operator '{}' is not a source", self.harness.name)))
    }

    fn process_batch(&mut self, input: usize, batch: InputBatch<'_>, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.harness.now = rt.processing_time();
        let name = self.harness.name.clone();
        match input {
            0 => {
                take_batch(batch, &mut self.first, &name)?;
                rt.add_records_in(self.first.len() as u64);
                for record in std::mem::take(&mut self.first) {
                    self.harness.set_key((self.key)(&record.value))?;
                    let mut ctx = self.harness.context(&mut self.out.buffer, &mut self.side, record.timestamp, None)?;
                    self.function
                        .process_element(record.value, &mut ctx, &self.state)
                        .map_err(|e| e.in_operator(&name))?;
                    if self.out.buffer.len() >= 4096 {
                        self.out.flush(rt)?;
                    }
                    self.side.flush_if_full(rt)?;
                }
            }
            1 => {
                take_batch(batch, &mut self.second, &name)?;
                rt.add_records_in(self.second.len() as u64);
                for record in std::mem::take(&mut self.second) {
                    let mut ctx = ProcessContext {
                        timestamp: record.timestamp,
                        watermark: self.harness.watermark,
                        now: self.harness.now,
                        out: Collector::new(&mut self.out.buffer, record.timestamp),
                        side: &mut self.side,
                    };
                    self.function
                        .process_broadcast_element(record.value, &mut ctx, &mut self.state)
                        .map_err(|e| e.in_operator(&name))?;
                    self.side.flush_if_full(rt)?;
                }
            }
            other => return Err(Error::InvalidJob(format!("operator '{name}' has no input {other}"))),
        }
        self.harness.clean_up_expired()?;
        self.side.flush(rt)?;
        self.out.flush(rt)
    }

    fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        let (function, state) = (&mut self.function, &self.state);
        self.harness.advance_watermark(watermark, (&mut self.out, &mut self.side), rt, |ts, ctx| {
            function.on_timer(ts, ctx, state)
        })
    }

    fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.side.idleness(idle, rt)?;
        self.out.idleness(idle, rt)
    }

    fn time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        let (function, state) = (&mut self.function, &self.state);
        self.harness.advance_time(now, (&mut self.out, &mut self.side), rt, |ts, ctx| function.on_timer(ts, ctx, state))
    }

    fn next_time(&self) -> Option<Timestamp> {
        min_time(min_time(self.harness.next_processing_time(), self.side.next_time()), self.out.next_time())
    }

    fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.side.end(rt)?;
        self.out.end(rt)
    }

    fn close(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        let closed = self.function.close();
        closed.and(self.side.close(rt)).and(self.out.close(rt))
    }

    fn snapshot(
        &mut self,
        checkpoint: CheckpointId,
        into: &mut Vec<OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        self.harness.now = rt.processing_time();
        let mut snapshot = self.harness.snapshot()?;
        snapshot.operator_state = self.state.snapshot()?;
        into.push(snapshot);
        self.side.snapshot(checkpoint, into, rt)?;
        self.out.snapshot(checkpoint, into, rt)
    }
}
