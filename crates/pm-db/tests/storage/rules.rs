//! The rules commands enforce: the epic > story > task hierarchy, dependencies without
//! cycles, sprint status transitions, one running timer per user, timestamps in range.

use pm_proto::v1;
use pm_proto::v1::command::Kind as C;
use pm_proto::v1::query::Kind as Q;
use pm_proto::v1::query_result::Result as R;

use crate::support::*;

use v1::ErrorCode as E;
use v1::WorkItemType as T;

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
        unblocked(&story)
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
    assert_eq!(children, vec![unblocked(&moved)]);

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

/// A timestamp near `i64::MAX` once passed validation and made `StopTimer` overflow, which
/// killed the tenant's writer.
///
/// A regression found in review.
#[tokio::test]
async fn timestamps_out_of_range_are_refused_and_timers_still_stop() {
    let (_env, tenant, project) = setup().await;
    let (item, _) = create_item(&tenant, &ALICE, &project.id, v1::WorkItemType::Task, "T").await;
    let (timer, _) = run::<v1::TimeEntry>(
        &tenant,
        &ALICE,
        C::StartTimer(v1::StartTimer {
            work_item_id: item.id.clone(),
            description: String::new(),
        }),
    )
    .await;
    for started_at in [i64::MAX, -1, rules_max() + 1] {
        let error = fail(
            &tenant,
            &ALICE,
            C::UpdateTimeEntry(v1::UpdateTimeEntry {
                id: timer.id.clone(),
                expected_version: 1,
                started_at: Some(started_at),
                ..Default::default()
            }),
        )
        .await;
        assert_invalid(&error, "started_at");
    }
    let error = fail(
        &tenant,
        &ALICE,
        C::CreateSprint(v1::CreateSprint {
            project_id: project.id.clone(),
            name: "S".into(),
            end_at: Some(i64::MAX),
            ..Default::default()
        }),
    )
    .await;
    assert_invalid(&error, "end_at");

    let (stopped, _) = run::<v1::TimeEntry>(&tenant, &ALICE, C::StopTimer(v1::StopTimer {})).await;
    assert_eq!(stopped.id, timer.id);
    assert!(stopped.ended_at.unwrap() > stopped.started_at);
    // The writer is alive: another command goes through.
    create_item(
        &tenant,
        &ALICE,
        &project.id,
        v1::WorkItemType::Task,
        "after",
    )
    .await;
}

fn rules_max() -> i64 {
    pm_core::rules::MAX_TIMESTAMP_MS
}
