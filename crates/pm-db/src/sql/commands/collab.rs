//! Comments, time entries and dependencies: what people attach to work items.

use pm_core::kinds::{ChangeAction, DependencyType, Role};
use pm_core::EntityId;
use pm_proto::{convert, v1};
use sqlx::Row;

use super::super::records;
use super::context::{on_unique, parse_id, restore, Applied, Cx};
use crate::access::{self, check_version, check_writable, require};
use crate::error::{Error, Result};
use crate::events::Change;

/// The project of a live work item the actor may change content of.
async fn item_project(
    cx: &mut Cx<'_>,
    field: &str,
    work_item_id: &str,
) -> Result<(String, String)> {
    let id = parse_id(field, work_item_id)?;
    let row = sqlx::query("SELECT project_id, deleted_at FROM work_items WHERE id = $1")
        .bind(&id)
        .fetch_optional(&mut *cx.conn)
        .await?;
    let not_found = || access::not_found("work item");
    let row = row.ok_or_else(not_found)?;
    if row.try_get::<Option<i64>, _>("deleted_at")?.is_some() {
        return Err(not_found());
    }
    let project_id: String = row.try_get("project_id")?;
    cx.authorize_content(&project_id, "work item", Role::Editor)
        .await?;
    Ok((id, project_id))
}

pub(super) async fn create_comment(cx: &mut Cx<'_>, c: &v1::CreateComment) -> Result<Applied> {
    let (work_item_id, project_id) = item_project(cx, "work_item_id", &c.work_item_id).await?;
    let comment = cx.created(v1::Comment {
        id: EntityId::new().to_text(),
        project_id,
        work_item_id,
        content: c.content.clone(),
        ..Default::default()
    })?;
    records::insert(cx.conn, &comment).await?;
    Ok(Applied::one(Change::created(&comment)))
}

pub(super) async fn update_comment(cx: &mut Cx<'_>, c: &v1::UpdateComment) -> Result<Applied> {
    let (comment, role, info) = cx.load::<v1::Comment>("id", &c.id).await?;
    access::author(&comment, cx.actor, role)?;
    check_writable(&info)?;
    check_version(&comment, c.expected_version)?;
    let mut after = comment.clone();
    after.content = c.content.clone();
    cx.save(&comment, after, ChangeAction::Updated).await
}

fn running_timer() -> Error {
    Error::FailedPrecondition("you already have a running timer; stop it first".into())
}

pub(super) async fn create_time_entry(cx: &mut Cx<'_>, c: &v1::CreateTimeEntry) -> Result<Applied> {
    let (work_item_id, project_id) = item_project(cx, "work_item_id", &c.work_item_id).await?;
    let entry = new_entry(
        cx,
        work_item_id,
        project_id,
        c.started_at,
        Some(c.ended_at),
        &c.description,
    )?;
    records::insert(cx.conn, &entry).await?;
    Ok(Applied::one(Change::created(&entry)))
}

fn new_entry(
    cx: &Cx<'_>,
    work_item_id: String,
    project_id: String,
    started_at: i64,
    ended_at: Option<i64>,
    description: &str,
) -> Result<v1::TimeEntry> {
    cx.created(v1::TimeEntry {
        id: EntityId::new().to_text(),
        project_id,
        work_item_id,
        user_id: cx.actor.as_str().to_owned(),
        started_at,
        ended_at,
        description: description.to_owned(),
        ..Default::default()
    })
}

pub(super) async fn update_time_entry(cx: &mut Cx<'_>, c: &v1::UpdateTimeEntry) -> Result<Applied> {
    let (entry, role, info) = cx.load::<v1::TimeEntry>("id", &c.id).await?;
    access::owner(&entry, cx.actor, role)?;
    check_writable(&info)?;
    check_version(&entry, c.expected_version)?;
    let mut after = entry.clone();
    if let Some(started_at) = c.started_at {
        after.started_at = started_at;
    }
    if let Some(ended_at) = c.ended_at {
        after.ended_at = Some(ended_at);
    }
    if let Some(description) = &c.description {
        after.description = description.clone();
    }
    cx.save(&entry, after, ChangeAction::Updated).await
}

pub(super) async fn start_timer(cx: &mut Cx<'_>, c: &v1::StartTimer) -> Result<Applied> {
    let (work_item_id, project_id) = item_project(cx, "work_item_id", &c.work_item_id).await?;
    let entry = new_entry(cx, work_item_id, project_id, cx.now, None, &c.description)?;
    // The partial unique index allows one running timer per user.
    records::insert(cx.conn, &entry)
        .await
        .map_err(|e| on_unique(e, running_timer))?;
    Ok(Applied::one(Change::created(&entry)))
}

pub(super) async fn stop_timer(cx: &mut Cx<'_>) -> Result<Applied> {
    let sql = format!(
        "SELECT {} FROM time_entries AS t WHERE user_id = $1 AND ended_at IS NULL AND deleted_at IS NULL",
        records::select_columns::<v1::TimeEntry>("t")
    );
    let row = sqlx::query(&sql)
        .bind(cx.actor.as_str())
        .fetch_optional(&mut *cx.conn)
        .await?;
    let entry = row
        .as_ref()
        .map(records::from_row::<v1::TimeEntry>)
        .transpose()?
        .ok_or_else(|| Error::FailedPrecondition("you have no running timer".into()))?;
    // A running timer belongs to its user: they may always stop it, even after leaving the
    // project or once it is archived or deleted; otherwise it would block every new timer.
    let mut after = entry.clone();
    // A timer stopped within the millisecond it started still lasts one millisecond.
    after.ended_at = Some(cx.now.max(entry.started_at.saturating_add(1)));
    cx.save(&entry, after, ChangeAction::Updated).await
}

/// Refuses a `blocks` link that would close a cycle: is `blocking` reachable from `blocked`
/// along live `blocks` links? One recursive query, not one per hop.
async fn check_no_cycle(cx: &mut Cx<'_>, blocking: &str, blocked: &str) -> Result<()> {
    let cycle: bool = sqlx::query_scalar(
        r#"
        WITH RECURSIVE reachable (id) AS (
            SELECT id FROM work_items WHERE id = $1
            UNION
            SELECT d.blocked_item_id
            FROM dependencies AS d
            JOIN reachable AS r ON d.blocking_item_id = r.id
            WHERE d.dependency_type = 'blocks' AND d.deleted_at IS NULL
        )
        SELECT EXISTS (SELECT 1 FROM reachable WHERE id = $2)
        "#,
    )
    .bind(blocked)
    .bind(blocking)
    .fetch_one(&mut *cx.conn)
    .await?;
    if cycle {
        return Err(Error::FailedPrecondition(
            "this dependency would create a cycle of blocking work items".into(),
        ));
    }
    Ok(())
}

fn duplicate_dependency() -> Error {
    Error::FailedPrecondition("this dependency already exists".into())
}

pub(super) async fn create_dependency(
    cx: &mut Cx<'_>,
    c: &v1::CreateDependency,
) -> Result<Applied> {
    let blocking = parse_id("blocking_item_id", &c.blocking_item_id)?;
    let blocked = parse_id("blocked_item_id", &c.blocked_item_id)?;
    pm_core::rules::check_dependency_ends(&blocking, &blocked)?;
    let kind = convert::required(
        "dependency_type",
        convert::dependency_type("dependency_type", c.dependency_type),
    )?;
    let (_, project_id) = item_project(cx, "blocking_item_id", &blocking).await?;
    let (_, blocked_project) = item_project(cx, "blocked_item_id", &blocked).await?;
    if blocked_project != project_id {
        return Err(Error::invalid(
            "blocked_item_id",
            "must be a work item of the same project",
        ));
    }
    if kind == DependencyType::Blocks {
        check_no_cycle(cx, &blocking, &blocked).await?;
    }
    let dependency = cx.created(v1::Dependency {
        id: EntityId::new().to_text(),
        project_id,
        blocking_item_id: blocking,
        blocked_item_id: blocked,
        dependency_type: v1::DependencyType::from(kind).into(),
        ..Default::default()
    })?;
    records::insert(cx.conn, &dependency)
        .await
        .map_err(|e| on_unique(e, duplicate_dependency))?;
    Ok(Applied::one(Change::created(&dependency)))
}

pub(super) async fn update_dependency(
    cx: &mut Cx<'_>,
    c: &v1::UpdateDependency,
) -> Result<Applied> {
    let kind = convert::required(
        "dependency_type",
        convert::dependency_type("dependency_type", c.dependency_type),
    )?;
    let (dependency, role, info) = cx.load::<v1::Dependency>("id", &c.id).await?;
    require(role, Role::Editor)?;
    check_writable(&info)?;
    check_version(&dependency, c.expected_version)?;
    let to = v1::DependencyType::from(kind) as i32;
    if kind == DependencyType::Blocks && dependency.dependency_type != to {
        check_no_cycle(
            cx,
            &dependency.blocking_item_id,
            &dependency.blocked_item_id,
        )
        .await?;
    }
    let mut after = dependency.clone();
    after.dependency_type = to;
    cx.save(&dependency, after, ChangeAction::Updated)
        .await
        .map_err(|e| match e {
            Error::Database(db) => on_unique(db, duplicate_dependency),
            other => other,
        })
}

/// Restoring a `blocks` link must not close a cycle either.
pub(super) async fn restore_dependency(
    cx: &mut Cx<'_>,
    c: &v1::RestoreDependency,
) -> Result<Applied> {
    let (dependency, role, _) = cx.load_any::<v1::Dependency>("id", &c.id, false).await?;
    require(role, Role::Editor)?;
    if dependency.deleted_at.is_some()
        && dependency.dependency_type == v1::DependencyType::Blocks as i32
    {
        check_no_cycle(
            cx,
            &dependency.blocking_item_id,
            &dependency.blocked_item_id,
        )
        .await?;
    }
    restore::<v1::Dependency>(cx, &c.id, c.expected_version, access::editor).await
}
