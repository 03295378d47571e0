//! The SQL both engines share: commands applied inside a write transaction (`commands`),
//! entity rows in and out (`records`), keyset pages (`pages`), the reads with `as_of_seq`
//! (`queries`, `read_model`, `people`, and the activity feed in `activity`), idempotency
//! answers and a write group's deferred inserts.
//!
//! It is compiled once per engine, by `#[path]` from [`crate::sqlite`] and
//! [`crate::postgres`], against what that engine module provides beside it:
//! - `dialect`: its sqlx types (`Db`, `Conn`, `Pool`, `DbRow`, `Args`) and the few pieces of
//!   SQL that differ (placeholders of generated statements, a bound list of ids, how a
//!   transaction begins);
//! - `changelog`: `head_seq`, the change number a read is as of, and `batched_upto`, how
//!   much of the log the batched indexes by actor, project and entity hold (SQLite only);
//! - `search`: tenant-wide search and the text filter of `ListWorkItems`, on FTS5 or
//!   `tsvector`.
//!
//! Every statement is so written once and checked by the compiler for both drivers without a
//! generic bound per bind and per column (sqlx's executor and codec traits are bounds on other
//! types than the database, which Rust does not carry from a trait alias to its users). SQL
//! text uses numbered parameters (`$1`), which sqlx's SQLite driver binds by number as
//! PostgreSQL does; statements built with `QueryBuilder` get the engine's own placeholders.

pub(crate) mod activity;
pub(crate) mod commands;
pub(crate) mod group;
pub(crate) mod hits;
pub(crate) mod idempotency;
pub(crate) mod pages;
pub(crate) mod pending;
pub(crate) mod people;
pub(crate) mod queries;
pub(crate) mod read_model;
pub(crate) mod records;
pub(crate) mod replay;
pub(crate) mod retention;
pub(crate) mod stats;
pub(crate) mod transfer;

use super::{changelog, dialect, search};
