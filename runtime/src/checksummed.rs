//! Checksummed JSON files, the format of checkpoint and savepoint metadata and of job records:
//! an 8-byte magic naming the format, the xxh3-64 checksum of the payload (little endian), then
//! the JSON payload. A truncated, altered or foreign file is refused, never half-read.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The bytes of `value` under `magic`.
pub fn encode<T: Serialize>(magic: &[u8; 8], value: &T) -> Vec<u8> {
    let payload = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.extend_from_slice(magic);
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes and verifies bytes [`encode`] wrote under `magic`; `what` names the format in errors.
///
/// # Errors
/// One line saying what is wrong: the magic (not a `what`), a truncated header, a checksum
/// mismatch, or a payload that is not a `T`.
pub fn decode<T: DeserializeOwned>(magic: &[u8; 8], bytes: &[u8], what: &str) -> Result<T, String> {
    let rest = bytes.strip_prefix(magic).ok_or_else(|| format!("not a Weir {what} (bad magic)"))?;
    let (checksum, payload) = rest.split_first_chunk::<8>().ok_or_else(|| "truncated header".to_owned())?;
    let (expected, actual) = (u64::from_le_bytes(*checksum), xxhash_rust::xxh3::xxh3_64(payload));
    if expected != actual {
        return Err(format!("checksum mismatch (stored {expected:016x}, computed {actual:016x})"));
    }
    serde_json::from_slice(payload).map_err(|e| format!("invalid payload: {e}"))
}
