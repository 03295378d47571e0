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
//! How the server uses it (`cluster`): a node publishes the groups its writers commit from
//! a task per open tenant (off the commit path: [`Bus::publish`] fails fast when NATS is
//! down and waits at most `publish_timeout`), and a tenant's hub takes the first
//! [`Relay::subscribe`] of a relay started at the head the hub starts from. What that relies
//! on:
//! - a relay reads the log with [`Tenant::read_events`](pm_db::Tenant::read_events), never
//!   [`Tenant::head_seq`](pm_db::Tenant::head_seq), which only follows what this node knows;
//!   it tells the tenant of other nodes' commits
//!   ([`Tenant::observe_head`](pm_db::Tenant::observe_head));
//! - a relay also takes this node's commits straight from its writer, so that local
//!   subscribers do not wait for the round trip through NATS; the copy that comes back on
//!   the bus is a duplicate and is dropped;
//! - a relay holds its tenant weakly and ends when it is closed, or when the log no longer
//!   holds what it missed; its receivers see `Closed`, and the hub cuts its subscribers off
//!   so that they resume (and get `RESYNC_REQUIRED` if they are too far behind).

//! # Layout
//! - [`sequencer`]: the pure rule deciding deliver, drop or fill first.
//! - [`wire`]: the versioned encoding of a group on the bus, strict when decoding.
//! - `bus`: the NATS connection, subjects (`<prefix>.t.<tenant>`), publishing ([`Bus`]).
//! - `feed`: one tenant's relay task ([`Relay`]).

mod bus;
mod feed;
pub mod sequencer;
pub mod wire;

pub(crate) use bus::check_prefix;
pub use bus::{Bus, BusConfig, BusError};
pub use feed::{Commits, Relay, RelayFigures};
