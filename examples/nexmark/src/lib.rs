//! Nexmark-style queries over a deterministic stream of bids.
//!
//! ```text
//! weir run target/.../libweir_example_nexmark.so -- --query q0|q1|q2|q5|q7|wcount|wjoin|ijoin \
//!     [--source generator] --events N [--rate EVENTS_PER_S]
//!   | --source kafka --bootstrap-servers B --topic T [--group-id G]
//!         [--starting-offsets earliest|latest|committed] [--bounded]
//!         [--malformed fail|skip|dead-letter --dead-letter-topic D]
//!         [--partition-discovery-interval-ms MS (default 30000, 0: off)]
//!     --output DIR | --sink blackhole
//!   | --sink kafka --bootstrap-servers B --topic T [--delivery exactly-once|at-least-once|none]
//!         [--transactional-id-prefix P]
//! ```
//!
//! With Kafka on both sides, `--source-topic T` and `--sink-topic T` name the two topics
//! (`--topic` alone would be ambiguous and is refused).
//!
//! The bids come from [`bid`], a pure function of the generator's sequence number, so every run
//! sees the same data: event time is the sequence number in milliseconds. From Kafka, each record
//! value is a bid as the line `seq,auction,bidder,price` (what `--query q0 --sink kafka` writes),
//! with event time `seq` ms, watermarks per partition; values that are not such a line fail the
//! job, or with `--malformed skip` are skipped (counted), or with `--malformed dead-letter` go to
//! the dead-letter topic with the error in headers. To Kafka, each output line is one record value (no key). Output lines are CSV:
//!
//! | query    | output                                   | what                                               |
//! |----------|------------------------------------------|----------------------------------------------------|
//! | `q0`     | `seq,auction,bidder,price`               | every bid                                          |
//! | `q1`     | `seq,auction,bidder,price*908/1000`      | every bid, price converted                         |
//! | `q2`     | `seq,auction,bidder,price`               | bids with `auction % 123 == 0`                     |
//! | `wcount` | `window_start_ms,auction,count`          | bids per auction per 10 s tumbling window          |
//! | `q5`     | `window_start_ms,auction,count`          | auctions with the most bids per 10 s/2 s sliding window (all ties) |
//! | `q7`     | `window_start_ms,max_price`              | highest price per 10 s tumbling window             |
//! | `wjoin`  | `left_seq,right_seq`                     | window join: even and odd bids of a bidder group (`(bidder / 7) % 1000`) in the same 10 s tumbling window |
//! | `ijoin`  | `left_seq,right_seq`                     | interval join: an even bid with the odd bids of its bidder group (`(bidder / 7) % 100`) within ±500 ms |
//!
//! Windows are `[start, end)` in event time; windows without bids produce no output.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use weir_api::prelude::*;

/// A bid of the generated stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bid {
    /// Sequence number of the bid, from 1.
    pub seq: u64,
    /// The auction bid on.
    pub auction: u64,
    /// Who bid.
    pub bidder: u64,
    /// The price bid, in `1..=10000`.
    pub price: u64,
    /// Event time in milliseconds: the sequence number.
    pub time_ms: u64,
}

/// The bid with sequence number `seq` (from 1).
///
/// Every fourth bid goes to one of 97 hot auctions (`(seq / 4) % 97`), the others spread over
/// 10000 auctions (`(seq * 7919) % 10000`); `bidder = (seq * 104729) % 100000`,
/// `price = (seq * 31) % 10000 + 1`, and the event time is `seq` milliseconds. All arithmetic is
/// `u64` (wrapping only beyond `seq ≈ 1.7e14`, far past any run).
pub fn bid(seq: u64) -> Bid {
    let auction = if seq.is_multiple_of(4) { (seq / 4) % 97 } else { seq.wrapping_mul(7919) % 10_000 };
    Bid {
        seq,
        auction,
        bidder: seq.wrapping_mul(104_729) % 100_000,
        price: seq.wrapping_mul(31) % 10_000 + 1,
        time_ms: seq,
    }
}

/// A bid as the projecting queries output it: `seq,auction,bidder,price`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidRow {
    /// Sequence number.
    pub seq: u64,
    /// Auction.
    pub auction: u64,
    /// Bidder.
    pub bidder: u64,
    /// Price (converted in q1).
    pub price: u64,
}

impl std::fmt::Display for BidRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{},{},{}", self.seq, self.auction, self.bidder, self.price)
    }
}

/// Bids per auction in one window: `window_start_ms,auction,count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuctionCount {
    /// Start of the window, ms.
    pub window_start: i64,
    /// Auction.
    pub auction: u64,
    /// Number of bids.
    pub count: u64,
}

impl std::fmt::Display for AuctionCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{},{}", self.window_start, self.auction, self.count)
    }
}

/// The highest price in one window: `window_start_ms,max_price`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowMax {
    /// Start of the window, ms.
    pub window_start: i64,
    /// Highest price.
    pub max_price: u64,
}

impl std::fmt::Display for WindowMax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{}", self.window_start, self.max_price)
    }
}

/// The queries, by their `--query` name.
const QUERIES: &[&str] = &["q0", "q1", "q2", "q5", "q7", "wcount", "wjoin", "ijoin"];

/// A joined pair of bids: `left_seq,right_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// The even bid.
    pub left: u64,
    /// The odd bid.
    pub right: u64,
}

impl std::fmt::Display for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{}", self.left, self.right)
    }
}

/// The even and the odd bids of `bids` (with event time), the two sides of the join queries.
fn sides(bids: &DataStream<Bid>, source_watermarks: bool) -> (DataStream<Bid>, DataStream<Bid>) {
    let bids = timestamped(bids, source_watermarks);
    let even = bids.filter(|b: &Bid| b.seq.is_multiple_of(2)).uid("join-even").name("even bids");
    let odd = bids.filter(|b: &Bid| !b.seq.is_multiple_of(2)).uid("join-odd").name("odd bids");
    (even, odd)
}

const TEN_SECONDS: Duration = Duration::from_secs(10);
const TWO_SECONDS: Duration = Duration::from_secs(2);

/// Where the query's output goes.
enum Sink {
    Text(String),
    Blackhole,
    Kafka(KafkaSink<String>),
}

/// Where the bids come from.
enum Source {
    Generator { events: u64, rate: Option<f64> },
    Kafka(KafkaSource<Bid>),
}

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

fn parse_sink(args: &JobArgs) -> Result<Sink> {
    let output = match args.get("output") {
        Some(dir) => Some(dir),
        None if args.has("output") => return Err(invalid("--output needs a directory".into())),
        None => None,
    };
    let sink = match args.get("sink") {
        Some("blackhole") => Some(Sink::Blackhole),
        Some("kafka") => Some(Sink::Kafka(kafka_sink(args)?)),
        Some(other) => {
            return Err(invalid(format!("unknown sink {other:?}: the valid sinks are: blackhole, kafka")));
        }
        None if args.has("sink") => {
            return Err(invalid("--sink needs a value: the valid sinks are: blackhole, kafka".into()));
        }
        None => None,
    };
    match (output, sink) {
        (Some(dir), None) => Ok(Sink::Text(dir.to_owned())),
        (None, Some(sink)) => Ok(sink),
        (Some(_), Some(_)) => Err(invalid("give either --output DIR or --sink blackhole|kafka, not both".into())),
        (None, None) => Err(invalid("one of --output DIR or --sink blackhole|kafka is required".into())),
    }
}

/// A flag's value, required when the flag is given.
fn value<'a>(args: &'a JobArgs, flag: &str, what: &str) -> Result<Option<&'a str>> {
    match args.get(flag) {
        None if args.has(flag) => Err(invalid(format!("--{flag} needs {what}"))),
        other => Ok(other),
    }
}

/// The brokers and the topic of the Kafka `side` (`source` or `sink`): `--<side>-topic T`, or
/// `--topic T` when only one side is Kafka (with both, one topic would be read and written).
fn kafka_servers_and_topic<'a>(args: &'a JobArgs, side: &str) -> Result<(&'a str, &'a str)> {
    let servers = value(args, "bootstrap-servers", "host:port,...")?
        .ok_or_else(|| invalid(format!("--{side} kafka needs --bootstrap-servers host:port")))?;
    let both = args.get("source") == Some("kafka") && args.get("sink") == Some("kafka");
    let own = format!("{side}-topic");
    let topic = match value(args, &own, "a topic")? {
        Some(topic) => topic,
        None if both => {
            return Err(invalid(
                "with --source kafka and --sink kafka, name the topics with --source-topic T and --sink-topic T".into(),
            ));
        }
        None => value(args, "topic", "a topic")?
            .ok_or_else(|| invalid(format!("--{side} kafka needs --topic T (or --{own} T)")))?,
    };
    Ok((servers, topic))
}

fn kafka_sink(args: &JobArgs) -> Result<KafkaSink<String>> {
    let (servers, topic) = kafka_servers_and_topic(args, "sink")?;
    let delivery = match value(args, "delivery", "exactly-once, at-least-once or none")? {
        None | Some("exactly-once") => Delivery::ExactlyOnce,
        Some("at-least-once") => Delivery::AtLeastOnce,
        Some("none") => Delivery::None,
        Some(other) => {
            return Err(invalid(format!("unknown delivery {other:?}: expected exactly-once, at-least-once or none")));
        }
    };
    let mut builder = KafkaSink::builder().bootstrap_servers(servers).topic(topic).delivery(delivery);
    let prefix =
        value(args, "transactional-id-prefix", "a prefix")?.map_or_else(|| format!("nexmark-{topic}"), str::to_owned);
    builder = builder.transactional_id_prefix(prefix);
    // Event time here is a sequence number in ms, i.e. in 1970: the brokers' time-based
    // retention would delete records with such timestamps, so they carry the time of sending.
    Ok(builder.build(KafkaSerializer::from_fn(|line: &String, out: &mut KafkaRecordOut<'_>| {
        out.value(line.as_bytes()).produce_time();
    })))
}

/// A bid from the line `seq,auction,bidder,price`; its event time is `seq` ms.
fn parse_bid(line: &[u8]) -> std::result::Result<Bid, String> {
    let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut fields = text.trim_end().split(',').map(str::parse::<u64>);
    let mut next = |name: &str| match fields.next() {
        Some(Ok(n)) => Ok(n),
        Some(Err(e)) => Err(format!("{name} of {text:?} is not a number: {e}")),
        None => Err(format!("{text:?} is not seq,auction,bidder,price")),
    };
    let (seq, auction, bidder, price) = (next("seq")?, next("auction")?, next("bidder")?, next("price")?);
    if fields.next().is_some() {
        return Err(format!("{text:?} is not seq,auction,bidder,price"));
    }
    Ok(Bid { seq, auction, bidder, price, time_ms: seq })
}

fn parse_source(args: &JobArgs) -> Result<Source> {
    match value(args, "source", "generator or kafka")? {
        None | Some("generator") => {
            let events: u64 = args.parse_required("events")?;
            if events == 0 {
                return Err(invalid("--events must be at least 1".into()));
            }
            Ok(Source::Generator { events, rate: parse_rate(args)? })
        }
        Some("kafka") => {
            let (servers, topic) = kafka_servers_and_topic(args, "source")?;
            let mut builder = KafkaSource::builder().bootstrap_servers(servers).topics([topic]);
            if let Some(group) = value(args, "group-id", "a consumer group")? {
                builder = builder.group_id(group);
            }
            let starting = match value(args, "starting-offsets", "earliest, latest or committed")? {
                None | Some("earliest") => StartingOffsets::Earliest,
                Some("latest") => StartingOffsets::Latest,
                Some("committed") => StartingOffsets::Committed { otherwise: OffsetReset::Earliest },
                Some(other) => {
                    return Err(invalid(format!(
                        "unknown starting offsets {other:?}: expected earliest, latest or committed"
                    )));
                }
            };
            builder = builder.starting_offsets(starting);
            let malformed = match value(args, "malformed", "fail, skip or dead-letter")? {
                None | Some("fail") => MalformedPolicy::Fail,
                Some("skip") => MalformedPolicy::Skip,
                Some("dead-letter") => MalformedPolicy::DeadLetter {
                    topic: value(args, "dead-letter-topic", "a topic")?
                        .ok_or_else(|| invalid("--malformed dead-letter needs --dead-letter-topic T".into()))?
                        .to_owned(),
                },
                Some(other) => {
                    return Err(invalid(format!("unknown --malformed {other:?}: expected fail, skip or dead-letter")));
                }
            };
            builder = builder.on_malformed(malformed);
            if let Some(ms) = value(args, "partition-discovery-interval-ms", "milliseconds")? {
                let ms: u64 = ms.parse().map_err(|_| {
                    invalid(format!("--partition-discovery-interval-ms {ms:?} is not a number of milliseconds"))
                })?;
                builder = builder.discovery_interval((ms > 0).then(|| Duration::from_millis(ms)));
            }
            if args.has("bounded") {
                builder = builder.bounded();
            }
            let deserializer = KafkaDeserializer::from_fn(|record: &KafkaRecord<'_>| {
                parse_bid(record.value().ok_or_else(|| "a record without a value".to_owned())?)
            });
            Ok(Source::Kafka(builder.build(deserializer)))
        }
        Some(other) => Err(invalid(format!("unknown source {other:?}: expected generator or kafka"))),
    }
}

fn parse_rate(args: &JobArgs) -> Result<Option<f64>> {
    match args.get("rate") {
        None if args.has("rate") => Err(invalid("--rate needs a value (events per second)".into())),
        None => Ok(None),
        Some(_) => {
            let rate: f64 = args.parse_required("rate")?;
            if rate > 0.0 && rate.is_finite() {
                Ok(Some(rate))
            } else {
                Err(invalid(format!("--rate must be a positive number of events per second, got {rate}")))
            }
        }
    }
}

/// Counts the elements of a window.
struct CountBids;

impl AggregateFunction<Bid, u64, u64> for CountBids {
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, _value: Bid, accumulator: u64) -> u64 {
        accumulator + 1
    }
    fn get_result(&self, accumulator: u64) -> u64 {
        accumulator
    }
    fn merge(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

/// The highest price of a window.
struct MaxPrice;

impl AggregateFunction<Bid, u64, u64> for MaxPrice {
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, value: Bid, accumulator: u64) -> u64 {
        accumulator.max(value.price)
    }
    fn get_result(&self, accumulator: u64) -> u64 {
        accumulator
    }
    fn merge(&self, a: u64, b: u64) -> u64 {
        a.max(b)
    }
}

/// `(window_start_ms, auction, count)` of a counted window.
fn with_window(auction: &u64, window: &TimeWindow, counts: Vec<u64>, out: &mut Collector<'_, AuctionCount>) {
    for count in counts {
        out.collect(AuctionCount { window_start: window.start, auction: *auction, count });
    }
}

/// The second stage of q5: all counts of one sliding window (keyed by its start); emits those
/// with the window's highest count.
fn hottest(_start: &i64, _window: &TimeWindow, mut counts: Vec<AuctionCount>, out: &mut Collector<'_, AuctionCount>) {
    let Some(max) = counts.iter().map(|c| c.count).max() else {
        return;
    };
    counts.retain(|c| c.count == max);
    counts.sort_unstable_by_key(|c| c.auction);
    for count in counts {
        out.collect(count);
    }
}

/// The bids with event timestamps and watermarks. From the generator: assigned here (timestamps
/// increase within each generator subtask). From Kafka: the source's, per partition, as they
/// are: a watermark generator here would follow the fastest partition of each subtask and make
/// the others' records late.
fn timestamped(bids: &DataStream<Bid>, source_watermarks: bool) -> DataStream<Bid> {
    if source_watermarks {
        return bids.clone();
    }
    bids.assign_timestamps_and_watermarks(
        WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|b: &Bid, _| b.time_ms as i64),
    )
    .uid("bid-timestamps")
    .name("bid timestamps")
}

fn row(b: Bid, price: u64) -> BidRow {
    BidRow { seq: b.seq, auction: b.auction, bidder: b.bidder, price }
}

/// Sends a query's rows to the sink: formatted only for text and Kafka output.
fn sink<T: Data + std::fmt::Display>(rows: DataStream<T>, sink: &Sink, name: &str) {
    let sink = match sink {
        Sink::Text(dir) => rows.write_as_text(dir.clone()),
        Sink::Blackhole => rows.sink_to_blackhole(),
        Sink::Kafka(kafka) => rows
            .map(|row: T| row.to_string())
            .uid(&format!("{name}-format"))
            .name(&format!("{name} format"))
            .sink_to_kafka(kafka.clone()),
    };
    sink.uid(&format!("{name}-sink")).name(&format!("{name} sink"));
}

/// Declares `query` on `bids` with its sink; `source_watermarks`: the source assigns event time
/// and watermarks (Kafka).
fn query(name: &str, bids: &DataStream<Bid>, out: &Sink, source_watermarks: bool) -> Result<()> {
    match name {
        "q0" => sink(bids.map(|b: Bid| row(b, b.price)).uid("q0-project").name("q0 passthrough"), out, name),
        "q1" => sink(
            bids.map(|b: Bid| row(b, b.price * 908 / 1000)).uid("q1-convert").name("q1 currency conversion"),
            out,
            name,
        ),
        "q2" => sink(
            bids.filter(|b: &Bid| b.auction.is_multiple_of(123))
                .uid("q2-filter")
                .name("q2 selection")
                .map(|b: Bid| row(b, b.price))
                .uid("q2-project")
                .name("q2 projection"),
            out,
            name,
        ),
        "wcount" => sink(
            timestamped(bids, source_watermarks)
                .key_by(|b: &Bid| b.auction)
                .window(TumblingEventTimeWindows::of(TEN_SECONDS))
                .aggregate_with(CountBids, with_window)
                .uid("wcount-count")
                .name("wcount bids per auction and window"),
            out,
            name,
        ),
        "q5" => sink(
            timestamped(bids, source_watermarks)
                .key_by(|b: &Bid| b.auction)
                .window(SlidingEventTimeWindows::of(TEN_SECONDS, TWO_SECONDS))
                .aggregate_with(CountBids, with_window)
                .uid("q5-count")
                .name("q5 bids per auction and window")
                // A result carries its window's max timestamp `end - 1`; since window ends are
                // multiples of 2 s, the 2 s tumbling window `[end - 2 s, end)` holds exactly the
                // results of that one sliding window.
                .key_by(|c: &AuctionCount| c.window_start)
                .window(TumblingEventTimeWindows::of(TWO_SECONDS))
                .process(hottest)
                .uid("q5-hottest")
                .name("q5 hottest auctions"),
            out,
            name,
        ),
        "q7" => sink(
            timestamped(bids, source_watermarks)
                // Keyed by the window's index: one key per window, so windows spread over subtasks.
                .key_by(|b: &Bid| b.time_ms / 10_000)
                .window(TumblingEventTimeWindows::of(TEN_SECONDS))
                .aggregate_with(
                    MaxPrice,
                    |_: &u64, window: &TimeWindow, maxima: Vec<u64>, out: &mut Collector<'_, WindowMax>| {
                        for max_price in maxima {
                            out.collect(WindowMax { window_start: window.start, max_price });
                        }
                    },
                )
                .uid("q7-max-price")
                .name("q7 highest bid per window"),
            out,
            name,
        ),
        "wjoin" => {
            let (even, odd) = sides(bids, source_watermarks);
            sink(
                even.join(&odd)
                    .where_key(|b: &Bid| (b.bidder / 7) % 1000)
                    .equal_to(|b: &Bid| (b.bidder / 7) % 1000)
                    .window(TumblingEventTimeWindows::of(TEN_SECONDS))
                    .apply(|l: Bid, r: Bid| Pair { left: l.seq, right: r.seq })
                    .uid("wjoin-join")
                    .name("wjoin window join"),
                out,
                name,
            );
        }
        "ijoin" => {
            let (even, odd) = sides(bids, source_watermarks);
            sink(
                even.key_by(|b: &Bid| (b.bidder / 7) % 100)
                    .interval_join(&odd.key_by(|b: &Bid| (b.bidder / 7) % 100))
                    .between(-500, 500)
                    .process(|l: Bid, r: Bid| Pair { left: l.seq, right: r.seq })
                    .uid("ijoin-join")
                    .name("ijoin interval join"),
                out,
                name,
            );
        }
        other => {
            return Err(invalid(format!("unknown query {other:?}: the valid queries are: {}", QUERIES.join(", "))));
        }
    }
    Ok(())
}

/// Builds the Nexmark job; see the crate documentation for the arguments.
fn build(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> weir_api::Result<()> {
    let name = args.required("query")?;
    if !QUERIES.contains(&name) {
        return Err(invalid(format!("unknown query {name:?}: the valid queries are: {}", QUERIES.join(", "))));
    }
    let source = parse_source(args)?;
    let sink = parse_sink(args)?;

    env.set_job_name(format!("nexmark {name}"));
    let source_watermarks = matches!(source, Source::Kafka(_));
    let bids = match source {
        Source::Generator { events, rate } => {
            let mut generator = GeneratorSource::bounded(events);
            if let Some(rate) = rate {
                generator = generator.with_rate(rate);
            }
            env.from_generator(generator, bid).uid("bids").name("bid generator")
        }
        Source::Kafka(kafka) => {
            // Within a partition bids arrive in `seq` order when one subtask loaded them; allow
            // a little disorder from several loading subtasks.
            let watermarks = WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(500))
                .with_timestamp_assigner(|b: &Bid, _| b.time_ms as i64)
                .with_idleness(Duration::from_secs(5));
            env.from_kafka(kafka, watermarks).uid("bids").name("bids from kafka")
        }
    };
    query(name, &bids, &sink, source_watermarks)
}

weir_api::export_job!(build);

#[cfg(test)]
mod tests {
    use super::*;

    fn build_with(args: &[&str]) -> Result<()> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        weir_api::plugin::job_entry(build).build(&args).map(|_| ())
    }

    fn invalid_argument(args: &[&str]) -> String {
        match build_with(args) {
            Err(Error::InvalidArgument(message)) => message,
            Err(other) => panic!("{args:?}: expected an invalid argument, got {other}"),
            Ok(()) => panic!("{args:?}: expected an invalid argument, got a job"),
        }
    }

    #[test]
    fn bids_follow_the_formula() {
        assert_eq!(bid(1), Bid { seq: 1, auction: 7919, bidder: 4729, price: 32, time_ms: 1 });
        assert_eq!(bid(4).auction, 1);
        assert_eq!(bid(392).auction, 1);
        assert_eq!(bid(6129).price, 10_000);
        assert_eq!(bid(20_000).price, 1);
    }

    #[test]
    fn bids_parse_from_their_csv_lines_and_anything_else_is_refused() {
        assert_eq!(parse_bid(b"4,1,18916,125"), Ok(Bid { seq: 4, auction: 1, bidder: 18916, price: 125, time_ms: 4 }));
        assert_eq!(parse_bid(row(bid(7), bid(7).price).to_string().as_bytes()), Ok(bid(7)));
        assert!(parse_bid(b"4,1,x,125").unwrap_err().contains("bidder"));
        assert!(parse_bid(b"4,1,2").unwrap_err().contains("seq,auction,bidder,price"));
        assert!(parse_bid(b"4,1,2,3,5").unwrap_err().contains("seq,auction,bidder,price"));
        assert!(parse_bid(&[0xff]).unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn kafka_in_and_out_build() {
        let kafka_in =
            ["--source", "kafka", "--bootstrap-servers", "127.0.0.1:9092", "--source-topic", "bids", "--bounded"];
        let kafka_out = ["--sink", "kafka", "--sink-topic", "out"];
        for q in QUERIES {
            let args: Vec<&str> = ["--query", q].into_iter().chain(kafka_in).chain(kafka_out).collect();
            build_with(&args).unwrap();
        }
        build_with(&[
            "--query",
            "q0",
            "--events",
            "10",
            "--sink",
            "kafka",
            "--bootstrap-servers",
            "b:1",
            "--topic",
            "t",
            "--delivery",
            "at-least-once",
        ])
        .unwrap();
    }

    #[test]
    fn kafka_in_and_out_read_and_write_their_own_topics() {
        let args = |a: &[&str]| JobArgs::new(a.iter().map(|s| (*s).to_owned()).collect());
        let both = args(&[
            "--source",
            "kafka",
            "--sink",
            "kafka",
            "--bootstrap-servers",
            "b:1",
            "--source-topic",
            "in",
            "--sink-topic",
            "out",
        ]);
        assert_eq!(kafka_servers_and_topic(&both, "source").unwrap(), ("b:1", "in"));
        assert_eq!(kafka_servers_and_topic(&both, "sink").unwrap(), ("b:1", "out"));
        let ambiguous = args(&["--source", "kafka", "--sink", "kafka", "--bootstrap-servers", "b:1", "--topic", "t"]);
        let m = kafka_servers_and_topic(&ambiguous, "sink").unwrap_err().to_string();
        assert!(m.contains("--source-topic") && m.contains("--sink-topic"), "{m}");
        let one = args(&["--sink", "kafka", "--bootstrap-servers", "b:1", "--topic", "t"]);
        assert_eq!(kafka_servers_and_topic(&one, "sink").unwrap(), ("b:1", "t"));
    }

    #[test]
    fn every_query_builds() {
        for q in QUERIES {
            build_with(&["--query", q, "--events", "10", "--output", "/tmp/x"]).unwrap();
            build_with(&["--query", q, "--events", "10", "--rate", "100", "--sink", "blackhole"]).unwrap();
        }
    }

    #[test]
    fn bad_arguments_are_rejected() {
        let m = invalid_argument(&["--query", "q3", "--events", "10", "--sink", "blackhole"]);
        assert!(m.contains("q3") && m.contains("q0, q1, q2, q5, q7, wcount"), "{m}");
        let m = invalid_argument(&["--query", "q0", "--events", "10", "--sink", "kafka"]);
        assert!(m.contains("--bootstrap-servers"), "{m}");
        let m = invalid_argument(&["--query", "q0", "--events", "10", "--sink", "s3"]);
        assert!(m.contains("s3") && m.contains("blackhole, kafka"), "{m}");
        let m = invalid_argument(&[
            "--query",
            "q0",
            "--source",
            "kafka",
            "--bootstrap-servers",
            "b:9092",
            "--sink",
            "blackhole",
        ]);
        assert!(m.contains("--topic"), "{m}");
        let m = invalid_argument(&[
            "--query",
            "q0",
            "--events",
            "5",
            "--sink",
            "kafka",
            "--bootstrap-servers",
            "b:9092",
            "--topic",
            "t",
            "--delivery",
            "twice",
        ]);
        assert!(m.contains("twice") && m.contains("at-least-once"), "{m}");
        let m = invalid_argument(&["--query", "q0", "--events", "10"]);
        assert!(m.contains("--output") && m.contains("--sink"), "{m}");
        let m = invalid_argument(&["--query", "q0", "--events", "10", "--output", "d", "--sink", "blackhole"]);
        assert!(m.contains("not both"), "{m}");
        let m = invalid_argument(&["--query", "q0", "--events", "0", "--sink", "blackhole"]);
        assert!(m.contains("--events"), "{m}");
        let m = invalid_argument(&["--query", "q0", "--sink", "blackhole"]);
        assert!(m.contains("--events"), "{m}");
        let m = invalid_argument(&["--events", "5", "--sink", "blackhole"]);
        assert!(m.contains("--query"), "{m}");
        let m = invalid_argument(&["--query", "q0", "--events", "5", "--rate", "0", "--sink", "blackhole"]);
        assert!(m.contains("--rate"), "{m}");
    }
}
