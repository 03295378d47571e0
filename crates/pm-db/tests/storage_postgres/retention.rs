//! Change-log retention on PostgreSQL: the writer prunes by itself every interval, a prefix
//! of the log and never the newest event; a position before what is kept needs a resync.

use std::time::Duration;

use pm_db::{Engine as _, EventFilter, Retention, Tenant as _};
use pm_proto::v1;

use crate::env::TestEnv;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_keeps_the_newest_events_and_older_positions_need_a_resync() {
    let env = TestEnv::with(|config| {
        config.writer.retention = Retention {
            max_events: Some(10),
            max_age: None,
            interval: Duration::from_millis(50),
        };
    });
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "RET").await;
    for i in 0..40 {
        create_item(
            &tenant,
            &ALICE,
            &project.id,
            v1::WorkItemType::Task,
            &format!("{i}"),
        )
        .await;
    }
    let head = tenant.head_seq();
    // Pruning runs in the background: wait for it, bounded.
    let mut oldest = None;
    for _ in 0..100 {
        oldest = tenant.oldest_seq().await.expect("reads");
        if oldest == Some(head - 9) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(oldest, Some(head - 9), "the newest 10 events are kept");
    let all = EventFilter::default();
    let kept = tenant
        .read_events(head - 10, None, 100, &all)
        .await
        .expect("kept");
    assert_eq!(
        kept.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (head - 9..=head).collect::<Vec<_>>()
    );
    let gone = tenant
        .read_events(0, None, 100, &all)
        .await
        .expect_err("pruned");
    assert_eq!(code(&gone), v1::ErrorCode::ResyncRequired);
    assert_eq!(tenant.head_seq(), head, "pruning never moves the head");
    assert_eq!(env.engine.figures().pruned_events, head - 10);
    // Writing goes on at head + 1.
    let (_, seq) = create_item(&tenant, &ALICE, &project.id, v1::WorkItemType::Task, "next").await;
    assert_eq!(seq, head + 1);
}
