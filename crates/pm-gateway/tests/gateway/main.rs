//! End-to-end tests of the gateway: a server on port 0, real WebSocket clients.

mod auth;
mod backpressure;
mod connections;
mod frames;
mod fuzz_frames;
mod fuzz_requests;
mod operations;
mod permissions;
mod rate_limits;
mod requests;
mod resume;
mod subscriptions;
mod support;
mod tenancy;
mod token_lifetime;
