//! Protocol v1 of pm-server: the prost-generated types of `proto/pm/v1/*.proto`, and the
//! conversions between wire values and the domain vocabulary of `pm-core`, in one place.
//!
//! # Layout
//! - [`v1`]: generated messages (`ClientFrame`, `ServerFrame`, entities, commands, queries),
//!   with serde implementations of the proto3 JSON mapping.
//! - [`convert`]: wire enum <-> domain enum, with field-level errors for unknown values.
//! - [`frame`]: helpers to build and encode frames once.

pub mod convert;
pub mod frame;

/// Generated protocol v1 messages (package `pm.v1`).
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    missing_debug_implementations
)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/pm.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/pm.v1.serde.rs"));
}

/// The protocol version this crate speaks (`Welcome.protocol_version`).
pub const PROTOCOL_VERSION: u32 = 1;
