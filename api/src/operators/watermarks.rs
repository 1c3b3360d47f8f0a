//! Timestamp assignment and watermark generation (`assign_timestamps_and_watermarks`).

use crate::chain::{Downstream, Output, StreamRecord, min_time};
use crate::error::Result;
use crate::runtime::TaskRuntime;
use crate::time::{MAX_WATERMARK, MIN_WATERMARK, Timestamp, WatermarkStrategy};

pub(crate) struct WatermarkAssigner<T> {
    pub(crate) strategy: WatermarkStrategy<T>,
    pub(crate) out: Output<T>,
    pub(crate) max_timestamp: Timestamp,
    pub(crate) emitted: Timestamp,
    pub(crate) last_record_at: Timestamp,
    pub(crate) idle: bool,
    pub(crate) next_check: Option<Timestamp>,
}

impl<T> WatermarkAssigner<T> {
    pub(crate) fn new(strategy: WatermarkStrategy<T>, out: Output<T>) -> Self {
        Self {
            strategy,
            out,
            max_timestamp: MIN_WATERMARK,
            emitted: MIN_WATERMARK,
            last_record_at: 0,
            idle: false,
            next_check: None,
        }
    }
}

impl<T: crate::Data> Downstream<T> for WatermarkAssigner<T> {
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        let now = rt.processing_time();
        self.last_record_at = now;
        if self.strategy.idleness_ms.is_some() {
            self.next_check = Some(now.saturating_add(self.strategy.interval_ms));
        }
        self.out.open(rt)
    }

    fn push(&mut self, batch: &mut Vec<StreamRecord<T>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.idle {
            self.idle = false;
            self.out.idleness(false, rt)?;
        }
        self.last_record_at = rt.processing_time();
        let mut max = self.max_timestamp;
        if let Some(assign) = &self.strategy.timestamp_fn {
            for record in batch.iter_mut() {
                record.timestamp = assign(&record.value, record.timestamp);
                max = max.max(record.timestamp);
            }
        } else {
            for record in batch.iter() {
                max = max.max(record.timestamp);
            }
        }
        self.max_timestamp = max;
        self.out.downstream.push(batch, rt)?;
        batch.clear();
        if max != MIN_WATERMARK {
            let watermark = max.saturating_sub(self.strategy.out_of_orderness_ms).saturating_sub(1);
            if watermark > self.emitted {
                self.emitted = watermark;
                self.out.watermark(watermark, rt)?;
            }
        }
        Ok(())
    }

    fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        // Upstream watermarks are replaced by the generated ones, except the final one.
        if watermark == MAX_WATERMARK && self.emitted < MAX_WATERMARK {
            self.emitted = MAX_WATERMARK;
            self.out.watermark(MAX_WATERMARK, rt)?;
        }
        Ok(())
    }

    fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.out.idleness(idle, rt)
    }

    fn time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        if let (Some(idle_ms), Some(check)) = (self.strategy.idleness_ms, self.next_check)
            && now >= check
        {
            if !self.idle && now.saturating_sub(self.last_record_at) >= idle_ms {
                self.idle = true;
                self.out.idleness(true, rt)?;
            }
            self.next_check = Some(now.saturating_add(self.strategy.interval_ms));
        }
        self.out.time(now, rt)
    }

    fn next_time(&self) -> Option<Timestamp> {
        min_time(self.next_check, self.out.next_time())
    }

    fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.next_check = None;
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
        // Like Flink's, watermark generators start afresh after a restore.
        self.out.snapshot(checkpoint, into, rt)
    }
}
