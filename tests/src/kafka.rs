//! A real Apache Kafka broker for tests, and client helpers (`rdkafka`) to prepare and check topics.
//!
//! [`KafkaBroker::start`] runs Kafka in KRaft mode (one node that is both broker and controller) as
//! a child JVM on free loopback ports, in a temporary directory that holds its configuration, data
//! and logs. The broker's jars are the ones `scripts/setup.sh` copies from Maven Central (see
//! `scripts/kafka/pom.xml`): `$WEIR_KAFKA_LIBS` (which `scripts/test.sh` exports), else
//! `${WEIR_TOOLS_DIR:-~/.cache/weir/tools}/kafka-<version>/libs`. Starting fails, with a hint to run
//! `./scripts/setup.sh`, when they are missing: tests that need Kafka never skip silently. Java
//! comes from `$JAVA_HOME/bin/java`, else `java` on the `PATH` (Kafka 4 needs Java 17 or newer).
//!
//! The broker is configured for tests: replication factor 1 for the offsets and transaction-state
//! topics, no automatic topic creation (tests create their topics with [`create_topic`]), no
//! initial rebalance delay; the transaction limits are Kafka's defaults
//! (`transaction.max.timeout.ms` = 15 min). Dropping the [`KafkaBroker`] kills the JVM through its
//! [`Child`] handle and removes the directory, except while a panic unwinds: then the directory is
//! kept and its path printed, for the broker's log (`server.log`).
//!
//! The helpers are synchronous and bounded in time: [`create_topic`], [`add_partitions`],
//! [`produce`] (idempotent, every record acknowledged), [`TransactionalProducer`] and [`read_all`]
//! (everything up to the end offsets, with either isolation level).

use anyhow::{Context, bail, ensure};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the broker may take to answer metadata requests after it was started (usually 5-10 s).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a start is retried on fresh ports when the broker exits early (e.g. a port was taken).
const START_ATTEMPTS: usize = 3;
/// Timeout of one client request (metadata, topic creation, transaction calls).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`read_all`] and [`produce`] may take in all.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of each of the broker's logs included in an error.
const LOG_TAIL_LINES: usize = 40;
/// The JVM options of [`KafkaConfig::default`]: a small heap (the machine runs many things) and a
/// quick start (serial GC, client compiler only). Throughput measurements may want the C2 compiler
/// back: drop `-XX:TieredStopAtLevel=1`.
pub const DEFAULT_JVM_OPTIONS: &[&str] = &[
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
];

/// The Kafka version `scripts/setup.sh` installs (`<kafka.version>` of `scripts/kafka/pom.xml`).
pub fn kafka_version() -> &'static str {
    const POM: &str = include_str!("../../scripts/kafka/pom.xml");
    POM.split_once("<kafka.version>")
        .and_then(|(_, rest)| rest.split_once("</kafka.version>"))
        .map(|(version, _)| version.trim())
        .expect("scripts/kafka/pom.xml names <kafka.version>")
}

/// The directory of the broker's jars: `$WEIR_KAFKA_LIBS`, else the one `scripts/setup.sh` fills,
/// `${WEIR_TOOLS_DIR:-~/.cache/weir/tools}/kafka-<version>/libs`.
pub fn kafka_libs() -> PathBuf {
    if let Some(path) = std::env::var_os("WEIR_KAFKA_LIBS").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let tools = std::env::var_os("WEIR_TOOLS_DIR").filter(|p| !p.is_empty()).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache").join("weir").join("tools")
    });
    tools.join(format!("kafka-{}", kafka_version())).join("libs")
}

/// How to start a broker; [`KafkaConfig::default`] is what [`KafkaBroker::start`] uses.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// The directory of the broker's jars (default [`kafka_libs`]).
    pub libs: PathBuf,
    /// The JVM's options (default [`DEFAULT_JVM_OPTIONS`]).
    pub jvm_options: Vec<String>,
    /// Broker properties added to (or overriding) the test defaults, e.g.
    /// `("transaction.max.timeout.ms", "60000")`.
    pub properties: Vec<(String, String)>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            libs: kafka_libs(),
            jvm_options: DEFAULT_JVM_OPTIONS.iter().map(|s| (*s).to_owned()).collect(),
            properties: Vec::new(),
        }
    }
}

impl KafkaConfig {
    /// Adds (or overrides) one broker property.
    #[must_use]
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.properties.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// A single-node Kafka broker (KRaft) on loopback; killed (by handle) on drop.
#[derive(Debug)]
pub struct KafkaBroker {
    child: Child,
    port: u16,
    dir: Option<tempfile::TempDir>,
    startup: Duration,
}

impl KafkaBroker {
    /// Starts a broker with [`KafkaConfig::default`] and waits until it answers metadata requests.
    ///
    /// # Errors
    /// When the jars or Java are missing (with a hint to run `./scripts/setup.sh`), formatting the
    /// storage fails, or the broker does not answer within 60 s (with its logs' tails).
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&KafkaConfig::default())
    }

    /// Like [`KafkaBroker::start`], with the given configuration.
    ///
    /// # Errors
    /// As [`KafkaBroker::start`].
    pub fn start_with(config: &KafkaConfig) -> anyhow::Result<Self> {
        let started = Instant::now();
        ensure!(
            has_jars(&config.libs, "kafka_2.13-"),
            "Kafka's jars not found in {} (set WEIR_KAFKA_LIBS, or run ./scripts/setup.sh to install them)",
            config.libs.display()
        );
        let dir = tempfile::Builder::new().prefix("weir-kafka-").tempdir().context("Kafka temp dir")?;
        let mut attempt = 1;
        let (child, port) = loop {
            match spawn_and_wait(config, dir.path()) {
                Ok(started) => break started,
                Err(Start::Exited(status)) if attempt < START_ATTEMPTS => {
                    eprintln!("Kafka exited ({status}) on attempt {attempt}, retrying on other ports");
                    attempt += 1;
                }
                Err(Start::Exited(status)) => {
                    bail!("Kafka exited ({status}) {attempt} times; {}", log_tails(dir.path()))
                }
                Err(Start::Failed(e)) => bail!("{e:#}; {}", log_tails(dir.path())),
            }
        };
        Ok(Self { child, port, dir: Some(dir), startup: started.elapsed() })
    }

    /// The broker's address for clients, `127.0.0.1:PORT`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How long the start took: formatting the storage, the JVM's start and the first answered
    /// metadata request.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The broker's directory: `server.properties`, `server.log` (its log), `stdout.log`,
    /// `stderr.log` and the data under `data/`.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("present until drop").path()
    }

    /// The tails of the broker's logs, for error messages.
    pub fn log_tail(&self) -> String {
        log_tails(self.dir())
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("Kafka broker's directory (with server.log) kept at {}", dir.keep().display());
        }
    }
}

/// Whether `dir` holds a jar whose name starts with `prefix`.
fn has_jars(dir: &Path, prefix: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(prefix) && n.ends_with(".jar")))
    })
}

/// Why one start attempt failed.
enum Start {
    /// The broker exited before answering (retryable: most likely a port was taken meanwhile).
    Exited(std::process::ExitStatus),
    /// Anything else.
    Failed(anyhow::Error),
}

/// The `java` binary: `$JAVA_HOME/bin/java`, else `java` on the `PATH`.
fn java() -> PathBuf {
    std::env::var_os("JAVA_HOME")
        .filter(|p| !p.is_empty())
        .map(|home| PathBuf::from(home).join("bin").join("java"))
        .filter(|java| java.is_file())
        .unwrap_or_else(|| PathBuf::from("java"))
}

/// A `java` command with the classpath and options of `config` and the log configuration in `dir`.
fn java_command(config: &KafkaConfig, dir: &Path) -> Command {
    let mut command = Command::new(java());
    command
        .args(&config.jvm_options)
        .arg(format!("-Dlog4j2.configurationFile={}", dir.join("log4j2.properties").display()))
        .arg("-Dlog4j2.shutdownHookEnabled=false")
        .arg("-cp")
        .arg(config.libs.join("*"))
        .current_dir(dir)
        .stdin(Stdio::null());
    command
}

/// Writes the configuration for fresh ports, formats the storage and starts the broker; waits
/// until it answers metadata requests.
fn spawn_and_wait(config: &KafkaConfig, dir: &Path) -> Result<(Child, u16), Start> {
    let fail = |e: anyhow::Error| Start::Failed(e);
    let (port, controller_port) = free_ports().map_err(|e| fail(e.context("picking free loopback ports")))?;
    let data = dir.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data).map_err(|e| fail(anyhow::Error::new(e).context("clearing Kafka's data")))?;
    }
    write_config(config, dir, port, controller_port).map_err(fail)?;
    format_storage(config, dir).map_err(fail)?;

    let open = |name: &str| File::create(dir.join(name)).with_context(|| format!("creating {name}"));
    let stdout = open("stdout.log").map_err(fail)?;
    let stderr = open("stderr.log").map_err(fail)?;
    let mut child = java_command(config, dir)
        .arg("kafka.Kafka")
        .arg("server.properties")
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| fail(java_error(e)))?;
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut client: Option<BaseConsumer> = None;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Err(Start::Exited(status)),
            Ok(None) => {}
            Err(e) => {
                kill(&mut child);
                return Err(fail(e.into()));
            }
        }
        // Connect first (cheap), then ask for metadata: an answer naming this broker means that it
        // registered with its controller and serves clients.
        if client.is_none() && TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            let bootstrap = format!("127.0.0.1:{port}");
            client = Some(client_config(&bootstrap).create().map_err(|e| fail(anyhow::Error::new(e)))?);
        }
        if let Some(client) = &client
            && let Ok(metadata) = client.fetch_metadata(None, Duration::from_secs(2))
            && metadata.brokers().iter().any(|b| b.port() == i32::from(port))
            && matches!(child.try_wait(), Ok(None))
        {
            return Ok((child, port));
        }
        if Instant::now() >= deadline {
            kill(&mut child);
            return Err(fail(anyhow::anyhow!(
                "Kafka did not answer on 127.0.0.1:{port} within {}s",
                STARTUP_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The error for a `java` that could not be started.
fn java_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        anyhow::anyhow!(
            "{} not found: Kafka needs Java 17 or newer (set JAVA_HOME, or run ./scripts/setup.sh to install it)",
            java().display()
        )
    } else {
        anyhow::Error::new(e).context(format!("starting {}", java().display()))
    }
}

/// `server.properties` (single-node KRaft on loopback, for tests) and `log4j2.properties` (the log
/// to `server.log`, nothing on the console).
fn write_config(config: &KafkaConfig, dir: &Path, port: u16, controller_port: u16) -> anyhow::Result<()> {
    let mut properties: Vec<(String, String)> = [
        ("process.roles", "broker,controller".to_owned()),
        ("node.id", "1".to_owned()),
        ("controller.quorum.bootstrap.servers", format!("127.0.0.1:{controller_port}")),
        ("listeners", format!("PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}")),
        ("advertised.listeners", format!("PLAINTEXT://127.0.0.1:{port}")),
        ("listener.security.protocol.map", "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".to_owned()),
        ("controller.listener.names", "CONTROLLER".to_owned()),
        ("inter.broker.listener.name", "PLAINTEXT".to_owned()),
        ("log.dirs", dir.join("data").display().to_string()),
        ("offsets.topic.replication.factor", "1".to_owned()),
        ("offsets.topic.num.partitions", "1".to_owned()),
        ("transaction.state.log.replication.factor", "1".to_owned()),
        ("transaction.state.log.min.isr", "1".to_owned()),
        ("transaction.state.log.num.partitions", "1".to_owned()),
        ("share.coordinator.state.topic.replication.factor", "1".to_owned()),
        ("share.coordinator.state.topic.min.isr", "1".to_owned()),
        ("group.initial.rebalance.delay.ms", "0".to_owned()),
        ("num.partitions", "1".to_owned()),
        ("default.replication.factor", "1".to_owned()),
        ("min.insync.replicas", "1".to_owned()),
        ("auto.create.topics.enable", "false".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (key, value) in &config.properties {
        properties.retain(|(k, _)| k != key);
        properties.push((key.clone(), value.clone()));
    }
    let mut text =
        String::from("# Written by weir-tests (tests/src/kafka.rs): a single-node KRaft broker for tests.\n");
    for (key, value) in &properties {
        writeln!(text, "{key}={value}")?;
    }
    std::fs::write(dir.join("server.properties"), text).context("writing server.properties")?;
    let log4j = format!(
        "status = warn\n\
         appender.file.type = File\n\
         appender.file.name = file\n\
         appender.file.fileName = {}\n\
         appender.file.layout.type = PatternLayout\n\
         appender.file.layout.pattern = [%d] %p %m (%c)%n\n\
         rootLogger.level = info\n\
         rootLogger.appenderRef.file.ref = file\n",
        dir.join("server.log").display()
    );
    std::fs::write(dir.join("log4j2.properties"), log4j).context("writing log4j2.properties")
}

/// Formats the log directory with a random cluster id, this node as the only controller.
fn format_storage(config: &KafkaConfig, dir: &Path) -> anyhow::Result<()> {
    let output = java_command(config, dir)
        .args(["kafka.tools.StorageTool", "format", "--config", "server.properties", "--standalone"])
        .arg("--cluster-id")
        .arg(random_cluster_id())
        .output()
        .map_err(java_error)?;
    ensure!(
        output.status.success(),
        "formatting Kafka's storage failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// A random Kafka cluster id: 16 random bytes in URL-safe base64 without padding, not starting
/// with `-` (which Kafka's tools avoid since it reads as an option).
fn random_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[0] &= 0x7f; // first character from the first 6 bits: below 32, a letter
    let mut bits = 0u32;
    let mut n = 0;
    let mut id = String::with_capacity(22);
    for byte in bytes {
        bits = (bits << 8) | u32::from(byte);
        n += 8;
        while n >= 6 {
            n -= 6;
            id.push(char::from(ALPHABET[((bits >> n) & 63) as usize]));
        }
    }
    id.push(char::from(ALPHABET[((bits << (6 - n)) & 63) as usize]));
    id
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Two distinct loopback ports that were free a moment ago (bound to port 0, then released).
fn free_ports() -> anyhow::Result<(u16, u16)> {
    let a = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let b = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// The last lines of the broker's stderr and log.
fn log_tails(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["stderr.log", "stdout.log", "server.log"] {
        let path = dir.join(name);
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            continue;
        }
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        let _ = write!(out, "\n--- tail of {}:\n{}", path.display(), tail.join("\n"));
    }
    if out.is_empty() { "the broker logged nothing".to_owned() } else { format!("the broker's logs:{out}") }
}

// ---------------------------------------------------------------------------------------------
// Client helpers

/// A client configuration for `bootstrap` with quiet, test-friendly defaults; add what a client
/// needs (`transactional.id`, `isolation.level`, ...) and create it.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap).set("broker.address.family", "v4").set("log_level", "3");
    config
}

/// Creates `topic` with `partitions` partitions (replication 1) and waits until every partition
/// has a leader.
///
/// # Errors
/// When the broker refuses (e.g. the topic exists) or does not answer in time.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    create_topic_with(bootstrap, topic, partitions, &[])
}

/// Like [`create_topic`], with topic configuration, e.g. `[("cleanup.policy", "compact")]`.
///
/// # Errors
/// As [`create_topic`].
pub fn create_topic_with(bootstrap: &str, topic: &str, partitions: i32, config: &[(&str, &str)]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(bootstrap).create().context("creating an admin client")?;
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in config {
        new_topic = new_topic.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)).request_timeout(Some(REQUEST_TIMEOUT));
    let results = futures::executor::block_on(admin.create_topics([&new_topic], &options))
        .with_context(|| format!("creating topic {topic:?}"))?;
    for result in results {
        if let Err((name, code)) = result {
            bail!("creating topic {name:?}: {code}");
        }
    }
    wait_for_partitions(bootstrap, topic, partitions)
}

/// Grows `topic` to `total` partitions and waits until every partition has a leader.
///
/// # Errors
/// When the broker refuses or does not answer in time.
pub fn add_partitions(bootstrap: &str, topic: &str, total: usize) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(bootstrap).create().context("creating an admin client")?;
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)).request_timeout(Some(REQUEST_TIMEOUT));
    let results = futures::executor::block_on(admin.create_partitions([&NewPartitions::new(topic, total)], &options))
        .with_context(|| format!("adding partitions to {topic:?}"))?;
    for result in results {
        if let Err((name, code)) = result {
            bail!("growing topic {name:?} to {total} partitions: {code}");
        }
    }
    wait_for_partitions(bootstrap, topic, i32::try_from(total)?)
}

/// The number of partitions of `topic`.
///
/// # Errors
/// When the topic does not exist or the broker does not answer.
pub fn partition_count(bootstrap: &str, topic: &str) -> anyhow::Result<usize> {
    let consumer: BaseConsumer = client_config(bootstrap).create()?;
    partitions_with_leaders(&consumer, topic).map(|(count, _)| count)
}

/// (partitions, all have a leader) of `topic`, per the broker's metadata.
fn partitions_with_leaders(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<(usize, bool)> {
    let metadata =
        consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT).with_context(|| format!("metadata of {topic:?}"))?;
    let t =
        metadata.topics().iter().find(|t| t.name() == topic).with_context(|| format!("no metadata for {topic:?}"))?;
    if let Some(error) = t.error() {
        bail!("topic {topic:?}: {}", RDKafkaErrorCode::from(error));
    }
    Ok((t.partitions().len(), t.partitions().iter().all(|p| p.leader() >= 0 && p.error().is_none())))
}

fn wait_for_partitions(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let consumer: BaseConsumer = client_config(bootstrap).create()?;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    loop {
        let last = partitions_with_leaders(&consumer, topic);
        if let Ok((n, true)) = last
            && i32::try_from(n)? == partitions
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("topic {topic:?} has no leader for all {partitions} partitions after {REQUEST_TIMEOUT:?}: {last:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A record to produce.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// The partition; `None`: librdkafka's default partitioner (by key hash, or sticky without key).
    pub partition: Option<i32>,
    /// Milliseconds since the epoch; `None`: the time of sending.
    pub timestamp: Option<i64>,
}

impl Record {
    /// A record with this value and nothing else.
    pub fn value(value: impl Into<Vec<u8>>) -> Self {
        Self { value: Some(value.into()), ..Self::default() }
    }

    #[must_use]
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    #[must_use]
    pub fn header(mut self, key: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((key.to_owned(), Some(value.into())));
        self
    }

    #[must_use]
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    #[must_use]
    pub fn timestamp(mut self, millis: i64) -> Self {
        self.timestamp = Some(millis);
        self
    }
}

/// A record read back by [`read_all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Milliseconds since the epoch, if the record has a timestamp.
    pub timestamp: Option<i64>,
}

impl ConsumedRecord {
    /// The value as UTF-8 (lossy), `""` for none.
    pub fn value_str(&self) -> String {
        String::from_utf8_lossy(self.value.as_deref().unwrap_or_default()).into_owned()
    }

    /// The value of the first header named `key`.
    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.as_deref())
    }
}

/// A producer context that remembers the first failed delivery.
#[derive(Default)]
pub struct DeliveryTracker {
    first_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            let mut first = self.first_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            first.get_or_insert_with(|| {
                format!("{error} (topic {}, partition {})", message.topic(), message.partition())
            });
        }
    }
}

impl DeliveryTracker {
    /// The first delivery failure since the last call, if any.
    pub fn take_error(&self) -> Option<String> {
        self.first_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

/// Enqueues `record` for `topic`, serving the producer's queue while it is full.
fn send(producer: &BaseProducer<DeliveryTracker>, topic: &str, record: &Record) -> KafkaResult<()> {
    let headers = (!record.headers.is_empty()).then(|| {
        record
            .headers
            .iter()
            .fold(OwnedHeaders::new(), |h, (key, value)| h.insert(Header { key, value: value.as_deref() }))
    });
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let mut base: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
        base.key = record.key.as_deref();
        base.payload = record.value.as_deref();
        base.partition = record.partition;
        base.timestamp = record.timestamp;
        base.headers = headers.clone();
        match producer.send(base) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) if Instant::now() < deadline => {
                producer.poll(Duration::from_millis(10));
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// Produces `records` to `topic` with an idempotent producer and waits until all are acknowledged.
///
/// # Errors
/// When a record cannot be enqueued or delivered, or the flush times out (60 s).
pub fn produce(bootstrap: &str, topic: &str, records: &[Record]) -> anyhow::Result<()> {
    let producer: BaseProducer<DeliveryTracker> = client_config(bootstrap)
        .set("enable.idempotence", "true")
        .create_with_context(DeliveryTracker::default())
        .context("creating a producer")?;
    for record in records {
        send(&producer, topic, record).with_context(|| format!("producing to {topic:?}"))?;
    }
    producer.flush(IO_TIMEOUT).with_context(|| format!("flushing the records for {topic:?}"))?;
    if let Some(error) = producer.context().take_error() {
        bail!("producing to {topic:?}: {error}");
    }
    Ok(())
}

/// A transactional producer (`transactional.id` set, transactions initialized, so any older
/// producer with the same id is fenced). Errors are `rdkafka`'s, so tests can tell a fencing error
/// (librdkafka's local, fatal `RDKafkaErrorCode::Fenced`, raised when the broker answers
/// `PRODUCER_FENCED`) from others.
pub struct TransactionalProducer {
    producer: BaseProducer<DeliveryTracker>,
    transactional_id: String,
}

impl TransactionalProducer {
    /// Creates the producer and initializes transactions (fencing older producers with this id
    /// and aborting their open transaction).
    ///
    /// # Errors
    /// When the producer cannot be created or `init_transactions` fails.
    pub fn new(bootstrap: &str, transactional_id: &str) -> anyhow::Result<Self> {
        Self::with_config(client_config(bootstrap).set("transactional.id", transactional_id))
    }

    /// Like [`TransactionalProducer::new`], from a full client configuration (which must set
    /// `transactional.id`), e.g. with a shorter `transaction.timeout.ms`.
    ///
    /// # Errors
    /// As [`TransactionalProducer::new`].
    pub fn with_config(config: &ClientConfig) -> anyhow::Result<Self> {
        let transactional_id = config.get("transactional.id").context("transactional.id not set")?.to_owned();
        let producer: BaseProducer<DeliveryTracker> =
            config.create_with_context(DeliveryTracker::default()).context("creating a transactional producer")?;
        producer
            .init_transactions(REQUEST_TIMEOUT)
            .with_context(|| format!("init_transactions of {transactional_id:?}"))?;
        Ok(Self { producer, transactional_id })
    }

    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    /// # Errors
    /// `rdkafka`'s, e.g. when the producer was fenced.
    pub fn begin(&self) -> KafkaResult<()> {
        self.producer.begin_transaction()
    }

    /// Enqueues one record into the open transaction.
    ///
    /// # Errors
    /// `rdkafka`'s, e.g. when the producer was fenced.
    pub fn send(&self, topic: &str, record: &Record) -> KafkaResult<()> {
        send(&self.producer, topic, record)
    }

    /// Waits until every enqueued record reached the broker (or failed).
    ///
    /// # Errors
    /// `rdkafka`'s, e.g. a timeout.
    pub fn flush(&self) -> KafkaResult<()> {
        self.producer.flush(REQUEST_TIMEOUT)
    }

    /// Flushes and commits the open transaction.
    ///
    /// # Errors
    /// `rdkafka`'s; a fenced producer's commit fails with a fatal `Fenced` error.
    pub fn commit(&self) -> KafkaResult<()> {
        self.producer.commit_transaction(REQUEST_TIMEOUT)
    }

    /// Aborts the open transaction.
    ///
    /// # Errors
    /// `rdkafka`'s.
    pub fn abort(&self) -> KafkaResult<()> {
        self.producer.abort_transaction(REQUEST_TIMEOUT)
    }

    /// Begins a transaction, sends `records` to `topic` and commits (or, with `commit == false`,
    /// flushes them to the broker and aborts).
    ///
    /// # Errors
    /// The first error of those steps.
    pub fn transaction(&self, topic: &str, records: &[Record], commit: bool) -> KafkaResult<()> {
        self.begin()?;
        for record in records {
            self.send(topic, record)?;
        }
        if commit {
            self.commit()
        } else {
            // Abort after the records reached the broker, so that they are really written (and
            // visible to read_uncommitted readers) rather than purged from the local queue.
            self.flush()?;
            self.abort()
        }
    }

    /// The `rdkafka` producer, for what the methods above do not cover.
    pub fn inner(&self) -> &BaseProducer<DeliveryTracker> {
        &self.producer
    }
}

/// Which records a reader sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// Committed transactions and non-transactional records, up to the last stable offset.
    ReadCommitted,
    /// Everything up to the high watermark, aborted and open transactions included.
    ReadUncommitted,
}

impl Isolation {
    fn config_value(self) -> &'static str {
        match self {
            Self::ReadCommitted => "read_committed",
            Self::ReadUncommitted => "read_uncommitted",
        }
    }
}

/// Reads every record of every partition of `topic` from the beginning up to the end offsets
/// taken when the read starts (the last stable offset for [`Isolation::ReadCommitted`], the high
/// watermark for [`Isolation::ReadUncommitted`]), sorted by partition and offset. Records written
/// after the start are left out, so the answer is deterministic. No consumer group is joined and
/// no offset committed. Under `ReadCommitted`, a transaction left open (by a producer that died
/// without a successor using its `transactional.id`) holds the last stable offset of its
/// partitions back until the broker aborts it after its `transaction.timeout.ms`: records after
/// its first one are not read, even committed ones, as for any Kafka reader.
///
/// # Errors
/// When the topic does not exist, or the end is not reached within 60 s.
pub fn read_all(bootstrap: &str, topic: &str, isolation: Isolation) -> anyhow::Result<Vec<ConsumedRecord>> {
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", "weir-tests-read-all")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation.config_value())
        .create()
        .context("creating a consumer")?;
    let (partitions, _) = partitions_with_leaders(&consumer, topic)?;
    let deadline = Instant::now() + IO_TIMEOUT;
    // End offsets now; librdkafka asks for them with the consumer's isolation level, so a
    // read_committed consumer gets the last stable offset.
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..i32::try_from(partitions)? {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .with_context(|| format!("end offsets of {topic:?} partition {partition}"))?;
        if high > low {
            ends.insert(partition, high);
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment).context("assigning partitions")?;
    let mut records = Vec::new();
    // A partition is done at its end-of-partition event (librdkafka raises it when the fetch
    // position reaches the high watermark, or the last stable offset under read_committed, which
    // lies past commit markers and aborted records that a reader never receives).
    let mut pending: BTreeMap<i32, i64> = ends.clone();
    while !pending.is_empty() {
        if Instant::now() >= deadline {
            bail!(
                "reading {topic:?} ({isolation:?}): partitions {pending:?} (partition: end offset) not read to the end within {IO_TIMEOUT:?}"
            );
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                pending.remove(&partition);
            }
            Some(Err(e)) => return Err(anyhow::Error::new(e).context(format!("reading {topic:?}"))),
            Some(Ok(message)) => {
                let partition = message.partition();
                if message.offset() >= ends.get(&partition).copied().unwrap_or(0) {
                    continue;
                }
                let headers = message
                    .headers()
                    .map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect())
                    .unwrap_or_default();
                records.push(ConsumedRecord {
                    partition,
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec),
                    headers,
                    timestamp: message.timestamp().to_millis(),
                });
            }
        }
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(records)
}

/// The broker shared by the tests of one test binary.
static SHARED_BROKER: std::sync::Mutex<Option<KafkaBroker>> = std::sync::Mutex::new(None);
static SHARED_BOOTSTRAP: std::sync::OnceLock<String> = std::sync::OnceLock::new();

unsafe extern "C" {
    /// The C library's `atexit`: the test harness ends the process with `exit`, which runs it
    /// (statics are never dropped, and the JVM would outlive the tests).
    fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

extern "C" fn stop_shared_broker() {
    let broker = SHARED_BROKER.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    drop(broker);
}

/// The address of a broker shared by all tests of the calling test binary: started at the first
/// call, stopped when the process exits. Tests sharing it use distinct topics (and
/// transactional ids).
///
/// # Panics
/// When the broker cannot start (its jars are installed by `./scripts/setup.sh`; Java 17+).
pub fn shared_bootstrap() -> &'static str {
    SHARED_BOOTSTRAP.get_or_init(|| {
        let broker = KafkaBroker::start().expect("start Kafka (install it with ./scripts/setup.sh)");
        eprintln!("Kafka {} started in {:?}", kafka_version(), broker.startup_time());
        let servers = broker.bootstrap_servers();
        *SHARED_BROKER.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(broker);
        // SAFETY: registers a function without arguments that only takes the broker out of its
        // mutex and drops it, as atexit requires.
        let registered = unsafe { atexit(stop_shared_broker) };
        assert_eq!(registered, 0, "atexit failed");
        servers
    })
}
