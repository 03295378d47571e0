//! What an operator relies on: health, readiness and metrics over HTTP (and the metrics
//! counting what happened), graceful shutdown (a goodbye with the resume seq, then no new
//! connections), and online schema migration with clients writing and subscribing (no failed
//! command, no event missed or repeated; a failing migration leaves the tenant serving on its
//! old schema).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pm_proto::v1;
use pm_proto::v1::client_frame::Body as In;
use pm_proto::v1::server_frame::Body;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite;

use crate::support::*;

#[tokio::test]
async fn health_readiness_and_metrics_answer_over_http() {
    let app = spawn_app().await;
    assert_eq!(app.http_get("/healthz").await, (200, "ok\n".into()));
    assert_eq!(app.http_get("/readyz").await, (200, "ready\n".into()));
    let (status, body) = app.http_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE pm_connections_open gauge\npm_connections_open 0\n"),
        "{body}"
    );
    assert_eq!(app.http_get("/nope").await.0, 404);
}

/// The value of an unlabelled or labelled sample, by its full name as printed.
fn sample(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in\n{body}"))
        .parse()
        .expect("an integer sample")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_delivered_events_and_ok_commands() {
    const ITEMS: usize = 200;
    const SUBSCRIBERS: u64 = 5;
    let app = spawn_app().await;
    // The projects exist before anyone subscribes, and subscribers start at the head, so every
    // event is delivered live (none replayed from the log).
    let mut setup = Vec::new();
    let mut keys = Vec::new();
    for key in ["AAA", "BBB", "CCC"] {
        let (mut writer, _) = app.client("acme", "alice").await;
        let project = writer.create_project(key).await;
        keys.push(project.id);
        setup.push(writer);
    }
    let head = 6;
    let total_items = 3 * ITEMS as u64;
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let (mut subscriber, _) = app.client("acme", "alice").await;
        assert_eq!(subscriber.subscribe(head).await, Ok(head));
        readers.push(tokio::spawn(async move {
            events_until(&mut subscriber, head + total_items)
                .await
                .len() as u64
        }));
    }
    let mut writers = tokio::task::JoinSet::new();
    for (mut writer, project) in setup.into_iter().zip(keys) {
        writers.spawn(async move {
            for i in 0..ITEMS {
                writer.create_item(&project, &format!("item {i}")).await;
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("a writer finished");
    }
    let mut delivered = 0;
    for reader in readers {
        let received = reader.await.expect("a reader finished");
        assert_eq!(received, total_items);
        delivered += received;
    }
    assert_eq!(delivered, SUBSCRIBERS * total_items);

    let (status, body) = app.http_get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(sample(&body, "pm_events_delivered_total"), delivered);
    assert_eq!(
        sample(&body, "pm_requests_total{kind=\"command\",outcome=\"ok\"}"),
        3 + total_items
    );
    assert_eq!(
        sample(
            &body,
            "pm_requests_total{kind=\"subscribe\",outcome=\"ok\"}"
        ),
        SUBSCRIBERS
    );
    assert_eq!(sample(&body, "pm_slow_consumer_disconnects_total"), 0);
    // Read from /proc/self/status: a running server is bigger than a mebibyte.
    assert!(sample(&body, "process_resident_memory_bytes") > 1 << 20);
}

#[tokio::test]
async fn shutdown_says_goodbye_with_the_resume_seq_and_1001_then_refuses_connections() {
    let mut app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let (_, item_seq) = alice.create_item(&project.id, "one").await;
    let (mut watcher, _) = app.client("acme", "alice").await;
    assert_eq!(watcher.subscribe(0).await, Ok(item_seq));
    for expected in 1..=item_seq {
        assert_eq!(watcher.event().await.seq, expected);
    }

    // `shutdown` unwraps what `serve` returned: it panics unless the server ended with Ok.
    let ((), watcher_bye, alice_bye) =
        tokio::join!(app.shutdown(), watcher.goodbye(), alice.goodbye());
    let bye = |seq| {
        goodbye(
            v1::CloseReason::Shutdown,
            "the server is shutting down",
            seq,
        )
    };
    assert_eq!(watcher_bye, (bye(item_seq), Some(1001)));
    assert_eq!(alice_bye, (bye(0), Some(1001)));

    match tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr)).await {
        Err(tungstenite::Error::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused)
        }
        other => panic!("expected a refused connection, got {other:?}"),
    }
}

// ---- Online migration ----------------------------------------------------------------------

/// The newest embedded migration: where tenants are before a test adds one.
fn embedded() -> i64 {
    pm_db::sqlite::migrations::embedded_version()
}
const NEXT: i64 = 20270101000000;
/// Requests each writer keeps in flight.
const WINDOW: usize = 8;

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

async fn spawn_with_migrations(dir: &Path) -> TestApp {
    let dir = dir.to_owned();
    spawn_app_with(move |s| {
        s.storage.migrations_dir = Some(dir);
        // The writers below send as fast as they can.
        s.limits.requests_per_second = 1_000_000;
        s.limits.request_burst = 1_000_000;
    })
    .await
}

/// What one pipelined writer saw.
#[derive(Debug, Default)]
struct Written {
    ok: u64,
    failed: Vec<v1::Error>,
    /// (window started, window took).
    windows: Vec<(Instant, Duration)>,
}

/// Creates work items with `WINDOW` requests in flight until `stop` is set.
async fn pipelined_writer(
    mut client: Client,
    project_id: String,
    total: Arc<AtomicU64>,
    stop: watch::Receiver<bool>,
) -> Written {
    let mut written = Written::default();
    let mut next_id = 1_000u64;
    while !*stop.borrow() {
        let started = Instant::now();
        for _ in 0..WINDOW {
            next_id += 1;
            client
                .send(
                    next_id,
                    In::Command(v1::Command {
                        idempotency_key: String::new(),
                        kind: Some(create_item(&project_id, &format!("item {next_id}"))),
                    }),
                )
                .await;
        }
        let mut answered = 0;
        while answered < WINDOW {
            match client.frame().await {
                Body::Response(response) => {
                    answered += 1;
                    match response.result.expect("a result") {
                        v1::response::Result::CommandResult(_) => {
                            written.ok += 1;
                            total.fetch_add(1, Ordering::Relaxed);
                        }
                        v1::response::Result::Error(error) => written.failed.push(error),
                        other => panic!("unexpected {other:?}"),
                    }
                }
                Body::Event(_) | Body::Pong(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        written.windows.push((started, started.elapsed()));
    }
    written
}

/// Collects event seqs until one reaches the value `until` is set to.
async fn tail(mut client: Client, mut until: watch::Receiver<u64>) -> Vec<u64> {
    let mut seqs: Vec<u64> = Vec::new();
    loop {
        if seqs.last().is_some_and(|last| *last >= *until.borrow()) {
            return seqs;
        }
        tokio::select! {
            frame = client.frame() => match frame {
                Body::Event(event) => seqs.push(event.seq),
                other => panic!("the subscriber got {other:?}"),
            },
            changed = until.changed() => changed.unwrap(),
        }
    }
}

/// Waits until `counter` reaches `target` (at most a minute).
async fn wait_for(counter: &AtomicU64, target: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while counter.load(Ordering::Relaxed) < target {
        assert!(Instant::now() < deadline, "writers stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What `pm-server tenants stats` reports for tenant `acme`, compared with `migrations`.
async fn acme_stats(app: &TestApp, migrations: &Path) -> pm_db::sqlite::inspect::TenantStats {
    let mut config = app.app.settings.sqlite_config();
    config.migrations_dir = Some(migrations.to_owned());
    pm_db::sqlite::inspect::tenant_stats(&config, &pm_core::TenantId::parse("acme").unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_keep_writing_and_subscribing_through_an_online_migration() {
    let migrations = migrations_copy();
    let app = spawn_with_migrations(migrations.path()).await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;

    let (mut subscriber, _) = app.client("acme", "alice").await;
    assert_eq!(subscriber.subscribe(2).await.unwrap(), 2);
    let (until_tx, until_rx) = watch::channel(u64::MAX);
    let tailer = tokio::spawn(tail(subscriber, until_rx));

    let total = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut writers = Vec::new();
    for _ in 0..3 {
        let (client, _) = app.client("acme", "alice").await;
        writers.push(tokio::spawn(pipelined_writer(
            client,
            project.id.clone(),
            total.clone(),
            stop_rx.clone(),
        )));
    }
    wait_for(&total, 600).await;

    add_migration(migrations.path());
    let before = total.load(Ordering::Relaxed);
    let started = Instant::now();
    let report = app.app.migrate_online().await.unwrap();
    let ended = Instant::now();
    let during = total.load(Ordering::Relaxed) - before;
    wait_for(&total, total.load(Ordering::Relaxed) + 600).await;
    stop_tx.send(true).unwrap();

    let mut ok = 0;
    let mut overlapping = 0;
    let mut failed = Vec::new();
    let (mut slowest_before, mut slowest_during) = (Duration::ZERO, Duration::ZERO);
    for writer in writers {
        let written = writer.await.unwrap();
        ok += written.ok;
        failed.extend(written.failed);
        for (at, took) in written.windows {
            if at + took < started {
                slowest_before = slowest_before.max(took);
            } else if at <= ended {
                slowest_during = slowest_during.max(took);
                overlapping += 1;
            }
        }
    }
    assert_eq!(failed, vec![], "no command failed");
    assert!(
        overlapping >= 1,
        "writers were busy while the migration ran"
    );
    assert!(ok >= 1_200, "{ok} commands");
    let head = 2 + ok;
    until_tx.send(head).unwrap();
    let seqs = tailer.await.unwrap();
    assert_eq!(
        seqs,
        (3..=head).collect::<Vec<_>>(),
        "every seq once, in order"
    );
    eprintln!(
        "online migration: {ok} commands, {during} answered while it ran ({:?}); slowest window \
         of {WINDOW} before: {slowest_before:?}, overlapping the migration: {slowest_during:?}",
        ended - started
    );

    assert_eq!(report.target_version, NEXT);
    assert_eq!(
        report.migrated,
        vec![(
            "acme".to_owned(),
            pm_db::SchemaChange {
                from: embedded(),
                to: NEXT
            }
        )]
    );
    assert_eq!(report.failed, None);
    let stats = acme_stats(&app, migrations.path()).await;
    assert_eq!(
        (stats.schema_version, stats.migration_pending),
        (NEXT, false)
    );
    assert_eq!(stats.head_seq, head);

    let (_, metrics) = app.http_get("/metrics").await;
    for line in [
        "\npm_schema_target_version 20270101000000\n",
        "\npm_schema_rollout_running 0\n",
        "\npm_schema_migrations_applied_total 1\n",
        "\npm_schema_migrations_failed_total 0\n",
        "\npm_schema_migration_pending_tenants{state=\"open\"} 0\n",
        "\npm_schema_migration_pending_tenants{state=\"closed\"} 0\n",
    ] {
        assert!(metrics.contains(line), "{line:?} in {metrics}");
    }
    assert!(!metrics.contains("outcome=\"UNAVAILABLE\""), "{metrics}");
    // The new column is there for the next release's code, with its default.
    let tenant = app
        .sqlite()
        .open_tenant(&pm_core::TenantId::parse("acme").unwrap())
        .await
        .unwrap();
    let colors = sqlx_colors(&tenant).await;
    assert_eq!(colors, ["none"]);
}

fn add_migration(dir: &Path) {
    std::fs::write(
        dir.join(format!("{NEXT}_work_item_color.sql")),
        "ALTER TABLE work_items ADD COLUMN color TEXT NOT NULL DEFAULT 'none';\n\
         CREATE INDEX work_items_by_color ON work_items (color);\n\
         CREATE INDEX change_log_by_time ON change_log (at);\n",
    )
    .unwrap();
}

async fn sqlx_colors(tenant: &pm_db::SqliteTenant) -> Vec<String> {
    sqlx::query_scalar("SELECT DISTINCT color FROM work_items")
        .fetch_all(&mut *tenant.read_pool().acquire().await.unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_failing_online_migration_leaves_the_tenant_serving_on_its_old_schema() {
    let migrations = migrations_copy();
    let app = spawn_with_migrations(migrations.path()).await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let (mut watcher, _) = app.client("acme", "alice").await;
    assert_eq!(watcher.subscribe(2).await.unwrap(), 2);
    std::fs::write(
        migrations.path().join(format!("{NEXT}_broken.sql")),
        "ALTER TABLE work_items ADD COLUMN color TEXT NOT NULL DEFAULT 'none';\n\
         CREATE TABLE oops (;\n",
    )
    .unwrap();

    let report = app.app.migrate_online().await.unwrap();
    assert_eq!(report.migrated, vec![]);
    let (tenant, why) = report.failed.expect("the migration failed");
    assert_eq!(tenant, "acme");
    assert!(why.starts_with(&format!("migration {NEXT}: ")), "{why}");

    // Same connections, same schema, still serving and still streaming.
    let (_, seq) = alice.create_item(&project.id, "after the failure").await;
    assert_eq!(seq, 3);
    assert_eq!(watcher.event().await.seq, 3);
    let stats = acme_stats(&app, migrations.path()).await;
    assert_eq!(
        (stats.schema_version, stats.migration_pending),
        (embedded(), true)
    );
    let (_, metrics) = app.http_get("/metrics").await;
    for line in [
        format!("\npm_schema_target_version {}\n", embedded()),
        "\npm_schema_migrations_applied_total 0\n".to_owned(),
        "\npm_schema_migrations_failed_total 1\n".to_owned(),
        "\npm_schema_migration_pending_tenants{state=\"open\"} 0\n".to_owned(),
    ] {
        assert!(metrics.contains(&line), "{line:?} in {metrics}");
    }
}
