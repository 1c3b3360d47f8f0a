//! Two-input operators (`connect`): each input is decoded into its own type.

use crate::chain::{HeadOperator, Output, StreamRecord, min_time};
use crate::codec::take_batch;
use crate::error::{Error, Result};
use crate::functions::{KeyedCoProcessFunction, RuntimeContext};
use crate::operators::keyed::KeyedHarness;
use crate::operators::side_outputs::SideOutputs;
use crate::runtime::{SourceStatus, TaskRuntime};
use crate::time::Timestamp;
use std::sync::Arc;

/// `connect(..).map(f1, f2)`.
pub(crate) struct CoMapHead<A, B, O, F1, F2> {
    pub(crate) f1: Arc<F1>,
    pub(crate) f2: Arc<F2>,
    pub(crate) first: Vec<StreamRecord<A>>,
    pub(crate) second: Vec<StreamRecord<B>>,
    pub(crate) out: Output<O>,
    pub(crate) name: String,
}

impl<A, B, O, F1, F2> HeadOperator for CoMapHead<A, B, O, F1, F2>
where
    A: crate::Data,
    B: crate::Data,
    O: crate::Data,
    F1: Fn(A) -> O + Send + Sync + 'static,
    F2: Fn(B) -> O + Send + Sync + 'static,
{
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.out.open(rt)
    }

    fn poll_source(&mut self, _rt: &mut dyn TaskRuntime) -> Result<SourceStatus> {
        Err(Error::InvalidJob(format!("operator '{}' is not a source", self.name)))
    }

    fn process_batch(
        &mut self,
        input: usize,
        batch: crate::runtime::InputBatch<'_>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        match input {
            0 => {
                take_batch(batch, &mut self.first, &self.name)?;
                rt.add_records_in(self.first.len() as u64);
                let f = &*self.f1;
                self.out
                    .buffer
                    .extend(self.first.drain(..).map(|r| StreamRecord { timestamp: r.timestamp, value: f(r.value) }));
            }
            1 => {
                take_batch(batch, &mut self.second, &self.name)?;
                rt.add_records_in(self.second.len() as u64);
                let f = &*self.f2;
                self.out
                    .buffer
                    .extend(self.second.drain(..).map(|r| StreamRecord { timestamp: r.timestamp, value: f(r.value) }));
            }
            other => {
                return Err(Error::InvalidJob(format!("operator '{}' has no input {other}", self.name)));
            }
        }
        self.out.flush(rt)
    }

    fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.out.watermark(watermark, rt)
    }
    fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.out.idleness(idle, rt)
    }
    fn time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.out.time(now, rt)
    }
    fn next_time(&self) -> Option<Timestamp> {
        self.out.next_time()
    }
    fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.out.end(rt)
    }
    fn close(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.out.close(rt)
    }
    fn snapshot(
        &mut self,
        checkpoint: crate::runtime::CheckpointId,
        into: &mut Vec<crate::runtime::OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        self.out.snapshot(checkpoint, into, rt)
    }
}

/// `connect(..).key_by(k1, k2).process(f)`.
pub(crate) struct KeyedCoProcessHead<K, A, B, O, K1, K2, F> {
    pub(crate) key1: Arc<K1>,
    pub(crate) key2: Arc<K2>,
    pub(crate) function: F,
    pub(crate) harness: KeyedHarness<K>,
    pub(crate) first: Vec<StreamRecord<A>>,
    pub(crate) second: Vec<StreamRecord<B>>,
    pub(crate) out: Output<O>,
    pub(crate) side: SideOutputs,
}

impl<K, A, B, O, K1, K2, F> HeadOperator for KeyedCoProcessHead<K, A, B, O, K1, K2, F>
where
    K: crate::Data,
    A: crate::Data,
    B: crate::Data,
    O: crate::Data,
    K1: Fn(&A) -> K + Send + Sync + 'static,
    K2: Fn(&B) -> K + Send + Sync + 'static,
    F: KeyedCoProcessFunction<K, A, B, O>,
{
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.harness.open(rt)?;
        self.function.open(&RuntimeContext { rt, operator: &self.harness.name })?;
        self.side.open(rt)?;
        self.out.open(rt)
    }

    fn poll_source(&mut self, _rt: &mut dyn TaskRuntime) -> Result<SourceStatus> {
        Err(Error::InvalidJob(format!("operator '{}' is not a source", self.harness.name)))
    }

    fn process_batch(
        &mut self,
        input: usize,
        batch: crate::runtime::InputBatch<'_>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        self.harness.now = rt.processing_time();
        match input {
            0 => {
                take_batch(batch, &mut self.first, &self.harness.name)?;
                rt.add_records_in(self.first.len() as u64);
                for record in std::mem::take(&mut self.first) {
                    self.harness.set_key((self.key1)(&record.value))?;
                    let mut ctx = self.harness.context(&mut self.out.buffer, &mut self.side, record.timestamp, None)?;
                    self.function.process_element1(record.value, &mut ctx)?;
                    self.side.flush_if_full(rt)?;
                }
            }
            1 => {
                take_batch(batch, &mut self.second, &self.harness.name)?;
                rt.add_records_in(self.second.len() as u64);
                for record in std::mem::take(&mut self.second) {
                    self.harness.set_key((self.key2)(&record.value))?;
                    let mut ctx = self.harness.context(&mut self.out.buffer, &mut self.side, record.timestamp, None)?;
                    self.function.process_element2(record.value, &mut ctx)?;
                    self.side.flush_if_full(rt)?;
                }
            }
            other => {
                return Err(Error::InvalidJob(format!("operator '{}' has no input {other}", self.harness.name)));
            }
        }
        self.harness.clean_up_expired()?;
        self.side.flush(rt)?;
        self.out.flush(rt)
    }

    fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        let function = &mut self.function;
        self.harness
            .advance_watermark(watermark, (&mut self.out, &mut self.side), rt, |ts, ctx| function.on_timer(ts, ctx))
    }

    fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.side.idleness(idle, rt)?;
        self.out.idleness(idle, rt)
    }

    fn time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        let function = &mut self.function;
        self.harness.advance_time(now, (&mut self.out, &mut self.side), rt, |ts, ctx| function.on_timer(ts, ctx))
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
        checkpoint: crate::runtime::CheckpointId,
        into: &mut Vec<crate::runtime::OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        self.harness.now = rt.processing_time();
        into.push(self.harness.snapshot()?);
        self.side.snapshot(checkpoint, into, rt)?;
        self.out.snapshot(checkpoint, into, rt)
    }
}
