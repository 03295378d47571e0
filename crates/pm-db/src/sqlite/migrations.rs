//! Schema migrations of tenant databases, including online ones.
//!
//! The binary embeds the migrations of `migrations/` ([`MIGRATOR`]). The engine may
//! also be given a migrations directory (`SqliteConfig::migrations_dir`): a superset of the
//! embedded migrations, same versions and same checksums, plus newer ones. Its set is what
//! tenants are brought to when they are opened, and an online rollout ([`super::rollout`])
//! reloads it while serving and rolls it out to the open tenants one at a time: each tenant's
//! writer drains (commits what was queued before), applies the pending migrations in one
//! transaction, and carries on with the commands that waited in its queue meanwhile.
//!
//! Every migration step here is all or nothing for a tenant: the pending migrations run inside
//! one transaction (sqlx turns each migration's own transaction into a savepoint), so a
//! failing one leaves the tenant on its old schema, still serving.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use pm_core::TenantId;
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, Migrator};
use sqlx::{Connection, SqliteConnection};

use super::layout::{has_migrations_table, schema_version};
use crate::engine::{SchemaChange, SchemaStatus};
use crate::error::{Error, Result};

/// The schema migrations of a tenant database, embedded from the top-level `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Applies the pending migrations of `migrator` on `conn` in one transaction: all of them,
/// or (on any failure) none.
pub(crate) async fn apply(
    conn: &mut SqliteConnection,
    migrator: &Migrator,
) -> Result<SchemaChange> {
    let from = schema_version(conn).await?;
    let mut tx = conn.begin().await?;
    // Inside this transaction sqlx runs each migration in a savepoint.
    match migrator.run_direct(&mut *tx).await {
        Ok(()) => {
            let to = schema_version(&mut tx).await?;
            tx.commit().await?;
            Ok(SchemaChange { from, to })
        }
        Err(error) => {
            if let Err(e) = tx.rollback().await {
                tracing::warn!(error = %e, "rolling back a failed migration failed");
            }
            Err(error.into())
        }
    }
}

/// Whether `conn`'s database has every migration of `migrator` applied, unchanged, and none
/// left failed: the checks [`apply`] makes before it would write anything, made here with
/// reads only, so that a tenant opened to be read needs no write connection. `false` means
/// [`apply`] has work to do or an error to report.
pub(crate) async fn up_to_date(conn: &mut SqliteConnection, migrator: &Migrator) -> Result<bool> {
    if !has_migrations_table(conn).await? {
        return Ok(false);
    }
    let applied: Vec<(i64, Vec<u8>, bool)> =
        sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations")
            .fetch_all(&mut *conn)
            .await?;
    if applied.iter().any(|(_, _, success)| !success) {
        return Ok(false);
    }
    if !migrator.ignore_missing
        && applied
            .iter()
            .any(|(version, _, _)| !migrator.version_exists(*version))
    {
        return Ok(false);
    }
    Ok(migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .all(|m| {
            applied
                .iter()
                .any(|(version, checksum, _)| *version == m.version && **checksum == *m.checksum)
        }))
}

/// The version of the migration that failed, when the error says so.
pub fn failed_version(error: &Error) -> Option<i64> {
    match error {
        Error::Migrate(MigrateError::ExecuteMigration(_, version))
        | Error::Migrate(MigrateError::VersionMismatch(version))
        | Error::Migrate(MigrateError::VersionMissing(version)) => Some(*version),
        _ => None,
    }
}

/// Already resolved migrations, as a source for [`Migrator::new`].
#[derive(Debug)]
struct Resolved(Vec<Migration>);

impl MigrationSource<'static> for Resolved {
    fn resolve(self) -> BoxFuture<'static, std::result::Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move { Ok(self.0) })
    }
}

/// A migrator over `migrations` (sorted by version).
fn migrator(migrations: Vec<Migration>, ignore_missing: bool) -> Migrator {
    // The source is already in memory: this future is ready at once and touches no runtime.
    let mut migrator = futures::executor::block_on(Migrator::new(Resolved(migrations)))
        .expect("in-memory migrations always resolve");
    migrator.set_ignore_missing(ignore_missing);
    migrator
}

/// The embedded migrations, tolerating newer ones already applied (a tenant brought further
/// by an online migration still opens on the schema this binary needs).
pub(crate) fn baseline() -> Migrator {
    migrator(MIGRATOR.iter().cloned().collect(), true)
}

/// Reads the migrations of `dir` and checks that it is a superset of `base`: every migration
/// of `base` is there with the same checksum (an applied migration can never change).
pub fn load_dir(dir: &Path, base: &[Migration]) -> Result<Vec<Migration>> {
    let invalid = |why: String| Error::InvalidMigrations(format!("{}: {why}", dir.display()));
    let mut migrations: Vec<Migration> = sqlx::migrate::resolve_blocking(dir)
        .map_err(|e| invalid(e.to_string()))?
        .into_iter()
        .map(|(migration, _path)| migration)
        .filter(|m| !m.migration_type.is_down_migration())
        .collect();
    migrations.sort_by_key(|m| m.version);
    for pair in migrations.windows(2) {
        if pair[0].version == pair[1].version {
            return Err(invalid(format!(
                "version {} appears twice",
                pair[0].version
            )));
        }
    }
    for known in base {
        match migrations.iter().find(|m| m.version == known.version) {
            None => {
                return Err(invalid(format!(
                    "migration {} ({}) is missing",
                    known.version, known.description
                )))
            }
            Some(m) if m.checksum != known.checksum => {
                return Err(invalid(format!(
                    "migration {} ({}) differs from the one already in use; applied migrations must not change",
                    known.version, known.description
                )))
            }
            Some(_) => {}
        }
    }
    Ok(migrations)
}

/// The newest migration this binary embeds.
pub fn embedded_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The newest migration version tenants of `dir` (or, without one, of this binary) are
/// brought to.
pub fn newest_version(dir: Option<&Path>) -> Result<i64> {
    let embedded: Vec<Migration> = MIGRATOR.iter().cloned().collect();
    let migrations = match dir {
        Some(dir) => load_dir(dir, &embedded)?,
        None => embedded,
    };
    Ok(migrations.iter().map(|m| m.version).max().unwrap_or(0))
}

/// The migrations a registry brings tenants to, and its rollout progress.
#[derive(Debug)]
pub(crate) struct Schema {
    dir: Option<PathBuf>,
    state: Mutex<State>,
    /// One rollout at a time.
    pub(crate) rollout: tokio::sync::Mutex<()>,
    applied: AtomicU64,
    failed: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// What opening a tenant applies.
    migrator: Arc<Migrator>,
    /// The migrations behind `migrator`, as loaded.
    migrations: Vec<Migration>,
    /// Bumped whenever `migrator` changes; each tenant remembers the one it is at.
    generation: u64,
    running: bool,
    open_pending: u64,
    closed_pending: HashSet<TenantId>,
    last_failure: Option<String>,
}

impl Schema {
    /// The migrations of `dir` (checked against the embedded ones), or the embedded ones
    /// without a directory. A directory that cannot be used is logged at ERROR and reported
    /// in [`SchemaStatus::last_failure`]; tenants then open on the embedded schema (callers
    /// that must refuse to start check the directory first with [`newest_version`]).
    pub(crate) fn new(dir: Option<PathBuf>) -> Schema {
        let embedded: Vec<Migration> = MIGRATOR.iter().cloned().collect();
        let (migrations, last_failure) = match &dir {
            Some(path) => match load_dir(path, &embedded) {
                Ok(migrations) => (migrations, None),
                Err(error) => {
                    tracing::error!(%error, "the migrations directory cannot be used; tenants open on the embedded schema");
                    (embedded, Some(error.to_string()))
                }
            },
            None => (embedded, None),
        };
        Schema {
            dir,
            state: Mutex::new(State {
                migrator: Arc::new(migrator(migrations.clone(), false)),
                migrations,
                generation: 0,
                running: false,
                open_pending: 0,
                closed_pending: HashSet::new(),
                last_failure,
            }),
            rollout: tokio::sync::Mutex::new(()),
            applied: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("schema lock is never poisoned")
    }

    /// What opening a tenant applies now, and its generation.
    pub(crate) fn current(&self) -> (Arc<Migrator>, u64) {
        let state = self.state();
        (state.migrator.clone(), state.generation)
    }

    /// The generation tenants should be at.
    pub(crate) fn generation(&self) -> u64 {
        self.state().generation
    }

    /// Whether the set goes beyond the embedded migrations (a failure of those is an online
    /// migration's failure, and the tenant can still open on the embedded schema).
    pub(crate) fn beyond_embedded(&self) -> bool {
        let state = self.state();
        state
            .migrations
            .iter()
            .any(|m| !MIGRATOR.version_exists(m.version))
    }

    /// Reloads the directory for a rollout: it must keep every migration of the current set
    /// unchanged. The new set becomes what opens apply. Returns the previous set (to go back
    /// to on failure), the target version and the new generation.
    pub(crate) fn begin_rollout(&self) -> Result<(Vec<Migration>, i64, u64)> {
        let Some(dir) = &self.dir else {
            return Err(Error::FailedPrecondition(
                "no migrations directory is configured (storage.migrations_dir)".into(),
            ));
        };
        let current = self.state().migrations.clone();
        let loaded = load_dir(dir, &current)?;
        let target = loaded.iter().map(|m| m.version).max().unwrap_or(0);
        let mut state = self.state();
        state.migrator = Arc::new(migrator(loaded.clone(), false));
        let previous = std::mem::replace(&mut state.migrations, loaded);
        state.generation += 1;
        state.running = true;
        state.open_pending = 0;
        state.closed_pending.clear();
        Ok((previous, target, state.generation))
    }

    /// Sets what the rollout still has to do.
    pub(crate) fn pending(&self, open: u64, closed: HashSet<TenantId>) {
        let mut state = self.state();
        state.open_pending = open;
        state.closed_pending = closed;
    }

    /// One open tenant done by the rollout.
    pub(crate) fn tenant_done(&self) {
        let mut state = self.state();
        state.open_pending = state.open_pending.saturating_sub(1);
    }

    /// More open tenants for the rollout (opened meanwhile with the previous set).
    pub(crate) fn more_open(&self, count: u64) {
        self.state().open_pending += count;
    }

    /// Counts a tenant brought to a newer schema.
    pub(crate) fn applied(&self, change: &SchemaChange) {
        if change.from > 0 && change.changed() {
            self.applied.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts and logs a failed migration of `tenant`; the tenant stays on its old schema.
    pub(crate) fn failed(&self, tenant: &TenantId, error: &Error) -> String {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let version = failed_version(error).map_or_else(|| "?".to_owned(), |v| v.to_string());
        tracing::error!(
            %tenant,
            migration = %version,
            %error,
            "schema migration failed and was rolled back; the tenant keeps serving on its old schema"
        );
        let message = format!("tenant {tenant}: migration {version}: {error}");
        self.state().last_failure = Some(message.clone());
        message
    }

    /// The rollout stopped on a failure: opens go back to `previous`, tolerating the newer
    /// migrations that tenants migrated before the failure already have.
    pub(crate) fn abandon(&self, previous: Vec<Migration>) {
        let mut state = self.state();
        state.migrator = Arc::new(migrator(previous.clone(), true));
        state.migrations = previous;
        state.generation += 1;
        state.running = false;
        state.open_pending = 0;
        state.closed_pending.clear();
    }

    /// The rollout reached every open tenant.
    pub(crate) fn finish(&self) -> u64 {
        let mut state = self.state();
        state.running = false;
        state.open_pending = 0;
        state.closed_pending.len() as u64
    }

    /// A tenant was opened (and so migrated): it is no longer pending.
    pub(crate) fn opened(&self, tenant: &TenantId) {
        let mut state = self.state();
        if !state.closed_pending.is_empty() {
            state.closed_pending.remove(tenant);
        }
    }

    /// The figures for metrics.
    pub(crate) fn status(&self) -> SchemaStatus {
        let state = self.state();
        SchemaStatus {
            target_version: state
                .migrations
                .iter()
                .map(|m| m.version)
                .max()
                .unwrap_or(0),
            rollout_running: state.running,
            applied: self.applied.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            open_pending: state.open_pending,
            closed_pending: state.closed_pending.len() as u64,
            last_failure: state.last_failure.clone(),
        }
    }
}
