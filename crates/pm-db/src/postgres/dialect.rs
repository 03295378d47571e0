//! What the shared SQL layer ([`super::sql`]) needs to know of PostgreSQL.

/// The sqlx database.
pub(crate) type Db = sqlx::Postgres;
/// A connection.
pub(crate) type Conn = sqlx::PgConnection;
/// A fetched row.
pub(crate) type DbRow = sqlx::postgres::PgRow;
/// A statement's bound arguments.
pub(crate) type Args<'q> = sqlx::postgres::PgArguments;

/// Placeholders for `count` parameters of a generated statement, after `before` others:
/// `$n`, numbered from `before + 1`.
pub(crate) fn placeholders(before: usize, count: usize) -> String {
    (before + 1..=before + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a write transaction begins. The writer then locks the tenant's counter row before
/// anything else (see `writer`), which orders the tenant's writers across nodes.
pub(crate) const BEGIN: &str = "BEGIN";

/// `column` is one of the ids bound as parameter `n` with [`id_list`].
pub(crate) fn in_id_list(column: &str, n: usize) -> String {
    format!("{column} = ANY(${n}::text[])")
}

/// A list of ids as one parameter: a text array.
pub(crate) fn id_list(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

/// The head seq, as a scalar subquery.
pub(crate) const HEAD_SEQ: &str = "SELECT last_seq FROM tenant_head WHERE id = 1";
