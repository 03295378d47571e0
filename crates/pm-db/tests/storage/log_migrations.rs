//! Migrations that moved the change log's indexes into batches (by actor, then by project and
//! entity): a tenant made by an older binary gets exactly its log's pairs, and the next batch
//! completes them. SQLite only (PostgreSQL keeps plain indexes).

use std::sync::Arc;

use pm_core::TenantId;
use pm_db::SqliteTenant;
use pm_proto::v1;

use crate::support::*;

/// The pairs of one of the log's batched indexes (`actor_id`, `project_id` or `entity_id` with
/// `seq`), in seq order, and the same pairs of the log up to where the index says it is
/// complete.
async fn batched_pairs(
    tenant: &SqliteTenant,
    column: &str,
) -> (Vec<(String, i64)>, Vec<(String, i64)>) {
    let table = match column {
        "actor_id" => "actors",
        "project_id" => "projects",
        _ => "entities",
    };
    let mut conn = tenant.read_pool().acquire().await.unwrap();
    let pairs = sqlx::query_as(&format!(
        "SELECT {column}, seq FROM change_log_{table} ORDER BY seq"
    ))
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let logged = sqlx::query_as(&format!(
        "SELECT {column}, seq FROM change_log \
         WHERE seq <= (SELECT seq FROM change_log_batched_upto) ORDER BY seq"
    ))
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    (pairs, logged)
}

/// The pairs of all three batched indexes, each with the log's up to where they are complete.
async fn all_batched_pairs(tenant: &SqliteTenant) -> Vec<(Vec<(String, i64)>, Vec<(String, i64)>)> {
    let mut all = Vec::new();
    for column in ["actor_id", "project_id", "entity_id"] {
        all.push(batched_pairs(tenant, column).await);
    }
    all
}

/// A tenant made by an older binary: the migrations before `before`, and a log of 13 events
/// by two actors (entity ids `e0` to `e3`).
async fn tenant_from_before(env: &TestEnv, before: i64) -> Arc<SqliteTenant> {
    let file = env
        .engine
        .config()
        .db_file(&TenantId::parse("acme").unwrap());
    let mut conn = database_before(&file, before).await;
    for seq in 1..=13 {
        let actor = if seq % 3 == 0 { "bob" } else { "alice" };
        sqlx::query(
            "INSERT INTO change_log (seq, at, actor_id, project_id, entity_type, entity_id, \
                                     action, event) \
             VALUES ($1, 0, $2, 'p', 'work_item', 'e' || ($1 % 4), 'updated', x'')",
        )
        .bind(seq)
        .bind(actor)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    sqlx::Connection::close(conn).await.unwrap();
    env.tenant("acme").await
}

/// The names among `names` that are still in the tenant's schema.
async fn in_schema(tenant: &SqliteTenant, names: &[&str]) -> Vec<String> {
    let mut conn = tenant.read_pool().acquire().await.unwrap();
    let mut found = Vec::new();
    for name in names {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_schema WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        if n > 0 {
            found.push(name.to_string());
        }
    }
    found
}

/// After 13 events: 243 more, one command a commit up to seq 255 (no batch yet), then seq 256,
/// whose commit owes the batch that fills all three batched indexes with every event since the
/// last one.
async fn write_up_to_the_first_batch(tenant: &SqliteTenant, before: usize) {
    let project = create_project(tenant, &ALICE, "PM").await;
    add_member(tenant, &project.id, &BOB, v1::ProjectRole::Editor).await;
    assert_eq!(tenant.head_seq(), 16);
    for i in 0..239 {
        let title = format!("{i}");
        create_item(tenant, &ALICE, &project.id, v1::WorkItemType::Bug, &title).await;
    }
    assert_eq!(tenant.head_seq(), 255);
    for (pairs, _) in all_batched_pairs(tenant).await {
        assert_eq!(pairs.len(), before);
    }
    create_item(tenant, &BOB, &project.id, v1::WorkItemType::Bug, "256").await;
    tenant.run_owed_batches().await.unwrap();
    for (pairs, logged) in all_batched_pairs(tenant).await {
        assert_eq!(pairs.len(), 256);
        assert_eq!(pairs, logged);
        assert_eq!(pairs.last().map(|p| p.1), Some(256));
    }
    let (actors, _) = batched_pairs(tenant, "actor_id").await;
    assert_eq!(actors.last(), Some(&(BOB.as_str().to_owned(), 256)));
}

/// A tenant from before activity by actor was indexed in batches: the migrations fill the
/// pairs by actor, project and entity from its log and drop the old indexes; later, the commit
/// that crosses a multiple of 256 seqs adds the pairs of every event since.
#[tokio::test]
async fn a_migrated_tenant_gets_its_batched_pairs_from_its_log_and_then_in_batches() {
    let env = TestEnv::new();
    let tenant = tenant_from_before(&env, 20261130120000).await;
    let version = pm_db::sqlite::inspect::schema_version(
        env.engine.config(),
        &TenantId::parse("acme").unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(version, Some(pm_db::sqlite::migrations::embedded_version()));
    assert_eq!(tenant.head_seq(), 13);
    for (pairs, logged) in all_batched_pairs(&tenant).await {
        assert_eq!(pairs.len(), 13);
        assert_eq!(pairs, logged);
    }
    let (actors, _) = batched_pairs(&tenant, "actor_id").await;
    assert_eq!(actors.iter().filter(|(actor, _)| actor == "bob").count(), 4);
    let (entities, _) = batched_pairs(&tenant, "entity_id").await;
    assert_eq!(
        entities.iter().filter(|(entity, _)| entity == "e1").count(),
        4
    );
    let old = [
        "change_log_by_actor",
        "change_log_by_project",
        "change_log_by_entity",
    ];
    assert_eq!(in_schema(&tenant, &old).await, Vec::<String>::new());
    write_up_to_the_first_batch(&tenant, 13).await;
}

/// A tenant whose actor pairs end before its head when the pairs by project and entity come:
/// those are filled up to the same seq, and the next batch completes all three.
#[tokio::test]
async fn pairs_by_project_and_entity_start_where_the_actor_pairs_end() {
    let env = TestEnv::new();
    // The actors' migration ran on an empty log: its pairs are complete up to seq 0.
    let tenant = tenant_from_before(&env, 20261201120000).await;
    assert_eq!(tenant.head_seq(), 13);
    for (pairs, logged) in all_batched_pairs(&tenant).await {
        assert_eq!((pairs.len(), logged.len()), (0, 0));
    }
    let old = [
        "change_log_by_project",
        "change_log_by_entity",
        "change_log_actors_upto",
    ];
    assert_eq!(in_schema(&tenant, &old).await, Vec::<String>::new());
    write_up_to_the_first_batch(&tenant, 0).await;
}
