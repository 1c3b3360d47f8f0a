//! Jobs reading from a real Apache Kafka broker, end to end through the `weir` binary and the
//! nexmark example: watermarks per partition, the malformed-record policies, partitions
//! discovered while a job runs, and the one-line errors a user sees for a wrong broker, topic or
//! option. One broker serves the file (`weir_tests::kafka::shared_bootstrap`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use weir_tests::cluster::{Cluster, submitted_job_id};
use weir_tests::harness::{CommandOutput, artifact, read_lines, run_weir};
use weir_tests::kafka::{self, Isolation, Record, shared_bootstrap};
use weir_tests::reference;
use weir_tests::verify::assert_same_lines;

fn nexmark() -> String {
    artifact("libweir_example_nexmark.so").to_str().expect("UTF-8 path").to_owned()
}

/// `seq,auction,bidder,price` of bid `seq` (the reference's q0 line), by sequence number.
fn bid_lines(bids: u64) -> BTreeMap<u64, String> {
    reference::nexmark("q0", bids)
        .into_iter()
        .map(|line| (line.split(',').next().and_then(|s| s.parse().ok()).expect("q0 lines start with seq"), line))
        .collect()
}

/// Runs the nexmark example on the local mini-cluster with `args` (after `--`).
fn local_run(parallelism: &str, args: &[&str]) -> CommandOutput {
    let plugin = nexmark();
    let mut all = vec!["local", "run", plugin.as_str(), "-p", parallelism, "--"];
    all.extend_from_slice(args);
    run_weir(&all, Duration::from_secs(180))
}

// One source subtask reads two partitions whose event time advances at rates 100 times apart:
// partition 1 holds every hundredth bid, partition 0 the others. A watermark taken over the
// records as they arrive would run ahead with partition 1 and make most of partition 0 late;
// the minimum over the partitions loses nothing.
#[test]
fn a_subtask_reading_partitions_at_different_event_time_rates_drops_no_record_as_late() {
    let bootstrap = shared_bootstrap();
    const BIDS: u64 = 60_000;
    kafka::create_topic(bootstrap, "skewed", 2).unwrap();
    let records: Vec<Record> = bid_lines(BIDS)
        .into_iter()
        .map(|(seq, line)| Record::value(line).partition(i32::from(seq.is_multiple_of(100))))
        .collect();
    kafka::produce(bootstrap, "skewed", &records).unwrap();
    let output = tempfile::tempdir().unwrap();
    for query in ["wcount", "q5"] {
        let out = output.path().join(query);
        let result = local_run(
            "1",
            &[
                "--query",
                query,
                "--source",
                "kafka",
                "--bootstrap-servers",
                bootstrap,
                "--topic",
                "skewed",
                "--bounded",
                "--output",
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(result.code, Some(0), "{query}: {result:?}");
        assert_same_lines(query, read_lines(&out), reference::nexmark(query, BIDS), &result.stderr);
    }
}

/// Bids `1..=BIDS` over two partitions by parity, with three records that are not bids in
/// partition 1 (after bids 501, 1001 and 1501: offsets 251, 502 and 753): text, bytes that are
/// not UTF-8, and a record without a value.
const DIRTY_BIDS: u64 = 2_000;
const DIRTY_OFFSETS: [i64; 3] = [251, 502, 753];

fn dirty_topic(bootstrap: &str, topic: &str) -> Vec<Vec<u8>> {
    kafka::create_topic(bootstrap, topic, 2).unwrap();
    let garbage: Vec<Record> = vec![
        Record::value("not a bid").key("k1").header("origin", "test"),
        Record::value(vec![0xff, 0xfe, b',', b'1']),
        Record { key: Some(b"k3".to_vec()), ..Record::default() },
    ];
    let mut records = Vec::new();
    let mut garbage_iter = garbage.iter();
    for (seq, line) in bid_lines(DIRTY_BIDS) {
        records.push(Record::value(line).partition((seq % 2) as i32));
        if seq % 500 == 1 && seq > 1 {
            records.push(garbage_iter.next().expect("three").clone().partition(1));
        }
    }
    kafka::produce(bootstrap, topic, &records).unwrap();
    garbage.into_iter().map(|r| r.value.unwrap_or_default()).collect()
}

fn q0_from(bootstrap: &str, topic: &str, output: &std::path::Path, malformed: &[&str]) -> CommandOutput {
    let mut args = vec![
        "--query",
        "q0",
        "--source",
        "kafka",
        "--bootstrap-servers",
        bootstrap,
        "--topic",
        topic,
        "--bounded",
        "--output",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(malformed);
    local_run("2", &args)
}

#[test]
fn a_malformed_record_fails_the_job_by_default_naming_where_it_is() {
    let bootstrap = shared_bootstrap();
    dirty_topic(bootstrap, "dirty-fail");
    let output = tempfile::tempdir().unwrap();
    let result = q0_from(bootstrap, "dirty-fail", output.path(), &[]);
    assert_ne!(result.code, Some(0), "{result:?}");
    let all = format!("{}{}", result.stdout, result.stderr);
    assert!(
        all.contains("dirty-fail")
            && all.contains("partition 1")
            && all.contains("offset 251")
            && all.contains("not a bid"),
        "the failure names the topic, partition, offset and error: {result:?}"
    );
}

#[test]
fn malformed_records_are_skipped_and_counted_when_asked() {
    let bootstrap = shared_bootstrap();
    dirty_topic(bootstrap, "dirty-skip");
    let output = tempfile::tempdir().unwrap();
    let result = q0_from(bootstrap, "dirty-skip", output.path(), &["--malformed", "skip"]);
    assert_eq!(result.code, Some(0), "{result:?}");
    assert_same_lines("q0", read_lines(output.path()), reference::nexmark("q0", DIRTY_BIDS), &result.stderr);
    assert!(
        result.stderr.contains("skipped 3 malformed records"),
        "the skipped records are counted: {}",
        result.stderr
    );
}

/// Submits nexmark q0 reading `topic` without end (`-p 2`, checkpoints every 300 ms) with the
/// source flags `flags` to `cluster`, writing text into `output`; returns the job id.
fn q0_on(cluster: &Cluster, bootstrap: &str, topic: &str, output: &std::path::Path, flags: &[&str]) -> String {
    let nexmark = nexmark();
    let mut args = vec!["run", &nexmark, "-p", "2", "--detached", "--checkpoint-interval", "300ms", "--"];
    args.extend_from_slice(&["--query", "q0", "--source", "kafka", "--bootstrap-servers", bootstrap, "--topic", topic]);
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--output", output.to_str().unwrap()]);
    let out = cluster.weir(&args);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
    submitted_job_id(&out)
}

/// The sum over a job's subtasks of the operator metric `name`, as the taskmanager at `http`
/// serves it (`None` before any subtask registered it).
fn operator_metric(http: &str, name: &str, job: &str) -> Option<f64> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let text = runtime.block_on(async { reqwest::get(format!("{http}/metrics")).await?.text().await }).ok()?;
    let family = format!("flink_taskmanager_job_task_operator_{name}");
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(&family) && l.contains(&format!("job_id=\"{job}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

// The records a running job skips (or sends to a dead-letter topic) are counted in Flink's
// numRecordsInErrors of the source operator.
#[test]
fn skipped_malformed_records_are_counted_in_the_sources_error_metric() {
    let bootstrap = shared_bootstrap();
    dirty_topic(bootstrap, "dirty-metric");
    let cluster = Cluster::start(&[], &[("tm-1", 2)]);
    let output = tempfile::tempdir().unwrap();
    let job = q0_on(&cluster, bootstrap, "dirty-metric", output.path(), &["--malformed", "skip"]);
    let http = cluster.taskmanager_http("tm-1");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = read_lines(output.path()).len();
        let errors = operator_metric(&http, "numRecordsInErrors", &job);
        if lines == DIRTY_BIDS as usize && errors == Some(3.0) {
            break;
        }
        assert!(Instant::now() < deadline, "{lines} lines, numRecordsInErrors {errors:?}\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let cancel = cluster.weir(&["cancel", &job]);
    assert_eq!(cancel.code, Some(0), "{cancel:?}");
}

#[test]
fn malformed_records_go_to_the_dead_letter_topic_with_their_bytes_and_the_error() {
    let bootstrap = shared_bootstrap();
    let values = dirty_topic(bootstrap, "dirty-dlq");
    kafka::create_topic(bootstrap, "dirty-dlq-dead", 1).unwrap();
    let output = tempfile::tempdir().unwrap();
    let result = q0_from(
        bootstrap,
        "dirty-dlq",
        output.path(),
        &["--malformed", "dead-letter", "--dead-letter-topic", "dirty-dlq-dead"],
    );
    assert_eq!(result.code, Some(0), "{result:?}");
    assert_same_lines("q0", read_lines(output.path()), reference::nexmark("q0", DIRTY_BIDS), &result.stderr);
    let dead = kafka::read_all(bootstrap, "dirty-dlq-dead", Isolation::ReadCommitted).unwrap();
    assert_eq!(dead.len(), 3, "{dead:?}");
    for (n, record) in dead.iter().enumerate() {
        let header = |name: &str| String::from_utf8_lossy(record.header(name).unwrap_or_default()).into_owned();
        assert_eq!(record.value.clone().unwrap_or_default(), values[n], "record {n}: the original value");
        assert_eq!(header("weir.topic"), "dirty-dlq");
        assert_eq!(header("weir.partition"), "1");
        assert_eq!(header("weir.offset"), DIRTY_OFFSETS[n].to_string());
        assert!(!header("weir.error").is_empty(), "record {n} carries the error: {record:?}");
    }
    assert_eq!(dead[0].key.as_deref(), Some(&b"k1"[..]), "the original key");
    assert_eq!(dead[0].header("origin"), Some(&b"test"[..]), "the original headers");
    assert!(String::from_utf8_lossy(dead[0].header("weir.error").unwrap()).contains("not a bid"));
    assert_eq!(dead[2].key.as_deref(), Some(&b"k3"[..]));
}

// An unbounded job on a cluster: partitions added to its topic while it runs are found by
// discovery and read from their earliest offset.
#[test]
fn partitions_added_while_a_job_runs_are_discovered_and_read() {
    let bootstrap = shared_bootstrap();
    const FIRST: u64 = 1_000;
    const ALL: u64 = 3_000;
    let lines = bid_lines(ALL);
    kafka::create_topic(bootstrap, "growing", 1).unwrap();
    let first: Vec<Record> = lines.range(..=FIRST).map(|(_, l)| Record::value(l.as_str())).collect();
    kafka::produce(bootstrap, "growing", &first).unwrap();
    let cluster = Cluster::start(&[], &[("tm-1", 2)]);
    let output = tempfile::tempdir().unwrap();
    let job = q0_on(&cluster, bootstrap, "growing", output.path(), &["--partition-discovery-interval-ms", "500"]);
    let wait_for_lines = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = read_lines(output.path()).len();
            if got >= n {
                return;
            }
            assert!(Instant::now() < deadline, "{got} of {n} lines committed\n{}", cluster.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for_lines(FIRST as usize);
    kafka::add_partitions(bootstrap, "growing", 3).unwrap();
    let rest: Vec<Record> =
        lines.range(FIRST + 1..).map(|(seq, l)| Record::value(l.as_str()).partition(1 + (seq % 2) as i32)).collect();
    kafka::produce(bootstrap, "growing", &rest).unwrap();
    wait_for_lines(ALL as usize);
    let cancel = cluster.weir(&["cancel", &job]);
    assert_eq!(cancel.code, Some(0), "{cancel:?}");
    assert_same_lines("q0", read_lines(output.path()), reference::nexmark("q0", ALL), &cluster.logs());
}

/// The error line of a failed run: its last non-empty line of standard error.
fn error_line(result: &CommandOutput) -> String {
    result.stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().to_owned()
}

#[test]
fn a_wrong_broker_topic_or_option_is_one_clear_line() {
    let bootstrap = shared_bootstrap();
    let output = tempfile::tempdir().unwrap();
    let out = output.path().to_str().unwrap();
    let run = |servers: &str, topic: &str, extra: &[&str]| {
        let mut args = vec!["--query", "q0", "--source", "kafka", "--bootstrap-servers", servers, "--topic", topic];
        args.extend_from_slice(&["--bounded", "--output", out]);
        args.extend_from_slice(extra);
        local_run("1", &args)
    };
    let unreachable = run("127.0.0.1:1", "bids", &[]);
    assert_ne!(unreachable.code, Some(0));
    let line = error_line(&unreachable);
    assert!(line.contains("127.0.0.1:1"), "names the brokers: {unreachable:?}");
    assert!(!unreachable.stderr.contains("panicked"), "{unreachable:?}");

    let missing = run(bootstrap, "no-such-topic", &[]);
    assert_ne!(missing.code, Some(0));
    let line = error_line(&missing);
    assert!(line.contains("no-such-topic") && line.contains("does not exist"), "{missing:?}");

    let bad = run(bootstrap, "bids", &["--starting-offsets", "sometimes"]);
    assert_ne!(bad.code, Some(0));
    let line = error_line(&bad);
    assert!(line.contains("sometimes") && line.contains("earliest, latest or committed"), "{bad:?}");

    let bad = run(bootstrap, "bids", &["--malformed", "dead-letter"]);
    assert_ne!(bad.code, Some(0));
    assert!(error_line(&bad).contains("--dead-letter-topic"), "{bad:?}");
}

// The README's pipeline: q0 loads the generator's bids into a topic (without checkpointing an
// exactly-once sink commits once, at the end, and the run warns about it), then wcount reads
// them and writes its counts to another topic, exactly once with checkpoints.
#[test]
fn q0_loads_bids_into_kafka_and_wcount_reads_them_into_kafka() {
    let bootstrap = shared_bootstrap();
    kafka::create_topic(bootstrap, "loaded-bids", 3).unwrap();
    let result = local_run(
        "2",
        &[
            "--query",
            "q0",
            "--events",
            "5000",
            "--sink",
            "kafka",
            "--bootstrap-servers",
            bootstrap,
            "--topic",
            "loaded-bids",
        ],
    );
    assert_eq!(result.code, Some(0), "{result:?}");
    assert!(
        result.stderr.contains("weir: warning:") && result.stderr.contains("checkpointing is off"),
        "{}",
        result.stderr
    );
    let records = kafka::read_all(bootstrap, "loaded-bids", Isolation::ReadCommitted).unwrap();
    let lines: Vec<String> = records.iter().map(kafka::ConsumedRecord::value_str).collect();
    assert_same_lines("q0 into Kafka", lines, reference::nexmark("q0", 5000), &result.stderr);
    // Written with the time of sending, not the bids' event time (1970), so retention keeps them.
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!(records.iter().all(|r| r.timestamp.is_some_and(|t| (now_ms - t).abs() < 600_000)), "{:?}", records[0]);

    kafka::create_topic(bootstrap, "wcount-counts", 3).unwrap();
    let plugin = nexmark();
    let result = run_weir(
        &[
            "local",
            "run",
            &plugin,
            "-p",
            "2",
            "--checkpoint-interval",
            "200ms",
            "--",
            "--query",
            "wcount",
            "--source",
            "kafka",
            "--bootstrap-servers",
            bootstrap,
            "--source-topic",
            "loaded-bids",
            "--bounded",
            "--sink",
            "kafka",
            "--sink-topic",
            "wcount-counts",
            "--delivery",
            "exactly-once",
        ],
        Duration::from_secs(180),
    );
    assert_eq!(result.code, Some(0), "{result:?}");
    assert!(!result.stderr.contains("warning"), "{}", result.stderr);
    let records = kafka::read_all(bootstrap, "wcount-counts", Isolation::ReadCommitted).unwrap();
    let lines: Vec<String> = records.iter().map(kafka::ConsumedRecord::value_str).collect();
    assert_same_lines("wcount from and to Kafka", lines, reference::nexmark("wcount", 5000), &result.stderr);
}

/// Starts an unbounded Kafka → wcount → Kafka exactly-once job on `cluster`, reading `input` with
/// `flags` for `weir run`; returns its id.
fn wcount_kafka_to_kafka(cluster: &Cluster, bootstrap: &str, input: &str, output: &str, flags: &[&str]) -> String {
    let plugin = nexmark();
    let mut args = vec!["run", plugin.as_str(), "-p", "2", "--detached", "--checkpoint-interval", "300ms"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "--query", "wcount", "--source", "kafka", "--bootstrap-servers", bootstrap]);
    args.extend_from_slice(&["--source-topic", input, "--starting-offsets", "earliest"]);
    args.extend_from_slice(&["--sink", "kafka", "--sink-topic", output, "--delivery", "exactly-once"]);
    let out = cluster.weir(&args);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
    submitted_job_id(&out)
}

/// The wcount lines of bids `1..=bids` of the windows the watermark passed: those that start
/// below `bids - 500` (the example's out-of-orderness) rounded down to a window.
fn closed_windows(bids: u64) -> Vec<String> {
    let closed_below = (bids - 500) / 10_000 * 10_000;
    reference::nexmark("wcount", bids)
        .into_iter()
        .filter(|line| line.split(',').next().and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s < closed_below))
        .collect()
}

/// Reads `topic` with read_committed until it holds `expected` records (or 60 s passed).
fn committed_lines(bootstrap: &str, topic: &str, expected: usize, cluster: &Cluster) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines: Vec<String> = kafka::read_all(bootstrap, topic, Isolation::ReadCommitted)
            .unwrap()
            .iter()
            .map(kafka::ConsumedRecord::value_str)
            .collect();
        if lines.len() >= expected || Instant::now() > deadline {
            return lines;
        }
        assert!(lines.len() <= expected, "more than {expected} lines: {}\n{}", lines.len(), cluster.logs());
        std::thread::sleep(Duration::from_millis(300));
    }
}

// A Kafka → Kafka exactly-once job stopped with a savepoint and resumed from it: the stop fires
// no open window, and the resumed job (a new job id, the same transactional ids) commits the rest
// exactly once. Regression: the stopped job's final commit left a progress marker that said
// "everything committed", and the resumed sink dropped all its output.
#[test]
fn a_kafka_job_stopped_with_a_savepoint_resumes_exactly_once() {
    const FIRST: u64 = 60_000;
    const ALL: u64 = 120_000;
    let bootstrap = shared_bootstrap();
    let lines = bid_lines(ALL);
    kafka::create_topic(bootstrap, "stopped-bids", 2).unwrap();
    kafka::create_topic(bootstrap, "stopped-counts", 2).unwrap();
    let records = |range: std::ops::RangeInclusive<u64>| -> Vec<Record> {
        range.map(|seq| Record::value(lines[&seq].as_str()).partition(((seq - 1) % 2) as i32)).collect()
    };
    kafka::produce(bootstrap, "stopped-bids", &records(1..=FIRST)).unwrap();
    let cluster = Cluster::start(&[], &[("tm-1", 2), ("tm-2", 2)]);
    let savepoints = tempfile::tempdir().unwrap();
    let job = wcount_kafka_to_kafka(&cluster, bootstrap, "stopped-bids", "stopped-counts", &[]);
    let before = closed_windows(FIRST);
    let got = committed_lines(bootstrap, "stopped-counts", before.len(), &cluster);
    assert_same_lines("wcount before the stop", got, before.clone(), &cluster.logs());

    let out = cluster.weir(&["stop", &job, "-p", savepoints.path().to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", cluster.logs());
    let location =
        out.stdout.lines().find_map(|l| l.strip_prefix("Savepoint completed. Path: ")).unwrap().trim().to_owned();
    let stopped = committed_lines(bootstrap, "stopped-counts", before.len(), &cluster);
    assert_same_lines("wcount after the stop: no open window fired", stopped, before, &cluster.logs());

    kafka::produce(bootstrap, "stopped-bids", &records(FIRST + 1..=ALL)).unwrap();
    let resumed = wcount_kafka_to_kafka(&cluster, bootstrap, "stopped-bids", "stopped-counts", &["-s", &location]);
    let all = closed_windows(ALL);
    let got = committed_lines(bootstrap, "stopped-counts", all.len(), &cluster);
    assert_eq!(cluster.weir(&["cancel", &resumed]).code, Some(0));
    assert_same_lines("wcount stopped and resumed", got, all, &cluster.logs());
}
