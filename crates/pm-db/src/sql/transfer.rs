//! Export and import, the part both engines share: writing a tenant's rows and change log as
//! export lines, and loading a validated [`Dataset`]'s rows. Each engine keeps how it opens
//! the tenant, what it checks before loading, and how the change log's head is set.

use std::collections::HashMap;
use std::io::Write;

use futures::TryStreamExt;
use pm_proto::v1;
use prost::Message;
use serde::Serialize;
use sqlx::Row;

use super::dialect::Conn;
use super::records;
use crate::entity::Entity;
use crate::error::{Error, Result};
use crate::events::PendingEvent;
use crate::export::{change_columns, write_json, Dataset, Line, CHANGE, KINDS};

/// The tables of a tenant's content, children before parents: the order to delete in.
pub(crate) const CONTENT_TABLES: [&str; 11] = [
    "change_log",
    "idempotency",
    "dependencies",
    "time_entries",
    "comments",
    "llm_context",
    "swim_lanes",
    "work_items",
    "sprints",
    "project_members",
    "projects",
];

/// Writes every row and then the change log as export lines, inside the caller's read
/// transaction; the count of each kind, in file order.
pub(crate) async fn write_lines<W: Write + Send>(
    conn: &mut Conn,
    out: &mut W,
) -> Result<Vec<(&'static str, u64)>> {
    Ok(vec![
        (KINDS[0], rows::<v1::Project, _>(conn, "id", out).await?),
        (
            KINDS[1],
            rows::<v1::ProjectMember, _>(conn, "project_id, user_id", out).await?,
        ),
        (KINDS[2], rows::<v1::Sprint, _>(conn, "id", out).await?),
        (KINDS[3], rows::<v1::WorkItem, _>(conn, "id", out).await?),
        (KINDS[4], rows::<v1::Comment, _>(conn, "id", out).await?),
        (KINDS[5], rows::<v1::TimeEntry, _>(conn, "id", out).await?),
        (KINDS[6], rows::<v1::Dependency, _>(conn, "id", out).await?),
        (KINDS[7], rows::<v1::SwimLane, _>(conn, "id", out).await?),
        (KINDS[8], rows::<v1::LlmContext, _>(conn, "id", out).await?),
        (CHANGE, changes(conn, out).await?),
    ])
}

async fn rows<R: Entity + Serialize, W: Write + Send>(
    conn: &mut Conn,
    order_by: &str,
    out: &mut W,
) -> Result<u64> {
    let sql = format!(
        "SELECT {} FROM {} AS t ORDER BY {order_by}",
        records::select_columns::<R>("t"),
        R::TABLE
    );
    let mut stream = sqlx::query(&sql).fetch(&mut *conn);
    let mut count = 0;
    while let Some(row) = stream.try_next().await? {
        write_json(
            out,
            &Line {
                kind: R::KIND.as_str(),
                data: records::from_row::<R>(&row)?,
            },
        )?;
        count += 1;
    }
    Ok(count)
}

async fn changes<W: Write + Send>(conn: &mut Conn, out: &mut W) -> Result<u64> {
    let mut stream =
        sqlx::query("SELECT seq, event FROM change_log ORDER BY seq").fetch(&mut *conn);
    let mut count = 0;
    while let Some(row) = stream.try_next().await? {
        let seq: i64 = row.try_get("seq")?;
        let blob: Vec<u8> = row.try_get("event")?;
        let event = v1::Event::decode(blob.as_slice())
            .map_err(|e| Error::Corrupt(format!("change {seq}: {e}")))?;
        if event.seq != seq as u64 {
            return Err(Error::Corrupt(format!(
                "change {seq} holds the event of seq {}",
                event.seq
            )));
        }
        write_json(
            out,
            &Line {
                kind: CHANGE,
                data: event,
            },
        )?;
        count += 1;
    }
    Ok(count)
}

/// Whether the tenant has content: its projects and the change log's head.
pub(crate) async fn content(conn: &mut Conn) -> Result<(i64, u64)> {
    let projects: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM projects")
        .fetch_one(&mut *conn)
        .await?;
    let head = super::changelog::head_seq(&mut *conn).await?;
    Ok((projects, head))
}

/// Deletes the tenant's content (`--replace`), inside the caller's transaction.
pub(crate) async fn delete_content(conn: &mut Conn) -> Result<()> {
    for table in CONTENT_TABLES {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Inserts every row of `data`, table by table, each row on its own so that a constraint of
/// the database is reported with its line. Work items go parents first: a database that
/// checks references at once (PostgreSQL here) needs it, one that defers them does not mind.
pub(crate) async fn insert_rows(conn: &mut Conn, data: &Dataset) -> Result<()> {
    insert(conn, data, data.projects.iter()).await?;
    insert(conn, data, data.members.iter()).await?;
    insert(conn, data, data.sprints.iter()).await?;
    insert(conn, data, parents_first(&data.items).into_iter()).await?;
    insert(conn, data, data.comments.iter()).await?;
    insert(conn, data, data.time_entries.iter()).await?;
    insert(conn, data, data.dependencies.iter()).await?;
    insert(conn, data, data.lanes.iter()).await?;
    insert(conn, data, data.contexts.iter()).await?;
    Ok(())
}

async fn insert<'a, R: Entity + 'a>(
    conn: &mut Conn,
    data: &Dataset,
    rows: impl Iterator<Item = &'a (usize, R)>,
) -> Result<()> {
    for (line, row) in rows {
        records::insert(conn, row)
            .await
            .map_err(|e| match e.as_database_error() {
                Some(db) => data.at(
                    *line,
                    R::KIND.as_str(),
                    Error::invalid("", format!("refused by the database: {}", db.message())),
                ),
                None => Error::Database(e),
            })?;
    }
    Ok(())
}

/// The work items ordered by depth in their hierarchy (the dataset is validated: no cycles,
/// parents present), file order kept within a depth.
fn parents_first(items: &[(usize, v1::WorkItem)]) -> Vec<&(usize, v1::WorkItem)> {
    let parents: HashMap<&str, Option<&str>> = items
        .iter()
        .map(|(_, item)| (item.id.as_str(), item.parent_id.as_deref()))
        .collect();
    let depth = |id: &str| {
        let mut depth = 0usize;
        let mut current = parents.get(id).copied().flatten();
        // Bounded by the number of items, whatever the data.
        while let Some(parent) = current.filter(|_| depth < items.len()) {
            depth += 1;
            current = parents.get(parent).copied().flatten();
        }
        depth
    };
    let mut ordered: Vec<(usize, &(usize, v1::WorkItem))> =
        items.iter().map(|row| (depth(&row.1.id), row)).collect();
    ordered.sort_by_key(|(depth, _)| *depth);
    ordered.into_iter().map(|(_, row)| row).collect()
}

/// The dataset's change log as rows to append, in seq order.
pub(crate) fn pending_events(data: &Dataset) -> Result<Vec<PendingEvent>> {
    data.changes
        .iter()
        .map(|(line, e)| {
            let (kind, action) = change_columns(e).map_err(|err| data.at(*line, CHANGE, err))?;
            Ok(PendingEvent {
                seq: e.seq,
                at: e.at,
                actor_id: e.actor_id.clone(),
                project_id: e.project_id.clone(),
                kind,
                entity_id: e.entity_id.clone(),
                action,
                event: e.encode_to_vec(),
            })
        })
        .collect()
}
