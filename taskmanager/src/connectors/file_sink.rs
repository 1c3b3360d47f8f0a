//! The text file sink: exactly-once part files, made visible by two-phase commit.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use weir_api::runtime::{CheckpointId, FINAL_CHECKPOINT, SinkWriter, TaskInfo};
use weir_api::{Error, Result};

mod names;

use names::{Kind, MARKER_PREFIX, Name, PartName, parse_name};

/// Service name used in this sink's errors.
const SERVICE: &str = "text file sink";
/// Write buffer size.
const BUFFER_SIZE: usize = 256 * 1024;
/// The most subtasks an error lists by number.
const LISTED_SUBTASKS: usize = 8;

/// One subtask's writer of a [`TextFiles`] sink, an exactly-once two-phase-commit sink.
///
/// - The directory is created if missing. Each subtask `s` writes a sequence of part files
///   numbered `q = 0, 1, ...`; in attempt `a` of the job, part `q` is first the in-progress file
///   `.part-<s>-<q>.<a>.inprogress` (hidden), which becomes the pending file
///   `.part-<s>-<q>.<a>.pending` (hidden, durable) when pre-committed, and the committed file
///   `part-<s>-<q>.txt` when committed. Only committed files are output. Part files are created
///   lazily, on the first non-empty write after a pre-commit: there are no empty part files.
/// - [`SinkWriter::pre_commit`] at checkpoint `n` flushes, syncs and closes the in-progress file and
///   renames it to its pending name; it returns the writer's state (the next sequence number and
///   every transaction not committed yet, each as checkpoint, attempt and sequence number), which
///   the checkpoint stores. The [`TextFileSinkCommitter`]'s [`commit`](super::CheckpointCommitter::commit)
///   of `n` (called once checkpoint `n` is complete) renames the pending files of checkpoints
///   `<= n` to their committed names and syncs the directory.
/// - [`SinkWriter::finish`] pre-commits as [`FINAL_CHECKPOINT`]; after it, further writes are
///   errors and another `finish` does nothing. Committing [`FINAL_CHECKPOINT`] makes it visible.
/// - **Ownership of names.** The `<s>` of part file names is an *index*. Subtask `i` of `p`
///   writes new part files under index `i` only, and owns the files of index `i` and of every
///   index `k >= p` with `k % p == i` (written by a run with a higher parallelism: they stay
///   output, and their owner keeps their next sequence number in its state so that the output
///   can be rewound to a checkpoint and a later run at a higher parallelism numbers on).
/// - Opened with restored state (the restart from a checkpoint, or a savepoint at another
///   parallelism, when every old subtask's state is given), the writer takes the entries of the
///   indices it owns: it commits exactly the pending files they list, whichever attempt wrote them
///   (a pending file already committed is fine; a missing one is an error, as its data would be
///   lost), then deletes, for each index it owns, the in-progress files of every attempt, the
///   pending files not listed and the committed files numbered from the index's next sequence
///   number on (written after the checkpoint: the replay writes them again; an owned index the
///   state does not know has next sequence number 0), so output stays exactly-once.
/// - Opened without state (a fresh start), the writer deletes every part file of the indices it
///   owns, committed or not, of every attempt (and those of older layouts without attempt or
///   sequence number). The sink owns these names in its directory; other files are left alone.
///
/// **Zombies.** A task of an older attempt may still run after the job restarted (its
/// taskmanager was cut off from the jobmanager). Hidden names carry the attempt, so such a zombie
/// only ever touches its own attempt's files, never the in-progress or pending files of the
/// attempt that replaced it; and it is never asked to commit (the jobmanager notifies and commits
/// only the current attempt). What it leaves behind is hidden and deleted by the next open.
///
/// **One shared filesystem.** A restarted subtask may run on another taskmanager, and must find
/// there the pending files the checkpoint lists: the directory must be one filesystem that every
/// taskmanager mounts at the same path. Each subtask checks this once per attempt: at open it
/// writes the marker `.weir-sink-<attempt>-<subtask>` (holding the job id), and at its first
/// pre-commit of a checkpoint it reads the markers of the other subtasks of its attempt; a missing
/// one (or one of another job) fails the pre-commit, and so the checkpoint and the task, with one
/// line saying that the directory is not shared. Checkpoints are triggered only once every task of
/// the attempt opened, so the markers exist by then; they are read by name (open, as NFS's
/// close-to-open consistency wants), and the names are new for each attempt, so no client holds a
/// cached failed lookup that could hide a peer's marker. A failed check fails every attempt the
/// same way (the restart strategy decides how often) until the directory is fixed. It costs one
/// small file per subtask and attempt and a read per peer at the first checkpoint, nothing per
/// record. It cannot catch a sink whose subtasks all run on one taskmanager (parallelism 1, say);
/// then a restore on another taskmanager fails instead, naming the missing file and this
/// requirement. Markers are deleted by subtask 0 at open (those of older attempts, and of newer
/// ones that another job wrote), and each subtask's own by its committer at the final commit, when
/// every task of the attempt has finished so no check can still read it (not at `finish`:
/// checkpoints go on after a task finished, and a peer's first check may come later).
///
/// A writer dropped without `finish` leaves its in-progress file behind (hidden, and deleted by
/// the next open).
///
/// [`TextFiles`]: weir_api::connectors::SinkDescriptor::TextFiles
#[derive(Debug)]
pub struct TextFileSinkWriter {
    layout: Arc<Layout>,
    core: Arc<Mutex<Core>>,
    /// The sequence number of the next part file.
    next_seq: u64,
    /// The indices beyond the parallelism this subtask owns, with their next sequence numbers.
    inherited: Vec<(u32, u64)>,
    /// The open in-progress file.
    current: Option<InProgress>,
    finished: bool,
    /// Whether this attempt's subtasks were found to share the directory.
    shared: bool,
}

/// Commits what a [`TextFileSinkWriter`] pre-committed; shares its pending transactions.
#[derive(Debug, Clone)]
pub struct TextFileSinkCommitter {
    layout: Arc<Layout>,
    core: Arc<Mutex<Core>>,
}

/// What the writer and its committer share: the pre-committed transactions not committed yet.
#[derive(Debug, Default)]
struct Core {
    /// In pre-commit order.
    pending: Vec<Pending>,
}

/// A pre-committed transaction: a pending file of the writer's own index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Pending {
    /// The checkpoint it belongs to.
    checkpoint: CheckpointId,
    /// The attempt that wrote it.
    attempt: u32,
    /// Its sequence number.
    seq: u64,
}

/// The first bytes of an encoded [`SinkState`]: its format.
const STATE_FORMAT: [u8; 4] = *b"WFS2";

/// The writer's state stored in a checkpoint (postcard-encoded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SinkState {
    /// [`STATE_FORMAT`].
    format: [u8; 4],
    /// The subtask that took it: its own index.
    subtask: u32,
    /// The sequence number of the next part file of its own index.
    next_seq: u64,
    /// The pending files of its own index, in pre-commit order.
    pending: Vec<Pending>,
    /// The other indices it owned (beyond its parallelism), each with its next sequence number.
    inherited: Vec<(u32, u64)>,
}

impl SinkState {
    fn new(subtask: u32, next_seq: u64, pending: Vec<Pending>, inherited: Vec<(u32, u64)>) -> Self {
        Self { format: STATE_FORMAT, subtask, next_seq, pending, inherited }
    }
}

/// What a writer takes over from the restored states: per index it owns, the next sequence
/// number and the pending files to commit.
#[derive(Debug, Default)]
struct Restored {
    /// Index, next sequence number, pending files.
    indices: Vec<(u32, u64, Vec<Pending>)>,
}

impl Restored {
    fn index(&self, index: u32) -> Option<&(u32, u64, Vec<Pending>)> {
        self.indices.iter().find(|(i, _, _)| *i == index)
    }

    /// Whether pending file `(attempt, seq)` of `index` is listed.
    fn lists(&self, index: u32, attempt: u32, seq: u64) -> bool {
        self.index(index).is_some_and(|(_, _, pending)| pending.iter().any(|p| p.attempt == attempt && p.seq == seq))
    }

    /// The next sequence number of `index` (0 for an index the states do not know).
    fn next_seq(&self, index: u32) -> u64 {
        self.index(index).map_or(0, |(_, next, _)| *next)
    }
}

/// An open in-progress part file.
#[derive(Debug)]
struct InProgress {
    seq: u64,
    path: PathBuf,
    writer: BufWriter<File>,
}

/// The names of one subtask's files, in one attempt.
#[derive(Debug)]
struct Layout {
    directory: PathBuf,
    job_id: String,
    attempt: u32,
    subtask: u32,
    parallelism: u32,
}

/// What [`Layout::commit`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commit {
    /// The pending file is committed (now or before).
    Done,
    /// Neither the pending nor the committed file exists.
    Missing,
}

impl Layout {
    fn committed(&self, index: u32, seq: u64) -> PathBuf {
        self.directory.join(format!("part-{index}-{seq}.txt"))
    }

    fn pending(&self, index: u32, attempt: u32, seq: u64) -> PathBuf {
        self.directory.join(format!(".part-{index}-{seq}.{attempt}.pending"))
    }

    /// The subtask that owns the files of index `index` (see [`TextFileSinkWriter`]).
    fn owner(&self, index: u32) -> u32 {
        if index < self.parallelism { index } else { index % self.parallelism }
    }

    fn in_progress(&self, seq: u64) -> PathBuf {
        self.directory.join(format!(".part-{}-{seq}.{}.inprogress", self.subtask, self.attempt))
    }

    fn marker(&self, subtask: u32) -> PathBuf {
        self.directory.join(format!("{MARKER_PREFIX}{}-{subtask}", self.attempt))
    }

    /// Locks `core`, turning a poisoned lock into an error.
    fn lock<'a>(&self, core: &'a Mutex<Core>) -> Result<MutexGuard<'a, Core>> {
        core.lock().map_err(|_| {
            Error::runtime(
                SERVICE,
                format!(
                    "the sink of subtask {} into {} is unusable: a thread panicked while using it",
                    self.subtask,
                    self.directory.display()
                ),
            )
        })
    }

    /// Renames pending file `(attempt, seq)` of `index` to its committed name. A pending file
    /// that is gone while the committed one exists was committed before: fine.
    fn commit(&self, index: u32, attempt: u32, seq: u64) -> Result<Commit> {
        let pending = self.pending(index, attempt, seq);
        let committed = self.committed(index, seq);
        match std::fs::rename(&pending, &committed) {
            Ok(()) => Ok(Commit::Done),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match committed.try_exists() {
                Ok(true) => Ok(Commit::Done),
                Ok(false) => Ok(Commit::Missing),
                Err(e) => Err(io_error("check", &committed, &e)),
            },
            Err(e) => Err(Error::runtime(
                SERVICE,
                format!("cannot rename {} to {}: {e}", pending.display(), committed.display()),
            )),
        }
    }

    /// The entries of the restored `states` that this subtask owns.
    fn take_over(&self, states: &[SinkState]) -> Restored {
        let mut restored = Restored::default();
        for state in states {
            let own = std::iter::once((state.subtask, state.next_seq, state.pending.clone()));
            let inherited = state.inherited.iter().map(|&(index, next)| (index, next, Vec::new()));
            restored.indices.extend(own.chain(inherited).filter(|(index, _, _)| self.owner(*index) == self.subtask));
        }
        restored
    }

    /// Commits what the restored states list as pending.
    fn commit_restored(&self, restored: &Restored) -> Result<()> {
        for (index, _, pending) in &restored.indices {
            for &Pending { attempt, seq, .. } in pending {
                if self.commit(*index, attempt, seq)? == Commit::Missing {
                    return Err(Error::runtime(
                        SERVICE,
                        format!(
                            "cannot restore the output of subtask {index}: {} (pending in the checkpoint, written by \
                             attempt {attempt}) is missing and {} does not exist, so its data would be lost; the \
                             output directory must be on a filesystem that all taskmanagers share (a restarted \
                             subtask may run on another taskmanager than the one that wrote the file)",
                            self.pending(*index, attempt, seq).display(),
                            self.committed(*index, seq).display()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Deletes what this subtask does not own any more (see [`TextFileSinkWriter`]): with
    /// `restored`, what was written after that checkpoint; without, every part file of the
    /// subtask (and subtask 0 those of subtasks beyond the parallelism). Subtask 0 also deletes
    /// the markers of other attempts. Returns whether any file was deleted.
    fn clean(&self, restored: Option<&Restored>) -> Result<bool> {
        let directory = &self.directory;
        let entries = std::fs::read_dir(directory).map_err(|e| io_error("list", directory, &e))?;
        let mut removed = false;
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", directory, &e))?;
            let name = entry.file_name();
            let doomed = match name.to_str().and_then(parse_name) {
                Some(Name::Part(part)) => self.doomed_part(part, restored),
                Some(Name::Marker { attempt, .. }) => {
                    self.subtask == 0 && self.doomed_marker(attempt, &entry.path())?
                }
                None => false,
            };
            if doomed {
                remove(&entry.path())?;
                removed = true;
            }
        }
        Ok(removed)
    }

    fn doomed_part(&self, part: PartName, restored: Option<&Restored>) -> bool {
        let index = part.subtask;
        if self.owner(index) != self.subtask {
            return false;
        }
        let Some(restored) = restored else { return true };
        match (part.kind, part.seq) {
            (Kind::InProgress, _) => true,
            (Kind::Pending, seq) => !matches!((part.attempt, seq), (Some(a), Some(q)) if restored.lists(index, a, q)),
            (Kind::Committed, Some(seq)) => seq >= restored.next_seq(index),
            (Kind::Committed, None) => false,
        }
    }

    /// Whether subtask 0 deletes the marker at `path` of attempt `attempt`: one of an older
    /// attempt, or of a newer one that another job wrote; never one of this attempt (a peer may
    /// be writing it), nor a newer one of this job (a later attempt runs, and this one is a
    /// zombie).
    fn doomed_marker(&self, attempt: u32, path: &Path) -> Result<bool> {
        if attempt <= self.attempt {
            return Ok(attempt < self.attempt);
        }
        match std::fs::read(path) {
            Ok(job_id) => Ok(job_id != self.job_id.as_bytes()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error("read", path, &e)),
        }
    }

    /// Checks that this subtask sees the markers every other subtask of its attempt wrote at
    /// open, which holds only if the directory is one filesystem they all share.
    fn check_shared(&self) -> Result<()> {
        let mut unseen = Vec::new();
        for subtask in (0..self.parallelism).filter(|&s| s != self.subtask) {
            let marker = self.marker(subtask);
            match std::fs::read(&marker) {
                Ok(job_id) if job_id == self.job_id.as_bytes() => {}
                Ok(_) => unseen.push(subtask),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => unseen.push(subtask),
                Err(e) => return Err(io_error("read", &marker, &e)),
            }
        }
        if unseen.is_empty() {
            return Ok(());
        }
        let mut listed: Vec<String> = unseen.iter().take(LISTED_SUBTASKS).map(u32::to_string).collect();
        if unseen.len() > LISTED_SUBTASKS {
            listed.push(format!("{} more", unseen.len() - LISTED_SUBTASKS));
        }
        Err(Error::runtime(
            SERVICE,
            format!(
                "the output directory {} is not shared by all taskmanagers: subtask {} of attempt {} does not see \
                 the files {MARKER_PREFIX}{}-<subtask> that subtask(s) {} wrote there when they opened; a restarted \
                 subtask may run on another taskmanager and must find the files this one wrote, so put the directory \
                 on a filesystem that every taskmanager mounts at the same path (NFS or another shared filesystem), \
                 or run a single taskmanager",
                self.directory.display(),
                self.subtask,
                self.attempt,
                self.attempt,
                listed.join(", ")
            ),
        ))
    }
}

/// The error for an IO failure on `path`.
fn io_error(action: &str, path: &Path, err: &std::io::Error) -> Error {
    Error::runtime(SERVICE, format!("cannot {action} {}: {err}", path.display()))
}

/// Deletes `path`; a file that is already gone is fine.
fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("delete", path, &e)),
    }
}

impl TextFileSinkWriter {
    /// Opens the writer of subtask `task.subtask` (of `task.parallelism`) in attempt
    /// `task.attempt` of job `task.job_id` of a sink into `directory`, fresh (`restored == None`)
    /// or from the state [`SinkWriter::pre_commit`] returned for the checkpoint the job restarts
    /// from (see the type's documentation for what each does to the files in `directory`), and
    /// writes the subtask's marker.
    ///
    /// # Errors
    /// - [`Error::Runtime`] (with the path) when the directory cannot be created or listed, a file
    ///   cannot be written, deleted or committed, or a pending file listed in `restored` is missing
    ///   (and was not committed either); when `restored` does not decode (corrupt, or written
    ///   before part files were named by attempt).
    /// - [`Error::InvalidJob`] when `task.subtask >= task.parallelism`.
    pub fn open(directory: impl AsRef<Path>, task: &TaskInfo, restored: &[Vec<u8>]) -> Result<Self> {
        super::check_subtask(SERVICE, task.subtask, task.parallelism)?;
        let directory = directory.as_ref();
        std::fs::create_dir_all(directory).map_err(|e| io_error("create directory", directory, &e))?;
        let layout = Arc::new(Layout {
            directory: directory.to_path_buf(),
            job_id: task.job_id.clone(),
            attempt: task.attempt,
            subtask: task.subtask,
            parallelism: task.parallelism,
        });
        let restored = match restored {
            [] => None,
            states => {
                let states = states.iter().map(|bytes| decode_state(bytes, &layout)).collect::<Result<Vec<_>>>()?;
                Some(layout.take_over(&states))
            }
        };
        if let Some(restored) = &restored {
            layout.commit_restored(restored)?;
        }
        let removed = layout.clean(restored.as_ref())?;
        if removed || restored.as_ref().is_some_and(|r| r.indices.iter().any(|(_, _, pending)| !pending.is_empty())) {
            sync_directory(directory)?;
        }
        let marker = layout.marker(layout.subtask);
        std::fs::write(&marker, layout.job_id.as_bytes()).map_err(|e| io_error("write", &marker, &e))?;
        let next_seq = restored.as_ref().map_or(0, |r| r.next_seq(layout.subtask));
        let inherited = restored
            .map(|r| {
                let mut inherited: Vec<(u32, u64)> = r
                    .indices
                    .iter()
                    .filter(|(index, _, _)| *index != layout.subtask)
                    .map(|(index, next, _)| (*index, *next))
                    .collect();
                inherited.sort_unstable();
                inherited
            })
            .unwrap_or_default();
        Ok(Self { layout, core: Arc::default(), next_seq, inherited, current: None, finished: false, shared: false })
    }

    /// The committer of this writer's transactions.
    pub fn committer(&self) -> TextFileSinkCommitter {
        TextFileSinkCommitter { layout: Arc::clone(&self.layout), core: Arc::clone(&self.core) }
    }

    /// Closes the in-progress file, if any, durably as pending file of `checkpoint`.
    fn close_transaction(&mut self, checkpoint: CheckpointId) -> Result<()> {
        let Some(InProgress { seq, path, writer }) = self.current.take() else {
            return Ok(());
        };
        let file = writer.into_inner().map_err(|e| io_error("write", &path, e.error()))?;
        file.sync_data().map_err(|e| io_error("sync", &path, &e))?;
        drop(file);
        let attempt = self.layout.attempt;
        let pending = self.layout.pending(self.layout.subtask, attempt, seq);
        std::fs::rename(&path, &pending).map_err(|e| {
            Error::runtime(SERVICE, format!("cannot rename {} to {}: {e}", path.display(), pending.display()))
        })?;
        self.layout.lock(&self.core)?.pending.push(Pending { checkpoint, attempt, seq });
        Ok(())
    }
}

/// Decodes and checks a restored [`SinkState`].
fn decode_state(bytes: &[u8], layout: &Layout) -> Result<SinkState> {
    let what =
        format!("the sink state of the checkpoint (subtask {} into {})", layout.subtask, layout.directory.display());
    let older = |problem: String| {
        Error::runtime(
            SERVICE,
            format!(
                "{what} is corrupt or of an older format ({problem}); a checkpoint taken before the sink rescaled \
                 cannot be restored: cancel the job and submit it again (a fresh start rewrites the output)"
            ),
        )
    };
    let state: SinkState = postcard::from_bytes(bytes).map_err(|e| older(e.to_string()))?;
    if state.format != STATE_FORMAT {
        return Err(older("an unknown format".into()));
    }
    if let Some(p) = state.pending.iter().find(|p| p.seq >= state.next_seq) {
        return Err(Error::runtime(
            SERVICE,
            format!("{what} is corrupt: pending part {} is not below the next part number {}", p.seq, state.next_seq),
        ));
    }
    Ok(state)
}

impl SinkWriter for TextFileSinkWriter {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.finished {
            return Err(Error::runtime(
                SERVICE,
                format!("cannot write to {}: the sink is already finished", self.layout.directory.display()),
            ));
        }
        if data.is_empty() {
            return Ok(());
        }
        let current = match &mut self.current {
            Some(current) => current,
            None => {
                let seq = self.next_seq;
                let path = self.layout.in_progress(seq);
                let file = File::create(&path).map_err(|e| io_error("create", &path, &e))?;
                self.next_seq += 1;
                self.current.insert(InProgress { seq, path, writer: BufWriter::with_capacity(BUFFER_SIZE, file) })
            }
        };
        current.writer.write_all(data).map_err(|e| io_error("write", &current.path, &e))
    }

    fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<Vec<u8>> {
        if !self.shared && checkpoint != FINAL_CHECKPOINT {
            self.layout.check_shared()?;
            self.shared = true;
        }
        self.close_transaction(checkpoint)?;
        let pending = self.layout.lock(&self.core)?.pending.clone();
        let state = SinkState::new(self.layout.subtask, self.next_seq, pending, self.inherited.clone());
        postcard::to_allocvec(&state).map_err(|e| Error::runtime(SERVICE, format!("cannot encode the sink state: {e}")))
    }

    fn finish(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.close_transaction(FINAL_CHECKPOINT)
    }
}

impl TextFileSinkCommitter {
    /// Renames the pending files of checkpoints `<= checkpoint`.
    fn commit_pending(&self, checkpoint: CheckpointId) -> Result<()> {
        // Rename outside the lock so the task thread's pre-commits do not wait for the file system;
        // a concurrent commit of the same file is fine (`Layout::commit` is idempotent).
        let due: Vec<Pending> =
            self.layout.lock(&self.core)?.pending.iter().copied().filter(|p| p.checkpoint <= checkpoint).collect();
        let mut result = Ok(());
        let mut renamed = 0;
        for p in &due {
            match self.layout.commit(self.layout.subtask, p.attempt, p.seq) {
                Ok(Commit::Done) => renamed += 1,
                Ok(Commit::Missing) => {
                    result = Err(Error::runtime(
                        SERVICE,
                        format!(
                            "cannot commit {}: the pre-committed file is missing (and {} does not exist), its data \
                             would be lost",
                            self.layout.pending(self.layout.subtask, p.attempt, p.seq).display(),
                            self.layout.committed(self.layout.subtask, p.seq).display()
                        ),
                    ));
                    break;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let committed = &due[..renamed];
        if !committed.is_empty() {
            // Until the renames are durable, they stay pending (committing them again is fine).
            sync_directory(&self.layout.directory)?;
            self.layout.lock(&self.core)?.pending.retain(|transaction| !committed.contains(transaction));
        }
        result
    }
}

impl super::CheckpointCommitter for TextFileSinkCommitter {
    fn commit(&self, checkpoint: CheckpointId) -> Result<()> {
        self.commit_pending(checkpoint)?;
        if checkpoint == FINAL_CHECKPOINT {
            // Every task of the attempt finished: no check reads the marker any more. Best effort:
            // a marker left behind is deleted by the next open of subtask 0.
            let marker = self.layout.marker(self.layout.subtask);
            if let Err(e) = remove(&marker) {
                tracing::warn!(subtask = self.layout.subtask, "{e}");
            }
        }
        Ok(())
    }
}

/// Makes renames and deletions in `directory` durable by syncing it (Unix only; elsewhere a
/// no-op).
#[cfg(unix)]
fn sync_directory(directory: &Path) -> Result<()> {
    File::open(directory).and_then(|d| d.sync_all()).map_err(|e| io_error("sync directory", directory, &e))
}

#[cfg(not(unix))]
fn sync_directory(_directory: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests;
