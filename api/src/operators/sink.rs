//! Sinks: format records as lines, or serialize them as records with keys and headers (Kafka),
//! and hand them to the taskmanager's writer; or discard them.

use crate::chain::{Downstream, StreamRecord};
use crate::connectors::SinkDescriptor;
use crate::connectors::kafka::{KafkaRecordOut, KafkaSerializer};
use crate::error::{Error, Result};
use crate::runtime::{SinkRecords, SinkWriter, TaskRuntime};
use crate::time::NO_TIMESTAMP;
use std::fmt::Write as _;
use std::sync::Arc;

/// Formats one record as a line (without the newline).
pub(crate) type FormatFn<T> = Arc<dyn Fn(&T, &mut String) + Send + Sync>;

/// How a sink turns records into what its writer takes.
pub(crate) enum SinkFormat<T> {
    /// Lines (text files, stdout).
    Lines(FormatFn<T>),
    /// Records with keys, headers and topics (Kafka).
    Kafka(KafkaSerializer<T>),
}

impl<T> Clone for SinkFormat<T> {
    fn clone(&self) -> Self {
        match self {
            Self::Lines(f) => Self::Lines(f.clone()),
            Self::Kafka(s) => Self::Kafka(s.clone()),
        }
    }
}

pub(crate) struct SinkOperator<T> {
    pub(crate) uid: String,
    pub(crate) descriptor: SinkDescriptor,
    pub(crate) format: Option<SinkFormat<T>>,
    pub(crate) writer: Option<Box<dyn SinkWriter>>,
    pub(crate) line: String,
    pub(crate) bytes: Vec<u8>,
    pub(crate) records: SinkRecords,
    pub(crate) prefix: String,
}

impl<T> SinkOperator<T> {
    pub(crate) fn new(uid: &str, descriptor: SinkDescriptor, format: Option<SinkFormat<T>>) -> Self {
        Self {
            uid: uid.to_owned(),
            descriptor,
            format,
            writer: None,
            line: String::new(),
            bytes: Vec::new(),
            records: SinkRecords::default(),
            prefix: String::new(),
        }
    }
}

impl<T: crate::Data> Downstream<T> for SinkOperator<T> {
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        if self.descriptor != SinkDescriptor::Blackhole {
            if self.format.is_none() {
                return Err(Error::InvalidJob("text sink without a formatter".into()));
            }
            let restored = rt.restored_state(&self.uid).map(|s| s.operator_states).unwrap_or_default();
            self.writer = Some(rt.open_sink(&self.descriptor, &restored)?);
        }
        if self.descriptor == SinkDescriptor::Stdout && rt.info().parallelism > 1 {
            let _ = write!(self.prefix, "{}> ", rt.info().subtask + 1);
        }
        Ok(())
    }

    fn push(&mut self, batch: &mut Vec<StreamRecord<T>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        rt.add_records_out(batch.len() as u64);
        match (self.writer.as_mut(), self.format.as_ref()) {
            (Some(writer), Some(SinkFormat::Lines(format))) => {
                self.bytes.clear();
                for record in batch.iter() {
                    self.line.clear();
                    self.line.push_str(&self.prefix);
                    format(&record.value, &mut self.line);
                    self.bytes.extend_from_slice(self.line.as_bytes());
                    self.bytes.push(b'\n');
                }
                writer.write(&self.bytes)?;
            }
            (Some(writer), Some(SinkFormat::Kafka(serializer))) => {
                self.records.clear();
                for record in batch.iter() {
                    let timestamp = (record.timestamp != NO_TIMESTAMP).then_some(record.timestamp);
                    let mut out = KafkaRecordOut::new(&mut self.records, timestamp);
                    (serializer.0)(&record.value, &mut out);
                    out.finish();
                }
                writer.write_records(&self.records)?;
            }
            _ => {}
        }
        batch.clear();
        Ok(())
    }

    crate::operators::sink_events!();

    fn end(&mut self, _rt: &mut dyn TaskRuntime) -> Result<()> {
        if let Some(writer) = self.writer.as_mut() {
            writer.finish()?;
        }
        Ok(())
    }

    fn close(&mut self, _rt: &mut dyn TaskRuntime) -> Result<()> {
        // The writer's drop releases it (a finished writer committed; an unfinished one's
        // output stays pending or is discarded, as its protocol says).
        self.writer = None;
        Ok(())
    }

    fn snapshot(
        &mut self,
        checkpoint: crate::runtime::CheckpointId,
        into: &mut Vec<crate::runtime::OperatorSnapshot>,
        _rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        // Everything before the barrier was written: pre-commit it. The writer's state (what is
        // pending commit) is the sink's operator state.
        if let Some(writer) = self.writer.as_mut() {
            let operator_state = writer.pre_commit(checkpoint)?;
            if !operator_state.is_empty() {
                into.push(crate::runtime::OperatorSnapshot {
                    uid: self.uid.clone(),
                    keyed: Vec::new(),
                    operator_state,
                });
            }
        }
        Ok(())
    }
}
