//! The tenant registry: tenant id -> `<data_dir>/tenants/<id>/tenant.db`, opened on first
//! use (created and migrated as needed), closed again when it is the least recently used of
//! too many open tenants and nobody holds it. It also rolls out new migrations to the open
//! tenants while serving ([`TenantRegistry::migrate_online`], see `migrations`).

use std::collections::{HashMap, HashSet, VecDeque};
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
use crate::migrations::{self, RolloutReport, Schema, SchemaChange, SchemaStatus};
use crate::queries;
use crate::writer::{self, Answer, Shared, Work, WriterConfig, WriterHandle, WriterStats};

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
    /// The writer of each tenant (including change-log retention).
    pub writer: WriterConfig,
    /// Migrations to bring tenants to instead of the embedded ones: a superset of them
    /// (same versions, same checksums) plus newer ones, reloaded by
    /// [`TenantRegistry::migrate_online`].
    pub migrations_dir: Option<PathBuf>,
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
            migrations_dir: None,
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
    schema: Schema,
}

#[derive(Debug)]
struct Slot {
    tenant: Arc<OnceCell<Arc<Tenant>>>,
    last_used: u64,
}

impl TenantRegistry {
    /// A registry over `config.data_dir`; nothing is opened yet. Tenants are brought to the
    /// migrations of `config.migrations_dir`, or to the embedded ones without it (or if it
    /// cannot be used: that is logged and shown in [`TenantRegistry::schema_status`]).
    pub fn new(config: RegistryConfig) -> Self {
        TenantRegistry {
            schema: Schema::new(config.migrations_dir.clone()),
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
            .get_or_try_init(|| Tenant::open(id.clone(), &self.config, &self.schema))
            .await
            .cloned();
        match &opened {
            Ok(tenant) => {
                self.schema.opened(id);
                if tenant.schema_generation() < self.schema.generation() {
                    // Opened with the migrations of before a rollout that started meanwhile
                    // and may have missed it: catch up now. A failure is counted and logged
                    // there, and the tenant serves on its old schema.
                    let _ = self.migrate_tenant(tenant).await;
                }
            }
            Err(_) => {
                let mut slots = self.slots.lock().expect("registry lock is never poisoned");
                if slots.get(id).is_some_and(|slot| {
                    Arc::ptr_eq(&slot.tenant, &cell) && slot.tenant.get().is_none()
                }) {
                    slots.remove(id);
                }
            }
        }
        opened
    }

    /// Brings `tenant` to the current migrations through its writer; a failure is counted
    /// and logged, and the tenant stays on its old schema.
    async fn migrate_tenant(&self, tenant: &Tenant) -> Result<SchemaChange> {
        let (migrator, generation) = self.schema.current();
        match tenant.migrate(migrator, generation).await {
            Ok(change) => {
                self.schema.applied(&change);
                if change.changed() {
                    tracing::info!(tenant = %tenant.id, from = change.from, to = change.to, "tenant migrated online");
                }
                Ok(change)
            }
            Err(error) => {
                self.schema.failed(&tenant.id, &error);
                Err(error)
            }
        }
    }

    /// Reloads the migrations directory and applies its new migrations to every open tenant,
    /// one tenant at a time, while serving: each tenant's writer finishes what was queued
    /// before, applies the pending migrations in one transaction, and goes on with the
    /// commands that waited meanwhile. Tenants that are not open are migrated when next
    /// opened.
    ///
    /// The rollout stops at the first tenant whose migration fails: that tenant is rolled
    /// back and keeps serving on its old schema (logged at ERROR, counted in
    /// [`SchemaStatus::failed`]), the remaining tenants are left untouched, and opening
    /// tenants goes back to the previous migrations. An unusable directory changes nothing
    /// and is an error.
    pub async fn migrate_online(&self) -> Result<RolloutReport> {
        let _one_at_a_time = self.schema.rollout.lock().await;
        let (previous, target_version, generation) = self.schema.begin_rollout()?;
        tracing::info!(target_version, "online schema migration started");
        let open = self.open_tenants();
        let open_ids: HashSet<TenantId> = open.iter().map(|t| t.id.clone()).collect();
        let mut closed = HashSet::new();
        let on_disk = crate::inspect::list_tenants(&self.config).unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot list the tenants on disk; closed ones are not counted");
            Vec::new()
        });
        for id in on_disk
            .into_iter()
            .flatten()
            .filter(|id| !open_ids.contains(id))
        {
            match crate::inspect::schema_version(&self.config, &id).await {
                Ok(Some(version)) if version < target_version => {
                    closed.insert(id);
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(tenant = %id, %error, "cannot read the schema version of a closed tenant")
                }
            }
        }
        self.schema.pending(open.len() as u64, closed);
        let mut report = RolloutReport {
            target_version,
            ..RolloutReport::default()
        };
        let mut queue: VecDeque<Arc<Tenant>> = open.into();
        loop {
            while let Some(tenant) = queue.pop_front() {
                match self.migrate_tenant(&tenant).await {
                    Ok(change) => {
                        self.schema.tenant_done();
                        report.migrated.push((tenant.id.to_string(), change));
                    }
                    Err(error) => {
                        let why = match migrations::failed_version(&error) {
                            Some(version) => format!("migration {version}: {error}"),
                            None => error.to_string(),
                        };
                        report.failed = Some((tenant.id.to_string(), why));
                        report.skipped = queue.iter().map(|t| t.id.to_string()).collect();
                        self.schema.abandon(previous);
                        tracing::error!(
                            tenant = %tenant.id,
                            skipped = report.skipped.len(),
                            "online schema migration stopped at a failure; the remaining tenants keep their schema"
                        );
                        return Ok(report);
                    }
                }
            }
            // Tenants opened while the rollout began may have been migrated with the previous
            // set; they are at an older generation.
            let stale: Vec<Arc<Tenant>> = self
                .open_tenants()
                .into_iter()
                .filter(|t| t.schema_generation() < generation)
                .collect();
            if stale.is_empty() {
                break;
            }
            self.schema.more_open(stale.len() as u64);
            queue.extend(stale);
        }
        report.closed_pending = self.schema.finish();
        tracing::info!(
            target_version,
            tenants = report.migrated.len(),
            closed_pending = report.closed_pending,
            "online schema migration finished"
        );
        Ok(report)
    }

    /// Figures of schema migrations and rollouts.
    pub fn schema_status(&self) -> SchemaStatus {
        self.schema.status()
    }

    /// The open tenants, sorted by id.
    fn open_tenants(&self) -> Vec<Arc<Tenant>> {
        let slots = self.slots.lock().expect("registry lock is never poisoned");
        let mut open: Vec<Arc<Tenant>> = slots
            .values()
            .filter_map(|slot| slot.tenant.get().cloned())
            .collect();
        open.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        open
    }

    /// Change-log events pruned by retention, summed over the open tenants.
    pub fn pruned_events_total(&self) -> u64 {
        let slots = self.slots.lock().expect("registry lock is never poisoned");
        slots
            .values()
            .filter_map(|slot| slot.tenant.get())
            .map(|tenant| tenant.writer_stats().pruned_events.load(Ordering::Relaxed))
            .sum()
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
    /// The registry's migrations generation this tenant was last brought to.
    generation: AtomicU64,
    retention: changelog::Retention,
    /// Tells `pm-server restore` and `import` in other processes that the tenant is open;
    /// `close` keeps it until the writer and checkpointer have ended.
    lock: Mutex<Option<crate::lock::TenantLock>>,
}

impl Tenant {
    async fn open(id: TenantId, config: &RegistryConfig, schema: &Schema) -> Result<Arc<Tenant>> {
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
        let (migrator, generation) = schema.current();
        match migrations::apply(&mut conn, &migrator).await {
            Ok(change) => schema.applied(&change),
            Err(error) if schema.beyond_embedded() => {
                // A migration from the directory failed (and was rolled back): serve on the
                // schema this binary needs rather than not at all.
                schema.failed(&id, &error);
                migrations::apply(&mut conn, &migrations::baseline()).await?;
            }
            Err(error) => return Err(error),
        }
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
            generation: AtomicU64::new(generation),
            retention: config.writer.retention.clone(),
            lock: Mutex::new(Some(lock)),
        }))
    }

    /// The registry's migrations generation this tenant was last brought to.
    fn schema_generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Drains the writer and applies `migrator`'s pending migrations (all or nothing).
    async fn migrate(
        &self,
        migrator: Arc<sqlx::migrate::Migrator>,
        generation: u64,
    ) -> Result<SchemaChange> {
        let change = self.writer.migrate(migrator).await?;
        self.generation.fetch_max(generation, Ordering::AcqRel);
        Ok(change)
    }

    /// Runs a full retention pass over the change log as of `now` (Unix ms), through the
    /// writer, one bounded chunk at a time; returns how many events were deleted. The writer
    /// also does this by itself every `retention.interval`.
    pub async fn prune_changelog(&self, now: i64) -> Result<u64> {
        let mut total = 0;
        loop {
            let deleted = self.writer.prune(self.retention.clone(), now).await?;
            total += deleted;
            if deleted < changelog::PRUNE_CHUNK {
                return Ok(total);
            }
        }
    }

    /// The oldest change still in the log (`None`: the log is empty). A resume from before
    /// `oldest - 1` is `RESYNC_REQUIRED`.
    pub async fn oldest_seq(&self) -> Result<Option<u64>> {
        changelog::oldest_seq(&self.read_pool).await
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

    /// The live projects `user` is a member of (with its role in each), the head seq they are
    /// as of and the oldest retained seq, all from one snapshot.
    pub async fn subscription_snapshot(
        &self,
        user: &UserId,
    ) -> Result<queries::SubscriptionSnapshot> {
        queries::subscription_snapshot(&self.read_pool, user).await
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
