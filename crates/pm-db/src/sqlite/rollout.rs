//! Online schema rollouts: new migrations applied to the open tenants while serving.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use pm_core::TenantId;

use super::config::SqliteConfig;
use super::inspect;
use super::migrations::{self, Schema};
use super::tenant::SqliteTenant;
use crate::engine::{RolloutReport, SchemaChange, Tenant};
use crate::error::Result;

/// Reloads the migrations directory and applies its new migrations to every open tenant,
/// one tenant at a time, while serving: each tenant's writer finishes what was queued
/// before, applies the pending migrations in one transaction, and goes on with the
/// commands that waited meanwhile. Tenants that are not open are migrated when next
/// opened.
///
/// The rollout stops at the first tenant whose migration fails: that tenant is rolled
/// back and keeps serving on its old schema (logged at ERROR, counted in
/// `SchemaStatus::failed`), the remaining tenants are left untouched, and opening
/// tenants goes back to the previous migrations. An unusable directory changes nothing
/// and is an error.
pub(super) async fn run(
    schema: &Schema,
    config: &SqliteConfig,
    open_tenants: impl Fn() -> Vec<Arc<SqliteTenant>>,
) -> Result<RolloutReport> {
    let _one_at_a_time = schema.rollout.lock().await;
    let (previous, target_version, generation) = schema.begin_rollout()?;
    tracing::info!(target_version, "online schema migration started");
    let open = open_tenants();
    let open_ids: HashSet<TenantId> = open.iter().map(|t| t.id().clone()).collect();
    let mut closed = HashSet::new();
    let on_disk = config.list_tenants().unwrap_or_else(|error| {
        tracing::warn!(%error, "cannot list the tenants on disk; closed ones are not counted");
        Vec::new()
    });
    for id in on_disk
        .into_iter()
        .flatten()
        .filter(|id| !open_ids.contains(id))
    {
        match inspect::schema_version(config, &id).await {
            Ok(Some(version)) if version < target_version => {
                closed.insert(id);
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(tenant = %id, %error, "cannot read the schema version of a closed tenant")
            }
        }
    }
    schema.pending(open.len() as u64, closed);
    let mut report = RolloutReport {
        target_version,
        ..RolloutReport::default()
    };
    let mut queue: VecDeque<Arc<SqliteTenant>> = open.into();
    loop {
        while let Some(tenant) = queue.pop_front() {
            match migrate_tenant(schema, &tenant).await {
                Ok(change) => {
                    schema.tenant_done();
                    report.migrated.push((tenant.id().to_string(), change));
                }
                Err(error) => {
                    let why = match migrations::failed_version(&error) {
                        Some(version) => format!("migration {version}: {error}"),
                        None => error.to_string(),
                    };
                    report.failed = Some((tenant.id().to_string(), why));
                    report.skipped = queue.iter().map(|t| t.id().to_string()).collect();
                    schema.abandon(previous);
                    tracing::error!(
                        tenant = %tenant.id(),
                        skipped = report.skipped.len(),
                        "online schema migration stopped at a failure; the remaining tenants keep their schema"
                    );
                    return Ok(report);
                }
            }
        }
        // Tenants opened while the rollout began may have been migrated with the previous
        // set; they are at an older generation.
        let stale: Vec<Arc<SqliteTenant>> = open_tenants()
            .into_iter()
            .filter(|t| t.schema_generation() < generation)
            .collect();
        if stale.is_empty() {
            break;
        }
        schema.more_open(stale.len() as u64);
        queue.extend(stale);
    }
    report.closed_pending = schema.finish();
    tracing::info!(
        target_version,
        tenants = report.migrated.len(),
        closed_pending = report.closed_pending,
        "online schema migration finished"
    );
    Ok(report)
}

/// Brings `tenant` to the schema's current migrations through its writer; a failure is
/// counted and logged, and the tenant stays on its old schema.
pub(super) async fn migrate_tenant(schema: &Schema, tenant: &SqliteTenant) -> Result<SchemaChange> {
    let (migrator, generation) = schema.current();
    match tenant.migrate(migrator, generation).await {
        Ok(change) => {
            schema.applied(&change);
            if change.changed() {
                tracing::info!(tenant = %tenant.id(), from = change.from, to = change.to, "tenant migrated online");
            }
            Ok(change)
        }
        Err(error) => {
            schema.failed(tenant.id(), &error);
            Err(error)
        }
    }
}
