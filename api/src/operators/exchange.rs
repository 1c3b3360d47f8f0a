//! The sending side of a task boundary: serializes records into one buffer per downstream channel
//! and hands full (or, at the end of each input batch, partial) buffers to the runtime.

use crate::chain::{Downstream, StreamRecord};
use crate::codec::encode_record;
use crate::error::{Error, Result};
use crate::factory::KeyBytesFn;
use crate::graph::Partitioning;
use crate::keygroup::{key_group_for_key_bytes, subtask_for_key_group};
use crate::runtime::{TaskInfo, TaskRuntime};
use crate::time::Timestamp;

/// A channel buffer is sent once it holds this many bytes.
const FLUSH_BYTES: usize = 32 * 1024;

pub(crate) struct NetworkOutput<T> {
    task_output: usize,
    partitioning: Partitioning,
    channels: u32,
    max_parallelism: u32,
    key: Option<KeyBytesFn<T>>,
    key_buffer: Vec<u8>,
    buffers: Vec<Vec<u8>>,
    counts: Vec<usize>,
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
            buffers: (0..channels).map(|_| Vec::new()).collect(),
            counts: vec![0; channels as usize],
            // Start round robin at the own index so that subtasks do not all hit channel 0 first.
            next_channel: info.subtask % channels,
            own_subtask: info.subtask,
            what: format!("record sent by '{}'", info.task_name),
        })
    }

    fn send(&mut self, channel: usize, rt: &mut dyn TaskRuntime) -> Result<()> {
        let records = std::mem::take(&mut self.counts[channel]);
        if records == 0 {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.buffers[channel], Vec::with_capacity(FLUSH_BYTES + 1024));
        rt.send_batch(self.task_output, channel, batch, records)
    }

    fn flush_all(&mut self, rt: &mut dyn TaskRuntime) -> Result<()> {
        for channel in 0..self.buffers.len() {
            self.send(channel, rt)?;
        }
        Ok(())
    }

    #[inline]
    fn write(&mut self, channel: usize, record: &StreamRecord<T>, rt: &mut dyn TaskRuntime) -> Result<()> {
        encode_record(record.timestamp, &record.value, &mut self.buffers[channel], &self.what)?;
        self.counts[channel] += 1;
        if self.buffers[channel].len() >= FLUSH_BYTES {
            self.send(channel, rt)?;
        }
        Ok(())
    }
}

impl<T: crate::Data> Downstream<T> for NetworkOutput<T> {
    fn open(&mut self, _rt: &mut dyn TaskRuntime) -> Result<()> {
        Ok(())
    }

    fn push(&mut self, batch: &mut Vec<StreamRecord<T>>, rt: &mut dyn TaskRuntime) -> Result<()> {
        match self.partitioning {
            Partitioning::Forward | Partitioning::Auto => {
                let channel = self.own_subtask as usize;
                for record in batch.iter() {
                    self.write(channel, record, rt)?;
                }
            }
            Partitioning::Rebalance => {
                for record in batch.iter() {
                    let channel = self.next_channel as usize;
                    self.next_channel = (self.next_channel + 1) % self.channels;
                    self.write(channel, record, rt)?;
                }
            }
            Partitioning::Hash => {
                let key = self.key.clone().expect("checked in new");
                for record in batch.iter() {
                    self.key_buffer.clear();
                    key(&record.value, &mut self.key_buffer)?;
                    let kg = key_group_for_key_bytes(&self.key_buffer, self.max_parallelism);
                    let channel = subtask_for_key_group(kg, self.max_parallelism, self.channels) as usize;
                    self.write(channel, record, rt)?;
                }
            }
            Partitioning::Broadcast => {
                for record in batch.iter() {
                    for channel in 0..self.channels as usize {
                        self.write(channel, record, rt)?;
                    }
                }
            }
        }
        batch.clear();
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
}
