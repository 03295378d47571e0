//! Per-tenant SQLite storage for pm-server.
//!
//! # Layout
//! - [`registry`]: tenant id -> directory, lazy open with migrations, pragmas on every
//!   connection, a bound on open tenants with least-recently-used closing.
//! - [`writer`]: one writer task per open tenant; group commit of queued commands.
//! - `checkpoint`: WAL checkpoints on their own connection, off the writer's path.
//! - `commands`: applying each command inside the writer's transaction (one module per
//!   command group); `records`: the entity rows.
//! - [`queries`]: reads through the tenant's read pool, with `as_of_seq`.
//! - [`changelog`]: the numbered change log (append, range reads for resume, retention).
//! - [`migrations`]: schema migrations, atomic per tenant, and online rollouts of a
//!   migrations directory.
//! - `idempotency`: answers to commands sent with an idempotency key.
//! - [`inspect`]: read-only statistics of tenant databases, for operators.
//! - [`backup`]: online backup (`VACUUM INTO`, verified) and restore of tenant databases.
//! - [`export`]: export and import of a tenant as JSON Lines (validated, all or nothing).
//! - [`lock`]: the lock file that tells other processes a tenant is open.
//! - [`error`]: the storage error and its wire form.

pub mod backup;
pub mod changelog;
mod checkpoint;
mod commands;
pub mod error;
pub mod export;
mod idempotency;
pub mod inspect;
pub mod lock;
pub mod migrations;
pub mod queries;
mod records;
pub mod registry;
pub mod writer;

pub use changelog::{CommittedEvent, EventFilter, Retention, StoredEvent};
pub use error::{Error, Result};
pub use migrations::{RolloutReport, SchemaChange, SchemaStatus};
pub use registry::{RegistryConfig, Tenant, TenantRegistry};
pub use writer::{WriterConfig, WriterStats};

/// The schema migrations of a tenant database (top-level `migrations/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");
