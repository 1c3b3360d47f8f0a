//! Event-time semantics on the mini-cluster: windows, lateness, idleness, watermark propagation,
//! keyed state with TTL, timers. Inputs are scripted records and watermarks; every expected output
//! is derived by hand in the test's comments, not by running Weir.

use std::time::Duration;
use weir_api::prelude::*;
use weir_tests::harness::{read_lines, run_job, sorted};

type Event = (String, i64);

fn rec(key: &str, value: i64, ts: i64) -> TimedEvent<Event> {
    TimedEvent::record((key.to_owned(), value), ts)
}

fn out(args: &JobArgs, name: &str) -> Result<String> {
    Ok(format!("{}/{name}", args.required("output")?))
}

#[derive(Clone)]
struct Count;

impl<T> AggregateFunction<T, u64, u64> for Count {
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, _value: T, acc: u64) -> u64 {
        acc + 1
    }
    fn get_result(&self, acc: u64) -> u64 {
        acc
    }
    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

fn window_line(key: &String, w: &TimeWindow, v: Vec<i64>, out: &mut Collector<'_, String>) {
    out.collect(format!("{key},{},{},{}", w.start, w.end, v[0]));
}

// Tumbling windows fire when the watermark passes their end and drop records that arrive later.
//   a@1000(1) b@2000(10) a@9999(2) a@10000(4) W(9999) a@5000(100) b@15000(20), end.
//   W(9999) fires [0,10000): a = 1+2 = 3, b = 10. a@5000 is then late (cleanup 9999 <= 9999): side
//   output. At the end [10000,20000): a = 4, b = 20.
fn tumbling(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let late = OutputTag::<Event>::new("late");
    let events = vec![
        rec("a", 1, 1000),
        rec("b", 10, 2000),
        rec("a", 2, 9999),
        rec("a", 4, 10_000),
        TimedEvent::Watermark(9999),
        rec("a", 100, 5000),
        rec("b", 20, 15_000),
    ];
    let sums = env
        .from_timed_events(events)
        .key_by(|e: &Event| e.0.clone())
        .window(TumblingEventTimeWindows::of(Duration::from_secs(10)))
        .side_output_late_data(&late)
        .reduce_with(
            |a: Event, b: Event| (a.0, a.1 + b.1),
            |k: &String, w: &TimeWindow, v: Vec<Event>, out: &mut Collector<'_, String>| {
                window_line(k, w, vec![v[0].1], out)
            },
        );
    sums.write_as_text(out(args, "main")?);
    sums.side_output(&late).map(|e: Event| format!("{}@{}", e.0, e.1)).write_as_text(out(args, "late")?);
    Ok(())
}

#[test]
fn tumbling_windows_fire_at_the_watermark_and_late_records_go_to_the_side_output() {
    for p in [1, 3] {
        let dir = tempfile::tempdir().unwrap();
        let details = run_job(tumbling, &["--output", dir.path().to_str().unwrap()], p);
        assert_eq!(details.state, weir_jobmanager::JobStatus::Finished, "{details:?}");
        assert_eq!(
            read_lines(&dir.path().join("main")),
            sorted(&["a,0,10000,3", "b,0,10000,10", "a,10000,20000,4", "b,10000,20000,20"])
        );
        assert_eq!(read_lines(&dir.path().join("late")), sorted(&["a@100"]));
    }
}

// Sliding windows of 10 s every 5 s: a@1000 is in [-5000,5000) and [0,10000); a@6000 in
// [0,10000) and [5000,15000); a@12000 in [5000,15000) and [10000,20000).
fn sliding(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    env.from_timed_events(vec![rec("a", 1, 1000), rec("a", 1, 6000), rec("a", 1, 12_000)])
        .key_by(|e: &Event| e.0.clone())
        .window(SlidingEventTimeWindows::of(Duration::from_secs(10), Duration::from_secs(5)))
        .aggregate_with(Count, |k: &String, w: &TimeWindow, v: Vec<u64>, out: &mut Collector<'_, String>| {
            window_line(k, w, vec![v[0] as i64], out)
        })
        .write_as_text(out(args, "main")?);
    Ok(())
}

#[test]
fn sliding_windows_count_each_record_in_every_window_it_belongs_to() {
    let dir = tempfile::tempdir().unwrap();
    run_job(sliding, &["--output", dir.path().to_str().unwrap()], 2);
    assert_eq!(
        read_lines(&dir.path().join("main")),
        sorted(&["a,-5000,5000,1", "a,0,10000,2", "a,5000,15000,2", "a,10000,20000,1"])
    );
}

// Session windows with a 3 s gap: a@1000 -> [1000,4000); a@5500 -> [5500,8500) (no overlap);
// a@3500 -> [3500,6500) overlaps both, so all merge into [1000,8500) with 3 records (values
// 1+2+4 = 7). b@1000 -> [1000,4000); W(5000) fires it; b@9000 -> [9000,12000).
fn sessions(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let events = vec![
        rec("a", 1, 1000),
        rec("b", 1, 1000),
        rec("a", 2, 5500),
        rec("a", 4, 3500),
        TimedEvent::Watermark(5000),
        rec("b", 1, 9000),
    ];
    let keyed = env.from_timed_events(events).key_by(|e: &Event| e.0.clone());
    // Incremental aggregation merges accumulators ...
    keyed
        .window(EventTimeSessionWindows::with_gap(Duration::from_secs(3)))
        .aggregate_with(Count, |k: &String, w: &TimeWindow, v: Vec<u64>, out: &mut Collector<'_, String>| {
            window_line(k, w, vec![v[0] as i64], out)
        })
        .write_as_text(out(args, "count")?);
    // ... and buffering windows merge their element lists.
    keyed
        .window(EventTimeSessionWindows::with_gap(Duration::from_secs(3)))
        .process(|k: &String, w: &TimeWindow, v: Vec<Event>, out: &mut Collector<'_, String>| {
            window_line(k, w, vec![v.iter().map(|e| e.1).sum()], out)
        })
        .write_as_text(out(args, "sum")?);
    Ok(())
}

#[test]
fn session_windows_merge_when_a_record_bridges_them() {
    let dir = tempfile::tempdir().unwrap();
    run_job(sessions, &["--output", dir.path().to_str().unwrap()], 2);
    assert_eq!(read_lines(&dir.path().join("count")), sorted(&["a,1000,8500,3", "b,1000,4000,1", "b,9000,12000,1"]));
    assert_eq!(read_lines(&dir.path().join("sum")), sorted(&["a,1000,8500,7", "b,1000,4000,1", "b,9000,12000,1"]));
}

// Allowed lateness 5 s on 10 s tumbling windows:
//   a@1000 a@2000 W(10500): [0,10000) fires with 2.
//   a@3000: late but within lateness (cleanup time 9999+5000 = 14999 > 10500): fires again with 3.
//   W(15000): the cleanup timer 14999 fires; the window's state is gone.
//   a@4000: now too late: side output.  a@16000: [10000,20000) fires at the end with 1.
fn lateness(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let late = OutputTag::<Event>::new("late");
    let events = vec![
        rec("a", 1, 1000),
        rec("a", 1, 2000),
        TimedEvent::Watermark(10_500),
        rec("a", 1, 3000),
        TimedEvent::Watermark(15_000),
        rec("a", 4000, 4000),
        rec("a", 1, 16_000),
    ];
    let counts = env
        .from_timed_events(events)
        .key_by(|e: &Event| e.0.clone())
        .window(TumblingEventTimeWindows::of(Duration::from_secs(10)))
        .allowed_lateness(Duration::from_secs(5))
        .side_output_late_data(&late)
        .aggregate_with(Count, |k: &String, w: &TimeWindow, v: Vec<u64>, out: &mut Collector<'_, String>| {
            window_line(k, w, vec![v[0] as i64], out)
        });
    counts.write_as_text(out(args, "main")?);
    counts.side_output(&late).map(|e: Event| format!("{}@{}", e.0, e.1)).write_as_text(out(args, "late")?);
    Ok(())
}

#[test]
fn allowed_lateness_refires_windows_and_later_records_go_to_the_side_output() {
    let dir = tempfile::tempdir().unwrap();
    run_job(lateness, &["--output", dir.path().to_str().unwrap()], 1);
    assert_eq!(read_lines(&dir.path().join("main")), sorted(&["a,0,10000,2", "a,0,10000,3", "a,10000,20000,1"]));
    assert_eq!(read_lines(&dir.path().join("late")), sorted(&["a@4000"]));
}

// Bounded out-of-orderness of 2 s, one record per batch: a@1000; a@12500 moves the watermark to
// 12500-2000-1 = 10499, firing [0,10000) with 1; a@9000 is then late; a@11000 joins
// [10000,20000), which fires at the end with 2. With a 3 s bound the watermark only reaches 9499,
// so a@9000 is on time: [0,10000) has 2.
fn out_of_orderness(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let bound: u64 = args.parse_required("bound-ms")?;
    let late = OutputTag::<Event>::new("late");
    let counts = env
        .from_timed_events(vec![rec("a", 1000, 0), rec("a", 12_500, 0), rec("a", 9000, 0), rec("a", 11_000, 0)])
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(bound))
                .with_timestamp_assigner(|e: &Event, _| e.1),
        )
        .key_by(|e: &Event| e.0.clone())
        .window(TumblingEventTimeWindows::of(Duration::from_secs(10)))
        .side_output_late_data(&late)
        .aggregate_with(Count, |k: &String, w: &TimeWindow, v: Vec<u64>, out: &mut Collector<'_, String>| {
            window_line(k, w, vec![v[0] as i64], out)
        });
    counts.write_as_text(out(args, "main")?);
    counts.side_output(&late).map(|e: Event| format!("{}@{}", e.0, e.1)).write_as_text(out(args, "late")?);
    Ok(())
}

#[test]
fn bounded_out_of_orderness_decides_what_is_late() {
    let dir = tempfile::tempdir().unwrap();
    run_job(out_of_orderness, &["--output", dir.path().to_str().unwrap(), "--bound-ms", "2000"], 1);
    assert_eq!(read_lines(&dir.path().join("main")), sorted(&["a,0,10000,1", "a,10000,20000,2"]));
    assert_eq!(read_lines(&dir.path().join("late")), sorted(&["a@9000"]));
    let dir = tempfile::tempdir().unwrap();
    run_job(out_of_orderness, &["--output", dir.path().to_str().unwrap(), "--bound-ms", "3000"], 1);
    assert_eq!(read_lines(&dir.path().join("main")), sorted(&["a,0,10000,2", "a,10000,20000,2"]));
    assert!(read_lines(&dir.path().join("late")).is_empty());
}

// The watermark of a union is the minimum of its inputs', also across a keyed exchange:
//   fast: a@1000 a@15000 a@25000 W(30000)        slow: a@3000 W(4000) pause a@12000
// When slow's a@12000 arrives the combined watermark is still 4000 (not 30000), so it is on
// time: [10000,20000) counts a@15000 and a@12000. Nothing is late.
fn union_watermarks(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let late = OutputTag::<Event>::new("late");
    let fast = env.from_timed_events(vec![
        rec("a", 1, 1000),
        rec("a", 1, 15_000),
        rec("a", 1, 25_000),
        TimedEvent::Watermark(30_000),
    ]);
    let slow = env.from_timed_events(vec![
        rec("a", 1, 3000),
        TimedEvent::Watermark(4000),
        TimedEvent::Pause(Duration::from_millis(300)),
        rec("a", 1, 12_000),
    ]);
    let counts = fast
        .union(&[&slow])
        .key_by(|e: &Event| e.0.clone())
        .window(TumblingEventTimeWindows::of(Duration::from_secs(10)))
        .side_output_late_data(&late)
        .aggregate_with(Count, |k: &String, w: &TimeWindow, v: Vec<u64>, out: &mut Collector<'_, String>| {
            window_line(k, w, vec![v[0] as i64], out)
        });
    counts.write_as_text(out(args, "main")?);
    counts.side_output(&late).map(|e: Event| format!("{}@{}", e.0, e.1)).write_as_text(out(args, "late")?);
    Ok(())
}

#[test]
fn the_watermark_of_a_union_across_an_exchange_is_the_minimum_of_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    run_job(union_watermarks, &["--output", dir.path().to_str().unwrap()], 2);
    assert_eq!(read_lines(&dir.path().join("main")), sorted(&["a,0,10000,2", "a,10000,20000,2", "a,20000,30000,1"]));
    assert!(read_lines(&dir.path().join("late")).is_empty());
}

// Source idleness. `steady` emits a@1000..a@25000 at once (its watermark reaches 24999), then
// keeps its channel open for 1.5 s; `sporadic` emits a@1000, then nothing for 800 ms, then
// a@2000. With 200 ms idleness, `sporadic` is marked idle during its pause, the union's watermark
// follows `steady` past 9999, [0,10000) fires without a@2000, which then arrives late. Without
// idleness the union waits for `sporadic`: a@2000 is on time and nothing is late.
fn idleness(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let idle = args.has("idleness");
    let late = OutputTag::<Event>::new("late");
    let mut steady_events: Vec<TimedEvent<Event>> = (1..=25).map(|i| rec("a", 1, i * 1000)).collect();
    steady_events.push(TimedEvent::Pause(Duration::from_millis(1500)));
    let steady = env
        .from_timed_events(steady_events)
        .assign_timestamps_and_watermarks(WatermarkStrategy::for_monotonous_timestamps())
        .set_parallelism(1);
    let mut strategy = WatermarkStrategy::for_monotonous_timestamps();
    if idle {
        strategy = strategy.with_idleness(Duration::from_millis(200)).with_check_interval(Duration::from_millis(50));
    }
    let sporadic = env
        .from_timed_events(vec![
            rec("s", 1000, 1000),
            TimedEvent::Pause(Duration::from_millis(800)),
            rec("s", 2000, 2000),
        ])
        .assign_timestamps_and_watermarks(strategy)
        .set_parallelism(1);
    let counts = steady
        .union(&[&sporadic])
        .key_by(|e: &Event| e.0.clone())
        .window(TumblingEventTimeWindows::of(Duration::from_secs(10)))
        .side_output_late_data(&late)
        .aggregate_with(Count, |k: &String, w: &TimeWindow, v: Vec<u64>, out: &mut Collector<'_, String>| {
            window_line(k, w, vec![v[0] as i64], out)
        });
    counts.write_as_text(out(args, "main")?);
    counts.side_output(&late).map(|e: Event| format!("{}@{}", e.0, e.1)).write_as_text(out(args, "late")?);
    Ok(())
}

#[test]
fn an_idle_source_does_not_hold_back_the_watermark() {
    let dir = tempfile::tempdir().unwrap();
    run_job(idleness, &["--output", dir.path().to_str().unwrap(), "--idleness"], 2);
    let main = read_lines(&dir.path().join("main"));
    assert!(main.contains(&"s,0,10000,1".to_owned()), "{main:?}");
    assert_eq!(read_lines(&dir.path().join("late")), sorted(&["s@2000"]));

    let dir = tempfile::tempdir().unwrap();
    run_job(idleness, &["--output", dir.path().to_str().unwrap()], 2);
    let main = read_lines(&dir.path().join("main"));
    assert!(main.contains(&"s,0,10000,2".to_owned()), "{main:?}");
    assert!(read_lines(&dir.path().join("late")).is_empty());
}

const COUNT: ValueStateDescriptor<u64> = ValueStateDescriptor::new("count");
const COUNT_TTL: ValueStateDescriptor<u64> =
    ValueStateDescriptor::new("count-ttl").with_ttl(StateTtlConfig::new(Duration::from_millis(300)));

#[derive(Clone)]
struct Counter {
    ttl: bool,
}

impl KeyedProcessFunction<String, Event, String> for Counter {
    fn process_element(&mut self, value: Event, ctx: &mut KeyedContext<'_, String, String>) -> Result<()> {
        let descriptor = if self.ttl { &COUNT_TTL } else { &COUNT };
        let mut state = ctx.value_state(descriptor)?;
        let count = state.value()?.unwrap_or(0) + 1;
        state.update(&count)?;
        ctx.collect(format!("{}#{},{count}", value.0, value.1));
        Ok(())
    }
}

// Counting per key with a 300 ms time-to-live: a#1, a#2 count 1, 2; after 800 ms without
// writes the count has expired, so a#3 counts 1 again (without TTL: 3). b is unaffected.
fn ttl(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let counter = Counter { ttl: args.has("ttl") };
    env.from_timed_events(vec![
        rec("a", 1, 1),
        rec("b", 1, 1),
        rec("a", 2, 2),
        TimedEvent::Pause(Duration::from_millis(800)),
        rec("a", 3, 3),
    ])
    .key_by(|e: &Event| e.0.clone())
    .process(counter)
    .write_as_text(out(args, "main")?);
    Ok(())
}

#[test]
fn state_with_a_ttl_expires() {
    let dir = tempfile::tempdir().unwrap();
    run_job(ttl, &["--output", dir.path().to_str().unwrap(), "--ttl"], 2);
    assert_eq!(read_lines(&dir.path().join("main")), sorted(&["a#1,1", "a#2,2", "a#3,1", "b#1,1"]));
    let dir = tempfile::tempdir().unwrap();
    run_job(ttl, &["--output", dir.path().to_str().unwrap()], 2);
    assert_eq!(read_lines(&dir.path().join("main")), sorted(&["a#1,1", "a#2,2", "a#3,3", "b#1,1"]));
}

const SEEN: MapStateDescriptor<i64, u32> = MapStateDescriptor::new("seen");
const HISTORY: ListStateDescriptor<i64> = ListStateDescriptor::new("history");

#[derive(Clone)]
struct Timers;

impl KeyedProcessFunction<String, Event, String> for Timers {
    fn process_element(&mut self, value: Event, ctx: &mut KeyedContext<'_, String, String>) -> Result<()> {
        let ts = ctx.timestamp().unwrap_or(-1);
        // Map state: how often each value was seen; list state: every value in order.
        let mut seen = ctx.map_state(&SEEN)?;
        let times = seen.get(&value.1)?.unwrap_or(0) + 1;
        seen.put(&value.1, &times)?;
        ctx.list_state(&HISTORY)?.add(&value.1)?;
        // An event-time timer 1 s after the record (the same timer twice fires once), and a
        // processing-time timer right away.
        ctx.timer_service().register_event_time_timer(ts + 1000);
        let now = ctx.timer_service().current_processing_time();
        if value.1 == 99 {
            ctx.timer_service().register_processing_time_timer(now + 50);
        }
        if value.1 == 7 {
            ctx.timer_service().register_event_time_timer(50_000);
            ctx.timer_service().delete_event_time_timer(50_000);
        }
        Ok(())
    }

    fn on_timer(&mut self, timestamp: i64, ctx: &mut KeyedContext<'_, String, String>) -> Result<()> {
        let key = ctx.key().clone();
        match ctx.time_domain() {
            Some(TimeDomain::EventTime) => {
                let history = ctx.list_state(&HISTORY)?.get()?;
                let mut seen = ctx.map_state(&SEEN)?.entries()?;
                seen.sort();
                ctx.collect(format!("event {key}@{timestamp} history={history:?} seen={seen:?}"));
            }
            _ => ctx.collect(format!("processing {key}")),
        }
        Ok(())
    }
}

// a@1000(5) a@1000(5) b@1500(7) -> timers a@2000 (once) and b@2500; W(2200) fires a@2000 with
// a's history [5, 5]; a@3000(6) -> timer a@4000, fired at the end with history [5, 5, 6]. b's
// 50000 timer was deleted. c(99) registers a processing-time timer 50 ms ahead; the source's
// 300 ms pause lets it fire.
fn timers(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    env.from_timed_events(vec![
        rec("a", 5, 1000),
        rec("a", 5, 1000),
        rec("b", 7, 1500),
        TimedEvent::Watermark(2200),
        rec("a", 6, 3000),
        rec("c", 99, 3000),
        TimedEvent::Pause(Duration::from_millis(300)),
    ])
    .key_by(|e: &Event| e.0.clone())
    .process(Timers)
    .write_as_text(out(args, "main")?);
    Ok(())
}

#[test]
fn event_and_processing_time_timers_fire_with_keyed_state_in_scope() {
    let dir = tempfile::tempdir().unwrap();
    run_job(timers, &["--output", dir.path().to_str().unwrap()], 2);
    assert_eq!(
        read_lines(&dir.path().join("main")),
        sorted(&[
            "event a@2000 history=[5, 5] seen=[(5, 2)]",
            "event b@2500 history=[7] seen=[(7, 1)]",
            "event a@4000 history=[5, 5, 6] seen=[(5, 2), (6, 1)]",
            "event c@4000 history=[99] seen=[(99, 1)]",
            "processing c",
        ])
    );
}

// Processing-time windows of 200 ms: two bursts separated by a 700 ms pause land in different
// windows; every record is counted once.
fn processing_time(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let mut events: Vec<TimedEvent<Event>> = (0..5).map(|i| rec("a", i, 0)).collect();
    events.push(TimedEvent::Pause(Duration::from_millis(700)));
    events.extend((0..3).map(|i| rec("a", i, 0)));
    events.push(TimedEvent::Pause(Duration::from_millis(700)));
    env.from_timed_events(events)
        .key_by(|e: &Event| e.0.clone())
        .window(TumblingProcessingTimeWindows::of(Duration::from_millis(200)))
        .aggregate(Count)
        .map(|c: u64| c.to_string())
        .write_as_text(out(args, "main")?);
    Ok(())
}

#[test]
fn processing_time_windows_fire_by_the_wall_clock() {
    let dir = tempfile::tempdir().unwrap();
    run_job(processing_time, &["--output", dir.path().to_str().unwrap()], 1);
    let counts: Vec<u64> = read_lines(&dir.path().join("main")).iter().map(|l| l.parse().unwrap()).collect();
    assert_eq!(counts.iter().sum::<u64>(), 8, "{counts:?}");
    assert!(counts.len() >= 2, "the bursts are 700 ms apart, windows 200 ms: {counts:?}");
}

#[derive(Clone)]
struct Enrich;

const NAME: ValueStateDescriptor<String> = ValueStateDescriptor::new("name");

impl KeyedCoProcessFunction<i64, (i64, String), (i64, u64), String> for Enrich {
    fn process_element1(&mut self, value: (i64, String), ctx: &mut KeyedContext<'_, i64, String>) -> Result<()> {
        ctx.value_state(&NAME)?.update(&value.1)
    }

    fn process_element2(&mut self, value: (i64, u64), ctx: &mut KeyedContext<'_, i64, String>) -> Result<()> {
        let name = ctx.value_state(&NAME)?.value()?.unwrap_or_else(|| "?".into());
        ctx.collect(format!("{}:{name}:{}", value.0, value.1));
        Ok(())
    }
}

// Keyed connect: names arrive on input 1 first (the pause orders them before the amounts);
// amounts on input 2 are enriched with their key's name. A co-map merges both into one type.
fn connect(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let names = env.from_collection(vec![(1i64, "one".to_owned()), (2, "two".to_owned())]);
    let amounts = env.from_timed_events(vec![
        TimedEvent::Pause(Duration::from_millis(300)),
        TimedEvent::record((1i64, 10u64), 1),
        TimedEvent::record((2, 20), 2),
        TimedEvent::record((3, 30), 3),
    ]);
    names
        .connect(&amounts)
        .key_by(|n: &(i64, String)| n.0, |a: &(i64, u64)| a.0)
        .process(Enrich)
        .write_as_text(out(args, "enriched")?);
    names
        .connect(&amounts)
        .map(|n: (i64, String)| format!("name {}", n.1), |a: (i64, u64)| format!("amount {}", a.1))
        .write_as_text(out(args, "merged")?);
    Ok(())
}

#[test]
fn connected_streams_share_keyed_state_and_co_map_merges_them() {
    let dir = tempfile::tempdir().unwrap();
    run_job(connect, &["--output", dir.path().to_str().unwrap()], 2);
    assert_eq!(read_lines(&dir.path().join("enriched")), sorted(&["1:one:10", "2:two:20", "3:?:30"]));
    assert_eq!(
        read_lines(&dir.path().join("merged")),
        sorted(&["name one", "name two", "amount 10", "amount 20", "amount 30"])
    );
}

fn panicking(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    env.from_collection((0..100i64).collect::<Vec<_>>())
        .map(|x: i64| if x == 42 { panic!("user code rejects {x}") } else { x })
        .map(|x: i64| x.to_string())
        .write_as_text(out(args, "main")?);
    Ok(())
}

#[test]
fn a_panic_in_user_code_fails_the_job_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let details = run_job(panicking, &["--output", dir.path().to_str().unwrap()], 2);
    assert_eq!(details.state, weir_jobmanager::JobStatus::Failed);
    let failure = details.failure.unwrap();
    assert!(failure.contains("user code rejects 42"), "{failure}");
    // A failed job's output is not visible: the exactly-once file sink commits only at completed
    // checkpoints (none here) and when the whole job finished.
    assert_eq!(read_lines(&dir.path().join("main")), Vec::<String>::new());
}

fn reduce(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    env.from_collection(vec![rec_tuple("a", 1), rec_tuple("b", 2), rec_tuple("a", 3)])
        .key_by(|e: &Event| e.0.clone())
        .reduce(|a: Event, b: Event| (a.0, a.1 + b.1))
        .set_parallelism(1)
        .map(|e: Event| format!("{},{}", e.0, e.1))
        .write_as_text(out(args, "main")?);
    Ok(())
}

fn rec_tuple(key: &str, value: i64) -> Event {
    (key.to_owned(), value)
}

// A keyed rolling reduce emits every intermediate sum; the collection source runs at p=3, so
// the order within a key depends on the subtasks, but the multiset of sums for `a` is {1, 4} or
// {3, 4} and for `b` {2}.
#[test]
fn a_rolling_reduce_emits_every_intermediate_result() {
    let dir = tempfile::tempdir().unwrap();
    run_job(reduce, &["--output", dir.path().to_str().unwrap()], 3);
    let lines = read_lines(&dir.path().join("main"));
    assert!(lines == sorted(&["a,1", "a,4", "b,2"]) || lines == sorted(&["a,3", "a,4", "b,2"]), "{lines:?}");
}

fn bad_args(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let n: u64 = args.parse_required("count")?;
    env.from_collection((0..n).collect::<Vec<_>>()).sink_to_blackhole();
    Ok(())
}

#[test]
fn job_argument_errors_are_reported_before_anything_runs() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let cluster = weir_cli::MiniCluster::start();
        let submission = weir_jobmanager::JobSubmission {
            artifact: weir_runtime::JobArtifact::InProcess {
                name: "t".into(),
                entry: weir_api::plugin::job_entry(bad_args).into(),
            },
            args: vec!["--count".into(), "ten".into()],
            parallelism: 1,
            checkpointing: None,
            state_backend: Default::default(),
            savepoint: None,
            restart: None,
        };
        let err = cluster.submit(submission).await.unwrap_err();
        assert_eq!(err.status_code(), 400);
        assert!(err.to_string().contains("--count \"ten\""), "{err}");
        assert!(cluster.jobmanager().jobs().is_empty());
    });
}

fn early_end(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    env.from_collection(vec![("only".to_owned(), 1i64)])
        .key_by(|e: &Event| e.0.clone())
        .reduce(|a: Event, b: Event| (a.0, a.1 + b.1))
        .map(|e: Event| format!("{},{}", e.0, e.1))
        .write_as_text(out(args, "main")?);
    Ok(())
}

// Source subtasks with nothing to emit end at once, possibly before their consumers are even
// deployed; their end of stream must still reach them (regression: the taskmanager released the
// job's channels when its task count dropped to zero mid-deployment).
#[test]
fn subtasks_that_end_before_their_consumers_are_deployed_still_end_the_stream() {
    for _ in 0..15 {
        let dir = tempfile::tempdir().unwrap();
        let details = run_job(early_end, &["--output", dir.path().to_str().unwrap()], 4);
        assert_eq!(details.state, weir_jobmanager::JobStatus::Finished);
        assert_eq!(read_lines(&dir.path().join("main")), sorted(&["only,1"]));
    }
}

// Regression: the job status was published through a watch channel with `send`, which drops the
// value when nobody is subscribed yet; a job that ended before anyone waited was then waited for
// forever.
#[test]
fn waiting_for_a_job_that_already_ended_returns_its_final_state() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let cluster = weir_cli::MiniCluster::start();
        let dir = tempfile::tempdir().unwrap();
        let submission = weir_jobmanager::JobSubmission {
            artifact: weir_runtime::JobArtifact::InProcess {
                name: "t".into(),
                entry: weir_api::plugin::job_entry(panicking).into(),
            },
            args: vec!["--output".into(), dir.path().to_str().unwrap().into()],
            parallelism: 1,
            checkpointing: None,
            state_backend: Default::default(),
            savepoint: None,
            restart: None,
        };
        let id = cluster.submit(submission).await.unwrap();
        // Let the job fail before anyone waits for it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let details = tokio::time::timeout(Duration::from_secs(10), cluster.jobmanager().wait_for_termination(id))
            .await
            .expect("waiting for an ended job returns")
            .unwrap();
        assert_eq!(details.state, weir_jobmanager::JobStatus::Failed);
    });
}
