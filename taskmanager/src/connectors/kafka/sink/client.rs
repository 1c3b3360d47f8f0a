//! What both writers need from librdkafka: the clients' context (logs, errors, failed
//! deliveries), sending one record, topic checks, the brokers' limits, the progress topic and its
//! markers.

use super::epoch::{Header, OutRecord};
use super::{CONNECT_TIMEOUT, Ident, PROGRESS_READ_TIMEOUT, QUEUE_FULL_TIMEOUT, REQUEST_TIMEOUT, invalid, runtime};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use rustc_hash::FxHashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use weir_api::Result;
use weir_api::connectors::kafka::valid_topic;
use weir_api::runtime::CheckpointId;

/// The producer every writer uses.
pub(super) type SinkProducer = ThreadedProducer<SinkContext>;

/// The context of the sink's clients: forwards librdkafka's logs and errors to `tracing` (with
/// the job and subtask), keeps the last client error (named when the brokers cannot be reached)
/// and the failed deliveries.
pub(super) struct SinkContext {
    job_id: String,
    subtask: u32,
    last_error: Mutex<Option<String>>,
    failed: Mutex<FailedDeliveries>,
}

/// Deliveries that failed since the last [`SinkContext::take_failed`].
#[derive(Default)]
struct FailedDeliveries {
    count: u64,
    first: Option<String>,
}

impl SinkContext {
    pub(super) fn new(ident: &Ident) -> Self {
        Self {
            job_id: ident.job_id.clone(),
            subtask: ident.subtask,
            last_error: Mutex::new(None),
            failed: Mutex::new(FailedDeliveries::default()),
        }
    }

    /// The last error librdkafka reported for the client (a refused connection, say).
    pub(super) fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The number of failed deliveries and the first one's error, since the last call.
    pub(super) fn take_failed(&self) -> Option<(u64, String)> {
        let mut failed = self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = failed.first.take()?;
        Some((std::mem::take(&mut failed.count), first))
    }
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let (job_id, subtask) = (self.job_id.as_str(), self.subtask);
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => tracing::warn!(job_id, subtask, "librdkafka {fac}: {message}"),
            RDKafkaLogLevel::Notice => tracing::info!(job_id, subtask, "librdkafka {fac}: {message}"),
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
                tracing::debug!(job_id, subtask, "librdkafka {fac}: {message}");
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        {
            // The progress reader asked for end-of-partition events; reaching the end is news,
            // not an error.
            return;
        }
        tracing::warn!(job_id = self.job_id.as_str(), subtask = self.subtask, "Kafka sink client: {error}: {reason}");
        let text = if reason.is_empty() { error.to_string() } else { reason.to_owned() };
        *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(text);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            let mut failed = self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            failed.count += 1;
            failed.first.get_or_insert_with(|| {
                format!("{error} (topic {}, partition {})", message.topic(), message.partition())
            });
        }
    }
}

impl ConsumerContext for SinkContext {}

/// Creates the producer from `config`; librdkafka's refusal of a property is the job's error.
///
/// # Errors
/// [`weir_api::Error::InvalidJob`] naming the property librdkafka refused.
pub(super) fn producer(config: &ClientConfig, ident: &Ident) -> Result<SinkProducer> {
    config.create_with_context(SinkContext::new(ident)).map_err(|e| config_error(&e))
}

/// One line for a configuration librdkafka refuses.
pub(super) fn config_error(e: &KafkaError) -> weir_api::Error {
    match e {
        KafkaError::ClientConfig(_, description, key, value) => {
            invalid(format!("librdkafka refuses the property {key}={value}: {description}"))
        }
        KafkaError::ClientCreation(message) => invalid(format!("librdkafka refuses the configuration: {message}")),
        other => invalid(format!("cannot create the Kafka client: {other}")),
    }
}

/// Checks that the brokers answer a metadata request (for `topic`, or for all topics) within
/// [`CONNECT_TIMEOUT`].
///
/// # Errors
/// One line naming the servers and the client's last error (a refused connection, say).
pub(super) fn connect(producer: &SinkProducer, topic: Option<&str>, ident: &Ident) -> Result<Vec<i32>> {
    match producer.client().fetch_metadata(topic, CONNECT_TIMEOUT) {
        Ok(metadata) => Ok(metadata.brokers().iter().map(|b| b.id()).collect()),
        Err(e) => Err(unreachable(&e, producer.context().last_error(), ident)),
    }
}

/// The error for brokers that did not answer.
fn unreachable(e: &KafkaError, last_error: Option<String>, ident: &Ident) -> weir_api::Error {
    let why = last_error.unwrap_or_else(|| e.to_string());
    runtime(format!(
        "cannot reach the Kafka brokers at {} within {} s: {why}",
        ident.servers,
        CONNECT_TIMEOUT.as_secs()
    ))
}

/// The topics a writer has seen, checked once each: names, partition counts, an index each.
pub(super) struct Topics {
    names: Vec<String>,
    partitions: Vec<usize>,
    index: FxHashMap<Box<[u8]>, u32>,
    /// The sink's topic, if it has one.
    default: Option<u32>,
}

impl Topics {
    /// Checks the sink's `default` topic, if any.
    ///
    /// # Errors
    /// As [`Topics::resolve`].
    pub(super) fn new(producer: &SinkProducer, default: Option<&str>, ident: &Ident) -> Result<Self> {
        let mut topics = Self { names: Vec::new(), partitions: Vec::new(), index: FxHashMap::default(), default: None };
        if let Some(topic) = default {
            topics.default = Some(topics.add(producer, topic.as_bytes(), ident)?);
        }
        Ok(topics)
    }

    /// The name of topic `index`.
    pub(super) fn name(&self, index: u32) -> &str {
        self.names.get(index as usize).map_or("", String::as_str)
    }

    /// The index of the topic a record goes to (its own, else the sink's), checked against the
    /// brokers the first time, and with the record's partition checked.
    ///
    /// # Errors
    /// - [`weir_api::Error::InvalidJob`]: no topic at all, an invalid topic name, a negative
    ///   partition.
    /// - [`weir_api::Error::Runtime`]: the topic does not exist, the partition does not exist, the
    ///   brokers do not answer.
    pub(super) fn resolve(
        &mut self,
        producer: &SinkProducer,
        topic: Option<&[u8]>,
        partition: Option<i32>,
        ident: &Ident,
    ) -> Result<u32> {
        let index = match topic {
            Some(name) => match self.index.get(name) {
                Some(&index) => index,
                None => self.add(producer, name, ident)?,
            },
            None => self.default.ok_or_else(|| {
                invalid(
                    "a record names no topic and the sink has none: set the sink's topic(\"...\") or the record's topic \
                     in the serializer",
                )
            })?,
        };
        if let Some(partition) = partition {
            let known = self.partitions[index as usize];
            if partition < 0 {
                return Err(invalid(format!("a record names partition {partition} of topic '{}'", self.name(index))));
            }
            if partition as usize >= known {
                // Partitions may have been added since the topic was checked.
                let name = self.names[index as usize].clone();
                let now = topic_partitions(producer, &name, ident)?;
                self.partitions[index as usize] = now;
                if partition as usize >= now {
                    return Err(runtime(format!(
                        "a record names partition {partition} of topic '{name}', which has {now} partition(s)"
                    )));
                }
            }
        }
        Ok(index)
    }

    fn add(&mut self, producer: &SinkProducer, name: &[u8], ident: &Ident) -> Result<u32> {
        let text = std::str::from_utf8(name)
            .ok()
            .filter(|t| valid_topic(t))
            .ok_or_else(|| invalid(format!("'{}' is not a valid topic name", String::from_utf8_lossy(name))))?;
        let partitions = topic_partitions(producer, text, ident)?;
        let index = self.names.len() as u32;
        self.names.push(text.to_owned());
        self.partitions.push(partitions);
        self.index.insert(name.into(), index);
        Ok(index)
    }
}

/// The number of partitions of `topic`, asking the brokers (which create it if they create
/// topics automatically).
fn topic_partitions(producer: &SinkProducer, topic: &str, ident: &Ident) -> Result<usize> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let metadata = producer
            .client()
            .fetch_metadata(Some(topic), CONNECT_TIMEOUT)
            .map_err(|e| unreachable(&e, producer.context().last_error(), ident))?;
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        let error = found.and_then(|t| t.error()).map(RDKafkaErrorCode::from);
        match (found, error) {
            (Some(t), None) if !t.partitions().is_empty() => return Ok(t.partitions().len()),
            (_, Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)) => {
                return Err(runtime(format!(
                    "topic '{topic}' does not exist on the brokers at {} (and they do not create topics automatically): \
                     create it first",
                    ident.servers
                )));
            }
            (_, Some(RDKafkaErrorCode::TopicAuthorizationFailed)) => {
                return Err(runtime(format!(
                    "not authorized to write topic '{topic}' on the brokers at {}",
                    ident.servers
                )));
            }
            (_, Some(RDKafkaErrorCode::InvalidTopic)) => {
                return Err(invalid(format!("the brokers say '{topic}' is not a valid topic name")));
            }
            (_, error) if Instant::now() >= deadline => {
                let why = error.map_or_else(|| "no partitions".to_owned(), |e| e.to_string());
                return Err(runtime(format!(
                    "topic '{topic}' is not ready on the brokers at {} after {} s: {why}",
                    ident.servers,
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
            // Being created (automatically), or its leader not elected yet.
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Sends one record (with `headers`) to the producer's queue, waiting while the queue is full
/// (the producer's thread serves it).
///
/// # Errors
/// librdkafka's refusal, or a queue still full after [`QUEUE_FULL_TIMEOUT`].
pub(super) fn send<'a>(
    producer: &SinkProducer,
    record: OutRecord<'_>,
    headers: impl ExactSizeIterator<Item = Header<'a>>,
) -> std::result::Result<(), SendError> {
    let count = headers.len();
    let headers = (count > 0).then(|| {
        headers.fold(OwnedHeaders::new_with_capacity(count), |all, h| {
            all.insert(rdkafka::message::Header { key: h.name, value: h.value })
        })
    });
    let mut base: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(record.topic);
    base.partition = record.partition;
    base.key = record.key;
    base.payload = record.value;
    base.timestamp = record.timestamp.filter(|t| *t >= 0);
    base.headers = headers;
    let mut deadline = None;
    loop {
        match producer.send(base) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                let deadline = *deadline.get_or_insert_with(|| Instant::now() + QUEUE_FULL_TIMEOUT);
                if Instant::now() >= deadline {
                    return Err(SendError::QueueFull(producer.in_flight_count()));
                }
                base = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((error, _)) => return Err(SendError::Kafka(error)),
        }
    }
}

/// Why [`send`] failed.
#[derive(Debug)]
pub(super) enum SendError {
    /// librdkafka refused the record.
    Kafka(KafkaError),
    /// The queue stayed full (this many records in it).
    QueueFull(i32),
}

impl SendError {
    /// One line, naming the servers.
    pub(super) fn describe(&self, topic: &str, ident: &Ident) -> String {
        match self {
            Self::Kafka(e) => format!("cannot write a record to topic '{topic}': {e}"),
            Self::QueueFull(n) => format!(
                "the producer's queue stayed full for {} s ({n} records not acknowledged by the brokers at {}): are \
                 they reachable?",
                QUEUE_FULL_TIMEOUT.as_secs(),
                ident.servers
            ),
        }
    }

    /// librdkafka's error, if it is one.
    pub(super) fn kafka(&self) -> Option<&KafkaError> {
        match self {
            Self::Kafka(e) => Some(e),
            Self::QueueFull(_) => None,
        }
    }
}

/// An admin client from the sink's connection settings.
pub(super) fn admin(config: &ClientConfig, ident: &Ident) -> Result<AdminClient<SinkContext>> {
    config.create_with_context(SinkContext::new(ident)).map_err(|e| config_error(&e))
}

fn admin_options() -> AdminOptions {
    AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT)).operation_timeout(Some(REQUEST_TIMEOUT))
}

/// The brokers' `transaction.max.timeout.ms`, as broker `broker` says.
///
/// # Errors
/// The request fails or the answer lacks it (the caller warns and goes on).
pub(super) fn max_transaction_timeout(
    admin: &AdminClient<SinkContext>,
    broker: i32,
) -> std::result::Result<u64, String> {
    let resource = ResourceSpecifier::Broker(broker);
    let results = futures::executor::block_on(admin.describe_configs([&resource], &admin_options()))
        .map_err(|e| e.to_string())?;
    let config = results.into_iter().next().ok_or("no answer")?.map_err(|e| e.to_string())?;
    let entry = config.get("transaction.max.timeout.ms").ok_or("the broker does not report it")?;
    let value = entry.value.as_deref().ok_or("the broker reports no value")?;
    value.trim().parse().map_err(|e| format!("'{value}': {e}"))
}

/// Creates the progress topic if it does not exist: one partition, compacted, the brokers'
/// default replication factor (`-1`: what `default.replication.factor` says, Kafka 2.4 or newer),
/// segments rolled hourly so that compaction keeps it small. Returns whether it was created now
/// (then it holds no marker).
///
/// # Errors
/// The brokers refuse (other than because it exists) or do not answer.
pub(super) fn ensure_progress_topic(admin: &AdminClient<SinkContext>, topic: &str, ident: &Ident) -> Result<bool> {
    let new_topic = NewTopic::new(topic, 1, TopicReplication::Fixed(-1))
        .set("cleanup.policy", "compact")
        .set("segment.ms", "3600000")
        .set("min.compaction.lag.ms", "0");
    let results = futures::executor::block_on(admin.create_topics([&new_topic], &admin_options())).map_err(|e| {
        runtime(format!("cannot create the progress topic '{topic}' on the brokers at {}: {e}", ident.servers))
    })?;
    match results.into_iter().next() {
        Some(Ok(_)) => {
            tracing::info!(
                job_id = ident.job_id.as_str(),
                subtask = ident.subtask,
                "created the progress topic '{topic}'"
            );
            Ok(true)
        }
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
        Some(Err((_, code))) => Err(runtime(format!(
            "cannot create the progress topic '{topic}' on the brokers at {}: {code}",
            ident.servers
        ))),
        None => Err(runtime(format!("the brokers at {} did not answer the creation of '{topic}'", ident.servers))),
    }
}

/// A progress marker: the highest epoch a transactional id committed, and the job that did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Marker {
    pub(super) epoch: CheckpointId,
    pub(super) job_id: Option<String>,
}

impl Marker {
    /// The record value: `"<epoch> <job id>"`.
    pub(super) fn value(epoch: CheckpointId, job_id: &str) -> String {
        format!("{epoch} {job_id}")
    }

    /// Parses a record value [`Marker::value`] wrote (or a bare epoch).
    fn parse(value: &[u8]) -> std::result::Result<Self, String> {
        let text = std::str::from_utf8(value).map_err(|_| "not UTF-8".to_owned())?;
        let (epoch, job_id) = text.trim().split_once(' ').map_or((text.trim(), None), |(e, j)| (e, Some(j.trim())));
        let epoch = epoch.parse().map_err(|e| format!("'{text}': {e}"))?;
        Ok(Self { epoch, job_id: job_id.filter(|j| !j.is_empty()).map(str::to_owned) })
    }
}

/// A consumer of the progress topic with `isolation`.
fn consumer(config: &ClientConfig, isolation: &str, ident: &Ident) -> Result<BaseConsumer<SinkContext>> {
    let mut config = config.clone();
    config
        .set("group.id", "weir-kafka-sink-progress")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation);
    config.create_with_context(SinkContext::new(ident)).map_err(|e| config_error(&e))
}

/// The newest committed marker of `key` in partition 0 of the progress topic, `None` when there
/// is none (or it was deleted).
///
/// Reads with `read_committed`, after waiting until every transaction with records below the
/// current end of the partition has ended (another subtask's open commit would otherwise hide
/// this key's newer markers behind it). Reads backwards in growing windows from the end, so the
/// cost follows how recently the key committed, not the topic's size.
///
/// # Errors
/// The topic cannot be read, a transaction stays open longer than [`PROGRESS_READ_TIMEOUT`], or
/// the marker is not one this sink wrote.
pub(super) fn read_marker(config: &ClientConfig, topic: &str, key: &str, ident: &Ident) -> Result<Option<Marker>> {
    let deadline = Instant::now() + PROGRESS_READ_TIMEOUT;
    let fail = |what: String| runtime(format!("cannot read the progress topic '{topic}' ({what})"));
    let (low, high) = consumer(config, "read_uncommitted", ident)?
        .fetch_watermarks(topic, 0, CONNECT_TIMEOUT)
        .map_err(|e| fail(format!("its end offsets: {e}")))?;
    if high <= low {
        return Ok(None);
    }
    let committed = consumer(config, "read_committed", ident)?;
    loop {
        let (_, stable) = committed
            .fetch_watermarks(topic, 0, CONNECT_TIMEOUT)
            .map_err(|e| fail(format!("its last stable offset: {e}")))?;
        if stable >= high {
            break;
        }
        if Instant::now() >= deadline {
            return Err(runtime(format!(
                "the progress topic '{topic}' has a transaction open for more than {} s (offset {stable}): a sink \
                 subtask died in a commit and no successor took its transactional id over (was the parallelism \
                 lowered?); the brokers abort it after its transaction timeout",
                PROGRESS_READ_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut window: i64 = 256;
    let mut start = high.saturating_sub(window).max(low);
    let mut end: Option<i64> = None;
    loop {
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, 0, Offset::Offset(start)).map_err(|e| fail(e.to_string()))?;
        committed.assign(&assignment).map_err(|e| fail(e.to_string()))?;
        // `Some(None)`: the newest record of the key is a tombstone.
        let mut found: Option<Option<Vec<u8>>> = None;
        loop {
            if Instant::now() >= deadline {
                return Err(fail(format!("not read within {} s", PROGRESS_READ_TIMEOUT.as_secs())));
            }
            match committed.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(fail(e.to_string())),
                Some(Ok(message)) => {
                    if end.is_some_and(|end| message.offset() >= end) {
                        break;
                    }
                    if message.key() == Some(key.as_bytes()) {
                        found = Some(message.payload().map(<[u8]>::to_vec));
                    }
                }
            }
        }
        match found {
            Some(Some(value)) => {
                return Marker::parse(&value).map(Some).map_err(|e| {
                    runtime(format!(
                        "the progress marker of '{key}' in topic '{topic}' is not one this sink wrote: {e}"
                    ))
                });
            }
            Some(None) => return Ok(None),
            None if start <= low => return Ok(None),
            None => {
                end = Some(start);
                window = window.saturating_mul(8);
                start = start.saturating_sub(window).max(low);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_bare_epochs_parse() {
        let value = Marker::value(17, "job-a");
        assert_eq!(Marker::parse(value.as_bytes()), Ok(Marker { epoch: 17, job_id: Some("job-a".into()) }));
        assert_eq!(Marker::parse(b"42"), Ok(Marker { epoch: 42, job_id: None }));
        let max = Marker::value(u64::MAX, "j");
        assert_eq!(Marker::parse(max.as_bytes()).map(|m| m.epoch), Ok(u64::MAX));
        assert!(Marker::parse(b"x y").is_err());
        assert!(Marker::parse(&[0xff]).is_err());
    }
}
