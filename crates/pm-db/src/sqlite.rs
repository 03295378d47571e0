//! The SQLite engine: each tenant is its own database file, written by one writer task that
//! commits queued commands in groups, and read through a pool of read-only connections.
//!
//! # Layout
//! - [`config`]: the engine's settings and the pragmas of every connection; [`layout`]: where
//!   tenants live on disk, read-only opens and schema versions.
//! - [`tenant`]: one open tenant (writer, read pool, checkpointer, event feed); [`readers`]:
//!   its read pool.
//! - `queue`: what callers put in a tenant's write queue; [`writer`]: the task that commits
//!   it in groups; `commit`: a group's one-round-trip commit script.
//! - `sql` (shared with the PostgreSQL engine, see `sql/mod.rs`): a group's transaction, the
//!   commands applied in it, entity rows, the reads with `as_of_seq`, keyset pages, the
//!   board's derived reads, idempotency answers; `dialect`: what it needs to know of SQLite.
//! - `search`: `Search` and the text filter of `ListWorkItems` on the FTS5 tables;
//!   `text_index`: work items' and comments' text indexed in batches, and reads that need
//!   all of it.
//! - `changelog`: the change log's SQL (append, pairs in batches, retention); `batches`:
//!   when the writer runs the log's and the text's batches, off its groups' answers.
//! - `checkpoint`: WAL checkpoints off the writer's path.
//! - [`migrations`]: schema migrations, atomic per tenant; `rollout`: online rollouts.
//! - [`backup`], [`transfer`] (export/import), [`inspect`]: operator tools on tenant files.
//! - [`lock`]: the lock file that tells other processes a tenant is open.

pub mod backup;
mod batches;
mod changelog;
mod checkpoint;
mod commit;
pub mod config;
mod dialect;
mod engine;
mod health;
pub mod inspect;
pub mod layout;
pub mod lock;
pub mod migrations;
mod queue;
pub mod readers;
mod rollout;
mod search;
pub mod tenant;
mod text_index;
pub mod transfer;
pub mod writer;

// The shared SQL layer, compiled for this engine (and again for the other): see `sql/mod.rs`.
#[allow(clippy::duplicate_mod)]
#[path = "sql/mod.rs"]
mod sql;
use sql::{commands, group, idempotency, people, queries, records, replay, retention, stats};

pub use config::{SqliteConfig, WriterConfig, WAL_SIZE_LIMIT};
pub use engine::SqliteEngine;
pub use layout::DB_FILE;
pub use queue::WriterStats;
pub use tenant::SqliteTenant;
