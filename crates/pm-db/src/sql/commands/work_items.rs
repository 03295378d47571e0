//! Work items: create, update and move (delete and restore are generic).

use pm_core::kinds::{ChangeAction, Priority, Role, WipPolicy, WorkItemStatus};
use pm_core::{rank, rules, EntityId, UserId};
use pm_proto::{convert, v1};
use sqlx::Row;

use super::super::records;
use super::context::{self, parse_id, Applied, Cx, EnforcedLane};
use crate::access::{check_version, check_writable, editor, require, ProjectInfo};
use crate::entity::Entity;
use crate::error::{Error, Result};
use crate::events::Change;

pub(super) async fn create(cx: &mut Cx<'_>, c: &v1::CreateWorkItem) -> Result<Applied> {
    let project_id = parse_id("project_id", &c.project_id)?;
    let item_type = convert::required(
        "item_type",
        convert::work_item_type("item_type", c.item_type),
    )?;
    // Unset status and priority take their defaults; other values are checked with the row.
    let status = match convert::work_item_status("status", c.status) {
        Ok(None) => v1::WorkItemStatus::from(WorkItemStatus::Backlog).into(),
        _ => c.status,
    };
    let priority = match convert::priority("priority", c.priority) {
        Ok(None) => v1::Priority::from(Priority::Medium).into(),
        _ => c.priority,
    };
    let assignee = c
        .assignee_id
        .as_deref()
        .map(|a| UserId::parse("assignee_id", a))
        .transpose()?;
    let parent_id = c
        .parent_id
        .as_deref()
        .map(|p| parse_id("parent_id", p))
        .transpose()?;
    let sprint_id = c
        .sprint_id
        .as_deref()
        .map(|s| parse_id("sprint_id", s))
        .transpose()?;

    let info = cx
        .authorize_content(&project_id, "project", Role::Editor)
        .await?;
    if parent_id.is_some()
        || sprint_id.is_some()
        || !cx.cache.next_numbers.contains_key(&project_id)
    {
        // The checks below read work items, which may be among the deferred ones.
        cx.flush_deferred().await?;
    }
    if let Some(parent) = &parent_id {
        check_parent(cx, &project_id, item_type, parent, None).await?;
    }
    if let Some(sprint) = &sprint_id {
        check_sprint(cx, &project_id, sprint).await?;
    }
    let number = next_number(cx, &project_id).await?;
    let item = cx
        .created(v1::WorkItem {
            id: EntityId::new().to_text(),
            project_id: project_id.clone(),
            number,
            display_key: String::new(),
            item_type: v1::WorkItemType::from(item_type).into(),
            parent_id,
            title: c.title.clone(),
            description: c.description.clone(),
            status,
            priority,
            story_points: c.story_points,
            assignee_id: assignee.map(|a| a.as_str().to_owned()),
            sprint_id,
            rank: rank::for_new_item(cx.next_seq),
            ..Default::default()
        })?
        .with_project_key(&info.key);
    let warnings = enter_lanes(cx, &project_id, item.status).await?;
    let change = Change::created(&item);
    match cx.deferred.as_deref_mut() {
        // Validated and numbered: only an unexpected storage failure can refuse it now, and
        // that makes the writer replay the group with a savepoint per command.
        Some(pending) => pending.items.push(item),
        None => records::insert(cx.conn, &item).await?,
    }
    cx.cache.next_numbers.insert(project_id, number + 1);
    Ok(Applied::one(change).warned(warnings))
}

/// The next per-project number: numbers are never reused because rows are only soft-deleted.
async fn next_number(cx: &mut Cx<'_>, project_id: &str) -> Result<u64> {
    if let Some(next) = cx.cache.next_numbers.get(project_id) {
        return Ok(*next);
    }
    let next: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(number), 0) + 1 FROM work_items WHERE project_id = $1",
    )
    .bind(project_id)
    .fetch_one(&mut *cx.conn)
    .await?;
    Ok(next as u64)
}

/// Checks a parent in one query: it exists, is live, is in the same project, has an allowed
/// type, and the child is not among its ancestors (walked with a recursive CTE).
async fn check_parent(
    cx: &mut Cx<'_>,
    project_id: &str,
    child_type: pm_core::kinds::WorkItemType,
    parent_id: &str,
    child_id: Option<&str>,
) -> Result<()> {
    let row = sqlx::query(
        r#"
        WITH RECURSIVE ancestors (id, depth) AS (
            SELECT id, 0 FROM work_items WHERE id = $1
            UNION ALL
            SELECT w.parent_id, a.depth + 1
            FROM work_items AS w
            JOIN ancestors AS a ON w.id = a.id
            WHERE w.parent_id IS NOT NULL AND a.depth < 64
        )
        SELECT p.project_id, p.item_type, p.deleted_at,
               EXISTS (SELECT 1 FROM ancestors WHERE id = $2) AS makes_cycle
        FROM work_items AS p
        WHERE p.id = $1
        "#,
    )
    .bind(parent_id)
    .bind(child_id.unwrap_or(""))
    .fetch_optional(&mut *cx.conn)
    .await?;
    let invalid = || Error::invalid("parent_id", "must be a live work item of the same project");
    let row = row.ok_or_else(invalid)?;
    let parent_project: String = row.try_get("project_id")?;
    let deleted: Option<i64> = row.try_get("deleted_at")?;
    if parent_project != project_id || deleted.is_some() {
        return Err(invalid());
    }
    let parent_type: String = row.try_get("item_type")?;
    let parent_type = pm_core::kinds::WorkItemType::parse("parent_id", &parent_type)
        .map_err(|_| Error::Corrupt("unknown work item type".into()))?;
    rules::check_parent(child_type, parent_type)?;
    if row.try_get::<bool, _>("makes_cycle")? {
        return Err(Error::invalid(
            "parent_id",
            "would make the item its own ancestor",
        ));
    }
    Ok(())
}

/// Checks that a sprint is live, planned or active, and in the same project.
async fn check_sprint(cx: &mut Cx<'_>, project_id: &str, sprint_id: &str) -> Result<()> {
    let row = sqlx::query("SELECT project_id, status, deleted_at FROM sprints WHERE id = $1")
        .bind(sprint_id)
        .fetch_optional(&mut *cx.conn)
        .await?;
    let ok = match row {
        Some(row) => {
            row.try_get::<String, _>("project_id")? == project_id
                && row.try_get::<Option<i64>, _>("deleted_at")?.is_none()
                && matches!(
                    row.try_get::<String, _>("status")?.as_str(),
                    "planned" | "active"
                )
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "sprint_id",
            "must be a planned or active sprint of the same project",
        ))
    }
}

async fn load_item(cx: &mut Cx<'_>, id: &str) -> Result<(v1::WorkItem, Role, ProjectInfo)> {
    let (item, role, info) = cx.load::<v1::WorkItem>("id", id).await?;
    require(role, Role::Editor)?;
    check_writable(&info)?;
    Ok((item, role, info))
}

pub(super) async fn update(cx: &mut Cx<'_>, c: &v1::UpdateWorkItem) -> Result<Applied> {
    rules::check_clear_fields(
        &c.clear_fields,
        &["story_points", "assignee_id"],
        &[
            ("story_points", c.story_points.is_some()),
            ("assignee_id", c.assignee_id.is_some()),
        ],
    )?;
    let (item, _, _) = load_item(cx, &c.id).await?;
    check_version(&item, c.expected_version)?;
    let mut after = item.clone();
    if let Some(title) = &c.title {
        after.title = title.clone();
    }
    if let Some(description) = &c.description {
        after.description = description.clone();
    }
    if let Some(status) = c.status {
        after.status = status;
    }
    if let Some(priority) = c.priority {
        after.priority = priority;
    }
    if let Some(points) = c.story_points {
        after.story_points = Some(points);
    }
    if let Some(assignee) = &c.assignee_id {
        after.assignee_id = Some(UserId::parse("assignee_id", assignee)?.as_str().to_owned());
    }
    for field in &c.clear_fields {
        match field.as_str() {
            "story_points" => after.story_points = None,
            "assignee_id" => after.assignee_id = None,
            _ => unreachable!("checked by check_clear_fields"),
        }
    }
    let warnings = status_change(cx, &item, &after).await?;
    let applied = cx.save(&item, after, ChangeAction::Updated).await?;
    Ok(applied.warned(warnings))
}

/// The WIP limits of the lanes an item enters when an update or move changes its status
/// (checked after the row's own rules, so bad input is `INVALID_ARGUMENT` first).
async fn status_change(
    cx: &mut Cx<'_>,
    before: &v1::WorkItem,
    after: &v1::WorkItem,
) -> Result<Vec<v1::Warning>> {
    if after.status == before.status {
        return Ok(Vec::new());
    }
    after.validate()?;
    enter_lanes(cx, &after.project_id, after.status).await
}

/// Restores a deleted work item, which enters the lanes of its status again.
pub(super) async fn restore(cx: &mut Cx<'_>, c: &v1::RestoreWorkItem) -> Result<Applied> {
    let (item, role, info) = cx.load_any::<v1::WorkItem>("id", &c.id, false).await?;
    // The generic restore below checks all of this again and answers for it; the limits are
    // checked only for a restore it would make.
    let warnings = if role.allows(Role::Editor)
        && !info.archived
        && item.deleted_at.is_some()
        && item.version == c.expected_version
    {
        enter_lanes(cx, &item.project_id, item.status).await?
    } else {
        Vec::new()
    };
    let applied = context::restore::<v1::WorkItem>(cx, &c.id, c.expected_version, editor).await?;
    Ok(applied.warned(warnings))
}

/// "1 work item", "2 work items".
fn work_items(count: u64) -> String {
    match count {
        1 => "1 work item".to_owned(),
        n => format!("{n} work items"),
    }
}

/// The live lanes of a project whose WIP limit is enforced, from the cache or one query.
async fn enforced_lanes(cx: &mut Cx<'_>, project_id: &str) -> Result<Vec<EnforcedLane>> {
    if let Some(lanes) = cx.cache.lanes.get(project_id) {
        return Ok(lanes.clone());
    }
    let rows = sqlx::query(
        r#"
        SELECT id, name, status, wip_limit, wip_policy
        FROM swim_lanes
        WHERE project_id = $1
          AND deleted_at IS NULL
          AND wip_limit IS NOT NULL
          AND wip_policy <> 'none'
        ORDER BY position, id
        "#,
    )
    .bind(project_id)
    .fetch_all(&mut *cx.conn)
    .await?;
    let lanes = rows
        .iter()
        .map(|row| -> Result<EnforcedLane> {
            Ok(EnforcedLane {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                status: row.try_get("status")?,
                limit: u32::try_from(row.try_get::<i64, _>("wip_limit")?)
                    .map_err(|_| Error::Corrupt("wip_limit out of range".into()))?,
                refuse: row.try_get::<String, _>("wip_policy")? == WipPolicy::Refuse.as_str(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    cx.cache.lanes.insert(project_id.to_owned(), lanes.clone());
    Ok(lanes)
}

/// Checks the WIP limits of the lanes a work item enters by taking `status` in its project
/// (created or restored in it, or moved into it from another status): a `refuse` lane it
/// would take over its limit refuses the change with `FAILED_PRECONDITION`; each `warn` lane
/// it takes over its limit adds a warning. Costs nothing for a project without enforced
/// lanes in that status (cached); otherwise one count.
async fn enter_lanes(cx: &mut Cx<'_>, project_id: &str, status: i32) -> Result<Vec<v1::Warning>> {
    let Ok(Some(status)) = convert::work_item_status("status", status) else {
        // Unknown or unset: the row's rules refuse it.
        return Ok(Vec::new());
    };
    let lanes: Vec<EnforcedLane> = enforced_lanes(cx, project_id)
        .await?
        .into_iter()
        .filter(|lane| lane.status == status.as_str())
        .collect();
    if lanes.is_empty() {
        return Ok(Vec::new());
    }
    // New items of this group may still wait to be inserted: count them too.
    cx.flush_deferred().await?;
    let present: i64 = sqlx::query_scalar(
        r#"
        SELECT COUNT(*)
        FROM work_items
        WHERE project_id = $1 AND status = $2 AND deleted_at IS NULL
        "#,
    )
    .bind(project_id)
    .bind(status.as_str())
    .fetch_one(&mut *cx.conn)
    .await?;
    let present = u64::try_from(present).unwrap_or(0);
    let over = |lane: &EnforcedLane| present + 1 > u64::from(lane.limit);
    if let Some(lane) = lanes.iter().find(|lane| lane.refuse && over(lane)) {
        return Err(Error::FailedPrecondition(format!(
            "swim lane \"{}\" holds {} and its WIP limit is {}; move one out first",
            lane.name,
            work_items(present),
            lane.limit
        )));
    }
    Ok(lanes
        .iter()
        .filter(|lane| over(lane))
        .map(|lane| v1::Warning {
            code: v1::WarningCode::WipLimitExceeded.into(),
            message: format!(
                "swim lane \"{}\" is over its WIP limit: {}, limit {}",
                lane.name,
                work_items(present + 1),
                lane.limit
            ),
            entity_id: lane.id.clone(),
        })
        .collect())
}

/// A drag-and-drop: status, place among neighbours, sprint and parent in one change.
pub(super) async fn move_item(cx: &mut Cx<'_>, c: &v1::MoveWorkItem) -> Result<Applied> {
    let (item, _, _) = load_item(cx, &c.id).await?;
    check_version(&item, c.expected_version)?;
    let mut after = item.clone();
    if let Some(status) = c.status {
        after.status = status;
    }
    if let Some(parent) = &c.parent_id {
        after.parent_id = if parent.is_empty() {
            None
        } else {
            let parent = parse_id("parent_id", parent)?;
            let item_type = convert::required(
                "item_type",
                convert::work_item_type("item_type", item.item_type),
            )?;
            check_parent(cx, &item.project_id, item_type, &parent, Some(&item.id)).await?;
            Some(parent)
        };
    }
    if let Some(sprint) = &c.sprint_id {
        after.sprint_id = if sprint.is_empty() {
            None
        } else {
            let sprint = parse_id("sprint_id", sprint)?;
            check_sprint(cx, &item.project_id, &sprint).await?;
            Some(sprint)
        };
    }
    if c.after_id.is_some() || c.before_id.is_some() {
        after.rank = new_rank(cx, &item, c.after_id.as_deref(), c.before_id.as_deref()).await?;
    }
    let warnings = status_change(cx, &item, &after).await?;
    let applied = cx.save(&item, after, ChangeAction::Moved).await?;
    Ok(applied.warned(warnings))
}

/// A rank between the named neighbours, read in one query.
async fn new_rank(
    cx: &mut Cx<'_>,
    item: &v1::WorkItem,
    after_id: Option<&str>,
    before_id: Option<&str>,
) -> Result<String> {
    let after_id = after_id.map(|id| parse_id("after_id", id)).transpose()?;
    let before_id = before_id.map(|id| parse_id("before_id", id)).transpose()?;
    for (field, id) in [("after_id", &after_id), ("before_id", &before_id)] {
        if id.as_deref() == Some(item.id.as_str()) {
            return Err(Error::invalid(field, "must be another work item"));
        }
    }
    let rows =
        sqlx::query("SELECT id, project_id, rank, deleted_at FROM work_items WHERE id IN ($1, $2)")
            .bind(after_id.as_deref().unwrap_or(""))
            .bind(before_id.as_deref().unwrap_or(""))
            .fetch_all(&mut *cx.conn)
            .await?;
    let rank_of = |field: &str, id: &Option<String>| -> Result<Option<String>> {
        let Some(id) = id else { return Ok(None) };
        for row in &rows {
            if row.try_get::<String, _>("id")? == *id
                && row.try_get::<String, _>("project_id")? == item.project_id
                && row.try_get::<Option<i64>, _>("deleted_at")?.is_none()
            {
                return Ok(Some(row.try_get("rank")?));
            }
        }
        Err(Error::invalid(
            field,
            "must be a live work item of the same project",
        ))
    };
    let lower = rank_of("after_id", &after_id)?;
    let upper = rank_of("before_id", &before_id)?;
    Ok(rank::between(lower.as_deref(), upper.as_deref())?)
}
