//! One open SQLite tenant: its writer, its read pool, its checkpointer and its event feed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pm_core::{TenantId, UserId};
use pm_proto::v1;
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::ConnectOptions;
use sqlx::SqliteConnection;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use super::changelog;
use super::checkpoint;
use super::config::SqliteConfig;
use super::health::{Condition, Safeguards};
use super::lock::TenantLock;
use super::migrations::{self, Schema};
use super::people;
use super::queries;
use super::queue::WriterStats;
use super::queue::{Shared, WriterHandle};
use super::readers::{Larger, Readers};
use super::replay;
use super::retention;
use super::text_index;
use super::writer::{self, Storage};
use crate::engine::{KnownProfiles, SchemaChange, SubscriptionSnapshot, Tenant, UserProfile};
use crate::error::{Error, Result};
use crate::events::{CommittedEvent, EventFilter, Retention, StoredEvent};
use crate::registry::Resident;
use crate::snapshots::Snapshots;

/// One open tenant of the SQLite engine.
///
/// It holds a shared lock on the tenant's lock file while open, which tells operator
/// commands in other processes (`restore`, `import`) that a server has it.
#[derive(Debug)]
pub struct SqliteTenant {
    id: TenantId,
    dir: PathBuf,
    read_pool: Readers,
    writer: WriterHandle,
    /// The writer and the checkpointer; both end once the writer's queue is dropped.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    shared: Arc<Shared>,
    events: broadcast::Sender<Arc<[CommittedEvent]>>,
    /// The engine's migrations generation this tenant was last brought to.
    generation: AtomicU64,
    retention: Retention,
    /// Kept until the writer and checkpointer have ended (see [`SqliteTenant::close`]).
    lock: Mutex<Option<TenantLock>>,
    db_file: PathBuf,
    safeguards: Arc<Safeguards>,
    /// Profiles known to be stored.
    known_users: KnownProfiles,
    /// Subscription snapshots waiting to be read together.
    snapshots: Snapshots,
}

/// Rows a read connection's thread may hand over before the reader takes them: a page's
/// worth (at most 500) and its follow-up lookups, so a page is one hand-over, not ten.
const READ_ROW_BUFFER: usize = 512;

impl SqliteTenant {
    /// Opens tenant `id`: creates its directory and database if needed, brings it to the
    /// schema's migrations (or, if a migration of the directory fails, to the embedded ones),
    /// and starts its writer and checkpointer.
    ///
    /// A tenant whose database exists, was closed cleanly (its WAL is empty) and is already at
    /// the schema's migrations is checked with reads only, and its writer connects at its first
    /// write: a tenant opened to be read, or for its clients to resume, costs one connection
    /// (parsing the schema is most of what a connection costs), not two.
    pub(crate) async fn open(
        id: TenantId,
        config: &SqliteConfig,
        schema: &Schema,
        safeguards: &Arc<Safeguards>,
    ) -> Result<Arc<SqliteTenant>> {
        let dir = config.tenant_dir(&id);
        tokio::fs::create_dir_all(&dir).await?;
        let lock = TenantLock::shared(&dir)?;
        let db_file = config.db_file(&id);
        let on_disk = OnDisk::inspect(&db_file).await;
        let options = config.serving_options(&db_file, on_disk.db_bytes);
        // Multi-row inserts come in one shape per group size: keep them all prepared.
        let writer_options = options
            .clone()
            .create_if_missing(true)
            .statement_cache_capacity(1_024)
            // Checkpoints run on their own connection (see `checkpoint`).
            .pragma("wal_autocheckpoint", "0");
        let (migrator, generation) = schema.current();
        let opening = Opening {
            id: &id,
            options: &writer_options,
            check: config.check_on_open,
            schema,
            migrator: &migrator,
        };
        // The writer creates a new database, puts an old one in WAL mode, and recovers a WAL
        // left with frames (by a process that did not close it) before anyone reads.
        let mut writer_conn = if on_disk.readable_as_is {
            None
        } else {
            Some(opening.writer().await?)
        };
        // A page holds up to 500 rows: let the connection's thread hand them all over without
        // waiting for the reader to take each batch of sqlx's default 50 (every wait is two
        // thread switches, a third of a board load's time when it was 50).
        let reading = |options: SqliteConnectOptions| {
            options.read_only(true).row_buffer_size(READ_ROW_BUFFER)
        };
        let larger = (!config.maps(on_disk.db_bytes)).then(|| Larger {
            db_file: db_file.clone(),
            bytes: config.cache_bytes(),
            options: reading(config.connect_options(&db_file)),
        });
        let read_pool = Readers::new(
            reading(options.clone()),
            larger,
            config.read_pool_size,
            config.read_idle_timeout,
        );
        // The first reader: it checks the database when the writer did not.
        let mut reader = read_pool.acquire().await?;
        let head = match &writer_conn {
            Some((_, head)) => *head,
            None => {
                if config.check_on_open {
                    quick_check(&mut reader).await?;
                }
                if migrations::up_to_date(&mut reader, &migrator).await? {
                    changelog::head_seq(&mut *reader).await?
                } else {
                    let (conn, head) = opening.writer().await?;
                    writer_conn = Some((conn, head));
                    head
                }
            }
        };
        drop(reader);
        let checkpoint_options = options.busy_timeout(checkpoint::BUSY_TIMEOUT);
        let shared = Arc::new(Shared::default());
        let (events, _) = broadcast::channel(config.writer.event_buffer.max(1));
        let (due, due_rx) = mpsc::channel(1);
        let progress = Arc::new(checkpoint::WalProgress::new(&db_file));
        let checkpointer = tokio::spawn(checkpoint::run(
            checkpoint_options,
            progress.clone(),
            due_rx,
            config.idle_checkpoint,
            id.to_string(),
        ));
        let (writer, task) = writer::spawn(
            writer_conn.map(|(conn, _)| conn),
            head,
            shared.clone(),
            events.clone(),
            (progress, due),
            config.writer.clone(),
            Storage {
                tenant: id.clone(),
                db_file: db_file.clone(),
                connect: writer_options,
                busy_timeout: config.busy_timeout,
                safeguards: safeguards.clone(),
            },
        );
        tracing::debug!(tenant = %id, head, "tenant opened");
        Ok(Arc::new(SqliteTenant {
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
            db_file,
            safeguards: safeguards.clone(),
            known_users: KnownProfiles::default(),
            snapshots: Snapshots::default(),
        }))
    }

    /// Whether the tenant's storage fails now (writes are refused until it recovers).
    pub(crate) fn storage_degraded(&self) -> bool {
        self.shared.health.get() == Condition::Degraded
    }

    /// Whether the tenant's database was found damaged (the tenant is quarantined).
    pub(crate) fn is_damaged(&self) -> bool {
        self.shared.health.get() == Condition::Damaged
    }

    /// Refuses everything once the database is known to be damaged.
    fn check_usable(&self) -> Result<()> {
        if !self.is_damaged() {
            return Ok(());
        }
        self.release_for_restore();
        Err(Error::Damaged {
            tenant: self.id.to_string(),
            detail: self
                .safeguards
                .quarantine
                .detail(&self.id)
                .unwrap_or_else(|| "the database was replaced since; reconnect".into()),
        })
    }

    /// A read's outcome: a damaged database found by a read quarantines the tenant.
    fn read<T>(&self, result: Result<T>) -> Result<T> {
        match result {
            Err(error @ Error::Damaged { .. }) => {
                let error = error.for_tenant(self.id.as_str());
                if let Error::Damaged { detail, .. } = &error {
                    self.safeguards
                        .quarantine
                        .add(&self.id, &self.db_file, detail);
                }
                self.shared.health.set_damaged();
                self.release_for_restore();
                Err(error)
            }
            other => other,
        }
    }

    /// A quarantined tenant lets go of its lock file (so that `pm-server restore` may replace
    /// the database while the server runs) and stops checkpointing the damaged file. Its
    /// writer refuses every write; the engine opens the tenant anew once the file is replaced.
    fn release_for_restore(&self) {
        drop(self.lock.lock().expect("lock is never poisoned").take());
        for task in self
            .tasks
            .lock()
            .expect("task lock is never poisoned")
            .iter()
            .skip(1)
        {
            task.abort();
        }
    }

    /// The engine's migrations generation this tenant was last brought to.
    pub(crate) fn schema_generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Drains the writer and applies `migrator`'s pending migrations (all or nothing).
    pub(crate) async fn migrate(
        &self,
        migrator: Arc<Migrator>,
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
            if deleted < retention::PRUNE_CHUNK {
                return Ok(total);
            }
        }
    }

    /// Waits until the writer has run the batches it owes after the writes already answered:
    /// the change log's pairs by actor, project and entity and the text waiting for the
    /// full-text indexes, each due once a commit crosses a multiple of its batch. The writer
    /// runs them by itself as soon as nothing is queued; this is for a caller about to read
    /// those tables directly (tests, a copy of the file).
    pub async fn run_owed_batches(&self) -> Result<()> {
        self.writer.run_owed_batches().await
    }

    /// The tenant's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The writer's counters.
    pub fn writer_stats(&self) -> &WriterStats {
        &self.shared.stats
    }

    /// Write jobs submitted and not yet answered.
    pub fn writes_in_flight(&self) -> u64 {
        self.shared.in_flight()
    }

    /// The read pool (read-only connections).
    pub fn read_pool(&self) -> &Readers {
        &self.read_pool
    }
}

/// `PRAGMA quick_check`: a damaged database is refused before it is served.
async fn quick_check(conn: &mut sqlx::SqliteConnection) -> Result<()> {
    let problems: Vec<String> = sqlx::query_scalar("PRAGMA quick_check")
        .fetch_all(&mut *conn)
        .await?;
    if problems == ["ok"] {
        return Ok(());
    }
    Err(Error::Damaged {
        tenant: String::new(),
        detail: format!("quick_check: {}", problems.join("; ")),
    })
}

/// What opening a tenant's write connection needs.
struct Opening<'a> {
    id: &'a TenantId,
    options: &'a SqliteConnectOptions,
    check: bool,
    schema: &'a Schema,
    migrator: &'a Migrator,
}

impl Opening<'_> {
    /// Connects the writer, checks the database if asked, brings it to the schema's
    /// migrations, and reads the head of its log.
    async fn writer(&self) -> Result<(SqliteConnection, u64)> {
        let mut conn = self.options.connect().await?;
        if self.check {
            quick_check(&mut conn).await?;
        }
        match migrations::apply(&mut conn, self.migrator).await {
            Ok(change) => self.schema.applied(&change),
            Err(error) if self.schema.beyond_embedded() => {
                // A migration from the directory failed (and was rolled back): serve on the
                // schema this binary needs rather than not at all.
                self.schema.failed(self.id, &error);
                migrations::apply(&mut conn, &migrations::baseline()).await?;
            }
            Err(error) => return Err(error),
        }
        let head = changelog::head_seq(&mut conn).await?;
        Ok((conn, head))
    }
}

/// What opening a tenant needs to know of its files before it connects.
struct OnDisk {
    /// Read-only connections can serve the database as it is: it exists, is in WAL mode
    /// already (setting the journal mode is a write), and its last connection closed it
    /// cleanly (its WAL is gone or empty: nothing to recover).
    readable_as_is: bool,
    /// The database file's size (0 if it does not exist yet).
    db_bytes: u64,
}

impl OnDisk {
    /// Looks at the files in one blocking task (each `tokio::fs` call would be one).
    async fn inspect(db_file: &Path) -> OnDisk {
        let db_file = db_file.to_owned();
        tokio::task::spawn_blocking(move || OnDisk::inspect_now(&db_file))
            .await
            .unwrap_or(OnDisk {
                readable_as_is: false,
                db_bytes: 0,
            })
    }

    fn inspect_now(db_file: &Path) -> OnDisk {
        use std::io::Read;
        // The header's file format write and read versions (bytes 18 and 19) are 2 in WAL
        // mode.
        let mut header = [0u8; 20];
        let (wal_mode, db_bytes) = match std::fs::File::open(db_file) {
            Ok(mut file) => (
                file.read_exact(&mut header).is_ok() && header[18..20] == [2, 2],
                file.metadata().map_or(0, |meta| meta.len()),
            ),
            Err(_) => (false, 0),
        };
        let wal_empty = match std::fs::metadata(checkpoint::wal_file(db_file)) {
            Ok(wal) => wal.len() == 0,
            Err(error) => error.kind() == std::io::ErrorKind::NotFound,
        };
        OnDisk {
            readable_as_is: wal_mode && wal_empty,
            db_bytes,
        }
    }
}

impl Resident for SqliteTenant {
    fn busy(&self) -> bool {
        self.shared.in_flight() > 0
    }

    /// Stops the writer (after it finishes what is queued) and the checkpointer, closes the
    /// read pool, and only then releases the lock file.
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
}

#[async_trait]
impl Tenant for SqliteTenant {
    fn id(&self) -> &TenantId {
        &self.id
    }

    fn head_seq(&self) -> u64 {
        self.shared.head.load(Ordering::Acquire)
    }

    fn observe_head(&self, seq: u64) {
        self.shared.head.fetch_max(seq, Ordering::AcqRel);
    }

    async fn execute(&self, actor: &UserId, command: v1::Command) -> Result<v1::CommandResult> {
        self.check_usable()?;
        self.writer.command(actor.clone(), command).await
    }

    async fn batch(&self, actor: &UserId, batch: v1::Batch) -> Result<v1::BatchResult> {
        self.check_usable()?;
        self.writer.batch(actor.clone(), batch).await
    }

    async fn query(&self, actor: &UserId, query: v1::Query) -> Result<v1::QueryResult> {
        self.check_usable()?;
        let answer = async {
            let mut reader = self.read_pool.acquire().await?;
            let mut tx = sqlx::Connection::begin(&mut *reader).await?;
            if text_index::reads_text(&query) && text_index::behind(&mut *tx).await? {
                // This snapshot holds text the index does not have yet: the writer indexes it
                // and answers.
                tx.rollback().await?;
                return Ok(Err(query));
            }
            let answer = queries::run(&mut tx, actor, query).await?;
            // Read-only: nothing to commit; ending the transaction releases the snapshot.
            tx.rollback().await?;
            Ok(Ok(answer))
        };
        match self.read(answer.await)? {
            Ok(answer) => Ok(answer),
            Err(query) => self.writer.index_and_query(actor.clone(), query).await,
        }
    }

    async fn read_events(
        &self,
        after: u64,
        until: Option<u64>,
        limit: u32,
        filter: &EventFilter,
    ) -> Result<Vec<StoredEvent>> {
        self.check_usable()?;
        let mut conn = self.read_pool.acquire().await?;
        self.read(replay::read_after(&mut conn, after, until, limit, filter).await)
    }

    async fn oldest_seq(&self) -> Result<Option<u64>> {
        self.check_usable()?;
        let oldest = async {
            let mut reader = self.read_pool.acquire().await?;
            changelog::oldest_seq(&mut *reader).await
        };
        self.read(oldest.await)
    }

    fn subscribe_commits(&self) -> broadcast::Receiver<Arc<[CommittedEvent]>> {
        self.events.subscribe()
    }

    async fn subscription_snapshot(&self, user: &UserId) -> Result<SubscriptionSnapshot> {
        self.check_usable()?;
        let read = |users: Vec<UserId>| async move {
            let mut conn = self.read_pool.acquire().await?;
            queries::subscription_snapshots(&mut conn, &users).await
        };
        self.read(self.snapshots.read(user, read).await)
    }

    async fn remember_user(&self, profile: &UserProfile) -> Result<()> {
        self.check_usable()?;
        let load = || async {
            let mut conn = self.read_pool.acquire().await?;
            self.read(people::known_users(&mut conn, KnownProfiles::LIMIT).await)
        };
        let write = || self.writer.remember_user(profile.clone());
        self.known_users.remember(profile, load, write).await
    }
}
