//! A PostgreSQL tenant's writer on this node: one task that takes queued commands and batches
//! and commits them in groups, one transaction per group.
//!
//! Every group starts by locking the tenant's counter row (`tenant_head ... FOR UPDATE`), so
//! the writers of one tenant on all nodes take turns for the whole transaction: each applies
//! its commands to the state the previous one committed, exactly as the single writer of a
//! SQLite tenant does, and its seqs follow the previous group's without a gap. When the head
//! it finds is not the one it left, another node wrote: the facts it caches that those changes
//! touched are forgotten, as their change-log rows tell.
//!
//! A group is first applied as SQLite applies it: savepoints only for the commands that may
//! fail after writing, and the rows of simple creates gathered into multi-row inserts; one
//! round trip per command where every command in a savepoint takes three. A failed statement
//! aborts a PostgreSQL transaction, though, so if any command fails, that attempt is rolled
//! back and the group applied again with every command in a savepoint, where one command's
//! failure is its own. A failure of the storage fails the whole group: nothing of it was
//! committed, and every caller is told so (`UNAVAILABLE`, retryable).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pm_core::kinds::EntityKind;
use pm_core::time::now_ms;
use pm_core::{TenantId, UserId};
use pm_proto::v1;
use prost::Message;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::{Executor, Postgres, Row};
use tokio::sync::{broadcast, mpsc};

use super::changelog::append_events;
use super::connections::{Connections, KEEP_IDLE};
use super::sql::commands::Cache;
use super::sql::group::{exec, Group, Tx};
use super::sql::{idempotency, retention};
use super::{mapped, PgResultExt};
use crate::error::{Error, Result};
use crate::events::{CommittedEvent, Retention};
use crate::sqlite::WriterConfig;
use crate::work::Work;

/// Changes of other nodes read to keep the cache (see `Writer::forget_others`); after more,
/// it is dropped.
const FORGET_READ_LIMIT: u64 = 1_000;

/// The facts of a change-log row read by `Writer::forget_others`: its kind, project and
/// entity, and the work item it created, if it created one. `None` if unreadable.
fn logged_change(row: &PgRow) -> Option<(EntityKind, String, String, Option<v1::WorkItem>)> {
    let kind = EntityKind::parse("entity_type", row.try_get("entity_type").ok()?).ok()?;
    let created = match row.try_get::<Option<Vec<u8>>, _>("created").ok()? {
        Some(bytes) => match v1::Event::decode(bytes.as_slice()).ok()?.change {
            Some(v1::event::Change::WorkItem(item)) => Some(item),
            _ => return None,
        },
        None => None,
    };
    Some((
        kind,
        row.try_get("project_id").ok()?,
        row.try_get("entity_id").ok()?,
        created,
    ))
}

/// Forgets from `cache` what one change committed by another node may have made stale, as
/// its change-log row tells it: a project's facts and lanes, one member's role, a project's
/// lanes, or the next item number (kept, and moved past the new item's, when `created` is
/// the created work item).
fn forget_change(
    cache: &mut Cache,
    kind: EntityKind,
    project_id: &str,
    entity_id: &str,
    created: Option<&v1::WorkItem>,
) {
    match kind {
        EntityKind::Project => {
            cache.projects.remove(project_id);
            cache.lanes.remove(project_id);
        }
        // A member's entity id is the user's.
        EntityKind::ProjectMember => {
            cache
                .roles
                .remove(&(project_id.to_owned(), entity_id.to_owned()));
        }
        EntityKind::SwimLane => {
            cache.lanes.remove(project_id);
        }
        EntityKind::WorkItem => {
            // Only a create takes a number; another change of an item leaves them be.
            if let Some(item) = created {
                if let Some(next) = cache.next_numbers.get_mut(project_id) {
                    *next = (*next).max(item.number + 1);
                }
            }
        }
        _ => {}
    }
}

/// A queued job.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) actor: UserId,
    pub(crate) work: Work,
}

/// Counters of a tenant's writer on this node.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Transactions committed.
    pub(crate) groups: AtomicU64,
    /// Jobs answered from committed transactions.
    pub(crate) jobs: AtomicU64,
    /// Jobs waiting or being applied.
    pub(crate) in_flight: AtomicU64,
    /// Change-log events this node's writer pruned.
    pub(crate) pruned: AtomicU64,
}

/// The writer task's state.
pub(crate) struct Writer {
    pub(crate) tenant: TenantId,
    /// Begins a group's transaction, scoped to the tenant.
    pub(crate) begin: String,
    pub(crate) connections: Connections,
    /// The connection of the last group, kept while the writer stays busy (see
    /// [`super::connections`]).
    pub(crate) held: Option<PoolConnection<Postgres>>,
    pub(crate) config: WriterConfig,
    /// The head this node knows of, shared with its tenant: its commits, and other nodes'
    /// as relayed ([`Tenant::observe_head`](crate::Tenant::observe_head)).
    pub(crate) head: Arc<AtomicU64>,
    /// The head as of this writer's last group: when the counter row shows another, another
    /// node wrote in between.
    pub(crate) written: u64,
    pub(crate) events: broadcast::Sender<Arc<[CommittedEvent]>>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) cache: Cache,
    /// When expired idempotency answers were last deleted, Unix ms.
    pub(crate) last_prune: i64,
}

/// How often a writer deletes expired idempotency answers.
const PRUNE_INTERVAL_MS: i64 = 10 * 60 * 1000;

impl Writer {
    /// Commits queued jobs in groups until every sender is gone; between groups, prunes
    /// the change log as the retention settings say (one bounded chunk at a time).
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut jobs = Vec::with_capacity(self.config.max_group);
        let retention = self.config.retention.clone();
        let mut tick = retention::timer(&retention);
        let mut prune_due = false;
        let wanted = self.connections.wanted();
        loop {
            if prune_due {
                prune_due = match self.prune(&retention).await {
                    Ok(deleted) => deleted == retention::PRUNE_CHUNK,
                    Err(error) => {
                        tracing::warn!(tenant = %self.tenant, %error, "pruning the change log failed");
                        false
                    }
                };
            }
            tokio::select! {
                biased;
                received = rx.recv_many(&mut jobs, self.config.max_group.max(1)) => {
                    if received == 0 {
                        break;
                    }
                    self.process(&mut jobs).await;
                    // Let the callers just answered queue their next command: larger groups.
                    tokio::task::yield_now().await;
                }
                () = retention::next_tick(&mut tick), if !prune_due => prune_due = true,
                () = std::future::ready(()), if prune_due => {}
                () = wanted.notified(), if self.held.is_some() => self.held = None,
                () = tokio::time::sleep(KEEP_IDLE), if self.held.is_some() => self.held = None,
            }
        }
    }

    /// Deletes one chunk of the events retention no longer covers, in a transaction of its
    /// own; how many. Every node's writer of the tenant may do it: what one deleted, the
    /// others find gone.
    async fn prune(&mut self, retention: &Retention) -> Result<u64> {
        let mut conn = self.connections.acquire().await?;
        (&mut *conn).execute(self.begin.as_str()).await.pg()?;
        let pruned = async {
            let head = super::changelog::head_seq(&mut conn).await?;
            retention::prune(&mut conn, retention, head, now_ms(), retention::PRUNE_CHUNK)
                .await
                .map_err(mapped)
        }
        .await;
        let end = if pruned.is_ok() { "COMMIT" } else { "ROLLBACK" };
        (&mut *conn).execute(end).await.pg()?;
        if let Ok(deleted) = pruned {
            self.stats.pruned.fetch_add(deleted, Ordering::Relaxed);
        }
        pruned
    }

    /// Commits `jobs` (emptying it) in one transaction; every job is answered either way.
    async fn process(&mut self, jobs: &mut Vec<Job>) {
        let now = now_ms();
        // First without a savepoint per command: one round trip per command instead of
        // three. A failed statement aborts a PostgreSQL transaction, so if any command fails
        // (or a storage error hits one), that attempt is rolled back and the group is applied
        // again with every command in a savepoint, where one command's failure is its own.
        let attempt = match self.attempt(jobs, now, false).await {
            Ok(Some(group)) => Ok(group),
            Err(error @ Error::Unavailable(_)) => Err(error),
            Ok(None) | Err(_) => {
                self.cache.clear();
                tracing::debug!(tenant = %self.tenant, jobs = jobs.len(), "a command failed; the group is applied again with savepoints");
                match self.attempt(jobs, now, true).await {
                    Ok(group) => Ok(group.expect("a group with savepoints always commits")),
                    Err(error) => Err(error),
                }
            }
        };
        match attempt {
            Ok(group) => {
                self.written = group.head();
                self.head.fetch_max(self.written, Ordering::AcqRel);
                self.stats.groups.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .jobs
                    .fetch_add(jobs.len() as u64, Ordering::Relaxed);
                if let Some(committed) = group.committed() {
                    // No receiver is fine: nobody on this node follows the tenant.
                    let _ = self.events.send(committed);
                }
                self.answer(jobs);
            }
            Err(error) => {
                self.cache.clear();
                let error = mapped(error);
                if !matches!(error, Error::Unavailable(_)) {
                    tracing::error!(tenant = %self.tenant, %error, jobs = jobs.len(), "write group failed; nothing was committed");
                }
                for job in jobs.iter_mut() {
                    job.work.fail(|| error.for_another_caller());
                }
                self.answer(jobs);
            }
        }
    }

    /// Sends every job's answer (emptying `jobs`), having first stopped counting them as in
    /// flight: a caller may act on its answer at once (close the tenant, as a client leaving
    /// does) and must then find the tenant idle. Its `Arc` keeps the tenant open meanwhile.
    fn answer(&self, jobs: &mut Vec<Job>) {
        self.stats
            .in_flight
            .fetch_sub(jobs.len() as u64, Ordering::AcqRel);
        for job in jobs.drain(..) {
            job.work.send();
        }
    }

    /// Another node committed `(self.written, head]` since this writer last did: forgets what
    /// those changes made stale, read from their change-log rows in one query, instead of
    /// everything (which cost each group a statement per cached fact on a cluster). Drops
    /// the whole cache when they are too many to read or are no longer all in the log.
    async fn forget_others(
        &mut self,
        conn: &mut PoolConnection<Postgres>,
        head: u64,
    ) -> Result<()> {
        let written = self.written;
        // Cleared first: if the read fails, nothing stale stays behind.
        let mut cache = std::mem::take(&mut self.cache);
        self.written = head;
        if head < written || head - written > FORGET_READ_LIMIT {
            return Ok(());
        }
        let rows = sqlx::query(
            "SELECT entity_type, project_id, entity_id, \
                    CASE WHEN entity_type = 'work_item' AND action = 'created' THEN event END \
                      AS created \
             FROM change_log WHERE seq > $1 AND seq <= $2",
        )
        .bind(written as i64)
        .bind(head as i64)
        .fetch_all(&mut **conn)
        .await
        .pg()?;
        if rows.len() as u64 != head - written {
            // Pruned meanwhile: the changes are not all known.
            return Ok(());
        }
        for row in &rows {
            let Some((kind, project_id, entity_id, created)) = logged_change(row) else {
                tracing::warn!(tenant = %self.tenant, "an unreadable change-log row; the writer's cache is dropped");
                return Ok(());
            };
            forget_change(&mut cache, kind, &project_id, &entity_id, created.as_ref());
        }
        self.cache = cache;
        Ok(())
    }

    /// One transaction over all `jobs`, each command in a savepoint if `safe`; rolled back
    /// (the connection closed) on a failure. `None`: not `safe`, and a command failed, so
    /// nothing was committed.
    async fn attempt(&mut self, jobs: &mut [Job], now: i64, safe: bool) -> Result<Option<Group>> {
        let mut conn = match self.held.take() {
            Some(conn) => conn,
            None => self.connections.acquire().await?,
        };
        match self.apply_all(&mut conn, jobs, now, safe).await {
            Ok(Some(done)) => {
                if self.connections.spare() {
                    self.held = Some(conn);
                }
                Ok(Some(done))
            }
            Ok(None) => {
                exec(&mut conn, "ROLLBACK").await?;
                Ok(None)
            }
            Err(error) => {
                // Whatever state the transaction is in, it ends with the connection.
                conn.close_on_drop();
                if let Err(e) = exec(&mut conn, "ROLLBACK").await {
                    tracing::debug!(error = %e, "rollback after a failed write group failed");
                }
                Err(error)
            }
        }
    }

    async fn apply_all(
        &mut self,
        conn: &mut PoolConnection<Postgres>,
        jobs: &mut [Job],
        now: i64,
        safe: bool,
    ) -> Result<Option<Group>> {
        // A script without parameters: one round trip, as a simple query.
        (&mut **conn).execute(self.begin.as_str()).await.pg()?;
        let head: i64 =
            sqlx::query_scalar("SELECT last_seq FROM tenant_head WHERE id = 1 FOR UPDATE")
                .fetch_one(&mut **conn)
                .await
                .pg()?;
        let head = head as u64;
        if head != self.written {
            self.forget_others(conn, head).await?;
        }
        let mut group = Group::new(head);
        group.pending.begun = true;
        let mut tx = Tx {
            conn: &mut *conn,
            cache: &mut self.cache,
            max_batch_commands: self.config.max_batch_commands,
        };
        for job in jobs.iter_mut() {
            group
                .apply(&mut tx, &job.actor, &mut job.work, now, safe)
                .await?;
        }
        if !safe && jobs.iter().any(|job| job.work.failed()) {
            // The transaction may be aborted: see `process`.
            return Ok(None);
        }
        // The work items that simple creates left for one multi-row insert.
        group.pending.flush(conn).await?;
        if !group.events.is_empty() {
            let first = append_events(conn, &group.events).await?;
            if first != head + 1 {
                return Err(Error::Corrupt(format!(
                    "the change log's next seq is {first}, not {}",
                    head + 1
                )));
            }
        }
        for chunk in group.answers.chunks(idempotency::ROWS_PER_INSERT) {
            let sql = idempotency::store_sql(chunk.len());
            let query = chunk.iter().fold(sqlx::query(&sql), idempotency::bind);
            query.execute(&mut **conn).await.pg()?;
        }
        if now - self.last_prune > PRUNE_INTERVAL_MS {
            let pruned = idempotency::prune(conn, now).await.pg()?;
            tracing::debug!(pruned, "expired idempotency answers deleted");
            self.last_prune = now;
        }
        exec(conn, "COMMIT").await?;
        Ok(Some(group))
    }
}
