//! The change log on PostgreSQL: the gapless append and the reads.
//!
//! Every node of a cluster writes the same tenant's log. A writing transaction takes its seqs
//! by bumping `tenant_head` (`UPDATE ... RETURNING`) and inserts its rows in the same
//! statement. The bump locks the row until the transaction ends, so the writers of a tenant
//! take turns from there to their COMMIT across all nodes: seq order is commit order, and a
//! transaction that rolls back takes its seqs back with it. Append as late in a transaction as
//! possible; everything after the append holds up the tenant's other writers.
//!
//! The functions take a connection whose transaction is scoped to the tenant
//! ([`begin_tenant`](super::begin_tenant)).

use bytes::Bytes;
use pm_core::kinds::{ChangeAction, EntityKind};
use sqlx::{PgConnection, Row};

use super::PgResultExt;
use crate::error::{Error, Result};
use crate::events::{PendingEvent, StoredEvent};

/// A change-log row before it has a seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// When, Unix ms.
    pub at: i64,
    /// Who made the change.
    pub actor_id: String,
    /// The project the change belongs to.
    pub project_id: String,
    /// The kind of entity changed.
    pub kind: EntityKind,
    /// The entity changed.
    pub entity_id: String,
    /// What the change did.
    pub action: ChangeAction,
    /// The encoded `pm.v1.Event`.
    pub event: Vec<u8>,
}

/// The columns of a change-log row before it has a seq: a [`NewEvent`], or a write group's
/// own events, appended without copying them into `NewEvent`s.
pub trait EventRow {
    /// When, Unix ms.
    fn at(&self) -> i64;
    /// Who made the change.
    fn actor_id(&self) -> &str;
    /// The project the change belongs to.
    fn project_id(&self) -> &str;
    /// The kind of entity changed.
    fn kind(&self) -> EntityKind;
    /// The entity changed.
    fn entity_id(&self) -> &str;
    /// What the change did.
    fn action(&self) -> ChangeAction;
    /// The encoded `pm.v1.Event`.
    fn event(&self) -> &[u8];
}

/// The accessors of [`EventRow`] for a type with those fields.
macro_rules! event_row {
    ($type:ty) => {
        impl EventRow for $type {
            fn at(&self) -> i64 {
                self.at
            }
            fn actor_id(&self) -> &str {
                &self.actor_id
            }
            fn project_id(&self) -> &str {
                &self.project_id
            }
            fn kind(&self) -> EntityKind {
                self.kind
            }
            fn entity_id(&self) -> &str {
                &self.entity_id
            }
            fn action(&self) -> ChangeAction {
                self.action
            }
            fn event(&self) -> &[u8] {
                &self.event
            }
        }
    };
}

event_row!(NewEvent);
event_row!(PendingEvent);

/// Takes the next `events.len()` seqs of the tenant and appends `events` with them, in order,
/// inside the caller's transaction; returns the first seq.
///
/// One statement, one round trip: the counter bump, then all rows from arrays (`UNNEST`), so
/// the SQL text is the same for any number of events and stays a cached prepared statement.
pub async fn append_events<E: EventRow>(conn: &mut PgConnection, events: &[E]) -> Result<u64> {
    if events.is_empty() {
        return Err(Error::invalid("events", "at least one event is required"));
    }
    let count = i64::try_from(events.len()).expect("a slice's length fits in i64");
    let at: Vec<i64> = events.iter().map(E::at).collect();
    let actor_id: Vec<&str> = events.iter().map(E::actor_id).collect();
    let project_id: Vec<&str> = events.iter().map(E::project_id).collect();
    let entity_type: Vec<&str> = events.iter().map(|e| e.kind().as_str()).collect();
    let entity_id: Vec<&str> = events.iter().map(E::entity_id).collect();
    let action: Vec<&str> = events.iter().map(|e| e.action().as_str()).collect();
    let event: Vec<&[u8]> = events.iter().map(E::event).collect();

    let row = sqlx::query(
        r#"
        WITH head AS (
            UPDATE tenant_head
            SET last_seq = last_seq + $1
            WHERE id = 1
            RETURNING last_seq
        ),
        appended AS (
            INSERT INTO change_log
                (seq, at, actor_id, project_id, entity_type, entity_id, action, event)
            SELECT head.last_seq - $1 + e.ord,
                   e.at, e.actor_id, e.project_id, e.entity_type, e.entity_id, e.action, e.event
            FROM head,
                 UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                        $7::text[], $8::bytea[])
                     WITH ORDINALITY
                     AS e (at, actor_id, project_id, entity_type, entity_id, action, event, ord)
            RETURNING seq
        )
        SELECT head.last_seq - $1 + 1 AS first_seq,
               (SELECT count(*) FROM appended) AS appended
        FROM head
        "#,
    )
    .bind(count)
    .bind(&at)
    .bind(&actor_id)
    .bind(&project_id)
    .bind(&entity_type)
    .bind(&entity_id)
    .bind(&action)
    .bind(&event)
    .fetch_optional(conn)
    .await
    .pg()?;

    let row =
        row.ok_or_else(|| Error::Corrupt("the tenant's seq counter row is missing".into()))?;
    let first: i64 = row.try_get("first_seq").pg()?;
    let appended: i64 = row.try_get("appended").pg()?;
    if appended != count {
        return Err(Error::Corrupt(format!(
            "{appended} of {count} change-log rows were appended"
        )));
    }
    Ok(first as u64)
}

/// The tenant's latest seq (0 before its first change).
///
/// Read from the counter, not `MAX(seq)`: the counter stays the head when retention prunes
/// the log.
pub async fn head_seq(conn: &mut PgConnection) -> Result<u64> {
    let head: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM tenant_head WHERE id = 1")
        .fetch_optional(conn)
        .await
        .pg()?;
    head.map(|seq| seq as u64)
        .ok_or_else(|| Error::Corrupt("the tenant's seq counter row is missing".into()))
}

/// Up to which seq the events by actor, project and entity are in separate indexes: never
/// here, where the indexes `change_log_by_actor`, `_by_project` and `_by_entity` cover every
/// event as it is written (see `sqlite/changelog.rs` for the engine that batches them).
pub(crate) async fn batched_upto(_conn: &mut PgConnection) -> Result<Option<u64>> {
    Ok(None)
}

/// The oldest retained seq, or `None` for an empty log.
pub async fn oldest_seq(conn: &mut PgConnection) -> Result<Option<u64>> {
    let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM change_log")
        .fetch_one(conn)
        .await
        .pg()?;
    Ok(oldest.map(|seq| seq as u64))
}

/// Up to `limit` events with `seq > after`, in seq order.
///
/// Fails with `INVALID_ARGUMENT` if `after` is beyond the head, and with `ResyncRequired` if
/// events right after `after` were pruned. The head is read first: a change committed
/// between the two reads only adds rows at the end.
pub async fn read_events(
    conn: &mut PgConnection,
    after: u64,
    limit: u32,
) -> Result<Vec<StoredEvent>> {
    let head = head_seq(&mut *conn).await?;
    if after > head {
        return Err(Error::invalid("from_seq", "is after the latest change"));
    }
    if after == head || limit == 0 {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        r#"
        SELECT seq, project_id, entity_type, event
        FROM change_log
        WHERE seq > $1
        ORDER BY seq
        LIMIT $2
        "#,
    )
    // `after < head`, and the head is an i64.
    .bind(after as i64)
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await
    .pg()?;

    let events = rows
        .iter()
        .map(|row| {
            let kind: String = row.try_get("entity_type").pg()?;
            Ok(StoredEvent {
                seq: row.try_get::<i64, _>("seq").pg()? as u64,
                project_id: row.try_get("project_id").pg()?,
                kind: EntityKind::parse("entity_type", &kind)
                    .map_err(|_| Error::Corrupt(format!("unknown entity type {kind:?}")))?,
                event: Bytes::from(row.try_get::<Vec<u8>, _>("event").pg()?),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // The log is gapless from its oldest retained seq: anything but `after + 1` first means
    // the events right after `after` are gone.
    if events.first().map(|e| e.seq) != Some(after + 1) {
        return Err(Error::ResyncRequired(after));
    }
    Ok(events)
}
