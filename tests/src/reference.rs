//! Reference implementations of the example jobs, independent of Weir's runtime and API: plain
//! single-threaded loops over the inputs, to compare the jobs' output with.
//!
//! The Nexmark bid formula is deliberately re-derived here rather than imported from the example
//! crate: this module is the oracle the example is checked against.

use std::collections::BTreeMap;

/// The expected output of the word count example for files with contents `texts`: sorted lines
/// `word<TAB>count`.
///
/// A word is a maximal run of ASCII letters and digits, lowercased; every other byte (including
/// every byte of a non-ASCII character, and line ends) separates words.
pub fn wordcount(texts: &[&[u8]]) -> Vec<String> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for text in texts {
        for word in text.split(|b| !b.is_ascii_alphanumeric()).filter(|w| !w.is_empty()) {
            let word = String::from_utf8(word.to_ascii_lowercase()).expect("ASCII is UTF-8");
            *counts.entry(word).or_insert(0) += 1;
        }
    }
    sorted(counts.into_iter().map(|(word, count)| format!("{word}\t{count}")))
}

/// One bid, recomputed from its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RefBid {
    seq: u64,
    auction: u64,
    bidder: u64,
    price: u64,
    /// Event time in ms.
    time: i64,
}

fn ref_bid(seq: u64) -> RefBid {
    RefBid {
        seq,
        auction: if seq.is_multiple_of(4) { (seq / 4) % 97 } else { seq.wrapping_mul(7919) % 10000 },
        bidder: seq.wrapping_mul(104729) % 100000,
        price: seq.wrapping_mul(31) % 10000 + 1,
        time: seq as i64,
    }
}

const SIZE: i64 = 10_000;
const SLIDE: i64 = 2_000;

/// Start of the 10 s tumbling window of time `t`.
fn tumbling_start(t: i64) -> i64 {
    t - t.rem_euclid(SIZE)
}

/// Starts of the 10 s windows sliding by 2 s that contain `t`: `[s, s + 10 s)` with `s <= t < s + 10 s`.
fn sliding_starts(t: i64) -> Vec<i64> {
    let mut starts = Vec::new();
    let mut s = t - t.rem_euclid(SLIDE);
    while s > t - SIZE {
        starts.push(s);
        s -= SLIDE;
    }
    starts
}

/// The expected output lines of Nexmark query `query` (`q0`, `q1`, `q2`, `q5`, `q7`, `wcount`)
/// over bids `1..=events`, sorted.
///
/// # Panics
/// On an unknown query name.
pub fn nexmark(query: &str, events: u64) -> Vec<String> {
    nexmark_of(query, 1..=events)
}

/// The output lines of Nexmark `query` over the bids with sequence numbers `seqs` (sorted).
///
/// # Panics
/// For an unknown query.
pub fn nexmark_of(query: &str, seqs: impl IntoIterator<Item = u64>) -> Vec<String> {
    let bids = seqs.into_iter().map(ref_bid);
    match query {
        "q0" => sorted(bids.map(|b| format!("{},{},{},{}", b.seq, b.auction, b.bidder, b.price))),
        "q1" => sorted(bids.map(|b| format!("{},{},{},{}", b.seq, b.auction, b.bidder, b.price * 908 / 1000))),
        "q2" => sorted(
            bids.filter(|b| b.auction % 123 == 0).map(|b| format!("{},{},{},{}", b.seq, b.auction, b.bidder, b.price)),
        ),
        "wcount" => {
            let mut counts: BTreeMap<(i64, u64), u64> = BTreeMap::new();
            for b in bids {
                *counts.entry((tumbling_start(b.time), b.auction)).or_insert(0) += 1;
            }
            sorted(counts.into_iter().map(|((start, auction), count)| format!("{start},{auction},{count}")))
        }
        "q5" => {
            let mut windows: BTreeMap<i64, BTreeMap<u64, u64>> = BTreeMap::new();
            for b in bids {
                for start in sliding_starts(b.time) {
                    *windows.entry(start).or_default().entry(b.auction).or_insert(0) += 1;
                }
            }
            let mut lines = Vec::new();
            for (start, counts) in windows {
                let max = counts.values().copied().max().unwrap_or(0);
                for (auction, count) in counts {
                    if count == max {
                        lines.push(format!("{start},{auction},{count}"));
                    }
                }
            }
            sorted(lines)
        }
        "q7" => {
            let mut maxima: BTreeMap<i64, u64> = BTreeMap::new();
            for b in bids {
                let max = maxima.entry(tumbling_start(b.time)).or_insert(0);
                *max = (*max).max(b.price);
            }
            sorted(maxima.into_iter().map(|(start, max)| format!("{start},{max}")))
        }
        other => panic!("unknown nexmark query {other:?}"),
    }
}

fn sorted(lines: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut lines: Vec<String> = lines.into_iter().collect();
    lines.sort();
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wordcount_of_a_tiny_text() {
        let a: &[u8] = b"The cat, the HAT.\nthe end";
        let b: &[u8] = b"caf\xc3\xa9 x1\xffcat\r\n";
        assert_eq!(wordcount(&[a, b]), ["caf\t1", "cat\t2", "end\t1", "hat\t1", "the\t3", "x1\t1"]);
        assert!(wordcount(&[]).is_empty());
        assert!(wordcount(&[b" ,.\n"]).is_empty());
    }

    #[test]
    fn bids_follow_the_formula() {
        assert_eq!(ref_bid(1), RefBid { seq: 1, auction: 7919, bidder: 4729, price: 32, time: 1 });
        assert_eq!(ref_bid(4).auction, 1);
        assert_eq!(ref_bid(8).auction, 2);
        assert_eq!(ref_bid(392).auction, 1);
    }

    #[test]
    fn q0_q1_of_three_events() {
        assert_eq!(nexmark("q0", 3), ["1,7919,4729,32", "2,5838,9458,63", "3,3757,14187,94"]);
        // 32*908/1000 = 29, 63*908/1000 = 57, 94*908/1000 = 85
        assert_eq!(nexmark("q1", 3), ["1,7919,4729,29", "2,5838,9458,57", "3,3757,14187,85"]);
    }

    #[test]
    fn q2_keeps_auctions_divisible_by_123() {
        // Hot auction 0 is (seq / 4) % 97 == 0: seq 388 is the first with seq % 4 == 0.
        let lines = nexmark("q2", 400);
        assert!(lines.iter().any(|l| l.starts_with("388,0,")), "{lines:?}");
        for line in &lines {
            let auction: u64 = line.split(',').nth(1).unwrap().parse().unwrap();
            assert_eq!(auction % 123, 0, "{line}");
        }
    }

    #[test]
    fn q7_of_20000_events() {
        // 31 * 6129 = 189999, so seqs 6129 (window 0) and 16129 (window 10000) bid the top price
        // 10000; window 20000 holds seq 20000 alone, price 620000 % 10000 + 1 = 1.
        assert_eq!(nexmark("q7", 20_000), ["0,10000", "10000,10000", "20000,1"]);
    }

    #[test]
    fn sliding_windows_include_negative_starts() {
        assert_eq!(sliding_starts(11_000), [10_000, 8_000, 6_000, 4_000, 2_000]);
        assert_eq!(sliding_starts(1), [0, -2_000, -4_000, -6_000, -8_000]);
        assert_eq!(sliding_starts(10_000), [10_000, 8_000, 6_000, 4_000, 2_000]);
        assert_eq!(sliding_starts(9_999), [8_000, 6_000, 4_000, 2_000, 0]);
    }

    #[test]
    fn q5_and_wcount_of_four_events() {
        // Four distinct auctions (7919, 5838, 3757, 1), one bid each, all in the windows starting
        // at -8000..=0: every auction ties for the top in each of the five windows.
        let q5 = nexmark("q5", 4);
        assert_eq!(q5.len(), 20);
        assert!(q5.contains(&"-8000,1,1".to_owned()) && q5.contains(&"0,7919,1".to_owned()), "{q5:?}");
        assert_eq!(nexmark("wcount", 4), ["0,1,1", "0,3757,1", "0,5838,1", "0,7919,1"]);
    }

    #[test]
    fn q5_emits_all_ties() {
        // Bids 1..=392 all fall in the windows starting at -8000..=0. Each auction gets one bid
        // except three with two: auction 1 (hot: seqs 4 and 392), 30 (hot seq 120, and
        // 370 * 7919 = 2930030) and 43 (hot seq 172, and 197 * 7919 = 1560043).
        let q5 = nexmark("q5", 392);
        let mut expected = Vec::new();
        for start in [-8000, -6000, -4000, -2000, 0] {
            for auction in [1, 30, 43] {
                expected.push(format!("{start},{auction},2"));
            }
        }
        expected.sort();
        assert_eq!(q5, expected);
    }
}
