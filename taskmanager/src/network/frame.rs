//! Encoding and decoding of the data plane's handshake and frames (the format is described in the
//! [module docs](super)). Decoding never panics and never trusts a length before checking it:
//! truncated or garbage input is a [`FrameError`].

use crate::exchange::ChannelEvent;
use std::io::{self, ErrorKind, Read, Write};
use weir_runtime::{ChannelId, JobId};

/// The first bytes of every data connection.
pub(crate) const MAGIC: [u8; 4] = *b"WEIR";
/// The protocol version this taskmanager speaks.
pub(crate) const VERSION: u8 = 1;
/// Handshake size: magic, version, job uuid, then attempt, edge, producer, consumer.
pub(crate) const HANDSHAKE_LEN: usize = MAGIC.len() + 1 + 16 + 4 * 4;
/// The largest frame payload accepted (and sent).
pub(crate) const MAX_PAYLOAD: usize = 64 << 20;

const TAG_BATCH: u8 = 0;
const TAG_WATERMARK: u8 = 1;
const TAG_IDLE: u8 = 2;
const TAG_END_OF_STREAM: u8 = 3;
const TAG_BARRIER: u8 = 4;

/// Why a handshake or frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection between two frames, before the end of the stream.
    #[error("the connection closed before the end of the stream")]
    Closed,
    /// The peer closed the connection in the middle of something.
    #[error("the connection closed in the middle of a {0}")]
    Truncated(&'static str),
    /// The peer does not speak this protocol.
    #[error("not a Weir data connection (magic bytes {0:02x?}, expected \"WEIR\")")]
    BadMagic([u8; 4]),
    /// The peer speaks another version of this protocol.
    #[error("unsupported data protocol version {0} (this taskmanager speaks version {VERSION})")]
    BadVersion(u8),
    /// The frame tag is not one of this protocol's.
    #[error("unknown frame tag {0}")]
    UnknownTag(u8),
    /// The frame payload is larger than [`MAX_PAYLOAD`].
    #[error("frame payload of {0} bytes exceeds the limit of {MAX_PAYLOAD} bytes (64 MiB)")]
    TooLarge(u64),
    /// The payload does not fit the frame's tag.
    #[error("malformed {kind} frame: {detail}")]
    Malformed { kind: &'static str, detail: String },
    /// The event has no frame (a `Failed` event only exists on the consuming side).
    #[error("a {0} event cannot be sent over the network")]
    Unencodable(&'static str),
}

/// The handshake a consumer sends for channel `id`.
pub(crate) fn encode_handshake(id: &ChannelId) -> [u8; HANDSHAKE_LEN] {
    let mut out = [0; HANDSHAKE_LEN];
    out[..4].copy_from_slice(&MAGIC);
    out[4] = VERSION;
    out[5..21].copy_from_slice(id.job.0.as_bytes());
    for (i, value) in [id.attempt, id.edge, id.producer, id.consumer].into_iter().enumerate() {
        out[21 + 4 * i..25 + 4 * i].copy_from_slice(&value.to_le_bytes());
    }
    out
}

/// Parses a handshake.
pub(crate) fn decode_handshake(bytes: &[u8; HANDSHAKE_LEN]) -> Result<ChannelId, FrameError> {
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    if bytes[4] != VERSION {
        return Err(FrameError::BadVersion(bytes[4]));
    }
    let mut job = [0; 16];
    job.copy_from_slice(&bytes[5..21]);
    let word = |i: usize| {
        let at = 21 + 4 * i;
        u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    };
    Ok(ChannelId {
        job: JobId(uuid::Uuid::from_bytes(job)),
        attempt: word(0),
        edge: word(1),
        producer: word(2),
        consumer: word(3),
    })
}

/// Writes the handshake for channel `id`.
pub(crate) fn write_handshake(writer: &mut impl Write, id: &ChannelId) -> io::Result<()> {
    writer.write_all(&encode_handshake(id))
}

/// Reads a handshake. The magic and version are checked before the rest is awaited, so a peer
/// speaking another protocol gets a clear error.
pub(crate) fn read_handshake(reader: &mut impl Read) -> Result<ChannelId, FrameError> {
    let mut bytes = [0; HANDSHAKE_LEN];
    read_exact(reader, &mut bytes[..4], "handshake")?;
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    read_exact(reader, &mut bytes[4..5], "handshake")?;
    if bytes[4] != VERSION {
        return Err(FrameError::BadVersion(bytes[4]));
    }
    read_exact(reader, &mut bytes[5..], "handshake")?;
    decode_handshake(&bytes)
}

/// Writes `event` as one frame (buffering is the caller's business).
pub(crate) fn write_event(writer: &mut impl Write, event: &ChannelEvent) -> Result<(), FrameError> {
    let watermark;
    let mut barrier = [0u8; 16];
    let (tag, payload): (u8, &[u8]) = match event {
        ChannelEvent::Batch(data) => (TAG_BATCH, data),
        ChannelEvent::Watermark(timestamp) => {
            watermark = timestamp.to_le_bytes();
            (TAG_WATERMARK, &watermark)
        }
        ChannelEvent::Idle(idle) => (TAG_IDLE, if *idle { &[1] } else { &[0] }),
        ChannelEvent::EndOfStream => (TAG_END_OF_STREAM, &[]),
        ChannelEvent::Barrier(b) => {
            barrier[..8].copy_from_slice(&b.id.to_le_bytes());
            barrier[8..].copy_from_slice(&b.timestamp.to_le_bytes());
            (TAG_BARRIER, &barrier)
        }
        ChannelEvent::Failed(_) => return Err(FrameError::Unencodable("Failed")),
        // Typed batches only flow between tasks of one process; producers serialize for remote channels.
        ChannelEvent::Records(_) => return Err(FrameError::Unencodable("Records")),
    };
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(payload.len() as u64));
    }
    let mut header = [0; 5];
    header[0] = tag;
    header[1..].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    writer.write_all(&header)?;
    writer.write_all(payload)?;
    Ok(())
}

/// Reads one frame. A connection closed cleanly between frames is [`FrameError::Closed`].
pub(crate) fn read_event(reader: &mut impl Read) -> Result<ChannelEvent, FrameError> {
    let mut tag = [0; 1];
    loop {
        match reader.read(&mut tag) {
            Ok(0) => return Err(FrameError::Closed),
            Ok(_) => break,
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(err.into()),
        }
    }
    let tag = tag[0];
    let kind = match tag {
        TAG_BATCH => "batch",
        TAG_WATERMARK => "watermark",
        TAG_IDLE => "idle",
        TAG_END_OF_STREAM => "end-of-stream",
        TAG_BARRIER => "barrier",
        _ => return Err(FrameError::UnknownTag(tag)),
    };
    let mut len = [0; 4];
    read_exact(reader, &mut len, "frame header")?;
    let len = u32::from_le_bytes(len);
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len as u64));
    }
    let expected = match tag {
        TAG_WATERMARK => Some(8),
        TAG_IDLE => Some(1),
        TAG_END_OF_STREAM => Some(0),
        TAG_BARRIER => Some(16),
        _ => None,
    };
    match expected {
        Some(expected) if len != expected => {
            return Err(FrameError::Malformed { kind, detail: format!("payload of {len} bytes, expected {expected}") });
        }
        _ => {}
    }
    match tag {
        TAG_BATCH => {
            // Grow with the data rather than trusting the length for the allocation.
            let mut data = Vec::with_capacity(len.min(1 << 20));
            reader.take(len as u64).read_to_end(&mut data)?;
            if data.len() < len {
                return Err(FrameError::Truncated("batch frame"));
            }
            Ok(ChannelEvent::Batch(data))
        }
        TAG_WATERMARK => {
            let mut bytes = [0; 8];
            read_exact(reader, &mut bytes, "watermark frame")?;
            Ok(ChannelEvent::Watermark(i64::from_le_bytes(bytes)))
        }
        TAG_IDLE => {
            let mut byte = [0; 1];
            read_exact(reader, &mut byte, "idle frame")?;
            match byte[0] {
                0 => Ok(ChannelEvent::Idle(false)),
                1 => Ok(ChannelEvent::Idle(true)),
                other => Err(FrameError::Malformed { kind, detail: format!("idleness byte {other}, expected 0 or 1") }),
            }
        }
        TAG_BARRIER => {
            let mut bytes = [0; 16];
            read_exact(reader, &mut bytes, "barrier frame")?;
            let (id, timestamp) = bytes.split_at(8);
            Ok(ChannelEvent::Barrier(weir_api::runtime::CheckpointBarrier {
                id: u64::from_le_bytes(id.try_into().unwrap_or_default()),
                timestamp: i64::from_le_bytes(timestamp.try_into().unwrap_or_default()),
            }))
        }
        _ => Ok(ChannelEvent::EndOfStream),
    }
}

fn read_exact(reader: &mut impl Read, buf: &mut [u8], what: &'static str) -> Result<(), FrameError> {
    reader.read_exact(buf).map_err(|err| match err.kind() {
        ErrorKind::UnexpectedEof => FrameError::Truncated(what),
        _ => FrameError::Io(err),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ChannelId {
        ChannelId { job: JobId::random(), attempt: 7, edge: 0xdead_beef, producer: 3, consumer: u32::MAX }
    }

    fn events() -> Vec<ChannelEvent> {
        vec![
            ChannelEvent::Batch(Vec::new()),
            ChannelEvent::Batch(b"hello".to_vec()),
            ChannelEvent::Watermark(i64::MIN),
            ChannelEvent::Watermark(-1),
            ChannelEvent::Watermark(1_700_000_000_000),
            ChannelEvent::Idle(true),
            ChannelEvent::Barrier(weir_api::runtime::CheckpointBarrier { id: 7, timestamp: -3 }),
            ChannelEvent::Idle(false),
            ChannelEvent::Batch((0..100_000u32).map(|i| i as u8).collect()),
            ChannelEvent::Watermark(i64::MAX),
            ChannelEvent::EndOfStream,
        ]
    }

    fn encode(events: &[ChannelEvent]) -> Vec<u8> {
        let mut out = Vec::new();
        for event in events {
            write_event(&mut out, event).unwrap();
        }
        out
    }

    fn decode_all(mut bytes: &[u8]) -> Result<Vec<ChannelEvent>, FrameError> {
        let mut out = Vec::new();
        loop {
            match read_event(&mut bytes) {
                Ok(event) => out.push(event),
                Err(FrameError::Closed) => return Ok(out),
                Err(err) => return Err(err),
            }
        }
    }

    #[test]
    fn handshake_round_trips() {
        let id = id();
        let bytes = encode_handshake(&id);
        assert_eq!(&bytes[..5], b"WEIR\x01");
        assert_eq!(&bytes[5..21], id.job.0.as_bytes());
        assert_eq!(&bytes[25..29], &0xdead_beef_u32.to_le_bytes());
        assert_eq!(decode_handshake(&bytes).unwrap(), id);
        let mut written = Vec::new();
        write_handshake(&mut written, &id).unwrap();
        assert_eq!(read_handshake(&mut written.as_slice()).unwrap(), id);
    }

    #[test]
    fn handshake_rejects_garbage() {
        let id = id();
        let mut bytes = encode_handshake(&id);
        bytes[0] = b'G';
        let err = read_handshake(&mut bytes.as_slice()).unwrap_err();
        assert!(matches!(err, FrameError::BadMagic(_)), "{err}");
        assert!(err.to_string().contains("not a Weir data connection"), "{err}");
        // A wrong magic is reported even if the peer sent fewer bytes than a handshake.
        assert!(matches!(read_handshake(&mut &b"GET / HTTP"[..]), Err(FrameError::BadMagic(_))));
        let mut bytes = encode_handshake(&id);
        bytes[4] = 2;
        let err = read_handshake(&mut bytes.as_slice()).unwrap_err();
        assert!(matches!(err, FrameError::BadVersion(2)), "{err}");
        assert!(err.to_string().contains("version 2"), "{err}");
        assert!(matches!(decode_handshake(&bytes), Err(FrameError::BadVersion(2))));
        let bytes = encode_handshake(&id);
        for len in 0..HANDSHAKE_LEN {
            let err = read_handshake(&mut &bytes[..len]).unwrap_err();
            assert!(matches!(err, FrameError::Truncated("handshake")), "{len}: {err}");
        }
    }

    #[test]
    fn frames_round_trip() {
        let events = events();
        let decoded = decode_all(&encode(&events)).unwrap();
        assert_eq!(format!("{decoded:?}"), format!("{events:?}"));
        // The exact wire format of the small frames.
        assert_eq!(encode(&[ChannelEvent::Watermark(1)]), [1, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode(&[ChannelEvent::Idle(true)]), [2, 1, 0, 0, 0, 1]);
        assert_eq!(encode(&[ChannelEvent::EndOfStream]), [3, 0, 0, 0, 0]);
        assert_eq!(encode(&[ChannelEvent::Batch(vec![9, 8])]), [0, 2, 0, 0, 0, 9, 8]);
    }

    #[test]
    fn failed_events_are_not_encodable() {
        let err = write_event(&mut Vec::new(), &ChannelEvent::Failed("x".into())).unwrap_err();
        assert!(matches!(err, FrameError::Unencodable(_)), "{err}");
    }

    #[test]
    fn truncated_input_is_an_error() {
        let bytes = encode(&events());
        let mut boundaries = std::collections::HashSet::new();
        let mut rest = bytes.as_slice();
        boundaries.insert(0);
        while read_event(&mut rest).is_ok() {
            boundaries.insert(bytes.len() - rest.len());
        }
        for len in 0..bytes.len() {
            // Step through the large batch quickly; every prefix of the small frames.
            if len > 100 && len % 997 != 0 && !boundaries.contains(&len) {
                continue;
            }
            match decode_all(&bytes[..len]) {
                Ok(events) => assert!(boundaries.contains(&len), "{len}: decoded {} events", events.len()),
                Err(err) => {
                    assert!(!boundaries.contains(&len), "{len}: {err}");
                    assert!(matches!(err, FrameError::Truncated(_)), "{len}: {err}");
                }
            }
        }
    }

    #[test]
    fn malformed_frames_are_errors() {
        let cases: &[(&[u8], &str)] = &[
            (&[5, 0, 0, 0, 0], "unknown frame tag 5"),
            (&[4, 0, 0, 0, 0], "malformed barrier frame"),
            (&[255], "unknown frame tag 255"),
            (&[0, 1, 0, 0, 4], "exceeds the limit"),
            (&[0, 255, 255, 255, 255], "exceeds the limit"),
            (&[1, 7, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7], "malformed watermark frame"),
            (&[2, 1, 0, 0, 0, 2], "idleness byte 2"),
            (&[2, 2, 0, 0, 0, 1, 1], "malformed idle frame"),
            (&[3, 1, 0, 0, 0, 0], "malformed end-of-stream frame"),
            (&[0, 10, 0, 0, 0, 1, 2], "closed in the middle of a batch frame"),
            (&[1, 8, 0, 0], "closed in the middle of a frame header"),
        ];
        for (bytes, expected) in cases {
            let err = read_event(&mut &bytes[..]).unwrap_err();
            assert!(err.to_string().contains(expected), "{bytes:?}: {err}");
        }
        assert!(matches!(read_event(&mut &[][..]), Err(FrameError::Closed)));
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(tag) = bytes.first_mut() {
                *tag %= 5; // mostly valid tags, so the payload paths are exercised too
            }
            if bytes.len() >= 5 && next() % 2 == 0 {
                bytes[2..5].fill(0); // plausible lengths
            }
            let _ = decode_all(&bytes);
            let mut handshake = [0; HANDSHAKE_LEN];
            handshake.iter_mut().for_each(|b| *b = next() as u8);
            if next() % 2 == 0 {
                handshake[..5].copy_from_slice(b"WEIR\x01");
            }
            let _ = read_handshake(&mut &handshake[..(next() as usize % (HANDSHAKE_LEN + 1))]);
        }
    }
}
