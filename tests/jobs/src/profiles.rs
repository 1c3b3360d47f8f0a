//! `--job profiles --version v1|v2|v3`: versions of one job whose keyed state type evolves, for
//! the schema evolution tests.
//!
//! A throttled generator's record `seq` visits key `seq % K`; a keyed process function keeps a
//! profile per key in the value state `profile` and counts the key's visits in it. At the end of
//! the input (the final watermark fires a timer) it writes `key,visits,tier` for every key.
//!
//! - v1: `{ name, visits }`.
//! - v2: a compatible later version: `visits` renamed `count` (`#[serde(alias = "visits")]`),
//!   a field `tier: Option<String>` added (absent in v1's values: `None`, written as `-`).
//! - v3: incompatible: `visits` is text.

use serde::{Deserialize, Serialize};
use weir_api::prelude::*;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProfileV1 {
    name: String,
    visits: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProfileV2 {
    name: String,
    #[serde(alias = "visits")]
    count: u64,
    tier: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProfileV3 {
    name: String,
    visits: String,
}

/// What the versions have in common.
trait Profile: weir_api::Data + Default {
    fn visit(&mut self, key: u64);
    fn line(&self, key: u64) -> String;
}

impl Profile for ProfileV1 {
    fn visit(&mut self, key: u64) {
        self.name = format!("user-{key}");
        self.visits += 1;
    }
    fn line(&self, key: u64) -> String {
        format!("{key},{},-", self.visits)
    }
}

impl Profile for ProfileV2 {
    fn visit(&mut self, key: u64) {
        self.name = format!("user-{key}");
        self.count += 1;
    }
    fn line(&self, key: u64) -> String {
        format!("{key},{},{}", self.count, self.tier.as_deref().unwrap_or("-"))
    }
}

impl Profile for ProfileV3 {
    fn visit(&mut self, key: u64) {
        self.name = format!("user-{key}");
        let n: u64 = self.visits.parse().unwrap_or(0);
        self.visits = (n + 1).to_string();
    }
    fn line(&self, key: u64) -> String {
        format!("{key},{},-", self.visits)
    }
}

#[derive(Clone)]
struct CountVisits<P>(std::marker::PhantomData<fn() -> P>);

const fn profile<P>() -> ValueStateDescriptor<P> {
    ValueStateDescriptor::new("profile")
}

impl<P: Profile> KeyedProcessFunction<u64, u64, String> for CountVisits<P> {
    fn states(&self) -> Vec<DeclaredState> {
        vec![profile::<P>().declared()]
    }

    fn process_element(&mut self, _: u64, ctx: &mut KeyedContext<'_, u64, String>) -> Result<()> {
        let key = *ctx.key();
        let mut state = ctx.value_state(&profile::<P>())?;
        let mut current = state.value()?.unwrap_or_default();
        current.visit(key);
        state.update(&current)?;
        ctx.timer_service().register_event_time_timer(MAX_WATERMARK - 1);
        Ok(())
    }

    fn on_timer(&mut self, _: Timestamp, ctx: &mut KeyedContext<'_, u64, String>) -> Result<()> {
        let key = *ctx.key();
        if let Some(p) = ctx.value_state(&profile::<P>())?.value()? {
            ctx.collect(p.line(key));
        }
        Ok(())
    }
}

pub fn profiles(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    let events: u64 = args.parse_required("events")?;
    let keys: u64 = args.parse_required("keys")?;
    let rate: f64 = args.parse_required("rate")?;
    if keys == 0 || !(rate > 0.0 && rate.is_finite()) {
        return Err(Error::InvalidArgument("--keys and --rate must be positive".into()));
    }
    env.set_job_name("test profiles");
    let keyed = env
        .from_generator(GeneratorSource::bounded(events).with_rate(rate), move |seq| seq % keys)
        .uid("numbers")
        .set_parallelism(1)
        .key_by(|&key: &u64| key);
    let counted = match args.required("version")? {
        "v1" => keyed.process(CountVisits::<ProfileV1>(std::marker::PhantomData)),
        "v2" => keyed.process(CountVisits::<ProfileV2>(std::marker::PhantomData)),
        "v3" => keyed.process(CountVisits::<ProfileV3>(std::marker::PhantomData)),
        other => return Err(Error::InvalidArgument(format!("unknown --version {other:?}: expected v1, v2 or v3"))),
    };
    counted.uid("count-visits").name("count visits").write_as_text(args.required("output")?).uid("sink");
    Ok(())
}
