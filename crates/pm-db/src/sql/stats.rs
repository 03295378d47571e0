//! What `pm-server tenants stats` reads of a tenant, for both engines: the change log's range
//! and the live rows of each kind.

use sqlx::Row;

use super::dialect::Conn;
use crate::error::Result;

/// The entity kinds counted, in report order, and their tables.
const COUNTED: [(&str, &str); 9] = [
    ("projects", "projects"),
    ("members", "project_members"),
    ("work_items", "work_items"),
    ("sprints", "sprints"),
    ("comments", "comments"),
    ("time_entries", "time_entries"),
    ("dependencies", "dependencies"),
    ("swim_lanes", "swim_lanes"),
    ("llm_context", "llm_context"),
];

/// The oldest retained seq and the time of the latest change (both `None` for an empty log).
pub(crate) async fn log_range(conn: &mut Conn) -> Result<(Option<u64>, Option<i64>)> {
    let row = sqlx::query("SELECT MIN(seq) AS oldest, MAX(at) AS last FROM change_log")
        .fetch_one(&mut *conn)
        .await?;
    let oldest: Option<i64> = row.try_get("oldest")?;
    Ok((oldest.map(|s| s as u64), row.try_get("last")?))
}

/// Live (not deleted) rows per entity kind; members have no deletion time.
pub(crate) async fn live_counts(conn: &mut Conn) -> Result<Vec<(&'static str, u64)>> {
    let columns: Vec<String> = COUNTED
        .iter()
        .map(|(kind, table)| {
            let live = if *table == "project_members" {
                ""
            } else {
                " WHERE deleted_at IS NULL"
            };
            format!("(SELECT COUNT(*) FROM {table}{live}) AS {kind}")
        })
        .collect();
    let row = sqlx::query(&format!("SELECT {}", columns.join(", ")))
        .fetch_one(&mut *conn)
        .await?;
    COUNTED
        .iter()
        .map(|(kind, _)| Ok((*kind, row.try_get::<i64, _>(*kind)? as u64)))
        .collect()
}
