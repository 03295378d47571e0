//! Tenant schemas: their names, their migrations, creating them on first open, and scoping a
//! transaction to one of them.
//!
//! Opening a tenant is safe from any number of processes at once. Creating the schema runs
//! under a transaction-scoped advisory lock keyed on the schema name (two concurrent
//! `CREATE SCHEMA IF NOT EXISTS` can otherwise both pass the existence check and one fails on
//! the catalog's unique index), and sqlx's migrator takes its own database-wide advisory lock
//! while it migrates, so the second opener finds the migrations applied and does nothing.

use pm_core::TenantId;
use sha1::{Digest, Sha1};
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};

use super::{migrate_error, PgResultExt};
use crate::error::Result;

/// The schema migrations of a tenant schema, embedded from `migrations/postgres/`.
///
/// Run only on a connection whose `search_path` is the tenant's schema (as
/// [`open_tenant_schema`] does): the migrations and sqlx's `_sqlx_migrations` table then live
/// in that schema.
pub static PG_MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");

/// The first key of the advisory lock taken while a tenant's schema is created: "pmsc".
///
/// Two-key advisory locks never collide with sqlx's one-key (`bigint`) migration lock.
pub const SCHEMA_LOCK_CLASS: i32 = 0x706d_7363;

/// Longest identifier PostgreSQL keeps (`NAMEDATALEN - 1`); it silently truncates longer
/// ones, which would let two long tenant ids share a schema.
const MAX_IDENTIFIER: usize = 63;

/// Tenant-id bytes kept in front of the hash when `t_<id>` is too long.
const LONG_ID_PREFIX: usize = 40;

/// The schema of `tenant`: `t_<tenant id>`, unquoted.
///
/// Tenant ids are `[a-z0-9][a-z0-9_-]{0,62}`, so the name holds no quote and needs quoting
/// only for its `-` ([`quote_ident`]). An id longer than 61 bytes would make the name exceed
/// PostgreSQL's 63 and be truncated: such an id becomes its first 40 bytes, `~`, and 20 hex
/// digits of its SHA-1. `~` never occurs in a tenant id, so a shortened name can never equal
/// the name of another id.
pub fn schema_name(tenant: &TenantId) -> String {
    let id = tenant.as_str();
    if "t_".len() + id.len() <= MAX_IDENTIFIER {
        return format!("t_{id}");
    }
    let digest = Sha1::digest(id.as_bytes());
    let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
    // Tenant ids are ASCII, so any byte offset is a character boundary.
    format!("t_{}~{hex}", &id[..LONG_ID_PREFIX])
}

/// `name` as a quoted SQL identifier: in double quotes, inner double quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The advisory lock key of `schema` under [`SCHEMA_LOCK_CLASS`]: the first four bytes of the
/// SHA-1 of its name. Computed here rather than by the server, so that it can be reproduced.
fn schema_lock_key(schema: &str) -> i32 {
    let digest = Sha1::digest(schema.as_bytes());
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Creates `tenant`'s schema if it is missing and brings it to the latest migration.
///
/// Safe to call again (it then only checks the applied migrations) and from several processes
/// at once for the same new tenant: all of them succeed.
pub async fn open_tenant_schema(pool: &PgPool, tenant: &TenantId) -> Result<()> {
    let schema = schema_name(tenant);
    let mut conn = pool.acquire().await.pg()?;
    // The migrator needs the tenant's schema as this session's search_path, which must never
    // reach another tenant's work: the connection is closed instead of going back to the pool.
    conn.close_on_drop();

    let mut tx = conn.begin().await.pg()?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(SCHEMA_LOCK_CLASS)
        .bind(schema_lock_key(&schema))
        .execute(&mut *tx)
        .await
        .pg()?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(&schema)
            .fetch_one(&mut *tx)
            .await
            .pg()?;
    if !exists {
        // DDL takes no bind parameters: the name is quoted instead, and the comment (the
        // tenant id, which a shortened name cannot give back) is a literal of `[a-z0-9_-]`.
        let create = format!("CREATE SCHEMA {}", quote_ident(&schema));
        sqlx::query(&create).execute(&mut *tx).await.pg()?;
        let comment = format!(
            "COMMENT ON SCHEMA {} IS '{}{}'",
            quote_ident(&schema),
            super::admin::COMMENT_PREFIX,
            tenant.as_str().replace('\'', "''")
        );
        sqlx::query(&comment).execute(&mut *tx).await.pg()?;
    }
    tx.commit().await.pg()?;

    sqlx::query("SELECT set_config('search_path', $1, false)")
        .bind(quote_ident(&schema))
        .execute(&mut *conn)
        .await
        .pg()?;
    PG_MIGRATOR
        .run_direct(&mut *conn)
        .await
        .map_err(migrate_error)
}

/// The newest migration applied to `tenant`'s schema (0: none, or no schema yet).
pub async fn schema_version(pool: &PgPool, tenant: &TenantId) -> Result<i64> {
    let mut tx = begin_tenant(pool, tenant).await?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *tx)
        .await
        .pg()?;
    let version = if exists {
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *tx)
            .await
            .pg()?
    } else {
        0
    };
    tx.rollback().await.pg()?;
    Ok(version)
}

/// Scopes the caller's open transaction on `conn` to `tenant`: `search_path` becomes the
/// tenant's schema alone until the transaction ends (`SET LOCAL`).
pub async fn set_tenant(conn: &mut PgConnection, tenant: &TenantId) -> Result<()> {
    sqlx::query("SELECT set_config('search_path', $1, true)")
        .bind(quote_ident(&schema_name(tenant)))
        .execute(conn)
        .await
        .pg()?;
    Ok(())
}

/// `begin` (a `BEGIN` statement) and `tenant`'s `search_path` for that transaction, as one
/// script (a simple query, run as a `&str`): one round trip where [`begin_tenant`] takes two. The
/// name is quoted, not bound (a script takes no parameters).
pub(crate) fn scoped_begin(tenant: &TenantId, begin: &str) -> String {
    format!(
        "{begin}; SET LOCAL search_path TO {}",
        quote_ident(&schema_name(tenant))
    )
}

/// Begins a transaction on `pool` scoped to `tenant` ([`set_tenant`]).
pub async fn begin_tenant(
    pool: &PgPool,
    tenant: &TenantId,
) -> Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await.pg()?;
    set_tenant(&mut tx, tenant).await?;
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).expect("a valid tenant id")
    }

    #[test]
    fn short_ids_keep_their_name() {
        assert_eq!(schema_name(&tenant("acme")), "t_acme");
        assert_eq!(schema_name(&tenant("acme-corp_2")), "t_acme-corp_2");
        let longest_kept = "a".repeat(61);
        assert_eq!(
            schema_name(&tenant(&longest_kept)),
            format!("t_{longest_kept}")
        );
    }

    #[test]
    fn long_ids_are_shortened_to_distinct_names() {
        let a = tenant(&format!("{}x", "a".repeat(61)));
        let b = tenant(&format!("{}y", "a".repeat(61)));
        let (name_a, name_b) = (schema_name(&a), schema_name(&b));
        assert_eq!(name_a.len(), 63);
        assert_eq!(name_b.len(), 63);
        assert_ne!(name_a, name_b);
        assert!(name_a.starts_with(&format!("t_{}~", "a".repeat(40))));
        let longest = tenant(&"z".repeat(TenantId::MAX_LEN));
        assert_eq!(schema_name(&longest).len(), 63);
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("t_acme-corp"), "\"t_acme-corp\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn lock_keys_follow_the_name() {
        assert_eq!(schema_lock_key("t_acme"), schema_lock_key("t_acme"));
        assert_ne!(schema_lock_key("t_acme"), schema_lock_key("t_globex"));
    }
}
