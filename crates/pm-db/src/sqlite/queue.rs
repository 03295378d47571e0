//! A tenant's write queue: what callers put in it (commands, batches and maintenance, each
//! with where its answer goes), and how they wait for the answer.
//!
//! Every queued item carries its place among the jobs in flight ([`InFlight`]): a tenant with
//! work in flight is never closed, and the count is right however a job ends (answered,
//! failed, or never queued) because it goes with the job.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pm_core::UserId;
use pm_proto::v1;
use sqlx::migrate::Migrator;
use tokio::sync::{mpsc, oneshot};

use super::health::HealthFlag;
use crate::engine::{SchemaChange, UserProfile};
use crate::error::{Error, Result};
use crate::events::Retention;
pub(super) use crate::work::{Reply, Work};

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
    /// Owed batches (the log's pairs, the waiting text) committed in a transaction of their
    /// own between groups, rather than folded into a group's commit (see `batches`).
    pub batch_commits: AtomicU64,
}

/// State the writer shares with readers of the tenant.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// The latest committed seq.
    pub(crate) head: AtomicU64,
    /// Jobs submitted and not yet answered (queued or being applied); see [`InFlight`].
    in_flight: AtomicU64,
    /// Migrations queued or running: while there are any, a full queue makes callers wait
    /// for room instead of answering `UNAVAILABLE`.
    migrations: AtomicU64,
    pub(crate) stats: WriterStats,
    /// The storage's condition as the writer last saw it.
    pub(crate) health: HealthFlag,
}

impl Shared {
    /// Jobs submitted and not yet answered.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// A job's place among those in flight: counted from submission until the job is answered
/// (or was never queued), whichever way it ends, because it goes with the job.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A queued or running migration: while one exists, callers wait for room in a full queue.
#[derive(Debug)]
pub(super) struct MigrationPending(Arc<Shared>);

impl MigrationPending {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.migrations.fetch_add(1, Ordering::AcqRel);
        MigrationPending(shared.clone())
    }
}

impl Drop for MigrationPending {
    fn drop(&mut self) {
        self.0.migrations.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug)]
pub(super) struct Job {
    pub(super) actor: UserId,
    pub(super) work: Work,
    _in_flight: InFlight,
}

impl Job {
    /// Sends the job's answer, having stopped counting it as in flight: a caller may act on
    /// the answer at once (close the tenant, as a client leaving does) and must then find the
    /// tenant idle. Its `Arc` keeps the tenant from closing while it waits.
    pub(super) fn answer(self) {
        let Job {
            work, _in_flight, ..
        } = self;
        drop(_in_flight);
        work.send();
    }
}

/// Maintenance run by the writer between groups, in queue order.
#[derive(Debug)]
pub(super) enum Control {
    /// Delete at most one chunk of the change log that `retention` no longer covers, as of
    /// `now` (Unix ms); answers how many events were deleted.
    Prune {
        retention: Retention,
        now: i64,
        reply: oneshot::Sender<Result<u64>>,
    },
    /// Insert or update a user's profile (not part of the change log).
    RememberUser {
        profile: UserProfile,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Index the work items' and comments' text that waits since the last batch, then run
    /// `query` as `actor` in the same transaction (see `text_index`).
    IndexAndQuery {
        actor: UserId,
        query: Box<v1::Query>,
        reply: oneshot::Sender<Result<v1::QueryResult>>,
    },
    /// Run the batches the writer owes now (see `batches`).
    RunOwedBatches { reply: oneshot::Sender<Result<()>> },
    /// Apply the pending migrations of `migrator` in one transaction (all or nothing).
    Migrate {
        migrator: Arc<Migrator>,
        reply: oneshot::Sender<Result<SchemaChange>>,
        pending: MigrationPending,
    },
}

impl Control {
    /// Answers the job with `error` instead of running it.
    pub(super) fn refuse(self, error: &Error) {
        let error = error.for_another_caller();
        // A caller that stopped waiting has nothing to be told.
        match self {
            Control::Prune { reply, .. } => drop(reply.send(Err(error))),
            Control::RememberUser { reply, .. } => drop(reply.send(Err(error))),
            Control::Migrate { reply, .. } => drop(reply.send(Err(error))),
            Control::IndexAndQuery { reply, .. } => drop(reply.send(Err(error))),
            Control::RunOwedBatches { reply } => drop(reply.send(Err(error))),
        }
    }
}

#[derive(Debug)]
pub(super) enum Queued {
    Write(Job),
    Control(Control, InFlight),
}

fn closing() -> Error {
    Error::Unavailable("the tenant is closing; retry".into())
}

fn stopped() -> Error {
    Error::Unavailable("the tenant's writer stopped; retry".into())
}

/// The sending side of a writer's queue.
#[derive(Debug, Clone)]
pub(crate) struct WriterHandle {
    pub(super) tx: mpsc::Sender<Queued>,
    pub(super) shared: Arc<Shared>,
}

impl WriterHandle {
    /// Applies one command as `actor`; answers after it is committed.
    pub(crate) async fn command(
        &self,
        actor: UserId,
        command: v1::Command,
    ) -> Result<v1::CommandResult> {
        self.submit(actor, |reply| Work::Command(Box::new(command), reply))
            .await
    }

    /// Applies a batch as `actor`.
    pub(crate) async fn batch(&self, actor: UserId, batch: v1::Batch) -> Result<v1::BatchResult> {
        self.submit(actor, |reply| Work::Batch(batch, reply)).await
    }

    /// Queues work and waits for its answer. A full queue is `UNAVAILABLE` at once, unless a
    /// migration is draining the writer: then the caller waits for room (its session's
    /// in-flight limit bounds how many wait), so that a migration never fails a command.
    async fn submit<T>(&self, actor: UserId, work: impl FnOnce(Reply<T>) -> Work) -> Result<T> {
        let (to, answer) = oneshot::channel();
        let job = Queued::Write(Job {
            actor,
            work: work(Reply::new(to)),
            _in_flight: InFlight::new(&self.shared),
        });
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job))
                if self.shared.migrations.load(Ordering::Acquire) > 0 =>
            {
                self.tx.send(job).await.map_err(|_| closing())?;
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(Error::Unavailable(
                    "the tenant's write queue is full; retry shortly".into(),
                ))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(closing()),
        }
        answer.await.map_err(|_| stopped())?
    }

    /// Queues a control job, waiting for room if the queue is full. It counts as in flight
    /// (the tenant is not idle) until the writer has run it.
    async fn control(&self, control: Control) -> Result<()> {
        let queued = Queued::Control(control, InFlight::new(&self.shared));
        self.tx
            .send(queued)
            .await
            .map_err(|_| Error::Unavailable("the tenant is closing".into()))
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

    /// Records a user's profile.
    pub(crate) async fn remember_user(&self, profile: UserProfile) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.control(Control::RememberUser { profile, reply })
            .await?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs `query` as `actor` on the writer's connection, once the full-text indexes hold
    /// every committed work item's and comment's text.
    pub(crate) async fn index_and_query(
        &self,
        actor: UserId,
        query: v1::Query,
    ) -> Result<v1::QueryResult> {
        let (reply, answer) = oneshot::channel();
        self.control(Control::IndexAndQuery {
            actor,
            query: Box::new(query),
            reply,
        })
        .await?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs the batches the writer owes, after the work queued before.
    pub(crate) async fn run_owed_batches(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.control(Control::RunOwedBatches { reply }).await?;
        answer.await.map_err(|_| stopped())?
    }

    /// Drains the writer and applies the pending migrations of `migrator` in one
    /// transaction; commands sent meanwhile wait in the queue.
    pub(crate) async fn migrate(&self, migrator: Arc<Migrator>) -> Result<SchemaChange> {
        let (reply, answer) = oneshot::channel();
        self.control(Control::Migrate {
            migrator,
            reply,
            pending: MigrationPending::new(&self.shared),
        })
        .await?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the tenant's writer stopped".into()))?
    }
}
