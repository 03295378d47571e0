//! Online schema migrations: a migrations directory rolled out to open tenants, one at a time,
//! through their writers; failures roll back and leave the tenant on its old schema.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pm_core::TenantId;
use pm_db::sqlite::inspect;
use pm_db::{SchemaChange, SqliteEngine, SqliteTenant};
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;

use crate::support::*;

/// The version of the first embedded migration.
const INITIAL: i64 = 20261121000001;

/// The newest embedded migration: where tenants are before the tests add one.
fn embedded() -> i64 {
    pm_db::sqlite::migrations::embedded_version()
}
/// The version of the migration the tests add.
const NEXT: i64 = 20270101000000;

/// A copy of the repository's migrations in a temporary directory.
fn migrations_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    for entry in std::fs::read_dir(source).unwrap() {
        let entry = entry.unwrap();
        // The SQLite migrations only: `postgres/` holds the other engine's set.
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    dir
}

fn add_migration(dir: &Path, version: i64, sql: &str) -> PathBuf {
    let path = dir.join(format!("{version}_online_test.sql"));
    std::fs::write(&path, sql).unwrap();
    path
}

fn env_with(migrations: &Path) -> TestEnv {
    let dir = migrations.to_owned();
    TestEnv::with(move |c| c.migrations_dir = Some(dir))
}

async fn schema_version(engine: &SqliteEngine, id: &str) -> i64 {
    inspect::schema_version(engine.config(), &TenantId::parse(id).unwrap())
        .await
        .unwrap()
        .expect("the tenant has a database")
}

fn project_named(key: &str, name: &str) -> C {
    C::CreateProject(v1::CreateProject {
        key: key.into(),
        name: name.into(),
        description: String::new(),
    })
}

/// Writes `count` work items one after another and returns their seqs.
async fn write_items(tenant: Arc<SqliteTenant>, project_id: String, count: usize) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(count);
    for i in 0..count {
        let (_, seq) = create_item(
            &tenant,
            &ALICE,
            &project_id,
            v1::WorkItemType::Task,
            &format!("during {i}"),
        )
        .await;
        seqs.push(seq);
    }
    seqs
}

#[tokio::test]
async fn a_new_migration_reaches_every_open_tenant_while_it_writes() {
    let migrations = migrations_copy();
    let env = env_with(migrations.path());
    let a = env.tenant("a").await;
    let b = env.tenant("b").await;
    let project_a = create_project(&a, &ALICE, "PM").await;
    let project_b = create_project(&b, &ALICE, "PM").await;
    assert_eq!(env.engine.schema_status().target_version, embedded());

    add_migration(
        migrations.path(),
        NEXT,
        "ALTER TABLE work_items ADD COLUMN color TEXT NOT NULL DEFAULT 'none';\n\
         CREATE INDEX work_items_by_color ON work_items (color);\n",
    );
    let writer_a = tokio::spawn(write_items(a.clone(), project_a.id.clone(), 200));
    let writer_b = tokio::spawn(write_items(b.clone(), project_b.id.clone(), 200));
    let report = env.engine.migrate_online().await.unwrap();
    let seqs_a = writer_a.await.unwrap();
    let seqs_b = writer_b.await.unwrap();

    assert_eq!(report.target_version, NEXT);
    let change = SchemaChange {
        from: embedded(),
        to: NEXT,
    };
    assert_eq!(
        report.migrated,
        vec![("a".to_owned(), change), ("b".to_owned(), change)]
    );
    assert_eq!((report.failed, report.skipped), (None, vec![]));
    assert_eq!(report.closed_pending, 0);
    // Every command succeeded (create_item panics otherwise) with consecutive seqs.
    assert_eq!(seqs_a, (3..=202).collect::<Vec<_>>());
    assert_eq!(seqs_b, (3..=202).collect::<Vec<_>>());
    assert_eq!(schema_version(&env.engine, "a").await, NEXT);
    assert_eq!(schema_version(&env.engine, "b").await, NEXT);

    let status = env.engine.schema_status();
    assert_eq!(
        (
            status.target_version,
            status.applied,
            status.failed,
            status.open_pending,
            status.rollout_running
        ),
        (NEXT, 2, 0, 0, false)
    );
    // The read pool sees the new schema, and the old queries still work on it.
    let colors: Vec<String> = sqlx::query_scalar("SELECT DISTINCT color FROM work_items")
        .fetch_all(&mut *a.read_pool().acquire().await.unwrap())
        .await
        .unwrap();
    assert_eq!(colors, ["none"]);
    assert_eq!(all_items(&a, &ALICE, &project_a.id, false).await.len(), 200);
    let (_, seq) = create_item(&a, &ALICE, &project_a.id, v1::WorkItemType::Bug, "after").await;
    assert_eq!(seq, 203);

    // A second rollout finds nothing to do.
    let again = env.engine.migrate_online().await.unwrap();
    let unchanged = SchemaChange {
        from: NEXT,
        to: NEXT,
    };
    assert_eq!(
        again.migrated,
        vec![("a".to_owned(), unchanged), ("b".to_owned(), unchanged)]
    );
    assert_eq!(env.engine.schema_status().applied, 2);
}

#[tokio::test]
async fn commands_wait_in_a_full_queue_while_a_migration_drains_the_writer() {
    let migrations = migrations_copy();
    let dir = migrations.path().to_owned();
    let env = TestEnv::with(move |c| {
        c.migrations_dir = Some(dir);
        // Far fewer places than the commands sent below.
        c.writer.queue_capacity = 2;
    });
    let tenant = env.tenant("a").await;
    let project = create_project(&tenant, &ALICE, "PM").await;
    // A migration that takes a while: 200,000 rows.
    add_migration(
        migrations.path(),
        NEXT,
        "CREATE TABLE filler (n INTEGER NOT NULL) STRICT;\n\
         WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 200000)\n\
         INSERT INTO filler SELECT n FROM c;\n",
    );
    let engine = Arc::new(env);
    let rollout = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.engine.migrate_online().await })
    };
    // Once the migration is queued or running, send 50 commands at once.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while tenant.writes_in_flight() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the migration never started"
        );
        tokio::task::yield_now().await;
    }
    let commands: Vec<_> = (0..50)
        .map(|i| {
            let tenant = tenant.clone();
            let project_id = project.id.clone();
            tokio::spawn(async move {
                exec(
                    &tenant,
                    &ALICE,
                    new_item(&project_id, v1::WorkItemType::Task, &format!("t{i}"), None),
                )
                .await
                .map(|r| r.seq)
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for command in commands {
        seqs.push(
            command
                .await
                .unwrap()
                .expect("no command fails during a migration"),
        );
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (3..=52).collect::<Vec<_>>());
    let report = rollout.await.unwrap().unwrap();
    assert_eq!(report.migrated.len(), 1);
    assert_eq!(schema_version(&engine.engine, "a").await, NEXT);
}

#[tokio::test]
async fn a_failing_migration_is_rolled_back_and_stops_the_rollout() {
    let migrations = migrations_copy();
    let env = env_with(migrations.path());
    let a = env.tenant("a").await;
    let b = env.tenant("b").await;
    let c = env.tenant("c").await;
    for tenant in [&a, &b, &c] {
        exec(tenant, &ALICE, project_named("PM", "Board"))
            .await
            .unwrap();
    }
    // Only `b` has two projects of the same name: the unique index fails there alone.
    exec(&b, &ALICE, project_named("QA", "Board"))
        .await
        .unwrap();
    add_migration(
        migrations.path(),
        NEXT,
        "CREATE TABLE online_marker (x INTEGER) STRICT;\n\
         CREATE UNIQUE INDEX projects_by_name ON projects (name);\n",
    );

    let report = env.engine.migrate_online().await.unwrap();
    assert_eq!(
        report.migrated,
        vec![(
            "a".to_owned(),
            SchemaChange {
                from: embedded(),
                to: NEXT
            }
        )]
    );
    let (tenant, why) = report.failed.clone().expect("b failed");
    assert_eq!(tenant, "b");
    assert!(
        why.starts_with(&format!("migration {NEXT}: ")) && why.contains("UNIQUE constraint failed"),
        "{why}"
    );
    assert_eq!(report.skipped, ["c"]);

    // `b` is exactly as before: old version, and not even the first statement's table.
    assert_eq!(schema_version(&env.engine, "a").await, NEXT);
    assert_eq!(schema_version(&env.engine, "b").await, embedded());
    assert_eq!(schema_version(&env.engine, "c").await, embedded());
    let marker: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('online_marker', 'projects_by_name')",
    )
    .fetch_one(&mut *b.read_pool().acquire().await.unwrap())
    .await
    .unwrap();
    assert_eq!(marker, 0);
    // ...and still serving.
    let result = exec(&b, &ALICE, project_named("OPS", "Other"))
        .await
        .unwrap();
    assert_eq!(result.seq, 6);

    let status = env.engine.schema_status();
    assert_eq!(
        (status.applied, status.failed, status.open_pending),
        (1, 1, 0)
    );
    assert_eq!(
        status.target_version,
        embedded(),
        "opens went back to the old set"
    );
    assert!(
        status
            .last_failure
            .as_deref()
            .is_some_and(|f| f.starts_with(&format!("tenant b: migration {NEXT}: "))),
        "{:?}",
        status.last_failure
    );

    // After the failure, tenants reopen on what they have: `a` on the new schema, `c` on
    // the old one (the failed set is no longer applied on open).
    drop((a, b, c));
    assert_eq!(env.engine.close_idle().await, 3);
    let a = env.tenant("a").await;
    let c = env.tenant("c").await;
    assert_eq!(schema_version(&env.engine, "a").await, NEXT);
    assert_eq!(schema_version(&env.engine, "c").await, embedded());
    exec(&a, &ALICE, project_named("XY", "Y")).await.unwrap();
    exec(&c, &ALICE, project_named("XY", "Y")).await.unwrap();
}

#[tokio::test]
async fn a_directory_that_changes_an_applied_migration_is_refused() {
    let migrations = migrations_copy();
    let env = env_with(migrations.path());
    let tenant = env.tenant("a").await;
    let initial = migrations.path().join(format!("{INITIAL}_initial.sql"));
    let mut sql = std::fs::read_to_string(&initial).unwrap();
    sql.push_str("\n-- edited\n");
    std::fs::write(&initial, sql).unwrap();
    add_migration(
        migrations.path(),
        NEXT,
        "CREATE TABLE t (x INTEGER) STRICT;",
    );

    let error = env.engine.migrate_online().await.unwrap_err();
    assert!(
        matches!(&error, pm_db::Error::InvalidMigrations(m)
            if m.ends_with(&format!("migration {INITIAL} (initial) differs from the one already in use; applied migrations must not change"))),
        "{error}"
    );
    assert_eq!(schema_version(&env.engine, "a").await, embedded());
    assert_eq!(env.engine.schema_status().target_version, embedded());
    create_project(&tenant, &ALICE, "PM").await;

    // Without a directory there is nothing to roll out.
    let plain = TestEnv::new();
    assert!(matches!(
        plain.engine.migrate_online().await.unwrap_err(),
        pm_db::Error::FailedPrecondition(_)
    ));
}

#[tokio::test]
async fn closed_tenants_are_pending_until_they_are_opened() {
    let migrations = migrations_copy();
    let env = env_with(migrations.path());
    for id in ["x", "y"] {
        create_project(&*env.tenant(id).await, &ALICE, "PM").await;
    }
    assert_eq!(env.engine.close_idle().await, 2);
    add_migration(
        migrations.path(),
        NEXT,
        "CREATE INDEX comments_by_author ON comments (created_by);",
    );

    let report = env.engine.migrate_online().await.unwrap();
    assert_eq!(report.migrated, vec![]);
    assert_eq!(report.closed_pending, 2);
    assert_eq!(env.engine.schema_status().closed_pending, 2);
    assert_eq!(schema_version(&env.engine, "x").await, embedded());

    let x = env.tenant("x").await;
    assert_eq!(schema_version(&env.engine, "x").await, NEXT);
    let status = env.engine.schema_status();
    assert_eq!((status.closed_pending, status.applied), (1, 1));
    let (_, seq) = create_item(
        &x,
        &ALICE,
        &project_ids(&x, &ALICE).await[0],
        v1::WorkItemType::Task,
        "t",
    )
    .await;
    assert_eq!(seq, 3);
}

#[tokio::test]
async fn a_tenant_reopened_to_read_is_migrated_online_before_its_writer_first_connects() {
    let migrations = migrations_copy();
    let env = env_with(migrations.path());
    let project = create_project(&*env.tenant("x").await, &ALICE, "PM").await;
    assert_eq!(env.engine.close_idle().await, 1);
    // Closed cleanly at the current schema: reopened with reads only, its writer unconnected.
    let x = env.tenant("x").await;
    assert_eq!(x.head_seq(), 2);
    add_migration(
        migrations.path(),
        NEXT,
        "CREATE INDEX comments_by_author ON comments (created_by);",
    );

    let report = env.engine.migrate_online().await.unwrap();
    let change = SchemaChange {
        from: embedded(),
        to: NEXT,
    };
    assert_eq!(report.migrated, vec![("x".to_owned(), change)]);
    assert_eq!(schema_version(&env.engine, "x").await, NEXT);
    let (_, seq) = create_item(&x, &ALICE, &project.id, v1::WorkItemType::Task, "t").await;
    assert_eq!(seq, 3);
}

#[tokio::test]
async fn a_tenant_whose_new_migration_fails_at_open_still_opens_on_the_old_schema() {
    let migrations = migrations_copy();
    add_migration(migrations.path(), NEXT, "CREATE TABLE broken (;");
    let env = env_with(migrations.path());
    let tenant = env.tenant("a").await;
    assert_eq!(schema_version(&env.engine, "a").await, embedded());
    create_project(&tenant, &ALICE, "PM").await;
    let status = env.engine.schema_status();
    assert_eq!((status.failed, status.applied), (1, 0));
}

#[tokio::test]
async fn the_partial_item_indexes_still_serve_the_queries_by_sprint_assignee_and_parent() {
    let env = TestEnv::new();
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "PM").await;
    let mut conn = tenant.read_pool().acquire().await.unwrap();
    // The shapes of the list filters, the sprint's items and the subtree query: one value
    // each (`= ?`), which is what lets SQLite use an index that leaves out NULL.
    let cases = [
        (
            "SELECT id FROM work_items \
             WHERE project_id = ?1 AND sprint_id = ?2 AND deleted_at IS NULL ORDER BY rank, id",
            "work_items_by_sprint",
        ),
        (
            "SELECT id FROM work_items \
             WHERE project_id = ?1 AND assignee_id = ?2 AND deleted_at IS NULL ORDER BY rank, id",
            "work_items_by_assignee",
        ),
        (
            "SELECT id FROM work_items WHERE parent_id = ?2 ORDER BY rank, id",
            "work_items_by_parent",
        ),
    ];
    for (sql, index) in cases {
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                .bind(&project.id)
                .bind(a_uuid())
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        let details: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
        assert!(
            details
                .iter()
                .any(|d| d.starts_with("SEARCH") && d.contains(&format!("INDEX {index} "))),
            "{sql}: {details:?}"
        );
    }
    let partial: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'work_items' \
         AND sql LIKE '%WHERE % IS NOT NULL' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        partial,
        [
            "work_items_by_assignee",
            "work_items_by_parent",
            "work_items_by_sprint"
        ]
    );
}
