//! What a write group has not yet sent to SQLite: whether its transaction is open, and the new
//! work items it inserts together at the end. Owned by the group; command handlers may add
//! to it (see `commands::Cx::deferred`).

use pm_proto::v1;

use super::dialect::{self, Conn};
use super::records;
use crate::error::Result;

/// What the group has not yet sent to SQLite: whether its transaction is open, and new work
/// items to insert together at the end.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) begun: bool,
    pub(crate) items: Vec<v1::WorkItem>,
}

impl Pending {
    /// Opens the group's transaction if it is not open yet. Reads before it are safe: the
    /// writer is the only one changing the database.
    pub(crate) async fn begin(&mut self, conn: &mut Conn) -> Result<()> {
        if !self.begun {
            sqlx::query(dialect::BEGIN).execute(&mut *conn).await?;
            self.begun = true;
        }
        Ok(())
    }

    /// Inserts the deferred work items now, so that what follows can read them.
    pub(crate) async fn flush(&mut self, conn: &mut Conn) -> Result<()> {
        if !self.items.is_empty() {
            self.begin(conn).await?;
            records::insert_many(conn, &self.items).await?;
            self.items.clear();
        }
        Ok(())
    }
}
