//! The names the text file sink owns in its directory.

/// The prefix of the marker files (`.weir-sink-<attempt>-<subtask>`).
pub(super) const MARKER_PREFIX: &str = ".weir-sink-";

/// The kind of a part file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Committed,
    Pending,
    InProgress,
}

/// A parsed part file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PartName {
    pub(super) kind: Kind,
    pub(super) subtask: u32,
    /// `None` for the oldest layout without sequence numbers (`part-<s>.txt`,
    /// `.part-<s>.txt.inprogress`).
    pub(super) seq: Option<u64>,
    /// The attempt of a hidden file; `None` for committed files and for older layouts
    /// (`.part-<s>-<q>.txt.pending`).
    pub(super) attempt: Option<u32>,
}

/// A name this sink owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Name {
    Part(PartName),
    /// `.weir-sink-<attempt>-<subtask>`.
    Marker {
        attempt: u32,
        subtask: u32,
    },
}

/// A canonical decimal number (digits only, no leading zero except `0` itself).
fn parse_number<T: std::str::FromStr>(digits: &str) -> Option<T> {
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits.len() == 1 || !digits.starts_with('0'));
    if canonical { digits.parse().ok() } else { None }
}

/// Parses the names this sink owns; `None` for any other name.
pub(super) fn parse_name(name: &str) -> Option<Name> {
    if let Some(rest) = name.strip_prefix(MARKER_PREFIX) {
        let (attempt, subtask) = rest.split_once('-')?;
        return Some(Name::Marker { attempt: parse_number(attempt)?, subtask: parse_number(subtask)? });
    }
    parse_part_name(name).map(Name::Part)
}

/// Parses part file names: `part-<s>-<q>.txt`, `.part-<s>-<q>.<a>.inprogress`,
/// `.part-<s>-<q>.<a>.pending`, and the older `.part-<s>-<q>.txt.{inprogress,pending}`,
/// `part-<s>.txt` and `.part-<s>.txt.inprogress`.
fn parse_part_name(name: &str) -> Option<PartName> {
    let Some(rest) = name.strip_prefix(".part-") else {
        let middle = name.strip_prefix("part-")?.strip_suffix(".txt")?;
        let (subtask, seq) = match middle.split_once('-') {
            Some((subtask, seq)) => (subtask, Some(parse_number(seq)?)),
            None => (middle, None),
        };
        return Some(PartName { kind: Kind::Committed, subtask: parse_number(subtask)?, seq, attempt: None });
    };
    let (kind, middle) = match rest.strip_suffix(".inprogress") {
        Some(middle) => (Kind::InProgress, middle),
        None => (Kind::Pending, rest.strip_suffix(".pending")?),
    };
    let (numbers, attempt) = middle.rsplit_once('.')?;
    let attempt = if attempt == "txt" { None } else { Some(parse_number(attempt)?) };
    match numbers.split_once('-') {
        Some((subtask, seq)) => {
            Some(PartName { kind, subtask: parse_number(subtask)?, seq: Some(parse_number(seq)?), attempt })
        }
        // The oldest layout had only in-progress files, without attempt.
        None if kind == Kind::InProgress && attempt.is_none() => {
            Some(PartName { kind, subtask: parse_number(numbers)?, seq: None, attempt })
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_only_the_sinks_own() {
        let part = |kind, subtask, seq, attempt| Some(Name::Part(PartName { kind, subtask, seq, attempt }));
        assert_eq!(parse_name("part-0-0.txt"), part(Kind::Committed, 0, Some(0), None));
        assert_eq!(parse_name("part-3-17.txt"), part(Kind::Committed, 3, Some(17), None));
        assert_eq!(parse_name(".part-3-17.0.pending"), part(Kind::Pending, 3, Some(17), Some(0)));
        assert_eq!(parse_name(".part-3-17.12.inprogress"), part(Kind::InProgress, 3, Some(17), Some(12)));
        assert_eq!(parse_name(".part-3-17.txt.pending"), part(Kind::Pending, 3, Some(17), None));
        assert_eq!(parse_name(".part-3-17.txt.inprogress"), part(Kind::InProgress, 3, Some(17), None));
        assert_eq!(parse_name("part-12.txt"), part(Kind::Committed, 12, None, None));
        assert_eq!(parse_name(".part-12.txt.inprogress"), part(Kind::InProgress, 12, None, None));
        assert_eq!(parse_name(".weir-sink-4-2"), Some(Name::Marker { attempt: 4, subtask: 2 }));
        for name in [
            "part-.txt",
            "part-+1.txt",
            "part-1-+1.txt",
            "part-01.txt",
            "part-1-00.txt",
            "part-1-2-3.txt",
            "part-1.txt.inprogress",
            ".part-1.txt",
            ".part-1.txt.pending",
            ".part-1.3.inprogress",
            ".part-1-2.pending",
            ".part-1-2.01.pending",
            ".part-1-2.x.pending",
            ".part-1-2.3.txt",
            "part-a.txt",
            "part-1-2.txt.pending",
            "part-1-2.3.pending",
            "part-99999999999-0.txt",
            ".part-1-2.99999999999.pending",
            ".weir-sink-4",
            ".weir-sink-4-2-1",
            ".weir-sink-04-2",
            "weir-sink-4-2",
        ] {
            assert_eq!(parse_name(name), None, "{name}");
        }
    }
}
