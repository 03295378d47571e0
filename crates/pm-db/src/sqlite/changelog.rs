//! The change log's SQL: appending a group's events, the head and oldest seq, range reads for
//! replay, and retention.
//!
//! Retention: by default the log keeps everything. With a [`Retention`] limit, the oldest
//! events are deleted by [`prune`], always a prefix of the log (so what remains is still
//! gapless from `MIN(seq)` to the head) and never the newest event (the head is `MAX(seq)`).
//! A resume position older than the oldest retained event is `RESYNC_REQUIRED`.

use sqlx::{SqliteConnection, SqliteExecutor};

use super::records::Q;
use crate::error::Result;
use crate::events::{PendingEvent, Retention};

/// Rows per multi-row insert: 8 columns each, within SQLite's 32,766 bound parameters.
pub(crate) const ROWS_PER_INSERT: usize = 2_000;

/// `INSERT INTO change_log ... VALUES (...), ...` for `rows` rows; bind with [`bind`].
pub(crate) fn append_sql(rows: usize) -> String {
    format!(
        "INSERT INTO change_log (seq, at, actor_id, project_id, entity_type, entity_id, action, event) VALUES {}",
        vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; rows].join(", ")
    )
}

/// Binds one row of [`append_sql`].
pub(crate) fn bind<'q>(query: Q<'q>, e: &'q PendingEvent) -> Q<'q> {
    query
        .bind(e.seq as i64)
        .bind(e.at)
        .bind(&e.actor_id)
        .bind(&e.project_id)
        .bind(e.kind.as_str())
        .bind(&e.entity_id)
        .bind(e.action.as_str())
        .bind(&e.event)
}

/// The latest seq (0 for an empty log).
pub(crate) async fn head_seq<'c>(executor: impl SqliteExecutor<'c>) -> Result<u64> {
    let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM change_log")
        .fetch_one(executor)
        .await?;
    Ok(head as u64)
}

/// Most events deleted by one [`prune`] call: the writer runs it between groups, so one call
/// must stay short.
pub(crate) const PRUNE_CHUNK: u64 = 1_000;

/// Deletes up to `limit` of the oldest events that `retention` no longer covers, as of `now`
/// (Unix ms) with the log ending at `head`; returns how many were deleted.
///
/// Only a prefix of the log is ever deleted, and never the newest event: the head stays
/// `MAX(seq)` and the rest stays gapless. An event is kept while it is among the newest
/// `max_events` and younger than `max_age` (each only if set); the age scan stops at the first
/// young event, so a clock that went backwards never gets a younger event deleted behind an
/// older one.
pub(crate) async fn prune(
    conn: &mut SqliteConnection,
    retention: &Retention,
    head: u64,
    now: i64,
    limit: u64,
) -> Result<u64> {
    if retention.keeps_everything() || head <= 1 || limit == 0 {
        return Ok(0);
    }
    let Some(oldest) = oldest_seq(&mut *conn).await? else {
        return Ok(0);
    };
    // This call looks at most at `limit` events, and never at the newest one.
    let window_end = (head - 1).min(oldest.saturating_add(limit - 1));
    if window_end < oldest {
        return Ok(0);
    }
    // Everything up to `upper` is outside some limit.
    let mut upper = 0;
    if let Some(keep) = retention.max_events {
        upper = upper.max(head.saturating_sub(keep.max(1)));
    }
    if let Some(age) = retention.max_age {
        let cutoff = now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
        let first_young: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(seq) FROM change_log WHERE seq BETWEEN ? AND ? AND at >= ?",
        )
        .bind(oldest as i64)
        .bind(window_end as i64)
        .bind(cutoff)
        .fetch_one(&mut *conn)
        .await?;
        let old_until = first_young.map_or(window_end, |young| (young as u64).saturating_sub(1));
        upper = upper.max(old_until);
    }
    let upper = upper.min(window_end);
    if upper < oldest {
        return Ok(0);
    }
    let deleted = sqlx::query("DELETE FROM change_log WHERE seq <= ?")
        .bind(upper as i64)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(deleted)
}

/// The oldest retained seq, or `None` for an empty log.
pub(crate) async fn oldest_seq<'c>(executor: impl SqliteExecutor<'c>) -> Result<Option<u64>> {
    let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM change_log")
        .fetch_one(executor)
        .await?;
    Ok(oldest.map(|s| s as u64))
}
