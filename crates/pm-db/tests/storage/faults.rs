//! Faults of the machine: a full disk (or a tenant at its size limit), and what a tenant does
//! while the condition lasts and once it clears.

use std::collections::BTreeSet;
use std::sync::Arc;

use pm_proto::v1;
use pm_proto::v1::command::Kind as C;

use crate::support::*;

/// Writers that create items with large descriptions until the tenant is full.
const WRITERS: usize = 4;

fn big_item(project_id: &str, n: usize) -> v1::Command {
    command(C::CreateWorkItem(v1::CreateWorkItem {
        project_id: project_id.into(),
        item_type: v1::WorkItemType::Task.into(),
        title: format!("item {n}"),
        description: "x".repeat(3_000),
        ..Default::default()
    }))
}

/// Acknowledged seqs and the errors of `count` creations per writer, all at once.
async fn write_concurrently(
    tenant: &Arc<pm_db::SqliteTenant>,
    project_id: &str,
    count: usize,
) -> (Vec<u64>, Vec<pm_db::Error>) {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let tenant = tenant.clone();
        let project_id = project_id.to_owned();
        tasks.spawn(async move {
            let mut acked = Vec::new();
            let mut failed = Vec::new();
            for i in 0..count {
                match tenant
                    .execute(&ALICE, big_item(&project_id, w * count + i))
                    .await
                {
                    Ok(result) => acked.push(result.seq),
                    Err(error) => failed.push(error),
                }
            }
            (acked, failed)
        });
    }
    let mut acked = Vec::new();
    let mut failed = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (a, f) = done.expect("a writer finished");
        acked.extend(a);
        failed.extend(f);
    }
    acked.sort_unstable();
    (acked, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tenant_fails_fast_and_serves_again_once_there_is_room() {
    // 512 KiB: a few dozen 3 KB items fit, then the database is full.
    let env = TestEnv::with(|config| config.max_tenant_bytes = Some(512 * 1024));
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "PM").await;

    // While full: every refusal is UNAVAILABLE and says why; acknowledged writes are kept.
    let (acked_full, failed) = write_concurrently(&tenant, &project.id, 60).await;
    assert!(!acked_full.is_empty(), "some writes fit");
    assert!(!failed.is_empty(), "the tenant filled up");
    for error in &failed {
        assert_eq!(code(error), v1::ErrorCode::Unavailable, "{error}");
        assert_eq!(
            error.to_string(),
            "the tenant's storage is full (database or disk is full); retry later"
        );
    }
    // Reads keep working, searches too: they see every acknowledged item.
    let items = all_items(&tenant, &ALICE, &project.id, false).await;
    assert_eq!(items.len(), acked_full.len());
    let found = search(&tenant, &project.id, "item").await.unwrap();
    assert_eq!(found.len(), acked_full.len());

    // Room again: the tenant serves by itself, without being reopened.
    env.engine.set_max_tenant_bytes(None);
    let (acked_after, failed_after) = write_concurrently(&tenant, &project.id, 25).await;
    assert_eq!(failed_after.len(), 0, "{:?}", failed_after.first());
    assert_eq!(acked_after.len(), WRITERS * 25);

    // Nothing acknowledged was lost, and the log has no gap: seq 1 and 2 are the project and
    // its admin, then one seq per acknowledged item.
    let logged: Vec<u64> = events(&tenant).await.into_iter().map(|(s, _)| s).collect();
    let expected = 2 + acked_full.len() + acked_after.len();
    assert_eq!(logged, (1..=expected as u64).collect::<Vec<_>>());
    let acked: BTreeSet<u64> = acked_full.iter().chain(&acked_after).copied().collect();
    assert_eq!(acked, (3..=expected as u64).collect::<BTreeSet<_>>());
    assert_eq!(tenant.head_seq(), expected as u64);
    let items = all_items(&tenant, &ALICE, &project.id, false).await;
    assert_eq!(items.len(), acked.len());
}
