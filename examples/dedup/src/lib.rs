//! Deduplication of events by id within a time bound (the Kafka Streams "deduplication"
//! recipe).
//!
//! ```text
//! weir run libweir_example_dedup.so -- --bootstrap-servers B --input-topic events
//!     --output-topic unique [--window-ms 60000] [--bounded] ...   (see weir-example-support)
//! ```
//!
//! Input values are JSON events `{"id": "...", "payload": ...}` whose event time is the Kafka
//! record's timestamp. An event is written to the output topic unless an event with the same id
//! was written less than `--window-ms` before it in event time (`|t - t_last| < window`); each
//! id's last time is kept in keyed state and dropped by an event-time timer once the watermark
//! is a window past it, so the state holds only ids seen within about a window. Events of one id
//! must come in order (one partition per id, as a Kafka key gives).

use serde::{Deserialize, Serialize};
use weir_api::prelude::*;
use weir_example_support as support;

/// An event; the payload is kept as it came.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// What duplicates share.
    pub id: String,
    /// Anything.
    #[serde(default)]
    pub payload: serde_json::Value,
}

const LAST_EMITTED: ValueStateDescriptor<i64> = ValueStateDescriptor::new("last-emitted");

/// Emits the first event of each id within the window.
#[derive(Clone)]
struct Deduplicate {
    window: i64,
}

impl KeyedProcessFunction<String, Event, Event> for Deduplicate {
    fn states(&self) -> Vec<DeclaredState> {
        vec![LAST_EMITTED.declared()]
    }

    fn process_element(&mut self, event: Event, ctx: &mut KeyedContext<'_, String, Event>) -> Result<()> {
        let t = ctx.timestamp().ok_or_else(|| Error::user("an event without a timestamp"))?;
        let mut last = ctx.value_state(&LAST_EMITTED)?;
        if let Some(previous) = last.value()?
            && (t - previous).abs() < self.window
        {
            return Ok(()); // a duplicate
        }
        last.update(&t)?;
        ctx.timer_service().register_event_time_timer(t + self.window);
        ctx.collect(event);
        Ok(())
    }

    fn on_timer(&mut self, time: Timestamp, ctx: &mut KeyedContext<'_, String, Event>) -> Result<()> {
        let mut last = ctx.value_state(&LAST_EMITTED)?;
        if last.value()?.is_some_and(|previous| previous + self.window <= time) {
            last.clear()?;
        }
        Ok(())
    }
}

fn build(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    let window = support::millis(args, "window-ms", 60_000)?;
    env.set_job_name("dedup");
    let source = support::source(args, "input-topic", KafkaDeserializer::<Event>::json())?;
    env.from_kafka(source, support::watermarks(args)?)
        .uid("events")
        .name("events")
        .key_by(|e: &Event| e.id.clone())
        .process(Deduplicate { window: window as i64 })
        .uid("deduplicate")
        .name("deduplicate")
        .sink_to_kafka(support::sink(args, "dedup", "output-topic", KafkaSerializer::json())?)
        .uid("unique")
        .name("unique events");
    Ok(())
}

weir_api::export_job!(build);
