//! The health of a tenant's storage, and the quarantine of damaged tenants.
//!
//! A storage fault (a full disk, the tenant's size limit, an I/O error) is transient: while it
//! lasts the writer answers every write at once with the fault (no queueing behind a disk that
//! cannot take them), and every so often (100 ms, doubling up to 5 s) it reopens its
//! connection, re-reads the head of the log and tries again; the first group that commits ends
//! it. Reads go on meanwhile. Changing the size limit makes the writer try again at once.
//!
//! A damaged database (`SQLITE_CORRUPT`, `SQLITE_NOTADB`, or a failed `quick_check` when
//! opening with `check_on_open`) is not transient: the tenant is quarantined. Its commands
//! and queries are refused with an error that names what to do (restore from a backup), its
//! writer stops, its lock file is released (so that `pm-server restore` can replace the
//! database while the server runs), and opening it again is refused until the database file
//! has been replaced. Every other tenant keeps serving.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use pm_core::TenantId;
use tokio::time::Instant;

use super::config::SizeLimit;
use crate::error::Error;

/// The first wait after a storage fault before the writer tries again.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest wait between tries.
const LAST_RETRY: Duration = Duration::from_secs(5);

/// What a tenant's storage is like, as its writer last saw it; shared with the engine's
/// figures.
#[derive(Debug, Default)]
pub(crate) struct HealthFlag(AtomicU8);

/// The states of a [`HealthFlag`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Condition {
    /// Writes commit.
    Healthy,
    /// A storage fault: writes are refused until a try succeeds.
    Degraded,
    /// Damaged: quarantined.
    Damaged,
}

impl HealthFlag {
    pub(crate) fn get(&self) -> Condition {
        match self.0.load(Ordering::Acquire) {
            0 => Condition::Healthy,
            1 => Condition::Degraded,
            _ => Condition::Damaged,
        }
    }

    /// Marks the storage damaged (found by a read).
    pub(crate) fn set_damaged(&self) {
        self.set(Condition::Damaged);
    }

    fn set(&self, condition: Condition) {
        let value = match condition {
            Condition::Healthy => 0,
            Condition::Degraded => 1,
            Condition::Damaged => 2,
        };
        self.0.store(value, Ordering::Release);
    }
}

/// A storage fault the writer is waiting out.
#[derive(Debug)]
pub(crate) struct Fault {
    /// The error every write is answered with meanwhile.
    error: Error,
    /// When the writer tries again.
    retry_at: Instant,
    /// The wait after the next failed try.
    backoff: Duration,
}

/// The writer's side of its storage's health.
#[derive(Debug, Default)]
pub(crate) struct Health {
    fault: Option<Fault>,
}

/// What the writer does with the next group.
#[derive(Debug)]
pub(crate) enum Next {
    /// Apply it.
    Write,
    /// Reopen the connection first (after a fault), then apply it.
    Reopen,
    /// Refuse it with this error.
    Refuse(Error),
}

impl Health {
    /// What to do with the next group at `now`.
    pub(crate) fn next(&self, now: Instant) -> Next {
        match &self.fault {
            None => Next::Write,
            Some(fault) if now >= fault.retry_at => Next::Reopen,
            Some(fault) => Next::Refuse(fault.error.for_another_caller()),
        }
    }

    /// A group failed on the storage at `now`: refuse writes until the next try. Returns
    /// whether this started the fault (so that it is logged once).
    pub(crate) fn failed(&mut self, error: &Error, now: Instant, flag: &HealthFlag) -> bool {
        let started = self.fault.is_none();
        let backoff = self
            .fault
            .as_ref()
            .map_or(FIRST_RETRY, |fault| (fault.backoff * 2).min(LAST_RETRY));
        self.fault = Some(Fault {
            error: error.for_another_caller(),
            retry_at: now + backoff,
            backoff,
        });
        flag.set(Condition::Degraded);
        started
    }

    /// A group committed: the fault, if any, is over. Returns whether there was one.
    pub(crate) fn committed(&mut self, flag: &HealthFlag) -> bool {
        flag.set(Condition::Healthy);
        self.fault.take().is_some()
    }

    /// The database is damaged: every write is refused with `error` from now on.
    pub(crate) fn damaged(&mut self, error: &Error, flag: &HealthFlag) {
        self.fault = Some(Fault {
            error: error.for_another_caller(),
            retry_at: Instant::now() + Duration::from_secs(365 * 24 * 3600),
            backoff: LAST_RETRY,
        });
        flag.set(Condition::Damaged);
    }

    /// Try again at the next group (the size limit changed).
    pub(crate) fn retry_now(&mut self) {
        if let Some(fault) = &mut self.fault {
            if !matches!(fault.error, Error::Damaged { .. }) {
                fault.retry_at = Instant::now();
            }
        }
    }
}

/// Which database file a tenant had when it was quarantined: a restore replaces the file,
/// which changes its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileIdentity {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: u64,
}

impl FileIdentity {
    fn of(path: &Path) -> Option<FileIdentity> {
        let meta = std::fs::metadata(path).ok()?;
        Some(FileIdentity {
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&meta),
        })
    }
}

#[derive(Debug)]
struct Quarantined {
    detail: String,
    file: PathBuf,
    identity: Option<FileIdentity>,
}

/// The engine's damaged tenants.
#[derive(Debug, Default)]
pub(crate) struct Quarantine {
    tenants: Mutex<HashMap<TenantId, Quarantined>>,
}

impl Quarantine {
    fn tenants(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Quarantined>> {
        self.tenants
            .lock()
            .expect("quarantine lock is never poisoned")
    }

    /// Takes `tenant` (database file `file`) out of service for `detail`; logged at ERROR
    /// the first time.
    pub(crate) fn add(&self, tenant: &TenantId, file: &Path, detail: &str) {
        let mut tenants = self.tenants();
        if tenants.contains_key(tenant) {
            return;
        }
        tracing::error!(
            %tenant,
            detail,
            "tenant database is damaged: quarantined until it is restored from a backup \
             (pm-server restore --tenant {tenant}); other tenants keep serving"
        );
        tenants.insert(
            tenant.clone(),
            Quarantined {
                detail: detail.to_owned(),
                file: file.to_owned(),
                identity: FileIdentity::of(file),
            },
        );
    }

    /// The refusal for a quarantined tenant whose database has not been replaced since; `None`
    /// if it is not quarantined, or no longer (its file was replaced: a restore).
    pub(crate) fn refusal(&self, tenant: &TenantId) -> Option<Error> {
        let mut tenants = self.tenants();
        let quarantined = tenants.get(tenant)?;
        if FileIdentity::of(&quarantined.file) == quarantined.identity {
            return Some(Error::Damaged {
                tenant: tenant.to_string(),
                detail: quarantined.detail.clone(),
            });
        }
        tracing::info!(%tenant, "the damaged tenant's database was replaced; opening it again");
        tenants.remove(tenant);
        None
    }

    /// Why `tenant` is quarantined, if it is.
    pub(crate) fn detail(&self, tenant: &TenantId) -> Option<String> {
        self.tenants().get(tenant).map(|q| q.detail.clone())
    }

    /// Tenants in quarantine.
    pub(crate) fn len(&self) -> usize {
        self.tenants().len()
    }
}

/// What an engine's tenants share about faults of the machine: the size limit in force, the
/// quarantine of damaged tenants, and the count of storage faults (for `/metrics`; kept here
/// rather than per tenant so that it never goes down when a tenant closes).
#[derive(Debug)]
pub(crate) struct Safeguards {
    pub(crate) size_limit: SizeLimit,
    pub(crate) quarantine: Quarantine,
    /// Write groups that failed on the storage (a full disk, an I/O error).
    pub(crate) storage_faults: AtomicU64,
}

impl Safeguards {
    pub(crate) fn new(max_tenant_bytes: Option<u64>) -> Self {
        Safeguards {
            size_limit: SizeLimit::new(max_tenant_bytes),
            quarantine: Quarantine::default(),
            storage_faults: AtomicU64::new(0),
        }
    }
}
