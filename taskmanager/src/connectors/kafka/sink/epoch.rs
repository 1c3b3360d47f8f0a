//! Epochs of the exactly-once writer (the records between two barriers, in one arena) and the
//! writer's checkpoint state.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use weir_api::runtime::{ByteRange, CheckpointId, SinkRecord, SinkRecords};

/// The version of [`State`]'s encoding, its first field.
const STATE_VERSION: u32 = 1;

/// The records written between two barriers: topic names, keys, values and headers back to
/// back, so an epoch costs a few allocations whatever its size.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Epoch {
    /// The checkpoint whose barrier closed it (`0` while open).
    pub(super) id: CheckpointId,
    /// The topics its records go to, by index.
    pub(super) topics: Vec<String>,
    /// Keys, values, header names and header values.
    pub(super) data: Vec<u8>,
    /// The records, in write order.
    pub(super) records: Vec<EpochRecord>,
    /// Headers of all records; each record names its range.
    pub(super) headers: Vec<EpochHeader>,
}

/// One record of an [`Epoch`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct EpochRecord {
    /// Index into [`Epoch::topics`].
    pub(super) topic: u32,
    pub(super) partition: Option<i32>,
    pub(super) timestamp: Option<i64>,
    pub(super) key: Option<ByteRange>,
    pub(super) value: Option<ByteRange>,
    /// Range in [`Epoch::headers`].
    pub(super) headers: (u32, u32),
}

/// A header of an [`EpochRecord`]: name (UTF-8) and value in [`Epoch::data`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct EpochHeader {
    pub(super) name: ByteRange,
    pub(super) value: Option<ByteRange>,
}

/// A record as the producer sends it.
#[derive(Debug, Clone, Copy)]
pub(super) struct OutRecord<'a> {
    pub(super) topic: &'a str,
    pub(super) partition: Option<i32>,
    pub(super) timestamp: Option<i64>,
    pub(super) key: Option<&'a [u8]>,
    pub(super) value: Option<&'a [u8]>,
}

impl Epoch {
    /// The number of records.
    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    /// Bytes held (data, records, headers), for logs.
    pub(super) fn size(&self) -> usize {
        self.data.len()
            + self.records.len() * std::mem::size_of::<EpochRecord>()
            + self.headers.len() * std::mem::size_of::<EpochHeader>()
    }

    fn bytes(&self, range: ByteRange) -> &[u8] {
        self.data.get(range.0 as usize..range.1 as usize).unwrap_or_default()
    }

    fn push_bytes(&mut self, bytes: &[u8]) -> ByteRange {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(bytes);
        (start, self.data.len() as u32)
    }

    /// Copies `record` of `from` into the epoch, going to topic `topic` (an index into
    /// [`Epoch::topics`]).
    pub(super) fn push(&mut self, from: &SinkRecords, record: &SinkRecord, topic: u32) {
        let key = record.key.map(|r| self.push_bytes(from.bytes(r)));
        let value = record.value.map(|r| self.push_bytes(from.bytes(r)));
        let first_header = self.headers.len() as u32;
        for header in record_headers(from, record) {
            let name = self.push_bytes(from.bytes(header.name));
            let value = header.value.map(|v| self.push_bytes(from.bytes(v)));
            self.headers.push(EpochHeader { name, value });
        }
        self.records.push(EpochRecord {
            topic,
            partition: record.partition,
            timestamp: record.timestamp,
            key,
            value,
            headers: (first_header, self.headers.len() as u32),
        });
    }

    /// The records with their topics and the headers of each, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (OutRecord<'_>, impl ExactSizeIterator<Item = Header<'_>>)> {
        self.records.iter().map(move |r| {
            let out = OutRecord {
                topic: self.topics.get(r.topic as usize).map_or("", String::as_str),
                partition: r.partition,
                timestamp: r.timestamp,
                key: r.key.map(|k| self.bytes(k)),
                value: r.value.map(|v| self.bytes(v)),
            };
            let headers = self.headers.get(r.headers.0 as usize..r.headers.1 as usize).unwrap_or_default();
            let headers = headers.iter().map(move |h| Header {
                name: std::str::from_utf8(self.bytes(h.name)).unwrap_or_default(),
                value: h.value.map(|v| self.bytes(v)),
            });
            (out, headers)
        })
    }

    /// Checks what a restored epoch refers to: ranges inside the data, header ranges inside the
    /// headers, topic indexes, UTF-8 header names.
    fn validate(&self) -> std::result::Result<(), String> {
        let range_ok = |r: ByteRange| r.0 <= r.1 && r.1 as usize <= self.data.len();
        for (i, r) in self.records.iter().enumerate() {
            let ok = (r.topic as usize) < self.topics.len()
                && r.key.is_none_or(range_ok)
                && r.value.is_none_or(range_ok)
                && r.headers.0 <= r.headers.1
                && r.headers.1 as usize <= self.headers.len();
            if !ok {
                return Err(format!("record {i} of epoch {} refers outside the epoch", self.id));
            }
        }
        for h in &self.headers {
            if !range_ok(h.name) || !h.value.is_none_or(range_ok) || std::str::from_utf8(self.bytes(h.name)).is_err() {
                return Err(format!("a header of epoch {} is malformed", self.id));
            }
        }
        Ok(())
    }
}

/// A header as the producer sends it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Header<'a> {
    pub(super) name: &'a str,
    pub(super) value: Option<&'a [u8]>,
}

/// The headers of `record` in `records`.
pub(super) fn record_headers<'a>(records: &'a SinkRecords, record: &SinkRecord) -> &'a [weir_api::runtime::RawHeader] {
    records.headers.get(record.headers.0 as usize..record.headers.1 as usize).unwrap_or_default()
}

/// Checks that the header names of `record` are UTF-8 (as Kafka wants them).
///
/// # Errors
/// [`weir_api::Error::InvalidJob`] for the first that is not.
pub(super) fn check_header_names(records: &SinkRecords, record: &SinkRecord) -> weir_api::Result<()> {
    for header in record_headers(records, record) {
        if std::str::from_utf8(records.bytes(header.name)).is_err() {
            return Err(super::invalid("a record has a header whose name is not UTF-8"));
        }
    }
    Ok(())
}

/// The writer's state in a checkpoint, as encoded.
#[derive(Serialize)]
struct StateOut<'a> {
    version: u32,
    transactional_id: &'a str,
    epochs: Vec<&'a Epoch>,
}

/// The writer's state in a checkpoint: every epoch not known to be committed, in order.
#[derive(Debug, Deserialize)]
pub(super) struct State {
    /// [`STATE_VERSION`] when written.
    #[allow(dead_code)]
    version: u32,
    /// The transactional id whose markers say which epochs were committed.
    pub(super) transactional_id: String,
    /// Epochs by increasing id.
    pub(super) epochs: Vec<Epoch>,
}

/// Encodes the state: `transactional_id` and `epochs`.
///
/// # Errors
/// When postcard fails (it does not for these types; kept as an error rather than a panic).
pub(super) fn encode_state(transactional_id: &str, epochs: &[Arc<Epoch>]) -> Result<Vec<u8>, String> {
    let state = StateOut { version: STATE_VERSION, transactional_id, epochs: epochs.iter().map(|e| &**e).collect() };
    postcard::to_allocvec(&state).map_err(|e| format!("cannot encode the sink's state: {e}"))
}

/// Decodes and checks a state [`encode_state`] wrote.
///
/// # Errors
/// An unknown version, bytes that do not decode, epochs out of order or referring outside
/// themselves: one line.
pub(super) fn decode_state(bytes: &[u8]) -> Result<State, String> {
    let (version, _) = postcard::take_from_bytes::<u32>(bytes)
        .map_err(|e| format!("the sink's state in the checkpoint is corrupt ({e})"))?;
    if version != STATE_VERSION {
        return Err(format!(
            "the sink's state in the checkpoint has format version {version}, this taskmanager reads version \
             {STATE_VERSION} (written by another Weir version?)"
        ));
    }
    let state: State =
        postcard::from_bytes(bytes).map_err(|e| format!("the sink's state in the checkpoint is corrupt ({e})"))?;
    if let Some(pair) = state.epochs.windows(2).find(|w| w[0].id >= w[1].id) {
        return Err(format!(
            "the sink's state in the checkpoint is corrupt: epoch {} follows epoch {}",
            pair[1].id, pair[0].id
        ));
    }
    for epoch in &state.epochs {
        epoch.validate().map_err(|e| format!("the sink's state in the checkpoint is corrupt: {e}"))?;
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_api::runtime::RawHeader;

    fn records() -> SinkRecords {
        let mut records = SinkRecords::default();
        let key = Some(records.push_bytes(b"k"));
        let value = Some(records.push_bytes(b"v"));
        let name = records.push_bytes(b"h");
        let header_value = Some(records.push_bytes(b"hv"));
        records.headers.push(RawHeader { name, value: header_value });
        records.records.push(SinkRecord {
            key,
            value,
            headers: (0, 1),
            partition: Some(2),
            timestamp: Some(7),
            topic: None,
        });
        let value = Some(records.push_bytes(b"w"));
        records.records.push(SinkRecord { value, ..SinkRecord::default() });
        records
    }

    #[test]
    fn epochs_copy_records_and_round_trip_through_the_state() {
        let from = records();
        let mut epoch = Epoch { id: 3, topics: vec!["a".into(), "b".into()], ..Epoch::default() };
        epoch.push(&from, &from.records[0], 1);
        epoch.push(&from, &from.records[1], 0);
        let empty_final = Epoch { id: u64::MAX, ..Epoch::default() };
        let bytes = encode_state("p-0", &[Arc::new(epoch), Arc::new(empty_final)]).unwrap();
        let state = decode_state(&bytes).unwrap();
        assert_eq!(state.transactional_id, "p-0");
        assert_eq!(state.epochs.iter().map(|e| (e.id, e.len())).collect::<Vec<_>>(), [(3, 2), (u64::MAX, 0)]);
        let out: Vec<_> = state.epochs[0]
            .iter()
            .map(|(r, h)| {
                (r.topic, r.partition, r.timestamp, r.key, r.value, h.map(|h| (h.name, h.value)).collect::<Vec<_>>())
            })
            .collect();
        assert_eq!(
            out,
            [
                ("b", Some(2), Some(7), Some(&b"k"[..]), Some(&b"v"[..]), vec![("h", Some(&b"hv"[..]))]),
                ("a", None, None, None, Some(&b"w"[..]), vec![]),
            ]
        );
    }

    #[test]
    fn corrupt_or_unknown_states_are_refused_in_one_line() {
        assert!(decode_state(&[]).unwrap_err().contains("corrupt"));
        assert!(decode_state(&[9]).unwrap_err().contains("format version 9"));
        let mut bad = Epoch { id: 1, topics: vec!["a".into()], ..Epoch::default() };
        bad.records.push(EpochRecord {
            topic: 0,
            partition: None,
            timestamp: None,
            key: Some((0, 5)),
            value: None,
            headers: (0, 0),
        });
        let bytes = encode_state("p-0", &[Arc::new(bad)]).unwrap();
        assert!(decode_state(&bytes).unwrap_err().contains("refers outside"));
        let twice = [Arc::new(Epoch { id: 2, ..Epoch::default() }), Arc::new(Epoch { id: 2, ..Epoch::default() })];
        assert!(decode_state(&encode_state("p-0", &twice).unwrap()).unwrap_err().contains("follows"));
        let truncated = encode_state("p-0", &[Arc::new(Epoch { id: 2, ..Epoch::default() })]).unwrap();
        assert!(decode_state(&truncated[..truncated.len() - 1]).unwrap_err().contains("corrupt"));
    }
}
