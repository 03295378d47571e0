//! pm-server: a multi-tenant, real-time backend for agile boards.
//!
//! Clients hold one WebSocket each and speak protobuf (`proto/pm/v1`); each tenant's data
//! lives in its own database; every change is committed with a numbered change-log row and
//! pushed to subscribers in that order. This package is the `pm-server` binary: the wiring of
//! the crates below and the operator commands.
//!
//! # Layout
//! - `pm-core` (crate): domain rules, no I/O.
//! - `pm-proto` (crate): the wire types and their conversions.
//! - `pm-db` (crate): the storage engine boundary and the SQLite engine.
//! - `pm-gateway` (crate): listener, HTTP, sessions, hub, auth, limits, metrics, settings.
//! - `pm-client` (crate): the Rust client library.
//! - [`cli`]: the command line, one module per command (`serve`, `token`, `tenants`,
//!   `client`, `migrate`, `backup`, `restore`, `export`, `import`).

pub mod cli;

pub use cli::version::BUILD_VERSION;
