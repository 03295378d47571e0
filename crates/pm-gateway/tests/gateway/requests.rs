//! Requests over the wire: pipelined requests each answered once, a stale update's conflict
//! with the current item, idempotency keys, atomic and non-atomic batches, and listing and
//! searching work items page by page.

use std::collections::{HashMap, HashSet};

use pm_proto::v1;
use pm_proto::v1::client_frame::Body as In;
use pm_proto::v1::server_frame::Body;
use v1::command::Kind as Cmd;
use v1::query::Kind as Q;
use v1::query_result::Result as QR;
use v1::response::Result as Out;

use crate::support::*;

// --- Helpers local to this module (kept here so they cannot clash with other modules'). ---

fn work_item(result: &v1::CommandResult) -> v1::WorkItem {
    match result.entity.clone().and_then(|e| e.kind) {
        Some(v1::entity::Kind::WorkItem(w)) => w,
        other => panic!("expected a work item, got {other:?}"),
    }
}

/// A command with an idempotency key.
async fn keyed_command(client: &mut Client, key: &str, kind: Cmd) -> v1::CommandResult {
    match client
        .request(In::Command(v1::Command {
            idempotency_key: key.into(),
            kind: Some(kind),
        }))
        .await
    {
        Out::CommandResult(r) => r,
        other => panic!("expected a command result, got {other:?}"),
    }
}

async fn batch(client: &mut Client, atomic: bool, commands: Vec<Cmd>) -> Out {
    client
        .request(In::Batch(v1::Batch {
            commands: commands
                .into_iter()
                .map(|kind| v1::Command {
                    idempotency_key: String::new(),
                    kind: Some(kind),
                })
                .collect(),
            atomic,
        }))
        .await
}

// --- 1. Pipelining ---

#[tokio::test]
async fn twenty_pipelined_requests_each_get_exactly_one_response() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;

    // Ids far above the ones `request()` hands out on this connection.
    let mut sent = HashMap::new();
    for i in 0..20u64 {
        let id = 1_000 + i;
        let body = match i % 5 {
            0 => In::Query(v1::Query {
                kind: Some(list_query(&project.id, 0, "", "")),
            }),
            1 => In::Query(v1::Query {
                kind: Some(Q::GetProject(v1::GetProject {
                    id: project.id.clone(),
                })),
            }),
            _ => In::Command(v1::Command {
                idempotency_key: String::new(),
                kind: Some(create_item(&project.id, &format!("pipelined {id}"))),
            }),
        };
        sent.insert(id, i % 5);
        alice.send(id, body).await;
    }

    let mut answered: HashMap<u64, Out> = HashMap::new();
    while answered.len() < 20 {
        match alice.frame().await {
            Body::Response(r) => {
                let result = r.result.expect("a result");
                assert!(
                    answered.insert(r.request_id, result).is_none(),
                    "request {} answered twice",
                    r.request_id
                );
            }
            other => panic!("expected responses only, got {other:?}"),
        }
    }
    alice.assert_nothing_more(77).await;

    let ids: HashSet<u64> = answered.keys().copied().collect();
    assert_eq!(ids, sent.keys().copied().collect::<HashSet<_>>());

    let mut seqs = Vec::new();
    for (id, result) in &answered {
        match (sent[id], result) {
            (0, Out::QueryResult(q)) => match &q.result {
                Some(QR::ListWorkItemsResult(list)) => {
                    // A consistent snapshot: exactly the items created up to `as_of_seq`.
                    assert!((2..=14).contains(&list.as_of_seq), "{list:?}");
                    assert_eq!(list.items.len() as u64, list.as_of_seq - 2, "{list:?}");
                }
                other => panic!("request {id}: {other:?}"),
            },
            (1, Out::QueryResult(q)) => match &q.result {
                Some(QR::GetProjectResult(got)) => {
                    assert_eq!(got.project.as_ref(), Some(&project));
                }
                other => panic!("request {id}: {other:?}"),
            },
            (_, Out::CommandResult(c)) => {
                assert_eq!(work_item(c).title, format!("pipelined {id}"));
                assert!(!c.replayed);
                seqs.push(c.seq);
            }
            (kind, other) => panic!("request {id} (kind {kind}): {other:?}"),
        }
    }
    seqs.sort_unstable();
    // The project took seqs 1 and 2; the 12 creations are 3..=14, each exactly once.
    assert_eq!(seqs, (3..=14).collect::<Vec<u64>>());
    let items = all_items(&mut alice, &project.id).await;
    assert_eq!(items.items.len(), 12);
    assert_eq!(items.as_of_seq, 14);
}

// --- 2. Conflict ---

#[tokio::test]
async fn a_stale_update_is_a_conflict_carrying_the_current_item() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let (item, _) = alice.create_item(&project.id, "first title").await;
    assert_eq!(item.version, 1);

    let updated = alice
        .command(Cmd::UpdateWorkItem(v1::UpdateWorkItem {
            id: item.id.clone(),
            expected_version: 1,
            title: Some("second title".into()),
            ..Default::default()
        }))
        .await
        .expect("the first update applies");
    let current = work_item(&updated);
    assert_eq!(current.version, 2);
    assert_eq!(current.title, "second title");

    let error = alice
        .command(Cmd::UpdateWorkItem(v1::UpdateWorkItem {
            id: item.id.clone(),
            expected_version: 1,
            title: Some("stale title".into()),
            ..Default::default()
        }))
        .await
        .expect_err("a stale version conflicts");
    assert_eq!(code(&error), v1::ErrorCode::Conflict);
    assert_eq!(error.field, "");
    assert_eq!(
        error.message,
        "the work item was changed by someone else (now at version 2)"
    );
    assert_eq!(
        error.current,
        Some(Box::new(v1::Entity {
            kind: Some(v1::entity::Kind::WorkItem(current.clone())),
        }))
    );
    // The stale update changed nothing.
    assert_eq!(
        get_work_item(&mut alice, &item.id, "").await.unwrap(),
        unblocked(&current)
    );
}

// --- 3. Idempotency ---

#[tokio::test]
async fn a_repeated_idempotency_key_replays_the_first_answer_and_changes_nothing() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let (mut watcher, _) = app.client("acme", "alice").await;
    assert_eq!(watcher.subscribe(2).await.unwrap(), 2);

    let first = keyed_command(&mut alice, "create-once", create_item(&project.id, "once")).await;
    assert!(!first.replayed);
    assert_eq!(first.seq, 3);
    let second = keyed_command(&mut alice, "create-once", create_item(&project.id, "once")).await;
    assert!(second.replayed);
    assert_eq!(second.seq, first.seq);
    assert_eq!(second.entity, first.entity);

    // Exactly one event for it: the next one after it is the next change.
    let event = watcher.event().await;
    assert_eq!(event.seq, 3);
    assert_eq!(event.action, v1::ChangeAction::Created as i32);
    assert_eq!(event.entity_id, work_item(&first).id);
    let (_, next) = alice.create_item(&project.id, "after").await;
    assert_eq!(next, 4);
    assert_eq!(watcher.event().await.seq, 4);

    // The same key for a different command is refused, and changes nothing.
    let refused = alice
        .request(In::Command(v1::Command {
            idempotency_key: "create-once".into(),
            kind: Some(create_item(&project.id, "something else")),
        }))
        .await;
    let Out::Error(refused) = refused else {
        panic!("expected an error, got {refused:?}");
    };
    assert_eq!(code(&refused), v1::ErrorCode::InvalidArgument);
    assert_eq!(refused.field, "idempotency_key");

    // Keys belong to their user: bob's "create-once" is a new command.
    alice
        .add_member(&project.id, "bob", v1::ProjectRole::Editor)
        .await; // 5
    assert_eq!(watcher.event().await.seq, 5);
    let (mut bob, _) = app.client("acme", "bob").await;
    let bobs = keyed_command(&mut bob, "create-once", create_item(&project.id, "once")).await;
    assert!(!bobs.replayed);
    assert_eq!(bobs.seq, 6);
    assert_eq!(watcher.event().await.seq, 6);

    // Two pipelined requests with one key: one applies, the other replays it.
    for id in [500, 501] {
        alice
            .send(
                id,
                In::Command(v1::Command {
                    idempotency_key: "pipelined".into(),
                    kind: Some(create_item(&project.id, "pipelined")),
                }),
            )
            .await;
    }
    let mut results = HashMap::new();
    while results.len() < 2 {
        match alice.frame().await {
            Body::Response(r) => match r.result {
                Some(Out::CommandResult(c)) => {
                    assert!(results.insert(r.request_id, c).is_none());
                }
                other => panic!("{other:?}"),
            },
            other => panic!("expected responses only, got {other:?}"),
        }
    }
    assert_eq!(results[&500].seq, 7);
    assert_eq!(results[&501].seq, 7);
    assert_eq!(results[&500].entity, results[&501].entity);
    assert_eq!(
        [results[&500].replayed, results[&501].replayed]
            .iter()
            .filter(|r| **r)
            .count(),
        1
    );
    assert_eq!(watcher.event().await.seq, 7);
    let (_, last) = alice.create_item(&project.id, "last").await;
    assert_eq!(last, 8);
    assert_eq!(watcher.event().await.seq, 8);

    let items = all_items(&mut alice, &project.id).await;
    assert_eq!(
        items
            .items
            .iter()
            .map(|i| i.title.as_str())
            .collect::<Vec<_>>(),
        ["once", "after", "once", "pipelined", "last"]
    );
}

// --- 4. Batches ---

#[tokio::test]
async fn an_atomic_batch_with_a_bad_command_commits_nothing() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    alice.create_item(&project.id, "before").await;
    let before = all_items(&mut alice, &project.id).await;
    assert_eq!(before.as_of_seq, 3);

    let answer = batch(
        &mut alice,
        true,
        vec![
            Cmd::AddMember(v1::AddMember {
                project_id: project.id.clone(),
                user_id: "dave".into(),
                role: v1::ProjectRole::Editor.into(),
            }),
            create_item(&project.id, "b"),
            create_item(&project.id, ""),
        ],
    )
    .await;
    let Out::Error(error) = answer else {
        panic!("expected an error, got {answer:?}");
    };
    assert_eq!(code(&error), v1::ErrorCode::InvalidArgument);
    assert!(error.field.starts_with("commands[2]."), "{error:?}");
    assert_eq!(error.field, "commands[2].title");
    assert_eq!(error.current, None);

    assert_eq!(all_items(&mut alice, &project.id).await, before);
    let (mut dave, welcome) = app.client("acme", "dave").await;
    assert_eq!(welcome.head_seq, 3);
    // The rolled-back membership grants nothing.
    let e = get_project(&mut dave, &project.id).await.unwrap_err();
    assert_eq!(code(&e), v1::ErrorCode::NotFound);
    let e = dave
        .command(create_item(&project.id, "from dave"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), v1::ErrorCode::NotFound);

    // The same commands all valid commit together, with consecutive seqs.
    let answer = batch(
        &mut alice,
        true,
        vec![
            create_item(&project.id, "a"),
            create_item(&project.id, "b"),
            create_item(&project.id, "c"),
        ],
    )
    .await;
    let Out::BatchResult(result) = answer else {
        panic!("expected a batch result, got {answer:?}");
    };
    let seqs: Vec<u64> = result
        .outcomes
        .iter()
        .map(|o| match &o.outcome {
            Some(v1::command_outcome::Outcome::CommandResult(r)) => r.seq,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs, [4, 5, 6]);
}

#[tokio::test]
async fn a_non_atomic_batch_answers_each_command_on_its_own() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;

    let answer = batch(
        &mut alice,
        false,
        vec![
            create_item(&project.id, "a"),
            create_item(&project.id, ""),
            create_item(&project.id, "c"),
        ],
    )
    .await;
    let Out::BatchResult(result) = answer else {
        panic!("expected a batch result, got {answer:?}");
    };
    assert_eq!(result.outcomes.len(), 3);
    use v1::command_outcome::Outcome;
    match &result.outcomes[0].outcome {
        Some(Outcome::CommandResult(r)) => {
            assert_eq!(r.seq, 3);
            assert_eq!(work_item(r).title, "a");
        }
        other => panic!("{other:?}"),
    }
    match &result.outcomes[1].outcome {
        Some(Outcome::Error(e)) => {
            assert_eq!(code(e), v1::ErrorCode::InvalidArgument);
            assert_eq!(e.field, "commands[1].title");
        }
        other => panic!("{other:?}"),
    }
    match &result.outcomes[2].outcome {
        Some(Outcome::CommandResult(r)) => {
            assert_eq!(r.seq, 4);
            assert_eq!(work_item(r).title, "c");
        }
        other => panic!("{other:?}"),
    }
    let items = all_items(&mut alice, &project.id).await;
    assert_eq!(
        items
            .items
            .iter()
            .map(|i| i.title.as_str())
            .collect::<Vec<_>>(),
        ["a", "c"]
    );
    assert_eq!(items.as_of_seq, 4);
}

// --- 5. Queries ---

#[tokio::test]
async fn list_work_items_pages_through_every_item_once_and_searches_titles() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let titles = [
        "Fix the login redirect",
        "Write release notes",
        "Tune database indexes",
        "Review pull requests",
        "Plan the next sprint",
        "Refactor session handling",
        "Update dependencies",
    ];
    let mut created = Vec::new();
    for title in titles {
        created.push(alice.create_item(&project.id, title).await.0);
    }
    let head = 2 + titles.len() as u64;

    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = list_items(&mut alice, &project.id, 2, &token, "")
            .await
            .unwrap();
        assert_eq!(page.as_of_seq, head);
        pages.push(page.items.len());
        token = page.next_page_token.clone();
        created.retain(|c| !page.items.contains(&unblocked(c)));
        for item in page.items {
            assert!(
                created.iter().all(|c| c.id != item.id),
                "{item:?} listed twice"
            );
        }
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, [2, 2, 2, 1]);
    assert_eq!(created, [], "every item was listed");

    // The pages in order are the one-page listing, which is ordered by rank then id.
    let whole = all_items(&mut alice, &project.id).await;
    let mut sorted = whole.items.clone();
    sorted.sort_by(|a, b| (&a.rank, &a.id).cmp(&(&b.rank, &b.id)));
    assert_eq!(whole.items, sorted);
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = list_items(&mut alice, &project.id, 2, &token, "")
            .await
            .unwrap();
        paged.extend(page.items);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(paged, whole.items);

    let titles_of = |r: v1::ListWorkItemsResult| {
        r.items
            .into_iter()
            .map(|i| i.title)
            .collect::<Vec<String>>()
    };
    let found = list_items(&mut alice, &project.id, 0, "", "login")
        .await
        .unwrap();
    assert_eq!(found.as_of_seq, head);
    assert_eq!(titles_of(found), ["Fix the login redirect"]);
    let found = list_items(&mut alice, &project.id, 0, "", "redir*")
        .await
        .unwrap();
    assert_eq!(titles_of(found), ["Fix the login redirect"]);
    let found = list_items(&mut alice, &project.id, 0, "", "release notes")
        .await
        .unwrap();
    assert_eq!(titles_of(found), ["Write release notes"]);
    let found = list_items(&mut alice, &project.id, 0, "", "nonexistent")
        .await
        .unwrap();
    assert_eq!(titles_of(found), Vec::<String>::new());
}

#[tokio::test]
async fn search_across_projects_over_the_wire_shows_only_the_callers_projects() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let (mut bob, _) = app.client("acme", "bob").await;
    let pm = alice.create_project("PM").await;
    let ops = alice.create_project("OPS").await;
    let secret = bob.create_project("SEC").await;
    alice.create_item(&pm.id, "Okapi sighting report").await;
    alice.create_item(&ops.id, "Feed the okapi").await;
    alice.create_item(&pm.id, "Unrelated").await;
    bob.create_item(&secret.id, "Okapi budget").await;

    let search = |text: &str| {
        Q::Search(v1::Search {
            text: text.into(),
            ..Default::default()
        })
    };
    let QR::SearchResult(found) = alice.query(search("okapi")).await.unwrap() else {
        panic!("expected a SearchResult");
    };
    let mut keys: Vec<&str> = found.items.iter().map(|h| h.display_key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, vec!["OPS-1", "PM-1"]);
    assert_eq!(found.as_of_seq, 10);
    let report = found
        .items
        .iter()
        .find(|h| h.display_key == "PM-1")
        .unwrap();
    assert_eq!(report.title, "Okapi sighting report");
    assert_eq!(report.entity_type(), v1::EntityType::WorkItem);
    assert_eq!(
        report.snippet,
        vec![
            v1::SnippetPart {
                text: "Okapi".into(),
                matched: true
            },
            v1::SnippetPart {
                text: " sighting report".into(),
                matched: false
            },
        ]
    );

    let QR::SearchResult(bobs) = bob.query(search("okapi")).await.unwrap() else {
        panic!("expected a SearchResult");
    };
    let keys: Vec<&str> = bobs.items.iter().map(|h| h.display_key.as_str()).collect();
    assert_eq!(keys, vec!["SEC-1"]);

    let (mut mallory, _) = app.client("acme", "mallory").await;
    let QR::SearchResult(none) = mallory.query(search("okapi")).await.unwrap() else {
        panic!("expected a SearchResult");
    };
    assert_eq!(none.items, vec![]);
    let refused = mallory
        .query(Q::Search(v1::Search {
            text: "okapi".into(),
            project_id: pm.id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(code(&refused), v1::ErrorCode::NotFound);
}

/// (id, name, email) of every user `client` may list.
async fn list_users(client: &mut Client) -> Vec<(String, String, String)> {
    match client
        .query(Q::ListUsers(v1::ListUsers::default()))
        .await
        .unwrap()
    {
        QR::ListUsersResult(r) => r
            .items
            .into_iter()
            .map(|u| (u.id, u.name, u.email))
            .collect(),
        other => panic!("expected ListUsersResult, got {other:?}"),
    }
}

#[tokio::test]
async fn names_and_emails_from_tokens_are_listed_to_people_who_share_a_project() {
    let app = spawn_app().await;
    let signed = |user: &str, extra: serde_json::Value| hs256(&claims("acme", user, extra));
    let mut alice = Client::connect(app.addr).await;
    alice
        .hello(&signed(
            "alice",
            serde_json::json!({"name": "Alice Liddell", "email": "alice@example.com"}),
        ))
        .await;
    let mut bob = Client::connect(app.addr).await;
    bob.hello(&signed("bob", serde_json::json!({"name": "Bob"})))
        .await;
    let project = alice.create_project("PM").await;
    alice
        .add_member(&project.id, "bob", v1::ProjectRole::Editor)
        .await;

    let owned = |v: &[(&str, &str, &str)]| {
        v.iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        list_users(&mut bob).await,
        owned(&[
            ("alice", "Alice Liddell", "alice@example.com"),
            ("bob", "Bob", ""),
        ])
    );

    // A refreshed token with a new name is what others see from then on.
    let refreshed = bob
        .request(In::RefreshToken(v1::RefreshToken {
            token: signed("bob", serde_json::json!({"name": "Robert Paulson"})),
        }))
        .await;
    assert!(
        matches!(refreshed, Out::RefreshTokenResult(_)),
        "{refreshed:?}"
    );
    assert_eq!(
        list_users(&mut alice).await,
        owned(&[
            ("alice", "Alice Liddell", "alice@example.com"),
            ("bob", "Robert Paulson", ""),
        ])
    );

    // Someone who is in no project sees nobody, not even themselves.
    let mut mallory = Client::connect(app.addr).await;
    mallory
        .hello(&signed("mallory", serde_json::json!({"name": "M"})))
        .await;
    assert_eq!(list_users(&mut mallory).await, owned(&[]));
}
