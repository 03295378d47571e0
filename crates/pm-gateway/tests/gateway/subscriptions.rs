//! End-to-end tests: subscriptions, filters, event content, slow consumers, membership changes
//! and fan-out order.
//!
//! "Nothing else arrived" is proved with an application `Ping`: its `Pong` goes through the same
//! outgoing queue as events, so an event queued before the ping arrives before the pong. The
//! proof is only sound once every event that could still arrive has been published, so each such
//! check follows the receipt (here or on a barrier connection) of the last event written.

use std::collections::HashSet;

use pm_proto::v1;
use pm_proto::v1::client_frame::Body as In;
use pm_proto::v1::server_frame::Body;

use crate::support::*;

/// Reads events until one with `seq >= last` arrives; fails on anything but an event.
async fn events_until(client: &mut Client, last: u64) -> Vec<v1::Event> {
    let mut events = Vec::new();
    loop {
        let event = client.event().await;
        let seq = event.seq;
        events.push(event);
        if seq >= last {
            return events;
        }
    }
}

fn seqs(events: &[v1::Event]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as i64
}

/// The value of an unlabelled or labelled sample, by its full name as printed.
fn sample(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in\n{body}"))
        .parse()
        .expect("an integer sample")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_subscriber_is_cut_off_and_resumes_without_gap_or_duplicate() {
    let app = spawn_app_with(|s| {
        s.limits.outgoing_queue = 16;
        // One writer sends thousands of commands; the rate limit is not under test here.
        s.limits.requests_per_second = 1_000_000;
        s.limits.request_burst = 1_000_000;
    })
    .await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let (mut stalled, _) = app.client("acme", "alice").await;
    assert_eq!(stalled.subscribe(2).await, Ok(2));
    // From here on the stalled socket is not read until the writer is done.
    let (mut healthy, _) = app.client("acme", "alice").await;
    assert_eq!(healthy.subscribe(2).await, Ok(2));
    let healthy = tokio::spawn(async move {
        let mut seqs = Vec::new();
        loop {
            let event = healthy.event().await;
            seqs.push(event.seq);
            if let Some(v1::event::Change::WorkItem(item)) = &event.change {
                if item.title == "last" {
                    return (healthy, seqs);
                }
            }
        }
    });

    // Single commands: a commit of more events than the queue holds would overflow even a
    // reader that keeps up. Events of ~1.5 KB fill the kernel buffers sooner; the writer goes
    // on (2,000 at least) until the stalled one has been cut off.
    let description = "d".repeat(1_000);
    let metrics = app.app.metrics.clone();
    let mut written = 0;
    while written < 2_000 || metrics.slow_consumer_disconnects.get() == 0 {
        assert!(written < 20_000, "the stalled subscriber was never cut off");
        for _ in 0..100 {
            alice
                .command(v1::command::Kind::CreateWorkItem(v1::CreateWorkItem {
                    project_id: project.id.clone(),
                    item_type: v1::WorkItemType::Task.into(),
                    title: format!("item {written}"),
                    description: description.clone(),
                    ..Default::default()
                }))
                .await
                .expect("item created");
            written += 1;
        }
    }
    let (_, last) = alice.create_item(&project.id, "last").await;
    assert_eq!(last, 2 + written + 1);

    let (mut healthy, healthy_seqs) = healthy.await.expect("the healthy reader finished");
    assert_eq!(healthy_seqs, (3..=last).collect::<Vec<_>>());
    healthy.assert_nothing_more(1).await;
    assert_eq!(metrics.slow_consumer_disconnects.get(), 1);

    let mut received = Vec::new();
    let goodbye = loop {
        match stalled.frame().await {
            Body::Event(event) => received.push(event.seq),
            Body::Goodbye(goodbye) => break goodbye,
            other => panic!("expected events then a goodbye, got {other:?}"),
        }
    };
    match stalled.recv().await {
        Received::Closed(code) => assert_eq!(code, Some(4008)),
        Received::Frame(frame) => panic!("expected the close after the goodbye, got {frame:?}"),
    }
    let resume = *received
        .last()
        .expect("some events arrived before the cut-off");
    assert_eq!(received, (3..=resume).collect::<Vec<_>>());
    assert!(
        resume < last,
        "cut off at {resume}, after the last event {last}"
    );
    assert_eq!(
        goodbye,
        v1::Goodbye {
            reason: v1::CloseReason::SlowConsumer.into(),
            message: "the connection did not keep up with its events; resume from resume_from_seq"
                .into(),
            resume_from_seq: resume,
        }
    );

    let (mut back, _) = app.client("acme", "alice").await;
    assert_eq!(back.subscribe(resume).await, Ok(last));
    let rest = events_until(&mut back, last).await;
    assert_eq!(seqs(&rest), (resume + 1..=last).collect::<Vec<_>>());
    back.assert_nothing_more(1).await;
}

#[tokio::test]
async fn a_removed_member_stops_receiving_the_project_and_a_re_added_one_resumes() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let one = alice.create_project("ONE").await;
    let two = alice.create_project("TWO").await;
    assert_eq!(
        alice
            .add_member(&one.id, "bob", v1::ProjectRole::Editor)
            .await,
        5
    );
    assert_eq!(
        alice
            .add_member(&two.id, "bob", v1::ProjectRole::Viewer)
            .await,
        6
    );
    let (mut bob, _) = app.client("acme", "bob").await;
    assert_eq!(bob.subscribe(6).await, Ok(6));

    let removed = alice
        .command(v1::command::Kind::RemoveMember(v1::RemoveMember {
            project_id: one.id.clone(),
            user_id: "bob".into(),
            expected_version: 1,
        }))
        .await
        .expect("bob removed");
    assert_eq!(removed.seq, 7);
    let event = bob.event().await;
    assert_eq!(event.seq, 7);
    assert_eq!(event.project_id, one.id);
    assert_eq!(event.entity_type, v1::EntityType::ProjectMember as i32);
    assert_eq!(event.entity_id, "bob");
    assert_eq!(event.action, v1::ChangeAction::Deleted as i32);

    let (_, s8) = alice.create_item(&one.id, "hidden").await;
    let (_, s9) = alice.create_item(&one.id, "hidden too").await;
    let (_, s10) = alice.create_item(&two.id, "visible").await;
    assert_eq!((s8, s9, s10), (8, 9, 10));
    let event = bob.event().await;
    assert_eq!(
        (event.seq, event.project_id.as_str()),
        (10, two.id.as_str())
    );
    bob.assert_nothing_more(1).await;

    assert_eq!(
        alice
            .add_member(&one.id, "bob", v1::ProjectRole::Viewer)
            .await,
        11
    );
    let event = bob.event().await;
    assert_eq!(event.seq, 11);
    assert_eq!(event.project_id, one.id);
    assert_eq!(event.entity_type, v1::EntityType::ProjectMember as i32);
    assert_eq!(event.entity_id, "bob");
    assert_eq!(event.action, v1::ChangeAction::Created as i32);
    let (_, s12) = alice.create_item(&one.id, "visible again").await;
    let event = bob.event().await;
    assert_eq!(
        (event.seq, event.project_id.as_str()),
        (s12, one.id.as_str())
    );
    bob.assert_nothing_more(2).await;
}

#[tokio::test]
async fn subscribing_after_the_head_is_invalid_and_delivers_nothing() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let (mut watcher, welcome) = app.client("acme", "alice").await;
    let head = welcome.head_seq;
    assert_eq!(head, 2);
    for from_seq in [head + 10, u64::MAX] {
        assert_eq!(
            watcher.subscribe_to(&[], &[], from_seq).await,
            Err(error(
                v1::ErrorCode::InvalidArgument,
                "from_seq is after the latest change",
                "from_seq"
            ))
        );
    }
    let (mut barrier, _) = app.client("acme", "alice").await;
    assert_eq!(barrier.subscribe(head).await, Ok(head));
    let (_, s3) = alice.create_item(&project.id, "after").await;
    assert_eq!(barrier.event().await.seq, s3);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_delivered_events_and_ok_commands() {
    const ITEMS: usize = 200;
    const SUBSCRIBERS: u64 = 5;
    let app = spawn_app().await;
    // The projects exist before anyone subscribes, and subscribers start at the head, so every
    // event is delivered live (none replayed from the log).
    let mut setup = Vec::new();
    let mut keys = Vec::new();
    for key in ["AAA", "BBB", "CCC"] {
        let (mut writer, _) = app.client("acme", "alice").await;
        let project = writer.create_project(key).await;
        keys.push(project.id);
        setup.push(writer);
    }
    let head = 6;
    let total_items = 3 * ITEMS as u64;
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let (mut subscriber, _) = app.client("acme", "alice").await;
        assert_eq!(subscriber.subscribe(head).await, Ok(head));
        readers.push(tokio::spawn(async move {
            events_until(&mut subscriber, head + total_items)
                .await
                .len() as u64
        }));
    }
    let mut writers = tokio::task::JoinSet::new();
    for (mut writer, project) in setup.into_iter().zip(keys) {
        writers.spawn(async move {
            for i in 0..ITEMS {
                writer.create_item(&project, &format!("item {i}")).await;
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("a writer finished");
    }
    let mut delivered = 0;
    for reader in readers {
        let received = reader.await.expect("a reader finished");
        assert_eq!(received, total_items);
        delivered += received;
    }
    assert_eq!(delivered, SUBSCRIBERS * total_items);

    let (status, body) = app.http_get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(sample(&body, "pm_events_delivered_total"), delivered);
    assert_eq!(
        sample(&body, "pm_requests_total{kind=\"command\",outcome=\"ok\"}"),
        3 + total_items
    );
    assert_eq!(
        sample(
            &body,
            "pm_requests_total{kind=\"subscribe\",outcome=\"ok\"}"
        ),
        SUBSCRIBERS
    );
    assert_eq!(sample(&body, "pm_slow_consumer_disconnects_total"), 0);
    // Read from /proc/self/status: a running server is bigger than a mebibyte.
    assert!(sample(&body, "process_resident_memory_bytes") > 1 << 20);
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
