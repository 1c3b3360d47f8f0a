//! Exactly-once delivery: write-ahead epochs, committed in one transaction with a progress marker
//! once their checkpoint completed (see the parent module).

use super::client::{self, Marker, SinkProducer, Topics};
use super::epoch::{Epoch, OutRecord, State, check_header_names, decode_state, encode_state};
use super::{COMMIT_TIMEOUT, Ident, REQUEST_TIMEOUT, base_config, connection_config, invalid, runtime};
use crate::connectors::{CheckpointCommitter, OpenedSink};
use rdkafka::admin::AdminClient;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use weir_api::connectors::kafka::{KafkaSinkSpec, valid_topic};
use weir_api::runtime::{CheckpointId, FINAL_CHECKPOINT, SinkRecords, SinkWriter};
use weir_api::{Error, Result};

/// Epochs closed by the writer and not committed yet, by increasing id; shared with the
/// committer.
type Pending = Arc<Mutex<Vec<Arc<Epoch>>>>;

/// Locks `mutex`; a panic while it was held leaves nothing half-done here (pushes and removals
/// are single operations), so a poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Opens the exactly-once writer and its committer: checks the configuration and the brokers,
/// creates the progress topic if missing, initializes transactions (fencing older instances),
/// then commits what the restored state holds and its marker does not cover (or, on a fresh
/// start, deletes an earlier job's marker).
///
/// # Errors
/// See [`super::open`].
pub(super) fn open(spec: &KafkaSinkSpec, ident: Ident, restored: &[Vec<u8>]) -> Result<OpenedSink> {
    let prefix = spec.transactional_id_prefix.trim();
    if prefix.is_empty() {
        return Err(invalid("exactly-once delivery needs a transactional id prefix (set transactional_id_prefix)"));
    }
    if !valid_topic(&spec.progress_topic) {
        return Err(invalid(format!("'{}' is not a valid progress topic name", spec.progress_topic)));
    }
    let timeout = i32::try_from(spec.transaction_timeout_ms).ok().filter(|t| *t > 0).ok_or_else(|| {
        invalid(format!(
            "the transaction timeout ({} ms) must be between 1 and {} ms",
            spec.transaction_timeout_ms,
            i32::MAX
        ))
    })?;
    if let Some(warning) = weir_api::connectors::kafka::check_transaction_timeout(spec.transaction_timeout_ms, 0) {
        tracing::warn!(job_id = ident.job_id.as_str(), subtask = ident.subtask, "{warning}");
    }
    let transactional_id = format!("{prefix}-{}", ident.subtask);
    let mut config = base_config(spec, &ident);
    config.set("transaction.timeout.ms", timeout.to_string()).set("enable.idempotence", "true");
    let (own, others) = restored_shares(restored, prefix, &ident)?;
    let producer = client::producer(config.clone().set("transactional.id", &transactional_id), &ident)?;
    let brokers = client::connect(&producer, spec.topic.as_deref(), &ident)?;
    let topics = Topics::new(&producer, spec.topic.as_deref(), &ident)?;
    let connection = connection_config(spec, &ident);
    let admin = client::admin(&connection, &ident)?;
    check_broker_timeout(&admin, &brokers, spec.transaction_timeout_ms, &ident)?;
    let created = client::ensure_progress_topic(&admin, &spec.progress_topic, &ident)?;
    drop(admin);
    // Old subtasks' states this subtask takes over after a change of parallelism: each is
    // committed with its own transactional id (fencing what that id left open), then its
    // producer is closed.
    for state in others {
        let id = state.transactional_id.clone();
        let other = client::producer(config.clone().set("transactional.id", &id), &ident)?;
        other.init_transactions(REQUEST_TIMEOUT).map_err(|e| init_error(&e, &id, &ident))?;
        let marker = if created { None } else { client::read_marker(&connection, &spec.progress_topic, &id, &ident)? };
        let mut transactions = Transactions {
            producer: other,
            ident: ident.clone(),
            transactional_id: id,
            progress_topic: spec.progress_topic.clone(),
            open: false,
            broken: None,
        };
        restore(&mut transactions, state, marker.as_ref())?;
    }
    producer.init_transactions(REQUEST_TIMEOUT).map_err(|e| init_error(&e, &transactional_id, &ident))?;
    let marker =
        if created { None } else { client::read_marker(&connection, &spec.progress_topic, &transactional_id, &ident)? };
    let mut transactions = Transactions {
        producer: producer.clone(),
        ident: ident.clone(),
        transactional_id: transactional_id.clone(),
        progress_topic: spec.progress_topic.clone(),
        open: false,
        broken: None,
    };
    let drop_all = match own {
        None => start_fresh(&mut transactions, marker.as_ref())?,
        Some(state) => restore(&mut transactions, state, marker.as_ref())?,
    };
    if drop_all {
        tracing::warn!(
            job_id = ident.job_id.as_str(),
            subtask = ident.subtask,
            transactional_id,
            "Kafka sink: the progress marker says that this job's whole output was committed (the job finished \
             before; its tail runs again): everything written to this sink subtask is dropped"
        );
    }
    let pending = Pending::default();
    let committer = Committer { pending: Arc::clone(&pending), transactions: Mutex::new(transactions) };
    let writer = ExactlyOnceWriter {
        ident,
        producer,
        topics,
        current: Epoch::default(),
        local_topics: Vec::new(),
        pending,
        transactional_id,
        finished: false,
        drop_all,
        dropped: 0,
    };
    Ok(OpenedSink { writer: Box::new(writer), committer: Some(Arc::new(committer)) })
}

/// Refuses a transaction timeout above the brokers' `transaction.max.timeout.ms` (as the first
/// broker says); warns and goes on when it cannot be read.
fn check_broker_timeout(
    admin: &AdminClient<client::SinkContext>,
    brokers: &[i32],
    timeout_ms: u64,
    ident: &Ident,
) -> Result<()> {
    let read = brokers
        .first()
        .ok_or_else(|| "the brokers listed none".to_owned())
        .and_then(|&broker| client::max_transaction_timeout(admin, broker));
    match read {
        Ok(max) if timeout_ms > max => Err(invalid(format!(
            "the transaction timeout ({timeout_ms} ms) is above the brokers' transaction.max.timeout.ms ({max} ms): \
             lower the sink's transaction_timeout or raise transaction.max.timeout.ms on the brokers"
        ))),
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(
                job_id = ident.job_id.as_str(),
                subtask = ident.subtask,
                "Kafka sink: cannot read the brokers' transaction.max.timeout.ms ({e}); the transaction timeout \
                 ({timeout_ms} ms) is not checked against it"
            );
            Ok(())
        }
    }
}

/// One line for a failed `init_transactions`.
fn init_error(e: &KafkaError, transactional_id: &str, ident: &Ident) -> Error {
    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::InvalidTransactionTimeout) {
        return invalid(format!(
            "the brokers at {} refuse the transaction timeout (above their transaction.max.timeout.ms?): {e}",
            ident.servers
        ));
    }
    runtime(format!(
        "cannot initialize the transactions of transactional id '{transactional_id}' on the brokers at {}: {e}",
        ident.servers
    ))
}

/// The restored states this subtask commits, decoded: its own (transactional id
/// `<prefix>-<subtask>`) and those of old subtasks `j` it takes over after a change of
/// parallelism (`j % parallelism == subtask`; another subtask takes the others).
///
/// # Errors
/// A corrupt state, or one of another transactional id prefix (its markers are that id's).
fn restored_shares(restored: &[Vec<u8>], prefix: &str, ident: &Ident) -> Result<(Option<State>, Vec<State>)> {
    let (mut own, mut others) = (None, Vec::new());
    for bytes in restored {
        let state = decode_state(bytes).map_err(runtime)?;
        let old = state
            .transactional_id
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|subtask| subtask.parse::<u32>().ok())
            .ok_or_else(|| {
                runtime(format!(
                    "the checkpoint's state of this sink was written with transactional id '{}', and this sink's \
                     prefix is '{prefix}' (the prefix changed?): its progress markers are that id's, so it cannot be \
                     restored here",
                    state.transactional_id
                ))
            })?;
        if old == ident.subtask {
            own = Some(state);
        } else if super::takes_over(old, ident) {
            others.push(state);
        }
    }
    Ok((own, others))
}

/// A fresh start: a marker of this job's final commit means its whole output is written
/// (returns `true`: drop everything); another marker is an earlier job's and is deleted.
fn start_fresh(transactions: &mut Transactions, marker: Option<&Marker>) -> Result<bool> {
    let Some(marker) = marker else { return Ok(false) };
    if marker.epoch == FINAL_CHECKPOINT && marker.job_id.as_deref() == Some(transactions.ident.job_id.as_str()) {
        return Ok(true);
    }
    tracing::info!(
        job_id = transactions.ident.job_id.as_str(),
        subtask = transactions.ident.subtask,
        "Kafka sink: deleting the progress marker of an earlier run (epoch {}, job {})",
        marker.epoch,
        marker.job_id.as_deref().unwrap_or("unknown")
    );
    transactions.transact(&[], None, "deleting an earlier run's progress marker")?;
    Ok(false)
}

/// A restore: commits the restored epochs the marker does not cover. Returns whether the whole
/// output is now committed (drop everything from now on).
///
/// A marker of another job (this one started from that job's savepoint) covers that job's
/// epochs, which are the only ones in the restored state; this job then takes the marker over
/// (rewritten with its own id, in the same transaction as the epochs it commits, or alone), so
/// that its own epochs, numbered above the savepoint, are never taken for covered by an earlier
/// run's final marker.
fn restore(transactions: &mut Transactions, state: State, marker: Option<&Marker>) -> Result<bool> {
    let committed = marker.map_or(0, |m| m.epoch);
    let (done, todo): (Vec<Epoch>, Vec<Epoch>) = state.epochs.into_iter().partition(|e| e.id <= committed);
    let records: usize = todo.iter().map(Epoch::len).sum();
    tracing::info!(
        job_id = transactions.ident.job_id.as_str(),
        subtask = transactions.ident.subtask,
        "Kafka sink: restoring; the marker says epochs up to {committed} were committed ({} restored epoch(s) \
         skipped); committing {} epoch(s) of {records} records",
        done.len(),
        todo.len()
    );
    let foreign = marker.is_some_and(|m| m.job_id.as_deref() != Some(transactions.ident.job_id.as_str()));
    let last = todo.last().map(|e| e.id);
    if let Some(last) = last {
        let value = Marker::value(last, &transactions.ident.job_id);
        let epochs: Vec<&Epoch> = todo.iter().collect();
        transactions.transact(&epochs, Some(&value), "the restore's commit")?;
    } else if foreign {
        let covered = done.iter().map(|e| e.id).max().unwrap_or(0);
        let value = Marker::value(covered, &transactions.ident.job_id);
        transactions.transact(&[], Some(&value), "taking over an earlier job's progress marker")?;
    }
    Ok(!foreign && (committed == FINAL_CHECKPOINT || last == Some(FINAL_CHECKPOINT)))
}

/// The transactional producer and what it is in.
struct Transactions {
    producer: SinkProducer,
    ident: Ident,
    transactional_id: String,
    progress_topic: String,
    /// A transaction was begun and neither committed nor aborted.
    open: bool,
    /// Set when the producer failed fatally (fenced): every later transaction fails with it.
    broken: Option<String>,
}

impl Transactions {
    /// Writes `epochs` in order and the marker record (`None`: a tombstone) in one transaction,
    /// and commits it. On failure the transaction is aborted (or, if that fails too, aborted
    /// before the next one begins).
    ///
    /// # Errors
    /// One line naming `what`, the subtask and the transactional id: fenced (fatal: this producer
    /// is done), a record the brokers refuse, a commit that does not finish in
    /// [`COMMIT_TIMEOUT`].
    fn transact(&mut self, epochs: &[&Epoch], marker: Option<&str>, what: &str) -> Result<()> {
        if let Some(broken) = &self.broken {
            return Err(runtime(broken));
        }
        if self.open {
            self.abort(what)?;
        }
        if let Err(e) = self.producer.begin_transaction() {
            return Err(self.fail(&e, what));
        }
        self.open = true;
        for epoch in epochs {
            for (record, headers) in epoch.iter() {
                if let Err(e) = client::send(&self.producer, record, headers) {
                    let message = format!("{what}: {}", e.describe(record.topic, &self.ident));
                    return Err(match e.kafka() {
                        Some(kafka) => self.fail(kafka, &message),
                        None => self.fail_with(message),
                    });
                }
            }
        }
        let marker_record = OutRecord {
            topic: &self.progress_topic,
            partition: Some(0),
            timestamp: None,
            key: Some(self.transactional_id.as_bytes()),
            value: marker.map(str::as_bytes),
        };
        if let Err(e) = client::send(&self.producer, marker_record, std::iter::empty()) {
            let message = format!("{what}: {}", e.describe(&self.progress_topic, &self.ident));
            return Err(match e.kafka() {
                Some(kafka) => self.fail(kafka, &message),
                None => self.fail_with(message),
            });
        }
        if weir_runtime::faults::fires("taskmanager::kafka_sink::commit::crash").is_some() {
            // The records reach the brokers, in a transaction that never commits.
            let _ = self.producer.flush(COMMIT_TIMEOUT);
            eprintln!("fault injection: taskmanager::kafka_sink::commit::crash: aborting the process");
            std::process::abort();
        }
        let deadline = Instant::now() + COMMIT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
            match self.producer.commit_transaction(left) {
                Ok(()) => {
                    self.open = false;
                    return Ok(());
                }
                Err(KafkaError::Transaction(e)) if e.is_retriable() && Instant::now() < deadline => {}
                Err(e) => return Err(self.fail(&e, what)),
            }
        }
    }

    /// Aborts the open transaction.
    fn abort(&mut self, what: &str) -> Result<()> {
        match self.producer.abort_transaction(REQUEST_TIMEOUT) {
            Ok(()) => {
                self.open = false;
                Ok(())
            }
            Err(e) => Err(self.fail(&e, &format!("{what} (aborting the previous transaction)"))),
        }
    }

    /// The error for `error` in `what`: a fatal one breaks the producer for good; otherwise the
    /// open transaction is aborted.
    fn fail(&mut self, error: &KafkaError, what: &str) -> Error {
        let code = error.rdkafka_error_code();
        let fenced = matches!(
            code,
            Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch)
        );
        let fatal = fenced || matches!(error, KafkaError::Transaction(e) if e.is_fatal());
        let (subtask, id) = (self.ident.subtask, &self.transactional_id);
        if fatal {
            let message = if fenced {
                format!(
                    "{what} failed: the producer of subtask {subtask} (transactional id '{id}') was fenced: another \
                     instance of this sink subtask took over (or the transaction outlived its timeout and the \
                     brokers aborted it); this instance cannot commit any more ({error})"
                )
            } else {
                format!(
                    "{what} failed: the producer of subtask {subtask} (transactional id '{id}') failed fatally and \
                     cannot commit any more ({error})"
                )
            };
            self.broken = Some(message.clone());
            return runtime(message);
        }
        let message = format!("{what} of subtask {subtask} (transactional id '{id}') failed: {error}");
        self.fail_with(message)
    }

    /// Aborts the open transaction after a failure described by `message` (which it returns).
    fn fail_with(&mut self, message: String) -> Error {
        if self.open
            && let Err(e) = self.producer.abort_transaction(REQUEST_TIMEOUT)
        {
            tracing::warn!(
                job_id = self.ident.job_id.as_str(),
                subtask = self.ident.subtask,
                "Kafka sink: cannot abort the failed transaction (aborted before the next one): {e}"
            );
            return runtime(message);
        }
        self.open = false;
        runtime(message)
    }
}

/// Commits the writer's epochs once their checkpoint completed; shares them with the writer.
struct Committer {
    pending: Pending,
    /// Commits run one at a time.
    transactions: Mutex<Transactions>,
}

impl CheckpointCommitter for Committer {
    fn commit(&self, checkpoint: CheckpointId) -> Result<()> {
        let mut transactions = lock(&self.transactions);
        // Taken out of the lock, so that the writer's pre-commits do not wait for the brokers.
        let due: Vec<Arc<Epoch>> = lock(&self.pending).iter().filter(|e| e.id <= checkpoint).cloned().collect();
        let Some(last) = due.last().map(|e| e.id) else { return Ok(()) };
        let started = Instant::now();
        let what = if checkpoint == FINAL_CHECKPOINT {
            "the final commit".to_owned()
        } else {
            format!("the commit of checkpoint {checkpoint}")
        };
        let value = Marker::value(last, &transactions.ident.job_id);
        let epochs: Vec<&Epoch> = due.iter().map(|e| &**e).collect();
        transactions.transact(&epochs, Some(&value), &what)?;
        lock(&self.pending).retain(|e| e.id > last);
        tracing::debug!(
            job_id = transactions.ident.job_id.as_str(),
            subtask = transactions.ident.subtask,
            "Kafka sink: committed {} epoch(s) up to {last}, {} records, in {:?}",
            due.len(),
            due.iter().map(|e| e.len()).sum::<usize>(),
            started.elapsed()
        );
        Ok(())
    }
}

/// The exactly-once writer: buffers the current epoch, closes it at each barrier.
struct ExactlyOnceWriter {
    ident: Ident,
    /// The transactional producer, used here only for metadata (topic checks).
    producer: SinkProducer,
    topics: Topics,
    /// The epoch being written.
    current: Epoch,
    /// For each topic of `topics`, its index in `current.topics` (`u32::MAX`: not there yet).
    local_topics: Vec<u32>,
    pending: Pending,
    transactional_id: String,
    finished: bool,
    /// The whole output was committed before: records are dropped.
    drop_all: bool,
    dropped: u64,
}

impl ExactlyOnceWriter {
    /// Closes the current epoch as epoch `id` and hands it to the committer; an empty one only
    /// when `even_empty` (the final epoch, whose marker says that the output is complete).
    fn close(&mut self, id: CheckpointId, even_empty: bool) -> Result<()> {
        if self.current.records.is_empty() && !even_empty {
            return Ok(());
        }
        let mut pending = lock(&self.pending);
        if let Some(last) = pending.last().filter(|last| last.id >= id) {
            return Err(runtime(format!(
                "subtask {}: checkpoint {id} does not follow epoch {} (checkpoint ids must increase)",
                self.ident.subtask, last.id
            )));
        }
        let mut epoch = std::mem::take(&mut self.current);
        epoch.id = id;
        // Kept until committed: give back what growing by doubling left unused.
        epoch.data.shrink_to_fit();
        epoch.records.shrink_to_fit();
        epoch.headers.shrink_to_fit();
        tracing::debug!(
            job_id = self.ident.job_id.as_str(),
            subtask = self.ident.subtask,
            "Kafka sink: epoch {id} closed with {} records ({} bytes)",
            epoch.len(),
            epoch.size()
        );
        pending.push(Arc::new(epoch));
        self.local_topics.fill(u32::MAX);
        Ok(())
    }
}

impl SinkWriter for ExactlyOnceWriter {
    fn write(&mut self, _data: &[u8]) -> Result<()> {
        Err(Error::InvalidJob("Kafka sink: it writes records with keys, not lines".into()))
    }

    fn write_records(&mut self, records: &SinkRecords) -> Result<()> {
        if self.finished {
            return Err(runtime(format!("subtask {} cannot write: the sink is already finished", self.ident.subtask)));
        }
        if self.drop_all {
            self.dropped += records.records.len() as u64;
            return Ok(());
        }
        for record in &records.records {
            let topic = record.topic.map(|t| records.bytes(t));
            let topic = self.topics.resolve(&self.producer, topic, record.partition, &self.ident)? as usize;
            check_header_names(records, record)?;
            if self.local_topics.len() <= topic {
                self.local_topics.resize(topic + 1, u32::MAX);
            }
            if self.local_topics[topic] == u32::MAX {
                self.local_topics[topic] = self.current.topics.len() as u32;
                self.current.topics.push(self.topics.name(topic as u32).to_owned());
            }
            self.current.push(records, record, self.local_topics[topic]);
        }
        Ok(())
    }

    fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<Vec<u8>> {
        if !self.finished {
            self.close(checkpoint, false)?;
        }
        encode_state(&self.transactional_id, &lock(&self.pending)).map_err(runtime)
    }

    fn finish(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        if self.drop_all {
            tracing::info!(
                job_id = self.ident.job_id.as_str(),
                subtask = self.ident.subtask,
                "Kafka sink: finished; {} records dropped (the output was committed before)",
                self.dropped
            );
            return Ok(());
        }
        self.close(FINAL_CHECKPOINT, true)
    }
}
