//! The taskmanager-side connectors: the readers and writers behind
//! [`SourceDescriptor`] and [`SinkDescriptor`].
//!
//! A job plugin only carries descriptors; [`open_source`] and [`open_sink`] turn them into this
//! subtask's [`SourceReader`] or [`SinkWriter`].

pub mod file_sink;
pub mod generator;
pub mod kafka;
pub mod stdout_sink;
pub mod text_source;

use std::sync::Arc;
use weir_api::connectors::{SinkDescriptor, SourceDescriptor};
pub use weir_api::runtime::CheckpointCommitter;
use weir_api::runtime::{SinkWriter, SourceReader, TaskInfo};
use weir_api::{Error, Result};

/// A source's reader and, for sources that report progress when a checkpoint completes (Kafka
/// commits offsets to its consumer group), what does that.
pub struct OpenedSource {
    /// The reader, used by the task thread.
    pub reader: Box<dyn SourceReader>,
    /// Told of every completed checkpoint; `None` for sources with nothing to report.
    pub committer: Option<Arc<dyn CheckpointCommitter>>,
    /// The connector's own metrics (Kafka's lag and commits); `None` for sources without any.
    pub metrics: Option<Arc<dyn ConnectorMetrics>>,
}

impl OpenedSource {
    fn reader(reader: impl SourceReader + 'static) -> Self {
        Self { reader: Box::new(reader), committer: None, metrics: None }
    }
}

/// A connector's metrics, read at scrape time (from any thread).
pub trait ConnectorMetrics: Send + Sync + std::fmt::Debug {
    /// Each metric's name (Flink's, under its operator scope, e.g. `pendingRecords`) and value;
    /// metrics not known yet are left out.
    fn values(&self) -> Vec<(&'static str, f64)>;
}

/// Opens subtask `task.subtask`'s share (of `task.parallelism`) of a taskmanager-side source.
///
/// `now_ms` is the processing-time clock (milliseconds since the epoch) used by rate-limited
/// generators; it is injected so tests can use a fake clock.
///
/// # Errors
/// - [`Error::InvalidJob`] for [`SourceDescriptor::Collection`] and
///   [`SourceDescriptor::TimedEvents`] (the job plugin produces those itself), for
///   `subtask >= parallelism`, and for a generator rate that is not positive.
/// - [`Error::Runtime`] when a text source's path cannot be read, or a Kafka source's brokers
///   cannot be reached or its topics do not exist.
pub fn open_source(
    descriptor: &SourceDescriptor,
    task: &TaskInfo,
    now_ms: impl Fn() -> i64 + Send + 'static,
) -> Result<OpenedSource> {
    let (subtask, parallelism) = (task.subtask, task.parallelism);
    match descriptor {
        SourceDescriptor::Generator { count, rate } => {
            Ok(OpenedSource::reader(generator::GeneratorReader::new(*count, *rate, subtask, parallelism, now_ms)?))
        }
        SourceDescriptor::TextFiles { path } => {
            Ok(OpenedSource::reader(text_source::TextFileReader::open(path, subtask, parallelism)?))
        }
        SourceDescriptor::Kafka(spec) => kafka::source::open(spec, task),
        SourceDescriptor::Collection { .. }
        | SourceDescriptor::TimedEvents { .. }
        | SourceDescriptor::Custom { .. } => Err(Error::InvalidJob(format!(
            "{descriptor:?} is produced by the job plugin and has no taskmanager-side reader"
        ))),
    }
}

/// A sink's writer and, for transactional sinks, its committer.
pub struct OpenedSink {
    /// The writer, used by the task thread.
    pub writer: Box<dyn SinkWriter>,
    /// Commits what `writer` pre-committed, once the checkpoint is complete (or, for
    /// [`FINAL_CHECKPOINT`](weir_api::runtime::FINAL_CHECKPOINT), once the whole job has finished); `None` for non-transactional sinks.
    pub committer: Option<Arc<dyn CheckpointCommitter>>,
}

/// Opens the writer of a sink for subtask `task` (its index, parallelism, job and execution
/// attempt), and its committer for transactional sinks.
///
/// `restored` holds the states the writers' [`SinkWriter::pre_commit`] returned for the
/// checkpoint the job restarts from (this subtask's, or every old subtask's after a change of
/// parallelism; see [`weir_api::runtime::RestoredState::operator_states`]), empty on a fresh
/// start. A text file sink opened with state commits what the states it takes over had pending
/// and discards what was written after them; opened without, it discards whatever an earlier run
/// left; its hidden files carry the attempt, so a task of an older attempt that still runs cannot
/// touch them (see [`file_sink::TextFileSinkWriter`]). The stdout sink is
/// not transactional: it has no committer and ignores `restored`.
///
/// # Errors
/// - [`Error::InvalidJob`] for [`SinkDescriptor::Blackhole`] (blackhole sinks discard records in
///   the plugin and have no writer) and for `task.subtask >= task.parallelism`.
/// - [`Error::Runtime`] when a text sink's directory cannot be created or cleaned up, when a
///   restored pending file cannot be committed, or when `restored` is corrupt.
pub fn open_sink(descriptor: &SinkDescriptor, task: &TaskInfo, restored: &[Vec<u8>]) -> Result<OpenedSink> {
    match descriptor {
        SinkDescriptor::TextFiles { directory } => {
            let writer = file_sink::TextFileSinkWriter::open(directory, task, restored)?;
            let committer: Arc<dyn CheckpointCommitter> = Arc::new(writer.committer());
            Ok(OpenedSink { writer: Box::new(writer), committer: Some(committer) })
        }
        SinkDescriptor::Stdout => {
            Ok(OpenedSink { writer: Box::new(stdout_sink::StdoutSinkWriter::new()), committer: None })
        }
        SinkDescriptor::Kafka(spec) => kafka::sink::open(spec, task, restored),
        SinkDescriptor::Blackhole => {
            Err(Error::InvalidJob("blackhole sinks have no writer: they discard records in the job plugin".into()))
        }
        SinkDescriptor::Custom { name } => Err(Error::InvalidJob(format!(
            "sink {name} is written by the job plugin and has no taskmanager-side writer"
        ))),
    }
}

/// Checks that `subtask` is a valid index of `parallelism` subtasks.
fn check_subtask(what: &str, subtask: u32, parallelism: u32) -> Result<()> {
    if subtask >= parallelism {
        return Err(Error::InvalidJob(format!(
            "{what}: subtask {subtask} is out of range for parallelism {parallelism}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskInfo {
        TaskInfo {
            job_id: "0123456789abcdef0123456789abcdef".into(),
            job_name: "job".into(),
            task_name: "sink".into(),
            subtask: 0,
            parallelism: 1,
            max_parallelism: 128,
            attempt: 0,
            heap_state: true,
        }
    }

    #[test]
    fn plugin_side_sources_and_blackhole_are_rejected() {
        for descriptor in [SourceDescriptor::Collection { len: 3 }, SourceDescriptor::TimedEvents { len: 1 }] {
            let err = open_source(&descriptor, &task(), || 0).err().map(|e| e.to_string());
            assert!(err.is_some_and(|e| e.starts_with("invalid job")));
        }
        let err = open_sink(&SinkDescriptor::Blackhole, &task(), &[]).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("blackhole")));
    }

    #[test]
    fn opens_generator_and_text_files() {
        let generator = SourceDescriptor::Generator { count: Some(3), rate: None };
        let mut reader = open_source(&generator, &task(), || 0).unwrap().reader;
        let mut out = weir_api::runtime::RawBatch::default();
        reader.read(10, &mut out).unwrap();
        assert_eq!(out.sequence, Some((1, 1, 3)));

        let dir = tempfile::tempdir().unwrap();
        let text = SourceDescriptor::TextFiles { path: dir.path().to_string_lossy().into_owned() };
        assert!(open_source(&text, &task(), || 0).is_ok());
        assert!(open_source(&text, &TaskInfo { subtask: 1, ..task() }, || 0).is_err());
        let sink = SinkDescriptor::TextFiles { directory: dir.path().join("out").to_string_lossy().into_owned() };
        assert!(open_sink(&sink, &task(), &[]).is_ok_and(|opened| opened.committer.is_some()));
        assert!(
            open_sink(&SinkDescriptor::Stdout, &task(), &[b"ignored".to_vec()])
                .is_ok_and(|opened| opened.committer.is_none())
        );
    }
}
