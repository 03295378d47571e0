//! Backup and restore while writes continue; export and import round trips, validation,
//! all-or-nothing, dry runs and refusals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pm_core::TenantId;
use pm_db::backup::{backup_tenant, restore_tenant};
use pm_db::export::{export_tenant, import_tenant, ImportOptions};
use pm_db::{EventFilter, RegistryConfig, Tenant};
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;

use crate::real_data::{Export, DANGLING_DEPENDENCY};
use crate::support::*;

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

/// Every stored event of a tenant, in seq order: (seq, encoded event).
async fn events(tenant: &Tenant) -> Vec<(u64, Vec<u8>)> {
    tenant
        .read_events(0, None, u32::MAX, &EventFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.event.to_vec()))
        .collect()
}

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
    let report = backup_tenant(env.registry.config(), &acme(), backups.path())
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
    let restored = restore_tenant(fresh.registry.config(), &acme(), &report.file, false)
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
        assert_eq!(item, last[&item.id]);
    }

    // The live tenant cannot be restored over; once closed, only with `force`.
    let err = restore_tenant(env.registry.config(), &acme(), &report.file, true)
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
    assert_eq!(env.registry.close_idle().await, 1);
    let err = restore_tenant(env.registry.config(), &acme(), &report.file, false)
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
    assert_eq!(env.registry.close_idle().await, 1);
    let forced = restore_tenant(env.registry.config(), &acme(), &report.file, true)
        .await
        .unwrap();
    assert!(forced.replaced);
    let dir = env.registry.config().tenant_dir(&acme());
    assert!(!dir.join("tenant.db.restoring").exists());
    let back = env.tenant("acme").await;
    assert_eq!(back.head_seq(), head, "the backup replaced the newer state");
    assert_eq!(events(&back).await, source);
}

#[tokio::test]
async fn a_tenant_being_restored_cannot_be_opened() {
    let env = TestEnv::new();
    let dir = env.registry.config().tenant_dir(&acme());
    std::fs::create_dir_all(&dir).unwrap();
    let lock = pm_db::lock::TenantLock::exclusive(&dir, "acme").unwrap();
    let err = env.registry.open(&acme()).await.unwrap_err();
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
        env.registry.config(),
        &acme(),
        &backups.path().join("acme.db"),
        true,
    )
    .await
    .unwrap_err();
    assert!(err.is_internal(), "{err}");
    assert!(
        !env.registry.config().tenant_dir(&acme()).exists(),
        "nothing is left of a tenant that did not exist"
    );
}

/// Loads the real export (`../shared/data`) through commands: project, work items (parents
/// first), dependencies and comments.
async fn load_real_data(tenant: &Tenant) {
    let export = Export::load();
    let (project, _) = run::<v1::Project>(
        tenant,
        &ALICE,
        C::CreateProject(v1::CreateProject {
            key: export.key.clone(),
            name: export.name.clone(),
            description: export.description.clone(),
        }),
    )
    .await;
    let mut ids: HashMap<String, String> = HashMap::new();
    for level in [
        v1::WorkItemType::Epic,
        v1::WorkItemType::Story,
        v1::WorkItemType::Task,
    ] {
        let mut items: Vec<_> = export
            .items
            .iter()
            .filter(|i| i.item_type == level)
            .collect();
        items.sort_by_key(|i| i.number);
        for i in items {
            let (item, _) = run::<v1::WorkItem>(
                tenant,
                &ALICE,
                C::CreateWorkItem(v1::CreateWorkItem {
                    project_id: project.id.clone(),
                    item_type: i.item_type.into(),
                    parent_id: i.parent_id.as_ref().map(|p| ids[p].clone()),
                    title: i.title.clone(),
                    description: i.description.clone(),
                    status: i.status.into(),
                    priority: i.priority.into(),
                    ..Default::default()
                }),
            )
            .await;
            ids.insert(i.id.clone(), item.id);
        }
    }
    for d in export
        .dependencies
        .iter()
        .filter(|d| d.id != DANGLING_DEPENDENCY)
    {
        run::<v1::Dependency>(
            tenant,
            &ALICE,
            C::CreateDependency(v1::CreateDependency {
                blocking_item_id: ids[&d.blocking].clone(),
                blocked_item_id: ids[&d.blocked].clone(),
                dependency_type: v1::DependencyType::Blocks.into(),
            }),
        )
        .await;
    }
    for c in &export.comments {
        run::<v1::Comment>(
            tenant,
            &ALICE,
            C::CreateComment(v1::CreateComment {
                work_item_id: ids[&c.work_item_id].clone(),
                content: c.content.clone(),
            }),
        )
        .await;
    }
}

const UNICODE_TITLE: &str = "Story — 修复登录 🐛 «é» עברית";

/// A project with every entity kind, deleted and restored rows, a removed member, a running
/// timer and text in many scripts; plus a deleted project.
async fn load_every_kind(tenant: &Tenant) {
    let t = tenant;
    let (p, _) = run::<v1::Project>(
        t,
        &ALICE,
        C::CreateProject(v1::CreateProject {
            key: "UNI".into(),
            name: "Ünïcødé ✓ 看板".into(),
            description: "Zeilen\nmit «Umlauten», e\u{301} und 🚀".into(),
        }),
    )
    .await;
    let pid = p.id.clone();
    for (user, role) in [
        ("bob", v1::ProjectRole::Editor),
        ("carol", v1::ProjectRole::Viewer),
    ] {
        run::<v1::ProjectMember>(
            t,
            &ALICE,
            C::AddMember(v1::AddMember {
                project_id: pid.clone(),
                user_id: user.into(),
                role: role.into(),
            }),
        )
        .await;
    }
    run::<v1::ProjectMember>(
        t,
        &ALICE,
        C::RemoveMember(v1::RemoveMember {
            project_id: pid.clone(),
            user_id: "carol".into(),
            expected_version: 1,
        }),
    )
    .await;
    let (sprint, _) = run::<v1::Sprint>(
        t,
        &ALICE,
        C::CreateSprint(v1::CreateSprint {
            project_id: pid.clone(),
            name: "Sprint 🏃 1".into(),
            goal: "目标: ship".into(),
            start_at: Some(1_700_000_000_000),
            end_at: Some(1_701_000_000_000),
        }),
    )
    .await;
    run::<v1::Sprint>(
        t,
        &ALICE,
        C::UpdateSprint(v1::UpdateSprint {
            id: sprint.id.clone(),
            expected_version: 1,
            status: Some(v1::SprintStatus::Active.into()),
            ..Default::default()
        }),
    )
    .await;
    let (dropped, _) = run::<v1::Sprint>(
        t,
        &ALICE,
        C::CreateSprint(v1::CreateSprint {
            project_id: pid.clone(),
            name: "Abgesagt".into(),
            ..Default::default()
        }),
    )
    .await;
    run::<v1::Sprint>(
        t,
        &ALICE,
        C::DeleteSprint(v1::DeleteSprint {
            id: dropped.id,
            expected_version: 1,
        }),
    )
    .await;
    let (epic, _) = create_item(t, &ALICE, &pid, v1::WorkItemType::Epic, "Épopée 🚀").await;
    let (story, _) = run::<v1::WorkItem>(
        t,
        &ALICE,
        C::CreateWorkItem(v1::CreateWorkItem {
            project_id: pid.clone(),
            item_type: v1::WorkItemType::Story.into(),
            parent_id: Some(epic.id.clone()),
            title: UNICODE_TITLE.into(),
            description: "multi\nline ✓\n\n| a | b |".into(),
            status: v1::WorkItemStatus::Todo.into(),
            priority: v1::Priority::High.into(),
            story_points: Some(5),
            assignee_id: Some("bob".into()),
            sprint_id: Some(sprint.id.clone()),
        }),
    )
    .await;
    let mut children = Vec::new();
    for (kind, title) in [
        (v1::WorkItemType::Task, "Aufgabe ⚙"),
        (v1::WorkItemType::Bug, "Fehler 🐞"),
        (v1::WorkItemType::Task, "gelöscht"),
    ] {
        let (item, _) = run::<v1::WorkItem>(
            t,
            &ALICE,
            C::CreateWorkItem(v1::CreateWorkItem {
                project_id: pid.clone(),
                item_type: kind.into(),
                parent_id: Some(story.id.clone()),
                title: title.into(),
                ..Default::default()
            }),
        )
        .await;
        children.push(item);
    }
    let (task, bug, gone) = (&children[0], &children[1], &children[2]);
    run::<v1::WorkItem>(
        t,
        &ALICE,
        C::DeleteWorkItem(v1::DeleteWorkItem {
            id: gone.id.clone(),
            expected_version: 1,
        }),
    )
    .await;
    run::<v1::WorkItem>(
        t,
        &ALICE,
        C::DeleteWorkItem(v1::DeleteWorkItem {
            id: bug.id.clone(),
            expected_version: 1,
        }),
    )
    .await;
    run::<v1::WorkItem>(
        t,
        &ALICE,
        C::RestoreWorkItem(v1::RestoreWorkItem {
            id: bug.id.clone(),
            expected_version: 2,
        }),
    )
    .await;
    run::<v1::WorkItem>(
        t,
        &ALICE,
        C::MoveWorkItem(v1::MoveWorkItem {
            id: task.id.clone(),
            expected_version: 1,
            status: Some(v1::WorkItemStatus::InProgress.into()),
            after_id: Some(bug.id.clone()),
            ..Default::default()
        }),
    )
    .await;
    run::<v1::Comment>(
        t,
        &ALICE,
        C::CreateComment(v1::CreateComment {
            work_item_id: story.id.clone(),
            content: "Kommentar 👍 ñ\n> zitiert".into(),
        }),
    )
    .await;
    let (comment, _) = run::<v1::Comment>(
        t,
        &BOB,
        C::CreateComment(v1::CreateComment {
            work_item_id: task.id.clone(),
            content: "wird gelöscht".into(),
        }),
    )
    .await;
    run::<v1::Comment>(
        t,
        &BOB,
        C::DeleteComment(v1::DeleteComment {
            id: comment.id,
            expected_version: 1,
        }),
    )
    .await;
    run::<v1::TimeEntry>(
        t,
        &ALICE,
        C::CreateTimeEntry(v1::CreateTimeEntry {
            work_item_id: task.id.clone(),
            started_at: 1_700_000_000_000,
            ended_at: 1_700_003_600_000,
            description: "Zeit ⏱".into(),
        }),
    )
    .await;
    run::<v1::TimeEntry>(
        t,
        &BOB,
        C::StartTimer(v1::StartTimer {
            work_item_id: story.id.clone(),
            description: "läuft".into(),
        }),
    )
    .await;
    for (blocking, blocked, kind) in [
        (&task.id, &bug.id, v1::DependencyType::Blocks),
        (&story.id, &epic.id, v1::DependencyType::RelatesTo),
    ] {
        run::<v1::Dependency>(
            t,
            &ALICE,
            C::CreateDependency(v1::CreateDependency {
                blocking_item_id: blocking.clone(),
                blocked_item_id: blocked.clone(),
                dependency_type: kind.into(),
            }),
        )
        .await;
    }
    let (link, _) = run::<v1::Dependency>(
        t,
        &ALICE,
        C::CreateDependency(v1::CreateDependency {
            blocking_item_id: bug.id.clone(),
            blocked_item_id: epic.id.clone(),
            dependency_type: v1::DependencyType::Blocks.into(),
        }),
    )
    .await;
    run::<v1::Dependency>(
        t,
        &ALICE,
        C::DeleteDependency(v1::DeleteDependency {
            id: link.id,
            expected_version: 1,
        }),
    )
    .await;
    for (name, position, wip_limit) in [("In Arbeit ⚙", 1, Some(3)), ("Fertig ✓", 2, None)] {
        run::<v1::SwimLane>(
            t,
            &ALICE,
            C::CreateSwimLane(v1::CreateSwimLane {
                project_id: pid.clone(),
                name: name.into(),
                status: v1::WorkItemStatus::InProgress.into(),
                position,
                wip_limit,
            }),
        )
        .await;
    }
    run::<v1::LlmContext>(
        t,
        &ALICE,
        C::CreateLlmContext(v1::CreateLlmContext {
            project_id: pid.clone(),
            category: v1::LlmContextCategory::BusinessRule.into(),
            title: "Regel №1".into(),
            content: "Epics → Stories → Tasks; 任务".into(),
            priority: -3,
        }),
    )
    .await;
    let old = create_project(t, &ALICE, "OLD").await;
    run::<v1::Project>(
        t,
        &ALICE,
        C::DeleteProject(v1::DeleteProject {
            id: old.id,
            expected_version: 1,
        }),
    )
    .await;
}

async fn export_bytes(config: &RegistryConfig, id: &TenantId) -> Vec<u8> {
    let mut out = Vec::new();
    export_tenant(config, id, &mut out).await.unwrap();
    out
}

async fn import(
    config: &RegistryConfig,
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
    env.registry.close_idle().await;
    let out = export_bytes(env.registry.config(), &acme()).await;
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
            "schema_version": 20261121000001i64, "head_seq": head})
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
    let report = import(target.registry.config(), &first, ImportOptions::default())
        .await
        .unwrap();
    assert!(!report.replaced && !report.dry_run);
    assert_eq!(report.source.head_seq, head);
    assert_eq!(
        report.counts.iter().map(|(_, n)| *n).sum::<u64>() as usize,
        lines.len() - 1
    );
    let again = export_bytes(target.registry.config(), &acme()).await;
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

async fn project_id(tenant: &Tenant, key: &str) -> String {
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

async fn search(tenant: &Tenant, project_id: &str, text: &str) -> Vec<String> {
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
    let err = import(target.registry.config(), &bad, ImportOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("line {} (comment) content: must not be blank", at + 1)
    );
    assert!(
        !target.registry.config().tenant_dir(&acme()).exists(),
        "a refused import into a new tenant leaves nothing"
    );

    // A rule only the database knows (unique project keys), found while inserting: the
    // rows before it are rolled back, in a tenant that had content and was to be replaced.
    let existing = TestEnv::new();
    let tenant = existing.tenant("acme").await;
    create_project(&tenant, &ALICE, "KEEP").await;
    drop(tenant);
    existing.registry.close_idle().await;
    let before = export_bytes(existing.registry.config(), &acme()).await;
    let at = index_of(&export, r#""key":"UNI""#);
    let bad = with_line(&export, at, |l| {
        l.replace(r#""key":"UNI""#, r#""key":"PONE""#)
    });
    let err = import(
        existing.registry.config(),
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
        export_bytes(existing.registry.config(), &acme()).await,
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
    let err = import(target.registry.config(), &bad, ImportOptions::default())
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
        target.registry.config(),
        cut.as_bytes(),
        ImportOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().starts_with("head_seq: the header says"),
        "{err}"
    );
    assert!(!target.registry.config().tenant_dir(&acme()).exists());
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
    let report = import(target.registry.config(), &export, dry)
        .await
        .unwrap();
    assert!(report.dry_run);
    assert_eq!(report.counts.iter().map(|(_, n)| n).sum::<u64>(), lines - 1);
    assert_eq!(report.counts[0], ("project", 3));
    assert!(!target.registry.config().tenant_dir(&acme()).exists());

    // Into an existing empty tenant: it stays empty.
    assert_eq!(target.tenant("acme").await.head_seq(), 0);
    target.registry.close_idle().await;
    let empty = export_bytes(target.registry.config(), &acme()).await;
    import(target.registry.config(), &export, dry)
        .await
        .unwrap();
    assert_eq!(export_bytes(target.registry.config(), &acme()).await, empty);
    assert_eq!(std::str::from_utf8(&empty).unwrap().lines().count(), 1);
}

#[tokio::test]
async fn import_refuses_a_non_empty_or_open_tenant_and_replaces_only_when_told() {
    let (source, export) = exported_source().await;
    // The source itself is not empty.
    let err = import(source.registry.config(), &export, ImportOptions::default())
        .await
        .unwrap_err();
    assert_eq!(code(&err), v1::ErrorCode::FailedPrecondition);
    assert!(err.to_string().contains("is not empty"), "{err}");
    // Open in a "server": refused, dry run or not.
    let open = source.tenant("acme").await;
    for dry_run in [false, true] {
        let err = import(
            source.registry.config(),
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
    source.registry.close_idle().await;
    // Replacing with its own export changes nothing visible.
    let report = import(
        source.registry.config(),
        &export,
        ImportOptions {
            replace: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(report.replaced);
    assert_eq!(
        export_bytes(source.registry.config(), &acme()).await,
        export
    );
    let reopened = source.tenant("acme").await;
    assert_eq!(reopened.head_seq(), head);
    // The full-text index was rebuilt, not doubled.
    let uni = project_id(&reopened, "UNI").await;
    assert_eq!(search(&reopened, &uni, "修复登录").await.len(), 1);
}
