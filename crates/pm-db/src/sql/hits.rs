//! What tenant-wide search (`Search`) is the same on both engines: the checked request, the
//! caller's projects it may look in, the keyset page on (rank, kind, id), and the hits read
//! back. Each engine's `search` finds and ranks the matches (lower rank is better on both).

use pm_core::kinds::EntityKind;
use pm_core::rules::page;
use pm_proto::{convert, v1};
use sqlx::{QueryBuilder, Row};

use super::dialect::{Db, DbRow};
use super::pages::{bad_token, decode_token, encode_token, Key};
use super::queries::{my_projects, Reader};
use crate::error::{Error, Result};
use crate::search_text::snippet_parts;

/// A `Search`, checked.
pub(crate) struct SearchRequest {
    /// Hits per page.
    pub(crate) size: u32,
    /// The kinds asked for; empty: every searchable kind.
    kinds: Vec<EntityKind>,
    /// The one project to look in, if the caller named one.
    project: Option<String>,
    /// Where the previous page ended: (rank, kind, id).
    cursor: Option<(f64, String, String)>,
}

impl SearchRequest {
    /// Whether hits of `kind` are asked for.
    pub(crate) fn wants(&self, kind: EntityKind) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&kind)
    }

    /// ` mine AS (...)`: the caller's live projects (or the one asked for) as a CTE; the
    /// searches select `project_id IN (SELECT project_id FROM mine)`.
    pub(crate) fn push_mine(&self, b: &mut QueryBuilder<'_, Db>, actor: &str) {
        b.push(" mine AS (");
        my_projects(b, actor);
        if let Some(project) = &self.project {
            b.push(" AND m.project_id = ").push_bind(project.clone());
        }
        b.push(")");
    }

    /// The page of `h` (the ranked hits): after the cursor, in (rank, kind, id) order, one
    /// more row than the page holds, to know whether another page follows.
    pub(crate) fn push_page(&self, b: &mut QueryBuilder<'_, Db>) {
        if let Some((rank, kind, id)) = &self.cursor {
            b.push(" WHERE h.rank > ")
                .push_bind(*rank)
                .push(" OR (h.rank = ")
                .push_bind(*rank)
                .push(" AND (h.kind, h.id) > (")
                .push_bind(kind.clone())
                .push(", ")
                .push_bind(id.clone())
                .push("))");
        }
        b.push(" ORDER BY h.rank, h.kind, h.id LIMIT ")
            .push_bind(i64::from(self.size) + 1);
    }

    /// Cuts `rows` (from [`SearchRequest::push_page`]) to the page; the token of the next
    /// page, or empty.
    pub(crate) fn cut(&self, rows: &mut Vec<DbRow>) -> Result<String> {
        if rows.len() <= self.size as usize {
            return Ok(String::new());
        }
        rows.truncate(self.size as usize);
        let last = rows.last().expect("a full page has a last row");
        let rank: f64 = last.try_get("rank")?;
        Ok(encode_token(&[
            Key::Int(rank.to_bits() as i64),
            Key::Text(last.try_get("kind")?),
            Key::Text(last.try_get("id")?),
        ]))
    }
}

impl Reader<'_> {
    /// Checks `q`: page size, kinds (each one `searchable`), the project (the caller must see
    /// it) and the page token.
    pub(crate) async fn search_request(
        &mut self,
        q: &v1::Search,
        searchable: impl Fn(EntityKind) -> bool,
    ) -> Result<SearchRequest> {
        let size = page::size(q.page.as_ref().map_or(0, |p| p.page_size))?;
        let mut kinds = Vec::new();
        for raw in &q.entity_types {
            let kind =
                convert::required("entity_types", convert::entity_type("entity_types", *raw))?;
            if !searchable(kind) {
                return Err(Error::invalid(
                    "entity_types",
                    format!(
                        "{} is not searchable (work_item, comment, sprint, llm_context are)",
                        kind.as_str()
                    ),
                ));
            }
            kinds.push(kind);
        }
        let project = if q.project_id.is_empty() {
            None
        } else {
            Some(self.project("project_id", &q.project_id).await?.0)
        };
        let cursor = match decode_token(q.page.as_ref().map_or("", |p| p.page_token.as_str()), 3)?
            .as_deref()
        {
            None => None,
            Some([Key::Int(bits), Key::Text(kind), Key::Text(id)]) => {
                Some((f64::from_bits(*bits as u64), kind.clone(), id.clone()))
            }
            Some(_) => return Err(bad_token()),
        };
        Ok(SearchRequest {
            size,
            kinds,
            project,
            cursor,
        })
    }
}

/// The kind of a hit row.
pub(crate) fn hit_kind(row: &DbRow) -> Result<EntityKind> {
    let kind: String = row.try_get("kind")?;
    EntityKind::parse("kind", &kind).map_err(|_| Error::Corrupt("unknown search hit kind".into()))
}

/// A hit from its row (`kind, id, project_id, item_id, number, title, rank, key`) and its
/// snippet as the engine marked it.
pub(crate) fn hit(row: &DbRow, snippet: &str) -> Result<v1::SearchHit> {
    let number: Option<i64> = row.try_get("number")?;
    let key: String = row.try_get("key")?;
    let rank: f64 = row.try_get("rank")?;
    Ok(v1::SearchHit {
        entity_type: convert::wire::<_, v1::EntityType>(hit_kind(row)?),
        entity_id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        work_item_id: row
            .try_get::<Option<String>, _>("item_id")?
            .unwrap_or_default(),
        display_key: number.map(|n| format!("{key}-{n}")).unwrap_or_default(),
        title: row.try_get("title")?,
        snippet: snippet_parts(snippet),
        // Ranks are lower for better matches on both engines; scores are higher.
        score: -rank,
    })
}
