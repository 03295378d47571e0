//! The pm-server network gateway: everything between a socket and the storage engine.
//!
//! A command goes: [`server`] accepts the socket → [`http`] reads the request and upgrades
//! `/ws` → [`session`] authenticates the `Hello` ([`auth`]), applies the [`limits`], decodes
//! each request and hands it to the tenant's storage (`pm-db`), which commits it with its
//! change-log rows → the answer goes back through the connection's queue ([`connection`]) →
//! the committed events reach the tenant's [`hub`], which queues them for every subscriber
//! that may see them; [`resume`] is how a subscriber joins that stream at any position.
//!
//! # Layout
//! - [`app`]: the state every connection shares, and the online schema rollout (SIGHUP).
//! - [`server`]: the listener, the connection cap and the orderly shutdown.
//! - [`http`]: the HTTP/1.1 layer: health, readiness, metrics, and the WebSocket upgrade.
//! - `assets`: the board page's files (embedded in release builds), with ETags and
//!   precompressed bodies.
//! - [`session`]: one connection: hello, requests, subscription, heartbeat, goodbye.
//! - [`connection`]: what is queued for a client, why a connection is closed, the writer task.
//! - [`socket`]: the socket split for tungstenite's reading and the server's own framing.
//! - [`reader`]: the reading side: frame rules and the request budget on each message.
//! - [`resume`]: the subscribe handshake (register, snapshot, replay, go live).
//! - [`hub`]: per-tenant fan-out of committed events.
//! - [`ring`]: a tenant's recent events in memory, bounded by bytes, for resuming subscribers.
//! - `cluster`: what a cluster node adds: publishing its commits on the bus, relays for hubs.
//! - [`relay`]: fan-out between cluster nodes over NATS, gap-filled from the change log.
//! - [`auth`]: JWT verification (algorithm pinned by configuration) and minting.
//! - [`limits`]: request budgets and connection counts.
//! - [`metrics`]: counters and histograms for Prometheus.
//! - [`settings`]: settings from a TOML file, `PM_*` variables and `--set` flags.
//! - `testing` (feature `test-util`): a real server on port 0 for tests.

pub mod app;
pub(crate) mod assets;
pub mod auth;
pub(crate) mod cluster;
pub(crate) mod connection;
pub mod http;
pub(crate) mod hub;
pub mod limits;
pub mod metrics;
pub(crate) mod origin;
pub(crate) mod outbox;
pub(crate) mod reader;
pub mod relay;
pub(crate) mod resume;
pub(crate) mod ring;
pub mod server;
pub(crate) mod session;
pub mod settings;
pub(crate) mod socket;
#[cfg(feature = "test-util")]
pub mod testing;

pub use app::{App, StartError};
pub use server::{listen, serve};
pub use settings::Settings;
