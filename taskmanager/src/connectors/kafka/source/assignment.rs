//! Which partitions a source subtask reads: Flink's `KafkaSourceEnumerator` formula, and the
//! topics a source selects (a list, or a pattern matched against the whole name).

use regex::Regex;
use weir_api::connectors::kafka::KafkaTopics;
use weir_api::{Error, Result};

/// Java's `String.hashCode()`: `s[0]*31^(n-1) + ... + s[n-1]` over the UTF-16 code units, with
/// `i32` wrapping.
pub(crate) fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(i32::from(unit)))
}

/// The subtask (of `parallelism`) that reads `partition` of `topic`, as Flink's
/// `KafkaSourceEnumerator.getSplitOwner`: the topic's start index
/// `((javaHash(topic) * 31) & 0x7fffffff) % parallelism`, then round robin over the partitions.
/// `parallelism` 0 is treated as 1; a negative partition (never valid) as its absolute value.
pub(crate) fn owner(topic: &str, partition: i32, parallelism: u32) -> u32 {
    let parallelism = u64::from(parallelism.max(1));
    let start = u64::from((java_string_hash(topic).wrapping_mul(31) & 0x7fff_ffff).unsigned_abs()) % parallelism;
    // Both terms are below 2^32: no overflow in u64.
    ((start + u64::from(partition.unsigned_abs())) % parallelism) as u32
}

/// The topics a source reads.
#[derive(Debug, Clone)]
pub(crate) enum TopicSelection {
    /// These topics, in this order (duplicates removed); each must exist.
    List(Vec<String>),
    /// Every topic whose whole name matches, except internal ones (names starting with `__`).
    Pattern(Regex),
}

impl TopicSelection {
    /// The selection of a spec.
    ///
    /// # Errors
    /// [`Error::InvalidJob`] for an empty list or a pattern that is not a valid regular
    /// expression (one line).
    pub(crate) fn new(topics: &KafkaTopics, service: &str) -> Result<Self> {
        match topics {
            KafkaTopics::List(list) => {
                let mut unique: Vec<String> = Vec::with_capacity(list.len());
                for topic in list {
                    if !unique.contains(topic) {
                        unique.push(topic.clone());
                    }
                }
                if unique.is_empty() {
                    return Err(Error::InvalidJob(format!("{service}: no topic to read")));
                }
                Ok(Self::List(unique))
            }
            // Checked alone first, so that an error shows the job's pattern, not the anchored one.
            KafkaTopics::Pattern(pattern) => {
                match Regex::new(pattern).and_then(|_| Regex::new(&format!("^(?:{pattern})$"))) {
                    Ok(regex) => Ok(Self::Pattern(regex)),
                    Err(e) => Err(Error::InvalidJob(format!(
                        "{service}: the topic pattern '{pattern}' is not a valid regular expression: {}",
                        one_line(&e.to_string())
                    ))),
                }
            }
        }
    }

    /// Whether a topic named `name` is selected by a pattern (lists say no: they name their
    /// topics).
    pub(crate) fn matches(&self, name: &str) -> bool {
        match self {
            Self::List(_) => false,
            Self::Pattern(regex) => !name.starts_with("__") && regex.is_match(name),
        }
    }
}

/// The regex crate's multi-line error (pattern, caret, message) as one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.chars().all(|c| c == '^' || c == '~'))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The partitions of `topics` (name and partition ids) that subtask `subtask` of `parallelism`
/// owns, sorted by topic (in the order given) then partition.
pub(crate) fn owned<'a>(
    topics: impl IntoIterator<Item = (&'a str, &'a [i32])>,
    subtask: u32,
    parallelism: u32,
) -> Vec<(String, i32)> {
    let mut owned = Vec::new();
    for (topic, partitions) in topics {
        let mut mine: Vec<i32> =
            partitions.iter().copied().filter(|&p| owner(topic, p, parallelism) == subtask).collect();
        mine.sort_unstable();
        owned.extend(mine.into_iter().map(|p| (topic.to_owned(), p)));
    }
    owned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_matches_known_values() {
        assert_eq!(java_string_hash(""), 0);
        // 'b' = 98, 'i' = 105, 'd' = 100, 's' = 115:
        // ((98 * 31 + 105) * 31 + 100) * 31 + 115 = 3023638.
        assert_eq!(java_string_hash("bids"), 3_023_638);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        // Overflows: Java's "Hello World".hashCode().
        assert_eq!(java_string_hash("Hello World"), -862_545_276);
        // A supplementary character counts as its two UTF-16 units: 0xD83D * 31 + 0xDE00.
        assert_eq!(java_string_hash("\u{1F600}"), 55_357 * 31 + 56_832);
    }

    #[test]
    fn owner_follows_flinks_formula() {
        // "bids": 3023638 * 31 = 93732778 (no overflow); 93732778 % 3 = 1 (digit sum 46).
        let owners: Vec<u32> = (0..4).map(|p| owner("bids", p, 3)).collect();
        assert_eq!(owners, vec![1, 2, 0, 1]);
        // "Hello World": -862545276 * 31 wraps to -969099780; & 0x7fffffff = 1178383868;
        // 1178383868 % 7 = 4.
        assert_eq!(owner("Hello World", 0, 7), 4);
        assert_eq!(owner("Hello World", 5, 7), 2);
        // Parallelism 1 owns everything; 0 is treated as 1.
        assert!((0..10).all(|p| owner("t", p, 1) == 0 && owner("t", p, 0) == 0));
    }

    #[test]
    fn owned_partitions_split_every_topic_exactly_once() {
        let partitions: Vec<i32> = (0..4).collect();
        let other: Vec<i32> = (0..5).collect();
        let topics = [("bids", &partitions[..]), ("auctions", &other[..])];
        let mut all: Vec<(String, i32)> = (0..3).flat_map(|s| owned(topics, s, 3)).collect();
        all.sort();
        let mut expected: Vec<(String, i32)> = partitions
            .iter()
            .map(|&p| ("bids".to_owned(), p))
            .chain(other.iter().map(|&p| ("auctions".to_owned(), p)))
            .collect();
        expected.sort();
        assert_eq!(all, expected);
        assert_eq!(owned(topics, 1, 3)[..2], [("bids".to_owned(), 0), ("bids".to_owned(), 3)]);
    }

    #[test]
    fn selections_match_whole_names_and_report_bad_patterns_in_one_line() {
        let pattern = TopicSelection::new(&KafkaTopics::Pattern("bids-[0-9]+".into()), "Kafka source").unwrap();
        assert!(pattern.matches("bids-12"));
        assert!(!pattern.matches("bids-12x") && !pattern.matches("xbids-1"));
        let any = TopicSelection::new(&KafkaTopics::Pattern(".*".into()), "Kafka source").unwrap();
        assert!(any.matches("t") && !any.matches("__consumer_offsets"));
        let err = TopicSelection::new(&KafkaTopics::Pattern("bids-(".into()), "Kafka source").unwrap_err().to_string();
        assert!(!err.contains('\n') && err.contains("'bids-(' is not a valid regular expression"), "{err}");
        let list = TopicSelection::new(&KafkaTopics::List(vec!["a".into(), "b".into(), "a".into()]), "s").unwrap();
        assert!(matches!(list, TopicSelection::List(l) if l == ["a", "b"]));
        assert!(TopicSelection::new(&KafkaTopics::List(Vec::new()), "s").is_err());
    }
}
