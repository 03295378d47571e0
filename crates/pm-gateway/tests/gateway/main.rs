//! End-to-end tests of the gateway: a server on port 0, real WebSocket clients.

mod auth;
mod backpressure;
mod fuzz_requests;
mod operations;
mod permissions;
mod requests;
mod resume;
mod security;
mod session_limits;
mod subscriptions;
mod support;
mod tenancy;
mod token_lifetime;
