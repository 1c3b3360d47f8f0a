//! The broadcast state pattern on the mini-cluster: rules broadcast to every subtask of an
//! operator, kept in broadcast state and applied to the other input, keyed and not. Expected
//! outputs are derived by hand in the comments.
//!
//! Rules and events come from one scripted source (split by flat maps chained to it); pauses
//! order the rules before the events that should see them, since they reach the operator on
//! different channels.

use std::sync::LazyLock;
use std::time::Duration;
use weir_api::prelude::*;
use weir_jobmanager::JobStatus;
use weir_tests::harness::{read_lines, run_job, sorted};

fn out(args: &JobArgs, name: &str) -> Result<String> {
    Ok(format!("{}/{name}", args.required("output")?))
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Input {
    /// Sets the limit of a category.
    Set(String, u64),
    /// Removes a category's limit.
    Delete(String),
    /// An amount in a category.
    Event(String, u64),
}

type Rule = (String, Option<u64>);
type Event = (String, u64);

const LIMITS: MapStateDescriptor<String, u64> = MapStateDescriptor::new("limits");
static UNRULED: LazyLock<OutputTag<String>> = LazyLock::new(|| OutputTag::new("unruled"));

/// Alerts on amounts above their category's limit; events of categories without a limit go to
/// `unruled`.
#[derive(Clone)]
struct Limits;

impl BroadcastProcessFunction<Event, Rule, String> for Limits {
    fn process_element(
        &mut self,
        (c, amount): Event,
        ctx: &mut ProcessContext<'_, String>,
        rules: &BroadcastState,
    ) -> Result<()> {
        match rules.get(&LIMITS, &c)? {
            Some(limit) if amount > limit => ctx.collect(format!("{c}:{amount}>{limit}")),
            Some(_) => {}
            None => ctx.output(&UNRULED, format!("{c}:{amount}")),
        }
        Ok(())
    }
    fn process_broadcast_element(
        &mut self,
        (c, limit): Rule,
        _: &mut ProcessContext<'_, String>,
        rules: &mut BroadcastState,
    ) -> Result<()> {
        match limit {
            Some(limit) => rules.put(&LIMITS, &c, &limit),
            None => rules.remove(&LIMITS, &c),
        }
    }
}

const ALERTS: ValueStateDescriptor<u64> = ValueStateDescriptor::new("alerts");

/// [`Limits`] per category with a keyed count of its alerts: `category#n:amount>limit`.
#[derive(Clone)]
struct CountedLimits;

impl KeyedBroadcastProcessFunction<String, Event, Rule, String> for CountedLimits {
    fn states(&self) -> Vec<DeclaredState> {
        vec![ALERTS.declared()]
    }
    fn process_element(
        &mut self,
        (c, amount): Event,
        ctx: &mut KeyedContext<'_, String, String>,
        rules: &BroadcastState,
    ) -> Result<()> {
        if let Some(limit) = rules.get(&LIMITS, &c)?
            && amount > limit
        {
            let n = ctx.value_state(&ALERTS)?.value()?.unwrap_or(0) + 1;
            ctx.value_state(&ALERTS)?.update(&n)?;
            ctx.collect(format!("{c}#{n}:{amount}>{limit}"));
        }
        Ok(())
    }
    fn process_broadcast_element(
        &mut self,
        rule: Rule,
        ctx: &mut ProcessContext<'_, String>,
        rules: &mut BroadcastState,
    ) -> Result<()> {
        Limits.process_broadcast_element(rule, ctx, rules)
    }
}

// Limits a = 10, b = 100; events a:5 (under), a:50 (alert), b:50 (under), c:1 (no rule); then
// a = 1 and b deleted; events a:5 (alert), b:500 (no rule), a:2 (alert).
fn limits(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.allow_generated_uids();
    let pause = || TimedEvent::Pause(Duration::from_millis(300));
    let set = |c: &str, l: u64| TimedEvent::record(Input::Set(c.into(), l), 0);
    let event = |c: &str, a: u64| TimedEvent::record(Input::Event(c.into(), a), 0);
    let script = vec![
        set("a", 10),
        set("b", 100),
        pause(),
        event("a", 5),
        event("a", 50),
        event("b", 50),
        event("c", 1),
        pause(),
        set("a", 1),
        TimedEvent::record(Input::Delete("b".into()), 0),
        pause(),
        event("a", 5),
        event("b", 500),
        event("a", 2),
    ];
    let source = env.from_timed_events(script);
    let rules = source
        .flat_map(|i: Input, out: &mut Collector<'_, Rule>| match i {
            Input::Set(c, l) => out.collect((c, Some(l))),
            Input::Delete(c) => out.collect((c, None)),
            Input::Event(..) => {}
        })
        .set_parallelism(1)
        .broadcast_state(&LIMITS);
    let events = source
        .flat_map(|i: Input, out: &mut Collector<'_, Event>| {
            if let Input::Event(c, a) = i {
                out.collect((c, a));
            }
        })
        .set_parallelism(1);
    let alerts = events.connect(&rules).process(Limits);
    alerts.write_as_text(out(args, "alerts")?);
    alerts.side_output(&UNRULED).write_as_text(out(args, "unruled")?);
    events.key_by(|e: &Event| e.0.clone()).connect(&rules).process(CountedLimits).write_as_text(out(args, "counted")?);
    Ok(())
}

#[test]
fn broadcast_rules_reach_every_subtask_and_apply_to_the_other_input() {
    for p in [1, 3] {
        let dir = tempfile::tempdir().unwrap();
        let details = run_job(limits, &["--output", dir.path().to_str().unwrap()], p);
        assert_eq!(details.state, JobStatus::Finished, "{details:?}");
        assert_eq!(read_lines(&dir.path().join("alerts")), sorted(&["a:50>10", "a:5>1", "a:2>1"]));
        assert_eq!(read_lines(&dir.path().join("unruled")), sorted(&["c:1", "b:500"]));
        assert_eq!(read_lines(&dir.path().join("counted")), sorted(&["a#1:50>10", "a#2:5>1", "a#3:2>1"]));
    }
}

fn without_uid(env: &mut StreamExecutionEnvironment, _: &JobArgs) -> Result<()> {
    let rules = env.from_collection(vec![("a".to_owned(), Some(1_u64))]).uid("rules").broadcast_state(&LIMITS);
    let events = env.from_collection(vec![("a".to_owned(), 2_u64)]).uid("events");
    events.connect(&rules).process(Limits).name("limits").print();
    Ok(())
}

#[test]
fn a_broadcast_operator_needs_a_uid_since_it_keeps_state() {
    let err = weir_api::plugin::job_entry(without_uid).build(&[]).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("stateful operators without a uid: 'limits'"), "{err}");
}
