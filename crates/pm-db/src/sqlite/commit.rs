//! How a write group commits on SQLite: one script.

use pm_proto::v1;
use sqlx::SqliteConnection;

use super::batches::Batches;
use super::group::Group;
use super::{changelog, idempotency, records};
use crate::error::Result;

impl Group {
    /// Writes what is left and commits, in one script (one round trip): `BEGIN` if the
    /// transaction is not open yet, the deferred inserts, the change log, the `folded` batches
    /// (see `batches`), the idempotency answers, `COMMIT`.
    pub(crate) async fn commit(
        &mut self,
        conn: &mut SqliteConnection,
        folded: Batches,
    ) -> Result<()> {
        let items = std::mem::take(&mut self.pending.items);
        let nothing_written = items.is_empty() && self.events.is_empty() && self.answers.is_empty();
        if nothing_written && !self.pending.begun {
            return Ok(());
        }
        let mut sql = String::new();
        if !self.pending.begun {
            sql.push_str("BEGIN IMMEDIATE;\n");
            // From here on a failure must roll back.
            self.pending.begun = true;
        }
        for chunk in items.chunks(records::rows_per_insert::<v1::WorkItem>()) {
            sql.push_str(&records::insert_many_sql::<v1::WorkItem>(chunk.len()));
            sql.push_str(";\n");
        }
        for chunk in self.events.chunks(changelog::ROWS_PER_INSERT) {
            sql.push_str(&changelog::append_sql(chunk.len()));
            sql.push_str(";\n");
        }
        folded.push_sql(&mut sql);
        for chunk in self.answers.chunks(idempotency::ROWS_PER_INSERT) {
            sql.push_str(&idempotency::store_sql(chunk.len()));
            sql.push_str(";\n");
        }
        sql.push_str("COMMIT");
        // sqlx hands the arguments to the script's statements in order.
        let query = items.iter().fold(sqlx::query(&sql), records::bind);
        let query = self.events.iter().fold(query, changelog::bind);
        let query = self.answers.iter().fold(query, idempotency::bind);
        query.execute(&mut *conn).await?;
        Ok(())
    }
}
