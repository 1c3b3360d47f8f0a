//! The operator of a sink the job implements ([`SinkFunction`], at least once).

use crate::chain::{Downstream, StreamRecord};
use crate::error::Result;
use crate::functions::RuntimeContext;
use crate::runtime::{CheckpointId, OperatorSnapshot, TaskRuntime};
use crate::source::SinkFunction;
use crate::time::{NO_TIMESTAMP, Timestamp};

pub(crate) struct CustomSinkOperator<S> {
    pub(crate) sink: S,
    pub(crate) name: String,
}

impl<T: crate::Data, S: SinkFunction<T>> Downstream<T> for CustomSinkOperator<S> {
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.sink.open(&RuntimeContext { rt, operator: &self.name })
    }

    fn push(&mut self, batch: &mut Vec<StreamRecord<T>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        rt.add_records_out(batch.len() as u64);
        for record in batch.drain(..) {
            let timestamp = (record.timestamp != NO_TIMESTAMP).then_some(record.timestamp);
            self.sink.write(record.value, timestamp).map_err(|e| e.in_operator(&self.name))?;
        }
        Ok(())
    }

    fn watermark(&mut self, _watermark: Timestamp, _rt: &mut dyn TaskRuntime) -> Result<()> {
        Ok(())
    }
    fn idleness(&mut self, _idle: bool, _rt: &mut dyn TaskRuntime) -> Result<()> {
        Ok(())
    }
    fn time(&mut self, _now: Timestamp, _rt: &mut dyn TaskRuntime) -> Result<()> {
        Ok(())
    }
    fn next_time(&self) -> Option<Timestamp> {
        None
    }
    fn end(&mut self, _rt: &mut dyn TaskRuntime) -> Result<()> {
        self.sink.flush().map_err(|e| e.in_operator(&self.name))
    }
    fn close(&mut self, _rt: &mut dyn TaskRuntime) -> Result<()> {
        self.sink.close().map_err(|e| e.in_operator(&self.name))
    }
    fn snapshot(
        &mut self,
        _checkpoint: CheckpointId,
        _into: &mut Vec<OperatorSnapshot>,
        _rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        // Everything before the barrier is durable before the barrier goes on.
        self.sink.flush().map_err(|e| e.in_operator(&self.name))
    }
}
