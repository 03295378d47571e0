//! The writer: one task per open tenant, owning the tenant's only write connection.
//!
//! Callers submit commands into a bounded queue and await the answer. The writer takes
//! everything queued (up to `max_group` jobs), applies it inside one `BEGIN IMMEDIATE`
//! transaction, appends the group's change-log rows with one multi-row insert, commits once,
//! and only then answers the callers and publishes the committed events in seq order.
//!
//! Every statement is a round trip to sqlx's SQLite thread, so the writer sends as few as it
//! can: the transaction is opened only when something needs it, new work items are inserted
//! together, and the end of the group (deferred inserts, change log, idempotency answers and
//! `COMMIT`, with `BEGIN` in front if nothing opened it yet) goes in one script. A group of
//! work-item creations is then a single round trip. The batches due every few hundred seqs (the
//! log's pairs, the waiting text) run after the answers, when nothing is queued (`batches`).
//!
//! One failing command fails alone: handlers validate before they write and write with a
//! single statement (SQLite undoes a failed statement by itself); the few that write more run
//! in a savepoint, as do atomic batches. If a group hits an unexpected storage error, it is
//! rolled back and replayed once with a savepoint around every command, so only the command
//! that caused it fails. `savepoint_per_command` makes that the normal mode (slower; kept to
//! measure the difference).
//!
//! Maintenance goes through the same queue as `Control` jobs, so it never competes with the
//! writer for SQLite's write lock: a control job runs after the group queued before it has
//! committed (the drain) and before anything queued after it (which waits in the queue). A
//! schema migration runs this way (see `migrations`), and so does change-log pruning, which
//! the writer also starts by itself every `retention.interval`, one bounded chunk between
//! groups at a time until nothing is left.

use pm_core::time::now_ms;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use pm_core::TenantId;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, SqliteConnection};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::batches::{Batches, Owed};
use super::checkpoint::{self, Due, WalProgress};
use super::commands::Cache;
use super::config::{self, WriterConfig};
use super::group::{exec, Group, Tx};
use super::health::{Condition, Health, Next, Safeguards};
use super::queue::{Job, Queued, Shared, WriterHandle};
use super::{changelog, idempotency, retention, text_index};
use crate::error::{Error, Result};
use crate::events::CommittedEvent;

mod maintenance;

/// Starts the writer task, whose log ends at `head`, on `conn`; with none, the writer
/// connects when it is first needed (a write, a control job or a pruning pass).
pub(crate) fn spawn(
    conn: Option<SqliteConnection>,
    head: u64,
    shared: Arc<Shared>,
    events: broadcast::Sender<Arc<[CommittedEvent]>>,
    checkpoint: (Arc<WalProgress>, mpsc::Sender<()>),
    config: WriterConfig,
    storage: Storage,
) -> (WriterHandle, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel(config.queue_capacity.max(1));
    shared.head.store(head, Ordering::Release);
    let handle = WriterHandle {
        tx,
        shared: shared.clone(),
    };
    // A root span: the writer outlives the connection that happened to open the tenant.
    let span = tracing::info_span!(parent: None, "writer", tenant = %storage.tenant);
    let task = async move {
        let mut tick = retention::timer(&config.retention);
        let mut queued = Vec::with_capacity(config.max_group);
        let (conn, prune_due) = match conn {
            Some(conn) => (conn, false),
            None => match connect_when_needed(&mut rx, &mut queued, &mut tick, &config, &storage)
                .await
            {
                Some(ready) => ready,
                // The tenant closed before anything needed its writer.
                None => return,
            },
        };
        let writer = Writer {
            conn,
            rx,
            cache: Cache::default(),
            head,
            owed: Owed::default(),
            shared,
            events,
            checkpoint,
            config,
            last_prune: 0,
            safeguards: storage.safeguards,
            max_page_count: None,
            health: Health::default(),
            connect: storage.connect,
            busy_timeout: storage.busy_timeout,
            restart_wal: false,
            db_file: storage.db_file,
            tenant: storage.tenant,
        };
        writer.run(queued, tick, prune_due).await;
    };
    (handle, tokio::spawn(task.instrument(span)))
}

/// Waits until the writer is first needed, then connects: returns the connection and whether
/// a pruning pass is due (else `queued` holds the work that arrived). Work that arrives while
/// connecting fails is refused with the failure, and the next work tries again. `None`: the
/// queue closed first.
async fn connect_when_needed(
    rx: &mut mpsc::Receiver<Queued>,
    queued: &mut Vec<Queued>,
    tick: &mut Option<tokio::time::Interval>,
    config: &WriterConfig,
    storage: &Storage,
) -> Option<(SqliteConnection, bool)> {
    loop {
        let prune_due = tokio::select! {
            received = rx.recv_many(queued, config.max_group) => {
                if received == 0 {
                    return None;
                }
                false
            }
            () = retention::next_tick(tick) => true,
        };
        match storage.connect.connect().await {
            Ok(conn) => return Some((conn, prune_due)),
            Err(error) => {
                let error = Error::from(error).for_tenant(storage.tenant.as_str());
                storage
                    .safeguards
                    .storage_faults
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "connecting the tenant's writer failed");
                let mut jobs = Vec::new();
                for item in queued.drain(..) {
                    match item {
                        Queued::Write(job) => jobs.push(job),
                        Queued::Control(control, _in_flight) => control.refuse(&error),
                    }
                }
                refuse(&mut jobs, &error);
            }
        }
    }
}

/// Where a writer writes, and what governs its storage.
#[derive(Debug)]
pub(crate) struct Storage {
    /// The tenant (for logs and for what a damaged database is reported as).
    pub(crate) tenant: TenantId,
    /// Its database file.
    pub(crate) db_file: PathBuf,
    /// How the writer (re)opens its connection.
    pub(crate) connect: SqliteConnectOptions,
    /// The busy timeout those options give it.
    pub(crate) busy_timeout: std::time::Duration,
    /// The size limit in force, where damaged tenants are reported, faults counted.
    pub(crate) safeguards: Arc<Safeguards>,
}

struct Writer {
    conn: SqliteConnection,
    rx: mpsc::Receiver<Queued>,
    cache: Cache,
    head: u64,
    /// Batches crossed by commits that did not run them (see `batches`).
    owed: Owed,
    shared: Arc<Shared>,
    events: broadcast::Sender<Arc<[CommittedEvent]>>,
    /// Counts commits for the checkpointer and wakes it when one is due.
    checkpoint: (Arc<WalProgress>, mpsc::Sender<()>),
    config: WriterConfig,
    last_prune: i64,
    /// The size limit in force (among the engine's safeguards), and the `max_page_count` this
    /// connection was given (`None`: not yet).
    safeguards: Arc<Safeguards>,
    max_page_count: Option<u64>,
    /// Storage faults being waited out.
    health: Health,
    /// How to open a fresh write connection, and the busy timeout it gets.
    connect: SqliteConnectOptions,
    busy_timeout: std::time::Duration,
    /// The WAL has grown too large: restart it after this group (see `checkpoint`).
    restart_wal: bool,
    db_file: PathBuf,
    tenant: TenantId,
}

/// How often expired idempotency answers are deleted, in milliseconds.
const PRUNE_INTERVAL_MS: i64 = 10 * 60 * 1000;

fn elapsed_micros(from: Instant, to: Instant) -> u64 {
    to.duration_since(from).as_micros() as u64
}

impl Writer {
    /// Serves the queue until it closes, starting with what is already `queued`.
    async fn run(
        mut self,
        mut queued: Vec<Queued>,
        mut tick: Option<tokio::time::Interval>,
        mut prune_due: bool,
    ) {
        let mut jobs = Vec::with_capacity(self.config.max_group);
        let retention = self.config.retention.clone();
        loop {
            if queued.is_empty() {
                if prune_due {
                    // Events are due for pruning: one chunk between groups until none is left.
                    prune_due = match self.prune(&retention, now_ms()).await {
                        Ok(deleted) => deleted == retention::PRUNE_CHUNK,
                        Err(error) => {
                            tracing::warn!(%error, "pruning the change log failed");
                            false
                        }
                    };
                }
                let owed = self.owed.get().any();
                tokio::select! {
                    biased;
                    received = self.rx.recv_many(&mut queued, self.config.max_group) => {
                        if received == 0 {
                            break;
                        }
                    }
                    // Nothing is queued: the batches the last commits crossed run now, their
                    // callers answered. Never into a faulty or damaged database: the next
                    // crossing owes them again.
                    () = std::future::ready(()), if owed => {
                        if self.shared.health.get() != Condition::Healthy {
                            self.owed.paid(self.owed.get());
                        } else if let Err(error) = self.pay_owed().await {
                            tracing::warn!(%error, "running the owed batches failed");
                        }
                        continue;
                    }
                    () = retention::next_tick(&mut tick), if !prune_due => {
                        prune_due = true;
                        continue;
                    }
                    () = std::future::ready(()), if prune_due => continue,
                }
            }
            // A panic here is a bug, but it must not take the tenant down with it: the group
            // is dropped (its callers are told the writer stopped and to retry) and the
            // connection is reopened before the next group.
            let handled = AssertUnwindSafe(self.handle(&mut queued, &mut jobs))
                .catch_unwind()
                .await;
            if handled.is_err() {
                tracing::error!("the writer failed unexpectedly; its group was not committed");
                queued.clear();
                jobs.clear();
                let fault = Error::StorageIo("the writer failed unexpectedly".into());
                self.health
                    .failed(&fault, tokio::time::Instant::now(), &self.shared.health);
            }
            // Let the callers just answered run and queue their next command before the queue
            // is drained again: larger groups, fewer commits per command.
            tokio::task::yield_now().await;
        }
        // What waits for the text indexes and an owed batch of the log's pairs go in before
        // the connection closes, unless the storage is at fault or damaged (a damaged file is
        // never written again).
        if self.shared.health.get() == Condition::Healthy {
            let log = self.owed.get().log;
            let ran = match text_index::behind(&mut self.conn).await {
                Ok(text) => Batches { log, text }.run(&mut self.conn).await,
                Err(error) => Err(error),
            };
            if let Err(error) = ran {
                tracing::warn!(%error, "running the waiting batches before closing failed");
            }
        }
        if let Err(e) = config::close(self.conn).await {
            tracing::warn!(error = %e, "closing the tenant's write connection failed");
        }
    }

    /// Commits the write jobs in `queued` in groups, and runs each control job after the
    /// jobs before it have committed and before those after it.
    async fn handle(&mut self, queued: &mut Vec<Queued>, jobs: &mut Vec<Job>) {
        for item in queued.drain(..) {
            match item {
                Queued::Write(job) => jobs.push(job),
                Queued::Control(control, _in_flight) => {
                    if !jobs.is_empty() {
                        self.process(jobs).await;
                    }
                    self.control(control).await;
                }
            }
        }
        if !jobs.is_empty() {
            self.process(jobs).await;
        }
    }

    /// Commits `jobs` (emptying it): in one transaction, replayed once with a savepoint per
    /// command after an unexpected error; every job is answered either way. While the storage
    /// is at fault, jobs are refused at once until the next try (see `health`).
    async fn process(&mut self, jobs: &mut Vec<Job>) {
        if self.max_page_count != Some(self.safeguards.size_limit.max_page_count()) {
            // More (or less) room: no need to wait for the next try.
            self.health.retry_now();
        }
        match self.health.next(tokio::time::Instant::now()) {
            Next::Write => {}
            Next::Refuse(error) => return refuse(jobs, &error),
            Next::Reopen => {
                if let Err(error) = self.reopen().await {
                    return self.fail_all(jobs, error).await;
                }
            }
        }
        if let Err(error) = self.apply_size_limit().await {
            return self.fail_all(jobs, error).await;
        }
        let now = now_ms();
        let safe = self.config.savepoint_per_command;
        let attempt = match self.attempt(jobs, now, safe).await {
            // Replaying with a savepoint per command finds the one command at fault; a storage
            // fault is nobody's, and would fail the replay as well.
            Err(error) if !safe && !error.is_storage_fault() => {
                tracing::warn!(%error, jobs = jobs.len(), "write group failed; replaying it with a savepoint per command");
                self.shared.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                self.attempt(jobs, now, true).await
            }
            other => other,
        };
        match attempt {
            Ok(group) => {
                if self.health.committed(&self.shared.health) {
                    tracing::info!("the tenant's storage takes writes again");
                }
                self.finish(group, jobs);
                if std::mem::take(&mut self.restart_wal) {
                    // Its callers have their answers; the next group waits for this.
                    // After the checkpointer's own checkpoint, if one is running.
                    let running = self.checkpoint.0.running.lock().await;
                    let restarted = checkpoint::restart(&mut self.conn, self.busy_timeout).await;
                    drop(running);
                    match restarted {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::debug!("WAL restart deferred: readers of older snapshots")
                        }
                        Err(error) => tracing::warn!(%error, "WAL restart checkpoint failed"),
                    }
                }
            }
            Err(error) => self.fail_all(jobs, error).await,
        }
    }

    /// Replaces the write connection with a fresh one and re-reads the head of the log: after
    /// a storage fault, nothing of the old connection's state is trusted.
    async fn reopen(&mut self) -> Result<()> {
        let mut conn = self.connect.connect().await?;
        let head = changelog::head_seq(&mut conn).await?;
        let old = std::mem::replace(&mut self.conn, conn);
        if let Err(error) = config::close(old).await {
            tracing::debug!(%error, "closing the write connection after a fault failed");
        }
        self.max_page_count = None;
        self.cache.clear();
        self.head = head;
        self.shared.head.store(head, Ordering::Release);
        Ok(())
    }

    /// Gives the connection the size limit in force, if it changed.
    async fn apply_size_limit(&mut self) -> Result<()> {
        let pages = self.safeguards.size_limit.max_page_count();
        if self.max_page_count != Some(pages) {
            exec(&mut self.conn, &format!("PRAGMA max_page_count = {pages}")).await?;
            self.max_page_count = Some(pages);
        }
        Ok(())
    }

    /// One transaction over all `jobs`, each answer filled in; rolled back on a storage
    /// failure.
    async fn attempt(&mut self, jobs: &mut [Job], now: i64, safe: bool) -> Result<Group> {
        let mut group = Group::new(self.head);
        match self.apply_all(&mut group, jobs, now, safe).await {
            Ok(()) => Ok(group),
            Err(error) => {
                self.cache.clear();
                if group.pending.begun {
                    // Fails harmlessly if a failed script never reached its BEGIN.
                    if let Err(e) = exec(&mut self.conn, "ROLLBACK").await {
                        tracing::debug!(error = %e, "rollback after a failed write group failed");
                    }
                }
                Err(error)
            }
        }
    }

    async fn apply_all(
        &mut self,
        group: &mut Group,
        jobs: &mut [Job],
        now: i64,
        safe: bool,
    ) -> Result<()> {
        let started = Instant::now();
        let mut tx = Tx {
            conn: &mut self.conn,
            cache: &mut self.cache,
            max_batch_commands: self.config.max_batch_commands,
        };
        for job in jobs.iter_mut() {
            group
                .apply(&mut tx, &job.actor, &mut job.work, now, safe)
                .await?;
        }
        if now - self.last_prune > PRUNE_INTERVAL_MS {
            group.pending.begin(&mut self.conn).await?;
            let pruned = idempotency::prune(&mut self.conn, now).await?;
            tracing::debug!(pruned, "expired idempotency answers deleted");
            self.last_prune = now;
        }
        let applied = Instant::now();
        self.shared
            .stats
            .apply_micros
            .fetch_add(elapsed_micros(started, applied), Ordering::Relaxed);
        let folded = self.owed.folded(group.base, group.head());
        group.commit(&mut self.conn, folded).await?;
        self.shared
            .stats
            .commit_micros
            .fetch_add(elapsed_micros(applied, Instant::now()), Ordering::Relaxed);
        Ok(())
    }

    /// After `COMMIT`: the new head, then the events in seq order, then the answers.
    fn finish(&mut self, group: Group, jobs: &mut Vec<Job>) {
        self.owed.committed(group.base, group.head());
        self.head = group.head();
        if group.pending.begun {
            self.count_commit(group.events.len() as u64);
        }
        self.shared.head.store(self.head, Ordering::Release);
        self.shared.stats.groups.fetch_add(1, Ordering::Relaxed);
        self.shared
            .stats
            .jobs
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        if let Some(committed) = group.committed() {
            // No receiver is fine: nobody is subscribed to this tenant.
            let _ = self.events.send(committed);
        }
        for job in jobs.drain(..) {
            job.answer();
        }
    }

    /// Counts a commit of `events` events for the checkpointer, waking it if one is due.
    fn count_commit(&mut self, events: u64) {
        match self.checkpoint.0.committed(events) {
            Due::Nothing => {}
            // A full channel already has a checkpoint coming.
            Due::Checkpoint => drop(self.checkpoint.1.try_send(())),
            // After the next group (see `process`).
            Due::Restart => self.restart_wal = true,
        }
    }

    async fn fail_all(&mut self, jobs: &mut Vec<Job>, error: Error) {
        let error = error.for_tenant(self.tenant.as_str());
        if let Error::Damaged { detail, .. } = &error {
            self.safeguards
                .quarantine
                .add(&self.tenant, &self.db_file, detail);
            self.health.damaged(&error, &self.shared.health);
        } else if error.is_storage_fault() {
            self.safeguards
                .storage_faults
                .fetch_add(1, Ordering::Relaxed);
            let now = tokio::time::Instant::now();
            if self.health.failed(&error, now, &self.shared.health) {
                tracing::warn!(%error, jobs = jobs.len(), "the tenant's storage fails; refusing writes until it recovers");
            }
        } else {
            tracing::error!(%error, jobs = jobs.len(), "write group failed; nothing was committed");
        }
        self.shared
            .stats
            .failed_groups
            .fetch_add(1, Ordering::Relaxed);
        self.cache.clear();
        // A failed COMMIT may or may not have landed: take the head from the log itself.
        match changelog::head_seq(&mut self.conn).await {
            Ok(head) => {
                self.head = head;
                self.shared.head.store(head, Ordering::Release);
            }
            Err(e) => tracing::error!(error = %e, "reading the head seq after a failure failed"),
        }
        // Every caller learns the storage's condition, or that the change was not stored.
        refuse(jobs, &error);
    }
}

/// Answers every job with `error` (the storage's condition, or that nothing was stored).
fn refuse(jobs: &mut Vec<Job>, error: &Error) {
    for mut job in jobs.drain(..) {
        job.work.fail(|| error.for_another_caller());
        job.answer();
    }
}
