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

impl v1::Error {
    /// An error answer without a current entity.
    pub fn new(code: v1::ErrorCode, message: impl Into<String>, field: impl Into<String>) -> Self {
        v1::Error {
            code: code.into(),
            message: message.into(),
            field: field.into(),
            current: None,
        }
    }
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

#[cfg(test)]
mod json_tests {
    use crate::v1;

    #[test]
    fn frames_use_the_proto3_json_mapping() {
        let frame: v1::ClientFrame = serde_json::from_str(
            r#"{"requestId": "7", "command": {"idempotencyKey": "k1",
                "createWorkItem": {"projectId": "p", "itemType": "WORK_ITEM_TYPE_TASK", "title": "Fix"}}}"#,
        )
        .unwrap();
        assert_eq!(frame.request_id, 7);
        let Some(v1::client_frame::Body::Command(command)) = frame.body else {
            panic!("a command")
        };
        assert_eq!(command.idempotency_key, "k1");
        let Some(v1::command::Kind::CreateWorkItem(create)) = command.kind else {
            panic!("CreateWorkItem")
        };
        assert_eq!(create.item_type, v1::WorkItemType::Task as i32);
        assert_eq!(create.title, "Fix");

        let response = v1::Response {
            request_id: 7,
            result: Some(v1::response::Result::CommandResult(v1::CommandResult {
                seq: 3,
                entity: None,
                replayed: true,
                warnings: vec![],
            })),
        };
        assert_eq!(
            serde_json::to_value(&response).unwrap(),
            serde_json::json!({"requestId": "7", "commandResult": {"seq": "3", "replayed": true}})
        );
        assert!(serde_json::from_str::<v1::ClientFrame>(r#"{"nope": 1}"#).is_err());
    }
}
