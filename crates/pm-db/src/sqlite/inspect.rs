//! Read-only inspection of tenant databases, for operators: safe while a server is serving
//! them (WAL readers never block the writer), and it never migrates or creates anything.

use pm_core::TenantId;
use sqlx::Connection;

use super::config::SqliteConfig;
use super::layout::{self, open_read_only};
use super::migrations;
use super::stats;
use crate::error::{Error, Result};

/// What `pm-server tenants stats` reports for one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantStats {
    /// The tenant.
    pub tenant: String,
    /// Database, WAL and shared-memory files together, bytes.
    pub size_bytes: u64,
    /// Of which the WAL, bytes: changes not yet checkpointed into the database file (0 for a
    /// closed tenant; a serving one truncates it once it has been quiet for a while).
    pub wal_bytes: u64,
    /// The newest applied migration (0: none).
    pub schema_version: i64,
    /// Whether migrations newer than the database's exist (in the configured migrations
    /// directory, or embedded): `pm-server migrate`, an online migration or the next open
    /// applies them.
    pub migration_pending: bool,
    /// The latest change number.
    pub head_seq: u64,
    /// The oldest change still in the log (`None`: empty); older ones were pruned.
    pub oldest_seq: Option<u64>,
    /// Time of the latest change, Unix milliseconds.
    pub last_activity: Option<i64>,
    /// Live (not deleted) rows per entity kind, in a fixed order.
    pub counts: Vec<(&'static str, u64)>,
}

/// The schema version of one tenant's database, read-only (`None`: it has no database).
pub async fn schema_version(config: &SqliteConfig, id: &TenantId) -> Result<Option<i64>> {
    let db = config.db_file(id);
    if !db.is_file() {
        return Ok(None);
    }
    let mut conn = open_read_only(&db).await?;
    let version = layout::schema_version(&mut conn).await?;
    conn.close().await?;
    Ok(Some(version))
}

/// Counts entities and reads the change log of one tenant, read-only.
pub async fn tenant_stats(config: &SqliteConfig, id: &TenantId) -> Result<TenantStats> {
    let db = config.db_file(id);
    if !db.is_file() {
        return Err(Error::NotFound(format!("tenant {id} has no database")));
    }
    let size_bytes = config.size_on_disk(id);
    let wal_bytes = layout::wal_bytes(&config.data_dir, id);
    let mut conn = open_read_only(&db).await?;
    let schema_version = layout::schema_version(&mut conn).await?;
    let newest = migrations::newest_version(config.migrations_dir.as_deref())?;
    let mut stats = TenantStats {
        tenant: id.to_string(),
        size_bytes,
        wal_bytes,
        schema_version,
        migration_pending: schema_version < newest,
        head_seq: 0,
        oldest_seq: None,
        last_activity: None,
        counts: Vec::new(),
    };
    if schema_version == 0 {
        conn.close().await?;
        return Ok(stats);
    }
    stats.head_seq = super::changelog::head_seq(&mut conn).await?;
    let (oldest, last) = stats::log_range(&mut conn).await?;
    stats.oldest_seq = oldest;
    stats.last_activity = last;
    stats.counts = stats::live_counts(&mut conn).await?;
    conn.close().await?;
    Ok(stats)
}

/// How thoroughly [`check_tenant`] reads a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thoroughness {
    /// `PRAGMA quick_check`: every page and record, not the indexes' agreement with the
    /// tables (O(N), what `storage.check_on_open` runs).
    Quick,
    /// `PRAGMA integrity_check`: also that every index matches its table (slower).
    Full,
}

/// Checks one tenant's database read-only: `Ok(problems)`, empty when it is sound. The pages
/// and records (`quick_check`, or `integrity_check`), then, if they are sound, every foreign
/// key (`foreign_key_check`: a row pointing at a parent that is not there). A file that is not
/// a database at all, or too damaged to be read, is one problem, not an error; errors are for
/// what the check cannot do (no database, the file cannot be opened).
pub async fn check_tenant(
    config: &SqliteConfig,
    id: &TenantId,
    thoroughness: Thoroughness,
) -> Result<Vec<String>> {
    let db = config.db_file(id);
    if !db.is_file() {
        return Err(Error::NotFound(format!("tenant {id} has no database")));
    }
    let pragma = match thoroughness {
        Thoroughness::Quick => "PRAGMA quick_check",
        Thoroughness::Full => "PRAGMA integrity_check",
    };
    let checked: Result<Vec<String>> = async {
        let mut conn = open_read_only(&db).await?;
        let mut found: Vec<String> = sqlx::query_scalar(pragma).fetch_all(&mut conn).await?;
        if found == ["ok"] {
            found.clear();
            // (child table, its rowid, parent table, which key of the child)
            let orphans: Vec<(String, Option<i64>, String, i64)> =
                sqlx::query_as("PRAGMA foreign_key_check")
                    .fetch_all(&mut conn)
                    .await?;
            found.extend(orphans.into_iter().map(|(table, rowid, parent, _)| {
                let row = rowid.map_or_else(|| "a row".to_owned(), |r| format!("row {r}"));
                format!("{table} {row}: its {parent} is missing (foreign key)")
            }));
        }
        conn.close().await?;
        Ok(found)
    }
    .await;
    match checked {
        Ok(found) => Ok(found),
        Err(Error::Damaged { detail, .. }) => Ok(vec![detail]),
        Err(error) => Err(error),
    }
}

/// One tenant's schema migrations, as `pm-server migrate --status` lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// Applied, oldest first: (version, description).
    pub applied: Vec<(i64, String)>,
    /// Known to the binary or the migrations directory and not applied yet, oldest first.
    pub pending: Vec<(i64, String)>,
}

/// Which of the migrations tenants are brought to (the embedded ones, or those of
/// `config.migrations_dir`) one tenant has, read-only. A tenant without a database has none
/// applied.
pub async fn migration_status(config: &SqliteConfig, id: &TenantId) -> Result<MigrationStatus> {
    let embedded: Vec<_> = migrations::MIGRATOR.iter().cloned().collect();
    let known = match &config.migrations_dir {
        Some(dir) => migrations::load_dir(dir, &embedded)?,
        None => embedded,
    };
    let db = config.db_file(id);
    let mut applied: Vec<(i64, String)> = Vec::new();
    if db.is_file() {
        let mut conn = open_read_only(&db).await?;
        if layout::schema_version(&mut conn).await? > 0 {
            applied = sqlx::query_as(
                "SELECT version, description FROM _sqlx_migrations WHERE success ORDER BY version",
            )
            .fetch_all(&mut conn)
            .await?;
        }
        conn.close().await?;
    }
    let pending = known
        .iter()
        .filter(|m| !applied.iter().any(|(version, _)| *version == m.version))
        .map(|m| (m.version, m.description.to_string()))
        .collect();
    Ok(MigrationStatus { applied, pending })
}
