//! Gapless seqs across processes: the counter row orders every writer of a tenant, whichever
//! pool it writes through, and a rolled-back transaction gives its seqs back.

use std::collections::BTreeMap;

use pm_core::kinds::{ChangeAction, EntityKind};
use pm_db::postgres::{
    append_events, begin_tenant, head_seq, oldest_seq, open_tenant_schema, read_events, NewEvent,
};
use pm_db::{Error, StoredEvent};
use sqlx::PgPool;

use super::{tenant, TestDb};

const NODES: usize = 3;
const TASKS: usize = 4;
const TRANSACTIONS: usize = 100;

/// The events of one transaction, each naming it: `node/task/transaction/index`.
fn events_of(label: &str, count: usize) -> Vec<NewEvent> {
    (0..count)
        .map(|i| NewEvent {
            at: 1_000 + i as i64,
            actor_id: "alice".into(),
            project_id: "p".into(),
            kind: EntityKind::WorkItem,
            entity_id: label.to_owned(),
            action: ChangeAction::Updated,
            event: format!("{label}/{i}").into_bytes(),
        })
        .collect()
}

/// A committed transaction: its label, first seq and number of events.
type Committed = (String, u64, usize);

/// One writer: `TRANSACTIONS` transactions of 1 to 3 events; those with `t % 7 == 3` rolled back
/// after its append. Returns what it committed.
async fn writer(pool: PgPool, node: usize, task: usize) -> Vec<Committed> {
    let acme = tenant("acme");
    let mut committed = Vec::new();
    for t in 0..TRANSACTIONS {
        let label = format!("{node}/{task}/{t}");
        let count = 1 + (node + task + t) % 3;
        let mut tx = begin_tenant(&pool, &acme).await.expect("begin");
        let first = append_events(&mut tx, &events_of(&label, count))
            .await
            .expect("append");
        if t % 7 == 3 {
            tx.rollback().await.expect("rollback");
        } else {
            tx.commit().await.expect("commit");
            committed.push((label, first, count));
        }
    }
    committed
}

/// Every event of `tenant_id`, read in pages.
async fn read_all(pool: &PgPool, tenant_id: &str) -> Vec<StoredEvent> {
    let mut tx = begin_tenant(pool, &tenant(tenant_id)).await.expect("begin");
    let mut all = Vec::new();
    loop {
        let after = all.last().map_or(0, |e: &StoredEvent| e.seq);
        let page = read_events(&mut tx, after, 500).await.expect("read");
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seqs_are_gapless_across_three_pools_with_rollbacks() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let mut pools = Vec::new();
    for _ in 0..NODES {
        // One pool per simulated process, a connection for each of its writers.
        pools.push(db.pool(TASKS as u32).await);
    }
    open_tenant_schema(&pools[0], &tenant("acme"))
        .await
        .expect("open");

    let mut writers = tokio::task::JoinSet::new();
    for (node, pool) in pools.iter().enumerate() {
        for task in 0..TASKS {
            writers.spawn(writer(pool.clone(), node, task));
        }
    }
    let mut committed: Vec<Committed> = Vec::new();
    while let Some(result) = writers.join_next().await {
        committed.extend(result.expect("a writer panicked"));
    }

    // 1,200 transactions; 14 of each writer's 100 (t = 3, 10, ..., 94) rolled back.
    assert_eq!(committed.len(), NODES * TASKS * 86);
    let total: usize = committed.iter().map(|(_, _, n)| n).sum();
    // The sum of `1 + (node + task + t) % 3` over the committed transactions.
    assert_eq!(total, 2064);
    let events = read_all(&pools[1], "acme").await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());

    let by_seq: BTreeMap<u64, &StoredEvent> = events.iter().map(|e| (e.seq, e)).collect();
    let mut covered = 0;
    for (label, first, count) in &committed {
        for i in 0..*count {
            let event = by_seq[&(first + i as u64)];
            assert_eq!(
                event.event,
                format!("{label}/{i}").as_bytes(),
                "seq {}",
                event.seq
            );
            covered += 1;
        }
    }
    // Every event belongs to a committed transaction: none of a rolled-back one is left.
    assert_eq!(covered, total);

    let mut tx = begin_tenant(&pools[2], &tenant("acme"))
        .await
        .expect("begin");
    assert_eq!(head_seq(&mut tx).await.expect("head"), total as u64);
    assert_eq!(oldest_seq(&mut tx).await.expect("oldest"), Some(1));
}

#[tokio::test]
async fn reads_page_in_order_and_refuse_pruned_or_future_positions() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let pool = db.pool(2).await;
    let acme = tenant("acme");
    open_tenant_schema(&pool, &acme).await.expect("open");

    let mut tx = begin_tenant(&pool, &acme).await.expect("begin");
    assert_eq!(head_seq(&mut tx).await.expect("head"), 0);
    assert_eq!(oldest_seq(&mut tx).await.expect("oldest"), None);
    assert!(read_events(&mut tx, 0, 10).await.expect("read").is_empty());
    let error = append_events::<NewEvent>(&mut tx, &[])
        .await
        .expect_err("no events");
    assert!(matches!(error, Error::InvalidArgument { ref field, .. } if field == "events"));
    assert_eq!(
        append_events(&mut tx, &events_of("a", 3)).await.expect("a"),
        1
    );
    assert_eq!(
        append_events(&mut tx, &events_of("b", 2)).await.expect("b"),
        4
    );
    tx.commit().await.expect("commit");

    let mut tx = begin_tenant(&pool, &acme).await.expect("begin");
    let page = read_events(&mut tx, 1, 2).await.expect("page");
    let seqs: Vec<u64> = page.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [2, 3]);
    assert_eq!(page[0].event, b"a/1".as_slice());
    assert_eq!(page[0].kind, EntityKind::WorkItem);
    assert_eq!(page[0].project_id, "p");
    assert!(read_events(&mut tx, 5, 10)
        .await
        .expect("at head")
        .is_empty());
    let error = read_events(&mut tx, 6, 10)
        .await
        .expect_err("beyond the head");
    assert!(matches!(error, Error::InvalidArgument { ref field, .. } if field == "from_seq"));

    // Retention removes a prefix; the counter stays the head.
    sqlx::query("DELETE FROM change_log WHERE seq <= 2")
        .execute(&mut *tx)
        .await
        .expect("prune");
    assert_eq!(oldest_seq(&mut tx).await.expect("oldest"), Some(3));
    assert_eq!(head_seq(&mut tx).await.expect("head"), 5);
    assert!(matches!(
        read_events(&mut tx, 1, 10).await,
        Err(Error::ResyncRequired(1))
    ));
    let rest: Vec<u64> = read_events(&mut tx, 2, 10)
        .await
        .expect("from the oldest")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(rest, [3, 4, 5]);
}
