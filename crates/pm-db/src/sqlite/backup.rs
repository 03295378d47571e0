//! Online backup and restore of tenant databases (`pm-server backup` / `restore`).
//!
//! **Backup** copies one tenant into `<dest>/<tenant>.db` with `VACUUM INTO` on a read-only
//! connection: it reads inside one read transaction, so the copy is the consistent snapshot
//! of one moment (a gapless prefix of the change log with the entities as of its head), and
//! in WAL mode it never blocks the server's writer. The copy is written to a hidden temporary
//! file, switched to the rollback journal (so it is one self-contained file), checked with
//! `PRAGMA integrity_check` and `foreign_key_check` plus a gapless change log, synced, and
//! only then renamed over `<dest>/<tenant>.db`. A failed backup leaves no partial file.
//!
//! **Restore** replaces a tenant's database with a backup. It takes the tenant's lock
//! exclusively (see [`lock`](super::lock)): a tenant a running server has open is always
//! refused, `force` or not, because replacing a database under a live writer would lose
//! writes and break its change numbering. Without `force` it also refuses a tenant that
//! already has a database; `force` allows replacing it. The backup is copied into the tenant
//! directory, verified there, the old `-wal`/`-shm` files are removed (a stale WAL would be
//! replayed onto the new file) and the copy is renamed over `tenant.db`. A newer schema than
//! this build knows is refused; an older one is migrated when the tenant is next opened.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pm_core::TenantId;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};

use super::config::SqliteConfig;
use super::layout::{self, open_read_only, DB_FILE};
use super::lock::TenantLock;
use super::migrations;
use crate::error::{Error, Result};

/// The file name of a tenant's backup inside a backup directory.
pub fn backup_file_name(id: &TenantId) -> String {
    format!("{id}.db")
}

/// What a verified database file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The newest applied migration.
    pub schema_version: i64,
    /// The latest change number (0: empty log).
    pub head_seq: u64,
}

/// One tenant's backup.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The backup file.
    pub file: PathBuf,
    /// Its size, bytes.
    pub bytes: u64,
    /// What it holds.
    pub verified: Verified,
    /// Wall time of the copy and its checks.
    pub elapsed: Duration,
}

/// One tenant's restore.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// What the restored database holds.
    pub verified: Verified,
    /// Whether an existing database was replaced (`force`).
    pub replaced: bool,
}

/// Copies one tenant into `<dest_dir>/<tenant>.db` while it may be in use; see the module
/// documentation. An existing backup of the tenant in `dest_dir` is replaced atomically.
pub async fn backup_tenant(
    config: &SqliteConfig,
    id: &TenantId,
    dest_dir: &Path,
) -> Result<BackupReport> {
    let started = Instant::now();
    let source = config.db_file(id);
    if !source.is_file() {
        return Err(Error::NotFound(format!("tenant {id} has no database")));
    }
    std::fs::create_dir_all(dest_dir)?;
    let file = dest_dir.join(backup_file_name(id));
    let partial = dest_dir.join(format!(".{id}.db.{}.partial", std::process::id()));
    remove_if_exists(&partial)?;
    let copied = copy_and_verify(&source, &partial).await;
    let verified = match copied {
        Ok(verified) => verified,
        Err(e) => {
            let _ = remove_if_exists(&partial);
            return Err(e);
        }
    };
    std::fs::File::open(&partial)?.sync_all()?;
    std::fs::rename(&partial, &file)?;
    sync_dir(dest_dir)?;
    Ok(BackupReport {
        bytes: std::fs::metadata(&file)?.len(),
        file,
        verified,
        elapsed: started.elapsed(),
    })
}

async fn copy_and_verify(source: &Path, partial: &Path) -> Result<Verified> {
    let target = partial
        .to_str()
        .ok_or_else(|| Error::invalid("to", "the backup directory must be a UTF-8 path"))?;
    let mut conn = open_read_only(source).await?;
    let copied = sqlx::query("VACUUM INTO ?1")
        .bind(target)
        .execute(&mut conn)
        .await;
    conn.close().await?;
    copied?;
    verify_own_copy(partial).await
}

/// Verifies a database file this process owns (a fresh copy): switches it to the rollback
/// journal so that it stays one file, then checks integrity, foreign keys, the schema
/// version and that the change log has no gap.
async fn verify_own_copy(file: &Path) -> Result<Verified> {
    let verified = async {
        let mut conn = SqliteConnectOptions::new().filename(file).connect().await?;
        let verified = verify_connection(&mut conn).await;
        conn.close().await?;
        verified
    }
    .await;
    // A copy that SQLite finds damaged is a bad copy, not a damaged tenant.
    verified.map_err(|error| match error {
        Error::Damaged { detail, .. } => Error::Corrupt(detail),
        other => other,
    })
}

async fn verify_connection(conn: &mut SqliteConnection) -> Result<Verified> {
    sqlx::query("PRAGMA journal_mode = DELETE")
        .execute(&mut *conn)
        .await?;
    let problems: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut *conn)
        .await?;
    if problems != ["ok"] {
        return Err(Error::Corrupt(format!(
            "integrity check failed: {}",
            problems.join("; ")
        )));
    }
    let dangling = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut *conn)
        .await?;
    if let Some(first) = dangling.first() {
        let table: String = first.try_get(0)?;
        return Err(Error::Corrupt(format!(
            "{} row(s) with a dangling reference, first in {table}",
            dangling.len()
        )));
    }
    let schema_version = layout::schema_version(&mut *conn).await?;
    if schema_version == 0 {
        return Err(Error::Corrupt("not a tenant database (no schema)".into()));
    }
    let newest = migrations::embedded_version();
    if schema_version > newest {
        return Err(Error::FailedPrecondition(format!(
            "schema version {schema_version} is newer than this pm-server knows ({newest})"
        )));
    }
    let (count, first, head): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM change_log",
    )
    .fetch_one(&mut *conn)
    .await?;
    if count > 0 && head - first + 1 != count {
        return Err(Error::Corrupt(format!(
            "the change log has gaps: {count} changes between seq {first} and {head}"
        )));
    }
    Ok(Verified {
        schema_version,
        head_seq: head as u64,
    })
}

/// Replaces (or creates) tenant `id` from the backup file `from`; see the module
/// documentation for what is refused and what `force` allows.
pub async fn restore_tenant(
    config: &SqliteConfig,
    id: &TenantId,
    from: &Path,
    force: bool,
) -> Result<RestoreReport> {
    if !from.is_file() {
        return Err(Error::NotFound(format!("no backup file for tenant {id}")));
    }
    let dir = config.tenant_dir(id);
    let created_dir = !dir.exists();
    std::fs::create_dir_all(&dir)?;
    let restored = restore_locked(&dir, id, from, force).await;
    if restored.is_err() && created_dir {
        // Leave nothing behind for a tenant that did not exist.
        let _ = std::fs::remove_dir_all(&dir);
    }
    restored
}

async fn restore_locked(
    dir: &Path,
    id: &TenantId,
    from: &Path,
    force: bool,
) -> Result<RestoreReport> {
    let lock = TenantLock::exclusive(dir, id.as_str())?;
    let db = dir.join(DB_FILE);
    let replaced = db.exists();
    if replaced && !force {
        return Err(Error::FailedPrecondition(format!(
            "tenant {id} already has a database; use --force to replace it"
        )));
    }
    let incoming = dir.join(format!("{DB_FILE}.restoring"));
    remove_if_exists(&incoming)?;
    let verified = match copy_in(from, &incoming).await {
        Ok(verified) => verified,
        Err(e) => {
            let _ = remove_if_exists(&incoming);
            return Err(e);
        }
    };
    // The old WAL belongs to the old file: left beside the new one it would be replayed
    // onto it. Remove it (and the index) first; a crash before the rename leaves the old
    // database as of its last checkpoint, never a mix.
    for suffix in ["-wal", "-shm"] {
        remove_if_exists(&dir.join(format!("{DB_FILE}{suffix}")))?;
    }
    std::fs::rename(&incoming, &db)?;
    sync_dir(dir)?;
    drop(lock);
    Ok(RestoreReport { verified, replaced })
}

async fn copy_in(from: &Path, incoming: &Path) -> Result<Verified> {
    std::fs::copy(from, incoming)?;
    let verified = verify_own_copy(incoming).await?;
    std::fs::File::open(incoming)?.sync_all()?;
    Ok(verified)
}

/// Backup files in `dir` (`<tenant>.db`), sorted; names that are not valid tenant ids come
/// back as errors so that operators see them.
pub fn list_backups(dir: &Path) -> std::io::Result<Vec<std::result::Result<TenantId, String>>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && !name.starts_with('.') {
            if let Some(stem) = name.strip_suffix(".db") {
                names.push(stem.to_owned());
            }
        }
    }
    names.sort();
    Ok(names
        .into_iter()
        .map(|name| TenantId::parse(&name).map_err(|_| name))
        .collect())
}

pub(crate) fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes a rename in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
