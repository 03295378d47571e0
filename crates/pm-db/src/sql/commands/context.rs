//! What every command handler works with: the writer's connection inside the group's
//! transaction ([`Cx`]), the facts the writer caches between commands, what a command
//! produced, and the steps most handlers share (load with authorization, save with the
//! entity's rules, soft delete and restore).

use std::collections::HashMap;

use pm_core::kinds::{ChangeAction, Role};
use pm_core::{EntityId, UserId};
use pm_proto::v1;
use sqlx::Row;

use super::super::dialect::Conn;
use super::super::pending::Pending;
use super::super::records;
use crate::access::{self, check_version, check_writable, conflict, Permit, ProjectInfo};
use crate::entity::Entity;
use crate::error::{Error, Result};
use crate::events::Change;

/// What a successful command produced.
#[derive(Debug)]
pub(crate) struct Applied {
    /// One per changed entity, in order; the last one's seq is the command's seq.
    pub(crate) changes: Vec<Change>,
    /// The entity the command answers with.
    pub(crate) entity: v1::entity::Kind,
    /// What the client should know although the command succeeded.
    pub(crate) warnings: Vec<v1::Warning>,
}

impl Applied {
    pub(crate) fn one(change: Change) -> Self {
        Applied {
            entity: change.entity.clone(),
            changes: vec![change],
            warnings: Vec::new(),
        }
    }

    /// The same, carrying `warnings`.
    pub(crate) fn warned(mut self, warnings: Vec<v1::Warning>) -> Self {
        self.warnings.extend(warnings);
        self
    }
}

/// A live swim lane whose WIP limit is enforced (policy `warn` or `refuse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EnforcedLane {
    pub(crate) id: String,
    pub(crate) name: String,
    /// The stored status name it shows.
    pub(crate) status: String,
    pub(crate) limit: u32,
    /// `refuse` (else `warn`).
    pub(crate) refuse: bool,
}

/// Facts the writer keeps between commands to save a statement per command. The writer is
/// the only one changing them, so they stay exact; they are dropped whenever a transaction or
/// savepoint is rolled back. Where other writers change the same tenant (PostgreSQL nodes),
/// the writer first forgets what each change they committed touched.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    pub(crate) projects: HashMap<String, Option<ProjectInfo>>,
    pub(crate) roles: HashMap<(String, String), Option<Role>>,
    pub(crate) next_numbers: HashMap<String, u64>,
    /// Per project, its lanes with an enforced WIP limit (most projects: none).
    pub(crate) lanes: HashMap<String, Vec<EnforcedLane>>,
}

/// Bound on cached facts before the cache is simply emptied.
const CACHE_LIMIT: usize = 50_000;

impl Cache {
    pub(crate) fn clear(&mut self) {
        self.projects.clear();
        self.roles.clear();
        self.next_numbers.clear();
        self.lanes.clear();
    }

    pub(crate) fn trim(&mut self) {
        let facts =
            self.projects.len() + self.roles.len() + self.next_numbers.len() + self.lanes.len();
        if facts > CACHE_LIMIT {
            self.clear();
        }
    }
}

/// Everything a handler needs: the writer's connection inside its transaction, the cache,
/// the actor and the time of the command.
pub(crate) struct Cx<'a> {
    pub(crate) conn: &'a mut Conn,
    pub(crate) cache: &'a mut Cache,
    pub(crate) actor: &'a UserId,
    pub(crate) now: i64,
    /// The seq this command's first change will get.
    pub(crate) next_seq: u64,
    /// The group's transaction state and deferred inserts; `None` when this command may
    /// not defer (the writer then began the transaction and flushed before it).
    pub(crate) deferred: Option<&'a mut Pending>,
}

impl Cx<'_> {
    /// Inserts the deferred work items now, so that what follows can read them.
    pub(crate) async fn flush_deferred(&mut self) -> Result<()> {
        if let Some(pending) = self.deferred.as_deref_mut() {
            pending.flush(self.conn).await?;
        }
        Ok(())
    }
}

impl Cx<'_> {
    /// The project's facts, from the cache or one query.
    pub(crate) async fn project(&mut self, project_id: &str) -> Result<Option<ProjectInfo>> {
        if let Some(info) = self.cache.projects.get(project_id) {
            return Ok(info.clone());
        }
        let row = sqlx::query("SELECT key, status, deleted_at FROM projects WHERE id = $1")
            .bind(project_id)
            .fetch_optional(&mut *self.conn)
            .await?;
        let info = match row {
            Some(row) => Some(ProjectInfo {
                key: row.try_get("key")?,
                archived: row.try_get::<String, _>("status")? == "archived",
                deleted: row.try_get::<Option<i64>, _>("deleted_at")?.is_some(),
            }),
            None => None,
        };
        self.cache
            .projects
            .insert(project_id.to_owned(), info.clone());
        Ok(info)
    }

    /// The actor's role in the project, from the cache or one query.
    pub(crate) async fn role(&mut self, project_id: &str) -> Result<Option<Role>> {
        let key = (project_id.to_owned(), self.actor.as_str().to_owned());
        if let Some(role) = self.cache.roles.get(&key) {
            return Ok(*role);
        }
        let role: Option<String> = sqlx::query_scalar(
            "SELECT role FROM project_members WHERE project_id = $1 AND user_id = $2",
        )
        .bind(project_id)
        .bind(self.actor.as_str())
        .fetch_optional(&mut *self.conn)
        .await?;
        let role = role
            .map(|r| Role::parse("role", &r))
            .transpose()
            .map_err(|_| Error::Corrupt("unknown role".into()))?;
        self.cache.roles.insert(key, role);
        Ok(role)
    }

    /// The actor's role in a live project it is a member of. Anything else is `NOT_FOUND`
    /// with `what` as the subject, so non-members learn nothing.
    pub(crate) async fn member_role(
        &mut self,
        project_id: &str,
        what: &str,
        allow_deleted_project: bool,
    ) -> Result<(Role, ProjectInfo)> {
        let not_found = || access::not_found(what);
        let info = self.project(project_id).await?.ok_or_else(not_found)?;
        if info.deleted && !allow_deleted_project {
            return Err(not_found());
        }
        let role = self.role(project_id).await?.ok_or_else(not_found)?;
        Ok((role, info))
    }

    /// Authorizes a change of the project's content: a member with `needed`, project live
    /// and not archived.
    pub(crate) async fn authorize_content(
        &mut self,
        project_id: &str,
        what: &str,
        needed: Role,
    ) -> Result<ProjectInfo> {
        let (role, info) = self.member_role(project_id, what, false).await?;
        access::require(role, needed)?;
        check_writable(&info)?;
        Ok(info)
    }

    /// Loads a live entity of `R` the actor may see, with the actor's role in its project.
    pub(crate) async fn load<R: Entity>(
        &mut self,
        field: &str,
        id: &str,
    ) -> Result<(R, Role, ProjectInfo)> {
        let (record, role, info) = self.load_any::<R>(field, id, false).await?;
        if record.deleted_at().is_some() {
            return Err(access::not_found(R::NAME));
        }
        Ok((record, role, info))
    }

    /// Like `load`, deleted or not.
    pub(crate) async fn load_any<R: Entity>(
        &mut self,
        field: &str,
        id: &str,
        allow_deleted_project: bool,
    ) -> Result<(R, Role, ProjectInfo)> {
        let id = parse_id(field, id)?;
        let not_found = || access::not_found(R::NAME);
        let record: R = records::find(&mut *self.conn, &id)
            .await?
            .ok_or_else(not_found)?;
        let (role, info) = self
            .member_role(record.project_id(), R::NAME, allow_deleted_project)
            .await?;
        Ok((record.with_project_key(&info.key), role, info))
    }

    /// `record` with its audit fields set for a creation by the actor now, checked against
    /// the entity's rules.
    pub(crate) fn created<R: Entity>(&self, mut record: R) -> Result<R> {
        record.stamp_created(self.actor.as_str(), self.now);
        record.validate()?;
        Ok(record)
    }

    /// Saves `after` over `before` (checked against the entity's rules, version-checked in
    /// the statement) and describes the change.
    pub(crate) async fn save<R: Entity>(
        &mut self,
        before: &R,
        mut after: R,
        action: ChangeAction,
    ) -> Result<Applied> {
        after.touch(self.actor.as_str(), self.now);
        after.validate()?;
        if !records::update(self.conn, &after, before.version()).await? {
            return Err(conflict(before.clone()));
        }
        Ok(Applied::one(Change::changed(before, &after, action)))
    }
}

/// Soft-deletes an entity.
pub(crate) async fn soft_delete<R: Entity>(
    cx: &mut Cx<'_>,
    id: &str,
    expected: u64,
    permit: Permit<R>,
) -> Result<Applied> {
    let (record, role, info) = cx.load::<R>("id", id).await?;
    permit(&record, cx.actor, role)?;
    check_writable(&info)?;
    check_version(&record, expected)?;
    let mut after = record.clone();
    after.set_deleted_at(Some(cx.now));
    cx.save(&record, after, ChangeAction::Deleted).await
}

/// Restores a soft-deleted entity.
pub(crate) async fn restore<R: Entity>(
    cx: &mut Cx<'_>,
    id: &str,
    expected: u64,
    permit: Permit<R>,
) -> Result<Applied> {
    let (record, role, info) = cx.load_any::<R>("id", id, false).await?;
    permit(&record, cx.actor, role)?;
    check_writable(&info)?;
    if record.deleted_at().is_none() {
        return Err(Error::FailedPrecondition(format!(
            "the {} is not deleted",
            R::NAME
        )));
    }
    check_version(&record, expected)?;
    let mut after = record.clone();
    after.set_deleted_at(None);
    cx.save(&record, after, ChangeAction::Restored)
        .await
        .map_err(|e| restored_conflicts::<R>(e))
}

/// A restore can collide with a unique rule that a live row now holds (an active sprint, a
/// running timer, the same dependency).
fn restored_conflicts<R: Entity>(error: Error) -> Error {
    match &error {
        Error::Database(db) if is_unique_violation(db) => Error::FailedPrecondition(format!(
            "the {} cannot be restored: a live one now takes its place",
            R::NAME
        )),
        _ => error,
    }
}

/// Parses an entity id into its canonical text.
pub(crate) fn parse_id(field: &str, raw: &str) -> Result<String> {
    Ok(EntityId::parse(field, raw)?.to_text())
}

pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|db| db.is_unique_violation())
}

/// Maps a unique violation of the statement that produced `error` to a domain error.
pub(crate) fn on_unique(error: sqlx::Error, make: impl FnOnce() -> Error) -> Error {
    if is_unique_violation(&error) {
        make()
    } else {
        error.into()
    }
}
