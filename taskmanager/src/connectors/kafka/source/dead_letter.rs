//! The dead-letter output of a Kafka source: malformed records, with their original key, value
//! and headers, written to a topic with the error and their origin in headers.

use super::client::{self, ClientLog, Owner};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use weir_api::connectors::kafka::KafkaSourceSpec;
use weir_api::runtime::{MalformedRecord, RawBatch};
use weir_api::{Error, Result};

/// How long writing one batch of dead letters may take (metadata, enqueueing, flushing).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the check that a dead-letter topic exists may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// A lazily created idempotent producer for dead letters.
pub(crate) struct DeadLetters {
    producer: BaseProducer<ClientLog>,
    /// Topics known to exist.
    checked: BTreeSet<String>,
}

impl DeadLetters {
    /// Creates the producer.
    ///
    /// # Errors
    /// [`Error::InvalidJob`] when librdkafka refuses a property, [`Error::Runtime`] otherwise.
    pub(crate) fn new(spec: &KafkaSourceSpec, owner: &Owner, service: &str) -> Result<Self> {
        let config = client::producer_config(spec, owner, service)?;
        let producer = config
            .create_with_context(ClientLog::new(owner.clone()))
            .map_err(|e| client::creation_error(&e, service, "dead-letter producer"))?;
        Ok(Self { producer, checked: BTreeSet::new() })
    }

    /// Writes `records` of `batch` to `topic` and waits until the brokers acknowledged all of
    /// them. Each keeps its key, value and headers and gains the headers `weir.error`,
    /// `weir.topic`, `weir.partition` and `weir.offset`.
    ///
    /// # Errors
    /// [`Error::Runtime`] when the topic does not exist, a record cannot be written or the
    /// writes are not acknowledged in time (30 s); the records may then have been written in
    /// part, and a restarted job writes them again (at least once).
    pub(crate) fn write(
        &mut self,
        topic: &str,
        batch: &RawBatch,
        records: &[MalformedRecord],
        service: &str,
    ) -> Result<()> {
        let deadline = Instant::now() + WRITE_TIMEOUT;
        self.check_topic(topic, service)?;
        let kafka = &batch.kafka;
        for malformed in records {
            let Some(record) = kafka.records.get(malformed.index) else {
                return Err(Error::runtime(
                    service,
                    format!(
                        "malformed record {} is not in the batch of {} records",
                        malformed.index,
                        kafka.records.len()
                    ),
                ));
            };
            let origin_topic = kafka.topics.get(record.topic as usize).map_or("", String::as_str);
            let (first, end) = record.headers;
            let originals = kafka.headers.get(first as usize..end as usize).unwrap_or_default();
            let mut headers = OwnedHeaders::new_with_capacity(originals.len() + 4);
            for header in originals {
                let name = std::str::from_utf8(kafka.bytes(header.name)).unwrap_or_default();
                headers = headers.insert(Header { key: name, value: header.value.map(|v| kafka.bytes(v)) });
            }
            let partition = record.partition.to_string();
            let offset = record.offset.to_string();
            headers = headers
                .insert(Header { key: "weir.error", value: Some(malformed.error.as_bytes()) })
                .insert(Header { key: "weir.topic", value: Some(origin_topic.as_bytes()) })
                .insert(Header { key: "weir.partition", value: Some(partition.as_bytes()) })
                .insert(Header { key: "weir.offset", value: Some(offset.as_bytes()) });
            let key = record.key.map(|k| kafka.bytes(k));
            let value = record.value.map(|v| kafka.bytes(v));
            let mut pending = Some(headers);
            loop {
                let mut out: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
                out.key = key;
                out.payload = value;
                out.headers = pending.take();
                match self.producer.send(out) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                        if Instant::now() < deadline =>
                    {
                        pending = back.headers;
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => {
                        return Err(Error::runtime(
                            service,
                            format!(
                                "cannot write a dead letter to topic '{topic}' ({origin_topic}/{partition} at offset \
                                 {offset}): {e}"
                            ),
                        ));
                    }
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        self.producer.flush(left).map_err(|e| {
            Error::runtime(
                service,
                format!("dead letters for topic '{topic}' not acknowledged within {}s: {e}", WRITE_TIMEOUT.as_secs()),
            )
        })?;
        match self.producer.context().take_delivery_error() {
            Some(error) => {
                Err(Error::runtime(service, format!("cannot write dead letters to topic '{topic}': {error}")))
            }
            None => Ok(()),
        }
    }

    /// Checks once per topic that it exists (a producer would otherwise wait for it).
    fn check_topic(&mut self, topic: &str, service: &str) -> Result<()> {
        if self.checked.contains(topic) {
            return Ok(());
        }
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .map_err(|e| Error::runtime(service, format!("cannot look up the dead-letter topic '{topic}': {e}")))?;
        let entry = metadata.topics().iter().find(|t| t.name() == topic);
        match entry.map(|t| (t.partitions().len(), t.error().map(RDKafkaErrorCode::from))) {
            Some((partitions, None)) if partitions > 0 => {
                self.checked.insert(topic.to_owned());
                Ok(())
            }
            Some((_, Some(error))) if error != RDKafkaErrorCode::UnknownTopicOrPartition => {
                Err(Error::runtime(service, format!("the dead-letter topic '{topic}': {error}")))
            }
            _ => Err(Error::runtime(service, format!("the dead-letter topic '{topic}' does not exist"))),
        }
    }
}
