//! Resuming from the hub's ring of recent events (`limits.resume_ring_bytes`): a recent
//! position is replayed from memory, an older one from the change log (and then memory), a
//! ring too small for a group holds nothing; either way the client gets exactly what it
//! missed, filtered as the log would filter it, then the live events. The hub outlives its
//! subscribers, so a storm of clients that all left finds the ring filled meanwhile.

use std::time::Duration;

use pm_gateway::metrics::Metrics;
use pm_proto::v1;
use v1::client_frame::Body as In;
use v1::command::Kind as Cmd;

use crate::support::*;

/// Creates `count` work items in `project`, a hundred per atomic batch; the last seq.
async fn write_items(client: &mut Client, project: &str, count: usize) -> u64 {
    let mut last = 0;
    let mut written = 0;
    while written < count {
        let n = (count - written).min(100);
        let commands = (written..written + n)
            .map(|i| v1::Command {
                idempotency_key: String::new(),
                kind: Some(create_item(project, &format!("item {i}"))),
            })
            .collect();
        match client
            .request(In::Batch(v1::Batch {
                commands,
                atomic: true,
            }))
            .await
        {
            v1::response::Result::BatchResult(result) => {
                assert_eq!(result.outcomes.len(), n);
                match result.outcomes.last().and_then(|o| o.outcome.as_ref()) {
                    Some(v1::command_outcome::Outcome::CommandResult(r)) => last = r.seq,
                    other => panic!("expected a command result, got {other:?}"),
                }
            }
            other => panic!("expected a batch result, got {other:?}"),
        }
        written += n;
    }
    last
}

/// Receives exactly the events `from+1..=to`, in order.
async fn assert_events(client: &mut Client, from: u64, to: u64) {
    for expected in from + 1..=to {
        assert_eq!(client.event().await.seq, expected, "no gap, no duplicate");
    }
}

/// The client of [`away_while_writing`] comes back from seq 3: it gets exactly `4..=head`,
/// then a change `alice` makes after, live (its seq is returned), and nothing more.
async fn come_back_from_3(app: &TestApp, alice: &mut Client, project: &str, head: u64) -> u64 {
    let (mut back, _) = app.client("acme", "alice").await;
    assert_eq!(back.subscribe(3).await, Ok(head));
    assert_events(&mut back, 3, head).await;
    let (_, live) = alice.create_item(project, "live").await;
    assert_eq!(back.event().await.seq, live);
    back.assert_nothing_more(1).await;
    live
}

/// (served from memory, read the log)
fn resumes(metrics: &Metrics) -> (u64, u64) {
    (
        metrics.resumes_from_memory.get(),
        metrics.resumes_from_log.get(),
    )
}

/// A subscriber, then a client that sees seq 3 and leaves, then `missed` items written; the
/// watcher has received them all (so the hub has too). Returns the server, the writer, the
/// project, the watcher and the head.
async fn away_while_writing(
    configure: impl FnOnce(&mut Settings),
    missed: usize,
) -> (TestApp, Client, String, Client, u64) {
    let app = spawn_app_with(configure).await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let (mut watcher, _) = app.client("acme", "alice").await;
    assert_eq!(watcher.subscribe(2).await, Ok(2));
    let (mut away, _) = app.client("acme", "alice").await;
    assert_eq!(away.subscribe(2).await, Ok(2));
    let (_, seen) = alice.create_item(&project.id, "seen").await;
    assert_eq!((away.event().await.seq, watcher.event().await.seq), (3, 3));
    drop(away);
    let head = write_items(&mut alice, &project.id, missed).await;
    assert_eq!(head, seen + missed as u64);
    assert_events(&mut watcher, seen, head).await;
    (app, alice, project.id, watcher, head)
}

#[tokio::test]
async fn a_recent_resume_is_replayed_from_memory_exactly_then_goes_live() {
    // More than one replay page (1,000 events).
    let (app, mut alice, project, _watcher, head) = away_while_writing(|_| {}, 1_200).await;
    assert_eq!(head, 1_203);
    let metrics = app.app.metrics.clone();
    assert_eq!(resumes(&metrics), (0, 0), "empty replays are not counted");

    let live = come_back_from_3(&app, &mut alice, &project, head).await;
    assert_eq!(resumes(&metrics), (1, 0));

    // The ring holds everything since the hub started (seq 3 was the first group after it).
    let (_, text) = app.http_get("/metrics").await;
    assert!(
        text.contains("\npm_resumes_from_memory_total 1\n"),
        "{text}"
    );
    assert!(text.contains("\npm_resumes_from_log_total 0\n"), "{text}");
    assert!(text.contains("\npm_resume_ring_events 1202\n"), "{text}");
    assert!(
        text.contains("# UNIT pm_resume_ring_bytes bytes\n"),
        "{text}"
    );
    assert_eq!(metrics.ring_events.get(), live - 2);
}

#[tokio::test]
async fn a_resume_older_than_the_ring_reads_the_log_then_the_ring_and_is_exact() {
    const RING: usize = 512 * 1024;
    let (app, mut alice, project, _watcher, head) =
        away_while_writing(|s| s.limits.resume_ring_bytes = RING, 1_500).await;
    let metrics = app.app.metrics.clone();
    // What this test is about: the ring misses the start of the range (4..=1503), but holds
    // where the first log page (1,000 events, through 1003) ends.
    let held = metrics.ring_events.get();
    assert!(
        held < head - 3,
        "the ring holds {held} events: all of the range"
    );
    assert!(
        held > head - 1_003,
        "the ring holds {held} events: not seq 1004"
    );
    assert!(metrics.ring_bytes.get() <= RING as u64);

    come_back_from_3(&app, &mut alice, &project, head).await;
    assert_eq!(resumes(&metrics), (0, 1));
    assert!(metrics.ring_bytes.get() <= RING as u64);
}

#[tokio::test]
async fn a_ring_smaller_than_one_event_holds_nothing_and_resumes_read_the_log() {
    let (app, mut alice, project, _watcher, head) =
        away_while_writing(|s| s.limits.resume_ring_bytes = 1, 50).await;
    let metrics = app.app.metrics.clone();
    assert_eq!(
        (metrics.ring_events.get(), metrics.ring_bytes.get()),
        (0, 0)
    );

    come_back_from_3(&app, &mut alice, &project, head).await;
    assert_eq!(resumes(&metrics), (0, 1));
}

#[tokio::test]
async fn a_hub_outlives_its_subscribers_so_clients_that_all_left_resume_from_memory() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let (mut first, _) = app.client("acme", "alice").await;
    assert_eq!(first.subscribe(2).await, Ok(2));
    let (_, seen) = alice.create_item(&project.id, "seen").await;
    assert_eq!(first.event().await.seq, seen);
    // The tenant's last subscriber leaves (answered once its registration is dropped).
    match first.request(In::Unsubscribe(v1::Unsubscribe {})).await {
        v1::response::Result::UnsubscribeResult(_) => {}
        other => panic!("expected the unsubscribe result, got {other:?}"),
    }
    let head = write_items(&mut alice, &project.id, 20).await;
    // Nobody is subscribed while these commit. A barrier subscriber (empty replay) and one
    // more event make sure the hub has seen them all.
    let (mut barrier, _) = app.client("acme", "alice").await;
    assert_eq!(barrier.subscribe(head).await, Ok(head));
    let (_, after) = alice.create_item(&project.id, "after").await;
    assert_eq!(barrier.event().await.seq, after);

    let (mut back, _) = app.client("acme", "alice").await;
    assert_eq!(back.subscribe(seen).await, Ok(after));
    assert_events(&mut back, seen, after).await;
    back.assert_nothing_more(1).await;
    assert_eq!(resumes(&app.app.metrics), (1, 0));
}

/// Closes the clients' WebSockets, then waits (bounded) until the server has ended every
/// connection, so that no session holds a tenant any more.
async fn close_all(app: &TestApp, clients: Vec<Client>) {
    for mut client in clients {
        client
            .ws
            .close(None)
            .await
            .expect("the close frame is sent");
        assert!(matches!(client.recv().await, Received::Closed(_)));
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        while open_connections(app) != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the server ended the connection");
}

#[tokio::test]
async fn a_hub_does_not_keep_its_tenant_open_and_its_ring_goes_with_the_tenant() {
    let app = spawn_app_with(|s| s.limits.max_open_tenants = 1).await;
    let metrics = app.app.metrics.clone();
    let (mut alice, _) = app.client("a", "alice").await;
    let project = alice.create_project("PM").await;
    let (mut watcher, _) = app.client("a", "alice").await;
    assert_eq!(watcher.subscribe(2).await, Ok(2));
    let (_, seen) = alice.create_item(&project.id, "kept in memory").await;
    assert_eq!(watcher.event().await.seq, seen);
    assert_eq!(metrics.ring_events.get(), 1);
    close_all(&app, vec![alice, watcher]).await;

    // Tenant `a` has a hub but no session: it is idle, so tenant `b` may take its place
    // (were it held, this hello would be refused: one tenant open at most, all in use).
    let (mut bob, _) = app.client("b", "bob").await;
    let other = bob.create_project("PM").await;
    // Starting b's hub lets go of a's (its tenant is gone), ring and all.
    let (mut watcher, _) = app.client("b", "bob").await;
    assert_eq!(watcher.subscribe(2).await, Ok(2));
    assert_eq!(metrics.ring_events.get(), 0);
    let (_, b3) = bob.create_item(&other.id, "in b").await;
    assert_eq!(watcher.event().await.seq, b3);
    assert_eq!(metrics.ring_events.get(), 1);
    close_all(&app, vec![bob, watcher]).await;

    // `a` opened again: a new hub (the old one's feed ended with the old tenant), resumes
    // from the log, then delivers live.
    let (mut back, _) = app.client("a", "alice").await;
    let (mut writer, _) = app.client("a", "alice").await;
    assert_eq!(back.subscribe(seen - 1).await, Ok(seen));
    assert_eq!(back.event().await.seq, seen);
    let (_, live) = writer.create_item(&project.id, "live").await;
    assert_eq!(back.event().await.seq, live);
    back.assert_nothing_more(1).await;
    assert_eq!(resumes(&metrics), (0, 1));
}

/// The replays of the same history under four subscriptions: the seqs each delivered, up to
/// and including the live events that end them; and (from memory, from the log).
///
/// History: projects A (3..) and B; bob is a member of A; then, from position `n`: an item in
/// A, an item in B, bob added to B, an item in B, bob removed from A, an item in A, an item
/// in B, B renamed. As of the head bob is a member of B only, so a replay from `n` sends B's
/// events (including those before he joined) and none of A's.
async fn filtered_replays(ring_bytes: usize) -> (Vec<Vec<u64>>, (u64, u64)) {
    let app = spawn_app_with(|s| s.limits.resume_ring_bytes = ring_bytes).await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let a = alice.create_project("AA").await;
    let b = alice.create_project("BB").await;
    alice
        .add_member(&a.id, "bob", v1::ProjectRole::Viewer)
        .await;
    let (mut watcher, welcome) = app.client("acme", "alice").await;
    let n = welcome.head_seq;
    assert_eq!(n, 5);
    assert_eq!(watcher.subscribe(n).await, Ok(n));

    alice.create_item(&a.id, "a1").await;
    alice.create_item(&b.id, "b1").await;
    alice
        .add_member(&b.id, "bob", v1::ProjectRole::Viewer)
        .await;
    alice.create_item(&b.id, "b2").await;
    let removed = alice
        .command(Cmd::RemoveMember(v1::RemoveMember {
            project_id: a.id.clone(),
            user_id: "bob".into(),
            expected_version: 1,
        }))
        .await
        .expect("bob removed from A")
        .seq;
    assert_eq!(removed, 10);
    alice.create_item(&a.id, "a2").await;
    alice.create_item(&b.id, "b3").await;
    let head = alice
        .command(Cmd::UpdateProject(v1::UpdateProject {
            id: b.id.clone(),
            expected_version: b.version,
            name: Some("renamed".into()),
            ..Default::default()
        }))
        .await
        .expect("B renamed")
        .seq;
    assert_eq!(head, 13);
    assert_events(&mut watcher, n, head).await;

    use v1::EntityType as T;
    let subscriptions: [(Vec<&str>, Vec<T>); 4] = [
        (vec![], vec![]),
        (vec![b.id.as_str()], vec![]),
        (vec![], vec![T::WorkItem]),
        (vec![b.id.as_str()], vec![T::ProjectMember]),
    ];
    let mut clients = Vec::new();
    for (projects, kinds) in &subscriptions {
        let (mut bob, _) = app.client("acme", "bob").await;
        assert_eq!(bob.subscribe_to(projects, kinds, n).await, Ok(head));
        clients.push(bob);
    }
    // Live events that end each stream: an item in B, then carol added to B.
    let (_, item) = alice.create_item(&b.id, "b4").await;
    let member = alice
        .add_member(&b.id, "carol", v1::ProjectRole::Viewer)
        .await;
    let mut delivered = Vec::new();
    for ((_, kinds), mut bob) in subscriptions.iter().zip(clients) {
        let last = if kinds == &[T::WorkItem] {
            item
        } else {
            member
        };
        let seqs = seqs(&events_until(&mut bob, last).await);
        bob.assert_nothing_more(1).await;
        delivered.push(seqs);
    }
    (delivered, resumes(&app.app.metrics))
}

#[tokio::test]
async fn filters_and_membership_changes_replay_the_same_from_memory_and_from_the_log() {
    let (from_memory, memory_counts) = filtered_replays(8 * 1024 * 1024).await;
    let (from_log, log_counts) = filtered_replays(0).await;
    assert_eq!((memory_counts, log_counts), ((4, 0), (0, 4)));
    assert_eq!(from_memory, from_log);
    assert_eq!(
        from_memory,
        vec![
            vec![7, 8, 9, 12, 13, 14, 15],
            vec![7, 8, 9, 12, 13, 14, 15],
            vec![7, 9, 12, 14],
            vec![8, 15],
        ]
    );
}
