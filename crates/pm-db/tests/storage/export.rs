//! Export and import: round trips, validation, all-or-nothing, dry runs and refusals.

mod fixture;

use std::collections::HashMap;

use pm_core::TenantId;
use pm_db::export::ImportOptions;
use pm_db::sqlite::transfer::{export_tenant, import_tenant};
use pm_db::{SqliteConfig, SqliteTenant, Tenant as _};
use pm_proto::v1;

use crate::support::*;
use fixture::{load_every_kind, load_real_data, UNICODE_TITLE};

async fn export_bytes(config: &SqliteConfig, id: &TenantId) -> Vec<u8> {
    let mut out = Vec::new();
    export_tenant(config, id, &mut out).await.unwrap();
    out
}

async fn import(
    config: &SqliteConfig,
    input: &[u8],
    options: ImportOptions,
) -> pm_db::Result<pm_db::export::ImportReport> {
    import_tenant(config, &acme(), input, options).await
}

/// The source tenant for the import tests, closed, and its export.
async fn exported_source() -> (TestEnv, Vec<u8>) {
    let env = TestEnv::new();
    let tenant = env.tenant("acme").await;
    load_real_data(&tenant).await;
    load_every_kind(&tenant).await;
    drop(tenant);
    env.engine.close_idle().await;
    let out = export_bytes(env.engine.config(), &acme()).await;
    (env, out)
}

#[tokio::test]
async fn export_then_import_into_an_empty_tenant_then_export_again_is_identical() {
    let (source_env, first) = exported_source().await;
    let text = std::str::from_utf8(&first).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let header: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    let source = source_env.tenant("acme").await;
    let head = source.head_seq();
    assert_eq!(
        header,
        serde_json::json!({"format": "pm-server-export", "version": 1, "tenant": "acme",
            "schema_version": pm_db::sqlite::migrations::embedded_version(), "head_seq": head})
    );
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for line in &lines[1..] {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        *kinds
            .entry(value["kind"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    // Real data: 1 project, 194 items, 59 dependencies, 64 comments; plus every kind.
    assert_eq!(kinds["project"], 3);
    assert_eq!(
        kinds["project_member"], 4,
        "alice in each project and bob; carol was removed"
    );
    assert_eq!(kinds["sprint"], 2);
    assert_eq!(kinds["work_item"], 194 + 5);
    assert_eq!(kinds["comment"], 64 + 2);
    assert_eq!(kinds["time_entry"], 2);
    assert_eq!(kinds["dependency"], 59 + 3);
    assert_eq!(kinds["swim_lane"], 2);
    assert_eq!(kinds["llm_context"], 1);
    assert_eq!(kinds["change"] as u64, head);
    // Unicode is written as itself, deleted rows carry their deletion time.
    assert!(text.contains(UNICODE_TITLE));
    assert!(text.contains(r#""title":"gelöscht""#));
    let deleted = |change: bool| {
        lines[1..]
            .iter()
            .filter(|l| l.starts_with(r#"{"kind":"change""#) == change)
            .filter(|l| l.contains(r#""deletedAt":""#))
            .count()
    };
    assert_eq!(
        deleted(false),
        5,
        "project, sprint, work item, comment, dependency"
    );
    assert_eq!(
        deleted(true),
        7,
        "their deletions, the deleted-then-restored bug and carol's removal"
    );

    let target = TestEnv::new();
    let report = import(target.engine.config(), &first, ImportOptions::default())
        .await
        .unwrap();
    assert!(!report.replaced && !report.dry_run);
    assert_eq!(report.source.head_seq, head);
    assert_eq!(
        report.counts.iter().map(|(_, n)| *n).sum::<u64>() as usize,
        lines.len() - 1
    );
    let again = export_bytes(target.engine.config(), &acme()).await;
    assert_eq!(std::str::from_utf8(&again).unwrap(), text, "byte-identical");

    // The imported tenant serves like the source: same log bytes, same reads, search works.
    let copy = target.tenant("acme").await;
    assert_eq!(copy.head_seq(), head);
    assert_eq!(events(&copy).await, events(&source).await);
    let uni = all_items(&source, &ALICE, &project_id(&source, "UNI").await, true).await;
    assert_eq!(uni.len(), 5);
    assert_eq!(
        all_items(&copy, &ALICE, &project_id(&copy, "UNI").await, true).await,
        uni
    );
    let found = search(&copy, &project_id(&copy, "UNI").await, "修复登录").await;
    assert_eq!(
        found,
        search(&source, &project_id(&source, "UNI").await, "修复登录").await
    );
    assert_eq!(found.len(), 1);
}

async fn project_id(tenant: &SqliteTenant, key: &str) -> String {
    use pm_proto::v1::query::Kind as Q;
    use pm_proto::v1::query_result::Result as R;
    match query(
        tenant,
        &ALICE,
        Q::ListProjects(v1::ListProjects {
            include_deleted: true,
            page: page500(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    {
        R::ListProjectsResult(r) => r.items.into_iter().find(|p| p.key == key).unwrap().id,
        other => panic!("{other:?}"),
    }
}

async fn search(tenant: &SqliteTenant, project_id: &str, text: &str) -> Vec<String> {
    use pm_proto::v1::query::Kind as Q;
    use pm_proto::v1::query_result::Result as R;
    match query(
        tenant,
        &ALICE,
        Q::ListWorkItems(v1::ListWorkItems {
            project_id: project_id.into(),
            text: text.into(),
            page: page500(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    {
        R::ListWorkItemsResult(r) => r.items.into_iter().map(|i| i.id).collect(),
        other => panic!("{other:?}"),
    }
}

/// `export` with line `index` (0-based) passed through `edit`.
fn with_line(export: &[u8], index: usize, edit: impl FnOnce(&str) -> String) -> Vec<u8> {
    let text = std::str::from_utf8(export).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[index] = edit(&lines[index]);
    (lines.join("\n") + "\n").into_bytes()
}

fn index_of(export: &[u8], needle: &str) -> usize {
    std::str::from_utf8(export)
        .unwrap()
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line contains {needle}"))
}

#[tokio::test]
async fn one_bad_row_rolls_back_the_whole_import() {
    let (_source, export) = exported_source().await;

    // A rule of the commands: a comment must not be blank.
    let at = index_of(&export, "Kommentar 👍");
    let bad = with_line(&export, at, |l| {
        l.replace("Kommentar 👍 ñ\\n> zitiert", " \\n ")
    });
    let target = TestEnv::new();
    let err = import(target.engine.config(), &bad, ImportOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("line {} (comment) content: must not be blank", at + 1)
    );
    assert!(
        !target.engine.config().tenant_dir(&acme()).exists(),
        "a refused import into a new tenant leaves nothing"
    );

    // A rule only the database knows (unique project keys), found while inserting: the
    // rows before it are rolled back, in a tenant that had content and was to be replaced.
    let existing = TestEnv::new();
    let tenant = existing.tenant("acme").await;
    create_project(&tenant, &ALICE, "KEEP").await;
    drop(tenant);
    existing.engine.close_idle().await;
    let before = export_bytes(existing.engine.config(), &acme()).await;
    let at = index_of(&export, r#""key":"UNI""#);
    let bad = with_line(&export, at, |l| {
        l.replace(r#""key":"UNI""#, r#""key":"PONE""#)
    });
    let err = import(
        existing.engine.config(),
        &bad,
        ImportOptions {
            replace: true,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "line {} (project): refused by the database: UNIQUE constraint failed: projects.key",
            at + 1
        )
    );
    assert_eq!(
        export_bytes(existing.engine.config(), &acme()).await,
        before,
        "the content to be replaced is untouched"
    );

    // References are resolved within the file.
    let at = index_of(&export, r#""kind":"time_entry""#);
    let bad = with_line(&export, at, |l| {
        let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
        v["data"]["workItemId"] = "0190f0c4-0000-7000-8000-000000000000".into();
        v.to_string()
    });
    let err = import(target.engine.config(), &bad, ImportOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "line {} (time_entry) work_item_id: must be a work item of the same project in this export",
            at + 1
        )
    );
    // A file cut short is noticed.
    let text = std::str::from_utf8(&export).unwrap();
    let cut: String = text
        .lines()
        .take(text.lines().count() - 1)
        .map(|l| format!("{l}\n"))
        .collect();
    let err = import(
        target.engine.config(),
        cut.as_bytes(),
        ImportOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().starts_with("head_seq: the header says"),
        "{err}"
    );
    assert!(!target.engine.config().tenant_dir(&acme()).exists());
}

#[tokio::test]
async fn a_dry_run_writes_nothing_and_reports_the_counts() {
    let (_source, export) = exported_source().await;
    let lines = std::str::from_utf8(&export).unwrap().lines().count() as u64;
    let target = TestEnv::new();
    let dry = ImportOptions {
        dry_run: true,
        ..Default::default()
    };
    let report = import(target.engine.config(), &export, dry).await.unwrap();
    assert!(report.dry_run);
    assert_eq!(report.counts.iter().map(|(_, n)| n).sum::<u64>(), lines - 1);
    assert_eq!(report.counts[0], ("project", 3));
    assert!(!target.engine.config().tenant_dir(&acme()).exists());

    // Into an existing empty tenant: it stays empty.
    assert_eq!(target.tenant("acme").await.head_seq(), 0);
    target.engine.close_idle().await;
    let empty = export_bytes(target.engine.config(), &acme()).await;
    import(target.engine.config(), &export, dry).await.unwrap();
    assert_eq!(export_bytes(target.engine.config(), &acme()).await, empty);
    assert_eq!(std::str::from_utf8(&empty).unwrap().lines().count(), 1);
}

#[tokio::test]
async fn import_refuses_a_non_empty_or_open_tenant_and_replaces_only_when_told() {
    let (source, export) = exported_source().await;
    // The source itself is not empty.
    let err = import(source.engine.config(), &export, ImportOptions::default())
        .await
        .unwrap_err();
    assert_eq!(code(&err), v1::ErrorCode::FailedPrecondition);
    assert!(err.to_string().contains("is not empty"), "{err}");
    // Open in a "server": refused, dry run or not.
    let open = source.tenant("acme").await;
    for dry_run in [false, true] {
        let err = import(
            source.engine.config(),
            &export,
            ImportOptions {
                dry_run,
                replace: true,
            },
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("is open in a running server"),
            "{err}"
        );
    }
    let head = open.head_seq();
    drop(open);
    source.engine.close_idle().await;
    // Replacing with its own export changes nothing visible.
    let report = import(
        source.engine.config(),
        &export,
        ImportOptions {
            replace: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(report.replaced);
    assert_eq!(export_bytes(source.engine.config(), &acme()).await, export);
    let reopened = source.tenant("acme").await;
    assert_eq!(reopened.head_seq(), head);
    // The full-text index was rebuilt, not doubled.
    let uni = project_id(&reopened, "UNI").await;
    assert_eq!(search(&reopened, &uni, "修复登录").await.len(), 1);
    // So were the batched indexes by actor, project and entity: every imported event is in
    // each (deleting the old log emptied them, and left them marked complete up to the old head).
    let mut conn = reopened.read_pool().acquire().await.unwrap();
    for (table, column) in [
        ("actors", "actor_id"),
        ("projects", "project_id"),
        ("entities", "entity_id"),
    ] {
        let (unindexed, pairs, upto): (i64, i64, i64) = sqlx::query_as(&format!(
            "SELECT (SELECT COUNT(*) FROM change_log AS c \
                     WHERE NOT EXISTS (SELECT 1 FROM change_log_{table} AS a \
                                       WHERE a.{column} = c.{column} AND a.seq = c.seq)), \
                    (SELECT COUNT(*) FROM change_log_{table}), \
                    (SELECT seq FROM change_log_batched_upto)"
        ))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert_eq!(
            (unindexed, pairs, upto as u64),
            (0, head as i64, head),
            "{table}"
        );
    }
    // Every full-text index holds exactly the imported rows' text (FTS5's own check), and
    // no work item or comment waits for one.
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(reopened.dir().join(pm_db::sqlite::DB_FILE))
        .busy_timeout(std::time::Duration::from_secs(5));
    let mut raw = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
        .await
        .unwrap();
    for fts in [
        "work_item_fts",
        "comment_fts",
        "sprint_fts",
        "llm_context_fts",
    ] {
        sqlx::query(&format!(
            "INSERT INTO {fts} ({fts}, rank) VALUES ('integrity-check', 1)"
        ))
        .execute(&mut raw)
        .await
        .unwrap_or_else(|e| panic!("{fts} holds exactly its rows' text: {e}"));
    }
    let waiting: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM work_item_fts_pending) \
              + (SELECT COUNT(*) FROM comment_fts_pending) \
              + (SELECT COUNT(*) FROM work_items \
                 WHERE rowid > (SELECT item_rowid FROM work_item_fts_upto)) \
              + (SELECT COUNT(*) FROM comments \
                 WHERE rowid > (SELECT comment_rowid FROM comment_fts_upto))",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(waiting, 0);
}
