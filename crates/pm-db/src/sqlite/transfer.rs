//! Export and import of one SQLite tenant as JSON Lines, in the format of
//! [`crate::export`]; import of the upstream board's export ([`crate::upstream`]) through
//! the same validation and loading.
//!
//! Export reads in one read transaction: a consistent snapshot, safe while a server serves
//! the tenant. Import validates the whole file first ([`Dataset::validate`]), then loads it
//! in one transaction, all or nothing.
//!
//! A tenant that already has content (projects or changes) is refused unless `replace` is
//! set, which deletes its content and imports in the same transaction. Merging is not
//! supported: two change logs cannot be merged without renumbering changes that clients
//! have already seen. `dry_run` does everything in a transaction that is rolled back (for a
//! tenant without a database, in memory) and reports what would be imported. Import takes
//! the tenant's lock exclusively, so a tenant a running server has open is refused (it
//! would bypass the tenant's single writer); so is a dry run of an existing tenant.

use std::io::{BufRead, Read, Write};
use std::str::FromStr;

use pm_core::TenantId;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};

use super::backup::{remove_if_exists, sync_dir};
use super::changelog;
use super::config::SqliteConfig;
use super::layout::{self, open_read_only, DB_FILE};
use super::lock::TenantLock;
use super::migrations::{self, MIGRATOR};
use super::sql::transfer;
use super::text_index;
use crate::error::{Error, Result};
use crate::export::{
    write_json, Dataset, ExportSummary, Header, ImportOptions, ImportReport, FORMAT, FORMAT_VERSION,
};
use crate::upstream::{self, UpstreamOptions, UpstreamReport};

/// Writes tenant `id` to `out` as JSON Lines; see the module documentation.
pub async fn export_tenant<W: Write + Send>(
    config: &SqliteConfig,
    id: &TenantId,
    out: &mut W,
) -> Result<ExportSummary> {
    let db = config.db_file(id);
    if !db.is_file() {
        return Err(Error::NotFound(format!("tenant {id} has no database")));
    }
    let mut conn = open_read_only(&db).await?;
    let summary = export_snapshot(&mut conn, id, out).await;
    conn.close().await?;
    let summary = summary?;
    out.flush()?;
    Ok(summary)
}

async fn export_snapshot<W: Write + Send>(
    conn: &mut SqliteConnection,
    id: &TenantId,
    out: &mut W,
) -> Result<ExportSummary> {
    let mut tx = conn.begin().await?;
    let schema_version = layout::schema_version(&mut tx).await?;
    let newest = migrations::embedded_version();
    if schema_version < newest {
        return Err(Error::FailedPrecondition(format!(
            "tenant {id} is at schema version {schema_version}, not {newest}; run `pm-server migrate` first"
        )));
    }
    let header = Header {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        tenant: id.to_string(),
        schema_version,
        head_seq: changelog::head_seq(&mut *tx).await?,
    };
    write_json(out, &header)?;
    let counts = transfer::write_lines(&mut tx, out).await?;
    tx.rollback().await?;
    Ok(ExportSummary { header, counts })
}

/// Imports JSON Lines from `input` into tenant `id`; see the module documentation.
pub async fn import_tenant<R: BufRead>(
    config: &SqliteConfig,
    id: &TenantId,
    input: R,
    options: ImportOptions,
) -> Result<ImportReport> {
    let data = Dataset::read_valid(input)?;
    let replaced = import_dataset(config, id, &data, options).await?;
    Ok(data.report(replaced, options))
}

/// Imports the upstream board's export (`schema_version` 1) from `input` into tenant `id`,
/// mapped as [`crate::upstream`] describes, and loaded like a JSON Lines export: validated
/// whole, one transaction, a tenant with content refused unless `replace`.
pub async fn import_agile_board<R: Read>(
    config: &SqliteConfig,
    id: &TenantId,
    input: R,
    options: UpstreamOptions,
) -> Result<UpstreamReport> {
    let conversion =
        upstream::convert(input, options.skip_dangling, migrations::embedded_version())?;
    conversion.data.validate()?;
    let load_options = ImportOptions {
        dry_run: options.dry_run,
        replace: options.replace,
    };
    let replaced = import_dataset(config, id, &conversion.data, load_options).await?;
    Ok(conversion.report(replaced, options.dry_run))
}

/// Loads a validated dataset into tenant `id`; whether existing content was replaced.
async fn import_dataset(
    config: &SqliteConfig,
    id: &TenantId,
    data: &Dataset,
    options: ImportOptions,
) -> Result<bool> {
    let dir = config.tenant_dir(id);
    let db = dir.join(DB_FILE);
    if options.dry_run && !db.is_file() {
        // Nothing on disk to look at: load into a throw-away database.
        let mut conn = SqliteConnectOptions::from_str("sqlite::memory:")?
            .foreign_keys(true)
            .connect()
            .await?;
        MIGRATOR.run_direct(&mut conn).await?;
        let replaced = load(data, &mut conn, id, options).await;
        conn.close().await?;
        return replaced;
    }
    let created_dir = !dir.exists();
    std::fs::create_dir_all(&dir)?;
    let imported = import_locked(data, &dir, id, options).await;
    if imported.is_err() && created_dir {
        // Leave nothing behind for a tenant that did not exist.
        let _ = std::fs::remove_dir_all(&dir);
    }
    imported
}

async fn import_locked(
    data: &Dataset,
    dir: &std::path::Path,
    id: &TenantId,
    options: ImportOptions,
) -> Result<bool> {
    let _lock = TenantLock::exclusive(dir, id.as_str())?;
    let db = dir.join(DB_FILE);
    if db.is_file() {
        let mut conn = SqliteConfig::new(dir)
            .connect_options(&db)
            .connect()
            .await?;
        let loaded = async {
            let version = layout::schema_version(&mut conn).await?;
            if version < migrations::embedded_version() {
                if options.dry_run {
                    return Err(Error::FailedPrecondition(format!(
                        "tenant {id} is at schema version {version}; run `pm-server migrate` first"
                    )));
                }
                MIGRATOR.run_direct(&mut conn).await?;
            }
            load(data, &mut conn, id, options).await
        }
        .await;
        conn.close().await?;
        return loaded;
    }
    // A new tenant: build the database beside its final name, rename when complete.
    let building = dir.join(format!("{DB_FILE}.importing"));
    remove_if_exists(&building)?;
    let built = async {
        let mut conn = SqliteConnectOptions::new()
            .filename(&building)
            .create_if_missing(true)
            .foreign_keys(true)
            .connect()
            .await?;
        let loaded = async {
            MIGRATOR.run_direct(&mut conn).await?;
            load(data, &mut conn, id, options).await
        }
        .await;
        conn.close().await?;
        loaded?;
        std::fs::File::open(&building)?.sync_all()?;
        std::fs::rename(&building, &db)?;
        sync_dir(dir)?;
        Ok(false)
    }
    .await;
    if built.is_err() {
        let _ = remove_if_exists(&building);
    }
    built
}

/// Loads the rows into `conn` in one transaction, committed unless this is a dry run.
/// Returns whether existing content was replaced.
async fn load(
    data: &Dataset,
    conn: &mut SqliteConnection,
    id: &TenantId,
    options: ImportOptions,
) -> Result<bool> {
    let mut tx = conn.begin().await?;
    // Rows of one table may refer to each other in any order (a parent with a later id).
    sqlx::query("PRAGMA defer_foreign_keys = ON")
        .execute(&mut *tx)
        .await?;
    let (projects, changes) = transfer::content(&mut tx).await?;
    let replaced = changes > 0 || projects > 0;
    if replaced && !options.replace {
        return Err(Error::FailedPrecondition(format!(
            "tenant {id} is not empty ({projects} project(s), head seq {changes}); \
             use --replace to replace its content (merging is not supported)"
        )));
    }
    if replaced {
        transfer::delete_content(&mut tx).await?;
        // The full-text indexes follow inserts and updates, not deletes: empty them, and
        // forget what waited for the next batch with them (notes, and the items' and
        // comments' bounds).
        for fts in [
            "work_item_fts",
            "comment_fts",
            "sprint_fts",
            "llm_context_fts",
        ] {
            sqlx::query(&format!("INSERT INTO {fts} ({fts}) VALUES ('delete-all')"))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(text_index::FORGET_NOTED)
            .execute(&mut *tx)
            .await?;
    }
    transfer::insert_rows(&mut tx, data).await?;
    let pending = transfer::pending_events(data)?;
    for chunk in pending.chunks(changelog::ROWS_PER_INSERT) {
        let sql = changelog::append_sql(chunk.len());
        let mut query = sqlx::query(&sql);
        for event in chunk {
            query = changelog::bind(query, event);
        }
        query.execute(&mut *tx).await?;
    }
    changelog::reindex_batched(&mut tx).await?;
    // The imported rows' text (items and comments past the reset bounds) goes into the
    // indexes at once.
    sqlx::query(text_index::INDEX_TEXT)
        .execute(&mut *tx)
        .await?;
    let dangling = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut *tx)
        .await?;
    if !dangling.is_empty() {
        return Err(Error::invalid(
            "import",
            format!("{} row(s) refer to rows that are not there", dangling.len()),
        ));
    }
    if options.dry_run {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(replaced)
}
