//! At-least-once and no-guarantee delivery: records are produced as they come.

use super::client::{self, SinkProducer, Topics};
use super::epoch::{Header, OutRecord, record_headers};
use super::{FLUSH_TIMEOUT, Ident, base_config, runtime};
use crate::connectors::OpenedSink;
use rdkafka::producer::Producer;
use weir_api::connectors::kafka::{Delivery, KafkaSinkSpec};
use weir_api::runtime::{CheckpointId, SinkRecords, SinkWriter};
use weir_api::{Error, Result};

/// A writer that produces records as they come; at-least-once flushes at every barrier.
pub(super) struct PlainWriter {
    ident: Ident,
    delivery: Delivery,
    producer: SinkProducer,
    topics: Topics,
    finished: bool,
}

/// Opens the writer (no committer: nothing waits for checkpoints to complete). A restored
/// exactly-once state is written again (at least once) and flushed.
///
/// # Errors
/// See [`super::open`].
pub(super) fn open(spec: &KafkaSinkSpec, ident: Ident, restored: &[Vec<u8>]) -> Result<OpenedSink> {
    let mut config = base_config(spec, &ident);
    if spec.delivery == Delivery::AtLeastOnce && !spec.properties.contains_key("enable.idempotence") {
        // No duplicates or reordering from the producer's own retries.
        config.set("enable.idempotence", "true");
    }
    let producer = client::producer(&config, &ident)?;
    client::connect(&producer, spec.topic.as_deref(), &ident)?;
    let topics = Topics::new(&producer, spec.topic.as_deref(), &ident)?;
    let mut writer = PlainWriter { ident, delivery: spec.delivery, producer, topics, finished: false };
    for bytes in restored {
        writer.write_restored(bytes)?;
    }
    Ok(OpenedSink { writer: Box::new(writer), committer: None })
}

impl PlainWriter {
    /// Writes the epochs of an exactly-once state (the delivery was changed, from a savepoint):
    /// they may have been committed already, so this is at least once.
    fn write_restored(&mut self, bytes: &[u8]) -> Result<()> {
        let state = super::epoch::decode_state(bytes).map_err(runtime)?;
        // After a change of parallelism every subtask is given every old subtask's state: the
        // one that takes over old subtask `j` writes it (the transactional id ends in `-j`).
        let old = state.transactional_id.rsplit_once('-').and_then(|(_, j)| j.parse::<u32>().ok());
        if old.is_some_and(|old| old != self.ident.subtask && !super::takes_over(old, &self.ident)) {
            return Ok(());
        }
        let records: usize = state.epochs.iter().map(super::epoch::Epoch::len).sum();
        if records == 0 {
            return Ok(());
        }
        tracing::warn!(
            job_id = self.ident.job_id.as_str(),
            subtask = self.ident.subtask,
            "Kafka sink: the checkpoint holds {records} records of exactly-once epochs not known to be committed; \
             writing them again with {:?} delivery (some may be duplicates)",
            self.delivery
        );
        for epoch in &state.epochs {
            for (record, headers) in epoch.iter() {
                client::send(&self.producer, record, headers)
                    .map_err(|e| runtime(e.describe(record.topic, &self.ident)))?;
            }
        }
        self.flush()
    }

    /// Fails with the deliveries that failed since the last check.
    fn check_deliveries(&self) -> Result<()> {
        match self.producer.context().take_failed() {
            None => Ok(()),
            Some((count, first)) => Err(runtime(format!(
                "{count} record(s) were not delivered to the brokers at {}; the first: {first}",
                self.ident.servers
            ))),
        }
    }

    /// Waits until every record is acknowledged (or failed), then reports failures.
    fn flush(&self) -> Result<()> {
        if let Err(e) = self.producer.flush(FLUSH_TIMEOUT) {
            self.check_deliveries()?;
            return Err(runtime(format!(
                "{} record(s) not acknowledged by the brokers at {} within {} s ({e})",
                self.producer.in_flight_count(),
                self.ident.servers,
                FLUSH_TIMEOUT.as_secs()
            )));
        }
        self.check_deliveries()
    }

    fn finished_error(&self) -> Error {
        runtime(format!("subtask {} cannot write: the sink is already finished", self.ident.subtask))
    }
}

impl SinkWriter for PlainWriter {
    fn write(&mut self, _data: &[u8]) -> Result<()> {
        Err(Error::InvalidJob("Kafka sink: it writes records with keys, not lines".into()))
    }

    fn write_records(&mut self, records: &SinkRecords) -> Result<()> {
        if self.finished {
            return Err(self.finished_error());
        }
        self.check_deliveries()?;
        for record in &records.records {
            let topic = record.topic.map(|t| records.bytes(t));
            let topic = self.topics.resolve(&self.producer, topic, record.partition, &self.ident)?;
            super::epoch::check_header_names(records, record)?;
            let out = OutRecord {
                topic: self.topics.name(topic),
                partition: record.partition,
                timestamp: record.timestamp,
                key: record.key.map(|k| records.bytes(k)),
                value: record.value.map(|v| records.bytes(v)),
            };
            let headers = record_headers(records, record).iter().map(|h| Header {
                name: std::str::from_utf8(records.bytes(h.name)).unwrap_or_default(),
                value: h.value.map(|v| records.bytes(v)),
            });
            client::send(&self.producer, out, headers).map_err(|e| runtime(e.describe(out.topic, &self.ident)))?;
        }
        Ok(())
    }

    fn pre_commit(&mut self, _checkpoint: CheckpointId) -> Result<Vec<u8>> {
        match self.delivery {
            Delivery::AtLeastOnce => self.flush()?,
            Delivery::None | Delivery::ExactlyOnce => self.check_deliveries()?,
        }
        Ok(Vec::new())
    }

    fn finish(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.flush()
    }
}
