//! The tenant lock file: how an operator command in another process tells that a server has
//! a tenant open.
//!
//! An open [`SqliteTenant`](super::SqliteTenant) holds a *shared* advisory lock (`flock`) on
//! `<tenant dir>/tenant.lock` for as long as it is open; several registries may share it.
//! `pm-server restore` and `import` take the lock *exclusively* for the whole operation, so
//! they refuse a tenant a server has open, and a server that tries to open the tenant
//! meanwhile is told to retry (`UNAVAILABLE`) instead of reading a half-replaced database.
//! Advisory locks are released by the kernel when the holder exits, so a crashed server
//! leaves no stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use crate::error::{Error, Result};

/// The lock file inside a tenant directory.
pub const LOCK_FILE: &str = "tenant.lock";

/// A held lock on a tenant directory; released when dropped.
#[derive(Debug)]
pub struct TenantLock {
    _file: File,
}

fn open_lock_file(dir: &Path) -> Result<File> {
    Ok(OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))?)
}

impl TenantLock {
    /// The shared lock an open tenant holds. Fails with `UNAVAILABLE` while a restore or an
    /// import holds the tenant.
    pub(crate) fn shared(dir: &Path) -> Result<TenantLock> {
        let file = open_lock_file(dir)?;
        match file.try_lock_shared() {
            Ok(()) => Ok(TenantLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(Error::Unavailable(
                "the tenant is being restored or imported; retry later".into(),
            )),
            Err(TryLockError::Error(e)) => Err(e.into()),
        }
    }

    /// The exclusive lock of a restore or an import: refused (`FAILED_PRECONDITION`) while
    /// any server has the tenant open. `tenant` names it in the message.
    pub fn exclusive(dir: &Path, tenant: &str) -> Result<TenantLock> {
        let file = open_lock_file(dir)?;
        match file.try_lock() {
            Ok(()) => Ok(TenantLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(Error::FailedPrecondition(format!(
                "tenant {tenant} is open in a running server (or another restore or import); \
                 stop the server first"
            ))),
            Err(TryLockError::Error(e)) => Err(e.into()),
        }
    }
}
