//! Committed events and the change log: published in seq order and stored as the same frames,
//! the activity feed paged both ways, resume positions beyond the head.

use pm_core::kinds::EntityKind;
use pm_db::{EventFilter, Tenant as _};
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;
use pm_proto::v1::query::Kind as Q;
use pm_proto::v1::query_result::Result as R;
use prost::Message;

use crate::support::*;

use v1::WorkItemType as T;

fn decode_event(frame: &[u8]) -> v1::Event {
    match v1::ServerFrame::decode(frame).expect("a ServerFrame").body {
        Some(v1::server_frame::Body::Event(event)) => event,
        other => panic!("expected an event frame, got {other:?}"),
    }
}

#[tokio::test]
async fn committed_events_are_published_in_seq_order() {
    let env = TestEnv::new();
    let tenant = env.tenant("acme").await;
    let mut commits = tenant.subscribe_commits();

    let project = create_project(&tenant, &ALICE, "PM").await;
    let (item, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(&project.id, T::Task, "Draft", None),
    )
    .await;
    let (updated, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::UpdateWorkItem(v1::UpdateWorkItem {
            id: item.id.clone(),
            expected_version: 1,
            title: Some("Final".into()),
            ..Default::default()
        }),
    )
    .await;

    // Published before the callers were answered: one slice per committed group.
    let mut slices = Vec::new();
    while let Ok(slice) = commits.try_recv() {
        slices.push(slice);
    }
    let seqs: Vec<Vec<u64>> = slices
        .iter()
        .map(|s| s.iter().map(|e| e.seq).collect())
        .collect();
    assert_eq!(seqs, [vec![1, 2], vec![3], vec![4]]);
    let committed: Vec<_> = slices.iter().flat_map(|s| s.iter().cloned()).collect();
    assert!(committed.iter().all(|e| e.project_id == project.id));
    assert_eq!(
        committed.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [
            EntityKind::ProjectMember,
            EntityKind::Project,
            EntityKind::WorkItem,
            EntityKind::WorkItem
        ]
    );
    let events: Vec<v1::Event> = committed.iter().map(|e| decode_event(&e.frame)).collect();
    for (event, c) in events.iter().zip(&committed) {
        assert_eq!(event.seq, c.seq);
        assert_eq!(event.actor_id, "alice");
        assert_eq!(event.project_id, project.id);
    }

    let created = &events[2];
    assert_eq!(created.entity_type, v1::EntityType::WorkItem as i32);
    assert_eq!(created.entity_id, item.id);
    assert_eq!(created.action, v1::ChangeAction::Created as i32);
    assert_eq!(created.at, item.created_at);
    assert_eq!(
        created.change,
        Some(v1::event::Change::WorkItem(item.clone()))
    );
    let new = |field: &str, value: &str| v1::FieldChange {
        field: field.into(),
        old_value: None,
        new_value: Some(value.into()),
    };
    assert_eq!(
        created.changes,
        [
            new("number", "1"),
            new("item_type", "task"),
            new("title", "Draft"),
            new("description", ""),
            new("status", "backlog"),
            new("priority", "medium"),
            new("rank", &item.rank),
        ]
    );

    let changed = &events[3];
    assert_eq!(changed.entity_type, v1::EntityType::WorkItem as i32);
    assert_eq!(changed.entity_id, item.id);
    assert_eq!(changed.action, v1::ChangeAction::Updated as i32);
    assert_eq!(changed.at, updated.updated_at);
    assert_eq!(
        changed.change,
        Some(v1::event::Change::WorkItem(updated.clone()))
    );
    assert_eq!(
        changed.changes,
        [v1::FieldChange {
            field: "title".into(),
            old_value: Some("Draft".into()),
            new_value: Some("Final".into()),
        }]
    );
    assert_eq!(events[0].entity_type, v1::EntityType::ProjectMember as i32);
    assert_eq!(events[0].entity_id, "alice");
    assert_eq!(
        events[1].change,
        Some(v1::event::Change::Project(project.clone()))
    );

    // The log replays the very same frames, and the audit trail shows the same entries.
    let stored = tenant
        .read_events(0, None, 100, &EventFilter::default())
        .await
        .unwrap();
    assert_eq!(
        stored.iter().map(|e| e.frame()).collect::<Vec<_>>(),
        committed
            .iter()
            .map(|e| e.frame.clone())
            .collect::<Vec<_>>()
    );
    let filtered = tenant
        .read_events(
            0,
            None,
            100,
            &EventFilter {
                project_ids: vec![project.id.clone()],
                kinds: vec![EntityKind::WorkItem],
            },
        )
        .await
        .unwrap();
    assert_eq!(filtered.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
    let activity = list!(&tenant, &ALICE, ListActivity {
        project_id: project.id.clone(),
        oldest_first: true,
        ..Default::default()
    } => ListActivityResult);
    assert_eq!(
        activity.iter().map(|a| a.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(activity[3].changes, changed.changes);
    assert_eq!(
        activity[3].entity,
        Some(v1::Entity::of(v1::entity::Kind::WorkItem(updated)))
    );
    let newest_first =
        list!(&tenant, &ALICE, ListActivity { ..Default::default() } => ListActivityResult);
    assert_eq!(
        newest_first.iter().map(|a| a.seq).collect::<Vec<_>>(),
        [4, 3, 2, 1]
    );
}

#[tokio::test]
async fn activity_pages_both_ways() {
    let (_env, tenant, project) = setup().await;
    add_member(&tenant, &project.id, &BOB, v1::ProjectRole::Editor).await;
    let (item, _) =
        run::<v1::WorkItem>(&tenant, &BOB, new_item(&project.id, T::Task, "Task", None)).await;
    run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        C::UpdateWorkItem(v1::UpdateWorkItem {
            id: item.id.clone(),
            expected_version: 1,
            title: Some("Renamed".into()),
            ..Default::default()
        }),
    )
    .await;
    // Seqs 1..=5: project, alice's membership, bob's membership, the item, its update.
    assert_eq!(
        activity_pages(&tenant, "", "", None, false, 2).await,
        [vec![5, 4], vec![3, 2], vec![1]]
    );
    assert_eq!(
        activity_pages(&tenant, "", "", None, true, 2).await,
        [vec![1, 2], vec![3, 4], vec![5]]
    );

    let by_bob = list!(&tenant, &ALICE, ListActivity { actor_id: "bob".into(), ..Default::default() } => ListActivityResult);
    assert_eq!(by_bob.iter().map(|a| a.seq).collect::<Vec<_>>(), [4]);
    let of_item = list!(&tenant, &ALICE, ListActivity { entity_id: item.id.clone(), ..Default::default() } => ListActivityResult);
    assert_eq!(of_item.iter().map(|a| a.seq).collect::<Vec<_>>(), [5, 4]);
    assert_eq!(
        of_item.iter().map(|a| a.action).collect::<Vec<_>>(),
        [
            v1::ChangeAction::Updated as i32,
            v1::ChangeAction::Created as i32
        ]
    );
    let members = list!(&tenant, &ALICE, ListActivity {
        entity_type: Some(v1::EntityType::ProjectMember.into()),
        ..Default::default()
    } => ListActivityResult);
    // Creating the project logs its admin first (seq 1), then the project (seq 2).
    assert_eq!(members.iter().map(|a| a.seq).collect::<Vec<_>>(), [3, 1]);
}

/// A resume position above `i64::MAX` once wrapped negative and replayed the whole log.
///
/// A regression found in review.
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

/// One page of `ListActivity` (as ALICE) in `project_id`, by `actor_id` and `kind` ("" and
/// `None`: any), of `page_size`, from `token`: its seqs, as of the head, and the next token.
async fn activity_page(
    tenant: &TestTenant,
    (project_id, actor_id, kind): (&str, &str, Option<v1::EntityType>),
    oldest_first: bool,
    page_size: u32,
    token: String,
) -> (Vec<u64>, String) {
    let result = query(
        tenant,
        &ALICE,
        Q::ListActivity(v1::ListActivity {
            page: Some(v1::PageRequest {
                page_size,
                page_token: token,
            }),
            project_id: project_id.into(),
            actor_id: actor_id.into(),
            entity_type: kind.map(Into::into),
            oldest_first,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let R::ListActivityResult(r) = result else {
        panic!("unexpected result {result:?}")
    };
    assert_eq!(r.as_of_seq, tenant.head_seq());
    assert!(r
        .items
        .iter()
        .all(|a| actor_id.is_empty() || a.actor_id == actor_id));
    (r.items.iter().map(|a| a.seq).collect(), r.next_page_token)
}

/// Every page of `ListActivity` (see [`activity_page`]), in the order asked for.
async fn activity_pages(
    tenant: &TestTenant,
    project_id: &str,
    actor_id: &str,
    kind: Option<v1::EntityType>,
    oldest_first: bool,
    page_size: u32,
) -> Vec<Vec<u64>> {
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let filter = (project_id, actor_id, kind);
        let (seqs, next) = activity_page(tenant, filter, oldest_first, page_size, token).await;
        pages.push(seqs);
        if next.is_empty() {
            return pages;
        }
        token = next;
    }
}

/// Activity by actor is exactly that actor's part of the log, paged both ways, on both sides of
/// where SQLite's batched index of activity by actor ends: it holds the events up to the last
/// multiple of 256 seqs that a commit crossed, and the newer ones are read from the log.
#[tokio::test]
async fn activity_by_actor_pages_exactly_the_actors_part_of_the_log() {
    let (_env, tenant, project) = setup().await;
    add_member(&tenant, &project.id, &BOB, v1::ProjectRole::Editor).await;
    add_member(&tenant, &project.id, &CAROL, v1::ProjectRole::Editor).await;
    // Seqs 1..=4 are ALICE's membership, the project, and BOB's and CAROL's memberships (added
    // by ALICE); then 300 items, one commit each, by the three of them in turn: 304 events,
    // past one batch (256) and short of the next.
    let actors = [&*ALICE, &*BOB, &*CAROL];
    for i in 0..300 {
        let title = format!("Item {i}");
        run::<v1::WorkItem>(
            &tenant,
            actors[i % 3],
            new_item(&project.id, T::Task, &title, None),
        )
        .await;
    }
    assert_eq!(tenant.head_seq(), 304);
    let whole = list!(&tenant, &ALICE, ListActivity { ..Default::default() } => ListActivityResult);
    assert_eq!(whole.len(), 304);
    for actor in actors {
        let newest_first: Vec<u64> = whole
            .iter()
            .filter(|e| e.actor_id == actor.as_str())
            .map(|e| e.seq)
            .collect();
        let oldest_first: Vec<u64> = newest_first.iter().rev().copied().collect();
        // ALICE: the first four and 100 items; BOB and CAROL: 100 items each.
        let expected = if actor == &*ALICE { 104 } else { 100 };
        assert_eq!(newest_first.len(), expected, "{actor}");
        for (oldest, want) in [(false, &newest_first), (true, &oldest_first)] {
            // Within the caller's projects, and within this one project.
            for project in ["", project.id.as_str()] {
                let pages = activity_pages(&tenant, project, actor.as_str(), None, oldest, 7).await;
                assert!(
                    pages.iter().rev().skip(1).all(|p| p.len() == 7),
                    "{pages:?}"
                );
                assert_eq!(&pages.concat(), want, "{actor}, oldest first: {oldest}");
            }
        }
    }
    // With another filter: the memberships, all three logged as ALICE's.
    let members = activity_pages(
        &tenant,
        "",
        ALICE.as_str(),
        Some(v1::EntityType::ProjectMember),
        false,
        1,
    )
    .await;
    assert_eq!(members.concat(), [4, 3, 1]);
    let nobody = activity_pages(&tenant, "", "nobody", None, true, 7).await;
    assert_eq!(nobody, [Vec::<u64>::new()]);

    // A page token from before three commits of 100 events (the last crosses the next batch,
    // 512, in one commit) pages on through exactly the older events.
    let bobs: Vec<u64> = whole
        .iter()
        .filter(|e| e.actor_id == BOB.as_str())
        .map(|e| e.seq)
        .collect();
    let by_bob = ("", BOB.as_str(), None);
    let page = |token: String| activity_page(&tenant, by_bob, false, 60, token);
    let (first, token) = page(String::new()).await;
    assert_eq!(first, bobs[..60]);
    for n in 0..3 {
        let batch = v1::Batch {
            atomic: false,
            commands: (0..100)
                .map(|i| command(new_item(&project.id, T::Bug, &format!("Bug {n}.{i}"), None)))
                .collect(),
        };
        tenant.batch(&BOB, batch).await.expect("batch committed");
    }
    assert_eq!(tenant.head_seq(), 604);
    let (rest, token) = page(token).await;
    assert_eq!((rest.as_slice(), token.as_str()), (&bobs[60..], ""));
    let (newest, _) = page(String::new()).await;
    assert_eq!(newest, (545..=604).rev().collect::<Vec<u64>>());
}

/// Subscribes that arrive together are read together (SQLite reads them in one statement):
/// each user gets exactly their own memberships, a user asked for twice gets them twice, and
/// a deleted project's members get it apart.
#[tokio::test]
async fn concurrent_subscription_snapshots_each_answer_their_own_user() {
    let (_env, tenant, one) = setup().await;
    let two = create_project(&tenant, &ALICE, "TWO").await;
    let gone = create_project(&tenant, &ALICE, "GONE").await;
    add_member(&tenant, &one.id, &BOB, v1::ProjectRole::Viewer).await;
    add_member(&tenant, &gone.id, &BOB, v1::ProjectRole::Editor).await;
    run::<v1::Project>(
        &tenant,
        &ALICE,
        C::DeleteProject(v1::DeleteProject {
            id: gone.id.clone(),
            expected_version: gone.version,
        }),
    )
    .await;
    let head = tenant.head_seq();

    let users = [&*ALICE, &*BOB, &*CAROL, &*ALICE];
    let snapshots =
        futures::future::join_all(users.iter().map(|user| tenant.subscription_snapshot(user)))
            .await;
    use pm_core::kinds::Role;
    type Seen = (Vec<(String, Role)>, Vec<String>, u64);
    let seen: Vec<Seen> = snapshots
        .into_iter()
        .map(|s| {
            let mut s = s.expect("snapshot read");
            s.memberships.sort();
            (s.memberships, s.deleted, s.head)
        })
        .collect();
    let mut alice = vec![(one.id.clone(), Role::Admin), (two.id.clone(), Role::Admin)];
    alice.sort();
    assert_eq!(
        seen,
        [
            (alice.clone(), vec![gone.id.clone()], head),
            (
                vec![(one.id.clone(), Role::Viewer)],
                vec![gone.id.clone()],
                head
            ),
            (vec![], vec![], head),
            (alice, vec![gone.id.clone()], head),
        ]
    );
}
