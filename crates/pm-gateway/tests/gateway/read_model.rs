//! The board read model over a real socket: WIP policies answering a command (a refusal, a
//! warning), the derived `blocked` flag, and the summary, hierarchy, dependency, running timer
//! and time-total reads, for a viewer and for a non-member, with `as_of_seq` a subscription
//! continues from.

use pm_proto::v1;
use pm_proto::v1::command::Kind as Cmd;
use pm_proto::v1::query::Kind as Q;
use pm_proto::v1::query_result::Result as QR;

use crate::support::*;

use v1::ErrorCode as E;
use v1::WorkItemStatus as S;

fn create_in(project_id: &str, title: &str, status: S) -> Cmd {
    Cmd::CreateWorkItem(v1::CreateWorkItem {
        project_id: project_id.into(),
        item_type: v1::WorkItemType::Task.into(),
        title: title.into(),
        status: status.into(),
        story_points: Some(2),
        ..Default::default()
    })
}

fn lane(project_id: &str, name: &str, status: S, limit: u32, policy: v1::WipPolicy) -> Cmd {
    Cmd::CreateSwimLane(v1::CreateSwimLane {
        project_id: project_id.into(),
        name: name.into(),
        status: status.into(),
        position: 0,
        wip_limit: Some(limit),
        wip_policy: policy.into(),
    })
}

fn item_of(result: &v1::CommandResult) -> v1::WorkItem {
    match result.entity.clone().and_then(|e| e.kind) {
        Some(v1::entity::Kind::WorkItem(item)) => item,
        other => panic!("expected a work item, got {other:?}"),
    }
}

fn summary(project_id: &str) -> Q {
    Q::GetBoardSummary(v1::GetBoardSummary {
        project_id: project_id.into(),
        sprint_id: None,
    })
}

fn hierarchy(id: &str) -> Q {
    Q::GetWorkItemHierarchy(v1::GetWorkItemHierarchy {
        id: id.into(),
        include_deleted: false,
    })
}

fn time_totals(project_id: &str) -> Q {
    Q::GetTimeTotals(v1::GetTimeTotals {
        project_id: project_id.into(),
        group_by: v1::TimeGrouping::WorkItem.into(),
        ..Default::default()
    })
}

fn running_timer() -> Q {
    Q::GetRunningTimer(v1::GetRunningTimer {})
}

#[tokio::test]
async fn a_board_is_read_by_its_viewer_and_by_nobody_else() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let pid = project.id.as_str();
    alice.add_member(pid, "bob", v1::ProjectRole::Viewer).await;

    // WIP limits answer the command that would break them.
    alice
        .command(lane(pid, "Doing", S::InProgress, 1, v1::WipPolicy::Refuse))
        .await
        .unwrap();
    let review = alice
        .command(lane(pid, "Review", S::Review, 1, v1::WipPolicy::Warn))
        .await
        .unwrap();
    let review_id = match review.entity.and_then(|e| e.kind) {
        Some(v1::entity::Kind::SwimLane(lane)) => lane.id,
        other => panic!("{other:?}"),
    };
    let doing = item_of(
        &alice
            .command(create_in(pid, "Doing it", S::InProgress))
            .await
            .unwrap(),
    );
    let refused = alice
        .command(create_in(pid, "One too many", S::InProgress))
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        error(
            E::FailedPrecondition,
            "swim lane \"Doing\" holds 1 work item and its WIP limit is 1; move one out first",
            ""
        )
    );
    let first = alice
        .command(create_in(pid, "Check one", S::Review))
        .await
        .unwrap();
    assert_eq!(first.warnings, vec![]);
    let second = alice
        .command(create_in(pid, "Check two", S::Review))
        .await
        .unwrap();
    assert_eq!(
        second.warnings,
        vec![v1::Warning {
            code: v1::WarningCode::WipLimitExceeded.into(),
            message: "swim lane \"Review\" is over its WIP limit: 2 work items, limit 1".into(),
            entity_id: review_id,
        }]
    );

    // A blocker and what it blocks.
    let blocker = item_of(
        &alice
            .command(create_in(pid, "Blocker", S::Todo))
            .await
            .unwrap(),
    );
    let blocked = item_of(
        &alice
            .command(create_in(pid, "Blocked", S::Todo))
            .await
            .unwrap(),
    );
    let link = alice
        .command(Cmd::CreateDependency(v1::CreateDependency {
            blocking_item_id: blocker.id.clone(),
            blocked_item_id: blocked.id.clone(),
            dependency_type: v1::DependencyType::Blocks.into(),
        }))
        .await
        .unwrap();
    let head = link.seq;

    // Bob, a viewer, reads all of it, as of the head.
    let (mut bob, _) = app.client("acme", "bob").await;
    let board = match bob.query(summary(pid)).await.unwrap() {
        QR::GetBoardSummaryResult(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(board.as_of_seq, head);
    let counts: Vec<(i32, u32, u32)> = board
        .statuses
        .iter()
        .map(|s| (s.status, s.items, s.story_points))
        .collect();
    assert_eq!(
        counts,
        [
            (S::Backlog.into(), 0, 0),
            (S::Todo.into(), 2, 4),
            (S::InProgress.into(), 1, 2),
            (S::Review.into(), 2, 4),
            (S::Done.into(), 0, 0),
            (S::Cancelled.into(), 0, 0),
        ]
    );
    let lanes: Vec<(String, u32, bool)> = board
        .lanes
        .iter()
        .map(|l| (l.swim_lane.clone().unwrap().name, l.items, l.over_limit))
        .collect();
    assert_eq!(
        lanes,
        [
            ("Doing".to_owned(), 1, false),
            ("Review".to_owned(), 2, true)
        ]
    );
    assert_eq!(board.sprint_progress, None);
    assert_eq!(
        get_work_item(&mut bob, &blocked.id, "")
            .await
            .unwrap()
            .blocked,
        Some(true)
    );
    let deps = match bob
        .query(Q::ListDependencies(v1::ListDependencies {
            project_id: pid.into(),
            work_item_id: Some(blocked.id.clone()),
            direction: v1::DependencyDirection::BlockedBy.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
    {
        QR::ListDependenciesResult(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (
            deps.items.len(),
            deps.items[0].blocking_item_id.as_str(),
            deps.as_of_seq
        ),
        (1, blocker.id.as_str(), head)
    );
    let tree = match bob.query(hierarchy(&doing.id)).await.unwrap() {
        QR::GetWorkItemHierarchyResult(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (
            tree.ancestors.len(),
            tree.work_item,
            tree.descendants.len(),
            tree.as_of_seq
        ),
        (0, Some(unblocked(&doing)), 0, head)
    );

    // Alice's timer runs; she finds it without naming a project, and bob has none.
    let started = alice
        .command(Cmd::StartTimer(v1::StartTimer {
            work_item_id: doing.id.clone(),
            description: String::new(),
        }))
        .await
        .unwrap();
    let timer = match alice.query(running_timer()).await.unwrap() {
        QR::GetRunningTimerResult(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (timer.work_item.map(|i| i.display_key), timer.as_of_seq),
        (Some(doing.display_key.clone()), started.seq)
    );
    match bob.query(running_timer()).await.unwrap() {
        QR::GetRunningTimerResult(r) => assert_eq!((r.time_entry, r.work_item), (None, None)),
        other => panic!("{other:?}"),
    }
    match bob.query(time_totals(pid)).await.unwrap() {
        QR::GetTimeTotalsResult(r) => {
            // The timer has run for a moment at most: it is all there is.
            assert_eq!(r.as_of_seq, started.seq);
            assert!(r.groups.iter().all(|g| g.key == doing.id), "{r:?}");
        }
        other => panic!("{other:?}"),
    }

    // Mallory, no member, learns nothing: the same answers as for made-up ids.
    let (mut mallory, _) = app.client("acme", "mallory").await;
    for (name, real, made_up) in [
        ("summary", summary(pid), summary(&unknown_id())),
        ("hierarchy", hierarchy(&doing.id), hierarchy(&unknown_id())),
        ("time totals", time_totals(pid), time_totals(&unknown_id())),
    ] {
        let got = mallory.query(real).await.unwrap_err();
        assert_eq!(code(&got), E::NotFound, "{name}");
        assert_eq!(got, mallory.query(made_up).await.unwrap_err(), "{name}");
    }
    match mallory
        .query(Q::GetTimeTotals(v1::GetTimeTotals::default()))
        .await
        .unwrap()
    {
        QR::GetTimeTotalsResult(r) => assert_eq!((r.duration_ms, r.entries), (0, 0)),
        other => panic!("{other:?}"),
    }
    match mallory.query(running_timer()).await.unwrap() {
        QR::GetRunningTimerResult(r) => assert_eq!(r.time_entry, None),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_summary_snapshot_then_subscribe_continues_without_gap() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let (item, _) = alice.create_item(&project.id, "First").await;
    let (mut reader, _) = app.client("acme", "alice").await;
    let board = match reader.query(summary(&project.id)).await.unwrap() {
        QR::GetBoardSummaryResult(r) => r,
        other => panic!("{other:?}"),
    };
    // Changes between the snapshot and the subscription are replayed, then live ones follow.
    let moved = alice
        .command(Cmd::MoveWorkItem(v1::MoveWorkItem {
            id: item.id.clone(),
            expected_version: 1,
            status: Some(S::Cancelled.into()),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(moved.seq, board.as_of_seq + 1);
    reader.subscribe(board.as_of_seq).await.unwrap();
    let event = reader.event().await;
    assert_eq!(
        (event.seq, event.entity_id.as_str()),
        (moved.seq, item.id.as_str())
    );
    let (_, live) = alice.create_item(&project.id, "Second").await;
    assert_eq!(reader.event().await.seq, live);
    let after = match reader.query(summary(&project.id)).await.unwrap() {
        QR::GetBoardSummaryResult(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(after.as_of_seq, live);
    let cancelled = after
        .statuses
        .iter()
        .find(|s| s.status == i32::from(S::Cancelled))
        .unwrap();
    assert_eq!(cancelled.items, 1);
}

#[tokio::test]
async fn bad_read_model_requests_are_invalid_arguments_naming_the_field() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let pid = project.id.as_str();
    let queries = [
        (
            Q::GetTimeTotals(v1::GetTimeTotals {
                project_id: pid.into(),
                start_at: Some(2_000),
                end_at: Some(1_000),
                ..Default::default()
            }),
            "end_at",
        ),
        (
            Q::GetTimeTotals(v1::GetTimeTotals {
                group_by: 42,
                ..Default::default()
            }),
            "group_by",
        ),
        (
            Q::ListDependencies(v1::ListDependencies {
                project_id: pid.into(),
                direction: v1::DependencyDirection::Blocking.into(),
                ..Default::default()
            }),
            "direction",
        ),
        (hierarchy("PM-1"), "id"),
        (
            Q::GetBoardSummary(v1::GetBoardSummary {
                project_id: pid.into(),
                sprint_id: Some("sprint one".into()),
            }),
            "sprint_id",
        ),
    ];
    for (query, field) in queries {
        let error = alice.query(query.clone()).await.unwrap_err();
        assert_eq!(
            (code(&error), error.field.as_str()),
            (E::InvalidArgument, field),
            "{query:?}: {error:?}"
        );
    }
    let error = alice
        .command(Cmd::CreateSwimLane(v1::CreateSwimLane {
            project_id: pid.into(),
            name: "Doing".into(),
            status: S::InProgress.into(),
            position: 0,
            wip_limit: Some(2),
            wip_policy: 7,
        }))
        .await
        .unwrap_err();
    assert_eq!(
        (code(&error), error.field.as_str()),
        (E::InvalidArgument, "wip_policy")
    );
}
