//! The change-log read both engines share: the events after a position, for replay.

use bytes::Bytes;
use pm_core::kinds::EntityKind;
use sqlx::{QueryBuilder, Row};

use super::changelog;
use super::dialect::{Conn, Db, DbRow};
use crate::error::{Error, Result};
use crate::events::{EventFilter, StoredEvent};

/// Up to `limit` events with `seq > after` (and `<= until`, if given), in seq order.
///
/// Fails with `ResyncRequired` if events after `after` were pruned from the log, and with
/// `INVALID_ARGUMENT` if `after` is beyond the latest change.
pub(crate) async fn read_after(
    conn: &mut Conn,
    after: u64,
    until: Option<u64>,
    limit: u32,
    filter: &EventFilter,
) -> Result<Vec<StoredEvent>> {
    // Seqs are SQLite integers: anything above i64::MAX is past every change there will be.
    let beyond = || Error::invalid("from_seq", "is after the latest change");
    let after_sql = i64::try_from(after).map_err(|_| beyond())?;
    let until_sql = until.map(|u| i64::try_from(u).unwrap_or(i64::MAX));
    let (oldest, head): (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT MIN(seq), MAX(seq) FROM change_log")
            .fetch_one(&mut *conn)
            .await?;
    if after_sql > head.unwrap_or(0) {
        return Err(beyond());
    }
    if let Some(oldest) = oldest {
        if oldest > after_sql.saturating_add(1) {
            return Err(Error::ResyncRequired(after));
        }
    }
    let bound = until_sql.unwrap_or(i64::MAX);
    // One project, in an engine that indexes the log by project in batches: its events up to
    // the last batch through its pairs, then the newer ones (two batches at most) from the log.
    // Any other filter reads the log in seq order and skips what it does not match.
    let batched = match filter.project_ids.as_slice() {
        [project_id] => changelog::batched_upto(&mut *conn)
            .await?
            .map(|upto| (project_id, i64::try_from(upto).unwrap_or(i64::MAX))),
        _ => None,
    };
    let mut rows = Vec::new();
    let mut after_sql = after_sql;
    if let Some((project_id, upto)) = batched {
        if after_sql < upto {
            let mut query = QueryBuilder::<Db>::new(
                "SELECT c.seq AS seq, c.project_id AS project_id, c.entity_type AS entity_type, \
                 c.event AS event \
                 FROM change_log_projects AS a CROSS JOIN change_log AS c \
                 WHERE c.seq = a.seq AND a.project_id = ",
            );
            query
                .push_bind(project_id)
                .push(" AND a.seq > ")
                .push_bind(after_sql)
                .push(" AND a.seq <= ")
                .push_bind(upto.min(bound));
            push_kinds(&mut query, "c.entity_type", filter);
            query
                .push(" ORDER BY a.seq LIMIT ")
                .push_bind(i64::from(limit));
            rows = query.build().fetch_all(&mut *conn).await?;
            after_sql = upto;
        }
    }
    if after_sql < bound && rows.len() < limit as usize {
        let mut query = QueryBuilder::<Db>::new(
            "SELECT seq, project_id, entity_type, event FROM change_log WHERE seq > ",
        );
        query.push_bind(after_sql);
        if let Some(until) = until_sql {
            query.push(" AND seq <= ").push_bind(until);
        }
        if !filter.project_ids.is_empty() {
            query.push(" AND project_id IN (");
            let mut list = query.separated(", ");
            for id in &filter.project_ids {
                list.push_bind(id);
            }
            query.push(")");
        }
        push_kinds(&mut query, "entity_type", filter);
        let left = limit as usize - rows.len();
        query
            .push(" ORDER BY seq LIMIT ")
            .push_bind(i64::try_from(left).unwrap_or(i64::MAX));
        rows.extend(query.build().fetch_all(&mut *conn).await?);
    }
    rows.iter().map(stored).collect()
}

/// ` AND {column} IN (...)` for the filter's kinds of entity, if it names any.
fn push_kinds(query: &mut QueryBuilder<'_, Db>, column: &str, filter: &EventFilter) {
    if !filter.kinds.is_empty() {
        query.push(format_args!(" AND {column} IN ("));
        let mut list = query.separated(", ");
        for kind in &filter.kinds {
            list.push_bind(kind.as_str());
        }
        query.push(")");
    }
}

/// A row of a replay read as a stored event.
fn stored(row: &DbRow) -> Result<StoredEvent> {
    let kind: String = row.try_get("entity_type")?;
    Ok(StoredEvent {
        seq: row.try_get::<i64, _>("seq")? as u64,
        project_id: row.try_get("project_id")?,
        kind: EntityKind::parse("entity_type", &kind)
            .map_err(|_| Error::Corrupt(format!("unknown entity type {kind:?}")))?,
        event: Bytes::from(row.try_get::<Vec<u8>, _>("event")?),
    })
}
