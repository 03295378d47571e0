//! Tenant-wide search (`Search`): every searchable kind, only the caller's live projects,
//! ranked by relevance, snippets with the matched words marked, keyset pages.

use pm_proto::v1;
use pm_proto::v1::command::Kind as C;
use pm_proto::v1::query::Kind as Q;
use pm_proto::v1::query_result::Result as R;

use crate::support::*;

use v1::EntityType as E;

async fn search(
    tenant: &TestTenant,
    actor: &pm_core::UserId,
    request: v1::Search,
) -> pm_db::Result<v1::SearchResult> {
    match query(tenant, actor, Q::Search(request)).await? {
        R::SearchResult(r) => Ok(r),
        other => panic!("expected SearchResult, got {other:?}"),
    }
}

fn text(text: &str) -> v1::Search {
    v1::Search {
        text: text.into(),
        ..Default::default()
    }
}

/// (kind, display key or title) of each hit, in order.
fn hits(result: &v1::SearchResult) -> Vec<(E, String)> {
    result
        .items
        .iter()
        .map(|h| {
            let label = if h.display_key.is_empty() {
                h.title.clone()
            } else {
                h.display_key.clone()
            };
            (h.entity_type(), label)
        })
        .collect()
}

fn item(project_id: &str, title: &str, description: &str) -> C {
    C::CreateWorkItem(v1::CreateWorkItem {
        project_id: project_id.into(),
        item_type: v1::WorkItemType::Task.into(),
        title: title.into(),
        description: description.into(),
        ..Default::default()
    })
}

#[tokio::test]
async fn search_finds_every_kind_across_the_callers_projects_best_first() {
    let (_env, tenant, pm) = setup().await;
    let ops = create_project(&tenant, &ALICE, "OPS").await;
    // BOB's project: ALICE is not a member and must never see it.
    let secret = create_project(&tenant, &BOB, "SEC").await;

    let (title_hit, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        item(&pm.id, "Invoice export broken", "Totals are wrong"),
    )
    .await;
    let (body_hit, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        item(
            &ops.id,
            "Nightly jobs",
            "The invoice run takes four hours and blocks the backup window",
        ),
    )
    .await;
    let (_, _) = run::<v1::WorkItem>(&tenant, &ALICE, item(&pm.id, "Dark mode", "")).await;
    let (comment, _) = run::<v1::Comment>(
        &tenant,
        &ALICE,
        C::CreateComment(v1::CreateComment {
            work_item_id: title_hit.id.clone(),
            content: "The invoice totals round each line before summing".into(),
        }),
    )
    .await;
    let (sprint, _) = run::<v1::Sprint>(
        &tenant,
        &ALICE,
        C::CreateSprint(v1::CreateSprint {
            project_id: ops.id.clone(),
            name: "Invoice hardening".into(),
            goal: "No more manual fixes".into(),
            ..Default::default()
        }),
    )
    .await;
    let (context, _) = run::<v1::LlmContext>(
        &tenant,
        &ALICE,
        C::CreateLlmContext(v1::CreateLlmContext {
            project_id: pm.id.clone(),
            category: v1::LlmContextCategory::BusinessRule.into(),
            title: "Rounding rule".into(),
            content: "An invoice is rounded once, on its total.".into(),
            priority: 1,
        }),
    )
    .await;
    run::<v1::WorkItem>(
        &tenant,
        &BOB,
        item(&secret.id, "Invoice fraud case", "invoice invoice"),
    )
    .await;

    let result = search(&tenant, &ALICE, text("invoice")).await.unwrap();
    let mut found: Vec<(E, String)> = hits(&result);
    found.sort();
    assert_eq!(
        found,
        vec![
            (E::WorkItem, "OPS-1".to_owned()),
            (E::WorkItem, "PM-1".to_owned()),
            (E::Sprint, "Invoice hardening".to_owned()),
            (E::Comment, "PM-1".to_owned()),
            (E::LlmContext, "Rounding rule".to_owned()),
        ]
    );
    assert_eq!(result.next_page_token, "");
    assert_eq!(result.as_of_seq, tenant.head_seq());
    // Best first, and a title match ranks above a match in a long description.
    let scores: Vec<f64> = result.items.iter().map(|h| h.score).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "scores descend: {scores:?}"
    );
    let rank_of = |id: &str| result.items.iter().position(|h| h.entity_id == id).unwrap();
    assert!(rank_of(&title_hit.id) < rank_of(&body_hit.id));

    // Each hit says what it is and where it lives.
    let on_comment = result
        .items
        .iter()
        .find(|h| h.entity_id == comment.id)
        .unwrap();
    assert_eq!(on_comment.project_id, pm.id);
    assert_eq!(on_comment.work_item_id, title_hit.id);
    assert_eq!(on_comment.title, "Invoice export broken");
    assert_eq!(
        on_comment.snippet,
        vec![
            v1::SnippetPart {
                text: "The ".into(),
                matched: false
            },
            v1::SnippetPart {
                text: "invoice".into(),
                matched: true
            },
            v1::SnippetPart {
                text: " totals round each line before summing".into(),
                matched: false
            },
        ]
    );
    let on_sprint = result
        .items
        .iter()
        .find(|h| h.entity_id == sprint.id)
        .unwrap();
    assert_eq!(
        (
            on_sprint.work_item_id.as_str(),
            on_sprint.display_key.as_str()
        ),
        ("", "")
    );
    assert!(result.items.iter().any(|h| h.entity_id == context.id));

    // Narrowed by kind and by project.
    let only = search(
        &tenant,
        &ALICE,
        v1::Search {
            entity_types: vec![E::Comment.into(), E::Sprint.into()],
            ..text("invoice")
        },
    )
    .await
    .unwrap();
    let mut kinds: Vec<E> = only.items.iter().map(|h| h.entity_type()).collect();
    kinds.sort();
    assert_eq!(kinds, vec![E::Sprint, E::Comment]);
    let in_ops = search(
        &tenant,
        &ALICE,
        v1::Search {
            project_id: ops.id.clone(),
            ..text("invoice")
        },
    )
    .await
    .unwrap();
    let mut in_ops = hits(&in_ops);
    in_ops.sort();
    assert_eq!(
        in_ops,
        vec![
            (E::WorkItem, "OPS-1".to_owned()),
            (E::Sprint, "Invoice hardening".to_owned())
        ]
    );

    // BOB sees only his own project's item; ALICE cannot name BOB's project.
    let bob = search(&tenant, &BOB, text("invoice")).await.unwrap();
    assert_eq!(hits(&bob), vec![(E::WorkItem, "SEC-1".to_owned())]);
    let refused = search(
        &tenant,
        &ALICE,
        v1::Search {
            project_id: secret.id.clone(),
            ..text("invoice")
        },
    )
    .await
    .unwrap_err();
    assert_eq!(code(&refused), v1::ErrorCode::NotFound);
}

#[tokio::test]
async fn deleted_rows_and_comments_on_deleted_items_are_not_found() {
    let (_env, tenant, pm) = setup().await;
    let (a, _) = run::<v1::WorkItem>(&tenant, &ALICE, item(&pm.id, "Quokka A", "")).await;
    let (b, _) = run::<v1::WorkItem>(&tenant, &ALICE, item(&pm.id, "Other", "")).await;
    run::<v1::Comment>(
        &tenant,
        &ALICE,
        C::CreateComment(v1::CreateComment {
            work_item_id: b.id.clone(),
            content: "a quokka was here".into(),
        }),
    )
    .await;
    let before = search(&tenant, &ALICE, text("quokka")).await.unwrap();
    assert_eq!(before.items.len(), 2);

    run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::DeleteWorkItem(v1::DeleteWorkItem {
            id: a.id.clone(),
            expected_version: a.version,
        }),
    )
    .await;
    run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::DeleteWorkItem(v1::DeleteWorkItem {
            id: b.id.clone(),
            expected_version: b.version,
        }),
    )
    .await;
    let after = search(&tenant, &ALICE, text("quokka")).await.unwrap();
    assert_eq!(after.items, vec![]);
}

#[tokio::test]
async fn search_pages_are_disjoint_and_complete_in_rank_order() {
    let (_env, tenant, pm) = setup().await;
    // Titles with 1..=7 repetitions of the word: distinct scores, and ties among the copies.
    for n in 1..=7usize {
        for copy in 0..2 {
            let title = format!("{} filler {copy}", vec!["wombat"; n].join(" "));
            run::<v1::WorkItem>(&tenant, &ALICE, item(&pm.id, &title, "")).await;
        }
    }
    let all = search(
        &tenant,
        &ALICE,
        v1::Search {
            page: Some(v1::PageRequest {
                page_size: 100,
                page_token: String::new(),
            }),
            ..text("wombat")
        },
    )
    .await
    .unwrap();
    assert_eq!(all.items.len(), 14);

    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = search(
            &tenant,
            &ALICE,
            v1::Search {
                page: Some(v1::PageRequest {
                    page_size: 4,
                    page_token: token.clone(),
                }),
                ..text("wombat")
            },
        )
        .await
        .unwrap();
        assert!(page.items.len() <= 4);
        paged.extend(page.items.into_iter().map(|h| h.entity_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<String> = all.items.into_iter().map(|h| h.entity_id).collect();
    assert_eq!(paged, expected);
}

#[tokio::test]
async fn bad_searches_are_refused_with_the_field() {
    let (_env, tenant, _pm) = setup().await;
    let e = search(&tenant, &ALICE, text("  \" * ")).await.unwrap_err();
    assert_invalid(&e, "text");
    let e = search(
        &tenant,
        &ALICE,
        v1::Search {
            entity_types: vec![E::TimeEntry.into()],
            ..text("x")
        },
    )
    .await
    .unwrap_err();
    assert_invalid(&e, "entity_types");
    let e = search(
        &tenant,
        &ALICE,
        v1::Search {
            page: Some(v1::PageRequest {
                page_size: 10,
                page_token: "zz".into(),
            }),
            ..text("x")
        },
    )
    .await
    .unwrap_err();
    assert_invalid(&e, "page.page_token");
}
