//! The change log's SQL: appending a group's events, the head and oldest seq, range reads for
//! replay, and retention.
//!
//! Retention: by default the log keeps everything. With a [`Retention`] limit, the oldest
//! events are deleted by [`prune`], always a prefix of the log (so what remains is still
//! gapless from `MIN(seq)` to the head) and never the newest event (the head is `MAX(seq)`).
//! A resume position older than the oldest retained event is `RESYNC_REQUIRED`.

use sqlx::SqliteExecutor;

use super::records::Q;
use crate::error::Result;
use crate::events::PendingEvent;

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

/// The oldest retained seq, or `None` for an empty log.
pub(crate) async fn oldest_seq<'c>(executor: impl SqliteExecutor<'c>) -> Result<Option<u64>> {
    let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM change_log")
        .fetch_one(executor)
        .await?;
    Ok(oldest.map(|s| s as u64))
}
