//! Fan-out between the nodes of a cluster (issue 11): committed groups travel over NATS, and
//! each node turns what it receives into the same stream a single node's hub reads from its
//! own commits, with the change log making up for what NATS loses.
//!
//! After COMMIT the writing node publishes the group on the tenant's subject
//! ([`Bus::publish`]). A node whose clients follow a tenant runs that tenant's [`Relay`]
//! ([`Bus::relay`]): NATS core delivers at most once, so the relay drops what it has already
//! delivered, reads a hole from the change log before going on, and reads the log past its
//! last seq periodically and after every reconnect or slow-consumer report. With NATS down
//! it delivers by polling the log: nothing lost, only later.
//!
//! Not wired into the server yet: that comes with the PostgreSQL engine, whose change log
//! every node reads. What the wiring relies on:
//! - a relay reads the log with [`Tenant::read_events`](pm_db::Tenant::read_events), never
//!   [`Tenant::head_seq`](pm_db::Tenant::head_seq): a cached head would not show other nodes'
//!   commits, and `read_events` must;
//! - a hub starts the relay at the head it starts from and takes the first
//!   [`Relay::subscribe`] (it misses nothing) in place of `subscribe_commits()`;
//! - publishing runs off the commit path (a task per node reading `subscribe_commits()`):
//!   [`Bus::publish`] fails fast when NATS is down and may wait up to `publish_timeout`;
//! - a relay whose missed events were pruned ends, and its receivers see `Closed`: the hub
//!   must then cut its subscribers off so that they resume (and get `RESYNC_REQUIRED`).
//!
//! # Layout
//! - [`sequencer`]: the pure rule deciding deliver, drop or fill first.
//! - [`wire`]: the versioned encoding of a group on the bus, strict when decoding.
//! - `bus`: the NATS connection, subjects (`<prefix>.t.<tenant>`), publishing ([`Bus`]).
//! - `feed`: one tenant's relay task ([`Relay`]).

mod bus;
mod feed;
pub mod sequencer;
pub mod wire;

pub use bus::{Bus, BusConfig, BusError};
pub use feed::{Relay, RelayFigures};
