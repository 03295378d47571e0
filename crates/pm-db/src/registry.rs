//! The tenant registry: tenant id -> `<data_dir>/tenants/<id>/tenant.db`, opened on first
//! use (created and migrated as needed), closed again when it is the least recently used of
//! too many open tenants and nobody holds it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pm_core::{TenantId, UserId};
use pm_proto::v1;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::ConnectOptions;
use tokio::sync::{broadcast, mpsc, OnceCell};
use tokio::task::JoinHandle;

use crate::changelog::{self, CommittedEvent, EventFilter, StoredEvent};
use crate::checkpoint;
use crate::error::{Error, Result};
use crate::queries;
use crate::writer::{self, Answer, Shared, Work, WriterConfig, WriterHandle, WriterStats};
use crate::MIGRATOR;

/// Storage settings.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
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
    /// The writer of each tenant.
    pub writer: WriterConfig,
}

impl RegistryConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        RegistryConfig {
            data_dir: data_dir.into(),
            max_open_tenants: 256,
            read_pool_size: 4,
            busy_timeout: Duration::from_secs(5),
            cache_size_kib: 8 * 1024,
            mmap_size: 256 * 1024 * 1024,
            writer: WriterConfig::default(),
        }
    }

    /// The directory of one tenant.
    pub fn tenant_dir(&self, id: &TenantId) -> PathBuf {
        // `TenantId` admits only `[a-z0-9][a-z0-9_-]*`: always one plain path component.
        self.data_dir.join("tenants").join(id.as_str())
    }

    /// Connection options with the pragmas every connection gets.
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
}

/// The database file inside a tenant directory.
pub const DB_FILE: &str = "tenant.db";

/// Open tenants, bounded, least recently used closed first.
#[derive(Debug)]
pub struct TenantRegistry {
    config: RegistryConfig,
    slots: Mutex<HashMap<TenantId, Slot>>,
    clock: AtomicU64,
}

#[derive(Debug)]
struct Slot {
    tenant: Arc<OnceCell<Arc<Tenant>>>,
    last_used: u64,
}

impl TenantRegistry {
    /// A registry over `config.data_dir`; nothing is opened yet.
    pub fn new(config: RegistryConfig) -> Self {
        TenantRegistry {
            config,
            slots: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
        }
    }

    /// The settings.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Opens (creating and migrating if needed) or returns the open tenant. Holding the
    /// returned `Arc` keeps the tenant from being closed.
    pub async fn open(&self, id: &TenantId) -> Result<Arc<Tenant>> {
        let (cell, evicted) = {
            let mut slots = self.slots.lock().expect("registry lock is never poisoned");
            let tick = self.clock.fetch_add(1, Ordering::Relaxed);
            match slots.get_mut(id) {
                Some(slot) => {
                    slot.last_used = tick;
                    // Take the reference under the lock: from here on the tenant is in use
                    // and no eviction can close it.
                    if let Some(tenant) = slot.tenant.get() {
                        return Ok(tenant.clone());
                    }
                    (slot.tenant.clone(), None)
                }
                None => {
                    let evicted = if slots.len() >= self.config.max_open_tenants {
                        Some(evict_one(&mut slots).ok_or_else(|| {
                            Error::Unavailable(
                                "too many tenants are open and all are in use; retry later".into(),
                            )
                        })?)
                    } else {
                        None
                    };
                    let cell = Arc::new(OnceCell::new());
                    slots.insert(
                        id.clone(),
                        Slot {
                            tenant: cell.clone(),
                            last_used: tick,
                        },
                    );
                    (cell, evicted)
                }
            }
        };
        if let Some(tenant) = evicted {
            tracing::debug!(tenant = %tenant.id, "closing least recently used tenant");
            tenant.close().await;
        }
        let opened = cell
            .get_or_try_init(|| Tenant::open(id.clone(), &self.config))
            .await
            .cloned();
        if opened.is_err() {
            let mut slots = self.slots.lock().expect("registry lock is never poisoned");
            if slots
                .get(id)
                .is_some_and(|slot| Arc::ptr_eq(&slot.tenant, &cell) && slot.tenant.get().is_none())
            {
                slots.remove(id);
            }
        }
        opened
    }

    /// Committed groups and jobs summed over the open tenants.
    pub fn writer_totals(&self) -> (u64, u64) {
        let slots = self.slots.lock().expect("registry lock is never poisoned");
        slots.values().filter_map(|slot| slot.tenant.get()).fold(
            (0, 0),
            |(groups, jobs), tenant| {
                let stats = tenant.writer_stats();
                (
                    groups + stats.groups.load(Ordering::Relaxed),
                    jobs + stats.jobs.load(Ordering::Relaxed),
                )
            },
        )
    }

    /// Tenants open now.
    pub fn open_count(&self) -> usize {
        self.slots
            .lock()
            .expect("registry lock is never poisoned")
            .len()
    }

    /// Closes every tenant nobody holds; returns how many were closed.
    pub async fn close_idle(&self) -> usize {
        let idle: Vec<Arc<Tenant>> = {
            let mut slots = self.slots.lock().expect("registry lock is never poisoned");
            let ids: Vec<TenantId> = slots
                .iter()
                .filter(|(_, slot)| slot.tenant.get().is_some_and(|t| t.is_idle()))
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter()
                .filter_map(|id| slots.remove(id))
                .filter_map(|slot| slot.tenant.get().cloned())
                .collect()
        };
        let count = idle.len();
        for tenant in idle {
            tenant.close().await;
        }
        count
    }
}

/// Removes the least recently used idle tenant from `slots`.
fn evict_one(slots: &mut HashMap<TenantId, Slot>) -> Option<Arc<Tenant>> {
    let victim = slots
        .iter()
        .filter(|(_, slot)| slot.tenant.get().is_some_and(|t| t.is_idle()))
        .min_by_key(|(_, slot)| slot.last_used)
        .map(|(id, _)| id.clone())?;
    slots.remove(&victim)?.tenant.get().cloned()
}

/// One open tenant: its writer, its read pool and its event feed.
#[derive(Debug)]
pub struct Tenant {
    id: TenantId,
    dir: PathBuf,
    read_pool: SqlitePool,
    writer: WriterHandle,
    /// The writer and the checkpointer; both end once the writer's queue is dropped.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    shared: Arc<Shared>,
    events: broadcast::Sender<Arc<[CommittedEvent]>>,
    /// Tells `pm-server restore` and `import` in other processes that the tenant is open;
    /// `close` keeps it until the writer and checkpointer have ended.
    lock: Mutex<Option<crate::lock::TenantLock>>,
}

impl Tenant {
    async fn open(id: TenantId, config: &RegistryConfig) -> Result<Arc<Tenant>> {
        let dir = config.tenant_dir(&id);
        tokio::fs::create_dir_all(&dir).await?;
        let lock = crate::lock::TenantLock::shared(&dir)?;
        let options = config.connect_options(&dir.join(DB_FILE));
        // Multi-row inserts come in one shape per group size: keep them all prepared.
        let mut conn = options
            .clone()
            .create_if_missing(true)
            .statement_cache_capacity(1_024)
            // Checkpoints run on their own connection (see `checkpoint`).
            .pragma("wal_autocheckpoint", "0")
            .connect()
            .await?;
        // `run_direct`, not `run`: the latter's generic `Acquire` bound keeps callers' futures
        // from proving `Send`.
        MIGRATOR.run_direct(&mut conn).await?;
        let head = changelog::head_seq(&mut conn).await?;
        let checkpoint_conn = options.clone().connect().await?;
        let read_pool = SqlitePoolOptions::new()
            .max_connections(config.read_pool_size.max(1))
            .min_connections(0)
            .idle_timeout(Some(Duration::from_secs(60)))
            .connect_with(options.read_only(true))
            .await?;
        let shared = Arc::new(Shared::default());
        let (events, _) = broadcast::channel(config.writer.event_buffer.max(1));
        let (due, due_rx) = mpsc::channel(1);
        let progress = Arc::new(checkpoint::WalProgress::default());
        let checkpointer = tokio::spawn(checkpoint::run(
            checkpoint_conn,
            progress.clone(),
            due_rx,
            id.to_string(),
        ));
        let (writer, task) = writer::spawn(
            conn,
            head,
            shared.clone(),
            events.clone(),
            (progress, due),
            config.writer.clone(),
        );
        tracing::debug!(tenant = %id, head, "tenant opened");
        Ok(Arc::new(Tenant {
            id,
            dir,
            read_pool,
            writer,
            tasks: Mutex::new(vec![task, checkpointer]),
            shared,
            events,
            lock: Mutex::new(Some(lock)),
        }))
    }

    /// Whether only the registry holds it and its writer has nothing to do. Under the
    /// registry's lock nobody can take a new reference, so this cannot change meanwhile.
    fn is_idle(self: &Arc<Self>) -> bool {
        Arc::strong_count(self) == 1 && self.writer.in_flight() == 0
    }

    /// Stops the writer (after it finishes what is queued) and the checkpointer, and closes
    /// the read pool. Only called on a tenant removed from the registry while idle.
    async fn close(self: Arc<Self>) {
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("task lock is never poisoned"));
        match Arc::try_unwrap(self) {
            Ok(tenant) => {
                let pool = tenant.read_pool.clone();
                let lock = tenant.lock.lock().expect("lock is never poisoned").take();
                // Dropping the tenant drops the writer's queue: the writer finishes and ends,
                // and then the checkpointer.
                drop(tenant);
                for task in tasks {
                    if let Err(e) = task.await {
                        tracing::error!(error = %e, "tenant task failed");
                    }
                }
                pool.close().await;
                drop(lock);
            }
            Err(tenant) => {
                // Not idle after all: leave it working; it closes when the last user drops it.
                tracing::warn!(tenant = %tenant.id, "tenant still in use at close; left open");
                *tenant.tasks.lock().expect("task lock is never poisoned") = tasks;
            }
        }
    }

    /// The tenant's id.
    pub fn id(&self) -> &TenantId {
        &self.id
    }

    /// The tenant's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The latest committed change number.
    pub fn head_seq(&self) -> u64 {
        self.shared.head.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The writer's counters.
    pub fn writer_stats(&self) -> &WriterStats {
        &self.shared.stats
    }

    /// Write jobs submitted and not yet answered.
    pub fn writes_in_flight(&self) -> u64 {
        self.writer.in_flight()
    }

    /// The read pool (read-only connections).
    pub fn read_pool(&self) -> &SqlitePool {
        &self.read_pool
    }

    /// Applies one command as `actor`; answers after it is committed.
    pub async fn execute(&self, actor: &UserId, command: v1::Command) -> Result<v1::CommandResult> {
        match self
            .writer
            .submit(actor.clone(), Work::Command(Box::new(command)))
            .await?
        {
            Answer::Command(result) => *result,
            Answer::Batch(_) => unreachable!("a command is answered as a command"),
        }
    }

    /// Applies a batch as `actor`; atomic batches commit all or nothing.
    pub async fn batch(&self, actor: &UserId, batch: v1::Batch) -> Result<v1::BatchResult> {
        match self
            .writer
            .submit(actor.clone(), Work::Batch(batch))
            .await?
        {
            Answer::Batch(result) => result,
            Answer::Command(_) => unreachable!("a batch is answered as a batch"),
        }
    }

    /// Runs a query as `actor` through the read pool.
    pub async fn query(&self, actor: &UserId, query: v1::Query) -> Result<v1::QueryResult> {
        queries::run(&self.read_pool, actor, query).await
    }

    /// Committed events as they happen, one slice per committed group, in seq order. A
    /// receiver that lags behind gets `RecvError::Lagged` and catches up with
    /// [`Tenant::read_events`].
    pub fn subscribe_commits(&self) -> broadcast::Receiver<Arc<[CommittedEvent]>> {
        self.events.subscribe()
    }

    /// The live projects `user` is a member of, with its role in each, and the change number
    /// they are as of (one read transaction).
    pub async fn memberships(
        &self,
        user: &UserId,
    ) -> Result<(Vec<(String, pm_core::kinds::Role)>, u64)> {
        queries::memberships(&self.read_pool, user).await
    }

    /// Up to `limit` logged events with `after < seq <= until`, in seq order.
    pub async fn read_events(
        &self,
        after: u64,
        until: Option<u64>,
        limit: u32,
        filter: &EventFilter,
    ) -> Result<Vec<StoredEvent>> {
        let mut conn = self.read_pool.acquire().await?;
        changelog::read_after(&mut conn, after, until, limit, filter).await
    }
}
