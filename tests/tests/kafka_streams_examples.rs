//! The five Kafka Streams examples end to end on a real Apache Kafka broker: input produced
//! into topics, the example plugin run by `weir local run` at `-p 2` with checkpoints every
//! 500 ms and its bounded Kafka sources, its exactly-once output read back with
//! `read_committed`. Every expected output is computed here from the example's description,
//! independently of Weir.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use weir_tests::harness::{CommandOutput, artifact, run_weir};
use weir_tests::kafka::{self, ConsumedRecord, Isolation, Record, shared_bootstrap};

/// Event times of the tests: 2026-09-21, so that brokers keep the records.
const T0: i64 = 1_790_000_000_000;

/// Runs example `name` on the local mini-cluster with `args` (after `--`); asserts it finished.
fn run_example(name: &str, args: &[&str]) -> CommandOutput {
    let plugin = artifact(&format!("libweir_example_{name}.so"));
    let mut all = vec!["local", "run", plugin.to_str().unwrap(), "-p", "2", "--checkpoint-interval", "500ms", "--"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--bootstrap-servers", shared_bootstrap(), "--bounded"]);
    let out = run_weir(&all, Duration::from_secs(180));
    assert_eq!(out.code, Some(0), "{name}: {out:?}");
    out
}

/// The JSON values of `topic`, committed records only, sorted by their text.
fn committed_json(topic: &str) -> Vec<Value> {
    let records = kafka::read_all(shared_bootstrap(), topic, Isolation::ReadCommitted).unwrap();
    sorted(records.iter().map(|r| serde_json::from_slice(r.value.as_deref().unwrap_or(b"null")).unwrap()).collect())
}

fn sorted(mut values: Vec<Value>) -> Vec<Value> {
    values.sort_by_key(Value::to_string);
    values
}

fn topics(names: &[(&str, i32)]) {
    for &(name, partitions) in names {
        kafka::create_topic(shared_bootstrap(), name, partitions).unwrap();
    }
}

// Dedup: 400 events 500 ms apart, event `i` with id `e{(7 i) % 60}`: an id comes back every
// 60 events (30 s). With a 45 s window, of an id's events 30 s apart the first is written, the
// second is a duplicate (30 s < 45 s), the third is written (60 s after the last written), ...
#[test]
fn dedup_writes_each_id_once_per_time_bound() {
    topics(&[("dedup-in", 2), ("dedup-out", 2)]);
    let mut records = Vec::new();
    let mut expected = Vec::new();
    let mut last_written: BTreeMap<String, i64> = BTreeMap::new();
    for i in 0..400_i64 {
        let n = (7 * i) % 60;
        let (id, ts) = (format!("e{n}"), T0 + i * 500);
        let event = json!({"id": id, "payload": {"n": i}});
        records.push(Record::value(event.to_string()).key(id.clone()).partition((n % 2) as i32).timestamp(ts));
        if last_written.get(&id).is_none_or(|&last| (ts - last).abs() >= 45_000) {
            last_written.insert(id, ts);
            expected.push(event);
        }
    }
    assert!(expected.len() < 300 && expected.len() > 100, "the data has duplicates to drop");
    kafka::produce(shared_bootstrap(), "dedup-in", &records).unwrap();
    run_example("dedup", &["--input-topic", "dedup-in", "--output-topic", "dedup-out", "--window-ms", "45000"]);
    assert_eq!(committed_json("dedup-out"), sorted(expected));
}

// Validation: 200 orders, by `i % 10`: 0 has no customer, 1 a zero amount, 2 the currency JPY
// (rejected, each with its reason); 3 the currency "eur" (valid, written as EUR); the others are
// valid. Three values that are not orders go to the dead-letter topic unchanged.
#[test]
fn validation_routes_invalid_and_malformed_orders_to_the_dead_letter_topic() {
    topics(&[("orders-in", 2), ("orders-valid", 1), ("orders-dead", 1)]);
    let mut records = Vec::new();
    let (mut valid, mut rejected) = (Vec::new(), Vec::new());
    for i in 0..200_i64 {
        let customer = if i % 10 == 0 { String::new() } else { format!("c{}", i % 7) };
        let amount = if i % 10 == 1 { 0 } else { 100 + i };
        let currency = match i % 10 {
            2 => "JPY",
            3 => "eur",
            _ => ["EUR", "USD", "GBP"][(i % 3) as usize],
        };
        let order =
            json!({"order_id": format!("o{i}"), "customer": customer, "amount_cents": amount, "currency": currency});
        records.push(Record::value(order.to_string()).partition((i % 2) as i32).timestamp(T0 + i));
        let error = match i % 10 {
            0 => Some("the customer is empty".to_owned()),
            1 => Some("the amount 0 is not positive".to_owned()),
            2 => Some("the currency \"JPY\" is not one of EUR, USD, GBP".to_owned()),
            _ => None,
        };
        match error {
            Some(error) => rejected.push(json!({"order": order, "error": error})),
            None => {
                let mut normalized = order.clone();
                normalized["currency"] = json!(currency.to_uppercase());
                valid.push(normalized);
            }
        }
    }
    let garbage: Vec<Vec<u8>> = vec![b"not json".to_vec(), br#"{"order_id": "o-x"}"#.to_vec(), vec![0xff, 0xfe, b'{']];
    for (n, bytes) in garbage.iter().enumerate() {
        records.push(Record::value(bytes.clone()).partition(0).timestamp(T0 + 1000 + n as i64));
    }
    kafka::produce(shared_bootstrap(), "orders-in", &records).unwrap();
    run_example(
        "validation",
        &["--input-topic", "orders-in", "--output-topic", "orders-valid", "--dead-letter-topic", "orders-dead"],
    );
    assert_eq!(committed_json("orders-valid"), sorted(valid));
    let dead = kafka::read_all(shared_bootstrap(), "orders-dead", Isolation::ReadCommitted).unwrap();
    let (raw, enveloped): (Vec<&ConsumedRecord>, Vec<&ConsumedRecord>) =
        dead.iter().partition(|r| r.header("weir.topic").is_some());
    // The malformed values, unchanged, with where they came from and why.
    let mut raw_values: Vec<Vec<u8>> = raw.iter().map(|r| r.value.clone().unwrap_or_default()).collect();
    raw_values.sort();
    let mut expected_raw = garbage.clone();
    expected_raw.sort();
    assert_eq!(raw_values, expected_raw);
    assert!(
        raw.iter().all(|r| r.header("weir.topic") == Some(b"orders-in".as_slice()) && r.header("weir.error").is_some())
    );
    // The orders that broke a rule, with the rule in the value and in a header.
    let rejected_values: Vec<Value> =
        enveloped.iter().map(|r| serde_json::from_slice(r.value.as_deref().unwrap()).unwrap()).collect();
    assert_eq!(sorted(rejected_values), sorted(rejected));
    assert!(enveloped.iter().all(|r| r.header("weir.error").is_some()));
}

// Enrichment: 60 profile changes 10 s apart, change `k` for user `u{k % 10}` (a tombstone when
// `k % 13 == 12`), and 300 clicks 2 s apart (at .5 s), click `j` by user `u{j % 10}`: each click
// joins its user's latest change at or before it.
#[test]
fn enrichment_joins_each_click_with_the_profile_valid_at_its_time() {
    topics(&[("profiles", 2), ("clicks", 2), ("enriched", 2)]);
    let tiers = ["gold", "silver", "bronze"];
    let mut changes: Vec<(String, i64, Option<Value>)> = Vec::new();
    let mut records = Vec::new();
    for k in 0..60_i64 {
        let user = format!("u{}", k % 10);
        let ts = T0 + k * 10_000;
        let profile = (k % 13 != 12).then(|| json!({"name": format!("name-{k}"), "tier": tiers[(k % 3) as usize]}));
        // A tombstone is a record without a value.
        let value = profile.as_ref().map(|p| p.to_string().into_bytes());
        let record = Record { value, ..Record::default() };
        records.push(record.key(user.clone()).partition((k % 10 % 2) as i32).timestamp(ts));
        changes.push((user, ts, profile));
    }
    kafka::produce(shared_bootstrap(), "profiles", &records).unwrap();
    let mut clicks = Vec::new();
    let mut expected = Vec::new();
    for j in 0..300_i64 {
        let user = format!("u{}", j % 10);
        let ts = T0 + j * 2_000 + 500;
        let page = format!("/p{}", j % 17);
        clicks.push(
            Record::value(json!({"user": user, "page": page}).to_string())
                .key(user.clone())
                .partition((j % 10 % 2) as i32)
                .timestamp(ts),
        );
        let profile = changes
            .iter()
            .filter(|(u, t, _)| *u == user && *t <= ts)
            .max_by_key(|(_, t, _)| *t)
            .and_then(|(_, _, p)| p.clone());
        expected.push(json!({
            "user": user,
            "page": page,
            "name": profile.as_ref().map(|p| p["name"].clone()),
            "tier": profile.as_ref().map(|p| p["tier"].clone()),
        }));
    }
    kafka::produce(shared_bootstrap(), "clicks", &clicks).unwrap();
    run_example(
        "enrichment",
        &["--profiles-topic", "profiles", "--clicks-topic", "clicks", "--output-topic", "enriched"],
    );
    assert_eq!(committed_json("enriched"), sorted(expected));
}

/// A small deterministic pseudo-random sequence.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

// Fraud: 500 transactions 7 s apart over 5 cards (a card's every 35 s, sometimes 70 s when a
// transaction is skipped); amounts small (50), medium (2 000) or large (60 000). An alert when a
// card's transaction right after a small one is large and at most 60 s after it.
#[test]
fn fraud_detection_alerts_on_a_small_then_large_transaction_within_a_minute() {
    topics(&[("transactions", 2), ("alerts", 1)]);
    let mut random = Lcg(42);
    let mut records = Vec::new();
    let mut small: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut expected = Vec::new();
    for i in 0..500_i64 {
        if random.next(6) == 0 {
            continue; // a gap: the card's next transaction comes 70 s after its last
        }
        let card = format!("c{}", i % 5);
        let ts = T0 + i * 7_000;
        let amount = match random.next(4) {
            0 => 50,
            1 => 60_000,
            _ => 2_000,
        };
        records.push(
            Record::value(json!({"card": card, "amount_cents": amount}).to_string())
                .key(card.clone())
                .partition((i % 5 % 2) as i32)
                .timestamp(ts),
        );
        if let Some((at, cents)) = small.remove(&card)
            && amount > 50_000
            && ts - at <= 60_000
        {
            expected.push(json!({"card": card, "small_cents": cents, "large_cents": amount, "at": ts}));
        }
        if amount < 100 {
            small.insert(card, (ts, amount));
        }
    }
    assert!(expected.len() >= 5, "the data has alerts: {}", expected.len());
    kafka::produce(shared_bootstrap(), "transactions", &records).unwrap();
    run_example("fraud", &["--input-topic", "transactions", "--output-topic", "alerts"]);
    assert_eq!(committed_json("alerts"), sorted(expected));
}

// Log analysis: 600 lines 500 ms apart (5 minutes), line `i` from service `s{(i * 3) % 7}`, of
// level ERROR when `i % 4 == 0` or `i % 7 == 5`, else INFO or WARN. Errors are counted per
// service and minute; each minute's top 3 by errors (ties by name).
#[test]
fn log_analysis_counts_errors_per_service_and_minute_and_ranks_the_services() {
    topics(&[("logs", 2), ("errors-per-minute", 1), ("top-errors", 1)]);
    let mut records = Vec::new();
    let mut counts: BTreeMap<(i64, String), u64> = BTreeMap::new();
    for i in 0..600_i64 {
        let service = format!("s{}", (i * 3) % 7);
        let ts = T0 + i * 500;
        let level = if i % 4 == 0 || i % 7 == 5 {
            "error"
        } else if i % 2 == 0 {
            "INFO"
        } else {
            "WARN"
        };
        let line = json!({"service": service, "level": level, "message": format!("line {i}")});
        records.push(Record::value(line.to_string()).partition((i % 2) as i32).timestamp(ts));
        if level == "error" {
            *counts.entry((ts - ts.rem_euclid(60_000), service)).or_default() += 1;
        }
    }
    kafka::produce(shared_bootstrap(), "logs", &records).unwrap();
    run_example(
        "log_analysis",
        &["--input-topic", "logs", "--output-topic", "errors-per-minute", "--top-topic", "top-errors", "--top", "3"],
    );
    let per_minute: Vec<Value> = counts
        .iter()
        .map(|((minute, service), n)| json!({"minute": minute, "service": service, "errors": n}))
        .collect();
    assert_eq!(committed_json("errors-per-minute"), sorted(per_minute));
    let mut top = Vec::new();
    let minutes: std::collections::BTreeSet<i64> = counts.keys().map(|(m, _)| *m).collect();
    for minute in minutes {
        let mut ranked: Vec<(&String, u64)> =
            counts.iter().filter(|((m, _), _)| *m == minute).map(|((_, s), n)| (s, *n)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        for (rank, (service, n)) in ranked.into_iter().take(3).enumerate() {
            top.push(json!({"minute": minute, "rank": rank + 1, "service": service, "errors": n}));
        }
    }
    assert_eq!(committed_json("top-errors"), sorted(top));
}
