//! Async I/O on the mini-cluster: ordered and unordered waits, watermarks that results do not
//! pass, timeouts, and the bound on requests in flight. Expected outputs are derived by hand.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use weir_api::prelude::*;
use weir_jobmanager::JobStatus;
use weir_tests::harness::{read_lines, run_job, sorted};

fn out(args: &JobArgs, name: &str) -> Result<String> {
    Ok(format!("{}/{name}", args.required("output")?))
}

/// The lines of the one part file in `dir`, in file order.
fn lines_in_order(dir: &std::path::Path) -> Vec<String> {
    let files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::read_to_string(&files[0]).unwrap().lines().map(str::to_owned).collect()
}

/// Answers `n` after `delay(n)` ms with `n`, counting the requests in flight.
#[derive(Clone)]
struct Delayed {
    delay: fn(u64) -> u64,
}

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static MOST_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

impl AsyncFunction<u64, String> for Delayed {
    fn invoke(&self, n: u64) -> AsyncResult<String> {
        let delay = Duration::from_millis((self.delay)(n));
        async_result(async move {
            let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
            MOST_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
            Ok(vec![n.to_string()])
        })
    }
}

// 1..=12 where later records answer sooner (record n after (13 - n) * 15 ms), at most 4 in
// flight: ordered, the results still leave as 1, 2, ..., 12; unordered, the file differs
// from that order (the last records overtake the first).
fn ordering(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let numbers = env.from_collection((1..=12).collect::<Vec<u64>>());
    let delayed = Delayed { delay: |n| (13 - n) * 15 };
    numbers.ordered_wait(delayed.clone(), Duration::from_secs(5), 4).write_as_text(out(args, "ordered")?);
    numbers.unordered_wait(delayed, Duration::from_secs(5), 4).write_as_text(out(args, "unordered")?);
    Ok(())
}

#[test]
fn ordered_results_leave_in_input_order_and_unordered_ones_as_they_complete() {
    let dir = tempfile::tempdir().unwrap();
    MOST_IN_FLIGHT.store(0, Ordering::SeqCst);
    let details = run_job(ordering, &["--output", dir.path().to_str().unwrap()], 1);
    assert_eq!(details.state, JobStatus::Finished, "{details:?}");
    let expected: Vec<String> = (1..=12).map(|n: u64| n.to_string()).collect();
    assert_eq!(lines_in_order(&dir.path().join("ordered")), expected);
    let unordered = lines_in_order(&dir.path().join("unordered"));
    assert_ne!(unordered, expected);
    let mut sorted_unordered: Vec<u64> = unordered.iter().map(|l| l.parse().unwrap()).collect();
    sorted_unordered.sort_unstable();
    assert_eq!(sorted_unordered, (1..=12).collect::<Vec<u64>>());
    // Two operators, each with at most 4 requests in flight.
    let most = MOST_IN_FLIGHT.load(Ordering::SeqCst);
    assert!((2..=8).contains(&most), "at most 8 requests in flight, and some at once: {most}");
}

/// Answers a record of key `k` with `k`, slow for "a".
#[derive(Clone)]
struct Lookup;

impl AsyncFunction<(String, i64), (String, i64)> for Lookup {
    fn invoke(&self, record: (String, i64)) -> AsyncResult<(String, i64)> {
        async_result(async move {
            if record.0 == "a" {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok(vec![record])
        })
    }
}

#[derive(Clone)]
struct Count;

impl AggregateFunction<(String, i64), u64, u64> for Count {
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, _: (String, i64), acc: u64) -> u64 {
        acc + 1
    }
    fn get_result(&self, acc: u64) -> u64 {
        acc
    }
    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

// a@1000 (answered after 300 ms), b@1500 (at once), W(1999), c@2500. Unordered, b leaves before
// a, but the watermark 1999 must wait for a: windows of 1 s then count [1000,2000) = 2 and
// [2000,3000) = 1. Had W(1999) passed a, a would be late and [1000,2000) would count 1.
fn watermarks(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let events = vec![
        TimedEvent::record(("a".to_owned(), 1000), 1000),
        TimedEvent::record(("b".to_owned(), 1500), 1500),
        TimedEvent::Watermark(1999),
        TimedEvent::record(("c".to_owned(), 2500), 2500),
    ];
    let looked_up = env.from_timed_events(events).unordered_wait(Lookup, Duration::from_secs(5), 10);
    looked_up.map(|r: (String, i64)| r.0).write_as_text(out(args, "arrival")?);
    looked_up
        .key_by(|_: &(String, i64)| 0_u8)
        .window(TumblingEventTimeWindows::of(Duration::from_secs(1)))
        .aggregate_with(Count, |_: &u8, w: &TimeWindow, c: Vec<u64>, out: &mut Collector<'_, String>| {
            out.collect(format!("{},{}", w.start, c[0]));
        })
        .write_as_text(out(args, "counts")?);
    Ok(())
}

#[test]
fn unordered_results_do_not_pass_a_watermark_that_followed_their_input() {
    let dir = tempfile::tempdir().unwrap();
    let details = run_job(watermarks, &["--output", dir.path().to_str().unwrap()], 1);
    assert_eq!(details.state, JobStatus::Finished, "{details:?}");
    assert_eq!(lines_in_order(&dir.path().join("arrival")), ["b", "a", "c"]);
    assert_eq!(read_lines(&dir.path().join("counts")), sorted(&["1000,2", "2000,1"]));
}

/// Never answers 7 (within the test); its timeout handler answers `7-timeout`.
#[derive(Clone)]
struct Hangs {
    fallback: bool,
}

impl AsyncFunction<u64, String> for Hangs {
    fn invoke(&self, n: u64) -> AsyncResult<String> {
        async_result(async move {
            if n == 7 {
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
            Ok(vec![n.to_string()])
        })
    }
    fn timeout(&self, n: u64) -> Result<Vec<String>> {
        if self.fallback {
            Ok(vec![format!("{n}-timeout")])
        } else {
            Err(Error::user(format!("lookup of {n} timed out")))
        }
    }
}

fn timeouts(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let fallback = args.has("fallback");
    env.from_collection((1..=10).collect::<Vec<u64>>())
        .ordered_wait(Hangs { fallback }, Duration::from_millis(200), 5)
        .write_as_text(out(args, "out")?);
    Ok(())
}

#[test]
fn a_request_that_times_out_gets_the_functions_answer_or_fails_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let details = run_job(timeouts, &["--output", dir.path().to_str().unwrap(), "--fallback"], 1);
    assert_eq!(details.state, JobStatus::Finished, "{details:?}");
    let mut expected: Vec<String> = (1..=10).map(|n: u64| n.to_string()).collect();
    expected[6] = "7-timeout".into();
    assert_eq!(lines_in_order(&dir.path().join("out")), expected);

    let dir = tempfile::tempdir().unwrap();
    let details = run_job(timeouts, &["--output", dir.path().to_str().unwrap()], 1);
    assert_eq!(details.state, JobStatus::Failed, "{details:?}");
    let failure = details.failure.unwrap_or_default();
    assert!(failure.contains("lookup of 7 timed out"), "{failure}");
}
