//! Export and import of one PostgreSQL tenant, in the format of [`crate::export`], and the
//! move of a SQLite tenant into PostgreSQL with the same ids and seqs.
//!
//! Export reads in one `REPEATABLE READ, READ ONLY` transaction: a consistent snapshot, safe
//! while nodes serve the tenant. Its header's `schema_version` is the data model's (the
//! SQLite migrations' numbering, which the PostgreSQL schema translates), so that an export
//! loads into either engine.
//!
//! Import validates the whole file first, then loads it in one transaction that begins by
//! locking the tenant's seq counter row: the tenant's writers on every node wait for it, and
//! find the head moved when it commits (so they drop what they cached). The change log is
//! loaded with the seqs it carries and the counter set to its head, so clients resume across
//! an import, or a move from SQLite, without a reset. A tenant with content is refused
//! unless `replace`; replacing the content of a tenant that nodes serve makes their clients'
//! positions meaningless, so stop serving it first (nothing here can tell whether a node
//! does). A dry run needs an existing tenant: creating its schema is not transactional.

use std::io::{BufRead, Write};

use pm_core::TenantId;
use sqlx::pool::PoolConnection;
use sqlx::{Executor, PgPool, Postgres};

use super::changelog::{append_events, head_seq};
use super::schema::{open_tenant_schema, schema_version, scoped_begin};
use super::sql::transfer;
use super::{mapped, PgResultExt};
use crate::error::{Error, Result};
use crate::export::{
    write_json, Dataset, ExportSummary, Header, ImportOptions, ImportReport, FORMAT, FORMAT_VERSION,
};
use crate::sqlite::lock::TenantLock;
use crate::sqlite::{migrations, SqliteConfig};

/// Change-log rows appended per statement on import.
const EVENTS_PER_APPEND: usize = 10_000;

/// Writes tenant `id` to `out` as JSON Lines; see the module documentation.
pub async fn export_tenant<W: Write + Send>(
    pool: &PgPool,
    id: &TenantId,
    out: &mut W,
) -> Result<ExportSummary> {
    if schema_version(pool, id).await? == 0 {
        return Err(Error::NotFound(format!("tenant {id} has no schema")));
    }
    // Brings an older schema to this build's first; a no-op when it is current.
    open_tenant_schema(pool, id).await?;
    let mut conn = pool.acquire().await.pg()?;
    let begin = scoped_begin(id, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    (&mut *conn).execute(begin.as_str()).await.pg()?;
    let written = async {
        let header = Header {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            tenant: id.to_string(),
            schema_version: migrations::embedded_version(),
            head_seq: head_seq(&mut conn).await?,
        };
        write_json(out, &header)?;
        let counts = transfer::write_lines(&mut conn, out)
            .await
            .map_err(mapped)?;
        Ok::<_, Error>(ExportSummary { header, counts })
    }
    .await;
    (&mut *conn).execute("ROLLBACK").await.pg()?;
    let summary = written?;
    out.flush()?;
    Ok(summary)
}

/// Imports JSON Lines from `input` into tenant `id`; see the module documentation.
pub async fn import_tenant<R: BufRead>(
    pool: &PgPool,
    id: &TenantId,
    input: R,
    options: ImportOptions,
) -> Result<ImportReport> {
    let data = Dataset::read_valid(input)?;
    let replaced = load(pool, id, &data, options).await?;
    Ok(data.report(replaced, options))
}

/// Copies SQLite tenant `id` (of `sqlite`'s data directory) into PostgreSQL with the same
/// ids, rows and seqs. The SQLite tenant is locked for the copy, so a server that has it open
/// makes this fail, and none can open it meanwhile; it is left as it was, as a backup.
pub async fn move_from_sqlite(
    sqlite: &SqliteConfig,
    pool: &PgPool,
    id: &TenantId,
    options: ImportOptions,
) -> Result<ImportReport> {
    let dir = sqlite.tenant_dir(id);
    if !sqlite.db_file(id).is_file() {
        return Err(Error::NotFound(format!(
            "tenant {id} has no SQLite database in {}",
            sqlite.data_dir.display()
        )));
    }
    let _lock = TenantLock::exclusive(&dir, id.as_str())?;
    let mut export = Vec::new();
    crate::sqlite::transfer::export_tenant(sqlite, id, &mut export).await?;
    import_tenant(pool, id, export.as_slice(), options).await
}

/// Loads a validated dataset into tenant `id`; whether existing content was replaced.
pub(crate) async fn load(
    pool: &PgPool,
    id: &TenantId,
    data: &Dataset,
    options: ImportOptions,
) -> Result<bool> {
    if options.dry_run && schema_version(pool, id).await? == 0 {
        return Err(Error::FailedPrecondition(format!(
            "tenant {id} does not exist yet: a dry run on PostgreSQL needs an existing tenant"
        )));
    }
    open_tenant_schema(pool, id).await?;
    let mut conn = pool.acquire().await.pg()?;
    (&mut *conn)
        .execute(scoped_begin(id, "BEGIN").as_str())
        .await
        .pg()?;
    match load_rows(&mut conn, id, data, options).await {
        Ok(replaced) => {
            let end = if options.dry_run {
                "ROLLBACK"
            } else {
                "COMMIT"
            };
            (&mut *conn).execute(end).await.pg()?;
            Ok(replaced)
        }
        Err(error) => {
            // Whatever state the transaction is in, it ends with the connection.
            conn.close_on_drop();
            let _ = (&mut *conn).execute("ROLLBACK").await;
            Err(error)
        }
    }
}

async fn load_rows(
    conn: &mut PoolConnection<Postgres>,
    id: &TenantId,
    data: &Dataset,
    options: ImportOptions,
) -> Result<bool> {
    // The tenant's writers on every node wait from here to the end of the import.
    sqlx::query("SELECT last_seq FROM tenant_head WHERE id = 1 FOR UPDATE")
        .execute(&mut **conn)
        .await
        .pg()?;
    let (projects, changes) = transfer::content(conn).await.map_err(mapped)?;
    let replaced = changes > 0 || projects > 0;
    if replaced && !options.replace {
        return Err(Error::FailedPrecondition(format!(
            "tenant {id} is not empty ({projects} project(s), head seq {changes}); \
             use --replace to replace its content (merging is not supported)"
        )));
    }
    if replaced {
        transfer::delete_content(conn).await.map_err(mapped)?;
    }
    transfer::insert_rows(conn, data).await.map_err(mapped)?;
    let events = transfer::pending_events(data)?;
    // The log keeps its seqs: the counter is set just before the first (later ones may
    // have been pruned from the source), and appending moves it on to the head.
    let before = events.first().map_or_else(
        || data.header.as_ref().map_or(0, |h| h.head_seq),
        |first| first.seq - 1,
    );
    sqlx::query("UPDATE tenant_head SET last_seq = $1 WHERE id = 1")
        .bind(before as i64)
        .execute(&mut **conn)
        .await
        .pg()?;
    for chunk in events.chunks(EVENTS_PER_APPEND) {
        let first = append_events(conn, chunk).await?;
        if first != chunk[0].seq {
            return Err(Error::Corrupt(format!(
                "change {} was appended as {first}",
                chunk[0].seq
            )));
        }
    }
    Ok(replaced)
}
