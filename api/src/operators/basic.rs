//! Stateless one-input operators: map, filter, flat_map.

use crate::chain::{Downstream, Output, StreamRecord};
use crate::error::Result;
use crate::functions::Collector;
use crate::runtime::TaskRuntime;
use std::sync::Arc;

pub(crate) struct MapOperator<I, O, F> {
    pub(crate) f: Arc<F>,
    pub(crate) out: Output<O>,
    pub(crate) _input: std::marker::PhantomData<fn(I)>,
}

impl<I, O, F> Downstream<I> for MapOperator<I, O, F>
where
    I: crate::Data,
    O: crate::Data,
    F: Fn(I) -> O + Send + Sync + 'static,
{
    fn push(&mut self, batch: &mut Vec<StreamRecord<I>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        let f = &*self.f;
        self.out.buffer.extend(batch.drain(..).map(|r| StreamRecord { timestamp: r.timestamp, value: f(r.value) }));
        self.out.flush(rt)
    }
    forward_control!(out);
}

pub(crate) struct FilterOperator<T, F> {
    pub(crate) f: Arc<F>,
    pub(crate) out: Output<T>,
}

impl<T, F> Downstream<T> for FilterOperator<T, F>
where
    T: crate::Data,
    F: Fn(&T) -> bool + Send + Sync + 'static,
{
    fn push(&mut self, batch: &mut Vec<StreamRecord<T>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        let f = &*self.f;
        batch.retain(|r| f(&r.value));
        if !batch.is_empty() {
            self.out.downstream.push(batch, rt)?;
        }
        batch.clear();
        Ok(())
    }
    forward_control!(out);
}

pub(crate) struct FlatMapOperator<I, O, F> {
    pub(crate) f: Arc<F>,
    pub(crate) out: Output<O>,
    pub(crate) _input: std::marker::PhantomData<fn(I)>,
}

impl<I, O, F> Downstream<I> for FlatMapOperator<I, O, F>
where
    I: crate::Data,
    O: crate::Data,
    F: Fn(I, &mut Collector<'_, O>) + Send + Sync + 'static,
{
    fn push(&mut self, batch: &mut Vec<StreamRecord<I>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        let f = &*self.f;
        for record in batch.drain(..) {
            let mut collector = Collector::new(&mut self.out.buffer, record.timestamp);
            f(record.value, &mut collector);
            if collector.refused_side_output {
                return Err(crate::Error::InvalidJob(
                    "a flat map has no side outputs: emit them from a process function".into(),
                ));
            }
            if self.out.buffer.len() >= 4096 {
                self.out.flush(rt)?;
            }
        }
        self.out.flush(rt)
    }
    forward_control!(out);
}
