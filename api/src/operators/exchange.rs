//! The sending side of a task boundary: routes each record to a downstream channel (forward,
//! rebalance, hash by key group, broadcast) and hands full (or, at the end of each input batch,
//! partial) batches to the runtime.
//!
//! A channel to a task of the same process gets the records as Rust values (no serialization);
//! a channel to another process gets them serialized into one buffer per channel.

use crate::chain::{Downstream, StreamRecord};
use crate::codec::encode_record;
use crate::error::{Error, Result};
use crate::factory::KeyBytesFn;
use crate::graph::Partitioning;
use crate::keygroup::{key_group_for_key_bytes, subtask_for_key_group};
use crate::runtime::{TaskInfo, TaskRuntime, TypedBatch};
use crate::time::Timestamp;

/// A serialized channel buffer is sent once it holds this many bytes.
const FLUSH_BYTES: usize = 32 * 1024;
/// A typed channel buffer is sent once it holds this many records.
const FLUSH_RECORDS: usize = 1024;

/// What is waiting to be sent on one channel.
enum Pending<T> {
    /// Not opened yet.
    Unopened,
    /// Serialized records and how many.
    Bytes(Vec<u8>, usize),
    /// Records as values.
    Records(Vec<StreamRecord<T>>),
}

pub(crate) struct NetworkOutput<T> {
    task_output: usize,
    partitioning: Partitioning,
    channels: u32,
    max_parallelism: u32,
    key: Option<KeyBytesFn<T>>,
    key_buffer: Vec<u8>,
    pending: Vec<Pending<T>>,
    next_channel: u32,
    own_subtask: u32,
    what: String,
}

impl<T: crate::Data> NetworkOutput<T> {
    pub(crate) fn new(
        task_output: usize,
        channels: u32,
        partitioning: Partitioning,
        key: Option<KeyBytesFn<T>>,
        info: &TaskInfo,
    ) -> Result<Self> {
        if partitioning == Partitioning::Auto {
            return Err(Error::InvalidJob("edge partitioning was not resolved by the planner".into()));
        }
        if partitioning == Partitioning::Hash && key.is_none() {
            return Err(Error::InvalidJob("hash edge without a key selector".into()));
        }
        if channels == 0 {
            return Err(Error::InvalidJob("edge to an operator with parallelism 0".into()));
        }
        if partitioning == Partitioning::Forward && channels != info.parallelism {
            return Err(Error::InvalidJob(format!(
                "forward edge from '{}' between parallelism {} and {channels}",
                info.task_name, info.parallelism
            )));
        }
        Ok(Self {
            task_output,
            partitioning,
            channels,
            max_parallelism: info.max_parallelism,
            key,
            key_buffer: Vec::new(),
            pending: (0..channels).map(|_| Pending::Unopened).collect(),
            // Start round robin at the own index so that subtasks do not all hit channel 0 first.
            next_channel: info.subtask % channels,
            own_subtask: info.subtask,
            what: format!("record sent by '{}'", info.task_name),
        })
    }

    fn send(&mut self, channel: usize, rt: &mut dyn TaskRuntime) -> Result<()> {
        match &mut self.pending[channel] {
            Pending::Bytes(buffer, records) if *records > 0 => {
                let count = std::mem::take(records);
                let batch = std::mem::replace(buffer, Vec::with_capacity(FLUSH_BYTES + 1024));
                rt.send_batch(self.task_output, channel, batch, count)
            }
            Pending::Records(records) if !records.is_empty() => {
                let count = records.len();
                let batch = std::mem::replace(records, Vec::with_capacity(FLUSH_RECORDS));
                rt.send_records(self.task_output, channel, TypedBatch::new(batch), count)
            }
            _ => Ok(()),
        }
    }

    fn flush_all(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        for channel in 0..self.pending.len() {
            self.send(channel, rt)?;
        }
        Ok(())
    }

    /// Queues `record` (taken by value) on `channel`.
    #[inline]
    fn write(&mut self, channel: usize, record: StreamRecord<T>, rt: &mut dyn TaskRuntime) -> Result<()> {
        let full = match &mut self.pending[channel] {
            Pending::Records(records) => {
                records.push(record);
                records.len() >= FLUSH_RECORDS
            }
            Pending::Bytes(buffer, count) => {
                encode_record(record.timestamp, &record.value, buffer, &self.what)?;
                *count += 1;
                buffer.len() >= FLUSH_BYTES
            }
            Pending::Unopened => return Err(Error::InvalidJob(format!("output of '{}' used before open", self.what))),
        };
        if full {
            self.send(channel, rt)?;
        }
        Ok(())
    }

    #[inline]
    fn hash_channel(&mut self, value: &T) -> Result<usize> {
        let key = self.key.as_ref().ok_or_else(|| Error::InvalidJob("hash edge without a key selector".into()))?;
        self.key_buffer.clear();
        key(value, &mut self.key_buffer)?;
        let key_group = key_group_for_key_bytes(&self.key_buffer, self.max_parallelism);
        Ok(subtask_for_key_group(key_group, self.max_parallelism, self.channels) as usize)
    }
}

impl<T: crate::Data> Downstream<T> for NetworkOutput<T> {
    fn open(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        for (channel, pending) in self.pending.iter_mut().enumerate() {
            *pending = if rt.is_local(self.task_output, channel) {
                Pending::Records(Vec::with_capacity(FLUSH_RECORDS))
            } else {
                Pending::Bytes(Vec::with_capacity(FLUSH_BYTES + 1024), 0)
            };
        }
        Ok(())
    }

    fn push(&mut self, batch: &mut Vec<StreamRecord<T>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        match self.partitioning {
            Partitioning::Forward | Partitioning::Auto => {
                let channel = self.own_subtask as usize;
                if let Pending::Records(records) = &mut self.pending[channel]
                    && records.is_empty()
                {
                    // Hand the whole batch over without copying it record by record.
                    std::mem::swap(records, batch);
                    return self.flush_all(rt);
                }
                for record in batch.drain(..) {
                    self.write(channel, record, rt)?;
                }
            }
            Partitioning::Rebalance => {
                for record in std::mem::take(batch) {
                    let channel = self.next_channel as usize;
                    self.next_channel = (self.next_channel + 1) % self.channels;
                    self.write(channel, record, rt)?;
                }
            }
            Partitioning::Hash => {
                for record in std::mem::take(batch) {
                    let channel = self.hash_channel(&record.value)?;
                    self.write(channel, record, rt)?;
                }
            }
            Partitioning::Broadcast => {
                for record in std::mem::take(batch) {
                    for channel in 1..self.channels as usize {
                        self.write(channel, record.clone(), rt)?;
                    }
                    self.write(0, record, rt)?;
                }
            }
        }
        self.flush_all(rt)
    }

    fn watermark(&mut self, watermark: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.flush_all(rt)?;
        rt.send_watermark(self.task_output, watermark)
    }

    fn idleness(&mut self, idle: bool, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.flush_all(rt)?;
        rt.send_idleness(self.task_output, idle)
    }

    fn time(&mut self, _now: Timestamp, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.flush_all(rt)
    }

    fn next_time(&self) -> Option<Timestamp> {
        None
    }

    fn end(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        self.flush_all(rt)
    }

    fn close(&mut self, _rt: &mut dyn TaskRuntime) -> Result<()> {
        Ok(())
    }

    fn snapshot(
        &mut self,
        _checkpoint: crate::runtime::CheckpointId,
        _into: &mut Vec<crate::runtime::OperatorSnapshot>,
        rt: &mut dyn TaskRuntime,
    ) -> Result<()> {
        // Everything before the barrier goes out before it.
        self.flush_all(rt)
    }
}
