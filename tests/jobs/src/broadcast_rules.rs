//! `--job broadcast-rules`: a keyed broadcast process function whose rules (broadcast) and
//! events both come from one throttled generator, so that its output is known whatever fails.
//!
//! Record `seq` (event time `seq` ms) is a rule when `seq % 10 == 0`: category
//! `(seq / 10) % C` gets the limit `seq`; every other record is an event of category `seq % C`.
//! Rules are kept in broadcast state with their times; each event waits (keyed state, an
//! event-time timer) until the watermark passes it, and is then written as `seq,limit` with the
//! limit of its category that was valid at its time (`-` without one), exactly once.

use std::time::Duration;
use weir_api::prelude::*;

/// Per category, the limits with the times they were set, oldest first.
const RULES: MapStateDescriptor<u64, Vec<(i64, u64)>> = MapStateDescriptor::new("rules");
/// Per event time, the events waiting for the watermark.
const WAITING: MapStateDescriptor<i64, Vec<u64>> = MapStateDescriptor::new("waiting");

#[derive(Clone)]
struct ApplyRules;

impl KeyedBroadcastProcessFunction<u64, (u64, u64), (u64, u64), String> for ApplyRules {
    fn states(&self) -> Vec<DeclaredState> {
        vec![WAITING.declared()]
    }

    fn process_element(
        &mut self,
        (_, seq): (u64, u64),
        ctx: &mut KeyedContext<'_, u64, String>,
        _: &BroadcastState,
    ) -> Result<()> {
        let t = seq as i64;
        let mut waiting = ctx.map_state(&WAITING)?;
        let mut events = waiting.get(&t)?.unwrap_or_default();
        events.push(seq);
        waiting.put(&t, &events)?;
        ctx.timer_service().register_event_time_timer(t);
        Ok(())
    }

    fn process_broadcast_element(
        &mut self,
        (category, limit): (u64, u64),
        ctx: &mut ProcessContext<'_, String>,
        rules: &mut BroadcastState,
    ) -> Result<()> {
        let set_at = ctx.timestamp().ok_or_else(|| Error::user("a rule without a timestamp"))?;
        let mut limits = rules.get(&RULES, &category)?.unwrap_or_default();
        limits.push((set_at, limit));
        limits.sort_unstable();
        // Waiting and later events are after the watermark: they need the limits set after it
        // and the last one before it, no older ones.
        let watermark = ctx.current_watermark();
        if let Some(last_before) = limits.iter().rposition(|&(at, _)| at <= watermark) {
            limits.drain(..last_before);
        }
        rules.put(&RULES, &category, &limits)
    }

    fn on_timer(
        &mut self,
        t: Timestamp,
        ctx: &mut KeyedContext<'_, u64, String>,
        rules: &BroadcastState,
    ) -> Result<()> {
        let category = *ctx.key();
        let limits = rules.get(&RULES, &category)?.unwrap_or_default();
        let limit = limits.iter().rev().find(|&&(at, _)| at <= t).map(|&(_, limit)| limit);
        if let Some(events) = ctx.map_state(&WAITING)?.get(&t)? {
            for seq in events {
                ctx.collect(format!("{seq},{}", limit.map_or("-".to_owned(), |l| l.to_string())));
            }
            ctx.map_state(&WAITING)?.remove(&t)?;
        }
        Ok(())
    }
}

pub fn broadcast_rules(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    let events: u64 = args.parse_required("events")?;
    let rate: f64 = args.parse_required("rate")?;
    let categories: u64 = args.parse_required("categories")?;
    if categories == 0 || !(rate > 0.0 && rate.is_finite()) {
        return Err(Error::InvalidArgument("--categories and --rate must be positive".into()));
    }
    env.set_job_name("test broadcast-rules");
    let records = env
        .from_generator(GeneratorSource::bounded(events).with_rate(rate), |seq| seq)
        .uid("numbers")
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(Duration::ZERO)
                .with_timestamp_assigner(|&seq: &u64, _| seq as i64),
        )
        .uid("timestamps");
    let rules = records
        .flat_map(move |seq: u64, out: &mut Collector<'_, (u64, u64)>| {
            if seq.is_multiple_of(10) {
                out.collect(((seq / 10) % categories, seq));
            }
        })
        .uid("rules")
        .broadcast_state(&RULES);
    records
        .flat_map(move |seq: u64, out: &mut Collector<'_, (u64, u64)>| {
            if !seq.is_multiple_of(10) {
                out.collect((seq % categories, seq));
            }
        })
        .uid("events")
        .key_by(|e: &(u64, u64)| e.0)
        .connect(&rules)
        .process(ApplyRules)
        .uid("apply-rules")
        .write_as_text(args.required("output")?)
        .uid("sink");
    Ok(())
}
