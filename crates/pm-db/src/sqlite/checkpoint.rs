//! WAL checkpoints off the writer's path.
//!
//! SQLite's automatic checkpoint runs inside the `COMMIT` that crosses the threshold, on the
//! committing connection, and includes an fsync: the writer (and every caller waiting on its
//! group) would stall for it. Instead the writer's connection has `wal_autocheckpoint = 0`,
//! and this task, with a connection of its own, runs a PASSIVE checkpoint (which never blocks
//! the writer) every [`COMMITS_PER_CHECKPOINT`] commits, after [`IDLE_FLUSH`] without one if
//! anything is pending, and a TRUNCATE checkpoint when the tenant closes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqliteConnection;
use tokio::sync::mpsc;

/// Commits between checkpoints: about SQLite's default of 1,000 WAL pages for small groups.
pub(crate) const COMMITS_PER_CHECKPOINT: u64 = 256;
/// Pending commits are checkpointed after this long without a checkpoint.
const IDLE_FLUSH: Duration = Duration::from_secs(30);

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

/// Runs until `due` closes (the writer stopped), then checkpoints once more and closes.
pub(crate) async fn run(
    mut conn: SqliteConnection,
    progress: Arc<WalProgress>,
    mut due: mpsc::Receiver<()>,
    tenant: String,
) {
    loop {
        let open = tokio::select! {
            signal = due.recv() => signal.is_some(),
            () = tokio::time::sleep(IDLE_FLUSH) => true,
        };
        if !open {
            break;
        }
        if progress.commits.swap(0, Ordering::Relaxed) == 0 {
            continue;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            tracing::warn!(%tenant, error = %e, "WAL checkpoint failed");
        }
    }
    if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
    {
        tracing::warn!(%tenant, error = %e, "final WAL checkpoint failed");
    }
    if let Err(e) = sqlx::Connection::close(conn).await {
        tracing::warn!(%tenant, error = %e, "closing the checkpoint connection failed");
    }
}
