//! The real Kafka broker of the tests (tests/src/kafka.rs) does what exactly-once tests rely on:
//! committed transactions are visible to `read_committed` readers, aborted ones only to
//! `read_uncommitted` readers, and a second producer with the same `transactional.id` fences the
//! first. Needs the broker's jars (`./scripts/setup.sh`) and Java 17.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::time::Instant;
use weir_tests::kafka::{self, ConsumedRecord, Isolation, KafkaBroker, Record, TransactionalProducer};

const TOPIC: &str = "weir-kafka-broker-test";

/// `value@partition` of each record, in (partition, offset) order.
fn values(records: &[ConsumedRecord]) -> Vec<String> {
    records.iter().map(|r| format!("{}@{}", r.value_str(), r.partition)).collect()
}

/// Records `prefix-0`..`prefix-{n-1}` spread over partitions 0, 1, 2, each with a key and a header.
fn batch(prefix: &str, n: i32) -> Vec<Record> {
    (0..n)
        .map(|i| Record::value(format!("{prefix}-{i}")).key(format!("k{i}")).header("batch", prefix).partition(i % 3))
        .collect()
}

/// `value@partition` lines of `batch(prefix, n)`, in (partition, offset) order.
fn expected(prefixes: &[&str], n: i32) -> Vec<String> {
    let mut lines = Vec::new();
    for partition in 0..3 {
        for prefix in prefixes {
            lines.extend((0..n).filter(|i| i % 3 == partition).map(|i| format!("{prefix}-{i}@{partition}")));
        }
    }
    lines
}

#[test]
fn transactions_isolation_and_fencing_on_a_real_broker() -> anyhow::Result<()> {
    let test_start = Instant::now();
    let broker = KafkaBroker::start()?;
    eprintln!(
        "Kafka {} started in {:?} at {}",
        kafka::kafka_version(),
        broker.startup_time(),
        broker.bootstrap_servers()
    );
    let bootstrap = broker.bootstrap_servers();
    kafka::create_topic(&bootstrap, TOPIC, 3)?;
    assert_eq!(kafka::partition_count(&bootstrap, TOPIC)?, 3);

    // One committed and one aborted transaction; the aborted one's records reach the broker.
    let producer = TransactionalProducer::new(&bootstrap, "weir-test-tx")?;
    producer.transaction(TOPIC, &batch("committed", 6), true)?;
    producer.transaction(TOPIC, &batch("aborted", 6), false)?;

    let committed = kafka::read_all(&bootstrap, TOPIC, Isolation::ReadCommitted)?;
    assert_eq!(values(&committed), expected(&["committed"], 6), "read_committed sees exactly the committed records");
    let first = committed.iter().find(|r| r.partition == 1).expect("a record in partition 1");
    assert_eq!(first.key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(first.header("batch"), Some(&b"committed"[..]));
    assert!(first.timestamp.is_some());

    let everything = kafka::read_all(&bootstrap, TOPIC, Isolation::ReadUncommitted)?;
    assert_eq!(
        values(&everything),
        expected(&["committed", "aborted"], 6),
        "read_uncommitted sees the aborted records too"
    );

    // A second producer with the same transactional.id fences the first: the first's open
    // transaction is aborted by the broker and its commit fails with a fatal fencing error.
    producer.begin()?;
    for record in batch("zombie", 3) {
        producer.send(TOPIC, &record)?;
    }
    producer.flush()?;
    let successor = TransactionalProducer::new(&bootstrap, "weir-test-tx")?;
    let error = producer.commit().expect_err("the fenced producer's commit must fail");
    eprintln!("the fenced producer's commit failed with: {error}");
    // librdkafka reports the broker's PRODUCER_FENCED (or INVALID_PRODUCER_EPOCH) as its local,
    // fatal `Fenced` error.
    assert!(
        matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced)),
        "not a fencing error: {error}"
    );
    assert!(matches!(&error, KafkaError::Transaction(e) if e.is_fatal()), "fencing is fatal: {error}");
    assert!(producer.begin().is_err(), "a fenced producer cannot begin another transaction");
    successor.transaction(TOPIC, &batch("successor", 3), true)?;

    let committed = kafka::read_all(&bootstrap, TOPIC, Isolation::ReadCommitted)?;
    let mut want = expected(&["committed"], 6);
    want.extend(expected(&["successor"], 3));
    let mut got = values(&committed);
    got.sort();
    want.sort();
    assert_eq!(got, want, "the zombie's records are not committed; the successor's are");
    let everything = kafka::read_all(&bootstrap, TOPIC, Isolation::ReadUncommitted)?;
    assert!(values(&everything).iter().any(|v| v.starts_with("zombie-")), "the zombie's records were written");

    // An open transaction holds read_committed readers back at the last stable offset: the read
    // ends there instead of waiting, and read_uncommitted readers see the open records.
    let open = TransactionalProducer::new(&bootstrap, "weir-test-open")?;
    open.begin()?;
    for record in batch("open", 3) {
        open.send(TOPIC, &record)?;
    }
    open.flush()?;
    let read_start = Instant::now();
    let mut got = values(&kafka::read_all(&bootstrap, TOPIC, Isolation::ReadCommitted)?);
    got.sort();
    assert_eq!(got, want, "read_committed stops before the open transaction");
    eprintln!("read_committed with an open transaction took {:?}", read_start.elapsed());
    let everything = kafka::read_all(&bootstrap, TOPIC, Isolation::ReadUncommitted)?;
    assert_eq!(values(&everything).iter().filter(|v| v.starts_with("open-")).count(), 3);
    open.abort()?;

    // Plain (non-transactional) produce and a read of a second topic.
    kafka::create_topic_with(&bootstrap, "weir-kafka-plain", 2, &[("cleanup.policy", "compact")])?;
    kafka::produce(
        &bootstrap,
        "weir-kafka-plain",
        &[Record::value("a").key("x"), Record::value("b").key("y").partition(1)],
    )?;
    let plain = kafka::read_all(&bootstrap, "weir-kafka-plain", Isolation::ReadCommitted)?;
    assert_eq!(plain.len(), 2);
    assert!(kafka::create_topic(&bootstrap, TOPIC, 3).is_err(), "creating an existing topic fails");
    assert!(kafka::read_all(&bootstrap, "weir-kafka-missing", Isolation::ReadCommitted).is_err());

    eprintln!("test took {:?} (broker start {:?})", test_start.elapsed(), broker.startup_time());
    Ok(())
}
