//! Real-time log analysis: errors per service per minute, and the services with the most errors
//! each minute.
//!
//! ```text
//! weir run libweir_example_log_analysis.so -- --bootstrap-servers B --input-topic logs
//!     --output-topic errors-per-minute --top-topic top-errors [--top 3] [--bounded] ...
//! ```
//!
//! Log lines are JSON `{"service", "level", "message"}` at their record's timestamp. Lines of
//! level `ERROR` (in any case) are counted per service in tumbling one-minute event-time windows:
//! `{"minute", "service", "errors"}` (the minute's start, ms) to the output topic. Then, over all
//! services (`window_all`), the `--top` services with the most errors of each minute (ties by
//! name) go to the top topic as `{"minute", "rank", "service", "errors"}`, rank 1 first. Both
//! exactly once.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use weir_api::prelude::*;
use weir_example_support as support;

/// A log line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    /// The service that logged it.
    pub service: String,
    /// Its level (`INFO`, `WARN`, `ERROR`, ...).
    pub level: String,
    /// The text.
    #[serde(default)]
    pub message: String,
}

/// Errors of one service in one minute.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceErrors {
    /// The minute's start, ms since the epoch.
    pub minute: i64,
    /// The service.
    pub service: String,
    /// Its errors in that minute.
    pub errors: u64,
}

/// A place in a minute's ranking.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopErrors {
    /// The minute's start.
    pub minute: i64,
    /// 1 for the most errors.
    pub rank: u32,
    /// The service.
    pub service: String,
    /// Its errors in that minute.
    pub errors: u64,
}

#[derive(Clone)]
struct CountLines;

impl AggregateFunction<LogLine, u64, u64> for CountLines {
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, _: LogLine, count: u64) -> u64 {
        count + 1
    }
    fn get_result(&self, count: u64) -> u64 {
        count
    }
    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

const MINUTE: Duration = Duration::from_secs(60);

fn build(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.set_job_name("log analysis");
    let top: usize = match support::value(args, "top")? {
        None => 3,
        Some(n) => n
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| Error::InvalidArgument(format!("--top {n:?} is not a positive number of services")))?,
    };
    let source = support::source(args, "input-topic", KafkaDeserializer::<LogLine>::json())?;
    let per_service = env
        .from_kafka(source, support::watermarks(args)?)
        .uid("logs")
        .name("logs")
        .filter(|line: &LogLine| line.level.eq_ignore_ascii_case("ERROR"))
        .name("errors")
        .key_by(|line: &LogLine| line.service.clone())
        .window(TumblingEventTimeWindows::of(MINUTE))
        .aggregate_with(
            CountLines,
            |service: &String, w: &TimeWindow, n: Vec<u64>, out: &mut Collector<'_, ServiceErrors>| {
                out.collect(ServiceErrors { minute: w.start, service: service.clone(), errors: n[0] });
            },
        )
        .uid("errors-per-service")
        .name("errors per service per minute");
    per_service
        .sink_to_kafka(support::sink(args, "log-analysis", "output-topic", KafkaSerializer::json())?)
        .uid("errors-per-minute")
        .name("errors per minute");
    per_service
        .window_all(TumblingEventTimeWindows::of(MINUTE))
        .process(move |_: &(), w: &TimeWindow, mut counts: Vec<ServiceErrors>, out: &mut Collector<'_, TopErrors>| {
            counts.sort_by(|a, b| b.errors.cmp(&a.errors).then_with(|| a.service.cmp(&b.service)));
            for (rank, c) in counts.into_iter().take(top).enumerate() {
                out.collect(TopErrors { minute: w.start, rank: rank as u32 + 1, service: c.service, errors: c.errors });
            }
        })
        .uid("top-services")
        .name("top services per minute")
        .sink_to_kafka(support::sink(args, "log-analysis", "top-topic", KafkaSerializer::json())?)
        .uid("top-errors")
        .name("top errors");
    Ok(())
}

weir_api::export_job!(build);
