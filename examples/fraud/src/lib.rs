//! Fraud detection (Flink's fraud detection walkthrough): a small transaction followed by a
//! large one on the same card within a minute raises an alert, a keyed pattern over a sliding
//! time bound kept with state and timers.
//!
//! ```text
//! weir run libweir_example_fraud.so -- --bootstrap-servers B --input-topic transactions
//!     --output-topic alerts [--small-cents 100] [--large-cents 50000] [--within-ms 60000]
//!     [--bounded] ...
//! ```
//!
//! Transactions are JSON `{"card", "amount_cents"}` at their record's timestamp. When a card's
//! transaction is below `--small-cents`, the card's next transaction is checked: if it comes
//! within `--within-ms` (event time) and is above `--large-cents`, an alert
//! `{"card", "small_cents", "large_cents", "at"}` goes out exactly once. Either way the pattern
//! starts over with that next transaction (which may itself be small); an event-time timer
//! forgets a small transaction once the bound has passed. A card's transactions must come in
//! order (one partition per card, as a Kafka key gives).

use serde::{Deserialize, Serialize};
use weir_api::prelude::*;
use weir_example_support as support;

/// A card transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transaction {
    /// The card.
    pub card: String,
    /// The amount, in cents.
    pub amount_cents: i64,
}

/// A small transaction followed by a large one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alert {
    /// The card.
    pub card: String,
    /// The small transaction's amount.
    pub small_cents: i64,
    /// The large transaction's amount.
    pub large_cents: i64,
    /// When the large transaction happened.
    pub at: i64,
}

/// The card's last transaction if it was small: `(time, amount)`.
const SMALL: ValueStateDescriptor<(i64, i64)> = ValueStateDescriptor::new("small-transaction");

#[derive(Clone)]
struct FraudDetector {
    small: i64,
    large: i64,
    within: i64,
}

impl KeyedProcessFunction<String, Transaction, Alert> for FraudDetector {
    fn states(&self) -> Vec<DeclaredState> {
        vec![SMALL.declared()]
    }

    fn process_element(&mut self, tx: Transaction, ctx: &mut KeyedContext<'_, String, Alert>) -> Result<()> {
        let t = ctx.timestamp().ok_or_else(|| Error::user("a transaction without a timestamp"))?;
        if let Some((small_at, small_cents)) = ctx.value_state(&SMALL)?.value()? {
            if tx.amount_cents > self.large && t - small_at <= self.within {
                ctx.collect(Alert { card: tx.card.clone(), small_cents, large_cents: tx.amount_cents, at: t });
            }
            ctx.timer_service().delete_event_time_timer(small_at + self.within);
            ctx.value_state(&SMALL)?.clear()?;
        }
        if tx.amount_cents < self.small {
            ctx.value_state(&SMALL)?.update(&(t, tx.amount_cents))?;
            ctx.timer_service().register_event_time_timer(t + self.within);
        }
        Ok(())
    }

    fn on_timer(&mut self, time: Timestamp, ctx: &mut KeyedContext<'_, String, Alert>) -> Result<()> {
        let mut small = ctx.value_state(&SMALL)?;
        if small.value()?.is_some_and(|(at, _)| at + self.within <= time) {
            small.clear()?;
        }
        Ok(())
    }
}

fn cents(args: &JobArgs, name: &str, default: i64) -> Result<i64> {
    match support::value(args, name)? {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| Error::InvalidArgument(format!("--{name} {v:?} is not a number of cents"))),
    }
}

fn build(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.set_job_name("fraud detection");
    let detector = FraudDetector {
        small: cents(args, "small-cents", 100)?,
        large: cents(args, "large-cents", 50_000)?,
        within: support::millis(args, "within-ms", 60_000)? as i64,
    };
    let source = support::source(args, "input-topic", KafkaDeserializer::<Transaction>::json())?;
    env.from_kafka(source, support::watermarks(args)?)
        .uid("transactions")
        .name("transactions")
        .key_by(|tx: &Transaction| tx.card.clone())
        .process(detector)
        .uid("fraud-detector")
        .name("fraud detector")
        .sink_to_kafka(support::sink(args, "fraud", "output-topic", KafkaSerializer::json())?)
        .uid("alerts")
        .name("alerts");
    Ok(())
}

weir_api::export_job!(build);
