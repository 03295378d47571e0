//! Backup and restore: a backup taken while writes continue restores a consistent prefix; a
//! tenant being restored cannot be opened; a damaged backup is refused and replaces nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pm_db::sqlite::backup::{backup_tenant, restore_tenant};
use pm_db::EventFilter;
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_writes_continue_restores_a_consistent_prefix() {
    let env = TestEnv::new();
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "PM").await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (tenant, stop, project_id) = (tenant.clone(), stop.clone(), project.id.clone());
        async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (item, _) =
                    create_item(&tenant, &ALICE, &project_id, v1::WorkItemType::Task, "item").await;
                if n.is_multiple_of(3) {
                    exec(
                        &tenant,
                        &ALICE,
                        C::UpdateWorkItem(v1::UpdateWorkItem {
                            id: item.id,
                            expected_version: 1,
                            title: Some(format!("item {n} ✓")),
                            ..Default::default()
                        }),
                    )
                    .await
                    .unwrap();
                }
            }
        }
    });
    let mut commits = tenant.subscribe_commits();
    while tenant.head_seq() < 60 {
        let _ = commits.recv().await;
    }
    let backups = tempfile::tempdir().unwrap();
    let report = backup_tenant(env.engine.config(), &acme(), backups.path())
        .await
        .unwrap();
    let head = report.verified.head_seq;
    // The writer went on after the copy: the backup must hold a prefix, not the end state.
    while tenant.head_seq() < head + 30 {
        let _ = commits.recv().await;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    assert!(head >= 60, "the backup started after 60 changes: {head}");
    assert!(tenant.head_seq() >= head + 30);
    assert_eq!(report.file, backups.path().join("acme.db"));
    assert_eq!(report.bytes, std::fs::metadata(&report.file).unwrap().len());
    let leftovers: Vec<_> = std::fs::read_dir(backups.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        ["acme.db"],
        "one self-contained file, no temporaries"
    );

    // Restore into a fresh data directory and open it like a server would.
    let fresh = TestEnv::new();
    let restored = restore_tenant(fresh.engine.config(), &acme(), &report.file, false)
        .await
        .unwrap();
    assert!(!restored.replaced);
    assert_eq!(restored.verified, report.verified);
    let copy = fresh.tenant("acme").await;
    assert_eq!(copy.head_seq(), head);
    // The log is gapless and byte for byte the source's first `head` changes.
    let copied = events(&copy).await;
    let source: Vec<_> = events(&tenant)
        .await
        .into_iter()
        .take(head as usize)
        .collect();
    assert_eq!(copied.len() as u64, head);
    assert_eq!(
        copied.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=head).collect::<Vec<_>>()
    );
    assert_eq!(copied, source);
    // Every entity is exactly as the last change to it in the log left it.
    let mut last: HashMap<String, v1::WorkItem> = HashMap::new();
    for stored in copy
        .read_events(0, None, u32::MAX, &EventFilter::default())
        .await
        .unwrap()
    {
        if let Some(v1::event::Change::WorkItem(item)) = stored.decode().unwrap().change {
            last.insert(item.id.clone(), item);
        }
    }
    let items = all_items(&copy, &ALICE, &project.id, true).await;
    assert_eq!(items.len(), last.len());
    for item in items {
        assert_eq!(item, unblocked(&last[&item.id]));
    }

    // The live tenant cannot be restored over; once closed, only with `force`.
    let err = restore_tenant(env.engine.config(), &acme(), &report.file, true)
        .await
        .unwrap_err();
    assert_eq!(code(&err), v1::ErrorCode::FailedPrecondition);
    assert!(
        err.to_string().contains("is open in a running server"),
        "{err}"
    );
    let live_head = tenant.head_seq();
    drop(tenant);
    drop(commits);
    assert_eq!(env.engine.close_idle().await, 1);
    let err = restore_tenant(env.engine.config(), &acme(), &report.file, false)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tenant acme already has a database; use --force to replace it"
    );
    assert_eq!(
        env.tenant("acme").await.head_seq(),
        live_head,
        "refused: unchanged"
    );
    assert_eq!(env.engine.close_idle().await, 1);
    let forced = restore_tenant(env.engine.config(), &acme(), &report.file, true)
        .await
        .unwrap();
    assert!(forced.replaced);
    let dir = env.engine.config().tenant_dir(&acme());
    assert!(!dir.join("tenant.db.restoring").exists());
    let back = env.tenant("acme").await;
    assert_eq!(back.head_seq(), head, "the backup replaced the newer state");
    assert_eq!(events(&back).await, source);
}

#[tokio::test]
async fn a_tenant_being_restored_cannot_be_opened() {
    let env = TestEnv::new();
    let dir = env.engine.config().tenant_dir(&acme());
    std::fs::create_dir_all(&dir).unwrap();
    let lock = pm_db::sqlite::lock::TenantLock::exclusive(&dir, "acme").unwrap();
    let err = env.engine.open_tenant(&acme()).await.unwrap_err();
    assert_eq!(code(&err), v1::ErrorCode::Unavailable);
    assert_eq!(
        err.to_string(),
        "the tenant is being restored or imported; retry later"
    );
    drop(lock);
    assert_eq!(env.tenant("acme").await.head_seq(), 0);
}

#[tokio::test]
async fn a_damaged_backup_is_refused_and_nothing_is_replaced() {
    let env = TestEnv::new();
    let backups = tempfile::tempdir().unwrap();
    std::fs::write(backups.path().join("acme.db"), b"not a database").unwrap();
    let err = restore_tenant(
        env.engine.config(),
        &acme(),
        &backups.path().join("acme.db"),
        true,
    )
    .await
    .unwrap_err();
    assert!(err.is_internal(), "{err}");
    assert!(
        !env.engine.config().tenant_dir(&acme()).exists(),
        "nothing is left of a tenant that did not exist"
    );
}
