//! Change events, engine-neutral: the description of one entity's change (the diff that
//! becomes an event), its encoded form once it has a seq, and the shapes in which committed
//! events reach the hub and are read back for replay.
//!
//! Every committed change appends one change-log row per changed entity with a gapless
//! per-tenant `seq`, in the same transaction as the change. Rows hold the encoded
//! `pm.v1.Event`, so replaying them to a subscriber needs no re-encoding.

use std::time::Duration;

use bytes::Bytes;
use pm_core::kinds::{ChangeAction, EntityKind};
use pm_proto::{frame, v1};
use prost::Message;

use crate::entity::Entity;
use crate::error::{Error, Result};

/// One entity's change, before it has a seq.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    /// The kind of entity.
    pub(crate) kind: EntityKind,
    /// Its id (for members: the user id).
    pub(crate) entity_id: String,
    /// Its project.
    pub(crate) project_id: String,
    /// What happened to it.
    pub(crate) action: ChangeAction,
    /// The described fields that changed, old and new.
    pub(crate) fields: Vec<v1::FieldChange>,
    /// The entity after the change.
    pub(crate) entity: v1::entity::Kind,
}

impl Change {
    /// A new entity: every non-null field is reported with its new value.
    pub(crate) fn created<R: Entity>(record: &R) -> Self {
        let fields = record
            .fields()
            .into_iter()
            .filter(|(_, value)| value.is_some())
            .map(|(field, value)| v1::FieldChange {
                field: field.to_owned(),
                old_value: None,
                new_value: value,
            })
            .collect();
        Change {
            kind: R::KIND,
            entity_id: record.entity_id().to_owned(),
            project_id: record.project_id().to_owned(),
            action: ChangeAction::Created,
            fields,
            entity: record.clone().into_kind(),
        }
    }

    /// A changed entity: the fields whose value differs, old and new.
    pub(crate) fn changed<R: Entity>(before: &R, after: &R, action: ChangeAction) -> Self {
        let fields = before
            .fields()
            .into_iter()
            .zip(after.fields())
            .filter(|((_, old), (_, new))| old != new)
            .map(|((field, old), (_, new))| v1::FieldChange {
                field: field.to_owned(),
                old_value: old,
                new_value: new,
            })
            .collect();
        Change {
            kind: R::KIND,
            entity_id: after.entity_id().to_owned(),
            project_id: after.project_id().to_owned(),
            action,
            fields,
            entity: after.clone().into_kind(),
        }
    }

    /// The change as the event of change number `seq`, made by `actor_id` at `at` (Unix ms).
    pub(crate) fn into_event(self, seq: u64, at: i64, actor_id: &str) -> v1::Event {
        v1::Event {
            seq,
            at,
            actor_id: actor_id.to_owned(),
            project_id: self.project_id,
            entity_type: v1::EntityType::from(self.kind).into(),
            entity_id: self.entity_id,
            action: v1::ChangeAction::from(self.action).into(),
            changes: self.fields,
            change: Some(self.entity.into()),
        }
    }
}

/// A change with its seq, encoded once as a `pm.v1.Event`.
#[derive(Debug, Clone)]
pub(crate) struct PendingEvent {
    /// Its change number.
    pub(crate) seq: u64,
    /// When, Unix ms; the actor; and the change-log columns that filters use.
    pub(crate) at: i64,
    pub(crate) actor_id: String,
    pub(crate) project_id: String,
    pub(crate) kind: EntityKind,
    pub(crate) entity_id: String,
    pub(crate) action: ChangeAction,
    pub(crate) event: Vec<u8>,
}

impl PendingEvent {
    pub(crate) fn new(seq: u64, at: i64, actor_id: &str, change: Change) -> Self {
        let (project_id, kind, entity_id, action) = (
            change.project_id.clone(),
            change.kind,
            change.entity_id.clone(),
            change.action,
        );
        PendingEvent {
            seq,
            at,
            actor_id: actor_id.to_owned(),
            project_id,
            kind,
            entity_id,
            action,
            event: change.into_event(seq, at, actor_id).encode_to_vec(),
        }
    }
}

/// A committed change, ready to send: `frame` is the encoded `ServerFrame{event}`,
/// built once and shared by every subscriber.
#[derive(Debug, Clone)]
pub struct CommittedEvent {
    /// Its change number.
    pub seq: u64,
    /// The project it belongs to (subscriber filters and permissions).
    pub project_id: String,
    /// The kind of entity it changed.
    pub kind: EntityKind,
    /// The entity's id (for members: the user id).
    pub entity_id: String,
    /// What the change did.
    pub action: ChangeAction,
    /// The encoded `ServerFrame{event}`.
    pub frame: Bytes,
}

impl From<&PendingEvent> for CommittedEvent {
    fn from(pending: &PendingEvent) -> Self {
        CommittedEvent {
            seq: pending.seq,
            project_id: pending.project_id.clone(),
            kind: pending.kind,
            entity_id: pending.entity_id.clone(),
            action: pending.action,
            frame: frame::server_frame_from_event_bytes(&pending.event),
        }
    }
}

/// How much of the change log is kept. An event is pruned once it is outside any configured
/// limit; with no limit everything is kept. The newest event is always kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many of the newest events (`None`: no count limit).
    pub max_events: Option<u64>,
    /// Keep events younger than this (`None`: no age limit).
    pub max_age: Option<Duration>,
    /// How often each open tenant's writer looks for events to prune.
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_events: None,
            max_age: None,
            interval: Duration::from_secs(60),
        }
    }
}

impl Retention {
    /// Whether nothing is ever pruned.
    pub fn keeps_everything(&self) -> bool {
        self.max_events.is_none() && self.max_age.is_none()
    }
}

/// Which events a reader wants; empty lists mean all.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only these projects.
    pub project_ids: Vec<String>,
    /// Only these kinds of entity.
    pub kinds: Vec<EntityKind>,
}

/// A stored event, as read back for replay.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its change number.
    pub seq: u64,
    /// The project it belongs to.
    pub project_id: String,
    /// The kind of entity it changed.
    pub kind: EntityKind,
    /// The encoded `pm.v1.Event`.
    pub event: Bytes,
}

impl StoredEvent {
    /// The encoded `ServerFrame{event}` for this event.
    pub fn frame(&self) -> Bytes {
        frame::server_frame_from_event_bytes(&self.event)
    }

    /// The decoded event.
    pub fn decode(&self) -> Result<v1::Event> {
        v1::Event::decode(self.event.clone()).map_err(|e| Error::Corrupt(e.to_string()))
    }

    /// The same event as the writer publishes it.
    pub fn to_committed(&self) -> Result<CommittedEvent> {
        let event = self.decode()?;
        let action = pm_proto::convert::change_action("action", event.action)
            .ok()
            .flatten()
            .ok_or_else(|| Error::Corrupt(format!("change {} has no action", self.seq)))?;
        Ok(CommittedEvent {
            seq: self.seq,
            project_id: self.project_id.clone(),
            kind: self.kind,
            entity_id: event.entity_id,
            action,
            frame: self.frame(),
        })
    }
}
