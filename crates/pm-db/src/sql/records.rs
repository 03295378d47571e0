//! Entity rows in and out of the database, driven by each entity's column list
//! ([`crate::entity::Columns`]): its INSERT, its version-checked UPDATE, its SELECT and its
//! row mapping.

use sqlx::Row;

use super::dialect::{self, Args, Conn, Db, DbRow};
use crate::entity::{Entity, Shape, Stored, Value};
use crate::error::Result;

/// A query with its arguments bound so far.
pub(crate) type Q<'q> = sqlx::query::Query<'q, Db, Args<'q>>;

/// Binds every column of `record`, in column order.
pub(crate) fn bind<'q, E: Entity>(query: Q<'q>, record: &'q E) -> Q<'q> {
    record.fold_values(query, |query, value| match value {
        Value::Text(s) => query.bind(s),
        Value::OptText(s) => query.bind(s),
        Value::Int(i) => query.bind(i),
        Value::OptInt(i) => query.bind(i),
    })
}

/// Reads a row selected with every column of `E`.
pub(crate) fn from_row<E: Entity>(row: &DbRow) -> Result<E> {
    E::from_values(|column, shape| {
        Ok(match shape {
            Shape::Text => Stored::Text(row.try_get(column)?),
            Shape::OptText => Stored::OptText(row.try_get(column)?),
            Shape::Int => Stored::Int(row.try_get(column)?),
            Shape::OptInt => Stored::OptInt(row.try_get(column)?),
        })
    })
}

/// The column names of `E`, comma-separated.
fn column_list<E: Entity>() -> String {
    E::COLUMNS
        .iter()
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The key column of `E`.
fn key<E: Entity>() -> &'static str {
    E::COLUMNS[0].name
}

/// `INSERT INTO t (c1, ...) VALUES (...)`.
pub(crate) async fn insert<E: Entity>(conn: &mut Conn, record: &E) -> sqlx::Result<()> {
    let sql = insert_many_sql::<E>(1);
    bind(sqlx::query(&sql), record).execute(&mut *conn).await?;
    Ok(())
}

/// Rows per multi-row insert of `E`, within SQLite's 32,766 bound parameters.
pub(crate) fn rows_per_insert<E: Entity>() -> usize {
    (30_000 / E::COLUMNS.len()).min(1_000)
}

/// `INSERT INTO t (c1, ...) VALUES (...), ...` for `rows` rows.
pub(crate) fn insert_many_sql<E: Entity>(rows: usize) -> String {
    let width = E::COLUMNS.len();
    let values = (0..rows)
        .map(|row| format!("({})", dialect::placeholders(row * width, width)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO {} ({}) VALUES {values}",
        E::TABLE,
        column_list::<E>(),
    )
}

/// Inserts many rows of one kind with one statement per `rows_per_insert` rows.
pub(crate) async fn insert_many<E: Entity>(conn: &mut Conn, records: &[E]) -> sqlx::Result<()> {
    for chunk in records.chunks(rows_per_insert::<E>()) {
        let sql = insert_many_sql::<E>(chunk.len());
        let query = chunk.iter().fold(sqlx::query(&sql), bind);
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Writes every column of `record` if the stored version is `expected`; false if not.
pub(crate) async fn update<E: Entity>(
    conn: &mut Conn,
    record: &E,
    expected: u64,
) -> sqlx::Result<bool> {
    let width = E::COLUMNS.len();
    let sql = format!(
        "UPDATE {table} SET ({cols}) = ({values}) WHERE {key} = {id} AND version = {version}",
        table = E::TABLE,
        cols = column_list::<E>(),
        values = dialect::placeholders(0, width),
        key = key::<E>(),
        id = dialect::placeholders(width, 1),
        version = dialect::placeholders(width + 1, 1),
    );
    let done = bind(sqlx::query(&sql), record)
        .bind(record.entity_id())
        .bind(expected as i64)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Finds a row by its key column, deleted or not.
pub(crate) async fn find<E: Entity>(conn: &mut Conn, id: &str) -> Result<Option<E>> {
    let sql = format!(
        "SELECT {} FROM {} WHERE {} = $1",
        column_list::<E>(),
        E::TABLE,
        key::<E>()
    );
    let row = sqlx::query(&sql).bind(id).fetch_optional(conn).await?;
    row.as_ref().map(from_row).transpose()
}

/// `SELECT` of every column of `E`, for queries that add their own clauses.
pub(crate) fn select_columns<E: Entity>(alias: &str) -> String {
    E::COLUMNS
        .iter()
        .map(|c| format!("{alias}.{}", c.name))
        .collect::<Vec<_>>()
        .join(", ")
}
