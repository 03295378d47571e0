//! The real export of the blazor-agile-board server (`../shared/data/`, schema_version 1),
//! loaded through commands and read back: the epic > story > task hierarchy, `blocks`
//! dependencies, long markdown comments, the change log and full-text search, on data that
//! nobody shaped for these tests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use pm_core::kinds::EntityKind;
use pm_db::{EventFilter, SqliteTenant, Tenant as _};
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;
use pm_proto::v1::query::Kind as Q;
use pm_proto::v1::query_result::Result as R;
use serde_json::Value;

use crate::support::*;

/// The one dependency of the export whose blocked item is not in the export (the source
/// server deleted the item and kept the link): it cannot be recreated and is left out.
pub(crate) const DANGLING_DEPENDENCY: &str = "cba538cf-4eaf-4ed8-a585-9ab5e749daeb";

fn export_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/agile-board-export.json")
}

pub(crate) struct ExportItem {
    pub(crate) id: String,
    pub(crate) number: u64,
    pub(crate) item_type: v1::WorkItemType,
    pub(crate) parent_id: Option<String>,
    pub(crate) title: String,
    pub(crate) description: String,
    pub(crate) status: v1::WorkItemStatus,
    pub(crate) priority: v1::Priority,
}

pub(crate) struct ExportDependency {
    pub(crate) id: String,
    pub(crate) blocking: String,
    pub(crate) blocked: String,
}

pub(crate) struct ExportComment {
    pub(crate) id: String,
    pub(crate) work_item_id: String,
    pub(crate) content: String,
    pub(crate) created_at: i64,
}

pub(crate) struct Export {
    pub(crate) key: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) items: Vec<ExportItem>,
    pub(crate) dependencies: Vec<ExportDependency>,
    /// Oldest first, the order in which they are recreated.
    pub(crate) comments: Vec<ExportComment>,
}

fn text(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("export field {field} is a string in {value}"))
        .to_owned()
}

fn integer(value: &Value, field: &str) -> i64 {
    value[field]
        .as_i64()
        .unwrap_or_else(|| panic!("export field {field} is an integer in {value}"))
}

fn array<'a>(export: &'a Value, field: &str) -> &'a [Value] {
    export[field]
        .as_array()
        .unwrap_or_else(|| panic!("export field {field} is an array"))
}

/// The wire enum value named `<PREFIX>_<NAME>`, e.g. `WORK_ITEM_STATUS_IN_PROGRESS`.
fn wire_name(prefix: &str, name: &str) -> String {
    format!("{prefix}_{}", name.to_ascii_uppercase())
}

impl Export {
    pub(crate) fn load() -> Export {
        let path = export_path();
        let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "the real export must sit beside the project at {}: {e}",
                path.display()
            )
        });
        let export: Value = serde_json::from_str(&raw).expect("the export is JSON");
        assert_eq!(export["schema_version"], 1, "export schema version");
        let projects = array(&export, "projects");
        assert_eq!(projects.len(), 1, "the export holds one project");
        let project = &projects[0];

        let items = array(&export, "work_items")
            .iter()
            .map(|w| {
                let item_type = text(w, "item_type");
                let status = text(w, "status");
                let priority = text(w, "priority");
                ExportItem {
                    id: text(w, "id"),
                    number: u64::try_from(integer(w, "item_number")).expect("positive number"),
                    item_type: v1::WorkItemType::from_str_name(&wire_name(
                        "WORK_ITEM_TYPE",
                        &item_type,
                    ))
                    .unwrap_or_else(|| panic!("unknown item_type {item_type:?}")),
                    parent_id: w["parent_id"].as_str().map(str::to_owned),
                    title: text(w, "title"),
                    description: text(w, "description"),
                    status: v1::WorkItemStatus::from_str_name(&wire_name(
                        "WORK_ITEM_STATUS",
                        &status,
                    ))
                    .unwrap_or_else(|| panic!("unknown status {status:?}")),
                    priority: v1::Priority::from_str_name(&wire_name("PRIORITY", &priority))
                        .unwrap_or_else(|| panic!("unknown priority {priority:?}")),
                }
            })
            .collect();
        let dependencies = array(&export, "dependencies")
            .iter()
            .map(|d| {
                assert_eq!(text(d, "dependency_type"), "blocks", "{d}");
                ExportDependency {
                    id: text(d, "id"),
                    blocking: text(d, "blocking_item_id"),
                    blocked: text(d, "blocked_item_id"),
                }
            })
            .collect();
        let mut comments: Vec<ExportComment> = array(&export, "comments")
            .iter()
            .map(|c| {
                assert!(c["deleted_at"].is_null(), "every exported comment is live");
                ExportComment {
                    id: text(c, "id"),
                    work_item_id: text(c, "work_item_id"),
                    content: text(c, "content"),
                    created_at: integer(c, "created_at"),
                }
            })
            .collect();
        comments.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Export {
            key: text(project, "key"),
            name: text(project, "title"),
            description: text(project, "description"),
            items,
            dependencies,
            comments,
        }
    }

    pub(crate) fn item(&self, id: &str) -> Option<&ExportItem> {
        self.items.iter().find(|i| i.id == id)
    }
}

/// Runs a non-atomic batch in which every command must succeed; returns each entity and
/// seq, in command order.
async fn batch_ok<T: EntityMsg>(
    tenant: &SqliteTenant,
    commands: Vec<v1::Command>,
) -> Vec<(T, u64)> {
    let count = commands.len();
    let result = tenant
        .batch(
            &ALICE,
            v1::Batch {
                commands,
                atomic: false,
            },
        )
        .await
        .expect("a non-atomic batch is answered with outcomes");
    assert_eq!(result.outcomes.len(), count, "one outcome per command");
    result
        .outcomes
        .into_iter()
        .enumerate()
        .map(|(i, outcome)| match outcome.outcome {
            Some(v1::command_outcome::Outcome::CommandResult(r)) => {
                assert!(!r.replayed, "commands[{i}] is fresh");
                (entity_as(r.entity.as_ref()), r.seq)
            }
            other => panic!("commands[{i}] failed: {other:?}"),
        })
        .collect()
}

/// The words FTS5's `unicode61` tokenizer sees, lower-cased: runs of letters and digits.
fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
}

/// Whether `remove_diacritics` might fold a non-ASCII token onto the ASCII `word` (e.g.
/// `naïve` onto `naive`), which the plain comparison of [`tokens`] would miss.
fn may_fold_to(token: &str, word: &str) -> bool {
    !token.is_ascii()
        && token.chars().count() == word.len()
        && token
            .chars()
            .zip(word.chars())
            .all(|(t, w)| !t.is_ascii() || t.eq_ignore_ascii_case(&w))
}

/// The first word of at least 8 ASCII letters, in `texts` order, that `allowed` accepts and
/// that no token of the whole export might fold onto.
fn pick_word<'a>(
    texts: impl IntoIterator<Item = &'a str>,
    every_token: &BTreeSet<String>,
    allowed: impl Fn(&str) -> bool,
) -> String {
    texts
        .into_iter()
        .flat_map(|t| t.split(|c: char| !c.is_alphanumeric()))
        .find(|w| {
            w.len() >= 8
                && w.chars().all(|c| c.is_ascii_alphabetic())
                && allowed(&w.to_lowercase())
                && !every_token.iter().any(|t| may_fold_to(t, w))
        })
        .expect("the export has such a word")
        .to_owned()
}

/// Server ids of the items whose title, description or a live comment holds `word` as a
/// token, computed from the export.
fn expected_hits(export: &Export, ids: &HashMap<String, String>, word: &str) -> BTreeSet<String> {
    let word = word.to_lowercase();
    let in_items = export
        .items
        .iter()
        .filter(|i| {
            tokens(&i.title)
                .chain(tokens(&i.description))
                .any(|t| t == word)
        })
        .map(|i| i.id.as_str());
    let in_comments = export
        .comments
        .iter()
        .filter(|c| tokens(&c.content).any(|t| t == word))
        .map(|c| c.work_item_id.as_str());
    in_items
        .chain(in_comments)
        .map(|id| ids[id].clone())
        .collect()
}

/// Server ids of the items `ListWorkItems.text` finds for `text`.
async fn search(tenant: &SqliteTenant, project_id: &str, text: &str) -> BTreeSet<String> {
    match query(
        tenant,
        &ALICE,
        Q::ListWorkItems(v1::ListWorkItems {
            project_id: project_id.into(),
            page: page500(),
            text: text.into(),
            ..Default::default()
        }),
    )
    .await
    .expect("search")
    {
        R::ListWorkItemsResult(r) => {
            assert_eq!(r.next_page_token, "", "every hit fits in one page");
            r.items.into_iter().map(|w| w.id).collect()
        }
        other => panic!("unexpected result {other:?}"),
    }
}

#[tokio::test]
async fn the_real_export_loads_through_commands_and_reads_back() {
    let export = Export::load();
    assert_eq!(export.key, "PONE");
    assert_eq!(export.items.len(), 194);
    assert_eq!(export.dependencies.len(), 60);
    assert_eq!(export.comments.len(), 64);
    let dangling: Vec<&str> = export
        .dependencies
        .iter()
        .filter(|d| export.item(&d.blocking).is_none() || export.item(&d.blocked).is_none())
        .map(|d| d.id.as_str())
        .collect();
    assert_eq!(dangling, [DANGLING_DEPENDENCY]);

    let env = TestEnv::new();
    let tenant = env.tenant("real").await;
    let (project, seq) = run::<v1::Project>(
        &tenant,
        &ALICE,
        C::CreateProject(v1::CreateProject {
            key: export.key.clone(),
            name: export.name.clone(),
            description: export.description.clone(),
        }),
    )
    .await;
    // The project (1) and its admin membership (2).
    assert_eq!(seq, 2);
    assert_eq!(project.key, "PONE");
    let pid = project.id.as_str();
    let mut last_seq = seq;
    let mut next_seq = |got: u64| {
        last_seq += 1;
        assert_eq!(
            got, last_seq,
            "seqs of consecutive commands are consecutive"
        );
    };

    // Work items, parents first: every epic, then every story, then every task, each level
    // in export number order, in batches of at most 100.
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut created_items = 0;
    for level in [
        v1::WorkItemType::Epic,
        v1::WorkItemType::Story,
        v1::WorkItemType::Task,
    ] {
        let mut level_items: Vec<&ExportItem> = export
            .items
            .iter()
            .filter(|i| i.item_type == level)
            .collect();
        level_items.sort_by_key(|i| i.number);
        for chunk in level_items.chunks(100) {
            let commands = chunk
                .iter()
                .map(|i| {
                    command(C::CreateWorkItem(v1::CreateWorkItem {
                        project_id: pid.into(),
                        item_type: i.item_type.into(),
                        parent_id: i.parent_id.as_ref().map(|p| {
                            ids.get(p)
                                .unwrap_or_else(|| panic!("the parent of {} exists", i.id))
                                .clone()
                        }),
                        title: i.title.clone(),
                        description: i.description.clone(),
                        status: i.status.into(),
                        priority: i.priority.into(),
                        ..Default::default()
                    }))
                })
                .collect();
            for (i, (item, seq)) in chunk
                .iter()
                .zip(batch_ok::<v1::WorkItem>(&tenant, commands).await)
            {
                next_seq(seq);
                created_items += 1;
                assert_eq!(item.number, created_items, "numbers follow creation order");
                assert_eq!(item.title, i.title);
                ids.insert(i.id.clone(), item.id);
            }
        }
    }
    assert_eq!(created_items, 194);

    // Dependencies whose two items exist, in export order.
    let live_dependencies: Vec<&ExportDependency> = export
        .dependencies
        .iter()
        .filter(|d| d.id != DANGLING_DEPENDENCY)
        .collect();
    let expected_pairs: BTreeSet<(String, String)> = live_dependencies
        .iter()
        .map(|d| (ids[&d.blocking].clone(), ids[&d.blocked].clone()))
        .collect();
    assert_eq!(expected_pairs.len(), 59, "no duplicate dependency");
    let commands = live_dependencies
        .iter()
        .map(|d| {
            command(C::CreateDependency(v1::CreateDependency {
                blocking_item_id: ids[&d.blocking].clone(),
                blocked_item_id: ids[&d.blocked].clone(),
                dependency_type: v1::DependencyType::Blocks.into(),
            }))
        })
        .collect();
    for (d, (dependency, seq)) in live_dependencies
        .iter()
        .zip(batch_ok::<v1::Dependency>(&tenant, commands).await)
    {
        next_seq(seq);
        assert_eq!(dependency.blocking_item_id, ids[&d.blocking]);
        assert_eq!(dependency.blocked_item_id, ids[&d.blocked]);
        assert_eq!(dependency.dependency_type(), v1::DependencyType::Blocks);
    }

    // Comments, oldest first.
    let commands = export
        .comments
        .iter()
        .map(|c| {
            command(C::CreateComment(v1::CreateComment {
                work_item_id: ids[&c.work_item_id].clone(),
                content: c.content.clone(),
            }))
        })
        .collect();
    for (c, (comment, seq)) in export
        .comments
        .iter()
        .zip(batch_ok::<v1::Comment>(&tenant, commands).await)
    {
        next_seq(seq);
        assert_eq!(comment.work_item_id, ids[&c.work_item_id]);
        assert_eq!(comment.content, c.content);
    }

    // The change log: one row per created entity, gapless from 1.
    let head = 2 + 194 + 59 + 64;
    assert_eq!(last_seq, head);
    assert_eq!(tenant.head_seq(), head);
    let events = tenant
        .read_events(0, None, 10_000, &EventFilter::default())
        .await
        .expect("read the change log");
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=head).collect::<Vec<_>>()
    );
    let mut per_kind: BTreeMap<EntityKind, usize> = BTreeMap::new();
    for event in &events {
        *per_kind.entry(event.kind).or_default() += 1;
    }
    assert_eq!(
        per_kind,
        BTreeMap::from([
            (EntityKind::Project, 1),
            (EntityKind::ProjectMember, 1),
            (EntityKind::WorkItem, 194),
            (EntityKind::Comment, 64),
            (EntityKind::Dependency, 59),
        ])
    );

    // Every work item reads back as exported, through pages of 100.
    let mut listed = Vec::new();
    let mut pages = 0;
    let mut token = String::new();
    loop {
        let page = list_items(&tenant, &ALICE, pid, 100, &token).await;
        pages += 1;
        assert_eq!(page.as_of_seq, head);
        listed.extend(page.items);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 2);
    assert_eq!(listed.len(), 194);
    let by_server_id: HashMap<&str, &ExportItem> = export
        .items
        .iter()
        .map(|i| (ids[&i.id].as_str(), i))
        .collect();
    let mut per_type: BTreeMap<i32, usize> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for item in &listed {
        assert!(seen.insert(item.id.clone()), "{} listed twice", item.id);
        let original = by_server_id[item.id.as_str()];
        let key = &item.display_key;
        *per_type.entry(item.item_type).or_default() += 1;
        assert_eq!(item.item_type(), original.item_type, "{key}");
        assert_eq!(
            item.parent_id,
            original.parent_id.as_ref().map(|p| ids[p].clone()),
            "{key}"
        );
        assert_eq!(item.title, original.title, "{key}");
        assert_eq!(item.description, original.description, "{key}");
        assert_eq!(item.status(), original.status, "{key}");
        assert_eq!(item.priority(), original.priority, "{key}");
        assert_eq!(item.deleted_at, None, "{key}");
    }
    assert_eq!(
        per_type,
        BTreeMap::from([
            (v1::WorkItemType::Epic as i32, 17),
            (v1::WorkItemType::Story as i32, 46),
            (v1::WorkItemType::Task as i32, 131),
        ])
    );

    // Dependencies read back.
    let dependencies = match query(
        &tenant,
        &ALICE,
        Q::ListDependencies(v1::ListDependencies {
            project_id: pid.into(),
            page: page500(),
            ..Default::default()
        }),
    )
    .await
    .expect("list dependencies")
    {
        R::ListDependenciesResult(r) => {
            assert_eq!(r.next_page_token, "");
            r.items
        }
        other => panic!("unexpected result {other:?}"),
    };
    assert_eq!(dependencies.len(), 59);
    let pairs: BTreeSet<(String, String)> = dependencies
        .into_iter()
        .map(|d| (d.blocking_item_id, d.blocked_item_id))
        .collect();
    assert_eq!(pairs, expected_pairs);

    // Comments read back byte for byte, oldest first, under the right item.
    let mut comment_count = 0;
    for original in &export.items {
        let comments = match query(
            &tenant,
            &ALICE,
            Q::ListComments(v1::ListComments {
                work_item_id: ids[&original.id].clone(),
                page: page500(),
                include_deleted: false,
            }),
        )
        .await
        .expect("list comments")
        {
            R::ListCommentsResult(r) => {
                assert_eq!(r.next_page_token, "");
                r.items
            }
            other => panic!("unexpected result {other:?}"),
        };
        comment_count += comments.len();
        let expected: Vec<&str> = export
            .comments
            .iter()
            .filter(|c| c.work_item_id == original.id)
            .map(|c| c.content.as_str())
            .collect();
        let got: Vec<&str> = comments.iter().map(|c| c.content.as_str()).collect();
        assert!(
            got == expected,
            "comments of export item {} differ",
            original.number
        );
    }
    assert_eq!(comment_count, 64);

    // Full-text search finds exactly the items that hold the word.
    let item_tokens: BTreeSet<String> = export
        .items
        .iter()
        .flat_map(|i| tokens(&i.title).chain(tokens(&i.description)))
        .collect();
    let every_token: BTreeSet<String> = export
        .comments
        .iter()
        .flat_map(|c| tokens(&c.content))
        .chain(item_tokens.iter().cloned())
        .collect();
    let comment_word = pick_word(
        export.comments.iter().map(|c| c.content.as_str()),
        &every_token,
        |w| !item_tokens.contains(w),
    );
    let expected = expected_hits(&export, &ids, &comment_word);
    assert_eq!((comment_word.as_str(), expected.len()), ("PLANNING", 6));
    assert_eq!(search(&tenant, pid, &comment_word).await, expected);
    assert_eq!(
        search(&tenant, pid, &comment_word.to_lowercase()).await,
        expected
    );

    let mut titles: Vec<&ExportItem> = export.items.iter().collect();
    titles.sort_by_key(|i| i.number);
    let title_word = pick_word(
        titles.iter().map(|i| i.title.as_str()),
        &every_token,
        |_| true,
    );
    let expected = expected_hits(&export, &ids, &title_word);
    assert_eq!((title_word.as_str(), expected.len()), ("Activity", 13));
    assert_eq!(search(&tenant, pid, &title_word).await, expected);

    // The cycle rule on real data: reversing a real `blocks` is refused, and so is closing a
    // real chain A blocks B blocks C with C blocks A.
    let first = live_dependencies[0];
    let err = fail(
        &tenant,
        &ALICE,
        C::CreateDependency(v1::CreateDependency {
            blocking_item_id: ids[&first.blocked].clone(),
            blocked_item_id: ids[&first.blocking].clone(),
            dependency_type: v1::DependencyType::Blocks.into(),
        }),
    )
    .await;
    assert_eq!(err.code(), v1::ErrorCode::FailedPrecondition, "{err:?}");
    let (a, c) = live_dependencies
        .iter()
        .find_map(|ab| {
            live_dependencies
                .iter()
                .find(|bc| bc.blocking == ab.blocked)
                .map(|bc| (&ab.blocking, &bc.blocked))
        })
        .expect("the export has a chain of two `blocks`");
    let err = fail(
        &tenant,
        &ALICE,
        C::CreateDependency(v1::CreateDependency {
            blocking_item_id: ids[c].clone(),
            blocked_item_id: ids[a].clone(),
            dependency_type: v1::DependencyType::Blocks.into(),
        }),
    )
    .await;
    assert_eq!(err.code(), v1::ErrorCode::FailedPrecondition, "{err:?}");
    assert_eq!(tenant.head_seq(), head, "refused commands log nothing");
}
