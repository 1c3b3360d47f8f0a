//! The runtime services a task hands its operator chain ([`TaskRuntime`]).

use crate::exchange::ChannelEvent;
use crate::state::heap::HeapKeyedStateBackend;
use crossbeam_channel::{SendTimeoutError, Sender, TrySendError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use weir_api::connectors::{SinkDescriptor, SourceDescriptor};
use weir_api::runtime::{
    KeyedStateBackend, LogLevel, RestoredState, SinkWriter, SourceReader, TaskInfo, TaskRuntime, TypedBatch,
};
use weir_api::{Error, Result};
use weir_runtime::TaskId;

/// Counters of one task, readable while it runs (the taskmanager's metrics read them at each
/// scrape). Updated per batch or per wait, never per record.
#[derive(Debug)]
pub struct TaskMetrics {
    /// The job's name and the task's (its chain's) name, for metric labels.
    pub job_name: String,
    /// The task's name.
    pub task_name: String,
    /// When the task was deployed: the base of its time shares.
    pub started: Instant,
    /// Records into the chain.
    pub records_in: AtomicU64,
    /// Records out of the chain.
    pub records_out: AtomicU64,
    /// Serialized bytes received from other taskmanagers' tasks.
    pub bytes_in: AtomicU64,
    /// Serialized bytes sent to tasks on other taskmanagers.
    pub bytes_out: AtomicU64,
    /// Time spent waiting for input (nanoseconds).
    pub idle_ns: AtomicU64,
    /// Time spent waiting for room in an output channel (nanoseconds).
    pub backpressured_ns: AtomicU64,
    /// Whether the task waits for room in an output channel now.
    pub backpressured: AtomicBool,
    /// The watermark of the task's input ([`i64::MIN`]: none yet).
    pub input_watermark: AtomicI64,
    /// The last watermark the task emitted ([`i64::MIN`]: none yet).
    pub output_watermark: AtomicI64,
    /// Whether the task reported RUNNING (else it is deploying).
    pub running: AtomicBool,
    /// Full size of the task's last acknowledged checkpoint, bytes (-1: none yet).
    pub checkpoint_full_bytes: AtomicI64,
    /// Bytes the task wrote for its last acknowledged checkpoint alone (-1: none yet).
    pub checkpoint_incremental_bytes: AtomicI64,
    /// When the time shares were last taken, and the idle and backpressured times then.
    shares_taken: std::sync::Mutex<(Instant, u64, u64)>,
    /// The metrics of the task's source connector (Kafka), once it opened one.
    pub(crate) connector: std::sync::OnceLock<Arc<dyn crate::connectors::ConnectorMetrics>>,
    /// The metrics the job's functions registered, in registration order.
    pub(crate) user: std::sync::Mutex<Vec<RegisteredMetric>>,
    /// The input watermark of each operator of the chain that received one, by operator name,
    /// in the order they first did (a short list: one lock per watermark, never per record).
    pub(crate) operator_watermarks: std::sync::Mutex<Vec<(String, i64)>>,
}

/// A metric a function of the task registered ([`TaskRuntime::register_metric`]).
#[derive(Debug, Clone)]
pub(crate) struct RegisteredMetric {
    /// The operator's name.
    pub(crate) operator: String,
    /// The metric's name.
    pub(crate) name: String,
    /// Its handle (shared with the function).
    pub(crate) metric: weir_api::metrics::UserMetric,
}

impl TaskMetrics {
    /// Keeps a function's metric; refuses a second one of the same name in the same operator.
    pub(crate) fn register_user(
        &self,
        operator: &str,
        name: &str,
        metric: weir_api::metrics::UserMetric,
    ) -> Result<()> {
        let mut user = self.user.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if user.iter().any(|m| m.operator == operator && m.name == name) {
            return Err(Error::InvalidArgument(format!(
                "operator '{operator}' registers the metric '{name}' twice in task '{}'",
                self.task_name
            )));
        }
        user.push(RegisteredMetric { operator: operator.to_owned(), name: name.to_owned(), metric });
        Ok(())
    }

    /// How the task spent its time since this was last called (or since it was deployed): one
    /// lock per heartbeat, not on the data path.
    pub(crate) fn take_time_shares(&self) -> weir_runtime::TimeShares {
        let now = Instant::now();
        let (idle, backpressured) =
            (self.idle_ns.load(Ordering::Relaxed), self.backpressured_ns.load(Ordering::Relaxed));
        let mut taken = self.shares_taken.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (since, idle_then, backpressured_then) = *taken;
        *taken = (now, idle, backpressured);
        let wall = now.duration_since(since).as_nanos().max(1) as f64;
        let share = |ns: u64| ((ns as f64 / wall) * 1000.0).round().min(1000.0) as u16;
        let idle_permille = share(idle.saturating_sub(idle_then));
        let backpressured_permille = share(backpressured.saturating_sub(backpressured_then)).min(1000 - idle_permille);
        weir_runtime::TimeShares {
            busy_permille: 1000 - idle_permille - backpressured_permille,
            idle_permille,
            backpressured_permille,
        }
    }

    /// The counters of a task named `task_name` of job `job_name`, deployed now.
    pub fn new(job_name: &str, task_name: &str) -> Self {
        Self {
            job_name: job_name.to_owned(),
            task_name: task_name.to_owned(),
            started: Instant::now(),
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            idle_ns: AtomicU64::new(0),
            backpressured_ns: AtomicU64::new(0),
            backpressured: AtomicBool::new(false),
            input_watermark: AtomicI64::new(i64::MIN),
            output_watermark: AtomicI64::new(i64::MIN),
            running: AtomicBool::new(false),
            checkpoint_full_bytes: AtomicI64::new(-1),
            checkpoint_incremental_bytes: AtomicI64::new(-1),
            shares_taken: std::sync::Mutex::new((Instant::now(), 0, 0)),
            connector: std::sync::OnceLock::new(),
            user: std::sync::Mutex::default(),
            operator_watermarks: std::sync::Mutex::default(),
        }
    }

    /// Adds the time since `since` to the idle time.
    pub(crate) fn add_idle(&self, since: Instant) {
        self.idle_ns.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

impl Default for TaskMetrics {
    fn default() -> Self {
        Self::new("", "")
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// One output of a task: a sender per consumer subtask (`None` where this producer does not
/// send, as on forward edges).
pub(crate) type OutputChannels = Vec<Option<Sender<ChannelEvent>>>;

/// The [`TaskRuntime`] of one task.
pub(crate) struct TaskContext {
    pub(crate) id: TaskId,
    pub(crate) info: TaskInfo,
    pub(crate) outputs: Vec<OutputChannels>,
    /// Per output and channel: whether the consumer runs in this process.
    pub(crate) local: Vec<Vec<bool>>,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) metrics: Arc<TaskMetrics>,
    /// Where checkpoint acknowledgements go (the jobmanager).
    pub(crate) events: Arc<dyn weir_runtime::TaskEventSink>,
    /// Where and how snapshots are written; `None` when checkpointing is off.
    pub(crate) checkpoints: Option<crate::snapshot::SnapshotWriter>,
    /// The restored state by operator uid, handed out once each.
    pub(crate) restored: std::collections::HashMap<String, RestoredState>,
    /// The job's transactional sinks on this taskmanager, committed on checkpoint completion.
    pub(crate) committers: Arc<crate::snapshot::JobCommitters>,
    /// The job's code: what a committer the plugin made keeps loaded.
    pub(crate) code: Arc<crate::taskmanager::JobResources>,
    /// The job's pending savepoints on this taskmanager.
    pub(crate) savepoints: Arc<crate::savepoint::SavepointTargets>,
    /// The task's RocksDB database when the job uses the RocksDB backend.
    pub(crate) database: Option<crate::state::task_db::TaskDatabase>,
    /// The final snapshot of a task that finished (checkpointing on), for its FINISHED report.
    pub(crate) final_snapshot: Option<weir_runtime::checkpoint::TaskSnapshot>,
    /// The checkpoint the task could not restore because a file of it is missing or corrupt.
    pub(crate) unusable_checkpoint: Option<weir_api::runtime::CheckpointId>,
}

impl TaskContext {
    /// Sends with backpressure: waits while the channel is full, giving up when cancelled. The
    /// wait counts as backpressured time.
    fn send(&self, sender: &Sender<ChannelEvent>, event: ChannelEvent) -> Result<()> {
        let event = match sender.try_send(event) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(event) | TrySendError::Disconnected(event)) => event,
        };
        let waiting = Instant::now();
        self.metrics.backpressured.store(true, Ordering::Relaxed);
        let sent = self.send_waiting(sender, event);
        self.metrics.backpressured.store(false, Ordering::Relaxed);
        self.metrics.backpressured_ns.fetch_add(waiting.elapsed().as_nanos() as u64, Ordering::Relaxed);
        sent
    }

    fn send_waiting(&self, sender: &Sender<ChannelEvent>, mut event: ChannelEvent) -> Result<()> {
        loop {
            match sender.send_timeout(event, Duration::from_millis(50)) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(back)) => {
                    if self.cancel.load(Ordering::Relaxed) {
                        return Err(Error::Cancelled);
                    }
                    event = back;
                }
                Err(SendTimeoutError::Disconnected(_)) => {
                    if self.cancel.load(Ordering::Relaxed) {
                        return Err(Error::Cancelled);
                    }
                    return Err(Error::runtime("exchange", "the downstream task is gone"));
                }
            }
        }
    }

    fn output(&self, output: usize) -> Result<&OutputChannels> {
        self.outputs
            .get(output)
            .ok_or_else(|| Error::runtime("exchange", format!("task {} has no output {output}", self.id)))
    }

    /// Takes this task's part of checkpoint `barrier`: the chain's snapshot (the synchronous
    /// part, which flushes what precedes the barrier), then the barrier to every output; the
    /// snapshot is then written to storage in the background and acknowledged with its handles.
    /// `alignment_ms` is how long the task waited for the barrier on all its inputs.
    ///
    /// A savepoint (its target was prepared on this taskmanager) is canonical and complete
    /// whatever the backend (no native RocksDB files) and goes to the savepoint's directory.
    /// Returns whether the job stops with it (`Some(drain)`), as read before anything was
    /// written: once the acknowledgement is out, the savepoint may complete and its target be
    /// forgotten before the caller looks again.
    pub(crate) fn checkpoint(
        &mut self,
        chain: &mut dyn weir_api::runtime::TaskChain,
        barrier: weir_api::runtime::CheckpointBarrier,
        alignment_ms: u64,
    ) -> Result<Option<bool>> {
        let savepoint = self.savepoints.target(barrier.id);
        let stop = savepoint.as_ref().and_then(|target| target.stop);
        if savepoint.is_some()
            && let Some(db) = &self.database
        {
            db.set_canonical_snapshots(true);
        }
        let snapshot = chain.snapshot(barrier, self);
        if savepoint.is_some()
            && let Some(db) = &self.database
        {
            db.set_canonical_snapshots(false);
        }
        let snapshot = match snapshot {
            Ok(snapshot) => snapshot,
            Err(e) => {
                self.events.checkpoint_declined(self.id, barrier.id, e.to_string());
                return Err(e);
            }
        };
        let database = match self.database.as_mut().filter(|_| savepoint.is_none()) {
            Some(db) => match db.checkpoint(barrier.id) {
                Ok(local) => local.map(|local| crate::snapshot::DatabaseCheckpoint {
                    local,
                    uploads: db.uploads.clone(),
                    instance_id: db.instance_id.clone(),
                }),
                Err(e) => {
                    self.events.checkpoint_declined(self.id, barrier.id, e.to_string());
                    return Err(e);
                }
            },
            None => None,
        };
        self.broadcast_all(|| ChannelEvent::Barrier(barrier))?;
        match (&mut self.checkpoints, savepoint) {
            (Some(writer), Some(target)) => {
                writer.write_savepoint(self.id, snapshot, &target, alignment_ms, self.events.clone());
            }
            (Some(writer), None) => writer.write(self.id, snapshot, database, alignment_ms, self.events.clone()),
            (None, _) => self.events.checkpoint_declined(
                self.id,
                barrier.id,
                "checkpointing is not configured for this job".into(),
            ),
        }
        Ok(stop)
    }

    /// The task's input ended and its outputs are closed: takes its final snapshot (FLIP-147)
    /// for the FINISHED report, so that checkpoints go on without it. `None` when checkpointing
    /// is off, or when the snapshot fails (then logged: checkpoints of the attempt stop, as
    /// without final snapshots; nothing is lost).
    pub(crate) fn take_final_snapshot(&mut self, chain: &mut dyn weir_api::runtime::TaskChain) {
        if self.checkpoints.is_none() {
            return;
        }
        let barrier =
            weir_api::runtime::CheckpointBarrier { id: weir_api::runtime::FINAL_CHECKPOINT, timestamp: now_ms() };
        let written =
            chain.snapshot(barrier, self).map_err(|e| e.to_string()).and_then(|snapshot| match &self.checkpoints {
                Some(writer) => writer.write_final(self.id, snapshot),
                None => Err("checkpointing is off".to_owned()),
            });
        match written {
            Ok(snapshot) => self.final_snapshot = Some(snapshot),
            Err(e) => tracing::warn!(job_id = %self.id.job, task = %self.id, "no final snapshot: {e}"),
        }
    }

    /// Sends `event` (cloned) to every channel of every output.
    pub(crate) fn broadcast_all(&self, event: impl Fn() -> ChannelEvent) -> Result<()> {
        for output in &self.outputs {
            for sender in output.iter().flatten() {
                self.send(sender, event())?;
            }
        }
        Ok(())
    }

    fn broadcast(&self, output: usize, event: impl Fn() -> ChannelEvent) -> Result<()> {
        for sender in self.output(output)?.iter().flatten() {
            self.send(sender, event())?;
        }
        Ok(())
    }
}

impl TaskRuntime for TaskContext {
    fn info(&self) -> &TaskInfo {
        &self.info
    }

    fn processing_time(&self) -> i64 {
        now_ms()
    }

    fn send_batch(&mut self, output: usize, channel: usize, batch: Vec<u8>, records: usize) -> Result<()> {
        let sender = self.output(output)?.get(channel).and_then(Option::as_ref).ok_or_else(|| {
            Error::runtime("exchange", format!("task {} has no channel {channel} on output {output}", self.id))
        })?;
        self.metrics.records_out.fetch_add(records as u64, Ordering::Relaxed);
        self.metrics.bytes_out.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.send(sender, ChannelEvent::Batch(batch))
    }

    fn is_local(&self, output: usize, channel: usize) -> bool {
        self.local.get(output).and_then(|o| o.get(channel)).copied().unwrap_or(false)
    }

    fn send_records(&mut self, output: usize, channel: usize, batch: TypedBatch, records: usize) -> Result<()> {
        if !self.is_local(output, channel) {
            return Err(Error::runtime(
                "exchange",
                format!("typed records for remote channel {channel} of output {output}"),
            ));
        }
        let sender = self.output(output)?.get(channel).and_then(Option::as_ref).ok_or_else(|| {
            Error::runtime("exchange", format!("task {} has no channel {channel} on output {output}", self.id))
        })?;
        self.metrics.records_out.fetch_add(records as u64, Ordering::Relaxed);
        self.send(sender, ChannelEvent::Records(batch))
    }

    fn send_watermark(&mut self, output: usize, watermark: i64) -> Result<()> {
        self.metrics.output_watermark.fetch_max(watermark, Ordering::Relaxed);
        self.broadcast(output, || ChannelEvent::Watermark(watermark))
    }

    fn send_idleness(&mut self, output: usize, idle: bool) -> Result<()> {
        self.broadcast(output, || ChannelEvent::Idle(idle))
    }

    fn keyed_state_backend(&mut self, operator_uid: &str) -> Result<Box<dyn KeyedStateBackend>> {
        let key_groups = self.info.key_groups();
        match self.database.as_mut() {
            Some(database) => Ok(Box::new(database.backend(operator_uid, key_groups)?)),
            None => Ok(Box::new(HeapKeyedStateBackend::new(operator_uid, key_groups))),
        }
    }

    fn open_source(&mut self, source: &SourceDescriptor) -> Result<Box<dyn SourceReader>> {
        let opened = crate::connectors::open_source(source, &self.info, now_ms)?;
        if let Some(metrics) = opened.metrics {
            let _ = self.metrics.connector.set(metrics);
        }
        if let Some(committer) = opened.committer {
            self.committers.add(self.id.attempt, crate::snapshot::CompletionListener::Sink(committer));
        }
        Ok(opened.reader)
    }

    fn open_sink(&mut self, sink: &SinkDescriptor, restored: &[Vec<u8>]) -> Result<Box<dyn SinkWriter>> {
        let opened = crate::connectors::open_sink(sink, &self.info, restored)?;
        if let Some(committer) = opened.committer {
            self.committers.add(self.id.attempt, crate::snapshot::CompletionListener::Sink(committer));
        }
        Ok(opened.writer)
    }

    fn add_committer(&mut self, committer: Arc<dyn weir_api::runtime::CheckpointCommitter>) -> Result<()> {
        let committer = self.code.loaded.plugged(committer);
        self.committers.add(self.id.attempt, crate::snapshot::CompletionListener::Plugin(committer));
        Ok(())
    }

    fn restored_state(&mut self, operator_uid: &str) -> Option<RestoredState> {
        self.restored.remove(operator_uid)
    }

    fn add_records_in(&mut self, records: u64) {
        self.metrics.records_in.fetch_add(records, Ordering::Relaxed);
    }

    fn add_records_out(&mut self, records: u64) {
        self.metrics.records_out.fetch_add(records, Ordering::Relaxed);
    }

    fn log(&self, level: LogLevel, message: &str) {
        let (job_id, task, subtask) = (self.id.job.to_string(), self.info.task_name.as_str(), self.info.subtask);
        match level {
            LogLevel::Error => tracing::error!(job_id, task, subtask, "{message}"),
            LogLevel::Warn => tracing::warn!(job_id, task, subtask, "{message}"),
            LogLevel::Info => tracing::info!(job_id, task, subtask, "{message}"),
            LogLevel::Debug => tracing::debug!(job_id, task, subtask, "{message}"),
        }
    }

    fn register_metric(&self, operator: &str, name: &str, metric: weir_api::metrics::UserMetric) -> Result<()> {
        self.metrics.register_user(operator, name, metric)
    }

    fn operator_input_watermark(&self, operator: &str, watermark: i64) {
        let mut marks = self.metrics.operator_watermarks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match marks.iter_mut().find(|(name, _)| name == operator) {
            Some((_, mark)) => *mark = watermark,
            None => marks.push((operator.to_owned(), watermark)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_shares_cover_the_time_since_they_were_last_taken_and_add_up_to_a_thousand() {
        let metrics = TaskMetrics::new("job", "task");
        let _ = metrics.take_time_shares();
        std::thread::sleep(Duration::from_millis(200));
        metrics.idle_ns.fetch_add(100_000_000, Ordering::Relaxed);
        metrics.backpressured_ns.fetch_add(60_000_000, Ordering::Relaxed);
        let shares = metrics.take_time_shares();
        assert_eq!(shares.busy_permille + shares.idle_permille + shares.backpressured_permille, 1000, "{shares:?}");
        // 200 ms or a little more passed: about half idle, 30 % backpressured.
        assert!((400..=500).contains(&shares.idle_permille), "{shares:?}");
        assert!((240..=300).contains(&shares.backpressured_permille), "{shares:?}");
        // Nothing since: all busy (a task that never waits is busy all the time).
        std::thread::sleep(Duration::from_millis(20));
        let shares = metrics.take_time_shares();
        assert_eq!((shares.idle_permille, shares.backpressured_permille, shares.busy_permille), (0, 0, 1000));
    }
}
