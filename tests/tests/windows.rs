//! Count windows, global windows with triggers, evictors and `window_all` on the mini-cluster.
//! Every expected output is derived by hand in the comments.

use std::time::Duration;
use weir_api::prelude::*;
use weir_jobmanager::JobStatus;
use weir_tests::harness::{read_lines, run_job, sorted};

fn out(args: &JobArgs, name: &str) -> Result<String> {
    Ok(format!("{}/{name}", args.required("output")?))
}

type Event = (String, u64);

fn sum_line(k: &String, _: &TimeWindow, v: Vec<Event>, out: &mut Collector<'_, String>) {
    out.collect(format!("{k},{}", v[0].1));
}

/// Fires (and empties) a global window at every element whose value is a multiple of 10.
#[derive(Clone)]
struct AtTens;

impl Trigger<Event> for AtTens {
    fn on_element(
        &mut self,
        e: &Event,
        _: Timestamp,
        _: &TimeWindow,
        _: &mut TriggerContext<'_>,
    ) -> Result<TriggerResult> {
        Ok(if e.1.is_multiple_of(10) { TriggerResult::FireAndPurge } else { TriggerResult::Continue })
    }
}

// a: 1..=7, b: 10, 20, c: 3, 7, 10, 1 (one source subtask, so each key's order is kept).
//   count_window(3), sum: a [1,2,3] = 6, [4,5,6] = 15 (7 waits, dropped at the end); b: none;
//     c: [3,7,10] = 20 (1 waits).
//   count_window_sliding(3, 2), sum: fires every 2nd element of a key over its last 3:
//     a: [1,2] = 3, [2,3,4] = 9, [4,5,6] = 15; b: [10,20] = 30; c: [3,7] = 10, [7,10,1] = 18.
//   global windows with a trigger at multiples of 10, purging: b: [10] = 10, [20] = 20;
//   c: [3,7,10] = 20 (1 waits).
fn counting(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let mut events: Vec<Event> = (1..=7).map(|v| ("a".to_owned(), v)).collect();
    events.extend([("b".to_owned(), 10), ("b".to_owned(), 20)]);
    events.extend([3, 7, 10, 1].map(|v| ("c".to_owned(), v)));
    let keyed = env.from_collection(events).set_parallelism(1).key_by(|e: &Event| e.0.clone());
    let sum = |a: Event, b: Event| (a.0, a.1 + b.1);
    keyed.count_window(3).reduce_with(sum, sum_line).write_as_text(out(args, "tumbling")?);
    keyed.count_window_sliding(3, 2).reduce_with(sum, sum_line).write_as_text(out(args, "sliding")?);
    keyed.window(GlobalWindows::create()).trigger(AtTens).reduce_with(sum, sum_line).write_as_text(out(args, "tens")?);
    Ok(())
}

#[test]
fn count_windows_and_custom_triggers_fire_on_elements() {
    for p in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let details = run_job(counting, &["--output", dir.path().to_str().unwrap()], p);
        assert_eq!(details.state, JobStatus::Finished, "{details:?}");
        assert_eq!(read_lines(&dir.path().join("tumbling")), sorted(&["a,6", "a,15", "c,20"]));
        assert_eq!(read_lines(&dir.path().join("sliding")), sorted(&["a,3", "a,9", "a,15", "b,30", "c,10", "c,18"]));
        assert_eq!(read_lines(&dir.path().join("tens")), sorted(&["b,10", "b,20", "c,20"]));
    }
}

fn count_line(_: &String, w: &TimeWindow, v: Vec<u64>, out: &mut Collector<'_, String>) {
    out.collect(format!("{},{}", w.start, v[0]));
}

#[derive(Clone)]
struct Count;

impl AggregateFunction<Event, u64, u64> for Count {
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, _: Event, acc: u64) -> u64 {
        acc + 1
    }
    fn get_result(&self, acc: u64) -> u64 {
        acc
    }
    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

// A 5 s tumbling window [0,5000) with a continuous event-time trigger every 1 s, counting:
//   a@500 sets a timer at 1000; W(1500) fires it: 1, and sets 2000.
//   a@1600, a@1700; W(2500) fires 2000: 3, and sets 3000.
//   At the end the final watermark fires 3000: 3 (sets 4000), 4000: 3 (sets 5000), and the
//   window's end 4999: 3, which cleans the window up (and deletes the timer at 5000).
// The time evictor keeps, in a global window fired every 3 elements, those within 1 s of the
// newest: b@1000, b@1500, b@3000 -> [3000] -> 1; b@3200, b@3300, b@3900 -> all of the last
// three since the evictor dropped 1000 and 1500: [3000, 3200, 3300, 3900] -> newest 3900, keep
// > 2900: 4 elements.
fn continuous(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let r = |k: &str, ts: i64| TimedEvent::record((k.to_owned(), 1), ts);
    let events = vec![
        r("a", 500),
        TimedEvent::Watermark(1500),
        r("a", 1600),
        r("a", 1700),
        TimedEvent::Watermark(2500),
        r("b", 1000),
        r("b", 1500),
        r("b", 3000),
        r("b", 3200),
        r("b", 3300),
        r("b", 3900),
    ];
    let keyed = env.from_timed_events(events).key_by(|e: &Event| e.0.clone());
    keyed
        .window(TumblingEventTimeWindows::of(Duration::from_secs(5)))
        .trigger(ContinuousEventTimeTrigger::of(Duration::from_secs(1)))
        .aggregate_with(Count, |k: &String, w: &TimeWindow, v: Vec<u64>, out: &mut Collector<'_, String>| {
            if k == "a" {
                count_line(k, w, v, out);
            }
        })
        .write_as_text(out(args, "continuous")?);
    keyed
        .window(GlobalWindows::create())
        .trigger(CountTrigger::of(3))
        .evictor(TimeEvictor::of(Duration::from_secs(1)))
        .aggregate_with(Count, |k: &String, _: &TimeWindow, v: Vec<u64>, out: &mut Collector<'_, String>| {
            if k == "b" {
                out.collect(v[0].to_string());
            }
        })
        .write_as_text(out(args, "evicted")?);
    Ok(())
}

#[test]
fn a_continuous_trigger_fires_early_and_an_evictor_drops_old_elements() {
    let dir = tempfile::tempdir().unwrap();
    let details = run_job(continuous, &["--output", dir.path().to_str().unwrap()], 1);
    assert_eq!(details.state, JobStatus::Finished, "{details:?}");
    assert_eq!(read_lines(&dir.path().join("continuous")), sorted(&["0,1", "0,3", "0,3", "0,3", "0,3"]));
    assert_eq!(read_lines(&dir.path().join("evicted")), sorted(&["1", "4"]));
}

// window_all: every record in one window per 10 s, whatever its key:
//   a@1000 (1), b@2000 (2), c@12000 (4) -> [0,10000): 3, [10000,20000): 4.
fn all(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let r = |k: &str, v: u64, ts: i64| TimedEvent::record((k.to_owned(), v), ts);
    env.from_timed_events(vec![r("a", 1, 1000), r("b", 2, 2000), r("c", 4, 12_000)])
        .window_all(TumblingEventTimeWindows::of(Duration::from_secs(10)))
        .reduce_with(
            |a: Event, b: Event| (a.0, a.1 + b.1),
            |_: &(), w: &TimeWindow, v: Vec<Event>, out: &mut Collector<'_, String>| {
                out.collect(format!("{},{}", w.start, v[0].1));
            },
        )
        .write_as_text(out(args, "all")?);
    Ok(())
}

#[test]
fn window_all_groups_every_record_in_one_subtask() {
    let dir = tempfile::tempdir().unwrap();
    let details = run_job(all, &["--output", dir.path().to_str().unwrap()], 3);
    assert_eq!(details.state, JobStatus::Finished, "{details:?}");
    assert_eq!(read_lines(&dir.path().join("all")), sorted(&["0,3", "10000,4"]));
}

static BIG: std::sync::LazyLock<OutputTag<String>> = std::sync::LazyLock::new(|| OutputTag::new("big"));

/// Emits `key,window start,sum` and, for sums of 10 or more, `key:sum` to the side output `big`.
fn sum_with_side(k: &String, w: &TimeWindow, v: Vec<Event>, out: &mut Collector<'_, String>) {
    let sum = v[0].1;
    out.collect(format!("{k},{},{sum}", w.start));
    if sum >= 10 {
        out.output(&BIG, format!("{k}:{sum}"));
    }
}

// One input, three window operators (the typed tumbling one, the generic session one, the
// triggered count one), each with a side output from its window function:
//   a@1000 (4), a@2000 (8), b@3000 (1), a@15000 (20)
//   tumbling 10 s: a [0,10000) = 12 (big), b [0,10000) = 1, a [10000,20000) = 20 (big)
//   sessions with a 5 s gap: a [1000,7000) = 12 (big), b [3000,8000) = 1, a [15000,20000) = 20 (big)
//   count windows of 2: a [4, 8] = 12 (big) (start: the global window's), a's 20 waits; b waits
fn window_side_outputs(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let r = |k: &str, v: u64, ts: i64| TimedEvent::record((k.to_owned(), v), ts);
    let events = vec![r("a", 4, 1000), r("a", 8, 2000), r("b", 1, 3000), r("a", 20, 15_000)];
    let keyed = env.from_timed_events(events).key_by(|e: &Event| e.0.clone());
    let sum = |a: Event, b: Event| (a.0, a.1 + b.1);
    let tumbling = keyed.window(TumblingEventTimeWindows::of(Duration::from_secs(10))).reduce_with(sum, sum_with_side);
    let sessions =
        keyed.window(EventTimeSessionWindows::with_gap(Duration::from_secs(5))).reduce_with(sum, sum_with_side);
    let counted = keyed.count_window(2).reduce_with(sum, sum_with_side);
    for (name, stream) in [("tumbling", &tumbling), ("sessions", &sessions), ("count", &counted)] {
        stream.write_as_text(out(args, name)?);
        stream.side_output(&BIG).write_as_text(out(args, &format!("{name}-big"))?);
    }
    Ok(())
}

#[test]
fn window_functions_emit_to_side_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let details = run_job(window_side_outputs, &["--output", dir.path().to_str().unwrap()], 2);
    assert_eq!(details.state, JobStatus::Finished, "{details:?}");
    let lines = |name: &str| read_lines(&dir.path().join(name));
    assert_eq!(lines("tumbling"), sorted(&["a,0,12", "b,0,1", "a,10000,20"]));
    assert_eq!(lines("tumbling-big"), sorted(&["a:12", "a:20"]));
    assert_eq!(lines("sessions"), sorted(&["a,1000,12", "b,3000,1", "a,15000,20"]));
    assert_eq!(lines("sessions-big"), sorted(&["a:12", "a:20"]));
    let global_start = i64::MIN;
    assert_eq!(lines("count"), sorted(&[format!("a,{global_start},12").as_str()]));
    assert_eq!(lines("count-big"), sorted(&["a:12"]));
}
