//! Faults of the machine as a client and an operator see them: a full tenant, a damaged one,
//! and what a shutdown leaves on disk.

use std::path::Path;

use pm_proto::v1;

use crate::support::*;

/// A work item with a 3 KB description.
fn big_item(project_id: &str, n: usize) -> v1::command::Kind {
    v1::command::Kind::CreateWorkItem(v1::CreateWorkItem {
        project_id: project_id.into(),
        item_type: v1::WorkItemType::Task.into(),
        title: format!("item {n}"),
        description: "x".repeat(3_000),
        ..Default::default()
    })
}

/// Bytes of a tenant's WAL (0 when there is none).
fn wal_bytes(data_dir: &Path, tenant: &str) -> u64 {
    std::fs::metadata(data_dir.join("tenants").join(tenant).join("tenant.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// The value of an unlabelled series in a `/metrics` exposition.
fn metric(exposition: &str, name: &str) -> u64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} in {exposition}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_full_tenant_answers_unavailable_and_serves_again_once_there_is_room() {
    let app = spawn_app_with(|s| s.storage.max_tenant_bytes = 512 * 1024).await;
    let (mut client, _) = app.client("acme", "alice").await;
    let project = client.create_project("PM").await;

    let mut acked = 0;
    let refusal = loop {
        match client.command(big_item(&project.id, acked)).await {
            Ok(_) => acked += 1,
            Err(refusal) => break refusal,
        }
        assert!(acked < 1_000, "512 KiB never filled up");
    };
    assert_eq!(
        refusal,
        error(
            v1::ErrorCode::Unavailable,
            "the tenant's storage is full (database or disk is full); retry later",
            ""
        )
    );
    // While it lasts, writes are refused at once (not tried: no second fault); reads go on.
    let again = client.command(big_item(&project.id, 0)).await.unwrap_err();
    assert_eq!(again, refusal);
    assert_eq!(all_items(&mut client, &project.id).await.items.len(), acked);
    let (_, metrics) = app.http_get("/metrics").await;
    assert_eq!(metric(&metrics, "pm_tenants_degraded"), 1);
    assert_eq!(metric(&metrics, "pm_storage_faults_total"), 1);

    // Room again (an operator freed disk, or raised the limit): the same connection writes.
    app.sqlite().set_max_tenant_bytes(None);
    let (_, seq) = client.create_item(&project.id, "after").await;
    assert_eq!(seq, 3 + acked as u64, "no gap in the log");
    let (_, metrics) = app.http_get("/metrics").await;
    assert_eq!(metric(&metrics, "pm_tenants_degraded"), 0);
    assert_eq!(metric(&metrics, "pm_storage_faults_total"), 1);
}

#[tokio::test]
async fn a_damaged_tenant_is_closed_with_tenant_unavailable_and_others_serve() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = TestApp::spawn_in(dir.path(), |_| {}).await;
    let (mut client, _) = app.client("acme", "alice").await;
    let project = client.create_project("PM").await;
    for n in 0..200 {
        client.command(big_item(&project.id, n)).await.unwrap();
    }
    drop(client);
    app.shutdown().await;

    // The middle third of the file overwritten, as a failing disk would.
    let file = dir.path().join("tenants/acme/tenant.db");
    let mut bytes = std::fs::read(&file).unwrap();
    let pages = bytes.len() / 4096;
    bytes[pages / 3 * 4096..pages * 2 / 3 * 4096].fill(0xA5);
    std::fs::write(&file, bytes).unwrap();

    let app = TestApp::spawn_in(dir.path(), |_| {}).await;
    let damaged = "tenant acme's database is damaged (database disk image is malformed); an \
                   operator must restore it from a backup (pm-server restore --tenant acme)";
    // The first read that reaches the damage is answered, then the connection closed.
    let (mut client, welcome) = app.client("acme", "alice").await;
    assert_eq!(welcome.head_seq, 202);
    let answer = client
        .query(list_query(&project.id, 500, "", ""))
        .await
        .unwrap_err();
    assert_eq!(answer, error(v1::ErrorCode::Unavailable, damaged, ""));
    let (goodbye, code) = client.goodbye().await;
    assert_eq!(
        goodbye,
        goodbye_without_resume(v1::CloseReason::TenantUnavailable, damaged)
    );
    assert_eq!(code, Some(1013));

    // From then on the tenant is refused at Hello, until it is restored.
    let (goodbye, code) = refused(&app, &app.token("acme", "bob")).await;
    assert_eq!(
        goodbye,
        goodbye_without_resume(v1::CloseReason::TenantUnavailable, damaged)
    );
    assert_eq!(code, Some(1013));
    let (_, metrics) = app.http_get("/metrics").await;
    assert_eq!(metric(&metrics, "pm_tenants_quarantined"), 1);

    // Other tenants serve.
    let (mut other, _) = app.client("globex", "bob").await;
    let project = other.create_project("GX").await;
    let (_, seq) = other.create_item(&project.id, "fine").await;
    assert_eq!(seq, 3);
}

#[tokio::test]
async fn shutdown_leaves_every_tenant_in_its_database_file_without_a_wal() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = TestApp::spawn_in(dir.path(), |_| {}).await;
    let (mut acme, _) = app.client("acme", "alice").await;
    let project = acme.create_project("PM").await;
    for n in 0..200 {
        acme.command(big_item(&project.id, n)).await.unwrap();
    }
    let (mut globex, _) = app.client("globex", "bob").await;
    globex.create_project("GX").await;
    assert!(wal_bytes(dir.path(), "acme") > 600_000);
    assert!(wal_bytes(dir.path(), "globex") > 0);

    // Clients still connected: they get their goodbye, and then the tenants are closed.
    let ((goodbye, _), (), _) = tokio::join!(acme.goodbye(), app.shutdown(), globex.goodbye());
    assert_eq!(goodbye.reason(), v1::CloseReason::Shutdown);
    assert_eq!(app.sqlite().open_count(), 0);
    assert_eq!(wal_bytes(dir.path(), "acme"), 0);
    assert_eq!(wal_bytes(dir.path(), "globex"), 0);
    let db = std::fs::metadata(dir.path().join("tenants/acme/tenant.db"))
        .unwrap()
        .len();
    assert!(db > 600_000, "the items are in tenant.db: {db} bytes");
}
