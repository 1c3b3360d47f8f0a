//! The Kafka source reader (taskmanager/src/connectors/kafka/source.rs) against a real broker,
//! called directly through `open_source` (no cluster): partition assignment, bounded reading,
//! position and seek, discovery, starting offsets, isolation, dead letters, offsets committed to
//! the group, and one-line errors. Needs the broker's jars (`./scripts/setup.sh`) and Java 17.
//!
//! One broker serves the whole file (tests run in parallel threads, each on its own topics); it
//! is stopped when the test process exits.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use weir_api::connectors::SourceDescriptor;
use weir_api::connectors::kafka::{
    Isolation, KafkaSourceSpec, KafkaTopics, MalformedPolicy, OffsetReset, StartingOffsets,
};
use weir_api::runtime::{FINAL_CHECKPOINT, MalformedRecord, RawBatch, SourceReader, SourceStatus, TaskInfo};
use weir_taskmanager::connectors::{OpenedSource, open_source};
use weir_tests::kafka::{self, Record, TransactionalProducer};

/// The shared broker's address.
fn bootstrap() -> &'static str {
    kafka::shared_bootstrap()
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A bounded source of `topic` reading from the earliest offsets.
fn spec(topic: &str) -> KafkaSourceSpec {
    KafkaSourceSpec {
        bootstrap_servers: bootstrap().to_owned(),
        topics: KafkaTopics::List(vec![topic.to_owned()]),
        group_id: None,
        starting_offsets: StartingOffsets::Earliest,
        bounded: true,
        discovery_interval_ms: None,
        isolation: Isolation::ReadCommitted,
        malformed: MalformedPolicy::Fail,
        properties: BTreeMap::new(),
    }
}

fn task(subtask: u32, parallelism: u32) -> TaskInfo {
    TaskInfo {
        job_id: "00000000000000000000000000000abc".into(),
        job_name: "kafka-source-test".into(),
        task_name: "Source: kafka".into(),
        subtask,
        parallelism,
        max_parallelism: 128,
        attempt: 0,
        heap_state: true,
    }
}

fn open(spec: &KafkaSourceSpec, subtask: u32, parallelism: u32) -> anyhow::Result<OpenedSource> {
    Ok(open_source(&SourceDescriptor::Kafka(spec.clone()), &task(subtask, parallelism), || 0)?)
}

/// A record as the reader produced it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Got {
    topic: String,
    partition: i32,
    offset: i64,
    value: String,
    split: u32,
}

/// What a reader produced over several reads.
#[derive(Debug, Default)]
struct Reads {
    records: Vec<Got>,
    /// Finished splits, in the order reported.
    finished: Vec<u32>,
    /// The split count of the last batch.
    assigned: u32,
}

impl Reads {
    /// `topic/partition:value` of the records, sorted.
    fn values(&self) -> Vec<String> {
        let mut values: Vec<String> =
            self.records.iter().map(|g| format!("{}/{}:{}", g.topic, g.partition, g.value)).collect();
        values.sort();
        values
    }

    /// Records of one partition in the order read.
    fn offsets_of(&self, partition: i32) -> Vec<i64> {
        self.records.iter().filter(|g| g.partition == partition).map(|g| g.offset).collect()
    }
}

/// One read into `batch` (cleared first, as the source operator does); appends to `reads`.
fn read_once(reader: &mut dyn SourceReader, batch: &mut RawBatch, max: usize, reads: &mut Reads) -> SourceStatus {
    batch.clear();
    let status = reader.read(max, batch).expect("read");
    assert!(batch.kafka.records.len() <= max);
    for r in &batch.kafka.records {
        let value = r.value.map(|v| String::from_utf8_lossy(batch.kafka.bytes(v)).into_owned()).unwrap_or_default();
        reads.records.push(Got {
            topic: batch.kafka.topics[r.topic as usize].clone(),
            partition: r.partition,
            offset: r.offset,
            value,
            split: r.split,
        });
    }
    reads.finished.extend(&batch.splits.finished);
    reads.assigned = batch.splits.assigned;
    status
}

/// Reads until the reader finishes (bounded sources), within 30 s.
fn drain(reader: &mut dyn SourceReader, batch: &mut RawBatch, max: usize) -> Reads {
    let mut reads = Reads::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match read_once(reader, batch, max, &mut reads) {
            SourceStatus::Finished => return reads,
            SourceStatus::Ready | SourceStatus::WaitUntil(_) => {}
        }
        assert!(Instant::now() < deadline, "the bounded source did not finish within 30 s: {reads:?}");
    }
}

/// Reads until `n` records arrived (unbounded sources), within 30 s; `reads` keeps adding.
fn read_n(reader: &mut dyn SourceReader, batch: &mut RawBatch, max: usize, n: usize, reads: &mut Reads) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reads.records.len() < n {
        let status = read_once(reader, batch, max.min(n - reads.records.len()), reads);
        assert_ne!(status, SourceStatus::Finished, "an unbounded source finished");
        assert!(Instant::now() < deadline, "only {} of {n} records within 30 s: {reads:?}", reads.records.len());
    }
}

/// `count` records `prefix-i` for each of `partitions` partitions, with keys and a header.
fn records(prefix: &str, partitions: i32, count: usize) -> Vec<Record> {
    (0..partitions)
        .flat_map(|p| {
            (0..count).map(move |i| {
                Record::value(format!("{prefix}{p}-{i}")).key(format!("k{i}")).header("h", "v").partition(p)
            })
        })
        .collect()
}

/// `topic/partition:prefix<partition>-i` for the records of [`records`], sorted.
fn expected(
    topic: &str,
    prefix: &str,
    partitions: impl IntoIterator<Item = i32>,
    range: std::ops::Range<usize>,
) -> Vec<String> {
    let mut values: Vec<String> = partitions
        .into_iter()
        .flat_map(|p| range.clone().map(move |i| format!("{topic}/{p}:{prefix}{p}-{i}")))
        .collect();
    values.sort();
    values
}

fn setup(topic: &str, partitions: i32, count: usize) -> anyhow::Result<()> {
    kafka::create_topic(bootstrap(), topic, partitions)?;
    kafka::produce(bootstrap(), topic, &records("v", partitions, count))
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn four_partitions_over_three_subtasks_follow_flinks_formula() -> anyhow::Result<()> {
    // "bids".hashCode() = 3023638; 3023638 * 31 = 93732778; 93732778 % 3 = 1: partition p is
    // read by subtask (1 + p) % 3.
    let topic = "bids";
    setup(topic, 4, 5)?;
    let mut all = Vec::new();
    for subtask in 0..3u32 {
        let mut reader = open(&spec(topic), subtask, 3)?.reader;
        let reads = drain(reader.as_mut(), &mut RawBatch::default(), 3);
        let partitions: BTreeSet<i32> = reads.records.iter().map(|g| g.partition).collect();
        let expected: BTreeSet<i32> = (0..4).filter(|p| (1 + p) % 3 == subtask as i32).collect();
        assert_eq!(partitions, expected, "subtask {subtask}");
        assert_eq!(reads.assigned as usize, expected.len());
        all.extend(reads.values());
    }
    all.sort();
    assert_eq!(all, expected(topic, "v", 0..4, 0..5), "every record exactly once");
    Ok(())
}

#[test]
fn bounded_reading_ends_with_every_record_once_in_offset_order() -> anyhow::Result<()> {
    let topic = "weir-src-bounded";
    kafka::create_topic(bootstrap(), topic, 3)?;
    let with_time: Vec<Record> = records("v", 3, 40).into_iter().map(|r| r.timestamp(1_700_000_000_000)).collect();
    kafka::produce(bootstrap(), topic, &with_time)?;
    let mut all = Vec::new();
    for subtask in 0..2 {
        let mut batch = RawBatch::default();
        let mut reader = open(&spec(topic), subtask, 2)?.reader;
        let reads = drain(reader.as_mut(), &mut batch, 7);
        for partition in 0..3 {
            let offsets = reads.offsets_of(partition);
            assert!(
                offsets.is_empty() || offsets == (0..40).collect::<Vec<i64>>(),
                "partition {partition}: {offsets:?}"
            );
        }
        // Splits are numbered 0.. and each is reported finished once.
        let mut finished = reads.finished.clone();
        finished.sort_unstable();
        assert_eq!(finished, (0..reads.assigned).collect::<Vec<_>>(), "subtask {subtask}");
        assert!(reads.records.iter().all(|g| g.split < reads.assigned));
        // Reading on after the end: still finished, nothing more, nothing reported again.
        batch.clear();
        assert_eq!(reader.read(10, &mut batch)?, SourceStatus::Finished);
        assert!(batch.kafka.records.is_empty() && batch.splits.finished.is_empty());
        all.extend(reads.values());
    }
    all.sort();
    assert_eq!(all, expected(topic, "v", 0..3, 0..40));

    // Keys, headers and timestamps come through.
    let mut batch = RawBatch::default();
    let mut reader = open(&spec(topic), 0, 1)?.reader;
    let deadline = Instant::now() + Duration::from_secs(30);
    while batch.kafka.records.is_empty() {
        batch.clear();
        reader.read(1, &mut batch)?;
        assert!(Instant::now() < deadline);
    }
    let record = batch.kafka.records[0];
    assert_eq!(record.timestamp, Some(1_700_000_000_000));
    assert_eq!(batch.kafka.bytes(record.key.unwrap()), b"k0");
    assert_eq!(record.headers.1 - record.headers.0, 1);
    let header = batch.kafka.headers[record.headers.0 as usize];
    assert_eq!(
        (batch.kafka.bytes(header.name), header.value.map(|v| batch.kafka.bytes(v))),
        (&b"h"[..], Some(&b"v"[..]))
    );

    // A subtask without partitions finishes at once.
    let single = "weir-src-single";
    setup(single, 1, 2)?;
    let idle = (0..3).find(|&s| s != owner(single, 0, 3)).unwrap();
    let mut reader = open(&spec(single), idle, 3)?.reader;
    let mut batch = RawBatch::default();
    assert_eq!(reader.read(10, &mut batch)?, SourceStatus::Finished);
    assert_eq!(batch.splits.assigned, 0);
    Ok(())
}

/// Flink's owner of a partition, computed here independently of the reader.
fn owner(topic: &str, partition: i32, parallelism: i32) -> u32 {
    let hash = topic.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let start = (hash.wrapping_mul(31) & 0x7fff_ffff) % parallelism;
    ((start + partition) % parallelism) as u32
}

#[test]
fn a_restored_position_continues_without_duplicates_and_keeps_the_bounded_end() -> anyhow::Result<()> {
    let topic = "weir-src-seek";
    setup(topic, 3, 20)?;
    let mut first = Reads::default();
    let mut batch = RawBatch::default();
    let position = {
        let mut reader = open(&spec(topic), 0, 1)?.reader;
        read_n(reader.as_mut(), &mut batch, 4, 25, &mut first);
        reader.position()
    };
    // Records written after the job started are past the bounded end kept in the position.
    kafka::produce(bootstrap(), topic, &records("late", 3, 2))?;
    let mut reader = open(&spec(topic), 0, 1)?.reader;
    reader.restore(std::slice::from_ref(&position))?;
    let mut batch = RawBatch::default();
    let rest = drain(reader.as_mut(), &mut batch, 6);
    let mut all: Vec<String> = first.values().into_iter().chain(rest.values()).collect();
    all.sort();
    assert_eq!(
        all,
        expected(topic, "v", 0..3, 0..20),
        "first {} + rest {} records",
        first.records.len(),
        rest.records.len()
    );
    // The split numbers of the restored reader are the first reader's.
    let numbering = |reads: &Reads| reads.records.iter().map(|g| (g.partition, g.split)).collect::<BTreeMap<_, _>>();
    let (before, after) = (numbering(&first), numbering(&rest));
    assert!(before.iter().all(|(p, s)| after.get(p).is_none_or(|a| a == s)), "{before:?} vs {after:?}");

    // Restored at parallelism 2 (a savepoint restored with another -p), the two subtasks take
    // the partitions they own with their offsets and together read exactly the rest.
    let mut rescaled = Reads::default();
    for subtask in 0..2 {
        let mut reader = open(&spec(topic), subtask, 2)?.reader;
        reader.restore(std::slice::from_ref(&position))?;
        let reads = drain(reader.as_mut(), &mut RawBatch::default(), 6);
        assert!(
            reads.records.iter().all(|r| owner(topic, r.partition, 2) == subtask),
            "subtask {subtask} read a partition it does not own"
        );
        rescaled.records.extend(reads.records);
    }
    let mut all: Vec<String> = first.values().into_iter().chain(rescaled.values()).collect();
    all.sort();
    assert_eq!(all, expected(topic, "v", 0..3, 0..20), "rescaled to 2 subtasks");

    // Positions of only some old subtasks are refused (partitions would be lost), garbage too.
    let halves: Vec<Vec<u8>> =
        (0..2).map(|s| open(&spec(topic), s, 2).map(|o| o.reader.position())).collect::<Result<_, _>>()?;
    let mut other = open(&spec(topic), 0, 3)?.reader;
    let err = other.restore(&halves[1..]).unwrap_err().to_string();
    assert!(err.contains("subtasks [1] of a source that ran at parallelism 2"), "{err}");
    other.restore(&halves)?;
    assert!(other.restore(&[vec![9, 9, 9]]).unwrap_err().to_string().contains("not a Kafka source position"));
    Ok(())
}

#[test]
fn partitions_added_while_reading_are_discovered_and_read_from_the_earliest_offset() -> anyhow::Result<()> {
    let topic = "weir-src-discovery";
    setup(topic, 1, 3)?;
    let spec = KafkaSourceSpec { bounded: false, discovery_interval_ms: Some(200), ..spec(topic) };
    let mut reader = open(&spec, 0, 1)?.reader;
    let mut batch = RawBatch::default();
    let mut reads = Reads::default();
    read_n(reader.as_mut(), &mut batch, 10, 3, &mut reads);
    assert_eq!(reads.assigned, 1);
    kafka::add_partitions(bootstrap(), topic, 3)?;
    // Written before discovery finds the partitions: read anyway (they start at the earliest).
    kafka::produce(
        bootstrap(),
        topic,
        &records("new", 3, 2).into_iter().filter(|r| r.partition != Some(0)).collect::<Vec<_>>(),
    )?;
    read_n(reader.as_mut(), &mut batch, 10, 7, &mut reads);
    let mut values = reads.values();
    values.sort();
    let mut want = expected(topic, "v", [0], 0..3);
    want.extend(expected(topic, "new", 1..3, 0..2));
    want.sort();
    assert_eq!(values, want);
    assert_eq!(reads.assigned, 3);
    let splits: BTreeMap<i32, u32> = reads.records.iter().map(|g| (g.partition, g.split)).collect();
    assert_eq!(splits, BTreeMap::from([(0, 0), (1, 1), (2, 2)]), "new splits are appended");
    // With nothing to read, a read returns soon (the task thread has other work).
    let idle = Instant::now();
    assert_eq!(read_once(reader.as_mut(), &mut batch, 10, &mut reads), SourceStatus::Ready);
    assert!(idle.elapsed() < Duration::from_millis(250), "an idle read took {:?}", idle.elapsed());

    // A pattern selects whole names and finds topics created later.
    kafka::create_topic(bootstrap(), "weir-src-pat-1", 1)?;
    kafka::create_topic(bootstrap(), "weir-src-pat-1x", 1)?;
    kafka::produce(bootstrap(), "weir-src-pat-1", &[Record::value("a")])?;
    kafka::produce(bootstrap(), "weir-src-pat-1x", &[Record::value("not matched")])?;
    let pattern = KafkaSourceSpec { topics: KafkaTopics::Pattern("weir-src-pat-[0-9]+".into()), ..spec.clone() };
    let mut reader = open(&pattern, 0, 1)?.reader;
    // A batch belongs to one reader: it keeps the reader's topic names.
    let mut batch = RawBatch::default();
    let mut reads = Reads::default();
    read_n(reader.as_mut(), &mut batch, 10, 1, &mut reads);
    kafka::create_topic(bootstrap(), "weir-src-pat-2", 1)?;
    kafka::produce(bootstrap(), "weir-src-pat-2", &[Record::value("b")])?;
    read_n(reader.as_mut(), &mut batch, 10, 2, &mut reads);
    // Nothing else arrives (the non-matching topic).
    for _ in 0..10 {
        read_once(reader.as_mut(), &mut batch, 10, &mut reads);
    }
    assert_eq!(reads.values(), ["weir-src-pat-1/0:a", "weir-src-pat-2/0:b"]);
    Ok(())
}

#[test]
fn starting_offsets_earliest_latest_timestamp_and_explicit() -> anyhow::Result<()> {
    let topic = "weir-src-starting";
    kafka::create_topic(bootstrap(), topic, 2)?;
    let timed: Vec<Record> = (0..2)
        .flat_map(|p| {
            (0..4).map(move |i| Record::value(format!("v{p}-{i}")).partition(p).timestamp(1000 * (i as i64 + 1)))
        })
        .collect();
    kafka::produce(bootstrap(), topic, &timed)?;
    let bounded = |starting_offsets| KafkaSourceSpec { starting_offsets, ..spec(topic) };
    let read_all = |spec: KafkaSourceSpec| -> anyhow::Result<Vec<String>> {
        let mut reader = open(&spec, 0, 1)?.reader;
        Ok(drain(reader.as_mut(), &mut RawBatch::default(), 100).values())
    };
    assert_eq!(read_all(bounded(StartingOffsets::Earliest))?, expected(topic, "v", 0..2, 0..4));
    assert!(read_all(bounded(StartingOffsets::Latest))?.is_empty());
    // The first record at or after 2500 ms is the third of each partition.
    assert_eq!(read_all(bounded(StartingOffsets::Timestamp(2500)))?, expected(topic, "v", 0..2, 2..4));
    // None after 10 s: the end of the log.
    assert!(read_all(bounded(StartingOffsets::Timestamp(10_000)))?.is_empty());
    let explicit = StartingOffsets::Explicit {
        offsets: BTreeMap::from([(topic.to_owned(), BTreeMap::from([(0, 1)]))]),
        otherwise: OffsetReset::Latest,
    };
    assert_eq!(read_all(bounded(explicit))?, expected(topic, "v", [0], 1..4));
    let explicit = StartingOffsets::Explicit { offsets: BTreeMap::new(), otherwise: OffsetReset::Earliest };
    assert_eq!(read_all(bounded(explicit))?, expected(topic, "v", 0..2, 0..4));

    // Latest, unbounded: resolved at the first read, then only newer records.
    let latest = KafkaSourceSpec { bounded: false, starting_offsets: StartingOffsets::Latest, ..spec(topic) };
    let mut reader = open(&latest, 0, 1)?.reader;
    let mut batch = RawBatch::default();
    let mut reads = Reads::default();
    read_once(reader.as_mut(), &mut batch, 10, &mut reads);
    kafka::produce(bootstrap(), topic, &[Record::value("v1-4").partition(1)])?;
    read_n(reader.as_mut(), &mut batch, 10, 1, &mut reads);
    assert_eq!(reads.values(), [format!("{topic}/1:v1-4")]);
    Ok(())
}

/// The offsets `group` committed for `topic`'s `partitions` (`None`: none).
fn committed(group: &str, topic: &str, partitions: i32) -> anyhow::Result<Vec<Option<i64>>> {
    let consumer: BaseConsumer = kafka::client_config(bootstrap()).set("group.id", group).create()?;
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Invalid)?;
    }
    let list = consumer.committed_offsets(list, Duration::from_secs(10))?;
    Ok((0..partitions)
        .map(|p| match list.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        })
        .collect())
}

#[test]
fn committed_offsets_follow_completed_checkpoints_and_fall_back_where_there_are_none() -> anyhow::Result<()> {
    let topic = "weir-src-committed";
    setup(topic, 2, 10)?;
    let group = "weir-src-committed-group";
    let unbounded = |starting_offsets| KafkaSourceSpec {
        bounded: false,
        group_id: Some(group.to_owned()),
        starting_offsets,
        ..spec(topic)
    };
    // Read partition 0 only (subtask of 2 that owns it), 4 records, checkpoint 1, complete it.
    let subtask = owner(topic, 0, 2);
    let opened = open(&unbounded(StartingOffsets::Earliest), subtask, 2)?;
    let (mut reader, committer) = (opened.reader, opened.committer.expect("a committer with a group id"));
    let mut batch = RawBatch::default();
    let mut reads = Reads::default();
    read_n(reader.as_mut(), &mut batch, 4, 4, &mut reads);
    let _ = reader.position();
    reader.checkpoint(1);
    read_n(reader.as_mut(), &mut batch, 2, 6, &mut reads);
    let _ = reader.position();
    reader.checkpoint(2);
    // Checkpoint 1 completes: its offsets, not checkpoint 2's.
    committer.commit(1)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while committed(group, topic, 2)? != [Some(4), None] {
        assert!(Instant::now() < deadline, "offset 4 not committed: {:?}", committed(group, topic, 2)?);
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(reader);

    // A new reader with Committed: partition 0 from the commit, partition 1 by the fallback.
    let resumed =
        KafkaSourceSpec { bounded: true, ..unbounded(StartingOffsets::Committed { otherwise: OffsetReset::Latest }) };
    let mut reader = open(&resumed, 0, 1)?.reader;
    let reads = drain(reader.as_mut(), &mut RawBatch::default(), 100);
    assert_eq!(reads.values(), expected(topic, "v", [0], 4..10));
    let fallback =
        KafkaSourceSpec { bounded: true, ..unbounded(StartingOffsets::Committed { otherwise: OffsetReset::Earliest }) };
    let mut reader = open(&fallback, 0, 1)?.reader;
    let mut want = expected(topic, "v", [0], 4..10);
    want.extend(expected(topic, "v", [1], 0..10));
    want.sort();
    assert_eq!(drain(reader.as_mut(), &mut RawBatch::default(), 100).values(), want);
    // Without a group, Committed is its fallback, and nothing is committed.
    let no_group = KafkaSourceSpec { group_id: None, ..fallback };
    let opened = open(&no_group, 0, 1)?;
    assert!(opened.committer.is_none());
    let mut reader = opened.reader;
    assert_eq!(drain(reader.as_mut(), &mut RawBatch::default(), 100).values(), expected(topic, "v", 0..2, 0..10));

    // A finished bounded source commits its final offsets with the job's final notification.
    let opened = open(&KafkaSourceSpec { bounded: true, ..unbounded(StartingOffsets::Earliest) }, 0, 1)?;
    let (mut reader, committer) = (opened.reader, opened.committer.expect("a committer with a group id"));
    drain(reader.as_mut(), &mut RawBatch::default(), 100);
    committer.commit(FINAL_CHECKPOINT)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while committed(group, topic, 2)? != [Some(10), Some(10)] {
        assert!(Instant::now() < deadline, "final offsets not committed: {:?}", committed(group, topic, 2)?);
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[test]
fn read_committed_skips_aborted_records_and_ends_at_the_last_stable_offset() -> anyhow::Result<()> {
    let topic = "weir-src-isolation";
    kafka::create_topic(bootstrap(), topic, 1)?;
    let batch = |prefix: &str, n: usize| (0..n).map(|i| Record::value(format!("{prefix}{i}"))).collect::<Vec<_>>();
    let producer = TransactionalProducer::new(bootstrap(), "weir-src-isolation-tx")?;
    producer.transaction(topic, &batch("c", 3), true)?;
    producer.transaction(topic, &batch("a", 3), false)?;
    producer.transaction(topic, &batch("d", 2), true)?;
    // A transaction left open: the last stable offset stays at its first record.
    producer.begin()?;
    for record in batch("o", 2) {
        producer.send(topic, &record)?;
    }
    producer.flush()?;

    let started = Instant::now();
    let mut reader = open(&spec(topic), 0, 1)?.reader;
    let reads = drain(reader.as_mut(), &mut RawBatch::default(), 100);
    let values: Vec<&str> = reads.records.iter().map(|g| g.value.as_str()).collect();
    assert_eq!(values, ["c0", "c1", "c2", "d0", "d1"]);
    assert!(started.elapsed() < Duration::from_secs(20), "the open transaction was not waited for");
    assert_eq!(reads.finished, [0]);

    let uncommitted = KafkaSourceSpec { isolation: Isolation::ReadUncommitted, ..spec(topic) };
    let mut reader = open(&uncommitted, 0, 1)?.reader;
    let reads = drain(reader.as_mut(), &mut RawBatch::default(), 100);
    let values: Vec<&str> = reads.records.iter().map(|g| g.value.as_str()).collect();
    assert_eq!(values, ["c0", "c1", "c2", "a0", "a1", "a2", "d0", "d1", "o0", "o1"]);
    producer.abort()?;
    Ok(())
}

#[test]
fn dead_letters_keep_the_record_and_name_its_origin() -> anyhow::Result<()> {
    let (topic, dlq) = ("weir-src-dlq-in", "weir-src-dlq");
    kafka::create_topic(bootstrap(), topic, 1)?;
    kafka::create_topic(bootstrap(), dlq, 1)?;
    kafka::produce(
        bootstrap(),
        topic,
        &[Record::value("good"), Record::value(vec![0xff, 0xfe]).key("k1").header("origin", "test")],
    )?;
    let mut reader = open(&spec(topic), 0, 1)?.reader;
    let mut batch = RawBatch::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while batch.kafka.records.len() < 2 {
        assert!(Instant::now() < deadline);
        reader.read(10, &mut batch)?;
    }
    let malformed = [MalformedRecord { index: 1, error: "the value is not UTF-8".into() }];
    reader.dead_letter(dlq, &batch, &malformed)?;
    let letters = kafka::read_all(bootstrap(), dlq, kafka::Isolation::ReadCommitted)?;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.value.as_deref(), Some(&[0xff, 0xfe][..]));
    assert_eq!(letter.key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(letter.header("origin"), Some(&b"test"[..]));
    assert_eq!(letter.header("weir.error"), Some(&b"the value is not UTF-8"[..]));
    assert_eq!(letter.header("weir.topic"), Some(topic.as_bytes()));
    assert_eq!(letter.header("weir.partition"), Some(&b"0"[..]));
    assert_eq!(letter.header("weir.offset"), Some(&b"1"[..]));
    // A missing dead-letter topic is one clear line.
    let err = reader.dead_letter("weir-src-no-dlq", &batch, &malformed).unwrap_err().to_string();
    assert_eq!(err, "Kafka source: the dead-letter topic 'weir-src-no-dlq' does not exist");
    Ok(())
}

#[test]
fn unreachable_brokers_missing_topics_and_bad_properties_are_one_line_each() -> anyhow::Result<()> {
    let one_line = |err: anyhow::Error| {
        let text = err.to_string();
        eprintln!("{text}");
        assert!(!text.contains('\n'), "{text}");
        text
    };
    let unreachable = KafkaSourceSpec { bootstrap_servers: "127.0.0.1:1".into(), ..spec("weir-src-any") };
    let started = Instant::now();
    let err = one_line(open(&unreachable, 0, 1).err().expect("no broker at 127.0.0.1:1"));
    assert!(err.starts_with("Kafka source: no metadata from the brokers 127.0.0.1:1 within 10s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());

    let err = one_line(open(&spec("weir-src-missing"), 0, 1).err().expect("a missing topic"));
    assert_eq!(err, format!("Kafka source: topic 'weir-src-missing' does not exist (brokers {})", bootstrap()));

    let mut bad = spec("weir-src-any");
    bad.properties.insert("fetch.wait.max.ms".into(), "soon".into());
    let err = one_line(open(&bad, 0, 1).err().expect("a bad property value"));
    assert!(
        err.starts_with("invalid job: Kafka source: librdkafka refuses the property 'fetch.wait.max.ms' = 'soon'"),
        "{err}"
    );
    let mut unknown = spec("weir-src-any");
    unknown.properties.insert("no.such.property".into(), "1".into());
    let err = one_line(open(&unknown, 0, 1).err().expect("an unknown property"));
    assert!(err.contains("'no.such.property'") && err.contains("No such configuration property"), "{err}");
    let mut reserved = spec("weir-src-any");
    reserved.properties.insert("enable.auto.commit".into(), "true".into());
    let err = one_line(open(&reserved, 0, 1).err().expect("a reserved property"));
    assert!(
        err.starts_with("invalid job: Kafka source: the property 'enable.auto.commit' is set by the source"),
        "{err}"
    );
    let pattern = KafkaSourceSpec { topics: KafkaTopics::Pattern("a(".into()), ..spec("weir-src-any") };
    let err = one_line(open(&pattern, 0, 1).err().expect("a bad pattern"));
    assert!(err.contains("'a(' is not a valid regular expression"), "{err}");
    Ok(())
}

/// The value of the source's metric `name`, if it is known yet.
fn metric(metrics: &dyn weir_taskmanager::connectors::ConnectorMetrics, name: &str) -> Option<f64> {
    metrics.values().into_iter().find(|(n, _)| *n == name).map(|(_, v)| v)
}

#[test]
fn the_source_reports_its_lag_and_its_offset_commits() -> anyhow::Result<()> {
    let topic = "weir-src-metrics";
    setup(topic, 2, 10)?;
    let mut spec = KafkaSourceSpec { bounded: false, group_id: Some("weir-src-metrics-group".into()), ..spec(topic) };
    spec.properties.insert("statistics.interval.ms".into(), "100".into());
    let opened = open(&spec, 0, 1)?;
    let metrics = opened.metrics.expect("the Kafka source has metrics");
    let (mut reader, committer) = (opened.reader, opened.committer.expect("a committer with a group id"));
    let (mut batch, mut reads) = (RawBatch::default(), Reads::default());
    // Read one record at a time: the lag reported lies between what is left after the records
    // read so far and all 20 (the statistics come every 100 ms, a little behind).
    let mut midway = Vec::new();
    while reads.records.len() < 20 {
        read_once(reader.as_mut(), &mut batch, 1, &mut reads);
        if let Some(pending) = metric(metrics.as_ref(), "pendingRecords") {
            let read = reads.records.len() as f64;
            assert!((20.0 - read..=20.0).contains(&pending), "{pending} pending after {read} records read");
            let max = metric(metrics.as_ref(), "KafkaSourceReader_KafkaConsumer_records_lag_max").expect("lag max");
            assert!(max <= pending && (pending == 0.0 || max > 0.0), "max {max}, sum {pending}");
            if pending > 0.0 && pending < 20.0 {
                midway.push(pending);
            }
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(!midway.is_empty(), "no lag seen while reading");
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(metrics.as_ref(), "pendingRecords") != Some(0.0) {
        read_once(reader.as_mut(), &mut batch, 10, &mut reads);
        assert!(Instant::now() < deadline, "the lag did not drop to 0: {:?}", metrics.values());
    }
    // Offsets committed for a completed checkpoint count as a successful commit.
    let _ = reader.position();
    reader.checkpoint(1);
    committer.commit(1)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(metrics.as_ref(), "KafkaSourceReader_commitsSucceeded") != Some(1.0) {
        assert!(Instant::now() < deadline, "no successful commit counted: {:?}", metrics.values());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(metrics.as_ref(), "KafkaSourceReader_commitsFailed"), Some(0.0));
    Ok(())
}
