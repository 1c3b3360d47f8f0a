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
///   starting with `.`), sorted by file name. File `j` of that list is read by subtask `j % n`; a
///   single file is read by subtask 0 alone.
/// - Lines end at `\n`; the `\n` and a `\r` right before it are removed. A last line without a
///   newline is still a line; an empty file yields no lines.
/// - Lines are decoded as UTF-8; a line with invalid UTF-8 is decoded lossily: every invalid
///   byte sequence becomes U+FFFD (the replacement character).
/// - [`SourceReader::read`] pushes at most `max_records` lines into [`RawBatch::lines`] and
///   returns [`SourceStatus::Ready`], or [`SourceStatus::Finished`] once every file is read —
///   possibly together with the last lines, so the caller must process `out` first.
///
/// [`TextFiles`]: weir_api::connectors::SourceDescriptor::TextFiles
#[derive(Debug)]
pub struct TextFileReader {
    /// The files of this subtask, in reading order.
    files: Vec<PathBuf>,
    /// Index in `files` of the next file to open.
    next_file: usize,
    /// The file being read, with its path.
    current: Option<(PathBuf, BufReader<File>)>,
    /// Bytes of the current file consumed so far.
    offset: u64,
    /// Reused line buffer.
    line: Vec<u8>,
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
        let (subtask, parallelism) = (subtask as usize, parallelism as usize);
        let files =
            all.into_iter().enumerate().filter(|(j, _)| j % parallelism == subtask).map(|(_, file)| file).collect();
        Ok(Self { files, next_file: 0, current: None, offset: 0, line: Vec::new() })
    }

    /// The files this subtask reads, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
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
    /// `(index of the file being read, bytes of it consumed)`.
    fn position(&self) -> Vec<u8> {
        let file = if self.current.is_some() { self.next_file.saturating_sub(1) } else { self.next_file };
        postcard::to_allocvec(&(file as u64, self.offset)).unwrap_or_default()
    }

    fn restore(&mut self, positions: &[Vec<u8>]) -> Result<()> {
        use std::io::{Seek, SeekFrom};
        let [position] = positions else {
            return Err(Error::runtime(
                SERVICE,
                format!(
                    "given {} subtasks' positions: a text file source restores only at the parallelism it ran with",
                    positions.len()
                ),
            ));
        };
        let (file, offset): (u64, u64) = postcard::from_bytes(position)
            .map_err(|e| Error::runtime(SERVICE, format!("invalid text file position: {e}")))?;
        let file = file as usize;
        self.current = None;
        self.offset = 0;
        self.next_file = file;
        if offset > 0 {
            let path = self
                .files
                .get(file)
                .ok_or_else(|| Error::runtime(SERVICE, format!("position names file {file} of {}", self.files.len())))?
                .clone();
            let mut handle = File::open(&path).map_err(|e| read_error(&path, &e))?;
            handle.seek(SeekFrom::Start(offset)).map_err(|e| read_error(&path, &e))?;
            self.current = Some((path, BufReader::with_capacity(BUFFER_SIZE, handle)));
            self.next_file = file + 1;
            self.offset = offset;
        }
        Ok(())
    }

    fn read(&mut self, max_records: usize, out: &mut RawBatch) -> Result<SourceStatus> {
        let mut produced = 0;
        while produced < max_records {
            let (path, reader) = match &mut self.current {
                Some((path, reader)) => (path, reader),
                None => {
                    let Some(path) = self.files.get(self.next_file) else {
                        return Ok(SourceStatus::Finished);
                    };
                    self.next_file += 1;
                    self.offset = 0;
                    let file = File::open(path).map_err(|e| read_error(path, &e))?;
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
}
