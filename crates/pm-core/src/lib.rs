//! Domain rules of pm-server. No I/O: no tokio, sqlx or sockets.
//!
//! # Layout
//! - [`error`]: the field-level validation error every rule returns.
//! - [`ids`]: tenant ids (checked before any path is formed), entity ids (UUIDv7), user ids.
//! - [`kinds`]: the closed vocabularies (statuses, types, priorities, roles, ...) and their
//!   stored names.
//! - [`text`]: length and content rules for names, titles, keys and other text fields.
//! - [`rules`]: hierarchy, sprint lifecycle, roles, dependencies, time entries.
//! - [`rank`]: ordering keys for drag-and-drop within a board column.
//!
//! The entities and commands themselves are the protocol types of `pm-proto`; this crate
//! owns what is allowed.

pub mod error;
pub mod ids;
pub mod kinds;
pub mod rank;
pub mod rules;
pub mod text;
pub mod time;

pub use error::{Error, Result};
pub use ids::{EntityId, TenantId, UserId};
