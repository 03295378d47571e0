//! Who may do what: the last admin stays, viewers read but cannot write, non-members neither
//! read nor write nor learn what exists, archived and deleted projects, removed members.

use pm_proto::v1;
use pm_proto::v1::command::Kind as C;
use pm_proto::v1::query::Kind as Q;
use pm_proto::v1::query_result::Result as R;

use crate::support::*;

use v1::ErrorCode as E;
use v1::WorkItemType as T;

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
        unblocked(&item)
    );
    assert_eq!(
        all_items(&tenant, &BOB, &project.id, false).await,
        vec![unblocked(&item)]
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

/// Restoring a dependency checks the caller's role before anything else.
///
/// A regression found in review.
#[tokio::test]
async fn a_viewer_cannot_restore_a_dependency() {
    let (_env, tenant, project) = setup().await;
    add_member(&tenant, &project.id, &BOB, v1::ProjectRole::Viewer).await;
    let (a, _) = create_item(&tenant, &ALICE, &project.id, v1::WorkItemType::Task, "A").await;
    let (b, _) = create_item(&tenant, &ALICE, &project.id, v1::WorkItemType::Task, "B").await;
    let (dependency, _) = run::<v1::Dependency>(
        &tenant,
        &ALICE,
        C::CreateDependency(v1::CreateDependency {
            blocking_item_id: a.id.clone(),
            blocked_item_id: b.id.clone(),
            dependency_type: v1::DependencyType::Blocks.into(),
        }),
    )
    .await;
    exec(
        &tenant,
        &ALICE,
        C::DeleteDependency(v1::DeleteDependency {
            id: dependency.id.clone(),
            expected_version: 1,
        }),
    )
    .await
    .unwrap();
    // B blocks A now exists, so restoring A blocks B would close a cycle; the viewer must
    // still hear about their role first.
    exec(
        &tenant,
        &ALICE,
        C::CreateDependency(v1::CreateDependency {
            blocking_item_id: b.id.clone(),
            blocked_item_id: a.id.clone(),
            dependency_type: v1::DependencyType::Blocks.into(),
        }),
    )
    .await
    .unwrap();
    let error = fail(
        &tenant,
        &BOB,
        C::RestoreDependency(v1::RestoreDependency {
            id: dependency.id.clone(),
            expected_version: 2,
        }),
    )
    .await;
    assert_eq!(error.code(), v1::ErrorCode::PermissionDenied, "{error:?}");
    let error = fail(
        &tenant,
        &ALICE,
        C::RestoreDependency(v1::RestoreDependency {
            id: dependency.id.clone(),
            expected_version: 2,
        }),
    )
    .await;
    assert_eq!(error.code(), v1::ErrorCode::FailedPrecondition, "{error:?}");
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
        unblocked(&item)
    );
    let listed = list!(&tenant, &ALICE, ListProjects { status: Some(Archived.into()), ..Default::default() } => ListProjectsResult);
    assert_eq!(listed, vec![archived]);

    // Unarchived, it takes content again.
    run::<v1::Project>(&tenant, &ALICE, archive(2, Active)).await;
    let (again, _) =
        run::<v1::WorkItem>(&tenant, &BOB, new_item(&project.id, T::Task, "New", None)).await;
    assert_eq!(again.number, 2);
}

/// After a project is deleted, its members other than admins no longer see it or its history.
///
/// A regression found in review.
#[tokio::test]
async fn a_deleted_project_disappears_for_its_non_admin_members() {
    let (_env, tenant, project) = setup().await;
    add_member(&tenant, &project.id, &BOB, v1::ProjectRole::Viewer).await;
    create_item(&tenant, &ALICE, &project.id, v1::WorkItemType::Epic, "E").await;
    let activity = |actor: &'static pm_core::UserId| {
        let tenant = tenant.clone();
        async move {
            match query(&tenant, actor, Q::ListActivity(v1::ListActivity::default()))
                .await
                .unwrap()
            {
                R::ListActivityResult(r) => r.items.len(),
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    assert_eq!(activity(&BOB).await, 4);
    exec(
        &tenant,
        &ALICE,
        C::DeleteProject(v1::DeleteProject {
            id: project.id.clone(),
            expected_version: 1,
        }),
    )
    .await
    .unwrap();
    assert_eq!(activity(&BOB).await, 0);
    assert_eq!(activity(&ALICE).await, 0);

    let projects = |actor: &'static pm_core::UserId| {
        let tenant = tenant.clone();
        async move {
            match query(
                &tenant,
                actor,
                Q::ListProjects(v1::ListProjects {
                    include_deleted: true,
                    ..Default::default()
                }),
            )
            .await
            .unwrap()
            {
                R::ListProjectsResult(r) => r.items.into_iter().map(|p| p.id).collect::<Vec<_>>(),
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    assert_eq!(projects(&BOB).await, Vec::<String>::new());
    assert_eq!(
        projects(&ALICE).await,
        vec![project.id.clone()],
        "admins may restore it"
    );
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
