//! Job plugins for Weir's cluster tests, selected with `--job NAME`:
//!
//! ```text
//! --job slow-sink --records N --payload-bytes B --sleep-every K --output DIR
//! --job panic --at N --output DIR
//! --job endless --rate R
//! --job keyed-state --keys N --events M --rate R [--trickle T] [--variant extra-map|no-count]
//!     [--source-parallelism P]
//! --job table-join --events N --rate R --users U --output DIR
//! --job broadcast-rules --events N --rate R --categories C --output DIR
//! --job async-lookup --events N --rate R --output DIR
//! --job profiles --version v1|v2|v3 --events N --keys K --rate R --output DIR
//! --job custom-source --splits S --per-split N --rate R --output DIR
//! ```
//!
//! - `slow-sink`: N records of B bytes each, rebalanced to a map that sleeps 1 ms every K
//!   records (so the network between the generator and the map must push back), then counted
//!   and summed by one keyed process function that writes the single line `count,sum`
//!   (`N,N*(N+1)/2`) once its input ends.
//! - `panic`: a map that panics with `test job panics at record N` when it sees record N of
//!   `1..=10*N`.
//! - `endless`: an unbounded generator throttled to R records per second into a blackhole.
//! - `keyed-state`: a generator throttled to R records per second whose records carry the key
//!   `seq % N`, keyed by it, into a keyed process function that counts the records of each key in
//!   a `ValueState<u64>` (no output; a blackhole sink). It ends after M records; with
//!   `--trickle T` it goes on until cancelled, passing only about T records per second after the
//!   first M (the generator keeps its rate, the others are dropped before the key-by; the `i`-th
//!   record that passes has the key `i % N`, so the trickle walks on through the keys), so that
//!   checkpoints after the first pass over the keys see a small change of the state. Variants
//!   for savepoint compatibility tests: `extra-map` adds a stateless map (uid `extra`) before the
//!   key-by; `no-count` replaces the counting operator by a stateless map (uid `no-count`).
//!   `--source-parallelism P` fixes the generator's parallelism (so that the keyed operator can
//!   be restored from a savepoint at another parallelism).
//! - `table-join`: see [`table_join`].
//! - `broadcast-rules`: see [`broadcast_rules`].
//! - `async-lookup`: see [`async_lookup`].
//! - `profiles`: see [`profiles`].
//! - `custom-source`: see [`custom_source`].

pub mod async_lookup;
pub mod broadcast_rules;
pub mod custom_source;
pub mod profiles;
pub mod table_join;

use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::time::Duration;
use weir_api::prelude::*;

/// The jobs, by their `--job` name.
const JOBS: &[&str] = &[
    "slow-sink",
    "panic",
    "endless",
    "keyed-state",
    "table-join",
    "broadcast-rules",
    "async-lookup",
    "profiles",
    "custom-source",
];

/// A generated record with a payload that makes it expensive to ship.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Payload {
    seq: u64,
    data: String,
}

/// The running count and sum of the slow sink's single key.
const COUNT: ValueStateDescriptor<u64> = ValueStateDescriptor::new("count");
const SUM: ValueStateDescriptor<u64> = ValueStateDescriptor::new("sum");

/// Counts and sums the sequence numbers of its key; emits `count,sum` at the end of the input.
/// Its user metrics: `countedRecords` (a counter of its elements), `lastSequence` (a gauge of the
/// latest element) and `sequenceLastDigit` (a histogram of the elements modulo 10).
#[derive(Clone, Default)]
struct CountAndSum {
    counted: Option<Counter>,
    last: Option<Gauge>,
    last_digit: Option<Histogram>,
}

impl KeyedProcessFunction<u8, u64, String> for CountAndSum {
    fn open(&mut self, ctx: &RuntimeContext<'_>) -> Result<()> {
        let group = ctx.metric_group();
        self.counted = Some(group.counter("countedRecords")?);
        self.last = Some(group.gauge("lastSequence")?);
        self.last_digit = Some(group.histogram("sequenceLastDigit")?);
        Ok(())
    }

    fn process_element(&mut self, value: u64, ctx: &mut KeyedContext<'_, u8, String>) -> Result<()> {
        if let (Some(counted), Some(last), Some(last_digit)) = (&self.counted, &self.last, &self.last_digit) {
            counted.inc();
            last.set(value as f64);
            last_digit.update((value % 10) as i64);
        }
        let n = ctx.value_state(&COUNT)?.value()?.unwrap_or(0);
        if n == 0 {
            // The end-of-input watermark fires it once, after the last record.
            ctx.timer_service().register_event_time_timer(MAX_WATERMARK);
        }
        ctx.value_state(&COUNT)?.update(&(n + 1))?;
        let mut sum = ctx.value_state(&SUM)?;
        let s = sum.value()?.unwrap_or(0);
        sum.update(&(s + value))?;
        Ok(())
    }

    fn on_timer(&mut self, _timestamp: Timestamp, ctx: &mut KeyedContext<'_, u8, String>) -> Result<()> {
        let count = ctx.value_state(&COUNT)?.value()?.unwrap_or(0);
        let sum = ctx.value_state(&SUM)?.value()?.unwrap_or(0);
        ctx.collect(format!("{count},{sum}"));
        Ok(())
    }
}

thread_local! {
    /// Records the slow map has seen in this subtask (each subtask runs on its own thread).
    static SEEN: Cell<u64> = const { Cell::new(0) };
}

fn slow_sink(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    let records: u64 = args.parse_required("records")?;
    let payload_bytes: usize = args.parse_required("payload-bytes")?;
    let sleep_every: u64 = args.parse_required("sleep-every")?;
    if sleep_every == 0 {
        return Err(Error::InvalidArgument("--sleep-every must be at least 1".into()));
    }
    let output = args.required("output")?;
    env.set_job_name("test slow-sink");
    env.from_generator(GeneratorSource::bounded(records), |seq| seq)
        .uid("numbers")
        .name("numbers")
        .map(move |seq: u64| Payload { seq, data: "x".repeat(payload_bytes) })
        .uid("payload")
        .name("payload")
        .rebalance()
        .map(move |p: Payload| {
            let seen = SEEN.with(|seen| {
                seen.set(seen.get() + 1);
                seen.get()
            });
            if seen.is_multiple_of(sleep_every) {
                std::thread::sleep(Duration::from_millis(1));
            }
            p.seq
        })
        .uid("slow")
        .name("slow map")
        .key_by(|_: &u64| 0u8)
        .process(CountAndSum::default())
        .uid("count-and-sum")
        .name("count and sum")
        .write_as_text(output)
        .uid("sink")
        .name("text sink");
    Ok(())
}

fn panic_job(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    let at: u64 = args.parse_required("at")?;
    if at == 0 {
        return Err(Error::InvalidArgument("--at must be at least 1".into()));
    }
    let output = args.required("output")?;
    env.set_job_name("test panic");
    env.from_generator(GeneratorSource::bounded(at.saturating_mul(10)), |seq| seq)
        .uid("numbers")
        .name("numbers")
        .map(move |seq: u64| {
            if seq == at {
                panic!("test job panics at record {at}");
            }
            seq
        })
        .uid("panicking")
        .name("panicking map")
        .map(|seq: u64| seq.to_string())
        .uid("format")
        .name("format")
        .write_as_text(output)
        .uid("sink")
        .name("text sink");
    Ok(())
}

fn endless(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    let rate: f64 = args.parse_required("rate")?;
    if !(rate > 0.0 && rate.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "--rate must be a positive number of records per second, got {rate}"
        )));
    }
    env.set_job_name("test endless");
    env.from_generator(GeneratorSource::unbounded().with_rate(rate), |seq| seq)
        .uid("numbers")
        .name("numbers")
        .map(|seq: u64| seq.wrapping_mul(31))
        .uid("scramble")
        .name("scramble")
        .sink_to_blackhole()
        .uid("sink")
        .name("blackhole");
    Ok(())
}

/// The number of records seen per key of the `keyed-state` job.
const SEEN_PER_KEY: ValueStateDescriptor<u64> = ValueStateDescriptor::new("seen");

/// Counts the records of each key in a value state; emits nothing.
#[derive(Clone)]
struct CountPerKey;

impl KeyedProcessFunction<u64, u64, ()> for CountPerKey {
    fn states(&self) -> Vec<DeclaredState> {
        vec![SEEN_PER_KEY.declared()]
    }

    fn process_element(&mut self, _key: u64, ctx: &mut KeyedContext<'_, u64, ()>) -> Result<()> {
        let mut seen = ctx.value_state(&SEEN_PER_KEY)?;
        let n = seen.value()?.unwrap_or(0);
        seen.update(&(n + 1))
    }
}

/// The state "seen" as text: an upgrade that changed the state's value type.
const SEEN_AS_TEXT: ValueStateDescriptor<String> = ValueStateDescriptor::new("seen");

/// [`CountPerKey`] with its count kept as text.
#[derive(Clone)]
struct CountPerKeyAsText;

impl KeyedProcessFunction<u64, u64, ()> for CountPerKeyAsText {
    fn states(&self) -> Vec<DeclaredState> {
        vec![SEEN_AS_TEXT.declared()]
    }

    fn process_element(&mut self, _key: u64, ctx: &mut KeyedContext<'_, u64, ()>) -> Result<()> {
        let mut seen = ctx.value_state(&SEEN_AS_TEXT)?;
        let n: u64 =
            seen.value()?.map_or(Ok(0), |text| text.parse()).map_err(|e| Error::InvalidArgument(format!("{e}")))?;
        seen.update(&(n + 1).to_string())
    }
}

fn keyed_state(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    let keys: u64 = args.parse_required("keys")?;
    if keys == 0 {
        return Err(Error::InvalidArgument("--keys must be at least 1".into()));
    }
    let events: u64 = args.parse_required("events")?;
    let rate: f64 = args.parse_required("rate")?;
    if !(rate > 0.0 && rate.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "--rate must be a positive number of records per second, got {rate}"
        )));
    }
    let trickle: Option<f64> = if args.has("trickle") { Some(args.parse_required("trickle")?) } else { None };
    env.set_job_name("test keyed-state");
    let generator = match trickle {
        None => GeneratorSource::bounded(events).with_rate(rate),
        Some(trickle) if trickle > 0.0 && trickle <= rate => GeneratorSource::unbounded().with_rate(rate),
        Some(trickle) => {
            return Err(Error::InvalidArgument(format!(
                "--trickle must be a positive number of records per second up to --rate, got {trickle}"
            )));
        }
    };
    // After the first `events` records, one in `every` passes (about `trickle` per second).
    let every = trickle.map_or(1, |trickle| (rate / trickle).round().max(1.0) as u64);
    let mut numbers = env.from_generator(generator, |seq| seq).uid("numbers").name("numbers");
    if args.has("source-parallelism") {
        numbers = numbers.set_parallelism(args.parse_required("source-parallelism")?);
    }
    let keyed = numbers
        .filter(move |&seq: &u64| seq <= events || (seq - events).is_multiple_of(every))
        .uid("trickle")
        .name("trickle")
        // The index of the record among those that pass: the trickle goes on key after key.
        .map(move |seq: u64| {
            let index = if seq <= events { seq } else { events + (seq - events) / every };
            index % keys
        })
        .uid("key")
        .name("key");
    let keyed = match args.get("variant") {
        None => keyed,
        Some("extra-map") => keyed.map(|key: u64| key).uid("extra").name("extra"),
        // The count kept as text under the same state name: a changed value type.
        Some("text-count") => {
            keyed
                .key_by(|&key: &u64| key)
                .process(CountPerKeyAsText)
                .uid("count-per-key")
                .name("count per key")
                .sink_to_blackhole()
                .uid("sink")
                .name("blackhole");
            return Ok(());
        }
        // The counting operator without a uid: refused when the job is built.
        Some("no-uid") => {
            keyed.key_by(|&key: &u64| key).process(CountPerKey).name("count per key").sink_to_blackhole();
            return Ok(());
        }
        Some("no-count") => {
            keyed.map(|_: u64| ()).uid("no-count").name("no count").sink_to_blackhole().uid("sink").name("blackhole");
            return Ok(());
        }
        Some(other) => {
            return Err(Error::InvalidArgument(format!(
                "unknown --variant {other:?}: expected extra-map, no-count or no-uid"
            )));
        }
    };
    keyed
        .key_by(|&key: &u64| key)
        .process(CountPerKey)
        .uid("count-per-key")
        .name("count per key")
        .sink_to_blackhole()
        .uid("sink")
        .name("blackhole");
    Ok(())
}

/// Builds the job named by `--job`.
fn build(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    match args.required("job")? {
        "slow-sink" => slow_sink(env, args),
        "panic" => panic_job(env, args),
        "endless" => endless(env, args),
        "keyed-state" => keyed_state(env, args),
        "table-join" => table_join::table_join(env, args),
        "broadcast-rules" => broadcast_rules::broadcast_rules(env, args),
        "async-lookup" => async_lookup::async_lookup(env, args),
        "profiles" => profiles::profiles(env, args),
        "custom-source" => custom_source::custom_source(env, args),
        other => Err(Error::InvalidArgument(format!("unknown job {other:?}: the valid jobs are: {}", JOBS.join(", ")))),
    }
}

weir_api::export_job!(build);

#[cfg(test)]
mod tests {
    use super::*;

    fn build_with(args: &[&str]) -> Result<()> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        weir_api::plugin::job_entry(build).build(&args).map(|_| ())
    }

    #[test]
    fn every_job_builds() {
        build_with(&[
            "--job",
            "slow-sink",
            "--records",
            "10",
            "--payload-bytes",
            "4",
            "--sleep-every",
            "2",
            "--output",
            "/tmp/x",
        ])
        .unwrap();
        build_with(&["--job", "panic", "--at", "5", "--output", "/tmp/x"]).unwrap();
        build_with(&["--job", "endless", "--rate", "100"]).unwrap();
        build_with(&["--job", "keyed-state", "--keys", "10", "--events", "20", "--rate", "100"]).unwrap();
        build_with(&["--job", "keyed-state", "--keys", "10", "--events", "20", "--rate", "100", "--trickle", "1"])
            .unwrap();
    }

    #[test]
    fn bad_arguments_are_rejected() {
        for (args, needle) in [
            (vec![], "--job is required"),
            (vec!["--job", "nope"], "nope"),
            (vec!["--job", "panic", "--output", "/tmp/x"], "--at is required"),
            (vec!["--job", "panic", "--at", "x", "--output", "/tmp/x"], "--at"),
            (vec!["--job", "endless"], "--rate is required"),
            (vec!["--job", "endless", "--rate", "0"], "--rate"),
            (vec!["--job", "slow-sink", "--records", "1", "--payload-bytes", "1", "--output", "d"], "--sleep-every"),
            (vec!["--job", "keyed-state", "--keys", "0", "--events", "1", "--rate", "1"], "--keys"),
            (
                vec!["--job", "keyed-state", "--keys", "1", "--events", "1", "--rate", "1", "--trickle", "2"],
                "--trickle",
            ),
        ] {
            match build_with(&args) {
                Err(Error::InvalidArgument(message)) => assert!(message.contains(needle), "{args:?}: {message}"),
                Err(other) => panic!("{args:?}: expected an invalid argument, got {other}"),
                Ok(()) => panic!("{args:?}: expected an invalid argument, got a job"),
            }
        }
    }
}
