//! Sinks a job implements, with the two delivery guarantees Flink's sinks give:
//!
//! - **at least once** ([`SinkFunction`], Flink's `SinkFunction` with a flush at checkpoints):
//!   everything before a barrier is durable when the barrier passes, so a restore loses
//!   nothing; records after it may be written again;
//! - **exactly once** ([`TwoPhaseCommitSink`], Flink's `TwoPhaseCommittingSink`): records
//!   between two barriers go into one transaction that the barrier *pre-commits* (durable,
//!   invisible) and that becomes visible only once its checkpoint is complete. The runtime
//!   keeps what commits each transaction (its **committables**) in the sink's checkpoint
//!   state, hands them to the sink's [`Committer`] when the checkpoint completes, and commits
//!   them again after a restore, so a crash between completion and commit loses nothing.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use weir_api::prelude::*;
//! use weir_api::runtime::CheckpointId;
//! use weir_api::sink::{Committer, TwoPhaseCommitSink};
//! use std::path::PathBuf;
//!
//! /// Lines into `dir`: each transaction is a hidden file, renamed into view at commit.
//! #[derive(Clone)]
//! struct Files { dir: PathBuf, subtask: u32, attempt: u32, lines: String }
//!
//! #[derive(Serialize, Deserialize)]
//! struct Staged { hidden: PathBuf, visible: PathBuf }
//!
//! struct Rename;
//!
//! impl Committer<Staged> for Rename {
//!     fn commit(&self, staged: &[Staged]) -> weir_api::Result<()> {
//!         for file in staged {
//!             // Idempotent: a file committed before a crash is committed again after it.
//!             if !file.visible.exists() {
//!                 std::fs::rename(&file.hidden, &file.visible).map_err(Error::user)?;
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! impl TwoPhaseCommitSink<String> for Files {
//!     type Committable = Staged;
//!     type Committer = Rename;
//!     fn open(&mut self, ctx: &RuntimeContext<'_>) -> weir_api::Result<()> {
//!         (self.subtask, self.attempt) = (ctx.task_info().subtask, ctx.task_info().attempt);
//!         Ok(())
//!     }
//!     fn write(&mut self, line: String, _timestamp: Option<Timestamp>) -> weir_api::Result<()> {
//!         self.lines.push_str(&line);
//!         self.lines.push('\n');
//!         Ok(())
//!     }
//!     fn pre_commit(&mut self, checkpoint: CheckpointId) -> weir_api::Result<Vec<Staged>> {
//!         if self.lines.is_empty() {
//!             return Ok(Vec::new());
//!         }
//!         let name = format!("{}-{}-{checkpoint}", self.subtask, self.attempt);
//!         let staged = Staged { hidden: self.dir.join(format!(".{name}")), visible: self.dir.join(name) };
//!         std::fs::write(&staged.hidden, std::mem::take(&mut self.lines)).map_err(Error::user)?;
//!         Ok(vec![staged])
//!     }
//!     fn committer(&self) -> Rename {
//!         Rename
//!     }
//! }
//! ```

use crate::error::Result;
use crate::functions::RuntimeContext;
use crate::runtime::CheckpointId;
use crate::time::Timestamp;

/// A sink the job implements, at least once (Flink's `SinkFunction` with `flush` at
/// checkpoints): every record before a checkpoint's barrier is durable once `flush` returns, so
/// a restore from that checkpoint loses nothing; records after it may be written again.
/// Idempotent writes (upserts by key) make that exactly-once in effect. One instance per
/// subtask, cloned from the job's.
pub trait SinkFunction<T>: Clone + Send + Sync + 'static {
    /// Called once per subtask before any record.
    fn open(&mut self, _ctx: &RuntimeContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Writes one record (buffering is allowed: `flush` makes it durable).
    fn write(&mut self, value: T, timestamp: Option<Timestamp>) -> Result<()>;

    /// Makes everything written so far durable: called at every checkpoint barrier and at the
    /// end of the input.
    fn flush(&mut self) -> Result<()>;

    /// Called once per subtask when its task is over (also after a failure: release resources,
    /// do not assume a flush).
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A sink the job implements, exactly once through two-phase commit (see [the module](self)).
/// One instance per subtask, cloned from the job's.
///
/// The contract, for a checkpoint `n`:
/// 1. [`write`](Self::write) adds records to the open transaction;
/// 2. at barrier `n`, [`pre_commit`](Self::pre_commit) closes it: durable, still invisible,
///    and returns what commits it; the runtime stores that in checkpoint `n`;
/// 3. once checkpoint `n` is complete, the subtask's [`Committer`] gets every committable of
///    checkpoints up to `n` not committed yet; at the end of a bounded input, the last
///    transaction is pre-committed as [`FINAL_CHECKPOINT`](crate::runtime::FINAL_CHECKPOINT)
///    and committed when the whole job has finished (after the subtask's task ended);
/// 4. after a failure the job restarts from the last complete checkpoint, and its committables
///    are committed again (some may be already: commits must be idempotent). Transactions
///    pre-committed for later checkpoints, and the one that was open, are never committed:
///    [`open`](Self::open) may clean them up (the task's attempt number, in
///    [`TaskInfo`](crate::runtime::TaskInfo), tells runs apart).
pub trait TwoPhaseCommitSink<T>: Clone + Send + Sync + 'static {
    /// What commits one pre-committed transaction (a staged file, a transaction id). Kept in
    /// checkpoints and savepoints as MessagePack with field names, so it evolves like state
    /// values do (added optional fields, aliases).
    type Committable: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static;

    /// What makes committables visible, on the taskmanager, after their checkpoint completed.
    type Committer: Committer<Self::Committable>;

    /// Called once per subtask before any record.
    fn open(&mut self, _ctx: &RuntimeContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Adds one record to the open transaction.
    fn write(&mut self, value: T, timestamp: Option<Timestamp>) -> Result<()>;

    /// Closes the open transaction at barrier `checkpoint` (or at the end of the input, as
    /// [`FINAL_CHECKPOINT`](crate::runtime::FINAL_CHECKPOINT)): makes it durable and returns its
    /// committables (none when there is nothing to commit). Later records go into a new one.
    fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<Vec<Self::Committable>>;

    /// This subtask's committer, made once after [`open`](Self::open). It lives until the
    /// job's attempt is over on the taskmanager, past the end of the task.
    fn committer(&self) -> Self::Committer;

    /// Called once per subtask when its task is over (also after a failure: release
    /// resources; the open transaction is abandoned).
    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Makes a [`TwoPhaseCommitSink`]'s pre-committed transactions visible. Called from a
/// taskmanager thread, never concurrently for one subtask.
pub trait Committer<C>: Send + Sync + 'static {
    /// Commits `committables`, oldest first. Must be idempotent: after a restore the
    /// committables of the checkpoint restored from are committed again, whether or not they
    /// were before the failure.
    ///
    /// # Errors
    /// A commit that failed: the committables stay pending and are committed again when the
    /// next checkpoint completes (and after a restore). A commit that can never succeed must
    /// not be retried forever by the sink either: report it, and the job fails at its final
    /// commit.
    fn commit(&self, committables: &[C]) -> Result<()>;
}
