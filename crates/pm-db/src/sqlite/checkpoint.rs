//! WAL checkpoints off the writer's path.
//!
//! SQLite's automatic checkpoint runs inside the `COMMIT` that crosses the threshold, on the
//! committing connection, and includes an fsync: the writer (and every caller waiting on its
//! group) would stall for it. Instead the writer's connection has `wal_autocheckpoint = 0`,
//! and this task, with a connection of its own, runs a PASSIVE checkpoint (which never blocks
//! the writer) every [`COMMITS_PER_CHECKPOINT`] commits, as soon as the WAL outgrows
//! [`WAL_SIZE_LIMIT`] (read from the wal-index, [`WalProgress::wal_in_use`], after every large
//! group and every few small ones: one small commit writes about 14 pages, so 256 of them
//! would be a WAL of 14 MiB; a large group writes megabytes), and, if anything is pending,
//! after `SqliteConfig::idle_checkpoint` without one; and a TRUNCATE checkpoint once the tenant has been quiet that long, and when
//! it closes (evicted, or at shutdown), so that an idle tenant's WAL takes no disk.
//!
//! A PASSIVE checkpoint never makes the WAL smaller under steady writes: by the time it is
//! done the writer has appended more, so SQLite never starts the WAL over, and the WAL grows
//! as long as the writes go on. Nor can this task's RESTART checkpoint help: it must take the
//! write lock, which a busy writer takes back after every commit faster than SQLite's busy
//! handler polls for it (measured: 120 ms and 13 MiB of WAL for one). So once the WAL has
//! grown past twice the limit the writer itself runs a RESTART checkpoint between two groups
//! ([`restart`]): it copies what the PASSIVE ones left (little), and its next commit starts the
//! WAL over. The file keeps its size (`journal_size_limit` is above it) and is written again
//! from the start: truncating it to the limit at each start took 6 ms of the writer's time on
//! average (measured with `strace` on ext4), only for the next megabytes to be allocated
//! again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, SqliteConnection};
use tokio::sync::mpsc;

use super::config::{JOURNAL_SIZE_LIMIT, WAL_SIZE_LIMIT};
use super::group::exec;

/// Commits between checkpoints at most.
pub(crate) const COMMITS_PER_CHECKPOINT: u64 = 256;

/// How much a commit weighs, beside one unit per event, towards the next read of the
/// wal-index; it is read once the commits since the last read weigh [`READ_AFTER`]. A read
/// costs an open, a read and a close: 3 % of the server's CPU when every commit read it, at
/// one command per commit. A one-event commit (about 14 pages) weighs 5, so the WAL grows by
/// some 400 KiB at most between two reads, a fortieth of [`WAL_SIZE_LIMIT`]; a group of 28
/// events or more reads it at once.
const COMMIT_WEIGHT: u64 = 4;
const READ_AFTER: u64 = 32;

/// What the writer tells the checkpointer.
#[derive(Debug)]
pub(crate) struct WalProgress {
    /// Commits since the last checkpoint started.
    pub(crate) commits: AtomicU64,
    /// What the commits since the wal-index was last read weigh (see [`READ_AFTER`]).
    unread: AtomicU64,
    /// The WAL file.
    wal_file: PathBuf,
    /// Its wal-index.
    shm_file: PathBuf,
    /// Held while a checkpoint runs, by the checkpointer or the writer's RESTART: two at once
    /// make the RESTART fail busy (SQLite allows one checkpointer), and under a loaded CPU a
    /// PASSIVE checkpoint overlapped the writer's RESTART often enough to let the WAL grow
    /// past its bound.
    pub(crate) running: tokio::sync::Mutex<()>,
}

/// The WAL file beside `db_file`.
pub(crate) fn wal_file(db_file: &std::path::Path) -> PathBuf {
    sidecar(db_file, "-wal")
}

fn sidecar(db_file: &std::path::Path, suffix: &str) -> PathBuf {
    let mut file = db_file.as_os_str().to_owned();
    file.push(suffix);
    file.into()
}

/// The WAL file's header, and each frame's, in bytes.
const WAL_HEADER: u64 = 32;
const WAL_FRAME_HEADER: u64 = 24;

impl WalProgress {
    /// The progress of the WAL beside `db_file`.
    pub(crate) fn new(db_file: &std::path::Path) -> Self {
        WalProgress {
            commits: AtomicU64::new(0),
            unread: AtomicU64::new(0),
            wal_file: wal_file(db_file),
            shm_file: sidecar(db_file, "-shm"),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The WAL file's size (0 if it cannot be read).
    pub(crate) fn wal_bytes(&self) -> u64 {
        std::fs::metadata(&self.wal_file).map_or(0, |m| m.len())
    }

    /// How much of the WAL file holds the current frames: its header and `mxFrame` frames,
    /// from the wal-index header in the `-shm` file (<https://www.sqlite.org/walformat.html>).
    /// A WAL started over keeps its size on disk (up to `journal_size_limit`) and is written
    /// again from the start. `None` if the wal-index cannot be read.
    pub(crate) fn wal_in_use(&self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(&self.shm_file).ok()?;
        // iVersion, unused, iChange, isInit, bigEndCksum, szPage (u16), mxFrame (u32): in the
        // machine's byte order.
        let mut header = [0u8; 20];
        file.read_exact_at(&mut header, 0).ok()?;
        let page = match u16::from_ne_bytes([header[14], header[15]]) {
            1 => 65_536,
            0 => return None,
            page => u64::from(page),
        };
        let frames = u64::from(u32::from_ne_bytes([
            header[16], header[17], header[18], header[19],
        ]));
        Some(WAL_HEADER + frames * (WAL_FRAME_HEADER + page))
    }

    /// Counts a commit of `events` events: what it makes due.
    pub(crate) fn committed(&self, events: u64) -> Due {
        let commits = self.commits.fetch_add(1, Ordering::Relaxed) + 1;
        let weight = COMMIT_WEIGHT + events;
        if self.unread.fetch_add(weight, Ordering::Relaxed) + weight >= READ_AFTER {
            self.unread.store(0, Ordering::Relaxed);
            // Not the file's size: a WAL started over is not truncated below its limit.
            // Without the wal-index (say, out of file descriptors), only a file past the size
            // it is truncated to when started over shows growth; the file's size alone would
            // call for a restart after every group.
            let in_use = self.wal_in_use().unwrap_or_else(|| {
                let file = self.wal_bytes();
                if file > JOURNAL_SIZE_LIMIT {
                    file
                } else {
                    0
                }
            });
            match in_use {
                bytes if bytes > 2 * WAL_SIZE_LIMIT => return Due::Restart,
                bytes if bytes > WAL_SIZE_LIMIT => return Due::Checkpoint,
                _ => {}
            }
        }
        if commits == COMMITS_PER_CHECKPOINT {
            Due::Checkpoint
        } else {
            Due::Nothing
        }
    }
}

/// What a commit makes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    Nothing,
    /// A PASSIVE checkpoint by the checkpointer.
    Checkpoint,
    /// A RESTART checkpoint by the writer (see [`restart`]).
    Restart,
}

/// The writer's RESTART checkpoint, between two groups (`conn` is the write connection, whose
/// busy timeout is `busy_timeout`): it waits at most [`BUSY_TIMEOUT`] for readers of older
/// snapshots. True if it completed.
pub(crate) async fn restart(
    conn: &mut SqliteConnection,
    busy_timeout: Duration,
) -> crate::error::Result<bool> {
    let wait = |timeout: Duration| format!("PRAGMA busy_timeout = {}", timeout.as_millis());
    exec(conn, &wait(BUSY_TIMEOUT)).await?;
    let done = checkpoint(conn, Mode::Restart).await;
    exec(conn, &wait(busy_timeout)).await?;
    Ok(done?)
}

/// How long a blocking checkpoint (RESTART, TRUNCATE) waits for readers; the writer waits
/// meanwhile, so this bounds the stall. Busy: tried again later.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_millis(250);

/// Runs until `due` closes (the writer stopped), then checkpoints once more, truncating the
/// WAL, and closes.
///
/// A tenant that has gone quiet (no commit for a whole `idle_after` since its last
/// checkpoint) gets a TRUNCATE checkpoint: it would otherwise keep its WAL on disk until it
/// writes again.
pub(crate) async fn run(
    options: SqliteConnectOptions,
    progress: Arc<WalProgress>,
    mut due: mpsc::Receiver<()>,
    idle_after: Duration,
    tenant: String,
) {
    // Opened the first time a checkpoint is due: a tenant opened to be read (or to answer a
    // resume) and closed again never commits, and so never pays for a third connection.
    let mut conn = None;
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
        let running = progress.running.lock().await;
        let done = match connection(&mut conn, &options).await {
            Ok(conn) => checkpoint(conn, mode).await,
            Err(e) => Err(e),
        };
        drop(running);
        match done {
            Ok(complete) => truncated = mode == Mode::Truncate && complete,
            Err(e) => tracing::warn!(%tenant, error = %e, "WAL checkpoint failed"),
        }
    }
    if conn.is_none() && progress.wal_bytes() == 0 {
        // Nothing was ever written through this opening, and the WAL is empty.
        return;
    }
    match connection(&mut conn, &options).await {
        Ok(conn) => match checkpoint(conn, Mode::Truncate).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(%tenant, "final WAL checkpoint could not truncate (busy)")
            }
            Err(e) => tracing::warn!(%tenant, error = %e, "final WAL checkpoint failed"),
        },
        Err(e) => tracing::warn!(%tenant, error = %e, "final WAL checkpoint failed"),
    }
    if let Some(conn) = conn {
        if let Err(e) = super::config::close(conn).await {
            tracing::warn!(%tenant, error = %e, "closing the checkpoint connection failed");
        }
    }
}

/// The checkpointer's connection, opened with `options` if it is not yet.
async fn connection<'c>(
    conn: &'c mut Option<SqliteConnection>,
    options: &SqliteConnectOptions,
) -> sqlx::Result<&'c mut SqliteConnection> {
    match conn {
        Some(conn) => Ok(conn),
        None => Ok(conn.insert(options.connect().await?)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Copies what it can without waiting for anyone.
    Passive,
    /// Waits (up to the busy timeout) for the writer and readers, copies everything, and
    /// makes the next writer start the WAL over.
    Restart,
    /// Waits (up to the busy timeout) for readers and the writer, copies everything and
    /// truncates the WAL to zero bytes.
    Truncate,
}

/// Runs one checkpoint; true if it completed (SQLite did not answer busy).
async fn checkpoint(conn: &mut SqliteConnection, mode: Mode) -> sqlx::Result<bool> {
    let sql = match mode {
        Mode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
        Mode::Restart => "PRAGMA wal_checkpoint(RESTART)",
        Mode::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
    };
    // One row: (busy, frames in the WAL, frames checkpointed).
    let (busy, _, _): (i64, i64, i64) = sqlx::query_as(sql).fetch_one(conn).await?;
    Ok(busy == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteConfig;

    /// The WAL in use is read from the wal-index: all of the file while it grows, and only
    /// the new frames once a RESTART checkpoint has made the next commit start it over,
    /// which leaves the file at its size; the writer's decisions follow the part in use.
    #[tokio::test]
    async fn the_wal_in_use_is_its_current_frames_not_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let db_file = dir.path().join("t.db");
        let options = SqliteConfig::new(dir.path())
            .connect_options(&db_file)
            .create_if_missing(true);
        let mut conn = options.connect().await.unwrap();
        exec(&mut conn, "PRAGMA wal_autocheckpoint = 0")
            .await
            .unwrap();
        exec(&mut conn, "CREATE TABLE t (x BLOB)").await.unwrap();
        let progress = WalProgress::new(&db_file);
        let page = 4096 + WAL_FRAME_HEADER;
        // Past twice the limit, 40 KB a commit.
        for _ in 0..(2 * WAL_SIZE_LIMIT / 40_000 + 16) {
            exec(&mut conn, "INSERT INTO t VALUES (zeroblob(40000))")
                .await
                .unwrap();
        }
        let grown = progress.wal_bytes();
        assert!(grown > 2 * WAL_SIZE_LIMIT, "{grown}");
        assert_eq!(progress.wal_in_use(), Some(grown));
        assert_eq!((grown - WAL_HEADER) % page, 0);
        // One-event commits read the wal-index every seventh (5 × 7 ≥ 32), large ones at once.
        for _ in 0..6 {
            assert_eq!(progress.committed(1), Due::Nothing);
        }
        assert_eq!(progress.committed(1), Due::Restart);
        assert_eq!(progress.committed(READ_AFTER), Due::Restart);

        assert!(checkpoint(&mut conn, Mode::Restart).await.unwrap());
        exec(&mut conn, "INSERT INTO t VALUES (1)").await.unwrap();
        // Written from the start again: one commit's frames in a file of the same size.
        let in_use = progress.wal_in_use().unwrap();
        assert!(in_use < 6 * page + WAL_HEADER, "{in_use}");
        // Not cut back to the limit (`journal_size_limit` is above it), and not due again.
        assert_eq!(progress.wal_bytes(), grown);
        assert_eq!(progress.committed(READ_AFTER), Due::Nothing);
    }
}
