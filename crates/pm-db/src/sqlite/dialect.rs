//! What the shared SQL layer ([`super::sql`]) needs to know of SQLite.

/// The sqlx database.
pub(crate) type Db = sqlx::Sqlite;
/// A connection.
pub(crate) type Conn = sqlx::SqliteConnection;
/// A fetched row.
pub(crate) type DbRow = sqlx::sqlite::SqliteRow;
/// A statement's bound arguments.
pub(crate) type Args<'q> = sqlx::sqlite::SqliteArguments<'q>;

/// Placeholders for `count` parameters of a generated statement, after `before` others:
/// anonymous ones. Numbered ones (`?7`) make SQLite look each one up by name in a list, which
/// turns binding a multi-row insert quadratic.
pub(crate) fn placeholders(_before: usize, count: usize) -> String {
    vec!["?"; count].join(", ")
}

/// How a write transaction begins: taking the write lock at once, so that a busy database is
/// waited for here rather than failing a later statement.
pub(crate) const BEGIN: &str = "BEGIN IMMEDIATE";

/// `column` is one of the ids bound as parameter `n` with [`id_list`].
pub(crate) fn in_id_list(column: &str, n: usize) -> String {
    format!("{column} IN (SELECT value FROM json_each(${n}))")
}

/// A list of ids as one parameter: a JSON array (one cached statement, whatever the count).
pub(crate) fn id_list(ids: &[&str]) -> String {
    serde_json::to_string(ids).expect("a list of strings is JSON")
}

/// The head seq, as a scalar subquery.
pub(crate) const HEAD_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM change_log";
