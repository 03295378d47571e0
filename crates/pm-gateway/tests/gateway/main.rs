//! End-to-end tests of the gateway: a server on port 0, real WebSocket clients.

mod auth;
mod backpressure;
mod fuzz_requests;
mod operations;
mod permissions;
mod requests;
mod retention;
mod security;
mod session_limits;
mod subscriptions;
mod support;
mod tenancy;
mod token_lifetime;

use pm_proto::v1;
use support::*;

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
async fn health_readiness_and_metrics_answer_over_http() {
    let app = spawn_app().await;
    assert_eq!(app.http_get("/healthz").await, (200, "ok\n".into()));
    assert_eq!(app.http_get("/readyz").await, (200, "ready\n".into()));
    let (status, body) = app.http_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE pm_connections_open gauge\npm_connections_open 0\n"),
        "{body}"
    );
    assert_eq!(app.http_get("/nope").await.0, 404);
}

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
