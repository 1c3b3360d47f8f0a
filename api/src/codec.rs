//! Serialization of records where they cross a task boundary, and of keys and state values.
//!
//! A serialized batch is the concatenation of `(timestamp, value)` pairs in postcard's format
//! (varint integers, length-prefixed strings); the batch's length delimits it.

use crate::chain::StreamRecord;
use crate::error::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Appends one record to `buffer`.
#[inline]
pub(crate) fn encode_record<T: Serialize>(timestamp: i64, value: &T, buffer: &mut Vec<u8>, what: &str) -> Result<()> {
    encode_into(&(timestamp, value), buffer, what)
}

/// A postcard output that appends to a `Vec` in place (postcard's own `to_extend` goes through
/// `Extend` byte by byte, and `to_allocvec` allocates a new vector per value).
struct AppendTo<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendTo<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        // Varints arrive as slices of a few bytes; a byte loop beats an out-of-line memcpy there.
        if bytes.len() <= 16 {
            self.0.reserve(bytes.len());
            for &byte in bytes {
                self.0.push(byte);
            }
        } else {
            self.0.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends `value` to `buffer`.
#[inline]
pub(crate) fn encode_into<T: Serialize + ?Sized>(value: &T, buffer: &mut Vec<u8>, what: &str) -> Result<()> {
    postcard::serialize_with_flavor(value, AppendTo(buffer)).map_err(|e| Error::serialization("serialize", what, e))
}

/// Decodes a whole value.
/// Encodes a value of user state self-describingly (MessagePack with field names; see
/// [`crate::state`]), appending to `buffer`.
pub(crate) fn encode_state_value<T: Serialize + ?Sized>(value: &T, buffer: &mut Vec<u8>, what: &str) -> Result<()> {
    rmp_serde::encode::write_named(buffer, value).map_err(|e| Error::serialization("serialize", what, e))
}

/// Decodes a value of user state written by [`encode_state_value`], by this or an earlier
/// compatible version of its type.
pub(crate) fn decode_state_value<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::serialization("deserialize", what, e))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::serialization("deserialize", what, e))
}

/// Decodes one value from the front of `bytes`, returning the rest.
pub(crate) fn decode_prefix<'a, T: DeserializeOwned>(bytes: &'a [u8], what: &str) -> Result<(T, &'a [u8])> {
    postcard::take_from_bytes(bytes).map_err(|e| Error::serialization("deserialize", what, e))
}

/// Takes the records of an arriving batch into `out` (empty or not): decodes bytes, or moves the
/// values of a typed batch.
pub(crate) fn take_batch<T: serde::de::DeserializeOwned + 'static>(
    batch: crate::runtime::InputBatch<'_>,
    out: &mut Vec<StreamRecord<T>>,
    what: &str,
) -> Result<()> {
    match batch {
        crate::runtime::InputBatch::Bytes(bytes) => decode_batch(bytes, out, what),
        crate::runtime::InputBatch::Records(batch) => {
            let records = batch
                .take::<Vec<StreamRecord<T>>>()
                .map_err(|_| Error::InvalidJob(format!("record type mismatch on the input of {what}")))?;
            if out.is_empty() {
                *out = records;
            } else {
                out.extend(records);
            }
            Ok(())
        }
    }
}

/// Decodes every record of a serialized batch, appending to `out`.
pub(crate) fn decode_batch<T: DeserializeOwned>(
    mut bytes: &[u8],
    out: &mut Vec<StreamRecord<T>>,
    what: &str,
) -> Result<()> {
    while !bytes.is_empty() {
        let ((timestamp, value), rest): ((i64, T), &[u8]) = decode_prefix(bytes, what)?;
        out.push(StreamRecord { timestamp, value });
        bytes = rest;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip() {
        let mut buf = Vec::new();
        encode_record(5, &("a".to_owned(), 1u64), &mut buf, "t").unwrap();
        encode_record(i64::MIN, &("bb".to_owned(), u64::MAX), &mut buf, "t").unwrap();
        let mut out: Vec<StreamRecord<(String, u64)>> = Vec::new();
        decode_batch(&buf, &mut out, "t").unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].value, ("a".to_owned(), 1));
        assert_eq!(out[1].timestamp, i64::MIN);
        assert_eq!(out[1].value.1, u64::MAX);
    }

    #[test]
    fn truncated_batches_are_errors_not_panics() {
        let mut buf = Vec::new();
        encode_record(5, &"hello".to_owned(), &mut buf, "t").unwrap();
        buf.pop();
        let mut out: Vec<StreamRecord<String>> = Vec::new();
        assert!(decode_batch(&buf, &mut out, "t").is_err());
    }
}
