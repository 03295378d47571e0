//! Sprints, swim lanes and LLM context: the project's planning and board configuration.

use pm_core::kinds::{ChangeAction, Role, WipPolicy};
use pm_core::{rules, EntityId};
use pm_proto::{convert, v1};

use super::super::records;
use super::context::{on_unique, parse_id, Applied, Cx};
use crate::access::{check_version, check_writable, require};
use crate::error::{Error, Result};
use crate::events::Change;

fn one_active_sprint() -> Error {
    Error::FailedPrecondition("the project already has an active sprint".into())
}

pub(super) async fn create_sprint(cx: &mut Cx<'_>, c: &v1::CreateSprint) -> Result<Applied> {
    let project_id = parse_id("project_id", &c.project_id)?;
    cx.authorize_content(&project_id, "project", Role::Editor)
        .await?;
    let sprint = cx.created(v1::Sprint {
        id: EntityId::new().to_text(),
        project_id,
        name: c.name.clone(),
        goal: c.goal.clone(),
        status: v1::SprintStatus::Planned.into(),
        start_at: c.start_at,
        end_at: c.end_at,
        ..Default::default()
    })?;
    records::insert(cx.conn, &sprint).await?;
    Ok(Applied::one(Change::created(&sprint)))
}

pub(super) async fn update_sprint(cx: &mut Cx<'_>, c: &v1::UpdateSprint) -> Result<Applied> {
    rules::check_clear_fields(
        &c.clear_fields,
        &["start_at", "end_at"],
        &[
            ("start_at", c.start_at.is_some()),
            ("end_at", c.end_at.is_some()),
        ],
    )?;
    let (sprint, role, info) = cx.load::<v1::Sprint>("id", &c.id).await?;
    require(role, Role::Editor)?;
    check_writable(&info)?;
    check_version(&sprint, c.expected_version)?;
    let mut after = sprint.clone();
    if let Some(name) = &c.name {
        after.name = name.clone();
    }
    if let Some(goal) = &c.goal {
        after.goal = goal.clone();
    }
    if let Some(status) = c.status {
        let to = convert::required("status", convert::sprint_status("status", status))?;
        let from = convert::required("status", convert::sprint_status("status", sprint.status))?;
        rules::check_sprint_transition(from, to)?;
        after.status = v1::SprintStatus::from(to).into();
    }
    if c.start_at.is_some() {
        after.start_at = c.start_at;
    }
    if c.end_at.is_some() {
        after.end_at = c.end_at;
    }
    for field in &c.clear_fields {
        match field.as_str() {
            "start_at" => after.start_at = None,
            "end_at" => after.end_at = None,
            _ => unreachable!("checked by check_clear_fields"),
        }
    }
    let activating = after.status == v1::SprintStatus::Active as i32
        && sprint.status != v1::SprintStatus::Active as i32;
    cx.save(&sprint, after, ChangeAction::Updated)
        .await
        .map_err(|e| match e {
            Error::Database(db) if activating => on_unique(db, one_active_sprint),
            other => other,
        })
}

pub(super) async fn create_swim_lane(cx: &mut Cx<'_>, c: &v1::CreateSwimLane) -> Result<Applied> {
    let project_id = parse_id("project_id", &c.project_id)?;
    cx.authorize_content(&project_id, "project", Role::Editor)
        .await?;
    // An unset policy takes its default; other values are checked with the row.
    let wip_policy = match convert::wip_policy("wip_policy", c.wip_policy) {
        Ok(None) => v1::WipPolicy::from(WipPolicy::None).into(),
        _ => c.wip_policy,
    };
    let lane = cx.created(v1::SwimLane {
        id: EntityId::new().to_text(),
        project_id,
        name: c.name.clone(),
        status: c.status,
        position: c.position,
        wip_limit: c.wip_limit,
        wip_policy,
        ..Default::default()
    })?;
    records::insert(cx.conn, &lane).await?;
    Ok(Applied::one(Change::created(&lane)))
}

pub(super) async fn update_swim_lane(cx: &mut Cx<'_>, c: &v1::UpdateSwimLane) -> Result<Applied> {
    rules::check_clear_fields(
        &c.clear_fields,
        &["wip_limit"],
        &[("wip_limit", c.wip_limit.is_some())],
    )?;
    let (lane, role, info) = cx.load::<v1::SwimLane>("id", &c.id).await?;
    require(role, Role::Editor)?;
    check_writable(&info)?;
    check_version(&lane, c.expected_version)?;
    let mut after = lane.clone();
    if let Some(name) = &c.name {
        after.name = name.clone();
    }
    if let Some(status) = c.status {
        after.status = status;
    }
    if let Some(position) = c.position {
        after.position = position;
    }
    if let Some(limit) = c.wip_limit {
        after.wip_limit = Some(limit);
    }
    if !c.clear_fields.is_empty() {
        after.wip_limit = None;
    }
    if let Some(policy) = c.wip_policy {
        after.wip_policy = convert::wire::<_, v1::WipPolicy>(convert::required(
            "wip_policy",
            convert::wip_policy("wip_policy", policy),
        )?);
    }
    cx.save(&lane, after, ChangeAction::Updated).await
}

pub(super) async fn create_llm_context(
    cx: &mut Cx<'_>,
    c: &v1::CreateLlmContext,
) -> Result<Applied> {
    let project_id = parse_id("project_id", &c.project_id)?;
    cx.authorize_content(&project_id, "project", Role::Editor)
        .await?;
    let context = cx.created(v1::LlmContext {
        id: EntityId::new().to_text(),
        project_id,
        category: c.category,
        title: c.title.clone(),
        content: c.content.clone(),
        priority: c.priority,
        ..Default::default()
    })?;
    records::insert(cx.conn, &context).await?;
    Ok(Applied::one(Change::created(&context)))
}

pub(super) async fn update_llm_context(
    cx: &mut Cx<'_>,
    c: &v1::UpdateLlmContext,
) -> Result<Applied> {
    let (context, role, info) = cx.load::<v1::LlmContext>("id", &c.id).await?;
    require(role, Role::Editor)?;
    check_writable(&info)?;
    check_version(&context, c.expected_version)?;
    let mut after = context.clone();
    if let Some(category) = c.category {
        after.category = category;
    }
    if let Some(title) = &c.title {
        after.title = title.clone();
    }
    if let Some(content) = &c.content {
        after.content = content.clone();
    }
    if let Some(priority) = c.priority {
        after.priority = priority;
    }
    cx.save(&context, after, ChangeAction::Updated).await
}
