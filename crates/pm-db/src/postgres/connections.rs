//! The node's connections to PostgreSQL, shared by all its tenants, and a writer's affinity
//! to one of them.
//!
//! A tenant's statements run with its schema on the `search_path` (`SET LOCAL` at the start
//! of each transaction), and PostgreSQL analyses a prepared statement again whenever the
//! `search_path` it was planned with changed. A pool hands out its connections in turn, so
//! with many tenants writing, nearly every statement of a write was planned anew: 50 tenants
//! committing one command each cost PostgreSQL 1.2 ms of CPU per command, against 0.5 ms with
//! each writer on a connection of its own (BENCHMARKS.md). So a writer keeps the connection
//! of its last group while it stays busy, within bounds that never starve anyone else:
//! - it keeps it only if the pool still has another idle connection or room to open one;
//! - it gives it back after [`KEEP_IDLE`] without work;
//! - it gives it back at once when someone finds no idle connection and no room
//!   ([`Connections::acquire`] signals the writers keeping one).

use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::sync::Notify;

use super::PgResultExt;
use crate::error::Result;

/// How long a writer without work keeps its connection.
pub(crate) const KEEP_IDLE: Duration = Duration::from_millis(200);

/// The pool, and the signal to writers that keep a connection that one is wanted.
#[derive(Debug, Clone)]
pub(crate) struct Connections {
    pool: PgPool,
    wanted: Arc<Notify>,
}

impl Connections {
    pub(crate) fn new(pool: PgPool) -> Self {
        Connections {
            pool,
            wanted: Arc::new(Notify::new()),
        }
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A connection from the pool. When none is idle and the pool is full, the writers
    /// keeping one idle are told to give it back first.
    pub(crate) async fn acquire(&self) -> Result<PoolConnection<Postgres>> {
        if !self.spare() {
            self.wanted.notify_waiters();
        }
        self.pool.acquire().await.pg()
    }

    /// Whether a writer may keep the connection it holds: another is idle, or the pool has
    /// room to open one.
    pub(crate) fn spare(&self) -> bool {
        self.pool.num_idle() > 0 || self.pool.size() < self.pool.options().get_max_connections()
    }

    /// Completes when someone wanted a connection and found none (see [`Connections::acquire`]).
    pub(crate) fn wanted(&self) -> Arc<Notify> {
        self.wanted.clone()
    }
}
