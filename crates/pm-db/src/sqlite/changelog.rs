//! The change log's SQL: appending a group's events, the head and oldest seq, range reads for
//! replay, and retention.
//!
//! Retention: by default the log keeps everything. With a [`Retention`] limit, the oldest
//! events are deleted by [`prune`], always a prefix of the log (so what remains is still
//! gapless from `MIN(seq)` to the head) and never the newest event (the head is `MAX(seq)`).
//! A resume position older than the oldest retained event is `RESYNC_REQUIRED`.
//!
//! Reads by actor, entity and project: an index on `(actor_id, seq)` takes each event at the
//! end of its actor's range, so a group of commands by 30 people wrote 30 index pages (44 % of
//! a busy tenant's commit), and the indexes by project and by entity took 2.4 of the 12.7
//! pages of a one-command commit. The pairs go instead into `change_log_actors`,
//! `change_log_projects` and `change_log_entities`, appended by the writer in a batch once a
//! commit crosses a multiple of [`LOG_BATCH`] seqs ([`INDEX_BATCH`]; `batches` says when): one
//! page per actor, project or run of entities per batch. `change_log_batched_upto` says up to
//! where the pairs are complete ([`batched_upto`]); `ListActivity` and replay read the newer
//! events, two batches and one group at most, from the log itself. A trigger deletes the pairs of
//! deleted events; an import rebuilds them ([`reindex_batched`]).

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

/// Seqs per batch of the pairs by actor, project and entity.
pub(crate) const LOG_BATCH: u64 = 256;

/// Appends the pairs by actor, project and entity of every event since the last batch (see
/// `batches` for when).
pub(crate) const INDEX_BATCH: &str = r#"
INSERT INTO change_log_actors (actor_id, seq)
SELECT actor_id, seq FROM change_log
WHERE seq > (SELECT seq FROM change_log_batched_upto WHERE id = 1);
INSERT INTO change_log_projects (project_id, seq)
SELECT project_id, seq FROM change_log
WHERE seq > (SELECT seq FROM change_log_batched_upto WHERE id = 1);
INSERT INTO change_log_entities (entity_id, seq)
SELECT entity_id, seq FROM change_log
WHERE seq > (SELECT seq FROM change_log_batched_upto WHERE id = 1);
UPDATE change_log_batched_upto SET seq = MAX(seq, (SELECT COALESCE(MAX(seq), 0) FROM change_log))
WHERE id = 1"#;

/// Up to which seq the pairs by actor, project and entity are complete, as of the caller's
/// snapshot.
pub(crate) async fn batched_upto<'c>(executor: impl SqliteExecutor<'c>) -> Result<Option<u64>> {
    let upto: i64 = sqlx::query_scalar("SELECT seq FROM change_log_batched_upto WHERE id = 1")
        .fetch_one(executor)
        .await?;
    Ok(Some(upto as u64))
}

/// Builds the pairs by actor, project and entity again from the whole log (after an import
/// replaced it).
pub(crate) async fn reindex_batched(conn: &mut sqlx::SqliteConnection) -> Result<()> {
    let script = format!(
        "DELETE FROM change_log_actors;\n\
         DELETE FROM change_log_projects;\n\
         DELETE FROM change_log_entities;\n\
         UPDATE change_log_batched_upto SET seq = 0 WHERE id = 1;\n\
         {INDEX_BATCH}"
    );
    sqlx::query(&script).execute(conn).await?;
    Ok(())
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
