//! The PostgreSQL engine (issue 11): one schema per tenant in a database every node of a
//! cluster shares, and the gapless change log they all append to.
//!
//! [`PostgresEngine`] implements [`Engine`](crate::Engine) with the SQL the SQLite engine
//! uses (`sql/`, compiled for each engine), so commands, queries and their errors are the
//! same on both. Not yet selectable in `pm-server`'s settings.
//!
//! Every tenant lives in its own schema, `t_<tenant id>` ([`schema_name`]). Table names in
//! the SQL here and in `migrations/postgres/` are never qualified: a connection works on a
//! tenant only with `search_path` set to that tenant's schema alone. A transaction gets it
//! with [`begin_tenant`] (or [`set_tenant`] on one the caller began), as a `SET LOCAL` that
//! ends with the transaction, so a pooled connection never carries one tenant's path into
//! another's work; without it, every table name fails to resolve.
//!
//! # Layout
//! - `engine`, `tenant`: tenants open on this node; reads in `REPEATABLE READ` snapshots.
//! - `writer`: a writer per tenant per node. Each group locks the tenant's counter row first,
//!   so the writers of all nodes take turns and each sees what the others committed; every
//!   command runs in a savepoint, since a failed statement aborts a PostgreSQL transaction.
//! - `search`: `Search` and the text filter of `ListWorkItems` on the `tsvector` columns.
//! - `dialect`: what the shared SQL needs to know of PostgreSQL.
//! - [`schema`](self::schema): schema names, the embedded migrations ([`PG_MIGRATOR`]),
//!   creating and migrating a tenant's schema ([`open_tenant_schema`]) and scoping a
//!   transaction to a tenant.
//! - [`changelog`](self::changelog): the gapless append ([`append_events`]) and the reads of
//!   the change log ([`read_events`], [`head_seq`], [`oldest_seq`]).
//! - [`admin`](self::admin): the tenants of a database, their statistics, `migrate`.
//! - [`transfer`](self::transfer): export and import of a tenant, and the move of a SQLite
//!   tenant into PostgreSQL with the same ids and seqs.
//! - This module: how PostgreSQL's failures become the crate's [`Error`].

pub mod admin;
pub mod changelog;
mod connections;
mod dialect;
mod engine;
pub mod schema;
mod search;
mod tenant;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod transfer;
mod writer;

// The shared SQL layer, compiled for this engine (and again for the other): see `sql/mod.rs`.
#[allow(clippy::duplicate_mod)]
#[path = "sql/mod.rs"]
mod sql;

pub use changelog::{append_events, head_seq, oldest_seq, read_events, EventRow, NewEvent};
pub use engine::{PostgresConfig, PostgresEngine};
pub use schema::{
    begin_tenant, open_tenant_schema, quote_ident, schema_name, schema_version, set_tenant,
    PG_MIGRATOR,
};
pub use tenant::PgTenant;

use sqlx::migrate::MigrateError;

use crate::error::Error;

/// What a client is told when the database cannot be reached: no address, no SQL.
const UNREACHABLE: &str = "the database cannot be reached; retry later";

/// What a client is told when no connection was free or could be opened in time.
const NO_ANSWER: &str = "the database did not answer in time; retry later";

/// The crate's error for a PostgreSQL failure.
///
/// The database being unreachable (refused or lost connections, a pool timeout, a server
/// shutting down or out of connections) and transactions PostgreSQL aborted to resolve a
/// conflict between concurrent ones are `Unavailable`: nothing was written, and the same
/// request may succeed when retried. A full disk is `StorageFull`. Anything else, constraint
/// violations included, stays `Database` (internal) for the query to map to a domain error.
/// Messages never carry the SQL or the server's own words.
pub(crate) fn pg_error(error: sqlx::Error) -> Error {
    match &error {
        // Every connection busy, or none could be opened in time (a refused connection is
        // retried until the pool's acquire timeout).
        sqlx::Error::PoolTimedOut => Error::Unavailable(NO_ANSWER.into()),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Error::Unavailable(UNREACHABLE.into()),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // Class 08: connection exceptions.
            Some(code) if code.starts_with("08") => Error::Unavailable(UNREACHABLE.into()),
            // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections,
            // out_of_memory, query_canceled (a statement timeout).
            Some("57P01" | "57P02" | "57P03" | "53300" | "53200" | "57014") => {
                Error::Unavailable(UNREACHABLE.into())
            }
            // serialization_failure, deadlock_detected: the transaction was rolled back.
            Some("40001" | "40P01") => Error::Unavailable(
                "the change collided with a concurrent one and was not stored; retry".into(),
            ),
            Some("53100") => Error::StorageFull,
            _ => Error::Database(error),
        },
        _ => Error::Database(error),
    }
}

/// The crate's error for one that came out of the shared SQL layer (which knows only
/// sqlx's errors) on PostgreSQL: a database error is read as [`pg_error`] reads it.
pub(crate) fn mapped(error: Error) -> Error {
    match error {
        Error::Database(error) => pg_error(error),
        other => other,
    }
}

/// The crate's error for a failed migration: a lost connection is `Unavailable` like any
/// other, a failing migration stays `Migrate`.
pub(crate) fn migrate_error(error: MigrateError) -> Error {
    match error {
        MigrateError::Execute(error) => match pg_error(error) {
            Error::Database(error) => Error::Migrate(MigrateError::Execute(error)),
            other => other,
        },
        MigrateError::ExecuteMigration(error, version) => match pg_error(error) {
            Error::Database(error) => {
                Error::Migrate(MigrateError::ExecuteMigration(error, version))
            }
            other => other,
        },
        other => Error::Migrate(other),
    }
}

/// `.pg()` on sqlx results: maps the error with [`pg_error`]. The crate's `From<sqlx::Error>`
/// reads SQLite result codes, so `?` on a PostgreSQL error would misread it.
pub(crate) trait PgResultExt<T> {
    /// The result with its error mapped by [`pg_error`].
    fn pg(self) -> Result<T, Error>;
}

impl<T> PgResultExt<T> for Result<T, sqlx::Error> {
    fn pg(self) -> Result<T, Error> {
        self.map_err(pg_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_and_busy_are_unavailable_without_details() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "10.1.2.3:5432");
        for error in [sqlx::Error::Io(refused), sqlx::Error::PoolTimedOut] {
            let mapped = pg_error(error);
            assert!(matches!(mapped, Error::Unavailable(_)), "{mapped:?}");
            assert_eq!(mapped.code(), pm_proto::v1::ErrorCode::Unavailable);
            assert!(!mapped.to_wire().message.contains("10.1.2.3"));
        }
    }

    #[test]
    fn other_errors_stay_internal() {
        let mapped = pg_error(sqlx::Error::RowNotFound);
        assert!(matches!(mapped, Error::Database(_)), "{mapped:?}");
        assert_eq!(mapped.to_wire().message, "internal error");
    }
}
