//! A realistic tenant for the `read` scenario, written over the protocol in batches: projects
//! with members, swim lanes with WIP limits, sprints (one active), an epic > story > task/bug
//! hierarchy with statuses, priorities, points and assignees spread over the board, comments,
//! time entries, dependencies and LLM context. Text comes from a corpus: the upstream board's
//! export (`--corpus`, its work items' titles and descriptions and its comments), or else a
//! built-in vocabulary. The same options give the same tenant: every choice is drawn from a
//! seeded generator.

use std::path::Path;

use pm_client::Client;
use pm_proto::v1;
use pm_proto::v1::command::Kind;

use crate::target::Target;
use crate::{Error, Result};

/// Commands per seeding batch (the server's default `storage.max_batch_commands` is 100).
const BATCH: usize = 100;

/// Users that items are assigned to and time is logged by, besides the readers.
pub const TEAM: usize = 8;

/// What the tenant is made of.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Projects.
    pub projects: usize,
    /// Work items over all projects.
    pub items: usize,
    /// Users who read every project (members as viewers).
    pub readers: usize,
}

/// What was written: the ids the readers' queries are built from.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The tenant.
    pub tenant: String,
    /// Per project, in creation order.
    pub projects: Vec<SeededProject>,
    /// The most frequent words of the titles: searches with many matches.
    pub terms: Vec<String>,
    /// Two words of one title: the specific searches people mostly make.
    pub phrases: Vec<String>,
    /// Commands the seeding committed.
    pub commands: u64,
}

/// One seeded project.
#[derive(Debug, Clone)]
pub struct SeededProject {
    /// Its id.
    pub id: String,
    /// Its sprints; the first is the active one.
    pub sprints: Vec<String>,
    /// Its epics and stories: the items with a subtree.
    pub parents: Vec<String>,
    /// Every work item.
    pub items: Vec<String>,
}

/// Text to draw titles, descriptions and comments from.
#[derive(Debug, Clone)]
pub struct Corpus {
    titles: Vec<String>,
    bodies: Vec<String>,
    comments: Vec<String>,
}

const WORDS: &[&str] = &[
    "login",
    "timeout",
    "export",
    "board",
    "sprint",
    "filter",
    "search",
    "sync",
    "cache",
    "webhook",
    "invoice",
    "report",
    "upload",
    "avatar",
    "session",
    "token",
    "migration",
    "dashboard",
    "latency",
    "notification",
    "billing",
    "permission",
    "archive",
    "calendar",
    "import",
    "chart",
    "mobile",
    "layout",
    "keyboard",
    "shortcut",
    "comment",
    "mention",
    "backlog",
    "estimate",
    "release",
    "deploy",
    "rollback",
    "metrics",
    "alert",
    "tenant",
];

const VERBS: &[&str] = &[
    "Fix", "Add", "Improve", "Refactor", "Document", "Remove", "Speed up", "Test",
];

impl Corpus {
    /// The built-in vocabulary: short sentences from a fixed word list.
    pub fn builtin() -> Corpus {
        let mut rng = Rng(7);
        let sentence = |rng: &mut Rng, words: usize| {
            let mut s = (*rng.pick(VERBS)).to_owned();
            for _ in 0..words {
                s.push(' ');
                let word: &&str = rng.pick(WORDS);
                s.push_str(word);
            }
            s
        };
        Corpus {
            titles: (0..200).map(|_| sentence(&mut rng, 3)).collect(),
            bodies: (0..200).map(|_| sentence(&mut rng, 24)).collect(),
            comments: (0..200).map(|_| sentence(&mut rng, 12)).collect(),
        }
    }

    /// The texts of an upstream board export (`work_items[].title/description`,
    /// `comments[].content`).
    pub fn from_export(path: &Path) -> Result<Corpus> {
        let raw = std::fs::read_to_string(path)
            .map_err(|e| Error::Setup(format!("cannot read {}: {e}", path.display())))?;
        let doc: serde_json::Value = serde_json::from_str(&raw)
            .map_err(|e| Error::Setup(format!("{} is not JSON: {e}", path.display())))?;
        let texts = |list: &str, field: &str| -> Vec<String> {
            doc[list]
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .filter_map(|r| r[field].as_str())
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| s.chars().take(5_000).collect())
                        .collect()
                })
                .unwrap_or_default()
        };
        let corpus = Corpus {
            titles: texts("work_items", "title")
                .into_iter()
                .map(|t| t.chars().take(200).collect())
                .collect(),
            bodies: texts("work_items", "description"),
            comments: texts("comments", "content"),
        };
        if corpus.titles.is_empty() || corpus.bodies.is_empty() || corpus.comments.is_empty() {
            return Err(Error::Setup(format!(
                "{} has no work item titles, descriptions or comments: is it an agile-board export?",
                path.display()
            )));
        }
        Ok(corpus)
    }

    /// Words of `titles` worth searching for: alphabetic, five letters or more, most
    /// frequent first (at most 64).
    fn terms(titles: &[String]) -> Vec<String> {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for title in titles {
            for word in title.split(|c: char| !c.is_alphabetic()) {
                if word.chars().count() >= 5 {
                    *counts.entry(word.to_lowercase()).or_default() += 1;
                }
            }
        }
        let mut terms: Vec<(String, usize)> = counts.into_iter().collect();
        terms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        terms.into_iter().take(64).map(|(w, _)| w).collect()
    }

    /// The two longest words (four letters or more) of each of `titles` that has two.
    fn phrases(titles: &[String]) -> Vec<String> {
        let mut phrases: Vec<String> = titles
            .iter()
            .filter_map(|title| {
                let mut words: Vec<&str> = title
                    .split(|c: char| !c.is_alphabetic())
                    .filter(|w| w.chars().count() >= 4)
                    .collect();
                words.sort_by_key(|w| std::cmp::Reverse(w.chars().count()));
                words.dedup();
                (words.len() >= 2).then(|| format!("{} {}", words[0], words[1]).to_lowercase())
            })
            .collect();
        phrases.sort();
        phrases.dedup();
        phrases
    }
}

/// A small, seeded generator (SplitMix64): the same seed gives the same tenant.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One of `items` (not empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The users of the tenant: the team that owns the work, then the readers.
pub fn team_member(n: usize) -> String {
    format!("load-team-{n}")
}

/// The `n`th reader.
pub fn reader(n: usize) -> String {
    format!("load-reader-{n}")
}

fn cmd(kind: Kind) -> v1::Command {
    v1::Command {
        idempotency_key: String::new(),
        kind: Some(kind),
    }
}

/// Runs `commands` in atomic batches; the id of each created entity, in order.
async fn run_batches(
    admin: &Client,
    commands: Vec<Kind>,
    written: &mut u64,
) -> Result<Vec<String>> {
    let mut ids = Vec::with_capacity(commands.len());
    let mut commands = commands.into_iter().peekable();
    while commands.peek().is_some() {
        let chunk: Vec<v1::Command> = commands.by_ref().take(BATCH).map(cmd).collect();
        let n = chunk.len();
        let result = admin.batch(chunk, true).await?;
        if result.outcomes.len() != n {
            return Err(Error::Setup(format!(
                "a batch of {n} answered {} outcomes",
                result.outcomes.len()
            )));
        }
        for outcome in result.outcomes {
            match outcome.outcome {
                Some(v1::command_outcome::Outcome::CommandResult(r)) => {
                    ids.push(entity_id(r.entity))
                }
                other => {
                    return Err(Error::Setup(format!("a seeding command failed: {other:?}")));
                }
            }
        }
        *written += n as u64;
    }
    Ok(ids)
}

fn entity_id(entity: Option<v1::Entity>) -> String {
    use v1::entity::Kind as E;
    match entity.and_then(|e| e.kind) {
        Some(E::WorkItem(x)) => x.id,
        Some(E::Sprint(x)) => x.id,
        Some(E::Comment(x)) => x.id,
        Some(E::TimeEntry(x)) => x.id,
        Some(E::Dependency(x)) => x.id,
        Some(E::SwimLane(x)) => x.id,
        Some(E::LlmContext(x)) => x.id,
        Some(E::Project(x)) => x.id,
        _ => String::new(),
    }
}

const STATUSES: &[v1::WorkItemStatus] = &[
    v1::WorkItemStatus::Backlog,
    v1::WorkItemStatus::Backlog,
    v1::WorkItemStatus::Todo,
    v1::WorkItemStatus::Todo,
    v1::WorkItemStatus::InProgress,
    v1::WorkItemStatus::Review,
    v1::WorkItemStatus::Done,
    v1::WorkItemStatus::Done,
    v1::WorkItemStatus::Done,
    v1::WorkItemStatus::Cancelled,
];

/// Writes the tenant `tenant` of `shape` as [`crate::target::ADMIN`].
pub async fn seed(
    target: &Target,
    tenant: &str,
    shape: &Shape,
    corpus: &Corpus,
) -> Result<Dataset> {
    if shape.projects == 0 || shape.items < shape.projects {
        return Err(Error::Setup(
            "the tenant needs at least one project and one item per project".into(),
        ));
    }
    let mut rng = Rng(0x5EED);
    let mut written = 0u64;
    let team: Vec<String> = (0..TEAM).map(team_member).collect();
    let mut members = team.clone();
    members.extend((0..shape.readers).map(reader));
    let day_ms = 86_400_000i64;
    let now = crate::target::unix_now().as_millis() as i64;
    let mut projects = Vec::with_capacity(shape.projects);
    // The titles the items got, whose words the readers search for.
    let mut titles = Vec::with_capacity(shape.items);
    for p in 0..shape.projects {
        // The team edits; readers only read, as viewers (checked like any member).
        let (admin, project) = target
            .project_with_members(tenant, &members, v1::ProjectRole::Viewer)
            .await?;
        written += 1 + members.len() as u64;
        let mut setup: Vec<Kind> = team
            .iter()
            .map(|user| {
                Kind::UpdateMember(v1::UpdateMember {
                    project_id: project.clone(),
                    user_id: user.clone(),
                    expected_version: 1,
                    role: v1::ProjectRole::Editor.into(),
                })
            })
            .collect();
        for (i, status) in [
            v1::WorkItemStatus::Todo,
            v1::WorkItemStatus::InProgress,
            v1::WorkItemStatus::Review,
            v1::WorkItemStatus::Done,
        ]
        .into_iter()
        .enumerate()
        {
            setup.push(Kind::CreateSwimLane(v1::CreateSwimLane {
                project_id: project.clone(),
                name: format!("{status:?}"),
                status: status.into(),
                position: i as u32,
                wip_limit: (i < 3).then_some(20),
                wip_policy: v1::WipPolicy::Warn.into(),
            }));
        }
        for s in 0..4i64 {
            setup.push(Kind::CreateSprint(v1::CreateSprint {
                project_id: project.clone(),
                name: format!("Sprint {}", s + 1),
                goal: rng.pick(&corpus.titles).clone(),
                start_at: Some(now + (s - 1) * 14 * day_ms),
                end_at: Some(now + s * 14 * day_ms),
            }));
        }
        for c in 0..5 {
            setup.push(Kind::CreateLlmContext(v1::CreateLlmContext {
                project_id: project.clone(),
                category: v1::LlmContextCategory::BusinessRule.into(),
                title: rng.pick(&corpus.titles).clone(),
                content: rng.pick(&corpus.bodies).clone(),
                priority: c,
            }));
        }
        let ids = run_batches(&admin, setup, &mut written).await?;
        let sprints: Vec<String> = ids[TEAM + 4..TEAM + 8].to_vec();
        let activate = vec![Kind::UpdateSprint(v1::UpdateSprint {
            id: sprints[0].clone(),
            expected_version: 1,
            status: Some(v1::SprintStatus::Active.into()),
            ..Default::default()
        })];
        run_batches(&admin, activate, &mut written).await?;

        // Items: 5% epics, 25% stories under epics, the rest tasks and bugs under stories.
        let count = shape.items / shape.projects + usize::from(p < shape.items % shape.projects);
        let epics = (count / 20).max(1);
        let stories = (count / 4).min(count - epics);
        let mut item = |rng: &mut Rng, item_type: v1::WorkItemType, parent: Option<String>| {
            let title = rng.pick(&corpus.titles).clone();
            titles.push(title.clone());
            Kind::CreateWorkItem(v1::CreateWorkItem {
                project_id: project.clone(),
                item_type: item_type.into(),
                parent_id: parent,
                title,
                description: rng.pick(&corpus.bodies).clone(),
                status: (*rng.pick(STATUSES)).into(),
                priority: (1 + rng.below(4)) as i32,
                story_points: Some([1, 2, 3, 5, 8, 13][rng.below(6)]),
                assignee_id: (rng.below(5) > 0).then(|| rng.pick(&team).clone()),
                sprint_id: (rng.below(5) < 3).then(|| rng.pick(&sprints).clone()),
            })
        };
        let epic_commands = (0..epics)
            .map(|_| item(&mut rng, v1::WorkItemType::Epic, None))
            .collect();
        let epic_ids = run_batches(&admin, epic_commands, &mut written).await?;
        let story_commands = (0..stories)
            .map(|_| {
                let parent = rng.pick(&epic_ids).clone();
                item(&mut rng, v1::WorkItemType::Story, Some(parent))
            })
            .collect();
        let story_ids = run_batches(&admin, story_commands, &mut written).await?;
        let leaf_commands = (0..count - epics - stories)
            .map(|i| {
                let kind = if i % 4 == 0 {
                    v1::WorkItemType::Bug
                } else {
                    v1::WorkItemType::Task
                };
                let parent = (!story_ids.is_empty()).then(|| rng.pick(&story_ids).clone());
                item(&mut rng, kind, parent)
            })
            .collect();
        let leaf_ids = run_batches(&admin, leaf_commands, &mut written).await?;
        let mut items = epic_ids.clone();
        items.extend(story_ids.iter().cloned());
        items.extend(leaf_ids);

        // Around them: a comment per two items, a time entry per two, a dependency per ten
        // (always an earlier item blocking a later one, so never a cycle).
        let mut around = Vec::new();
        for (i, id) in items.iter().enumerate() {
            if i % 2 == 0 {
                around.push(Kind::CreateComment(v1::CreateComment {
                    work_item_id: id.clone(),
                    content: rng.pick(&corpus.comments).clone(),
                }));
            } else {
                let started_at = now - (1 + rng.below(30)) as i64 * day_ms;
                around.push(Kind::CreateTimeEntry(v1::CreateTimeEntry {
                    work_item_id: id.clone(),
                    started_at,
                    ended_at: started_at + (15 + rng.below(240)) as i64 * 60_000,
                    description: String::new(),
                }));
            }
            if i % 10 == 9 {
                around.push(Kind::CreateDependency(v1::CreateDependency {
                    blocking_item_id: items[rng.below(i)].clone(),
                    blocked_item_id: id.clone(),
                    dependency_type: v1::DependencyType::Blocks.into(),
                }));
            }
        }
        run_batches(&admin, around, &mut written).await?;
        admin.close().await;

        let mut parents = epic_ids;
        parents.extend(story_ids);
        projects.push(SeededProject {
            id: project,
            sprints,
            parents,
            items,
        });
    }
    Ok(Dataset {
        tenant: tenant.to_owned(),
        projects,
        terms: Corpus::terms(&titles),
        phrases: Corpus::phrases(&titles),
        commands: written,
    })
}
