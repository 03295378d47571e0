//! Work items' and comments' text reaches the full-text indexes (`work_item_fts`,
//! `comment_fts`) in batches.
//!
//! Indexing every commit's new or edited rows by trigger made each such commit write a new
//! FTS5 segment: about 4.4 of the 16 WAL pages of a one-command commit. Instead, the writer
//! indexes what waits in one go ([`INDEX_TEXT`]): every work item past `work_item_fts_upto`
//! and every comment past `comment_fts_upto` (the highest rowids the indexes hold; the rows'
//! rowids only grow, as neither is ever deleted but by an import), and every row noted in
//! `work_item_fts_pending` and `comment_fts_pending`. It does so once a commit crosses a
//! multiple of [`TEXT_BATCH`] seqs (see `batches` for when exactly), before it answers a query
//! that reads the indexes, and as it closes, so that a tenant opened again (often only to be
//! read) answers searches from its read pool. Triggers note only an edit of an item or a
//! comment the index already holds, with the text it holds; a new row needs no note, which
//! saves a page and a trigger program per create.
//!
//! A search never misses a committed change: a read whose snapshot holds text the indexes do
//! not ([`behind`]) is handed to the writer ([`index_and_run`]), which indexes it and runs the
//! query in the same transaction, so its `as_of_seq` is exact. The first search after a quiet
//! spell of writes pays for the batch; the searches after it read from the pool again. Sprints
//! and LLM context, written far less often, are still indexed by every commit.

use pm_core::UserId;
use pm_proto::v1;
use sqlx::{SqliteConnection, SqliteExecutor};

use super::group::exec;
use super::queries;
use crate::error::Result;

/// Seqs per batch of indexed text.
pub(crate) const TEXT_BATCH: u64 = 64;

/// Indexes what waits: for each noted item, removes the text the index holds (the note kept
/// it) and adds its current text; adds every item past `work_item_fts_upto` and moves the
/// bound to the last; does the same for comments; forgets the notes. In the writer's
/// transaction.
pub(crate) const INDEX_TEXT: &str = r#"
INSERT INTO work_item_fts (work_item_fts, rowid, title, description)
SELECT 'delete', item_rowid, title, description FROM work_item_fts_pending WHERE indexed = 1;
INSERT INTO work_item_fts (rowid, title, description)
SELECT w.rowid, w.title, w.description
FROM work_item_fts_pending AS p JOIN work_items AS w ON w.rowid = p.item_rowid;
DELETE FROM work_item_fts_pending;
INSERT INTO work_item_fts (rowid, title, description)
SELECT rowid, title, description FROM work_items
WHERE rowid > (SELECT item_rowid FROM work_item_fts_upto WHERE id = 1);
UPDATE work_item_fts_upto
SET item_rowid = MAX(item_rowid, (SELECT COALESCE(MAX(rowid), 0) FROM work_items))
WHERE id = 1;
INSERT INTO comment_fts (comment_fts, rowid, content)
SELECT 'delete', comment_rowid, content FROM comment_fts_pending WHERE indexed = 1;
INSERT INTO comment_fts (rowid, content)
SELECT c.rowid, c.content
FROM comment_fts_pending AS p JOIN comments AS c ON c.rowid = p.comment_rowid;
DELETE FROM comment_fts_pending;
INSERT INTO comment_fts (rowid, content)
SELECT rowid, content FROM comments
WHERE rowid > (SELECT comment_rowid FROM comment_fts_upto WHERE id = 1);
UPDATE comment_fts_upto
SET comment_rowid = MAX(comment_rowid, (SELECT COALESCE(MAX(rowid), 0) FROM comments))
WHERE id = 1"#;

/// Forgets every noted row and starts the items' and comments' bounds over, for an import that
/// empties the indexes and the tables.
pub(crate) const FORGET_NOTED: &str = "DELETE FROM work_item_fts_pending; \
     DELETE FROM comment_fts_pending; \
     UPDATE work_item_fts_upto SET item_rowid = 0 WHERE id = 1; \
     UPDATE comment_fts_upto SET comment_rowid = 0 WHERE id = 1";

/// Whether `query` reads the full-text indexes: a search, or a work-item list narrowed by text
/// (which matches comments too).
pub(crate) fn reads_text(query: &v1::Query) -> bool {
    use v1::query::Kind as Q;
    match &query.kind {
        Some(Q::Search(_)) => true,
        Some(Q::ListWorkItems(q)) => !q.text.trim().is_empty(),
        _ => false,
    }
}

/// Whether the snapshot read through `executor` holds text the indexes do not have yet.
pub(crate) async fn behind<'c>(executor: impl SqliteExecutor<'c>) -> Result<bool> {
    let behind: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM work_item_fts_pending) \
         OR EXISTS (SELECT 1 FROM comment_fts_pending) \
         OR (SELECT COALESCE(MAX(rowid), 0) FROM work_items) \
            > (SELECT item_rowid FROM work_item_fts_upto WHERE id = 1) \
         OR (SELECT COALESCE(MAX(rowid), 0) FROM comments) \
            > (SELECT comment_rowid FROM comment_fts_upto WHERE id = 1)",
    )
    .fetch_one(executor)
    .await?;
    Ok(behind)
}

/// Runs `query` on the writer's connection once the indexes hold everything that waited, in
/// one transaction: nothing can commit between the indexing and the read.
pub(crate) async fn index_and_run(
    conn: &mut SqliteConnection,
    actor: &UserId,
    query: v1::Query,
) -> Result<v1::QueryResult> {
    let answer = async {
        exec(conn, &format!("BEGIN IMMEDIATE;\n{INDEX_TEXT}")).await?;
        let answer = queries::run(conn, actor, query).await?;
        exec(conn, "COMMIT").await?;
        Ok(answer)
    }
    .await;
    if answer.is_err() {
        roll_back(conn).await;
    }
    answer
}

/// Ends whatever a failure left of the transaction: the writer's next group begins its own.
/// Fails harmlessly if the failure already ended it, or came before it began.
pub(super) async fn roll_back(conn: &mut SqliteConnection) {
    if let Err(error) = exec(conn, "ROLLBACK").await {
        tracing::debug!(%error, "rollback after failed indexing failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_searches_and_text_filtered_lists_read_the_index() {
        use v1::query::Kind as Q;
        let query = |kind| v1::Query { kind: Some(kind) };
        assert!(reads_text(&query(Q::Search(v1::Search::default()))));
        let list = |text: &str| {
            query(Q::ListWorkItems(v1::ListWorkItems {
                text: text.into(),
                ..Default::default()
            }))
        };
        assert!(reads_text(&list("login")));
        assert!(!reads_text(&list("  ")));
        assert!(!reads_text(&query(Q::ListProjects(Default::default()))));
        assert!(!reads_text(&v1::Query { kind: None }));
    }
}
