//! What a subscription delivers: every change in seq order to every subscriber (also under
//! concurrent writers), filtered by project and by entity type, with the changed fields, the
//! entity and the actor; a new `Subscribe` replaces the old one, `Unsubscribe` stops events and
//! keeps the connection, and a subscriber learns of projects created after it subscribed.
//!
//! Subscribing from a seq (resume, snapshot then subscribe) is in `resume`; slow subscribers
//! are in `backpressure`; membership changes in `permissions`.

use std::collections::HashSet;

use pm_proto::v1;
use pm_proto::v1::client_frame::Body as In;

use crate::support::*;

#[tokio::test]
async fn a_second_client_sees_the_first_ones_changes_in_seq_order() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let (mut watcher, _) = app.client("acme", "alice").await;
    assert_eq!(watcher.subscribe(2).await.unwrap(), 2);
    let mut seqs = Vec::new();
    for i in 0..5 {
        let (_, seq) = alice.create_item(&project.id, &format!("item {i}")).await;
        seqs.push(seq);
    }
    for expected in seqs {
        let event = watcher.event().await;
        assert_eq!(event.seq, expected);
        assert_eq!(event.entity_type, v1::EntityType::WorkItem as i32);
        assert_eq!(event.action, v1::ChangeAction::Created as i32);
    }
}

#[tokio::test]
async fn a_project_filter_delivers_only_that_projects_events() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let one = alice.create_project("ONE").await;
    let two = alice.create_project("TWO").await;
    let (mut watcher, welcome) = app.client("acme", "alice").await;
    assert_eq!(welcome.head_seq, 4);
    assert_eq!(watcher.subscribe_to(&[&one.id], &[], 4).await, Ok(4));

    let (_, s5) = alice.create_item(&two.id, "two a").await;
    let (_, s6) = alice.create_item(&one.id, "one a").await;
    let (_, s7) = alice.create_item(&two.id, "two b").await;
    let (_, s8) = alice.create_item(&one.id, "one b").await;
    assert_eq!((s5, s6, s7, s8), (5, 6, 7, 8));

    let first = watcher.event().await;
    assert_eq!((first.seq, first.project_id.as_str()), (6, one.id.as_str()));
    let second = watcher.event().await;
    assert_eq!(
        (second.seq, second.project_id.as_str()),
        (8, one.id.as_str())
    );
    watcher.assert_nothing_more(1).await;
}

#[tokio::test]
async fn an_entity_type_filter_delivers_only_that_kind() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let one = alice.create_project("ONE").await;
    let (item, s3) = alice.create_item(&one.id, "commented").await;
    assert_eq!(s3, 3);
    let (mut watcher, _) = app.client("acme", "alice").await;
    assert_eq!(
        watcher
            .subscribe_to(&[], &[v1::EntityType::WorkItem], 3)
            .await,
        Ok(3)
    );

    // A comment, a member, a project update and a new project (project + member events).
    let comment = alice
        .command(v1::command::Kind::CreateComment(v1::CreateComment {
            work_item_id: item.id.clone(),
            content: "a comment".into(),
        }))
        .await
        .expect("comment created");
    assert_eq!(comment.seq, 4);
    assert_eq!(
        alice
            .add_member(&one.id, "bob", v1::ProjectRole::Viewer)
            .await,
        5
    );
    let renamed = alice
        .command(v1::command::Kind::UpdateProject(v1::UpdateProject {
            id: one.id.clone(),
            expected_version: 1,
            name: Some("Renamed".into()),
            ..Default::default()
        }))
        .await
        .expect("project renamed");
    assert_eq!(renamed.seq, 6);
    let two = alice.create_project("TWO").await;
    let (_, s9) = alice.create_item(&one.id, "in one").await;
    let (_, s10) = alice.create_item(&two.id, "in two").await;
    assert_eq!((s9, s10), (9, 10));

    for (seq, project) in [(9, &one.id), (10, &two.id)] {
        let event = watcher.event().await;
        assert_eq!(event.seq, seq);
        assert_eq!(&event.project_id, project);
        assert_eq!(event.entity_type, v1::EntityType::WorkItem as i32);
        assert_eq!(event.action, v1::ChangeAction::Created as i32);
    }
    watcher.assert_nothing_more(1).await;
}

#[tokio::test]
async fn a_new_subscribe_replaces_the_previous_one() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let one = alice.create_project("ONE").await;
    let two = alice.create_project("TWO").await;
    let (mut watcher, _) = app.client("acme", "alice").await;
    assert_eq!(watcher.subscribe_to(&[&one.id], &[], 4).await, Ok(4));
    let (_, s5) = alice.create_item(&one.id, "one a").await;
    assert_eq!(watcher.event().await.seq, s5);

    assert_eq!(watcher.subscribe_to(&[&two.id], &[], s5).await, Ok(5));
    let (_, s6) = alice.create_item(&one.id, "one b").await;
    let (_, s7) = alice.create_item(&two.id, "two a").await;
    assert_eq!((s6, s7), (6, 7));

    // Were the old subscription still there, seq 6 would come first (and 7 twice).
    let event = watcher.event().await;
    assert_eq!((event.seq, event.project_id.as_str()), (7, two.id.as_str()));
    watcher.assert_nothing_more(1).await;
}

#[tokio::test]
async fn unsubscribe_stops_events_and_keeps_the_connection() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let (mut watcher, _) = app.client("acme", "alice").await;
    assert_eq!(watcher.subscribe(2).await, Ok(2));
    let (_, s3) = alice.create_item(&project.id, "seen").await;
    assert_eq!(watcher.event().await.seq, s3);

    assert_eq!(
        watcher.request(In::Unsubscribe(v1::Unsubscribe {})).await,
        v1::response::Result::UnsubscribeResult(v1::UnsubscribeResult {})
    );
    // The barrier proves the next write has been published to every subscriber.
    let (mut barrier, _) = app.client("acme", "alice").await;
    assert_eq!(barrier.subscribe(s3).await, Ok(3));
    let (_, s4) = alice.create_item(&project.id, "not seen").await;
    assert_eq!(barrier.event().await.seq, s4);

    watcher.assert_nothing_more(7).await;
}

#[tokio::test]
async fn an_update_event_carries_exactly_the_changed_field_the_entity_and_the_actor() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let (item, s3) = alice.create_item(&project.id, "old title").await;
    let (mut watcher, _) = app.client("acme", "bob").await;
    // bob watches; alice is the writer (bob's own membership change is seq 4).
    assert_eq!(
        alice
            .add_member(&project.id, "bob", v1::ProjectRole::Viewer)
            .await,
        s3 + 1
    );
    assert_eq!(watcher.subscribe(4).await, Ok(4));

    let result = alice
        .command(v1::command::Kind::UpdateWorkItem(v1::UpdateWorkItem {
            id: item.id.clone(),
            expected_version: 1,
            title: Some("new title".into()),
            ..Default::default()
        }))
        .await
        .expect("item updated");
    assert_eq!(result.seq, 5);
    let Some(v1::entity::Kind::WorkItem(after)) = result.entity.and_then(|e| e.kind) else {
        panic!("the result carries the work item");
    };
    assert_eq!(after.title, "new title");
    assert_eq!(after.version, 2);
    assert_eq!(after.updated_by, "alice");

    let event = watcher.event().await;
    assert_eq!(event.seq, 5);
    assert_eq!(event.actor_id, "alice");
    assert_eq!(event.project_id, project.id);
    assert_eq!(event.entity_type, v1::EntityType::WorkItem as i32);
    assert_eq!(event.entity_id, item.id);
    assert_eq!(event.action, v1::ChangeAction::Updated as i32);
    assert_eq!(
        event.changes,
        vec![v1::FieldChange {
            field: "title".into(),
            old_value: Some("old title".into()),
            new_value: Some("new title".into()),
        }]
    );
    assert_eq!(event.change, Some(v1::event::Change::WorkItem(after)));
    assert!(
        (now_ms() - event.at).abs() < 60_000,
        "event time {} is not within a minute of now",
        event.at
    );
    watcher.assert_nothing_more(1).await;
}

#[tokio::test]
async fn a_live_subscriber_receives_the_creation_of_a_new_project() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let (mut watcher, _) = app.client("acme", "alice").await;
    assert_eq!(watcher.subscribe(0).await, Ok(0));
    let project = alice.create_project("PM").await;

    // Replayed from the log, the creation is there; live, it must be too.
    let (mut replayer, _) = app.client("acme", "alice").await;
    assert_eq!(replayer.subscribe(0).await, Ok(2));
    let replayed = events_until(&mut replayer, 2).await;
    assert_eq!(seqs(&replayed), [1, 2]);
    // The creator's membership is logged first, so followers learn they may see the project
    // before it arrives.
    assert_eq!(
        replayed[0].entity_type,
        v1::EntityType::ProjectMember as i32
    );
    assert_eq!(
        replayed[1].change,
        Some(v1::event::Change::Project(project.clone()))
    );

    let admin = watcher.event().await;
    assert_eq!(admin.seq, 1);
    assert_eq!(admin.entity_type, v1::EntityType::ProjectMember as i32);
    assert_eq!(admin.entity_id, "alice");
    let created = watcher.event().await;
    assert_eq!(created.seq, 2);
    assert_eq!(created.entity_type, v1::EntityType::Project as i32);
    assert_eq!(created.action, v1::ChangeAction::Created as i32);
    assert_eq!(created.change, Some(v1::event::Change::Project(project)));
}

/// Three writers (alice, three connections) each create a project and `items` items, at
/// once; returns every command's seq. The subscribers must already be subscribed.
async fn write_concurrently(app: &TestApp, keys: [&str; 3], items: usize) -> Vec<u64> {
    let mut writers = tokio::task::JoinSet::new();
    for key in keys {
        let (mut writer, _) = app.client("acme", "alice").await;
        let key = key.to_owned();
        writers.spawn(async move {
            let project = writer.create_project(&key).await;
            let mut seqs = Vec::with_capacity(items);
            for i in 0..items {
                let (_, seq) = writer.create_item(&project.id, &format!("{key} {i}")).await;
                seqs.push(seq);
            }
            seqs
        });
    }
    let mut seqs = Vec::new();
    while let Some(written) = writers.join_next().await {
        seqs.extend(written.expect("a writer finished"));
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_reach_every_subscriber_in_the_same_gapless_order() {
    const ITEMS: usize = 200;
    // Per writer: project + admin member, then the items.
    const TOTAL: u64 = 3 * (2 + ITEMS as u64);
    let app = spawn_app().await;
    let mut readers = Vec::new();
    for _ in 0..5 {
        let (mut subscriber, _) = app.client("acme", "alice").await;
        assert_eq!(subscriber.subscribe(0).await, Ok(0));
        readers.push(tokio::spawn(async move {
            let events = events_until(&mut subscriber, TOTAL).await;
            (subscriber, events)
        }));
    }
    let written = write_concurrently(&app, ["AAA", "BBB", "CCC"], ITEMS).await;
    assert_eq!(written.len(), 3 * ITEMS);
    assert_eq!(
        written.iter().copied().collect::<HashSet<_>>().len(),
        3 * ITEMS
    );
    assert!(written.iter().all(|seq| (1..=TOTAL).contains(seq)));

    let mut first: Option<Vec<v1::Event>> = None;
    for reader in readers {
        let (mut subscriber, events) = reader.await.expect("a reader finished");
        assert_eq!(seqs(&events), (1..=TOTAL).collect::<Vec<_>>());
        subscriber.assert_nothing_more(1).await;
        match &first {
            None => first = Some(events),
            Some(first) => assert!(*first == events, "subscribers saw different streams"),
        }
    }
    let events = first.expect("five readers");
    let projects = events
        .iter()
        .filter(|e| e.entity_type == v1::EntityType::Project as i32)
        .count();
    assert_eq!(projects, 3);
}

/// Subscribing while a project of one's own is being created: whichever side wins, the
/// subscriber gets the membership and the project, once each, in order (the subscription
/// takes its permissions in the same snapshot as the position it replays up to).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_while_ones_own_project_is_created_misses_nothing() {
    let app = spawn_app().await;
    for round in 0..20 {
        let tenant = format!("race-{round}");
        let (mut writer, _) = app.client(&tenant, "alice").await;
        let (mut watcher, _) = app.client(&tenant, "alice").await;
        let create = tokio::spawn(async move { writer.create_project("PM").await });
        watcher.subscribe(0).await.unwrap();
        let project = create.await.unwrap();
        let first = watcher.event().await;
        let second = watcher.event().await;
        assert_eq!((first.seq, second.seq), (1, 2), "round {round}");
        assert_eq!(first.entity_type, v1::EntityType::ProjectMember as i32);
        assert_eq!(second.entity_id, project.id);
        // And the subscription stays live for the project afterwards.
        let (mut writer, _) = app.client(&tenant, "alice").await;
        let (_, seq) = writer.create_item(&project.id, "after").await;
        assert_eq!(watcher.event().await.seq, seq, "round {round}");
    }
}

/// A tenant's hub serves its subscribers a fixed number at a time, yielding in between. With
/// more subscribers than one turn serves, and others joining and leaving while the writes go
/// on, every subscriber still gets every event once and in order: those there from the start
/// and those that joined in the middle of a delivery, from the seq they subscribed at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_beyond_one_turn_and_others_joining_meanwhile_get_every_event_in_order() {
    const SUBSCRIBERS: usize = 300;
    const ITEMS: usize = 40;
    const TOTAL: u64 = 3 * (2 + ITEMS as u64);
    let app = spawn_app_with(|s| s.limits.max_connections_per_user = 1_000).await;
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..SUBSCRIBERS {
        let (mut subscriber, _) = app.client("acme", "alice").await;
        assert_eq!(subscriber.subscribe(0).await, Ok(0));
        readers.spawn(async move { (0, seqs(&events_until(&mut subscriber, TOTAL).await)) });
    }
    let writes = write_concurrently(&app, ["AAA", "BBB", "CCC"], ITEMS);
    // While the writes go on: some join at seq 0, some subscribe and leave at once.
    let churn = async {
        let mut joined = Vec::new();
        for round in 0..20 {
            let (mut late, _) = app.client("acme", "alice").await;
            let head = late
                .subscribe(0)
                .await
                .expect("a late subscription is taken");
            assert!(head <= TOTAL, "{head}");
            if round % 2 == 0 {
                joined.push(late);
            }
            tokio::task::yield_now().await;
        }
        joined
    };
    let (written, joined) = tokio::join!(writes, churn);
    assert_eq!(written.len(), 3 * ITEMS);
    for mut late in joined {
        readers.spawn(async move { (1, seqs(&events_until(&mut late, TOTAL).await)) });
    }
    let mut finished = [0, 0];
    while let Some(reader) = readers.join_next().await {
        let (group, seqs) = reader.expect("a reader finished");
        assert_eq!(seqs, (1..=TOTAL).collect::<Vec<_>>());
        finished[group] += 1;
    }
    assert_eq!(finished, [SUBSCRIBERS, 10]);
}
