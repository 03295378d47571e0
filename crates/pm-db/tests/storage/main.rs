//! Storage tests on real SQLite files: one temporary data directory per test. The
//! engine-neutral files also run against the PostgreSQL engine (`tests/storage_postgres`),
//! which includes them with its own `env`.
//!
//! # Layout
//!
//! - `env`: the per-test environment (`TestEnv`, a fresh data directory and engine);
//!   `support`: `setup` and helpers that run commands
//!   and queries and check their answers.
//! - `crud`: create, read, update, soft delete and restore of projects, members and work items;
//!   moving work items; display keys.
//! - `crud_planning`: the same for sprints, dependencies and swim lanes.
//! - `crud_records`: the same for comments, time entries (and the timer) and LLM context.
//! - `conflicts`: versions; stale `expected_version`s and concurrent updates of one row.
//! - `rules`: the rules commands enforce: hierarchy, dependency cycles, sprint transitions, one
//!   running timer per user, timestamps in range.
//! - `permissions`: roles and membership: the last admin, viewers, non-members, archived and
//!   deleted projects, removed members.
//! - `pagination`: keyset pages under concurrent inserts; malformed page requests.
//! - `search`: full-text search over titles, descriptions and live comments.
//! - `people`: user profiles from token claims, `ListUsers`, names on members, assignees and
//!   activity.
//! - `tenant_search`: `Search` across the caller's projects and every searchable kind: rank,
//!   snippets, pages.
//! - `text_index`: work items' and comments' text indexed in batches; searches never see an
//!   index behind its rows.
//! - `idempotency`: keyed commands replay their first answer.
//! - `batches`: atomic batches commit all or nothing.
//! - `checks`: the CHECK constraints on listed values: no temporary b-tree per row written,
//!   the listed values accepted and nothing else.
//! - `tenants`: isolation, tenant ids, reopening, the bound on open tenants.
//! - `writer`: gapless seqs, connection pragmas, a full queue, group commit of mixed commands.
//! - `events`: committed events in seq order, the activity feed, resume positions.
//! - `log_batches`: activity and replay of one project or entity on both sides of where the
//!   log's batched indexes end; `log_migrations`: the migrations that made them.
//! - `retention`: change-log pruning by count and age, and what it never removes.
//! - `migrations`: online schema migrations rolled out to open tenants through their writers.
//! - `backup`: online backup while writes continue, and restore.
//! - `faults`: a full disk (a tenant at its size limit): failing fast, serving again by itself.
//! - `damage`: a damaged database found on open, by a read or by a write: quarantine, restore.
//! - `wal`: checkpoints leave a quiet or closed tenant without a WAL on disk.
//! - `export`: JSON Lines export and validated, all-or-nothing import (its source tenant is
//!   built in `export::fixture`).
//! - `read_model`: the cancelled status, the derived `blocked` flag, WIP policies, and the
//!   board summary, hierarchy, running timer, time totals and dependency reads; a tenant from
//!   before them, migrated.
//! - `real_data`: the real shared export (`../shared/data/`) replayed through commands and
//!   read back.
//! - `upstream`: the same file imported as it is (`import --from agile-board`): ids, numbers,
//!   times, authors, versions, ranks, members and the change log, checked against the file;
//!   dangling references, dry runs, refusals; every kind on a small file.
//! - `postgres`: the PostgreSQL foundation (tenant schemas, migrations, constraints, gapless
//!   seqs across pools) on a real server, one fresh database per test; skipped, with a line
//!   on stderr, unless `PM_TEST_POSTGRES_URL` is set.

mod env;
mod support;

mod backup;
mod batches;
mod checks;
mod conflicts;
mod crud;
mod crud_planning;
mod crud_records;
mod damage;
mod events;
mod export;
mod faults;
mod idempotency;
mod log_batches;
mod log_migrations;
mod migrations;
mod pagination;
mod people;
mod permissions;
mod postgres;
mod read_model;
mod readers;
mod real_data;
mod retention;
mod rules;
mod search;
mod tenant_search;
mod tenants;
mod text_index;
mod upstream;
mod wal;
mod writer;
