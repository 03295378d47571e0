//! Where the SQLite engine keeps tenants on disk, and how it opens their files.
//!
//! `<data_dir>/tenants/<tenant id>/tenant.db` (plus SQLite's `-wal` and `-shm`, and the
//! `tenant.lock` of [`super::lock`]). A `TenantId` admits only `[a-z0-9][a-z0-9_-]*`, so it is
//! always one plain path component. Every connection of a serving tenant gets the same
//! pragmas (`SqliteConfig::connect_options`); operator tools that only read (stats, backup,
//! export) open the file read-only ([`open_read_only`]), which never blocks the writer.

use std::path::{Path, PathBuf};

use pm_core::TenantId;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, SqliteConnection};

use crate::error::Result;

/// The database file inside a tenant directory.
pub const DB_FILE: &str = "tenant.db";

/// The directory of one tenant.
pub fn tenant_dir(data_dir: &Path, id: &TenantId) -> PathBuf {
    data_dir.join("tenants").join(id.as_str())
}

/// Tenant directories under the data directory, sorted; names that are not valid tenant ids
/// are returned as errors so that operators see them.
pub fn list_tenants(
    data_dir: &Path,
) -> std::io::Result<Vec<std::result::Result<TenantId, String>>> {
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
    Ok(names
        .into_iter()
        .map(|name| TenantId::parse(&name).map_err(|_| name))
        .collect())
}

/// The database, WAL and shared-memory files of a tenant together, bytes.
pub fn size_on_disk(data_dir: &Path, id: &TenantId) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| file_bytes(data_dir, id, suffix))
        .sum()
}

/// The WAL of a tenant, bytes (0 when it has none).
pub fn wal_bytes(data_dir: &Path, id: &TenantId) -> u64 {
    file_bytes(data_dir, id, "-wal")
}

/// `tenant.db<suffix>`, bytes (0 when it is not there).
fn file_bytes(data_dir: &Path, id: &TenantId, suffix: &str) -> u64 {
    std::fs::metadata(tenant_dir(data_dir, id).join(format!("{DB_FILE}{suffix}")))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Opens a database file read-only, without the serving pragmas: a WAL reader that never
/// blocks the writer and never creates or changes anything.
pub async fn open_read_only(file: &Path) -> Result<SqliteConnection> {
    Ok(SqliteConnectOptions::new()
        .filename(file)
        .read_only(true)
        .connect()
        .await?)
}

/// The newest successfully applied migration of the database on `conn` (0: none, not even
/// the migrations table).
pub async fn schema_version(conn: &mut SqliteConnection) -> Result<i64> {
    if !has_migrations_table(conn).await? {
        return Ok(0);
    }
    let version: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await?;
    Ok(version)
}

/// Whether the database has sqlx's migrations table (a new one does not, yet).
pub(crate) async fn has_migrations_table(conn: &mut SqliteConnection) -> Result<bool> {
    let exists = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(exists)
}
