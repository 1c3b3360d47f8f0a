//! The Kafka sink writer (librdkafka through `rdkafka`), in the three delivery modes of
//! [`Delivery`].
//!
//! # Exactly once: write-ahead epochs
//!
//! librdkafka cannot resume a transaction another producer opened (Flink's trick), so a
//! transaction is opened only when a checkpoint has completed, and written in one go:
//!
//! - Records written between two barriers form an **epoch**, buffered in memory (one arena per
//!   epoch: topics, keys, values and headers back to back). [`SinkWriter::pre_commit`] at barrier
//!   `n` closes the epoch as epoch `n` and returns the writer's state: every epoch not known to be
//!   committed, with its records (postcard, versioned). [`SinkWriter::finish`] closes the last
//!   epoch as [`FINAL_CHECKPOINT`] (even an empty one: its marker says that the whole output was
//!   committed).
//! - The committer's `commit(n)` (once checkpoint `n` completed) writes every pending epoch
//!   `<= n`, in order, in **one transaction** of the producer with `transactional.id`
//!   `<prefix>-<subtask>`, together with a **progress marker** in the compacted progress topic
//!   (partition 0, key = the transactional id, value = `"<highest epoch> <job id>"` as text), and
//!   commits. A commit with nothing pending does nothing.
//! - **Restore** from a checkpoint's state: `init_transactions` (fences an older instance with
//!   the same transactional id and aborts what it left open), read this id's newest marker with
//!   `read_committed`, drop the restored epochs `<=` the marker (committed before), and write the
//!   others in one transaction with a new marker: their checkpoint completed, so they must
//!   become visible, whether or not the old instance got to commit them. A crash at any point
//!   therefore gives exactly-once output for `read_committed` readers.
//! - A marker of [`FINAL_CHECKPOINT`] means that the job's whole output was committed (the job
//!   finished, and the jobmanager died before recording it; the job reruns its tail): from then
//!   on the writer drops everything it is given. A **fresh start** (no restored state) of the same
//!   job that finds such a marker does the same; a fresh start that finds any other marker (an
//!   earlier job with this prefix) deletes it (a tombstone, in a transaction), so that it cannot
//!   hide this job's epochs from a later restore.
//! - **Memory:** every epoch not committed yet stays in memory and in every checkpoint until its
//!   commit succeeds: about one checkpoint interval of the subtask's output (more while commits
//!   fail). A job without checkpoints buffers its whole output until the end.
//! - **Zombies:** a subtask of an older attempt that still runs is fenced by its successor's
//!   `init_transactions`: its commits fail (one line naming the transactional id).
//! - **The transaction timeout:** the transaction is open only during a commit, which writes
//!   about one checkpoint interval of output; see [`weir_api::connectors::kafka::check_transaction_timeout`] for the warning
//!   the jobmanager can give at submission (the writer does not know the interval). At open, a
//!   `transaction_timeout_ms` above the brokers' `transaction.max.timeout.ms` is refused.
//! - **Limits:** the transactional id must be unique to the sink subtask in the cluster (another
//!   job with the same prefix fences this one and overwrites its markers). A restore that falls
//!   back past a checkpoint newer than the last commit (a corrupt checkpoint discarded) writes
//!   the output after that checkpoint again: Kafka cannot take back committed records. A
//!   checkpoint's state can only be restored by the same transactional id (same prefix and
//!   subtask index). An open transaction of a subtask that no longer exists (the parallelism was
//!   lowered) holds `read_committed` readers of its partitions back until the brokers abort it
//!   after `transaction_timeout_ms`.
//!
//! # At least once, none
//!
//! Records are produced as they come (a librdkafka producer with its own polling thread).
//! At-least-once flushes at every barrier (every record acknowledged by the brokers) and fails the
//! pre-commit, so the checkpoint is declined, if a delivery failed; it enables idempotence unless
//! the job's properties say otherwise. None waits for nothing but flushes at the end. In both, a
//! failed delivery fails the next write, pre-commit or finish (never lost silently). A restored
//! exactly-once state (the delivery was changed from a savepoint) is written again, at least once.
//!
//! # Topics and records
//!
//! A record goes to its own topic, else to the sink's; a record with neither fails the write.
//! Each topic is checked once, when first seen (it must exist, unless the brokers create topics
//! automatically), and an explicit partition must exist. Keys, values, headers, partitions and
//! timestamps are the record's. The job's `properties` are passed to every client (security
//! settings) and override the sink's defaults, except what the delivery mode needs
//! (`transactional.id`, `enable.idempotence`, `transaction.timeout.ms` for exactly-once), which
//! is refused with one line.
//!
//! # Fault injection
//!
//! With the `failpoints` feature, point `taskmanager::kafka_sink::commit::crash` aborts the process
//! during a commit: after the transaction's records reached the brokers, before it commits.

mod client;
mod epoch;
mod plain;
mod transactional;

use crate::connectors::OpenedSink;
use rdkafka::ClientConfig;
use std::time::Duration;
use weir_api::connectors::kafka::{Delivery, KafkaSinkSpec};
use weir_api::runtime::TaskInfo;
use weir_api::{Error, Result};

/// Service name in this sink's runtime errors.
const SERVICE: &str = "Kafka sink";
/// How long the brokers may take to answer the first metadata request (reachability, a topic).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of one administrative request: topic creation, configuration, `init_transactions`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a commit may take (its records written and acknowledged, and the commit itself).
pub const COMMIT_TIMEOUT: Duration = Duration::from_millis(weir_api::connectors::kafka::COMMIT_ALLOWANCE_MS);
/// How long a flush (at-least-once pre-commit, finish) may take.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a record may wait for room in the producer's queue.
const QUEUE_FULL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long reading a progress marker may take, including waiting for transactions of other
/// subtasks open in the progress topic to end.
const PROGRESS_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Opens subtask `task.subtask`'s writer of a Kafka sink, and for exactly-once delivery its
/// committer (see the module documentation). `restored` holds the states the writers'
/// [`pre_commit`](weir_api::runtime::SinkWriter::pre_commit) returned for the checkpoint the job
/// restarts from: this subtask's own, or after a change of parallelism every old subtask's, of
/// which it commits those of the old subtasks it takes over ([`takes_over`]); empty on a fresh
/// start.
///
/// # Errors
/// One line each:
/// - [`Error::InvalidJob`] (the job cannot run as written): a property the delivery mode controls,
///   a property librdkafka refuses, a transaction timeout above the brokers' maximum, no
///   transactional id prefix or progress topic for exactly-once, `subtask >= parallelism`.
/// - [`Error::Runtime`]: the brokers cannot be reached within 10 s (naming them), the sink's topic
///   does not exist, the progress topic cannot be created or read, `init_transactions` or the
///   restore's transaction fails, `restored` is corrupt or of another transactional id.
pub fn open(spec: &KafkaSinkSpec, task: &TaskInfo, restored: &[Vec<u8>]) -> Result<OpenedSink> {
    super::super::check_subtask(SERVICE, task.subtask, task.parallelism)?;
    check_properties(spec)?;
    let ident = Ident {
        job_id: task.job_id.clone(),
        subtask: task.subtask,
        parallelism: task.parallelism,
        servers: spec.bootstrap_servers.clone(),
    };
    match spec.delivery {
        Delivery::ExactlyOnce => transactional::open(spec, ident, restored),
        Delivery::AtLeastOnce | Delivery::None => plain::open(spec, ident, restored),
    }
}

/// Whether the subtask `ident` commits what old subtask `old` left pending, restored at another
/// parallelism: old subtask `j` is taken over by subtask `j % parallelism` (its own index when
/// the parallelism grew), so each old state is committed exactly once.
fn takes_over(old: u32, ident: &Ident) -> bool {
    old % ident.parallelism.max(1) == ident.subtask
}

/// Who a sink subtask is, for errors and logs.
#[derive(Debug, Clone)]
struct Ident {
    job_id: String,
    subtask: u32,
    parallelism: u32,
    /// The bootstrap servers, named in errors.
    servers: String,
}

/// A runtime error of this sink.
fn runtime(message: impl std::fmt::Display) -> Error {
    Error::runtime(SERVICE, message)
}

/// An error in the job's definition of this sink (retrying cannot help).
fn invalid(message: impl std::fmt::Display) -> Error {
    Error::InvalidJob(format!("{SERVICE}: {message}"))
}

/// Refuses job properties that override what the sink controls, and settings it cannot use.
fn check_properties(spec: &KafkaSinkSpec) -> Result<()> {
    let exactly_once = spec.delivery == Delivery::ExactlyOnce;
    for (key, value) in &spec.properties {
        let why = match key.as_str() {
            "bootstrap.servers" | "metadata.broker.list" if value != &spec.bootstrap_servers => {
                Some("the sink's bootstrap servers are set with bootstrap_servers(...)".to_owned())
            }
            "transactional.id" if exactly_once => Some(
                "the sink sets it to <transactional id prefix>-<subtask> (set transactional_id_prefix(...))".into(),
            ),
            "transactional.id" => Some("only exactly-once delivery writes transactions".into()),
            "transaction.timeout.ms" if exactly_once && value.trim() != spec.transaction_timeout_ms.to_string() => {
                Some("set it with transaction_timeout(...)".into())
            }
            "enable.idempotence" if exactly_once && !value.trim().eq_ignore_ascii_case("true") => {
                Some("exactly-once delivery needs an idempotent producer".into())
            }
            _ => None,
        };
        if let Some(why) = why {
            return Err(invalid(format!("the producer property {key}={value} cannot be set: {why}")));
        }
    }
    Ok(())
}

/// The configuration every client of the sink starts from: the brokers, a client id, then the
/// job's properties.
fn base_config(spec: &KafkaSinkSpec, ident: &Ident) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &spec.bootstrap_servers).set("client.id", format!("weir-sink-{}", ident.subtask));
    for (key, value) in &spec.properties {
        config.set(key, value);
    }
    config
}

/// Property prefixes passed on to the consumers and admin clients the sink uses besides its
/// producer (connection and security settings); the others are producer settings that those
/// clients would only warn about.
const CONNECTION_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "client.",
    "security.",
    "sasl.",
    "ssl.",
    "socket.",
    "broker.",
    "connections.",
    "reconnect.",
    "retry.backoff",
    "metadata.",
    "topic.metadata.",
    "api.version",
    "debug",
    "log_level",
];

/// [`base_config`] without producer-only properties, for the consumers and admin clients.
fn connection_config(spec: &KafkaSinkSpec, ident: &Ident) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &spec.bootstrap_servers).set("client.id", format!("weir-sink-{}", ident.subtask));
    for (key, value) in &spec.properties {
        if CONNECTION_PROPERTIES.iter().any(|p| key.starts_with(p)) {
            config.set(key, value);
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spec(delivery: Delivery, properties: &[(&str, &str)]) -> KafkaSinkSpec {
        KafkaSinkSpec {
            bootstrap_servers: "b:9092".into(),
            topic: Some("out".into()),
            delivery,
            transactional_id_prefix: "p".into(),
            progress_topic: "p.progress".into(),
            transaction_timeout_ms: 60_000,
            properties: properties.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn properties_the_delivery_mode_controls_are_refused_in_one_line() {
        let refused = |delivery, key, value| {
            check_properties(&spec(delivery, &[(key, value)])).err().map(|e| e.to_string()).unwrap_or_default()
        };
        assert!(refused(Delivery::ExactlyOnce, "transactional.id", "x").contains("transactional.id=x cannot be set"));
        assert!(refused(Delivery::AtLeastOnce, "transactional.id", "x").contains("only exactly-once"));
        assert!(refused(Delivery::ExactlyOnce, "enable.idempotence", "false").contains("idempotent"));
        assert!(refused(Delivery::ExactlyOnce, "transaction.timeout.ms", "1000").contains("transaction_timeout"));
        assert!(refused(Delivery::None, "bootstrap.servers", "other:9092").contains("bootstrap_servers"));
        for (delivery, key, value) in [
            (Delivery::ExactlyOnce, "enable.idempotence", "TRUE"),
            (Delivery::ExactlyOnce, "transaction.timeout.ms", "60000"),
            (Delivery::AtLeastOnce, "enable.idempotence", "false"),
            (Delivery::ExactlyOnce, "compression.type", "lz4"),
            (Delivery::ExactlyOnce, "bootstrap.servers", "b:9092"),
        ] {
            assert_eq!(refused(delivery, key, value), "", "{key}={value} with {delivery:?}");
        }
        assert!(refused(Delivery::ExactlyOnce, "transactional.id", "x").lines().count() == 1);
    }

    #[test]
    fn helper_clients_get_only_connection_properties() {
        let spec = spec(Delivery::ExactlyOnce, &[("security.protocol", "ssl"), ("linger.ms", "5")]);
        let ident = Ident { job_id: "j".into(), subtask: 2, parallelism: 3, servers: spec.bootstrap_servers.clone() };
        let config = connection_config(&spec, &ident);
        assert_eq!(config.get("security.protocol"), Some("ssl"));
        assert_eq!(config.get("linger.ms"), None);
        assert_eq!(config.get("client.id"), Some("weir-sink-2"));
        assert_eq!(base_config(&spec, &ident).get("linger.ms"), Some("5"));
    }
}
