//! One tenant open on this node, on PostgreSQL: its writer task, reads through the engine's
//! pool in transactions scoped to its schema, and the committed groups of this node's writer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pm_core::{TenantId, UserId};
use pm_proto::v1;
use sqlx::Executor;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::connections::Connections;
use super::schema::scoped_begin;
use super::sql::{people, queries, replay};
use super::writer::{Job, Stats, Writer};
use super::{changelog, mapped, open_tenant_schema, PgResultExt};
use crate::engine::{KnownProfiles, SubscriptionSnapshot, Tenant, UserProfile};
use crate::error::{Error, Result};
use crate::events::{CommittedEvent, EventFilter, StoredEvent};
use crate::registry::Resident;
use crate::snapshots::Snapshots;
use crate::sqlite::WriterConfig;
use crate::work::{Reply, Work};

/// An open PostgreSQL tenant.
#[derive(Debug)]
pub struct PgTenant {
    id: TenantId,
    connections: Connections,
    queue: mpsc::Sender<Job>,
    head: Arc<AtomicU64>,
    events: broadcast::Sender<Arc<[CommittedEvent]>>,
    pub(crate) stats: Arc<Stats>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Profiles known to be stored.
    known_users: KnownProfiles,
    /// Subscription snapshots waiting to be read together.
    snapshots: Snapshots,
    /// Begins a read: `REPEATABLE READ, READ ONLY`, scoped to the tenant.
    begin_read: String,
}

impl PgTenant {
    /// Creates or migrates the tenant's schema and starts its writer on this node.
    pub(crate) async fn open(
        connections: Connections,
        id: TenantId,
        config: WriterConfig,
    ) -> Result<Self> {
        let pool = connections.pool();
        open_tenant_schema(pool, &id).await?;
        let head = {
            let mut tx = super::begin_tenant(pool, &id).await?;
            let head = changelog::head_seq(&mut tx).await?;
            tx.rollback().await.pg()?;
            head
        };
        let written = head;
        let head = Arc::new(AtomicU64::new(head));
        let (events, _) = broadcast::channel(config.event_buffer.max(1));
        let (queue, rx) = mpsc::channel(config.queue_capacity.max(1));
        let stats = Arc::new(Stats::default());
        let begin_read = scoped_begin(&id, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
        let writer = Writer {
            begin: scoped_begin(&id, "BEGIN"),
            tenant: id.clone(),
            connections: connections.clone(),
            held: None,
            config,
            head: head.clone(),
            written,
            events: events.clone(),
            stats: stats.clone(),
            cache: Default::default(),
            last_prune: 0,
        };
        let task = tokio::spawn(writer.run(rx));
        Ok(PgTenant {
            id,
            connections,
            queue,
            head,
            events,
            stats,
            writer: std::sync::Mutex::new(Some(task)),
            known_users: KnownProfiles::default(),
            snapshots: Snapshots::default(),
            begin_read,
        })
    }

    async fn submit<T>(&self, actor: &UserId, work: impl FnOnce(Reply<T>) -> Work) -> Result<T> {
        let (to, answer) = oneshot::channel();
        let job = Job {
            actor: actor.clone(),
            work: work(Reply::new(to)),
        };
        self.stats.in_flight.fetch_add(1, Ordering::AcqRel);
        if let Err(error) = self.queue.try_send(job) {
            self.stats.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(match error {
                mpsc::error::TrySendError::Full(_) => {
                    Error::Unavailable("the tenant's write queue is full; retry".into())
                }
                mpsc::error::TrySendError::Closed(_) => {
                    Error::Unavailable("the tenant is closing; retry".into())
                }
            });
        }
        answer
            .await
            .map_err(|_| Error::Unavailable("the tenant's writer stopped; retry".into()))?
    }

    /// A read-only transaction on one snapshot (`REPEATABLE READ`), scoped to the tenant: the
    /// `as_of_seq` a query reads first is the state all its rows reflect.
    async fn read<T>(
        &self,
        read: impl for<'c> FnOnce(
            &'c mut sqlx::PgConnection,
        ) -> futures::future::BoxFuture<'c, Result<T>>,
    ) -> Result<T> {
        let mut conn = self.connections.acquire().await?;
        // A script without parameters: one round trip, as a simple query.
        (&mut *conn).execute(self.begin_read.as_str()).await.pg()?;
        let result = read(&mut conn).await;
        match sqlx::query("ROLLBACK").execute(&mut *conn).await {
            Ok(_) => {}
            Err(error) => {
                conn.close_on_drop();
                tracing::debug!(%error, "ending a read transaction failed");
            }
        }
        result.map_err(mapped)
    }
}

impl Resident for PgTenant {
    fn busy(&self) -> bool {
        self.stats.in_flight.load(Ordering::Acquire) > 0
    }

    async fn close(self: Arc<Self>) {
        let task = self.writer.lock().expect("never poisoned").take();
        // The registry holds the last reference: dropping the queue's sender ends the writer
        // once what is queued is committed.
        drop(self);
        if let Some(task) = task {
            if let Err(error) = task.await {
                tracing::error!(%error, "a tenant's writer ended abnormally");
            }
        }
    }
}

#[async_trait]
impl Tenant for PgTenant {
    fn id(&self) -> &TenantId {
        &self.id
    }

    fn head_seq(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    fn observe_head(&self, seq: u64) {
        self.head.fetch_max(seq, Ordering::AcqRel);
    }

    async fn execute(&self, actor: &UserId, command: v1::Command) -> Result<v1::CommandResult> {
        self.submit(actor, |reply| Work::Command(Box::new(command), reply))
            .await
            .map_err(mapped)
    }

    async fn batch(&self, actor: &UserId, batch: v1::Batch) -> Result<v1::BatchResult> {
        self.submit(actor, |reply| Work::Batch(batch, reply))
            .await
            .map_err(mapped)
    }

    async fn query(&self, actor: &UserId, query: v1::Query) -> Result<v1::QueryResult> {
        let actor = actor.clone();
        self.read(move |conn| Box::pin(async move { queries::run(conn, &actor, query).await }))
            .await
    }

    async fn read_events(
        &self,
        after: u64,
        until: Option<u64>,
        limit: u32,
        filter: &EventFilter,
    ) -> Result<Vec<StoredEvent>> {
        let filter = filter.clone();
        self.read(move |conn| {
            Box::pin(async move { replay::read_after(conn, after, until, limit, &filter).await })
        })
        .await
    }

    async fn oldest_seq(&self) -> Result<Option<u64>> {
        self.read(|conn| Box::pin(changelog::oldest_seq(conn)))
            .await
    }

    fn subscribe_commits(&self) -> broadcast::Receiver<Arc<[CommittedEvent]>> {
        self.events.subscribe()
    }

    async fn subscription_snapshot(&self, user: &UserId) -> Result<SubscriptionSnapshot> {
        let read = |users: Vec<UserId>| {
            self.read(move |conn| {
                Box::pin(async move { queries::subscription_snapshots(conn, &users).await })
            })
        };
        self.snapshots.read(user, read).await
    }

    async fn remember_user(&self, profile: &UserProfile) -> Result<()> {
        let load = || self.read(|conn| Box::pin(people::known_users(conn, KnownProfiles::LIMIT)));
        let write = || async {
            // Through `Connections`, like every other use: a full pool asks the writers
            // keeping a connection to give it back.
            let mut conn = self.connections.acquire().await?;
            let mut tx = sqlx::Connection::begin(&mut *conn).await.pg()?;
            super::set_tenant(&mut tx, &self.id).await?;
            people::remember_user(&mut tx, profile, pm_core::time::now_ms())
                .await
                .map_err(mapped)?;
            tx.commit().await.pg()
        };
        self.known_users.remember(profile, load, write).await
    }
}
