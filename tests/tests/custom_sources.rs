//! Sources a job implements (`SplitSource`) on the mini-cluster: every split read once at any
//! parallelism, and watermarks per split. Expected outputs are derived by hand.

use std::time::Duration;
use weir_api::prelude::*;
use weir_api::source::{ReadStatus, SourceContext, SplitSource};
use weir_jobmanager::JobStatus;
use weir_tests::harness::{read_lines, run_job};

fn out(args: &JobArgs, name: &str) -> Result<String> {
    Ok(format!("{}/{name}", args.required("output")?))
}

/// Splits `(next, end, step)`: the numbers `next, next + 1, ..` up to `end`, record `n` at event
/// time `n * step`.
#[derive(Clone)]
struct Ranges(Vec<(u64, u64, i64)>);

impl SplitSource<u64> for Ranges {
    type Split = (u64, u64, i64);
    fn splits(&mut self) -> Result<Vec<(u64, u64, i64)>> {
        Ok(self.0.clone())
    }
    fn read(
        &mut self,
        split: &mut (u64, u64, i64),
        max: usize,
        out: &mut SourceContext<'_, u64>,
    ) -> Result<ReadStatus> {
        for _ in 0..max {
            if split.0 >= split.1 {
                return Ok(ReadStatus::Finished);
            }
            out.collect_with_timestamp(split.0, split.0 as i64 * split.2);
            split.0 += 1;
        }
        Ok(ReadStatus::More)
    }
}

// Five splits of 0..5000 in ranges of 1000: every number once, whatever the parallelism.
fn ranges(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let splits = (0..5).map(|i| (i * 1000, (i + 1) * 1000, 1)).collect();
    env.from_source(Ranges(splits), None).map(|n: u64| n.to_string()).write_as_text(out(args, "numbers")?);
    Ok(())
}

#[test]
fn a_split_source_reads_every_split_once_at_any_parallelism() {
    let mut expected: Vec<String> = (0..5000u64).map(|n| n.to_string()).collect();
    expected.sort();
    for p in [1, 2, 3, 7] {
        let dir = tempfile::tempdir().unwrap();
        let details = run_job(ranges, &["--output", dir.path().to_str().unwrap()], p);
        assert_eq!(details.state, JobStatus::Finished, "{details:?}");
        assert!(read_lines(&dir.path().join("numbers")) == expected, "p={p}: not every number exactly once");
    }
}

// One subtask reads two splits whose event time advances at rates 10 times apart: split 0 holds
// 0..1000 at 10 ms steps (0..9990), split 1 holds 0..10000 at 1 ms steps. The first round reads
// all of split 0 but only 1024 records of split 1: a watermark over the records as they come
// would be at 9990 and make most of split 1 late; per split, the minimum (split 0 finished,
// split 1 behind) keeps it. Each 1 s window counts 100 + 1000 = 1100.
fn skewed(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let splits = vec![(0, 1000, 10), (0, 10_000, 1)];
    env.from_source(Ranges(splits), Some(WatermarkStrategy::for_monotonous_timestamps()))
        .set_parallelism(1)
        .key_by(|_: &u64| 0u8)
        .window(TumblingEventTimeWindows::of(Duration::from_secs(1)))
        .process(|_: &u8, w: &TimeWindow, v: Vec<u64>, out: &mut Collector<'_, String>| {
            out.collect(format!("{},{}", w.start, v.len()));
        })
        .write_as_text(out(args, "counts")?);
    Ok(())
}

#[test]
fn watermarks_per_split_drop_no_record_of_a_slower_split_as_late() {
    let dir = tempfile::tempdir().unwrap();
    let details = run_job(skewed, &["--output", dir.path().to_str().unwrap()], 1);
    assert_eq!(details.state, JobStatus::Finished, "{details:?}");
    let mut expected: Vec<String> = (0..10).map(|s| format!("{},1100", s * 1000)).collect();
    expected.sort();
    assert_eq!(read_lines(&dir.path().join("counts")), expected);
}

/// Collects what it is given in a shared list, flushed into a second list at `flush`.
#[derive(Clone, Default)]
struct Shared {
    written: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    flushed: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
}

static SHARED: std::sync::LazyLock<Shared> = std::sync::LazyLock::new(Shared::default);

impl weir_api::sink::SinkFunction<u64> for Shared {
    fn write(&mut self, value: u64, _: Option<Timestamp>) -> Result<()> {
        self.written.lock().unwrap().push(value);
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        let mut written = self.written.lock().unwrap();
        self.flushed.lock().unwrap().append(&mut written);
        Ok(())
    }
}

fn to_custom_sink(env: &mut StreamExecutionEnvironment, _: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    env.from_source(Ranges(vec![(0, 700, 1), (700, 1000, 1)]), None).sink_to(SHARED.clone());
    Ok(())
}

// Every record reaches the sink and is flushed by the end of the input.
#[test]
fn a_custom_sink_writes_every_record_and_flushes_at_the_end() {
    let details = run_job(to_custom_sink, &[], 3);
    assert_eq!(details.state, JobStatus::Finished, "{details:?}");
    let mut flushed = SHARED.flushed.lock().unwrap().clone();
    flushed.sort_unstable();
    assert_eq!(flushed, (0..1000).collect::<Vec<u64>>());
    assert!(SHARED.written.lock().unwrap().is_empty(), "everything written was flushed");
}
