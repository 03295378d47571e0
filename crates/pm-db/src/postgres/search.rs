//! Tenant-wide search (`Search`) on PostgreSQL: the generated `search` tsvector column of each
//! searchable table, hits of all kinds ranked together by `ts_rank` (title weight A, body
//! weight B, as FTS5's 4:1 bm25 weights on SQLite), snippets from `ts_headline` for the page's
//! hits only, keyset pages on (rank, kind, id).

use pm_core::kinds::EntityKind;
use pm_proto::v1;
use sqlx::{Postgres, QueryBuilder, Row};

use super::sql::hits::hit;
use super::sql::queries::Reader;
use crate::error::Result;
use crate::search_text::{search_terms, MATCH_END, MATCH_START};

use v1::query_result::Result as R;

/// `ts_rank` weights for {D, C, B, A}: a title (A) weighs four times a body (B).
const WEIGHTS: &str = "'{0, 0, 0.25, 1}'::real[]";

/// One searchable kind: its table, alias, and the text its snippet is taken from.
struct Searched {
    kind: EntityKind,
    select: &'static str,
}

const SEARCHED: [Searched; 4] = [
    Searched {
        kind: EntityKind::WorkItem,
        select: "SELECT 'work_item' AS kind, w.id, w.project_id, w.id AS item_id, w.number, \
                 w.title, w.search, w.title || E'\\n' || w.description AS doc \
                 FROM work_items AS w \
                 WHERE w.deleted_at IS NULL AND w.project_id IN (SELECT project_id FROM mine)",
    },
    Searched {
        kind: EntityKind::Comment,
        select: "SELECT 'comment' AS kind, c.id, c.project_id, w.id AS item_id, w.number, \
                 w.title, c.search, c.content AS doc \
                 FROM comments AS c JOIN work_items AS w ON w.id = c.work_item_id \
                 WHERE c.deleted_at IS NULL AND w.deleted_at IS NULL \
                 AND c.project_id IN (SELECT project_id FROM mine)",
    },
    Searched {
        kind: EntityKind::Sprint,
        select: "SELECT 'sprint' AS kind, s.id, s.project_id, NULL AS item_id, \
                 NULL::bigint AS number, s.name AS title, s.search, \
                 s.name || E'\\n' || s.goal AS doc \
                 FROM sprints AS s \
                 WHERE s.deleted_at IS NULL AND s.project_id IN (SELECT project_id FROM mine)",
    },
    Searched {
        kind: EntityKind::LlmContext,
        select: "SELECT 'llm_context' AS kind, x.id, x.project_id, NULL AS item_id, \
                 NULL::bigint AS number, x.title, x.search, \
                 x.title || E'\\n' || x.content AS doc \
                 FROM llm_context AS x \
                 WHERE x.deleted_at IS NULL AND x.project_id IN (SELECT project_id FROM mine)",
    },
];

fn searchable(kind: EntityKind) -> bool {
    SEARCHED.iter().any(|s| s.kind == kind)
}

impl Reader<'_> {
    /// Tenant-wide search, ranked by `ts_rank` (best first), keyset-paged on (rank, kind, id).
    pub(crate) async fn search(&mut self, q: v1::Search) -> Result<R> {
        let text = text_query(&q.text)?;
        let request = self.search_request(&q, searchable).await?;

        let mut b = QueryBuilder::<Postgres>::new("WITH q AS (SELECT ");
        b.push_bind(text).push("::tsquery AS query),");
        request.push_mine(&mut b, self.actor.as_str());
        b.push(", hits AS (");
        let mut first = true;
        for searched in SEARCHED.iter().filter(|s| request.wants(s.kind)) {
            if !std::mem::take(&mut first) {
                b.push(" UNION ALL ");
            }
            b.push("SELECT h.kind, h.id, h.project_id, h.item_id, h.number, h.title, h.doc, ")
                .push(format_args!(
                    "-ts_rank({WEIGHTS}, h.search, q.query)::float8 AS rank "
                ))
                .push(format_args!("FROM ({}) AS h, q ", searched.select))
                .push("WHERE h.search @@ q.query");
        }
        b.push(
            "), page AS (SELECT h.kind, h.id, h.project_id, h.item_id, h.number, h.title, \
             h.doc, h.rank FROM hits AS h",
        );
        request.push_page(&mut b);
        // Snippets for the page's rows only, after the cut: a text of up to 16 words whole,
        // as FTS5's 16-token snippets show it, else the 16 words around the best match.
        b.push(format_args!(
            ") SELECT page.kind, page.id, page.project_id, page.item_id, page.number, \
             page.title, page.rank, p.key, \
             CASE WHEN cardinality(regexp_split_to_array(btrim(page.doc), '\\s+')) <= 16 \
             THEN ts_headline('simple', page.doc, q.query, \
                  'HighlightAll=true, StartSel={MATCH_START}, StopSel={MATCH_END}') \
             ELSE ts_headline('simple', page.doc, q.query, \
                  'StartSel={MATCH_START}, StopSel={MATCH_END}, MaxWords=16, MinWords=6') \
             END AS snippet \
             FROM page JOIN projects AS p ON p.id = page.project_id, q \
             ORDER BY page.rank, page.kind, page.id"
        ));
        let mut rows = b.build().fetch_all(&mut *self.conn).await?;
        let next_page_token = request.cut(&mut rows)?;
        let items = rows
            .iter()
            .map(|row| hit(row, &row.try_get::<String, _>("snippet")?))
            .collect::<Result<Vec<_>>>()?;
        Ok(R::SearchResult(v1::SearchResult {
            items,
            next_page_token,
            as_of_seq: self.as_of_seq,
        }))
    }
}

/// Narrows a `ListWorkItems` page to items whose title or description, or a live comment's
/// content, matches `query` (from [`text_query`]).
pub(crate) fn push_item_filter(b: &mut QueryBuilder<'_, Postgres>, query: String) {
    b.push(" AND (t.search @@ ")
        .push_bind(query.clone())
        .push(
            "::tsquery OR t.id IN (SELECT c.work_item_id FROM comments AS c \
             WHERE c.search @@ ",
        )
        .push_bind(query)
        .push("::tsquery AND c.deleted_at IS NULL))");
}

/// Turns user text into a safe `tsquery`, written out rather than parsed by `to_tsquery` so
/// that nothing of the user's is an operator: each word's letters and digits, lower-cased as
/// the 'simple' configuration indexes them, its parts a phrase (`<->`, as FTS5 reads a quoted
/// word with punctuation inside), words joined with AND; a trailing `*` keeps its prefix
/// meaning (`:*`). A word without letters or digits becomes a lexeme no text is indexed
/// under, so it matches nothing, as on SQLite.
pub(crate) fn text_query(input: &str) -> Result<String> {
    /// Indexed lexemes are letters and digits only.
    const NOTHING: &str = "'-'";
    let terms = search_terms(input, |word| {
        let parts: Vec<String> = word
            .text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|part| !part.is_empty())
            .map(|part| format!("'{}'", part.to_lowercase()))
            .collect();
        if parts.is_empty() {
            return NOTHING.to_owned();
        }
        let phrase = parts.join(" <-> ");
        if word.prefix {
            format!("{phrase}:*")
        } else {
            phrase
        }
    })?;
    Ok(terms.join(" & "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_keeps_only_letters_and_digits() {
        assert_eq!(text_query("Login bug").unwrap(), "'login' & 'bug'");
        assert_eq!(text_query("log*").unwrap(), "'log':*");
        assert_eq!(text_query("e-mail").unwrap(), "'e' <-> 'mail'");
        assert_eq!(
            text_query("a' | !b & c:* (d)").unwrap(),
            "'a' & '-' & 'b' & '-' & 'c':* & 'd'"
        );
        assert!(text_query(" \" * ").is_err());
        assert_eq!(text_query("\0pay\u{7}ment").unwrap(), "'payment'");
    }
}
