//! Projects and their members.

use pm_core::kinds::{ChangeAction, Role};
use pm_core::{EntityId, UserId};
use pm_proto::{convert, v1};

use super::super::records;
use super::context::{on_unique, parse_id, Applied, Cx};
use crate::access::{check_version, conflict, require, ProjectInfo};
use crate::entity::Entity;
use crate::error::{Error, Result};
use crate::events::Change;

/// Creates a project; the creator becomes its admin.
pub(super) async fn create(cx: &mut Cx<'_>, c: &v1::CreateProject) -> Result<Applied> {
    let project = cx.created(v1::Project {
        id: EntityId::new().to_text(),
        key: c.key.clone(),
        name: c.name.clone(),
        description: c.description.clone(),
        status: v1::ProjectStatus::Active.into(),
        ..Default::default()
    })?;
    let admin = cx.created(v1::ProjectMember {
        project_id: project.id.clone(),
        user_id: cx.actor.as_str().to_owned(),
        role: v1::ProjectRole::Admin.into(),
        ..Default::default()
    })?;
    records::insert(cx.conn, &project).await.map_err(|e| {
        on_unique(e, || {
            Error::FailedPrecondition(format!("project key {} is already in use", c.key))
        })
    })?;
    records::insert(cx.conn, &admin).await?;
    cx.cache.projects.insert(
        project.id.clone(),
        Some(ProjectInfo {
            key: project.key.clone(),
            archived: false,
            deleted: false,
        }),
    );
    cx.cache.roles.insert(
        (project.id.clone(), admin.user_id.clone()),
        Some(Role::Admin),
    );
    // The membership first: whoever follows the change stream learns that the creator may
    // see the project before the project itself arrives (and the command's seq is the
    // project's own).
    Ok(Applied {
        changes: vec![Change::created(&admin), Change::created(&project)],
        entity: project.into_kind(),
        warnings: Vec::new(),
    })
}

/// Renames, describes, archives or unarchives a project. Archiving needs an admin.
pub(super) async fn update(cx: &mut Cx<'_>, c: &v1::UpdateProject) -> Result<Applied> {
    let (project, role, _) = cx.load::<v1::Project>("id", &c.id).await?;
    require(role, Role::Editor)?;
    check_version(&project, c.expected_version)?;
    let mut after = project.clone();
    if let Some(name) = &c.name {
        after.name = name.clone();
    }
    if let Some(description) = &c.description {
        after.description = description.clone();
    }
    if let Some(status) = c.status {
        let status = convert::required("status", convert::project_status("status", status))?;
        if v1::ProjectStatus::from(status) as i32 != project.status {
            require(role, Role::Admin)?;
        }
        after.status = v1::ProjectStatus::from(status).into();
    }
    let applied = cx.save(&project, after, ChangeAction::Updated).await?;
    remember(cx, &applied);
    Ok(applied)
}

/// Soft-deletes a project (admins only); its content stays for a restore.
pub(super) async fn delete(cx: &mut Cx<'_>, id: &str, expected: u64) -> Result<Applied> {
    let (project, role, _) = cx.load::<v1::Project>("id", id).await?;
    require(role, Role::Admin)?;
    check_version(&project, expected)?;
    let mut after = project.clone();
    after.deleted_at = Some(cx.now);
    let applied = cx.save(&project, after, ChangeAction::Deleted).await?;
    remember(cx, &applied);
    Ok(applied)
}

/// Restores a deleted project (admins only).
pub(super) async fn restore(cx: &mut Cx<'_>, id: &str, expected: u64) -> Result<Applied> {
    let (project, role, _) = cx.load_any::<v1::Project>("id", id, true).await?;
    require(role, Role::Admin)?;
    if project.deleted_at.is_none() {
        return Err(Error::FailedPrecondition(
            "the project is not deleted".into(),
        ));
    }
    check_version(&project, expected)?;
    let mut after = project.clone();
    after.deleted_at = None;
    let applied = cx.save(&project, after, ChangeAction::Restored).await?;
    remember(cx, &applied);
    Ok(applied)
}

fn remember(cx: &mut Cx<'_>, applied: &Applied) {
    if let v1::entity::Kind::Project(p) = &applied.entity {
        cx.cache.projects.insert(
            p.id.clone(),
            Some(ProjectInfo {
                key: p.key.clone(),
                archived: p.status == v1::ProjectStatus::Archived as i32,
                deleted: p.deleted_at.is_some(),
            }),
        );
    }
}

fn member_role(field: &str, raw: i32) -> Result<Role> {
    Ok(convert::required(field, convert::role(field, raw))?)
}

async fn find_member(
    cx: &mut Cx<'_>,
    project_id: &str,
    user_id: &str,
) -> Result<Option<v1::ProjectMember>> {
    let sql = format!(
        "SELECT {} FROM project_members AS m WHERE project_id = $1 AND user_id = $2",
        records::select_columns::<v1::ProjectMember>("m")
    );
    let row = sqlx::query(&sql)
        .bind(project_id)
        .bind(user_id)
        .fetch_optional(&mut *cx.conn)
        .await?;
    row.as_ref()
        .map(records::from_row::<v1::ProjectMember>)
        .transpose()
}

/// The member about to be changed, at the version the caller expects.
async fn load_member(
    cx: &mut Cx<'_>,
    project_id: &str,
    user: &UserId,
    expected_version: u64,
) -> Result<v1::ProjectMember> {
    let member = find_member(cx, project_id, user.as_str())
        .await?
        .ok_or_else(|| Error::NotFound("member not found".into()))?;
    check_version(&member, expected_version)?;
    Ok(member)
}

/// Refuses to demote or remove `member` if it is the project's last admin.
async fn keep_an_admin(cx: &mut Cx<'_>, member: &v1::ProjectMember) -> Result<()> {
    if member.role != v1::ProjectRole::Admin as i32 {
        return Ok(());
    }
    let admins: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM project_members WHERE project_id = $1 AND role = 'admin'",
    )
    .bind(&member.project_id)
    .fetch_one(&mut *cx.conn)
    .await?;
    if admins <= 1 {
        return Err(Error::FailedPrecondition(
            "a project must keep at least one admin".into(),
        ));
    }
    Ok(())
}

/// Adds a member (admins only).
pub(super) async fn add_member(cx: &mut Cx<'_>, c: &v1::AddMember) -> Result<Applied> {
    let project_id = parse_id("project_id", &c.project_id)?;
    let user = UserId::parse("user_id", &c.user_id)?;
    let role = member_role("role", c.role)?;
    let (caller, _) = cx.member_role(&project_id, "project", false).await?;
    require(caller, Role::Admin)?;
    if let Some(existing) = find_member(cx, &project_id, user.as_str()).await? {
        return Err(Error::Conflict {
            message: format!("{user} is already a member of this project"),
            current: Box::new(existing.into_entity()),
        });
    }
    let member = cx.created(v1::ProjectMember {
        project_id: project_id.clone(),
        user_id: user.as_str().to_owned(),
        role: v1::ProjectRole::from(role).into(),
        ..Default::default()
    })?;
    records::insert(cx.conn, &member).await?;
    cx.cache
        .roles
        .insert((project_id, member.user_id.clone()), Some(role));
    Ok(Applied::one(Change::created(&member)))
}

/// Changes a member's role (admins only); the last admin cannot be demoted.
pub(super) async fn update_member(cx: &mut Cx<'_>, c: &v1::UpdateMember) -> Result<Applied> {
    let project_id = parse_id("project_id", &c.project_id)?;
    let user = UserId::parse("user_id", &c.user_id)?;
    let role = member_role("role", c.role)?;
    let (caller, _) = cx.member_role(&project_id, "project", false).await?;
    require(caller, Role::Admin)?;
    let member = load_member(cx, &project_id, &user, c.expected_version).await?;
    if role != Role::Admin {
        keep_an_admin(cx, &member).await?;
    }
    let mut after = member.clone();
    after.role = v1::ProjectRole::from(role).into();
    after.touch(cx.actor.as_str(), cx.now);
    after.validate()?;
    let done = sqlx::query(
        r#"
        UPDATE project_members SET role = $1, version = $2, updated_at = $3, updated_by = $4
        WHERE project_id = $5 AND user_id = $6 AND version = $7
        "#,
    )
    .bind(role.as_str())
    .bind(after.version as i64)
    .bind(after.updated_at)
    .bind(&after.updated_by)
    .bind(&project_id)
    .bind(user.as_str())
    .bind(member.version as i64)
    .execute(&mut *cx.conn)
    .await?;
    written(cx, done.rows_affected(), member, after, Some(role))
}

/// Removes a member (admins, or members removing themselves); the last admin stays.
pub(super) async fn remove_member(cx: &mut Cx<'_>, c: &v1::RemoveMember) -> Result<Applied> {
    let project_id = parse_id("project_id", &c.project_id)?;
    let user = UserId::parse("user_id", &c.user_id)?;
    let (caller, _) = cx.member_role(&project_id, "project", false).await?;
    if user != *cx.actor {
        require(caller, Role::Admin)?;
    }
    let member = load_member(cx, &project_id, &user, c.expected_version).await?;
    keep_an_admin(cx, &member).await?;
    let done = sqlx::query(
        "DELETE FROM project_members WHERE project_id = $1 AND user_id = $2 AND version = $3",
    )
    .bind(&project_id)
    .bind(user.as_str())
    .bind(member.version as i64)
    .execute(&mut *cx.conn)
    .await?;
    // The row is gone; the event carries the member as it was removed.
    let mut after = member.clone();
    after.touch(cx.actor.as_str(), cx.now);
    after.deleted_at = Some(cx.now);
    written(cx, done.rows_affected(), member, after, None)
}

/// After a version-checked write of `before`'s row that touched `rows` rows: a conflict if it
/// had changed meanwhile; otherwise the cached role follows (`None`: no longer a member) and
/// the change is described.
fn written(
    cx: &mut Cx<'_>,
    rows: u64,
    before: v1::ProjectMember,
    after: v1::ProjectMember,
    role: Option<Role>,
) -> Result<Applied> {
    if rows != 1 {
        return Err(conflict(before));
    }
    cx.cache
        .roles
        .insert((before.project_id.clone(), before.user_id.clone()), role);
    let action = if role.is_some() {
        ChangeAction::Updated
    } else {
        ChangeAction::Deleted
    };
    Ok(Applied::one(Change::changed(&before, &after, action)))
}
