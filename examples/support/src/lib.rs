//! What the Kafka Streams examples share: Kafka sources and sinks of JSON records built from
//! the same job arguments.
//!
//! ```text
//! --bootstrap-servers B             the Kafka brokers (required)
//! [--bounded]                       read the input topics up to their end at the start, then finish
//! [--group-id G]                    the consumer group offsets are committed to (for lag tools)
//! [--delivery exactly-once|at-least-once|none]   (default exactly-once)
//! [--transactional-id-prefix P]     (default: the example's name and its output topic)
//! [--max-out-of-orderness-ms N]     how late records may come within a partition (default 5000)
//! ```
//!
//! Event time is the Kafka record's timestamp unless the example assigns one.

use std::time::Duration;
use weir_api::prelude::*;

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

/// The value of `--name`, if given; an error when the flag has no value.
pub fn value<'a>(args: &'a JobArgs, name: &str) -> Result<Option<&'a str>> {
    match args.get(name) {
        None if args.has(name) => Err(invalid(format!("--{name} needs a value"))),
        other => Ok(other),
    }
}

/// The value of `--name`; an error naming the flag when it is missing.
pub fn required<'a>(args: &'a JobArgs, name: &str, what: &str) -> Result<&'a str> {
    value(args, name)?.ok_or_else(|| invalid(format!("--{name} {what} is required")))
}

/// `--bootstrap-servers`.
pub fn bootstrap_servers(args: &JobArgs) -> Result<&str> {
    required(args, "bootstrap-servers", "host:port")
}

/// A source of the topic named by `--{topic_arg}`, read from the earliest offsets (bounded with
/// `--bounded`), its records turned into `T` by `deserializer`.
pub fn source<T>(args: &JobArgs, topic_arg: &str, deserializer: KafkaDeserializer<T>) -> Result<KafkaSource<T>> {
    source_with_policy(args, topic_arg, deserializer, MalformedPolicy::Fail)
}

/// [`source`] with the malformed-record policy `policy` (`source`'s is to fail).
pub fn source_with_policy<T>(
    args: &JobArgs,
    topic_arg: &str,
    deserializer: KafkaDeserializer<T>,
    policy: MalformedPolicy,
) -> Result<KafkaSource<T>> {
    let topic = required(args, topic_arg, "TOPIC")?;
    let mut builder = KafkaSource::builder()
        .bootstrap_servers(bootstrap_servers(args)?)
        .topics([topic])
        .starting_offsets(StartingOffsets::Earliest)
        .on_malformed(policy);
    if let Some(group) = value(args, "group-id")? {
        builder = builder.group_id(group);
    }
    if args.has("bounded") {
        builder = builder.bounded();
    }
    Ok(builder.build(deserializer))
}

/// A sink to the topic named by `--{topic_arg}`, exactly once unless `--delivery` says
/// otherwise, its records made by `serializer`.
pub fn sink<T>(args: &JobArgs, example: &str, topic_arg: &str, serializer: KafkaSerializer<T>) -> Result<KafkaSink<T>> {
    let topic = required(args, topic_arg, "TOPIC")?;
    let delivery = match value(args, "delivery")? {
        None | Some("exactly-once") => Delivery::ExactlyOnce,
        Some("at-least-once") => Delivery::AtLeastOnce,
        Some("none") => Delivery::None,
        Some(other) => {
            return Err(invalid(format!("unknown --delivery {other:?}: expected exactly-once, at-least-once or none")));
        }
    };
    let prefix = match value(args, "transactional-id-prefix")? {
        Some(prefix) => format!("{prefix}-{topic}"),
        None => format!("{example}-{topic}"),
    };
    Ok(KafkaSink::builder()
        .bootstrap_servers(bootstrap_servers(args)?)
        .topic(topic)
        .delivery(delivery)
        .transactional_id_prefix(prefix)
        .build(serializer))
}

/// Watermarks `--max-out-of-orderness-ms` (default 5000) behind the largest timestamp of each
/// partition.
pub fn watermarks<T>(args: &JobArgs) -> Result<WatermarkStrategy<T>> {
    let ms: u64 = match value(args, "max-out-of-orderness-ms")? {
        Some(ms) => ms.parse().map_err(|_| invalid(format!("--max-out-of-orderness-ms {ms:?} is not a number")))?,
        None => 5000,
    };
    Ok(WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(ms)))
}

/// A positive duration in milliseconds from `--{name}`, or `default`.
pub fn millis(args: &JobArgs, name: &str, default: u64) -> Result<u64> {
    match value(args, name)? {
        None => Ok(default),
        Some(ms) => match ms.parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(ms),
            _ => Err(invalid(format!("--{name} {ms:?} is not a positive number of milliseconds"))),
        },
    }
}
