//! Versions and conflicts: a stale `expected_version` is a conflict that carries the current
//! entity; of concurrent updates of one row exactly one wins.

use pm_proto::v1;
use pm_proto::v1::command::Kind as C;

use crate::support::*;

use v1::ErrorCode as E;
use v1::WorkItemType as T;

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
        unblocked(&updated)
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
            unblocked(&won)
        );
    }
}
