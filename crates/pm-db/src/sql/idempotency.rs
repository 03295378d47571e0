//! Answers to commands sent with an idempotency key, per (user, key), kept 24 hours.
//!
//! Only successful commands are stored: a failed command changed nothing, so sending it
//! again (corrected or not) is safe and gets a fresh answer. A key reused with a different
//! command is refused rather than answered with an unrelated result.

use pm_proto::v1;
use prost::Message;
use sqlx::Row;

use super::dialect::{self, Conn};
use super::records::Q;

use crate::error::{Error, Result};

/// How long an answer is kept, in milliseconds.
pub(crate) const RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

/// A stored answer about to be written.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) user_id: String,
    pub(crate) key: String,
    pub(crate) created_at: i64,
    pub(crate) command_hash: i64,
    pub(crate) result: v1::CommandResult,
}

/// A stable 64-bit hash (FNV-1a) of the encoded command, to detect a key reused for another
/// command.
pub(crate) fn command_hash(command: &v1::Command) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in command.encode_to_vec() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// The stored answer for (user, key) if it is younger than 24 hours.
pub(crate) async fn lookup(
    conn: &mut Conn,
    user_id: &str,
    key: &str,
    now: i64,
) -> Result<Option<(i64, v1::CommandResult)>> {
    let row = sqlx::query(
        r#"
        SELECT command_hash, result
        FROM idempotency
        WHERE user_id = $1 AND key = $2 AND created_at > $3
        "#,
    )
    .bind(user_id)
    .bind(key)
    .bind(now - RETENTION_MS)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let hash: i64 = row.try_get("command_hash")?;
    let bytes: Vec<u8> = row.try_get("result")?;
    let result = v1::CommandResult::decode(bytes.as_slice())
        .map_err(|e| Error::Corrupt(format!("stored idempotent result: {e}")))?;
    Ok(Some((hash, result)))
}

/// Rows per multi-row insert: 5 columns each, within SQLite's 32,766 bound parameters.
pub(crate) const ROWS_PER_INSERT: usize = 5_000;

/// Stores answers, replacing expired ones under the same key; bind with [`bind`].
pub(crate) fn store_sql(rows: usize) -> String {
    format!(
        "INSERT INTO idempotency (user_id, key, created_at, command_hash, result) VALUES {} \
         ON CONFLICT (user_id, key) DO UPDATE SET created_at = excluded.created_at, \
         command_hash = excluded.command_hash, result = excluded.result",
        (0..rows)
            .map(|row| format!("({})", dialect::placeholders(row * 5, 5)))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Binds one row of [`store_sql`].
pub(crate) fn bind<'q>(query: Q<'q>, e: &'q Entry) -> Q<'q> {
    query
        .bind(&e.user_id)
        .bind(&e.key)
        .bind(e.created_at)
        .bind(e.command_hash)
        .bind(e.result.encode_to_vec())
}

/// Deletes answers older than 24 hours; returns how many.
pub(crate) async fn prune(conn: &mut Conn, now: i64) -> sqlx::Result<u64> {
    let done = sqlx::query("DELETE FROM idempotency WHERE created_at <= $1")
        .bind(now - RETENTION_MS)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}
