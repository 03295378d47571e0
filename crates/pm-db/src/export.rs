//! The export format of a tenant (`pm-server export` / `import`), engine-neutral: its lines,
//! and the parsed, validated dataset an engine imports. The SQLite engine's reading and
//! loading is [`crate::sqlite::transfer`].
//!
//! # Format (version 1)
//! The first line is the header:
//! `{"format":"pm-server-export","version":1,"tenant":"acme","schema_version":...,"head_seq":N}`.
//! Every further line is `{"kind":K,"data":{...}}`, one stored row each, in this order:
//! `project`, `project_member`, `sprint`, `work_item`, `comment`, `time_entry`, `dependency`,
//! `swim_lane`, `llm_context` (each by primary key), then `change` (the change log, by seq).
//! `data` is the row as its protocol message (`pm.v1.Project`, ..., `pm.v1.Event` for
//! changes) in the proto3 JSON mapping that `pm-server client` also speaks: camelCase field
//! names, enum names, 64-bit integers as strings, absent optional fields left out. Every
//! stored column is there (soft-delete time, version, audit fields, ranks); a work item's
//! `displayKey` is derived and not written. The change log is included, not rebuilt: each
//! stored event is decoded and written whole, and import encodes it again, which gives the
//! stored bytes back (prost encodes deterministically). Idempotency answers (kept 24 hours
//! for retried commands) are not exported. Export reads in one read transaction: a
//! consistent snapshot, safe while a server serves the tenant.
//!
//! # Import
//! All lines are parsed and validated before anything is written: every row against its
//! entity's rules, the same ones commands apply ([`Entity::validate`]), and then what only the
//! whole file can tell ([`Dataset::validate`]: references, hierarchy, cycles, admins, a gapless
//! log). An engine then loads the rows in one transaction, each row on its own so that a
//! constraint of the database (unique keys and numbers, one active sprint per project, one
//! running timer per user) is reported with its line. All or nothing: one bad row and
//! nothing is written, and a new tenant is not even created.
//!
//! A tenant that already has content (projects or changes) is refused unless `replace` is
//! set, which deletes its content and imports in the same transaction. Merging is not
//! supported: two change logs cannot be merged without renumbering changes that clients
//! have already seen. `dry_run` does everything in a transaction that is rolled back (for a
//! tenant without a database, in memory) and reports what would be imported. Import takes
//! the tenant's lock exclusively, so a tenant a running server has open is refused (it
//! would bypass the tenant's single writer); so is a dry run of an existing tenant.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};

use pm_core::kinds::{ChangeAction, EntityKind, WorkItemType};
use pm_core::{rules, UserId};
use pm_proto::{convert, v1};
use serde::{Deserialize, Serialize};

use crate::entity::Entity;
use crate::error::{Error, Result};

/// The `format` of the header line.
pub const FORMAT: &str = "pm-server-export";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The `kind` of change-log lines.
pub const CHANGE: &str = "change";
/// Every line kind, in file order.
pub const KINDS: [&str; 10] = [
    "project",
    "project_member",
    "sprint",
    "work_item",
    "comment",
    "time_entry",
    "dependency",
    "swim_lane",
    "llm_context",
    CHANGE,
];

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// The tenant it was exported from.
    pub tenant: String,
    /// The schema version of that tenant's database.
    pub schema_version: i64,
    /// The latest change number in the export.
    pub head_seq: u64,
}

/// Lines per kind, in [`KINDS`] order.
pub type Counts = Vec<(&'static str, u64)>;

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    /// The header line.
    pub header: Header,
    /// Lines per kind.
    pub counts: Counts,
}

#[derive(Serialize)]
pub(crate) struct Line<T> {
    /// The row's kind.
    pub(crate) kind: &'static str,
    /// The row.
    pub(crate) data: T,
}

pub(crate) fn write_json<W: Write, T: Serialize>(out: &mut W, value: &T) -> Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::other)?;
    out.write_all(b"\n")?;
    Ok(())
}

// --- Import ---

/// How to import.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Validate and load in a transaction that is rolled back: nothing is written.
    pub dry_run: bool,
    /// Replace the content of a tenant that has some (otherwise refused).
    pub replace: bool,
}

/// What an import did (or, for a dry run, would do).
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// The header of the file.
    pub source: Header,
    /// Rows imported per kind.
    pub counts: Counts,
    /// Whether the tenant had content that was replaced.
    pub replaced: bool,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// A parsed export: rows with their line numbers.
#[derive(Debug, Default)]
pub(crate) struct Dataset {
    pub(crate) header: Option<Header>,
    pub(crate) projects: Vec<(usize, v1::Project)>,
    pub(crate) members: Vec<(usize, v1::ProjectMember)>,
    pub(crate) sprints: Vec<(usize, v1::Sprint)>,
    pub(crate) items: Vec<(usize, v1::WorkItem)>,
    pub(crate) comments: Vec<(usize, v1::Comment)>,
    pub(crate) time_entries: Vec<(usize, v1::TimeEntry)>,
    pub(crate) dependencies: Vec<(usize, v1::Dependency)>,
    pub(crate) lanes: Vec<(usize, v1::SwimLane)>,
    pub(crate) contexts: Vec<(usize, v1::LlmContext)>,
    pub(crate) changes: Vec<(usize, v1::Event)>,
    /// Where each row came from, when not from a JSON Lines file: the "line" of a row is
    /// then an index into this list, plus one (see [`Dataset::at`]).
    pub(crate) places: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    kind: String,
    data: serde_json::Value,
}

/// An error about line `line` (1-based), for a row of `kind`.
pub(crate) fn at_line(line: usize, kind: &str, error: impl Into<Error>) -> Error {
    let place = if kind.is_empty() {
        format!("line {line}")
    } else {
        format!("line {line} ({kind})")
    };
    at_place(place, error)
}

/// An error about the row at `place` (e.g. `line 6 (comment)`): a field error names the
/// place before the field.
pub(crate) fn at_place(place: String, error: impl Into<Error>) -> Error {
    match error.into() {
        Error::InvalidArgument { field, message } if field.is_empty() => {
            Error::invalid(place, message)
        }
        Error::InvalidArgument { field, message } => {
            Error::invalid(format!("{place} {field}"), message)
        }
        other if other.is_internal() => other,
        other => Error::invalid(place, other.to_string()),
    }
}

fn parse_data<T: serde::de::DeserializeOwned>(
    line: usize,
    kind: &str,
    data: serde_json::Value,
) -> Result<T> {
    serde_json::from_value(data).map_err(|e| at_line(line, kind, Error::invalid("", e.to_string())))
}

impl Dataset {
    /// Parses an export of this build's data model (its `schema_version` is the SQLite
    /// migrations' numbering, whichever engine wrote it) and validates it whole.
    pub(crate) fn read_valid<R: BufRead>(input: R) -> Result<Dataset> {
        let data = Dataset::read(input, crate::sqlite::migrations::embedded_version())?;
        data.validate()?;
        Ok(data)
    }

    /// Parses an export; `newest_schema` is the newest schema version this build knows.
    pub(crate) fn read<R: BufRead>(input: R, newest_schema: i64) -> Result<Dataset> {
        let mut data = Dataset::default();
        for (index, text) in input.lines().enumerate() {
            let line = index + 1;
            let text = text?;
            if line == 1 {
                let header: Header = serde_json::from_str(&text).map_err(|e| {
                    at_line(
                        1,
                        "",
                        Error::invalid("", format!("not a pm-server export header: {e}")),
                    )
                })?;
                if header.format != FORMAT {
                    return Err(at_line(
                        1,
                        "",
                        Error::invalid("format", format!("must be {FORMAT:?}")),
                    ));
                }
                if header.version != FORMAT_VERSION {
                    return Err(at_line(
                        1,
                        "",
                        Error::invalid(
                            "version",
                            format!("format version {} is not supported (this build reads {FORMAT_VERSION})", header.version),
                        ),
                    ));
                }
                if header.schema_version > newest_schema {
                    return Err(at_line(
                        1,
                        "",
                        Error::invalid(
                            "schema_version",
                            format!("is newer than this pm-server knows ({newest_schema})"),
                        ),
                    ));
                }
                data.header = Some(header);
                continue;
            }
            let raw: RawLine = serde_json::from_str(&text).map_err(|e| {
                at_line(
                    line,
                    "",
                    Error::invalid("", format!("not a {{\"kind\", \"data\"}} line: {e}")),
                )
            })?;
            let kind = raw.kind.as_str();
            match kind {
                "project" => data
                    .projects
                    .push((line, parse_data(line, kind, raw.data)?)),
                "project_member" => data.members.push((line, parse_data(line, kind, raw.data)?)),
                "sprint" => data.sprints.push((line, parse_data(line, kind, raw.data)?)),
                "work_item" => {
                    let mut item: v1::WorkItem = parse_data(line, kind, raw.data)?;
                    // Derived (from the project key, from dependencies); never stored.
                    item.display_key.clear();
                    item.blocked = None;
                    data.items.push((line, item));
                }
                "comment" => data
                    .comments
                    .push((line, parse_data(line, kind, raw.data)?)),
                "time_entry" => data
                    .time_entries
                    .push((line, parse_data(line, kind, raw.data)?)),
                "dependency" => data
                    .dependencies
                    .push((line, parse_data(line, kind, raw.data)?)),
                "swim_lane" => {
                    let mut lane: v1::SwimLane = parse_data(line, kind, raw.data)?;
                    // Exports from before WIP policies (schema 20261121000001) name none:
                    // those lanes have the default.
                    if lane.wip_policy == i32::from(v1::WipPolicy::Unspecified) {
                        lane.wip_policy = v1::WipPolicy::None.into();
                    }
                    data.lanes.push((line, lane));
                }
                "llm_context" => data
                    .contexts
                    .push((line, parse_data(line, kind, raw.data)?)),
                CHANGE => data.changes.push((line, parse_data(line, kind, raw.data)?)),
                other => {
                    return Err(at_line(
                        line,
                        "",
                        Error::invalid("kind", format!("unknown kind {other:?}")),
                    ))
                }
            }
        }
        if data.header.is_none() {
            return Err(Error::invalid("line 1", "the input is empty"));
        }
        Ok(data)
    }

    /// An error about the row with line `line`, of `kind`: its line, or the place it came
    /// from when the dataset was built from another format.
    pub(crate) fn at(&self, line: usize, kind: &str, error: impl Into<Error>) -> Error {
        match line.checked_sub(1).and_then(|i| self.places.get(i)) {
            Some(place) => at_place(place.clone(), error),
            None => at_line(line, kind, error),
        }
    }

    /// The header line.
    pub(crate) fn header(&self) -> &Header {
        self.header
            .as_ref()
            .expect("read() refuses input without a header")
    }

    /// Rows per kind, in file order.
    pub(crate) fn counts(&self) -> Counts {
        let lens = [
            self.projects.len(),
            self.members.len(),
            self.sprints.len(),
            self.items.len(),
            self.comments.len(),
            self.time_entries.len(),
            self.dependencies.len(),
            self.lanes.len(),
            self.contexts.len(),
            self.changes.len(),
        ];
        KINDS
            .iter()
            .zip(lens)
            .map(|(kind, n)| (*kind, n as u64))
            .collect()
    }

    /// What importing this dataset did (or, for a dry run, would do).
    pub(crate) fn report(&self, replaced: bool, options: ImportOptions) -> ImportReport {
        ImportReport {
            source: self.header().clone(),
            counts: self.counts(),
            replaced,
            dry_run: options.dry_run,
        }
    }

    /// Checks every row against its entity's rules, then what only the whole file can tell:
    /// ids unique per kind, every reference inside the file and within one project, the
    /// hierarchy's types, each project keeping an admin, no cycle of live `blocks` links, and
    /// a gapless change log ending at the header's `head_seq`. Rules that held only when a
    /// command ran (a parent or sprint being live at the time, sprint status transitions)
    /// are not checked: later changes legitimately break them.
    pub(crate) fn validate(&self) -> Result<()> {
        let projects = self.rows_valid(&self.projects, |_| Ok(()))?;
        let project = |field: &str, id: &str| -> Result<()> {
            if projects.contains_key(id) {
                Ok(())
            } else {
                Err(Error::invalid(field, "is not a project of this export"))
            }
        };

        let mut members: HashSet<(&str, &str)> = HashSet::new();
        let mut admins: HashSet<&str> = HashSet::new();
        for (line, m) in &self.members {
            let at = |e: Error| self.at(*line, "project_member", e);
            m.validate().map_err(at)?;
            project("project_id", &m.project_id).map_err(at)?;
            if !members.insert((&m.project_id, &m.user_id)) {
                return Err(at(Error::invalid("user_id", "is listed twice")));
            }
            if m.role == v1::ProjectRole::Admin as i32 {
                admins.insert(&m.project_id);
            }
        }
        for (line, p) in &self.projects {
            if !admins.contains(p.id.as_str()) {
                return Err(self.at(
                    *line,
                    "project",
                    Error::invalid("id", "has no admin member (a project must keep one)"),
                ));
            }
        }

        let sprints = self.rows_valid(&self.sprints, |s| project("project_id", &s.project_id))?;

        let mut items: HashMap<&str, (&str, WorkItemType)> = HashMap::new();
        for (line, w) in &self.items {
            let at = |e: Error| self.at(*line, "work_item", e);
            w.validate().map_err(at)?;
            let item_type = convert::required(
                "item_type",
                convert::work_item_type("item_type", w.item_type),
            )
            .map_err(|e| at(e.into()))?;
            if items.insert(&w.id, (&w.project_id, item_type)).is_some() {
                return Err(at(Error::invalid("id", "is listed twice")));
            }
        }
        for (line, w) in &self.items {
            let at = |e: Error| self.at(*line, "work_item", e);
            project("project_id", &w.project_id).map_err(at)?;
            if let Some(parent) = &w.parent_id {
                let (parent_project, parent_type) =
                    items.get(parent.as_str()).ok_or_else(|| {
                        at(Error::invalid(
                            "parent_id",
                            "is not a work item of this export",
                        ))
                    })?;
                if *parent_project != w.project_id {
                    return Err(at(Error::invalid(
                        "parent_id",
                        "must be a work item of the same project",
                    )));
                }
                // Each level points to a strictly higher one, so no cycle is possible.
                rules::check_parent(items[w.id.as_str()].1, *parent_type)
                    .map_err(|e| at(e.into()))?;
            }
            if let Some(sprint) = &w.sprint_id {
                let same_project = sprints
                    .get(sprint.as_str())
                    .is_some_and(|s| s.project_id == w.project_id);
                if !same_project {
                    return Err(at(Error::invalid(
                        "sprint_id",
                        "must be a sprint of the same project in this export",
                    )));
                }
            }
        }
        let item_in = |field: &str, id: &str, project_id: &str| -> Result<()> {
            match items.get(id) {
                Some((p, _)) if *p == project_id => Ok(()),
                _ => Err(Error::invalid(
                    field,
                    "must be a work item of the same project in this export",
                )),
            }
        };

        self.rows_valid(&self.comments, |c| {
            project("project_id", &c.project_id)?;
            item_in("work_item_id", &c.work_item_id, &c.project_id)
        })?;
        self.rows_valid(&self.time_entries, |t| {
            project("project_id", &t.project_id)?;
            item_in("work_item_id", &t.work_item_id, &t.project_id)
        })?;
        self.rows_valid(&self.dependencies, |d| {
            project("project_id", &d.project_id)?;
            item_in("blocking_item_id", &d.blocking_item_id, &d.project_id)?;
            item_in("blocked_item_id", &d.blocked_item_id, &d.project_id)
        })?;
        self.check_no_blocking_cycle()?;
        self.rows_valid(&self.lanes, |l| project("project_id", &l.project_id))?;
        self.rows_valid(&self.contexts, |c| project("project_id", &c.project_id))?;

        let mut last: Option<u64> = None;
        for (line, e) in &self.changes {
            let at = |err: Error| self.at(*line, CHANGE, err);
            if e.seq == 0 || last.is_some_and(|last| e.seq != last + 1) {
                return Err(at(Error::invalid(
                    "seq",
                    format!(
                        "must follow seq {} without a gap",
                        last.map_or_else(|| "0".to_owned(), |l| l.to_string())
                    ),
                )));
            }
            last = Some(e.seq);
            change_columns(e).map_err(at)?;
            project("projectId", &e.project_id).map_err(at)?;
        }
        let head = self.header().head_seq;
        if last.unwrap_or(0) != head {
            return Err(Error::invalid(
                "head_seq",
                format!(
                    "the header says {head} but the last change is {} (is the file cut short?)",
                    last.unwrap_or(0)
                ),
            ));
        }
        Ok(())
    }

    /// Refuses live `blocks` links that form a cycle (peels off items without incoming
    /// links until none are left; what remains is on or behind a cycle).
    fn check_no_blocking_cycle(&self) -> Result<()> {
        let edges: Vec<&(usize, v1::Dependency)> = self
            .dependencies
            .iter()
            .filter(|(_, d)| {
                d.deleted_at.is_none() && d.dependency_type == v1::DependencyType::Blocks as i32
            })
            .collect();
        let mut incoming: HashMap<&str, usize> = HashMap::new();
        let mut outgoing: HashMap<&str, Vec<&str>> = HashMap::new();
        for (_, d) in &edges {
            *incoming.entry(&d.blocked_item_id).or_default() += 1;
            incoming.entry(&d.blocking_item_id).or_default();
            outgoing
                .entry(&d.blocking_item_id)
                .or_default()
                .push(&d.blocked_item_id);
        }
        let mut ready: Vec<&str> = incoming
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(id, _)| *id)
            .collect();
        while let Some(id) = ready.pop() {
            incoming.remove(id);
            for next in outgoing.get(id).into_iter().flatten() {
                if let Some(n) = incoming.get_mut(next) {
                    *n -= 1;
                    if *n == 0 {
                        ready.push(next);
                    }
                }
            }
        }
        match edges.iter().find(|(_, d)| {
            incoming.contains_key(d.blocking_item_id.as_str())
                && incoming.contains_key(d.blocked_item_id.as_str())
        }) {
            Some((line, _)) => Err(self.at(
                *line,
                "dependency",
                Error::invalid(
                    "blocked_item_id",
                    "is part of a cycle of blocking work items",
                ),
            )),
            None => Ok(()),
        }
    }

    /// Checks each row of one kind against its entity's rules and `cross` (its references),
    /// and that no id is listed twice; the rows by id.
    fn rows_valid<'a, E: Entity>(
        &self,
        rows: &'a [(usize, E)],
        cross: impl Fn(&E) -> Result<()>,
    ) -> Result<HashMap<&'a str, &'a E>> {
        let mut seen: HashMap<&str, (usize, &E)> = HashMap::new();
        for (line, row) in rows {
            let at = |e: Error| self.at(*line, E::KIND.as_str(), e);
            row.validate().map_err(at)?;
            cross(row).map_err(at)?;
            if let Some((first, _)) = seen.insert(row.entity_id(), (*line, row)) {
                let first = match self.places.get(first - 1) {
                    Some(place) => format!("as {place}"),
                    None => format!("on line {first}"),
                };
                return Err(at(Error::invalid(
                    "id",
                    format!("is listed twice (first {first})"),
                )));
            }
        }
        Ok(seen.into_iter().map(|(id, (_, row))| (id, row)).collect())
    }
}

/// The change-log columns of an event, checked like the columns' constraints.
pub(crate) fn change_columns(e: &v1::Event) -> Result<(EntityKind, ChangeAction)> {
    let kind = convert::required(
        "entityType",
        convert::entity_type("entityType", e.entity_type),
    )?;
    let action = convert::required("action", convert::change_action("action", e.action))?;
    rules::check_timestamp("at", e.at)?;
    UserId::parse("actorId", &e.actor_id)?;
    if e.entity_id.is_empty() {
        return Err(Error::invalid("entityId", "is required"));
    }
    if e.change.is_none() {
        return Err(Error::invalid("change", "is required"));
    }
    Ok((kind, action))
}
