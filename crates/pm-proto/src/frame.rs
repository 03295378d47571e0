//! Building and encoding frames.

use bytes::Bytes;
use prost::Message;

use crate::v1;

/// Encodes a `ServerFrame` into shareable bytes.
pub fn encode_server_frame(body: v1::server_frame::Body) -> Bytes {
    Bytes::from(v1::ServerFrame { body: Some(body) }.encode_to_vec())
}

/// Wraps already-encoded `Event` bytes (as stored in the change log) into an encoded
/// `ServerFrame{event}` without decoding them: field 3, length-delimited.
pub fn server_frame_from_event_bytes(event: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(event.len() + 11);
    prost::encoding::encode_key(3, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(event.len() as u64, &mut out);
    out.extend_from_slice(event);
    Bytes::from(out)
}

impl v1::Entity {
    /// Wraps one entity.
    pub fn of(kind: v1::entity::Kind) -> Self {
        v1::Entity { kind: Some(kind) }
    }
}

impl From<v1::entity::Kind> for v1::event::Change {
    fn from(kind: v1::entity::Kind) -> Self {
        use v1::entity::Kind as K;
        use v1::event::Change as C;
        match kind {
            K::Project(x) => C::Project(x),
            K::ProjectMember(x) => C::ProjectMember(x),
            K::WorkItem(x) => C::WorkItem(x),
            K::Sprint(x) => C::Sprint(x),
            K::Comment(x) => C::Comment(x),
            K::TimeEntry(x) => C::TimeEntry(x),
            K::Dependency(x) => C::Dependency(x),
            K::SwimLane(x) => C::SwimLane(x),
            K::LlmContext(x) => C::LlmContext(x),
        }
    }
}

impl From<v1::event::Change> for v1::entity::Kind {
    fn from(change: v1::event::Change) -> Self {
        use v1::entity::Kind as K;
        use v1::event::Change as C;
        match change {
            C::Project(x) => K::Project(x),
            C::ProjectMember(x) => K::ProjectMember(x),
            C::WorkItem(x) => K::WorkItem(x),
            C::Sprint(x) => K::Sprint(x),
            C::Comment(x) => K::Comment(x),
            C::TimeEntry(x) => K::TimeEntry(x),
            C::Dependency(x) => K::Dependency(x),
            C::SwimLane(x) => K::SwimLane(x),
            C::LlmContext(x) => K::LlmContext(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_bytes_wrap_into_the_same_frame_as_encoding_it() {
        let event = v1::Event {
            seq: 7,
            at: 1_700_000_000_000,
            actor_id: "u1".into(),
            project_id: "p".into(),
            entity_type: v1::EntityType::WorkItem.into(),
            entity_id: "w".into(),
            action: v1::ChangeAction::Created.into(),
            changes: vec![],
            change: Some(v1::event::Change::Comment(v1::Comment {
                content: "x".repeat(300),
                ..Default::default()
            })),
        };
        let direct = encode_server_frame(v1::server_frame::Body::Event(event.clone()));
        let wrapped = server_frame_from_event_bytes(&event.encode_to_vec());
        assert_eq!(direct, wrapped);
        let decoded = v1::ServerFrame::decode(wrapped).unwrap();
        assert_eq!(decoded.body, Some(v1::server_frame::Body::Event(event)));
    }
}
