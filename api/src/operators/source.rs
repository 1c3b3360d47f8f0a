//! Source heads: pull records from a taskmanager-side reader (generator, files) or from data the
//! job carries (collections, scripted timed events), and push them into the chain.

use crate::chain::{HeadOperator, Output, StreamRecord};
use crate::connectors::SourceDescriptor;
use crate::error::{Error, Result};
use crate::runtime::{RawBatch, SourceReader, SourceStatus, TaskRuntime};
use crate::stream::TimedEvent;
use crate::time::{MAX_WATERMARK, NO_TIMESTAMP, Timestamp, duration_ms};
use std::sync::Arc;

/// Records per poll.
pub(crate) const SOURCE_BATCH: usize = 1024;

/// Turns a raw batch from a taskmanager-side reader into typed records.
pub(crate) type ConvertRaw<T> = Arc<dyn Fn(&mut RawBatch, &mut Vec<StreamRecord<T>>) + Send + Sync>;

impl<T> Clone for SourceKind<T> {
    fn clone(&self) -> Self {
        match self {
            Self::External { descriptor, convert } => {
                Self::External { descriptor: descriptor.clone(), convert: convert.clone() }
            }
            Self::Collection(items) => Self::Collection(items.clone()),
            Self::Timed(events) => Self::Timed(events.clone()),
        }
    }
}

pub(crate) enum SourceKind<T> {
    External { descriptor: SourceDescriptor, convert: ConvertRaw<T> },
    Collection(Arc<Vec<T>>),
    Timed(Arc<Vec<TimedEvent<T>>>),
}

pub(crate) struct SourceHead<T> {
    pub(crate) kind: SourceKind<T>,
    pub(crate) reader: Option<Box<dyn SourceReader>>,
    pub(crate) raw: RawBatch,
    pub(crate) position: usize,
    pub(crate) finished: bool,
    pub(crate) out: Output<T>,
    pub(crate) name: String,
    pub(crate) uid: String,
}

impl<T> SourceHead<T> {
    pub(crate) fn new(kind: SourceKind<T>, out: Output<T>, name: &str, uid: &str) -> Self {
        Self {
            kind,
            reader: None,
            raw: RawBatch::default(),
            position: 0,
            finished: false,
            out,
            name: name.to_owned(),
            uid: uid.to_owned(),
        }
    }
}

impl<T: crate::Data> SourceHead<T> {
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
            let mut reader = rt.open_source(descriptor)?;
            if let Some(state) = &restored {
                reader.seek(&state.operator_state)?;
            }
            self.reader = Some(reader);
        } else if let Some(state) = &restored {
            let position: u64 = crate::codec::decode(&state.operator_state, "source position")?;
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
            SourceKind::External { convert, .. } => {
                let reader =
                    self.reader.as_mut().ok_or_else(|| Error::InvalidJob("source polled before open".into()))?;
                self.raw.clear();
                let status = reader.read(SOURCE_BATCH, &mut self.raw)?;
                convert(&mut self.raw, &mut self.out.buffer);
                rt.add_records_in(self.out.buffer.len() as u64);
                self.out.flush(rt)?;
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

    fn process_batch(
        &mut self,
        _input: usize,
        _batch: crate::runtime::InputBatch<'_>,
        _rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        Err(Error::InvalidJob(format!("source '{}' has no inputs", self.name)))
    }

    fn watermark(&mut self, _watermark: Timestamp, _rt: &mut dyn TaskRuntime) -> Result<()> {
        Ok(())
    }

    fn idleness(&mut self, _idle: bool, _rt: &mut dyn TaskRuntime) -> Result<()> {
        Ok(())
    }

    fn time(&mut self, now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.out.time(now, rt)
    }

    fn next_time(&self) -> Option<Timestamp> {
        self.out.next_time()
    }

    fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        if !self.finished {
            self.finish(rt)?;
        }
        self.out.end(rt)
    }

    fn snapshot(
        &mut self,
        checkpoint: crate::runtime::CheckpointId,
        into: &mut Vec<crate::runtime::OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        self.out.flush(rt)?;
        let operator_state = match (&self.kind, &self.reader) {
            (SourceKind::External { .. }, Some(reader)) => reader.position(),
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
