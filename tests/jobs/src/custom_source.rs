//! `--job custom-source --splits S --per-split N --rate R [--sink append]`: a source the job
//! implements (`SplitSource`) with `S` splits of `N` numbers each (split `i` holds
//! `i*N .. (i+1)*N`), read at about `R` records per second per split, written as text exactly
//! once (the output is every number once, whatever fails), or with `--sink append` by a sink the
//! job implements (`SinkFunction`) that appends to `part-custom-<subtask>.txt` at least once
//! (every number, some perhaps twice).

use std::io::Write as _;
use std::time::Instant;
use weir_api::prelude::*;
use weir_api::source::{ReadStatus, SinkFunction, SourceContext, SplitSource};

/// Appends lines to `part-custom-<subtask>.txt` in a directory, at least once: `flush` syncs.
#[derive(Clone)]
struct AppendLines {
    directory: String,
    file: Option<std::sync::Arc<std::sync::Mutex<std::io::BufWriter<std::fs::File>>>>,
}

fn io(e: std::io::Error) -> Error {
    Error::user(format!("append sink: {e}"))
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
        _ => {
            lines.write_as_text(output).uid("sink");
        }
    }
    Ok(())
}
