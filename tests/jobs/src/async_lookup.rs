//! `--job async-lookup`: a throttled generator whose records are looked up by an async function
//! (unordered, capacity 50) that answers record `seq` after `(seq * 13) % 40` ms with
//! `seq,(seq * seq) % 1009`, written to text files exactly once. At the rate of the tests many
//! requests are in flight at every checkpoint.

use std::time::Duration;
use weir_api::prelude::*;

#[derive(Clone)]
struct SlowLookup;

impl AsyncFunction<u64, String> for SlowLookup {
    fn invoke(&self, seq: u64) -> AsyncResult<String> {
        async_result(async move {
            tokio::time::sleep(Duration::from_millis((seq * 13) % 40)).await;
            Ok(vec![format!("{seq},{}", (seq * seq) % 1009)])
        })
    }
}

pub fn async_lookup(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    let events: u64 = args.parse_required("events")?;
    let rate: f64 = args.parse_required("rate")?;
    if !(rate > 0.0 && rate.is_finite()) {
        return Err(Error::InvalidArgument("--rate must be positive".into()));
    }
    env.set_job_name("test async-lookup");
    env.from_generator(GeneratorSource::bounded(events).with_rate(rate), |seq| seq)
        .uid("numbers")
        .unordered_wait(SlowLookup, Duration::from_secs(10), 50)
        .uid("lookup")
        .write_as_text(args.required("output")?)
        .uid("sink");
    Ok(())
}
