//! Storage tests on real SQLite files: one temporary data directory per test.

mod support;
// The crate root of a test binary looks for modules beside it; `storage/` keeps this one
// from becoming a test binary of its own.
#[path = "storage/backup_export.rs"]
mod backup_export;
#[path = "storage/online_migration.rs"]
mod online_migration;
#[path = "storage/real_data.rs"]
mod real_data;
#[path = "storage/retention.rs"]
mod retention;
#[path = "storage/review.rs"]
mod review;

use std::collections::BTreeSet;
use std::sync::Arc;

use pm_core::kinds::EntityKind;
use pm_core::{EntityId, TenantId};
use pm_db::{EventFilter, RegistryConfig, TenantRegistry};
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;
use pm_proto::v1::query::Kind as Q;
use pm_proto::v1::query_result::Result as R;
use prost::Message;
use support::*;

use v1::ErrorCode as E;
use v1::WorkItemType as T;

/// Asserts that `got` is the seq right after `*last`, and advances `*last`.
fn next_seq(last: &mut u64, got: u64) {
    *last += 1;
    assert_eq!(got, *last, "seqs of consecutive commands are consecutive");
}

/// Runs a `List*` query (page size 500) that must succeed and returns its items.
macro_rules! list {
    ($tenant:expr, $actor:expr, $q:ident { $($body:tt)* } => $r:ident) => {
        match query($tenant, $actor, Q::$q(v1::$q { page: page500(), $($body)* }))
            .await
            .expect("list query")
        {
            R::$r(r) => {
                assert_eq!(r.next_page_token, "", "everything fits in one page");
                r.items
            }
            other => panic!("unexpected result {other:?}"),
        }
    };
}

fn a_uuid() -> String {
    EntityId::new().to_text()
}

#[tokio::test]
async fn create_project_and_work_item_then_read_them_back() {
    let env = TestEnv::new();
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "PM").await;
    assert_eq!(project.key, "PM");
    assert_eq!(project.version, 1);
    let (item, seq) = create_item(
        &tenant,
        &ALICE,
        &project.id,
        v1::WorkItemType::Epic,
        "First",
    )
    .await;
    assert_eq!(item.number, 1);
    assert_eq!(item.display_key, "PM-1");
    // Project (1) + its admin member (2) + the item (3).
    assert_eq!(seq, 3);
    assert_eq!(tenant.head_seq(), 3);

    let listed = list_items(&tenant, &ALICE, &project.id, 0, "").await;
    assert_eq!(listed.as_of_seq, 3);
    assert_eq!(listed.items, vec![item]);
}

// ---------------------------------------------------------------------------------------
// 1. CRUD, soft delete and restore of every entity
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn project_crud_soft_delete_and_restore() {
    let env = TestEnv::new();
    let tenant = env.tenant("acme").await;
    let (created, seq) = run::<v1::Project>(
        &tenant,
        &ALICE,
        C::CreateProject(v1::CreateProject {
            key: "PM".into(),
            name: "Platform".into(),
            description: "The platform team".into(),
        }),
    )
    .await;
    // The project (1) and its admin membership (2): the result carries the last seq.
    assert_eq!(seq, 2);
    let mut last = 2;
    assert_eq!(created.id.len(), 36);
    assert_eq!(created.key, "PM");
    assert_eq!(created.name, "Platform");
    assert_eq!(created.description, "The platform team");
    assert_eq!(created.status, v1::ProjectStatus::Active as i32);
    assert_eq!(created.version, 1);
    assert_eq!(created.created_by, "alice");
    assert_eq!(created.updated_by, "alice");
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(created.deleted_at, None);
    assert_eq!(
        get::<v1::Project>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        created
    );
    let members =
        list!(&tenant, &ALICE, ListMembers { project_id: created.id.clone() } => ListMembersResult);
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].user_id, "alice");
    assert_eq!(members[0].role, v1::ProjectRole::Admin as i32);
    // Keys are unique per tenant; the refused project leaves nothing behind.
    let err = fail(
        &tenant,
        &BOB,
        C::CreateProject(v1::CreateProject {
            key: "PM".into(),
            name: "Another".into(),
            description: String::new(),
        }),
    )
    .await;
    assert_eq!(err.code(), E::FailedPrecondition, "{err:?}");
    assert_eq!(tenant.head_seq(), 2);
    let bobs = list!(&tenant, &BOB, ListProjects { include_deleted: true, ..Default::default() } => ListProjectsResult);
    assert_eq!(bobs, vec![]);

    let (updated, seq) = run::<v1::Project>(
        &tenant,
        &ALICE,
        C::UpdateProject(v1::UpdateProject {
            id: created.id.clone(),
            expected_version: 1,
            name: Some("Platform team".into()),
            ..Default::default()
        }),
    )
    .await;
    next_seq(&mut last, seq);
    assert!(updated.updated_at >= created.updated_at);
    let mut expected = created.clone();
    expected.name = "Platform team".into();
    expected.version = 2;
    expected.updated_at = updated.updated_at;
    assert_eq!(updated, expected);
    assert_eq!(
        get::<v1::Project>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        updated
    );

    let (deleted, seq) = run::<v1::Project>(
        &tenant,
        &ALICE,
        C::DeleteProject(v1::DeleteProject {
            id: created.id.clone(),
            expected_version: 2,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = updated.clone();
    expected.version = 3;
    expected.updated_at = deleted.updated_at;
    expected.deleted_at = Some(deleted.updated_at);
    assert_eq!(deleted, expected);
    // A deleted project is gone for reads and for content writes...
    let err = get::<v1::Project>(&tenant, &ALICE, &created.id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), E::NotFound);
    let err = fail(
        &tenant,
        &ALICE,
        new_item(&created.id, T::Epic, "Too late", None),
    )
    .await;
    assert_eq!(err.code(), E::NotFound);
    // ... and absent from the default list, but listed with `include_deleted`.
    let live = list!(&tenant, &ALICE, ListProjects { ..Default::default() } => ListProjectsResult);
    assert_eq!(live, vec![]);
    let all = list!(&tenant, &ALICE, ListProjects { include_deleted: true, ..Default::default() } => ListProjectsResult);
    assert_eq!(all, vec![deleted.clone()]);

    let (restored, seq) = run::<v1::Project>(
        &tenant,
        &ALICE,
        C::RestoreProject(v1::RestoreProject {
            id: created.id.clone(),
            expected_version: 3,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = deleted.clone();
    expected.version = 4;
    expected.updated_at = restored.updated_at;
    expected.deleted_at = None;
    assert_eq!(restored, expected);
    assert_eq!(
        get::<v1::Project>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        restored
    );
    let live = list!(&tenant, &ALICE, ListProjects { ..Default::default() } => ListProjectsResult);
    assert_eq!(live, vec![restored]);
    assert_eq!(tenant.head_seq(), last);
}

#[tokio::test]
async fn member_add_update_remove_and_re_add() {
    let (_env, tenant, project) = setup().await;
    let mut last = 2;
    let (added, seq) = run::<v1::ProjectMember>(
        &tenant,
        &ALICE,
        C::AddMember(v1::AddMember {
            project_id: project.id.clone(),
            user_id: "bob".into(),
            role: v1::ProjectRole::Editor.into(),
        }),
    )
    .await;
    next_seq(&mut last, seq);
    assert_eq!(added.project_id, project.id);
    assert_eq!(added.user_id, "bob");
    assert_eq!(added.role, v1::ProjectRole::Editor as i32);
    assert_eq!(added.version, 1);
    assert_eq!(added.created_by, "alice");
    assert_eq!(added.updated_by, "alice");
    assert_eq!(added.deleted_at, None);
    let members =
        list!(&tenant, &ALICE, ListMembers { project_id: project.id.clone() } => ListMembersResult);
    assert_eq!(
        members
            .iter()
            .map(|m| m.user_id.as_str())
            .collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    assert_eq!(members[1], added);
    // Bob now reads the project.
    assert_eq!(
        get::<v1::Project>(&tenant, &BOB, &project.id)
            .await
            .unwrap(),
        project
    );

    // Adding him again is a conflict carrying the membership as it is.
    let err = fail(
        &tenant,
        &ALICE,
        C::AddMember(v1::AddMember {
            project_id: project.id.clone(),
            user_id: "bob".into(),
            role: v1::ProjectRole::Admin.into(),
        }),
    )
    .await;
    match &err {
        pm_db::Error::Conflict { current, .. } => {
            assert_eq!(entity_as::<v1::ProjectMember>(Some(current)), added)
        }
        other => panic!("expected CONFLICT, got {other:?}"),
    }

    let (updated, seq) = run::<v1::ProjectMember>(
        &tenant,
        &ALICE,
        C::UpdateMember(v1::UpdateMember {
            project_id: project.id.clone(),
            user_id: "bob".into(),
            expected_version: 1,
            role: v1::ProjectRole::Viewer.into(),
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = added.clone();
    expected.role = v1::ProjectRole::Viewer as i32;
    expected.version = 2;
    expected.updated_at = updated.updated_at;
    assert_eq!(updated, expected);
    let members =
        list!(&tenant, &ALICE, ListMembers { project_id: project.id.clone() } => ListMembersResult);
    assert_eq!(members[1], updated);

    let (removed, seq) = run::<v1::ProjectMember>(
        &tenant,
        &ALICE,
        C::RemoveMember(v1::RemoveMember {
            project_id: project.id.clone(),
            user_id: "bob".into(),
            expected_version: 2,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = updated.clone();
    expected.version = 3;
    expected.updated_at = removed.updated_at;
    expected.deleted_at = Some(removed.updated_at);
    assert_eq!(removed, expected);
    let members =
        list!(&tenant, &ALICE, ListMembers { project_id: project.id.clone() } => ListMembersResult);
    assert_eq!(
        members
            .iter()
            .map(|m| m.user_id.as_str())
            .collect::<Vec<_>>(),
        ["alice"]
    );
    // Bob no longer sees the project.
    let err = get::<v1::Project>(&tenant, &BOB, &project.id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), E::NotFound);

    // Members are removed outright; "restoring" one is adding it again.
    let (again, seq) = run::<v1::ProjectMember>(
        &tenant,
        &ALICE,
        C::AddMember(v1::AddMember {
            project_id: project.id.clone(),
            user_id: "bob".into(),
            role: v1::ProjectRole::Editor.into(),
        }),
    )
    .await;
    next_seq(&mut last, seq);
    assert_eq!(again.version, 1);
    assert_eq!(again.role, v1::ProjectRole::Editor as i32);
    assert_eq!(again.deleted_at, None);
    assert_eq!(
        get::<v1::Project>(&tenant, &BOB, &project.id)
            .await
            .unwrap(),
        project
    );
    assert_eq!(tenant.head_seq(), last);
}

#[tokio::test]
async fn work_item_crud_soft_delete_and_restore() {
    let (_env, tenant, project) = setup().await;
    let mut last = 2;
    let (created, seq) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::CreateWorkItem(v1::CreateWorkItem {
            project_id: project.id.clone(),
            item_type: T::Story.into(),
            title: "Sign-up form".into(),
            description: "Email and password".into(),
            status: v1::WorkItemStatus::Todo.into(),
            priority: v1::Priority::High.into(),
            story_points: Some(5),
            assignee_id: Some("bob".into()),
            ..Default::default()
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let expected_created = v1::WorkItem {
        id: created.id.clone(),
        project_id: project.id.clone(),
        number: 1,
        display_key: "PM-1".into(),
        item_type: T::Story.into(),
        parent_id: None,
        title: "Sign-up form".into(),
        description: "Email and password".into(),
        status: v1::WorkItemStatus::Todo.into(),
        priority: v1::Priority::High.into(),
        story_points: Some(5),
        assignee_id: Some("bob".into()),
        sprint_id: None,
        rank: pm_core::rank::for_new_item(3),
        version: 1,
        created_at: created.created_at,
        created_by: "alice".into(),
        updated_at: created.created_at,
        updated_by: "alice".into(),
        deleted_at: None,
    };
    assert_eq!(created, expected_created);
    assert_eq!(
        get::<v1::WorkItem>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        created
    );
    let by_key = query(
        &tenant,
        &ALICE,
        Q::GetWorkItem(v1::GetWorkItem {
            id: String::new(),
            display_key: "PM-1".into(),
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        by_key,
        R::GetWorkItemResult(v1::GetWorkItemResult {
            work_item: Some(created.clone()),
            as_of_seq: 3,
        })
    );

    let (updated, seq) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::UpdateWorkItem(v1::UpdateWorkItem {
            id: created.id.clone(),
            expected_version: 1,
            title: Some("Sign-up form with captcha".into()),
            ..Default::default()
        }),
    )
    .await;
    next_seq(&mut last, seq);
    assert!(updated.updated_at >= created.updated_at);
    let mut expected = created.clone();
    expected.title = "Sign-up form with captcha".into();
    expected.version = 2;
    expected.updated_at = updated.updated_at;
    assert_eq!(updated, expected);
    assert_eq!(
        get::<v1::WorkItem>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        updated
    );

    // Clearing a nullable field names it; nothing else changes.
    let (cleared, seq) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::UpdateWorkItem(v1::UpdateWorkItem {
            id: created.id.clone(),
            expected_version: 2,
            clear_fields: vec!["story_points".into()],
            ..Default::default()
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = updated.clone();
    expected.story_points = None;
    expected.version = 3;
    expected.updated_at = cleared.updated_at;
    assert_eq!(cleared, expected);

    let (deleted, seq) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::DeleteWorkItem(v1::DeleteWorkItem {
            id: created.id.clone(),
            expected_version: 3,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = cleared.clone();
    expected.version = 4;
    expected.updated_at = deleted.updated_at;
    expected.deleted_at = Some(deleted.updated_at);
    assert_eq!(deleted, expected);
    assert_eq!(all_items(&tenant, &ALICE, &project.id, false).await, vec![]);
    assert_eq!(
        all_items(&tenant, &ALICE, &project.id, true).await,
        vec![deleted.clone()]
    );

    let (restored, seq) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::RestoreWorkItem(v1::RestoreWorkItem {
            id: created.id.clone(),
            expected_version: 4,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = deleted.clone();
    expected.version = 5;
    expected.updated_at = restored.updated_at;
    expected.deleted_at = None;
    assert_eq!(restored, expected);
    assert_eq!(
        all_items(&tenant, &ALICE, &project.id, false).await,
        vec![restored.clone()]
    );
    assert_eq!(
        get::<v1::WorkItem>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        restored
    );
    assert_eq!(tenant.head_seq(), last);
}

#[tokio::test]
async fn move_work_item_reorders_and_changes_status() {
    let (_env, tenant, project) = setup().await;
    let (a, _) =
        run::<v1::WorkItem>(&tenant, &ALICE, new_item(&project.id, T::Task, "A", None)).await;
    let (b, _) =
        run::<v1::WorkItem>(&tenant, &ALICE, new_item(&project.id, T::Task, "B", None)).await;
    let (c, _) =
        run::<v1::WorkItem>(&tenant, &ALICE, new_item(&project.id, T::Task, "C", None)).await;
    let (moved, seq) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::MoveWorkItem(v1::MoveWorkItem {
            id: c.id.clone(),
            expected_version: 1,
            status: Some(v1::WorkItemStatus::InProgress.into()),
            after_id: Some(a.id.clone()),
            before_id: Some(b.id.clone()),
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(seq, 6);
    assert!(a.rank < moved.rank && moved.rank < b.rank, "{moved:?}");
    let mut expected = c.clone();
    expected.status = v1::WorkItemStatus::InProgress.into();
    expected.rank = moved.rank.clone();
    expected.version = 2;
    expected.updated_at = moved.updated_at;
    assert_eq!(moved, expected);
    let titles = |items: Vec<v1::WorkItem>| items.into_iter().map(|i| i.title).collect::<Vec<_>>();
    assert_eq!(
        titles(all_items(&tenant, &ALICE, &project.id, false).await),
        ["A", "C", "B"]
    );

    // Last, after B.
    run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::MoveWorkItem(v1::MoveWorkItem {
            id: a.id.clone(),
            expected_version: 1,
            after_id: Some(b.id.clone()),
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(
        titles(all_items(&tenant, &ALICE, &project.id, false).await),
        ["C", "B", "A"]
    );

    // An item is not its own neighbour.
    let err = fail(
        &tenant,
        &ALICE,
        C::MoveWorkItem(v1::MoveWorkItem {
            id: b.id.clone(),
            expected_version: 1,
            before_id: Some(b.id.clone()),
            ..Default::default()
        }),
    )
    .await;
    assert_invalid(&err, "before_id");

    // The move is logged as `moved` with exactly the changed fields.
    let events = tenant
        .read_events(5, Some(6), 10, &EventFilter::default())
        .await
        .unwrap();
    let event = events[0].decode().unwrap();
    assert_eq!(event.seq, 6);
    assert_eq!(event.action, v1::ChangeAction::Moved as i32);
    assert_eq!(
        event.changes,
        vec![
            v1::FieldChange {
                field: "status".into(),
                old_value: Some("backlog".into()),
                new_value: Some("in_progress".into()),
            },
            v1::FieldChange {
                field: "rank".into(),
                old_value: Some(c.rank.clone()),
                new_value: Some(moved.rank.clone()),
            },
        ]
    );
}

#[tokio::test]
async fn sprint_crud_soft_delete_and_restore() {
    let (_env, tenant, project) = setup().await;
    let mut last = 2;
    let (created, seq) = run::<v1::Sprint>(
        &tenant,
        &ALICE,
        C::CreateSprint(v1::CreateSprint {
            project_id: project.id.clone(),
            name: "Sprint 1".into(),
            goal: "Ship sign-up".into(),
            start_at: Some(1_700_000_000_000),
            end_at: Some(1_701_209_600_000),
        }),
    )
    .await;
    next_seq(&mut last, seq);
    assert_eq!(
        created,
        v1::Sprint {
            id: created.id.clone(),
            project_id: project.id.clone(),
            name: "Sprint 1".into(),
            goal: "Ship sign-up".into(),
            status: v1::SprintStatus::Planned.into(),
            start_at: Some(1_700_000_000_000),
            end_at: Some(1_701_209_600_000),
            version: 1,
            created_at: created.created_at,
            created_by: "alice".into(),
            updated_at: created.created_at,
            updated_by: "alice".into(),
            deleted_at: None,
        }
    );
    assert_eq!(
        get::<v1::Sprint>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        created
    );

    let (updated, seq) = run::<v1::Sprint>(
        &tenant,
        &ALICE,
        C::UpdateSprint(v1::UpdateSprint {
            id: created.id.clone(),
            expected_version: 1,
            name: Some("Sprint 1: sign-up".into()),
            ..Default::default()
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = created.clone();
    expected.name = "Sprint 1: sign-up".into();
    expected.version = 2;
    expected.updated_at = updated.updated_at;
    assert_eq!(updated, expected);
    assert_eq!(
        get::<v1::Sprint>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        updated
    );

    let (deleted, seq) = run::<v1::Sprint>(
        &tenant,
        &ALICE,
        C::DeleteSprint(v1::DeleteSprint {
            id: created.id.clone(),
            expected_version: 2,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = updated.clone();
    expected.version = 3;
    expected.updated_at = deleted.updated_at;
    expected.deleted_at = Some(deleted.updated_at);
    assert_eq!(deleted, expected);
    let live = list!(&tenant, &ALICE, ListSprints { project_id: project.id.clone(), ..Default::default() } => ListSprintsResult);
    assert_eq!(live, vec![]);
    let all = list!(&tenant, &ALICE, ListSprints { project_id: project.id.clone(), include_deleted: true, ..Default::default() } => ListSprintsResult);
    assert_eq!(all, vec![deleted.clone()]);

    let (restored, seq) = run::<v1::Sprint>(
        &tenant,
        &ALICE,
        C::RestoreSprint(v1::RestoreSprint {
            id: created.id.clone(),
            expected_version: 3,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = deleted.clone();
    expected.version = 4;
    expected.updated_at = restored.updated_at;
    expected.deleted_at = None;
    assert_eq!(restored, expected);
    let live = list!(&tenant, &ALICE, ListSprints { project_id: project.id.clone(), ..Default::default() } => ListSprintsResult);
    assert_eq!(live, vec![restored.clone()]);
    assert_eq!(
        get::<v1::Sprint>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        restored
    );
    assert_eq!(tenant.head_seq(), last);
}

#[tokio::test]
async fn comment_crud_soft_delete_and_restore() {
    let (_env, tenant, project) = setup().await;
    let (item, mut last) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(&project.id, T::Task, "Task", None),
    )
    .await;
    let (created, seq) = run::<v1::Comment>(
        &tenant,
        &ALICE,
        C::CreateComment(v1::CreateComment {
            work_item_id: item.id.clone(),
            content: "Looks **good**".into(),
        }),
    )
    .await;
    next_seq(&mut last, seq);
    assert_eq!(
        created,
        v1::Comment {
            id: created.id.clone(),
            project_id: project.id.clone(),
            work_item_id: item.id.clone(),
            content: "Looks **good**".into(),
            version: 1,
            created_at: created.created_at,
            created_by: "alice".into(),
            updated_at: created.created_at,
            updated_by: "alice".into(),
            deleted_at: None,
        }
    );
    assert_eq!(
        get::<v1::Comment>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        created
    );

    let (updated, seq) = run::<v1::Comment>(
        &tenant,
        &ALICE,
        C::UpdateComment(v1::UpdateComment {
            id: created.id.clone(),
            expected_version: 1,
            content: "Looks good, merged".into(),
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = created.clone();
    expected.content = "Looks good, merged".into();
    expected.version = 2;
    expected.updated_at = updated.updated_at;
    assert_eq!(updated, expected);
    assert_eq!(
        get::<v1::Comment>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        updated
    );

    let (deleted, seq) = run::<v1::Comment>(
        &tenant,
        &ALICE,
        C::DeleteComment(v1::DeleteComment {
            id: created.id.clone(),
            expected_version: 2,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = updated.clone();
    expected.version = 3;
    expected.updated_at = deleted.updated_at;
    expected.deleted_at = Some(deleted.updated_at);
    assert_eq!(deleted, expected);
    let live = list!(&tenant, &ALICE, ListComments { work_item_id: item.id.clone(), ..Default::default() } => ListCommentsResult);
    assert_eq!(live, vec![]);
    let all = list!(&tenant, &ALICE, ListComments { work_item_id: item.id.clone(), include_deleted: true } => ListCommentsResult);
    assert_eq!(all, vec![deleted.clone()]);

    let (restored, seq) = run::<v1::Comment>(
        &tenant,
        &ALICE,
        C::RestoreComment(v1::RestoreComment {
            id: created.id.clone(),
            expected_version: 3,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = deleted.clone();
    expected.version = 4;
    expected.updated_at = restored.updated_at;
    expected.deleted_at = None;
    assert_eq!(restored, expected);
    let live = list!(&tenant, &ALICE, ListComments { work_item_id: item.id.clone(), ..Default::default() } => ListCommentsResult);
    assert_eq!(live, vec![restored.clone()]);
    assert_eq!(tenant.head_seq(), last);

    // Only the author edits a comment.
    add_member(&tenant, &project.id, &BOB, v1::ProjectRole::Editor).await;
    let err = fail(
        &tenant,
        &BOB,
        C::UpdateComment(v1::UpdateComment {
            id: created.id.clone(),
            expected_version: 4,
            content: "Not mine".into(),
        }),
    )
    .await;
    assert_eq!(err.code(), E::PermissionDenied);
}

#[tokio::test]
async fn time_entry_crud_timer_soft_delete_and_restore() {
    let (_env, tenant, project) = setup().await;
    let (item, mut last) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(&project.id, T::Task, "Task", None),
    )
    .await;
    let started = 1_700_000_000_000;
    let (created, seq) = run::<v1::TimeEntry>(
        &tenant,
        &ALICE,
        C::CreateTimeEntry(v1::CreateTimeEntry {
            work_item_id: item.id.clone(),
            started_at: started,
            ended_at: started + 3_600_000,
            description: "Pairing".into(),
        }),
    )
    .await;
    next_seq(&mut last, seq);
    assert_eq!(
        created,
        v1::TimeEntry {
            id: created.id.clone(),
            project_id: project.id.clone(),
            work_item_id: item.id.clone(),
            user_id: "alice".into(),
            started_at: started,
            ended_at: Some(started + 3_600_000),
            description: "Pairing".into(),
            version: 1,
            created_at: created.created_at,
            created_by: "alice".into(),
            updated_at: created.created_at,
            updated_by: "alice".into(),
            deleted_at: None,
        }
    );
    assert_eq!(
        get::<v1::TimeEntry>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        created
    );

    let (updated, seq) = run::<v1::TimeEntry>(
        &tenant,
        &ALICE,
        C::UpdateTimeEntry(v1::UpdateTimeEntry {
            id: created.id.clone(),
            expected_version: 1,
            description: Some("Pairing with Bob".into()),
            ..Default::default()
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = created.clone();
    expected.description = "Pairing with Bob".into();
    expected.version = 2;
    expected.updated_at = updated.updated_at;
    assert_eq!(updated, expected);
    assert_eq!(
        get::<v1::TimeEntry>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        updated
    );

    let (deleted, seq) = run::<v1::TimeEntry>(
        &tenant,
        &ALICE,
        C::DeleteTimeEntry(v1::DeleteTimeEntry {
            id: created.id.clone(),
            expected_version: 2,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = updated.clone();
    expected.version = 3;
    expected.updated_at = deleted.updated_at;
    expected.deleted_at = Some(deleted.updated_at);
    assert_eq!(deleted, expected);
    let live = list!(&tenant, &ALICE, ListTimeEntries { project_id: project.id.clone(), ..Default::default() } => ListTimeEntriesResult);
    assert_eq!(live, vec![]);
    let all = list!(&tenant, &ALICE, ListTimeEntries { project_id: project.id.clone(), include_deleted: true, ..Default::default() } => ListTimeEntriesResult);
    assert_eq!(all, vec![deleted.clone()]);

    let (restored, seq) = run::<v1::TimeEntry>(
        &tenant,
        &ALICE,
        C::RestoreTimeEntry(v1::RestoreTimeEntry {
            id: created.id.clone(),
            expected_version: 3,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = deleted.clone();
    expected.version = 4;
    expected.updated_at = restored.updated_at;
    expected.deleted_at = None;
    assert_eq!(restored, expected);

    // The timer: a running entry without `ended_at`, then stopped.
    let (running, seq) = run::<v1::TimeEntry>(
        &tenant,
        &ALICE,
        C::StartTimer(v1::StartTimer {
            work_item_id: item.id.clone(),
            description: "Focus".into(),
        }),
    )
    .await;
    next_seq(&mut last, seq);
    assert_eq!(
        running,
        v1::TimeEntry {
            id: running.id.clone(),
            project_id: project.id.clone(),
            work_item_id: item.id.clone(),
            user_id: "alice".into(),
            started_at: running.created_at,
            ended_at: None,
            description: "Focus".into(),
            version: 1,
            created_at: running.created_at,
            created_by: "alice".into(),
            updated_at: running.created_at,
            updated_by: "alice".into(),
            deleted_at: None,
        }
    );
    let (stopped, seq) =
        run::<v1::TimeEntry>(&tenant, &ALICE, C::StopTimer(v1::StopTimer {})).await;
    next_seq(&mut last, seq);
    let ended = stopped.ended_at.expect("a stopped timer has ended");
    assert!(ended > running.started_at);
    let mut expected = running.clone();
    expected.ended_at = Some(ended);
    expected.version = 2;
    expected.updated_at = stopped.updated_at;
    assert_eq!(stopped, expected);
    let mine = list!(&tenant, &ALICE, ListTimeEntries {
        project_id: project.id.clone(),
        user_id: Some("alice".into()),
        ..Default::default()
    } => ListTimeEntriesResult);
    assert_eq!(mine, vec![restored, stopped]);
    assert_eq!(tenant.head_seq(), last);
}

#[tokio::test]
async fn dependency_crud_soft_delete_and_restore() {
    let (_env, tenant, project) = setup().await;
    let (a, _) =
        run::<v1::WorkItem>(&tenant, &ALICE, new_item(&project.id, T::Task, "A", None)).await;
    let (b, mut last) =
        run::<v1::WorkItem>(&tenant, &ALICE, new_item(&project.id, T::Task, "B", None)).await;
    let (created, seq) = run::<v1::Dependency>(
        &tenant,
        &ALICE,
        C::CreateDependency(v1::CreateDependency {
            blocking_item_id: a.id.clone(),
            blocked_item_id: b.id.clone(),
            dependency_type: v1::DependencyType::Blocks.into(),
        }),
    )
    .await;
    next_seq(&mut last, seq);
    assert_eq!(
        created,
        v1::Dependency {
            id: created.id.clone(),
            project_id: project.id.clone(),
            blocking_item_id: a.id.clone(),
            blocked_item_id: b.id.clone(),
            dependency_type: v1::DependencyType::Blocks.into(),
            version: 1,
            created_at: created.created_at,
            created_by: "alice".into(),
            updated_at: created.created_at,
            updated_by: "alice".into(),
            deleted_at: None,
        }
    );
    assert_eq!(
        get::<v1::Dependency>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        created
    );

    let (updated, seq) = run::<v1::Dependency>(
        &tenant,
        &ALICE,
        C::UpdateDependency(v1::UpdateDependency {
            id: created.id.clone(),
            expected_version: 1,
            dependency_type: v1::DependencyType::RelatesTo.into(),
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = created.clone();
    expected.dependency_type = v1::DependencyType::RelatesTo.into();
    expected.version = 2;
    expected.updated_at = updated.updated_at;
    assert_eq!(updated, expected);
    assert_eq!(
        get::<v1::Dependency>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        updated
    );

    let (deleted, seq) = run::<v1::Dependency>(
        &tenant,
        &ALICE,
        C::DeleteDependency(v1::DeleteDependency {
            id: created.id.clone(),
            expected_version: 2,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = updated.clone();
    expected.version = 3;
    expected.updated_at = deleted.updated_at;
    expected.deleted_at = Some(deleted.updated_at);
    assert_eq!(deleted, expected);
    let live = list!(&tenant, &ALICE, ListDependencies { project_id: project.id.clone(), ..Default::default() } => ListDependenciesResult);
    assert_eq!(live, vec![]);
    let all = list!(&tenant, &ALICE, ListDependencies { project_id: project.id.clone(), include_deleted: true, ..Default::default() } => ListDependenciesResult);
    assert_eq!(all, vec![deleted.clone()]);

    let (restored, seq) = run::<v1::Dependency>(
        &tenant,
        &ALICE,
        C::RestoreDependency(v1::RestoreDependency {
            id: created.id.clone(),
            expected_version: 3,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = deleted.clone();
    expected.version = 4;
    expected.updated_at = restored.updated_at;
    expected.deleted_at = None;
    assert_eq!(restored, expected);
    let touching_b = list!(&tenant, &ALICE, ListDependencies {
        project_id: project.id.clone(),
        work_item_id: Some(b.id.clone()),
        ..Default::default()
    } => ListDependenciesResult);
    assert_eq!(touching_b, vec![restored]);
    assert_eq!(tenant.head_seq(), last);
}

#[tokio::test]
async fn swim_lane_crud_soft_delete_and_restore() {
    let (_env, tenant, project) = setup().await;
    let mut last = 2;
    let (created, seq) = run::<v1::SwimLane>(
        &tenant,
        &ALICE,
        C::CreateSwimLane(v1::CreateSwimLane {
            project_id: project.id.clone(),
            name: "Doing".into(),
            status: v1::WorkItemStatus::InProgress.into(),
            position: 2,
            wip_limit: Some(3),
        }),
    )
    .await;
    next_seq(&mut last, seq);
    assert_eq!(
        created,
        v1::SwimLane {
            id: created.id.clone(),
            project_id: project.id.clone(),
            name: "Doing".into(),
            status: v1::WorkItemStatus::InProgress.into(),
            position: 2,
            wip_limit: Some(3),
            version: 1,
            created_at: created.created_at,
            created_by: "alice".into(),
            updated_at: created.created_at,
            updated_by: "alice".into(),
            deleted_at: None,
        }
    );
    assert_eq!(
        get::<v1::SwimLane>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        created
    );

    let (updated, seq) = run::<v1::SwimLane>(
        &tenant,
        &ALICE,
        C::UpdateSwimLane(v1::UpdateSwimLane {
            id: created.id.clone(),
            expected_version: 1,
            name: Some("In progress".into()),
            ..Default::default()
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = created.clone();
    expected.name = "In progress".into();
    expected.version = 2;
    expected.updated_at = updated.updated_at;
    assert_eq!(updated, expected);
    assert_eq!(
        get::<v1::SwimLane>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        updated
    );

    let (unlimited, seq) = run::<v1::SwimLane>(
        &tenant,
        &ALICE,
        C::UpdateSwimLane(v1::UpdateSwimLane {
            id: created.id.clone(),
            expected_version: 2,
            clear_fields: vec!["wip_limit".into()],
            ..Default::default()
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = updated.clone();
    expected.wip_limit = None;
    expected.version = 3;
    expected.updated_at = unlimited.updated_at;
    assert_eq!(unlimited, expected);

    let (deleted, seq) = run::<v1::SwimLane>(
        &tenant,
        &ALICE,
        C::DeleteSwimLane(v1::DeleteSwimLane {
            id: created.id.clone(),
            expected_version: 3,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = unlimited.clone();
    expected.version = 4;
    expected.updated_at = deleted.updated_at;
    expected.deleted_at = Some(deleted.updated_at);
    assert_eq!(deleted, expected);
    let live = list!(&tenant, &ALICE, ListSwimLanes { project_id: project.id.clone(), ..Default::default() } => ListSwimLanesResult);
    assert_eq!(live, vec![]);
    let all = list!(&tenant, &ALICE, ListSwimLanes { project_id: project.id.clone(), include_deleted: true } => ListSwimLanesResult);
    assert_eq!(all, vec![deleted.clone()]);

    let (restored, seq) = run::<v1::SwimLane>(
        &tenant,
        &ALICE,
        C::RestoreSwimLane(v1::RestoreSwimLane {
            id: created.id.clone(),
            expected_version: 4,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = deleted.clone();
    expected.version = 5;
    expected.updated_at = restored.updated_at;
    expected.deleted_at = None;
    assert_eq!(restored, expected);
    let live = list!(&tenant, &ALICE, ListSwimLanes { project_id: project.id.clone(), ..Default::default() } => ListSwimLanesResult);
    assert_eq!(live, vec![restored]);
    assert_eq!(tenant.head_seq(), last);
}

#[tokio::test]
async fn llm_context_crud_soft_delete_and_restore() {
    let (_env, tenant, project) = setup().await;
    let mut last = 2;
    let (created, seq) = run::<v1::LlmContext>(
        &tenant,
        &ALICE,
        C::CreateLlmContext(v1::CreateLlmContext {
            project_id: project.id.clone(),
            category: v1::LlmContextCategory::SchemaDoc.into(),
            title: "Work items".into(),
            content: "Epics hold stories; stories hold tasks and bugs.".into(),
            priority: 5,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    assert_eq!(
        created,
        v1::LlmContext {
            id: created.id.clone(),
            project_id: project.id.clone(),
            category: v1::LlmContextCategory::SchemaDoc.into(),
            title: "Work items".into(),
            content: "Epics hold stories; stories hold tasks and bugs.".into(),
            priority: 5,
            version: 1,
            created_at: created.created_at,
            created_by: "alice".into(),
            updated_at: created.created_at,
            updated_by: "alice".into(),
            deleted_at: None,
        }
    );
    assert_eq!(
        get::<v1::LlmContext>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        created
    );

    let (updated, seq) = run::<v1::LlmContext>(
        &tenant,
        &ALICE,
        C::UpdateLlmContext(v1::UpdateLlmContext {
            id: created.id.clone(),
            expected_version: 1,
            title: Some("Work item hierarchy".into()),
            ..Default::default()
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = created.clone();
    expected.title = "Work item hierarchy".into();
    expected.version = 2;
    expected.updated_at = updated.updated_at;
    assert_eq!(updated, expected);
    assert_eq!(
        get::<v1::LlmContext>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        updated
    );

    let (deleted, seq) = run::<v1::LlmContext>(
        &tenant,
        &ALICE,
        C::DeleteLlmContext(v1::DeleteLlmContext {
            id: created.id.clone(),
            expected_version: 2,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = updated.clone();
    expected.version = 3;
    expected.updated_at = deleted.updated_at;
    expected.deleted_at = Some(deleted.updated_at);
    assert_eq!(deleted, expected);
    let live = list!(&tenant, &ALICE, ListLlmContext { project_id: project.id.clone(), ..Default::default() } => ListLlmContextResult);
    assert_eq!(live, vec![]);
    let all = list!(&tenant, &ALICE, ListLlmContext { project_id: project.id.clone(), include_deleted: true, ..Default::default() } => ListLlmContextResult);
    assert_eq!(all, vec![deleted.clone()]);

    let (restored, seq) = run::<v1::LlmContext>(
        &tenant,
        &ALICE,
        C::RestoreLlmContext(v1::RestoreLlmContext {
            id: created.id.clone(),
            expected_version: 3,
        }),
    )
    .await;
    next_seq(&mut last, seq);
    let mut expected = deleted.clone();
    expected.version = 4;
    expected.updated_at = restored.updated_at;
    expected.deleted_at = None;
    assert_eq!(restored, expected);
    let live = list!(&tenant, &ALICE, ListLlmContext { project_id: project.id.clone(), ..Default::default() } => ListLlmContextResult);
    assert_eq!(live, vec![restored]);
    assert_eq!(tenant.head_seq(), last);
}

/// Every command result and change-log entity carries the complete work item, including the
/// derived `display_key` (clients replace their copy with it).
#[tokio::test]
async fn deleted_and_restored_work_items_keep_their_display_key() {
    let (_env, tenant, project) = setup().await;
    let (item, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(&project.id, T::Bug, "Crash", None),
    )
    .await;
    assert_eq!(item.display_key, "PM-1");
    let (deleted, delete_seq) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::DeleteWorkItem(v1::DeleteWorkItem {
            id: item.id.clone(),
            expected_version: 1,
        }),
    )
    .await;
    // A stale restore is a conflict carrying the current (deleted) item.
    let err = fail(
        &tenant,
        &ALICE,
        C::RestoreWorkItem(v1::RestoreWorkItem {
            id: item.id.clone(),
            expected_version: 1,
        }),
    )
    .await;
    let current = match &err {
        pm_db::Error::Conflict { current, .. } => entity_as::<v1::WorkItem>(Some(current)),
        other => panic!("expected CONFLICT, got {other:?}"),
    };
    let (restored, restore_seq) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::RestoreWorkItem(v1::RestoreWorkItem {
            id: item.id.clone(),
            expected_version: 2,
        }),
    )
    .await;
    let events = tenant
        .read_events(
            delete_seq - 1,
            Some(restore_seq),
            10,
            &EventFilter::default(),
        )
        .await
        .unwrap();
    let logged: Vec<String> = events
        .iter()
        .map(|e| match e.decode().unwrap().change {
            Some(v1::event::Change::WorkItem(w)) => w.display_key,
            other => panic!("unexpected change {other:?}"),
        })
        .collect();
    assert_eq!(
        (
            deleted.display_key.as_str(),
            current.display_key.as_str(),
            restored.display_key.as_str(),
            logged
        ),
        (
            "PM-1",
            "PM-1",
            "PM-1",
            vec!["PM-1".to_owned(), "PM-1".to_owned()]
        )
    );
}

// ---------------------------------------------------------------------------------------
// 2. Versions and conflicts
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn stale_expected_version_is_a_conflict_carrying_the_current_entity() {
    let (_env, tenant, project) = setup().await;
    let (item, _) =
        run::<v1::WorkItem>(&tenant, &ALICE, new_item(&project.id, T::Task, "Old", None)).await;
    let (updated, seq) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::UpdateWorkItem(v1::UpdateWorkItem {
            id: item.id.clone(),
            expected_version: 1,
            title: Some("New".into()),
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(seq, 4);
    let err = fail(
        &tenant,
        &ALICE,
        C::UpdateWorkItem(v1::UpdateWorkItem {
            id: item.id.clone(),
            expected_version: 1,
            title: Some("Stale".into()),
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(err.code(), E::Conflict);
    match &err {
        pm_db::Error::Conflict { current, .. } => {
            assert_eq!(entity_as::<v1::WorkItem>(Some(current)), updated)
        }
        other => panic!("expected CONFLICT, got {other:?}"),
    }
    // The wire form carries it too.
    let wire = err.to_wire();
    assert_eq!(wire.code, E::Conflict as i32);
    assert_eq!(wire.field, "");
    assert_eq!(
        wire.current,
        Some(Box::new(v1::Entity::of(v1::entity::Kind::WorkItem(
            updated.clone(),
        ))))
    );
    // A missing version is a malformed request, not a conflict.
    let err = fail(
        &tenant,
        &ALICE,
        C::UpdateWorkItem(v1::UpdateWorkItem {
            id: item.id.clone(),
            title: Some("No version".into()),
            ..Default::default()
        }),
    )
    .await;
    assert_invalid(&err, "expected_version");

    // The generic delete path of another entity.
    let (sprint, _) = run::<v1::Sprint>(
        &tenant,
        &ALICE,
        C::CreateSprint(v1::CreateSprint {
            project_id: project.id.clone(),
            name: "S1".into(),
            ..Default::default()
        }),
    )
    .await;
    let (renamed, seq) = run::<v1::Sprint>(
        &tenant,
        &ALICE,
        C::UpdateSprint(v1::UpdateSprint {
            id: sprint.id.clone(),
            expected_version: 1,
            name: Some("S1 renamed".into()),
            ..Default::default()
        }),
    )
    .await;
    let err = fail(
        &tenant,
        &ALICE,
        C::DeleteSprint(v1::DeleteSprint {
            id: sprint.id.clone(),
            expected_version: 1,
        }),
    )
    .await;
    match &err {
        pm_db::Error::Conflict { current, .. } => {
            assert_eq!(entity_as::<v1::Sprint>(Some(current)), renamed)
        }
        other => panic!("expected CONFLICT, got {other:?}"),
    }
    // Nothing changed.
    assert_eq!(tenant.head_seq(), seq);
    assert_eq!(
        get::<v1::WorkItem>(&tenant, &ALICE, &item.id)
            .await
            .unwrap(),
        updated
    );
    assert_eq!(
        get::<v1::Sprint>(&tenant, &ALICE, &sprint.id)
            .await
            .unwrap(),
        renamed
    );
}

#[tokio::test]
async fn concurrent_updates_of_one_row_exactly_one_wins() {
    let (_env, tenant, project) = setup().await;
    add_member(&tenant, &project.id, &BOB, v1::ProjectRole::Editor).await;
    for round in 0..5 {
        let (item, _) = run::<v1::WorkItem>(
            &tenant,
            &ALICE,
            new_item(&project.id, T::Task, &format!("Round {round}"), None),
        )
        .await;
        let head = tenant.head_seq();
        let update = |title: &str| {
            command(C::UpdateWorkItem(v1::UpdateWorkItem {
                id: item.id.clone(),
                expected_version: 1,
                title: Some(title.into()),
                ..Default::default()
            }))
        };
        let (a, b) = tokio::join!(
            tenant.execute(&ALICE, update("by alice")),
            tenant.execute(&BOB, update("by bob"))
        );
        let (winner, loser) = match (a, b) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
            other => panic!("exactly one update must win: {other:?}"),
        };
        assert_eq!(winner.seq, head + 1);
        let won: v1::WorkItem = entity_as(winner.entity.as_ref());
        assert_eq!(won.version, 2);
        assert!(won.title == "by alice" || won.title == "by bob");
        assert_eq!(loser.code(), E::Conflict);
        match &loser {
            pm_db::Error::Conflict { current, .. } => {
                assert_eq!(entity_as::<v1::WorkItem>(Some(current)), won)
            }
            other => panic!("expected CONFLICT, got {other:?}"),
        }
        assert_eq!(tenant.head_seq(), head + 1);
        assert_eq!(
            get::<v1::WorkItem>(&tenant, &ALICE, &item.id)
                .await
                .unwrap(),
            won
        );
    }
}

// ---------------------------------------------------------------------------------------
// 3. Rules
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn hierarchy_rules() {
    let (_env, tenant, project) = setup().await;
    let pid = project.id.as_str();
    let (epic, _) =
        run::<v1::WorkItem>(&tenant, &ALICE, new_item(pid, T::Epic, "Epic", None)).await;
    let (epic2, _) =
        run::<v1::WorkItem>(&tenant, &ALICE, new_item(pid, T::Epic, "Epic 2", None)).await;

    let err = fail(
        &tenant,
        &ALICE,
        new_item(pid, T::Epic, "Sub-epic", Some(&epic.id)),
    )
    .await;
    assert_invalid(&err, "parent_id");
    let err = fail(
        &tenant,
        &ALICE,
        new_item(pid, T::Task, "Task", Some(&epic.id)),
    )
    .await;
    assert_invalid(&err, "parent_id");
    let err = fail(
        &tenant,
        &ALICE,
        new_item(pid, T::Bug, "Bug", Some(&epic.id)),
    )
    .await;
    assert_invalid(&err, "parent_id");

    let (story, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(pid, T::Story, "Story", Some(&epic.id)),
    )
    .await;
    assert_eq!(story.parent_id.as_deref(), Some(epic.id.as_str()));
    let (task, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(pid, T::Task, "Task", Some(&story.id)),
    )
    .await;
    assert_eq!(task.parent_id.as_deref(), Some(story.id.as_str()));
    let (bug, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(pid, T::Bug, "Bug", Some(&story.id)),
    )
    .await;
    assert_eq!(bug.parent_id.as_deref(), Some(story.id.as_str()));

    let err = fail(
        &tenant,
        &ALICE,
        new_item(pid, T::Task, "Sub-task", Some(&task.id)),
    )
    .await;
    assert_invalid(&err, "parent_id");
    let err = fail(
        &tenant,
        &ALICE,
        new_item(pid, T::Story, "Story under story", Some(&story.id)),
    )
    .await;
    assert_invalid(&err, "parent_id");
    let err = fail(
        &tenant,
        &ALICE,
        new_item(pid, T::Story, "Orphan", Some(&a_uuid())),
    )
    .await;
    assert_invalid(&err, "parent_id");

    // A parent in another project.
    let other = create_project(&tenant, &ALICE, "OT").await;
    let (foreign_epic, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(&other.id, T::Epic, "Foreign", None),
    )
    .await;
    let err = fail(
        &tenant,
        &ALICE,
        new_item(pid, T::Story, "Story", Some(&foreign_epic.id)),
    )
    .await;
    assert_invalid(&err, "parent_id");

    // Moving a story under a task is refused and changes nothing.
    let head = tenant.head_seq();
    let err = fail(
        &tenant,
        &ALICE,
        C::MoveWorkItem(v1::MoveWorkItem {
            id: story.id.clone(),
            expected_version: 1,
            parent_id: Some(task.id.clone()),
            ..Default::default()
        }),
    )
    .await;
    assert_invalid(&err, "parent_id");
    assert_eq!(tenant.head_seq(), head);
    assert_eq!(
        get::<v1::WorkItem>(&tenant, &ALICE, &story.id)
            .await
            .unwrap(),
        story
    );
    // Under another epic of the project it is fine.
    let (moved, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::MoveWorkItem(v1::MoveWorkItem {
            id: story.id.clone(),
            expected_version: 1,
            parent_id: Some(epic2.id.clone()),
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(moved.parent_id.as_deref(), Some(epic2.id.as_str()));
    assert_eq!(moved.version, 2);
    let children = list!(&tenant, &ALICE, ListWorkItems {
        project_id: project.id.clone(),
        parent_id: Some(epic2.id.clone()),
        ..Default::default()
    } => ListWorkItemsResult);
    assert_eq!(children, vec![moved]);

    // A deleted parent is no parent.
    run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::DeleteWorkItem(v1::DeleteWorkItem {
            id: epic.id.clone(),
            expected_version: 1,
        }),
    )
    .await;
    let err = fail(
        &tenant,
        &ALICE,
        new_item(pid, T::Story, "Late", Some(&epic.id)),
    )
    .await;
    assert_invalid(&err, "parent_id");
}

fn dependency(blocking: &str, blocked: &str, kind: v1::DependencyType) -> C {
    C::CreateDependency(v1::CreateDependency {
        blocking_item_id: blocking.into(),
        blocked_item_id: blocked.into(),
        dependency_type: kind.into(),
    })
}

#[tokio::test]
async fn dependency_rules() {
    use v1::DependencyType::{Blocks, RelatesTo};
    let (_env, tenant, project) = setup().await;
    let pid = project.id.as_str();
    let (a, _) = run::<v1::WorkItem>(&tenant, &ALICE, new_item(pid, T::Task, "A", None)).await;
    let (b, _) = run::<v1::WorkItem>(&tenant, &ALICE, new_item(pid, T::Task, "B", None)).await;
    let (c, _) = run::<v1::WorkItem>(&tenant, &ALICE, new_item(pid, T::Task, "C", None)).await;

    let err = fail(&tenant, &ALICE, dependency(&a.id, &a.id, Blocks)).await;
    assert_invalid(&err, "blocked_item_id");
    let err = fail(&tenant, &ALICE, dependency(&a.id, &a.id, RelatesTo)).await;
    assert_invalid(&err, "blocked_item_id");

    let (ab, _) = run::<v1::Dependency>(&tenant, &ALICE, dependency(&a.id, &b.id, Blocks)).await;
    let (bc, _) = run::<v1::Dependency>(&tenant, &ALICE, dependency(&b.id, &c.id, Blocks)).await;
    let head = tenant.head_seq();
    let err = fail(&tenant, &ALICE, dependency(&c.id, &a.id, Blocks)).await;
    assert_eq!(err.code(), E::FailedPrecondition, "{err:?}");
    let err = fail(&tenant, &ALICE, dependency(&b.id, &a.id, Blocks)).await;
    assert_eq!(err.code(), E::FailedPrecondition, "{err:?}");
    assert_eq!(tenant.head_seq(), head);

    // `relates_to` may form a cycle.
    let (ca, _) = run::<v1::Dependency>(&tenant, &ALICE, dependency(&c.id, &a.id, RelatesTo)).await;
    // The same link twice is refused; the other type between the same items is not.
    let err = fail(&tenant, &ALICE, dependency(&a.id, &b.id, Blocks)).await;
    assert_eq!(err.code(), E::FailedPrecondition, "{err:?}");
    let err = fail(&tenant, &ALICE, dependency(&c.id, &a.id, RelatesTo)).await;
    assert_eq!(err.code(), E::FailedPrecondition, "{err:?}");
    let (ab_rel, _) =
        run::<v1::Dependency>(&tenant, &ALICE, dependency(&a.id, &b.id, RelatesTo)).await;

    // Turning C relates-to A into C blocks A would close the cycle.
    let err = fail(
        &tenant,
        &ALICE,
        C::UpdateDependency(v1::UpdateDependency {
            id: ca.id.clone(),
            expected_version: 1,
            dependency_type: Blocks.into(),
        }),
    )
    .await;
    assert_eq!(err.code(), E::FailedPrecondition, "{err:?}");

    // Without B blocks C, C may block A; then restoring B blocks C would close the cycle.
    let (bc_deleted, _) = run::<v1::Dependency>(
        &tenant,
        &ALICE,
        C::DeleteDependency(v1::DeleteDependency {
            id: bc.id.clone(),
            expected_version: 1,
        }),
    )
    .await;
    let (ca_blocks, _) = run::<v1::Dependency>(
        &tenant,
        &ALICE,
        C::UpdateDependency(v1::UpdateDependency {
            id: ca.id.clone(),
            expected_version: 1,
            dependency_type: Blocks.into(),
        }),
    )
    .await;
    assert_eq!(ca_blocks.dependency_type, Blocks as i32);
    let err = fail(
        &tenant,
        &ALICE,
        C::RestoreDependency(v1::RestoreDependency {
            id: bc.id.clone(),
            expected_version: bc_deleted.version,
        }),
    )
    .await;
    assert_eq!(err.code(), E::FailedPrecondition, "{err:?}");

    // Both ends belong to one project.
    let other = create_project(&tenant, &ALICE, "OT").await;
    let (x, _) =
        run::<v1::WorkItem>(&tenant, &ALICE, new_item(&other.id, T::Task, "X", None)).await;
    let err = fail(&tenant, &ALICE, dependency(&a.id, &x.id, RelatesTo)).await;
    assert_invalid(&err, "blocked_item_id");

    let live = list!(&tenant, &ALICE, ListDependencies { project_id: project.id.clone(), ..Default::default() } => ListDependenciesResult);
    assert_eq!(live, vec![ab, ca_blocks, ab_rel]);
}

fn set_sprint_status(id: &str, expected_version: u64, status: v1::SprintStatus) -> C {
    C::UpdateSprint(v1::UpdateSprint {
        id: id.into(),
        expected_version,
        status: Some(status.into()),
        ..Default::default()
    })
}

#[tokio::test]
async fn sprint_rules() {
    use v1::SprintStatus::{Active, Cancelled, Completed, Planned};
    let (_env, tenant, project) = setup().await;
    let mut sprints = Vec::new();
    for name in ["S1", "S2", "S3"] {
        let (sprint, _) = run::<v1::Sprint>(
            &tenant,
            &ALICE,
            C::CreateSprint(v1::CreateSprint {
                project_id: project.id.clone(),
                name: name.into(),
                ..Default::default()
            }),
        )
        .await;
        assert_eq!(sprint.status, Planned as i32);
        sprints.push(sprint);
    }
    let (s1, s2, s3) = (&sprints[0].id, &sprints[1].id, &sprints[2].id);

    let (active, _) = run::<v1::Sprint>(&tenant, &ALICE, set_sprint_status(s1, 1, Active)).await;
    assert_eq!(active.status, Active as i32);
    let err = fail(&tenant, &ALICE, set_sprint_status(s2, 1, Active)).await;
    assert_eq!(err.code(), E::FailedPrecondition, "{err:?}");
    assert_eq!(
        get::<v1::Sprint>(&tenant, &ALICE, s2).await.unwrap(),
        sprints[1]
    );

    run::<v1::Sprint>(&tenant, &ALICE, set_sprint_status(s1, 2, Completed)).await;
    let err = fail(&tenant, &ALICE, set_sprint_status(s1, 3, Active)).await;
    assert_eq!(err.code(), E::FailedPrecondition, "{err:?}");
    let err = fail(&tenant, &ALICE, set_sprint_status(s1, 3, Planned)).await;
    assert_eq!(err.code(), E::FailedPrecondition, "{err:?}");
    // A completed sprint takes no new work.
    let err = fail(
        &tenant,
        &ALICE,
        C::CreateWorkItem(v1::CreateWorkItem {
            project_id: project.id.clone(),
            item_type: T::Task.into(),
            title: "Late".into(),
            sprint_id: Some(s1.clone()),
            ..Default::default()
        }),
    )
    .await;
    assert_invalid(&err, "sprint_id");

    // A sprint of another project is no sprint for this one.
    let other = create_project(&tenant, &ALICE, "OT").await;
    let err = fail(
        &tenant,
        &ALICE,
        C::CreateWorkItem(v1::CreateWorkItem {
            project_id: other.id.clone(),
            item_type: T::Task.into(),
            title: "Elsewhere".into(),
            sprint_id: Some(s2.clone()),
            ..Default::default()
        }),
    )
    .await;
    assert_invalid(&err, "sprint_id");

    // With S1 completed, S2 may become active.
    run::<v1::Sprint>(&tenant, &ALICE, set_sprint_status(s2, 1, Active)).await;
    // A deleted active sprint does not count; restoring it while another is active is refused.
    run::<v1::Sprint>(
        &tenant,
        &ALICE,
        C::DeleteSprint(v1::DeleteSprint {
            id: s2.clone(),
            expected_version: 2,
        }),
    )
    .await;
    run::<v1::Sprint>(&tenant, &ALICE, set_sprint_status(s3, 1, Active)).await;
    let err = fail(
        &tenant,
        &ALICE,
        C::RestoreSprint(v1::RestoreSprint {
            id: s2.clone(),
            expected_version: 3,
        }),
    )
    .await;
    assert_eq!(err.code(), E::FailedPrecondition, "{err:?}");

    let (cancelled, _) =
        run::<v1::Sprint>(&tenant, &ALICE, set_sprint_status(s3, 2, Cancelled)).await;
    assert_eq!(cancelled.status, Cancelled as i32);
    let err = fail(&tenant, &ALICE, set_sprint_status(s3, 3, Active)).await;
    assert_eq!(err.code(), E::FailedPrecondition, "{err:?}");
}

#[tokio::test]
async fn one_running_timer_per_user() {
    let (_env, tenant, project) = setup().await;
    add_member(&tenant, &project.id, &BOB, v1::ProjectRole::Editor).await;
    let (item, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(&project.id, T::Task, "Task", None),
    )
    .await;
    let start = || {
        C::StartTimer(v1::StartTimer {
            work_item_id: item.id.clone(),
            description: String::new(),
        })
    };
    let (first, _) = run::<v1::TimeEntry>(&tenant, &ALICE, start()).await;
    let err = fail(&tenant, &ALICE, start()).await;
    assert_eq!(err.code(), E::FailedPrecondition, "{err:?}");
    // Another user has a timer of their own.
    let (bobs, _) = run::<v1::TimeEntry>(&tenant, &BOB, start()).await;
    assert_eq!(bobs.user_id, "bob");
    // Stopping stops the caller's own timer.
    let (stopped, _) = run::<v1::TimeEntry>(&tenant, &ALICE, C::StopTimer(v1::StopTimer {})).await;
    assert_eq!(stopped.id, first.id);
    let err = fail(&tenant, &ALICE, C::StopTimer(v1::StopTimer {})).await;
    assert_eq!(err.code(), E::FailedPrecondition, "{err:?}");
    assert_eq!(
        get::<v1::TimeEntry>(&tenant, &BOB, &bobs.id).await.unwrap(),
        bobs
    );

    // After a stop a new timer may run; a deleted running timer cannot come back beside it.
    let (second, _) = run::<v1::TimeEntry>(&tenant, &ALICE, start()).await;
    run::<v1::TimeEntry>(
        &tenant,
        &ALICE,
        C::DeleteTimeEntry(v1::DeleteTimeEntry {
            id: second.id.clone(),
            expected_version: 1,
        }),
    )
    .await;
    run::<v1::TimeEntry>(&tenant, &ALICE, start()).await;
    let err = fail(
        &tenant,
        &ALICE,
        C::RestoreTimeEntry(v1::RestoreTimeEntry {
            id: second.id.clone(),
            expected_version: 2,
        }),
    )
    .await;
    assert_eq!(err.code(), E::FailedPrecondition, "{err:?}");
    // Nobody changes another user's time entry.
    let err = fail(
        &tenant,
        &BOB,
        C::DeleteTimeEntry(v1::DeleteTimeEntry {
            id: stopped.id.clone(),
            expected_version: 2,
        }),
    )
    .await;
    assert_eq!(err.code(), E::PermissionDenied, "{err:?}");
}

fn set_role(project_id: &str, user: &str, expected_version: u64, role: v1::ProjectRole) -> C {
    C::UpdateMember(v1::UpdateMember {
        project_id: project_id.into(),
        user_id: user.into(),
        expected_version,
        role: role.into(),
    })
}

fn remove(project_id: &str, user: &str, expected_version: u64) -> C {
    C::RemoveMember(v1::RemoveMember {
        project_id: project_id.into(),
        user_id: user.into(),
        expected_version,
    })
}

#[tokio::test]
async fn the_last_admin_stays() {
    use v1::ProjectRole::{Admin, Editor, Viewer};
    let (_env, tenant, project) = setup().await;
    let pid = project.id.as_str();
    let err = fail(&tenant, &ALICE, remove(pid, "alice", 1)).await;
    assert_eq!(err.code(), E::FailedPrecondition, "{err:?}");
    let err = fail(&tenant, &ALICE, set_role(pid, "alice", 1, Editor)).await;
    assert_eq!(err.code(), E::FailedPrecondition, "{err:?}");

    // With a second admin, the first may step down.
    add_member(&tenant, pid, &BOB, Admin).await;
    let (alice, _) =
        run::<v1::ProjectMember>(&tenant, &ALICE, set_role(pid, "alice", 1, Editor)).await;
    assert_eq!(alice.role, Editor as i32);
    // ... and then no longer manages members.
    let err = fail(
        &tenant,
        &ALICE,
        C::AddMember(v1::AddMember {
            project_id: pid.into(),
            user_id: "carol".into(),
            role: Viewer.into(),
        }),
    )
    .await;
    assert_eq!(err.code(), E::PermissionDenied, "{err:?}");
    // Bob is now the last admin.
    let err = fail(&tenant, &BOB, remove(pid, "bob", 1)).await;
    assert_eq!(err.code(), E::FailedPrecondition, "{err:?}");
    let err = fail(&tenant, &BOB, set_role(pid, "bob", 1, Viewer)).await;
    assert_eq!(err.code(), E::FailedPrecondition, "{err:?}");
    // A member may leave on their own.
    run::<v1::ProjectMember>(&tenant, &ALICE, remove(pid, "alice", 2)).await;
    let members =
        list!(&tenant, &BOB, ListMembers { project_id: project.id.clone() } => ListMembersResult);
    assert_eq!(members.len(), 1);
    assert_eq!(
        (members[0].user_id.as_str(), members[0].role),
        ("bob", Admin as i32)
    );
}

#[tokio::test]
async fn a_viewer_reads_but_cannot_write() {
    let (_env, tenant, project) = setup().await;
    add_member(&tenant, &project.id, &BOB, v1::ProjectRole::Viewer).await;
    let (item, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(&project.id, T::Task, "Task", None),
    )
    .await;
    let head = tenant.head_seq();

    assert_eq!(
        get::<v1::WorkItem>(&tenant, &BOB, &item.id).await.unwrap(),
        item
    );
    assert_eq!(
        all_items(&tenant, &BOB, &project.id, false).await,
        vec![item.clone()]
    );

    let writes = [
        new_item(&project.id, T::Task, "Mine", None),
        C::UpdateWorkItem(v1::UpdateWorkItem {
            id: item.id.clone(),
            expected_version: 1,
            title: Some("Changed".into()),
            ..Default::default()
        }),
        C::DeleteWorkItem(v1::DeleteWorkItem {
            id: item.id.clone(),
            expected_version: 1,
        }),
        C::CreateComment(v1::CreateComment {
            work_item_id: item.id.clone(),
            content: "Hi".into(),
        }),
        C::StartTimer(v1::StartTimer {
            work_item_id: item.id.clone(),
            description: String::new(),
        }),
        C::CreateSprint(v1::CreateSprint {
            project_id: project.id.clone(),
            name: "S".into(),
            ..Default::default()
        }),
        C::AddMember(v1::AddMember {
            project_id: project.id.clone(),
            user_id: "carol".into(),
            role: v1::ProjectRole::Viewer.into(),
        }),
        C::UpdateProject(v1::UpdateProject {
            id: project.id.clone(),
            expected_version: 1,
            name: Some("Renamed".into()),
            ..Default::default()
        }),
    ];
    for write in writes {
        let err = fail(&tenant, &BOB, write.clone()).await;
        assert_eq!(err.code(), E::PermissionDenied, "{write:?}: {err:?}");
    }
    assert_eq!(tenant.head_seq(), head);
}

#[tokio::test]
async fn a_non_member_neither_reads_nor_writes_nor_learns_what_exists() {
    let (_env, tenant, project) = setup().await;
    let pid = project.id.clone();
    let (item, _) =
        run::<v1::WorkItem>(&tenant, &ALICE, new_item(&pid, T::Task, "Secret", None)).await;
    let (comment, _) = run::<v1::Comment>(
        &tenant,
        &ALICE,
        C::CreateComment(v1::CreateComment {
            work_item_id: item.id.clone(),
            content: "Psst".into(),
        }),
    )
    .await;
    let (sprint, _) = run::<v1::Sprint>(
        &tenant,
        &ALICE,
        C::CreateSprint(v1::CreateSprint {
            project_id: pid.clone(),
            name: "S".into(),
            ..Default::default()
        }),
    )
    .await;
    let head = tenant.head_seq();

    let reads = [
        Q::GetProject(v1::GetProject { id: pid.clone() }),
        Q::GetWorkItem(v1::GetWorkItem {
            id: item.id.clone(),
            display_key: String::new(),
        }),
        Q::GetWorkItem(v1::GetWorkItem {
            id: String::new(),
            display_key: "PM-1".into(),
        }),
        Q::ListWorkItems(v1::ListWorkItems {
            project_id: pid.clone(),
            ..Default::default()
        }),
        Q::GetComment(v1::GetComment {
            id: comment.id.clone(),
        }),
        Q::ListComments(v1::ListComments {
            work_item_id: item.id.clone(),
            ..Default::default()
        }),
        Q::GetSprint(v1::GetSprint {
            id: sprint.id.clone(),
        }),
        Q::ListSprints(v1::ListSprints {
            project_id: pid.clone(),
            ..Default::default()
        }),
        Q::ListMembers(v1::ListMembers {
            project_id: pid.clone(),
            page: None,
        }),
        Q::ListActivity(v1::ListActivity {
            project_id: pid.clone(),
            ..Default::default()
        }),
    ];
    for read in reads {
        let err = query(&tenant, &CAROL, read.clone()).await.unwrap_err();
        assert_eq!(err.code(), E::NotFound, "{read:?}: {err:?}");
    }
    // An existing item and a made-up id get the same answer.
    let existing = get::<v1::WorkItem>(&tenant, &CAROL, &item.id)
        .await
        .unwrap_err();
    let made_up = get::<v1::WorkItem>(&tenant, &CAROL, &a_uuid())
        .await
        .unwrap_err();
    assert_eq!(existing.to_wire(), made_up.to_wire());
    // Lists without a project show nothing.
    let projects = list!(&tenant, &CAROL, ListProjects { include_deleted: true, ..Default::default() } => ListProjectsResult);
    assert_eq!(projects, vec![]);
    let activity =
        list!(&tenant, &CAROL, ListActivity { ..Default::default() } => ListActivityResult);
    assert_eq!(activity, vec![]);

    let writes = [
        new_item(&pid, T::Task, "Mine", None),
        C::UpdateWorkItem(v1::UpdateWorkItem {
            id: item.id.clone(),
            expected_version: 1,
            title: Some("Changed".into()),
            ..Default::default()
        }),
        C::DeleteWorkItem(v1::DeleteWorkItem {
            id: item.id.clone(),
            expected_version: 1,
        }),
        C::CreateComment(v1::CreateComment {
            work_item_id: item.id.clone(),
            content: "Hi".into(),
        }),
        C::DeleteComment(v1::DeleteComment {
            id: comment.id.clone(),
            expected_version: 1,
        }),
        C::StartTimer(v1::StartTimer {
            work_item_id: item.id.clone(),
            description: String::new(),
        }),
        C::CreateSprint(v1::CreateSprint {
            project_id: pid.clone(),
            name: "S".into(),
            ..Default::default()
        }),
        C::UpdateSprint(v1::UpdateSprint {
            id: sprint.id.clone(),
            expected_version: 1,
            name: Some("Mine".into()),
            ..Default::default()
        }),
        C::AddMember(v1::AddMember {
            project_id: pid.clone(),
            user_id: "carol".into(),
            role: v1::ProjectRole::Admin.into(),
        }),
        C::UpdateProject(v1::UpdateProject {
            id: pid.clone(),
            expected_version: 1,
            name: Some("Renamed".into()),
            ..Default::default()
        }),
        C::DeleteProject(v1::DeleteProject {
            id: pid.clone(),
            expected_version: 1,
        }),
    ];
    for write in writes {
        let err = fail(&tenant, &CAROL, write.clone()).await;
        assert_eq!(err.code(), E::NotFound, "{write:?}: {err:?}");
    }
    assert_eq!(tenant.head_seq(), head);
}

#[tokio::test]
async fn an_archived_project_refuses_content_writes() {
    use v1::ProjectStatus::{Active, Archived};
    let (_env, tenant, project) = setup().await;
    add_member(&tenant, &project.id, &BOB, v1::ProjectRole::Editor).await;
    let (item, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(&project.id, T::Task, "Task", None),
    )
    .await;
    let archive = |version: u64, status: v1::ProjectStatus| {
        C::UpdateProject(v1::UpdateProject {
            id: project.id.clone(),
            expected_version: version,
            status: Some(status.into()),
            ..Default::default()
        })
    };
    // Only an admin archives.
    let err = fail(&tenant, &BOB, archive(1, Archived)).await;
    assert_eq!(err.code(), E::PermissionDenied, "{err:?}");
    let (archived, _) = run::<v1::Project>(&tenant, &ALICE, archive(1, Archived)).await;
    assert_eq!(archived.status, Archived as i32);
    let head = tenant.head_seq();

    let writes = [
        new_item(&project.id, T::Task, "New", None),
        C::UpdateWorkItem(v1::UpdateWorkItem {
            id: item.id.clone(),
            expected_version: 1,
            title: Some("Changed".into()),
            ..Default::default()
        }),
        C::MoveWorkItem(v1::MoveWorkItem {
            id: item.id.clone(),
            expected_version: 1,
            status: Some(v1::WorkItemStatus::Done.into()),
            ..Default::default()
        }),
        C::DeleteWorkItem(v1::DeleteWorkItem {
            id: item.id.clone(),
            expected_version: 1,
        }),
        C::CreateComment(v1::CreateComment {
            work_item_id: item.id.clone(),
            content: "Hi".into(),
        }),
        C::StartTimer(v1::StartTimer {
            work_item_id: item.id.clone(),
            description: String::new(),
        }),
        C::CreateSprint(v1::CreateSprint {
            project_id: project.id.clone(),
            name: "S".into(),
            ..Default::default()
        }),
        C::CreateSwimLane(v1::CreateSwimLane {
            project_id: project.id.clone(),
            name: "Lane".into(),
            status: v1::WorkItemStatus::Todo.into(),
            ..Default::default()
        }),
    ];
    for write in writes {
        for actor in [&*ALICE, &*BOB] {
            let err = fail(&tenant, actor, write.clone()).await;
            assert_eq!(err.code(), E::FailedPrecondition, "{write:?}: {err:?}");
        }
    }
    assert_eq!(tenant.head_seq(), head);
    // Reads go on.
    assert_eq!(
        get::<v1::WorkItem>(&tenant, &BOB, &item.id).await.unwrap(),
        item
    );
    let listed = list!(&tenant, &ALICE, ListProjects { status: Some(Archived.into()), ..Default::default() } => ListProjectsResult);
    assert_eq!(listed, vec![archived]);

    // Unarchived, it takes content again.
    run::<v1::Project>(&tenant, &ALICE, archive(2, Active)).await;
    let (again, _) =
        run::<v1::WorkItem>(&tenant, &BOB, new_item(&project.id, T::Task, "New", None)).await;
    assert_eq!(again.number, 2);
}

// ---------------------------------------------------------------------------------------
// 4. Pagination
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn pages_neither_skip_nor_repeat_while_items_are_added() {
    let (_env, tenant, project) = setup().await;
    let mut originals = Vec::new();
    for i in 0..25 {
        let (item, _) = run::<v1::WorkItem>(
            &tenant,
            &ALICE,
            new_item(&project.id, T::Task, &format!("Item {i:02}"), None),
        )
        .await;
        originals.push(item.id);
    }
    let mut seen: Vec<v1::WorkItem> = Vec::new();
    let mut page_lengths = Vec::new();
    let mut token = String::new();
    let mut added = 0;
    loop {
        let page = list_items(&tenant, &ALICE, &project.id, 7, &token).await;
        assert_eq!(page.as_of_seq, tenant.head_seq());
        page_lengths.push(page.items.len());
        seen.extend(page.items);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(page_lengths.len() < 20, "paging ends");
        for _ in 0..2 {
            run::<v1::WorkItem>(
                &tenant,
                &ALICE,
                new_item(&project.id, T::Task, &format!("Added {added}"), None),
            )
            .await;
            added += 1;
        }
    }
    // 25 items, 2 more after each of the first four pages: 33 in pages of 7.
    assert_eq!(page_lengths, [7, 7, 7, 7, 5]);
    let ids: Vec<&str> = seen.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "no repeats"
    );
    assert!(
        seen.windows(2)
            .all(|w| (&w[0].rank, &w[0].id) < (&w[1].rank, &w[1].id)),
        "ordered by (rank, id)"
    );
    // Every item that existed before the first page, exactly once and first.
    assert_eq!(
        ids[..25],
        originals.iter().map(String::as_str).collect::<Vec<_>>()[..]
    );
    assert_eq!(seen, all_items(&tenant, &ALICE, &project.id, false).await);
}

#[tokio::test]
async fn malformed_page_requests_are_invalid_arguments() {
    let (_env, tenant, project) = setup().await;
    for i in 0..3 {
        run::<v1::WorkItem>(
            &tenant,
            &ALICE,
            new_item(&project.id, T::Task, &format!("I{i}"), None),
        )
        .await;
    }
    let page = |page_size: u32, page_token: &str| {
        Q::ListWorkItems(v1::ListWorkItems {
            project_id: project.id.clone(),
            page: Some(v1::PageRequest {
                page_size,
                page_token: page_token.into(),
            }),
            ..Default::default()
        })
    };
    for token in ["zz", "not a token", "6", "00", "7a7a7a", "%%%%"] {
        let err = query(&tenant, &ALICE, page(2, token)).await.unwrap_err();
        assert_invalid(&err, "page.page_token");
    }
    // A token of another list's shape.
    let sprints_token = {
        for name in ["S1", "S2"] {
            run::<v1::Sprint>(
                &tenant,
                &ALICE,
                C::CreateSprint(v1::CreateSprint {
                    project_id: project.id.clone(),
                    name: name.into(),
                    ..Default::default()
                }),
            )
            .await;
        }
        match query(
            &tenant,
            &ALICE,
            Q::ListSprints(v1::ListSprints {
                project_id: project.id.clone(),
                page: Some(v1::PageRequest {
                    page_size: 1,
                    page_token: String::new(),
                }),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        {
            R::ListSprintsResult(r) => r.next_page_token,
            other => panic!("unexpected result {other:?}"),
        }
    };
    assert_ne!(sprints_token, "");
    let err = query(
        &tenant,
        &ALICE,
        Q::ListProjects(v1::ListProjects {
            page: Some(v1::PageRequest {
                page_size: 1,
                page_token: sprints_token,
            }),
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_invalid(&err, "page.page_token");

    let err = query(&tenant, &ALICE, page(501, "")).await.unwrap_err();
    assert_invalid(&err, "page.page_size");
    match query(&tenant, &ALICE, page(500, "")).await.unwrap() {
        R::ListWorkItemsResult(r) => assert_eq!(r.items.len(), 3),
        other => panic!("unexpected result {other:?}"),
    }
    // Zero means the default page size.
    let all = list_items(&tenant, &ALICE, &project.id, 0, "").await;
    assert_eq!((all.items.len(), all.next_page_token.as_str()), (3, ""));
}

// ---------------------------------------------------------------------------------------
// 5. Full-text search
// ---------------------------------------------------------------------------------------

async fn search(
    tenant: &pm_db::Tenant,
    project_id: &str,
    text: &str,
) -> pm_db::Result<Vec<String>> {
    match query(
        tenant,
        &ALICE,
        Q::ListWorkItems(v1::ListWorkItems {
            project_id: project_id.into(),
            page: page500(),
            text: text.into(),
            ..Default::default()
        }),
    )
    .await?
    {
        R::ListWorkItemsResult(r) => Ok(r.items.into_iter().map(|i| i.title).collect()),
        other => panic!("unexpected result {other:?}"),
    }
}

#[tokio::test]
async fn text_search_covers_titles_descriptions_and_live_comments() {
    let (_env, tenant, project) = setup().await;
    let pid = project.id.as_str();
    let create = |title: &str, description: &str| {
        C::CreateWorkItem(v1::CreateWorkItem {
            project_id: pid.into(),
            item_type: T::Task.into(),
            title: title.into(),
            description: description.into(),
            ..Default::default()
        })
    };
    let comment = |item: &v1::WorkItem, content: &str| {
        C::CreateComment(v1::CreateComment {
            work_item_id: item.id.clone(),
            content: content.into(),
        })
    };
    let (a, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        create("Checkout button misaligned", "Seen on mobile Safari"),
    )
    .await;
    run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        create(
            "Quarterly report export",
            "Finance needs a spreadsheet download",
        ),
    )
    .await;
    let (c, _) = run::<v1::WorkItem>(&tenant, &ALICE, create("Refactor settings", "")).await;
    let (d, _) = run::<v1::WorkItem>(&tenant, &ALICE, create("Dark mode", "")).await;
    let (e, _) = run::<v1::WorkItem>(&tenant, &ALICE, create("Checkout redesign", "")).await;
    run::<v1::Comment>(
        &tenant,
        &ALICE,
        comment(&c, "Customers mention zebra stripes"),
    )
    .await;
    run::<v1::Comment>(&tenant, &ALICE, comment(&d, "Zebra crossing at night")).await;
    let (platypus, _) =
        run::<v1::Comment>(&tenant, &ALICE, comment(&d, "A platypus sighting")).await;
    // Several matches on one item list it once.
    run::<v1::Comment>(&tenant, &ALICE, comment(&a, "checkout also fails on iPad")).await;

    let s = |text: &'static str| search(&tenant, pid, text);
    assert_eq!(
        s("checkout").await.unwrap(),
        ["Checkout button misaligned", "Checkout redesign"]
    );
    assert_eq!(
        s("CHECKOUT").await.unwrap(),
        ["Checkout button misaligned", "Checkout redesign"]
    );
    assert_eq!(s("safari").await.unwrap(), ["Checkout button misaligned"]);
    assert_eq!(s("spreadsheet").await.unwrap(), ["Quarterly report export"]);
    assert_eq!(s("spread*").await.unwrap(), ["Quarterly report export"]);
    assert_eq!(
        s("report export").await.unwrap(),
        ["Quarterly report export"]
    );
    assert_eq!(s("report checkout").await.unwrap(), Vec::<String>::new());
    assert_eq!(
        s("zebra").await.unwrap(),
        ["Refactor settings", "Dark mode"]
    );
    assert_eq!(s("zeb*").await.unwrap(), ["Refactor settings", "Dark mode"]);
    assert_eq!(s("ipad").await.unwrap(), ["Checkout button misaligned"]);
    assert_eq!(s("platypus").await.unwrap(), ["Dark mode"]);

    // A deleted comment no longer matches; a deleted item is not listed.
    run::<v1::Comment>(
        &tenant,
        &ALICE,
        C::DeleteComment(v1::DeleteComment {
            id: platypus.id.clone(),
            expected_version: 1,
        }),
    )
    .await;
    assert_eq!(s("platypus").await.unwrap(), Vec::<String>::new());
    assert_eq!(
        s("zebra").await.unwrap(),
        ["Refactor settings", "Dark mode"]
    );
    run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::DeleteWorkItem(v1::DeleteWorkItem {
            id: e.id.clone(),
            expected_version: 1,
        }),
    )
    .await;
    assert_eq!(s("checkout").await.unwrap(), ["Checkout button misaligned"]);

    // The index follows title changes.
    run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::UpdateWorkItem(v1::UpdateWorkItem {
            id: a.id.clone(),
            expected_version: 1,
            title: Some("Payment button misaligned".into()),
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(
        s("misaligned payment").await.unwrap(),
        ["Payment button misaligned"]
    );
    // Still found through its comment.
    assert_eq!(s("checkout").await.unwrap(), ["Payment button misaligned"]);
    assert_eq!(s("button checkout").await.unwrap(), Vec::<String>::new());

    // Quotes, operators and punctuation are plain text, never an error.
    for text in [
        "payment\" OR \"x",
        "NEAR(payment",
        "payment AND",
        "payment OR",
        "NOT payment",
        "-payment",
        "title:payment",
        "description:payment",
        "(payment)",
        "payment^",
        "^payment",
        "'payment'",
        "{payment}",
        "payment;DROP TABLE work_items;--",
        "*payment",
        "pay**",
        "\"payment\"",
        "payment\"",
        "a:b:c",
        "!!!",
        "+",
        "@#$%",
        "'",
        "payment + button",
    ] {
        let found = search(&tenant, pid, text).await;
        assert!(found.is_ok(), "{text:?}: {found:?}");
    }
    assert_eq!(s("(payment)").await.unwrap(), ["Payment button misaligned"]);
    assert_eq!(
        s("\"payment\"").await.unwrap(),
        ["Payment button misaligned"]
    );
    assert_eq!(s("pay**").await.unwrap(), ["Payment button misaligned"]);
    assert_eq!(s("NOT payment").await.unwrap(), Vec::<String>::new());
    // Blank text is no filter at all.
    assert_eq!(s("   ").await.unwrap().len(), 4);

    // Control characters are either searched for or refused as a bad `text`; they are never
    // a storage failure.
    for text in [
        "\u{0}payment",
        "pay\u{0}ment",
        "payment\u{0}",
        "\u{1}payment",
        "\u{7f}",
    ] {
        match search(&tenant, pid, text).await {
            Ok(_) => {}
            Err(err) => assert_invalid(&err, "text"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// 6. Idempotency
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn idempotency_keys_replay_the_first_answer() {
    let (_env, tenant, project) = setup().await;
    let create = keyed(
        "create-login-story",
        new_item(&project.id, T::Story, "Login", None),
    );
    let first = tenant.execute(&ALICE, create.clone()).await.unwrap();
    assert!(!first.replayed);
    assert_eq!(first.seq, 3);
    let second = tenant.execute(&ALICE, create.clone()).await.unwrap();
    assert!(second.replayed);
    assert_eq!(second.seq, first.seq);
    assert_eq!(second.entity, first.entity);
    assert_eq!(tenant.head_seq(), 3);
    assert_eq!(all_items(&tenant, &ALICE, &project.id, true).await.len(), 1);

    // The same key for another command is refused.
    let err = tenant
        .execute(
            &ALICE,
            keyed(
                "create-login-story",
                new_item(&project.id, T::Story, "Logout", None),
            ),
        )
        .await
        .unwrap_err();
    assert_invalid(&err, "idempotency_key");
    assert_eq!(tenant.head_seq(), 3);

    // Keys are per user.
    add_member(&tenant, &project.id, &BOB, v1::ProjectRole::Editor).await;
    let bobs = tenant.execute(&BOB, create.clone()).await.unwrap();
    assert!(!bobs.replayed);
    assert_eq!(bobs.seq, 5);
    let bobs_item: v1::WorkItem = entity_as(bobs.entity.as_ref());
    assert_eq!(
        (bobs_item.number, bobs_item.created_by.as_str()),
        (2, "bob")
    );
    let bobs_again = tenant.execute(&BOB, create.clone()).await.unwrap();
    assert!(bobs_again.replayed);
    assert_eq!((bobs_again.seq, &bobs_again.entity), (5, &bobs.entity));
    let alices_again = tenant.execute(&ALICE, create.clone()).await.unwrap();
    assert_eq!((alices_again.seq, &alices_again.entity), (3, &first.entity));

    // A failed command is not remembered: the corrected one runs under the same key.
    let err = tenant
        .execute(
            &ALICE,
            keyed("fix-me", new_item(&project.id, T::Task, "", None)),
        )
        .await
        .unwrap_err();
    assert_invalid(&err, "title");
    let fixed = tenant
        .execute(
            &ALICE,
            keyed("fix-me", new_item(&project.id, T::Task, "Fixed", None)),
        )
        .await
        .unwrap();
    assert_eq!((fixed.seq, fixed.replayed), (6, false));

    // Two copies in flight at once: one applies, the other replays it.
    let once = keyed("in-flight", new_item(&project.id, T::Task, "Once", None));
    let (x, y) = tokio::join!(
        tenant.execute(&ALICE, once.clone()),
        tenant.execute(&ALICE, once.clone())
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!((x.seq, y.seq), (7, 7));
    assert_eq!(x.entity, y.entity);
    assert_eq!([x.replayed, y.replayed].iter().filter(|r| **r).count(), 1);
    assert_eq!(tenant.head_seq(), 7);

    let err = tenant
        .execute(
            &ALICE,
            keyed(
                &"k".repeat(129),
                new_item(&project.id, T::Task, "Long key", None),
            ),
        )
        .await
        .unwrap_err();
    assert_invalid(&err, "idempotency_key");
    assert_eq!(all_items(&tenant, &ALICE, &project.id, true).await.len(), 4);
}

// ---------------------------------------------------------------------------------------
// 7. Batches
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_atomic_batch_commits_all_or_nothing() {
    let (_env, tenant, project) = setup().await;
    let pid = project.id.as_str();
    let batch = |atomic: bool, titles: &[&str]| v1::Batch {
        atomic,
        commands: titles
            .iter()
            .map(|t| command(new_item(pid, T::Task, t, None)))
            .collect(),
    };
    let err = tenant
        .batch(&ALICE, batch(true, &["One", "Two", ""]))
        .await
        .unwrap_err();
    assert_invalid(&err, "commands[2].title");
    assert_eq!(err.to_wire().field, "commands[2].title");
    assert_eq!(tenant.head_seq(), 2);
    assert_eq!(all_items(&tenant, &ALICE, pid, true).await, vec![]);
    let logged = tenant
        .read_events(0, None, 100, &EventFilter::default())
        .await
        .unwrap();
    assert_eq!(logged.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);

    // Nothing of it left a trace: numbering starts at 1.
    let (item, seq) =
        run::<v1::WorkItem>(&tenant, &ALICE, new_item(pid, T::Task, "After", None)).await;
    assert_eq!((item.number, seq), (1, 3));

    // A failure other than validation rolls back just the same.
    let mut mixed = batch(true, &["Three", "Four"]);
    mixed.commands.insert(
        1,
        command(C::UpdateWorkItem(v1::UpdateWorkItem {
            id: a_uuid(),
            expected_version: 1,
            title: Some("Ghost".into()),
            ..Default::default()
        })),
    );
    let err = tenant.batch(&ALICE, mixed).await.unwrap_err();
    assert_eq!(err.code(), E::NotFound);
    assert_eq!(tenant.head_seq(), 3);

    // A good atomic batch commits every command, with consecutive seqs.
    let done = tenant
        .batch(&ALICE, batch(true, &["A", "B", "C"]))
        .await
        .unwrap();
    let results: Vec<(u64, u64)> = done
        .outcomes
        .iter()
        .map(|o| match &o.outcome {
            Some(v1::command_outcome::Outcome::CommandResult(r)) => {
                (r.seq, entity_as::<v1::WorkItem>(r.entity.as_ref()).number)
            }
            other => panic!("unexpected outcome {other:?}"),
        })
        .collect();
    assert_eq!(results, [(4, 2), (5, 3), (6, 4)]);

    // Without `atomic`, the bad command fails alone.
    let done = tenant
        .batch(&ALICE, batch(false, &["X", "", "Y"]))
        .await
        .unwrap();
    assert_eq!(done.outcomes.len(), 3);
    match &done.outcomes[0].outcome {
        Some(v1::command_outcome::Outcome::CommandResult(r)) => {
            assert_eq!(r.seq, 7);
            assert_eq!(entity_as::<v1::WorkItem>(r.entity.as_ref()).title, "X");
        }
        other => panic!("unexpected outcome {other:?}"),
    }
    match &done.outcomes[1].outcome {
        Some(v1::command_outcome::Outcome::Error(e)) => {
            assert_eq!(e.code, E::InvalidArgument as i32);
            assert_eq!(e.field, "commands[1].title");
        }
        other => panic!("unexpected outcome {other:?}"),
    }
    match &done.outcomes[2].outcome {
        Some(v1::command_outcome::Outcome::CommandResult(r)) => {
            assert_eq!(r.seq, 8);
            assert_eq!(entity_as::<v1::WorkItem>(r.entity.as_ref()).title, "Y");
        }
        other => panic!("unexpected outcome {other:?}"),
    }
    assert_eq!(tenant.head_seq(), 8);
    let titles: Vec<String> = all_items(&tenant, &ALICE, pid, true)
        .await
        .into_iter()
        .map(|i| i.title)
        .collect();
    assert_eq!(titles, ["After", "A", "B", "C", "X", "Y"]);

    // An empty batch is refused.
    let err = tenant
        .batch(
            &ALICE,
            v1::Batch {
                atomic: true,
                commands: vec![],
            },
        )
        .await
        .unwrap_err();
    assert_invalid(&err, "commands");
}

// ---------------------------------------------------------------------------------------
// 8-11. Tenants: isolation, ids, reopening, the bound on open tenants
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn tenants_are_isolated() {
    let env = TestEnv::new();
    let acme = env.tenant("acme").await;
    let globex = env.tenant("globex").await;
    let acme_project = create_project(&acme, &ALICE, "PM").await;
    let globex_project = create_project(&globex, &ALICE, "PM").await;
    assert_ne!(acme_project.id, globex_project.id);
    let (acme_item, acme_seq) = run::<v1::WorkItem>(
        &acme,
        &ALICE,
        new_item(&acme_project.id, T::Task, "Acme secret", None),
    )
    .await;
    let (globex_item, globex_seq) = run::<v1::WorkItem>(
        &globex,
        &ALICE,
        new_item(&globex_project.id, T::Task, "Globex plan", None),
    )
    .await;
    // Each tenant counts its own changes from 1.
    assert_eq!((acme_seq, globex_seq), (3, 3));
    assert_eq!((acme.head_seq(), globex.head_seq()), (3, 3));
    let globex_log = globex
        .read_events(0, None, 100, &EventFilter::default())
        .await
        .unwrap();
    assert_eq!(
        globex_log.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(globex_log.iter().all(|e| e.project_id == globex_project.id));

    // Acme's ids mean nothing in globex.
    let err = get::<v1::Project>(&globex, &ALICE, &acme_project.id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), E::NotFound);
    let err = get::<v1::WorkItem>(&globex, &ALICE, &acme_item.id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), E::NotFound);
    let err = query(
        &globex,
        &ALICE,
        Q::ListWorkItems(v1::ListWorkItems {
            project_id: acme_project.id.clone(),
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), E::NotFound);
    for write in [
        C::UpdateWorkItem(v1::UpdateWorkItem {
            id: acme_item.id.clone(),
            expected_version: 1,
            title: Some("Stolen".into()),
            ..Default::default()
        }),
        C::CreateComment(v1::CreateComment {
            work_item_id: acme_item.id.clone(),
            content: "Hi".into(),
        }),
        new_item(&acme_project.id, T::Task, "Planted", None),
        C::DeleteProject(v1::DeleteProject {
            id: acme_project.id.clone(),
            expected_version: 1,
        }),
    ] {
        let err = fail(&globex, &ALICE, write.clone()).await;
        assert_eq!(err.code(), E::NotFound, "{write:?}");
        assert!(!err.to_wire().message.contains(&acme_item.id));
    }
    assert_eq!((acme.head_seq(), globex.head_seq()), (3, 3));

    // Lists show only the tenant's own rows; the same display key names different items.
    let projects = list!(&globex, &ALICE, ListProjects { include_deleted: true, ..Default::default() } => ListProjectsResult);
    assert_eq!(projects, vec![globex_project.clone()]);
    assert_eq!(
        all_items(&globex, &ALICE, &globex_project.id, true).await,
        vec![globex_item.clone()]
    );
    assert_eq!(
        search(&globex, &globex_project.id, "secret").await.unwrap(),
        Vec::<String>::new()
    );
    let by_key = query(
        &globex,
        &ALICE,
        Q::GetWorkItem(v1::GetWorkItem {
            id: String::new(),
            display_key: "PM-1".into(),
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        by_key,
        R::GetWorkItemResult(v1::GetWorkItemResult {
            work_item: Some(globex_item.clone()),
            as_of_seq: 3,
        })
    );
    assert_eq!(
        all_items(&acme, &ALICE, &acme_project.id, true).await,
        vec![acme_item]
    );

    // Separate files in separate directories.
    let root = env.dir.path().join("tenants");
    assert_eq!(acme.dir(), root.join("acme"));
    assert_eq!(globex.dir(), root.join("globex"));
    assert!(root.join("acme").join("tenant.db").is_file());
    assert!(root.join("globex").join("tenant.db").is_file());
    let titles: Vec<String> = sqlx::query_scalar("SELECT title FROM work_items")
        .fetch_all(globex.read_pool())
        .await
        .unwrap();
    assert_eq!(titles, ["Globex plan"]);
}

#[tokio::test]
async fn malformed_tenant_ids_never_reach_the_file_system() {
    let env = TestEnv::new();
    let _acme = env.tenant("acme").await;
    let too_long = "a".repeat(64);
    for bad in [
        "..",
        ".",
        "a/b",
        "/etc",
        "a\\b",
        "%2e%2e",
        "Acme",
        too_long.as_str(),
        "",
        "acmé",
        "a\0b",
        "-acme",
        "acme.db",
        "acme ",
    ] {
        match TenantId::parse(bad) {
            Err(pm_core::Error::InvalidArgument { field, .. }) => {
                assert_eq!(field, "tenant_id", "{bad:?}")
            }
            other => panic!("{bad:?} must be refused, got {other:?}"),
        }
    }
    assert_eq!(
        TenantId::parse(&"a".repeat(63)).unwrap().as_str(),
        "a".repeat(63)
    );
    let names = |dir: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(env.dir.path()), ["tenants"]);
    assert_eq!(names(&env.dir.path().join("tenants")), ["acme"]);
    assert_eq!(env.registry.open_count(), 1);
}

#[tokio::test]
async fn a_closed_tenant_reopens_with_its_data_and_head() {
    let env = TestEnv::new();
    let id = TenantId::parse("acme").unwrap();
    let (project, item) = {
        let tenant = env.registry.open(&id).await.unwrap();
        let project = create_project(&tenant, &ALICE, "PM").await;
        let (item, _) = run::<v1::WorkItem>(
            &tenant,
            &ALICE,
            new_item(&project.id, T::Task, "Kept", None),
        )
        .await;
        let keyed_first = tenant
            .execute(
                &ALICE,
                keyed(
                    "before-close",
                    new_item(&project.id, T::Task, "Keyed", None),
                ),
            )
            .await
            .unwrap();
        assert_eq!(keyed_first.seq, 4);
        // A held tenant is not idle.
        assert_eq!(env.registry.close_idle().await, 0);
        (project, item)
    };
    assert_eq!(env.registry.open_count(), 1);
    assert_eq!(env.registry.close_idle().await, 1);
    assert_eq!(env.registry.open_count(), 0);

    let tenant = env.tenant("acme").await;
    assert_eq!(tenant.head_seq(), 4);
    assert_eq!(
        get::<v1::Project>(&tenant, &ALICE, &project.id)
            .await
            .unwrap(),
        project
    );
    let items = all_items(&tenant, &ALICE, &project.id, true).await;
    assert_eq!(
        items.iter().map(|i| i.title.as_str()).collect::<Vec<_>>(),
        ["Kept", "Keyed"]
    );
    assert_eq!(items[0], item);
    // Idempotency answers survive the reopen.
    let replayed = tenant
        .execute(
            &ALICE,
            keyed(
                "before-close",
                new_item(&project.id, T::Task, "Keyed", None),
            ),
        )
        .await
        .unwrap();
    assert_eq!((replayed.seq, replayed.replayed), (4, true));
    let (third, seq) =
        run::<v1::WorkItem>(&tenant, &ALICE, new_item(&project.id, T::Task, "New", None)).await;
    assert_eq!((seq, third.number), (5, 3));
    drop(tenant);
    assert_eq!(env.registry.close_idle().await, 1);

    // Another registry over the same directory sees the same tenant.
    let registry = TenantRegistry::new(RegistryConfig::new(env.dir.path()));
    let tenant = registry.open(&id).await.unwrap();
    assert_eq!(tenant.head_seq(), 5);
    let again = all_items(&tenant, &ALICE, &project.id, true).await;
    assert_eq!(again.len(), 3);
    assert_eq!((&again[0], &again[2]), (&item, &third));
    let log = tenant
        .read_events(0, None, 100, &EventFilter::default())
        .await
        .unwrap();
    assert_eq!(
        log.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let (_, seq) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(&project.id, T::Task, "Fourth", None),
    )
    .await;
    assert_eq!(seq, 6);
}

#[tokio::test]
async fn open_tenants_are_bounded_least_recently_used_first() {
    let env = TestEnv::with(|c| c.max_open_tenants = 2);
    let a = env.tenant("a").await;
    let a_project = create_project(&a, &ALICE, "PA").await;
    let a_weak = Arc::downgrade(&a);
    drop(a);
    let b = env.tenant("b").await;
    let b_weak = Arc::downgrade(&b);
    drop(b);
    assert_eq!(env.registry.open_count(), 2);

    let c = env.tenant("c").await;
    assert_eq!(env.registry.open_count(), 2);
    assert!(
        a_weak.upgrade().is_none(),
        "a, the least recently used, was closed"
    );
    assert!(b_weak.upgrade().is_some(), "b stays open");
    drop(c);

    // Reopening a closes b (now the least recently used) and keeps a's data.
    let a = env.tenant("a").await;
    assert_eq!(env.registry.open_count(), 2);
    assert!(b_weak.upgrade().is_none(), "b was closed");
    assert_eq!(a.head_seq(), 2);
    assert_eq!(
        get::<v1::Project>(&a, &ALICE, &a_project.id).await.unwrap(),
        a_project
    );

    // With both open tenants in use, a third cannot open.
    let c = env.tenant("c").await;
    let err = env
        .registry
        .open(&TenantId::parse("d").unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.code(), E::Unavailable);
    assert_eq!(env.registry.open_count(), 2);
    assert!(!env.dir.path().join("tenants").join("d").exists());
    // Both still work.
    assert_eq!(a.head_seq(), 2);
    assert_eq!(c.head_seq(), 0);

    // Released, one makes room.
    drop(c);
    let d = env.tenant("d").await;
    assert_eq!(d.head_seq(), 0);
    assert_eq!(env.registry.open_count(), 2);
}

// ---------------------------------------------------------------------------------------
// 12-14. The writer: gapless seqs, pragmas, a full queue
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_get_gapless_seqs() {
    const TASKS: u64 = 16;
    const PER_TASK: u64 = 50;
    let (_env, tenant, project) = setup().await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let tenant = tenant.clone();
            let project_id = project.id.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..PER_TASK {
                    let result = exec(
                        &tenant,
                        &ALICE,
                        new_item(&project_id, T::Task, &format!("Task {t}-{i}"), None),
                    )
                    .await
                    .expect("every create succeeds");
                    seqs.push(result.seq);
                }
                seqs
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        let mine = task.await.expect("task finished");
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "one writer's seqs grow"
        );
        seqs.extend(mine);
    }
    // The project took seqs 1 and 2.
    let last = 2 + TASKS * PER_TASK;
    seqs.sort_unstable();
    assert_eq!(seqs, (3..=last).collect::<Vec<_>>());
    assert_eq!(tenant.head_seq(), last);

    let events = tenant
        .read_events(0, None, 10_000, &EventFilter::default())
        .await
        .unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>()
    );
    for event in &events {
        assert_eq!(event.decode().unwrap().seq, event.seq);
    }
    let item_events = events
        .iter()
        .filter(|e| e.kind == EntityKind::WorkItem)
        .count();

    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let page = list_items(&tenant, &ALICE, &project.id, 500, &token).await;
        items.extend(page.items);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(items.len() as u64, TASKS * PER_TASK);
    assert_eq!(item_events, items.len());
    let mut numbers: Vec<u64> = items.iter().map(|i| i.number).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=TASKS * PER_TASK).collect::<Vec<_>>());
}

#[tokio::test]
async fn every_pooled_connection_has_the_pragmas() {
    let env = TestEnv::new();
    let tenant = env.tenant("acme").await;
    let size = env.registry.config().read_pool_size;
    assert_eq!(size, 4);
    let mut connections = Vec::new();
    for _ in 0..size {
        connections.push(tenant.read_pool().acquire().await.unwrap());
    }
    assert_eq!(tenant.read_pool().size(), size);
    for conn in &mut connections {
        let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(journal_mode, "wal");
        for (pragma, expected) in [
            ("synchronous", 1),
            ("foreign_keys", 1),
            ("busy_timeout", 5_000),
            ("temp_store", 2),
            ("cache_size", -8_192),
            ("mmap_size", 268_435_456),
        ] {
            let value: i64 = sqlx::query_scalar(&format!("PRAGMA {pragma}"))
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            assert_eq!(value, expected, "PRAGMA {pragma}");
        }
    }
}

#[tokio::test]
async fn a_full_writer_queue_answers_unavailable() {
    let env = TestEnv::with(|c| {
        c.writer.queue_capacity = 1;
        c.writer.max_group = 1;
    });
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "PM").await;
    let results = futures::future::join_all((0..200).map(|i| {
        exec(
            &tenant,
            &ALICE,
            new_item(&project.id, T::Task, &format!("Item {i}"), None),
        )
    }))
    .await;
    let mut seqs = Vec::new();
    let mut unavailable = 0;
    for result in &results {
        match result {
            Ok(r) => seqs.push(r.seq),
            Err(e) => {
                assert_eq!(e.code(), E::Unavailable, "{e:?}");
                unavailable += 1;
            }
        }
    }
    assert!(unavailable >= 1, "the queue of one overflowed");
    assert!(!seqs.is_empty());
    assert_eq!(seqs.len() + unavailable, 200);
    seqs.sort_unstable();
    assert_eq!(seqs, (3..3 + seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(tenant.head_seq(), 2 + seqs.len() as u64);
    assert_eq!(
        all_items(&tenant, &ALICE, &project.id, true).await.len(),
        seqs.len()
    );
    // The refusal was momentary.
    let (_, seq) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(&project.id, T::Task, "Later", None),
    )
    .await;
    assert_eq!(seq, 3 + seqs.len() as u64);
}

// ---------------------------------------------------------------------------------------
// 15. Committed events
// ---------------------------------------------------------------------------------------

fn decode_event(frame: &[u8]) -> v1::Event {
    match v1::ServerFrame::decode(frame).expect("a ServerFrame").body {
        Some(v1::server_frame::Body::Event(event)) => event,
        other => panic!("expected an event frame, got {other:?}"),
    }
}

#[tokio::test]
async fn committed_events_are_published_in_seq_order() {
    let env = TestEnv::new();
    let tenant = env.tenant("acme").await;
    let mut commits = tenant.subscribe_commits();

    let project = create_project(&tenant, &ALICE, "PM").await;
    let (item, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(&project.id, T::Task, "Draft", None),
    )
    .await;
    let (updated, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::UpdateWorkItem(v1::UpdateWorkItem {
            id: item.id.clone(),
            expected_version: 1,
            title: Some("Final".into()),
            ..Default::default()
        }),
    )
    .await;

    // Published before the callers were answered: one slice per committed group.
    let mut slices = Vec::new();
    while let Ok(slice) = commits.try_recv() {
        slices.push(slice);
    }
    let seqs: Vec<Vec<u64>> = slices
        .iter()
        .map(|s| s.iter().map(|e| e.seq).collect())
        .collect();
    assert_eq!(seqs, [vec![1, 2], vec![3], vec![4]]);
    let committed: Vec<_> = slices.iter().flat_map(|s| s.iter().cloned()).collect();
    assert!(committed.iter().all(|e| e.project_id == project.id));
    assert_eq!(
        committed.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [
            EntityKind::ProjectMember,
            EntityKind::Project,
            EntityKind::WorkItem,
            EntityKind::WorkItem
        ]
    );
    let events: Vec<v1::Event> = committed.iter().map(|e| decode_event(&e.frame)).collect();
    for (event, c) in events.iter().zip(&committed) {
        assert_eq!(event.seq, c.seq);
        assert_eq!(event.actor_id, "alice");
        assert_eq!(event.project_id, project.id);
    }

    let created = &events[2];
    assert_eq!(created.entity_type, v1::EntityType::WorkItem as i32);
    assert_eq!(created.entity_id, item.id);
    assert_eq!(created.action, v1::ChangeAction::Created as i32);
    assert_eq!(created.at, item.created_at);
    assert_eq!(
        created.change,
        Some(v1::event::Change::WorkItem(item.clone()))
    );
    let new = |field: &str, value: &str| v1::FieldChange {
        field: field.into(),
        old_value: None,
        new_value: Some(value.into()),
    };
    assert_eq!(
        created.changes,
        [
            new("number", "1"),
            new("item_type", "task"),
            new("title", "Draft"),
            new("description", ""),
            new("status", "backlog"),
            new("priority", "medium"),
            new("rank", &item.rank),
        ]
    );

    let changed = &events[3];
    assert_eq!(changed.entity_type, v1::EntityType::WorkItem as i32);
    assert_eq!(changed.entity_id, item.id);
    assert_eq!(changed.action, v1::ChangeAction::Updated as i32);
    assert_eq!(changed.at, updated.updated_at);
    assert_eq!(
        changed.change,
        Some(v1::event::Change::WorkItem(updated.clone()))
    );
    assert_eq!(
        changed.changes,
        [v1::FieldChange {
            field: "title".into(),
            old_value: Some("Draft".into()),
            new_value: Some("Final".into()),
        }]
    );
    assert_eq!(events[0].entity_type, v1::EntityType::ProjectMember as i32);
    assert_eq!(events[0].entity_id, "alice");
    assert_eq!(
        events[1].change,
        Some(v1::event::Change::Project(project.clone()))
    );

    // The log replays the very same frames, and the audit trail shows the same entries.
    let stored = tenant
        .read_events(0, None, 100, &EventFilter::default())
        .await
        .unwrap();
    assert_eq!(
        stored.iter().map(|e| e.frame()).collect::<Vec<_>>(),
        committed
            .iter()
            .map(|e| e.frame.clone())
            .collect::<Vec<_>>()
    );
    let filtered = tenant
        .read_events(
            0,
            None,
            100,
            &EventFilter {
                project_ids: vec![project.id.clone()],
                kinds: vec![EntityKind::WorkItem],
            },
        )
        .await
        .unwrap();
    assert_eq!(filtered.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
    let activity = list!(&tenant, &ALICE, ListActivity {
        project_id: project.id.clone(),
        oldest_first: true,
        ..Default::default()
    } => ListActivityResult);
    assert_eq!(
        activity.iter().map(|a| a.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(activity[3].changes, changed.changes);
    assert_eq!(
        activity[3].entity,
        Some(v1::Entity::of(v1::entity::Kind::WorkItem(updated)))
    );
    let newest_first =
        list!(&tenant, &ALICE, ListActivity { ..Default::default() } => ListActivityResult);
    assert_eq!(
        newest_first.iter().map(|a| a.seq).collect::<Vec<_>>(),
        [4, 3, 2, 1]
    );
}

#[tokio::test]
async fn activity_pages_both_ways() {
    let (_env, tenant, project) = setup().await;
    add_member(&tenant, &project.id, &BOB, v1::ProjectRole::Editor).await;
    let (item, _) =
        run::<v1::WorkItem>(&tenant, &BOB, new_item(&project.id, T::Task, "Task", None)).await;
    run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::UpdateWorkItem(v1::UpdateWorkItem {
            id: item.id.clone(),
            expected_version: 1,
            title: Some("Renamed".into()),
            ..Default::default()
        }),
    )
    .await;
    // Seqs 1..=5: project, alice's membership, bob's membership, the item, its update.
    let pages = |oldest_first: bool| {
        let tenant = tenant.clone();
        async move {
            let mut pages = Vec::new();
            let mut token = String::new();
            loop {
                let result = query(
                    &tenant,
                    &ALICE,
                    Q::ListActivity(v1::ListActivity {
                        page: Some(v1::PageRequest {
                            page_size: 2,
                            page_token: token.clone(),
                        }),
                        oldest_first,
                        ..Default::default()
                    }),
                )
                .await
                .unwrap();
                let R::ListActivityResult(r) = result else {
                    panic!("unexpected result {result:?}")
                };
                assert_eq!(r.as_of_seq, 5);
                pages.push(r.items.iter().map(|a| a.seq).collect::<Vec<_>>());
                if r.next_page_token.is_empty() {
                    return pages;
                }
                token = r.next_page_token;
            }
        }
    };
    assert_eq!(pages(false).await, [vec![5, 4], vec![3, 2], vec![1]]);
    assert_eq!(pages(true).await, [vec![1, 2], vec![3, 4], vec![5]]);

    let by_bob = list!(&tenant, &ALICE, ListActivity { actor_id: "bob".into(), ..Default::default() } => ListActivityResult);
    assert_eq!(by_bob.iter().map(|a| a.seq).collect::<Vec<_>>(), [4]);
    let of_item = list!(&tenant, &ALICE, ListActivity { entity_id: item.id.clone(), ..Default::default() } => ListActivityResult);
    assert_eq!(of_item.iter().map(|a| a.seq).collect::<Vec<_>>(), [5, 4]);
    assert_eq!(
        of_item.iter().map(|a| a.action).collect::<Vec<_>>(),
        [
            v1::ChangeAction::Updated as i32,
            v1::ChangeAction::Created as i32
        ]
    );
    let members = list!(&tenant, &ALICE, ListActivity {
        entity_type: Some(v1::EntityType::ProjectMember.into()),
        ..Default::default()
    } => ListActivityResult);
    // Creating the project logs its admin first (seq 1), then the project (seq 2).
    assert_eq!(members.iter().map(|a| a.seq).collect::<Vec<_>>(), [3, 1]);
}

/// SPEC is silent here; what a user expects: losing access to a project never leaves the
/// user with a running timer they can neither stop nor replace (one timer per user).
#[tokio::test]
async fn a_removed_member_is_not_locked_out_of_timers() {
    let (_env, tenant, project) = setup().await;
    let other = create_project(&tenant, &ALICE, "OT").await;
    add_member(&tenant, &project.id, &BOB, v1::ProjectRole::Editor).await;
    add_member(&tenant, &other.id, &BOB, v1::ProjectRole::Editor).await;
    let (here, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(&project.id, T::Task, "Here", None),
    )
    .await;
    let (there, _) =
        run::<v1::WorkItem>(&tenant, &ALICE, new_item(&other.id, T::Task, "There", None)).await;
    run::<v1::TimeEntry>(
        &tenant,
        &BOB,
        C::StartTimer(v1::StartTimer {
            work_item_id: here.id.clone(),
            description: String::new(),
        }),
    )
    .await;
    run::<v1::ProjectMember>(&tenant, &ALICE, remove(&project.id, "bob", 1)).await;

    // Either Bob stops the timer himself, or it was stopped for him on removal.
    match exec(&tenant, &BOB, C::StopTimer(v1::StopTimer {})).await {
        Ok(_) => {}
        Err(err) => assert_eq!(err.code(), E::FailedPrecondition, "{err:?}"),
    }
    let (timer, _) = run::<v1::TimeEntry>(
        &tenant,
        &BOB,
        C::StartTimer(v1::StartTimer {
            work_item_id: there.id.clone(),
            description: String::new(),
        }),
    )
    .await;
    assert_eq!(timer.project_id, other.id);
}

/// Commands queued together are committed as one group; inside it every command still sees
/// the ones before it, fails alone, and gets its own consecutive seq.
#[tokio::test]
async fn one_group_of_mixed_commands_applies_in_order() {
    mixed_group(false).await;
}

#[tokio::test]
async fn one_group_of_mixed_commands_applies_in_order_with_a_savepoint_per_command() {
    mixed_group(true).await;
}

async fn mixed_group(savepoint_per_command: bool) {
    let env = TestEnv::with(|c| c.writer.savepoint_per_command = savepoint_per_command);
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "PM").await;
    let pid = project.id.as_str();
    let (story, _) =
        run::<v1::WorkItem>(&tenant, &ALICE, new_item(pid, T::Story, "Story", None)).await;
    let (x, _) = run::<v1::WorkItem>(&tenant, &ALICE, new_item(pid, T::Task, "X", None)).await;
    let head = tenant.head_seq();
    assert_eq!(head, 4);
    let groups = tenant
        .writer_stats()
        .groups
        .load(std::sync::atomic::Ordering::Relaxed);

    let create = |title: &str, parent: Option<&str>| command(new_item(pid, T::Task, title, parent));
    let batch = |titles: &[&str]| v1::Batch {
        atomic: true,
        commands: titles.iter().map(|t| create(t, None)).collect(),
    };
    let keyed_g = keyed("g", new_item(pid, T::Task, "Gamma", None));
    let (a, bad, comment, c, de, f, update, g, g_again) = tokio::join!(
        tenant.execute(&ALICE, create("Alpha", Some(&story.id))),
        tenant.execute(&ALICE, create("Broken", Some(&a_uuid()))),
        tenant.execute(
            &ALICE,
            command(C::CreateComment(v1::CreateComment {
                work_item_id: x.id.clone(),
                content: "Zeppelin".into(),
            }))
        ),
        tenant.execute(&ALICE, create("Charlie", None)),
        tenant.batch(&ALICE, batch(&["Delta", "Echo"])),
        tenant.batch(&ALICE, batch(&["Foxtrot", ""])),
        tenant.execute(
            &ALICE,
            command(C::UpdateWorkItem(v1::UpdateWorkItem {
                id: x.id.clone(),
                expected_version: 1,
                title: Some("X renamed".into()),
                ..Default::default()
            }))
        ),
        tenant.execute(&ALICE, keyed_g.clone()),
        tenant.execute(&ALICE, keyed_g.clone()),
    );
    assert_eq!(
        tenant
            .writer_stats()
            .groups
            .load(std::sync::atomic::Ordering::Relaxed),
        groups + 1,
        "precondition: the joined commands were committed as one group"
    );

    let item = |r: &v1::CommandResult| entity_as::<v1::WorkItem>(r.entity.as_ref());
    let a = a.unwrap();
    assert_eq!(
        (a.seq, item(&a).number, item(&a).parent_id.as_deref()),
        (5, 3, Some(story.id.as_str()))
    );
    assert_invalid(&bad.unwrap_err(), "parent_id");
    let comment = comment.unwrap();
    assert_eq!(comment.seq, 6);
    let c = c.unwrap();
    assert_eq!((c.seq, item(&c).number), (7, 4));
    let de: Vec<(u64, u64)> = de
        .unwrap()
        .outcomes
        .iter()
        .map(|o| match &o.outcome {
            Some(v1::command_outcome::Outcome::CommandResult(r)) => (r.seq, item(r).number),
            other => panic!("unexpected outcome {other:?}"),
        })
        .collect();
    assert_eq!(de, [(8, 5), (9, 6)]);
    assert_invalid(&f.unwrap_err(), "commands[1].title");
    let update = update.unwrap();
    assert_eq!((update.seq, item(&update).version), (10, 2));
    let (g, g_again) = (g.unwrap(), g_again.unwrap());
    assert_eq!((g.seq, item(&g).number, g.replayed), (11, 7, false));
    assert_eq!(
        (g_again.seq, g_again.replayed, &g_again.entity),
        (11, true, &g.entity)
    );
    assert_eq!(tenant.head_seq(), 11);

    let items = all_items(&tenant, &ALICE, pid, true).await;
    assert_eq!(
        items
            .iter()
            .map(|i| (i.title.as_str(), i.number))
            .collect::<Vec<_>>(),
        [
            ("Story", 1),
            ("X renamed", 2),
            ("Alpha", 3),
            ("Charlie", 4),
            ("Delta", 5),
            ("Echo", 6),
            ("Gamma", 7)
        ]
    );
    assert_eq!(items[2], item(&a));
    assert_eq!(items[6], item(&g));
    assert_eq!(search(&tenant, pid, "gamma").await.unwrap(), ["Gamma"]);
    assert_eq!(
        search(&tenant, pid, "zeppelin").await.unwrap(),
        ["X renamed"]
    );
    let events = tenant
        .read_events(head, None, 100, &EventFilter::default())
        .await
        .unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (5..=11).collect::<Vec<_>>()
    );
    let logged_a = events[0].decode().unwrap();
    assert_eq!(logged_a.change, Some(v1::event::Change::WorkItem(item(&a))));
}
