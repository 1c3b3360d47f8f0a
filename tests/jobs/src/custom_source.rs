//! `--job custom-source --splits S --per-split N --rate R [--sink append|transactional]`: a
//! source the job implements (`SplitSource`) with `S` splits of `N` numbers each (split `i`
//! holds `i*N .. (i+1)*N`), read at about `R` records per second per split, written as text
//! exactly once (the output is every number once, whatever fails); with `--sink append` by a
//! sink the job implements (`SinkFunction`) that appends to `part-custom-<subtask>.txt` at least
//! once (every number, some perhaps twice); with `--sink transactional` by a sink the job
//! implements (`TwoPhaseCommitSink`) exactly once: each transaction is a hidden file renamed
//! into view when its checkpoint completes.

use std::io::Write as _;
use std::time::Instant;
use weir_api::prelude::*;
use weir_api::runtime::CheckpointId;
use weir_api::sink::{Committer, SinkFunction, TwoPhaseCommitSink};
use weir_api::source::{ReadStatus, SourceContext, SplitSource};

/// Appends lines to `part-custom-<subtask>.txt` in a directory, at least once: `flush` syncs.
#[derive(Clone)]
struct AppendLines {
    directory: String,
    file: Option<std::sync::Arc<std::sync::Mutex<std::io::BufWriter<std::fs::File>>>>,
}

fn io(e: std::io::Error) -> Error {
    Error::user(format!("custom sink: {e}"))
}

impl SinkFunction<String> for AppendLines {
    fn open(&mut self, ctx: &RuntimeContext<'_>) -> Result<()> {
        std::fs::create_dir_all(&self.directory).map_err(io)?;
        let path = format!("{}/part-custom-{}.txt", self.directory, ctx.task_info().subtask);
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
        self.file = Some(std::sync::Arc::new(std::sync::Mutex::new(std::io::BufWriter::new(file))));
        Ok(())
    }
    fn write(&mut self, line: String, _: Option<Timestamp>) -> Result<()> {
        let file = self.file.as_ref().ok_or_else(|| Error::user("append sink used before open"))?;
        let mut file = file.lock().map_err(|_| Error::user("append sink poisoned"))?;
        writeln!(file, "{line}").map_err(io)
    }
    fn flush(&mut self) -> Result<()> {
        let Some(file) = self.file.as_ref() else { return Ok(()) };
        let mut file = file.lock().map_err(|_| Error::user("append sink poisoned"))?;
        file.flush().map_err(io)?;
        file.get_ref().sync_data().map_err(io)
    }
}

/// Lines into a directory exactly once: the records between two barriers go to a hidden file
/// `.txn-<subtask>-<attempt>-<checkpoint>`, synced at the barrier and renamed to
/// `part-txn-<subtask>-<attempt>-<checkpoint>.txt` when the checkpoint completes.
#[derive(Clone)]
struct StagedFiles {
    directory: std::path::PathBuf,
    /// `<subtask>-<attempt>`, set by `open`.
    run: String,
    lines: String,
}

/// One pre-committed transaction: its hidden file and the name it is committed under.
#[derive(serde::Serialize, serde::Deserialize)]
struct StagedFile {
    hidden: std::path::PathBuf,
    visible: std::path::PathBuf,
}

struct RenameIntoView;

impl Committer<StagedFile> for RenameIntoView {
    fn commit(&self, files: &[StagedFile]) -> Result<()> {
        for file in files {
            match std::fs::rename(&file.hidden, &file.visible) {
                Ok(()) => {}
                // Committed before (the commit is repeated after a restore).
                Err(_) if file.visible.exists() && !file.hidden.exists() => {}
                Err(e) => return Err(Error::user(format!("cannot commit {}: {e}", file.hidden.display()))),
            }
        }
        Ok(())
    }
}

impl TwoPhaseCommitSink<String> for StagedFiles {
    type Committable = StagedFile;
    type Committer = RenameIntoView;

    fn open(&mut self, ctx: &RuntimeContext<'_>) -> Result<()> {
        std::fs::create_dir_all(&self.directory).map_err(io)?;
        self.run = format!("{}-{}", ctx.task_info().subtask, ctx.task_info().attempt);
        Ok(())
    }
    fn write(&mut self, line: String, _: Option<Timestamp>) -> Result<()> {
        self.lines.push_str(&line);
        self.lines.push('\n');
        Ok(())
    }
    fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<Vec<StagedFile>> {
        if self.lines.is_empty() {
            return Ok(Vec::new());
        }
        let name = format!("{}-{checkpoint}", self.run);
        let staged = StagedFile {
            hidden: self.directory.join(format!(".txn-{name}")),
            visible: self.directory.join(format!("part-txn-{name}.txt")),
        };
        let mut file = std::fs::File::create(&staged.hidden).map_err(io)?;
        file.write_all(std::mem::take(&mut self.lines).as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(vec![staged])
    }
    fn committer(&self) -> RenameIntoView {
        RenameIntoView
    }
}

#[derive(Clone)]
struct ThrottledRanges {
    splits: u64,
    per_split: u64,
    rate: f64,
    /// When this subtask opened, and how many records it read since.
    started: Option<Instant>,
    read: u64,
}

impl SplitSource<u64> for ThrottledRanges {
    /// `(next, end)`.
    type Split = (u64, u64);

    fn open(&mut self, _ctx: &RuntimeContext<'_>) -> Result<()> {
        self.started = Some(Instant::now());
        Ok(())
    }

    fn splits(&mut self) -> Result<Vec<(u64, u64)>> {
        Ok((0..self.splits).map(|i| (i * self.per_split, (i + 1) * self.per_split)).collect())
    }

    fn read(&mut self, split: &mut (u64, u64), max: usize, out: &mut SourceContext<'_, u64>) -> Result<ReadStatus> {
        let elapsed = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        let allowed = ((elapsed * self.rate * self.splits as f64) as u64).saturating_sub(self.read);
        if allowed == 0 && split.0 < split.1 {
            return Ok(ReadStatus::Idle);
        }
        for _ in 0..max.min(allowed as usize) {
            if split.0 >= split.1 {
                break;
            }
            out.collect(split.0);
            split.0 += 1;
            self.read += 1;
        }
        Ok(if split.0 >= split.1 { ReadStatus::Finished } else { ReadStatus::More })
    }
}

pub fn custom_source(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    let splits: u64 = args.parse_required("splits")?;
    let per_split: u64 = args.parse_required("per-split")?;
    let rate: f64 = args.parse_required("rate")?;
    if !(rate > 0.0 && rate.is_finite()) {
        return Err(Error::InvalidArgument("--rate must be positive".into()));
    }
    env.set_job_name("test custom-source");
    let lines = env
        .from_source(ThrottledRanges { splits, per_split, rate, started: None, read: 0 }, None)
        .uid("ranges")
        .map(|n: u64| n.to_string())
        .uid("format");
    let output = args.required("output")?;
    match args.get("sink") {
        // At least once, through a sink the job implements.
        Some("append") => {
            lines.sink_to(AppendLines { directory: output.to_owned(), file: None }).uid("sink");
        }
        // Exactly once, through a sink the job implements.
        Some("transactional") => {
            let sink = StagedFiles { directory: output.into(), run: String::new(), lines: String::new() };
            lines.sink_to_transactional(sink).uid("sink");
        }
        _ => {
            lines.write_as_text(output).uid("sink");
        }
    }
    Ok(())
}
