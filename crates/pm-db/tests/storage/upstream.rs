//! Import of the upstream board's export (`import --from agile-board`): the real shared file
//! (`../shared/data/`), checked row by row against the file; dangling references refused,
//! skipped or cleared; dry runs; refusals that write nothing; every kind and every mapping
//! rule on a small file of its own.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use pm_core::kinds::EntityKind;
use pm_core::{rank, UserId};
use pm_db::sqlite::transfer::import_agile_board;
use pm_db::upstream::{map_id, UpstreamOptions, UpstreamReport};
use pm_db::{EventFilter, SqliteTenant, Tenant as _};
use pm_proto::v1;
use pm_proto::v1::query::Kind as Q;
use pm_proto::v1::query_result::Result as R;
use prost::Message;
use serde_json::{json, Value};

use crate::support::*;

/// The upstream user who created the shared file's project (its admin after the import).
const OWNER: &str = "83573002-5eaf-4ae1-af46-792a1a3bf9f5";
/// The other upstream user of the shared file (author of most rows).
const AGENT: &str = "00000000-0000-0000-0000-000000000001";
/// The one dependency of the shared file whose blocked item is not in the file.
const DANGLING_DEPENDENCY: &str = "cba538cf-4eaf-4ed8-a585-9ab5e749daeb";
const MISSING_ITEM: &str = "338a101a-f00b-4dfd-b833-360212ead2b7";

fn shared_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/agile-board-export.json")
}

/// The shared file, or `None` (saying so) when it is not beside the project.
fn shared_file() -> Option<String> {
    let path = shared_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) => {
            eprintln!(
                "SKIPPED: the upstream export is not at {} ({e}); these tests need \
                 ../shared/data/agile-board-export.json beside the repository",
                path.display()
            );
            None
        }
    }
}

fn options(skip_dangling: bool, dry_run: bool) -> UpstreamOptions {
    UpstreamOptions {
        dry_run,
        replace: false,
        skip_dangling,
    }
}

async fn import(
    env: &TestEnv,
    input: &str,
    options: UpstreamOptions,
) -> pm_db::Result<UpstreamReport> {
    import_agile_board(env.engine.config(), &acme(), input.as_bytes(), options).await
}

fn counts(report: &UpstreamReport) -> BTreeMap<&'static str, u64> {
    report.counts.iter().copied().collect()
}

fn secs_to_ms(value: &Value) -> i64 {
    value.as_i64().expect("a time in seconds") * 1000
}

fn text<'a>(row: &'a Value, field: &str) -> &'a str {
    row[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} of {row}"))
}

fn user(id: &str) -> UserId {
    UserId::parse("sub", id).unwrap()
}

/// Every work item of the project, deleted ones too, in list order (rank, then id).
async fn every_item(tenant: &SqliteTenant, actor: &UserId, project_id: &str) -> Vec<v1::WorkItem> {
    all_items(tenant, actor, project_id, true).await
}

#[tokio::test]
async fn the_shared_export_is_refused_for_its_dangling_dependency_and_nothing_is_written() {
    let Some(file) = shared_file() else { return };
    let env = TestEnv::new();
    let err = import(&env, &file, options(false, false))
        .await
        .unwrap_err();
    assert_eq!(code(&err), v1::ErrorCode::FailedPrecondition);
    assert_eq!(
        err.to_string(),
        format!(
            "1 dangling reference(s), nothing imported (--skip-dangling imports without them):\n  \
             dependency {DANGLING_DEPENDENCY} (PONE-128 blocks ?) (dependencies[11]): \
             blocked_item_id refers to work_item {MISSING_ITEM}, which is not in the file"
        )
    );
    assert!(!env.dir.path().join("tenants").exists(), "nothing created");

    // A dry run refuses the same way.
    let err = import(&env, &file, options(false, true)).await.unwrap_err();
    assert_eq!(code(&err), v1::ErrorCode::FailedPrecondition);
}

#[tokio::test]
async fn a_dry_run_counts_every_kind_and_writes_nothing() {
    let Some(file) = shared_file() else { return };
    let env = TestEnv::new();
    let report = import(&env, &file, options(true, true)).await.unwrap();
    assert!(report.dry_run);
    assert_eq!(
        counts(&report),
        BTreeMap::from([
            ("project", 1),
            ("project_member", 2),
            ("sprint", 0),
            ("work_item", 194),
            ("comment", 64),
            ("time_entry", 0),
            ("dependency", 59),
            ("swim_lane", 0),
            ("llm_context", 0),
            ("change", 320),
        ])
    );
    assert_eq!(report.skipped.len(), 1);
    assert!(!env.dir.path().join("tenants").exists(), "nothing created");
}

#[tokio::test]
async fn the_shared_export_imports_with_its_ids_numbers_times_authors_versions_and_order() {
    let Some(file) = shared_file() else { return };
    let upstream: Value = serde_json::from_str(&file).unwrap();
    let env = TestEnv::new();
    let report = import(&env, &file, options(true, false)).await.unwrap();
    assert!(!report.dry_run && !report.replaced);
    assert_eq!(
        report.exported_at.as_deref(),
        Some("2026-03-01T18:53:59.426700+00:00")
    );
    assert_eq!(report.exported_by.as_deref(), Some("pm-server"));
    assert_eq!(counts(&report)["work_item"], 194);
    assert_eq!(counts(&report)["change"], 320);
    // The one dependency whose blocked item is missing, by kind and name; nothing else.
    assert_eq!(
        report
            .skipped
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [format!(
            "dependency {DANGLING_DEPENDENCY} (PONE-128 blocks ?) (dependencies[11]): \
             blocked_item_id refers to work_item {MISSING_ITEM}, which is not in the file; \
             row skipped"
        )]
    );
    assert_eq!(
        report.notes,
        Vec::<String>::new(),
        "next number 221 = 220 + 1"
    );

    let tenant = env.tenant("acme").await;
    let owner = user(OWNER);
    let project_row = &upstream["projects"][0];
    let pid = text(project_row, "id");

    // The project, as exported (title → name, seconds → ms).
    let project: v1::Project = get(&tenant, &owner, pid).await.unwrap();
    assert_eq!(project.key, "PONE");
    assert_eq!(project.name, "P1");
    assert_eq!(project.status(), v1::ProjectStatus::Active);
    assert_eq!(project.version, 1);
    assert_eq!(project.created_at, 1_770_651_588_000);
    assert_eq!(project.created_by, OWNER);
    assert_eq!(project.deleted_at, None);

    // Members: everyone a row refers to; the project's creator is its admin.
    let members =
        list!(&tenant, &owner, ListMembers { project_id: pid.into() } => ListMembersResult);
    let roles: Vec<(&str, v1::ProjectRole)> = members
        .iter()
        .map(|m| (m.user_id.as_str(), m.role()))
        .collect();
    assert_eq!(
        roles,
        [
            (AGENT, v1::ProjectRole::Editor),
            (OWNER, v1::ProjectRole::Admin)
        ]
    );

    // Every work item, field by field against the file.
    let items = every_item(&tenant, &owner, pid).await;
    assert_eq!(items.len(), 194);
    let by_id: HashMap<&str, &v1::WorkItem> = items.iter().map(|w| (w.id.as_str(), w)).collect();
    let rows = upstream["work_items"].as_array().unwrap();
    for row in rows {
        let key = text(row, "display_key");
        let item = by_id[text(row, "id")];
        assert_eq!(item.display_key, key, "display keys are unchanged");
        assert_eq!(item.number, row["item_number"].as_u64().unwrap(), "{key}");
        assert_eq!(item.project_id, pid, "{key}");
        assert_eq!(item.title, text(row, "title"), "{key}");
        assert_eq!(item.description, text(row, "description"), "{key}");
        assert_eq!(
            item.item_type().as_str_name().to_lowercase(),
            format!("work_item_type_{}", text(row, "item_type")),
            "{key}"
        );
        assert_eq!(
            item.status().as_str_name().to_lowercase(),
            format!("work_item_status_{}", text(row, "status")),
            "{key}"
        );
        assert_eq!(
            item.priority().as_str_name().to_lowercase(),
            format!("priority_{}", text(row, "priority")),
            "{key}"
        );
        assert_eq!(
            item.parent_id.as_deref(),
            row["parent_id"].as_str(),
            "{key}"
        );
        assert_eq!(item.assignee_id, None, "{key}");
        assert_eq!(item.sprint_id, None, "{key}");
        assert_eq!(item.story_points, None, "{key}");
        assert_eq!(item.version, row["version"].as_u64().unwrap(), "{key}");
        assert_eq!(item.created_at, secs_to_ms(&row["created_at"]), "{key}");
        assert_eq!(item.updated_at, secs_to_ms(&row["updated_at"]), "{key}");
        assert_eq!(item.created_by, text(row, "created_by"), "{key}");
        assert_eq!(item.updated_by, text(row, "updated_by"), "{key}");
        assert_eq!(item.deleted_at, None, "{key}");
        let position = row["position"].as_u64().unwrap() as u32;
        assert_eq!(
            item.rank,
            rank::for_position(position, item.number as u32),
            "{key}"
        );
    }
    // A spot check in plain numbers: PONE-57 (the key that comments refer to).
    let pone57 = items.iter().find(|w| w.display_key == "PONE-57").unwrap();
    assert_eq!(pone57.number, 57);
    let row57 = rows.iter().find(|r| r["item_number"] == 57).unwrap();
    assert_eq!(pone57.id, text(row57, "id"));
    assert_eq!(
        pone57.created_at,
        row57["created_at"].as_i64().unwrap() * 1000
    );
    // Every number kept: 194 distinct numbers, as in the file (not 1..=194).
    let mut numbers: Vec<u64> = items.iter().map(|w| w.number).collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), 194);
    assert_eq!((numbers[0], numbers[193]), (1, 220));
    // List order (rank) is the upstream order: position, then number.
    let mut upstream_order: Vec<(u64, u64, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["position"].as_u64().unwrap(),
                r["item_number"].as_u64().unwrap(),
                text(r, "id"),
            )
        })
        .collect();
    upstream_order.sort_unstable();
    assert_eq!(
        items.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
        upstream_order
            .iter()
            .map(|(_, _, id)| *id)
            .collect::<Vec<_>>()
    );
    // Within one parent, children come in their upstream position order.
    let children = list!(&tenant, &owner, ListWorkItems {
        project_id: pid.into(),
        parent_id: Some("8153adb6-3ac7-45c0-b88a-cdf6d5e3977d".into()),
        ..Default::default()
    } => ListWorkItemsResult);
    assert_eq!(
        children.iter().map(|w| w.number).collect::<Vec<_>>(),
        [2, 3, 4, 5, 6, 7, 8]
    );

    // Comments: content, times and authors, under their item.
    let mut comments_seen = 0;
    for row in upstream["comments"].as_array().unwrap() {
        let comment: v1::Comment = get(&tenant, &owner, text(row, "id")).await.unwrap();
        assert_eq!(comment.work_item_id, text(row, "work_item_id"));
        assert_eq!(comment.project_id, pid);
        assert_eq!(comment.content, text(row, "content"));
        assert_eq!(comment.created_at, secs_to_ms(&row["created_at"]));
        assert_eq!(comment.updated_at, secs_to_ms(&row["updated_at"]));
        assert_eq!(comment.created_by, text(row, "created_by"));
        assert_eq!(comment.updated_by, text(row, "updated_by"));
        assert_eq!(comment.version, 1);
        comments_seen += 1;
    }
    assert_eq!(comments_seen, 64);

    // Dependencies: every one but the dangling one, with its id and creation.
    let dependencies = list!(&tenant, &owner, ListDependencies { project_id: pid.into(), ..Default::default() } => ListDependenciesResult);
    assert_eq!(dependencies.len(), 59);
    let by_id: HashMap<&str, &v1::Dependency> =
        dependencies.iter().map(|d| (d.id.as_str(), d)).collect();
    for row in upstream["dependencies"].as_array().unwrap() {
        let id = text(row, "id");
        if id == DANGLING_DEPENDENCY {
            assert!(!by_id.contains_key(id));
            continue;
        }
        let d = by_id[id];
        assert_eq!(d.blocking_item_id, text(row, "blocking_item_id"));
        assert_eq!(d.blocked_item_id, text(row, "blocked_item_id"));
        assert_eq!(d.dependency_type(), v1::DependencyType::Blocks);
        assert_eq!(d.created_at, secs_to_ms(&row["created_at"]));
        assert_eq!(
            (d.updated_at, d.updated_by.as_str()),
            (d.created_at, d.created_by.as_str())
        );
        assert_eq!(d.created_by, text(row, "created_by"));
    }

    // The change log: one created event per row, gapless, in the documented order.
    assert_eq!(tenant.head_seq(), 320);
    let events: Vec<v1::Event> = tenant
        .read_events(0, None, 10_000, &EventFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|e| v1::Event::decode(e.event.clone()).unwrap())
        .collect();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=320).collect::<Vec<_>>()
    );
    assert!(events
        .iter()
        .all(|e| e.action() == v1::ChangeAction::Created && e.project_id == pid));
    let kinds: Vec<v1::EntityType> = events.iter().map(|e| e.entity_type()).collect();
    let mut expected = vec![v1::EntityType::Project];
    expected.extend([v1::EntityType::ProjectMember; 2]);
    expected.extend([v1::EntityType::WorkItem; 194]);
    expected.extend([v1::EntityType::Comment; 64]);
    expected.extend([v1::EntityType::Dependency; 59]);
    assert_eq!(kinds, expected);
    let mut seq_of: HashMap<&str, u64> = HashMap::new();
    for e in &events {
        assert!(
            seq_of.insert(&e.entity_id, e.seq).is_none(),
            "one event per row"
        );
    }
    for item in &items {
        if let Some(parent) = &item.parent_id {
            assert!(
                seq_of[parent.as_str()] < seq_of[item.id.as_str()],
                "parents first"
            );
        }
    }
    // The event of an item carries the row as stored, at its creation, by its author.
    let first_item = &events[3];
    assert_eq!(
        first_item.entity_id, "8153adb6-3ac7-45c0-b88a-cdf6d5e3977d",
        "PONE-1"
    );
    assert_eq!(first_item.at, 1_770_653_763_000);
    assert_eq!(first_item.actor_id, AGENT);
    match &first_item.change {
        Some(v1::event::Change::WorkItem(w)) => {
            // Reads add the derived `blocked`; events leave it out.
            let read = by_id_item(&items, &w.id);
            assert_eq!(
                &v1::WorkItem {
                    blocked: read.blocked,
                    ..w.clone()
                },
                read
            );
            assert_eq!(w.display_key, "PONE-1");
        }
        other => panic!("a work item, not {other:?}"),
    }

    // A second import into the same tenant is refused: it has content.
    drop(tenant);
    env.engine.close_idle().await;
    let err = import(&env, &file, options(true, false)).await.unwrap_err();
    assert_eq!(code(&err), v1::ErrorCode::FailedPrecondition);
    assert!(
        err.to_string()
            .starts_with("tenant acme is not empty (1 project(s), head seq 320); use --replace"),
        "{err}"
    );
    // With replace, the same rows and log again.
    let report = import(
        &env,
        &file,
        UpstreamOptions {
            replace: true,
            ..options(true, false)
        },
    )
    .await
    .unwrap();
    assert!(report.replaced);
    let tenant = env.tenant("acme").await;
    assert_eq!(tenant.head_seq(), 320);
    assert_eq!(every_item(&tenant, &owner, pid).await, items);
}

fn by_id_item<'a>(items: &'a [v1::WorkItem], id: &str) -> &'a v1::WorkItem {
    items.iter().find(|w| w.id == id).unwrap()
}

/// The shared file without epic PONE-1: its seven stories lose their parent, its comment
/// and dependencies their item.
fn without_pone_1(file: &str) -> String {
    let mut upstream: Value = serde_json::from_str(file).unwrap();
    let items = upstream["work_items"].as_array_mut().unwrap();
    items.retain(|w| w["display_key"] != "PONE-1");
    serde_json::to_string(&upstream).unwrap()
}

#[tokio::test]
async fn a_missing_parent_is_refused_by_name_or_cleared_with_skip_dangling() {
    let Some(file) = shared_file() else { return };
    let modified = without_pone_1(&file);
    let env = TestEnv::new();
    let err = import(&env, &modified, options(false, false))
        .await
        .unwrap_err();
    let message = err.to_string();
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(
        lines[0],
        "8 dangling reference(s), nothing imported (--skip-dangling imports without them):"
    );
    for key in [
        "PONE-2", "PONE-3", "PONE-4", "PONE-5", "PONE-6", "PONE-7", "PONE-8",
    ] {
        assert!(
            lines.iter().any(
                |l| l.starts_with(&format!("  work_item {key} (work_items["))
                    && l.ends_with(
                        "parent_id refers to work_item 8153adb6-3ac7-45c0-b88a-cdf6d5e3977d, \
                     which is not in the file"
                    )
            ),
            "{message}"
        );
    }
    assert!(!env.dir.path().join("tenants").exists(), "nothing created");

    let report = import(&env, &modified, options(true, false)).await.unwrap();
    assert_eq!(counts(&report)["work_item"], 193);
    let cleared: Vec<&str> = report
        .skipped
        .iter()
        .filter(|d| d.cleared)
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(
        cleared,
        ["PONE-2", "PONE-3", "PONE-4", "PONE-5", "PONE-6", "PONE-7", "PONE-8"]
    );
    assert!(report
        .skipped
        .iter()
        .all(|d| d.kind == EntityKind::WorkItem || d.kind == EntityKind::Dependency));
    let tenant = env.tenant("acme").await;
    let owner = user(OWNER);
    let pid = "8d96310e-1e69-4dc5-9529-5c173674ab90";
    let items = every_item(&tenant, &owner, pid).await;
    let pone2 = items.iter().find(|w| w.display_key == "PONE-2").unwrap();
    assert_eq!(pone2.parent_id, None, "the dangling parent is cleared");
    assert_eq!(pone2.number, 2);
}

#[tokio::test]
async fn bad_rows_are_refused_with_their_place_and_field_and_nothing_is_written() {
    let Some(file) = shared_file() else { return };
    let env = TestEnv::new();
    let mut upstream: Value = serde_json::from_str(&file).unwrap();
    upstream["work_items"][4]["status"] = json!("doing");
    let err = import(&env, &upstream.to_string(), options(true, false))
        .await
        .unwrap_err();
    assert_eq!(code(&err), v1::ErrorCode::InvalidArgument);
    assert_eq!(
        err.to_string(),
        "work_items[4] (PONE-17) status: must be one of: backlog, todo, in_progress, review, done, cancelled"
    );

    // A rule only the whole dataset can check: a story under a task.
    let mut upstream: Value = serde_json::from_str(&file).unwrap();
    let task = upstream["work_items"]
        .as_array()
        .unwrap()
        .iter()
        .position(|w| w["item_type"] == "task" && !w["parent_id"].is_null())
        .unwrap();
    upstream["work_items"][task]["item_type"] = json!("epic");
    let key = upstream["work_items"][task]["display_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let err = import(&env, &upstream.to_string(), options(true, false))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("work_items[{task}] ({key}) parent_id: ")),
        "{err}"
    );

    // A display key that is not the project key and number cannot be kept.
    let mut upstream: Value = serde_json::from_str(&file).unwrap();
    upstream["work_items"][0]["display_key"] = json!("PONE-999");
    let err = import(&env, &upstream.to_string(), options(true, false))
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "work_items[0] (PONE-999) display_key: is \"PONE-999\", but project key and item_number make \"PONE-1\""
        ),
        "{err}"
    );
    assert!(!env.dir.path().join("tenants").exists(), "nothing created");
}

/// A small file with every kind, non-UUID ids, a soft-deleted row and a running timer.
fn small_file() -> Value {
    json!({
        "schema_version": 1,
        "exported_at": "2026-03-01T00:00:00+00:00",
        "exported_by": "pm-server",
        "projects": [{
            "id": "p1", "key": "SM", "title": "Small", "description": null, "status": "active",
            "version": 3, "created_at": 1_700_000_000, "updated_at": 1_700_000_100,
            "created_by": "u-owner", "updated_by": "u-owner", "next_work_item_number": 9
        }],
        "sprints": [{
            "id": "s1", "project_id": "p1", "name": "Sprint 1", "goal": "ship",
            "start_date": 1_700_000_000, "end_date": 1_701_000_000, "status": "active",
            "version": 2, "created_at": 1_700_000_010, "updated_at": 1_700_000_020,
            "created_by": "u-owner", "updated_by": "u-dev"
        }],
        "swim_lanes": [{
            "id": "l1", "project_id": "p1", "name": "Doing", "status_value": "in_progress",
            "position": 2, "is_default": true, "created_at": 1_700_000_000,
            "updated_at": 1_700_000_000
        }],
        "work_items": [
            {
                "id": "w2", "display_key": "SM-2", "item_type": "story", "title": "Child",
                "description": null, "status": "in_progress", "priority": "high",
                "parent_id": "w1", "project_id": "p1", "assignee_id": "u-assignee",
                "sprint_id": "s1", "story_points": 5, "item_number": 2, "position": 1,
                "version": 4, "created_at": 1_700_000_200, "updated_at": 1_700_000_300,
                "created_by": "u-dev", "updated_by": "u-dev", "deleted_at": 1_700_000_400
            },
            {
                "id": "w1", "display_key": "SM-1", "item_type": "epic", "title": "Parent",
                "description": "d", "status": "todo", "priority": "low", "parent_id": null,
                "project_id": "p1", "assignee_id": null, "sprint_id": null,
                "story_points": null, "item_number": 1, "position": 0, "version": 1,
                "created_at": 1_700_000_100, "updated_at": 1_700_000_100,
                "created_by": "u-owner", "updated_by": "u-owner"
            }
        ],
        "comments": [{
            "id": "c1", "work_item_id": "w2", "content": "hi", "created_at": 1_700_000_500,
            "updated_at": 1_700_000_600, "created_by": "u-commenter", "updated_by": "u-commenter"
        }],
        "dependencies": [{
            "id": "d1", "blocking_item_id": "w1", "blocked_item_id": "w2",
            "dependency_type": "relates_to", "created_at": 1_700_000_700, "created_by": "u-dev"
        }],
        "time_entries": [{
            "id": "t1", "work_item_id": "w2", "user_id": "u-timer", "started_at": 1_700_000_800,
            "ended_at": null, "duration_seconds": null, "description": null, "is_running": true,
            "created_at": 1_700_000_800, "updated_at": 1_700_000_800
        }]
    })
}

#[tokio::test]
async fn every_kind_and_every_mapping_rule_on_a_small_file() {
    let env = TestEnv::new();
    let report = import(&env, &small_file().to_string(), options(false, false))
        .await
        .unwrap();
    assert_eq!(
        counts(&report),
        BTreeMap::from([
            ("project", 1),
            ("project_member", 5),
            ("sprint", 1),
            ("work_item", 2),
            ("comment", 1),
            ("time_entry", 1),
            ("dependency", 1),
            ("swim_lane", 1),
            ("llm_context", 0),
            ("change", 13),
        ])
    );
    assert_eq!(
        report.notes,
        [
            "project SM: the upstream would number its next item 9; pm-server numbers it 3 \
          (after the highest number imported)"
        ]
    );
    let id = |kind: EntityKind, raw: &str| map_id(kind, raw);
    let pid = id(EntityKind::Project, "p1");
    let tenant = env.tenant("acme").await;
    let owner = user("u-owner");

    let project: v1::Project = get(&tenant, &owner, &pid).await.unwrap();
    assert_eq!(
        (
            project.key.as_str(),
            project.name.as_str(),
            project.description.as_str()
        ),
        ("SM", "Small", "")
    );
    assert_eq!(
        (project.version, project.created_at, project.updated_at),
        (3, 1_700_000_000_000, 1_700_000_100_000)
    );

    let members =
        list!(&tenant, &owner, ListMembers { project_id: pid.clone() } => ListMembersResult);
    let roles: Vec<(&str, v1::ProjectRole)> = members
        .iter()
        .map(|m| (m.user_id.as_str(), m.role()))
        .collect();
    // Everyone a row refers to (authors, the assignee, the timer's user), by user id.
    assert_eq!(
        roles,
        [
            ("u-assignee", v1::ProjectRole::Editor),
            ("u-commenter", v1::ProjectRole::Editor),
            ("u-dev", v1::ProjectRole::Editor),
            ("u-owner", v1::ProjectRole::Admin),
            ("u-timer", v1::ProjectRole::Editor),
        ]
    );

    let sprint: v1::Sprint = get(&tenant, &owner, &id(EntityKind::Sprint, "s1"))
        .await
        .unwrap();
    assert_eq!(sprint.status(), v1::SprintStatus::Active);
    assert_eq!(
        (sprint.start_at, sprint.end_at),
        (Some(1_700_000_000_000), Some(1_701_000_000_000))
    );
    assert_eq!((sprint.version, sprint.updated_by.as_str()), (2, "u-dev"));

    let lane: v1::SwimLane = get(&tenant, &owner, &id(EntityKind::SwimLane, "l1"))
        .await
        .unwrap();
    assert_eq!(
        (
            lane.name.as_str(),
            lane.status(),
            lane.position,
            lane.wip_limit
        ),
        ("Doing", v1::WorkItemStatus::InProgress, 2, None)
    );
    assert_eq!((lane.created_by.as_str(), lane.version), ("u-owner", 1));

    let items = every_item(&tenant, &owner, &pid).await;
    assert_eq!(items.len(), 2);
    let (parent, child) = (&items[0], &items[1]);
    assert_eq!(
        (parent.display_key.as_str(), parent.id.clone()),
        ("SM-1", id(EntityKind::WorkItem, "w1"))
    );
    assert_eq!(child.display_key, "SM-2");
    assert_eq!(child.parent_id.as_deref(), Some(parent.id.as_str()));
    assert_eq!(child.sprint_id.as_deref(), Some(sprint.id.as_str()));
    assert_eq!(child.assignee_id.as_deref(), Some("u-assignee"));
    assert_eq!(child.story_points, Some(5));
    assert_eq!(child.deleted_at, Some(1_700_000_400_000), "kept as deleted");
    assert_eq!(
        (child.version, child.created_at, child.updated_at),
        (4, 1_700_000_200_000, 1_700_000_300_000)
    );
    // Only live items without include_deleted.
    assert_eq!(all_items(&tenant, &owner, &pid, false).await.len(), 1);

    let comment: v1::Comment = get(&tenant, &owner, &id(EntityKind::Comment, "c1"))
        .await
        .unwrap();
    assert_eq!(
        (comment.work_item_id.as_str(), comment.content.as_str()),
        (child.id.as_str(), "hi")
    );
    let dependency: v1::Dependency = get(&tenant, &owner, &id(EntityKind::Dependency, "d1"))
        .await
        .unwrap();
    assert_eq!(dependency.dependency_type(), v1::DependencyType::RelatesTo);
    assert_eq!(
        (dependency.created_by.as_str(), dependency.updated_at),
        ("u-dev", 1_700_000_700_000)
    );
    let entry: v1::TimeEntry = get(&tenant, &owner, &id(EntityKind::TimeEntry, "t1"))
        .await
        .unwrap();
    assert_eq!(
        (entry.user_id.as_str(), entry.started_at, entry.ended_at),
        ("u-timer", 1_700_000_800_000, None)
    );
    assert_eq!(
        (entry.created_by.as_str(), entry.description.as_str()),
        ("u-timer", "")
    );

    // The log: kinds in the documented order, the parent before its child although the
    // file lists the child first.
    let events: Vec<v1::Event> = tenant
        .read_events(0, None, 100, &EventFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|e| v1::Event::decode(e.event.clone()).unwrap())
        .collect();
    let order: Vec<(v1::EntityType, &str)> = events
        .iter()
        .map(|e| (e.entity_type(), e.entity_id.as_str()))
        .collect();
    assert_eq!(order[0], (v1::EntityType::Project, pid.as_str()));
    assert_eq!(
        order[1],
        (v1::EntityType::ProjectMember, "u-owner"),
        "the admin first"
    );
    assert!(order[2..5]
        .iter()
        .all(|(k, _)| *k == v1::EntityType::ProjectMember));
    let rest: Vec<v1::EntityType> = order[5..].iter().map(|(k, _)| *k).collect();
    assert_eq!(
        rest,
        [
            v1::EntityType::ProjectMember,
            v1::EntityType::Sprint,
            v1::EntityType::SwimLane,
            v1::EntityType::WorkItem,
            v1::EntityType::WorkItem,
            v1::EntityType::Comment,
            v1::EntityType::Dependency,
            v1::EntityType::TimeEntry,
        ]
    );
    assert_eq!(order[8].1, parent.id);
    assert_eq!(order[9].1, child.id);
    // The deleted item's created event carries it as stored: deleted.
    match &events[9].change {
        Some(v1::event::Change::WorkItem(w)) => assert_eq!(w.deleted_at, Some(1_700_000_400_000)),
        other => panic!("{other:?}"),
    }

    // The same file into another tenant: the same ids.
    let other = pm_core::TenantId::parse("globex").unwrap();
    import_agile_board(
        env.engine.config(),
        &other,
        small_file().to_string().as_bytes(),
        options(false, false),
    )
    .await
    .unwrap();
    let globex = env.tenant("globex").await;
    let again = every_item(&globex, &owner, &pid).await;
    assert_eq!(again, items);
}
