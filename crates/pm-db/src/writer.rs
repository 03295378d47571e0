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
//! work-item creations is then a single round trip.
//!
//! One failing command fails alone: handlers validate before they write and write with a
//! single statement (SQLite undoes a failed statement by itself); the few that write more run
//! in a savepoint, as do atomic batches. If a group hits an unexpected storage error, it is
//! rolled back and replayed once with a savepoint around every command, so only the command
//! that caused it fails. `savepoint_per_command` makes that the normal mode (slower; kept to
//! measure the difference).
//!
//! Maintenance goes through the same queue as [`Control`] jobs, so it never competes with the
//! writer for SQLite's write lock: a control job runs after the group queued before it has
//! committed (the drain) and before anything queued after it (which waits in the queue). A
//! schema migration runs this way (see `migrations`), and so does change-log pruning, which
//! the writer also starts by itself every `retention.interval`, one bounded chunk between
//! groups at a time until nothing is left.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use pm_core::text;
use pm_core::UserId;
use pm_proto::v1;
use sqlx::migrate::Migrator;
use sqlx::SqliteConnection;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Interval, MissedTickBehavior};

use crate::changelog::{self, CommittedEvent, PendingEvent, Retention};
use crate::checkpoint::WalProgress;
use crate::commands::{self, Applied, Cache, Cx, Pending};
use crate::error::{Error, Result};
use crate::idempotency;
use crate::migrations::{self, SchemaChange};
use crate::records::{self, Record};

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

/// Counters of a tenant's writer.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub groups: AtomicU64,
    /// Jobs (commands or batches) answered from committed transactions.
    pub jobs: AtomicU64,
    /// Groups replayed with a savepoint per command after an unexpected error.
    pub fallbacks: AtomicU64,
    /// Groups that failed as a whole (every caller got `UNAVAILABLE`).
    pub failed_groups: AtomicU64,
    /// Time spent applying commands (validation, reads, in-group writes), microseconds.
    pub apply_micros: AtomicU64,
    /// Time spent in the end-of-group script (deferred inserts, change log, commit),
    /// microseconds.
    pub commit_micros: AtomicU64,
    /// Change-log events deleted by retention.
    pub pruned_events: AtomicU64,
}

/// State the writer shares with readers of the tenant.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// The latest committed seq.
    pub(crate) head: AtomicU64,
    /// Jobs submitted and not yet answered (queued or being applied).
    pub(crate) in_flight: AtomicU64,
    /// Migrations queued or running: while there are any, a full queue makes callers wait
    /// for room instead of answering `UNAVAILABLE`.
    pub(crate) migrations: AtomicU64,
    pub(crate) stats: WriterStats,
}

/// What a caller asks of the writer.
#[derive(Debug)]
pub(crate) enum Work {
    Command(Box<v1::Command>),
    Batch(v1::Batch),
}

/// The writer's answer.
#[derive(Debug)]
pub(crate) enum Answer {
    Command(Box<Result<v1::CommandResult>>),
    Batch(Result<v1::BatchResult>),
}

#[derive(Debug)]
struct Job {
    actor: UserId,
    work: Work,
    reply: oneshot::Sender<Answer>,
}

/// Maintenance run by the writer between groups, in queue order.
#[derive(Debug)]
pub(crate) enum Control {
    /// Delete at most one chunk of the change log that `retention` no longer covers, as of
    /// `now` (Unix ms); answers how many events were deleted.
    Prune {
        retention: Retention,
        now: i64,
        reply: oneshot::Sender<Result<u64>>,
    },
    /// Apply the pending migrations of `migrator` in one transaction (all or nothing).
    Migrate {
        migrator: Arc<Migrator>,
        reply: oneshot::Sender<Result<SchemaChange>>,
    },
}

#[derive(Debug)]
enum Queued {
    Write(Job),
    Control(Control),
}

/// The sending side of a writer's queue.
#[derive(Debug, Clone)]
pub(crate) struct WriterHandle {
    tx: mpsc::Sender<Queued>,
    shared: Arc<Shared>,
}

impl WriterHandle {
    /// Queues `work` and waits for its answer. A full queue is `UNAVAILABLE` at once, unless a
    /// migration is draining the writer: then the caller waits for room (its session's
    /// in-flight limit bounds how many wait), so that a migration never fails a command.
    pub(crate) async fn submit(&self, actor: UserId, work: Work) -> Result<Answer> {
        let (reply, answer) = oneshot::channel();
        self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        let queued = match self.tx.try_send(Queued::Write(Job { actor, work, reply })) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(job))
                if self.shared.migrations.load(Ordering::Acquire) > 0 =>
            {
                self.tx
                    .send(job)
                    .await
                    .map_err(|_| Error::Unavailable("the tenant is closing; retry".into()))
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(Error::Unavailable(
                "the tenant's write queue is full; retry shortly".into(),
            )),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(Error::Unavailable("the tenant is closing; retry".into()))
            }
        };
        // Not queued: not in flight either.
        queued.inspect_err(|_| {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        })?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the tenant's writer stopped; retry".into()))
    }

    /// Queues a control job, waiting for room if the queue is full. It counts as in flight
    /// (the tenant is not idle) until the writer has run it.
    async fn control(&self, control: Control) -> Result<()> {
        self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        self.tx.send(Queued::Control(control)).await.map_err(|_| {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            Error::Unavailable("the tenant is closing".into())
        })
    }

    /// Deletes at most one chunk of the change log that `retention` no longer covers.
    pub(crate) async fn prune(&self, retention: Retention, now: i64) -> Result<u64> {
        let (reply, answer) = oneshot::channel();
        self.control(Control::Prune {
            retention,
            now,
            reply,
        })
        .await?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the tenant's writer stopped".into()))?
    }

    /// Drains the writer and applies the pending migrations of `migrator` in one
    /// transaction; commands sent meanwhile wait in the queue.
    pub(crate) async fn migrate(&self, migrator: Arc<Migrator>) -> Result<SchemaChange> {
        let (reply, answer) = oneshot::channel();
        self.shared.migrations.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = self.control(Control::Migrate { migrator, reply }).await {
            self.shared.migrations.fetch_sub(1, Ordering::AcqRel);
            return Err(e);
        }
        // The writer lowers `migrations` once it has run the job.
        answer
            .await
            .map_err(|_| Error::Unavailable("the tenant's writer stopped".into()))?
    }

    /// Jobs submitted and not yet answered.
    pub(crate) fn in_flight(&self) -> u64 {
        self.shared.in_flight.load(Ordering::Acquire)
    }
}

/// Starts the writer task on `conn`, whose log ends at `head`.
pub(crate) fn spawn(
    conn: SqliteConnection,
    head: u64,
    shared: Arc<Shared>,
    events: broadcast::Sender<Arc<[CommittedEvent]>>,
    checkpoint: (Arc<WalProgress>, mpsc::Sender<()>),
    config: WriterConfig,
) -> (WriterHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
    shared.head.store(head, Ordering::Release);
    let handle = WriterHandle {
        tx,
        shared: shared.clone(),
    };
    let writer = Writer {
        conn,
        rx,
        cache: Cache::default(),
        head,
        shared,
        events,
        checkpoint,
        config,
        last_prune: 0,
    };
    (handle, tokio::spawn(writer.run()))
}

struct Writer {
    conn: SqliteConnection,
    rx: mpsc::Receiver<Queued>,
    cache: Cache,
    head: u64,
    shared: Arc<Shared>,
    events: broadcast::Sender<Arc<[CommittedEvent]>>,
    /// Counts commits for the checkpointer and wakes it when one is due.
    checkpoint: (Arc<WalProgress>, mpsc::Sender<()>),
    config: WriterConfig,
    last_prune: i64,
}

/// How often expired idempotency answers are deleted, in milliseconds.
const PRUNE_INTERVAL_MS: i64 = 10 * 60 * 1000;
/// The shortest change-log pruning interval (a zero interval would spin).
const MIN_PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// The next tick of the pruning timer; never, without one.
async fn next_tick(tick: &mut Option<Interval>) {
    match tick {
        Some(tick) => {
            tick.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A group's uncommitted output.
struct Group {
    base: u64,
    events: Vec<PendingEvent>,
    answers: Vec<idempotency::Entry>,
    /// Inside an atomic batch's savepoint: nothing may be deferred past its end.
    in_savepoint: bool,
    /// Whether the transaction is open, and the deferred work item inserts.
    pending: Pending,
}

impl Group {
    fn new(base: u64) -> Self {
        Group {
            base,
            events: Vec::new(),
            answers: Vec::new(),
            in_savepoint: false,
            pending: Pending::default(),
        }
    }

    fn next_seq(&self) -> u64 {
        self.base + self.events.len() as u64 + 1
    }

    fn mark(&self) -> (usize, usize) {
        (self.events.len(), self.answers.len())
    }

    fn rollback_to(&mut self, (events, answers): (usize, usize)) {
        self.events.truncate(events);
        self.answers.truncate(answers);
    }

    /// Numbers the changes of a successful command and builds its result.
    fn push(&mut self, actor: &UserId, now: i64, applied: Applied) -> v1::CommandResult {
        for change in applied.changes {
            let seq = self.next_seq();
            self.events
                .push(PendingEvent::new(seq, now, actor.as_str(), change));
        }
        v1::CommandResult {
            seq: self.base + self.events.len() as u64,
            entity: Some(v1::Entity::of(applied.entity)),
            replayed: false,
        }
    }

    /// Writes what is left and commits, in one script (one round trip): `BEGIN` if the
    /// transaction is not open yet, the deferred inserts, the change log, the idempotency
    /// answers, `COMMIT`.
    async fn commit(&mut self, conn: &mut SqliteConnection) -> Result<()> {
        let items = std::mem::take(&mut self.pending.items);
        let nothing_written = items.is_empty() && self.events.is_empty() && self.answers.is_empty();
        if nothing_written && !self.pending.begun {
            return Ok(());
        }
        let mut sql = String::new();
        if !self.pending.begun {
            sql.push_str("BEGIN IMMEDIATE;\n");
            // From here on a failure must roll back.
            self.pending.begun = true;
        }
        for chunk in items.chunks(records::rows_per_insert::<v1::WorkItem>()) {
            sql.push_str(&records::insert_many_sql::<v1::WorkItem>(chunk.len()));
            sql.push_str(";\n");
        }
        for chunk in self.events.chunks(changelog::ROWS_PER_INSERT) {
            sql.push_str(&changelog::append_sql(chunk.len()));
            sql.push_str(";\n");
        }
        for chunk in self.answers.chunks(idempotency::ROWS_PER_INSERT) {
            sql.push_str(&idempotency::store_sql(chunk.len()));
            sql.push_str(";\n");
        }
        sql.push_str("COMMIT");
        // sqlx hands the arguments to the script's statements in order.
        let mut query = sqlx::query(&sql);
        for item in &items {
            query = item.bind(query);
        }
        for event in &self.events {
            query = changelog::bind(query, event);
        }
        for answer in &self.answers {
            query = idempotency::bind(query, answer);
        }
        query.execute(&mut *conn).await?;
        Ok(())
    }
}

/// A command's own outcome; the outer `Result` of the functions below is a storage failure
/// that dooms the whole attempt.
type Outcome = Result<v1::CommandResult>;

fn elapsed_micros(from: Instant, to: Instant) -> u64 {
    to.duration_since(from).as_micros() as u64
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

async fn exec(conn: &mut SqliteConnection, sql: &str) -> Result<()> {
    sqlx::query(sql).execute(conn).await?;
    Ok(())
}

impl Writer {
    async fn run(mut self) {
        let mut queued = Vec::with_capacity(self.config.max_group);
        let mut jobs = Vec::with_capacity(self.config.max_group);
        let retention = self.config.retention.clone();
        let mut tick = (!retention.keeps_everything()).then(|| {
            let period = retention.interval.max(MIN_PRUNE_INTERVAL);
            // The first pass one period after the tenant opened, not at once: opening many
            // tenants does not start as many pruning passes.
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            tick
        });
        // Events are due for pruning: one chunk between groups until none is left.
        let mut prune_due = false;
        loop {
            if prune_due {
                prune_due = match self.prune(&retention, now_ms()).await {
                    Ok(deleted) => deleted == changelog::PRUNE_CHUNK,
                    Err(error) => {
                        tracing::warn!(%error, "pruning the change log failed");
                        false
                    }
                };
            }
            tokio::select! {
                biased;
                received = self.rx.recv_many(&mut queued, self.config.max_group) => {
                    if received == 0 {
                        break;
                    }
                    self.handle(&mut queued, &mut jobs).await;
                    // Let the callers just answered run and queue their next command before
                    // the queue is drained again: larger groups, fewer commits per command.
                    tokio::task::yield_now().await;
                }
                () = next_tick(&mut tick), if !prune_due => prune_due = true,
                () = std::future::ready(()), if prune_due => {}
            }
        }
        if let Err(e) = sqlx::Connection::close(self.conn).await {
            tracing::warn!(error = %e, "closing the tenant's write connection failed");
        }
    }

    /// Commits the write jobs in `queued` in groups, and runs each control job after the
    /// jobs before it have committed and before those after it.
    async fn handle(&mut self, queued: &mut Vec<Queued>, jobs: &mut Vec<Job>) {
        for item in queued.drain(..) {
            match item {
                Queued::Write(job) => jobs.push(job),
                Queued::Control(control) => {
                    if !jobs.is_empty() {
                        self.process(jobs).await;
                        jobs.clear();
                    }
                    self.control(control).await;
                    self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        if !jobs.is_empty() {
            self.process(jobs).await;
            jobs.clear();
        }
    }

    async fn control(&mut self, control: Control) {
        match control {
            Control::Prune {
                retention,
                now,
                reply,
            } => {
                let _ = reply.send(self.prune(&retention, now).await);
            }
            Control::Migrate { migrator, reply } => {
                let result = migrations::apply(&mut self.conn, &migrator).await;
                // A new schema may change what the cached reads would return.
                self.cache.clear();
                self.shared.migrations.fetch_sub(1, Ordering::AcqRel);
                let _ = reply.send(result);
            }
        }
    }

    async fn prune(&mut self, retention: &Retention, now: i64) -> Result<u64> {
        let deleted = changelog::prune(
            &mut self.conn,
            retention,
            self.head,
            now,
            changelog::PRUNE_CHUNK,
        )
        .await?;
        if deleted > 0 {
            tracing::debug!(deleted, "change-log events pruned");
            self.shared
                .stats
                .pruned_events
                .fetch_add(deleted, Ordering::Relaxed);
        }
        Ok(deleted)
    }

    async fn process(&mut self, jobs: &mut Vec<Job>) {
        let now = now_ms();
        let safe = self.config.savepoint_per_command;
        let attempt = match self.attempt(jobs, now, safe).await {
            Err(error) if !safe => {
                tracing::warn!(%error, jobs = jobs.len(), "write group failed; replaying it with a savepoint per command");
                self.shared.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                self.attempt(jobs, now, true).await
            }
            other => other,
        };
        match attempt {
            Ok((group, answers)) => self.finish(group, jobs, answers),
            Err(error) => self.fail_all(jobs, error).await,
        }
    }

    /// One transaction over all `jobs`; rolled back on a storage failure.
    async fn attempt(
        &mut self,
        jobs: &[Job],
        now: i64,
        safe: bool,
    ) -> Result<(Group, Vec<Answer>)> {
        let mut group = Group::new(self.head);
        let result = self.apply_all(&mut group, jobs, now, safe).await;
        match result {
            Ok(answers) => Ok((group, answers)),
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
        jobs: &[Job],
        now: i64,
        safe: bool,
    ) -> Result<Vec<Answer>> {
        let started = Instant::now();
        let mut answers = Vec::with_capacity(jobs.len());
        for job in jobs {
            let answer = match &job.work {
                Work::Command(command) => Answer::Command(Box::new(
                    self.command(group, &job.actor, command, now, safe).await?,
                )),
                Work::Batch(batch) => {
                    Answer::Batch(self.batch(group, &job.actor, batch, now, safe).await?)
                }
            };
            answers.push(answer);
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
        group.commit(&mut self.conn).await?;
        self.shared
            .stats
            .commit_micros
            .fetch_add(elapsed_micros(applied, Instant::now()), Ordering::Relaxed);
        Ok(answers)
    }

    /// Applies one command. `Ok(Err(_))` is the command's own failure.
    async fn command(
        &mut self,
        group: &mut Group,
        actor: &UserId,
        command: &v1::Command,
        now: i64,
        savepoint: bool,
    ) -> Result<Outcome> {
        let Some(kind) = &command.kind else {
            return Ok(Err(Error::invalid(
                "kind",
                "the command names no operation",
            )));
        };
        let key = command.idempotency_key.as_str();
        let hash = if key.is_empty() {
            None
        } else {
            if let Err(e) = text::idempotency_key("idempotency_key", key) {
                return Ok(Err(e.into()));
            }
            let hash = idempotency::command_hash(command);
            let earlier = group
                .answers
                .iter()
                .find(|a| a.user_id == actor.as_str() && a.key == key)
                .map(|a| (a.command_hash, a.result.clone()));
            let earlier = match earlier {
                Some(found) => Some(found),
                None => idempotency::lookup(&mut self.conn, actor.as_str(), key, now).await?,
            };
            if let Some((stored_hash, result)) = earlier {
                return Ok(replay(stored_hash, hash, result));
            }
            Some(hash)
        };

        let savepoint = savepoint || commands::needs_savepoint(kind);
        let defer = !savepoint && !group.in_savepoint && commands::defers_writes(kind);
        if !defer {
            group.pending.flush(&mut self.conn).await?;
            group.pending.begin(&mut self.conn).await?;
        }
        if savepoint {
            exec(&mut self.conn, "SAVEPOINT command").await?;
        }
        let next_seq = group.next_seq();
        let mut cx = Cx {
            conn: &mut self.conn,
            cache: &mut self.cache,
            actor,
            now,
            next_seq,
            deferred: defer.then_some(&mut group.pending),
        };
        match commands::apply(&mut cx, kind).await {
            Ok(applied) => {
                if savepoint {
                    exec(&mut self.conn, "RELEASE command").await?;
                }
                let result = group.push(actor, now, applied);
                if let Some(command_hash) = hash {
                    group.answers.push(idempotency::Entry {
                        user_id: actor.as_str().to_owned(),
                        key: key.to_owned(),
                        created_at: now,
                        command_hash,
                        result: result.clone(),
                    });
                }
                Ok(Ok(result))
            }
            Err(error) if savepoint => {
                exec(&mut self.conn, "ROLLBACK TO command").await?;
                exec(&mut self.conn, "RELEASE command").await?;
                self.cache.clear();
                if error.is_internal() {
                    tracing::error!(%error, "command failed on a storage error");
                }
                Ok(Err(error))
            }
            // Without a savepoint an unexpected error may have left the transaction in an
            // unknown state: give up on this attempt.
            Err(error) if error.is_internal() => Err(error),
            Err(error) => Ok(Err(error)),
        }
    }

    async fn batch(
        &mut self,
        group: &mut Group,
        actor: &UserId,
        batch: &v1::Batch,
        now: i64,
        safe: bool,
    ) -> Result<Result<v1::BatchResult>> {
        if batch.commands.is_empty() {
            return Ok(Err(Error::invalid(
                "commands",
                "a batch needs at least one command",
            )));
        }
        if batch.commands.len() > self.config.max_batch_commands {
            return Ok(Err(Error::TooLarge(format!(
                "a batch holds at most {} commands",
                self.config.max_batch_commands
            ))));
        }
        if !batch.atomic {
            let mut outcomes = Vec::with_capacity(batch.commands.len());
            for (i, command) in batch.commands.iter().enumerate() {
                let outcome = self.command(group, actor, command, now, safe).await?;
                outcomes.push(outcome_of(
                    outcome.map_err(|e| e.with_field_prefix(&format!("commands[{i}]"))),
                ));
            }
            return Ok(Ok(v1::BatchResult { outcomes }));
        }

        group.pending.flush(&mut self.conn).await?;
        group.pending.begin(&mut self.conn).await?;
        exec(&mut self.conn, "SAVEPOINT batch").await?;
        let mark = group.mark();
        group.in_savepoint = true;
        let mut outcomes = Vec::with_capacity(batch.commands.len());
        for (i, command) in batch.commands.iter().enumerate() {
            let failure = match self.command(group, actor, command, now, false).await {
                Ok(Ok(result)) => {
                    outcomes.push(outcome_of(Ok(result)));
                    continue;
                }
                Ok(Err(error)) => error,
                Err(error) if safe => error,
                Err(error) => {
                    group.in_savepoint = false;
                    return Err(error);
                }
            };
            group.in_savepoint = false;
            exec(&mut self.conn, "ROLLBACK TO batch").await?;
            exec(&mut self.conn, "RELEASE batch").await?;
            group.rollback_to(mark);
            self.cache.clear();
            return Ok(Err(failure.with_field_prefix(&format!("commands[{i}]"))));
        }
        group.in_savepoint = false;
        exec(&mut self.conn, "RELEASE batch").await?;
        Ok(Ok(v1::BatchResult { outcomes }))
    }

    fn finish(&mut self, group: Group, jobs: &mut Vec<Job>, answers: Vec<Answer>) {
        self.head = group.base + group.events.len() as u64;
        if group.pending.begun && self.checkpoint.0.committed() {
            // A full channel already has a checkpoint coming.
            let _ = self.checkpoint.1.try_send(());
        }
        self.shared.head.store(self.head, Ordering::Release);
        self.shared.stats.groups.fetch_add(1, Ordering::Relaxed);
        self.shared
            .stats
            .jobs
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        if !group.events.is_empty() {
            let committed: Arc<[CommittedEvent]> =
                group.events.iter().map(CommittedEvent::from).collect();
            // No receiver is fine: nobody is subscribed to this tenant.
            let _ = self.events.send(committed);
        }
        for (job, answer) in jobs.drain(..).zip(answers) {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            // The caller may have gone away; its change is committed all the same.
            let _ = job.reply.send(answer);
        }
    }

    async fn fail_all(&mut self, jobs: &mut Vec<Job>, error: Error) {
        tracing::error!(%error, jobs = jobs.len(), "write group failed; nothing was committed");
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
        for job in jobs.drain(..) {
            let unavailable = || Error::Unavailable("the change could not be stored; retry".into());
            let answer = match job.work {
                Work::Command(_) => Answer::Command(Box::new(Err(unavailable()))),
                Work::Batch(_) => Answer::Batch(Err(unavailable())),
            };
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            let _ = job.reply.send(answer);
        }
    }
}

fn replay(stored_hash: i64, hash: i64, mut result: v1::CommandResult) -> Outcome {
    if stored_hash != hash {
        return Err(Error::invalid(
            "idempotency_key",
            "was already used for a different command",
        ));
    }
    result.replayed = true;
    Ok(result)
}

fn outcome_of(outcome: Outcome) -> v1::CommandOutcome {
    v1::CommandOutcome {
        outcome: Some(match outcome {
            Ok(result) => v1::command_outcome::Outcome::CommandResult(result),
            Err(error) => v1::command_outcome::Outcome::Error(error.to_wire()),
        }),
    }
}
