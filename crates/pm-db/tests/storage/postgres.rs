//! The PostgreSQL storage foundation against a real server: each test creates its own
//! database (`pm_test_<random>`) and drops it when it ends, failed or not ([`TestDb`]).
//!
//! The tests run only when `PM_TEST_POSTGRES_URL` names a server whose user may create
//! databases (e.g. `postgres://postgres@127.0.0.1:5432/test`); otherwise each prints
//! [`SKIP`] to stderr (uncaptured, so it shows in the test log) and passes, and CI fails on
//! that line.
//!
//! # Layout
//! - `schema`: tenant schemas created and migrated (again, and concurrently), names that need
//!   quoting or shortening, the constraints, search columns, isolation between tenants, and
//!   an unreachable server.
//! - `seq`: gapless seqs from three pools at once with rollbacks, and the change-log reads.

mod schema;
mod seq;

use std::io::Write;

use pm_core::TenantId;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

/// What a PostgreSQL test prints when it does not run; CI fails if it finds this line.
pub(crate) const SKIP: &str = "skipped: PM_TEST_POSTGRES_URL not set (PostgreSQL storage tests)";

/// A database of one test, dropped (with any connections still open to it) on drop.
pub(crate) struct TestDb {
    /// Where the database was created from, to drop it again.
    admin: PgConnectOptions,
    /// `pm_test_<random>`.
    name: String,
}

impl TestDb {
    /// A fresh database, or `None` (after printing [`SKIP`]) without `PM_TEST_POSTGRES_URL`.
    pub(crate) async fn create() -> Option<TestDb> {
        let Ok(url) = std::env::var("PM_TEST_POSTGRES_URL") else {
            // Straight to stderr, not `eprintln!`: the test harness captures that for
            // passing tests, and CI must see the line.
            let _ = writeln!(std::io::stderr(), "{SKIP}");
            return None;
        };
        let admin: PgConnectOptions = url
            .parse()
            .expect("PM_TEST_POSTGRES_URL is a postgres:// URL");
        let name = format!("pm_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect_with(&admin)
            .await
            .expect("PM_TEST_POSTGRES_URL accepts connections");
        sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
            .execute(&mut conn)
            .await
            .expect("the test user may create databases");
        conn.close().await.expect("closing the admin connection");
        Some(TestDb { admin, name })
    }

    /// A pool of up to `max_connections` on this database: one per simulated process.
    pub(crate) async fn pool(&self, max_connections: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(self.admin.clone().database(&self.name))
            .await
            .expect("the test database accepts connections")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs on the test's runtime, which must not block on itself: the database is
        // dropped from a thread with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(async {
                    let mut conn = PgConnection::connect_with(&admin).await?;
                    // FORCE ends the connections the test's pools still hold.
                    sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
                        .execute(&mut conn)
                        .await?;
                    conn.close().await
                })
                .map_err(|e| e.to_string())
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            // No panic here: the test may already be unwinding.
            Ok(Err(error)) => eprintln!("dropping test database {}: {error}", self.name),
            Err(_) => eprintln!("dropping test database {}: the thread panicked", self.name),
        }
    }
}

/// `id` as a tenant id.
pub(crate) fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).expect("a valid tenant id")
}
