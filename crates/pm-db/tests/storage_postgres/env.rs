//! The storage tests' environment on PostgreSQL: a fresh database per test
//! ([`TestDatabase`], dropped with the environment) and an engine on it.
#![allow(unreachable_pub)]

use std::sync::Arc;

use pm_core::TenantId;
use pm_db::postgres::testing::TestDatabase;
use pm_db::postgres::{PgTenant, PostgresConfig, PostgresEngine};

/// The tenant type the shared tests run against.
pub type TestTenant = PgTenant;

/// A database of its own and an engine on it.
pub struct TestEnv {
    pub engine: PostgresEngine,
    // Dropped after the engine: the database goes with its last connections.
    database: TestDatabase,
}

impl TestEnv {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    pub fn with(configure: impl FnOnce(&mut PostgresConfig)) -> Self {
        let admin_url = std::env::var("PM_TEST_POSTGRES_URL")
            .expect("this suite is built only when PM_TEST_POSTGRES_URL is set");
        let database =
            TestDatabase::create(&admin_url).expect("the test user may create databases");
        let mut config = PostgresConfig::new(database.url());
        config.max_connections = 8;
        configure(&mut config);
        TestEnv {
            engine: PostgresEngine::connect_lazy(config).expect("a valid URL"),
            database,
        }
    }

    /// The URL of this environment's database, for more engines on it.
    pub fn url(&self) -> String {
        self.database.url()
    }

    pub async fn tenant(&self, id: &str) -> Arc<TestTenant> {
        self.engine
            .open_tenant(&TenantId::parse(id).unwrap())
            .await
            .expect("tenant opens")
    }
}
