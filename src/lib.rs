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
//! - [`server`]: the listener, routing, connection cap and shutdown.
//! - [`http`]: the thin HTTP/1.1 layer in front of the WebSocket upgrade.
//! - [`session`]: one connection: hello, requests, subscription, heartbeat, goodbye.
//! - [`hub`]: per-tenant fan-out of committed events, with gapless resume.
//! - [`auth`]: JWT verification (algorithm pinned by configuration) and minting.
//! - [`limits`]: token buckets and connection counts.
//! - [`metrics`]: counters rendered for Prometheus.
//! - [`config`]: settings from a TOML file, `PM_*` variables and flags.
//! - [`client_cli`]: `pm-server client send|watch`, JSON in, JSON lines out.
//! - [`cli`]: the `pm-server` command line; [`migrate`]: schema upgrades of tenant databases;
//!   [`tenants`]: `tenants list|stats`; [`backup`]: `backup`, `restore`, `export`, `import`.

pub mod auth;
pub mod backup;
pub mod cli;
pub mod client_cli;
pub mod config;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod migrate;
pub mod server;
pub mod session;
pub mod tenants;

/// The build stamp: package version and git commit (see `build.rs`).
pub const BUILD_VERSION: &str = env!("PM_BUILD_VERSION");
