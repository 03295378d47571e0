//! Where the SQLite engine keeps tenants on disk, and how it opens their files.
//!
//! `<data_dir>/tenants/<tenant id>/tenant.db` (plus SQLite's `-wal` and `-shm`, and the
//! `tenant.lock` of [`super::lock`]). A `TenantId` admits only `[a-z0-9][a-z0-9_-]*`, so it is
//! always one plain path component. Every connection of a serving tenant gets the same
//! pragmas ([`SqliteConfig::connect_options`]); operator tools that only read (stats, backup,
//! export) open the file read-only ([`open_read_only`]), which never blocks the writer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pm_core::TenantId;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, SqliteConnection};

use super::writer::WriterConfig;
use crate::error::Result;

/// The database file inside a tenant directory.
pub const DB_FILE: &str = "tenant.db";

/// The SQLite engine's settings.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// Root of all tenant directories.
    pub data_dir: PathBuf,
    /// Most tenants open at once; idle ones are closed least recently used first.
    pub max_open_tenants: usize,
    /// Read connections per open tenant.
    pub read_pool_size: u32,
    /// How long a connection waits for a lock before `SQLITE_BUSY`.
    pub busy_timeout: Duration,
    /// Page cache per connection, KiB.
    pub cache_size_kib: u32,
    /// Memory-mapped I/O per connection, bytes.
    pub mmap_size: u64,
    /// The writer of each tenant (including change-log retention).
    pub writer: WriterConfig,
    /// Migrations to bring tenants to instead of the embedded ones: a superset of them
    /// (same versions, same checksums) plus newer ones, reloaded by an online rollout.
    pub migrations_dir: Option<PathBuf>,
}

impl SqliteConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            data_dir: data_dir.into(),
            max_open_tenants: 256,
            read_pool_size: 4,
            busy_timeout: Duration::from_secs(5),
            cache_size_kib: 8 * 1024,
            mmap_size: 256 * 1024 * 1024,
            writer: WriterConfig::default(),
            migrations_dir: None,
        }
    }

    /// The directory of one tenant.
    pub fn tenant_dir(&self, id: &TenantId) -> PathBuf {
        self.data_dir.join("tenants").join(id.as_str())
    }

    /// The database file of one tenant.
    pub fn db_file(&self, id: &TenantId) -> PathBuf {
        self.tenant_dir(id).join(DB_FILE)
    }

    /// Connection options with the pragmas every connection of a serving tenant gets.
    pub fn connect_options(&self, db_file: &Path) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(db_file)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(self.busy_timeout)
            .pragma("temp_store", "memory")
            .pragma("cache_size", format!("-{}", self.cache_size_kib))
            .pragma("mmap_size", self.mmap_size.to_string())
            .log_slow_statements(log::LevelFilter::Warn, Duration::from_millis(250))
    }

    /// Tenant directories under the data directory, sorted; names that are not valid tenant
    /// ids are returned as errors so that operators see them.
    pub fn list_tenants(&self) -> std::io::Result<Vec<std::result::Result<TenantId, String>>> {
        let root = self.data_dir.join("tenants");
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
    pub fn size_on_disk(&self, id: &TenantId) -> u64 {
        let dir = self.tenant_dir(id);
        ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| {
                std::fs::metadata(dir.join(format!("{DB_FILE}{suffix}")))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum()
    }
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
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !exists {
        return Ok(0);
    }
    let version: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await?;
    Ok(version)
}

/// The newest migration this binary embeds.
pub fn embedded_version() -> i64 {
    crate::MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}
