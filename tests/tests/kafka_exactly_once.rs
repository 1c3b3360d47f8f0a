//! Exactly-once from Kafka to Kafka on a real cluster (built with the `failpoints` feature; run
//! by `scripts/test.sh` in its fault-injection step): a jobmanager and three taskmanagers with
//! checkpoints every 500 ms to S3 (moto), nexmark wcount and q5 reading four partitions of bids
//! (bounded) from a real Apache Kafka broker and writing, exactly once, to 3-partition topics.
//! Taskmanagers die three times: after a checkpoint completed and before its transaction
//! committed, during a commit (records in the broker, transaction open), and by SIGKILL in the
//! middle of the run. What `read_committed` sees must be the reference output, line for line;
//! what `read_uncommitted` sees must hold more (aborted transactions: the kills landed).
#![cfg(feature = "failpoints")]

use std::time::{Duration, Instant};
use weir_tests::cluster::{Cluster, FAULT_TOLERANT, submitted_job_id};
use weir_tests::harness::artifact;
use weir_tests::kafka::{self, Isolation, KafkaBroker, Record};
use weir_tests::reference;
use weir_tests::s3::S3Server;
use weir_tests::verify::assert_same_lines;

/// Bids in the input topic (seq 1..=BIDS).
const BIDS: u64 = 800_000;
const INPUT_PARTITIONS: u64 = 4;
const OUTPUT_PARTITIONS: i32 = 3;

/// Loads bids `1..=BIDS` as `seq,auction,bidder,price` lines into `topic`, bid `seq` into
/// partition `seq % 4`, each partition in sequence order.
fn load_bids(bootstrap: &str, topic: &str) {
    kafka::create_topic(bootstrap, topic, INPUT_PARTITIONS as i32).expect("create the input topic");
    let mut lines: Vec<(u64, String)> = reference::nexmark("q0", BIDS)
        .into_iter()
        .map(|line| (line.split(',').next().and_then(|s| s.parse().ok()).expect("q0 lines start with seq"), line))
        .collect();
    lines.sort_unstable_by_key(|(seq, _)| *seq);
    let records: Vec<Record> =
        lines.into_iter().map(|(seq, line)| Record::value(line).partition((seq % INPUT_PARTITIONS) as i32)).collect();
    kafka::produce(bootstrap, topic, &records).expect("load the bids");
}

/// The record values of `topic` read with `isolation`, as lines.
fn output(bootstrap: &str, topic: &str, isolation: Isolation) -> Vec<String> {
    kafka::read_all(bootstrap, topic, isolation).expect("read the output topic").iter().map(|r| r.value_str()).collect()
}

/// Submits nexmark `query` from the bids topic into `output_topic`, exactly once; returns the job id.
fn submit(cluster: &Cluster, bootstrap: &str, query: &str, backend: &str, output_topic: &str) -> String {
    let out = cluster.weir(&[
        "run",
        artifact("libweir_example_nexmark.so").to_str().unwrap(),
        "-p",
        "3",
        "--detached",
        "--checkpoint-interval",
        "500ms",
        "--checkpoint-timeout",
        "10s",
        "--state-backend",
        backend,
        "--checkpoint-dir",
        "s3://weir/checkpoints",
        "--checkpoints-retained",
        "2",
        "--",
        "--query",
        query,
        "--source",
        "kafka",
        "--bootstrap-servers",
        bootstrap,
        "--source-topic",
        "bids",
        "--group-id",
        query,
        "--bounded",
        "--sink",
        "kafka",
        "--sink-topic",
        output_topic,
        "--delivery",
        "exactly-once",
        "--transactional-id-prefix",
        &format!("e2e-{query}"),
    ]);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
    submitted_job_id(&out)
}

/// Lets the three faults happen, in whatever order they come: SIGKILL of tm-3 (replaced by tm-6)
/// once both jobs completed a checkpoint (sources restore their offsets from it), and the deaths
/// of tm-1 and tm-2 at their fault points (replaced by tm-4 and tm-5 as soon as each is seen; the
/// fault points may fire before the kill on a slow machine).
fn inject_faults(cluster: &mut Cluster, jobs: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut crashes = vec![("tm-1", "tm-4"), ("tm-2", "tm-5")];
    let mut killed = false;
    while !(killed && crashes.is_empty()) {
        crashes.retain(|&(id, replacement)| {
            if !cluster.taskmanager_exited(id) {
                return true;
            }
            eprintln!("{id} crashed at its fault point; starting {replacement}");
            cluster.reap_taskmanager(id);
            cluster.start_taskmanager(replacement, 2);
            false
        });
        if !killed && jobs.iter().all(|job| cluster.checkpoints(job)["counts"]["completed"].as_u64().unwrap_or(0) > 0) {
            eprintln!("SIGKILL tm-3");
            cluster.kill_taskmanager("tm-3");
            cluster.start_taskmanager("tm-6", 2);
            killed = true;
        }
        for job in jobs {
            let state = cluster.details(job)["state"].clone();
            assert!(
                state != "FINISHED" && state != "FAILED",
                "{job} ended ({state}) before the faults: {crashes:?} still to crash, tm-3 killed: {killed}\n{}",
                cluster.logs()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the faults did not all happen: {crashes:?} still to crash, tm-3 killed: {killed}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kafka_to_kafka_is_exactly_once_through_taskmanager_crashes_around_the_commit() {
    let broker = KafkaBroker::start().expect("start the Kafka broker: run ./scripts/setup.sh");
    let bootstrap = broker.bootstrap_servers();
    let s3 = S3Server::start("weir").expect("start the S3 server (moto): run ./scripts/setup.sh");
    load_bids(&bootstrap, "bids");
    for topic in ["wcount-out", "q5-out"] {
        kafka::create_topic(&bootstrap, topic, OUTPUT_PARTITIONS).expect("create an output topic");
    }
    let mut cluster = Cluster::start_with_env(&FAULT_TOLERANT, &[], &s3.env());
    // tm-1 dies at its sixth commit notification (of either job), after the checkpoint completed
    // and before any of its sinks committed; tm-2 in the middle of its sixth Kafka commit, with
    // the epoch's records and the progress marker in the broker and the transaction not committed.
    cluster.start_taskmanager_with_env("tm-1", 2, &[("FAILPOINTS", "taskmanager::commit::crash=5*off->return")]);
    cluster.start_taskmanager_with_env(
        "tm-2",
        2,
        &[("FAILPOINTS", "taskmanager::kafka_sink::commit::crash=5*off->return")],
    );
    cluster.start_taskmanager("tm-3", 2);
    let wcount = submit(&cluster, &bootstrap, "wcount", "rocksdb", "wcount-out");
    let q5 = submit(&cluster, &bootstrap, "q5", "heap", "q5-out");
    let jobs = [wcount.as_str(), q5.as_str()];

    inject_faults(&mut cluster, &jobs);
    assert!(cluster.taskmanager_stderr("tm-1").contains("taskmanager::commit::crash: aborting"), "{}", cluster.logs());
    assert!(
        cluster.taskmanager_stderr("tm-2").contains("taskmanager::kafka_sink::commit::crash: aborting"),
        "{}",
        cluster.logs()
    );

    for (job, query, topic) in [(&wcount, "wcount", "wcount-out"), (&q5, "q5", "q5-out")] {
        let end = cluster.wait_for_end(job);
        assert_eq!(end["state"], "FINISHED", "{query}: {end}\n{}", cluster.logs());
        assert!(end["restarts"].as_u64().unwrap_or(0) >= 2, "{query}: the crashes restarted the job: {end}");
        let committed = output(&bootstrap, topic, Isolation::ReadCommitted);
        let count = committed.len();
        assert_same_lines(
            &format!("{query} read_committed"),
            committed,
            reference::nexmark(query, BIDS),
            &cluster.logs(),
        );
        let uncommitted = output(&bootstrap, topic, Isolation::ReadUncommitted);
        eprintln!("{query}: {count} lines committed, {} written in all", uncommitted.len());
    }
    // Aborted transactions hold records that read_uncommitted sees: the crash in the middle of a
    // commit left at least one behind.
    let written: usize =
        ["wcount-out", "q5-out"].iter().map(|t| output(&bootstrap, t, Isolation::ReadUncommitted).len()).sum();
    let committed: usize =
        ["wcount-out", "q5-out"].iter().map(|t| output(&bootstrap, t, Isolation::ReadCommitted).len()).sum();
    assert!(written > committed, "no aborted record in the output topics ({written} written, {committed} committed)");
}
