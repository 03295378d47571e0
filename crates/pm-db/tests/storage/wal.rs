//! The write-ahead log on disk: a closed tenant (evicted, or at shutdown) and a quiet one keep
//! their changes in `tenant.db` and no WAL, so thousands of small tenants do not each keep
//! megabytes of log.

use std::path::Path;
use std::time::Duration;

use pm_core::TenantId;
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;

use crate::support::*;

/// Bytes of `tenant.db` plus `-wal` and `-shm` (0 for a file that is not there).
fn sizes(dir: &Path) -> (u64, u64) {
    let len = |suffix: &str| {
        std::fs::metadata(dir.join(format!("tenant.db{suffix}")))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    (len(""), len("-wal"))
}

/// Waits (10 s at most) until the sizes of `tenant.db` and its WAL in `dir` satisfy `done`.
async fn until_sizes(dir: &Path, what: &str, done: impl Fn((u64, u64)) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(sizes(dir)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not {what} after 10 s: tenant.db and WAL {:?} bytes",
            sizes(dir)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// This process's open descriptors of `file`.
#[cfg(target_os = "linux")]
fn open_descriptors(file: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("the process's descriptors")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target == file)
        .count()
}

/// A project and `count` items with 3 KB descriptions.
async fn fill(tenant: &pm_db::SqliteTenant, count: usize) -> String {
    let project = create_project(tenant, &ALICE, "PM").await;
    for n in 0..count {
        exec(
            tenant,
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
    project.id
}

#[tokio::test]
async fn a_closed_tenant_keeps_its_changes_in_the_database_file_and_no_wal() {
    let env = TestEnv::new();
    let acme = TenantId::parse("acme").unwrap();
    let dir = env.engine.config().tenant_dir(&acme);
    let tenant = env.tenant("acme").await;
    let project_id = fill(&tenant, 200).await;
    let (_, wal) = sizes(&dir);
    assert!(
        wal > 600_000,
        "while open, 200 items are in the WAL: {wal} bytes"
    );

    drop(tenant);
    assert_eq!(env.engine.close_idle().await, 1);
    let (db, wal) = sizes(&dir);
    assert_eq!(wal, 0, "closed: no WAL");
    assert!(db > 600_000, "the items are in tenant.db: {db} bytes");

    // Reopened, read and closed again: the same, twice over. Neither its writer nor its
    // checkpointer connects, as nothing was written: one reader has the file open.
    for _ in 0..2 {
        let tenant = env.tenant("acme").await;
        assert_eq!(tenant.head_seq(), 202);
        // The reader that checked it at its open is idle again at once, and the reads
        // reuse it.
        assert_eq!(
            (tenant.read_pool().size(), tenant.read_pool().idle()),
            (1, 1)
        );
        assert_eq!(
            all_items(&tenant, &ALICE, &project_id, false).await.len(),
            200
        );
        assert_eq!(tenant.read_pool().size(), 1);
        #[cfg(target_os = "linux")]
        assert_eq!(open_descriptors(&dir.join("tenant.db")), 1);
        drop(tenant);
        assert_eq!(env.engine.close_idle().await, 1);
        assert_eq!(
            sizes(&dir),
            (db, 0),
            "closed after reading: unchanged, no WAL"
        );
    }

    // Reopened and written: the writer connects at the first write, and the close
    // checkpoints the new change into tenant.db.
    let tenant = env.tenant("acme").await;
    create_project(&tenant, &ALICE, "NEW").await;
    #[cfg(target_os = "linux")]
    assert_eq!(open_descriptors(&dir.join("tenant.db")), 2);
    drop(tenant);
    assert_eq!(env.engine.close_idle().await, 1);
    assert_eq!(sizes(&dir).1, 0, "closed after writing: no WAL");
    let tenant = env.tenant("acme").await;
    assert_eq!(tenant.head_seq(), 204);
}

#[tokio::test]
async fn a_quiet_tenant_truncates_its_wal_and_writes_on() {
    let env = TestEnv::with(|config| config.idle_checkpoint = Duration::from_millis(100));
    let acme = TenantId::parse("acme").unwrap();
    let dir = env.engine.config().tenant_dir(&acme);
    let tenant = env.tenant("acme").await;
    let project_id = fill(&tenant, 50).await;
    assert!(sizes(&dir).1 > 150_000, "the WAL holds the items");

    // Quiet for two idle periods: first everything is checkpointed, then the WAL truncated,
    // with the tenant still open.
    until_sizes(&dir, "the WAL truncated", |(_, wal)| wal == 0).await;
    assert!(sizes(&dir).0 > 150_000, "the items are in tenant.db");
    assert_eq!(env.engine.open_count(), 1);

    // It writes on, and what it wrote before is all there.
    let (_, seq) = create_item(
        &tenant,
        &ALICE,
        &project_id,
        v1::WorkItemType::Task,
        "after",
    )
    .await;
    assert_eq!(seq, 53);
    assert_eq!(
        all_items(&tenant, &ALICE, &project_id, false).await.len(),
        51
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_writes_keep_the_wal_near_its_limit() {
    let env = TestEnv::new();
    let acme = TenantId::parse("acme").unwrap();
    let dir = env.engine.config().tenant_dir(&acme);
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "PM").await;
    // One commit after the other, never a pause for the checkpointer to catch up in: some
    // 100 KiB of WAL each, 100 MiB in all, twice the bound below.
    let mut largest = 0;
    for n in 0..1_000 {
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
        largest = largest.max(sizes(&dir).1);
    }
    // Past the limit a checkpoint runs; past twice the limit the writer starts the WAL over
    // (measured with a 4 MiB limit: 9.3 MB at most, every run; the WAL took all of these
    // writes without the bound).
    let bound = pm_db::sqlite::WAL_SIZE_LIMIT * 3;
    assert!(largest <= bound, "the WAL reached {largest} bytes");
    assert!(largest >= pm_db::sqlite::WAL_SIZE_LIMIT, "{largest}");
}

/// `PRAGMA mmap_size` of a reader of `tenant`.
async fn mapped_bytes(tenant: &pm_db::SqliteTenant) -> i64 {
    let mut conn = tenant.read_pool().acquire().await.unwrap();
    sqlx::query_scalar("PRAGMA mmap_size")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_connection_is_memory_mapped_once_the_database_is_larger_than_its_page_cache() {
    let env = TestEnv::with(|config| {
        config.cache_size_kib = 64;
        config.idle_checkpoint = Duration::from_millis(100);
    });
    let acme = TenantId::parse("acme").unwrap();
    let dir = env.engine.config().tenant_dir(&acme);
    let tenant = env.tenant("acme").await;
    assert_eq!(mapped_bytes(&tenant).await, 0, "a new tenant is not mapped");
    fill(&tenant, 40).await;
    // 40 items of 3 KB outgrow 64 KiB once the quiet tenant's checkpoint has copied them
    // from the WAL into tenant.db.
    until_sizes(&dir, "tenant.db past 64 KiB", |(db, _)| db > 64 * 1024).await;
    // The reader that opened with the tenant keeps what it was opened with; one opened now
    // (the first is held, so the pool opens another) is mapped.
    let mut held = tenant.read_pool().acquire().await.unwrap();
    assert_eq!(tenant.read_pool().size(), 1);
    assert_eq!(mapped_bytes(&tenant).await, 256 * 1024 * 1024);
    let held_maps: i64 = sqlx::query_scalar("PRAGMA mmap_size")
        .fetch_one(&mut *held)
        .await
        .unwrap();
    assert_eq!(held_maps, 0, "the first reader is as it was opened");
    drop(held);

    drop(tenant);
    assert_eq!(env.engine.close_idle().await, 1);
    let tenant = env.tenant("acme").await;
    assert_eq!(mapped_bytes(&tenant).await, 256 * 1024 * 1024);
}
