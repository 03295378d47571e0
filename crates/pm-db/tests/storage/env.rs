//! The storage tests' environment on SQLite: a fresh data directory and engine per test.
#![allow(unreachable_pub)]

use std::sync::Arc;

use pm_core::TenantId;
use pm_db::{SqliteConfig, SqliteEngine, SqliteTenant};

/// The tenant type the shared tests run against.
pub type TestTenant = SqliteTenant;

/// A fresh data directory and engine.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub engine: SqliteEngine,
}

impl TestEnv {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    pub fn with(configure: impl FnOnce(&mut SqliteConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = SqliteConfig::new(dir.path());
        configure(&mut config);
        TestEnv {
            engine: SqliteEngine::new(config),
            dir,
        }
    }

    pub async fn tenant(&self, id: &str) -> Arc<TestTenant> {
        self.engine
            .open_tenant(&TenantId::parse(id).unwrap())
            .await
            .expect("tenant opens")
    }
}
