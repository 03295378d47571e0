//! WAL checkpoints off the writer's path.
//!
//! SQLite's automatic checkpoint runs inside the `COMMIT` that crosses the threshold, on the
//! committing connection, and includes an fsync: the writer (and every caller waiting on its
//! group) would stall for it. Instead the writer's connection has `wal_autocheckpoint = 0`,
//! and this task, with a connection of its own, runs a PASSIVE checkpoint (which never blocks
//! the writer) every [`COMMITS_PER_CHECKPOINT`] commits and, if anything is pending, after
//! `SqliteConfig::idle_checkpoint` without one; and a TRUNCATE checkpoint once the tenant has
//! been quiet that long, and when it closes (evicted, or at shutdown), so that an idle
//! tenant's WAL takes no disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqliteConnection;
use tokio::sync::mpsc;

/// Commits between checkpoints: about SQLite's default of 1,000 WAL pages for small groups.
pub(crate) const COMMITS_PER_CHECKPOINT: u64 = 256;

/// What the writer tells the checkpointer.
#[derive(Debug, Default)]
pub(crate) struct WalProgress {
    /// Commits since the last checkpoint started.
    pub(crate) commits: AtomicU64,
}

impl WalProgress {
    /// Counts a commit; true when a checkpoint is due.
    pub(crate) fn committed(&self) -> bool {
        self.commits.fetch_add(1, Ordering::Relaxed) + 1 == COMMITS_PER_CHECKPOINT
    }
}

/// Runs until `due` closes (the writer stopped), then checkpoints once more, truncating the
/// WAL, and closes.
///
/// A tenant that has gone quiet (no commit for a whole `idle_after` since its last
/// checkpoint) gets a TRUNCATE checkpoint too: it would otherwise keep its largest WAL on disk
/// until it writes again. A busy tenant's WAL is bounded by `journal_size_limit` instead.
pub(crate) async fn run(
    mut conn: SqliteConnection,
    progress: Arc<WalProgress>,
    mut due: mpsc::Receiver<()>,
    idle_after: Duration,
    tenant: String,
) {
    // Whether the WAL has been truncated since the last commit.
    let mut truncated = false;
    loop {
        let idle = tokio::select! {
            signal = due.recv() => match signal {
                Some(()) => false,
                None => break,
            },
            () = tokio::time::sleep(idle_after) => true,
        };
        let mode = if progress.commits.swap(0, Ordering::Relaxed) > 0 {
            Mode::Passive
        } else if idle && !truncated {
            Mode::Truncate
        } else {
            continue;
        };
        match checkpoint(&mut conn, mode).await {
            Ok(complete) => truncated = mode == Mode::Truncate && complete,
            Err(e) => tracing::warn!(%tenant, error = %e, "WAL checkpoint failed"),
        }
    }
    match checkpoint(&mut conn, Mode::Truncate).await {
        Ok(true) => {}
        Ok(false) => tracing::debug!(%tenant, "final WAL checkpoint could not truncate (busy)"),
        Err(e) => tracing::warn!(%tenant, error = %e, "final WAL checkpoint failed"),
    }
    if let Err(e) = sqlx::Connection::close(conn).await {
        tracing::warn!(%tenant, error = %e, "closing the checkpoint connection failed");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Copies what it can without waiting for anyone.
    Passive,
    /// Waits (up to the busy timeout) for readers and the writer, copies everything and
    /// truncates the WAL to zero bytes.
    Truncate,
}

/// Runs one checkpoint; true if it completed (SQLite did not answer busy).
async fn checkpoint(conn: &mut SqliteConnection, mode: Mode) -> sqlx::Result<bool> {
    let sql = match mode {
        Mode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
        Mode::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
    };
    // One row: (busy, frames in the WAL, frames checkpointed).
    let (busy, _, _): (i64, i64, i64) = sqlx::query_as(sql).fetch_one(conn).await?;
    Ok(busy == 0)
}
