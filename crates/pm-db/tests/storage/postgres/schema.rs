//! Tenant schemas: created and migrated once however often and however concurrently they are
//! opened; the schema's constraints and search columns; tenants kept apart.

use std::time::Duration;

use pm_core::kinds::{ChangeAction, EntityKind};
use pm_db::postgres::{
    append_events, begin_tenant, head_seq, open_tenant_schema, read_events, schema_name, NewEvent,
    PG_MIGRATOR,
};
use pm_db::Error;
use pm_proto::v1::ErrorCode;
use sqlx::error::ErrorKind;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use super::{tenant, TestDb};

/// The tables of a migrated tenant schema, sorted.
const TABLES: [&str; 14] = [
    "_sqlx_migrations",
    "change_log",
    "comments",
    "dependencies",
    "idempotency",
    "llm_context",
    "project_members",
    "projects",
    "sprints",
    "swim_lanes",
    "tenant_head",
    "time_entries",
    "users",
    "work_items",
];

/// The tables in `schema`, sorted.
async fn tables(pool: &PgPool, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        r#"
        SELECT table_name::text
        FROM information_schema.tables
        WHERE table_schema = $1
        ORDER BY table_name COLLATE "C"
        "#,
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .expect("listing tables")
}

/// `(version, success)` of each applied migration in `schema`.
async fn applied(pool: &PgPool, schema: &str) -> Vec<(i64, bool)> {
    let sql =
        format!(r#"SELECT version, success FROM "{schema}"._sqlx_migrations ORDER BY version"#);
    sqlx::query_as(&sql)
        .fetch_all(pool)
        .await
        .expect("reading the applied migrations")
}

/// `(version, true)` for each embedded migration: what a migrated schema has applied.
fn embedded_versions() -> Vec<(i64, bool)> {
    PG_MIGRATOR.iter().map(|m| (m.version, true)).collect()
}

#[tokio::test]
async fn migrations_apply_to_a_fresh_schema_and_reopening_changes_nothing() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let pool = db.pool(2).await;
    let acme = tenant("acme");

    open_tenant_schema(&pool, &acme).await.expect("first open");
    assert_eq!(tables(&pool, "t_acme").await, TABLES);
    // Nothing of the tenant's lands outside its schema.
    assert!(tables(&pool, "public").await.is_empty());
    assert_eq!(
        embedded_versions(),
        [(20261129200000, true), (20261130000000, true)]
    );
    assert_eq!(applied(&pool, "t_acme").await, embedded_versions());
    let search_indexes: Vec<String> = sqlx::query_scalar(
        r#"
        SELECT indexname::text
        FROM pg_indexes
        WHERE schemaname = 't_acme' AND indexdef LIKE '%USING gin (search)%'
        ORDER BY indexname COLLATE "C"
        "#,
    )
    .fetch_all(&pool)
    .await
    .expect("listing indexes");
    assert_eq!(
        search_indexes,
        [
            "comments_search",
            "llm_context_search",
            "sprints_search",
            "work_items_search"
        ]
    );

    open_tenant_schema(&pool, &acme).await.expect("reopen");
    open_tenant_schema(&pool, &acme).await.expect("third open");
    assert_eq!(tables(&pool, "t_acme").await, TABLES);
    assert_eq!(applied(&pool, "t_acme").await, embedded_versions());
    let counter: Vec<(i16, i64)> = sqlx::query_as("SELECT id, last_seq FROM t_acme.tenant_head")
        .fetch_all(&pool)
        .await
        .expect("reading the counter");
    assert_eq!(counter, [(1, 0)]);
}

#[tokio::test]
async fn concurrent_opens_of_a_new_tenant_all_succeed() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    // Four pools stand for four processes opening the same new tenant at once.
    let mut pools = Vec::new();
    for _ in 0..4 {
        pools.push(db.pool(2).await);
    }
    let fresh = tenant("fresh-tenant");
    let opens = pools.iter().map(|pool| open_tenant_schema(pool, &fresh));
    let results = futures::future::join_all(opens).await;
    for (i, result) in results.into_iter().enumerate() {
        result.unwrap_or_else(|e| panic!("open {i} failed: {e}"));
    }
    assert_eq!(tables(&pools[0], "t_fresh-tenant").await, TABLES);
    assert_eq!(
        applied(&pools[0], "t_fresh-tenant").await,
        embedded_versions()
    );
}

#[tokio::test]
async fn ids_that_need_quoting_or_shortening_get_schemas_of_their_own() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let pool = db.pool(2).await;
    let ids = [
        "acme-corp".to_owned(),
        format!("{}x", "a".repeat(61)),
        format!("{}y", "a".repeat(61)),
    ];
    let mut expected = Vec::new();
    for id in &ids {
        let t = tenant(id);
        open_tenant_schema(&pool, &t).await.expect("open");
        expected.push(schema_name(&t));
    }
    expected.sort();
    let schemas: Vec<String> = sqlx::query_scalar(
        r#"
        SELECT nspname::text FROM pg_namespace
        WHERE nspname LIKE 't\_%'
        ORDER BY nspname COLLATE "C"
        "#,
    )
    .fetch_all(&pool)
    .await
    .expect("listing schemas");
    assert_eq!(schemas, expected);
    // The two long ids: shortened, distinct, at PostgreSQL's limit.
    for long in &schemas[..2] {
        assert!(
            long.starts_with(&format!("t_{}~", "a".repeat(40))),
            "{long}"
        );
        assert_eq!(long.len(), 63);
    }
    assert_eq!(schemas[2], "t_acme-corp");
    for schema in &schemas {
        assert_eq!(tables(&pool, schema).await, TABLES);
    }
}

/// The kind and constraint name of a refused write.
fn refusal(error: &Error) -> (ErrorKind, String) {
    let Error::Database(sqlx::Error::Database(db)) = error else {
        panic!("expected a database error, got {error:?}");
    };
    // A constraint violation is internal until the query maps it: no SQL reaches a client.
    assert_eq!(error.code(), ErrorCode::Internal);
    assert_eq!(error.to_wire().message, "internal error");
    (db.kind(), db.constraint().unwrap_or_default().to_owned())
}

/// Runs `sql` with `binds` in its own transaction of `tenant`, committing if it succeeds.
async fn write(pool: &PgPool, tenant_id: &str, sql: &str, binds: &[&str]) -> Result<(), Error> {
    let mut tx = begin_tenant(pool, &tenant(tenant_id)).await?;
    let mut query = sqlx::query(sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    query.execute(&mut *tx).await.map_err(Error::Database)?;
    tx.commit().await.map_err(Error::Database)
}

const INSERT_PROJECT: &str = r#"
    INSERT INTO projects (id, key, name, description, status, version,
                          created_at, created_by, updated_at, updated_by)
    VALUES ($1, $2, 'Project', '', 'active', 1, 1000, 'alice', 1000, 'alice')
"#;

const INSERT_WORK_ITEM: &str = r#"
    INSERT INTO work_items (id, project_id, number, item_type, parent_id, title, description,
                            status, priority, rank, version,
                            created_at, created_by, updated_at, updated_by)
    VALUES ($1, $2, 1, 'task', NULLIF($3, ''), $4, '', 'todo', 'medium', 'm', 1,
            1000, 'alice', 1000, 'alice')
"#;

const P1: &str = "0190f0c4-0000-7000-8000-000000000001";
const P2: &str = "0190f0c4-0000-7000-8000-000000000002";
const W1: &str = "0190f0c4-0000-7000-8000-000000000011";

/// A database with tenant `acme` holding one project, `P1` keyed `key`; `None` when skipped.
async fn acme_with_project(key: &str) -> Option<(TestDb, PgPool)> {
    let db = TestDb::create().await?;
    let pool = db.pool(2).await;
    open_tenant_schema(&pool, &tenant("acme"))
        .await
        .expect("open");
    write(&pool, "acme", INSERT_PROJECT, &[P1, key])
        .await
        .expect("a valid project");
    Some((db, pool))
}

#[tokio::test]
async fn constraints_refuse_what_sqlite_refuses() {
    let Some((_db, pool)) = acme_with_project("ACME2").await else {
        return;
    };

    let check = |constraint: &str| (ErrorKind::CheckViolation, constraint.to_owned());
    for bad_key in ["acme", "A", "AB-1", "2AB", "ABCDEFGHIJK"] {
        let error = write(&pool, "acme", INSERT_PROJECT, &[P2, bad_key])
            .await
            .expect_err(bad_key);
        assert_eq!(refusal(&error), check("projects_key_check"), "{bad_key}");
    }
    let error = write(&pool, "acme", INSERT_PROJECT, &[P2, "ACME2"])
        .await
        .expect_err("a taken key");
    assert_eq!(
        refusal(&error),
        (ErrorKind::UniqueViolation, "projects_key_key".to_owned())
    );
    // Its own parent: refused by the CHECK (the foreign key would accept the row itself).
    let error = write(&pool, "acme", INSERT_WORK_ITEM, &[W1, P1, W1, "Title"])
        .await
        .expect_err("its own parent");
    assert_eq!(refusal(&error), check("work_items_check"));
    let error = write(&pool, "acme", INSERT_WORK_ITEM, &[W1, P2, "", "Title"])
        .await
        .expect_err("a missing project");
    assert_eq!(
        refusal(&error),
        (
            ErrorKind::ForeignKeyViolation,
            "work_items_project_id_fkey".to_owned()
        )
    );
    let error = write(&pool, "acme", "INSERT INTO tenant_head VALUES (2, 0)", &[])
        .await
        .expect_err("a second counter row");
    assert_eq!(refusal(&error), check("tenant_head_id_check"));

    // Only the valid project got in.
    let mut tx = begin_tenant(&pool, &tenant("acme")).await.expect("begin");
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM projects ORDER BY key")
        .fetch_all(&mut *tx)
        .await
        .expect("reading projects");
    assert_eq!(keys, ["ACME2"]);
}

#[tokio::test]
async fn search_columns_follow_their_rows() {
    let Some((_db, pool)) = acme_with_project("ACME").await else {
        return;
    };
    write(
        &pool,
        "acme",
        INSERT_WORK_ITEM,
        &[W1, P1, "", "Login page crashes"],
    )
    .await
    .expect("work item");
    let found = |word: &'static str| {
        let pool = pool.clone();
        async move {
            let mut tx = begin_tenant(&pool, &tenant("acme")).await.expect("begin");
            let ids: Vec<String> = sqlx::query_scalar(
                r#"
                SELECT id FROM work_items
                WHERE search @@ plainto_tsquery('simple', $1)
                ORDER BY id
                "#,
            )
            .bind(word)
            .fetch_all(&mut *tx)
            .await
            .expect("searching");
            ids
        }
    };
    assert_eq!(found("login").await, [W1]);
    assert_eq!(found("LOGIN").await, [W1]);
    assert!(found("signup").await.is_empty());
    write(
        &pool,
        "acme",
        "UPDATE work_items SET title = 'Signup page crashes' WHERE id = $1",
        &[W1],
    )
    .await
    .expect("retitle");
    assert!(found("login").await.is_empty());
    assert_eq!(found("signup").await, [W1]);
}

/// A change-log row for project `project_id`.
fn event(project_id: &str) -> NewEvent {
    NewEvent {
        at: 1_000,
        actor_id: "alice".into(),
        project_id: project_id.into(),
        kind: EntityKind::Project,
        entity_id: project_id.into(),
        action: ChangeAction::Created,
        event: b"encoded event".to_vec(),
    }
}

#[tokio::test]
async fn tenants_do_not_see_each_other() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    // One connection for both tenants: each transaction scopes it anew.
    let pool = db.pool(1).await;
    for id in ["acme", "globex"] {
        open_tenant_schema(&pool, &tenant(id)).await.expect("open");
    }
    write(&pool, "acme", INSERT_PROJECT, &[P1, "ACME"])
        .await
        .expect("acme's project");
    write(&pool, "globex", INSERT_PROJECT, &[P2, "GLOBEX"])
        .await
        .expect("globex's project");
    // The same key in another tenant is no conflict.
    write(&pool, "globex", INSERT_PROJECT, &[P1, "ACME"])
        .await
        .expect("the same id and key in globex");

    // Events in acme's change log only.
    let mut tx = begin_tenant(&pool, &tenant("acme")).await.expect("begin");
    let first = append_events(&mut tx, &[event(P1), event(P1)])
        .await
        .expect("append");
    assert_eq!(first, 1);
    tx.commit().await.expect("commit");

    for (id, expected, head) in [
        ("acme", vec![P1.to_owned()], 2),
        ("globex", vec![P1.to_owned(), P2.to_owned()], 0),
    ] {
        let mut tx = begin_tenant(&pool, &tenant(id)).await.expect("begin");
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM projects ORDER BY id")
            .fetch_all(&mut *tx)
            .await
            .expect("reading projects");
        assert_eq!(ids, expected, "{id}");
        assert_eq!(head_seq(&mut tx).await.expect("head"), head, "{id}");
        let seqs: Vec<u64> = read_events(&mut tx, 0, 10)
            .await
            .expect("read")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, (1..=head).collect::<Vec<_>>(), "{id}");
        tx.rollback().await.expect("rollback");
    }

    // Outside a tenant's transaction the connection sees no tenant at all.
    let error = sqlx::query("SELECT id FROM projects")
        .fetch_all(&pool)
        .await
        .expect_err("no tenant scoped");
    let db_error = error.as_database_error().expect("a database error");
    assert_eq!(db_error.code().as_deref(), Some("42P01"));
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    // Needs no server: a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy_with(
            PgConnectOptions::new()
                .host("127.0.0.1")
                .port(port)
                .username("postgres"),
        );
    let error = open_tenant_schema(&pool, &tenant("acme"))
        .await
        .expect_err("nothing listens");
    assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
    let wire = error.to_wire();
    assert_eq!(wire.code, ErrorCode::Unavailable as i32);
    assert_eq!(
        wire.message,
        "the database did not answer in time; retry later"
    );
}
