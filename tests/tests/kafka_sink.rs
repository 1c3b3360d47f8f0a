//! The Kafka sink writer (taskmanager/src/connectors/kafka/sink.rs) against a real Apache Kafka
//! broker: writers and committers opened with `open_sink` and driven by hand (barriers, completed
//! checkpoints, kills, restores), the topics read back with `read_committed` and
//! `read_uncommitted`. One broker for the whole file (started by the first test, stopped at exit),
//! distinct topics and transactional ids per test. Needs the broker's jars (`./scripts/setup.sh`)
//! and Java 17.

use rdkafka::consumer::{BaseConsumer, Consumer};
use std::time::{Duration, Instant};
use weir_api::connectors::SinkDescriptor;
use weir_api::connectors::kafka::{Delivery, KafkaSinkSpec};
use weir_api::runtime::{FINAL_CHECKPOINT, RawHeader, SinkRecord, SinkRecords, TaskInfo};
use weir_taskmanager::connectors::{OpenedSink, open_sink};
use weir_tests::kafka::{self, ConsumedRecord, Isolation, Record, TransactionalProducer};

/// The shared broker's address.
fn bootstrap() -> String {
    kafka::shared_bootstrap().to_owned()
}

/// Subtask `subtask` of 2 of job `job`.
fn task(job: &str, subtask: u32) -> TaskInfo {
    TaskInfo {
        job_id: job.into(),
        job_name: job.into(),
        task_name: "sink".into(),
        subtask,
        parallelism: 2,
        max_parallelism: 128,
        attempt: 0,
        heap_state: true,
    }
}

/// An exactly-once sink into `topic` with transactional id prefix `<topic>-tx`.
fn spec(bootstrap: &str, topic: &str) -> KafkaSinkSpec {
    KafkaSinkSpec {
        bootstrap_servers: bootstrap.into(),
        topic: Some(topic.into()),
        delivery: Delivery::ExactlyOnce,
        transactional_id_prefix: format!("{topic}-tx"),
        progress_topic: format!("{topic}-tx.progress"),
        transaction_timeout_ms: 60_000,
        properties: Default::default(),
    }
}

fn open(spec: &KafkaSinkSpec, task: &TaskInfo, restored: Option<&[u8]>) -> OpenedSink {
    open_restoring(spec, task, &restored.map(|state| vec![state.to_vec()]).unwrap_or_default())
}

/// Opens a sink subtask given several old subtasks' states (a restore at another parallelism).
fn open_restoring(spec: &KafkaSinkSpec, task: &TaskInfo, restored: &[Vec<u8>]) -> OpenedSink {
    let started = Instant::now();
    let opened =
        open_sink(&SinkDescriptor::Kafka(spec.clone()), task, restored).unwrap_or_else(|e| panic!("open: {e}"));
    eprintln!("opened {:?} subtask {} in {:?}", spec.delivery, task.subtask, started.elapsed());
    opened
}

/// The error of an open that must fail; it must be one line.
fn open_error(spec: &KafkaSinkSpec, task: &TaskInfo, restored: Option<&[u8]>) -> String {
    let restored = restored.map(|state| vec![state.to_vec()]).unwrap_or_default();
    match open_sink(&SinkDescriptor::Kafka(spec.clone()), task, &restored) {
        Ok(_) => panic!("the open must fail"),
        Err(e) => {
            let message = e.to_string();
            assert_eq!(message.lines().count(), 1, "one line: {message}");
            message
        }
    }
}

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    i64::try_from(since.as_millis()).expect("fits")
}

/// Records with these values, each with key `k-<value>`, header `h: <value>` and a timestamp of
/// now (an old one would let the broker's retention delete the records once a segment rolls);
/// sent to `topic` when given, else to the sink's topic.
fn batch(topic: Option<&str>, values: &[&str]) -> SinkRecords {
    let mut records = SinkRecords::default();
    let now = now_ms();
    for (i, value) in values.iter().enumerate() {
        let topic = topic.map(|t| records.push_bytes(t.as_bytes()));
        let key = Some(records.push_bytes(format!("k-{value}").as_bytes()));
        let value_range = Some(records.push_bytes(value.as_bytes()));
        let name = records.push_bytes(b"h");
        let header_value = Some(records.push_bytes(value.as_bytes()));
        let first = records.headers.len() as u32;
        records.headers.push(RawHeader { name, value: header_value });
        records.records.push(SinkRecord {
            topic,
            partition: None,
            timestamp: Some(now + i as i64),
            key,
            value: value_range,
            headers: (first, first + 1),
        });
    }
    records
}

fn values(records: &[ConsumedRecord]) -> Vec<String> {
    records.iter().map(ConsumedRecord::value_str).collect()
}

fn read(bootstrap: &str, topic: &str, isolation: Isolation) -> Vec<String> {
    values(&kafka::read_all(bootstrap, topic, isolation).expect("read the topic"))
}

/// What `read_committed` readers see of `topic` once every transaction written to it is settled.
/// A commit returns when the transaction coordinator logged it; the commit markers reach the
/// partitions a moment later, and until then the last stable offset stays before the records.
fn committed(bootstrap: &str, topic: &str) -> Vec<String> {
    wait_settled(bootstrap, topic);
    read(bootstrap, topic, Isolation::ReadCommitted)
}

/// Waits (up to 15 s) until no partition of `topic` has a transaction in progress: the last
/// stable offset is the high watermark.
fn wait_settled(bootstrap: &str, topic: &str) {
    let consumer = |isolation: &str| -> BaseConsumer {
        kafka::client_config(bootstrap)
            .set("group.id", "kafka-sink-tests")
            .set("isolation.level", isolation)
            .create()
            .expect("a consumer")
    };
    let (stable, high) = (consumer("read_committed"), consumer("read_uncommitted"));
    let partitions = i32::try_from(kafka::partition_count(bootstrap, topic).expect("partitions")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    for partition in 0..partitions {
        loop {
            let (_, lso) = stable.fetch_watermarks(topic, partition, Duration::from_secs(10)).unwrap();
            let (_, hw) = high.fetch_watermarks(topic, partition, Duration::from_secs(10)).unwrap();
            if lso == hw {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{topic} partition {partition}: a transaction stays open ({lso} < {hw})"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn commit(sink: &OpenedSink, checkpoint: u64) {
    sink.committer.as_ref().expect("a committer").commit(checkpoint).unwrap_or_else(|e| panic!("commit: {e}"));
}

#[test]
fn exactly_once_makes_an_epoch_visible_only_when_its_checkpoint_commits() {
    let bootstrap = bootstrap();
    let (topic, other) = ("eo-basic", "eo-basic-other");
    kafka::create_topic(&bootstrap, topic, 1).unwrap();
    kafka::create_topic(&bootstrap, other, 1).unwrap();
    let spec = spec(&bootstrap, topic);
    let mut sink = open(&spec, &task("job-basic", 0), None);
    let written = now_ms();

    sink.writer.write_records(&batch(None, &["a1", "a2"])).unwrap();
    sink.writer.write_records(&batch(Some(other), &["x1"])).unwrap();
    let state = sink.writer.pre_commit(1).unwrap();
    assert!(!state.is_empty());
    sink.writer.write_records(&batch(None, &["b1"])).unwrap();
    sink.writer.pre_commit(2).unwrap();
    assert_eq!(committed(&bootstrap, topic), Vec::<String>::new(), "nothing before the commits");

    commit(&sink, 1);
    assert_eq!(committed(&bootstrap, topic), ["a1", "a2"], "exactly epoch 1");
    assert_eq!(committed(&bootstrap, other), ["x1"], "a record's own topic");
    let first = &kafka::read_all(&bootstrap, topic, Isolation::ReadCommitted).unwrap()[0];
    assert_eq!(first.key.as_deref(), Some(&b"k-a1"[..]));
    assert_eq!(first.header("h"), Some(&b"a1"[..]));
    let timestamp = first.timestamp.expect("a timestamp");
    assert!((written..=now_ms()).contains(&timestamp), "the record's own timestamp: {timestamp}");

    commit(&sink, 2);
    commit(&sink, 2);
    assert_eq!(committed(&bootstrap, topic), ["a1", "a2", "b1"], "epoch 2, once");

    // The end of the input: the last epoch is the final one, committed when the job finished.
    sink.writer.write_records(&batch(None, &["c1"])).unwrap();
    sink.writer.finish().unwrap();
    assert!(sink.writer.write_records(&batch(None, &["late"])).is_err(), "no writes after finish");
    sink.writer.pre_commit(FINAL_CHECKPOINT).unwrap();
    commit(&sink, 5);
    assert_eq!(committed(&bootstrap, topic), ["a1", "a2", "b1"], "the final epoch waits for the final commit");
    commit(&sink, FINAL_CHECKPOINT);
    assert_eq!(committed(&bootstrap, topic), ["a1", "a2", "b1", "c1"]);
    assert_eq!(read(&bootstrap, topic, Isolation::ReadUncommitted), ["a1", "a2", "b1", "c1"], "nothing else written");
}

#[test]
fn a_restore_commits_what_a_killed_writer_left_exactly_once() {
    let bootstrap = bootstrap();
    let topic = "eo-restore";
    kafka::create_topic(&bootstrap, topic, 1).unwrap();
    let spec = spec(&bootstrap, topic);
    let task = task("job-restore", 1);

    // Checkpoint 1 completes, and the subtask dies before its commit.
    let mut killed = open(&spec, &task, None);
    killed.writer.write_records(&batch(None, &["e1", "e2"])).unwrap();
    let state = killed.writer.pre_commit(1).unwrap();
    killed.writer.write_records(&batch(None, &["after-1"])).unwrap();
    drop(killed);
    assert_eq!(committed(&bootstrap, topic), Vec::<String>::new());

    let restored = open(&spec, &task, Some(&state));
    assert_eq!(committed(&bootstrap, topic), ["e1", "e2"], "the restore commits checkpoint 1's epoch");
    drop(restored);
    // The same checkpoint restored again (the restored subtask died too): the marker says it is
    // committed.
    let mut again = open(&spec, &task, Some(&state));
    assert_eq!(committed(&bootstrap, topic), ["e1", "e2"], "still once");

    // And the restored writer goes on: its next checkpoint commits normally, and a restore from
    // the older checkpoint does not write anything twice.
    again.writer.write_records(&batch(None, &["f1"])).unwrap();
    again.writer.pre_commit(3).unwrap();
    commit(&again, 3);
    drop(again);
    drop(open(&spec, &task, Some(&state)));
    assert_eq!(committed(&bootstrap, topic), ["e1", "e2", "f1"]);
    assert_eq!(read(&bootstrap, topic, Isolation::ReadUncommitted), ["e1", "e2", "f1"]);
}

#[test]
fn restored_at_another_parallelism_each_old_subtasks_pending_epochs_commit_once() {
    let bootstrap = bootstrap();
    let topic = "eo-rescale";
    kafka::create_topic(&bootstrap, topic, 1).unwrap();
    let spec = spec(&bootstrap, topic);
    // Three subtasks (parallelism 3) pre-commit checkpoint 1 and die before committing.
    let old = |subtask| TaskInfo { parallelism: 3, ..task("job-rescale-old", subtask) };
    let states: Vec<Vec<u8>> = (0..3)
        .map(|subtask| {
            let mut sink = open(&spec, &old(subtask), None);
            sink.writer.write_records(&batch(None, &[&format!("s{subtask}")])).unwrap();
            sink.writer.pre_commit(1).unwrap()
        })
        .collect();
    assert_eq!(committed(&bootstrap, topic), Vec::<String>::new());
    // Restored at parallelism 2 (a savepoint), both subtasks given every state: subtask 0 commits
    // old subtasks 0 and 2 (with their transactional ids), subtask 1 old subtask 1.
    let new = |subtask| TaskInfo { parallelism: 2, ..task("job-rescale-new", subtask) };
    let mut zero = open_restoring(&spec, &new(0), &states);
    let mut values = committed(&bootstrap, topic);
    values.sort();
    assert_eq!(values, ["s0", "s2"], "subtask 0 takes over old subtasks 0 and 2");
    let one = open_restoring(&spec, &new(1), &states);
    let mut values = committed(&bootstrap, topic);
    values.sort();
    assert_eq!(values, ["s0", "s1", "s2"]);
    // Restored again (the new job failed): the markers say everything is committed.
    drop(one);
    drop(open_restoring(&spec, &new(1), &states));
    zero.writer.write_records(&batch(None, &["n0"])).unwrap();
    zero.writer.pre_commit(5).unwrap();
    commit(&zero, 5);
    let mut values = committed(&bootstrap, topic);
    values.sort();
    assert_eq!(values, ["n0", "s0", "s1", "s2"], "once each");
}

#[test]
fn a_transaction_killed_during_its_commit_is_aborted_and_replayed_on_restore() {
    let bootstrap = bootstrap();
    let topic = "eo-kill-commit";
    kafka::create_topic(&bootstrap, topic, 1).unwrap();
    let spec = spec(&bootstrap, topic);
    let task = task("job-kill-commit", 0);

    let mut killed = open(&spec, &task, None);
    killed.writer.write_records(&batch(None, &["r1", "r2"])).unwrap();
    let state = killed.writer.pre_commit(1).unwrap();
    drop(killed);
    // The commit of checkpoint 1 was under way when the process died: a producer with the
    // subtask's transactional id wrote the epoch and its marker, and never committed.
    let dying = TransactionalProducer::new(&bootstrap, &format!("{}-0", spec.transactional_id_prefix)).unwrap();
    dying.begin().unwrap();
    for value in ["r1", "r2"] {
        dying.send(topic, &Record::value(value).key(format!("k-{value}"))).unwrap();
    }
    let marker = Record::value("1 job-kill-commit").key(format!("{}-0", spec.transactional_id_prefix)).partition(0);
    dying.send(&spec.progress_topic, &marker).unwrap();
    dying.flush().unwrap();
    drop(dying);
    assert_eq!(read(&bootstrap, topic, Isolation::ReadUncommitted), ["r1", "r2"], "the dying commit's records");

    let _restored = open(&spec, &task, Some(&state));
    assert_eq!(committed(&bootstrap, topic), ["r1", "r2"], "exactly once for read_committed readers");
    assert_eq!(
        read(&bootstrap, topic, Isolation::ReadUncommitted),
        ["r1", "r2", "r1", "r2"],
        "the aborted transaction's records were written (the kill landed)"
    );
}

#[test]
fn a_restore_waits_for_another_subtasks_open_transaction_in_the_progress_topic() {
    let bootstrap = bootstrap();
    let topic = "eo-open-sibling";
    kafka::create_topic(&bootstrap, topic, 1).unwrap();
    let spec = spec(&bootstrap, topic);
    let task = task("job-open-sibling", 0);

    let mut sink = open(&spec, &task, None);
    sink.writer.write_records(&batch(None, &["a"])).unwrap();
    sink.writer.pre_commit(1).unwrap();
    commit(&sink, 1);
    // Subtask 1 dies in a commit: its marker is in the progress topic, in an open transaction.
    let sibling_id = format!("{}-1", spec.transactional_id_prefix);
    let dying = TransactionalProducer::new(&bootstrap, &sibling_id).unwrap();
    dying.begin().unwrap();
    dying
        .send(&spec.progress_topic, &Record::value("9 job-open-sibling").key(sibling_id.clone()).partition(0))
        .unwrap();
    dying.flush().unwrap();
    // Subtask 0 commits checkpoint 2 after it (its marker lies behind the open transaction), then
    // dies.
    sink.writer.write_records(&batch(None, &["b"])).unwrap();
    let state = sink.writer.pre_commit(2).unwrap();
    commit(&sink, 2);
    drop(sink);
    // Subtask 1's successor aborts the open transaction a little later.
    let started = Instant::now();
    let servers = bootstrap.clone();
    let successor = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        TransactionalProducer::new(&servers, &sibling_id).map(drop)
    });
    // A read_committed read that stopped at the open transaction would find subtask 0's marker of
    // checkpoint 1 and commit epoch 2 a second time.
    drop(open(&spec, &task, Some(&state)));
    let waited = started.elapsed();
    successor.join().expect("no panic").unwrap();
    drop(dying);
    assert_eq!(committed(&bootstrap, topic), ["a", "b"], "epoch 2 committed once");
    assert!(waited.as_secs_f64() > 1.5, "the restore waited for the open transaction ({waited:?})");
}

#[test]
fn a_marker_behind_many_newer_progress_records_is_found() {
    let bootstrap = bootstrap();
    let topic = "eo-deep-marker";
    kafka::create_topic(&bootstrap, topic, 1).unwrap();
    let spec = spec(&bootstrap, topic);
    let task = task("job-deep-marker", 0);

    let mut sink = open(&spec, &task, None);
    sink.writer.write_records(&batch(None, &["d1"])).unwrap();
    let state = sink.writer.pre_commit(1).unwrap();
    commit(&sink, 1);
    drop(sink);
    // Other subtasks' markers since: more than the first windows the restore reads backwards.
    let others: Vec<Record> =
        (0..3000).map(|i| Record::value(format!("{i} other")).key(format!("other-{}", i % 7)).partition(0)).collect();
    kafka::produce(&bootstrap, &spec.progress_topic, &others).unwrap();

    drop(open(&spec, &task, Some(&state)));
    assert_eq!(committed(&bootstrap, topic), ["d1"], "the old marker was found: nothing written twice");
}

#[test]
fn a_zombie_writer_cannot_commit_once_its_subtask_was_restored_elsewhere() {
    let bootstrap = bootstrap();
    let topic = "eo-zombie";
    kafka::create_topic(&bootstrap, topic, 1).unwrap();
    let spec = spec(&bootstrap, topic);
    let task = task("job-zombie", 0);

    let mut zombie = open(&spec, &task, None);
    zombie.writer.write_records(&batch(None, &["z1"])).unwrap();
    let state = zombie.writer.pre_commit(1).unwrap();
    zombie.writer.write_records(&batch(None, &["z2"])).unwrap();
    zombie.writer.pre_commit(2).unwrap();

    // The job restarted from checkpoint 1 elsewhere, while the old subtask still runs.
    let mut successor = open(&spec, &task, Some(&state));
    let error = zombie.committer.as_ref().unwrap().commit(2).expect_err("the zombie's commit must fail");
    let error = error.to_string();
    eprintln!("the zombie's commit failed with: {error}");
    assert!(error.contains("fenced") && error.contains("eo-zombie-tx-0"), "{error}");
    assert_eq!(error.lines().count(), 1);
    let again = zombie.committer.as_ref().unwrap().commit(2).expect_err("and stays failed").to_string();
    assert!(again.contains("fenced"), "{again}");
    assert_eq!(committed(&bootstrap, topic), ["z1"], "only the successor's commit of checkpoint 1");

    successor.writer.write_records(&batch(None, &["s1"])).unwrap();
    successor.writer.pre_commit(3).unwrap();
    commit(&successor, 3);
    assert_eq!(committed(&bootstrap, topic), ["z1", "s1"]);
}

#[test]
fn after_the_final_commit_a_rerun_tail_is_dropped() {
    let bootstrap = bootstrap();
    let topic = "eo-final";
    kafka::create_topic(&bootstrap, topic, 1).unwrap();
    let spec = spec(&bootstrap, topic);
    let task = task("job-final", 0);

    let mut sink = open(&spec, &task, None);
    sink.writer.write_records(&batch(None, &["f1"])).unwrap();
    let state = sink.writer.pre_commit(1).unwrap();
    commit(&sink, 1);
    sink.writer.write_records(&batch(None, &["f2"])).unwrap();
    sink.writer.finish().unwrap();
    commit(&sink, FINAL_CHECKPOINT);
    drop(sink);
    assert_eq!(committed(&bootstrap, topic), ["f1", "f2"]);

    // The jobmanager died before recording the end: the job restarts from checkpoint 1 and runs
    // its tail again; the marker says the whole output is committed.
    let mut rerun = open(&spec, &task, Some(&state));
    rerun.writer.write_records(&batch(None, &["f2"])).unwrap();
    rerun.writer.pre_commit(7).unwrap();
    commit(&rerun, 7);
    rerun.writer.finish().unwrap();
    commit(&rerun, FINAL_CHECKPOINT);
    drop(rerun);
    // So does a fresh start of the same job (it finished before its first checkpoint).
    let mut fresh = open(&spec, &task, None);
    fresh.writer.write_records(&batch(None, &["f1", "f2"])).unwrap();
    fresh.writer.finish().unwrap();
    commit(&fresh, FINAL_CHECKPOINT);
    drop(fresh);
    assert_eq!(committed(&bootstrap, topic), ["f1", "f2"], "the tail is not written twice");

    // Another job with the same prefix starts afresh: the old marker must not hide its output.
    let other = self::task("job-final-next", 0);
    let mut next = open(&spec, &other, None);
    next.writer.write_records(&batch(None, &["g1"])).unwrap();
    let state = next.writer.pre_commit(1).unwrap();
    drop(next);
    drop(open(&spec, &other, Some(&state)));
    assert_eq!(committed(&bootstrap, topic), ["f1", "f2", "g1"]);
}

#[test]
fn at_least_once_flushes_at_the_barrier_and_fails_on_failed_deliveries() {
    let bootstrap = bootstrap();
    let topic = "alo-out";
    kafka::create_topic_with(&bootstrap, topic, 1, &[("max.message.bytes", "2000")]).unwrap();
    let spec = KafkaSinkSpec { delivery: Delivery::AtLeastOnce, ..spec(&bootstrap, topic) };
    let mut sink = open(&spec, &task("job-alo", 0), None);
    assert!(sink.committer.is_none());

    sink.writer.write_records(&batch(None, &["l1", "l2"])).unwrap();
    assert_eq!(sink.writer.pre_commit(1).unwrap(), Vec::<u8>::new(), "no state");
    assert_eq!(committed(&bootstrap, topic), ["l1", "l2"], "flushed at the barrier");

    let big = "x".repeat(10_000);
    sink.writer.write_records(&batch(None, &[&big])).unwrap();
    let error = sink.writer.pre_commit(2).expect_err("a failed delivery fails the pre-commit").to_string();
    eprintln!("at-least-once pre-commit failed with: {error}");
    assert!(error.contains("not delivered") && error.contains(topic), "{error}");
    assert_eq!(error.lines().count(), 1);

    let error =
        sink.writer.write_records(&batch(Some("alo-missing"), &["m"])).expect_err("a missing topic").to_string();
    assert!(error.contains("topic 'alo-missing' does not exist"), "{error}");
    assert_eq!(error.lines().count(), 1);

    // None: produced as it comes, flushed at the end.
    let spec = KafkaSinkSpec { delivery: Delivery::None, ..spec };
    let mut sink = open(&spec, &task("job-none", 0), None);
    sink.writer.write_records(&batch(None, &["n1"])).unwrap();
    sink.writer.pre_commit(1).unwrap();
    sink.writer.finish().unwrap();
    assert_eq!(committed(&bootstrap, topic), ["l1", "l2", "n1"]);
}

#[test]
fn a_transaction_timeout_above_the_brokers_maximum_is_refused() {
    let bootstrap = bootstrap();
    let topic = "eo-guard";
    kafka::create_topic(&bootstrap, topic, 1).unwrap();
    let spec = KafkaSinkSpec { transaction_timeout_ms: 900_001, ..spec(&bootstrap, topic) };
    let error = open_error(&spec, &task("job-guard", 0), None);
    assert!(
        error.contains("transaction timeout (900001 ms) is above the brokers' transaction.max.timeout.ms (900000 ms)"),
        "{error}"
    );
    let spec = KafkaSinkSpec { transaction_timeout_ms: 900_000, ..spec };
    drop(open(&spec, &task("job-guard", 0), None));
}

#[test]
fn configuration_mistakes_and_missing_topics_give_one_line_each() {
    let bootstrap = bootstrap();
    let topic = "eo-mistakes";
    kafka::create_topic(&bootstrap, topic, 1).unwrap();
    let task = task("job-mistakes", 0);
    let good = spec(&bootstrap, topic);

    let missing = KafkaSinkSpec { topic: Some("no-such-topic".into()), ..good.clone() };
    let error = open_error(&missing, &task, None);
    assert!(error.contains("topic 'no-such-topic' does not exist"), "{error}");

    let mut bad = good.clone();
    bad.properties.insert("no.such.property".into(), "1".into());
    let error = open_error(&bad, &task, None);
    assert!(error.contains("librdkafka refuses the property no.such.property=1"), "{error}");

    let mut controlled = good.clone();
    controlled.properties.insert("transactional.id".into(), "mine".into());
    let error = open_error(&controlled, &task, None);
    assert!(error.contains("transactional.id=mine cannot be set"), "{error}");

    let error = open_error(&good, &task, Some(b"\x07garbage"));
    assert!(error.contains("format version 7"), "{error}");

    // A partition the topic does not have.
    let mut sink = open(&good, &task, None);
    let mut records = batch(None, &["p"]);
    records.records[0].partition = Some(3);
    let error = sink.writer.write_records(&records).expect_err("no partition 3").to_string();
    assert!(error.contains("partition 3 of topic 'eo-mistakes', which has 1 partition(s)"), "{error}");
    drop(sink);

    // A record without a topic, for a sink without one.
    let no_topic = KafkaSinkSpec { topic: None, delivery: Delivery::AtLeastOnce, ..good };
    let mut sink = open(&no_topic, &task, None);
    let error = sink.writer.write_records(&batch(None, &["v"])).expect_err("no topic").to_string();
    assert!(error.contains("names no topic"), "{error}");
    sink.writer.write_records(&batch(Some(topic), &["v"])).unwrap();
    sink.writer.finish().unwrap();
}

#[test]
fn unreachable_brokers_are_named_in_one_line() {
    let started = Instant::now();
    std::thread::scope(|scope| {
        let modes = [Delivery::ExactlyOnce, Delivery::AtLeastOnce];
        let handles: Vec<_> = modes
            .map(|delivery| {
                scope.spawn(move || {
                    let spec = KafkaSinkSpec { delivery, ..spec("127.0.0.1:1", "unreachable") };
                    open_error(&spec, &task("job-unreachable", 0), None)
                })
            })
            .into_iter()
            .collect();
        for handle in handles {
            let error = handle.join().expect("no panic");
            assert!(error.contains("cannot reach the Kafka brokers at 127.0.0.1:1 within 10 s"), "{error}");
        }
    });
    assert!(started.elapsed().as_secs() < 30, "bounded: {:?}", started.elapsed());
}
