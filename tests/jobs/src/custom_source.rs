//! `--job custom-source --splits S --per-split N --rate R`: a source the job implements
//! (`SplitSource`) with `S` splits of `N` numbers each (split `i` holds `i*N .. (i+1)*N`), read at
//! about `R` records per second per split, written as text exactly once: the output is every
//! number once, whatever fails.

use std::time::Instant;
use weir_api::prelude::*;
use weir_api::source::{ReadStatus, SourceContext, SplitSource};

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
    env.from_source(ThrottledRanges { splits, per_split, rate, started: None, read: 0 }, None)
        .uid("ranges")
        .map(|n: u64| n.to_string())
        .uid("format")
        .write_as_text(args.required("output")?)
        .uid("sink");
    Ok(())
}
