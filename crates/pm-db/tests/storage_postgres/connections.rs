//! A writer's connection: kept between the groups of a busy tenant (so its statements are not
//! planned again for another tenant's `search_path`), given back when the tenant goes quiet,
//! and never kept from someone who finds the pool full.

use std::time::Duration;

use pm_proto::v1;
use pm_proto::v1::command::Kind as C;
use sqlx::PgPool;

use crate::env::TestEnv;
use crate::support::*;

/// Connections of `pool` taken and not given back.
fn in_use(pool: &PgPool) -> u32 {
    pool.size() - pool.num_idle() as u32
}

/// Waits until `pool` has exactly `count` connections taken (sqlx gives a connection back to
/// the pool in a task of its own, a moment after it is dropped).
async fn settles_at(pool: &PgPool, count: u32, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while in_use(pool) != count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {} in use",
            in_use(pool)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_writer_keeps_its_connection_while_busy_and_gives_it_back() {
    let env = TestEnv::with(|config| config.max_connections = 2);
    let pool = env.engine.pool();
    let tenant = env.tenant("acme").await;
    settles_at(pool, 0, "opened").await;
    let project = create_project(&tenant, &ALICE, "OPS").await;
    // Answered after the group: the writer still holds the group's connection.
    assert_eq!(in_use(pool), 1, "kept for the next group");

    // Quiet: given back.
    settles_at(
        pool,
        0,
        "the writer kept its connection while the tenant was quiet",
    )
    .await;

    // Busy again, and the other connection taken: a read finds the pool full and gets the
    // writer's connection.
    create_item(&tenant, &ALICE, &project.id, v1::WorkItemType::Task, "one").await;
    assert_eq!(in_use(pool), 1);
    let other = pool.acquire().await.expect("the pool's second connection");
    assert_eq!((pool.size(), pool.num_idle()), (2, 0), "the pool is full");
    let items = list_items(&tenant, &ALICE, &project.id, 10, "").await;
    assert_eq!(items.items.len(), 1);
    drop(other);

    // A writer that may not keep one (none would be left to spare) still writes, and gives
    // it back.
    let _taken = pool.acquire().await.expect("a connection");
    settles_at(pool, 1, "the test's connection").await;
    let result = exec(
        &tenant,
        &ALICE,
        C::CreateWorkItem(v1::CreateWorkItem {
            project_id: project.id.clone(),
            item_type: v1::WorkItemType::Task.into(),
            title: "two".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("written with the pool's other connection");
    assert_eq!(result.seq, tenant.head_seq());
    settles_at(pool, 1, "only the test's: the writer gave its back").await;
}
