//! Savepoints that change a job's parallelism and state backend on a real cluster: nexmark wcount
//! stopped mid-stream at `-p 2` on the heap backend with a savepoint in S3 (moto), resumed from
//! it at `-p 4` on RocksDB, writing exactly once to a real Apache Kafka broker. Sources take
//! their share of the old subtasks' positions (Kafka partitions by the owner formula, the
//! generator's remaining numbers), sinks commit what old subtasks left pending, keyed state moves
//! by key group: the committed output of both runs together is the reference, line for line.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use weir_tests::cluster::{Cluster, submitted_job_id};
use weir_tests::harness::artifact;
use weir_tests::kafka::{self, Isolation, Record, shared_bootstrap};
use weir_tests::reference;
use weir_tests::s3::S3Server;
use weir_tests::verify::assert_same_lines;

/// `weir run` of nexmark wcount on `cluster` into Kafka topic `output`, exactly once, checkpoints
/// in S3; `flags` go to `weir run`, `source` after `--`. Returns the job id.
fn wcount(cluster: &Cluster, output: &str, flags: &[&str], source: &[&str]) -> String {
    let plugin = artifact("libweir_example_nexmark.so");
    let mut args = vec!["run", plugin.to_str().expect("UTF-8 path"), "--detached", "--checkpoint-interval", "300ms"];
    args.extend_from_slice(&["--checkpoint-dir", "s3://weir/checkpoints"]);
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "--query", "wcount"]);
    args.extend_from_slice(source);
    args.extend_from_slice(&["--sink", "kafka", "--bootstrap-servers", shared_bootstrap(), "--sink-topic", output]);
    args.extend_from_slice(&["--delivery", "exactly-once", "--transactional-id-prefix", output]);
    let out = cluster.weir(&args);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
    submitted_job_id(&out)
}

/// What `read_committed` readers see of `topic`.
fn committed(topic: &str) -> Vec<String> {
    kafka::read_all(shared_bootstrap(), topic, Isolation::ReadCommitted)
        .expect("read the output topic")
        .iter()
        .map(kafka::ConsumedRecord::value_str)
        .collect()
}

/// Waits (up to 60 s) until `topic` holds at least `expected` committed records.
fn wait_committed(topic: &str, expected: usize, cluster: &Cluster) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = committed(topic);
        if lines.len() >= expected || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(200));
        assert!(lines.len() <= expected, "more than {expected} lines: {}\n{}", lines.len(), cluster.logs());
    }
}

/// Stops `job` with a savepoint in S3 (no drain) once its output topic has a committed line;
/// returns the savepoint's path and the number of lines committed by then.
fn stop_mid_stream(cluster: &Cluster, job: &str, output: &str) -> (String, usize) {
    wait_committed(output, 1, cluster);
    let out = cluster.weir(&["stop", job, "-p", "s3://weir/savepoints"]);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
    let path = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Savepoint completed. Path: "))
        .unwrap_or_else(|| panic!("no savepoint path: {out:?}"))
        .trim()
        .to_owned();
    assert!(path.starts_with("s3://weir/savepoints/savepoint-"), "{path}");
    assert_eq!(cluster.wait_for_end(job)["state"], "FINISHED");
    (path, committed(output).len())
}

/// The parallelism of every vertex of `job`.
fn parallelisms(cluster: &Cluster, job: &str) -> Vec<u64> {
    let details = cluster.details(job);
    details["vertices"].as_array().expect("vertices").iter().map(|v| v["parallelism"].as_u64().unwrap_or(0)).collect()
}

#[test]
fn a_kafka_job_stopped_mid_stream_at_p2_on_heap_resumes_at_p4_on_rocksdb_exactly_once() {
    const FIRST: u64 = 40_000;
    const BIDS: u64 = 160_000;
    let bootstrap = shared_bootstrap();
    let s3 = S3Server::start("weir").expect("start the S3 server (moto): run ./scripts/setup.sh");
    let lines: BTreeMap<u64, String> = reference::nexmark("q0", BIDS)
        .into_iter()
        .map(|line| (line.split(',').next().and_then(|s| s.parse().ok()).expect("seq first"), line))
        .collect();
    let records = |range: std::ops::RangeInclusive<u64>| -> Vec<Record> {
        range.map(|seq| Record::value(lines[&seq].as_str()).partition((seq % 4) as i32)).collect()
    };
    kafka::create_topic(bootstrap, "rescale-bids", 4).unwrap();
    kafka::create_topic(bootstrap, "rescale-counts", 3).unwrap();
    kafka::produce(bootstrap, "rescale-bids", &records(1..=FIRST)).unwrap();
    let cluster = Cluster::start_with_env(&[], &[("tm-1", 2), ("tm-2", 2)], &s3.env());
    // (The sink's --bootstrap-servers serves the source too.)
    let source = ["--source", "kafka", "--source-topic", "rescale-bids", "--starting-offsets", "earliest"];
    let first = wcount(&cluster, "rescale-counts", &["-p", "2", "--state-backend", "heap"], &source);

    // The rest of the bids arrive while the job runs and while it stops.
    let producer = {
        let rest: Vec<Record> = records(FIRST + 1..=BIDS);
        let bootstrap = bootstrap.to_owned();
        std::thread::spawn(move || {
            for chunk in rest.chunks(10_000) {
                kafka::produce(&bootstrap, "rescale-bids", chunk).expect("produce bids");
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let (savepoint, at_stop) = stop_mid_stream(&cluster, &first, "rescale-counts");
    producer.join().expect("the producer thread");
    let all = reference::nexmark("wcount", BIDS);
    let closed_below = (BIDS - 500) / 10_000 * 10_000;
    let closed: Vec<String> = all
        .into_iter()
        .filter(|line| line.split(',').next().and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s < closed_below))
        .collect();
    assert!(at_stop < closed.len(), "the stop came after the whole input: {at_stop} lines");

    let resumed =
        wcount(&cluster, "rescale-counts", &["-p", "4", "--state-backend", "rocksdb", "-s", &savepoint], &source);
    let got = wait_committed("rescale-counts", closed.len(), &cluster);
    assert!(parallelisms(&cluster, &resumed).iter().all(|&p| p == 4), "{:?}", parallelisms(&cluster, &resumed));
    assert_eq!(cluster.weir(&["cancel", &resumed]).code, Some(0));
    assert_same_lines("wcount at -p 2 on heap, then at -p 4 on RocksDB", got, closed, &cluster.logs());
}

#[test]
fn a_generator_job_stopped_mid_stream_at_p2_on_heap_resumes_at_p4_on_rocksdb_exactly_once() {
    // 8 s of input at this rate: the stop comes mid-stream even on a loaded machine.
    const EVENTS: &str = "160000";
    let s3 = S3Server::start("weir").expect("start the S3 server (moto): run ./scripts/setup.sh");
    kafka::create_topic(shared_bootstrap(), "generated-counts", 3).unwrap();
    let cluster = Cluster::start_with_env(&[], &[("tm-1", 2), ("tm-2", 2)], &s3.env());
    let source = ["--events", EVENTS, "--rate", "20000"];
    let first = wcount(&cluster, "generated-counts", &["-p", "2", "--state-backend", "heap"], &source);
    let (savepoint, at_stop) = stop_mid_stream(&cluster, &first, "generated-counts");
    let reference = reference::nexmark("wcount", EVENTS.parse().unwrap());
    assert!(at_stop < reference.len(), "the stop came after the whole input: {at_stop} lines");

    let resumed =
        wcount(&cluster, "generated-counts", &["-p", "4", "--state-backend", "rocksdb", "-s", &savepoint], &source);
    assert!(parallelisms(&cluster, &resumed).iter().all(|&p| p == 4), "{:?}", parallelisms(&cluster, &resumed));
    let end = cluster.wait_for_end(&resumed);
    assert_eq!(end["state"], "FINISHED", "{end}\n{}", cluster.logs());
    assert_same_lines(
        "generated wcount at -p 2 on heap, then at -p 4 on RocksDB",
        committed("generated-counts"),
        reference,
        &cluster.logs(),
    );
}
