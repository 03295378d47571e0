//! The upstream file's rows as they are read (every field known, `deny_unknown_fields`)
//! and their conversion, one per kind, into pm-server's entities; errors name the field,
//! the caller adds the row.

use std::io::Read;

use pm_core::kinds::{self, EntityKind};
use pm_core::{rank, rules, UserId};
use pm_proto::v1;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{map_id, ARRAYS, HEADER_FIELDS, SCHEMA_VERSION};
use crate::error::{Error, Result};
use crate::export::at_place;

/// A required id field.
pub(super) fn id(field: &str, kind: EntityKind, raw: &str) -> Result<String> {
    if raw.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    Ok(map_id(kind, raw))
}

// --- Field conversions ---

/// Unix seconds to Unix milliseconds.
pub(super) fn millis(field: &str, seconds: i64) -> Result<i64> {
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

pub(super) fn opt_millis(field: &str, seconds: Option<i64>) -> Result<Option<i64>> {
    seconds.map(|s| millis(field, s)).transpose()
}

pub(super) fn version(field: &str, raw: i64) -> Result<u64> {
    u64::try_from(raw)
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| Error::invalid(field, format!("must be at least 1, not {raw}")))
}

pub(super) fn user(field: &str, raw: &str) -> Result<String> {
    Ok(UserId::parse(field, raw)?.as_str().to_owned())
}

pub(super) fn small(field: &str, raw: i64) -> Result<u32> {
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
pub(super) struct UpProject {
    pub(super) id: String,
    pub(super) key: String,
    pub(super) title: String,
    pub(super) description: Option<String>,
    pub(super) status: String,
    pub(super) version: i64,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) created_by: String,
    pub(super) updated_by: String,
    pub(super) next_work_item_number: Option<i64>,
    pub(super) deleted_at: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpWorkItem {
    pub(super) id: String,
    pub(super) display_key: Option<String>,
    pub(super) item_type: String,
    pub(super) title: String,
    pub(super) description: Option<String>,
    pub(super) status: String,
    pub(super) priority: String,
    pub(super) parent_id: Option<String>,
    pub(super) project_id: String,
    pub(super) assignee_id: Option<String>,
    pub(super) sprint_id: Option<String>,
    pub(super) story_points: Option<i64>,
    pub(super) item_number: i64,
    pub(super) position: i64,
    pub(super) version: i64,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) created_by: String,
    pub(super) updated_by: String,
    pub(super) deleted_at: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpSprint {
    pub(super) id: String,
    pub(super) project_id: String,
    pub(super) name: String,
    pub(super) goal: Option<String>,
    pub(super) start_date: Option<i64>,
    pub(super) end_date: Option<i64>,
    pub(super) status: String,
    pub(super) version: i64,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) created_by: String,
    pub(super) updated_by: String,
    pub(super) deleted_at: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpComment {
    pub(super) id: String,
    pub(super) work_item_id: String,
    pub(super) content: String,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) created_by: String,
    pub(super) updated_by: String,
    pub(super) deleted_at: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpSwimLane {
    pub(super) id: String,
    pub(super) project_id: String,
    pub(super) name: String,
    pub(super) status_value: String,
    pub(super) position: i64,
    /// Known, not stored: pm-server has no default lanes.
    #[serde(rename = "is_default")]
    pub(super) _is_default: Option<IgnoredAny>,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) deleted_at: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpDependency {
    pub(super) id: String,
    pub(super) blocking_item_id: String,
    pub(super) blocked_item_id: String,
    pub(super) dependency_type: String,
    pub(super) created_at: i64,
    pub(super) created_by: String,
    pub(super) deleted_at: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpTimeEntry {
    pub(super) id: String,
    pub(super) work_item_id: String,
    pub(super) user_id: String,
    pub(super) started_at: i64,
    pub(super) ended_at: Option<i64>,
    /// Known, not stored: follows from the times.
    #[serde(rename = "duration_seconds")]
    pub(super) _duration_seconds: Option<IgnoredAny>,
    pub(super) description: Option<String>,
    /// Known, not stored: follows from `ended_at`.
    #[serde(rename = "is_running")]
    pub(super) _is_running: Option<IgnoredAny>,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) deleted_at: Option<i64>,
}

/// One row of the file with its place.
pub(super) struct Up<T> {
    /// Where it is: `work_items[3]`.
    pub(super) at: String,
    /// Where it is and what it is called: `work_items[3] (PONE-13)`, `comments[0] (id ...)`.
    pub(super) place: String,
    pub(super) row: T,
}

impl<T> Up<T> {
    /// An error about a field of this row.
    pub(super) fn err(&self, error: impl Into<Error>) -> Error {
        at_place(self.place.clone(), error)
    }
}

/// The rows of array `name`; a missing or null array is empty.
pub(super) fn rows<T: DeserializeOwned>(
    root: &mut Map<String, Value>,
    name: &str,
) -> Result<Vec<Up<T>>> {
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
pub(super) struct File {
    pub(super) exported_at: Option<String>,
    pub(super) exported_by: Option<String>,
    pub(super) projects: Vec<Up<UpProject>>,
    pub(super) sprints: Vec<Up<UpSprint>>,
    pub(super) lanes: Vec<Up<UpSwimLane>>,
    pub(super) items: Vec<Up<UpWorkItem>>,
    pub(super) comments: Vec<Up<UpComment>>,
    pub(super) dependencies: Vec<Up<UpDependency>>,
    pub(super) time_entries: Vec<Up<UpTimeEntry>>,
}

impl File {
    pub(super) fn read<R: Read>(input: R) -> Result<File> {
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

// --- One conversion per kind; errors name the field, the caller adds the row. ---

pub(super) fn project(p: &UpProject) -> Result<v1::Project> {
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

pub(super) fn sprint(s: &UpSprint) -> Result<v1::Sprint> {
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

pub(super) fn swim_lane(l: &UpSwimLane, project_id: String, author: &str) -> Result<v1::SwimLane> {
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

pub(super) fn work_item(w: &UpWorkItem) -> Result<v1::WorkItem> {
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

pub(super) fn comment(
    c: &UpComment,
    project_id: String,
    work_item_id: String,
) -> Result<v1::Comment> {
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

pub(super) fn dependency(d: &UpDependency, project_id: String) -> Result<v1::Dependency> {
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

pub(super) fn time_entry(
    t: &UpTimeEntry,
    project_id: String,
    work_item_id: String,
) -> Result<v1::TimeEntry> {
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
}
