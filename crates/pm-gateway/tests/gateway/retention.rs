//! Change-log retention over the wire: `RESYNC_REQUIRED` before the retained window, a normal
//! resume inside it.

use pm_core::TenantId;
use pm_proto::v1;

use crate::support::*;

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
        .app
        .registry
        .open(&TenantId::parse("acme").unwrap())
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
