//! The engine-neutral storage tests of `tests/storage` against the PostgreSQL engine: the same
//! test files, with an environment (`env`) that gives each test a fresh database on the
//! server `PM_TEST_POSTGRES_URL` names.
//!
//! Built only when that variable is set (see `build.rs`); otherwise this binary prints
//! [`SKIP`] to stderr and passes, and CI fails on that line. The files not included here test
//! what only the SQLite engine has (files, WAL, backups, damage, size limits, file exports
//! and imports, its writer's pragmas) or its configuration.

/// What this suite prints when it is not built; CI fails if it finds this line.
#[cfg(not(postgres_suite))]
const SKIP: &str =
    "skipped: PM_TEST_POSTGRES_URL not set (storage suite against the PostgreSQL engine)";

#[cfg(not(postgres_suite))]
#[test]
fn skipped_without_a_postgres_server() {
    use std::io::Write;
    // Straight to stderr: the harness captures `eprintln!` of passing tests.
    let _ = writeln!(std::io::stderr(), "{SKIP}");
}

#[cfg(postgres_suite)]
mod env;
// The helpers serve every file of the SQLite suite; not all of them are used here.
#[cfg(postgres_suite)]
#[allow(dead_code, unused_imports)]
#[path = "../storage/support.rs"]
mod support;

#[cfg(postgres_suite)]
#[path = "../storage"]
mod shared {
    mod batches;
    mod conflicts;
    mod crud;
    mod crud_planning;
    mod crud_records;
    mod events;
    mod idempotency;
    mod log_batches;
    mod pagination;
    mod people;
    mod permissions;
    mod rules;
    mod search;
    mod tenant_search;
}

// Only PostgreSQL has these: several nodes on one database, its server restarting, its
// writer's pruning and connection, and moving tenants in and out of it.
#[cfg(postgres_suite)]
mod connections;
#[cfg(postgres_suite)]
mod nodes;
#[cfg(postgres_suite)]
mod restart;
#[cfg(postgres_suite)]
mod retention;
#[cfg(postgres_suite)]
mod transfer;
