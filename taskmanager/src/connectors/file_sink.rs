//! The text file sink: one file per subtask, made visible only when complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use weir_api::runtime::SinkWriter;
use weir_api::{Error, Result};

/// Service name used in this sink's errors.
const SERVICE: &str = "text file sink";
/// Write buffer size.
const BUFFER_SIZE: usize = 256 * 1024;

/// Subtask `subtask`'s writer of a [`TextFiles`] sink.
///
/// - The directory is created if missing.
/// - Records go to the hidden in-progress file `.part-<subtask>.txt.inprogress` (truncated on
///   open). [`SinkWriter::finish`] flushes it, syncs it to disk and renames it to
///   `part-<subtask>.txt`, replacing an older one, so only complete output is ever visible under
///   the committed name. A writer dropped without `finish` leaves its in-progress file behind
///   (hidden, and truncated by the next run).
/// - The sink owns the names `part-*.txt` in its directory: on open, subtask 0 deletes the
///   committed files `part-<k>.txt` with `k >= parallelism` left by an earlier run with a higher
///   parallelism. Other files are left alone.
///
/// After `finish`, further writes are errors and another `finish` does nothing.
///
/// [`TextFiles`]: weir_api::connectors::SinkDescriptor::TextFiles
#[derive(Debug)]
pub struct TextFileSinkWriter {
    /// The in-progress file; `None` after `finish`.
    writer: Option<BufWriter<File>>,
    in_progress: PathBuf,
    committed: PathBuf,
}

/// The error for an IO failure on `path`.
fn io_error(action: &str, path: &Path, err: &std::io::Error) -> Error {
    Error::runtime(SERVICE, format!("cannot {action} {}: {err}", path.display()))
}

/// The `k` of a committed part file name `part-<k>.txt` (decimal digits only).
fn part_index(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("part-")?.strip_suffix(".txt")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl TextFileSinkWriter {
    /// Opens subtask `subtask`'s (of `parallelism`) writer of a sink into `directory`.
    ///
    /// # Errors
    /// [`Error::Runtime`] (with the path) when the directory or the in-progress file cannot be
    /// created or a stale part file cannot be deleted; [`Error::InvalidJob`] when
    /// `subtask >= parallelism`.
    pub fn open(directory: impl AsRef<Path>, subtask: u32, parallelism: u32) -> Result<Self> {
        super::check_subtask(SERVICE, subtask, parallelism)?;
        let directory = directory.as_ref();
        std::fs::create_dir_all(directory).map_err(|e| io_error("create directory", directory, &e))?;
        if subtask == 0 {
            remove_stale_parts(directory, parallelism)?;
        }
        let in_progress = directory.join(format!(".part-{subtask}.txt.inprogress"));
        let committed = directory.join(format!("part-{subtask}.txt"));
        let file = File::create(&in_progress).map_err(|e| io_error("create", &in_progress, &e))?;
        Ok(Self { writer: Some(BufWriter::with_capacity(BUFFER_SIZE, file)), in_progress, committed })
    }

    /// The path of the output once finished.
    pub fn committed_path(&self) -> &Path {
        &self.committed
    }
}

/// Deletes `part-<k>.txt` for `k >= parallelism` in `directory`.
fn remove_stale_parts(directory: &Path, parallelism: u32) -> Result<()> {
    let entries = std::fs::read_dir(directory).map_err(|e| io_error("list", directory, &e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", directory, &e))?;
        let name = entry.file_name();
        let Some(k) = name.to_str().and_then(part_index) else {
            continue;
        };
        if k >= u64::from(parallelism) {
            let path = entry.path();
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                // Someone else removed it meanwhile: the goal is reached.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("delete stale part file", &path, &e)),
            }
        }
    }
    Ok(())
}

impl SinkWriter for TextFileSinkWriter {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(Error::runtime(
                SERVICE,
                format!("cannot write {}: the sink is already finished", self.committed.display()),
            ));
        };
        writer.write_all(data).map_err(|e| io_error("write", &self.in_progress, &e))
    }

    fn finish(&mut self) -> Result<()> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let file = writer.into_inner().map_err(|e| io_error("write", &self.in_progress, e.error()))?;
        file.sync_all().map_err(|e| io_error("sync", &self.in_progress, &e))?;
        drop(file);
        std::fs::rename(&self.in_progress, &self.committed).map_err(|e| {
            Error::runtime(
                SERVICE,
                format!("cannot rename {} to {}: {e}", self.in_progress.display(), self.committed.display()),
            )
        })?;
        sync_directory(&self.committed)
    }
}

/// Makes the rename durable by syncing the directory (Unix only; elsewhere a no-op).
#[cfg(unix)]
fn sync_directory(file: &Path) -> Result<()> {
    let Some(directory) = file.parent() else {
        return Ok(());
    };
    File::open(directory).and_then(|d| d.sync_all()).map_err(|e| io_error("sync directory", directory, &e))
}

#[cfg(not(unix))]
fn sync_directory(_file: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_visible_only_after_finish() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a").join("b");
        let mut writer = TextFileSinkWriter::open(&out, 1, 2).unwrap();
        writer.write(b"one\n").unwrap();
        writer.write(b"two\n").unwrap();
        let committed = out.join("part-1.txt");
        assert_eq!(writer.committed_path(), committed);
        assert!(!committed.exists());
        writer.finish().unwrap();
        assert_eq!(std::fs::read_to_string(&committed).unwrap(), "one\ntwo\n");
        assert!(!out.join(".part-1.txt.inprogress").exists());
        assert!(writer.write(b"late\n").is_err());
        writer.finish().unwrap();

        // A new run replaces the old output, which stays visible until then.
        let mut writer = TextFileSinkWriter::open(&out, 1, 2).unwrap();
        writer.write(b"three\n").unwrap();
        assert_eq!(std::fs::read_to_string(&committed).unwrap(), "one\ntwo\n");
        writer.finish().unwrap();
        assert_eq!(std::fs::read_to_string(&committed).unwrap(), "three\n");
    }

    #[test]
    fn stale_part_files_are_removed_by_subtask_zero() {
        let dir = tempfile::tempdir().unwrap();
        for name in
            ["part-0.txt", "part-1.txt", "part-2.txt", "part-10.txt", "part-x.txt", "other.txt", "part-3.txt.bak"]
        {
            std::fs::write(dir.path().join(name), "old\n").unwrap();
        }
        // Subtask 1 leaves them alone.
        let writer1 = TextFileSinkWriter::open(dir.path(), 1, 2).unwrap();
        assert!(dir.path().join("part-2.txt").exists());
        let mut writer0 = TextFileSinkWriter::open(dir.path(), 0, 2).unwrap();
        for name in ["part-2.txt", "part-10.txt"] {
            assert!(!dir.path().join(name).exists(), "{name}");
        }
        for name in ["part-0.txt", "part-1.txt", "part-x.txt", "other.txt", "part-3.txt.bak"] {
            assert!(dir.path().join(name).exists(), "{name}");
        }
        writer0.write(b"new\n").unwrap();
        writer0.finish().unwrap();
        drop(writer1);
        assert_eq!(std::fs::read_to_string(dir.path().join("part-0.txt")).unwrap(), "new\n");
        assert_eq!(std::fs::read_to_string(dir.path().join("part-1.txt")).unwrap(), "old\n");
    }

    #[test]
    fn part_index_parses_only_committed_names() {
        assert_eq!(part_index("part-0.txt"), Some(0));
        assert_eq!(part_index("part-17.txt"), Some(17));
        for name in ["part-.txt", "part-+1.txt", "part-1.txt.inprogress", ".part-1.txt", "part-a.txt"] {
            assert_eq!(part_index(name), None, "{name}");
        }
    }

    #[test]
    fn unwritable_directory_is_a_runtime_error_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let err = TextFileSinkWriter::open(file.join("sub"), 0, 1).unwrap_err();
        assert!(matches!(&err, Error::Runtime { message, .. } if message.contains(&*file.to_string_lossy())), "{err}");
    }
}
