//! Who may do what, engine-neutral: roles per project, who may change an entity, and what a
//! caller who may not even see a project is told.
//!
//! A user who is no member of a project learns nothing about it: every refusal is the same
//! `NOT_FOUND` as for an id that does not exist ([`not_found`]). Members are refused by role
//! with `PERMISSION_DENIED`, and content of an archived project is read-only.

use pm_core::kinds::Role;
use pm_core::UserId;
use pm_proto::v1;

use crate::entity::Entity;
use crate::error::{Error, Result};

/// What the rules need to know of a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProjectInfo {
    /// Its key, for work items' display keys (`PM-42`).
    pub(crate) key: String,
    /// Archived projects refuse changes of their content.
    pub(crate) archived: bool,
    /// Deleted projects are invisible but to a restore by their admins.
    pub(crate) deleted: bool,
}

/// The refusal for anything the caller may not see: the same text as for a missing one.
pub(crate) fn not_found(what: &str) -> Error {
    Error::NotFound(format!("{what} not found"))
}

/// Refuses a caller whose `role` is below `needed`.
pub(crate) fn require(role: Role, needed: Role) -> Result<()> {
    if role.allows(needed) {
        Ok(())
    } else {
        Err(Error::PermissionDenied(format!(
            "this needs the {needed} role in the project; you are a {role}"
        )))
    }
}

/// Refuses changes to the content of an archived project.
pub(crate) fn check_writable(project: &ProjectInfo) -> Result<()> {
    if project.archived {
        return Err(Error::FailedPrecondition(
            "the project is archived; unarchive it to change its content".into(),
        ));
    }
    Ok(())
}

/// Who may change an entity, given the caller and their role in its project.
pub(crate) type Permit<E> = fn(&E, &UserId, Role) -> Result<()>;

/// The default permit: editors and admins.
pub(crate) fn editor<E>(_: &E, _: &UserId, role: Role) -> Result<()> {
    require(role, Role::Editor)
}

/// Comments are deleted (and restored) by their author or an admin.
pub(crate) fn author_or_admin(comment: &v1::Comment, actor: &UserId, role: Role) -> Result<()> {
    if comment.created_by == actor.as_str() {
        require(role, Role::Editor)
    } else {
        require(role, Role::Admin)
    }
}

/// Comments are edited only by their author.
pub(crate) fn author(comment: &v1::Comment, actor: &UserId, role: Role) -> Result<()> {
    require(role, Role::Editor)?;
    if comment.created_by != actor.as_str() {
        return Err(Error::PermissionDenied(
            "only the author of a comment may edit it".into(),
        ));
    }
    Ok(())
}

/// Time entries are changed only by the user they belong to.
pub(crate) fn owner(entry: &v1::TimeEntry, actor: &UserId, role: Role) -> Result<()> {
    require(role, Role::Editor)?;
    if entry.user_id != actor.as_str() {
        return Err(Error::PermissionDenied(
            "only the owner of a time entry may change it".into(),
        ));
    }
    Ok(())
}

/// `CONFLICT` carrying the entity as it is now.
pub(crate) fn conflict<E: Entity>(current: E) -> Error {
    Error::Conflict {
        message: format!(
            "the {} was changed by someone else (now at version {})",
            E::NAME,
            current.version()
        ),
        current: Box::new(current.into_entity()),
    }
}

/// Refuses a change made against another version than the current one.
pub(crate) fn check_version<E: Entity>(current: &E, expected: u64) -> Result<()> {
    pm_core::rules::check_expected_version(expected)?;
    if current.version() != expected {
        return Err(conflict(current.clone()));
    }
    Ok(())
}
