//! Subscribing from a seq: the change log is replayed from there, then events go live, with no
//! gap and no duplicate: after a disconnect, and from a snapshot's `as_of_seq` while another
//! client writes. A `from_seq` after the head is invalid; one before the retained change log is
//! `RESYNC_REQUIRED`, and a resume inside it is complete.

use std::collections::BTreeMap;

use pm_core::TenantId;
use pm_db::Tenant as _;
use pm_proto::v1;
use v1::command::Kind as Cmd;

use crate::support::*;

#[tokio::test]
async fn resume_after_a_disconnect_misses_nothing_and_repeats_nothing() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let (mut watcher, _) = app.client("acme", "alice").await;
    watcher.subscribe(2).await.unwrap();
    alice.create_item(&project.id, "seen").await;
    let seen = watcher.event().await.seq;
    drop(watcher);
    for i in 0..500 {
        alice.create_item(&project.id, &format!("missed {i}")).await;
    }
    let (mut back, _) = app.client("acme", "alice").await;
    let head = back.subscribe(seen).await.unwrap();
    assert_eq!(head, seen + 500);
    for expected in seen + 1..=seen + 500 {
        assert_eq!(back.event().await.seq, expected);
    }
    let (_, live) = alice.create_item(&project.id, "live").await;
    assert_eq!(back.event().await.seq, live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_then_subscribe_converges_while_another_client_writes() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let mut initial = Vec::new();
    for i in 0..10 {
        initial.push(
            alice
                .create_item(&project.id, &format!("initial {i}"))
                .await
                .0,
        );
    }

    let (mut writer, _) = app.client("acme", "alice").await;
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let (snapshot_tx, snapshot_taken) = tokio::sync::oneshot::channel::<()>();
    let project_id = project.id.clone();
    let writing = tokio::spawn(async move {
        let mut started_tx = Some(started_tx);
        let mut snapshot_taken = Some(snapshot_taken);
        let mut last = 0;
        for i in 0..100usize {
            last = writer
                .create_item(&project_id, &format!("written {i}"))
                .await
                .1;
            // Updates and a delete of existing items, so versions and removals matter too.
            // Items 0..=8 are updated once each; item 9 is deleted.
            if i % 10 == 5 && i / 10 < 9 {
                let target = &initial[i / 10];
                let result = writer
                    .command(Cmd::UpdateWorkItem(v1::UpdateWorkItem {
                        id: target.id.clone(),
                        expected_version: target.version,
                        title: Some(format!("updated {i}")),
                        ..Default::default()
                    }))
                    .await
                    .expect("update applies");
                last = result.seq;
            }
            if i == 50 {
                let result = writer
                    .command(Cmd::DeleteWorkItem(v1::DeleteWorkItem {
                        id: initial[9].id.clone(),
                        expected_version: 1,
                    }))
                    .await
                    .expect("delete applies");
                last = result.seq;
            }
            if i == 10 {
                // Let the snapshot happen mid-stream, then keep writing while the reader
                // subscribes and replays: at least 89 changes come after the snapshot.
                let _ = started_tx.take().expect("sent once").send(());
                let _ = snapshot_taken.take().expect("awaited once").await;
            }
        }
        last
    });

    // Snapshot mid-stream.
    started.await.expect("the writer started");
    let (mut reader, _) = app.client("acme", "alice").await;
    let snapshot = all_items(&mut reader, &project.id).await;
    let s = snapshot.as_of_seq;
    let mut state: BTreeMap<String, u64> = snapshot
        .items
        .iter()
        .map(|i| (i.id.clone(), i.version))
        .collect();
    snapshot_tx.send(()).expect("the writer waits");
    let head = reader.subscribe_to(&[], &[], s).await.unwrap();
    assert!(head >= s);

    let last = writing.await.expect("the writer finished");
    assert!(last >= s + 89, "the writer wrote after the snapshot");
    let mut seen = s;
    while seen < last {
        let event = reader.event().await;
        assert_eq!(event.seq, seen + 1, "no gap, no duplicate");
        seen = event.seq;
        match event.change {
            Some(v1::event::Change::WorkItem(item)) => {
                if item.deleted_at.is_some() {
                    state.remove(&item.id);
                } else {
                    state.insert(item.id.clone(), item.version);
                }
            }
            other => panic!("only work item events were written, got {other:?}"),
        }
    }

    let fresh = all_items(&mut reader, &project.id).await;
    assert_eq!(fresh.as_of_seq, last);
    let fresh: BTreeMap<String, u64> = fresh
        .items
        .iter()
        .map(|i| (i.id.clone(), i.version))
        .collect();
    assert_eq!(fresh.len(), 10 + 100 - 1);
    assert_eq!(state, fresh);
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
async fn a_resume_before_the_retained_log_is_resync_required_and_inside_it_is_complete() {
    let app = spawn_app_with(|s| s.changelog.retain_events = 5).await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    for i in 0..10 {
        alice.create_item(&project.id, &format!("item {i}")).await;
    }
    // The pruning pass the writer runs every `prune_interval_secs`, run now.
    let tenant = app
        .sqlite()
        .open_tenant(&TenantId::parse("acme").unwrap())
        .await
        .unwrap();
    assert_eq!(tenant.head_seq(), 12);
    assert_eq!(tenant.prune_changelog(now_ms()).await.unwrap(), 7);
    assert_eq!(tenant.oldest_seq().await.unwrap(), Some(8));
    drop(tenant);

    let (mut late, welcome) = app.client("acme", "alice").await;
    assert_eq!(welcome.head_seq, 12);
    let error = late.subscribe(3).await.unwrap_err();
    assert_eq!(error.code, v1::ErrorCode::ResyncRequired as i32);
    assert_eq!(
        error.message,
        "from_seq is older than the retained change log: take a fresh snapshot (List*, which \
         answers as_of_seq) and subscribe again from its as_of_seq"
    );
    assert_eq!(error.field, "from_seq");
    // From 6, seq 7 (pruned) would be missing: still too old.
    let error = late.subscribe(6).await.unwrap_err();
    assert_eq!(error.code, v1::ErrorCode::ResyncRequired as i32);
    late.assert_nothing_more(1).await;

    let (mut back, _) = app.client("acme", "alice").await;
    assert_eq!(back.subscribe(7).await.unwrap(), 12);
    for expected in 8..=12 {
        assert_eq!(back.event().await.seq, expected);
    }
    let (_, live) = alice.create_item(&project.id, "live").await;
    assert_eq!(live, 13);
    assert_eq!(back.event().await.seq, 13);
    back.assert_nothing_more(2).await;

    let (_, metrics) = app.http_get("/metrics").await;
    assert!(
        metrics.contains("\npm_changelog_pruned_events_total 7\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\npm_requests_total{kind=\"subscribe\",outcome=\"RESYNC_REQUIRED\"} 2\n"),
        "{metrics}"
    );
}
