//! pm-server: a multi-tenant, real-time backend for agile boards.
//!
//! Clients hold one WebSocket each and speak protobuf (`proto/pm/v1`); each tenant's data
//! lives in its own SQLite database; every change is committed with a numbered change-log row
//! and pushed to subscribers in that order.
//!
//! # Layout
//! - `pm-core` (crate): domain rules, no I/O.
//! - `pm-proto` (crate): the wire types and their conversions.
//! - `pm-db` (crate): tenant registry, schema, repositories, change log, group-commit writer.
//! - [`cli`]: the `pm-server` command line.
//! - [`migrate`]: bringing tenant databases to the current schema.

pub mod cli;
pub mod migrate;

/// The build stamp: package version and git commit (see `build.rs`).
pub const BUILD_VERSION: &str = env!("PM_BUILD_VERSION");
