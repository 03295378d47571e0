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

use pm_core::kinds::{EntityKind, Role};
use pm_proto::v1;
use sha1::{Digest, Sha1};
use uuid::Uuid;

use crate::entity::Entity;
use crate::error::{Error, Result};
use crate::events::Change;
use crate::export::{Counts, Dataset, Header};

mod assemble;
mod rows;

use assemble::*;
use rows::*;

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

// --- Conversion ---

/// A project as the other rows need it.
pub(super) struct ProjectInfo {
    pub(super) key: String,
    pub(super) created_at: i64,
    pub(super) created_by: String,
    /// Index in file order.
    pub(super) order: usize,
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
