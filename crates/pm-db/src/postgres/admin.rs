//! What the operator commands need of a PostgreSQL database: its tenants (`tenants list`),
//! their statistics (`tenants stats`) and bringing their schemas to this build
//! (`migrate`). Read-only except `migrate`; all are safe while nodes serve the tenants.
//!
//! A tenant's schema carries its id as its comment (set when the schema is created), since
//! the name of a long id's schema is shortened with a hash and cannot be read back; a schema
//! without the comment is recognised by its name.

use pm_core::TenantId;
use sqlx::{Executor, PgPool, Row};

use super::changelog::head_seq;
use super::schema::{open_tenant_schema, schema_name, schema_version, scoped_begin, PG_MIGRATOR};
use super::sql::stats;
use super::{mapped, PgResultExt};
use crate::error::{Error, Result};
use crate::sqlite::inspect::TenantStats;

/// What a tenant schema's comment starts with, before the tenant id.
pub(crate) const COMMENT_PREFIX: &str = "pm-server tenant ";

/// A tenant schema found in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTenantListing {
    /// The tenant, or the schema's name when it names none.
    pub tenant: std::result::Result<TenantId, String>,
    /// The size of its tables and indexes, bytes.
    pub size_bytes: u64,
}

/// Every tenant schema of the database, by schema name.
pub async fn list_tenants(pool: &PgPool) -> Result<Vec<PgTenantListing>> {
    let rows = sqlx::query(
        r#"
        SELECT n.nspname AS schema,
               obj_description(n.oid, 'pg_namespace') AS comment,
               COALESCE((SELECT SUM(pg_total_relation_size(c.oid))
                         FROM pg_class c
                         WHERE c.relnamespace = n.oid AND c.relkind = 'r'), 0)::bigint AS size
        FROM pg_namespace n
        WHERE n.nspname LIKE 't\_%'
        ORDER BY n.nspname
        "#,
    )
    .fetch_all(pool)
    .await
    .pg()?;
    rows.iter()
        .map(|row| {
            let schema: String = row.try_get("schema").pg()?;
            let comment: Option<String> = row.try_get("comment").pg()?;
            let size: i64 = row.try_get("size").pg()?;
            Ok(PgTenantListing {
                tenant: tenant_of(&schema, comment.as_deref()),
                size_bytes: size as u64,
            })
        })
        .collect()
}

/// The tenant a schema belongs to: its comment's id, or the one its name spells.
fn tenant_of(schema: &str, comment: Option<&str>) -> std::result::Result<TenantId, String> {
    let from_comment = comment
        .and_then(|c| c.strip_prefix(COMMENT_PREFIX))
        .and_then(|id| TenantId::parse(id).ok());
    let from_name = schema
        .strip_prefix("t_")
        .and_then(|id| TenantId::parse(id).ok());
    let belongs = |id: &TenantId| schema_name(id) == schema;
    from_comment
        .filter(belongs)
        .or(from_name.filter(belongs))
        .ok_or_else(|| schema.to_owned())
}

/// Statistics of one tenant, as `tenants stats` shows them for SQLite (no WAL here: 0).
pub async fn tenant_stats(pool: &PgPool, id: &TenantId) -> Result<TenantStats> {
    let version = schema_version(pool, id).await?;
    if version == 0 {
        return Err(Error::NotFound(format!("tenant {id} has no schema")));
    }
    let size: i64 = sqlx::query_scalar(
        r#"
        SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relkind = 'r'
        "#,
    )
    .bind(schema_name(id))
    .fetch_one(pool)
    .await
    .pg()?;
    let mut conn = pool.acquire().await.pg()?;
    let begin = scoped_begin(id, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    (&mut *conn).execute(begin.as_str()).await.pg()?;
    let read = async {
        let head = head_seq(&mut conn).await?;
        let (oldest, last) = stats::log_range(&mut conn).await.map_err(mapped)?;
        let counts = stats::live_counts(&mut conn).await.map_err(mapped)?;
        Ok::<_, Error>((head, oldest, last, counts))
    }
    .await;
    (&mut *conn).execute("ROLLBACK").await.pg()?;
    let (head_seq, oldest_seq, last_activity, counts) = read?;
    Ok(TenantStats {
        tenant: id.to_string(),
        size_bytes: size as u64,
        wal_bytes: 0,
        schema_version: version,
        migration_pending: version < newest_version(),
        head_seq,
        oldest_seq,
        last_activity,
        counts,
    })
}

/// What `migrate` did to a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrateOutcome {
    /// It had no schema: made, at the newest version.
    Created,
    /// Brought from one version to another.
    Migrated {
        /// The newest applied migration before.
        from: i64,
        /// The newest after.
        to: i64,
    },
    /// Already at the newest version.
    Current,
}

/// Creates or migrates `id`'s schema to this build's migrations; what happened and the
/// tenant's head seq.
pub async fn migrate_tenant(pool: &PgPool, id: &TenantId) -> Result<(MigrateOutcome, u64)> {
    let before = schema_version(pool, id).await?;
    open_tenant_schema(pool, id).await?;
    let after = schema_version(pool, id).await?;
    let mut conn = pool.acquire().await.pg()?;
    (&mut *conn)
        .execute(scoped_begin(id, "BEGIN READ ONLY").as_str())
        .await
        .pg()?;
    let head = head_seq(&mut conn).await;
    (&mut *conn).execute("ROLLBACK").await.pg()?;
    let outcome = match (before, after) {
        (0, _) => MigrateOutcome::Created,
        (from, to) if from < to => MigrateOutcome::Migrated { from, to },
        _ => MigrateOutcome::Current,
    };
    Ok((outcome, head?))
}

/// The newest migration this build has for tenant schemas.
pub fn newest_version() -> i64 {
    PG_MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_names_its_tenant_by_comment_or_by_name() {
        let acme = TenantId::parse("acme").unwrap();
        assert_eq!(tenant_of("t_acme", None), Ok(acme.clone()));
        assert_eq!(tenant_of("t_acme", Some("pm-server tenant acme")), Ok(acme));
        let long = TenantId::parse(&"a".repeat(TenantId::MAX_LEN)).unwrap();
        let hashed = schema_name(&long);
        assert_eq!(tenant_of(&hashed, None), Err(hashed.clone()));
        let comment = format!("{COMMENT_PREFIX}{}", long.as_str());
        assert_eq!(tenant_of(&hashed, Some(&comment)), Ok(long));
        // A comment naming another tenant than the schema's is not believed.
        assert_eq!(
            tenant_of("t_acme", Some("pm-server tenant other")),
            Ok(TenantId::parse("acme").unwrap())
        );
        assert_eq!(
            tenant_of("t_other~x", Some("nonsense")),
            Err("t_other~x".into())
        );
    }
}
