//! The form of a published group on the bus: a version byte, then the group's first seq and
//! its events (seqs follow one by one, so only the first is sent).
//!
//! ```text
//! version    u8   (1)
//! first_seq  u64  little endian, >= 1
//! count      u32  little endian, >= 1
//! count times:
//!   kind       u8 length + the stored name (`work_item`)
//!   action     u8 length + the stored name (`updated`)
//!   project_id u16 length + UTF-8
//!   entity_id  u16 length + UTF-8
//!   frame      u32 length + the encoded `ServerFrame{event}`
//! ```
//!
//! Kinds and actions travel by their stored names, which the change log already keeps stable,
//! so nodes of different versions never read one enum's number as another. Decoding takes
//! bytes from the network: every length is checked against what is left, anything malformed
//! or left over is an error, and nothing panics. Frames are slices of the received buffer,
//! not copies.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use pm_core::kinds::{ChangeAction, EntityKind};
use pm_db::CommittedEvent;

/// The version this node writes and reads.
pub const VERSION: u8 = 1;

/// Bytes of a group before its events.
const HEADER: usize = 1 + 8 + 4;

/// Bytes of an event besides its names, ids and frame: the five length prefixes.
const EVENT_OVERHEAD: usize = 1 + 1 + 2 + 2 + 4;

/// Why bytes from the bus are not a group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Another encoding version (a node of another release, or not a group at all).
    #[error("unknown group version {0}")]
    Version(u8),
    /// The bytes end inside a field.
    #[error("group truncated in {0}")]
    Truncated(&'static str),
    /// A field holds a value outside its rule.
    #[error("group has an invalid {0}")]
    Invalid(&'static str),
    /// Bytes follow the last event.
    #[error("{0} bytes after the group's last event")]
    Trailing(usize),
    /// What was given to encode is not a contiguous, non-empty run of seqs, or a field does
    /// not fit its length prefix.
    #[error("cannot encode group: {0}")]
    Unencodable(&'static str),
}

/// The encoded size of one event.
fn event_len(event: &CommittedEvent) -> usize {
    EVENT_OVERHEAD
        + event.kind.as_str().len()
        + event.action.as_str().len()
        + event.project_id.len()
        + event.entity_id.len()
        + event.frame.len()
}

/// Encodes `events`, which must be non-empty with consecutive seqs.
pub fn encode(events: &[CommittedEvent]) -> Result<Bytes, WireError> {
    let first = events.first().ok_or(WireError::Unencodable("no events"))?;
    if first.seq == 0 {
        return Err(WireError::Unencodable("seq 0"));
    }
    let count = u32::try_from(events.len()).map_err(|_| WireError::Unencodable("too many"))?;
    let size = HEADER + events.iter().map(event_len).sum::<usize>();
    let mut out = BytesMut::with_capacity(size);
    out.put_u8(VERSION);
    out.put_u64_le(first.seq);
    out.put_u32_le(count);
    for (i, event) in events.iter().enumerate() {
        if Some(event.seq) != first.seq.checked_add(i as u64) {
            return Err(WireError::Unencodable("seqs are not consecutive"));
        }
        put_short(&mut out, event.kind.as_str().as_bytes())?;
        put_short(&mut out, event.action.as_str().as_bytes())?;
        put_u16_prefixed(&mut out, event.project_id.as_bytes())?;
        put_u16_prefixed(&mut out, event.entity_id.as_bytes())?;
        let len = u32::try_from(event.frame.len())
            .map_err(|_| WireError::Unencodable("frame too long"))?;
        out.put_u32_le(len);
        out.put_slice(&event.frame);
    }
    Ok(out.freeze())
}

/// Splits `events` (consecutive seqs) into encoded groups of at most `max_bytes` each, in seq
/// order, so that a large commit still fits the bus's message size. An event too large for
/// any message is sent alone (and refused by the bus): receivers read it from the log.
pub fn encode_chunks(events: &[CommittedEvent], max_bytes: usize) -> Result<Vec<Bytes>, WireError> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut size = HEADER;
    for (i, event) in events.iter().enumerate() {
        let len = event_len(event);
        if i > start && size + len > max_bytes {
            chunks.push(encode(&events[start..i])?);
            start = i;
            size = HEADER;
        }
        size += len;
    }
    if start < events.len() {
        chunks.push(encode(&events[start..])?);
    }
    Ok(chunks)
}

fn put_short(out: &mut BytesMut, bytes: &[u8]) -> Result<(), WireError> {
    let len = u8::try_from(bytes.len()).map_err(|_| WireError::Unencodable("name too long"))?;
    out.put_u8(len);
    out.put_slice(bytes);
    Ok(())
}

fn put_u16_prefixed(out: &mut BytesMut, bytes: &[u8]) -> Result<(), WireError> {
    let len = u16::try_from(bytes.len()).map_err(|_| WireError::Unencodable("id too long"))?;
    out.put_u16_le(len);
    out.put_slice(bytes);
    Ok(())
}

/// Reads fields off the front of a received buffer, each checked against what is left.
struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn take(&mut self, n: usize, field: &'static str) -> Result<Bytes, WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or(WireError::Truncated(field))?;
        let bytes = self.buf.slice(self.pos..end);
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let bytes = self.take(N, field)?;
        let mut array = [0; N];
        array.copy_from_slice(&bytes);
        Ok(array)
    }

    fn text(&mut self, n: usize, field: &'static str) -> Result<String, WireError> {
        let bytes = self.take(n, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError::Invalid(field))
    }

    fn short_text(&mut self, field: &'static str) -> Result<String, WireError> {
        let [len] = self.array::<1>(field)?;
        self.text(usize::from(len), field)
    }

    fn long_text(&mut self, field: &'static str) -> Result<String, WireError> {
        let len = u16::from_le_bytes(self.array(field)?);
        self.text(usize::from(len), field)
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// Decodes a group received from the bus.
pub fn decode(bytes: Bytes) -> Result<Arc<[CommittedEvent]>, WireError> {
    let mut reader = Reader { buf: bytes, pos: 0 };
    let [version] = reader.array::<1>("version")?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let first = u64::from_le_bytes(reader.array("first_seq")?);
    let count = u32::from_le_bytes(reader.array("count")?);
    if first == 0 {
        return Err(WireError::Invalid("first_seq"));
    }
    if count == 0 {
        return Err(WireError::Invalid("count"));
    }
    let count = u64::from(count);
    if first.checked_add(count - 1).is_none() {
        return Err(WireError::Invalid("count"));
    }
    // The count is the sender's word: never reserve more than the bytes could hold.
    let fits = reader.remaining() / EVENT_OVERHEAD;
    let mut events = Vec::with_capacity(usize::try_from(count).unwrap_or(usize::MAX).min(fits));
    for i in 0..count {
        let kind = reader.short_text("kind")?;
        let kind = EntityKind::parse("kind", &kind).map_err(|_| WireError::Invalid("kind"))?;
        let action = reader.short_text("action")?;
        let action =
            ChangeAction::parse("action", &action).map_err(|_| WireError::Invalid("action"))?;
        let project_id = reader.long_text("project_id")?;
        let entity_id = reader.long_text("entity_id")?;
        let len = u32::from_le_bytes(reader.array("frame")?);
        let frame = reader.take(
            usize::try_from(len).map_err(|_| WireError::Truncated("frame"))?,
            "frame",
        )?;
        events.push(CommittedEvent {
            seq: first + i,
            project_id,
            kind,
            entity_id,
            action,
            frame,
        });
    }
    match reader.remaining() {
        0 => Ok(events.into()),
        extra => Err(WireError::Trailing(extra)),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn event(seq: u64, kind: EntityKind, action: ChangeAction, frame: &[u8]) -> CommittedEvent {
        CommittedEvent {
            seq,
            project_id: format!("0190f0c4-0000-7000-8000-{seq:012}"),
            kind,
            entity_id: format!("entity-{seq}"),
            action,
            frame: Bytes::copy_from_slice(frame),
        }
    }

    fn group(first: u64, n: u64) -> Vec<CommittedEvent> {
        (first..first + n)
            .map(|seq| {
                let kind = EntityKind::ALL[seq as usize % EntityKind::ALL.len()];
                let action = ChangeAction::ALL[seq as usize % ChangeAction::ALL.len()];
                event(seq, kind, action, &vec![seq as u8; seq as usize % 300])
            })
            .collect()
    }

    fn same(a: &[CommittedEvent], b: &[CommittedEvent]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(a, b)| {
                (
                    a.seq,
                    &a.project_id,
                    a.kind,
                    &a.entity_id,
                    a.action,
                    &a.frame,
                ) == (
                    b.seq,
                    &b.project_id,
                    b.kind,
                    &b.entity_id,
                    b.action,
                    &b.frame,
                )
            })
    }

    #[test]
    fn round_trips_every_field() {
        let events = group(41, 25);
        let bytes = encode(&events).unwrap();
        assert_eq!(bytes[0], VERSION);
        let decoded = decode(bytes).unwrap();
        assert!(same(&decoded, &events));
        assert_eq!(decoded[0].seq, 41);
        assert_eq!(decoded[24].seq, 65);
    }

    #[test]
    fn refuses_to_encode_what_is_not_a_run() {
        assert_eq!(encode(&[]), Err(WireError::Unencodable("no events")));
        let mut events = group(1, 3);
        events[2].seq = 5;
        assert_eq!(
            encode(&events),
            Err(WireError::Unencodable("seqs are not consecutive"))
        );
        assert_eq!(encode(&group(0, 1)), Err(WireError::Unencodable("seq 0")));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode(&group(7, 4)).unwrap();
        for len in 0..bytes.len() {
            assert!(
                decode(bytes.slice(..len)).is_err(),
                "a group cut at {len} of {} bytes decoded",
                bytes.len()
            );
        }
    }

    #[test]
    fn bad_headers_and_trailing_bytes_are_errors() {
        let good = encode(&group(7, 2)).unwrap();
        let mut other_version = good.to_vec();
        other_version[0] = 2;
        assert_eq!(
            decode(other_version.into()).err(),
            Some(WireError::Version(2))
        );
        let mut trailing = good.to_vec();
        trailing.extend_from_slice(b"xyz");
        assert_eq!(decode(trailing.into()).err(), Some(WireError::Trailing(3)));
        let mut zero_count = good.to_vec();
        zero_count[9..13].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            decode(zero_count.into()).err(),
            Some(WireError::Invalid("count"))
        );
        let mut zero_seq = good.to_vec();
        zero_seq[1..9].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(
            decode(zero_seq.into()).err(),
            Some(WireError::Invalid("first_seq"))
        );
        let mut overflow = good.to_vec();
        overflow[1..9].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            decode(overflow.into()).err(),
            Some(WireError::Invalid("count"))
        );
        // A huge count with no bytes behind it allocates nothing large and fails.
        let mut huge = good[..HEADER].to_vec();
        huge[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode(huge.into()).err(),
            Some(WireError::Truncated("kind"))
        );
    }

    #[test]
    fn unknown_names_are_errors() {
        let bytes = encode(&[event(1, EntityKind::Sprint, ChangeAction::Created, b"f")]).unwrap();
        // The kind's name starts at HEADER + 1: "sprint" becomes "sprinx".
        let mut bad_kind = bytes.to_vec();
        bad_kind[HEADER + 6] = b'x';
        assert_eq!(
            decode(bad_kind.into()).err(),
            Some(WireError::Invalid("kind"))
        );
        let mut bad_utf8 = bytes.to_vec();
        bad_utf8[HEADER + 1] = 0xff;
        assert_eq!(
            decode(bad_utf8.into()).err(),
            Some(WireError::Invalid("kind"))
        );
    }

    #[test]
    fn chunks_respect_the_size_and_keep_the_run() {
        let events = group(100, 40);
        let whole = encode(&events).unwrap().len();
        let chunks = encode_chunks(&events, whole / 4).unwrap();
        assert!(chunks.len() >= 4, "{} chunks", chunks.len());
        let mut seqs = Vec::new();
        for chunk in &chunks {
            assert!(chunk.len() <= whole / 4, "a chunk of {} bytes", chunk.len());
            let decoded = decode(chunk.clone()).unwrap();
            seqs.extend(decoded.iter().map(|e| e.seq));
        }
        assert_eq!(seqs, (100..140).collect::<Vec<u64>>());
        assert_eq!(encode_chunks(&events, usize::MAX).unwrap().len(), 1);
        // An event larger than the limit still goes, alone.
        let big = vec![event(
            1,
            EntityKind::Comment,
            ChangeAction::Created,
            &[7; 500],
        )];
        let alone = encode_chunks(&big, 100).unwrap();
        assert_eq!(alone.len(), 1);
        assert!(same(&decode(alone[0].clone()).unwrap(), &big));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(Bytes::from(bytes));
        }

        #[test]
        fn mutated_groups_never_panic(
            n in 1u64..6,
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut bytes = encode(&group(3, n)).unwrap().to_vec();
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            if let Ok(events) = decode(Bytes::from(bytes)) {
                // Whatever decodes is still a run of seqs.
                for pair in events.windows(2) {
                    prop_assert_eq!(pair[1].seq, pair[0].seq + 1);
                }
            }
        }
    }
}
