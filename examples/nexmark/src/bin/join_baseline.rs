//! The nexmark example's join queries as hand-written Rust loops, for BENCHMARKS.md: the same
//! bids (the generator's formula), the same pairs, no engine (no serialization, no state backend,
//! no checkpoints, one thread).
//!
//! ```text
//! join_baseline wjoin|ijoin EVENTS    # prints: query events pairs seconds events/s
//! ```

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// `(bidder, time_ms)` of bid `seq` (see the example's `bid`).
fn bid(seq: u64) -> (u64, i64) {
    (seq.wrapping_mul(104_729) % 100_000, seq as i64)
}

/// Pairs of even and odd bids of a bidder group (`(bidder / 7) % 1000`) in one 10 s window.
fn window_join(events: u64) -> u64 {
    let mut pairs = 0u64;
    let mut checksum = 0u64;
    let mut window = 0i64;
    let mut groups: HashMap<u64, (Vec<u64>, Vec<u64>)> = HashMap::new();
    let fire = |groups: &mut HashMap<u64, (Vec<u64>, Vec<u64>)>, pairs: &mut u64, checksum: &mut u64| {
        for (left, right) in groups.values() {
            for l in left {
                for r in right {
                    *pairs += 1;
                    *checksum = checksum.wrapping_add(l ^ r);
                }
            }
        }
        groups.clear();
    };
    for seq in 1..=events {
        let (bidder, t) = bid(seq);
        if t / 10_000 != window {
            fire(&mut groups, &mut pairs, &mut checksum);
            window = t / 10_000;
        }
        let group = groups.entry((bidder / 7) % 1000).or_default();
        if seq.is_multiple_of(2) { group.0.push(seq) } else { group.1.push(seq) }
    }
    fire(&mut groups, &mut pairs, &mut checksum);
    std::hint::black_box(checksum);
    pairs
}

/// Per bidder group, the even and the odd bids of the last 500 ms: `(time, seq)`.
type Buffers = HashMap<u64, (VecDeque<(i64, u64)>, VecDeque<(i64, u64)>)>;

/// Pairs of an even bid and the odd bids of its bidder group (`(bidder / 7) % 100`) within ±500 ms.
fn interval_join(events: u64) -> u64 {
    let mut pairs = 0u64;
    let mut checksum = 0u64;
    let mut buffers: Buffers = HashMap::new();
    for seq in 1..=events {
        let (bidder, t) = bid(seq);
        let (left, right) = buffers.entry((bidder / 7) % 100).or_default();
        // Times only grow: what is more than 500 ms old joins nothing that comes later.
        while left.front().is_some_and(|&(lt, _)| lt < t - 500) {
            left.pop_front();
        }
        while right.front().is_some_and(|&(rt, _)| rt < t - 500) {
            right.pop_front();
        }
        let (mine, other) = if seq.is_multiple_of(2) { (left, right) } else { (right, left) };
        for &(_, o) in other.iter() {
            pairs += 1;
            checksum = checksum.wrapping_add(seq ^ o);
        }
        mine.push_back((t, seq));
    }
    std::hint::black_box(checksum);
    pairs
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(query), Some(events)) = (args.next(), args.next().and_then(|n| n.parse::<u64>().ok())) else {
        eprintln!("usage: join_baseline wjoin|ijoin EVENTS");
        std::process::exit(2);
    };
    let start = Instant::now();
    let pairs = match query.as_str() {
        "wjoin" => window_join(events),
        "ijoin" => interval_join(events),
        other => {
            eprintln!("join_baseline: unknown query {other:?}: expected wjoin or ijoin");
            std::process::exit(2);
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    println!("{query} {events} {pairs} {seconds:.3} {:.0}", events as f64 / seconds);
}
