//! A tenant's read connections: reused at once when given back, never more than the pool's
//! size, safe to give back in the middle of a transaction, closed when left idle, and all
//! closed before the tenant's lock is released.

use std::time::Duration;

use pm_core::TenantId;

use crate::env::TestEnv;
use crate::support::*;

/// Whether `future` is still pending after a moment.
async fn still_pending<F: std::future::Future>(future: &mut std::pin::Pin<&mut F>) -> bool {
    tokio::time::timeout(Duration::from_millis(100), future.as_mut())
        .await
        .is_err()
}

#[tokio::test]
async fn a_connection_given_back_is_the_next_one_handed_out() {
    let env = TestEnv::new();
    let tenant = env.tenant("acme").await;
    let readers = tenant.read_pool();
    for _ in 0..50 {
        let mut reader = readers.acquire().await.unwrap();
        let one: i64 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut *reader)
            .await
            .unwrap();
        assert_eq!(one, 1);
        drop(reader);
        assert_eq!((readers.size(), readers.idle()), (1, 1));
    }
}

#[tokio::test]
async fn no_more_connections_open_than_the_pool_holds() {
    let env = TestEnv::with(|config| config.read_pool_size = 2);
    let tenant = env.tenant("acme").await;
    let readers = tenant.read_pool();
    let first = readers.acquire().await.unwrap();
    let _second = readers.acquire().await.unwrap();
    assert_eq!((readers.size(), readers.idle()), (2, 0));

    let third = readers.acquire();
    tokio::pin!(third);
    assert!(still_pending(&mut third).await, "a third waits");
    drop(first);
    let _third = third.await.unwrap();
    assert_eq!((readers.size(), readers.idle()), (2, 0));
}

async fn projects(conn: &mut sqlx::SqliteConnection) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM projects")
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_reader_given_back_inside_a_transaction_leaves_none_open() {
    let env = TestEnv::with(|config| config.read_pool_size = 1);
    let tenant = env.tenant("acme").await;
    create_project(&tenant, &ALICE, "PM").await;
    let readers = tenant.read_pool();
    {
        let mut reader = readers.acquire().await.unwrap();
        let mut tx = sqlx::Connection::begin(&mut *reader).await.unwrap();
        assert_eq!(projects(&mut tx).await, 1);
        // Dropped unfinished: the transaction and the reader with it.
    }
    // The same connection (the pool holds one) sees the writes since, and begins anew.
    create_project(&tenant, &ALICE, "SECOND").await;
    let mut reader = readers.acquire().await.unwrap();
    let mut tx = sqlx::Connection::begin(&mut *reader).await.unwrap();
    assert_eq!(projects(&mut tx).await, 2);
    tx.rollback().await.unwrap();
    drop(reader);
    assert_eq!(readers.size(), 1);
}

#[tokio::test]
async fn connections_left_idle_are_closed() {
    let env = TestEnv::with(|config| {
        config.read_idle_timeout = Duration::from_millis(200);
    });
    let tenant = env.tenant("acme").await;
    let readers = tenant.read_pool();
    let first = readers.acquire().await.unwrap();
    let second = readers.acquire().await.unwrap();
    drop(first);
    drop(second);
    assert_eq!((readers.size(), readers.idle()), (2, 2));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while readers.size() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} still open",
            readers.size()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(readers.idle(), 0);
    // And the tenant reads on, with a new one.
    let mut reader = readers.acquire().await.unwrap();
    let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM change_log")
        .fetch_one(&mut *reader)
        .await
        .unwrap();
    assert_eq!(head, 0);
}

#[tokio::test]
async fn closing_waits_for_the_readers_handed_out_and_closes_them_all() {
    let env = TestEnv::new();
    let acme = TenantId::parse("acme").unwrap();
    let tenant = env.tenant("acme").await;
    let readers = tenant.read_pool().clone();
    let held = readers.acquire().await.unwrap();
    drop(tenant);

    let close = env.engine.close_idle();
    tokio::pin!(close);
    assert!(
        still_pending(&mut close).await,
        "the close waits for the reader"
    );
    // The tenant is still locked: an operator's exclusive lock is refused.
    let dir = env.engine.config().tenant_dir(&acme);
    assert!(pm_db::sqlite::lock::TenantLock::exclusive(&dir, "acme").is_err());
    drop(held);
    assert_eq!(close.await, 1);
    assert_eq!(readers.size(), 0);
    assert!(readers.acquire().await.is_err(), "closed readers refuse");
    assert!(pm_db::sqlite::lock::TenantLock::exclusive(&dir, "acme").is_ok());
}
