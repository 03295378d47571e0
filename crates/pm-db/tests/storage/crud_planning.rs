//! CRUD, soft delete and restore of what plans and lays out the work: sprints, dependencies
//! and swim lanes.

use pm_proto::v1;
use pm_proto::v1::command::Kind as C;
use pm_proto::v1::query::Kind as Q;
use pm_proto::v1::query_result::Result as R;

use crate::support::*;

use v1::WorkItemType as T;

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
            wip_policy: v1::WipPolicy::Unspecified.into(),
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
            // Unset on create: none.
            wip_policy: v1::WipPolicy::None.into(),
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
