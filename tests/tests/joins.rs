//! Joins on the mini-cluster: window join, window co-group and interval join, with out-of-order
//! and late data. Every expected output is derived by hand in the comments.
//!
//! Both inputs of each join come from one scripted source (split by flat maps chained to it, so
//! each side keeps the script's order), so that both see the same watermarks. A late element follows its watermark after a pause: the join
//! operator has then taken the watermark from both of its input channels.

use std::sync::LazyLock;
use std::time::Duration;
use weir_api::prelude::*;
use weir_jobmanager::JobStatus;
use weir_tests::harness::{read_lines, run_job, sorted};

fn out(args: &JobArgs, name: &str) -> Result<String> {
    Ok(format!("{}/{name}", args.required("output")?))
}

/// An element of the left or the right input: `(key, value)`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Side {
    L(String, String),
    R(String, String),
}

fn l(key: &str, value: &str, ts: i64) -> TimedEvent<Side> {
    TimedEvent::record(Side::L(key.into(), value.into()), ts)
}

fn r(key: &str, value: &str, ts: i64) -> TimedEvent<Side> {
    TimedEvent::record(Side::R(key.into(), value.into()), ts)
}

type Pair = (String, String);

fn split(env: &mut StreamExecutionEnvironment, events: Vec<TimedEvent<Side>>) -> (DataStream<Pair>, DataStream<Pair>) {
    env.allow_generated_uids();
    let source = env.from_timed_events(events);
    let left = source
        .flat_map(|e: Side, out: &mut Collector<'_, Pair>| {
            if let Side::L(k, v) = e {
                out.collect((k, v));
            }
        })
        .set_parallelism(1);
    let right = source
        .flat_map(|e: Side, out: &mut Collector<'_, Pair>| {
            if let Side::R(k, v) = e {
                out.collect((k, v));
            }
        })
        .set_parallelism(1);
    (left, right)
}

/// Appends each record's timestamp: `value@ts`.
#[derive(Clone)]
struct Stamp;

impl ProcessFunction<String, String> for Stamp {
    fn process_element(&mut self, value: String, ctx: &mut ProcessContext<'_, String>) -> Result<()> {
        let ts = ctx.timestamp().map_or("none".to_owned(), |t| t.to_string());
        ctx.collect(format!("{value}@{ts}"));
        Ok(())
    }
}

// Orders (left) and payments (right) in tumbling 10 s windows:
//   [0,10000):     a: o1 | 10, 20     b: o2 | 30     c: - | 40 (out of order: 4000 after 12000)
//   [10000,20000): a: o3 | 50, 60
//   o4@5000 comes after W(9999): its window fired, it is late and dropped.
// Join results carry the window's largest timestamp (9999, 19999).
fn window_events() -> Vec<TimedEvent<Side>> {
    vec![
        l("a", "o1", 1000),
        r("a", "10", 2000),
        l("b", "o2", 3000),
        r("a", "20", 9000),
        l("a", "o3", 12_000),
        r("b", "30", 8000),
        r("c", "40", 4000),
        TimedEvent::Watermark(9999),
        TimedEvent::Pause(Duration::from_millis(300)),
        l("a", "o4", 5000),
        r("a", "50", 15_000),
        r("a", "60", 19_999),
    ]
}

fn window_join(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    let (orders, payments) = split(env, window_events());
    orders
        .join(&payments)
        .where_key(|o: &Pair| o.0.clone())
        .equal_to(|p: &Pair| p.0.clone())
        .window(TumblingEventTimeWindows::of(Duration::from_secs(10)))
        .apply(|o: Pair, p: Pair| format!("{},{},{}", o.0, o.1, p.1))
        .process(Stamp)
        .write_as_text(out(args, "joined")?);
    orders
        .co_group(&payments)
        .where_key(|o: &Pair| o.0.clone())
        .equal_to(|p: &Pair| p.0.clone())
        .window(TumblingEventTimeWindows::of(Duration::from_secs(10)))
        .apply(|os: Vec<Pair>, ps: Vec<Pair>, out: &mut Collector<'_, String>| {
            let side = |v: &[Pair]| v.iter().map(|p| p.1.as_str()).collect::<Vec<_>>().join(",");
            out.collect(format!("{}|{}", side(&os), side(&ps)));
        })
        .process(Stamp)
        .write_as_text(out(args, "grouped")?);
    Ok(())
}

#[test]
fn a_window_join_pairs_the_elements_of_each_key_and_window_and_drops_late_ones() {
    for p in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let details = run_job(window_join, &["--output", dir.path().to_str().unwrap()], p);
        assert_eq!(details.state, JobStatus::Finished, "{details:?}");
        assert_eq!(
            read_lines(&dir.path().join("joined")),
            sorted(&["a,o1,10@9999", "a,o1,20@9999", "b,o2,30@9999", "a,o3,50@19999", "a,o3,60@19999"])
        );
        // A co-group sees a key's window when either side has elements (c has only a payment).
        assert_eq!(
            read_lines(&dir.path().join("grouped")),
            sorted(&["o1|10,20@9999", "o2|30@9999", "|40@9999", "o3|50,60@19999"])
        );
    }
}

static LEFT_LATE: LazyLock<OutputTag<Pair>> = LazyLock::new(|| OutputTag::new("left-late"));
static RIGHT_LATE: LazyLock<OutputTag<Pair>> = LazyLock::new(|| OutputTag::new("right-late"));

// Interval join: a left element at t joins right elements of its key in [t - 2000, t + 1000].
//   x1@10000 (a): y1@9000 joins (>= 8000), y2@11000 joins (<= 11000, inclusive), y3@7999 does not.
//   y4@10000 (b) has no left yet; x2@12500 (b) does not join it (10000 < 10500).
//   x3@9500 (a, out of order): interval [7500, 10500]: y1@9000 and y3@7999 join, y2@11000 not.
//   W(11000): y5@10500 and x5@11000 are then late (at or behind the watermark): side outputs,
//   although y5 would have joined x1.
//   x4@11500 (a): [9500, 12500]: y2@11000 joins (still buffered until 13000).
//   y6@13000 (b): x2@12500 has [10500, 13500]: joins.
// Each pair carries the larger of its timestamps.
fn interval_events() -> Vec<TimedEvent<Side>> {
    vec![
        l("a", "x1", 10_000),
        r("a", "y1", 9000),
        r("a", "y2", 11_000),
        r("a", "y3", 7999),
        r("b", "y4", 10_000),
        l("b", "x2", 12_500),
        l("a", "x3", 9500),
        TimedEvent::Watermark(11_000),
        TimedEvent::Pause(Duration::from_millis(300)),
        r("a", "y5", 10_500),
        l("a", "x4", 11_500),
        r("b", "y6", 13_000),
        l("a", "x5", 11_000),
    ]
}

/// Joins a pair into `left-right`, checking the context's timestamps.
#[derive(Clone)]
struct Pairing;

impl ProcessJoinFunction<Pair, Pair, String> for Pairing {
    fn process_element(&mut self, left: Pair, right: Pair, ctx: &mut JoinContext<'_, String>) -> Result<()> {
        if ctx.timestamp() != ctx.left_timestamp().max(ctx.right_timestamp()) {
            return Err(Error::user("the pair's timestamp is not the larger of its elements'"));
        }
        ctx.collect(format!("{}-{}", left.1, right.1));
        Ok(())
    }
}

fn interval_join(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    let (left, right) = split(env, interval_events());
    let joined = left
        .key_by(|e: &Pair| e.0.clone())
        .interval_join(&right.key_by(|e: &Pair| e.0.clone()))
        .between(-2000, 1000)
        .side_output_left_late_data(&LEFT_LATE)
        .side_output_right_late_data(&RIGHT_LATE)
        .process(Pairing);
    joined.process(Stamp).write_as_text(out(args, "joined")?);
    let late = |p: Pair| p.1;
    joined.side_output(&LEFT_LATE).map(late).process(Stamp).write_as_text(out(args, "left-late")?);
    joined.side_output(&RIGHT_LATE).map(late).process(Stamp).write_as_text(out(args, "right-late")?);
    // The same join with a closure as its function and the upper bound exclusive: x1-y2
    // (11000 = 10000 + 1000) is no longer a pair.
    left.key_by(|e: &Pair| e.0.clone())
        .interval_join(&right.key_by(|e: &Pair| e.0.clone()))
        .between(-2000, 1000)
        .upper_bound_exclusive()
        .process(|l: Pair, r: Pair| format!("{}-{}", l.1, r.1))
        .write_as_text(out(args, "exclusive")?);
    Ok(())
}

#[test]
fn an_interval_join_pairs_elements_within_the_bounds_and_routes_late_ones_aside() {
    for p in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let details = run_job(interval_join, &["--output", dir.path().to_str().unwrap()], p);
        assert_eq!(details.state, JobStatus::Finished, "{details:?}");
        assert_eq!(
            read_lines(&dir.path().join("joined")),
            sorted(&["x1-y1@10000", "x1-y2@11000", "x3-y1@9500", "x3-y3@9500", "x4-y2@11500", "x2-y6@13000"])
        );
        assert_eq!(read_lines(&dir.path().join("left-late")), sorted(&["x5@11000"]));
        assert_eq!(read_lines(&dir.path().join("right-late")), sorted(&["y5@10500"]));
        assert_eq!(read_lines(&dir.path().join("exclusive")), sorted(&["x1-y1", "x3-y1", "x3-y3", "x4-y2", "x2-y6"]));
    }
}

/// A click `(user, click)` or a change of the user table `(user, row or None)`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Input {
    Click(String, String),
    Change(String, Option<String>),
}

fn click(user: &str, id: &str, ts: i64) -> TimedEvent<Input> {
    TimedEvent::record(Input::Click(user.into(), id.into()), ts)
}

fn change(user: &str, row: Option<&str>, ts: i64) -> TimedEvent<Input> {
    TimedEvent::record(Input::Change(user.into(), row.map(Into::into)), ts)
}

fn pause() -> TimedEvent<Input> {
    TimedEvent::Pause(Duration::from_millis(300))
}

type Change = (String, Option<String>);

fn clicks_and_changes(
    env: &mut StreamExecutionEnvironment,
    events: Vec<TimedEvent<Input>>,
) -> (DataStream<Pair>, DataStream<Change>) {
    env.allow_generated_uids();
    let source = env.from_timed_events(events);
    let clicks = source
        .flat_map(|e: Input, out: &mut Collector<'_, Pair>| {
            if let Input::Click(user, id) = e {
                out.collect((user, id));
            }
        })
        .set_parallelism(1);
    let changes = source
        .flat_map(|e: Input, out: &mut Collector<'_, Change>| {
            if let Input::Change(user, row) = e {
                out.collect((user, row));
            }
        })
        .set_parallelism(1);
    (clicks, changes)
}

fn row_name(row: Option<String>) -> String {
    row.unwrap_or_else(|| "none".into())
}

// Latest rows (the default): pauses order the changes and the clicks.
//   rows u1 = gold, u2 = silver; then c1 (u1) joins gold, c2 (u3) has no row;
//   then u1 is deleted and u2 becomes bronze; c3 (u1) has no row, c4 (u2) joins bronze.
fn latest_table(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    let events = vec![
        change("u1", Some("gold"), 1000),
        change("u2", Some("silver"), 1000),
        pause(),
        click("u1", "c1", 2000),
        click("u3", "c2", 2000),
        pause(),
        change("u1", None, 3000),
        change("u2", Some("bronze"), 3000),
        pause(),
        click("u1", "c3", 4000),
        click("u2", "c4", 4000),
    ];
    let (clicks, changes) = clicks_and_changes(env, events);
    let keyed = clicks.key_by(|c: &Pair| c.0.clone());
    keyed
        .join_table(&changes)
        .inner(|c: Pair, row: String| format!("{}-{row}", c.1))
        .process(Stamp)
        .write_as_text(out(args, "inner")?);
    keyed
        .join_table(&changes)
        .left(|c: Pair, row: Option<String>| format!("{}-{}", c.1, row_name(row)))
        .write_as_text(out(args, "left")?);
    Ok(())
}

#[test]
fn a_table_join_joins_each_element_with_the_row_of_its_key_as_it_is_then() {
    for p in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let details = run_job(latest_table, &["--output", dir.path().to_str().unwrap()], p);
        assert_eq!(details.state, JobStatus::Finished, "{details:?}");
        assert_eq!(read_lines(&dir.path().join("inner")), sorted(&["c1-gold@2000", "c4-bronze@4000"]));
        assert_eq!(read_lines(&dir.path().join("left")), sorted(&["c1-gold", "c2-none", "c3-none", "c4-bronze"]));
    }
}

// Versioned rows: a click at t joins the latest change at or before t, whatever the arrival
// order. u1: gold@1000, platinum@5000, deleted@8000; u2: silver@2000.
//   c1@500 (u1): before any row; c6@1500 (u2): before silver; c5@2500 (u2): silver;
//   c2@3000 (u1): gold (platinum comes later in time); c3@6000 (u1): platinum, although it
//   arrives before gold and platinum; c4@9000 (u1): deleted.
//   c7@3500 (u1) arrives after W(4000), late: joined at once with the rows kept: gold.
fn versioned_table(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    let events = vec![
        click("u1", "c3", 6000),
        click("u1", "c2", 3000),
        change("u1", Some("gold"), 1000),
        click("u2", "c5", 2500),
        click("u2", "c6", 1500),
        change("u2", Some("silver"), 2000),
        click("u1", "c1", 500),
        TimedEvent::Watermark(4000),
        pause(),
        click("u1", "c7", 3500),
        change("u1", Some("platinum"), 5000),
        change("u1", None, 8000),
        click("u1", "c4", 9000),
    ];
    let (clicks, changes) = clicks_and_changes(env, events);
    let keyed = clicks.key_by(|c: &Pair| c.0.clone());
    keyed
        .join_table(&changes)
        .versioned()
        .left(|c: Pair, row: Option<String>| format!("{}-{}", c.1, row_name(row)))
        .process(Stamp)
        .write_as_text(out(args, "left")?);
    keyed
        .join_table(&changes)
        .versioned()
        .inner(|c: Pair, row: String| format!("{}-{row}", c.1))
        .write_as_text(out(args, "inner")?);
    Ok(())
}

#[test]
fn a_versioned_table_join_joins_each_element_with_the_row_valid_at_its_time() {
    for p in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let details = run_job(versioned_table, &["--output", dir.path().to_str().unwrap()], p);
        assert_eq!(details.state, JobStatus::Finished, "{details:?}");
        assert_eq!(
            read_lines(&dir.path().join("left")),
            sorted(&[
                "c1-none@500",
                "c6-none@1500",
                "c5-silver@2500",
                "c2-gold@3000",
                "c7-gold@3500",
                "c3-platinum@6000",
                "c4-none@9000"
            ])
        );
        assert_eq!(read_lines(&dir.path().join("inner")), sorted(&["c5-silver", "c2-gold", "c7-gold", "c3-platinum"]));
    }
}
