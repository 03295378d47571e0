//! Tenant-wide search (`Search`): one FTS5 table per searchable kind, their hits ranked
//! together by BM25, snippets split into marked parts, keyset pages on (rank, kind, id).

use pm_core::kinds::EntityKind;
use pm_proto::v1;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::queries::Reader;
use super::sql::hits::{hit, hit_kind};
use crate::error::Result;
use crate::search_text::{search_terms, MATCH_END, MATCH_START};

use v1::query_result::Result as R;

impl Reader<'_> {
    /// Tenant-wide search, ranked by BM25 (best first), keyset-paged on (rank, kind, id).
    pub(crate) async fn search(&mut self, q: v1::Search) -> Result<R> {
        let text = text_query(&q.text)?;
        let request = self
            .search_request(&q, |kind| fts_table(kind).is_some())
            .await?;

        // One SELECT per searchable kind, each with its own FTS table and BM25 (titles weigh
        // more than bodies), restricted to live rows of the caller's live projects.
        let mut b = QueryBuilder::<Sqlite>::new("WITH");
        request.push_mine(&mut b, self.actor.as_str());
        b.push(", hits AS (");
        let mut first = true;
        let mut union = |b: &mut QueryBuilder<'_, Sqlite>, select: &str, kind: EntityKind| {
            let fts = fts_table(kind).expect("only searchable kinds are selected");
            if !std::mem::take(&mut first) {
                b.push(" UNION ALL ");
            }
            b.push(select)
                .push(format_args!(" AND {fts} MATCH "))
                .push_bind(text.clone());
        };
        if request.wants(EntityKind::WorkItem) {
            union(
                &mut b,
                "SELECT 'work_item' AS kind, w.id, w.project_id, w.id AS item_id, w.number, \
                     w.title, bm25(work_item_fts, 4.0, 1.0) AS rank, work_item_fts.rowid AS fts_rowid \
                     FROM work_item_fts JOIN work_items AS w ON w.rowid = work_item_fts.rowid \
                     WHERE w.deleted_at IS NULL AND w.project_id IN mine",
                EntityKind::WorkItem,
            );
        }
        if request.wants(EntityKind::Comment) {
            union(
                &mut b,
                "SELECT 'comment' AS kind, c.id, c.project_id, w.id AS item_id, w.number, \
                     w.title, bm25(comment_fts) AS rank, comment_fts.rowid AS fts_rowid \
                     FROM comment_fts JOIN comments AS c ON c.rowid = comment_fts.rowid \
                     JOIN work_items AS w ON w.id = c.work_item_id \
                     WHERE c.deleted_at IS NULL AND w.deleted_at IS NULL \
                     AND c.project_id IN mine",
                EntityKind::Comment,
            );
        }
        if request.wants(EntityKind::Sprint) {
            union(
                &mut b,
                "SELECT 'sprint' AS kind, s.id, s.project_id, NULL AS item_id, \
                     NULL AS number, s.name AS title, bm25(sprint_fts, 4.0, 1.0) AS rank, \
                     sprint_fts.rowid AS fts_rowid \
                     FROM sprint_fts JOIN sprints AS s ON s.rowid = sprint_fts.rowid \
                     WHERE s.deleted_at IS NULL AND s.project_id IN mine",
                EntityKind::Sprint,
            );
        }
        if request.wants(EntityKind::LlmContext) {
            union(
                &mut b,
                "SELECT 'llm_context' AS kind, x.id, x.project_id, NULL AS item_id, \
                     NULL AS number, x.title, bm25(llm_context_fts, 4.0, 1.0) AS rank, \
                     llm_context_fts.rowid AS fts_rowid \
                     FROM llm_context_fts JOIN llm_context AS x ON x.rowid = llm_context_fts.rowid \
                     WHERE x.deleted_at IS NULL AND x.project_id IN mine",
                EntityKind::LlmContext,
            );
        }
        b.push(
            ") SELECT h.kind, h.id, h.project_id, h.item_id, h.number, h.title, h.rank, \
             h.fts_rowid, p.key FROM hits AS h JOIN projects AS p ON p.id = h.project_id",
        );
        request.push_page(&mut b);
        let mut rows = b.build().fetch_all(&mut *self.conn).await?;
        let next_page_token = request.cut(&mut rows)?;
        let hits = rows
            .iter()
            .map(|row| Ok((hit_kind(row)?, row.try_get::<i64, _>("fts_rowid")?)))
            .collect::<Result<Vec<_>>>()?;
        let snippets = self.snippets(&text, &hits).await?;
        let items = rows
            .iter()
            .zip(&snippets)
            .map(|(row, snippet)| hit(row, snippet))
            .collect::<Result<Vec<_>>>()?;
        Ok(R::SearchResult(v1::SearchResult {
            items,
            next_page_token,
            as_of_seq: self.as_of_seq,
        }))
    }

    /// The snippet of each hit, in order: computed for the page's hits only, once they are
    /// ranked (a snippet re-reads and tokenizes its row, which would cost as much as the
    /// search itself for every match of a common word). One statement; each part finds its
    /// row by rowid within the same MATCH.
    async fn snippets(&mut self, text: &str, hits: &[(EntityKind, i64)]) -> Result<Vec<String>> {
        // SQLite allows at most 500 terms in a compound SELECT; a page may hold 500 hits.
        const PER_STATEMENT: usize = 100;
        let mut snippets = vec![String::new(); hits.len()];
        for (chunk, part) in hits.chunks(PER_STATEMENT).enumerate() {
            let mut b = QueryBuilder::<Sqlite>::new("");
            for (j, (kind, rowid)) in part.iter().enumerate() {
                let i = chunk * PER_STATEMENT + j;
                let fts = fts_table(*kind).expect("hits are of searchable kinds");
                if j > 0 {
                    b.push(" UNION ALL ");
                }
                b.push(format_args!(
                    "SELECT {i} AS i, \
                     snippet({fts}, -1, '{MATCH_START}', '{MATCH_END}', '…', 16) AS snippet \
                     FROM {fts} WHERE {fts} MATCH "
                ))
                .push_bind(text.to_owned())
                .push(format_args!(" AND {fts}.rowid = "))
                .push_bind(*rowid);
            }
            for row in b.build().fetch_all(&mut *self.conn).await? {
                let i: i64 = row.try_get("i")?;
                if let Some(slot) = usize::try_from(i).ok().and_then(|i| snippets.get_mut(i)) {
                    *slot = row.try_get("snippet")?;
                }
            }
        }
        Ok(snippets)
    }
}
/// The FTS5 table of a searchable kind (`None`: the kind is not searchable).
fn fts_table(kind: EntityKind) -> Option<&'static str> {
    match kind {
        EntityKind::WorkItem => Some("work_item_fts"),
        EntityKind::Comment => Some("comment_fts"),
        EntityKind::Sprint => Some("sprint_fts"),
        EntityKind::LlmContext => Some("llm_context_fts"),
        _ => None,
    }
}

/// Narrows a `ListWorkItems` page to items whose title or description, or a live comment's
/// body, matches `query` (from [`text_query`]).
pub(crate) fn push_item_filter(b: &mut QueryBuilder<'_, Sqlite>, query: String) {
    b.push(" AND (t.rowid IN (SELECT rowid FROM work_item_fts WHERE work_item_fts MATCH ")
        .push_bind(query.clone())
        .push(
            ") OR t.id IN (SELECT c.work_item_id FROM comment_fts \
             JOIN comments AS c ON c.rowid = comment_fts.rowid \
             WHERE comment_fts MATCH ",
        )
        .push_bind(query)
        .push(" AND c.deleted_at IS NULL))");
}

/// Turns user text into a safe FTS5 query: each word quoted (so operators and punctuation
/// are literal), words joined with AND; a trailing `*` keeps its prefix meaning.
pub(crate) fn text_query(input: &str) -> Result<String> {
    let terms = search_terms(input, |word| {
        format!("\"{}\"{}", word.text, if word.prefix { "*" } else { "" })
    })?;
    Ok(terms.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_is_quoted() {
        assert_eq!(text_query("login bug").unwrap(), r#""login" "bug""#);
        assert_eq!(text_query("log*").unwrap(), r#""log"*"#);
        assert_eq!(
            text_query(r#"a" OR "b NEAR("#).unwrap(),
            r#""a" "OR" "b" "NEAR(""#
        );
        assert!(text_query(" \" * ").is_err());
        assert_eq!(text_query("\0pay\u{7}ment").unwrap(), r#""payment""#);
    }
}
