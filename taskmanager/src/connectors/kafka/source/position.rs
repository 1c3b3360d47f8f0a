//! The position of a Kafka source subtask in checkpoints: postcard-encoded and versioned (an enum
//! whose variant index is the version), so that a later reader can still read older checkpoints.

use serde::{Deserialize, Serialize};

/// Where a split continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Next {
    /// The next offset to read.
    Offset(i64),
    /// Not resolved yet: the source's starting-offsets rule applies (a partition of the job's
    /// first start, before its first read).
    Starting,
    /// Not resolved yet: the earliest offset (a partition found by discovery after the start,
    /// before its first record).
    Earliest,
}

impl Next {
    /// The offset, once resolved.
    pub(crate) fn offset(self) -> Option<i64> {
        match self {
            Self::Offset(offset) => Some(offset),
            Self::Starting | Self::Earliest => None,
        }
    }
}

/// One split in a stored position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredSplit {
    /// The topic.
    pub(crate) topic: String,
    /// The partition.
    pub(crate) partition: i32,
    /// Where reading continues.
    pub(crate) next: Next,
    /// Bounded reading: the offset where the split ends (exclusive); `None` when unbounded or not
    /// captured yet.
    pub(crate) end: Option<i64>,
}

/// Version 1 of a position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PositionV1 {
    /// The subtask that took it.
    pub(crate) subtask: u32,
    /// The parallelism of the source when it was taken (the partition assignment depends on it).
    pub(crate) parallelism: u32,
    /// The splits in their order (their index is their split number).
    pub(crate) splits: Vec<StoredSplit>,
}

/// A position, by version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Position {
    /// Version 1.
    V1(PositionV1),
}

impl Position {
    /// The encoded position.
    pub(crate) fn encode(&self) -> Vec<u8> {
        // Encoding plain data into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a position.
    ///
    /// # Errors
    /// The codec's message when `bytes` is not a position of this source.
    pub(crate) fn decode(bytes: &[u8]) -> Result<PositionV1, String> {
        match postcard::from_bytes::<Self>(bytes) {
            Ok(Self::V1(position)) => Ok(position),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_garbage_is_refused() {
        let position = PositionV1 {
            subtask: 1,
            parallelism: 3,
            splits: vec![
                StoredSplit { topic: "bids".into(), partition: 2, next: Next::Offset(17), end: Some(40) },
                StoredSplit { topic: "bids".into(), partition: 5, next: Next::Earliest, end: None },
                StoredSplit { topic: "other".into(), partition: 0, next: Next::Starting, end: None },
            ],
        };
        let bytes = Position::V1(position.clone()).encode();
        assert_eq!(bytes[0], 0, "the first byte is the version's variant index");
        assert_eq!(Position::decode(&bytes), Ok(position));
        assert!(Position::decode(&[7, 1, 2]).is_err());
        assert!(Position::decode(&postcard::to_allocvec(&(3u64, 4u64)).unwrap()).is_err());
    }
}
