//! The SQLite engine's settings: where tenants live, connection tuning (the pragmas every
//! connection of a serving tenant gets), and the writer's.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pm_core::TenantId;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::ConnectOptions;

use super::layout;
use crate::events::Retention;

/// The size a tenant's WAL is kept near: past it a checkpoint runs, past twice it the writer
/// starts the WAL over. Starting over truncates the file only past four times this
/// (`journal_size_limit`: after a burst); a quiet tenant's WAL is truncated to nothing.
/// 16 MiB rather than 4: checkpoints a quarter as often, each copying the pages every commit
/// rewrites (the last leaf of each index) once for four times the commits; +7 % commands per
/// second at 64 writers on one tenant, for up to 34 MB of WAL on disk per busy tenant.
pub const WAL_SIZE_LIMIT: u64 = 16 * 1024 * 1024;

/// What a WAL file is cut back to when it starts over (`journal_size_limit`): above where the
/// writer starts it over, so that steady writes reuse the file instead of cutting it back and
/// allocating it again each time (see `checkpoint`).
pub(crate) const JOURNAL_SIZE_LIMIT: u64 = 4 * WAL_SIZE_LIMIT;

/// The SQLite engine's settings.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// Root of all tenant directories.
    pub data_dir: PathBuf,
    /// Most tenants open at once; idle ones are closed least recently used first.
    pub max_open_tenants: usize,
    /// Read connections per open tenant.
    pub read_pool_size: u32,
    /// A read connection unused for this long is closed.
    pub read_idle_timeout: Duration,
    /// How long a connection waits for a lock before `SQLITE_BUSY`.
    pub busy_timeout: Duration,
    /// Page cache per connection, KiB.
    pub cache_size_kib: u32,
    /// Memory-mapped I/O per connection, bytes, for a database larger than the page cache
    /// (`cache_size_kib`): when the tenant opens for its writer, when each read connection
    /// opens for that one. A smaller one is served from the page cache after its first read
    /// anyway, and mapping it costs more than it saves: a page fault at the first touch of
    /// each page, and at close a `munmap` that interrupts every other core to flush its TLB
    /// (that `munmap` alone was 2.3 % of the server's samples in cold reopens of small
    /// tenants).
    pub mmap_size: u64,
    /// The writer of each tenant (including change-log retention).
    pub writer: WriterConfig,
    /// Migrations to bring tenants to instead of the embedded ones: a superset of them
    /// (same versions, same checksums) plus newer ones, reloaded by an online rollout.
    pub migrations_dir: Option<PathBuf>,
    /// Largest size a tenant's database may grow to, bytes (`None`: no limit but the disk's).
    /// A write that would pass it fails like a full disk. It can be changed while serving
    /// (`SqliteEngine::set_max_tenant_bytes`).
    pub max_tenant_bytes: Option<u64>,
    /// Run `PRAGMA quick_check` when a tenant opens, and refuse (quarantine) it if damaged.
    /// It reads the whole database: opening takes longer, in proportion to its size.
    pub check_on_open: bool,
    /// A tenant without a checkpoint for this long checkpoints what is pending, and once it
    /// has been quiet this long, truncates its WAL.
    pub idle_checkpoint: Duration,
}

impl SqliteConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            data_dir: data_dir.into(),
            max_open_tenants: 256,
            read_pool_size: 4,
            read_idle_timeout: Duration::from_secs(60),
            busy_timeout: Duration::from_secs(5),
            cache_size_kib: 8 * 1024,
            mmap_size: 256 * 1024 * 1024,
            writer: WriterConfig::default(),
            migrations_dir: None,
            max_tenant_bytes: None,
            check_on_open: false,
            idle_checkpoint: Duration::from_secs(30),
        }
    }

    /// The directory of one tenant.
    pub fn tenant_dir(&self, id: &TenantId) -> PathBuf {
        layout::tenant_dir(&self.data_dir, id)
    }

    /// The database file of one tenant.
    pub fn db_file(&self, id: &TenantId) -> PathBuf {
        self.tenant_dir(id).join(layout::DB_FILE)
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
            // After a checkpoint has copied the whole WAL back, the next write starts it over
            // and truncates the file to this: a burst's WAL does not stay on disk. Not below
            // where the writer starts it over (twice the limit, and the group that crossed
            // it): each truncation freed megabytes only for the next ones to allocate them
            // again, a stall of milliseconds in the writer's commit.
            .pragma("journal_size_limit", JOURNAL_SIZE_LIMIT.to_string())
            .log_slow_statements(log::LevelFilter::Warn, Duration::from_millis(250))
    }

    /// [`SqliteConfig::connect_options`] for a tenant whose database holds `db_bytes` now:
    /// memory-mapped only if it is larger than the page cache (see `mmap_size`).
    pub(crate) fn serving_options(&self, db_file: &Path, db_bytes: u64) -> SqliteConnectOptions {
        let options = self.connect_options(db_file);
        if self.maps(db_bytes) {
            options
        } else {
            options.pragma("mmap_size", "0")
        }
    }

    /// Whether a database of `db_bytes` is memory-mapped: it is larger than the page cache.
    pub(crate) fn maps(&self, db_bytes: u64) -> bool {
        db_bytes > self.cache_bytes()
    }

    /// The page cache of one connection, bytes.
    pub(crate) fn cache_bytes(&self) -> u64 {
        u64::from(self.cache_size_kib) * 1024
    }

    /// Tenant directories under the data directory, sorted; names that are not valid tenant
    /// ids are returned as errors so that operators see them.
    pub fn list_tenants(&self) -> std::io::Result<Vec<std::result::Result<TenantId, String>>> {
        layout::list_tenants(&self.data_dir)
    }

    /// The database, WAL and shared-memory files of a tenant together, bytes.
    pub fn size_on_disk(&self, id: &TenantId) -> u64 {
        layout::size_on_disk(&self.data_dir, id)
    }
}

/// Writer tuning.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Jobs waiting for the writer; a full queue answers `UNAVAILABLE`.
    pub queue_capacity: usize,
    /// Most jobs committed in one transaction.
    pub max_group: usize,
    /// Most commands in one `Batch`.
    pub max_batch_commands: usize,
    /// Wrap every command in a savepoint instead of only those that need one.
    pub savepoint_per_command: bool,
    /// Committed groups buffered for the event publisher before it must catch up from the log.
    pub event_buffer: usize,
    /// How much of the change log is kept (default: everything).
    pub retention: Retention,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            queue_capacity: 4_096,
            max_group: 512,
            max_batch_commands: 100,
            savepoint_per_command: false,
            event_buffer: 1_024,
            retention: Retention::default(),
        }
    }
}

/// The size limit of tenant databases in force, shared by the engine and every writer, so
/// that changing it reaches the open tenants at their next write.
#[derive(Debug, Default)]
pub(crate) struct SizeLimit {
    /// Database pages (0: no limit).
    pages: AtomicU64,
}

/// SQLite's page size for tenant databases (the default; never changed).
const PAGE_SIZE: u64 = 4096;
/// `max_page_count` without a limit of ours (SQLite's own largest).
pub(crate) const NO_PAGE_LIMIT: u64 = 4_294_967_294;

impl SizeLimit {
    /// A limit of `bytes` (`None`: none).
    pub(crate) fn new(bytes: Option<u64>) -> Self {
        let limit = SizeLimit::default();
        limit.set(bytes);
        limit
    }

    /// Changes the limit.
    pub(crate) fn set(&self, bytes: Option<u64>) {
        let pages = bytes.map_or(0, |b| (b / PAGE_SIZE).clamp(1, NO_PAGE_LIMIT));
        self.pages.store(pages, Ordering::Release);
    }

    /// The limit as SQLite's `max_page_count`.
    pub(crate) fn max_page_count(&self) -> u64 {
        match self.pages.load(Ordering::Acquire) {
            0 => NO_PAGE_LIMIT,
            pages => pages,
        }
    }
}

/// Closes a serving connection on a blocking thread, not on the runtime's.
///
/// sqlx ends the connection's own thread and drops its last reference to the database handle
/// wherever that happens to be: on the caller's thread about two times in five (by `perf` in
/// cold reopens). There `sqlite3_close` unmaps the file and the wal-index, and the last close
/// of a database checkpoints it and deletes its WAL: file I/O that would hold up a runtime
/// worker and every task queued on it.
pub(crate) async fn close(conn: sqlx::SqliteConnection) -> sqlx::Result<()> {
    use sqlx::Connection;
    tokio::task::spawn_blocking(move || futures::executor::block_on(conn.close()))
        .await
        .unwrap_or(Err(sqlx::Error::WorkerCrashed))
}
