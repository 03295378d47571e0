//! End-to-end tests of the gateway: a server on port 0 with a fresh data directory, real
//! WebSocket clients. One module per concern; `SECURITY.md` cites tests as `module::test_name`
//! (run one with `cargo test -p pm-gateway --test gateway <name>`).
//!
//! # Layout
//!
//! - `assets`: the board page's files: types, caching, ETags and 304, precompressed bodies.
//! - `auth`: Hello and the `Welcome`, first-frame rules, every way a token is refused at Hello.
//! - `token_lifetime`: expired tokens, the leeway, expiry on an open connection, `RefreshToken`.
//! - `tenancy`: tenant ids in tokens (checked before any path), nothing shared between tenants.
//! - `permissions`: roles, non-members, changed roles and removed members (subscribed too).
//! - `read_model`: WIP refusals and warnings, `blocked`, board summary, hierarchy,
//!   dependencies, running timer and time totals, for a viewer and a non-member.
//! - `requests`: commands, queries, batches, idempotency and conflicts over the wire, paging.
//! - `subscriptions`: what a subscription delivers: order, filters, event content, unsubscribe.
//! - `cluster`: three nodes on one PostgreSQL database and one NATS bus: seqs, delivery
//!   and resume across nodes (`PM_TEST_POSTGRES_URL` and `PM_TEST_NATS_URL`; skipped
//!   without them).
//! - `relay`: the NATS relay between cluster nodes, against a real NATS server
//!   (`PM_TEST_NATS_URL`; skipped without it).
//! - `resume`: subscribing from a seq: after a disconnect or a snapshot, the retained log.
//! - `resume_memory`: resumes served from the hub's ring of recent events, or from the log
//!   when the ring does not reach back far enough; the same events either way.
//! - `backpressure`: slow consumers, peers that stop reading, a full writer queue.
//! - `connections`: connection caps, idle floods, hello timeout, slow handshakes, heartbeats.
//! - `rate_limits`: the request budget: burst, strikes, pings, reconnects.
//! - `frames`: frames after Hello: ping, garbage, text, request ids, frame and field sizes.
//! - `fuzz_frames`: property tests over a live connection: random and mutated frames.
//! - `fuzz_requests`: property tests over a live connection: well-formed but wrong requests.
//! - `faults`: a full tenant, a damaged one, what a shutdown leaves on disk.
//! - `operations`: health, readiness and metrics over HTTP, shutdown, online migration.
//! - `support`: the harness (`spawn_app`, the WebSocket `Client`) and helpers files share.

mod assets;
mod auth;
mod backpressure;
mod cluster;
mod connections;
mod faults;
mod frames;
mod fuzz_frames;
mod fuzz_requests;
mod operations;
mod permissions;
mod rate_limits;
mod read_model;
mod relay;
mod requests;
mod resume;
mod resume_memory;
mod subscriptions;
mod support;
mod tenancy;
mod token_lifetime;
