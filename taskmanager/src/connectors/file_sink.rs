//! The text file sink: exactly-once part files, made visible by two-phase commit.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use weir_api::runtime::{CheckpointId, FINAL_CHECKPOINT, SinkWriter};
use weir_api::{Error, Result};

/// Service name used in this sink's errors.
const SERVICE: &str = "text file sink";
/// Write buffer size.
const BUFFER_SIZE: usize = 256 * 1024;

/// Subtask `subtask`'s writer of a [`TextFiles`] sink, an exactly-once two-phase-commit sink.
///
/// - The directory is created if missing. Each subtask `s` writes a sequence of part files
///   numbered `q = 0, 1, ...`: the in-progress file `.part-<s>-<q>.txt.inprogress` (hidden), which
///   becomes the pending file `.part-<s>-<q>.txt.pending` (hidden, durable) when pre-committed, and
///   the committed file `part-<s>-<q>.txt` when committed. Only committed files are output. Part
///   files are created lazily, on the first non-empty write after a pre-commit: there are no empty
///   part files.
/// - [`SinkWriter::pre_commit`] at checkpoint `n` flushes, syncs and closes the in-progress file and
///   renames it to its pending name; it returns the writer's state (the next sequence number and
///   every transaction not committed yet), which the checkpoint stores.
///   The [`TextFileSinkCommitter`]'s [`commit`](super::SinkCommitter::commit) of `n` (called once
///   checkpoint `n` is complete) renames the pending files of checkpoints `<= n` to their committed
///   names and syncs the directory.
/// - [`SinkWriter::finish`] pre-commits as [`FINAL_CHECKPOINT`]; after it, further writes are
///   errors and another `finish` does nothing. Committing [`FINAL_CHECKPOINT`] makes it visible.
/// - Opened with restored state (the restart from a checkpoint), the writer commits what the state
///   lists as pending (a pending file already committed is fine; a missing one is an error, as its
///   data would be lost), then deletes this subtask's in-progress files, its pending files the
///   state does not list and its committed files numbered from the state's next sequence number on
///   (written after the checkpoint: the replay writes them again), so output stays exactly-once.
/// - Opened without state (a fresh start), the writer deletes every part file of its subtask,
///   committed or not (and those of the older `part-<s>.txt` layout); subtask 0 also deletes the
///   part files of subtasks `>= parallelism` left by a run with a higher parallelism. The sink owns
///   these names in its directory; other files are left alone.
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
    /// The open in-progress file.
    current: Option<InProgress>,
    finished: bool,
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
    /// `(checkpoint, sequence number)`, in pre-commit order.
    pending: Vec<(CheckpointId, u64)>,
}

/// The writer's state stored in a checkpoint (postcard-encoded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SinkState {
    /// The sequence number of the next part file.
    next_seq: u64,
    /// `(checkpoint, sequence number)` of the pending files, in pre-commit order.
    pending: Vec<(CheckpointId, u64)>,
}

/// An open in-progress part file.
#[derive(Debug)]
struct InProgress {
    seq: u64,
    path: PathBuf,
    writer: BufWriter<File>,
}

/// The names of one subtask's part files.
#[derive(Debug)]
struct Layout {
    directory: PathBuf,
    subtask: u32,
}

impl Layout {
    fn committed(&self, seq: u64) -> PathBuf {
        self.directory.join(format!("part-{}-{seq}.txt", self.subtask))
    }

    fn pending(&self, seq: u64) -> PathBuf {
        self.directory.join(format!(".part-{}-{seq}.txt.pending", self.subtask))
    }

    fn in_progress(&self, seq: u64) -> PathBuf {
        self.directory.join(format!(".part-{}-{seq}.txt.inprogress", self.subtask))
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

    /// Renames pending file `seq` to its committed name. A pending file that is gone while the
    /// committed one exists was committed before: fine.
    fn commit(&self, seq: u64) -> Result<()> {
        let pending = self.pending(seq);
        let committed = self.committed(seq);
        match std::fs::rename(&pending, &committed) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match committed.try_exists() {
                Ok(true) => Ok(()),
                Ok(false) => Err(Error::runtime(
                    SERVICE,
                    format!(
                        "cannot commit {}: the pre-committed file is missing (and {} does not exist), \
                         its data would be lost",
                        pending.display(),
                        committed.display()
                    ),
                )),
                Err(e) => Err(io_error("check", &committed, &e)),
            },
            Err(e) => Err(Error::runtime(
                SERVICE,
                format!("cannot rename {} to {}: {e}", pending.display(), committed.display()),
            )),
        }
    }
}

/// The error for an IO failure on `path`.
fn io_error(action: &str, path: &Path, err: &std::io::Error) -> Error {
    Error::runtime(SERVICE, format!("cannot {action} {}: {err}", path.display()))
}

/// The kind of a part file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Committed,
    Pending,
    InProgress,
}

/// A parsed part file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartName {
    kind: Kind,
    subtask: u32,
    /// `None` for the older layout without sequence numbers (`part-<s>.txt`,
    /// `.part-<s>.txt.inprogress`).
    seq: Option<u64>,
}

/// A canonical decimal number (digits only, no leading zero except `0` itself).
fn parse_number<T: std::str::FromStr>(digits: &str) -> Option<T> {
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits.len() == 1 || !digits.starts_with('0'));
    if canonical { digits.parse().ok() } else { None }
}

/// Parses the names this sink owns; `None` for any other name.
fn parse_part_name(name: &str) -> Option<PartName> {
    let (kind, middle) = if let Some(rest) = name.strip_prefix('.') {
        let rest = rest.strip_prefix("part-")?;
        if let Some(middle) = rest.strip_suffix(".txt.inprogress") {
            (Kind::InProgress, middle)
        } else {
            (Kind::Pending, rest.strip_suffix(".txt.pending")?)
        }
    } else {
        (Kind::Committed, name.strip_prefix("part-")?.strip_suffix(".txt")?)
    };
    match middle.split_once('-') {
        Some((subtask, seq)) => Some(PartName { kind, subtask: parse_number(subtask)?, seq: Some(parse_number(seq)?) }),
        // The older layout had no pending files.
        None if kind != Kind::Pending => Some(PartName { kind, subtask: parse_number(middle)?, seq: None }),
        None => None,
    }
}

/// Deletes `path`; a file that is already gone is fine.
fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("delete", path, &e)),
    }
}

/// Deletes the part files in `directory` for which `doomed` holds; returns whether any was.
fn remove_parts(directory: &Path, mut doomed: impl FnMut(PartName) -> bool) -> Result<bool> {
    let entries = std::fs::read_dir(directory).map_err(|e| io_error("list", directory, &e))?;
    let mut removed = false;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", directory, &e))?;
        let name = entry.file_name();
        let Some(part) = name.to_str().and_then(parse_part_name) else {
            continue;
        };
        if doomed(part) {
            remove(&entry.path())?;
            removed = true;
        }
    }
    Ok(removed)
}

impl TextFileSinkWriter {
    /// Opens subtask `subtask`'s (of `parallelism`) writer of a sink into `directory`, fresh
    /// (`restored == None`) or from the state [`SinkWriter::pre_commit`] returned for the
    /// checkpoint the job restarts from (see the type's documentation for what each does to the
    /// files in `directory`).
    ///
    /// # Errors
    /// - [`Error::Runtime`] (with the path) when the directory cannot be created or listed, a file
    ///   cannot be deleted or committed, or a pending file listed in `restored` is missing (and was
    ///   not committed either); when `restored` does not decode.
    /// - [`Error::InvalidJob`] when `subtask >= parallelism`.
    pub fn open(directory: impl AsRef<Path>, subtask: u32, parallelism: u32, restored: Option<&[u8]>) -> Result<Self> {
        super::check_subtask(SERVICE, subtask, parallelism)?;
        let directory = directory.as_ref();
        std::fs::create_dir_all(directory).map_err(|e| io_error("create directory", directory, &e))?;
        let layout = Arc::new(Layout { directory: directory.to_path_buf(), subtask });
        let next_seq = match restored {
            None => {
                let removed = remove_parts(directory, |part| {
                    part.subtask == subtask || (subtask == 0 && part.subtask >= parallelism)
                })?;
                if removed {
                    sync_directory(directory)?;
                }
                0
            }
            Some(bytes) => {
                let state = decode_state(bytes, &layout)?;
                for &(_, seq) in &state.pending {
                    layout.commit(seq)?;
                }
                let listed = |seq: u64| state.pending.iter().any(|&(_, q)| q == seq);
                let removed = remove_parts(directory, |part| {
                    let Some(seq) = part.seq.filter(|_| part.subtask == subtask) else {
                        return false;
                    };
                    match part.kind {
                        Kind::InProgress => true,
                        Kind::Pending => !listed(seq),
                        Kind::Committed => seq >= state.next_seq,
                    }
                })?;
                if removed || !state.pending.is_empty() {
                    sync_directory(directory)?;
                }
                state.next_seq
            }
        };
        Ok(Self { layout, core: Arc::default(), next_seq, current: None, finished: false })
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
        let pending = self.layout.pending(seq);
        std::fs::rename(&path, &pending).map_err(|e| {
            Error::runtime(SERVICE, format!("cannot rename {} to {}: {e}", path.display(), pending.display()))
        })?;
        self.layout.lock(&self.core)?.pending.push((checkpoint, seq));
        Ok(())
    }
}

/// Decodes and checks a restored [`SinkState`].
fn decode_state(bytes: &[u8], layout: &Layout) -> Result<SinkState> {
    let corrupt = |why: String| {
        Error::runtime(
            SERVICE,
            format!(
                "the sink state of the checkpoint is corrupt (subtask {} into {}): {why}",
                layout.subtask,
                layout.directory.display()
            ),
        )
    };
    let state: SinkState = postcard::from_bytes(bytes).map_err(|e| corrupt(e.to_string()))?;
    if let Some(&(_, seq)) = state.pending.iter().find(|&&(_, seq)| seq >= state.next_seq) {
        return Err(corrupt(format!("pending part {seq} is not below the next part number {}", state.next_seq)));
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
        self.close_transaction(checkpoint)?;
        let state = SinkState { next_seq: self.next_seq, pending: self.layout.lock(&self.core)?.pending.clone() };
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

impl super::SinkCommitter for TextFileSinkCommitter {
    fn commit(&self, checkpoint: CheckpointId) -> Result<()> {
        // Rename outside the lock so the task thread's pre-commits do not wait for the file system;
        // a concurrent commit of the same file is fine (`Layout::commit` is idempotent).
        let due: Vec<(CheckpointId, u64)> = self
            .layout
            .lock(&self.core)?
            .pending
            .iter()
            .copied()
            .filter(|&(pending_checkpoint, _)| pending_checkpoint <= checkpoint)
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let mut result = Ok(());
        let mut renamed = 0;
        for &(_, seq) in &due {
            if let Err(e) = self.layout.commit(seq) {
                result = Err(e);
                break;
            }
            renamed += 1;
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
mod tests {
    use super::super::SinkCommitter;
    use super::*;

    /// The names of the files in `dir`, sorted.
    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap()
    }

    fn runtime_message(err: Error) -> String {
        match err {
            Error::Runtime { message, .. } => message,
            other => panic!("not a runtime error: {other}"),
        }
    }

    #[test]
    fn without_checkpoints_output_is_visible_after_the_final_commit() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a").join("b");
        let mut writer = TextFileSinkWriter::open(&out, 1, 2, None).unwrap();
        let committer = writer.committer();
        writer.write(b"one\n").unwrap();
        writer.write(b"two\nthree\n").unwrap();
        assert_eq!(files(&out), [".part-1-0.txt.inprogress"]);
        writer.finish().unwrap();
        assert_eq!(files(&out), [".part-1-0.txt.pending"]);
        assert!(writer.write(b"late\n").is_err());
        writer.finish().unwrap();
        committer.commit(FINAL_CHECKPOINT).unwrap();
        assert_eq!(files(&out), ["part-1-0.txt"]);
        assert_eq!(read(&out, "part-1-0.txt"), "one\ntwo\nthree\n");
        committer.commit(FINAL_CHECKPOINT).unwrap();
        assert_eq!(files(&out), ["part-1-0.txt"]);
    }

    #[test]
    fn commit_makes_visible_only_the_checkpoints_up_to_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let mut writer = TextFileSinkWriter::open(out, 0, 1, None).unwrap();
        let committer = writer.committer();
        writer.write(b"a\n").unwrap();
        writer.pre_commit(1).unwrap();
        writer.write(b"b\n").unwrap();
        writer.write(b"c\n").unwrap();
        assert_eq!(files(out), [".part-0-0.txt.pending", ".part-0-1.txt.inprogress"]);
        let state = writer.pre_commit(2).unwrap();
        assert_eq!(
            postcard::from_bytes::<SinkState>(&state).unwrap(),
            SinkState { next_seq: 2, pending: vec![(1, 0), (2, 1)] }
        );
        writer.write(b"d\n").unwrap();

        committer.commit(1).unwrap();
        assert_eq!(files(out), [".part-0-1.txt.pending", ".part-0-2.txt.inprogress", "part-0-0.txt"]);
        assert_eq!(read(out, "part-0-0.txt"), "a\n");
        committer.commit(1).unwrap();
        assert_eq!(files(out), [".part-0-1.txt.pending", ".part-0-2.txt.inprogress", "part-0-0.txt"]);

        committer.commit(2).unwrap();
        assert_eq!(files(out), [".part-0-2.txt.inprogress", "part-0-0.txt", "part-0-1.txt"]);
        assert_eq!(read(out, "part-0-1.txt"), "b\nc\n");
        committer.commit(2).unwrap();
        let state = writer.pre_commit(3).unwrap();
        assert_eq!(
            postcard::from_bytes::<SinkState>(&state).unwrap(),
            SinkState { next_seq: 3, pending: vec![(3, 2)] }
        );
        committer.commit(FINAL_CHECKPOINT).unwrap();
        assert_eq!(files(out), ["part-0-0.txt", "part-0-1.txt", "part-0-2.txt"]);
        assert_eq!(read(out, "part-0-2.txt"), "d\n");
    }

    #[test]
    fn restore_discards_what_was_written_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let mut writer = TextFileSinkWriter::open(out, 0, 1, None).unwrap();
        let committer = writer.committer();
        writer.write(b"a\n").unwrap();
        let state = writer.pre_commit(1).unwrap();
        writer.write(b"b\n").unwrap();
        writer.pre_commit(2).unwrap();
        committer.commit(2).unwrap();
        writer.write(b"c\n").unwrap();
        assert_eq!(files(out), [".part-0-2.txt.inprogress", "part-0-0.txt", "part-0-1.txt"]);
        drop(writer);

        // Recovery from checkpoint 1 (say checkpoint 2's state was lost).
        let mut writer = TextFileSinkWriter::open(out, 0, 1, Some(&state)).unwrap();
        assert_eq!(files(out), ["part-0-0.txt"]);
        assert_eq!(read(out, "part-0-0.txt"), "a\n");
        writer.write(b"b\n").unwrap();
        assert_eq!(files(out), [".part-0-1.txt.inprogress", "part-0-0.txt"]);
        writer.finish().unwrap();
        writer.committer().commit(FINAL_CHECKPOINT).unwrap();
        assert_eq!(files(out), ["part-0-0.txt", "part-0-1.txt"]);
        assert_eq!(read(out, "part-0-1.txt"), "b\n");
    }

    #[test]
    fn restore_commits_what_the_failed_run_did_not() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let mut writer = TextFileSinkWriter::open(out, 0, 1, None).unwrap();
        writer.write(b"a\n").unwrap();
        writer.pre_commit(1).unwrap();
        writer.write(b"b\n").unwrap();
        let state = writer.pre_commit(2).unwrap();
        writer.committer().commit(1).unwrap();
        // Checkpoint 2 completed but the process died before committing it.
        drop(writer);
        assert_eq!(files(out), [".part-0-1.txt.pending", "part-0-0.txt"]);

        let mut writer = TextFileSinkWriter::open(out, 0, 1, Some(&state)).unwrap();
        assert_eq!(files(out), ["part-0-0.txt", "part-0-1.txt"]);
        assert_eq!(read(out, "part-0-0.txt"), "a\n");
        assert_eq!(read(out, "part-0-1.txt"), "b\n");
        // Nothing is pending any more; numbering continues.
        let restored = writer.pre_commit(3).unwrap();
        assert_eq!(postcard::from_bytes::<SinkState>(&restored).unwrap(), SinkState { next_seq: 2, pending: vec![] });
        writer.write(b"c\n").unwrap();
        writer.pre_commit(4).unwrap();
        writer.committer().commit(4).unwrap();
        assert_eq!(read(out, "part-0-2.txt"), "c\n");

        // Restoring the same state again (a second failure) finds everything committed already.
        drop(writer);
        TextFileSinkWriter::open(out, 0, 1, Some(&state)).unwrap();
        assert_eq!(files(out), ["part-0-0.txt", "part-0-1.txt"]);
    }

    #[test]
    fn fresh_start_deletes_this_subtasks_files_and_subtask_zero_those_beyond_the_parallelism() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        // Subtasks 0, 1 and 2 of an earlier run (with parallelism 3), in both layouts.
        for s in 0..3 {
            for name in [
                format!("part-{s}-0.txt"),
                format!("part-{s}-7.txt"),
                format!(".part-{s}-1.txt.pending"),
                format!(".part-{s}-2.txt.inprogress"),
                format!("part-{s}.txt"),
                format!(".part-{s}.txt.inprogress"),
            ] {
                std::fs::write(out.join(name), format!("old {s}\n")).unwrap();
            }
        }
        // Names the sink does not own.
        let others =
            ["other.txt", "part-x.txt", "part-1-0.txt.bak", "part-01-0.txt", ".part-1.txt.pending", "part-1-.txt"];
        for name in others {
            std::fs::write(out.join(name), "other\n").unwrap();
        }

        // Subtask 0 of 2 deletes its own files and subtask 2's, not subtask 1's.
        let mut writer = TextFileSinkWriter::open(out, 0, 2, None).unwrap();
        assert_eq!(
            files(out),
            [
                ".part-1-1.txt.pending",
                ".part-1-2.txt.inprogress",
                ".part-1.txt.inprogress",
                ".part-1.txt.pending",
                "other.txt",
                "part-01-0.txt",
                "part-1-.txt",
                "part-1-0.txt",
                "part-1-0.txt.bak",
                "part-1-7.txt",
                "part-1.txt",
                "part-x.txt",
            ]
        );
        assert_eq!(read(out, "part-1-0.txt"), "old 1\n");

        // Subtask 1 of 2 deletes its own files.
        TextFileSinkWriter::open(out, 1, 2, None).unwrap();
        assert_eq!(
            files(out),
            [".part-1.txt.pending", "other.txt", "part-01-0.txt", "part-1-.txt", "part-1-0.txt.bak", "part-x.txt"]
        );
        for name in others {
            assert_eq!(read(out, name), "other\n", "{name}");
        }

        writer.write(b"new\n").unwrap();
        writer.finish().unwrap();
        writer.committer().commit(FINAL_CHECKPOINT).unwrap();
        assert_eq!(read(out, "part-0-0.txt"), "new\n");
    }

    #[test]
    fn missing_pending_files_and_corrupt_state_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let mut writer = TextFileSinkWriter::open(out, 0, 1, None).unwrap();
        writer.write(b"a\n").unwrap();
        let state = writer.pre_commit(1).unwrap();
        drop(writer);
        let pending = out.join(".part-0-0.txt.pending");
        std::fs::remove_file(&pending).unwrap();
        let message = runtime_message(TextFileSinkWriter::open(out, 0, 1, Some(&state)).unwrap_err());
        assert!(message.contains(&*pending.to_string_lossy()), "{message}");
        assert!(message.contains("missing"), "{message}");

        // The committer reports the same.
        let mut writer = TextFileSinkWriter::open(out, 0, 1, None).unwrap();
        writer.write(b"a\n").unwrap();
        writer.pre_commit(1).unwrap();
        std::fs::remove_file(&pending).unwrap();
        let message = runtime_message(writer.committer().commit(1).unwrap_err());
        assert!(message.contains(&*pending.to_string_lossy()), "{message}");

        for corrupt in
            [vec![0xff; 3], postcard::to_allocvec(&SinkState { next_seq: 1, pending: vec![(1, 1)] }).unwrap()]
        {
            let message = runtime_message(TextFileSinkWriter::open(out, 0, 1, Some(&corrupt)).unwrap_err());
            assert!(message.contains("sink state of the checkpoint is corrupt"), "{message}");
        }
    }

    #[test]
    fn unwritable_directory_is_a_runtime_error_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let message = runtime_message(TextFileSinkWriter::open(file.join("sub"), 0, 1, None).unwrap_err());
        assert!(message.contains(&*file.to_string_lossy()), "{message}");
        assert!(matches!(TextFileSinkWriter::open(dir.path(), 1, 1, None), Err(Error::InvalidJob(_))));
    }

    #[test]
    fn nothing_written_creates_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let mut writer = TextFileSinkWriter::open(out, 0, 1, None).unwrap();
        let committer = writer.committer();
        writer.write(b"").unwrap();
        let state = writer.pre_commit(1).unwrap();
        assert_eq!(postcard::from_bytes::<SinkState>(&state).unwrap(), SinkState { next_seq: 0, pending: vec![] });
        committer.commit(1).unwrap();
        writer.write(b"").unwrap();
        writer.finish().unwrap();
        committer.commit(FINAL_CHECKPOINT).unwrap();
        assert!(files(out).is_empty());
    }

    #[test]
    fn part_names_parse_only_the_sinks_own() {
        let part = |kind, subtask, seq| Some(PartName { kind, subtask, seq });
        assert_eq!(parse_part_name("part-0-0.txt"), part(Kind::Committed, 0, Some(0)));
        assert_eq!(parse_part_name("part-3-17.txt"), part(Kind::Committed, 3, Some(17)));
        assert_eq!(parse_part_name(".part-3-17.txt.pending"), part(Kind::Pending, 3, Some(17)));
        assert_eq!(parse_part_name(".part-3-17.txt.inprogress"), part(Kind::InProgress, 3, Some(17)));
        assert_eq!(parse_part_name("part-12.txt"), part(Kind::Committed, 12, None));
        assert_eq!(parse_part_name(".part-12.txt.inprogress"), part(Kind::InProgress, 12, None));
        for name in [
            "part-.txt",
            "part-+1.txt",
            "part-1-+1.txt",
            "part-01.txt",
            "part-1-00.txt",
            "part-1-2-3.txt",
            "part-1.txt.inprogress",
            ".part-1.txt",
            ".part-1.txt.pending",
            "part-a.txt",
            "part-1-2.txt.pending",
            "part-99999999999-0.txt",
        ] {
            assert_eq!(parse_part_name(name), None, "{name}");
        }
    }
}
