//! The Kafka source reader: one split per topic partition, read with a librdkafka consumer
//! whose partitions the job assigns itself (no consumer-group rebalancing).
//!
//! - **Splits.** Subtask `s` of `n` reads partition `p` of topic `t` iff
//!   `(start(t) + p) % n == s` with `start(t) = ((javaHash(t) * 31) & 0x7fffffff) % n`, Flink's
//!   `KafkaSourceEnumerator` formula. Topics come from the job's list (each must exist when the
//!   source opens) or are every topic whose whole name matches its pattern (internal topics,
//!   named `__...`, excepted). Splits are numbered in the order the reader takes them (at open:
//!   by topic, in list order or by name for a pattern, then partition; later ones appended) and
//!   never renumbered; a restored reader keeps the checkpoint's numbering.
//! - **Discovery.** With a discovery interval, a background thread looks for new partitions
//!   (and, for a pattern, new topics) so the task thread never waits for metadata; the reader
//!   takes them at its next read (discovery runs at most every 100 ms). A partition found after
//!   the job started begins at the earliest offset (Flink's rule). Bounded sources do not
//!   discover.
//! - **Starting offsets** apply only to the partitions of the job's first start, when no
//!   checkpoint names them. They are resolved at the first read (not at open: a restored reader
//!   never needs them) into concrete offsets, which the next checkpoint stores, so a restart
//!   continues from the same offsets. `Committed` reads the group's offsets (without a group,
//!   or where it committed none, `otherwise`); `Timestamp` the first offset at or after it (the
//!   end of the log where there is none); `Explicit` the given offsets (`otherwise` for the
//!   others). An offset that is no longer in the log (retention) restarts at the earliest one,
//!   which librdkafka logs as a warning.
//! - **Bounded reading** records, at the first read of the job's first start, the end offset of
//!   every split, and keeps them in the position, so a restored job ends at the same place. The
//!   end is what a reader of the source's isolation level sees as the end of the log: the high
//!   watermark for `read_uncommitted`, the **last stable offset** for `read_committed`
//!   (librdkafka asks `ListOffsets` with the consumer's isolation level). A `read_committed`
//!   consumer cannot read past the last stable offset, so ending at the high watermark would
//!   wait for every transaction open at the start (up to its timeout) and then include records
//!   committed after the start; the last stable offset is exactly "what was committed when the
//!   job started", and a bounded job never waits for an open transaction. A split finishes
//!   when its position reaches its end: its last record was read, or the consumer passed the
//!   transaction markers and aborted records before the end (the consumer's position tells).
//!   Records at or past the end (transactions committed later) are not read. Each finished
//!   split is reported once in
//!   [`SplitStatus::finished`](weir_api::runtime::SplitStatus), and [`SourceReader::read`]
//!   returns [`SourceStatus::Finished`] when all are (at once for a subtask without partitions).
//! - **Position** ([`SourceReader::position`]): postcard, versioned: the subtask and parallelism
//!   it belongs to, and every split in order with its topic, partition, next offset (or the rule
//!   that will resolve it) and end. [`SourceReader::restore`] restores it exactly: the next read
//!   starts at the stored offsets, so no record is read twice into state. Restored at another
//!   parallelism (a savepoint), every subtask is given every old subtask's position and keeps
//!   the splits it owns by the assignment formula, with their offsets.
//! - **Consumer group**: offsets are committed (asynchronously, for lag tools only) when a
//!   checkpoint completes, by the [`CheckpointCommitter`] that [`open`] returns (see `commit`);
//!   without a group id nothing is committed.
//! - **Reading** polls at most [`POLL_TIMEOUT`] when nothing is waiting, and fills the batch's
//!   arena (keys, values, header names and values back to back); record timestamps (create or
//!   log-append time) are kept.

mod assignment;
mod client;
mod commit;
mod dead_letter;
mod position;

use self::assignment::TopicSelection;
use self::client::{ClientLog, Owner};
use self::commit::{OffsetCommitter, Offsets, PendingOffsets};
use self::dead_letter::DeadLetters;
use self::position::{Next, Position, PositionV1, StoredSplit};
use crate::connectors::{CheckpointCommitter, OpenedSource};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};
use weir_api::connectors::kafka::{KafkaSourceSpec, OffsetReset, StartingOffsets};
use weir_api::runtime::{
    CheckpointId, FINAL_CHECKPOINT, KafkaRawRecord, MalformedRecord, RawBatch, RawHeader, SourceReader, SourceStatus,
    TaskInfo,
};
use weir_api::{Error, Result};

/// Service name of this source's errors.
const SERVICE: &str = "Kafka source";
/// The longest a read waits for records when none are waiting.
pub const POLL_TIMEOUT: Duration = Duration::from_millis(25);
/// Timeout of metadata and offset requests (opening, the first read, discovery).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A read stops adding records once the batch's arena holds this many bytes.
const MAX_BATCH_BYTES: usize = 16 << 20;
/// How often the consumer's positions are compared with the reader's (to pass transaction
/// markers at the end of bounded partitions and in the committed offsets).
const POSITION_SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// Discovery runs at most this often, whatever the job asks.
const MIN_DISCOVERY_INTERVAL: Duration = Duration::from_millis(100);
/// How many consumer errors are logged one by one before only every 100th is.
const LOGGED_ERRORS: u64 = 10;

/// Opens subtask `task.subtask`'s share (of `task.parallelism`) of a Kafka source: creates the
/// consumer, finds the topics' partitions and keeps this subtask's; with a group id, also the
/// committer of offsets to the group; with a discovery interval (unbounded only), starts
/// discovery. Starting offsets are resolved at the first read.
///
/// # Errors
/// - [`Error::InvalidJob`] (one line) for `subtask >= parallelism`, empty bootstrap servers, an
///   invalid topic pattern, a property the source sets itself (`group.id`, `isolation.level`,
///   `enable.auto.commit`, ...), or one librdkafka refuses (naming key and reason).
/// - [`Error::Runtime`] when the brokers do not answer within 10 s (naming them), or a listed
///   topic does not exist (naming it).
pub fn open(spec: &KafkaSourceSpec, task: &TaskInfo) -> Result<OpenedSource> {
    crate::connectors::check_subtask(SERVICE, task.subtask, task.parallelism)?;
    let selection = TopicSelection::new(&spec.topics, SERVICE)?;
    let owner = Owner { job: task.job_id.clone(), subtask: task.subtask };
    // librdkafka assigns partitions only to a consumer with a group id; without the job's, one
    // that is never committed to.
    let group = spec.group_id.clone().unwrap_or_else(|| format!("weir-source-{}", task.job_id));
    let config = client::consumer_config(spec, &group, &owner, SERVICE)?;
    let metrics = Arc::new(client::SourceMetrics::default());
    let consumer: BaseConsumer<ClientLog> = config
        .create_with_context(ClientLog::measuring(owner.clone(), Arc::clone(&metrics)))
        .map_err(|e| client::creation_error(&e, SERVICE, "consumer"))?;
    let consumer = Arc::new(consumer);
    let servers = spec.bootstrap_servers.trim().to_owned();
    let Found { topics: found, missing } = discover(&consumer, &selection, &servers)?;
    if !missing.is_empty() {
        let names = missing.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
        let (noun, verb) = if missing.len() == 1 { ("topic", "does") } else { ("topics", "do") };
        return Err(Error::runtime(SERVICE, format!("{noun} {names} {verb} not exist (brokers {servers})")));
    }
    let owned =
        assignment::owned(found.iter().map(|(t, p)| (t.as_str(), p.as_slice())), task.subtask, task.parallelism);
    let (job_id, subtask) = (task.job_id.as_str(), task.subtask);
    tracing::info!(
        job_id,
        subtask,
        "Kafka source: {} of {} partitions of {} topics for subtask {subtask} of {}",
        owned.len(),
        found.iter().map(|(_, p)| p.len()).sum::<usize>(),
        found.len(),
        task.parallelism
    );

    let (committer, pending) = match &spec.group_id {
        Some(group) => {
            let mut config = client::consumer_config(spec, group, &owner, SERVICE)?;
            // It reads no partitions: no statistics (the lag is the reading consumer's).
            config.set("statistics.interval.ms", "0");
            let commits: BaseConsumer<ClientLog> = config
                .create_with_context(ClientLog::new(owner.clone()))
                .map_err(|e| client::creation_error(&e, SERVICE, "offset committer"))?;
            let pending = Arc::new(PendingOffsets::default());
            let committer: Arc<dyn CheckpointCommitter> = Arc::new(OffsetCommitter::new(
                commits,
                Arc::clone(&pending),
                owner.clone(),
                group.clone(),
                Arc::clone(&metrics),
            ));
            (Some(committer), Some(pending))
        }
        None => (None, None),
    };
    let discovery = match spec.discovery_interval_ms {
        Some(ms) if !spec.bounded => Some(Discovery::spawn(
            Arc::clone(&consumer),
            selection,
            owner.clone(),
            task.parallelism,
            Duration::from_millis(ms).max(MIN_DISCOVERY_INTERVAL),
            servers,
        )?),
        _ => None,
    };
    let mut reader = KafkaSourceReader {
        spec: spec.clone(),
        owner,
        parallelism: task.parallelism,
        consumer,
        topics: Vec::new(),
        topic_ids: HashMap::new(),
        splits: Vec::new(),
        split_ids: HashMap::new(),
        started: false,
        discovery,
        pending,
        final_remembered: false,
        dead_letters: None,
        last_sync: Instant::now(),
        errors: 0,
    };
    for (topic, partition) in owned {
        reader.add_split(&topic, partition, Next::Starting, None);
    }
    Ok(OpenedSource { reader: Box::new(reader), committer, metrics: Some(metrics) })
}

/// Where a split stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SplitState {
    /// Not assigned to the consumer yet (before the first read).
    Waiting,
    /// Assigned to the consumer.
    Reading,
    /// Bounded reading reached the end; `reported` once it was in a batch's finished splits.
    Finished { reported: bool },
}

/// One partition of this subtask.
#[derive(Debug, Clone)]
struct Split {
    /// Index into the reader's topics.
    topic: u32,
    partition: i32,
    next: Next,
    /// Bounded reading: the end offset (exclusive), once captured.
    end: Option<i64>,
    state: SplitState,
}

impl Split {
    /// Whether the position reached the end (bounded reading).
    fn at_end(&self) -> bool {
        matches!((self.next.offset(), self.end), (Some(next), Some(end)) if next >= end)
    }
}

/// Subtask `s` of `n`'s share of a Kafka source (see the module documentation).
pub struct KafkaSourceReader {
    spec: KafkaSourceSpec,
    owner: Owner,
    parallelism: u32,
    consumer: Arc<BaseConsumer<ClientLog>>,
    /// Topic names by index; only appended to.
    topics: Vec<String>,
    topic_ids: HashMap<String, u32>,
    /// The splits by number.
    splits: Vec<Split>,
    split_ids: HashMap<(u32, i32), u32>,
    /// Whether starting offsets were resolved and the splits assigned.
    started: bool,
    discovery: Option<Discovery>,
    /// Offsets by checkpoint, for the committer (with a group id).
    pending: Option<Arc<PendingOffsets>>,
    /// Whether the final offsets of a finished bounded source were handed to the committer.
    final_remembered: bool,
    dead_letters: Option<DeadLetters>,
    last_sync: Instant,
    /// Consumer errors seen (for rate-limited logging).
    errors: u64,
}

impl std::fmt::Debug for KafkaSourceReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSourceReader")
            .field("subtask", &self.owner.subtask)
            .field("topics", &self.topics)
            .field("splits", &self.splits)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl KafkaSourceReader {
    /// The index of `topic`, added if new.
    fn topic_id(&mut self, topic: &str) -> u32 {
        if let Some(&id) = self.topic_ids.get(topic) {
            return id;
        }
        let id = self.topics.len() as u32;
        self.topics.push(topic.to_owned());
        self.topic_ids.insert(topic.to_owned(), id);
        id
    }

    /// Appends a split (not assigned yet); returns its number, `None` when it exists already.
    fn add_split(&mut self, topic: &str, partition: i32, next: Next, end: Option<i64>) -> Option<u32> {
        let topic = self.topic_id(topic);
        if self.split_ids.contains_key(&(topic, partition)) {
            return None;
        }
        let id = self.splits.len() as u32;
        self.splits.push(Split { topic, partition, next, end, state: SplitState::Waiting });
        self.split_ids.insert((topic, partition), id);
        Some(id)
    }

    fn topic_name(&self, split: &Split) -> &str {
        self.topics.get(split.topic as usize).map_or("", String::as_str)
    }

    /// The first read: resolves what is unresolved (starting offsets, bounded ends) and assigns
    /// every split to the consumer.
    fn start(&mut self) -> Result<()> {
        self.resolve_starting()?;
        if self.spec.bounded {
            let missing: Vec<usize> = (0..self.splits.len()).filter(|&i| self.splits[i].end.is_none()).collect();
            let ends = self.list_offsets(missing.iter().map(|&i| (i, Offset::End)).collect())?;
            for (i, end) in ends {
                self.splits[i].end = Some(end.unwrap_or(0));
            }
        }
        let mut list = TopicPartitionList::with_capacity(self.splits.len());
        for i in 0..self.splits.len() {
            let split = &self.splits[i];
            if self.spec.bounded && split.at_end() {
                self.splits[i].state = SplitState::Finished { reported: false };
                continue;
            }
            let offset = match split.next {
                Next::Offset(offset) => Offset::Offset(offset),
                Next::Earliest | Next::Starting => Offset::Beginning,
            };
            list.add_partition_offset(self.topic_name(split), split.partition, offset)
                .map_err(|e| self.kafka_error("assigning partitions", &e))?;
            self.splits[i].state = SplitState::Reading;
        }
        self.consumer.assign(&list).map_err(|e| self.kafka_error("assigning partitions", &e))?;
        self.started = true;
        let (job_id, subtask) = (self.owner.job.as_str(), self.owner.subtask);
        tracing::info!(job_id, subtask, "Kafka source: reading {} partitions: {}", list.count(), self.describe());
        Ok(())
    }

    /// `topic/partition@next[..end]` of every split, for the log.
    fn describe(&self) -> String {
        let mut text = String::new();
        for split in &self.splits {
            if !text.is_empty() {
                text.push_str(", ");
            }
            let next = split.next.offset().map_or_else(|| format!("{:?}", split.next), |o| o.to_string());
            text.push_str(&format!("{}/{}@{next}", self.topic_name(split), split.partition));
            if let Some(end) = split.end {
                text.push_str(&format!("..{end}"));
            }
        }
        text
    }

    /// Resolves the splits whose position is the starting-offsets rule, deterministically: into
    /// concrete offsets, which the next checkpoint stores.
    fn resolve_starting(&mut self) -> Result<()> {
        let unresolved: Vec<usize> =
            (0..self.splits.len()).filter(|&i| self.splits[i].next == Next::Starting).collect();
        if unresolved.is_empty() {
            return Ok(());
        }
        let reset = |reset: OffsetReset| match reset {
            OffsetReset::Earliest => Offset::Beginning,
            OffsetReset::Latest => Offset::End,
        };
        // Per split: a known offset, or a ListOffsets query (a timestamp, or Beginning / End).
        let mut known: Vec<(usize, i64)> = Vec::new();
        let mut queries: Vec<(usize, Offset)> = Vec::new();
        match &self.spec.starting_offsets {
            StartingOffsets::Earliest => queries.extend(unresolved.iter().map(|&i| (i, Offset::Beginning))),
            StartingOffsets::Latest => queries.extend(unresolved.iter().map(|&i| (i, Offset::End))),
            StartingOffsets::Timestamp(ms) => queries.extend(unresolved.iter().map(|&i| (i, Offset::Offset(*ms)))),
            StartingOffsets::Explicit { offsets, otherwise } => {
                for &i in &unresolved {
                    let split = &self.splits[i];
                    match offsets.get(self.topic_name(split)).and_then(|p| p.get(&split.partition)) {
                        Some(&offset) if offset >= 0 => known.push((i, offset)),
                        Some(&offset) => {
                            return Err(Error::InvalidJob(format!(
                                "{SERVICE}: the explicit starting offset {offset} of {}/{} is negative",
                                self.topic_name(split),
                                split.partition
                            )));
                        }
                        None => queries.push((i, reset(*otherwise))),
                    }
                }
            }
            StartingOffsets::Committed { otherwise } => match &self.spec.group_id {
                Some(_) => {
                    let committed = self.committed(&unresolved)?;
                    for (i, offset) in committed {
                        match offset {
                            Some(offset) => known.push((i, offset)),
                            None => queries.push((i, reset(*otherwise))),
                        }
                    }
                }
                None => queries.extend(unresolved.iter().map(|&i| (i, reset(*otherwise)))),
            },
        }
        let mut past_the_end = Vec::new();
        for (i, offset) in self.list_offsets(queries)? {
            match offset {
                Some(offset) => known.push((i, offset)),
                // No record at or after the timestamp: the end of the log.
                None => past_the_end.push((i, Offset::End)),
            }
        }
        for (i, offset) in self.list_offsets(past_the_end)? {
            known.push((i, offset.unwrap_or(0)));
        }
        for (i, offset) in known {
            self.splits[i].next = Next::Offset(offset);
        }
        Ok(())
    }

    /// The group's committed offsets of `splits` (`None` where it committed none).
    fn committed(&self, splits: &[usize]) -> Result<Vec<(usize, Option<i64>)>> {
        let mut list = TopicPartitionList::with_capacity(splits.len());
        for &i in splits {
            let split = &self.splits[i];
            list.add_partition_offset(self.topic_name(split), split.partition, Offset::Invalid)
                .map_err(|e| self.kafka_error("reading committed offsets", &e))?;
        }
        let committed = self
            .consumer
            .committed_offsets(list, REQUEST_TIMEOUT)
            .map_err(|e| self.kafka_error("reading the consumer group's committed offsets", &e))?;
        let mut out = Vec::with_capacity(splits.len());
        for &i in splits {
            let split = &self.splits[i];
            let offset =
                committed.find_partition(self.topic_name(split), split.partition).and_then(|e| match e.offset() {
                    Offset::Offset(offset) if offset >= 0 => Some(offset),
                    _ => None,
                });
            out.push((i, offset));
        }
        Ok(out)
    }

    /// Asks the brokers for offsets (`ListOffsets` with the consumer's isolation level):
    /// `Beginning` (earliest), `End` (high watermark, or last stable offset under
    /// `read_committed`) or `Offset(t)` (the first offset with a timestamp `>= t`; `None` when
    /// there is none).
    fn list_offsets(&self, queries: Vec<(usize, Offset)>) -> Result<Vec<(usize, Option<i64>)>> {
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let mut list = TopicPartitionList::with_capacity(queries.len());
        for &(i, query) in &queries {
            let split = &self.splits[i];
            list.add_partition_offset(self.topic_name(split), split.partition, query)
                .map_err(|e| self.kafka_error("looking up offsets", &e))?;
        }
        let answer = self
            .consumer
            .offsets_for_times(list, REQUEST_TIMEOUT)
            .map_err(|e| self.kafka_error("looking up offsets", &e))?;
        let mut out = Vec::with_capacity(queries.len());
        for (i, _) in queries {
            let split = &self.splits[i];
            let (topic, partition) = (self.topic_name(split), split.partition);
            let element = answer.find_partition(topic, partition).ok_or_else(|| {
                Error::runtime(SERVICE, format!("no offset for {topic}/{partition} in the brokers' answer"))
            })?;
            if let Err(e) = element.error() {
                return Err(Error::runtime(SERVICE, format!("cannot look up the offsets of {topic}/{partition}: {e}")));
            }
            let offset = match element.offset() {
                Offset::Offset(offset) if offset >= 0 => Some(offset),
                _ => None,
            };
            out.push((i, offset));
        }
        Ok(out)
    }

    /// A Kafka client error while `doing`, naming the brokers.
    fn kafka_error(&self, doing: &str, e: &KafkaError) -> Error {
        Error::runtime(SERVICE, format!("{doing} failed (brokers {}): {e}", self.spec.bootstrap_servers.trim()))
    }

    /// Takes the partitions discovery found since the last read: new ones start at the earliest
    /// offset.
    fn take_discovered(&mut self) -> Result<()> {
        let Some(discovery) = &self.discovery else {
            return Ok(());
        };
        let mut latest = None;
        while let Ok(owned) = discovery.results.try_recv() {
            latest = Some(owned);
        }
        let Some(owned) = latest else {
            return Ok(());
        };
        let mut list = TopicPartitionList::new();
        for (topic, partition) in owned {
            let Some(id) = self.add_split(&topic, partition, Next::Earliest, None) else {
                continue;
            };
            if self.started {
                list.add_partition_offset(&topic, partition, Offset::Beginning)
                    .map_err(|e| self.kafka_error("assigning new partitions", &e))?;
                self.splits[id as usize].state = SplitState::Reading;
            }
            let (job_id, subtask) = (self.owner.job.as_str(), self.owner.subtask);
            tracing::info!(
                job_id,
                subtask,
                split = id,
                "Kafka source: new partition {topic}/{partition}, read from the earliest offset"
            );
        }
        if list.count() > 0 {
            self.consumer.incremental_assign(&list).map_err(|e| self.kafka_error("assigning new partitions", &e))?;
        }
        Ok(())
    }

    /// Appends `message` to `out` if it belongs to a split being read and lies before its end;
    /// returns whether it did.
    fn take(&mut self, message: &BorrowedMessage<'_>, out: &mut RawBatch) -> bool {
        let partition = message.partition();
        let Some(&topic) = self.topic_ids.get(message.topic()) else {
            return false;
        };
        let Some(&id) = self.split_ids.get(&(topic, partition)) else {
            return false;
        };
        let split = &mut self.splits[id as usize];
        if split.state != SplitState::Reading {
            // Fetched before the split finished and was unassigned.
            return false;
        }
        let offset = message.offset();
        if let Some(end) = split.end
            && offset >= end
        {
            // Past the bounded end (a transaction committed after the start).
            split.next = Next::Offset(end);
            return false;
        }
        if let Some(next) = split.next.offset()
            && offset < next
        {
            let (job_id, subtask) = (self.owner.job.as_str(), self.owner.subtask);
            tracing::warn!(
                job_id,
                subtask,
                "Kafka source: {}/{partition} went back from offset {next} to {offset} (the log was truncated or \
                 recreated); reading on from {offset}",
                self.topics[topic as usize]
            );
        }
        let kafka = &mut out.kafka;
        let first_header = kafka.headers.len() as u32;
        if let Some(headers) = message.headers() {
            for header in headers.iter() {
                let name = kafka.push_bytes(header.key.as_bytes());
                let value = header.value.map(|v| kafka.push_bytes(v));
                kafka.headers.push(RawHeader { name, value });
            }
        }
        let key = message.key().map(|k| kafka.push_bytes(k));
        let value = message.payload().map(|v| kafka.push_bytes(v));
        kafka.records.push(KafkaRawRecord {
            split: id,
            topic,
            partition,
            offset,
            timestamp: message.timestamp().to_millis(),
            key,
            value,
            headers: (first_header, kafka.headers.len() as u32),
        });
        split.next = Next::Offset(offset + 1);
        true
    }

    /// A consumer error: fatal ones and failed authorization fail the read; others (brokers
    /// going away, leaders moving) are logged and librdkafka retries.
    fn consumer_error(&mut self, e: KafkaError) -> Result<()> {
        let code = e.rdkafka_error_code();
        let fatal = matches!(e, KafkaError::MessageConsumptionFatal(_))
            || matches!(
                code,
                Some(
                    RDKafkaErrorCode::TopicAuthorizationFailed
                        | RDKafkaErrorCode::GroupAuthorizationFailed
                        | RDKafkaErrorCode::ClusterAuthorizationFailed
                        | RDKafkaErrorCode::Authentication
                        | RDKafkaErrorCode::SaslAuthenticationFailed
                )
            );
        if fatal {
            return Err(self.kafka_error("consuming", &e));
        }
        self.errors += 1;
        if self.errors <= LOGGED_ERRORS || self.errors.is_multiple_of(100) {
            let (job_id, subtask) = (self.owner.job.as_str(), self.owner.subtask);
            tracing::warn!(
                job_id,
                subtask,
                errors = self.errors,
                "Kafka source: consumer error (librdkafka retries): {e}"
            );
        }
        Ok(())
    }

    /// Moves each split's position past what the consumer passed without handing it out
    /// (transaction markers, aborted records under `read_committed`): every record it handed out
    /// was taken, so its position is never behind the reader's.
    fn sync_positions(&mut self) {
        self.last_sync = Instant::now();
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        for element in positions.elements() {
            let Offset::Offset(position) = element.offset() else {
                continue;
            };
            let Some(&topic) = self.topic_ids.get(element.topic()) else {
                continue;
            };
            let Some(&id) = self.split_ids.get(&(topic, element.partition())) else {
                continue;
            };
            let split = &mut self.splits[id as usize];
            if split.state != SplitState::Reading {
                continue;
            }
            let position = split.end.map_or(position, |end| position.min(end));
            match split.next {
                Next::Offset(next) if next >= position => {}
                _ => split.next = Next::Offset(position),
            }
        }
    }

    /// Finishes the splits whose position reached their end: unassigns them.
    fn finish_reached(&mut self) {
        let mut list = TopicPartitionList::new();
        for i in 0..self.splits.len() {
            let split = &self.splits[i];
            if split.state == SplitState::Reading && split.at_end() {
                let _ = list.add_partition(self.topic_name(split), split.partition);
                self.splits[i].state = SplitState::Finished { reported: false };
            }
        }
        if list.count() > 0
            && let Err(e) = self.consumer.incremental_unassign(&list)
        {
            let (job_id, subtask) = (self.owner.job.as_str(), self.owner.subtask);
            tracing::warn!(job_id, subtask, "Kafka source: cannot unassign finished partitions: {e}");
        }
    }

    /// Fills what `out` says besides records: new topic names, the split count, splits that
    /// finished since the last batch.
    fn publish(&mut self, out: &mut RawBatch) {
        let known = out.kafka.topics.len();
        if known < self.topics.len() {
            out.kafka.topics.extend(self.topics[known..].iter().cloned());
        }
        out.splits.assigned = self.splits.len() as u32;
        for (id, split) in self.splits.iter_mut().enumerate() {
            if split.state == (SplitState::Finished { reported: false }) {
                split.state = SplitState::Finished { reported: true };
                out.splits.finished.push(id as u32);
            }
        }
    }

    /// The known offsets of every split, for the consumer group.
    fn offsets(&self) -> Offsets {
        self.splits
            .iter()
            .filter_map(|s| s.next.offset().map(|offset| (self.topic_name(s).to_owned(), s.partition, offset)))
            .collect()
    }
}

impl SourceReader for KafkaSourceReader {
    fn read(&mut self, max_records: usize, out: &mut RawBatch) -> Result<SourceStatus> {
        self.take_discovered()?;
        if !self.started {
            self.start()?;
        }
        let bounded = self.spec.bounded;
        let done = |splits: &[Split]| splits.iter().all(|s| matches!(s.state, SplitState::Finished { .. }));
        if !(bounded && done(&self.splits)) {
            let consumer = Arc::clone(&self.consumer);
            let deadline = Instant::now() + POLL_TIMEOUT;
            let mut taken = 0;
            while taken < max_records && out.kafka.data.len() < MAX_BATCH_BYTES {
                let wait = if taken == 0 { deadline.saturating_duration_since(Instant::now()) } else { Duration::ZERO };
                match consumer.poll(wait) {
                    Some(Ok(message)) => taken += usize::from(self.take(&message, out)),
                    Some(Err(e)) => self.consumer_error(e)?,
                    None if taken > 0 || Instant::now() >= deadline => break,
                    None => {}
                }
            }
            if taken < max_records && self.last_sync.elapsed() >= POSITION_SYNC_INTERVAL {
                self.sync_positions();
            }
            if bounded {
                self.finish_reached();
            }
        }
        self.publish(out);
        if bounded && done(&self.splits) {
            if !self.final_remembered
                && let Some(pending) = &self.pending
            {
                self.final_remembered = true;
                pending.remember(FINAL_CHECKPOINT, self.offsets());
            }
            return Ok(SourceStatus::Finished);
        }
        Ok(SourceStatus::Ready)
    }

    /// Every split in order: topic, partition, next offset (or the rule that resolves it), end
    /// offset when bounded; and the subtask and parallelism, postcard-encoded and versioned.
    fn position(&self) -> Vec<u8> {
        let splits = self
            .splits
            .iter()
            .map(|s| StoredSplit {
                topic: self.topic_name(s).to_owned(),
                partition: s.partition,
                next: s.next,
                end: s.end,
            })
            .collect();
        Position::V1(PositionV1 { subtask: self.owner.subtask, parallelism: self.parallelism, splits }).encode()
    }

    /// Replaces the splits with the restored ones: this subtask's own position's, in its order;
    /// after a change of parallelism, the splits of every old subtask's position that this
    /// subtask owns at its parallelism (Flink's owner formula), with their offsets and end
    /// offsets. An unbounded source appends the partitions it owns now that no position has
    /// (found after the checkpoint: they start at the earliest offset). Meant before the first
    /// read; a later restore starts over.
    ///
    /// # Errors
    /// [`Error::Runtime`] when a position is not a Kafka source position, names a partition
    /// twice, or (another parallelism) the positions are not those of every old subtask.
    fn restore(&mut self, positions: &[Vec<u8>]) -> Result<()> {
        let mut decoded = Vec::with_capacity(positions.len());
        for bytes in positions {
            decoded.push(Position::decode(bytes).map_err(|e| {
                Error::runtime(SERVICE, format!("the restored position is not a Kafka source position: {e}"))
            })?);
        }
        let own = decoded.iter().position(|p| p.parallelism == self.parallelism && p.subtask == self.owner.subtask);
        let restored_splits: Vec<StoredSplit> = match own {
            Some(index) => decoded.swap_remove(index).splits,
            None => {
                decoded.sort_by_key(|p| p.subtask);
                let old = decoded.first().map_or(0, |p| p.parallelism);
                let subtasks: Vec<u32> = decoded.iter().map(|p| p.subtask).collect();
                if decoded.iter().any(|p| p.parallelism != old) || subtasks != (0..old).collect::<Vec<_>>() {
                    return Err(Error::runtime(
                        SERVICE,
                        format!(
                            "subtask {} of {} was given the positions of subtasks {subtasks:?} of a source that ran \
                             at parallelism {old}: every old subtask's position is needed to take its partitions",
                            self.owner.subtask, self.parallelism
                        ),
                    ));
                }
                decoded
                    .into_iter()
                    .flat_map(|p| p.splits)
                    .filter(|s| assignment::owner(&s.topic, s.partition, self.parallelism) == self.owner.subtask)
                    .collect()
            }
        };
        if self.started {
            self.consumer.unassign().map_err(|e| self.kafka_error("unassigning partitions", &e))?;
            self.started = false;
        }
        let current: Vec<(String, i32)> =
            self.splits.iter().map(|s| (self.topic_name(s).to_owned(), s.partition)).collect();
        self.splits.clear();
        self.split_ids.clear();
        self.final_remembered = false;
        for stored in restored_splits {
            if self.add_split(&stored.topic, stored.partition, stored.next, stored.end).is_none() {
                return Err(Error::runtime(
                    SERVICE,
                    format!("the restored position names {}/{} twice", stored.topic, stored.partition),
                ));
            }
        }
        let restored = self.splits.len();
        if !self.spec.bounded {
            for (topic, partition) in current {
                self.add_split(&topic, partition, Next::Earliest, None);
            }
        }
        let (job_id, subtask) = (self.owner.job.as_str(), self.owner.subtask);
        tracing::info!(
            job_id,
            subtask,
            "Kafka source: restored {restored} partitions{}",
            if self.splits.len() > restored {
                format!(", {} new ones", self.splits.len() - restored)
            } else {
                String::new()
            }
        );
        Ok(())
    }

    /// Remembers the offsets of `checkpoint` for the consumer group (with a group id).
    fn checkpoint(&mut self, checkpoint: CheckpointId) {
        if let Some(pending) = &self.pending {
            pending.remember(checkpoint, self.offsets());
        }
    }

    /// Writes `records` to `topic` with their original key, value and headers plus `weir.error`,
    /// `weir.topic`, `weir.partition` and `weir.offset`, and waits until the brokers
    /// acknowledged them. At least once: a job restored from an earlier checkpoint writes them
    /// again. The producer is created at the first dead letter.
    ///
    /// # Errors
    /// [`Error::Runtime`] when the topic does not exist or the records cannot be written within
    /// 30 s; [`Error::InvalidJob`] when librdkafka refuses the job's properties for a producer.
    fn dead_letter(&mut self, topic: &str, batch: &RawBatch, records: &[MalformedRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if self.dead_letters.is_none() {
            self.dead_letters = Some(DeadLetters::new(&self.spec, &self.owner, SERVICE)?);
        }
        match self.dead_letters.as_mut() {
            Some(dead_letters) => dead_letters.write(topic, batch, records, SERVICE),
            None => Ok(()),
        }
    }
}

/// The background partition discovery of an unbounded source.
struct Discovery {
    /// The partitions this subtask owns, as of each discovery.
    results: Receiver<Vec<(String, i32)>>,
    /// Dropped with the reader: the thread ends at its next wake-up.
    _stop: Sender<()>,
}

impl Discovery {
    /// Starts a thread that, every `interval`, finds the partitions of the selected topics and
    /// sends those subtask `owner.subtask` of `parallelism` owns.
    fn spawn(
        consumer: Arc<BaseConsumer<ClientLog>>,
        selection: TopicSelection,
        owner: Owner,
        parallelism: u32,
        interval: Duration,
        servers: String,
    ) -> Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let (send, results) = mpsc::channel();
        let name = format!("kafka-discovery-{}", owner.subtask);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let (job_id, subtask) = (owner.job.as_str(), owner.subtask);
                loop {
                    match stopped.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                    match discover(&consumer, &selection, &servers) {
                        Ok(Found { topics: found, missing }) => {
                            if !missing.is_empty() {
                                tracing::warn!(
                                    job_id,
                                    subtask,
                                    "Kafka source: discovery: topics {missing:?} do not exist"
                                );
                            }
                            let owned = assignment::owned(
                                found.iter().map(|(t, p)| (t.as_str(), p.as_slice())),
                                subtask,
                                parallelism,
                            );
                            if send.send(owned).is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(job_id, subtask, "Kafka source: discovery: {e}"),
                    }
                }
            })
            .map_err(|e| Error::runtime(SERVICE, format!("cannot start partition discovery: {e}")))?;
        Ok(Self { results, _stop: stop })
    }
}

/// What a metadata request says of the selected topics.
#[derive(Debug, Default)]
struct Found {
    /// The selected topics with their partition ids (list order, or by name for a pattern).
    topics: Vec<(String, Vec<i32>)>,
    /// Listed topics that do not exist.
    missing: Vec<String>,
}

/// Looks up the selected topics.
///
/// # Errors
/// [`Error::Runtime`] when the brokers do not answer within [`REQUEST_TIMEOUT`] or report an
/// error for a topic other than its absence.
fn discover(consumer: &BaseConsumer<ClientLog>, selection: &TopicSelection, servers: &str) -> Result<Found> {
    let fetch = |topic: Option<&str>| {
        consumer.fetch_metadata(topic, REQUEST_TIMEOUT).map_err(|e| {
            Error::runtime(
                SERVICE,
                format!("no metadata from the brokers {servers} within {}s ({e})", REQUEST_TIMEOUT.as_secs()),
            )
        })
    };
    let mut found = Found::default();
    match selection {
        TopicSelection::List(topics) => {
            for topic in topics {
                let metadata = fetch(Some(topic))?;
                let entry = metadata.topics().iter().find(|t| t.name() == topic);
                match entry.map(|t| (t, t.error().map(RDKafkaErrorCode::from))) {
                    Some((t, None)) if !t.partitions().is_empty() => {
                        found.topics.push((topic.clone(), t.partitions().iter().map(|p| p.id()).collect()));
                    }
                    None | Some((_, None | Some(RDKafkaErrorCode::UnknownTopicOrPartition))) => {
                        found.missing.push(topic.clone());
                    }
                    Some((_, Some(error))) => {
                        return Err(Error::runtime(SERVICE, format!("topic '{topic}' (brokers {servers}): {error}")));
                    }
                }
            }
        }
        TopicSelection::Pattern(_) => {
            let metadata = fetch(None)?;
            for t in metadata.topics() {
                if t.error().is_none() && selection.matches(t.name()) {
                    found.topics.push((t.name().to_owned(), t.partitions().iter().map(|p| p.id()).collect()));
                }
            }
            found.topics.sort();
        }
    }
    Ok(found)
}
