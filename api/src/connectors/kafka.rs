//! Kafka connectors, as a job declares them.
//!
//! - [`KafkaSource`]: one split per topic partition, assigned to subtasks as Flink does; offsets
//!   in checkpoints (restored exactly); periodic partition discovery; starting offsets; bounded
//!   reading; watermarks per partition; a policy for records that do not deserialize.
//! - [`KafkaSink`]: exactly-once (write-ahead epochs committed in one transaction per completed
//!   checkpoint with a progress marker), at-least-once (flushed at every barrier) or none.
//!
//! The job carries the descriptions ([`KafkaSourceSpec`], [`KafkaSinkSpec`]) and the
//! (de)serialization of its records; the taskmanager runs the Kafka clients (librdkafka).
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use std::time::Duration;
//! use weir_api::prelude::*;
//!
//! #[derive(Clone, Debug, Serialize, Deserialize)]
//! struct Bid { auction: u64, price: u64 }
//!
//! fn build(env: &mut StreamExecutionEnvironment, _args: &JobArgs) -> weir_api::Result<()> {
//!     let source = KafkaSource::builder()
//!         .bootstrap_servers("kafka:9092")
//!         .topics(["bids"]) // or .topic_pattern("bids-.*")
//!         .group_id("wcount") // offsets are committed to it at checkpoints, for lag tools only
//!         .starting_offsets(StartingOffsets::Committed { otherwise: OffsetReset::Earliest })
//!         .on_malformed(MalformedPolicy::DeadLetter { topic: "bids-dlq".into() })
//!         .build(KafkaDeserializer::<Bid>::json());
//!     let watermarks = WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_secs(1))
//!         .with_idleness(Duration::from_secs(30));
//!     let counts = env
//!         .from_kafka(source, watermarks)
//!         .uid("bids")
//!         .map(|b: Bid| (b.auction, 1u64))
//!         .key_by(|&(auction, _): &(u64, u64)| auction)
//!         .window(TumblingEventTimeWindows::of(Duration::from_secs(10)))
//!         .reduce(|a, b| (a.0, a.1 + b.1))
//!         .uid("counts");
//!     counts
//!         .sink_to_kafka(
//!             KafkaSink::builder()
//!                 .bootstrap_servers("kafka:9092")
//!                 .topic("counts")
//!                 .delivery(Delivery::ExactlyOnce)
//!                 .transactional_id_prefix("wcount-counts") // unique to this sink, stable across restarts
//!                 .build(KafkaSerializer::json()),
//!         )
//!         .uid("counts-sink");
//!     Ok(())
//! }
//! # fn main() {
//! #     let graph = weir_api::plugin::job_entry(build).build(&[]).unwrap();
//! #     assert!(graph.descriptor.nodes.len() >= 4);
//! # }
//! ```

use crate::runtime::{ByteRange, KafkaBatch, KafkaRawRecord, RawHeader, SinkRecord, SinkRecords};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Which topics a source reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KafkaTopics {
    /// These topics.
    List(Vec<String>),
    /// Every topic whose whole name matches this regular expression (new ones are found by
    /// partition discovery).
    Pattern(String),
}

/// Where a partition's reading starts when no checkpoint says (a checkpoint's offsets always
/// win).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartingOffsets {
    /// The earliest offset still in the log.
    Earliest,
    /// The end of the log when the partition is first read: only new records.
    Latest,
    /// The offset the consumer group committed, or `otherwise` where it committed none.
    Committed {
        /// Where partitions without a committed offset start.
        otherwise: OffsetReset,
    },
    /// The first record with a timestamp at or after this one (ms since the epoch); the end of
    /// the log where none is.
    Timestamp(i64),
    /// These offsets by topic and partition; `otherwise` for the partitions not listed.
    Explicit {
        /// Offsets by topic, then partition.
        offsets: BTreeMap<String, BTreeMap<i32, i64>>,
        /// Where unlisted partitions start.
        otherwise: OffsetReset,
    },
}

/// Where a partition starts when a rule names no offset for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OffsetReset {
    /// The earliest offset.
    Earliest,
    /// The end of the log.
    Latest,
}

/// Which records a source sees of topics written with transactions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Isolation {
    /// Only records of committed transactions (and those written without transactions): the
    /// default, what exactly-once pipelines need.
    #[default]
    ReadCommitted,
    /// Every record written, also of open and aborted transactions.
    ReadUncommitted,
}

/// What a source does with a record its deserializer refuses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MalformedPolicy {
    /// The job fails, naming the topic, partition, offset and error (the default: nothing is
    /// lost silently).
    #[default]
    Fail,
    /// The record is skipped and counted (the `numRecordsSkipped` counter of the source).
    Skip,
    /// The record is written, with its original key, value and headers, to this topic, with the
    /// error and its origin in headers (`weir.error`, `weir.topic`, `weir.partition`,
    /// `weir.offset`).
    DeadLetter {
        /// The dead-letter topic.
        topic: String,
    },
}

/// What the taskmanager needs to run a Kafka source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KafkaSourceSpec {
    /// `host:port,...` of the brokers.
    pub bootstrap_servers: String,
    /// The topics.
    pub topics: KafkaTopics,
    /// The consumer group offsets are committed to on checkpoint completion (for lag tools
    /// only; the job's position lives in its checkpoints), and read by
    /// [`StartingOffsets::Committed`]. `None`: none are committed.
    pub group_id: Option<String>,
    /// Where reading starts without a checkpoint.
    pub starting_offsets: StartingOffsets,
    /// Whether the source ends: at the offsets that were the end of each partition when the job
    /// first started (kept in checkpoints, so a restart ends at the same place).
    pub bounded: bool,
    /// How often new partitions (and, for patterns, topics) are looked for; `None`: never.
    pub discovery_interval_ms: Option<u64>,
    /// Which records of transactional topics are read.
    pub isolation: Isolation,
    /// What happens to records the deserializer refuses.
    pub malformed: MalformedPolicy,
    /// More librdkafka consumer properties (security: `security.protocol`, `sasl.*`, `ssl.*`).
    pub properties: BTreeMap<String, String>,
}

/// How a sink's records reach Kafka.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delivery {
    /// Exactly once for `read_committed` readers: records of checkpoint `n` are kept in the
    /// checkpoint and written in one transaction, with a progress marker, once `n` completed;
    /// a restored sink writes what its checkpoint holds and its marker says is not written yet.
    #[default]
    ExactlyOnce,
    /// At least once: everything written is flushed (acknowledged by the brokers) at every
    /// barrier; a restart may write records again.
    AtLeastOnce,
    /// No guarantee: records are written as they come, nothing waits for the brokers.
    None,
}

/// What the taskmanager needs to run a Kafka sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KafkaSinkSpec {
    /// `host:port,...` of the brokers.
    pub bootstrap_servers: String,
    /// The topic of records that name none.
    pub topic: Option<String>,
    /// The delivery guarantee.
    pub delivery: Delivery,
    /// Exactly-once: sink subtask `s` uses `transactional.id` `<prefix>-<s>`, stable across
    /// restarts (this fences what an earlier instance left open). Must be unique per sink in the
    /// cluster.
    pub transactional_id_prefix: String,
    /// Exactly-once: the compacted topic that holds each subtask's progress marker (created if
    /// missing).
    pub progress_topic: String,
    /// Exactly-once: `transaction.timeout.ms` of the producer.
    pub transaction_timeout_ms: u64,
    /// More librdkafka producer properties (security, `compression.type`, `linger.ms`, ...).
    pub properties: BTreeMap<String, String>,
}

/// A record as a source's deserializer sees it.
#[derive(Debug, Clone, Copy)]
pub struct KafkaRecord<'a> {
    batch: &'a KafkaBatch,
    record: &'a KafkaRawRecord,
}

impl<'a> KafkaRecord<'a> {
    /// The record at `index` of `batch`.
    pub(crate) fn of(batch: &'a KafkaBatch, record: &'a KafkaRawRecord) -> Self {
        Self { batch, record }
    }

    /// Its topic.
    pub fn topic(&self) -> &'a str {
        self.batch.topics.get(self.record.topic as usize).map_or("", String::as_str)
    }

    /// Its partition.
    pub fn partition(&self) -> i32 {
        self.record.partition
    }

    /// Its offset.
    pub fn offset(&self) -> i64 {
        self.record.offset
    }

    /// Its timestamp, ms since the epoch, if it has one.
    pub fn timestamp(&self) -> Option<i64> {
        self.record.timestamp
    }

    /// Its key.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.record.key.map(|r| self.batch.bytes(r))
    }

    /// Its value (`None`: a tombstone).
    pub fn value(&self) -> Option<&'a [u8]> {
        self.record.value.map(|r| self.batch.bytes(r))
    }

    /// Its headers, in order: name and value.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + 'a {
        let batch = self.batch;
        let (start, end) = self.record.headers;
        batch.headers.get(start as usize..end as usize).unwrap_or_default().iter().map(move |h: &RawHeader| {
            (std::str::from_utf8(batch.bytes(h.name)).unwrap_or(""), h.value.map(|v| batch.bytes(v)))
        })
    }

    /// The value of the last header named `name`.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers().filter(|(n, _)| *n == name).last().and_then(|(_, v)| v)
    }
}

type DeserializeFn<T> = Arc<dyn Fn(&KafkaRecord<'_>) -> Result<T, String> + Send + Sync>;

/// Turns a Kafka record into a job's record; an error is a malformed record (see
/// [`MalformedPolicy`]).
pub struct KafkaDeserializer<T>(pub(crate) DeserializeFn<T>);

impl<T> Clone for KafkaDeserializer<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> std::fmt::Debug for KafkaDeserializer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KafkaDeserializer")
    }
}

impl KafkaDeserializer<Vec<u8>> {
    /// The value's bytes (a tombstone is empty).
    pub fn bytes() -> Self {
        Self(Arc::new(|r: &KafkaRecord<'_>| Ok(r.value().unwrap_or_default().to_vec())))
    }
}

impl KafkaDeserializer<String> {
    /// The value as UTF-8 text; other bytes are malformed.
    pub fn utf8() -> Self {
        Self(Arc::new(|r: &KafkaRecord<'_>| {
            let value = r.value().ok_or_else(|| "a record without a value (tombstone)".to_owned())?;
            std::str::from_utf8(value).map(str::to_owned).map_err(|e| format!("the value is not UTF-8: {e}"))
        }))
    }
}

impl<T> KafkaDeserializer<T> {
    /// The value as JSON for `T`; anything else is malformed.
    pub fn json() -> Self
    where
        T: serde::de::DeserializeOwned,
    {
        Self(Arc::new(|r: &KafkaRecord<'_>| {
            let value = r.value().ok_or_else(|| "a record without a value (tombstone)".to_owned())?;
            serde_json::from_slice(value).map_err(|e| format!("the value is not the expected JSON: {e}"))
        }))
    }

    /// `f` over the whole record (key, value, headers, topic, partition, offset, timestamp);
    /// an `Err` is a malformed record.
    pub fn from_fn(f: impl Fn(&KafkaRecord<'_>) -> Result<T, String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

/// How a sink's records look in Kafka, built by a [`KafkaSerializer`].
#[derive(Debug)]
pub struct KafkaRecordOut<'a> {
    records: &'a mut SinkRecords,
    record: SinkRecord,
    headers_start: u32,
}

impl<'a> KafkaRecordOut<'a> {
    pub(crate) fn new(records: &'a mut SinkRecords, timestamp: Option<i64>) -> Self {
        let headers_start = records.headers.len() as u32;
        let record = SinkRecord { timestamp, headers: (headers_start, headers_start), ..SinkRecord::default() };
        Self { records, record, headers_start }
    }

    /// Sends the record to `topic` instead of the sink's default topic.
    pub fn topic(&mut self, topic: &str) -> &mut Self {
        self.record.topic = Some(self.records.push_bytes(topic.as_bytes()));
        self
    }

    /// Sends the record to `partition` (instead of choosing it by key).
    pub fn partition(&mut self, partition: i32) -> &mut Self {
        self.record.partition = Some(partition);
        self
    }

    /// Sets the key.
    pub fn key(&mut self, key: &[u8]) -> &mut Self {
        self.record.key = Some(self.records.push_bytes(key));
        self
    }

    /// Sets the value (without one, the record is a tombstone).
    pub fn value(&mut self, value: &[u8]) -> &mut Self {
        self.record.value = Some(self.records.push_bytes(value));
        self
    }

    /// Sets the value to `value`'s `Display` text, written straight into the batch (no
    /// intermediate `String`).
    pub fn value_display(&mut self, value: &dyn std::fmt::Display) -> &mut Self {
        use std::io::Write as _;
        let start = self.records.data.len() as u32;
        // Writing into a Vec fails only when a Display impl returns an error; the value is then
        // what it wrote so far, as with `to_string`'s panic-free counterpart.
        let _ = write!(self.records.data, "{value}");
        self.record.value = Some((start, self.records.data.len() as u32));
        self
    }

    /// Adds a header.
    pub fn header(&mut self, name: &str, value: Option<&[u8]>) -> &mut Self {
        let name = self.records.push_bytes(name.as_bytes());
        let value = value.map(|v| self.records.push_bytes(v));
        self.records.headers.push(RawHeader { name, value });
        self
    }

    /// Sets the timestamp (by default the record's event time, if it has one).
    pub fn timestamp(&mut self, timestamp: i64) -> &mut Self {
        self.record.timestamp = Some(timestamp);
        self
    }

    /// Leaves the timestamp to the producer (the time of sending) instead of the record's event
    /// time: for event times that are not wall-clock times, which the brokers' time-based
    /// retention would otherwise delete as old.
    pub fn produce_time(&mut self) -> &mut Self {
        self.record.timestamp = None;
        self
    }

    /// The record's value bytes so far.
    pub fn value_range(&self) -> Option<ByteRange> {
        self.record.value
    }

    pub(crate) fn finish(mut self) {
        self.record.headers = (self.headers_start, self.records.headers.len() as u32);
        self.records.records.push(self.record);
    }
}

type SerializeFn<T> = Arc<dyn Fn(&T, &mut KafkaRecordOut<'_>) + Send + Sync>;

/// Turns a job's record into a Kafka record.
pub struct KafkaSerializer<T>(pub(crate) SerializeFn<T>);

impl<T> Clone for KafkaSerializer<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> std::fmt::Debug for KafkaSerializer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KafkaSerializer")
    }
}

impl<T> KafkaSerializer<T> {
    /// The value is the record's bytes.
    pub fn bytes() -> Self
    where
        T: AsRef<[u8]>,
    {
        Self(Arc::new(|v: &T, out: &mut KafkaRecordOut<'_>| {
            out.value(v.as_ref());
        }))
    }

    /// The value is the record's `Display` text, as UTF-8.
    pub fn display() -> Self
    where
        T: std::fmt::Display,
    {
        Self(Arc::new(|v: &T, out: &mut KafkaRecordOut<'_>| {
            out.value_display(v);
        }))
    }

    /// The value is the record as JSON.
    pub fn json() -> Self
    where
        T: Serialize,
    {
        Self(Arc::new(|v: &T, out: &mut KafkaRecordOut<'_>| {
            let json = serde_json::to_vec(v).unwrap_or_default();
            out.value(&json);
        }))
    }

    /// `f` sets the key, value, headers, topic, partition or timestamp of the record.
    pub fn from_fn(f: impl Fn(&T, &mut KafkaRecordOut<'_>) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

/// Settings shared by the source and sink builders.
fn check_servers(servers: &str, errors: &mut Vec<String>, what: &str) {
    if servers.trim().is_empty() {
        errors.push(format!("{what}: bootstrap servers are missing (set bootstrap_servers(\"host:9092\"))"));
    }
}

/// A Kafka source under construction ([`KafkaSource::builder`]).
#[derive(Debug, Clone)]
pub struct KafkaSourceBuilder {
    spec: KafkaSourceSpec,
}

/// A Kafka source: its description and how its records become `T`
/// ([`crate::stream::StreamExecutionEnvironment::from_kafka`]).
#[derive(Debug, Clone)]
pub struct KafkaSource<T> {
    pub(crate) spec: KafkaSourceSpec,
    pub(crate) deserializer: KafkaDeserializer<T>,
    pub(crate) errors: Vec<String>,
}

impl KafkaSource<()> {
    /// A builder with the defaults: committed offsets falling back to earliest, unbounded,
    /// discovery every 30 s, `read_committed`, malformed records fail the job.
    pub fn builder() -> KafkaSourceBuilder {
        KafkaSourceBuilder {
            spec: KafkaSourceSpec {
                bootstrap_servers: String::new(),
                topics: KafkaTopics::List(Vec::new()),
                group_id: None,
                starting_offsets: StartingOffsets::Committed { otherwise: OffsetReset::Earliest },
                bounded: false,
                discovery_interval_ms: Some(30_000),
                isolation: Isolation::ReadCommitted,
                malformed: MalformedPolicy::Fail,
                properties: BTreeMap::new(),
            },
        }
    }
}

impl KafkaSourceBuilder {
    /// The brokers, `host:port,...`.
    pub fn bootstrap_servers(mut self, servers: impl Into<String>) -> Self {
        self.spec.bootstrap_servers = servers.into();
        self
    }

    /// Reads these topics.
    pub fn topics<S: Into<String>>(mut self, topics: impl IntoIterator<Item = S>) -> Self {
        self.spec.topics = KafkaTopics::List(topics.into_iter().map(Into::into).collect());
        self
    }

    /// Reads every topic whose whole name matches `pattern` (a regular expression).
    pub fn topic_pattern(mut self, pattern: impl Into<String>) -> Self {
        self.spec.topics = KafkaTopics::Pattern(pattern.into());
        self
    }

    /// The consumer group offsets are committed to on checkpoint completion.
    pub fn group_id(mut self, group: impl Into<String>) -> Self {
        self.spec.group_id = Some(group.into());
        self
    }

    /// Where reading starts without a checkpoint ([`StartingOffsets::Committed`] without a group
    /// starts where its fallback says).
    pub fn starting_offsets(mut self, offsets: StartingOffsets) -> Self {
        self.spec.starting_offsets = offsets;
        self
    }

    /// Ends at the offsets that were each partition's end when the job first started.
    pub fn bounded(mut self) -> Self {
        self.spec.bounded = true;
        self
    }

    /// How often new partitions and topics are looked for (`None`: never).
    pub fn discovery_interval(mut self, interval: Option<Duration>) -> Self {
        self.spec.discovery_interval_ms = interval.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1));
        self
    }

    /// Which records of transactional topics are read.
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.spec.isolation = isolation;
        self
    }

    /// What happens to records the deserializer refuses.
    pub fn on_malformed(mut self, policy: MalformedPolicy) -> Self {
        self.spec.malformed = policy;
        self
    }

    /// A librdkafka consumer property (security settings and the like).
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.spec.properties.insert(key.into(), value.into());
        self
    }

    /// The source, with `deserializer` turning records into `T`. Configuration mistakes are
    /// reported when the job is built.
    pub fn build<T>(self, deserializer: KafkaDeserializer<T>) -> KafkaSource<T> {
        let mut errors = Vec::new();
        check_servers(&self.spec.bootstrap_servers, &mut errors, "Kafka source");
        match &self.spec.topics {
            KafkaTopics::List(topics) if topics.is_empty() => {
                errors.push("Kafka source: no topic (set topics([...]) or topic_pattern(...))".into());
            }
            KafkaTopics::List(topics) => {
                if let Some(bad) = topics.iter().find(|t| !valid_topic(t)) {
                    errors.push(format!("Kafka source: '{bad}' is not a valid topic name"));
                }
            }
            KafkaTopics::Pattern(pattern) if pattern.is_empty() => {
                errors.push("Kafka source: the topic pattern is empty".into());
            }
            KafkaTopics::Pattern(_) => {}
        }
        if let MalformedPolicy::DeadLetter { topic } = &self.spec.malformed
            && !valid_topic(topic)
        {
            errors.push(format!("Kafka source: '{topic}' is not a valid dead-letter topic name"));
        }
        KafkaSource { spec: self.spec, deserializer, errors }
    }
}

/// Kafka's rule for topic names: 1 to 249 characters of ASCII letters, digits, `.`, `_`, `-`,
/// and neither `.` nor `..`.
pub fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A Kafka sink under construction ([`KafkaSink::builder`]).
#[derive(Debug, Clone)]
pub struct KafkaSinkBuilder {
    spec: KafkaSinkSpec,
}

/// A Kafka sink: its description and how `T` becomes a record
/// ([`crate::stream::DataStream::sink_to_kafka`]).
#[derive(Debug, Clone)]
pub struct KafkaSink<T> {
    pub(crate) spec: KafkaSinkSpec,
    pub(crate) serializer: KafkaSerializer<T>,
    pub(crate) errors: Vec<String>,
}

/// Default `transaction.timeout.ms` of exactly-once sinks: 15 minutes, the brokers' default
/// maximum (`transaction.max.timeout.ms`), as Flink recommends raising it to.
pub const DEFAULT_TRANSACTION_TIMEOUT_MS: u64 = 900_000;

/// How long an exactly-once sink's commit may take, ms: its epochs' records written and
/// acknowledged, and the commit itself.
pub const COMMIT_ALLOWANCE_MS: u64 = 60_000;

/// The warning for an exactly-once sink whose `transaction_timeout_ms` is shorter than the
/// checkpoint interval plus the time a commit may take ([`COMMIT_ALLOWANCE_MS`]); `None` when it
/// is long enough. A commit writes the epochs of about one checkpoint interval in one
/// transaction; a transaction that outlives the timeout is aborted by the brokers and the commit
/// fails. The jobmanager checks this at submission, the writer (without the interval) at open.
pub fn check_transaction_timeout(timeout_ms: u64, checkpoint_interval_ms: u64) -> Option<String> {
    let needed = checkpoint_interval_ms.saturating_add(COMMIT_ALLOWANCE_MS);
    (timeout_ms < needed).then(|| {
        format!(
            "Kafka sink: the transaction timeout ({timeout_ms} ms) is shorter than the checkpoint interval \
             ({checkpoint_interval_ms} ms) plus the time a commit may take ({COMMIT_ALLOWANCE_MS} ms): a commit writes \
             about one interval of output in one transaction, which the brokers abort once it outlives the timeout; \
             set transaction_timeout to at least {needed} ms"
        )
    })
}

impl KafkaSink<()> {
    /// A builder with the defaults: exactly-once, transaction timeout 15 min.
    pub fn builder() -> KafkaSinkBuilder {
        KafkaSinkBuilder {
            spec: KafkaSinkSpec {
                bootstrap_servers: String::new(),
                topic: None,
                delivery: Delivery::ExactlyOnce,
                transactional_id_prefix: String::new(),
                progress_topic: String::new(),
                transaction_timeout_ms: DEFAULT_TRANSACTION_TIMEOUT_MS,
                properties: BTreeMap::new(),
            },
        }
    }
}

impl KafkaSinkBuilder {
    /// The brokers, `host:port,...`.
    pub fn bootstrap_servers(mut self, servers: impl Into<String>) -> Self {
        self.spec.bootstrap_servers = servers.into();
        self
    }

    /// The topic of records that name none.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.spec.topic = Some(topic.into());
        self
    }

    /// The delivery guarantee.
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.spec.delivery = delivery;
        self
    }

    /// Exactly-once: the prefix of the sink subtasks' `transactional.id`s (default: the sink's
    /// uid and the job's name are not stable enough across submissions, so set it).
    pub fn transactional_id_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.spec.transactional_id_prefix = prefix.into();
        self
    }

    /// Exactly-once: the compacted topic of progress markers (default
    /// `<transactional id prefix>.progress`).
    pub fn progress_topic(mut self, topic: impl Into<String>) -> Self {
        self.spec.progress_topic = topic.into();
        self
    }

    /// Exactly-once: the producer's `transaction.timeout.ms`.
    pub fn transaction_timeout(mut self, timeout: Duration) -> Self {
        self.spec.transaction_timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// A librdkafka producer property.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.spec.properties.insert(key.into(), value.into());
        self
    }

    /// The sink, with `serializer` turning `T` into records. Configuration mistakes are
    /// reported when the job is built.
    pub fn build<T>(mut self, serializer: KafkaSerializer<T>) -> KafkaSink<T> {
        let mut errors = Vec::new();
        check_servers(&self.spec.bootstrap_servers, &mut errors, "Kafka sink");
        if let Some(topic) = self.spec.topic.as_deref().filter(|t| !valid_topic(t)) {
            errors.push(format!("Kafka sink: '{topic}' is not a valid topic name"));
        }
        if self.spec.delivery == Delivery::ExactlyOnce {
            if self.spec.transactional_id_prefix.trim().is_empty() {
                errors.push(
                    "Kafka sink: exactly-once needs a transactional id prefix, unique to this sink and stable across \
                     restarts (set transactional_id_prefix(\"...\"))"
                        .into(),
                );
            }
            if self.spec.progress_topic.is_empty() {
                self.spec.progress_topic = format!("{}.progress", self.spec.transactional_id_prefix);
            }
            if !self.spec.transactional_id_prefix.is_empty() && !valid_topic(&self.spec.progress_topic) {
                errors.push(format!(
                    "Kafka sink: '{}' is not a valid progress topic name (set progress_topic(\"...\"))",
                    self.spec.progress_topic
                ));
            }
            if self.spec.transaction_timeout_ms == 0 {
                errors.push("Kafka sink: the transaction timeout must be positive".into());
            }
        }
        KafkaSink { spec: self.spec, serializer, errors }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_timeout_shorter_than_an_interval_and_a_commit_is_warned_about() {
        assert_eq!(check_transaction_timeout(DEFAULT_TRANSACTION_TIMEOUT_MS, 10_000), None);
        let warning = check_transaction_timeout(60_000, 30_000).expect("60 s < 30 s + 60 s");
        assert!(warning.contains("at least 90000 ms"), "{warning}");
        assert_eq!(check_transaction_timeout(u64::MAX, u64::MAX), None);
    }

    #[test]
    fn builders_report_configuration_mistakes_in_one_line_each() {
        let source = KafkaSource::builder().build(KafkaDeserializer::utf8());
        assert_eq!(source.errors.len(), 2, "{:?}", source.errors);
        assert!(source.errors[0].contains("bootstrap servers are missing"));
        assert!(source.errors[1].contains("no topic"));
        let source =
            KafkaSource::builder().bootstrap_servers("b:9092").topics(["bad topic"]).build(KafkaDeserializer::bytes());
        assert!(source.errors[0].contains("'bad topic' is not a valid topic name"));
        let sink =
            KafkaSink::builder().bootstrap_servers("b:9092").topic("out").build(KafkaSerializer::<String>::display());
        assert!(sink.errors[0].contains("needs a transactional id prefix"), "{:?}", sink.errors);
        let sink = KafkaSink::builder()
            .bootstrap_servers("b:9092")
            .topic("out")
            .transactional_id_prefix("wcount-out")
            .build(KafkaSerializer::<String>::display());
        assert!(sink.errors.is_empty(), "{:?}", sink.errors);
        assert_eq!(sink.spec.progress_topic, "wcount-out.progress");
        let sink = KafkaSink::builder()
            .bootstrap_servers("b:9092")
            .delivery(Delivery::AtLeastOnce)
            .build(KafkaSerializer::<String>::display());
        assert!(sink.errors.is_empty(), "no prefix needed without transactions: {:?}", sink.errors);
    }

    #[test]
    fn deserializers_see_the_whole_record_and_refuse_malformed_values() {
        let mut batch = KafkaBatch { topics: vec!["bids".into()], ..KafkaBatch::default() };
        let key = Some(batch.push_bytes(b"k"));
        let value = Some(batch.push_bytes(b"{\"a\":1}"));
        let name = batch.push_bytes(b"h");
        let header_value = Some(batch.push_bytes(b"v"));
        batch.headers.push(RawHeader { name, value: header_value });
        let record = KafkaRawRecord {
            split: 0,
            topic: 0,
            partition: 3,
            offset: 42,
            timestamp: Some(7),
            key,
            value,
            headers: (0, 1),
        };
        let view = KafkaRecord::of(&batch, &record);
        assert_eq!((view.topic(), view.partition(), view.offset(), view.timestamp()), ("bids", 3, 42, Some(7)));
        assert_eq!(view.header("h"), Some(&b"v"[..]));
        #[derive(serde::Deserialize, PartialEq, Debug)]
        struct A {
            a: u32,
        }
        assert_eq!((KafkaDeserializer::<A>::json().0)(&view), Ok(A { a: 1 }));
        assert_eq!((KafkaDeserializer::utf8().0)(&view).as_deref(), Ok("{\"a\":1}"));
        let bad = KafkaRawRecord { value: Some(batch.push_bytes(&[0xff, 0xfe])), ..record };
        let view = KafkaRecord::of(&batch, &bad);
        assert!((KafkaDeserializer::utf8().0)(&view).unwrap_err().contains("not UTF-8"));
        assert!((KafkaDeserializer::<A>::json().0)(&view).unwrap_err().contains("not the expected JSON"));
    }

    #[test]
    fn serializers_write_records_into_one_buffer() {
        let mut records = SinkRecords::default();
        let serializer = KafkaSerializer::from_fn(|v: &(String, u64), out: &mut KafkaRecordOut<'_>| {
            out.key(v.0.as_bytes()).value(v.1.to_string().as_bytes()).header("n", Some(b"1")).topic("t2");
        });
        for value in [("a".to_owned(), 1), ("b".to_owned(), 2)] {
            let mut out = KafkaRecordOut::new(&mut records, Some(9));
            (serializer.0)(&value, &mut out);
            out.finish();
        }
        assert_eq!(records.records.len(), 2);
        let second = records.records[1];
        assert_eq!(records.bytes(second.key.unwrap()), b"b");
        assert_eq!(records.bytes(second.value.unwrap()), b"2");
        assert_eq!(records.bytes(second.topic.unwrap()), b"t2");
        assert_eq!(second.timestamp, Some(9));
        assert_eq!(second.headers, (1, 2));
    }
}
