//! The text file source: the lines of a file, or of the files of a directory.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use weir_api::runtime::{RawBatch, SourceReader, SourceStatus};
use weir_api::{Error, Result};

/// Service name used in this source's errors.
const SERVICE: &str = "text file source";
/// Read buffer size per open file.
const BUFFER_SIZE: usize = 256 * 1024;

/// Subtask `subtask` of `parallelism`'s share of a [`TextFiles`] source.
///
/// - The path is a file or a directory. For a directory, the files are the regular files directly
///   in it (not recursive; symbolic links to regular files count), except hidden files (names
///   starting with `.`), sorted by file name, as listed when the reader opens. File `j` of that
///   list is read by subtask `j % n`; a single file is read by subtask 0 alone.
/// - Lines end at `\n`; the `\n` and a `\r` right before it are removed. A last line without a
///   newline is still a line; an empty file yields no lines.
/// - Lines are decoded as UTF-8; a line with invalid UTF-8 is decoded lossily: every invalid
///   byte sequence becomes U+FFFD (the replacement character).
/// - [`SourceReader::read`] pushes at most `max_records` lines into [`RawBatch::lines`] and
///   returns [`SourceStatus::Ready`], or [`SourceStatus::Finished`] once every file is read —
///   possibly together with the last lines, so the caller must process `out` first.
/// - **Position**: the files the subtask has still to read, by name, the first with the bytes
///   of it already consumed ([`Position`]). Restored at the same parallelism, a subtask reads on
///   from its own; at another (a savepoint), every subtask is given every old subtask's position
///   and takes the remaining files (sorted by name) `k` with `k % n == subtask`, each from its
///   offset. Files that appeared after the job started are not read.
///
/// [`TextFiles`]: weir_api::connectors::SourceDescriptor::TextFiles
#[derive(Debug)]
pub struct TextFileReader {
    /// The source's path (a file or a directory); files are named relative to it.
    base: PathBuf,
    subtask: u32,
    parallelism: u32,
    /// The files of this subtask, in reading order, each with the bytes to skip when it opens.
    files: Vec<(PathBuf, u64)>,
    /// Index in `files` of the next file to open.
    next_file: usize,
    /// The file being read, with its path.
    current: Option<(PathBuf, BufReader<File>)>,
    /// Bytes of the current file consumed so far.
    offset: u64,
    /// Reused line buffer.
    line: Vec<u8>,
}

/// A text file source subtask's position, versioned (the variant index is the version).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Position {
    /// Version 1.
    V1 {
        /// The subtask that took it.
        subtask: u32,
        /// The source's parallelism then.
        parallelism: u32,
        /// The files still to read (names relative to the source's path) with the bytes of each
        /// already consumed.
        remaining: Vec<(String, u64)>,
    },
}

/// The error for an IO failure on `path`.
fn read_error(path: &Path, err: &std::io::Error) -> Error {
    Error::runtime(SERVICE, format!("cannot read {}: {err}", path.display()))
}

impl TextFileReader {
    /// Lists the files of `path` and keeps those of subtask `subtask` of `parallelism`.
    ///
    /// # Errors
    /// [`Error::Runtime`] when `path` (or the directory's listing) cannot be read;
    /// [`Error::InvalidJob`] when `subtask >= parallelism`. Files are opened lazily, so an
    /// unreadable file is reported by the [`SourceReader::read`] that reaches it.
    pub fn open(path: impl AsRef<Path>, subtask: u32, parallelism: u32) -> Result<Self> {
        super::check_subtask(SERVICE, subtask, parallelism)?;
        let path = path.as_ref();
        let metadata = std::fs::metadata(path).map_err(|e| read_error(path, &e))?;
        let all = if metadata.is_dir() { list_directory(path)? } else { vec![path.to_path_buf()] };
        let (index, count) = (subtask as usize, parallelism as usize);
        let files =
            all.into_iter().enumerate().filter(|(j, _)| j % count == index).map(|(_, file)| (file, 0)).collect();
        Ok(Self {
            base: path.to_path_buf(),
            subtask,
            parallelism,
            files,
            next_file: 0,
            current: None,
            offset: 0,
            line: Vec::new(),
        })
    }

    /// The files this subtask reads, in order.
    pub fn files(&self) -> Vec<&Path> {
        self.files.iter().map(|(path, _)| path.as_path()).collect()
    }

    /// `path`'s name relative to the source's path.
    fn name_of(&self, path: &Path) -> String {
        path.strip_prefix(&self.base)
            .ok()
            .filter(|relative| !relative.as_os_str().is_empty())
            .or_else(|| path.file_name().map(Path::new))
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }

    /// The file named `name` relative to the source's path.
    fn path_of(&self, name: &str) -> PathBuf {
        if self.base.is_dir() { self.base.join(name) } else { self.base.clone() }
    }
}

/// The non-hidden regular files directly in `dir`, sorted by file name.
fn list_directory(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| read_error(dir, &e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| read_error(dir, &e))?;
        let name = entry.file_name();
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = entry.path();
        // Follows symbolic links; a dangling link is skipped like any non-file.
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push((name, path));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files.into_iter().map(|(_, path)| path).collect())
}

impl SourceReader for TextFileReader {
    /// [`Position::V1`]: the current file with the bytes consumed, then the files not opened.
    fn position(&self) -> Vec<u8> {
        let mut remaining: Vec<(String, u64)> = Vec::new();
        if let Some((path, _)) = &self.current {
            remaining.push((self.name_of(path), self.offset));
        }
        remaining.extend(self.files[self.next_file.min(self.files.len())..].iter().map(|(p, o)| (self.name_of(p), *o)));
        let position = Position::V1 { subtask: self.subtask, parallelism: self.parallelism, remaining };
        postcard::to_allocvec(&position).unwrap_or_default()
    }

    fn restore(&mut self, positions: &[Vec<u8>]) -> Result<()> {
        let mut decoded = Vec::with_capacity(positions.len());
        for bytes in positions {
            match postcard::from_bytes::<Position>(bytes) {
                Ok(Position::V1 { subtask, parallelism, remaining }) => decoded.push((subtask, parallelism, remaining)),
                Err(e) => return Err(Error::runtime(SERVICE, format!("invalid text file position: {e}"))),
            }
        }
        let own = decoded.iter().position(|(s, p, _)| *s == self.subtask && *p == self.parallelism);
        let remaining = match own {
            Some(index) => decoded.swap_remove(index).2,
            None => {
                decoded.sort_by_key(|(subtask, _, _)| *subtask);
                let old = decoded.first().map_or(0, |(_, parallelism, _)| *parallelism);
                let subtasks: Vec<u32> = decoded.iter().map(|(subtask, _, _)| *subtask).collect();
                if decoded.iter().any(|(_, p, _)| *p != old) || subtasks != (0..old).collect::<Vec<_>>() {
                    return Err(Error::runtime(
                        SERVICE,
                        format!(
                            "subtask {} of {} was given the positions of subtasks {subtasks:?} of a source that ran at \
                             parallelism {old}: every old subtask's position is needed to take its files",
                            self.subtask, self.parallelism
                        ),
                    ));
                }
                let mut all: Vec<(String, u64)> = decoded.into_iter().flat_map(|(_, _, r)| r).collect();
                all.sort();
                let (index, count) = (self.subtask as usize, self.parallelism.max(1) as usize);
                all.into_iter().enumerate().filter(|(k, _)| k % count == index).map(|(_, file)| file).collect()
            }
        };
        self.files = remaining.into_iter().map(|(name, offset)| (self.path_of(&name), offset)).collect();
        self.next_file = 0;
        self.current = None;
        self.offset = 0;
        Ok(())
    }

    fn read(&mut self, max_records: usize, out: &mut RawBatch) -> Result<SourceStatus> {
        use std::io::{Seek, SeekFrom};
        let mut produced = 0;
        while produced < max_records {
            let (path, reader) = match &mut self.current {
                Some((path, reader)) => (path, reader),
                None => {
                    let Some((path, start)) = self.files.get(self.next_file) else {
                        return Ok(SourceStatus::Finished);
                    };
                    self.next_file += 1;
                    let mut file = File::open(path).map_err(|e| read_error(path, &e))?;
                    if *start > 0 {
                        file.seek(SeekFrom::Start(*start)).map_err(|e| read_error(path, &e))?;
                    }
                    self.offset = *start;
                    let (path, reader) =
                        self.current.insert((path.clone(), BufReader::with_capacity(BUFFER_SIZE, file)));
                    (&mut *path, reader)
                }
            };
            self.line.clear();
            let read = reader.read_until(b'\n', &mut self.line).map_err(|e| read_error(path, &e))?;
            if read == 0 {
                self.current = None;
                self.offset = 0;
                continue;
            }
            self.offset += read as u64;
            if self.line.last() == Some(&b'\n') {
                self.line.pop();
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
            }
            let line = match String::from_utf8(std::mem::take(&mut self.line)) {
                Ok(line) => line,
                Err(err) => {
                    let bytes = err.into_bytes();
                    let line = String::from_utf8_lossy(&bytes).into_owned();
                    // Keep the buffer's allocation for the next line.
                    self.line = bytes;
                    line
                }
            };
            out.lines.push(line);
            produced += 1;
        }
        // Finished as soon as nothing is left, so the last batch need not be followed by an
        // empty one. Opening the next file waits for the next read.
        if self.current.is_none() && self.next_file >= self.files.len() {
            return Ok(SourceStatus::Finished);
        }
        Ok(SourceStatus::Ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(reader: &mut TextFileReader, max: usize) -> Vec<String> {
        let mut lines = Vec::new();
        let mut out = RawBatch::default();
        loop {
            out.clear();
            let status = reader.read(max, &mut out).unwrap();
            assert!(out.lines.len() <= max);
            lines.append(&mut out.lines);
            match status {
                SourceStatus::Ready => {}
                SourceStatus::Finished => return lines,
                SourceStatus::WaitUntil(_) => panic!("text source waited"),
            }
        }
    }

    #[test]
    fn crlf_and_missing_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, b"a\r\nb\n\r\n\nc\rd\r\nlast").unwrap();
        let mut reader = TextFileReader::open(&path, 0, 1).unwrap();
        assert_eq!(read_all(&mut reader, 2), vec!["a", "b", "", "", "c\rd", "last"]);

        std::fs::write(&path, b"x\n").unwrap();
        let mut reader = TextFileReader::open(&path, 0, 1).unwrap();
        assert_eq!(read_all(&mut reader, 10), vec!["x"]);

        std::fs::write(&path, b"").unwrap();
        let mut reader = TextFileReader::open(&path, 0, 1).unwrap();
        assert!(read_all(&mut reader, 10).is_empty());

        // A single file belongs to subtask 0.
        let mut reader = TextFileReader::open(&path, 1, 2).unwrap();
        assert!(reader.files().is_empty());
        assert!(read_all(&mut reader, 10).is_empty());
    }

    #[test]
    fn directory_is_split_across_subtasks() {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = Vec::new();
        for f in 0..7 {
            let lines: Vec<String> = (0..(f * 3)).map(|l| format!("file{f}-line{l}")).collect();
            std::fs::write(dir.path().join(format!("f{f}.txt")), lines.join("\n")).unwrap();
            expected.extend(lines);
        }
        std::fs::write(dir.path().join(".hidden"), "hidden\n").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub").join("nested.txt"), "nested\n").unwrap();
        expected.sort();

        for n in 1..=4u32 {
            let mut all = Vec::new();
            for i in 0..n {
                let mut reader = TextFileReader::open(dir.path(), i, n).unwrap();
                let names: Vec<String> =
                    reader.files().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
                let expected_names: Vec<String> = (0..7).filter(|f| f % n == i).map(|f| format!("f{f}.txt")).collect();
                assert_eq!(names, expected_names);
                all.extend(read_all(&mut reader, 4));
            }
            all.sort();
            assert_eq!(all, expected, "parallelism {n}");
        }
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.txt");
        std::fs::write(&path, b"ok\nbad \xff\xfe end\nok again\n").unwrap();
        let mut reader = TextFileReader::open(&path, 0, 1).unwrap();
        assert_eq!(read_all(&mut reader, 10), vec!["ok", "bad \u{FFFD}\u{FFFD} end", "ok again"]);
    }

    #[test]
    fn missing_path_is_a_runtime_error_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing");
        let err = TextFileReader::open(&path, 0, 1).unwrap_err();
        assert!(
            matches!(&err, Error::Runtime { service, message }
            if service == SERVICE && message.contains(&*path.to_string_lossy())),
            "{err}"
        );
        assert!(TextFileReader::open(dir.path(), 3, 3).is_err());
    }

    #[test]
    fn positions_restore_at_the_same_and_at_another_parallelism() {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = Vec::new();
        for f in 0..5 {
            let lines: Vec<String> = (0..(3 + f * 2)).map(|l| format!("f{f}-l{l}")).collect();
            std::fs::write(dir.path().join(format!("part-{f}")), lines.join("\n") + "\n").unwrap();
            expected.extend(lines);
        }
        expected.sort();
        // Two old subtasks read a few lines each (subtask 1 stops in the middle of a file).
        let mut read = Vec::new();
        let mut positions = Vec::new();
        for subtask in 0..2 {
            let mut reader = TextFileReader::open(dir.path(), subtask, 2).unwrap();
            let mut out = RawBatch::default();
            reader.read(2 + subtask as usize * 2, &mut out).unwrap();
            read.append(&mut out.lines);
            positions.push(reader.position());
        }
        // The same parallelism: each reads on from its own position.
        let mut same = read.clone();
        for subtask in 0..2 {
            let mut reader = TextFileReader::open(dir.path(), subtask, 2).unwrap();
            reader.restore(&positions).unwrap();
            same.extend(read_all(&mut reader, 3));
        }
        same.sort();
        assert_eq!(same, expected);
        // Three subtasks (and one): together they read exactly the rest.
        for parallelism in [3, 1] {
            let mut all = read.clone();
            for subtask in 0..parallelism {
                let mut reader = TextFileReader::open(dir.path(), subtask, parallelism).unwrap();
                reader.restore(&positions).unwrap();
                all.extend(read_all(&mut reader, 4));
            }
            all.sort();
            assert_eq!(all, expected, "parallelism {parallelism}");
        }
        // Only some old subtasks' positions, or garbage: refused.
        let mut reader = TextFileReader::open(dir.path(), 0, 3).unwrap();
        let e = reader.restore(&positions[1..]).unwrap_err().to_string();
        assert!(e.contains("subtasks [1] of a source that ran at parallelism 2"), "{e}");
        assert!(reader.restore(&[vec![7, 7]]).unwrap_err().to_string().contains("invalid text file position"));
    }
}
