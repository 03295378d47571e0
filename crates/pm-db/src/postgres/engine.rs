//! The PostgreSQL engine: every tenant a schema of one database, shared by every node.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pm_core::TenantId;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use super::connections::Connections;
use super::tenant::PgTenant;
use super::{open_tenant_schema, schema_version, PgResultExt, PG_MIGRATOR};
use crate::engine::{Engine, EngineFigures, RolloutReport, SchemaChange, SchemaStatus, Tenant};
use crate::error::Result;
use crate::registry::Registry;
use crate::sqlite::WriterConfig;

/// Settings of the PostgreSQL engine.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// `postgres://user@host:port/database`.
    pub url: String,
    /// Connections to the database this node keeps at most (writers and reads share them).
    pub max_connections: u32,
    /// How long a request waits for a free connection before it is `UNAVAILABLE`.
    pub acquire_timeout: Duration,
    /// Tenants open on this node at once; the least recently used idle one is closed first.
    pub max_open_tenants: usize,
    /// The writers' queue, groups and batch limit.
    pub writer: WriterConfig,
}

impl PostgresConfig {
    /// The defaults, for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            max_open_tenants: 1_000,
            writer: WriterConfig::default(),
        }
    }
}

/// Tenants in PostgreSQL schemas.
#[derive(Debug)]
pub struct PostgresEngine {
    /// The node's pool, as its tenants take from it.
    connections: Connections,
    tenants: Registry<PgTenant>,
    config: PostgresConfig,
}

impl PostgresEngine {
    /// Connects to the database, failing at once if it cannot be reached.
    pub async fn connect(config: PostgresConfig) -> Result<Self> {
        let engine = Self::connect_lazy(config)?;
        engine.connections.pool().acquire().await.pg()?;
        Ok(engine)
    }

    /// The engine without connecting yet: connections are opened when first needed (a
    /// database that cannot be reached then is `UNAVAILABLE`). Fails only on a malformed URL.
    pub fn connect_lazy(config: PostgresConfig) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(2))
            .acquire_timeout(config.acquire_timeout)
            .connect_lazy(&config.url)
            .pg()?;
        Ok(PostgresEngine {
            connections: Connections::new(pool),
            tenants: Registry::new(config.max_open_tenants),
            config,
        })
    }

    /// The pool, for operators' tools and tests.
    pub fn pool(&self) -> &PgPool {
        self.connections.pool()
    }

    /// Opens the tenant (creating its schema if needed) or returns it if open.
    pub async fn open_tenant(&self, id: &TenantId) -> Result<Arc<PgTenant>> {
        self.tenants
            .get_or_open(id, || async {
                let tenant = PgTenant::open(
                    self.connections.clone(),
                    id.clone(),
                    self.config.writer.clone(),
                )
                .await?;
                Ok(Arc::new(tenant))
            })
            .await
    }

    fn target_version() -> i64 {
        PG_MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
    }
}

#[async_trait]
impl Engine for PostgresEngine {
    async fn open(&self, id: &TenantId) -> Result<Arc<dyn Tenant>> {
        Ok(self.open_tenant(id).await?)
    }

    fn figures(&self) -> EngineFigures {
        let open = self.tenants.open_tenants();
        let sum = |f: fn(&PgTenant) -> u64| open.iter().map(|t| f(t)).sum();
        EngineFigures {
            open_tenants: open.len() as u64,
            committed_groups: sum(|t| t.stats.groups.load(Ordering::Relaxed)),
            committed_jobs: sum(|t| t.stats.jobs.load(Ordering::Relaxed)),
            pruned_events: sum(|t| t.stats.pruned.load(Ordering::Relaxed)),
            schema: SchemaStatus {
                target_version: Self::target_version(),
                ..SchemaStatus::default()
            },
            ..EngineFigures::default()
        }
    }

    /// The migrations are embedded in the binary, so a running node has nothing new to roll
    /// out: each open tenant's schema is checked against them (and brought to them if
    /// another node's older binary left it behind).
    async fn migrate_online(&self) -> Result<RolloutReport> {
        let target = Self::target_version();
        let mut report = RolloutReport {
            target_version: target,
            ..RolloutReport::default()
        };
        let open = self.tenants.open_tenants();
        for (i, tenant) in open.iter().enumerate() {
            let id = tenant.id().to_string();
            let migrated = async {
                let from = schema_version(self.connections.pool(), tenant.id()).await?;
                open_tenant_schema(self.connections.pool(), tenant.id()).await?;
                let to = schema_version(self.connections.pool(), tenant.id()).await?;
                Ok::<_, crate::Error>(SchemaChange { from, to })
            };
            match migrated.await {
                Ok(change) => report.migrated.push((id, change)),
                Err(error) => {
                    report.failed = Some((id, error.to_string()));
                    report.skipped = open[i + 1..].iter().map(|t| t.id().to_string()).collect();
                    break;
                }
            }
        }
        Ok(report)
    }

    async fn close_idle(&self) -> usize {
        self.tenants.close_idle().await
    }
}
