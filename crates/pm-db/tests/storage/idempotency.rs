//! Idempotency keys: a command repeated with the same key replays the first answer.

use pm_proto::v1;

use crate::support::*;

use v1::WorkItemType as T;

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
