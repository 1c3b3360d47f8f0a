//! Process functions and rich functions on the mini-cluster: side outputs from any process
//! function, non-keyed process and co-process, rich map/filter/flat_map with `open` and `close`,
//! and `close` after a failure. Every expected output is derived by hand in the comments.

use std::sync::LazyLock;
use weir_api::prelude::*;
use weir_jobmanager::JobStatus;
use weir_tests::harness::{read_lines, run_job, sorted};

fn out(args: &JobArgs, name: &str) -> Result<String> {
    Ok(format!("{}/{name}", args.required("output")?))
}

static INVALID: LazyLock<OutputTag<String>> = LazyLock::new(|| OutputTag::new("invalid"));
static NEGATIVE: LazyLock<OutputTag<i64>> = LazyLock::new(|| OutputTag::new("negative"));
static AUDIT: LazyLock<OutputTag<String>> = LazyLock::new(|| OutputTag::new("audit"));

/// Parses numbers: positive ones go on, unparsable lines to `invalid`, negative numbers to
/// `negative`; every line is also sent to `audit`, which no stream reads (dropped, as in Flink).
#[derive(Clone)]
struct Validate;

impl ProcessFunction<String, i64> for Validate {
    fn process_element(&mut self, line: String, ctx: &mut ProcessContext<'_, i64>) -> Result<()> {
        ctx.output(&AUDIT, line.clone());
        match line.trim().parse::<i64>() {
            Ok(n) if n < 0 => ctx.output(&NEGATIVE, n),
            Ok(n) => ctx.collect(n),
            Err(_) => ctx.output(&INVALID, line),
        }
        Ok(())
    }
}

// 1, 2, 40 are valid; "x" and "" are invalid; -3 and -50 are negative.
fn validation(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let lines = ["1", "x", "2", "-3", "", "40", "-50"].map(String::from).to_vec();
    let valid = env.from_collection(lines).process(Validate);
    valid.map(|n: i64| n * 10).write_as_text(out(args, "valid")?);
    valid.side_output(&INVALID).map(|l: String| format!("invalid:'{l}'")).write_as_text(out(args, "invalid")?);
    valid.side_output(&NEGATIVE).write_as_text(out(args, "negative")?);
    Ok(())
}

#[test]
fn a_process_function_routes_records_to_side_outputs() {
    for p in [1, 3] {
        let dir = tempfile::tempdir().unwrap();
        let details = run_job(validation, &["--output", dir.path().to_str().unwrap()], p);
        assert_eq!(details.state, JobStatus::Finished, "{details:?}");
        assert_eq!(read_lines(&dir.path().join("valid")), sorted(&["10", "20", "400"]));
        assert_eq!(read_lines(&dir.path().join("invalid")), sorted(&["invalid:''", "invalid:'x'"]));
        assert_eq!(read_lines(&dir.path().join("negative")), sorted(&["-3", "-50"]));
    }
}

static FIRED: LazyLock<OutputTag<String>> = LazyLock::new(|| OutputTag::new("fired"));
const COUNT: ValueStateDescriptor<u64> = ValueStateDescriptor::new("count");

/// Counts per key; the first element of a key sets an event-time timer 1 s later, which emits
/// the count and reports itself to the side output `fired`. Values below zero go to `negative`
/// and are not counted.
#[derive(Clone)]
struct CountUntilTimer;

impl KeyedProcessFunction<String, (String, i64), String> for CountUntilTimer {
    fn states(&self) -> Vec<DeclaredState> {
        vec![COUNT.declared()]
    }
    fn process_element(&mut self, (_, v): (String, i64), ctx: &mut KeyedContext<'_, String, String>) -> Result<()> {
        if v < 0 {
            ctx.output(&NEGATIVE, v);
            return Ok(());
        }
        let ts = ctx.timestamp().unwrap_or_default();
        let count = ctx.value_state(&COUNT)?.value()?.unwrap_or(0);
        if count == 0 {
            ctx.timer_service().register_event_time_timer(ts + 1000);
        }
        ctx.value_state(&COUNT)?.update(&(count + 1))?;
        Ok(())
    }
    fn on_timer(&mut self, timestamp: Timestamp, ctx: &mut KeyedContext<'_, String, String>) -> Result<()> {
        let count = ctx.value_state(&COUNT)?.value()?.unwrap_or(0);
        let key = ctx.key().clone();
        ctx.collect(format!("{key},{count}"));
        ctx.output(&FIRED, format!("{key}@{timestamp}"));
        ctx.value_state(&COUNT)?.clear()?;
        Ok(())
    }
}

// a@1000 sets a timer at 2000; a@1500 counts; b@1500 sets 2500; a@-1 (value -7) goes to
// `negative`; W(2000) fires a's timer: "a,2", side "a@2000". b@2400 counts; at the end the final
// watermark fires b's: "b,2", side "b@2500".
fn keyed_timers(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let r = |k: &str, v: i64, ts: i64| TimedEvent::record((k.to_owned(), v), ts);
    let events = vec![
        r("a", 1, 1000),
        r("a", 1, 1500),
        r("b", 1, 1500),
        r("a", -7, 1600),
        TimedEvent::Watermark(2000),
        r("b", 1, 2400),
    ];
    let counts = env.from_timed_events(events).key_by(|e: &(String, i64)| e.0.clone()).process(CountUntilTimer);
    counts.write_as_text(out(args, "counts")?);
    counts.side_output(&FIRED).write_as_text(out(args, "fired")?);
    counts.side_output(&NEGATIVE).write_as_text(out(args, "negative")?);
    Ok(())
}

#[test]
fn a_keyed_process_function_emits_side_outputs_from_elements_and_timers() {
    for p in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let details = run_job(keyed_timers, &["--output", dir.path().to_str().unwrap()], p);
        assert_eq!(details.state, JobStatus::Finished, "{details:?}");
        assert_eq!(read_lines(&dir.path().join("counts")), sorted(&["a,2", "b,2"]));
        assert_eq!(read_lines(&dir.path().join("fired")), sorted(&["a@2000", "b@2500"]));
        assert_eq!(read_lines(&dir.path().join("negative")), sorted(&["-7"]));
    }
}

static REJECTED: LazyLock<OutputTag<String>> = LazyLock::new(|| OutputTag::new("rejected"));

/// Orders (first input) pass when their amount is at most the limit; limit changes (second
/// input) are echoed; refused orders go to `rejected`. Non-keyed: the limit is per subtask, so
/// the test runs the operator at parallelism 1.
#[derive(Clone)]
struct Limit(u32);

impl CoProcessFunction<u32, u32, String> for Limit {
    fn process_element1(&mut self, amount: u32, ctx: &mut ProcessContext<'_, String>) -> Result<()> {
        if amount <= self.0 {
            ctx.collect(format!("order {amount}"));
        } else {
            ctx.output(&REJECTED, format!("order {amount} over {}", self.0));
        }
        Ok(())
    }
    fn process_element2(&mut self, limit: u32, ctx: &mut ProcessContext<'_, String>) -> Result<()> {
        self.0 = limit;
        ctx.collect(format!("limit {limit}"));
        Ok(())
    }
}

// The limit stream is empty, so the limit stays 10: orders 5 and 10 pass, 11 and 99 are rejected.
fn co_process(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let orders = env.from_collection(vec![5_u32, 11, 10, 99]);
    let limits = env.from_collection(Vec::<u32>::new());
    let passed = orders.connect(&limits).process(Limit(10)).set_parallelism(1);
    passed.write_as_text(out(args, "passed")?);
    passed.side_output(&REJECTED).write_as_text(out(args, "rejected")?);
    Ok(())
}

#[test]
fn a_non_keyed_co_process_function_has_side_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let details = run_job(co_process, &["--output", dir.path().to_str().unwrap()], 2);
    assert_eq!(details.state, JobStatus::Finished, "{details:?}");
    assert_eq!(read_lines(&dir.path().join("passed")), sorted(&["order 10", "order 5"]));
    assert_eq!(read_lines(&dir.path().join("rejected")), sorted(&["order 11 over 10", "order 99 over 10"]));
}

/// A rich map that numbers the records of its subtask (per-subtask state set in `open`) and
/// writes `<subtask> <records>` to a file in `close`. It fails on the value `fail_on`.
#[derive(Clone)]
struct Numbering {
    closed_dir: String,
    fail_on: Option<u64>,
    subtask: u32,
    seen: u64,
}

impl RichMapFunction<u64, String> for Numbering {
    fn open(&mut self, ctx: &RuntimeContext<'_>) -> Result<()> {
        self.subtask = ctx.task_info().subtask;
        Ok(())
    }
    fn map(&mut self, value: u64) -> Result<String> {
        if Some(value) == self.fail_on {
            return Err(Error::user(format!("value {value} is not allowed")));
        }
        self.seen += 1;
        Ok(format!("{value}:{}", value * 2))
    }
    fn close(&mut self) -> Result<()> {
        let path = format!("{}/{}", self.closed_dir, self.subtask);
        std::fs::write(&path, format!("{} {}", self.subtask, self.seen))
            .map_err(|e| Error::InvalidArgument(e.to_string()))
    }
}

/// Keeps even numbers, counting the odd ones it drops (reported in `close`).
#[derive(Clone)]
struct Evens {
    closed_dir: String,
    subtask: u32,
    dropped: u64,
}

impl RichFilterFunction<u64> for Evens {
    fn open(&mut self, ctx: &RuntimeContext<'_>) -> Result<()> {
        self.subtask = ctx.task_info().subtask;
        Ok(())
    }
    fn filter(&mut self, value: &u64) -> Result<bool> {
        let keep = value.is_multiple_of(2);
        self.dropped += u64::from(!keep);
        Ok(keep)
    }
    fn close(&mut self) -> Result<()> {
        let path = format!("{}/filter-{}", self.closed_dir, self.subtask);
        std::fs::write(path, self.dropped.to_string()).map_err(|e| Error::InvalidArgument(e.to_string()))
    }
}

/// Emits `n` copies of `n` for n up to 3.
#[derive(Clone)]
struct Repeat;

impl RichFlatMapFunction<u64, u64> for Repeat {
    fn flat_map(&mut self, value: u64, out: &mut Collector<'_, u64>) -> Result<()> {
        for _ in 0..value.min(3) {
            out.collect(value);
        }
        Ok(())
    }
}

fn rich(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let closed = args.required("closed")?.to_owned();
    let fail_on =
        args.get("fail-on").map(|v| v.parse::<u64>()).transpose().map_err(|e| Error::InvalidArgument(e.to_string()))?;
    env.from_generator(GeneratorSource::bounded(10), |n| n)
        .filter_rich(Evens { closed_dir: closed.clone(), subtask: 0, dropped: 0 })
        .flat_map_rich(Repeat)
        .map_rich(Numbering { closed_dir: closed, fail_on, subtask: 0, seen: 0 })
        .write_as_text(out(args, "out")?);
    Ok(())
}

fn closed_files(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

// 1..=10, evens 2,4,6,8,10 (5 odds dropped); copies: 2 twice, 4, 6, 8, 10 three times each;
// mapped to "n:2n". 14 records in all.
#[test]
fn rich_functions_open_and_close_once_per_subtask() {
    let dir = tempfile::tempdir().unwrap();
    let closed = dir.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    let args = ["--output", dir.path().to_str().unwrap(), "--closed", closed.to_str().unwrap()];
    let details = run_job(rich, &args, 2);
    assert_eq!(details.state, JobStatus::Finished, "{details:?}");
    let mut expected = vec!["2:4", "2:4"];
    for n in ["4:8", "6:12", "8:16", "10:20"] {
        expected.extend([n; 3]);
    }
    assert_eq!(read_lines(&dir.path().join("out")), sorted(&expected));
    let files = closed_files(&closed);
    // Each map subtask closed once and saw its share; together all 14.
    let maps: Vec<&(String, String)> = files.iter().filter(|(name, _)| !name.starts_with("filter-")).collect();
    assert_eq!(maps.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(), ["0", "1"]);
    let seen: u64 = maps.iter().map(|(_, c)| c.split(' ').nth(1).unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(seen, 14);
    // Each of the two filter instances closed once; together they dropped the 5 odd numbers.
    let filters: Vec<u64> =
        files.iter().filter(|(name, _)| name.starts_with("filter-")).map(|(_, c)| c.parse().unwrap()).collect();
    assert_eq!(filters.len(), 2, "{files:?}");
    assert_eq!(filters.iter().sum::<u64>(), 5);
}

// A map that fails on 6 fails the job, and every subtask's `close` still ran.
#[test]
fn close_runs_when_the_task_fails() {
    let dir = tempfile::tempdir().unwrap();
    let closed = dir.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    let args = ["--output", dir.path().to_str().unwrap(), "--closed", closed.to_str().unwrap(), "--fail-on", "6"];
    let details = run_job(rich, &args, 1);
    assert_eq!(details.state, JobStatus::Failed, "{details:?}");
    let failure = details.failure.unwrap_or_default();
    assert!(failure.contains("value 6 is not allowed"), "{failure}");
    let files = closed_files(&closed);
    assert!(files.iter().any(|(name, _)| name == "0"), "the failed map did not close: {files:?}");
    assert!(files.iter().any(|(name, _)| name.starts_with("filter-")), "the filter did not close: {files:?}");
}

static TYPED: LazyLock<OutputTag<u64>> = LazyLock::new(|| OutputTag::new("typed"));

/// Emits to the tag `typed` as a `String`, while the job reads `typed` as `u64`.
#[derive(Clone)]
struct WrongType;

impl ProcessFunction<u64, u64> for WrongType {
    fn process_element(&mut self, value: u64, ctx: &mut ProcessContext<'_, u64>) -> Result<()> {
        ctx.output(&OutputTag::<String>::new("typed"), value.to_string());
        Ok(())
    }
}

fn wrong_type(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let stream = env.from_collection(vec![1_u64]).process(WrongType);
    stream.write_as_text(out(args, "main")?);
    stream.side_output(&TYPED).write_as_text(out(args, "typed")?);
    Ok(())
}

#[test]
fn a_side_output_emitted_with_another_type_than_it_is_read_fails_the_job_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let details = run_job(wrong_type, &["--output", dir.path().to_str().unwrap()], 1);
    assert_eq!(details.state, JobStatus::Failed, "{details:?}");
    let failure = details.failure.unwrap_or_default();
    assert!(failure.contains("side output 'typed' is emitted as alloc::string::String"), "{failure}");
}

const SUM: ReducingStateDescriptor<i64> = ReducingStateDescriptor::new("sum", |a, b| a + b);

/// The mean of the values: `(sum, count)`.
struct Mean;

impl AggregateFunction<i64, (i64, u64), f64> for Mean {
    fn create_accumulator(&self) -> (i64, u64) {
        (0, 0)
    }
    fn add(&self, value: i64, (sum, count): (i64, u64)) -> (i64, u64) {
        (sum + value, count + 1)
    }
    fn get_result(&self, (sum, count): (i64, u64)) -> f64 {
        sum as f64 / count as f64
    }
    fn merge(&self, a: (i64, u64), b: (i64, u64)) -> (i64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

const MEAN: AggregatingStateDescriptor<i64, (i64, u64), f64> = AggregatingStateDescriptor::new("mean", &Mean);

/// Keeps a reducing sum and an aggregating mean per key; emits both at the end (event-time
/// timer at the largest timestamp).
#[derive(Clone)]
struct SumAndMean;

impl KeyedProcessFunction<String, (String, i64), String> for SumAndMean {
    fn states(&self) -> Vec<DeclaredState> {
        vec![SUM.declared(), MEAN.declared()]
    }
    fn process_element(&mut self, (_, v): (String, i64), ctx: &mut KeyedContext<'_, String, String>) -> Result<()> {
        ctx.reducing_state(&SUM)?.add(v)?;
        ctx.aggregating_state(&MEAN)?.add(v)?;
        ctx.timer_service().register_event_time_timer(i64::MAX - 1);
        Ok(())
    }
    fn on_timer(&mut self, _: Timestamp, ctx: &mut KeyedContext<'_, String, String>) -> Result<()> {
        let sum = ctx.reducing_state(&SUM)?.get()?.unwrap_or_default();
        let mean = ctx.aggregating_state(&MEAN)?.get()?.unwrap_or_default();
        let key = ctx.key().clone();
        ctx.collect(format!("{key},{sum},{mean}"));
        Ok(())
    }
}

// a: 1, 2, 6 -> sum 9, mean 3; b: -4 -> sum -4, mean -4.
fn reducing(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let r = |k: &str, v: i64| TimedEvent::record((k.to_owned(), v), 1000);
    env.from_timed_events(vec![r("a", 1), r("b", -4), r("a", 2), r("a", 6)])
        .key_by(|e: &(String, i64)| e.0.clone())
        .process(SumAndMean)
        .write_as_text(out(args, "out")?);
    Ok(())
}

#[test]
fn reducing_and_aggregating_state_fold_each_added_value() {
    let dir = tempfile::tempdir().unwrap();
    let details = run_job(reducing, &["--output", dir.path().to_str().unwrap()], 2);
    assert_eq!(details.state, JobStatus::Finished, "{details:?}");
    assert_eq!(read_lines(&dir.path().join("out")), sorted(&["a,9,3", "b,-4,-4"]));
}

fn flat_map_side_output(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    env.from_collection(vec![1_u64])
        .flat_map(|v: u64, out: &mut Collector<'_, u64>| out.output(&TYPED, v))
        .write_as_text(out(args, "main")?);
    Ok(())
}

#[test]
fn a_flat_map_asking_for_a_side_output_fails_the_job_instead_of_dropping_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let details = run_job(flat_map_side_output, &["--output", dir.path().to_str().unwrap()], 1);
    assert_eq!(details.state, JobStatus::Failed, "{details:?}");
    let failure = details.failure.unwrap_or_default();
    assert!(failure.contains("a flat map has no side outputs: emit them from a process function"), "{failure}");
}
