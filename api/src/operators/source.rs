//! Source heads: pull records from a taskmanager-side reader (generator, files) or from data the
//! job carries (collections, scripted timed events), and push them into the chain.

use super::split_watermarks::{ReadingClock, SplitWatermarks};
use crate::chain::{HeadOperator, Output, StreamRecord};
use crate::connectors::SourceDescriptor;
use crate::connectors::kafka::MalformedPolicy;
use crate::error::{Error, Result};
use crate::runtime::{LogLevel, MalformedRecord, RawBatch, SourceReader, SourceStatus, TaskRuntime};
use crate::stream::TimedEvent;
use crate::time::{MAX_WATERMARK, NO_TIMESTAMP, WatermarkStrategy, duration_ms};
use std::sync::Arc;

/// Records per poll.
pub(crate) const SOURCE_BATCH: usize = 1024;

/// What a conversion produces besides the records: the split of each record (for sources with
/// watermarks per split) and the records that could not be deserialized.
#[derive(Debug, Default)]
pub(crate) struct Converted {
    pub(crate) splits: Vec<u32>,
    pub(crate) malformed: Vec<MalformedRecord>,
}

/// Turns a raw batch from a taskmanager-side reader into typed records.
pub(crate) type ConvertRaw<T> = Arc<dyn Fn(&mut RawBatch, &mut Vec<StreamRecord<T>>, &mut Converted) + Send + Sync>;

impl<T> Clone for SourceKind<T> {
    fn clone(&self) -> Self {
        match self {
            Self::External { descriptor, convert, watermarks } => Self::External {
                descriptor: descriptor.clone(),
                convert: convert.clone(),
                watermarks: watermarks.clone(),
            },
            Self::Collection(items) => Self::Collection(items.clone()),
            Self::Timed(events) => Self::Timed(events.clone()),
        }
    }
}

#[allow(clippy::large_enum_variant, reason = "one per source operator, built once, never in a hot path")]
pub(crate) enum SourceKind<T> {
    External {
        descriptor: SourceDescriptor,
        convert: ConvertRaw<T>,
        /// A strategy run per split inside the source (Kafka); `None`: watermarks come from
        /// downstream `assign_timestamps_and_watermarks`.
        watermarks: Option<WatermarkStrategy<T>>,
    },
    Collection(Arc<Vec<T>>),
    Timed(Arc<Vec<TimedEvent<T>>>),
}

pub(crate) struct SourceHead<T> {
    pub(crate) kind: SourceKind<T>,
    pub(crate) reader: Option<Box<dyn SourceReader>>,
    pub(crate) raw: RawBatch,
    converted: Converted,
    split_watermarks: Option<SplitWatermarks<T>>,
    /// The clock split idleness runs on.
    reading_clock: ReadingClock,
    /// Records skipped as malformed (policy `Skip`).
    skipped: u64,
    /// Flink's `numRecordsInErrors` of sources with a malformed-record policy: records skipped
    /// or sent to the dead-letter topic.
    errors: Option<crate::metrics::Counter>,
    pub(crate) position: usize,
    pub(crate) finished: bool,
    pub(crate) out: Output<T>,
    pub(crate) name: String,
    pub(crate) uid: String,
}

impl<T> SourceHead<T> {
    pub(crate) fn new(kind: SourceKind<T>, out: Output<T>, name: &str, uid: &str) -> Self {
        let split_watermarks = match &kind {
            SourceKind::External { watermarks: Some(strategy), .. } => Some(SplitWatermarks::new(strategy.clone())),
            _ => None,
        };
        Self {
            kind,
            reader: None,
            raw: RawBatch::default(),
            converted: Converted::default(),
            split_watermarks,
            reading_clock: ReadingClock::default(),
            skipped: 0,
            errors: None,
            position: 0,
            finished: false,
            out,
            name: name.to_owned(),
            uid: uid.to_owned(),
        }
    }
}

/// How many malformed records a source logs one by one before only counting them.
const LOGGED_MALFORMED: u64 = 10;

impl<T: crate::Data> SourceHead<T> {
    /// Applies the source's policy to the records of the last batch that did not deserialize.
    #[cold]
    #[inline(never)]
    fn malformed(&mut self, policy: &MalformedPolicy, rt: &mut dyn TaskRuntime) -> Result<()> {
        let describe = |raw: &RawBatch, m: &MalformedRecord| match raw.kafka.records.get(m.index) {
            Some(r) => format!(
                "topic {}, partition {}, offset {}: {}",
                raw.kafka.topics.get(r.topic as usize).map_or("?", String::as_str),
                r.partition,
                r.offset,
                m.error
            ),
            None => m.error.clone(),
        };
        match policy {
            MalformedPolicy::Fail => Err(Error::InvalidJob(format!(
                "source '{}': malformed record in {} (the source's policy is to fail; skip or dead-letter such \
                 records with on_malformed)",
                self.name,
                describe(&self.raw, &self.converted.malformed[0])
            ))),
            MalformedPolicy::Skip => {
                if let Some(errors) = &self.errors {
                    errors.inc_by(self.converted.malformed.len() as u64);
                }
                for m in &self.converted.malformed {
                    self.skipped += 1;
                    if self.skipped <= LOGGED_MALFORMED {
                        rt.log(
                            LogLevel::Warn,
                            &format!("source '{}' skips a malformed record in {}", self.name, describe(&self.raw, m)),
                        );
                    }
                }
                Ok(())
            }
            MalformedPolicy::DeadLetter { topic } => {
                let reader =
                    self.reader.as_mut().ok_or_else(|| Error::InvalidJob("source polled before open".into()))?;
                reader.dead_letter(topic, &self.raw, &self.converted.malformed)?;
                if let Some(errors) = &self.errors {
                    errors.inc_by(self.converted.malformed.len() as u64);
                }
                Ok(())
            }
        }
    }

    fn finish(&mut self, rt: &mut dyn TaskRuntime) -> Result<SourceStatus> {
        self.finished = true;
        self.out.flush(rt)?;
        self.out.watermark(MAX_WATERMARK, rt)?;
        Ok(SourceStatus::Finished)
    }
}

impl<T: crate::Data> HeadOperator for SourceHead<T> {
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        let restored = rt.restored_state(&self.uid);
        if let SourceKind::External { descriptor, .. } = &self.kind {
            if let SourceDescriptor::Kafka(spec) = descriptor
                && spec.malformed != MalformedPolicy::Fail
            {
                let errors = crate::metrics::Counter::default();
                rt.register_metric(
                    &self.name,
                    "numRecordsInErrors",
                    crate::metrics::UserMetric::Counter(errors.clone()),
                )?;
                self.errors = Some(errors);
            }
            let mut reader = rt.open_source(descriptor)?;
            if let Some(state) = &restored {
                reader.restore(&state.operator_states)?;
            }
            self.reader = Some(reader);
        } else if let Some(state) = &restored {
            let [position] = state.operator_states.as_slice() else {
                return Err(Error::InvalidJob(format!(
                    "source '{}': restored {} positions; a collection source restores only at the parallelism it ran \
                     with",
                    self.name,
                    state.operator_states.len()
                )));
            };
            let position: u64 = crate::codec::decode(position, "source position")?;
            self.position = usize::try_from(position).map_err(|_| {
                Error::InvalidJob(format!("source '{}': restored position {position} is too large", self.name))
            })?;
        }
        self.out.open(rt)
    }

    fn poll_source(&mut self, rt: &mut dyn TaskRuntime) -> Result<SourceStatus> {
        if self.finished {
            return Ok(SourceStatus::Finished);
        }
        let info = rt.info();
        let (subtask, parallelism) = (info.subtask as usize, info.parallelism as usize);
        match &self.kind {
            SourceKind::External { convert, descriptor, .. } => {
                let reader =
                    self.reader.as_mut().ok_or_else(|| Error::InvalidJob("source polled before open".into()))?;
                self.raw.clear();
                self.converted.splits.clear();
                self.converted.malformed.clear();
                let raw = &mut self.raw;
                let status = self.reading_clock.reading(|| reader.read(SOURCE_BATCH, raw))?;
                if matches!(status, SourceStatus::WaitUntil(_)) {
                    self.reading_clock.wait();
                }
                convert(&mut self.raw, &mut self.out.buffer, &mut self.converted);
                if !self.converted.malformed.is_empty() {
                    let policy = match descriptor {
                        SourceDescriptor::Kafka(spec) => spec.malformed.clone(),
                        _ => MalformedPolicy::Fail,
                    };
                    self.malformed(&policy, rt)?;
                }
                rt.add_records_in(self.out.buffer.len() as u64);
                match self.split_watermarks.as_mut() {
                    Some(watermarks) => {
                        let now = self.reading_clock.now();
                        watermarks.observe(&mut self.out.buffer, &self.converted.splits, &self.raw.splits, now);
                        if !self.out.buffer.is_empty() {
                            watermarks.before_records(&mut self.out, rt)?;
                        }
                        self.out.flush(rt)?;
                        watermarks.emit(&mut self.out, now, rt)?;
                    }
                    None => self.out.flush(rt)?,
                }
                match status {
                    SourceStatus::Finished => self.finish(rt),
                    other => Ok(other),
                }
            }
            SourceKind::Collection(items) => {
                let items = items.clone();
                let mut index = subtask + self.position * parallelism;
                let mut emitted = 0;
                while index < items.len() && emitted < SOURCE_BATCH {
                    self.out.emit(items[index].clone(), NO_TIMESTAMP);
                    self.position += 1;
                    emitted += 1;
                    index += parallelism;
                }
                rt.add_records_in(emitted as u64);
                self.out.flush(rt)?;
                if index >= items.len() { self.finish(rt) } else { Ok(SourceStatus::Ready) }
            }
            SourceKind::Timed(events) => {
                let events = events.clone();
                let Some(event) = events.get(self.position) else {
                    return self.finish(rt);
                };
                self.position += 1;
                match event {
                    TimedEvent::Record { value, timestamp } => {
                        self.out.emit(value.clone(), *timestamp);
                        rt.add_records_in(1);
                        self.out.flush(rt)?;
                        Ok(SourceStatus::Ready)
                    }
                    TimedEvent::Watermark(watermark) => {
                        self.out.watermark(*watermark, rt)?;
                        Ok(SourceStatus::Ready)
                    }
                    TimedEvent::Pause(pause) => {
                        let until = rt.processing_time().saturating_add(duration_ms(*pause));
                        Ok(SourceStatus::WaitUntil(until))
                    }
                }
            }
        }
    }

    crate::operators::source_control!();

    fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        if !self.finished {
            self.finish(rt)?;
        }
        if self.skipped > 0 {
            rt.log(LogLevel::Warn, &format!("source '{}' skipped {} malformed records", self.name, self.skipped));
        }
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
        self.out.flush(rt)?;
        let operator_state = match (&self.kind, &mut self.reader) {
            (SourceKind::External { .. }, Some(reader)) => {
                let position = reader.position();
                reader.checkpoint(checkpoint);
                position
            }
            _ => {
                let mut bytes = Vec::new();
                crate::codec::encode_into(&(self.position as u64), &mut bytes, "source position")?;
                bytes
            }
        };
        into.push(crate::runtime::OperatorSnapshot { uid: self.uid.clone(), keyed: Vec::new(), operator_state });
        self.out.snapshot(checkpoint, into, rt)
    }
}
