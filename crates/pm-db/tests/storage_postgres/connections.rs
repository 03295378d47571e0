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

#[tokio::test]
async fn a_writer_keeps_its_connection_while_busy_and_gives_it_back() {
    let env = TestEnv::with(|config| config.max_connections = 2);
    let pool = env.engine.pool();
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "OPS").await;
    // Answered after the group: the writer still holds the group's connection.
    assert_eq!(in_use(pool), 1, "kept for the next group");

    // Quiet: given back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while in_use(pool) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writer kept its connection while the tenant was quiet"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Busy again, and the other connection taken: a read finds the pool full and gets the
    // writer's connection.
    create_item(&tenant, &ALICE, &project.id, v1::WorkItemType::Task, "one").await;
    assert_eq!(in_use(pool), 1);
    let other = pool.acquire().await.expect("the pool's second connection");
    assert_eq!((pool.size(), pool.num_idle()), (2, 0), "the pool is full");
    let items = list_items(&tenant, &ALICE, &project.id, 10, "").await;
    assert_eq!(items.items.len(), 1);
    drop(other);

    // A writer that may not keep one (none would be left to spare) still writes.
    let _taken = pool.acquire().await.expect("a connection");
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
    assert_eq!(in_use(pool), 1, "only the test's: the writer gave its back");
}
