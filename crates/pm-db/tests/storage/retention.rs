//! Change-log retention: what pruning removes, what it never removes, and resume beyond it.

use pm_core::time::now_ms;
use std::time::Duration;

use pm_db::{EventFilter, Retention, SqliteTenant, Tenant as _};
use pm_proto::v1;

use crate::support::*;

const DAY: Duration = Duration::from_secs(86_400);

fn retention(max_events: Option<u64>, max_age: Option<Duration>) -> Retention {
    Retention {
        max_events,
        max_age,
        // Long enough that only the explicit passes of a test prune (the writer's first
        // tick, at open, finds an empty log).
        interval: Duration::from_secs(3_600),
    }
}

/// `count` work items in batches of 100; returns the head afterwards.
async fn create_items(tenant: &SqliteTenant, project_id: &str, count: usize) -> u64 {
    let mut left = count;
    while left > 0 {
        let n = left.min(100);
        let batch = v1::Batch {
            atomic: false,
            commands: (0..n)
                .map(|i| {
                    command(new_item(
                        project_id,
                        v1::WorkItemType::Task,
                        &format!("item {i}"),
                        None,
                    ))
                })
                .collect(),
        };
        tenant.batch(&ALICE, batch).await.expect("batch committed");
        // As an idle writer does before the next batch: the batched indexes of the log end
        // at the head of the commit that owed them.
        tenant.run_owed_batches().await.unwrap();
        left -= n;
    }
    tenant.head_seq()
}

/// Every logged seq, in order.
async fn logged_seqs(tenant: &SqliteTenant) -> Vec<u64> {
    let oldest = tenant.oldest_seq().await.unwrap().unwrap_or(1);
    tenant
        .read_events(oldest - 1, None, u32::MAX, &EventFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect()
}

/// The seqs in each batched index of the log (by actor, by project, by entity), and up to
/// where they are complete.
async fn batched_seqs(tenant: &SqliteTenant) -> (Vec<Vec<u64>>, u64) {
    let mut conn = tenant.read_pool().acquire().await.unwrap();
    let mut all = Vec::new();
    for table in ["actors", "projects", "entities"] {
        let sql = format!("SELECT seq FROM change_log_{table} ORDER BY seq");
        let seqs: Vec<i64> = sqlx::query_scalar(&sql)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        all.push(seqs.into_iter().map(|s| s as u64).collect());
    }
    let upto: i64 = sqlx::query_scalar("SELECT seq FROM change_log_batched_upto")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    (all, upto as u64)
}

#[tokio::test]
async fn by_default_everything_is_kept() {
    let (_env, tenant, project) = setup().await;
    let head = create_items(&tenant, &project.id, 10).await;
    // Even a century later.
    let later = now_ms() + 100 * 365 * 86_400_000;
    assert_eq!(tenant.prune_changelog(later).await.unwrap(), 0);
    assert_eq!(logged_seqs(&tenant).await, (1..=head).collect::<Vec<_>>());
    tenant
        .read_events(0, None, 10, &EventFilter::default())
        .await
        .expect("a resume from the very beginning still works");
}

#[tokio::test]
async fn a_count_limit_keeps_exactly_the_newest_events_across_several_chunks() {
    let env = TestEnv::with(|c| c.writer.retention = retention(Some(500), None));
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "PM").await;
    // 2 + 2,500 events: more than two chunks of 1,000 to delete.
    let head = create_items(&tenant, &project.id, 2_500).await;
    assert_eq!(head, 2_502);
    assert_eq!(tenant.prune_changelog(now_ms()).await.unwrap(), 2_002);
    assert_eq!(tenant.oldest_seq().await.unwrap(), Some(2_003));
    assert_eq!(
        logged_seqs(&tenant).await,
        (2_003..=2_502).collect::<Vec<_>>()
    );
    // The batched indexes by actor, project and entity lost the pruned events with them. Their
    // last batch was owed by the commit that crossed seq 2,304 (seqs 2,303 to 2,402).
    let kept: Vec<u64> = (2_003..=2_402).collect();
    assert_eq!(batched_seqs(&tenant).await, (vec![kept; 3], 2_402));
    assert_eq!(
        tenant
            .writer_stats()
            .pruned_events
            .load(std::sync::atomic::Ordering::Relaxed),
        2_002
    );

    // A resume right before the oldest retained event misses nothing: allowed.
    let events = tenant
        .read_events(2_002, None, 10, &EventFilter::default())
        .await
        .unwrap();
    assert_eq!(events.first().map(|e| e.seq), Some(2_003));
    // One before that would miss seq 2,002: RESYNC_REQUIRED.
    let error = tenant
        .read_events(2_001, None, 10, &EventFilter::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, pm_db::Error::ResyncRequired(2_001)),
        "{error:?}"
    );
    assert_eq!(error.to_wire().code, v1::ErrorCode::ResyncRequired as i32);
    let error = tenant
        .read_events(0, None, 10, &EventFilter::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, pm_db::Error::ResyncRequired(0)),
        "{error:?}"
    );

    // Nothing more to do until new events arrive; then exactly the overflow goes.
    assert_eq!(tenant.prune_changelog(now_ms()).await.unwrap(), 0);
    let head = create_items(&tenant, &project.id, 3).await;
    assert_eq!(head, 2_505);
    assert_eq!(tenant.prune_changelog(now_ms()).await.unwrap(), 3);
    assert_eq!(tenant.oldest_seq().await.unwrap(), Some(2_006));
}

#[tokio::test]
async fn the_newest_event_always_stays_so_the_head_survives_pruning_and_reopening() {
    let env = TestEnv::with(|c| c.writer.retention = retention(None, Some(DAY)));
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "PM").await;
    let head = create_items(&tenant, &project.id, 20).await;
    assert_eq!(head, 22);
    // Two days later every event is outside the limit, but the newest one stays.
    let later = now_ms() + 2 * 86_400_000;
    assert_eq!(tenant.prune_changelog(later).await.unwrap(), 21);
    assert_eq!(logged_seqs(&tenant).await, vec![22]);
    assert_eq!(tenant.head_seq(), 22);

    drop(tenant);
    assert_eq!(env.engine.close_idle().await, 1);
    let tenant = env.tenant("acme").await;
    assert_eq!(tenant.head_seq(), 22, "the head is read back from the log");
    let (_, seq) = create_item(&tenant, &ALICE, &project.id, v1::WorkItemType::Task, "next").await;
    assert_eq!(seq, 23, "seqs continue; none is handed out twice");
    assert!(matches!(
        tenant
            .read_events(20, None, 10, &EventFilter::default())
            .await
            .unwrap_err(),
        pm_db::Error::ResyncRequired(20)
    ));
    let events = tenant
        .read_events(21, None, 10, &EventFilter::default())
        .await
        .unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [22, 23]);
}

#[tokio::test]
async fn an_age_limit_removes_only_events_older_than_it() {
    let env = TestEnv::with(|c| c.writer.retention = retention(None, Some(DAY)));
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "PM").await;
    // Three groups of events, each stamped at a later millisecond than the one before.
    let mut ats = Vec::new();
    for round in 0..3 {
        let head = create_items(&tenant, &project.id, 5).await;
        let last = tenant
            .read_events(head - 1, None, 1, &EventFilter::default())
            .await
            .unwrap()[0]
            .decode()
            .unwrap()
            .at;
        ats.push((head, last));
        // The next round must get a later time stamp: wait for the clock to move on.
        while round < 2 && now_ms() <= last {
            tokio::task::yield_now().await;
        }
    }
    let all: Vec<(u64, i64)> = tenant
        .read_events(0, None, 100, &EventFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|e| (e.seq, e.decode().unwrap().at))
        .collect();
    assert_eq!(all.len(), 17);

    // As of one day after the second round's last event, plus 1 ms: everything stamped up
    // to that event is older than a day, everything later is not.
    let (_, second_at) = ats[1];
    let now = second_at + 86_400_000 + 1;
    let expected_gone = all.iter().filter(|(_, at)| *at <= second_at).count() as u64;
    assert_eq!(
        expected_gone, 12,
        "the project, its member and the first two rounds"
    );
    assert_eq!(tenant.prune_changelog(now).await.unwrap(), 12);
    assert_eq!(logged_seqs(&tenant).await, (13..=17).collect::<Vec<_>>());

    // The last round was one group, stamped once. Exactly one day old is still covered...
    let (_, third_at) = ats[2];
    assert!(all[12..].iter().all(|(_, at)| *at == third_at));
    assert_eq!(
        tenant.prune_changelog(third_at + 86_400_000).await.unwrap(),
        0
    );
    // ...one millisecond more is not, except the newest event.
    assert_eq!(
        tenant
            .prune_changelog(third_at + 86_400_000 + 1)
            .await
            .unwrap(),
        4
    );
    assert_eq!(logged_seqs(&tenant).await, vec![17]);
}

#[tokio::test]
async fn with_both_limits_an_event_goes_once_it_is_outside_either() {
    let env = TestEnv::with(|c| c.writer.retention = retention(Some(10), Some(DAY)));
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "PM").await;
    let head = create_items(&tenant, &project.id, 30).await;
    assert_eq!(head, 32);
    // All are young: the count limit alone decides.
    assert_eq!(tenant.prune_changelog(now_ms()).await.unwrap(), 22);
    assert_eq!(tenant.oldest_seq().await.unwrap(), Some(23));
    // All are old: the age limit takes everything but the newest.
    assert_eq!(
        tenant
            .prune_changelog(now_ms() + 2 * 86_400_000)
            .await
            .unwrap(),
        9
    );
    assert_eq!(logged_seqs(&tenant).await, vec![32]);
}

#[tokio::test]
async fn the_writer_prunes_by_itself_every_interval() {
    let env = TestEnv::with(|c| {
        c.writer.retention = Retention {
            max_events: Some(3),
            max_age: None,
            interval: Duration::from_millis(20),
        }
    });
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "PM").await;
    let head = create_items(&tenant, &project.id, 8).await;
    assert_eq!(head, 10);
    // Wait for the writer's own pass (bounded); nobody calls prune here.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tenant.oldest_seq().await.unwrap() != Some(8) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writer did not prune within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(logged_seqs(&tenant).await, vec![8, 9, 10]);
    assert_eq!(
        tenant
            .writer_stats()
            .pruned_events
            .load(std::sync::atomic::Ordering::Relaxed),
        7
    );
    // Commands keep their seqs while the writer prunes.
    let (_, seq) = create_item(
        &tenant,
        &ALICE,
        &project.id,
        v1::WorkItemType::Task,
        "after",
    )
    .await;
    assert_eq!(seq, 11);
}
