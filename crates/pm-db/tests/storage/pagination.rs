//! Keyset pagination: pages neither skip nor repeat while items are added; malformed page
//! requests are invalid arguments.

use std::collections::BTreeSet;

use pm_proto::v1;
use pm_proto::v1::command::Kind as C;
use pm_proto::v1::query::Kind as Q;
use pm_proto::v1::query_result::Result as R;

use crate::support::*;

use v1::WorkItemType as T;

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
