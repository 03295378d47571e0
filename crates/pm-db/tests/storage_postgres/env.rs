//! The storage tests' environment on PostgreSQL: a fresh database per test
//! (`pm_test_<random>`, dropped with the environment) and an engine on it.
#![allow(unreachable_pub)]

use std::sync::Arc;

use pm_core::TenantId;
use pm_db::postgres::{PgTenant, PostgresConfig, PostgresEngine};
use sqlx::{Connection, PgConnection};

/// The tenant type the shared tests run against.
pub type TestTenant = PgTenant;

/// A database of its own and an engine on it.
pub struct TestEnv {
    pub engine: PostgresEngine,
    admin_url: String,
    name: String,
}

/// Runs `work` on a runtime of its own, in a thread: environments are made and dropped
/// inside tests' runtimes, which must not block on themselves.
fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> futures::future::BoxFuture<'static, sqlx::Result<T>> + Send + 'static,
) -> sqlx::Result<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(work())
    })
    .join()
    .expect("the setup thread does not panic")
}

/// `url` naming database `name` instead of its own.
fn with_database(url: &str, name: &str) -> String {
    let (url, params) = url
        .split_once('?')
        .map_or((url, None), |(u, p)| (u, Some(p)));
    let authority = url.find("://").map_or(0, |i| i + 3);
    let base = match url[authority..].find('/') {
        Some(slash) => &url[..authority + slash],
        None => url,
    };
    match params {
        Some(params) => format!("{base}/{name}?{params}"),
        None => format!("{base}/{name}"),
    }
}

impl TestEnv {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    pub fn with(configure: impl FnOnce(&mut PostgresConfig)) -> Self {
        let admin_url = std::env::var("PM_TEST_POSTGRES_URL")
            .expect("this suite is built only when PM_TEST_POSTGRES_URL is set");
        let name = format!("pm_test_{}", uuid::Uuid::new_v4().simple());
        let (url, create) = (admin_url.clone(), format!(r#"CREATE DATABASE "{name}""#));
        blocking(move || {
            Box::pin(async move {
                let mut conn = PgConnection::connect(&url).await?;
                sqlx::query(&create).execute(&mut conn).await?;
                conn.close().await
            })
        })
        .expect("the test user may create databases");
        let mut config = PostgresConfig::new(with_database(&admin_url, &name));
        config.max_connections = 8;
        configure(&mut config);
        TestEnv {
            engine: PostgresEngine::connect_lazy(config).expect("a valid URL"),
            admin_url,
            name,
        }
    }

    /// The URL of this environment's database, for more engines on it.
    pub fn url(&self) -> String {
        with_database(&self.admin_url, &self.name)
    }

    pub async fn tenant(&self, id: &str) -> Arc<TestTenant> {
        self.engine
            .open_tenant(&TenantId::parse(id).unwrap())
            .await
            .expect("tenant opens")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let drop_sql = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
        let dropped = blocking(move || {
            Box::pin(async move {
                let mut conn = PgConnection::connect(&url).await?;
                // FORCE ends the connections the engine's pool still holds.
                sqlx::query(&drop_sql).execute(&mut conn).await?;
                conn.close().await
            })
        });
        if let Err(error) = dropped {
            // No panic here: the test may already be unwinding.
            eprintln!("dropping test database {}: {error}", self.name);
        }
    }
}

#[test]
fn database_urls_are_rewritten() {
    assert_eq!(
        with_database("postgres://u@h:5432/test", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    assert_eq!(
        with_database("postgres://u@h/db?sslmode=disable", "x"),
        "postgres://u@h/x?sslmode=disable"
    );
}
