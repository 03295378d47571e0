//! Regressions found in review: each test is an attack or edge that once misbehaved.

use pm_db::EventFilter;
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;
use pm_proto::v1::query::Kind as Q;
use pm_proto::v1::query_result::Result as R;

use crate::support::*;

/// A timestamp near `i64::MAX` once passed validation and made `StopTimer` overflow, which
/// killed the tenant's writer.
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

/// A resume position above `i64::MAX` once wrapped negative and replayed the whole log.
#[tokio::test]
async fn resume_positions_beyond_the_head_are_refused() {
    let (_env, tenant, _project) = setup().await;
    let head = tenant.head_seq();
    assert_eq!(head, 2);
    let all = EventFilter::default();
    for after in [u64::MAX, i64::MAX as u64 + 5, i64::MAX as u64, head + 1] {
        let error = tenant
            .read_events(after, None, 100, &all)
            .await
            .expect_err("beyond the head");
        assert_invalid(&error, "from_seq");
    }
    assert!(tenant
        .read_events(head, None, 100, &all)
        .await
        .unwrap()
        .is_empty());
    let seqs: Vec<u64> = tenant
        .read_events(0, Some(u64::MAX), 100, &all)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [1, 2]);
}

/// After a project is deleted, its members other than admins no longer see it or its history.
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

/// Restoring a dependency checks the caller's role before anything else.
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
