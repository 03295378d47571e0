//! Protocol v1: prost-generated types for `proto/pm/v1`.

#[allow(missing_docs, unreachable_pub, clippy::all, missing_debug_implementations)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/pm.v1.rs"));
}
