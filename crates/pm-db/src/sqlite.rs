//! The SQLite engine: each tenant is its own database file, written by one writer task that
//! commits queued commands in groups, and read through a pool of read-only connections.
//!
//! # Layout
//! - [`layout`]: where tenants live on disk, the pragmas of every connection, read-only opens
//!   and schema versions.
//! - [`tenant`]: one open tenant (writer, read pool, checkpointer, event feed).
//! - `queue`: what callers put in a tenant's write queue; [`writer`]: the task that commits
//!   it in groups; `group`: one group's transaction.
//! - `commands`: each command applied inside the writer's transaction (one module per
//!   command group); `records`: rows in and out of SQLite.
//! - `queries`: reads with `as_of_seq`, through the read pool; `pages`: keyset pagination.
//! - `changelog`: the change log's SQL (append, range reads, retention).
//! - `idempotency`: answers to commands sent with an idempotency key.
//! - `checkpoint`: WAL checkpoints off the writer's path.
//! - [`migrations`]: schema migrations, atomic per tenant; `rollout`: online rollouts.
//! - [`backup`], [`transfer`] (export/import), [`inspect`]: operator tools on tenant files.
//! - [`lock`]: the lock file that tells other processes a tenant is open.

pub mod backup;
mod changelog;
mod checkpoint;
mod commands;
mod group;
mod idempotency;
pub mod inspect;
pub mod layout;
pub mod lock;
pub mod migrations;
mod pages;
mod queries;
mod queue;
mod records;
mod rollout;
pub mod tenant;
pub mod transfer;
pub mod writer;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use pm_core::TenantId;

pub use layout::{SqliteConfig, DB_FILE};
pub use tenant::SqliteTenant;
pub use writer::{WriterConfig, WriterStats};

use crate::engine::{Engine, EngineFigures, RolloutReport, SchemaChange, Tenant};
use crate::error::Result;
use crate::registry::Registry;
use migrations::Schema;

/// The SQLite engine over one data directory.
#[derive(Debug)]
pub struct SqliteEngine {
    config: SqliteConfig,
    tenants: Registry<SqliteTenant>,
    schema: Schema,
}

impl SqliteEngine {
    /// An engine over `config.data_dir`; nothing is opened yet. Tenants are brought to the
    /// migrations of `config.migrations_dir`, or to the embedded ones without it (or if it
    /// cannot be used: that is logged and shown in the schema status).
    pub fn new(config: SqliteConfig) -> Self {
        SqliteEngine {
            tenants: Registry::new(config.max_open_tenants),
            schema: Schema::new(config.migrations_dir.clone()),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &SqliteConfig {
        &self.config
    }

    /// Opens (creating and migrating if needed) or returns the open tenant `id`. Holding the
    /// returned `Arc` keeps it from being closed.
    pub async fn open_tenant(&self, id: &TenantId) -> Result<Arc<SqliteTenant>> {
        self.tenants
            .get_or_open(id, || async {
                let tenant = SqliteTenant::open(id.clone(), &self.config, &self.schema).await?;
                self.schema.opened(id);
                if tenant.schema_generation() < self.schema.generation() {
                    // Opened with the migrations of before a rollout that started meanwhile,
                    // which may have missed it: catch up now. A failure is counted and logged,
                    // and the tenant serves on its old schema.
                    let _ = self.migrate_tenant(&tenant).await;
                }
                Ok(tenant)
            })
            .await
    }

    /// Brings `tenant` to the current migrations through its writer; a failure is counted
    /// and logged, and the tenant stays on its old schema.
    async fn migrate_tenant(&self, tenant: &SqliteTenant) -> Result<SchemaChange> {
        let (migrator, generation) = self.schema.current();
        match tenant.migrate(migrator, generation).await {
            Ok(change) => {
                self.schema.applied(&change);
                if change.changed() {
                    tracing::info!(tenant = %tenant.id(), from = change.from, to = change.to, "tenant migrated online");
                }
                Ok(change)
            }
            Err(error) => {
                self.schema.failed(tenant.id(), &error);
                Err(error)
            }
        }
    }

    /// The open tenants, sorted by id.
    fn open_tenants(&self) -> Vec<Arc<SqliteTenant>> {
        let mut open = self.tenants.open_tenants();
        open.sort_by(|a, b| a.id().as_str().cmp(b.id().as_str()));
        open
    }

    /// Figures of schema migrations and rollouts.
    pub fn schema_status(&self) -> crate::engine::SchemaStatus {
        self.schema.status()
    }

    /// Tenants open now.
    pub fn open_count(&self) -> usize {
        self.tenants.len()
    }

    /// Closes every tenant nobody holds; returns how many were closed.
    pub async fn close_idle(&self) -> usize {
        self.tenants.close_idle().await
    }
}

#[async_trait]
impl Engine for SqliteEngine {
    async fn open(&self, id: &TenantId) -> Result<Arc<dyn Tenant>> {
        Ok(self.open_tenant(id).await?)
    }

    fn figures(&self) -> EngineFigures {
        let mut figures = EngineFigures {
            open_tenants: self.tenants.len() as u64,
            schema: self.schema.status(),
            ..EngineFigures::default()
        };
        for tenant in self.tenants.open_tenants() {
            let stats = tenant.writer_stats();
            figures.committed_groups += stats.groups.load(Ordering::Relaxed);
            figures.committed_jobs += stats.jobs.load(Ordering::Relaxed);
            figures.pruned_events += stats.pruned_events.load(Ordering::Relaxed);
        }
        figures
    }

    async fn migrate_online(&self) -> Result<RolloutReport> {
        rollout::run(self).await
    }
}
