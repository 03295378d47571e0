//! The read connections of one open tenant: a small pool that takes a connection back the
//! moment its user lets go of it.
//!
//! sqlx's own pool gives a connection back from a spawned task, after a ping to the
//! connection's thread. A read that follows another at once (a client's first requests after
//! its tenant opened, a resume's snapshot then its replay) found no idle connection in that
//! window and opened another one: under load a reopened tenant opened two or three, each a
//! thread, a file and the whole schema parsed again, which was most of what a cold open cost.
//! Here a connection is idle again as soon as its [`Reader`] is dropped, and no ping is
//! needed: a connection's statements run in order on its thread, so whatever a dropped
//! reader left queued (the rollback of a transaction it did not finish) runs before the next
//! user's first statement.
//!
//! At most `max` connections are open; they are opened on demand, reused most recently used
//! first, and closed after `idle_timeout` unused.

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, SqliteConnection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::{Error, Result};

/// How long a reader waits for a connection before it gives up (sqlx's pool's default).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// A tenant's read connections.
#[derive(Debug, Clone)]
pub struct Readers {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: SqliteConnectOptions,
    /// Options for the connections opened once the database has outgrown a size.
    larger: Option<Larger>,
    max: u32,
    idle_timeout: Duration,
    /// One permit per connection that may be handed out.
    permits: Arc<Semaphore>,
    state: Mutex<State>,
    /// Connections open, handed out or idle.
    open: AtomicUsize,
    closed: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// Idle connections, the most recently used last.
    idle: Vec<(SqliteConnection, Instant)>,
    /// A task is closing connections left idle too long.
    reaping: bool,
}

/// The options of the read connections opened once `db_file` is larger than `bytes`: a
/// tenant that opened small and grew is memory-mapped from its next new connection on (see
/// `SqliteConfig::mmap_size`).
#[derive(Debug)]
pub(crate) struct Larger {
    pub(crate) db_file: PathBuf,
    pub(crate) bytes: u64,
    pub(crate) options: SqliteConnectOptions,
}

/// A read connection, given back to its [`Readers`] when dropped.
#[derive(Debug)]
pub struct Reader {
    conn: Option<SqliteConnection>,
    inner: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
}

impl Readers {
    /// Readers that open at most `max` connections with `options` (or `larger`'s), each
    /// closed after `idle_timeout` unused. Nothing is opened yet.
    pub(crate) fn new(
        options: SqliteConnectOptions,
        larger: Option<Larger>,
        max: u32,
        idle_timeout: Duration,
    ) -> Readers {
        let max = max.max(1);
        Readers {
            inner: Arc::new(Inner {
                options,
                larger,
                max,
                idle_timeout,
                permits: Arc::new(Semaphore::new(max as usize)),
                state: Mutex::new(State::default()),
                open: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// A connection: an idle one, else a new one if fewer than `max` are open, else the first
    /// one given back.
    pub async fn acquire(&self) -> Result<Reader> {
        let permit =
            tokio::time::timeout(ACQUIRE_TIMEOUT, self.inner.permits.clone().acquire_owned())
                .await
                .map_err(|_| Error::from(sqlx::Error::PoolTimedOut))?
                .map_err(|_| Error::from(sqlx::Error::PoolClosed))?;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(sqlx::Error::PoolClosed.into());
        }
        let idle = self.inner.state().idle.pop();
        let conn = match idle {
            Some((conn, _)) => conn,
            None => {
                let conn = self.inner.options_now().connect().await?;
                self.inner.open.fetch_add(1, Ordering::AcqRel);
                conn
            }
        };
        Ok(Reader {
            conn: Some(conn),
            inner: self.inner.clone(),
            _permit: permit,
        })
    }

    /// Connections open (handed out or idle).
    pub fn size(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
    }

    /// Connections idle.
    pub fn idle(&self) -> usize {
        self.inner.state().idle.len()
    }

    /// Refuses new readers, waits for those handed out to come back, and closes every
    /// connection.
    pub(crate) async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        // Every permit: nothing is handed out any more.
        let all = self.inner.permits.acquire_many(self.inner.max).await;
        let idle = std::mem::take(&mut self.inner.state().idle);
        for (conn, _) in idle {
            self.inner.close_one(conn).await;
        }
        self.inner.permits.close();
        drop(all);
    }
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("the readers' state is never poisoned")
    }

    /// The options for a new connection, by the database's size now (one `stat`).
    fn options_now(&self) -> &SqliteConnectOptions {
        match &self.larger {
            Some(larger)
                if std::fs::metadata(&larger.db_file)
                    .is_ok_and(|meta| meta.len() > larger.bytes) =>
            {
                &larger.options
            }
            _ => &self.options,
        }
    }

    async fn close_one(&self, conn: SqliteConnection) {
        if let Err(error) = super::config::close(conn).await {
            tracing::debug!(%error, "closing a read connection failed");
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Closes the connections left idle longer than the timeout, until none is left.
async fn reap(inner: Weak<Inner>, idle_timeout: Duration) {
    loop {
        tokio::time::sleep(idle_timeout).await;
        let Some(inner) = inner.upgrade() else { return };
        let (stale, done) = {
            let mut state = inner.state();
            if inner.closed.load(Ordering::Acquire) {
                state.reaping = false;
                return;
            }
            // The least recently used come first.
            let cutoff = Instant::now() - idle_timeout;
            let fresh = state.idle.partition_point(|(_, since)| *since <= cutoff);
            let stale: Vec<_> = state.idle.drain(..fresh).collect();
            let done = state.idle.is_empty();
            if done {
                state.reaping = false;
            }
            (stale, done)
        };
        for (conn, _) in stale {
            inner.close_one(conn).await;
        }
        if done {
            return;
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let mut state = self.inner.state();
        state.idle.push((conn, Instant::now()));
        if !state.reaping && !self.inner.closed.load(Ordering::Acquire) {
            // Outside a runtime (a test's teardown) nothing is left to reap for.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                state.reaping = true;
                runtime.spawn(reap(Arc::downgrade(&self.inner), self.inner.idle_timeout));
            }
        }
        // The permit goes back after this, with the connection already idle.
    }
}

impl Deref for Reader {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.conn
            .as_ref()
            .expect("a reader holds its connection until dropped")
    }
}

impl DerefMut for Reader {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn
            .as_mut()
            .expect("a reader holds its connection until dropped")
    }
}
