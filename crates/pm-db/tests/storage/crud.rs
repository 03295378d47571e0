//! CRUD, soft delete and restore of projects, members and work items; moving work items, and
//! the display keys of deleted and restored ones.

use pm_db::EventFilter;
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;
use pm_proto::v1::query::Kind as Q;
use pm_proto::v1::query_result::Result as R;

use crate::support::*;

use v1::ErrorCode as E;
use v1::WorkItemType as T;

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
    assert_eq!(listed.items, vec![unblocked(&item)]);
}

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
        // Derived by queries; command results leave it out.
        blocked: None,
        // Bob never connected: no profile, no name.
        assignee_name: String::new(),
    };
    assert_eq!(created, expected_created);
    let read = v1::WorkItem {
        blocked: Some(false),
        ..created.clone()
    };
    assert_eq!(
        get::<v1::WorkItem>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        read
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
            work_item: Some(read.clone()),
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
        unblocked(&updated)
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
        vec![unblocked(&deleted)]
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
        vec![unblocked(&restored)]
    );
    assert_eq!(
        get::<v1::WorkItem>(&tenant, &ALICE, &created.id)
            .await
            .unwrap(),
        unblocked(&restored)
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
