//! Export, import and `tenants move` on PostgreSQL: a tenant goes PostgreSQL → export →
//! SQLite → move → PostgreSQL again and every export along the way is byte for byte the
//! first; the moved tenant keeps its seqs (a client resumes without a reset) and goes on at
//! head + 1; a tenant with content is refused without `replace`.

use pm_db::export::ImportOptions;
use pm_db::postgres::transfer;
use pm_db::{EventFilter, SqliteConfig, Tenant as _};
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;

use crate::env::TestEnv;
use crate::support::*;

/// A project with a hierarchy whose child is older than its parent (so export order is not
/// parents first), a sprint, a comment, a dependency and a deleted item.
async fn fill(env: &TestEnv) -> (u64, String) {
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "MOVE").await;
    let (task, _) = create_item(
        &tenant,
        &ALICE,
        &project.id,
        v1::WorkItemType::Task,
        "older task",
    )
    .await;
    let (story, _) = create_item(
        &tenant,
        &ALICE,
        &project.id,
        v1::WorkItemType::Story,
        "newer story",
    )
    .await;
    exec(
        &tenant,
        &ALICE,
        C::MoveWorkItem(v1::MoveWorkItem {
            id: task.id.clone(),
            expected_version: task.version,
            parent_id: Some(story.id.clone()),
            ..Default::default()
        }),
    )
    .await
    .expect("the older task moves under the newer story");
    exec(
        &tenant,
        &ALICE,
        C::CreateSprint(v1::CreateSprint {
            project_id: project.id.clone(),
            name: "Sprint 1".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("sprint");
    exec(
        &tenant,
        &ALICE,
        C::CreateComment(v1::CreateComment {
            work_item_id: story.id.clone(),
            content: "Grüße — ünïcödé".into(),
        }),
    )
    .await
    .expect("comment");
    let (blocked, _) = create_item(
        &tenant,
        &ALICE,
        &project.id,
        v1::WorkItemType::Bug,
        "blocked",
    )
    .await;
    exec(
        &tenant,
        &ALICE,
        C::CreateDependency(v1::CreateDependency {
            blocking_item_id: story.id.clone(),
            blocked_item_id: blocked.id.clone(),
            dependency_type: v1::DependencyType::Blocks.into(),
        }),
    )
    .await
    .expect("dependency");
    let (gone, _) = create_item(
        &tenant,
        &ALICE,
        &project.id,
        v1::WorkItemType::Task,
        "deleted",
    )
    .await;
    let deleted = exec(
        &tenant,
        &ALICE,
        C::DeleteWorkItem(v1::DeleteWorkItem {
            id: gone.id,
            expected_version: gone.version,
        }),
    )
    .await
    .expect("deleted");
    (deleted.seq, project.id)
}

async fn export(env: &TestEnv) -> Vec<u8> {
    let mut out = Vec::new();
    transfer::export_tenant(env.engine.pool(), &acme(), &mut out)
        .await
        .expect("exported");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_goes_to_sqlite_and_moves_back_unchanged_with_its_seqs() {
    let source = TestEnv::new();
    let (head, project) = fill(&source).await;
    let first = export(&source).await;
    let text = String::from_utf8(first.clone()).expect("UTF-8");
    assert!(text.contains("ünïcödé"));
    assert_eq!(
        text.lines()
            .filter(|l| l.contains(r#""kind":"change""#))
            .count() as u64,
        head
    );

    // Into SQLite, and out again: the same bytes.
    let dir = tempfile::tempdir().expect("a data directory");
    let sqlite = SqliteConfig::new(dir.path());
    pm_db::sqlite::transfer::import_tenant(
        &sqlite,
        &acme(),
        first.as_slice(),
        ImportOptions::default(),
    )
    .await
    .expect("imported into SQLite");
    let mut again = Vec::new();
    pm_db::sqlite::transfer::export_tenant(&sqlite, &acme(), &mut again)
        .await
        .expect("exported from SQLite");
    assert_eq!(String::from_utf8(again).unwrap(), text);

    // `tenants move`: from that SQLite tenant into another database, the same bytes again.
    let target = TestEnv::new();
    let report = transfer::move_from_sqlite(
        &sqlite,
        target.engine.pool(),
        &acme(),
        ImportOptions::default(),
    )
    .await
    .expect("moved");
    assert!(!report.replaced);
    assert_eq!(String::from_utf8(export(&target).await).unwrap(), text);

    // The moved tenant serves the same log and goes on at head + 1.
    let moved = target.tenant("acme").await;
    assert_eq!(moved.head_seq(), head);
    let original = source.tenant("acme").await;
    let all = EventFilter::default();
    let read = |events: Vec<pm_db::StoredEvent>| -> Vec<(u64, Vec<u8>)> {
        events
            .into_iter()
            .map(|e| (e.seq, e.event.to_vec()))
            .collect()
    };
    assert_eq!(
        read(moved.read_events(3, None, 1_000, &all).await.unwrap()),
        read(original.read_events(3, None, 1_000, &all).await.unwrap()),
        "a client resuming from seq 3 gets the same events"
    );
    let (_, seq) = create_item(
        &moved,
        &ALICE,
        &project,
        v1::WorkItemType::Task,
        "after the move",
    )
    .await;
    assert_eq!(seq, head + 1);

    // Moving again finds content: refused unless replacing, and nothing changed.
    drop(moved);
    let refused = transfer::move_from_sqlite(
        &sqlite,
        target.engine.pool(),
        &acme(),
        ImportOptions::default(),
    )
    .await
    .expect_err("a tenant with content is refused");
    assert_eq!(code(&refused), v1::ErrorCode::FailedPrecondition);
    assert!(refused.to_string().contains("use --replace"), "{refused}");
    assert_eq!(target.tenant("acme").await.head_seq(), head + 1);
    let replace = ImportOptions {
        dry_run: false,
        replace: true,
    };
    let report = transfer::move_from_sqlite(&sqlite, target.engine.pool(), &acme(), replace)
        .await
        .expect("replaced");
    assert!(report.replaced);
    assert_eq!(String::from_utf8(export(&target).await).unwrap(), text);
}

#[tokio::test]
async fn a_missing_tenant_is_not_exported_and_not_dry_run() {
    let env = TestEnv::new();
    let mut out = Vec::new();
    let missing = transfer::export_tenant(env.engine.pool(), &acme(), &mut out)
        .await
        .expect_err("no schema, no export");
    assert_eq!(code(&missing), v1::ErrorCode::NotFound);
    assert!(out.is_empty());
    let source = TestEnv::new();
    fill(&source).await;
    let data = export(&source).await;
    let dry = ImportOptions {
        dry_run: true,
        replace: false,
    };
    let refused = transfer::import_tenant(env.engine.pool(), &acme(), data.as_slice(), dry)
        .await
        .expect_err("a dry run needs the tenant");
    assert_eq!(code(&refused), v1::ErrorCode::FailedPrecondition);
    // A real import creates it; then a dry run of a replacement writes nothing.
    transfer::import_tenant(
        env.engine.pool(),
        &acme(),
        data.as_slice(),
        ImportOptions::default(),
    )
    .await
    .expect("imported");
    let dry_replace = ImportOptions {
        dry_run: true,
        replace: true,
    };
    transfer::import_tenant(env.engine.pool(), &acme(), data.as_slice(), dry_replace)
        .await
        .expect("dry run");
    assert_eq!(export(&env).await, data);
}
