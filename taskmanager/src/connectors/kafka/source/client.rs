//! librdkafka clients of the source: their configuration (the job's properties over Weir's
//! defaults, with the settings the source must control refused), and a context that logs through
//! `tracing` with the job and subtask, and tracks the first failed delivery of a producer.

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::ProducerContext;
use rdkafka::{Message, TopicPartitionList};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use weir_api::connectors::kafka::KafkaSourceSpec;
use weir_api::{Error, Result};

/// Consumer properties the source sets itself, and why a job may not set them.
const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set the source's bootstrap servers instead"),
    ("metadata.broker.list", "set the source's bootstrap servers instead"),
    ("group.id", "set the source's group id instead"),
    ("isolation.level", "set the source's isolation instead"),
    ("enable.auto.commit", "offsets live in checkpoints and are committed when a checkpoint completes"),
    ("auto.commit.enable", "offsets live in checkpoints and are committed when a checkpoint completes"),
    ("enable.auto.offset.store", "offsets live in checkpoints and are committed when a checkpoint completes"),
    ("auto.offset.reset", "the source resolves its starting offsets itself"),
    ("enable.partition.eof", "the source tracks the end of bounded partitions itself"),
];

/// Who a client works for, for its log lines.
#[derive(Debug, Clone)]
pub(crate) struct Owner {
    /// The job id.
    pub(crate) job: String,
    /// The subtask.
    pub(crate) subtask: u32,
}

/// What the source's clients measure for the taskmanager's metrics: the lag of the partitions
/// the consumer reads (from librdkafka's statistics) and the results of offset commits.
#[derive(Debug, Default)]
pub(crate) struct SourceMetrics {
    /// The largest and the summed lag (records) over the consumer's partitions, as of the last
    /// statistics (`None` before the first).
    lag: Mutex<Option<(i64, i64)>>,
    commits_succeeded: AtomicU64,
    commits_failed: AtomicU64,
}

impl crate::connectors::ConnectorMetrics for SourceMetrics {
    fn values(&self) -> Vec<(&'static str, f64)> {
        let mut values = vec![
            ("KafkaSourceReader_commitsSucceeded", self.commits_succeeded.load(Ordering::Relaxed) as f64),
            ("KafkaSourceReader_commitsFailed", self.commits_failed.load(Ordering::Relaxed) as f64),
        ];
        if let Some((max, sum)) = *self.lag.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
            values.push(("KafkaSourceReader_KafkaConsumer_records_lag_max", max as f64));
            values.push(("pendingRecords", sum as f64));
        }
        values
    }
}

impl SourceMetrics {
    /// Counts an offset commit that succeeded or failed.
    pub(crate) fn count_commit(&self, succeeded: bool) {
        let counter = if succeeded { &self.commits_succeeded } else { &self.commits_failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the lag of the partitions the reader was assigned: the end
    /// of each (the last stable offset, which `read_committed` reads up to, else the high
    /// watermark) minus the reader's position (the offset after the last record handed to it).
    /// librdkafka's own `consumer_lag` counts from the
    /// consumer group's committed offsets, which only follow checkpoints. While a partition's
    /// end or position is not known yet, the lag stays unknown; with no partition, it is 0.
    pub(crate) fn record_statistics(&self, statistics: &rdkafka::Statistics) {
        let mut lags = Vec::new();
        for (partition, p) in statistics.topics.values().flat_map(|topic| topic.partitions.iter()) {
            // Partitions the reader was assigned; each must be fetching for the lag to be known.
            if *partition < 0 || !p.desired {
                continue;
            }
            if p.fetch_state != "active" {
                return;
            }
            let end = if p.ls_offset >= 0 { p.ls_offset } else { p.hi_offset };
            // Before the first record is handed over: where fetching started (the next offset to
            // fetch, less what waits in the fetch queue).
            let position = if p.app_offset >= 0 { p.app_offset } else { p.next_offset - p.fetchq_cnt };
            if end < 0 || position < 0 {
                return;
            }
            lags.push((end - position).max(0));
        }
        let max = lags.iter().copied().max().unwrap_or(0);
        let sum = lags.iter().fold(0i64, |sum, lag| sum.saturating_add(*lag));
        *self.lag.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((max, sum));
    }
}

/// The context of the source's clients: librdkafka's log and errors go to `tracing` with the job
/// and subtask; commit results are logged and counted; statistics update the lag; the first
/// failed delivery is kept.
pub(crate) struct ClientLog {
    owner: Owner,
    delivery_error: Mutex<Option<String>>,
    metrics: Option<Arc<SourceMetrics>>,
}

impl ClientLog {
    pub(crate) fn new(owner: Owner) -> Self {
        Self { owner, delivery_error: Mutex::new(None), metrics: None }
    }

    /// A context that records what it learns in `metrics`.
    pub(crate) fn measuring(owner: Owner, metrics: Arc<SourceMetrics>) -> Self {
        Self { owner, delivery_error: Mutex::new(None), metrics: Some(metrics) }
    }

    /// The first delivery failure since the last call.
    pub(crate) fn take_delivery_error(&self) -> Option<String> {
        self.delivery_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

impl ClientContext for ClientLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let (job_id, subtask) = (self.owner.job.as_str(), self.owner.subtask);
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => tracing::warn!(job_id, subtask, "Kafka source: librdkafka {fac}: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(job_id, subtask, "Kafka source: librdkafka {fac}: {message}");
            }
            RDKafkaLogLevel::Debug => tracing::debug!(job_id, subtask, "Kafka source: librdkafka {fac}: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let (job_id, subtask) = (self.owner.job.as_str(), self.owner.subtask);
        tracing::warn!(job_id, subtask, "Kafka source: librdkafka: {error}: {reason}");
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Some(metrics) = &self.metrics {
            metrics.record_statistics(&statistics);
        }
    }
}

impl ConsumerContext for ClientLog {
    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, offsets: &TopicPartitionList) {
        let (job_id, subtask) = (self.owner.job.as_str(), self.owner.subtask);
        match result {
            Ok(()) => {
                tracing::debug!(job_id, subtask, "Kafka source: committed offsets of {} partitions", offsets.count())
            }
            Err(e) => tracing::warn!(
                job_id,
                subtask,
                "Kafka source: committing offsets to the consumer group failed (they only inform lag tools; the job's \
                 position is in its checkpoints): {e}"
            ),
        }
    }
}

impl ProducerContext for ClientLog {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            let mut first = self.delivery_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            first.get_or_insert_with(|| {
                format!("{error} (topic {}, partition {})", message.topic(), message.partition())
            });
        }
    }
}

/// The configuration of the source's consumer: Weir's defaults, then the job's properties, then
/// the settings the source controls.
///
/// # Errors
/// [`Error::InvalidJob`] (one line) when the job sets a property the source controls, or the
/// bootstrap servers are empty.
pub(crate) fn consumer_config(
    spec: &KafkaSourceSpec,
    group_id: &str,
    owner: &Owner,
    service: &str,
) -> Result<ClientConfig> {
    let mut config = base_config(spec, owner, service)?;
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // The consumer's lag for the taskmanager's metrics (librdkafka's statistics).
        .set("statistics.interval.ms", spec.properties.get("statistics.interval.ms").map_or("5000", String::as_str))
        .set(
            "isolation.level",
            match spec.isolation {
                weir_api::connectors::kafka::Isolation::ReadCommitted => "read_committed",
                weir_api::connectors::kafka::Isolation::ReadUncommitted => "read_uncommitted",
            },
        );
    Ok(config)
}

/// The configuration of the dead-letter producer: Weir's defaults, the job's properties
/// (security settings apply to producers too; consumer-only ones are ignored by librdkafka),
/// idempotence so that retries write no duplicates.
///
/// # Errors
/// As [`consumer_config`].
pub(crate) fn producer_config(spec: &KafkaSourceSpec, owner: &Owner, service: &str) -> Result<ClientConfig> {
    let mut config = base_config(spec, owner, service)?;
    config.set("enable.idempotence", "true");
    if !spec.properties.contains_key("client.id") {
        config.set("client.id", format!("weir-{}-dead-letters-{}", short(&owner.job), owner.subtask));
    }
    Ok(config)
}

/// Weir's default for librdkafka's `fetch.queue.backoff.ms` (see [`base_config`]).
const FETCH_QUEUE_BACKOFF_MS: &str = "10";

fn short(job: &str) -> &str {
    job.get(..8).unwrap_or(job)
}

fn base_config(spec: &KafkaSourceSpec, owner: &Owner, service: &str) -> Result<ClientConfig> {
    if spec.bootstrap_servers.trim().is_empty() {
        return Err(Error::InvalidJob(format!("{service}: bootstrap servers are missing")));
    }
    let mut config = ClientConfig::new();
    // Warnings too (offset resets when an offset left the log), not only errors: they go to
    // `tracing` through the context, whatever the `log` crate's level.
    config.set_log_level(RDKafkaLogLevel::Warning);
    config.set("client.id", format!("weir-{}-source-{}", short(&owner.job), owner.subtask));
    // librdkafka stops fetching a partition for `fetch.queue.backoff.ms` (1 s by default) once
    // its local queue holds `queued.min.messages`; the source drains that queue in milliseconds,
    // so the default idles it most of the time (measured: 0.29 M records/s read alone instead of
    // 0.68 M, BENCHMARKS.md "Kafka"). A job's own value still wins.
    config.set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
    for (key, value) in &spec.properties {
        if let Some((_, why)) = RESERVED.iter().find(|(reserved, _)| reserved == key) {
            return Err(Error::InvalidJob(format!("{service}: the property '{key}' is set by the source ({why})")));
        }
        config.set(key, value);
    }
    config.set("bootstrap.servers", spec.bootstrap_servers.trim());
    Ok(config)
}

/// The error for a client librdkafka refused to create: a property it does not know or whose
/// value it refuses (the job's mistake), else a runtime failure.
pub(crate) fn creation_error(e: &KafkaError, service: &str, what: &str) -> Error {
    match e {
        KafkaError::ClientConfig(_, description, key, value) => Error::InvalidJob(format!(
            "{service}: librdkafka refuses the property '{key}' = '{value}': {}",
            description.trim_end_matches('.')
        )),
        KafkaError::ClientCreation(message) => Error::InvalidJob(format!(
            "{service}: librdkafka cannot create the {what}: {}",
            message.trim_end_matches('.')
        )),
        other => Error::runtime(service, format!("cannot create the {what}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_api::connectors::kafka::{Isolation, KafkaTopics, MalformedPolicy, StartingOffsets};

    fn spec(properties: &[(&str, &str)]) -> KafkaSourceSpec {
        KafkaSourceSpec {
            bootstrap_servers: " b:9092 ".into(),
            topics: KafkaTopics::List(vec!["bids".into()]),
            group_id: None,
            starting_offsets: StartingOffsets::Earliest,
            bounded: false,
            discovery_interval_ms: None,
            isolation: Isolation::ReadCommitted,
            malformed: MalformedPolicy::Fail,
            properties: properties.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    fn owner() -> Owner {
        Owner { job: "0123456789abcdef".into(), subtask: 3 }
    }

    #[test]
    fn the_consumer_fetches_again_soon_after_its_queue_drained_unless_the_job_says_otherwise() {
        let config = consumer_config(&spec(&[]), "g", &owner(), "s").unwrap();
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(config.get("bootstrap.servers"), Some("b:9092"));
        assert_eq!(config.get("client.id"), Some("weir-01234567-source-3"));
        assert_eq!(config.get("isolation.level"), Some("read_committed"));
        let config = consumer_config(&spec(&[("fetch.queue.backoff.ms", "500")]), "g", &owner(), "s").unwrap();
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("500"));
    }

    #[test]
    fn properties_the_source_controls_are_refused_in_one_line() {
        let error = consumer_config(&spec(&[("group.id", "x")]), "g", &owner(), "source 'bids'").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("source 'bids'") && message.contains("'group.id'"), "{message}");
        assert_eq!(message.lines().count(), 1);
    }
}
