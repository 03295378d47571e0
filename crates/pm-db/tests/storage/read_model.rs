//! The board read model: the cancelled status, the derived `blocked` flag, WIP policies per
//! swim lane, and the reads built on them (board summary, hierarchy, running timer, time
//! totals, dependencies by direction), each with `as_of_seq` and the membership checks of
//! every query; and a tenant made before them, migrated with its rows intact.

use pm_core::TenantId;
use pm_db::sqlite::inspect::{self, Thoroughness};
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;
use pm_proto::v1::query::Kind as Q;
use pm_proto::v1::query_result::Result as R;
use sqlx::Connection;

use crate::support::*;

use v1::ErrorCode as E;
use v1::WorkItemStatus as S;
use v1::WorkItemType as T;

/// A fixed time for time entries: 2023-11-14.
const T0: i64 = 1_700_000_000_000;

static DAVE: std::sync::LazyLock<pm_core::UserId> =
    std::sync::LazyLock::new(|| pm_core::UserId::parse("sub", "dave").unwrap());

/// Creates a task in `status` with optional story points and sprint.
async fn task(
    tenant: &TestTenant,
    project_id: &str,
    title: &str,
    status: S,
    points: Option<u32>,
    sprint: Option<&str>,
) -> v1::WorkItem {
    run::<v1::WorkItem>(
        tenant,
        &ALICE,
        C::CreateWorkItem(v1::CreateWorkItem {
            project_id: project_id.into(),
            item_type: T::Task.into(),
            title: title.into(),
            status: status.into(),
            story_points: points,
            sprint_id: sprint.map(Into::into),
            ..Default::default()
        }),
    )
    .await
    .0
}

fn create_in(project_id: &str, title: &str, status: S) -> C {
    C::CreateWorkItem(v1::CreateWorkItem {
        project_id: project_id.into(),
        item_type: T::Task.into(),
        title: title.into(),
        status: status.into(),
        ..Default::default()
    })
}

fn move_to(item: &v1::WorkItem, status: S) -> C {
    C::MoveWorkItem(v1::MoveWorkItem {
        id: item.id.clone(),
        expected_version: item.version,
        status: Some(status.into()),
        ..Default::default()
    })
}

/// Moves `item` to `status`; returns it as it is after the move.
async fn set_status(tenant: &TestTenant, item: &v1::WorkItem, status: S) -> v1::WorkItem {
    run::<v1::WorkItem>(tenant, &ALICE, move_to(item, status))
        .await
        .0
}

async fn link(
    tenant: &TestTenant,
    blocking: &v1::WorkItem,
    blocked: &v1::WorkItem,
    kind: v1::DependencyType,
) -> v1::Dependency {
    run::<v1::Dependency>(
        tenant,
        &ALICE,
        C::CreateDependency(v1::CreateDependency {
            blocking_item_id: blocking.id.clone(),
            blocked_item_id: blocked.id.clone(),
            dependency_type: kind.into(),
        }),
    )
    .await
    .0
}

async fn lane(
    tenant: &TestTenant,
    project_id: &str,
    name: &str,
    status: S,
    position: u32,
    limit: Option<u32>,
    policy: v1::WipPolicy,
) -> v1::SwimLane {
    run::<v1::SwimLane>(
        tenant,
        &ALICE,
        C::CreateSwimLane(v1::CreateSwimLane {
            project_id: project_id.into(),
            name: name.into(),
            status: status.into(),
            position,
            wip_limit: limit,
            wip_policy: policy.into(),
        }),
    )
    .await
    .0
}

async fn blocked(tenant: &TestTenant, item: &v1::WorkItem) -> Option<bool> {
    get::<v1::WorkItem>(tenant, &ALICE, &item.id)
        .await
        .unwrap()
        .blocked
}

async fn summary(
    tenant: &TestTenant,
    actor: &pm_core::UserId,
    project_id: &str,
    sprint_id: Option<&str>,
) -> pm_db::Result<v1::GetBoardSummaryResult> {
    let q = Q::GetBoardSummary(v1::GetBoardSummary {
        project_id: project_id.into(),
        sprint_id: sprint_id.map(Into::into),
    });
    match query(tenant, actor, q).await? {
        R::GetBoardSummaryResult(r) => Ok(r),
        other => panic!("unexpected result {other:?}"),
    }
}

async fn hierarchy(
    tenant: &TestTenant,
    actor: &pm_core::UserId,
    id: &str,
    include_deleted: bool,
) -> pm_db::Result<v1::GetWorkItemHierarchyResult> {
    let q = Q::GetWorkItemHierarchy(v1::GetWorkItemHierarchy {
        id: id.into(),
        include_deleted,
    });
    match query(tenant, actor, q).await? {
        R::GetWorkItemHierarchyResult(r) => Ok(r),
        other => panic!("unexpected result {other:?}"),
    }
}

async fn running_timer(tenant: &TestTenant, actor: &pm_core::UserId) -> v1::GetRunningTimerResult {
    match query(tenant, actor, Q::GetRunningTimer(v1::GetRunningTimer {}))
        .await
        .unwrap()
    {
        R::GetRunningTimerResult(r) => r,
        other => panic!("unexpected result {other:?}"),
    }
}

async fn totals(
    tenant: &TestTenant,
    actor: &pm_core::UserId,
    q: v1::GetTimeTotals,
) -> pm_db::Result<v1::GetTimeTotalsResult> {
    match query(tenant, actor, Q::GetTimeTotals(q)).await? {
        R::GetTimeTotalsResult(r) => Ok(r),
        other => panic!("unexpected result {other:?}"),
    }
}

/// (key, label, duration, entries) of each group.
fn groups(result: &v1::GetTimeTotalsResult) -> Vec<(String, String, i64, u32)> {
    result
        .groups
        .iter()
        .map(|g| (g.key.clone(), g.label.clone(), g.duration_ms, g.entries))
        .collect()
}

fn titles(items: &[v1::WorkItem]) -> Vec<&str> {
    items.iter().map(|i| i.title.as_str()).collect()
}

#[tokio::test]
async fn cancelled_is_a_status_of_its_own() {
    let (_env, tenant, project) = setup().await;
    let item = task(&tenant, &project.id, "Won't do", S::Backlog, None, None).await;
    let other = task(&tenant, &project.id, "Will do", S::Todo, None, None).await;
    let cancelled = set_status(&tenant, &item, S::Cancelled).await;
    assert_eq!(cancelled.status, i32::from(S::Cancelled));
    assert_eq!(i32::from(S::Cancelled), 6);
    assert_eq!(
        get::<v1::WorkItem>(&tenant, &ALICE, &item.id)
            .await
            .unwrap(),
        unblocked(&cancelled)
    );
    let listed = list!(&tenant, &ALICE, ListWorkItems {
        project_id: project.id.clone(),
        statuses: vec![S::Cancelled.into()],
        ..Default::default()
    } => ListWorkItemsResult);
    assert_eq!(listed, vec![unblocked(&cancelled)]);
    // The change log names it like every status.
    let activity = match query(
        &tenant,
        &ALICE,
        Q::ListActivity(v1::ListActivity {
            entity_id: item.id.clone(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    {
        R::ListActivityResult(r) => r.items,
        other => panic!("unexpected result {other:?}"),
    };
    assert_eq!(
        activity[0].changes,
        vec![v1::FieldChange {
            field: "status".into(),
            old_value: Some("backlog".into()),
            new_value: Some("cancelled".into()),
        }]
    );
    // A lane may show it.
    let lane = lane(
        &tenant,
        &project.id,
        "Dropped",
        S::Cancelled,
        9,
        None,
        v1::WipPolicy::Unspecified,
    )
    .await;
    assert_eq!(lane.status, i32::from(S::Cancelled));
    assert_eq!(other.status, i32::from(S::Todo));
}

#[tokio::test]
async fn blocked_follows_the_blocker() {
    let (_env, tenant, project) = setup().await;
    let blocker = task(&tenant, &project.id, "Blocker", S::Todo, None, None).await;
    let item = task(&tenant, &project.id, "Blocked", S::Todo, None, None).await;
    let related = task(&tenant, &project.id, "Related", S::Todo, None, None).await;
    let link_ = link(&tenant, &blocker, &item, v1::DependencyType::Blocks).await;
    link(&tenant, &blocker, &related, v1::DependencyType::RelatesTo).await;

    assert_eq!(blocked(&tenant, &item).await, Some(true));
    assert_eq!(blocked(&tenant, &blocker).await, Some(false));
    assert_eq!(
        blocked(&tenant, &related).await,
        Some(false),
        "relates_to never blocks"
    );
    let flags: Vec<(String, Option<bool>)> = all_items(&tenant, &ALICE, &project.id, false)
        .await
        .into_iter()
        .map(|i| (i.title, i.blocked))
        .collect();
    assert_eq!(
        flags,
        [
            ("Blocker".to_owned(), Some(false)),
            ("Blocked".to_owned(), Some(true)),
            ("Related".to_owned(), Some(false))
        ]
    );
    let by_key = match query(
        &tenant,
        &ALICE,
        Q::GetWorkItem(v1::GetWorkItem {
            id: String::new(),
            display_key: item.display_key.clone(),
        }),
    )
    .await
    .unwrap()
    {
        R::GetWorkItemResult(r) => r.work_item.unwrap(),
        other => panic!("unexpected result {other:?}"),
    };
    assert_eq!(by_key.blocked, Some(true));

    // The blocker's status decides, the moment it changes: done and cancelled are closed.
    let mut blocker = blocker;
    for (status, expected) in [
        (S::Done, false),
        (S::InProgress, true),
        (S::Cancelled, false),
        (S::Review, true),
    ] {
        blocker = set_status(&tenant, &blocker, status).await;
        assert_eq!(blocked(&tenant, &item).await, Some(expected), "{status:?}");
    }
    // A deleted blocker or link blocks nothing; restored, it blocks again.
    let (deleted, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::DeleteWorkItem(v1::DeleteWorkItem {
            id: blocker.id.clone(),
            expected_version: blocker.version,
        }),
    )
    .await;
    assert_eq!(blocked(&tenant, &item).await, Some(false));
    run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::RestoreWorkItem(v1::RestoreWorkItem {
            id: deleted.id.clone(),
            expected_version: deleted.version,
        }),
    )
    .await;
    assert_eq!(blocked(&tenant, &item).await, Some(true));
    let (gone, _) = run::<v1::Dependency>(
        &tenant,
        &ALICE,
        C::DeleteDependency(v1::DeleteDependency {
            id: link_.id.clone(),
            expected_version: 1,
        }),
    )
    .await;
    assert_eq!(blocked(&tenant, &item).await, Some(false));
    run::<v1::Dependency>(
        &tenant,
        &ALICE,
        C::RestoreDependency(v1::RestoreDependency {
            id: gone.id.clone(),
            expected_version: gone.version,
        }),
    )
    .await;
    assert_eq!(blocked(&tenant, &item).await, Some(true));
    // One open blocker is enough, however many closed ones there are.
    let done = task(&tenant, &project.id, "Done blocker", S::Done, None, None).await;
    link(&tenant, &done, &item, v1::DependencyType::Blocks).await;
    assert_eq!(blocked(&tenant, &item).await, Some(true));

    // Command results and events leave the derived flag out.
    let (moved, _) = run::<v1::WorkItem>(&tenant, &ALICE, move_to(&item, S::InProgress)).await;
    assert_eq!(moved.blocked, None);
}

#[tokio::test]
async fn a_refusing_lane_keeps_its_limit_and_changes_nothing() {
    let (_env, tenant, project) = setup().await;
    let doing = lane(
        &tenant,
        &project.id,
        "Doing",
        S::InProgress,
        1,
        Some(2),
        v1::WipPolicy::Refuse,
    )
    .await;
    assert_eq!(doing.wip_policy, i32::from(v1::WipPolicy::Refuse));
    let first = exec(
        &tenant,
        &ALICE,
        create_in(&project.id, "One", S::InProgress),
    )
    .await
    .unwrap();
    assert_eq!(first.warnings, vec![]);
    let (one, _) = (entity_as::<v1::WorkItem>(first.entity.as_ref()), first.seq);
    task(&tenant, &project.id, "Two", S::InProgress, None, None).await;
    let waiting = task(&tenant, &project.id, "Waiting", S::Todo, None, None).await;
    let head = tenant.head_seq();
    let full = "swim lane \"Doing\" holds 2 work items and its WIP limit is 2; move one out first";

    // Creating into the lane, moving or updating into it: refused, nothing written.
    let refusals = [
        create_in(&project.id, "Three", S::InProgress),
        move_to(&waiting, S::InProgress),
        C::UpdateWorkItem(v1::UpdateWorkItem {
            id: waiting.id.clone(),
            expected_version: waiting.version,
            status: Some(S::InProgress.into()),
            ..Default::default()
        }),
    ];
    for command in refusals {
        let error = fail(&tenant, &ALICE, command.clone()).await;
        assert_eq!(error.code(), E::FailedPrecondition, "{command:?}");
        assert_eq!(error.to_string(), full);
    }
    assert_eq!(tenant.head_seq(), head);
    assert_eq!(
        get::<v1::WorkItem>(&tenant, &ALICE, &waiting.id)
            .await
            .unwrap(),
        unblocked(&waiting)
    );

    // Bad input is still INVALID_ARGUMENT first, not a WIP refusal.
    let error = fail(
        &tenant,
        &ALICE,
        C::UpdateWorkItem(v1::UpdateWorkItem {
            id: waiting.id.clone(),
            expected_version: waiting.version,
            status: Some(S::InProgress.into()),
            title: Some(String::new()),
            ..Default::default()
        }),
    )
    .await;
    assert_invalid(&error, "title");

    // Within the lane (a new rank, no new status) and out of it: always allowed.
    let one = set_status(&tenant, &one, S::InProgress).await;
    let one = set_status(&tenant, &one, S::Review).await;
    let waiting = set_status(&tenant, &waiting, S::InProgress).await;
    // Full again; a deleted item coming back would overfill it.
    let (deleted, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::DeleteWorkItem(v1::DeleteWorkItem {
            id: waiting.id.clone(),
            expected_version: waiting.version,
        }),
    )
    .await;
    set_status(&tenant, &one, S::InProgress).await;
    let error = fail(
        &tenant,
        &ALICE,
        C::RestoreWorkItem(v1::RestoreWorkItem {
            id: deleted.id.clone(),
            expected_version: deleted.version,
        }),
    )
    .await;
    assert_eq!(
        (error.code(), error.to_string().as_str()),
        (E::FailedPrecondition, full)
    );

    // New items of one group count before they are inserted: the second of a batch is refused.
    lane(
        &tenant,
        &project.id,
        "Check",
        S::Review,
        2,
        Some(1),
        v1::WipPolicy::Refuse,
    )
    .await;
    let head = tenant.head_seq();
    let batch = |atomic| v1::Batch {
        commands: vec![
            command(create_in(&project.id, "R1", S::Review)),
            command(create_in(&project.id, "R2", S::Review)),
        ],
        atomic,
    };
    let check_full =
        "swim lane \"Check\" holds 1 work item and its WIP limit is 1; move one out first";
    let error = tenant.batch(&ALICE, batch(true)).await.unwrap_err();
    assert_eq!(
        (error.code(), error.to_string().as_str()),
        (E::FailedPrecondition, check_full)
    );
    assert_eq!(tenant.head_seq(), head, "an atomic batch commits nothing");
    let result = tenant.batch(&ALICE, batch(false)).await.unwrap();
    let outcomes: Vec<_> = result
        .outcomes
        .iter()
        .map(|o| match &o.outcome {
            Some(v1::command_outcome::Outcome::CommandResult(r)) => Ok(r.warnings.len()),
            Some(v1::command_outcome::Outcome::Error(e)) => Err((e.code, e.message.clone())),
            None => panic!("an outcome"),
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            Ok(0),
            Err((E::FailedPrecondition.into(), check_full.to_owned()))
        ]
    );
    assert_eq!(tenant.head_seq(), head + 1);

    // Without the lane the limit is gone (the writer forgets what it cached).
    run::<v1::SwimLane>(
        &tenant,
        &ALICE,
        C::DeleteSwimLane(v1::DeleteSwimLane {
            id: doing.id.clone(),
            expected_version: 1,
        }),
    )
    .await;
    let result = exec(
        &tenant,
        &ALICE,
        create_in(&project.id, "Three", S::InProgress),
    )
    .await
    .unwrap();
    assert_eq!(result.warnings, vec![]);
}

#[tokio::test]
async fn a_warning_lane_takes_the_item_and_says_so() {
    let (_env, tenant, project) = setup().await;
    let review = lane(
        &tenant,
        &project.id,
        "Review",
        S::Review,
        1,
        Some(1),
        v1::WipPolicy::Warn,
    )
    .await;
    let first = exec(&tenant, &ALICE, create_in(&project.id, "R1", S::Review))
        .await
        .unwrap();
    assert_eq!(first.warnings, vec![]);
    let over = v1::Warning {
        code: v1::WarningCode::WipLimitExceeded.into(),
        message: "swim lane \"Review\" is over its WIP limit: 2 work items, limit 1".into(),
        entity_id: review.id.clone(),
    };
    let keyed_create = keyed("second", create_in(&project.id, "R2", S::Review));
    let second = tenant.execute(&ALICE, keyed_create.clone()).await.unwrap();
    assert_eq!(second.warnings, vec![over.clone()]);
    let r2 = entity_as::<v1::WorkItem>(second.entity.as_ref());
    assert_eq!(r2.status, i32::from(S::Review));
    // The stored answer of a repeated key says the same.
    let replay = tenant.execute(&ALICE, keyed_create).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.warnings, vec![over]);

    // Moving within the lane, or out of it, never warns.
    let moved = exec(
        &tenant,
        &ALICE,
        C::MoveWorkItem(v1::MoveWorkItem {
            id: r2.id.clone(),
            expected_version: 1,
            before_id: Some(entity_as::<v1::WorkItem>(first.entity.as_ref()).id),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    assert_eq!(moved.warnings, vec![]);
    let out = exec(
        &tenant,
        &ALICE,
        move_to(&entity_as(moved.entity.as_ref()), S::Done),
    )
    .await
    .unwrap();
    assert_eq!(out.warnings, vec![]);
    // An update into it warns like a move.
    let back = exec(
        &tenant,
        &ALICE,
        C::UpdateWorkItem(v1::UpdateWorkItem {
            id: r2.id.clone(),
            expected_version: 3,
            status: Some(S::Review.into()),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    assert_eq!(back.warnings.len(), 1);

    // The policy follows the lane: none shows the limit only; refuse refuses.
    let mut version = 1;
    for (policy, outcome) in [
        (v1::WipPolicy::None, Ok(0)),
        (v1::WipPolicy::Refuse, Err(E::FailedPrecondition)),
        (v1::WipPolicy::Warn, Ok(1)),
    ] {
        let (updated, _) = run::<v1::SwimLane>(
            &tenant,
            &ALICE,
            C::UpdateSwimLane(v1::UpdateSwimLane {
                id: review.id.clone(),
                expected_version: version,
                wip_policy: Some(policy.into()),
                ..Default::default()
            }),
        )
        .await;
        version = updated.version;
        assert_eq!(updated.wip_policy, i32::from(policy));
        let got = exec(&tenant, &ALICE, create_in(&project.id, "More", S::Review))
            .await
            .map(|r| r.warnings.len())
            .map_err(|e| e.code());
        assert_eq!(got, outcome, "{policy:?}");
    }
    // Without a limit the policy is inert.
    run::<v1::SwimLane>(
        &tenant,
        &ALICE,
        C::UpdateSwimLane(v1::UpdateSwimLane {
            id: review.id.clone(),
            expected_version: version,
            clear_fields: vec!["wip_limit".into()],
            ..Default::default()
        }),
    )
    .await;
    let result = exec(&tenant, &ALICE, create_in(&project.id, "Free", S::Review))
        .await
        .unwrap();
    assert_eq!(result.warnings, vec![]);
}

#[tokio::test]
async fn lane_policies_are_validated() {
    let (_env, tenant, project) = setup().await;
    let error = fail(
        &tenant,
        &ALICE,
        C::CreateSwimLane(v1::CreateSwimLane {
            project_id: project.id.clone(),
            name: "Doing".into(),
            status: S::InProgress.into(),
            position: 0,
            wip_limit: Some(3),
            wip_policy: 99,
        }),
    )
    .await;
    assert_invalid(&error, "wip_policy");
    let lane = lane(
        &tenant,
        &project.id,
        "Doing",
        S::InProgress,
        0,
        Some(3),
        v1::WipPolicy::Unspecified,
    )
    .await;
    assert_eq!(lane.wip_policy, i32::from(v1::WipPolicy::None));
    for bad in [0, 99] {
        let error = fail(
            &tenant,
            &ALICE,
            C::UpdateSwimLane(v1::UpdateSwimLane {
                id: lane.id.clone(),
                expected_version: 1,
                wip_policy: Some(bad),
                ..Default::default()
            }),
        )
        .await;
        assert_invalid(&error, "wip_policy");
    }
    assert_eq!(
        get::<v1::SwimLane>(&tenant, &ALICE, &lane.id)
            .await
            .unwrap(),
        lane
    );
}

#[tokio::test]
async fn the_board_summary_counts_statuses_lanes_and_sprint_progress() {
    let (_env, tenant, project) = setup().await;
    let pid = project.id.as_str();
    add_member(&tenant, pid, &BOB, v1::ProjectRole::Viewer).await;
    let sprint = |name: &str| {
        C::CreateSprint(v1::CreateSprint {
            project_id: pid.into(),
            name: name.into(),
            ..Default::default()
        })
    };
    let (s1, _) = run::<v1::Sprint>(&tenant, &ALICE, sprint("Sprint 1")).await;
    let (s2, _) = run::<v1::Sprint>(&tenant, &ALICE, sprint("Sprint 2")).await;

    // Before any work: every status at zero, no lanes, no active sprint.
    let empty = summary(&tenant, &ALICE, pid, None).await.unwrap();
    assert_eq!(empty.statuses.len(), 6);
    assert!(empty
        .statuses
        .iter()
        .all(|s| s.items == 0 && s.story_points == 0));
    assert_eq!((empty.lanes.len(), empty.sprint_progress), (0, None));

    let (s1, _) = run::<v1::Sprint>(
        &tenant,
        &ALICE,
        C::UpdateSprint(v1::UpdateSprint {
            id: s1.id.clone(),
            expected_version: 1,
            status: Some(v1::SprintStatus::Active.into()),
            ..Default::default()
        }),
    )
    .await;
    task(&tenant, pid, "a", S::Todo, Some(3), Some(&s1.id)).await;
    task(&tenant, pid, "b", S::InProgress, Some(5), Some(&s1.id)).await;
    task(&tenant, pid, "c", S::InProgress, None, None).await;
    task(&tenant, pid, "d", S::Done, Some(2), Some(&s1.id)).await;
    task(&tenant, pid, "e", S::Cancelled, Some(8), Some(&s1.id)).await;
    task(&tenant, pid, "f", S::Review, Some(1), Some(&s2.id)).await;
    let g = task(&tenant, pid, "g", S::Backlog, Some(13), None).await;
    run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::DeleteWorkItem(v1::DeleteWorkItem {
            id: g.id.clone(),
            expected_version: 1,
        }),
    )
    .await;
    let check = lane(
        &tenant,
        pid,
        "Check",
        S::Review,
        2,
        Some(3),
        v1::WipPolicy::Warn,
    )
    .await;
    let doing = lane(
        &tenant,
        pid,
        "Doing",
        S::InProgress,
        1,
        Some(1),
        v1::WipPolicy::None,
    )
    .await;
    let done = lane(
        &tenant,
        pid,
        "Done",
        S::Done,
        3,
        None,
        v1::WipPolicy::Unspecified,
    )
    .await;

    let count = |status: S, items, story_points| v1::StatusCount {
        status: status.into(),
        items,
        story_points,
    };
    let got = summary(&tenant, &BOB, pid, None).await.unwrap();
    assert_eq!(got.as_of_seq, tenant.head_seq());
    assert_eq!(
        got.statuses,
        vec![
            count(S::Backlog, 0, 0),
            count(S::Todo, 1, 3),
            count(S::InProgress, 2, 5),
            count(S::Review, 1, 1),
            count(S::Done, 1, 2),
            count(S::Cancelled, 1, 8),
        ]
    );
    let load = |lane: &v1::SwimLane, items, story_points, over_limit| v1::SwimLaneLoad {
        swim_lane: Some(lane.clone()),
        items,
        story_points,
        over_limit,
    };
    assert_eq!(
        got.lanes,
        vec![
            load(&doing, 2, 5, true),
            load(&check, 1, 1, false),
            load(&done, 1, 2, false),
        ]
    );
    assert_eq!(
        got.sprint_progress,
        Some(v1::SprintProgress {
            sprint: Some(s1.clone()),
            items: 4,
            closed_items: 2,
            story_points: 18,
            closed_story_points: 10,
            statuses: vec![
                count(S::Backlog, 0, 0),
                count(S::Todo, 1, 3),
                count(S::InProgress, 1, 5),
                count(S::Review, 0, 0),
                count(S::Done, 1, 2),
                count(S::Cancelled, 1, 8),
            ],
        })
    );
    // Another sprint by id.
    let other = summary(&tenant, &ALICE, pid, Some(&s2.id)).await.unwrap();
    let progress = other.sprint_progress.unwrap();
    assert_eq!(
        (
            progress.sprint.unwrap().id,
            progress.items,
            progress.closed_items,
            progress.story_points
        ),
        (s2.id.clone(), 1, 0, 1)
    );

    // What the caller may not see, and what does not exist, is NOT_FOUND; bad ids INVALID.
    let error = summary(&tenant, &DAVE, pid, None).await.unwrap_err();
    assert_eq!(
        (error.code(), error.to_string()),
        (E::NotFound, "project not found".into())
    );
    let elsewhere = create_project(&tenant, &ALICE, "QA").await;
    let error = summary(&tenant, &ALICE, &elsewhere.id, Some(&s1.id))
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error.to_string()),
        (E::NotFound, "sprint not found".into())
    );
    assert_invalid(
        &summary(&tenant, &ALICE, pid, Some("x")).await.unwrap_err(),
        "sprint_id",
    );
    assert_invalid(
        &summary(&tenant, &ALICE, "x", None).await.unwrap_err(),
        "project_id",
    );
    let none = summary(&tenant, &ALICE, &elsewhere.id, None).await.unwrap();
    assert_eq!(none.sprint_progress, None);
}

#[tokio::test]
async fn the_hierarchy_shows_ancestors_and_the_subtree() {
    let (_env, tenant, project) = setup().await;
    let pid = project.id.as_str();
    let create = |t: T, title: &str, parent: Option<&str>| new_item(pid, t, title, parent);
    let (epic, _) = run::<v1::WorkItem>(&tenant, &ALICE, create(T::Epic, "Epic", None)).await;
    let (s1, _) =
        run::<v1::WorkItem>(&tenant, &ALICE, create(T::Story, "S1", Some(&epic.id))).await;
    let (s2, _) =
        run::<v1::WorkItem>(&tenant, &ALICE, create(T::Story, "S2", Some(&epic.id))).await;
    let (t1, _) = run::<v1::WorkItem>(&tenant, &ALICE, create(T::Task, "T1", Some(&s1.id))).await;
    let (t2, _) = run::<v1::WorkItem>(&tenant, &ALICE, create(T::Task, "T2", Some(&s1.id))).await;
    let (bug, _) = run::<v1::WorkItem>(&tenant, &ALICE, create(T::Bug, "B", Some(&s2.id))).await;
    let (t3, _) = run::<v1::WorkItem>(&tenant, &ALICE, create(T::Task, "T3", Some(&s1.id))).await;
    let (t3, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::DeleteWorkItem(v1::DeleteWorkItem {
            id: t3.id.clone(),
            expected_version: 1,
        }),
    )
    .await;
    link(&tenant, &t1, &bug, v1::DependencyType::Blocks).await;

    let story = hierarchy(&tenant, &ALICE, &s1.id, false).await.unwrap();
    assert_eq!(
        story,
        v1::GetWorkItemHierarchyResult {
            ancestors: vec![unblocked(&epic)],
            work_item: Some(unblocked(&s1)),
            descendants: vec![unblocked(&t1), unblocked(&t2)],
            truncated: false,
            as_of_seq: tenant.head_seq(),
        }
    );
    let with_deleted = hierarchy(&tenant, &ALICE, &s1.id, true).await.unwrap();
    assert_eq!(titles(&with_deleted.descendants), ["T1", "T2", "T3"]);
    assert_eq!(with_deleted.descendants[2], unblocked(&t3));

    // From the top: by depth, then rank; the blocked bug says so.
    let whole = hierarchy(&tenant, &BOB, &epic.id, false).await;
    assert_eq!(whole.unwrap_err().code(), E::NotFound, "bob is no member");
    add_member(&tenant, pid, &BOB, v1::ProjectRole::Viewer).await;
    let whole = hierarchy(&tenant, &BOB, &epic.id, false).await.unwrap();
    assert_eq!(whole.ancestors, vec![]);
    assert_eq!(titles(&whole.descendants), ["S1", "S2", "T1", "T2", "B"]);
    let flags: Vec<Option<bool>> = whole.descendants.iter().map(|i| i.blocked).collect();
    assert_eq!(
        flags,
        [
            Some(false),
            Some(false),
            Some(false),
            Some(false),
            Some(true)
        ]
    );
    assert!(whole
        .descendants
        .iter()
        .all(|i| i.display_key.starts_with("PM-")));

    // From the bottom: the path from the root, nothing below.
    let leaf = hierarchy(&tenant, &ALICE, &t2.id, false).await.unwrap();
    assert_eq!(titles(&leaf.ancestors), ["Epic", "S1"]);
    assert_eq!(
        (leaf.work_item.unwrap().title, leaf.descendants),
        ("T2".into(), vec![])
    );

    assert_eq!(
        hierarchy(&tenant, &ALICE, &a_uuid(), false)
            .await
            .unwrap_err()
            .to_string(),
        "work item not found"
    );
    assert_invalid(
        &hierarchy(&tenant, &ALICE, "PM-1", false).await.unwrap_err(),
        "id",
    );
}

#[tokio::test]
async fn the_running_timer_is_found_in_any_project() {
    let (_env, tenant, pm) = setup().await;
    let qa = create_project(&tenant, &BOB, "QA").await;
    add_member(&tenant, &pm.id, &BOB, v1::ProjectRole::Editor).await;
    run::<v1::ProjectMember>(
        &tenant,
        &BOB,
        C::AddMember(v1::AddMember {
            project_id: qa.id.clone(),
            user_id: "alice".into(),
            role: v1::ProjectRole::Editor.into(),
        }),
    )
    .await;
    let (qa_item, _) =
        run::<v1::WorkItem>(&tenant, &BOB, new_item(&qa.id, T::Task, "Test it", None)).await;
    let pm_item = task(&tenant, &pm.id, "Build it", S::Todo, None, None).await;

    let none = running_timer(&tenant, &ALICE).await;
    assert_eq!(
        none,
        v1::GetRunningTimerResult {
            time_entry: None,
            work_item: None,
            as_of_seq: tenant.head_seq(),
        }
    );
    let start = |item: &v1::WorkItem| {
        C::StartTimer(v1::StartTimer {
            work_item_id: item.id.clone(),
            description: String::new(),
        })
    };
    let (mine, _) = run::<v1::TimeEntry>(&tenant, &ALICE, start(&qa_item)).await;
    let found = running_timer(&tenant, &ALICE).await;
    assert_eq!(found.time_entry, Some(mine.clone()));
    let item = found.work_item.unwrap();
    assert_eq!(
        (item.display_key.as_str(), item.blocked),
        ("QA-1", Some(false))
    );
    assert_eq!(item, unblocked(&qa_item));
    assert_eq!(found.as_of_seq, tenant.head_seq());

    // Each user sees their own.
    assert_eq!(running_timer(&tenant, &BOB).await.time_entry, None);
    let (bobs, _) = run::<v1::TimeEntry>(&tenant, &BOB, start(&pm_item)).await;
    assert_eq!(running_timer(&tenant, &BOB).await.time_entry, Some(bobs));
    assert_eq!(running_timer(&tenant, &ALICE).await.time_entry, Some(mine));

    // Stopped, it is gone; in a project the user left, it is not shown.
    run::<v1::TimeEntry>(&tenant, &ALICE, C::StopTimer(v1::StopTimer {})).await;
    assert_eq!(running_timer(&tenant, &ALICE).await.time_entry, None);
    run::<v1::TimeEntry>(&tenant, &ALICE, start(&qa_item)).await;
    run::<v1::ProjectMember>(
        &tenant,
        &BOB,
        C::RemoveMember(v1::RemoveMember {
            project_id: qa.id.clone(),
            user_id: "alice".into(),
            expected_version: 1,
        }),
    )
    .await;
    assert_eq!(running_timer(&tenant, &ALICE).await.time_entry, None);
}

#[tokio::test]
async fn time_totals_group_and_clip_time_entries() {
    let (_env, tenant, pm) = setup().await;
    let pid = pm.id.as_str();
    add_member(&tenant, pid, &BOB, v1::ProjectRole::Editor).await;
    add_member(&tenant, pid, &CAROL, v1::ProjectRole::Viewer).await;
    let (sprint, _) = run::<v1::Sprint>(
        &tenant,
        &ALICE,
        C::CreateSprint(v1::CreateSprint {
            project_id: pid.into(),
            name: "Sprint 1".into(),
            ..Default::default()
        }),
    )
    .await;
    let i1 = task(&tenant, pid, "i1", S::Todo, None, Some(&sprint.id)).await;
    let i2 = task(&tenant, pid, "i2", S::Todo, None, None).await;
    let qa = create_project(&tenant, &ALICE, "QA").await;
    let q1 = task(&tenant, &qa.id, "q1", S::Todo, None, None).await;
    let entry = |item: &v1::WorkItem, from: i64, to: i64| {
        C::CreateTimeEntry(v1::CreateTimeEntry {
            work_item_id: item.id.clone(),
            started_at: T0 + from,
            ended_at: T0 + to,
            description: String::new(),
        })
    };
    run::<v1::TimeEntry>(&tenant, &ALICE, entry(&i1, 0, 60_000)).await;
    let (alices_i2, _) = run::<v1::TimeEntry>(&tenant, &ALICE, entry(&i2, 60_000, 240_000)).await;
    run::<v1::TimeEntry>(&tenant, &BOB, entry(&i1, 30_000, 90_000)).await;
    run::<v1::TimeEntry>(&tenant, &ALICE, entry(&q1, 0, 600_000)).await;

    let of = |group: v1::TimeGrouping| v1::GetTimeTotals {
        project_id: pid.into(),
        group_by: group.into(),
        ..Default::default()
    };
    let all = totals(&tenant, &CAROL, of(v1::TimeGrouping::Unspecified))
        .await
        .unwrap();
    assert_eq!(
        (
            all.duration_ms,
            all.entries,
            all.groups.len(),
            all.truncated,
            all.as_of_seq
        ),
        (300_000, 3, 0, false, tenant.head_seq())
    );
    let s = |x: &str| x.to_owned();
    let by_user = totals(&tenant, &ALICE, of(v1::TimeGrouping::User))
        .await
        .unwrap();
    assert_eq!(
        groups(&by_user),
        [
            (s("alice"), s("alice"), 240_000, 2),
            (s("bob"), s("bob"), 60_000, 1)
        ]
    );
    let by_item = totals(&tenant, &ALICE, of(v1::TimeGrouping::WorkItem))
        .await
        .unwrap();
    assert_eq!(
        groups(&by_item),
        [
            (i2.id.clone(), s("PM-2"), 180_000, 1),
            (i1.id.clone(), s("PM-1"), 120_000, 2)
        ]
    );
    let by_sprint = totals(&tenant, &ALICE, of(v1::TimeGrouping::Sprint))
        .await
        .unwrap();
    assert_eq!(
        groups(&by_sprint),
        [
            (s(""), s(""), 180_000, 1),
            (sprint.id.clone(), s("Sprint 1"), 120_000, 2)
        ]
    );
    let by_project = totals(&tenant, &ALICE, of(v1::TimeGrouping::Project))
        .await
        .unwrap();
    assert_eq!(groups(&by_project), [(pm.id.clone(), s("PM"), 300_000, 3)]);

    // A range counts the part of each entry inside it.
    let window = totals(
        &tenant,
        &ALICE,
        v1::GetTimeTotals {
            start_at: Some(T0 + 45_000),
            end_at: Some(T0 + 75_000),
            ..of(v1::TimeGrouping::User)
        },
    )
    .await
    .unwrap();
    assert_eq!(
        groups(&window),
        [
            (s("alice"), s("alice"), 30_000, 2),
            (s("bob"), s("bob"), 30_000, 1)
        ]
    );
    assert_eq!((window.duration_ms, window.entries), (60_000, 3));

    // Filters.
    let only = |q: v1::GetTimeTotals| async {
        let r = totals(&tenant, &ALICE, q).await.unwrap();
        (r.duration_ms, r.entries)
    };
    let base = of(v1::TimeGrouping::Unspecified);
    assert_eq!(
        only(v1::GetTimeTotals {
            user_id: Some("bob".into()),
            ..base.clone()
        })
        .await,
        (60_000, 1)
    );
    assert_eq!(
        only(v1::GetTimeTotals {
            work_item_id: Some(i2.id.clone()),
            ..base.clone()
        })
        .await,
        (180_000, 1)
    );
    assert_eq!(
        only(v1::GetTimeTotals {
            sprint_id: Some(sprint.id.clone()),
            ..base.clone()
        })
        .await,
        (120_000, 2)
    );

    // Without a project: every project of the caller, and only those.
    let everywhere = v1::GetTimeTotals {
        group_by: v1::TimeGrouping::Project.into(),
        ..Default::default()
    };
    let of_user = |actor| totals(&tenant, actor, everywhere.clone());
    assert_eq!(
        groups(&of_user(&ALICE).await.unwrap()),
        [
            (qa.id.clone(), s("QA"), 600_000, 1),
            (pm.id.clone(), s("PM"), 300_000, 3)
        ]
    );
    assert_eq!(
        groups(&of_user(&BOB).await.unwrap()),
        [(pm.id.clone(), s("PM"), 300_000, 3)]
    );
    assert_eq!(groups(&of_user(&DAVE).await.unwrap()), []);
    let error = totals(&tenant, &DAVE, of(v1::TimeGrouping::User))
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error.to_string()),
        (E::NotFound, "project not found".into())
    );

    // Deleted entries do not count.
    run::<v1::TimeEntry>(
        &tenant,
        &ALICE,
        C::DeleteTimeEntry(v1::DeleteTimeEntry {
            id: alices_i2.id.clone(),
            expected_version: 1,
        }),
    )
    .await;
    assert_eq!(only(base.clone()).await, (120_000, 2));

    // A running timer counts up to the time of the query, which the answer names.
    let (running, _) = run::<v1::TimeEntry>(
        &tenant,
        &BOB,
        C::StartTimer(v1::StartTimer {
            work_item_id: i2.id.clone(),
            description: String::new(),
        }),
    )
    .await;
    let started = running.started_at - 3_600_000;
    run::<v1::TimeEntry>(
        &tenant,
        &BOB,
        C::UpdateTimeEntry(v1::UpdateTimeEntry {
            id: running.id.clone(),
            expected_version: 1,
            started_at: Some(started),
            ..Default::default()
        }),
    )
    .await;
    let with_timer = totals(
        &tenant,
        &ALICE,
        v1::GetTimeTotals {
            user_id: Some("bob".into()),
            ..base.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (with_timer.duration_ms, with_timer.entries),
        (60_000 + with_timer.now - started, 2)
    );

    // Bad input.
    let bad = [
        (
            v1::GetTimeTotals {
                start_at: Some(T0),
                end_at: Some(T0),
                ..base.clone()
            },
            "end_at",
        ),
        (
            v1::GetTimeTotals {
                start_at: Some(-1),
                ..base.clone()
            },
            "start_at",
        ),
        (
            v1::GetTimeTotals {
                end_at: Some(i64::MAX),
                ..base.clone()
            },
            "end_at",
        ),
        (
            v1::GetTimeTotals {
                group_by: 99,
                ..base.clone()
            },
            "group_by",
        ),
        (
            v1::GetTimeTotals {
                user_id: Some(String::new()),
                ..base.clone()
            },
            "user_id",
        ),
        (
            v1::GetTimeTotals {
                work_item_id: Some("PM-1".into()),
                ..base.clone()
            },
            "work_item_id",
        ),
        (
            v1::GetTimeTotals {
                project_id: "x".into(),
                ..base.clone()
            },
            "project_id",
        ),
    ];
    for (q, field) in bad {
        assert_invalid(&totals(&tenant, &ALICE, q).await.unwrap_err(), field);
    }
}

#[tokio::test]
async fn dependencies_are_listed_by_direction_and_type() {
    let (_env, tenant, project) = setup().await;
    let pid = project.id.as_str();
    let a = task(&tenant, pid, "a", S::Todo, None, None).await;
    let b = task(&tenant, pid, "b", S::Todo, None, None).await;
    let c = task(&tenant, pid, "c", S::Todo, None, None).await;
    let d = task(&tenant, pid, "d", S::Todo, None, None).await;
    let ab = link(&tenant, &a, &b, v1::DependencyType::Blocks).await;
    let ac = link(&tenant, &a, &c, v1::DependencyType::RelatesTo).await;
    let da = link(&tenant, &d, &a, v1::DependencyType::Blocks).await;
    let bc = link(&tenant, &b, &c, v1::DependencyType::Blocks).await;

    let list = |item: Option<&v1::WorkItem>,
                direction: v1::DependencyDirection,
                kind: Option<v1::DependencyType>| {
        Q::ListDependencies(v1::ListDependencies {
            project_id: pid.into(),
            page: page500(),
            work_item_id: item.map(|i| i.id.clone()),
            include_deleted: false,
            direction: direction.into(),
            dependency_type: kind.map(Into::into),
        })
    };
    let ids = |q| async {
        match query(&tenant, &ALICE, q).await? {
            R::ListDependenciesResult(r) => {
                Ok(r.items.into_iter().map(|d| d.id).collect::<Vec<_>>())
            }
            other => panic!("unexpected result {other:?}"),
        }
    };
    use v1::DependencyDirection as D;
    use v1::DependencyType as K;
    let cases: Vec<(Q, Vec<&v1::Dependency>)> = vec![
        (list(Some(&a), D::Unspecified, None), vec![&ab, &ac, &da]),
        (list(Some(&a), D::Both, None), vec![&ab, &ac, &da]),
        (list(Some(&a), D::Blocking, None), vec![&ab, &ac]),
        (list(Some(&a), D::Blocking, Some(K::Blocks)), vec![&ab]),
        (list(Some(&a), D::BlockedBy, None), vec![&da]),
        (list(Some(&c), D::BlockedBy, Some(K::Blocks)), vec![&bc]),
        (list(None, D::Unspecified, Some(K::RelatesTo)), vec![&ac]),
        (list(None, D::Both, Some(K::Blocks)), vec![&ab, &da, &bc]),
    ];
    for (q, expected) in cases {
        let expected: Vec<String> = expected.iter().map(|d| d.id.clone()).collect();
        assert_eq!(ids(q.clone()).await.unwrap(), expected, "{q:?}");
    }
    for (q, field) in [
        (list(None, D::Blocking, None), "direction"),
        (list(None, D::BlockedBy, None), "direction"),
        (
            Q::ListDependencies(v1::ListDependencies {
                project_id: pid.into(),
                direction: 99,
                ..Default::default()
            }),
            "direction",
        ),
        (
            Q::ListDependencies(v1::ListDependencies {
                project_id: pid.into(),
                dependency_type: Some(99),
                ..Default::default()
            }),
            "dependency_type",
        ),
    ] {
        assert_invalid(&ids(q).await.unwrap_err(), field);
    }
}

/// The tables of a tenant made before the read model, written by hand on the initial schema.
const OLD_ROWS: &str = r#"
    INSERT INTO projects VALUES ('01900000-0000-7000-8000-000000000001', 'PM', 'Board', '',
        'active', 1, 1, 'alice', 1, 'alice', NULL);
    INSERT INTO project_members VALUES ('01900000-0000-7000-8000-000000000001', 'alice',
        'admin', 1, 1, 'alice', 1, 'alice', NULL);
    INSERT INTO work_items VALUES ('01900000-0000-7000-8000-000000000010',
        '01900000-0000-7000-8000-000000000001', 1, 'epic', NULL, 'Payments epic', 'money',
        'in_progress', 'high', 8, 'bob', NULL, 'a', 1, 2, 'alice', 2, 'alice', NULL);
    INSERT INTO work_items VALUES ('01900000-0000-7000-8000-000000000011',
        '01900000-0000-7000-8000-000000000001', 2, 'story', '01900000-0000-7000-8000-000000000010',
        'Checkout story', 'cards', 'todo', 'medium', NULL, NULL, NULL, 'b', 1, 3, 'alice', 3,
        'alice', NULL);
    INSERT INTO comments VALUES ('01900000-0000-7000-8000-000000000020',
        '01900000-0000-7000-8000-000000000001', '01900000-0000-7000-8000-000000000011',
        'needs a refund flow', 1, 4, 'alice', 4, 'alice', NULL);
    INSERT INTO dependencies VALUES ('01900000-0000-7000-8000-000000000030',
        '01900000-0000-7000-8000-000000000001', '01900000-0000-7000-8000-000000000010',
        '01900000-0000-7000-8000-000000000011', 'blocks', 1, 5, 'alice', 5, 'alice', NULL);
    INSERT INTO time_entries VALUES ('01900000-0000-7000-8000-000000000040',
        '01900000-0000-7000-8000-000000000001', '01900000-0000-7000-8000-000000000011', 'alice',
        1000, 61000, '', 1, 6, 'alice', 6, 'alice', NULL);
    INSERT INTO swim_lanes VALUES ('01900000-0000-7000-8000-000000000050',
        '01900000-0000-7000-8000-000000000001', 'Doing', 'in_progress', 1, 1, 1, 7, 'alice', 7,
        'alice', NULL);
"#;

#[tokio::test]
async fn a_tenant_from_before_the_read_model_keeps_its_rows_links_and_search() {
    let env = TestEnv::new();
    let id = TenantId::parse("acme").unwrap();
    let file = env.engine.config().db_file(&id);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    {
        // The initial migration only, as a tenant made by an older binary has it.
        let initial: Vec<_> = pm_db::MIGRATOR
            .iter()
            .filter(|m| m.version == 20261121000001)
            .cloned()
            .collect();
        assert_eq!(initial.len(), 1);
        let dir = tempfile::tempdir().unwrap();
        let m = &initial[0];
        std::fs::write(
            dir.path()
                .join(format!("{}_{}.sql", m.version, m.description)),
            m.sql.as_ref(),
        )
        .unwrap();
        let old = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(true)
            .foreign_keys(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        old.run(&mut conn).await.unwrap();
        sqlx::raw_sql(OLD_ROWS).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    }

    let tenant = env.tenant("acme").await;
    assert_eq!(
        inspect::schema_version(env.engine.config(), &id)
            .await
            .unwrap(),
        Some(pm_db::sqlite::migrations::embedded_version())
    );
    let pid = "01900000-0000-7000-8000-000000000001";
    let items = all_items(&tenant, &ALICE, pid, false).await;
    assert_eq!(
        items
            .iter()
            .map(|i| (
                i.display_key.as_str(),
                i.title.as_str(),
                i.status,
                i.parent_id.is_some(),
                i.blocked
            ))
            .collect::<Vec<_>>(),
        [
            (
                "PM-1",
                "Payments epic",
                S::InProgress.into(),
                false,
                Some(false)
            ),
            ("PM-2", "Checkout story", S::Todo.into(), true, Some(true)),
        ]
    );
    assert_eq!(
        (
            items[0].story_points,
            items[0].assignee_id.as_deref(),
            items[0].created_at
        ),
        (Some(8), Some("bob"), 2)
    );
    let lane = get::<v1::SwimLane>(&tenant, &ALICE, "01900000-0000-7000-8000-000000000050")
        .await
        .unwrap();
    assert_eq!(
        (lane.wip_limit, lane.wip_policy),
        (Some(1), v1::WipPolicy::None.into())
    );
    // The full-text index still points at the right rows, and its triggers work again.
    assert_eq!(
        search(&tenant, pid, "checkout").await.unwrap(),
        ["Checkout story"]
    );
    assert_eq!(
        search(&tenant, pid, "refund").await.unwrap(),
        ["Checkout story"]
    );
    run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::UpdateWorkItem(v1::UpdateWorkItem {
            id: items[0].id.clone(),
            expected_version: 1,
            title: Some("Billing epic".into()),
            ..Default::default()
        }),
    )
    .await;
    task(&tenant, pid, "Invoice task", S::Cancelled, None, None).await;
    assert_eq!(
        search(&tenant, pid, "payments").await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        search(&tenant, pid, "billing").await.unwrap(),
        ["Billing epic"]
    );
    assert_eq!(
        search(&tenant, pid, "invoice").await.unwrap(),
        ["Invoice task"]
    );
    // Every reference still resolves, and the database is sound.
    assert_eq!(
        inspect::check_tenant(env.engine.config(), &id, Thoroughness::Full)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn an_export_from_before_wip_policies_imports_its_lanes_with_none() {
    use pm_db::export::ImportOptions;
    use pm_db::sqlite::transfer::{export_tenant, import_tenant};

    let source = TestEnv::new();
    let tenant = source.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "PM").await;
    let old_lane = lane(
        &tenant,
        &project.id,
        "Doing",
        S::InProgress,
        0,
        Some(2),
        v1::WipPolicy::Unspecified,
    )
    .await;
    drop(tenant);
    source.engine.close_idle().await;
    let mut out = Vec::new();
    export_tenant(source.engine.config(), &acme(), &mut out)
        .await
        .unwrap();

    // As the previous schema wrote it: no `wipPolicy`.
    let lines: Vec<String> = std::str::from_utf8(&out)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
            if i == 0 {
                value["schema_version"] = 20261121000001i64.into();
            } else if value["kind"] == "swim_lane" {
                let data = value["data"].as_object_mut().unwrap();
                assert_eq!(data.remove("wipPolicy"), Some("WIP_POLICY_NONE".into()));
            }
            value.to_string()
        })
        .collect();
    let old = lines.join("\n") + "\n";

    let target = TestEnv::new();
    import_tenant(
        target.engine.config(),
        &acme(),
        old.as_bytes(),
        ImportOptions::default(),
    )
    .await
    .unwrap();
    let tenant = target.tenant("acme").await;
    let lane = get::<v1::SwimLane>(&tenant, &ALICE, &old_lane.id)
        .await
        .unwrap();
    assert_eq!(lane, old_lane);
    assert_eq!(lane.wip_policy, i32::from(v1::WipPolicy::None));
}
