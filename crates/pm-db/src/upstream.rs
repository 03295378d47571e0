//! The export of the upstream board server (blazor-agile-board, `schema_version` 1), read
//! into the same validated [`Dataset`] that `pm-server import` loads from its own exports
//! (`pm-server import --from agile-board`). Engine-neutral; the SQLite engine's side is
//! [`crate::sqlite::transfer::import_agile_board`].
//!
//! # The file
//! One JSON object: `schema_version` (must be 1), `exported_at`, `exported_by`, and one
//! array per kind: `projects`, `work_items`, `sprints`, `comments`, `swim_lanes`,
//! `dependencies`, `time_entries` (a missing or null array is empty). Every field of every
//! row is known: an unknown field is refused rather than silently lost. Times are Unix
//! seconds. Rows may carry `deleted_at` (seconds; the upstream's own exports leave deleted
//! rows out).
//!
//! # Mapping
//! - **Ids** are kept. An id that is a UUID in any spelling is stored in its canonical
//!   lower-case form; any other id becomes the UUIDv5 of `"<kind>:<id>"` (e.g.
//!   `work_item:17`) in the namespace UUIDv5(URL, `https://github.com/TonyMarkham/blazor-agile-board`),
//!   so a re-import gives the same ids and references follow ([`map_id`]).
//! - **Times**: seconds × 1000 = Unix milliseconds, the protocol's unit.
//! - **Audit**: `version`, `created_by`, `updated_by` are kept where the upstream has them;
//!   where it has none, `version` is 1 and the authors are: the user of a time entry, the
//!   creator of a dependency (also its `updated_*`), the project's creator for a swim lane.
//! - **Work items**: `item_number` is the `number` (so `PONE-57` stays `PONE-57`; a
//!   `display_key` that is not `<project key>-<item_number>` is refused, since pm-server
//!   derives it), `title`, `description` (null → empty), `item_type`, `status`, `priority`,
//!   `story_points`, `assignee_id`, `parent_id`, `sprint_id` as they are. `position` becomes
//!   the `rank` [`rank::for_position`]`(position, item_number)`: sorting by rank is sorting
//!   by position, then number, and every imported rank sorts before the ranks of items
//!   created later.
//! - **Projects**: `title` is the `name`. `next_work_item_number` is not stored: pm-server
//!   numbers the next item after the highest number imported, and the report notes a
//!   project where the upstream would have chosen another number.
//! - **Comments, dependencies, time entries** take the project of their work item
//!   (a dependency: of its blocking item). `duration_seconds` and `is_running` of a time
//!   entry follow from its times and are not stored.
//! - **Swim lanes**: `status_value` is the `status`, `position` kept, no WIP limit;
//!   `is_default` has no counterpart and is not stored.
//! - **Members**: every user a row of a project refers to (authors, assignees, time entry
//!   users) becomes a member of that project: its creator as `admin` (a project keeps an
//!   admin), everyone else as `editor` (they wrote on the upstream board, so they keep
//!   writing). A member's times and author are the project's creation. User ids are kept as
//!   they are: a user signs in with a token whose `sub` is the upstream user id.
//! - **Change log**: one `created` event per imported row, whose entity is the row as
//!   stored (a soft-deleted row's carries its `deleted_at`), at the row's `created_at`, by
//!   its `created_by`, seqs gapless from 1, in this order: projects, members (per project:
//!   the admin, then by user id), sprints, swim lanes, work items (parents before
//!   children: by depth in the hierarchy, then project, then number), comments,
//!   dependencies, time entries; rows of one kind otherwise in file order. A subscriber
//!   replaying from seq 0 rebuilds the board; seqs do not follow the times.
//!
//! # Dangling references
//! A reference to a row that is not in the file (a dependency on a deleted item, ...) is
//! reported with the row's kind and name. Without `skip_dangling` the import refuses and
//! lists them all. With it, a row whose required reference dangles (a comment's, time
//! entry's or dependency's work item, any row's project) is skipped, and an optional one
//! (a work item's `parent_id` or `sprint_id`) is cleared; the report lists each.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io::Read;

use pm_core::kinds::{self, EntityKind, Role};
use pm_core::{rank, rules, UserId};
use pm_proto::v1;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha1::{Digest, Sha1};
use uuid::Uuid;

use crate::entity::Entity;
use crate::error::{Error, Result};
use crate::events::Change;
use crate::export::{at_place, Counts, Dataset, Header};

/// The name of the format, as `--from` takes it.
pub const FORMAT: &str = "agile-board";
/// The upstream `schema_version` this build reads.
pub const SCHEMA_VERSION: u64 = 1;
/// Names the namespace of mapped ids.
const UPSTREAM_URL: &str = "https://github.com/TonyMarkham/blazor-agile-board";
/// The arrays of the file, in the order rows are read.
const ARRAYS: [&str; 7] = [
    "projects",
    "sprints",
    "swim_lanes",
    "work_items",
    "comments",
    "dependencies",
    "time_entries",
];
/// The other top-level fields.
const HEADER_FIELDS: [&str; 3] = ["schema_version", "exported_at", "exported_by"];

/// How to import an upstream export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamOptions {
    /// Convert, validate and load in a transaction that is rolled back: nothing is written.
    pub dry_run: bool,
    /// Replace the content of a tenant that has some (otherwise refused).
    pub replace: bool,
    /// Import without the dangling references (see the module documentation) instead of
    /// refusing.
    pub skip_dangling: bool,
}

/// A reference to a row that is not in the file (or not imported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dangling {
    /// The kind of the referring row.
    pub kind: EntityKind,
    /// Its name: a work item's display key, another row's upstream id, a dependency's ends.
    pub name: String,
    /// Where it is in the file, e.g. `dependencies[41]`.
    pub place: String,
    /// The referring field.
    pub field: &'static str,
    /// The kind of row it refers to.
    pub target: EntityKind,
    /// The upstream id it refers to.
    pub target_id: String,
    /// Whether the target is in the file but not imported (itself skipped).
    pub target_skipped: bool,
    /// `true`: an optional reference, cleared (the row is imported without it); `false`:
    /// the row is skipped.
    pub cleared: bool,
}

impl fmt::Display for Dangling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let missing = if self.target_skipped {
            "is skipped"
        } else {
            "is not in the file"
        };
        let outcome = if self.cleared {
            "imported without it"
        } else {
            "row skipped"
        };
        write!(
            f,
            "{} {} ({}): {} refers to {} {}, which {missing}; {outcome}",
            self.kind, self.name, self.place, self.field, self.target, self.target_id
        )
    }
}

/// What an upstream import did (or, for a dry run, would do).
#[derive(Debug, Clone)]
pub struct UpstreamReport {
    /// The file's `exported_at`.
    pub exported_at: Option<String>,
    /// The file's `exported_by`.
    pub exported_by: Option<String>,
    /// Rows imported per kind (members and change-log entries included).
    pub counts: Counts,
    /// The dangling references left out (only with `skip_dangling`).
    pub skipped: Vec<Dangling>,
    /// What the operator should know (a project whose next number changes).
    pub notes: Vec<String>,
    /// Whether the tenant had content that was replaced.
    pub replaced: bool,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// An upstream file converted: the dataset to validate and load, and what to report.
#[derive(Debug)]
pub(crate) struct Conversion {
    pub(crate) data: Dataset,
    exported_at: Option<String>,
    exported_by: Option<String>,
    skipped: Vec<Dangling>,
    notes: Vec<String>,
}

impl Conversion {
    /// The report of importing it.
    pub(crate) fn report(self, replaced: bool, dry_run: bool) -> UpstreamReport {
        UpstreamReport {
            counts: self.data.counts(),
            exported_at: self.exported_at,
            exported_by: self.exported_by,
            skipped: self.skipped,
            notes: self.notes,
            replaced,
            dry_run,
        }
    }
}

// --- Ids ---

/// The UUIDv5 of `name` in `namespace` (RFC 9562, section 5.5).
fn uuid_v5(namespace: &Uuid, name: &[u8]) -> Uuid {
    let digest = Sha1::new()
        .chain_update(namespace.as_bytes())
        .chain_update(name)
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

/// The pm-server id of the upstream id `raw` of a row of `kind`: the canonical form of a
/// UUID, otherwise the UUIDv5 of `"<kind>:<raw>"` in the upstream's namespace.
pub fn map_id(kind: EntityKind, raw: &str) -> String {
    match Uuid::try_parse(raw) {
        Ok(uuid) => uuid.hyphenated().to_string(),
        Err(_) => {
            let namespace = uuid_v5(&Uuid::NAMESPACE_URL, UPSTREAM_URL.as_bytes());
            uuid_v5(&namespace, format!("{kind}:{raw}").as_bytes())
                .hyphenated()
                .to_string()
        }
    }
}

/// A required id field.
fn id(field: &str, kind: EntityKind, raw: &str) -> Result<String> {
    if raw.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    Ok(map_id(kind, raw))
}

// --- Field conversions ---

/// Unix seconds to Unix milliseconds.
fn millis(field: &str, seconds: i64) -> Result<i64> {
    seconds
        .checked_mul(1000)
        .filter(|ms| rules::check_timestamp(field, *ms).is_ok())
        .ok_or_else(|| {
            Error::invalid(
                field,
                format!("must be Unix seconds between 1970 and 9999, not {seconds}"),
            )
        })
}

fn opt_millis(field: &str, seconds: Option<i64>) -> Result<Option<i64>> {
    seconds.map(|s| millis(field, s)).transpose()
}

fn version(field: &str, raw: i64) -> Result<u64> {
    u64::try_from(raw)
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| Error::invalid(field, format!("must be at least 1, not {raw}")))
}

fn user(field: &str, raw: &str) -> Result<String> {
    Ok(UserId::parse(field, raw)?.as_str().to_owned())
}

fn small(field: &str, raw: i64) -> Result<u32> {
    u32::try_from(raw).map_err(|_| {
        Error::invalid(
            field,
            format!("must be between 0 and {}, not {raw}", u32::MAX),
        )
    })
}

// --- The rows of the file ---

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpProject {
    id: String,
    key: String,
    title: String,
    description: Option<String>,
    status: String,
    version: i64,
    created_at: i64,
    updated_at: i64,
    created_by: String,
    updated_by: String,
    next_work_item_number: Option<i64>,
    deleted_at: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpWorkItem {
    id: String,
    display_key: Option<String>,
    item_type: String,
    title: String,
    description: Option<String>,
    status: String,
    priority: String,
    parent_id: Option<String>,
    project_id: String,
    assignee_id: Option<String>,
    sprint_id: Option<String>,
    story_points: Option<i64>,
    item_number: i64,
    position: i64,
    version: i64,
    created_at: i64,
    updated_at: i64,
    created_by: String,
    updated_by: String,
    deleted_at: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpSprint {
    id: String,
    project_id: String,
    name: String,
    goal: Option<String>,
    start_date: Option<i64>,
    end_date: Option<i64>,
    status: String,
    version: i64,
    created_at: i64,
    updated_at: i64,
    created_by: String,
    updated_by: String,
    deleted_at: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpComment {
    id: String,
    work_item_id: String,
    content: String,
    created_at: i64,
    updated_at: i64,
    created_by: String,
    updated_by: String,
    deleted_at: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpSwimLane {
    id: String,
    project_id: String,
    name: String,
    status_value: String,
    position: i64,
    /// Known, not stored: pm-server has no default lanes.
    #[serde(rename = "is_default")]
    _is_default: Option<IgnoredAny>,
    created_at: i64,
    updated_at: i64,
    deleted_at: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpDependency {
    id: String,
    blocking_item_id: String,
    blocked_item_id: String,
    dependency_type: String,
    created_at: i64,
    created_by: String,
    deleted_at: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpTimeEntry {
    id: String,
    work_item_id: String,
    user_id: String,
    started_at: i64,
    ended_at: Option<i64>,
    /// Known, not stored: follows from the times.
    #[serde(rename = "duration_seconds")]
    _duration_seconds: Option<IgnoredAny>,
    description: Option<String>,
    /// Known, not stored: follows from `ended_at`.
    #[serde(rename = "is_running")]
    _is_running: Option<IgnoredAny>,
    created_at: i64,
    updated_at: i64,
    deleted_at: Option<i64>,
}

/// One row of the file with its place.
struct Up<T> {
    /// Where it is: `work_items[3]`.
    at: String,
    /// Where it is and what it is called: `work_items[3] (PONE-13)`, `comments[0] (id ...)`.
    place: String,
    row: T,
}

impl<T> Up<T> {
    /// An error about a field of this row.
    fn err(&self, error: impl Into<Error>) -> Error {
        at_place(self.place.clone(), error)
    }
}

/// The rows of array `name`; a missing or null array is empty.
fn rows<T: DeserializeOwned>(root: &mut Map<String, Value>, name: &str) -> Result<Vec<Up<T>>> {
    let values = match root.remove(name) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(values)) => values,
        Some(_) => return Err(Error::invalid(name, "must be an array")),
    };
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let at = format!("{name}[{i}]");
            let text = |field: &str| value.get(field).and_then(Value::as_str).map(str::to_owned);
            let label = text("display_key")
                .filter(|k| !k.is_empty())
                .or_else(|| text("key"))
                .or_else(|| text("id").map(|id| format!("id {id}")));
            let place = match label {
                Some(label) => format!("{at} ({label})"),
                None => at.clone(),
            };
            let row = serde_json::from_value(value)
                .map_err(|e| Error::invalid(place.clone(), e.to_string()))?;
            Ok(Up { at, place, row })
        })
        .collect()
}

/// The whole file, parsed.
struct File {
    exported_at: Option<String>,
    exported_by: Option<String>,
    projects: Vec<Up<UpProject>>,
    sprints: Vec<Up<UpSprint>>,
    lanes: Vec<Up<UpSwimLane>>,
    items: Vec<Up<UpWorkItem>>,
    comments: Vec<Up<UpComment>>,
    dependencies: Vec<Up<UpDependency>>,
    time_entries: Vec<Up<UpTimeEntry>>,
}

impl File {
    fn read<R: Read>(input: R) -> Result<File> {
        let root: Value = serde_json::from_reader(input)
            .map_err(|e| Error::invalid("file", format!("is not JSON: {e}")))?;
        let Value::Object(mut root) = root else {
            return Err(Error::invalid(
                "file",
                "must be a JSON object (an agile-board export)",
            ));
        };
        let schema = root.get("schema_version").ok_or_else(|| {
            Error::invalid(
                "schema_version",
                "is missing: is this an agile-board export?",
            )
        })?;
        if schema.as_u64() != Some(SCHEMA_VERSION) {
            return Err(Error::invalid(
                "schema_version",
                format!("{schema} is not supported (this build reads {SCHEMA_VERSION})"),
            ));
        }
        if let Some(unknown) = root
            .keys()
            .find(|k| !ARRAYS.contains(&k.as_str()) && !HEADER_FIELDS.contains(&k.as_str()))
        {
            return Err(Error::invalid(
                unknown.clone(),
                "is not part of schema_version 1 (refused rather than lost)",
            ));
        }
        let text = |root: &Map<String, Value>, field: &str| {
            root.get(field).and_then(Value::as_str).map(str::to_owned)
        };
        Ok(File {
            exported_at: text(&root, "exported_at"),
            exported_by: text(&root, "exported_by"),
            projects: rows(&mut root, "projects")?,
            sprints: rows(&mut root, "sprints")?,
            lanes: rows(&mut root, "swim_lanes")?,
            items: rows(&mut root, "work_items")?,
            comments: rows(&mut root, "comments")?,
            dependencies: rows(&mut root, "dependencies")?,
            time_entries: rows(&mut root, "time_entries")?,
        })
    }
}

// --- Conversion ---

/// A project as the other rows need it.
struct ProjectInfo {
    key: String,
    created_at: i64,
    created_by: String,
    /// Index in file order.
    order: usize,
}

/// Rows being converted, with what the dataset and the change log need to know.
#[derive(Default)]
struct Builder {
    skipped: Vec<Dangling>,
    /// Mapped ids of the rows in the file, per kind (to tell "skipped" from "missing").
    in_file: HashSet<(EntityKind, String)>,
    /// Mapped ids of imported rows, per kind.
    imported: HashSet<(EntityKind, String)>,
}

impl Builder {
    /// Notes a dangling reference `(field, target kind, target upstream id)` of the row of
    /// `kind` named `name` at `place`; `cleared`: the reference is optional.
    fn dangling(
        &mut self,
        kind: EntityKind,
        name: String,
        place: &str,
        (field, target, target_id): (&'static str, EntityKind, &str),
        cleared: bool,
    ) {
        self.skipped.push(Dangling {
            kind,
            name,
            place: place.to_owned(),
            field,
            target,
            target_id: target_id.to_owned(),
            target_skipped: self.in_file.contains(&(target, map_id(target, target_id))),
            cleared,
        });
    }

    /// Whether the row of `kind` with upstream id `raw` is imported.
    fn has(&self, kind: EntityKind, raw: &str) -> bool {
        self.imported.contains(&(kind, map_id(kind, raw)))
    }
}

/// Converts an upstream export into a dataset. Refuses dangling references unless
/// `skip_dangling`; `schema_version` is the tenant schema the dataset is for.
pub(crate) fn convert<R: Read>(
    input: R,
    skip_dangling: bool,
    schema_version: i64,
) -> Result<Conversion> {
    let file = File::read(input)?;
    let mut b = Builder::default();
    for (kind, ids) in [
        (
            EntityKind::Project,
            file.projects.iter().map(|r| &r.row.id).collect::<Vec<_>>(),
        ),
        (
            EntityKind::Sprint,
            file.sprints.iter().map(|r| &r.row.id).collect(),
        ),
        (
            EntityKind::WorkItem,
            file.items.iter().map(|r| &r.row.id).collect(),
        ),
    ] {
        b.in_file
            .extend(ids.into_iter().map(|id| (kind, map_id(kind, id))));
    }

    // Projects.
    let mut projects: HashMap<String, ProjectInfo> = HashMap::new();
    let mut project_rows = Vec::new();
    for (order, up) in file.projects.iter().enumerate() {
        let p = &up.row;
        let project = project(p).map_err(|e| up.err(e))?;
        projects.entry(project.id.clone()).or_insert(ProjectInfo {
            key: p.key.clone(),
            created_at: project.created_at,
            created_by: project.created_by.clone(),
            order,
        });
        b.imported.insert((EntityKind::Project, project.id.clone()));
        project_rows.push((up.place.clone(), project));
    }

    // Sprints and swim lanes: their project.
    let mut sprint_rows = Vec::new();
    for up in &file.sprints {
        let s = &up.row;
        let name = format!("{:?}", s.name);
        let sprint = sprint(s).map_err(|e| up.err(e))?;
        if !projects.contains_key(&sprint.project_id) {
            b.dangling(
                EntityKind::Sprint,
                name,
                &up.at,
                ("project_id", EntityKind::Project, &s.project_id),
                false,
            );
            continue;
        }
        b.imported.insert((EntityKind::Sprint, sprint.id.clone()));
        sprint_rows.push((up.place.clone(), sprint));
    }
    let mut lane_rows = Vec::new();
    for up in &file.lanes {
        let l = &up.row;
        let project_id =
            id("project_id", EntityKind::Project, &l.project_id).map_err(|e| up.err(e))?;
        let Some(info) = projects.get(&project_id) else {
            b.dangling(
                EntityKind::SwimLane,
                format!("{:?}", l.name),
                &up.at,
                ("project_id", EntityKind::Project, &l.project_id),
                false,
            );
            continue;
        };
        let lane = swim_lane(l, project_id, &info.created_by).map_err(|e| up.err(e))?;
        lane_rows.push((up.place.clone(), lane));
    }

    // Work items: their project first, so that parents can be looked up among the kept.
    let mut items: Vec<(String, v1::WorkItem, &Up<UpWorkItem>)> = Vec::new();
    for up in &file.items {
        let w = &up.row;
        let label = w
            .display_key
            .clone()
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| format!("id {}", w.id));
        let item = work_item(w).map_err(|e| up.err(e))?;
        let Some(info) = projects.get(&item.project_id) else {
            b.dangling(
                EntityKind::WorkItem,
                label,
                &up.at,
                ("project_id", EntityKind::Project, &w.project_id),
                false,
            );
            continue;
        };
        let key = format!("{}-{}", info.key, item.number);
        if let Some(given) = w.display_key.as_deref().filter(|k| *k != key) {
            return Err(up.err(Error::invalid(
                "display_key",
                format!(
                    "is {given:?}, but project key and item_number make {key:?} \
                     (pm-server derives display keys and could not keep this one)"
                ),
            )));
        }
        b.imported.insert((EntityKind::WorkItem, item.id.clone()));
        items.push((up.place.clone(), item, up));
    }
    let mut item_keys: HashMap<String, (String, String)> = HashMap::new();
    for (_, item, _) in &items {
        let key = format!("{}-{}", projects[&item.project_id].key, item.number);
        item_keys.insert(item.id.clone(), (item.project_id.clone(), key));
    }
    for (_, item, up) in &mut items {
        let key = &item_keys[&item.id].1;
        if let Some(parent) = up.row.parent_id.as_deref() {
            if !b.has(EntityKind::WorkItem, parent) {
                b.dangling(
                    EntityKind::WorkItem,
                    key.clone(),
                    &up.at,
                    ("parent_id", EntityKind::WorkItem, parent),
                    true,
                );
                item.parent_id = None;
            }
        }
        if let Some(sprint) = up.row.sprint_id.as_deref() {
            if !b.has(EntityKind::Sprint, sprint) {
                b.dangling(
                    EntityKind::WorkItem,
                    key.clone(),
                    &up.at,
                    ("sprint_id", EntityKind::Sprint, sprint),
                    true,
                );
                item.sprint_id = None;
            }
        }
    }
    let mut items: Vec<(String, v1::WorkItem)> =
        items.into_iter().map(|(place, w, _)| (place, w)).collect();
    parents_first(&mut items, &projects);

    // The rows on work items: their item (and through it, their project).
    let item_name = |raw: &str| -> String {
        item_keys
            .get(&map_id(EntityKind::WorkItem, raw))
            .map_or_else(|| "?".to_owned(), |(_, key)| key.clone())
    };
    let mut comment_rows = Vec::new();
    for up in &file.comments {
        let c = &up.row;
        let item_id =
            id("work_item_id", EntityKind::WorkItem, &c.work_item_id).map_err(|e| up.err(e))?;
        let Some((project_id, key)) = item_keys.get(&item_id) else {
            b.dangling(
                EntityKind::Comment,
                c.id.clone(),
                &up.at,
                ("work_item_id", EntityKind::WorkItem, &c.work_item_id),
                false,
            );
            continue;
        };
        let comment = comment(c, project_id.clone(), item_id.clone()).map_err(|e| up.err(e))?;
        comment_rows.push((format!("{} on {key}", up.place), comment));
    }
    let mut dependency_rows = Vec::new();
    for up in &file.dependencies {
        let d = &up.row;
        let name = format!(
            "{} ({} blocks {})",
            d.id,
            item_name(&d.blocking_item_id),
            item_name(&d.blocked_item_id)
        );
        let mut missing = false;
        for (field, raw) in [
            ("blocking_item_id", &d.blocking_item_id),
            ("blocked_item_id", &d.blocked_item_id),
        ] {
            if !b.has(EntityKind::WorkItem, raw) {
                b.dangling(
                    EntityKind::Dependency,
                    name.clone(),
                    &up.at,
                    (field, EntityKind::WorkItem, raw),
                    false,
                );
                missing = true;
            }
        }
        if missing {
            continue;
        }
        let blocking = map_id(EntityKind::WorkItem, &d.blocking_item_id);
        let project_id = item_keys[&blocking].0.clone();
        let dependency = dependency(d, project_id).map_err(|e| up.err(e))?;
        dependency_rows.push((format!("{} ({name})", up.at), dependency));
    }
    let mut time_rows = Vec::new();
    for up in &file.time_entries {
        let t = &up.row;
        let item_id =
            id("work_item_id", EntityKind::WorkItem, &t.work_item_id).map_err(|e| up.err(e))?;
        let Some((project_id, key)) = item_keys.get(&item_id) else {
            b.dangling(
                EntityKind::TimeEntry,
                t.id.clone(),
                &up.at,
                ("work_item_id", EntityKind::WorkItem, &t.work_item_id),
                false,
            );
            continue;
        };
        let entry = time_entry(t, project_id.clone(), item_id.clone()).map_err(|e| up.err(e))?;
        time_rows.push((format!("{} on {key}", up.place), entry));
    }

    if !b.skipped.is_empty() && !skip_dangling {
        let list: Vec<String> = b
            .skipped
            .iter()
            .map(|d| format!("  {}", refusal(d)))
            .collect();
        return Err(Error::FailedPrecondition(format!(
            "{} dangling reference(s), nothing imported (--skip-dangling imports without them):\n{}",
            b.skipped.len(),
            list.join("\n")
        )));
    }

    let mut rows = Rows {
        projects: project_rows,
        members: Vec::new(),
        sprints: sprint_rows,
        lanes: lane_rows,
        items,
        comments: comment_rows,
        dependencies: dependency_rows,
        time_entries: time_rows,
    };
    rows.members = members(&rows, &projects);
    let notes = next_number_notes(&file, &rows, &projects);
    let mut data = rows.into_dataset(&projects);
    data.header = Some(Header {
        format: FORMAT.into(),
        version: SCHEMA_VERSION as u32,
        tenant: String::new(),
        schema_version,
        head_seq: data.changes.len() as u64,
    });
    Ok(Conversion {
        data,
        exported_at: file.exported_at,
        exported_by: file.exported_by,
        skipped: b.skipped,
        notes,
    })
}

/// The converted rows, each with its place, per kind in change-log order.
struct Rows {
    projects: Vec<(String, v1::Project)>,
    members: Vec<(String, v1::ProjectMember)>,
    sprints: Vec<(String, v1::Sprint)>,
    lanes: Vec<(String, v1::SwimLane)>,
    items: Vec<(String, v1::WorkItem)>,
    comments: Vec<(String, v1::Comment)>,
    dependencies: Vec<(String, v1::Dependency)>,
    time_entries: Vec<(String, v1::TimeEntry)>,
}

impl Rows {
    /// The dataset: the rows, a created event for each (in the order of the fields above),
    /// and a place for each row and each event.
    fn into_dataset(self, projects: &HashMap<String, ProjectInfo>) -> Dataset {
        let mut data = Dataset::default();
        let mut log = Log::default();
        for (place, row) in self.projects {
            let line = log.row(&mut data, place, &row, None);
            data.projects.push((line, row));
        }
        for (place, row) in self.members {
            let line = log.row(&mut data, place, &row, None);
            data.members.push((line, row));
        }
        for (place, row) in self.sprints {
            let line = log.row(&mut data, place, &row, None);
            data.sprints.push((line, row));
        }
        for (place, row) in self.lanes {
            let line = log.row(&mut data, place, &row, None);
            data.lanes.push((line, row));
        }
        for (place, row) in self.items {
            let key = &projects[&row.project_id].key;
            let line = log.row(&mut data, place, &row, Some(key));
            data.items.push((line, row));
        }
        for (place, row) in self.comments {
            let line = log.row(&mut data, place, &row, None);
            data.comments.push((line, row));
        }
        for (place, row) in self.dependencies {
            let line = log.row(&mut data, place, &row, None);
            data.dependencies.push((line, row));
        }
        for (place, row) in self.time_entries {
            let line = log.row(&mut data, place, &row, None);
            data.time_entries.push((line, row));
        }
        for (place, event) in log.events {
            data.places.push(place);
            data.changes.push((data.places.len(), event));
        }
        data
    }
}

/// Sorts work items parents before children: by depth in the hierarchy, then project
/// (file order), then number.
fn parents_first(items: &mut [(String, v1::WorkItem)], projects: &HashMap<String, ProjectInfo>) {
    let parents: HashMap<String, Option<String>> = items
        .iter()
        .map(|(_, w)| (w.id.clone(), w.parent_id.clone()))
        .collect();
    let depth = |id: &str| -> usize {
        let mut depth = 0;
        let mut at = id;
        // Bounded: a cycle is refused by validation later; here it must only end.
        while let Some(Some(parent)) = parents.get(at) {
            depth += 1;
            if depth > parents.len() {
                break;
            }
            at = parent;
        }
        depth
    };
    items.sort_by_cached_key(|(_, w)| (depth(&w.id), projects[&w.project_id].order, w.number));
}

/// The members of each project: every user its rows refer to (authors, assignees, time
/// entry users); the project's creator as admin and first, the others as editors by id.
fn members(
    rows: &Rows,
    projects: &HashMap<String, ProjectInfo>,
) -> Vec<(String, v1::ProjectMember)> {
    // Pairs of (project, user), every reference of every row.
    let mut refs: Vec<(&str, &str)> = Vec::new();
    for (_, p) in &rows.projects {
        refs.extend([
            (p.id.as_str(), p.created_by.as_str()),
            (&p.id, &p.updated_by),
        ]);
    }
    for (_, s) in &rows.sprints {
        refs.extend([
            (s.project_id.as_str(), s.created_by.as_str()),
            (&s.project_id, &s.updated_by),
        ]);
    }
    for (_, w) in &rows.items {
        refs.extend([
            (w.project_id.as_str(), w.created_by.as_str()),
            (&w.project_id, &w.updated_by),
        ]);
        refs.extend(w.assignee_id.as_deref().map(|a| (w.project_id.as_str(), a)));
    }
    for (_, c) in &rows.comments {
        refs.extend([
            (c.project_id.as_str(), c.created_by.as_str()),
            (&c.project_id, &c.updated_by),
        ]);
    }
    for (_, d) in &rows.dependencies {
        refs.push((&d.project_id, &d.created_by));
    }
    for (_, t) in &rows.time_entries {
        refs.push((&t.project_id, &t.user_id));
    }
    let mut users: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for (project, user) in refs {
        users.entry(project).or_default().insert(user);
    }
    let mut members = Vec::new();
    for (_, p) in &rows.projects {
        let info = &projects[&p.id];
        let mut users: Vec<&str> = users
            .get(p.id.as_str())
            .into_iter()
            .flatten()
            .copied()
            .collect();
        users.sort_by_key(|u| (*u != info.created_by, *u));
        for user in users {
            let role = if user == info.created_by {
                Role::Admin
            } else {
                Role::Editor
            };
            members.push((
                format!("project_member (user {user} of project {})", info.key),
                v1::ProjectMember {
                    project_id: p.id.clone(),
                    user_id: user.to_owned(),
                    role: v1::ProjectRole::from(role).into(),
                    version: 1,
                    created_at: info.created_at,
                    created_by: info.created_by.clone(),
                    updated_at: info.created_at,
                    updated_by: info.created_by.clone(),
                    deleted_at: None,
                    // Filled in by queries.
                    display_name: String::new(),
                },
            ));
        }
    }
    members
}

/// A note for each project whose next item the upstream would number differently.
fn next_number_notes(
    file: &File,
    rows: &Rows,
    projects: &HashMap<String, ProjectInfo>,
) -> Vec<String> {
    let mut notes = Vec::new();
    for up in &file.projects {
        let id = map_id(EntityKind::Project, &up.row.id);
        let (Some(next), Some(info)) = (up.row.next_work_item_number, projects.get(&id)) else {
            continue;
        };
        let highest = rows
            .items
            .iter()
            .filter(|(_, w)| w.project_id == id)
            .map(|(_, w)| w.number)
            .max()
            .unwrap_or(0);
        if u64::try_from(next).ok() != Some(highest + 1) {
            notes.push(format!(
                "project {}: the upstream would number its next item {next}; pm-server numbers \
                 it {} (after the highest number imported)",
                info.key,
                highest + 1
            ));
        }
    }
    notes
}

/// How a dangling reference reads in a refusal.
fn refusal(d: &Dangling) -> String {
    let missing = if d.target_skipped {
        "is not imported"
    } else {
        "is not in the file"
    };
    format!(
        "{} {} ({}): {} refers to {} {}, which {missing}",
        d.kind, d.name, d.place, d.field, d.target, d.target_id
    )
}

/// The change log being built: one created event per row.
#[derive(Default)]
struct Log {
    events: Vec<(String, v1::Event)>,
}

impl Log {
    /// Adds `row` (from `place`) to the places, and its created event; the row's line.
    fn row<R: Entity>(
        &mut self,
        data: &mut Dataset,
        place: String,
        row: &R,
        project_key: Option<&str>,
    ) -> usize {
        let seq = self.events.len() as u64 + 1;
        let (at, actor, ..) = row.audit();
        let actor = actor.to_owned();
        let entity = match project_key {
            Some(key) => row.clone().with_project_key(key),
            None => row.clone(),
        };
        let event = Change::created(&entity).into_event(seq, at, &actor);
        self.events
            .push((format!("change seq {seq} (created {place})"), event));
        data.places.push(place);
        data.places.len()
    }
}

// --- One conversion per kind; errors name the field, the caller adds the row. ---

fn project(p: &UpProject) -> Result<v1::Project> {
    Ok(v1::Project {
        id: id("id", EntityKind::Project, &p.id)?,
        key: p.key.clone(),
        name: p.title.clone(),
        description: p.description.clone().unwrap_or_default(),
        status: v1::ProjectStatus::from(kinds::ProjectStatus::parse("status", &p.status)?).into(),
        version: version("version", p.version)?,
        created_at: millis("created_at", p.created_at)?,
        created_by: user("created_by", &p.created_by)?,
        updated_at: millis("updated_at", p.updated_at)?,
        updated_by: user("updated_by", &p.updated_by)?,
        deleted_at: opt_millis("deleted_at", p.deleted_at)?,
    })
}

fn sprint(s: &UpSprint) -> Result<v1::Sprint> {
    Ok(v1::Sprint {
        id: id("id", EntityKind::Sprint, &s.id)?,
        project_id: id("project_id", EntityKind::Project, &s.project_id)?,
        name: s.name.clone(),
        goal: s.goal.clone().unwrap_or_default(),
        status: v1::SprintStatus::from(kinds::SprintStatus::parse("status", &s.status)?).into(),
        start_at: opt_millis("start_date", s.start_date)?,
        end_at: opt_millis("end_date", s.end_date)?,
        version: version("version", s.version)?,
        created_at: millis("created_at", s.created_at)?,
        created_by: user("created_by", &s.created_by)?,
        updated_at: millis("updated_at", s.updated_at)?,
        updated_by: user("updated_by", &s.updated_by)?,
        deleted_at: opt_millis("deleted_at", s.deleted_at)?,
    })
}

fn swim_lane(l: &UpSwimLane, project_id: String, author: &str) -> Result<v1::SwimLane> {
    Ok(v1::SwimLane {
        id: id("id", EntityKind::SwimLane, &l.id)?,
        project_id,
        name: l.name.clone(),
        status: v1::WorkItemStatus::from(kinds::WorkItemStatus::parse(
            "status_value",
            &l.status_value,
        )?)
        .into(),
        position: small("position", l.position)?,
        wip_limit: None,
        // The upstream has no policy: its limits were only shown.
        wip_policy: v1::WipPolicy::None.into(),
        version: 1,
        created_at: millis("created_at", l.created_at)?,
        created_by: author.to_owned(),
        updated_at: millis("updated_at", l.updated_at)?,
        updated_by: author.to_owned(),
        deleted_at: opt_millis("deleted_at", l.deleted_at)?,
    })
}

fn work_item(w: &UpWorkItem) -> Result<v1::WorkItem> {
    let number = small("item_number", w.item_number)?;
    if number == 0 {
        return Err(Error::invalid("item_number", "must be at least 1"));
    }
    let position = small("position", w.position)?;
    Ok(v1::WorkItem {
        id: id("id", EntityKind::WorkItem, &w.id)?,
        project_id: id("project_id", EntityKind::Project, &w.project_id)?,
        number: number.into(),
        display_key: String::new(),
        item_type: v1::WorkItemType::from(kinds::WorkItemType::parse("item_type", &w.item_type)?)
            .into(),
        parent_id: w
            .parent_id
            .as_deref()
            .map(|p| id("parent_id", EntityKind::WorkItem, p))
            .transpose()?,
        title: w.title.clone(),
        description: w.description.clone().unwrap_or_default(),
        status: v1::WorkItemStatus::from(kinds::WorkItemStatus::parse("status", &w.status)?).into(),
        priority: v1::Priority::from(kinds::Priority::parse("priority", &w.priority)?).into(),
        story_points: w
            .story_points
            .map(|p| small("story_points", p))
            .transpose()?,
        assignee_id: w
            .assignee_id
            .as_deref()
            .map(|a| user("assignee_id", a))
            .transpose()?,
        sprint_id: w
            .sprint_id
            .as_deref()
            .map(|s| id("sprint_id", EntityKind::Sprint, s))
            .transpose()?,
        rank: rank::for_position(position, number),
        version: version("version", w.version)?,
        created_at: millis("created_at", w.created_at)?,
        created_by: user("created_by", &w.created_by)?,
        updated_at: millis("updated_at", w.updated_at)?,
        updated_by: user("updated_by", &w.updated_by)?,
        deleted_at: opt_millis("deleted_at", w.deleted_at)?,
        // Derived by queries.
        blocked: None,
        assignee_name: String::new(),
    })
}

fn comment(c: &UpComment, project_id: String, work_item_id: String) -> Result<v1::Comment> {
    Ok(v1::Comment {
        id: id("id", EntityKind::Comment, &c.id)?,
        project_id,
        work_item_id,
        content: c.content.clone(),
        version: 1,
        created_at: millis("created_at", c.created_at)?,
        created_by: user("created_by", &c.created_by)?,
        updated_at: millis("updated_at", c.updated_at)?,
        updated_by: user("updated_by", &c.updated_by)?,
        deleted_at: opt_millis("deleted_at", c.deleted_at)?,
    })
}

fn dependency(d: &UpDependency, project_id: String) -> Result<v1::Dependency> {
    let created_at = millis("created_at", d.created_at)?;
    let created_by = user("created_by", &d.created_by)?;
    Ok(v1::Dependency {
        id: id("id", EntityKind::Dependency, &d.id)?,
        project_id,
        blocking_item_id: id(
            "blocking_item_id",
            EntityKind::WorkItem,
            &d.blocking_item_id,
        )?,
        blocked_item_id: id("blocked_item_id", EntityKind::WorkItem, &d.blocked_item_id)?,
        dependency_type: v1::DependencyType::from(kinds::DependencyType::parse(
            "dependency_type",
            &d.dependency_type,
        )?)
        .into(),
        version: 1,
        created_at,
        created_by: created_by.clone(),
        updated_at: created_at,
        updated_by: created_by,
        deleted_at: opt_millis("deleted_at", d.deleted_at)?,
    })
}

fn time_entry(t: &UpTimeEntry, project_id: String, work_item_id: String) -> Result<v1::TimeEntry> {
    let user_id = user("user_id", &t.user_id)?;
    Ok(v1::TimeEntry {
        id: id("id", EntityKind::TimeEntry, &t.id)?,
        project_id,
        work_item_id,
        user_id: user_id.clone(),
        started_at: millis("started_at", t.started_at)?,
        ended_at: opt_millis("ended_at", t.ended_at)?,
        description: t.description.clone().unwrap_or_default(),
        version: 1,
        created_at: millis("created_at", t.created_at)?,
        created_by: user_id.clone(),
        updated_at: millis("updated_at", t.updated_at)?,
        updated_by: user_id,
        deleted_at: opt_millis("deleted_at", t.deleted_at)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_kept_and_other_ids_map_to_stable_v5_uuids() {
        // The RFC's own example of the algorithm (uuid crate fixture).
        assert_eq!(
            uuid_v5(&Uuid::NAMESPACE_DNS, b"rust-lang.org").to_string(),
            "c66bbb60-d62e-5f17-a399-3a0bd237c503"
        );
        let id = "8153adb6-3ac7-45c0-b88a-cdf6d5e3977d";
        assert_eq!(map_id(EntityKind::WorkItem, id), id);
        assert_eq!(map_id(EntityKind::WorkItem, &id.to_uppercase()), id);
        let mapped = map_id(EntityKind::WorkItem, "17");
        assert_eq!(mapped, map_id(EntityKind::WorkItem, "17"), "deterministic");
        assert_ne!(mapped, map_id(EntityKind::Comment, "17"), "per kind");
        let parsed = Uuid::parse_str(&mapped).unwrap();
        assert_eq!(parsed.get_version_num(), 5);
        assert!(crate::entity::check_id("id", &mapped).is_ok());
    }

    #[test]
    fn seconds_become_milliseconds_and_bad_times_name_the_field() {
        assert_eq!(
            millis("created_at", 1_770_651_588).unwrap(),
            1_770_651_588_000
        );
        for bad in [-1, i64::MAX, 253_402_300_800] {
            match millis("created_at", bad) {
                Err(Error::InvalidArgument { field, message }) => {
                    assert_eq!(field, "created_at");
                    assert!(message.contains(&bad.to_string()), "{message}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    fn convert_json(json: &str, skip: bool) -> Result<Conversion> {
        convert(json.as_bytes(), skip, 1)
    }

    #[test]
    fn bad_files_are_refused_with_what_is_wrong() {
        let message = |json: &str| convert_json(json, false).unwrap_err().to_string();
        assert!(message("[1]").contains("must be a JSON object"));
        assert!(message("{").contains("is not JSON"));
        assert!(message("{}").contains("schema_version: is missing"));
        assert_eq!(
            message(r#"{"schema_version": 2}"#),
            "schema_version: 2 is not supported (this build reads 1)"
        );
        assert!(message(r#"{"schema_version": 1, "users": []}"#)
            .starts_with("users: is not part of schema_version 1"));
        assert!(message(r#"{"schema_version": 1, "projects": {}}"#)
            .starts_with("projects: must be an array"));
        let unknown = message(r#"{"schema_version": 1, "projects": [{"id": "x", "color": 1}]}"#);
        assert!(
            unknown.starts_with("projects[0] (id x): unknown field `color`"),
            "{unknown}"
        );
    }
}
