//! The SQLite engine: tenants opened on demand (created and migrated as needed), bounded,
//! and the engine's side of online schema rollouts.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use pm_core::TenantId;

use super::config::SqliteConfig;
use super::health::Safeguards;
use super::migrations::Schema;
use super::rollout;
use super::tenant::SqliteTenant;
use crate::engine::{Engine, EngineFigures, RolloutReport, SchemaStatus, Tenant};
use crate::error::{Error, Result};
use crate::registry::Registry;

/// The SQLite engine over one data directory.
#[derive(Debug)]
pub struct SqliteEngine {
    config: SqliteConfig,
    tenants: Registry<SqliteTenant>,
    schema: Schema,
    safeguards: Arc<Safeguards>,
}

impl SqliteEngine {
    /// An engine over `config.data_dir`; nothing is opened yet. Tenants are brought to the
    /// migrations of `config.migrations_dir`, or to the embedded ones without it (or if it
    /// cannot be used: that is logged and shown in the schema status).
    pub fn new(config: SqliteConfig) -> Self {
        SqliteEngine {
            tenants: Registry::new(config.max_open_tenants),
            schema: Schema::new(config.migrations_dir.clone()),
            safeguards: Arc::new(Safeguards::new(config.max_tenant_bytes)),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &SqliteConfig {
        &self.config
    }

    /// Opens (creating and migrating if needed) or returns the open tenant `id`. Holding the
    /// returned `Arc` keeps it from being closed.
    ///
    /// A tenant whose database was found damaged is quarantined: opening it is refused with
    /// an error that names the remedy, until its database file has been replaced (restored).
    pub async fn open_tenant(&self, id: &TenantId) -> Result<Arc<SqliteTenant>> {
        loop {
            if let Some(refusal) = self.safeguards.quarantine.refusal(id) {
                return Err(refusal);
            }
            let tenant = self.tenants.get_or_open(id, || self.open_new(id)).await?;
            if !tenant.is_damaged() {
                return Ok(tenant);
            }
            // Quarantined while open: it is served no more; either it is still damaged (the
            // refusal above), or its file was replaced meanwhile and it opens anew.
            self.tenants.forget(id, &tenant);
        }
    }

    async fn open_new(&self, id: &TenantId) -> Result<Arc<SqliteTenant>> {
        let opened =
            SqliteTenant::open(id.clone(), &self.config, &self.schema, &self.safeguards).await;
        let tenant = match opened {
            Ok(tenant) => tenant,
            Err(error @ Error::Damaged { .. }) => {
                let error = error.for_tenant(id.as_str());
                if let Error::Damaged { detail, .. } = &error {
                    self.safeguards
                        .quarantine
                        .add(id, &self.config.db_file(id), detail);
                }
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        self.schema.opened(id);
        if tenant.schema_generation() < self.schema.generation() {
            // Opened with the migrations of before a rollout that started meanwhile, which may
            // have missed it: catch up now. A failure is counted and logged, and the tenant
            // serves on its old schema.
            let _ = rollout::migrate_tenant(&self.schema, &tenant).await;
        }
        Ok(tenant)
    }

    /// Changes the largest size a tenant's database may grow to (`None`: no limit): open
    /// tenants apply it at their next write.
    pub fn set_max_tenant_bytes(&self, bytes: Option<u64>) {
        self.safeguards.size_limit.set(bytes);
    }

    /// The open tenants, sorted by id.
    fn open_tenants(&self) -> Vec<Arc<SqliteTenant>> {
        let mut open = self.tenants.open_tenants();
        open.sort_by(|a, b| a.id().as_str().cmp(b.id().as_str()));
        open
    }

    /// Figures of schema migrations and rollouts.
    pub fn schema_status(&self) -> SchemaStatus {
        self.schema.status()
    }

    /// Tenants open now.
    pub fn open_count(&self) -> usize {
        self.tenants.len()
    }
}

#[async_trait]
impl Engine for SqliteEngine {
    async fn open(&self, id: &TenantId) -> Result<Arc<dyn Tenant>> {
        Ok(self.open_tenant(id).await?)
    }

    async fn close_idle(&self) -> usize {
        self.tenants.close_idle().await
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
            if tenant.storage_degraded() {
                figures.degraded_tenants += 1;
            }
        }
        figures.quarantined_tenants = self.safeguards.quarantine.len() as u64;
        figures.storage_faults = self.safeguards.storage_faults.load(Ordering::Relaxed);
        figures
    }

    async fn migrate_online(&self) -> Result<RolloutReport> {
        rollout::run(&self.schema, &self.config, || self.open_tenants()).await
    }
}
