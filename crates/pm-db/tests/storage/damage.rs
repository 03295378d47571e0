//! A damaged tenant database: found when the tenant opens, by a read or by a write, it takes
//! that tenant (and only that one) out of service with an error that names the remedy, until
//! its file is restored from a backup.

use std::path::{Path, PathBuf};

use pm_core::TenantId;
use pm_db::sqlite::backup::{backup_tenant, restore_tenant};
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;
use pm_proto::v1::query::Kind as Q;

use crate::support::*;

/// Work items in the damaged tenant: its file has a few hundred pages.
const ITEMS: usize = 200;

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn refusal(tenant: &str) -> String {
    format!(
        "tenant {tenant}'s database is damaged (database disk image is malformed); an operator \
         must restore it from a backup (pm-server restore --tenant {tenant})"
    )
}

/// A tenant `acme` with a project and [`ITEMS`] items of 3 KB, closed (so that everything is
/// in `tenant.db`), and a backup of it taken before any damage. Returns the project id and
/// the backup file.
async fn seeded(env: &TestEnv, backups: &Path) -> (String, PathBuf) {
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "PM").await;
    for n in 0..ITEMS {
        exec(
            &tenant,
            &ALICE,
            C::CreateWorkItem(v1::CreateWorkItem {
                project_id: project.id.clone(),
                item_type: v1::WorkItemType::Task.into(),
                title: format!("item {n}"),
                description: "x".repeat(3_000),
                ..Default::default()
            }),
        )
        .await
        .expect("item created");
    }
    let backup = backup_tenant(env.engine.config(), &acme(), backups)
        .await
        .expect("backup taken");
    drop(tenant);
    assert_eq!(env.engine.close_idle().await, 1);
    (project.id, backup.file)
}

/// Overwrites the middle third of the database file (whole pages) with garbage, the way a
/// failing disk or a stray write would.
fn damage_middle(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let pages = bytes.len() / 4096;
    assert!(pages > 150, "{pages} pages");
    let (from, to) = (pages / 3 * 4096, pages * 2 / 3 * 4096);
    bytes[from..to].fill(0xA5);
    std::fs::write(file, bytes).unwrap();
}

async fn list_all(
    tenant: &pm_db::SqliteTenant,
    project_id: &str,
) -> pm_db::Result<v1::query_result::Result> {
    query(
        tenant,
        &ALICE,
        Q::ListWorkItems(v1::ListWorkItems {
            project_id: project_id.into(),
            page: Some(v1::PageRequest {
                page_size: 500,
                page_token: String::new(),
            }),
            ..Default::default()
        }),
    )
    .await
}

fn assert_refused<T: std::fmt::Debug>(result: pm_db::Result<T>, what: &str) {
    let error = result.expect_err(what);
    assert_eq!(code(&error), v1::ErrorCode::Unavailable, "{what}: {error}");
    assert_eq!(error.to_string(), refusal("acme"), "{what}");
}

/// The items of the project, read while the file is whole.
async fn items_of(tenant: &pm_db::SqliteTenant, project_id: &str) -> Vec<v1::WorkItem> {
    match list_all(tenant, project_id).await {
        Ok(v1::query_result::Result::ListWorkItemsResult(page)) => page.items,
        other => panic!("items listed: {other:?}"),
    }
}

/// Renames the item stored in the middle of the file, which [`damage_middle`] overwrites.
fn rename_middle(items: &[v1::WorkItem]) -> C {
    let middle = &items[ITEMS / 2];
    C::UpdateWorkItem(v1::UpdateWorkItem {
        id: middle.id.clone(),
        expected_version: middle.version,
        title: Some("renamed".into()),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_found_by_a_read_is_quarantined_until_restored() {
    let env = TestEnv::new();
    let backups = tempfile::tempdir().unwrap();
    let (project_id, backup) = seeded(&env, backups.path()).await;
    let other = env.tenant("globex").await;
    create_project(&other, &BOB, "GX").await;
    damage_middle(&env.engine.config().db_file(&acme()));

    // Without `check_on_open` the damage is not seen until a read reaches it.
    let tenant = env.tenant("acme").await;
    assert_refused(list_all(&tenant, &project_id).await, "the read");
    // From then on the tenant refuses everything, reads and writes, without touching the file.
    assert_refused(
        exec(
            &tenant,
            &ALICE,
            C::CreateProject(v1::CreateProject {
                key: "NEW".into(),
                name: "New".into(),
                description: String::new(),
            }),
        )
        .await,
        "a write",
    );
    assert_refused(tenant.oldest_seq().await, "reading the log");
    assert_refused(env.engine.open_tenant(&acme()).await, "opening it again");
    assert_eq!(env.engine.figures().quarantined_tenants, 1);

    // Every other tenant serves.
    let (_, seq) = create_item(
        &other,
        &BOB,
        &project_id_of(&other).await,
        v1::WorkItemType::Task,
        "still here",
    )
    .await;
    assert_eq!(seq, 3);

    // The quarantined tenant let go of its lock: the operator restores it while the engine
    // serves, and the next open serves the restored file.
    drop(tenant);
    let restored = restore_tenant(env.engine.config(), &acme(), &backup, true)
        .await
        .expect("restore while quarantined");
    assert!(restored.replaced);
    let tenant = env.tenant("acme").await;
    let Ok(v1::query_result::Result::ListWorkItemsResult(page)) =
        list_all(&tenant, &project_id).await
    else {
        panic!("the restored tenant lists its items");
    };
    assert_eq!(page.items.len(), ITEMS);
    assert_eq!(tenant.head_seq(), 2 + ITEMS as u64);
    assert_eq!(env.engine.figures().quarantined_tenants, 0);
    let (_, seq) = create_item(
        &tenant,
        &ALICE,
        &project_id,
        v1::WorkItemType::Task,
        "after restore",
    )
    .await;
    assert_eq!(seq, 3 + ITEMS as u64);
}

async fn project_id_of(tenant: &pm_db::SqliteTenant) -> String {
    project_ids(tenant, &BOB).await.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_found_by_a_write_is_quarantined() {
    let env = TestEnv::new();
    let backups = tempfile::tempdir().unwrap();
    let (project_id, _) = seeded(&env, backups.path()).await;
    // The ids of the items, read before the damage.
    let tenant = env.tenant("acme").await;
    let items = items_of(&tenant, &project_id).await;
    drop(tenant);
    env.engine.close_idle().await;
    damage_middle(&env.engine.config().db_file(&acme()));

    // Updating an item stored in the damaged middle of the file: the writer finds it.
    let tenant = env.tenant("acme").await;
    assert_refused(
        exec(&tenant, &ALICE, rename_middle(&items)).await,
        "the write",
    );
    assert_refused(list_all(&tenant, &project_id).await, "a read after it");
    assert_eq!(env.engine.figures().quarantined_tenants, 1);
    // Nothing was logged for the refused write.
    assert_eq!(tenant.head_seq(), 2 + ITEMS as u64);
}

#[tokio::test]
async fn check_on_open_refuses_a_damaged_database_before_serving_it() {
    let env = TestEnv::with(|config| config.check_on_open = true);
    let backups = tempfile::tempdir().unwrap();
    seeded(&env, backups.path()).await;
    damage_middle(&env.engine.config().db_file(&acme()));

    let error = env
        .engine
        .open_tenant(&acme())
        .await
        .expect_err("a damaged tenant does not open");
    assert_eq!(code(&error), v1::ErrorCode::Unavailable);
    let text = error.to_string();
    assert!(
        text.starts_with("tenant acme's database is damaged (quick_check: "),
        "{text}"
    );
    assert!(
        text.ends_with(
            "); an operator must restore it from a backup (pm-server restore --tenant acme)"
        ),
        "{text}"
    );
    assert_eq!(env.engine.figures().quarantined_tenants, 1);
    assert_eq!(env.engine.open_count(), 0);
    // An undamaged tenant opens with the same check.
    let other = env.tenant("globex").await;
    create_project(&other, &BOB, "GX").await;
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_quarantined_when_it_opens() {
    let env = TestEnv::new();
    let dir = env.engine.config().tenant_dir(&acme());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tenant.db"), vec![0x5A; 64 * 1024]).unwrap();

    let error = env
        .engine
        .open_tenant(&acme())
        .await
        .expect_err("not a database");
    assert_eq!(code(&error), v1::ErrorCode::Unavailable);
    assert_eq!(
        error.to_string(),
        "tenant acme's database is damaged (file is not a database); an operator must restore \
         it from a backup (pm-server restore --tenant acme)"
    );
    assert_eq!(env.engine.figures().quarantined_tenants, 1);
    // Asked again, it is refused from the quarantine without touching the file.
    let again = env.engine.open_tenant(&acme()).await.expect_err("still");
    assert_eq!(again.to_string(), error.to_string());
}

/// A tenant found damaged while its writer holds text not yet indexed (items are indexed every
/// 64 seqs): the writer never indexes it, neither for a search nor when it closes, so nothing
/// is written to the damaged file or its WAL again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_tenant_never_indexes_the_text_that_waits() {
    let env = TestEnv::new();
    let backups = tempfile::tempdir().unwrap();
    let (project_id, _) = seeded(&env, backups.path()).await;
    let tenant = env.tenant("acme").await;
    let items = items_of(&tenant, &project_id).await;
    // Seq 203: no batch (the next is at 256), so the new title waits for one.
    create_item(&tenant, &ALICE, &project_id, v1::WorkItemType::Bug, "zebra").await;
    assert_eq!(tenant.head_seq(), 203);

    let file = env.engine.config().db_file(&acme());
    let wal = file.with_file_name(format!("{}-wal", pm_db::sqlite::DB_FILE));
    damage_middle(&file);
    assert_refused(
        exec(&tenant, &ALICE, rename_middle(&items)).await,
        "the write",
    );
    let files = (std::fs::read(&file).unwrap(), std::fs::read(&wal).unwrap());
    assert!(!files.1.is_empty(), "the create is still in the WAL");

    assert_refused(search(&tenant, &project_id, "zebra").await, "a search");
    drop(tenant);
    env.engine.close_idle().await;
    assert_eq!(
        (std::fs::read(&file).unwrap(), std::fs::read(&wal).unwrap()),
        files,
        "the damaged files were written again"
    );
    assert_eq!(env.engine.figures().quarantined_tenants, 1);
}
