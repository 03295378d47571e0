//! Applying commands inside the writer's transaction: one module per command group.
//!
//! Every handler validates first and writes last, with a single statement where it can, so a
//! failing command leaves nothing behind without needing a savepoint (SQLite undoes a failed
//! statement on its own). Handlers that write more than once are listed in
//! [`needs_savepoint`]. Change-log rows are not written here: the writer appends those of the
//! whole group in one statement before it commits.

mod collab;
mod context;
mod planning;
mod projects;
mod work_items;

use pm_proto::v1;
use pm_proto::v1::command::Kind;

use crate::access::{self, editor};
use crate::error::Result;
use context::{restore, soft_delete};
pub(crate) use context::{Applied, Cache, Cx};

/// Commands whose writes may be deferred to the end of the group; every other command sees
/// the deferred rows inserted before it runs.
pub(crate) fn defers_writes(kind: &Kind) -> bool {
    matches!(kind, Kind::CreateWorkItem(_))
}

/// Commands that write more than one statement and so run inside a savepoint.
pub(crate) fn needs_savepoint(kind: &Kind) -> bool {
    matches!(kind, Kind::CreateProject(_))
}

/// Commands that change swim lanes, and so the WIP limits the writer caches.
fn changes_lanes(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::CreateSwimLane(_)
            | Kind::UpdateSwimLane(_)
            | Kind::DeleteSwimLane(_)
            | Kind::RestoreSwimLane(_)
    )
}

/// Applies one command.
pub(crate) async fn apply(cx: &mut Cx<'_>, kind: &Kind) -> Result<Applied> {
    cx.cache.trim();
    if changes_lanes(kind) {
        // Rare: forget every project's enforced lanes rather than find the lane's project.
        cx.cache.lanes.clear();
    }
    match kind {
        Kind::CreateProject(c) => projects::create(cx, c).await,
        Kind::UpdateProject(c) => projects::update(cx, c).await,
        Kind::DeleteProject(c) => projects::delete(cx, &c.id, c.expected_version).await,
        Kind::RestoreProject(c) => projects::restore(cx, &c.id, c.expected_version).await,
        Kind::AddMember(c) => projects::add_member(cx, c).await,
        Kind::UpdateMember(c) => projects::update_member(cx, c).await,
        Kind::RemoveMember(c) => projects::remove_member(cx, c).await,

        Kind::CreateWorkItem(c) => work_items::create(cx, c).await,
        Kind::UpdateWorkItem(c) => work_items::update(cx, c).await,
        Kind::MoveWorkItem(c) => work_items::move_item(cx, c).await,
        Kind::DeleteWorkItem(c) => {
            soft_delete::<v1::WorkItem>(cx, &c.id, c.expected_version, editor).await
        }
        Kind::RestoreWorkItem(c) => work_items::restore(cx, c).await,

        Kind::CreateSprint(c) => planning::create_sprint(cx, c).await,
        Kind::UpdateSprint(c) => planning::update_sprint(cx, c).await,
        Kind::DeleteSprint(c) => {
            soft_delete::<v1::Sprint>(cx, &c.id, c.expected_version, editor).await
        }
        Kind::RestoreSprint(c) => {
            restore::<v1::Sprint>(cx, &c.id, c.expected_version, editor).await
        }
        Kind::CreateSwimLane(c) => planning::create_swim_lane(cx, c).await,
        Kind::UpdateSwimLane(c) => planning::update_swim_lane(cx, c).await,
        Kind::DeleteSwimLane(c) => {
            soft_delete::<v1::SwimLane>(cx, &c.id, c.expected_version, editor).await
        }
        Kind::RestoreSwimLane(c) => {
            restore::<v1::SwimLane>(cx, &c.id, c.expected_version, editor).await
        }
        Kind::CreateLlmContext(c) => planning::create_llm_context(cx, c).await,
        Kind::UpdateLlmContext(c) => planning::update_llm_context(cx, c).await,
        Kind::DeleteLlmContext(c) => {
            soft_delete::<v1::LlmContext>(cx, &c.id, c.expected_version, editor).await
        }
        Kind::RestoreLlmContext(c) => {
            restore::<v1::LlmContext>(cx, &c.id, c.expected_version, editor).await
        }

        Kind::CreateComment(c) => collab::create_comment(cx, c).await,
        Kind::UpdateComment(c) => collab::update_comment(cx, c).await,
        Kind::DeleteComment(c) => {
            soft_delete::<v1::Comment>(cx, &c.id, c.expected_version, access::author_or_admin).await
        }
        Kind::RestoreComment(c) => {
            restore::<v1::Comment>(cx, &c.id, c.expected_version, access::author_or_admin).await
        }
        Kind::CreateTimeEntry(c) => collab::create_time_entry(cx, c).await,
        Kind::UpdateTimeEntry(c) => collab::update_time_entry(cx, c).await,
        Kind::DeleteTimeEntry(c) => {
            soft_delete::<v1::TimeEntry>(cx, &c.id, c.expected_version, access::owner).await
        }
        Kind::RestoreTimeEntry(c) => {
            restore::<v1::TimeEntry>(cx, &c.id, c.expected_version, access::owner).await
        }
        Kind::StartTimer(c) => collab::start_timer(cx, c).await,
        Kind::StopTimer(_) => collab::stop_timer(cx).await,
        Kind::CreateDependency(c) => collab::create_dependency(cx, c).await,
        Kind::UpdateDependency(c) => collab::update_dependency(cx, c).await,
        Kind::DeleteDependency(c) => {
            soft_delete::<v1::Dependency>(cx, &c.id, c.expected_version, editor).await
        }
        Kind::RestoreDependency(c) => collab::restore_dependency(cx, c).await,
    }
}
