//! The stdout sink: lines on the taskmanager's standard output.

use std::io::Write;
use weir_api::runtime::SinkWriter;
use weir_api::{Error, Result};

/// Service name used in this sink's errors.
const SERVICE: &str = "stdout sink";

/// A writer of a [`Stdout`] sink.
///
/// Each [`SinkWriter::write`] writes its bytes (whole newline-terminated lines, already prefixed
/// with `subtask> ` by the job plugin where needed) to the process's standard output while
/// holding its lock, so the lines of one write are not interleaved with other writers'.
/// [`SinkWriter::finish`] flushes standard output.
///
/// [`Stdout`]: weir_api::connectors::SinkDescriptor::Stdout
#[derive(Debug, Default)]
pub struct StdoutSinkWriter {
    _private: (),
}

impl StdoutSinkWriter {
    /// A writer to standard output.
    pub fn new() -> Self {
        Self::default()
    }
}

impl SinkWriter for StdoutSinkWriter {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        std::io::stdout()
            .lock()
            .write_all(data)
            .map_err(|e| Error::runtime(SERVICE, format!("cannot write to standard output: {e}")))
    }

    fn finish(&mut self) -> Result<()> {
        std::io::stdout()
            .lock()
            .flush()
            .map_err(|e| Error::runtime(SERVICE, format!("cannot flush standard output: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_finishes() {
        let mut writer = StdoutSinkWriter::new();
        writer.write(b"stdout sink test line\n").unwrap();
        writer.finish().unwrap();
    }
}
