//! `pm-server migrate`: opens each tenant, which applies pending migrations, and reports it.

use std::path::Path;

use pm_core::TenantId;
use pm_db::{RegistryConfig, TenantRegistry};

/// One tenant's outcome.
#[derive(Debug)]
pub struct Report {
    /// The tenant, as named or as found on disk.
    pub tenant: String,
    /// Its head seq after migrating, or why it failed.
    pub outcome: Result<u64, String>,
}

/// Migrates `tenants`, or every tenant directory under `data_dir` if empty. One failing tenant
/// does not stop the others.
pub async fn run(data_dir: &Path, tenants: &[String]) -> Result<Vec<Report>, std::io::Error> {
    let names = if tenants.is_empty() {
        existing_tenants(data_dir)?
    } else {
        tenants.to_vec()
    };
    let registry = TenantRegistry::new(RegistryConfig::new(data_dir));
    let mut reports = Vec::with_capacity(names.len());
    for name in names {
        let outcome = match TenantId::parse(&name) {
            Err(e) => Err(e.to_string()),
            Ok(id) => match registry.open(&id).await {
                Ok(tenant) => Ok(tenant.head_seq()),
                Err(e) => Err(e.to_string()),
            },
        };
        registry.close_idle().await;
        reports.push(Report {
            tenant: name,
            outcome,
        });
    }
    Ok(reports)
}

/// Names of the directories under `<data_dir>/tenants`, sorted.
fn existing_tenants(data_dir: &Path) -> Result<Vec<String>, std::io::Error> {
    let root = data_dir.join("tenants");
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}
