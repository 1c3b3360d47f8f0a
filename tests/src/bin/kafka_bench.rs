//! `kafka_bench`: the measurement tool of `scripts/bench_kafka.sh` (Kafka → Nexmark → Kafka).
//!
//! ```text
//! kafka_bench broker                       a broker on a free loopback port; prints one line
//!                                          `bootstrap=HOST:PORT pid=JVM_PID dir=DIR`, runs until its
//!                                          standard input closes or it gets SIGTERM/SIGINT/SIGHUP,
//!                                          then stops the JVM (by its handle) and removes DIR
//! kafka_bench create-topic  -b B -t T [--partitions P]
//! kafka_bench produce       -b B -t T --events N [--partitions P] [--create] [--rate R]
//!                                          librdkafka's produce rate alone: bids 1..=N as
//!                                          `seq,auction,bidder,price` lines, as fast as it goes
//!                                          (or paced at R records/s)
//! kafka_bench consume       -b B -t T [--read-uncommitted]
//!                                          librdkafka's consume rate alone (read_committed):
//!                                          everything up to the end offsets taken at the start
//! kafka_bench count         -b B -t T [--expect q0|wcount --events N]
//!                                          records in T (read_committed), and what the query's
//!                                          output over bids 1..=N has
//! kafka_bench latency       -b B --input-topic I --output-topic O --query q0|wcount --rate R
//!                                          [--partitions P] [--warmup S] [--seconds S] [--drain S]
//! ```
//!
//! Every measuring command prints one line of `key=value` fields on standard output (wall and CPU
//! seconds of this process, records, bytes, rates), for the script to parse.
//!
//! **Bids**: bid `seq` goes to partition `(seq - 1) % P` with the record's timestamp the time of
//! sending (librdkafka's default), so each partition holds increasing sequence numbers, as the
//! Nexmark example's per-partition watermarks expect. Producers are idempotent (as the
//! at-least-once sink's) with librdkafka's other defaults (`linger.ms` 5, `acks` all).
//!
//! **Latency** (`latency`): one thread produces bids at a fixed rate into the input topic and
//! remembers each one's time of sending; another reads the output topic with `read_committed`
//! (`fetch.wait.max.ms` 10, `fetch.queue.backoff.ms` 10: librdkafka's default of 1 s would make
//! the reader fall behind the bursts of an exactly-once sink's commits) and takes the time each record reaches it as its time of visibility.
//! The first output record starts a warm-up (the job's start and any backlog); the bids sent in
//! the `--seconds` after it are measured; production goes on for one more second (so that the
//! last windows fire and a checkpoint covers the last records), then stops, and the reader waits
//! (up to `--drain` seconds) for every measured result. Per query:
//! - `q0`: per bid, visibility of its output line (which starts with its `seq`) − sending of the
//!   bid;
//! - `wcount`: per 10 s event-time window (10,000 bids, `[start, start + 10000)` in `seq`), the
//!   visibility of the window's *last* output line (its number of lines is known: the distinct
//!   auctions of its bids) − the sending of the window's last bid `start + 9999`. The window can
//!   only fire when every partition's watermark passed its end, i.e. after bids up to about
//!   `start + 10500` were read (the example's 500 ms bounded out-of-orderness): that wait, about
//!   `501 / rate` seconds, is part of the figure.
//!
//! Also printed: the same percentiles up to the output record's own timestamp (the sink's time of
//! sending, in ms), which splits the latency into the pipeline's part and the part where the
//! records wait for their transaction to commit.

use anyhow::{Context, bail, ensure};
use clap::{Parser, Subcommand};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use weir_tests::kafka::{self, DeliveryTracker, KafkaBroker, KafkaConfig, client_config};

/// The JVM options of the broker: those of Kafka's own `kafka-server-start.sh` (1 GiB heap, G1
/// with short pauses), not the tests' quick-start ones.
const BROKER_JVM_OPTIONS: &[&str] = &[
    "-Xms1g",
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
];
/// Events per Nexmark event-time window of `wcount` (10 s of 1 ms per bid).
const WINDOW: u64 = 10_000;
/// How long a flush of the producer may take.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long reading a topic to its end may take.
const READ_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the latency run waits for the job's first output.
const FIRST_OUTPUT_TIMEOUT: Duration = Duration::from_secs(120);
/// Production goes on this long after the measured interval.
const TAIL: Duration = Duration::from_secs(1);

#[derive(Parser)]
#[command(about = "Measurements for scripts/bench_kafka.sh: a broker, librdkafka's rates alone, end-to-end latency")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Topic {
    /// The broker's address, host:port.
    #[arg(short = 'b', long)]
    bootstrap: String,
    /// The topic.
    #[arg(short = 't', long)]
    topic: String,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a broker on a free loopback port until standard input closes or a signal comes.
    Broker {
        /// The directory of Kafka's jars (default: where scripts/setup.sh installs them).
        #[arg(long)]
        libs: Option<PathBuf>,
    },
    /// Creates a topic.
    CreateTopic {
        #[command(flatten)]
        topic: Topic,
        #[arg(long, default_value_t = 2)]
        partitions: i32,
    },
    /// Produces bids 1..=N as fast as possible (librdkafka's produce rate alone), or paced at
    /// --rate records/s.
    Produce {
        #[command(flatten)]
        topic: Topic,
        #[arg(long)]
        events: u64,
        #[arg(long, default_value_t = 2)]
        partitions: i32,
        /// Create the topic first (with --partitions partitions).
        #[arg(long)]
        create: bool,
        /// Records per second (default: as fast as it goes).
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Reads a topic to the end offsets taken at the start: librdkafka's consume rate alone.
    Consume {
        #[command(flatten)]
        topic: Topic,
        /// Read with read_uncommitted (default read_committed).
        #[arg(long)]
        read_uncommitted: bool,
        /// A consumer property, key=value (repeatable), e.g. fetch.queue.backoff.ms=10.
        #[arg(long = "set", value_parser = parse_property)]
        properties: Vec<(String, String)>,
    },
    /// Counts the records of a topic (read_committed), and the lines a query's output should have.
    Count {
        #[command(flatten)]
        topic: Topic,
        /// q0 or wcount: also print the number of output lines of that query over bids 1..=--events.
        #[arg(long, requires = "events")]
        expect: Option<String>,
        #[arg(long)]
        events: Option<u64>,
    },
    /// End-to-end latency of a running job at a fixed input rate.
    Latency {
        #[arg(short = 'b', long)]
        bootstrap: String,
        #[arg(long)]
        input_topic: String,
        #[arg(long)]
        output_topic: String,
        /// q0 or wcount.
        #[arg(long)]
        query: String,
        /// Bids per second.
        #[arg(long)]
        rate: f64,
        /// Partitions of the input topic (which must exist).
        #[arg(long, default_value_t = 2)]
        partitions: i32,
        /// Seconds between the job's first output and the measured interval.
        #[arg(long, default_value_t = 3.0)]
        warmup: f64,
        /// Seconds of measured input.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Seconds to wait for the last results once production stopped.
        #[arg(long, default_value_t = 30.0)]
        drain: f64,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Broker { libs } => broker(libs),
        Command::CreateTopic { topic, partitions } => kafka::create_topic(&topic.bootstrap, &topic.topic, partitions),
        Command::Produce { topic, events, partitions, create, rate } => {
            load_command(&topic, events, partitions, create, rate)
        }
        Command::Consume { topic, read_uncommitted, properties } => consume(&topic, read_uncommitted, &properties),
        Command::Count { topic, expect, events } => count(&topic, expect.as_deref(), events),
        Command::Latency { bootstrap, input_topic, output_topic, query, rate, partitions, warmup, seconds, drain } => {
            ensure!(query == "q0" || query == "wcount", "--query must be q0 or wcount, not {query:?}");
            ensure!(rate > 0.0 && rate.is_finite(), "--rate must be positive");
            let run = LatencyRun {
                bootstrap,
                input_topic,
                output_topic,
                wcount: query == "wcount",
                rate,
                partitions,
                warmup: Duration::from_secs_f64(warmup),
                seconds: Duration::from_secs_f64(seconds),
                drain: Duration::from_secs_f64(drain),
            };
            latency(&run)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Broker

fn broker(libs: Option<PathBuf>) -> anyhow::Result<()> {
    let mut config = KafkaConfig {
        jvm_options: BROKER_JVM_OPTIONS.iter().map(|s| (*s).to_owned()).collect(),
        ..KafkaConfig::default()
    };
    if let Some(libs) = libs {
        config.libs = libs;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Signals are caught from the start: a Ctrl-C during the broker's start stops it cleanly too.
    let (mut term, mut int, mut hup) = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        anyhow::Ok((signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?, signal(SignalKind::hangup())?))
    })?;
    let broker = KafkaBroker::start_with(&config)?;
    let pid = broker_pid().context("finding the broker's JVM among this process's children")?;
    println!("bootstrap={} pid={pid} dir={}", broker.bootstrap_servers(), broker.dir().display());
    std::io::stdout().flush()?;
    eprintln!("Kafka {} started in {:.1} s", kafka::kafka_version(), broker.startup_time().as_secs_f64());

    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 256];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buffer), Ok(n) if n > 0) {}
        let _ = closed_tx.send(());
    });
    let why = runtime.block_on(async {
        tokio::select! {
            _ = closed_rx => "standard input closed",
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => "SIGHUP",
        }
    });
    eprintln!("stopping the broker ({why})");
    drop(broker);
    // The stdin thread may still block in read(2); exit without waiting for it.
    std::process::exit(0);
}

/// The broker's JVM: the child of this process whose command line runs `kafka.Kafka` (the
/// storage formatter, also a `java` child, has exited by then).
fn broker_pid() -> anyhow::Result<u32> {
    for task in std::fs::read_dir("/proc/self/task")? {
        let children = std::fs::read_to_string(task?.path().join("children")).unwrap_or_default();
        for pid in children.split_whitespace() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.split(|b| *b == 0).any(|arg| arg == b"kafka.Kafka") {
                return Ok(pid.parse()?);
            }
        }
    }
    bail!("no child runs kafka.Kafka")
}

// ---------------------------------------------------------------------------------------------
// Bids and measurements

/// Writes the bid `seq` as the Nexmark example reads it from Kafka: `seq,auction,bidder,price`.
fn bid_line(seq: u64, out: &mut String) {
    let auction = if seq.is_multiple_of(4) { (seq / 4) % 97 } else { seq.wrapping_mul(7919) % 10_000 };
    let bidder = seq.wrapping_mul(104_729) % 100_000;
    let price = seq.wrapping_mul(31) % 10_000 + 1;
    out.clear();
    let _ = write!(out, "{seq},{auction},{bidder},{price}");
}

fn auction_of(seq: u64) -> u64 {
    if seq.is_multiple_of(4) { (seq / 4) % 97 } else { seq.wrapping_mul(7919) % 10_000 }
}

/// The number of `wcount` output lines of each window (by start) over bids `from..=to`: the
/// distinct auctions of its bids.
fn wcount_lines(from: u64, to: u64) -> BTreeMap<u64, u64> {
    let mut lines = BTreeMap::new();
    let mut auctions = HashSet::new();
    let mut seq = from;
    while seq <= to {
        let start = seq - seq % WINDOW;
        let end = (start + WINDOW - 1).min(to);
        auctions.clear();
        auctions.extend((seq..=end).map(auction_of));
        lines.insert(start, auctions.len() as u64);
        seq = end + 1;
    }
    lines
}

/// CPU seconds (user + system) this process has used: `/proc/self/stat` in clock ticks, which
/// Linux reports at `USER_HZ` = 100 on every architecture.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses: state is field 3,
    // utime 14, stime 15.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(14) + ticks(15)) / 100.0
}

/// Wall and CPU time of a measured section.
struct Meter {
    wall: Instant,
    cpu: f64,
}

impl Meter {
    fn start() -> Self {
        Self { wall: Instant::now(), cpu: cpu_seconds() }
    }

    /// `wall_s=… cpu_s=…` since the start.
    fn fields(&self) -> (f64, f64) {
        (self.wall.elapsed().as_secs_f64(), cpu_seconds() - self.cpu)
    }
}

/// An idempotent producer of bids.
struct BidProducer {
    producer: BaseProducer<DeliveryTracker>,
    topic: String,
    partitions: u64,
    line: String,
    sent: u64,
    bytes: u64,
}

impl BidProducer {
    fn new(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<Self> {
        ensure!(partitions > 0, "--partitions must be positive");
        let producer = client_config(bootstrap)
            .set("enable.idempotence", "true")
            .create_with_context(DeliveryTracker::default())
            .context("creating a producer")?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            partitions: partitions as u64,
            line: String::new(),
            sent: 0,
            bytes: 0,
        })
    }

    /// Enqueues bid `seq` (serving delivery reports while the queue is full).
    fn send(&mut self, seq: u64) -> anyhow::Result<()> {
        bid_line(seq, &mut self.line);
        let partition = ((seq - 1) % self.partitions) as i32;
        loop {
            let record: BaseRecord<'_, [u8], [u8]> =
                BaseRecord::to(&self.topic).payload(self.line.as_bytes()).partition(partition);
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(anyhow::Error::new(e).context(format!("producing to {:?}", self.topic))),
            }
        }
        self.sent += 1;
        self.bytes += self.line.len() as u64;
        if self.sent.is_multiple_of(1024) {
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    /// Waits until every record is acknowledged; fails on any failed delivery.
    fn flush(&self) -> anyhow::Result<()> {
        self.producer.flush(FLUSH_TIMEOUT).with_context(|| format!("flushing the records for {:?}", self.topic))?;
        if let Some(error) = self.producer.context().take_error() {
            bail!("producing to {:?}: {error}", self.topic);
        }
        Ok(())
    }
}

fn load_command(topic: &Topic, events: u64, partitions: i32, create: bool, rate: Option<f64>) -> anyhow::Result<()> {
    if create {
        kafka::create_topic(&topic.bootstrap, &topic.topic, partitions)?;
    }
    let mut producer = BidProducer::new(&topic.bootstrap, &topic.topic, partitions)?;
    // Connect before the clock starts (metadata, producer id).
    producer.producer.client().fetch_metadata(Some(&topic.topic), Duration::from_secs(30))?;
    let meter = Meter::start();
    let started = Instant::now();
    for seq in 1..=events {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64((seq - 1) as f64 / rate);
            let now = Instant::now();
            if due > now + Duration::from_micros(500) {
                producer.producer.poll(Duration::ZERO);
                std::thread::sleep(due - now);
            }
        }
        producer.send(seq)?;
    }
    producer.flush()?;
    let (wall, cpu) = meter.fields();
    println!(
        "records={events} bytes={} wall_s={wall:.3} cpu_s={cpu:.2} records_per_s={:.0} mb_per_s={:.2}",
        producer.bytes,
        events as f64 / wall,
        producer.bytes as f64 / wall / 1e6
    );
    Ok(())
}

/// A consumer assigned to every partition of `topic` from the beginning, and the end offsets
/// (taken now, at its isolation level) of the partitions that hold records.
fn reader(
    bootstrap: &str,
    topic: &str,
    read_uncommitted: bool,
    extra: &[(&str, &str)],
) -> anyhow::Result<(BaseConsumer, BTreeMap<i32, i64>)> {
    let mut config = client_config(bootstrap);
    config
        .set("group.id", "weir-kafka-bench")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", if read_uncommitted { "read_uncommitted" } else { "read_committed" });
    for (key, value) in extra {
        config.set(*key, *value);
    }
    let consumer: BaseConsumer = config.create().context("creating a consumer")?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .with_context(|| format!("no topic {topic:?}"))?
        .partitions()
        .len();
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..i32::try_from(partitions)? {
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
        if high > low {
            ends.insert(partition, high);
        }
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok((consumer, ends))
}

/// Reads `topic` to the end offsets of [`reader`], calling `each` with every record's value.
fn read_to_end(
    consumer: &BaseConsumer,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
    mut each: impl FnMut(&[u8]),
) -> anyhow::Result<()> {
    let mut pending = ends.clone();
    let deadline = Instant::now() + READ_TIMEOUT;
    while !pending.is_empty() {
        ensure!(Instant::now() < deadline, "reading {topic:?}: partitions {pending:?} not read to the end in time");
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                pending.remove(&partition);
            }
            Some(Err(e)) => return Err(anyhow::Error::new(e).context(format!("reading {topic:?}"))),
            Some(Ok(message)) if message.offset() < ends.get(&message.partition()).copied().unwrap_or(0) => {
                each(message.payload().unwrap_or_default());
            }
            // Past the end taken at the start: not counted.
            Some(Ok(_)) => {}
        }
    }
    Ok(())
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .ok_or_else(|| format!("{text:?} is not key=value"))
}

fn consume(topic: &Topic, read_uncommitted: bool, properties: &[(String, String)]) -> anyhow::Result<()> {
    let extra: Vec<(&str, &str)> = properties.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (consumer, ends) = reader(&topic.bootstrap, &topic.topic, read_uncommitted, &extra)?;
    let meter = Meter::start();
    let (mut records, mut bytes) = (0u64, 0u64);
    read_to_end(&consumer, &topic.topic, &ends, |value| {
        records += 1;
        bytes += value.len() as u64;
    })?;
    let (wall, cpu) = meter.fields();
    println!(
        "records={records} bytes={bytes} wall_s={wall:.3} cpu_s={cpu:.2} records_per_s={:.0} mb_per_s={:.2}",
        records as f64 / wall,
        bytes as f64 / wall / 1e6
    );
    Ok(())
}

fn count(topic: &Topic, expect: Option<&str>, events: Option<u64>) -> anyhow::Result<()> {
    let (consumer, ends) = reader(&topic.bootstrap, &topic.topic, false, &[])?;
    let mut records = 0u64;
    read_to_end(&consumer, &topic.topic, &ends, |_| records += 1)?;
    let mut line = format!("records={records}");
    if let (Some(query), Some(events)) = (expect, events) {
        let expected = match query {
            "q0" => events,
            "wcount" => wcount_lines(1, events).values().sum(),
            other => bail!("--expect must be q0 or wcount, not {other:?}"),
        };
        let _ = write!(line, " expected={expected}");
    }
    println!("{line}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Latency

struct LatencyRun {
    bootstrap: String,
    input_topic: String,
    output_topic: String,
    wcount: bool,
    rate: f64,
    partitions: i32,
    warmup: Duration,
    seconds: Duration,
    drain: Duration,
}

/// What the producing thread leaves behind.
struct Produced {
    /// Time of sending of bid `seq` at index `seq - 1`, ns since the run's start.
    sent_ns: Vec<u64>,
    /// The measured bids: `first..=last`.
    first: u64,
    last: u64,
    /// When the measured interval began and ended, ns since the run's start.
    measured_from_ns: u64,
    measured_to_ns: u64,
}

/// Shared between the threads.
struct Shared {
    start: Instant,
    /// 1 + ns of the first output record's arrival; 0 before.
    first_output: AtomicU64,
    /// The producer failed or finished: what the reader has to wait for.
    done: OnceLock<Target>,
}

/// What the reader waits for once production stopped.
enum Target {
    /// q0: every bid up to this one.
    Bids(u64),
    /// wcount: these windows with these numbers of lines.
    Windows(BTreeMap<u64, u64>),
    /// The producer failed.
    Failed,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// What the reading thread saw.
#[derive(Default)]
struct Seen {
    /// q0: arrival (1 + ns) of bid `seq`'s line at index `seq - 1`, 0 if not seen; and its
    /// record timestamp (ms since the epoch).
    bid_arrival: Vec<u64>,
    bid_timestamp_ms: Vec<i64>,
    duplicates: u64,
    /// wcount: per window start, (lines, last arrival ns, last record timestamp ms).
    windows: HashMap<u64, (u64, u64, i64)>,
    records: u64,
}

fn latency(run: &LatencyRun) -> anyhow::Result<()> {
    let shared = Arc::new(Shared { start: Instant::now(), first_output: AtomicU64::new(0), done: OnceLock::new() });
    let start_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64() * 1000.0;
    let mut producer = BidProducer::new(&run.bootstrap, &run.input_topic, run.partitions)?;
    producer.producer.client().fetch_metadata(Some(&run.input_topic), Duration::from_secs(30))?;
    // The output is read from its beginning: the topic must be new (or empty) for this run.
    let (consumer, _) = reader(
        &run.bootstrap,
        &run.output_topic,
        false,
        &[("fetch.wait.max.ms", "10"), ("enable.partition.eof", "false"), ("fetch.queue.backoff.ms", "10")],
    )?;
    let meter = Meter::start();

    let reading = {
        let shared = Arc::clone(&shared);
        let wcount = run.wcount;
        let drain = run.drain;
        std::thread::spawn(move || read_output(&consumer, &shared, wcount, drain))
    };
    let produced = produce_paced(run, &mut producer, &shared);
    if produced.is_err() {
        let _ = shared.done.set(Target::Failed);
    }
    let seen = reading.join().map_err(|_| anyhow::anyhow!("the reading thread panicked"))??;
    let produced = produced?;
    let (wall, cpu) = meter.fields();

    // Latencies in ms: to visibility, and to the output record's timestamp (the sink's sending).
    let mut visible = Vec::new();
    let mut stamped = Vec::new();
    let mut missing = 0u64;
    let ms = |ns: u64| ns as f64 / 1e6;
    let sent_ms = |seq: u64| ms(produced.sent_ns[(seq - 1) as usize]);
    if run.wcount {
        let windows = wcount_lines(produced.first, produced.last);
        for (&start, &lines) in &windows {
            // Whole windows only: the first measured bid starts it, the last measured ends it.
            if start.max(1) < produced.first || start + WINDOW - 1 > produced.last {
                continue;
            }
            let last_bid = start + WINDOW - 1;
            match seen.windows.get(&start) {
                Some(&(got, arrival, stamp)) if got >= lines => {
                    visible.push(ms(arrival) - sent_ms(last_bid));
                    stamped.push(stamp as f64 - start_unix_ms - sent_ms(last_bid));
                }
                _ => missing += 1,
            }
        }
    } else {
        for seq in produced.first..=produced.last {
            let i = (seq - 1) as usize;
            match seen.bid_arrival.get(i).copied().filter(|a| *a > 0) {
                Some(arrival) => {
                    visible.push(ms(arrival - 1) - sent_ms(seq));
                    stamped.push(seen.bid_timestamp_ms[i] as f64 - start_unix_ms - sent_ms(seq));
                }
                None => missing += 1,
            }
        }
    }
    ensure!(!visible.is_empty(), "no measured result was seen ({missing} missing)");
    let sent = produced.sent_ns.len() as u64;
    let measured_s = (produced.measured_to_ns - produced.measured_from_ns) as f64 / 1e9;
    let mut line = format!(
        "query={} rate={:.0} achieved_rate={:.0} sent={sent} output_records={} duplicates={} measured={} missing={missing}",
        if run.wcount { "wcount" } else { "q0" },
        run.rate,
        (produced.last + 1 - produced.first) as f64 / measured_s,
        seen.records,
        seen.duplicates,
        visible.len(),
    );
    for (name, values) in [("", &mut visible), ("sink_", &mut stamped)] {
        values.sort_by(f64::total_cmp);
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let _ = write!(
            line,
            " {name}p50_ms={:.1} {name}p90_ms={:.1} {name}p99_ms={:.1} {name}max_ms={:.1} {name}mean_ms={mean:.1}",
            percentile(values, 0.50),
            percentile(values, 0.90),
            percentile(values, 0.99),
            values[values.len() - 1],
        );
    }
    let _ = write!(line, " wall_s={wall:.1} cpu_s={cpu:.2}");
    println!("{line}");
    Ok(())
}

/// The `q`-quantile of sorted `values` (nearest rank).
fn percentile(values: &[f64], q: f64) -> f64 {
    let rank = (q * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// Produces bids at `run.rate` until the measured interval and its tail are over.
fn produce_paced(run: &LatencyRun, producer: &mut BidProducer, shared: &Shared) -> anyhow::Result<Produced> {
    let capacity = (run.rate * (run.warmup + run.seconds + TAIL + Duration::from_secs(10)).as_secs_f64()) as usize;
    let mut sent_ns: Vec<u64> = Vec::with_capacity(capacity);
    let mut interval: Option<(u64, u64)> = None;
    let ns_per_bid = 1e9 / run.rate;
    loop {
        let now = shared.now_ns();
        if interval.is_none() {
            match shared.first_output.load(Ordering::Acquire) {
                0 => ensure!(
                    now < FIRST_OUTPUT_TIMEOUT.as_nanos() as u64,
                    "no output in {:?}: is the job running?",
                    FIRST_OUTPUT_TIMEOUT
                ),
                first => {
                    let from = first - 1 + run.warmup.as_nanos() as u64;
                    interval = Some((from, from + run.seconds.as_nanos() as u64));
                }
            }
        }
        if let Some((_, to)) = interval
            && now >= to + TAIL.as_nanos() as u64
        {
            break;
        }
        // Bids due by now: one every 1/rate seconds from the start.
        let due = (now as f64 / ns_per_bid) as u64 + 1;
        while (sent_ns.len() as u64) < due {
            let seq = sent_ns.len() as u64 + 1;
            producer.send(seq)?;
            sent_ns.push(shared.now_ns());
        }
        producer.producer.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_micros(500));
    }
    producer.flush()?;
    let (from, to) = interval.expect("set before the loop ends");
    let first = sent_ns.partition_point(|&t| t < from) as u64 + 1;
    let last = sent_ns.partition_point(|&t| t < to) as u64;
    ensure!(last >= first, "no bid was sent in the measured interval");
    let target = if run.wcount {
        let mut windows = wcount_lines(first, last);
        windows.retain(|&start, _| start.max(1) >= first && start + WINDOW - 1 <= last);
        Target::Windows(windows)
    } else {
        Target::Bids(sent_ns.len() as u64)
    };
    let _ = shared.done.set(target);
    Ok(Produced { sent_ns, first, last, measured_from_ns: from, measured_to_ns: to })
}

/// Reads the output until what [`Target`] names was seen (or the drain time passed).
fn read_output(consumer: &BaseConsumer, shared: &Shared, wcount: bool, drain: Duration) -> anyhow::Result<Seen> {
    let mut seen = Seen::default();
    let mut bids_seen = 0u64;
    let mut drain_deadline: Option<Instant> = None;
    let mut last_check = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(10)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => return Err(anyhow::Error::new(e).context("reading the output")),
            Some(Ok(message)) => {
                let now = shared.now_ns();
                let _ = shared.first_output.compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Acquire);
                seen.records += 1;
                let value = message.payload().unwrap_or_default();
                let first_field = value.split(|b| *b == b',').next().unwrap_or_default();
                let key: u64 = std::str::from_utf8(first_field)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .with_context(|| format!("unexpected output record {:?}", String::from_utf8_lossy(value)))?;
                let stamp = message.timestamp().to_millis().unwrap_or(0);
                if wcount {
                    let window = seen.windows.entry(key).or_insert((0, 0, 0));
                    window.0 += 1;
                    window.1 = window.1.max(now);
                    window.2 = window.2.max(stamp);
                } else {
                    ensure!(key >= 1, "unexpected output record {:?}", String::from_utf8_lossy(value));
                    let i = (key - 1) as usize;
                    if seen.bid_arrival.len() <= i {
                        let len = (i + 1).max(seen.bid_arrival.len() * 2);
                        seen.bid_arrival.resize(len, 0);
                        seen.bid_timestamp_ms.resize(len, 0);
                    }
                    if seen.bid_arrival[i] == 0 {
                        seen.bid_arrival[i] = now + 1;
                        seen.bid_timestamp_ms[i] = stamp;
                        bids_seen += 1;
                    } else {
                        seen.duplicates += 1;
                    }
                }
            }
        }
        if last_check.elapsed() < Duration::from_millis(50) {
            continue;
        }
        last_check = Instant::now();
        let Some(target) = shared.done.get() else { continue };
        let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + drain);
        let complete = match target {
            Target::Failed => true,
            Target::Bids(n) => bids_seen >= *n,
            Target::Windows(windows) => {
                windows.iter().all(|(start, lines)| seen.windows.get(start).is_some_and(|(got, _, _)| got >= lines))
            }
        };
        if complete || Instant::now() >= deadline {
            break;
        }
    }
    Ok(seen)
}
