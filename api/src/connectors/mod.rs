//! Descriptors of the built-in connectors. A job plugin carries only these descriptions; the
//! connectors themselves (file IO, generators, Kafka) run in the taskmanager.

pub mod kafka;

use serde::{Deserialize, Serialize};

/// Where a source's records come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SourceDescriptor {
    /// Sequence numbers `1..=count` (unbounded when `count` is `None`), split across subtasks by
    /// stride: subtask `i` of `n` produces `1 + i, 1 + i + n, ...`. `rate` caps the events per
    /// second over all subtasks.
    Generator {
        /// Number of events; `None` for an unbounded generator.
        count: Option<u64>,
        /// Events per second over all subtasks; `None` for as fast as possible.
        rate: Option<f64>,
    },
    /// The lines of a text file, or of every regular file in a directory (sorted by name, not
    /// recursive), split across subtasks by file. Line terminators (`\n`, `\r\n`) are removed.
    TextFiles {
        /// A file or a directory.
        path: String,
    },
    /// An in-memory collection carried by the job itself; subtask `i` of `n` emits elements
    /// `i, i + n, ...`.
    Collection {
        /// Number of elements.
        len: usize,
    },
    /// A scripted sequence of records, watermarks and pauses carried by the job, for tests and
    /// demos of event-time semantics; always parallelism 1.
    TimedEvents {
        /// Number of scripted events.
        len: usize,
    },
    /// Kafka topics, one split per partition (see [`kafka::KafkaSource`]).
    Kafka(kafka::KafkaSourceSpec),
    /// A source the job implements ([`crate::source::SplitSource`]), read in the plugin.
    Custom {
        /// The source's type, for display.
        name: String,
        /// Whether it ends by itself.
        bounded: bool,
    },
}

impl SourceDescriptor {
    /// Whether the records are produced by the taskmanager (as opposed to the job plugin).
    pub fn is_external(&self) -> bool {
        matches!(self, Self::Generator { .. } | Self::TextFiles { .. } | Self::Kafka(_))
    }

    /// Whether its subtasks' positions restore at another parallelism (a savepoint restored
    /// with another `-p`): every new subtask is given every old subtask's position and keeps its
    /// share of the splits (Kafka partitions by the owner formula; the generator's remaining
    /// numbers as arithmetic progressions; text files still to read, with their offsets).
    /// Collections and scripted events restore only at the parallelism they ran with.
    pub fn rescales(&self) -> bool {
        matches!(self, Self::Generator { .. } | Self::TextFiles { .. } | Self::Kafka(_) | Self::Custom { .. })
    }

    /// Whether the source ends by itself.
    pub fn is_bounded(&self) -> bool {
        match self {
            Self::Generator { count, .. } => count.is_some(),
            Self::Kafka(spec) => spec.bounded,
            Self::Custom { bounded, .. } => *bounded,
            _ => true,
        }
    }
}

/// Where a sink's records go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SinkDescriptor {
    /// Exactly-once text files in `directory` (created if missing): subtask `s` commits part
    /// files `part-<s>-<q>.txt` (`q = 0, 1, ...`), one per completed checkpoint that saw records
    /// (one in all without checkpoints). After a restore at a lower parallelism the part files of
    /// the subtasks that are gone stay; at a higher one, subtask `s` numbers on from where the
    /// earlier subtask `s` stopped. With several taskmanagers the directory must be one
    /// filesystem they all share.
    TextFiles {
        /// The output directory.
        directory: String,
    },
    /// Lines on the taskmanager's standard output, prefixed with `subtask> ` as Flink's print sink.
    Stdout,
    /// Discards records (for benchmarks); still runs everything upstream of it.
    Blackhole,
    /// A Kafka topic (see [`kafka::KafkaSink`]).
    Kafka(kafka::KafkaSinkSpec),
    /// A sink the job implements ([`crate::sink::SinkFunction`]), written in the plugin, at
    /// least once.
    Custom {
        /// The sink's type, for display.
        name: String,
    },
}

impl SinkDescriptor {
    /// Whether its subtasks' state (pending commits) restores at another parallelism: every new
    /// subtask is given every old subtask's state, and subtask `i` of `n` commits what old subtask
    /// `j` left pending when `j % n == i` (Kafka: with old subtask `j`'s transactional id; text
    /// files: the part files of index `j` for `j >= n`). Every sink rescales.
    pub fn rescales(&self) -> bool {
        true
    }
}
