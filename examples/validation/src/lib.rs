//! Validation with a dead-letter topic (the Kafka Streams "dead letter queue" pattern).
//!
//! ```text
//! weir run libweir_example_validation.so -- --bootstrap-servers B --input-topic orders
//!     --output-topic valid-orders --dead-letter-topic rejected-orders [--bounded] ...
//! ```
//!
//! Input values are JSON orders `{"order_id", "customer", "amount_cents", "currency"}`. An
//! order is valid when its customer is not empty, its amount is positive and its currency is
//! one of EUR, USD, GBP (in any case); valid orders go to the output topic with the currency in
//! upper case. Nothing is lost:
//! - a value that is not such JSON is copied, bytes and headers unchanged, to the dead-letter
//!   topic by the source, with the headers `weir.error` (why), `weir.topic`, `weir.partition`
//!   and `weir.offset` (where it came from);
//! - an order that breaks a rule goes to a side output and from there, exactly once, to the
//!   dead-letter topic as `{"order": ..., "error": "..."}` with the header `weir.error`.

use serde::{Deserialize, Serialize};
use std::sync::LazyLock;
use weir_api::prelude::*;
use weir_example_support as support;

/// An order as it comes in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// Its id.
    pub order_id: String,
    /// Who ordered.
    pub customer: String,
    /// How much, in cents.
    pub amount_cents: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// An order that broke a rule, and which.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rejected {
    /// The order as it came.
    pub order: Order,
    /// The broken rule.
    pub error: String,
}

static REJECTED: LazyLock<OutputTag<Rejected>> = LazyLock::new(|| OutputTag::new("rejected"));

const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];

/// Why `order` is not valid, if it is not.
fn broken_rule(order: &Order) -> Option<String> {
    if order.customer.trim().is_empty() {
        return Some("the customer is empty".into());
    }
    if order.amount_cents <= 0 {
        return Some(format!("the amount {} is not positive", order.amount_cents));
    }
    if !CURRENCIES.contains(&order.currency.to_uppercase().as_str()) {
        return Some(format!("the currency {:?} is not one of EUR, USD, GBP", order.currency));
    }
    None
}

#[derive(Clone)]
struct Validate;

impl ProcessFunction<Order, Order> for Validate {
    fn process_element(&mut self, order: Order, ctx: &mut ProcessContext<'_, Order>) -> Result<()> {
        match broken_rule(&order) {
            Some(error) => ctx.output(&REJECTED, Rejected { order, error }),
            None => ctx.collect(Order { currency: order.currency.to_uppercase(), ..order }),
        }
        Ok(())
    }
}

fn build(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<()> {
    env.set_job_name("validation");
    let dead_letters = support::required(args, "dead-letter-topic", "TOPIC")?.to_owned();
    let source = support::source_with_policy(
        args,
        "input-topic",
        KafkaDeserializer::<Order>::json(),
        MalformedPolicy::DeadLetter { topic: dead_letters },
    )?;
    let valid = env
        .from_kafka(source, support::watermarks(args)?)
        .uid("orders")
        .name("orders")
        .process(Validate)
        .uid("validate")
        .name("validate");
    valid
        .sink_to_kafka(support::sink(args, "validation", "output-topic", KafkaSerializer::json())?)
        .uid("valid-orders")
        .name("valid orders");
    let rejected = KafkaSerializer::from_fn(|r: &Rejected, out: &mut KafkaRecordOut<'_>| {
        let json = serde_json::to_vec(r).unwrap_or_default();
        out.key(r.order.order_id.as_bytes()).value(&json).header("weir.error", Some(r.error.as_bytes()));
    });
    valid
        .side_output(&REJECTED)
        .sink_to_kafka(support::sink(args, "validation", "dead-letter-topic", rejected)?)
        .uid("rejected-orders")
        .name("rejected orders");
    Ok(())
}

weir_api::export_job!(build);
