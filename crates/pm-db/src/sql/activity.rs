//! `ListActivity`: the change log as an audit trail, filtered by project, entity and actor,
//! and paged by seq both ways.
//!
//! An engine may index the log by entity, actor and project in batches rather than at every
//! commit (`changelog::batched_upto` is then `Some`: SQLite, see `sqlite/changelog.rs`). A page
//! filtered by one of them is then read in two parts: the events up to the end of the last
//! batch, driven in seq order by the pairs of the most selective filter (an entity's, then an
//! actor's, then a project's), and the newer ones (two batches and a group at most) from the log
//! itself. Newest first, the newer part comes first; oldest first, last. Every other page is
//! one query.

use pm_proto::{convert, v1};
use prost::Message;
use sqlx::{QueryBuilder, Row};

use super::changelog;
use super::dialect::{Db, DbRow};
use super::pages::{bad_token, decode_token, encode_token, Key};
use super::people::names;
use super::queries::Reader;
use crate::error::{Error, Result};
use pm_core::rules::page;

use v1::query_result::Result as R;

/// Which events of the log one query reads.
#[derive(Debug, Clone, Copy)]
enum Part {
    /// All of them (no batched index in the way).
    All,
    /// Those up to `upto`, through the pairs of the batched index `by`.
    Batched { upto: u64, by: Driver },
    /// Those after `upto`, which no batch holds yet.
    After { upto: u64 },
}

/// A batched index of the log: the pairs of each entity, actor or project with its events.
#[derive(Debug, Clone, Copy)]
enum Driver {
    Entity,
    Actor,
    Project,
}

impl Driver {
    /// Its table and the column a page looks up.
    fn table(self) -> (&'static str, &'static str) {
        match self {
            Driver::Entity => ("change_log_entities", "entity_id"),
            Driver::Actor => ("change_log_actors", "actor_id"),
            Driver::Project => ("change_log_projects", "project_id"),
        }
    }

    /// The value of `filters` it looks up.
    fn value(self, filters: &Filters) -> String {
        match self {
            Driver::Entity => filters.entity_id.clone(),
            Driver::Actor => filters.actor_id.clone(),
            Driver::Project => filters.project_id.clone().unwrap_or_default(),
        }
    }
}

/// The request's filters, checked and resolved.
struct Filters {
    /// `None`: every project the caller is a member of.
    project_id: Option<String>,
    kind: Option<&'static str>,
    entity_id: String,
    actor_id: String,
    /// Page after this seq (before it, newest first).
    cursor: Option<i64>,
    oldest_first: bool,
}

impl Filters {
    /// The batched index that finds this page's events fastest: an entity has the fewest
    /// events, then an actor, then a project. `None` if no filter has one.
    fn driver(&self) -> Option<Driver> {
        if !self.entity_id.is_empty() {
            Some(Driver::Entity)
        } else if !self.actor_id.is_empty() {
            Some(Driver::Actor)
        } else {
            self.project_id.as_ref().map(|_| Driver::Project)
        }
    }
}

impl Reader<'_> {
    pub(crate) async fn list_activity(&mut self, q: v1::ListActivity) -> Result<R> {
        let size = page::size(q.page.as_ref().map_or(0, |p| p.page_size))?;
        let token = q.page.as_ref().map_or("", |p| p.page_token.as_str());
        let cursor = match decode_token(token, 1)?.as_deref() {
            None => None,
            Some([Key::Int(seq)]) => Some(*seq),
            Some(_) => return Err(bad_token()),
        };
        let project_id = if q.project_id.is_empty() {
            None
        } else {
            Some(self.project("project_id", &q.project_id).await?.0)
        };
        let kind = convert::entity_type("entity_type", q.entity_type.unwrap_or_default())?;
        let filters = Filters {
            project_id,
            kind: kind.map(|k| k.as_str()),
            entity_id: q.entity_id,
            actor_id: q.actor_id,
            cursor,
            oldest_first: q.oldest_first,
        };
        // One more than a page: whether there is a next one.
        let wanted = size as usize + 1;
        let batched = match filters.driver() {
            None => None,
            Some(by) => changelog::batched_upto(&mut *self.conn)
                .await?
                .map(|upto| (upto, by)),
        };
        let mut rows = match batched {
            None => self.activity_rows(&filters, Part::All, wanted).await?,
            Some((upto, by)) => {
                let (first, then) = if filters.oldest_first {
                    (Part::Batched { upto, by }, Part::After { upto })
                } else {
                    (Part::After { upto }, Part::Batched { upto, by })
                };
                let mut rows = self.activity_rows(&filters, first, wanted).await?;
                if rows.len() < wanted {
                    let more = self
                        .activity_rows(&filters, then, wanted - rows.len())
                        .await?;
                    rows.extend(more);
                }
                rows
            }
        };
        let next_page_token = if rows.len() > size as usize {
            rows.truncate(size as usize);
            let last: i64 = rows
                .last()
                .expect("a full page has a last row")
                .try_get("seq")?;
            encode_token(&[Key::Int(last)])
        } else {
            String::new()
        };
        let mut items = rows
            .iter()
            .map(entry)
            .collect::<Result<Vec<v1::ActivityEntry>>>()?;
        let names = names(self.conn, items.iter().map(|e| e.actor_id.as_str())).await?;
        for entry in &mut items {
            entry.actor_name = names.get(&entry.actor_id).cloned().unwrap_or_default();
        }
        Ok(R::ListActivityResult(v1::ListActivityResult {
            items,
            next_page_token,
            as_of_seq: self.as_of_seq,
        }))
    }

    /// Up to `limit` rows (`seq`, `event`) of `part` that pass `filters`, in page order.
    async fn activity_rows(
        &mut self,
        filters: &Filters,
        part: Part,
        limit: usize,
    ) -> Result<Vec<DbRow>> {
        // The column the rows are ordered and paged by: the pairs' own, where they drive.
        let (mut b, key) = match part {
            Part::Batched { upto, by } => {
                let (table, column) = by.table();
                // CROSS JOIN: SQLite keeps the pairs as the outer loop, read in seq order.
                let mut b = QueryBuilder::<Db>::new(format!(
                    "SELECT c.seq AS seq, c.event AS event \
                     FROM {table} AS a CROSS JOIN change_log AS c \
                     WHERE c.seq = a.seq AND a.{column} = "
                ));
                b.push_bind(by.value(filters))
                    .push(" AND a.seq <= ")
                    .push_bind(upto.min(self.as_of_seq) as i64);
                (b, "a.seq")
            }
            Part::All | Part::After { .. } => {
                let mut b = QueryBuilder::<Db>::new(
                    "SELECT c.seq AS seq, c.event AS event FROM change_log AS c \
                     WHERE c.seq <= ",
                );
                // The snapshot already bounds it, but say so: the page is as of `as_of_seq`.
                b.push_bind(self.as_of_seq as i64);
                if let Part::After { upto } = part {
                    b.push(" AND c.seq > ").push_bind(upto as i64);
                }
                (b, "c.seq")
            }
        };
        if !filters.actor_id.is_empty() {
            b.push(" AND c.actor_id = ")
                .push_bind(filters.actor_id.clone());
        }
        match &filters.project_id {
            None => self.in_my_projects(&mut b, "c.project_id"),
            Some(project_id) => {
                b.push(" AND c.project_id = ").push_bind(project_id.clone());
            }
        }
        if let Some(kind) = filters.kind {
            b.push(" AND c.entity_type = ").push_bind(kind);
        }
        if !filters.entity_id.is_empty() {
            b.push(" AND c.entity_id = ")
                .push_bind(filters.entity_id.clone());
        }
        let (cmp, order) = if filters.oldest_first {
            (">", "ASC")
        } else {
            ("<", "DESC")
        };
        if let Some(seq) = filters.cursor {
            b.push(format_args!(" AND {key} {cmp} ")).push_bind(seq);
        }
        b.push(format_args!(" ORDER BY {key} {order} LIMIT "))
            .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        Ok(b.build().fetch_all(&mut *self.conn).await?)
    }
}

/// An activity entry from a log row (the actor's name is filled in later).
fn entry(row: &DbRow) -> Result<v1::ActivityEntry> {
    let bytes: Vec<u8> = row.try_get("event")?;
    let event = v1::Event::decode(bytes.as_slice())
        .map_err(|e| Error::Corrupt(format!("change log event: {e}")))?;
    Ok(v1::ActivityEntry {
        seq: event.seq,
        at: event.at,
        actor_id: event.actor_id,
        project_id: event.project_id,
        entity_type: event.entity_type,
        entity_id: event.entity_id,
        action: event.action,
        changes: event.changes,
        entity: event.change.map(|c| v1::Entity::of(c.into())),
        actor_name: String::new(),
    })
}
