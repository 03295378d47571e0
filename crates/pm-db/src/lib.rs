//! Storage for pm-server: the engine boundary the gateway talks to, the rules every engine
//! shares, and the SQLite engine.
//!
//! # Layout
//! - [`engine`]: the storage engine interface ([`Engine`] opens tenants, [`Tenant`] executes,
//!   queries, reads the change log and publishes committed groups).
//! - Engine-neutral rules: [`entity`] (each entity's column list and its one rule set),
//!   [`access`](crate::access) (roles and permits), [`events`] (the diff that becomes an
//!   event, committed and stored events, retention), `registry` (the bounded set of open
//!   tenants), `snapshots` (concurrent subscribes' snapshots read in one statement),
//!   [`export`] (the export format and the validated dataset an import loads), [`upstream`]
//!   (the upstream board's export mapped onto that dataset).
//! - [`sqlite`]: the SQLite engine (one database file per tenant, one writer task each) and
//!   its operator tools (backup, export/import, inspection, migrations).
//! - [`postgres`]: the foundation of the PostgreSQL storage (issue 11): one schema per tenant
//!   and its migrations, and the change log with gapless seqs across nodes. Not an engine yet.
//! - [`error`]: the storage error and its wire form.

pub(crate) mod access;
pub mod engine;
pub mod entity;
pub mod error;
pub mod events;
pub mod export;
pub mod postgres;
mod registry;
mod search_text;
mod snapshots;
pub mod sqlite;
pub mod upstream;
mod work;

pub use engine::{
    Engine, EngineFigures, RolloutReport, SchemaChange, SchemaStatus, SubscriptionSnapshot, Tenant,
    UserProfile,
};
pub use error::{Error, Result};
pub use events::{CommittedEvent, EventFilter, Retention, StoredEvent};
pub use sqlite::migrations::MIGRATOR;
pub use sqlite::{SqliteConfig, SqliteEngine, SqliteTenant};
