//! The stored entities, engine-neutral: one column list per entity, and one rule set.
//!
//! An entity is its protocol message (`pm.v1.Project`, ...). Its column list — declared
//! once, with [`columns!`] — drives everything a storage engine does with its rows (which
//! columns, in which order, how each is read and written) and what a change event describes
//! ([`Entity::fields`]): a column cannot be stored and yet vanish from change events, or the
//! other way round. Every engine stores a column as one of four [`Value`] shapes (text or
//! integer, each maybe null); enums are stored under their domain names (`in_progress`).
//!
//! [`Entity::validate`] is the entity's one rule set: every field rule a row must satisfy,
//! used on the row a create builds, on the row an update produces, and on every imported row.
//! Rules that need other rows (a parent's type, a sprint's project, cycles) are checked by
//! the engine or the importer, which can see them.

mod columns;

use pm_core::kinds::EntityKind;
use pm_core::{rank, rules, text, EntityId, UserId};
use pm_proto::{convert, v1};

pub use columns::{Column, Columns, Shape, Stored, Value};

use crate::error::{Error, Result};

/// Columns that identify or audit a row rather than describe it: change events leave them
/// out (the event itself carries the id, project, actor and time).
const NOT_DESCRIBED: [&str; 7] = [
    "id",
    "project_id",
    "version",
    "created_at",
    "created_by",
    "updated_at",
    "updated_by",
];

/// A stored entity: what every engine and the change log need to know about it.
pub trait Entity: Columns + Clone + Send + Sync + Unpin + 'static {
    /// Its entity type.
    const KIND: EntityKind;
    /// The table holding its rows.
    const TABLE: &'static str;
    /// For messages: "work item".
    const NAME: &'static str;

    /// Every field rule the row must satisfy (rules needing other rows are the engine's).
    fn validate(&self) -> Result<()>;

    /// The entity as the `oneof` of `pm.v1.Entity`.
    fn into_kind(self) -> v1::entity::Kind;
    /// Its id (for members: the user id).
    fn entity_id(&self) -> &str;
    /// Its project.
    fn project_id(&self) -> &str;
    /// Its version.
    fn version(&self) -> u64;
    /// When it was deleted, if it was.
    fn deleted_at(&self) -> Option<i64>;
    /// Marks it deleted (or restored, with `None`).
    fn set_deleted_at(&mut self, at: Option<i64>);
    /// Marks a change by `actor` at `now`: version + 1 and the `updated_*` fields.
    fn touch(&mut self, actor: &str, now: i64);
    /// Marks a new entity created by `actor` at `now`: version 1 and every audit field.
    fn stamp_created(&mut self, actor: &str, now: i64);
    /// `created_at`, `created_by`, `updated_at`, `updated_by`.
    fn audit(&self) -> (i64, &str, i64, &str);

    /// Fills fields derived from the project (the work item's `display_key`).
    fn with_project_key(self, _key: &str) -> Self {
        self
    }

    /// The entity as a `pm.v1.Entity`.
    fn into_entity(self) -> v1::Entity {
        v1::Entity::of(self.into_kind())
    }

    /// The fields a change event describes, rendered as text (`None`: null): every column
    /// but the identifying and audit ones, in column order.
    fn fields(&self) -> Vec<(&'static str, Option<String>)> {
        let mut columns = Self::COLUMNS.iter();
        self.fold_values(Vec::new(), |mut fields, value| {
            let column = columns.next().expect("one column per value");
            if !NOT_DESCRIBED.contains(&column.name) {
                fields.push((column.name, value.render()));
            }
            fields
        })
    }
}

/// The accessors every entity shares: `$id` and `$project` name the fields holding the
/// entity id and its project id.
macro_rules! audit_fields {
    ($id:ident, $project:ident) => {
        fn entity_id(&self) -> &str {
            &self.$id
        }
        fn project_id(&self) -> &str {
            &self.$project
        }
        fn version(&self) -> u64 {
            self.version
        }
        fn deleted_at(&self) -> Option<i64> {
            self.deleted_at
        }
        fn set_deleted_at(&mut self, at: Option<i64>) {
            self.deleted_at = at;
        }
        fn touch(&mut self, actor: &str, now: i64) {
            self.version += 1;
            self.updated_at = now;
            self.updated_by = actor.to_owned();
        }
        fn stamp_created(&mut self, actor: &str, now: i64) {
            self.version = 1;
            self.created_at = now;
            self.created_by = actor.to_owned();
            self.updated_at = now;
            self.updated_by = actor.to_owned();
        }
        fn audit(&self) -> (i64, &str, i64, &str) {
            (
                self.created_at,
                &self.created_by,
                self.updated_at,
                &self.updated_by,
            )
        }
    };
}

// --- The rules, one set per entity. ---

/// An id must be a canonical (lower-case) UUID: the form every id is stored and compared in.
pub fn check_id(field: &str, id: &str) -> Result<()> {
    let parsed = EntityId::parse(field, id)?;
    if parsed.to_text() != id {
        return Err(Error::invalid(field, "must be a lower-case UUID"));
    }
    Ok(())
}

/// A required wire enum field must hold a value this version knows.
fn check_enum<V>(
    field: &str,
    raw: i32,
    parse: fn(&str, i32) -> pm_core::Result<Option<V>>,
) -> Result<V> {
    Ok(convert::required(field, parse(field, raw))?)
}

/// The audit fields every entity carries.
fn check_audit<E: Entity>(row: &E) -> Result<()> {
    if row.version() == 0 {
        return Err(Error::invalid("version", "must be at least 1"));
    }
    let (created_at, created_by, updated_at, updated_by) = row.audit();
    rules::check_timestamp("created_at", created_at)?;
    rules::check_timestamp("updated_at", updated_at)?;
    UserId::parse("created_by", created_by)?;
    UserId::parse("updated_by", updated_by)?;
    if let Some(at) = row.deleted_at() {
        rules::check_timestamp("deleted_at", at)?;
    }
    Ok(())
}

/// A sprint's dates: each a valid time, the end not before the start.
pub fn check_sprint_dates(start: Option<i64>, end: Option<i64>) -> Result<()> {
    match (start, end) {
        (Some(start), end) => rules::check_time_range("start_at", start, "end_at", end)?,
        (None, Some(end)) => rules::check_timestamp("end_at", end)?,
        (None, None) => {}
    }
    Ok(())
}

impl Entity for v1::Project {
    const KIND: EntityKind = EntityKind::Project;
    const TABLE: &'static str = "projects";
    const NAME: &'static str = "project";

    fn validate(&self) -> Result<()> {
        check_id("id", &self.id)?;
        text::project_key("key", &self.key)?;
        text::single_line("name", &self.name, text::MAX_NAME)?;
        text::multi_line("description", &self.description, text::MAX_SHORT_TEXT)?;
        check_enum("status", self.status, convert::project_status)?;
        check_audit(self)
    }

    fn into_kind(self) -> v1::entity::Kind {
        v1::entity::Kind::Project(self)
    }

    audit_fields!(id, id);
}

impl Entity for v1::ProjectMember {
    const KIND: EntityKind = EntityKind::ProjectMember;
    const TABLE: &'static str = "project_members";
    const NAME: &'static str = "member";

    fn validate(&self) -> Result<()> {
        check_id("project_id", &self.project_id)?;
        UserId::parse("user_id", &self.user_id)?;
        check_enum("role", self.role, convert::role)?;
        if self.deleted_at.is_some() {
            // Removing a member deletes the row; only its change event carries the time.
            return Err(Error::invalid(
                "deleted_at",
                "removed members are not stored",
            ));
        }
        check_audit(self)
    }

    fn into_kind(self) -> v1::entity::Kind {
        v1::entity::Kind::ProjectMember(self)
    }

    audit_fields!(user_id, project_id);
}

impl Entity for v1::WorkItem {
    const KIND: EntityKind = EntityKind::WorkItem;
    const TABLE: &'static str = "work_items";
    const NAME: &'static str = "work item";

    fn validate(&self) -> Result<()> {
        check_id("id", &self.id)?;
        check_id("project_id", &self.project_id)?;
        if self.number == 0 {
            return Err(Error::invalid("number", "must be at least 1"));
        }
        check_enum("item_type", self.item_type, convert::work_item_type)?;
        if let Some(parent) = &self.parent_id {
            check_id("parent_id", parent)?;
        }
        text::single_line("title", &self.title, text::MAX_TITLE)?;
        text::multi_line("description", &self.description, text::MAX_LONG_TEXT)?;
        check_enum("status", self.status, convert::work_item_status)?;
        check_enum("priority", self.priority, convert::priority)?;
        if let Some(points) = self.story_points {
            rules::check_story_points(points)?;
        }
        if let Some(assignee) = &self.assignee_id {
            UserId::parse("assignee_id", assignee)?;
        }
        if let Some(sprint) = &self.sprint_id {
            check_id("sprint_id", sprint)?;
        }
        rank::check(&self.rank)?;
        check_audit(self)
    }

    fn into_kind(self) -> v1::entity::Kind {
        v1::entity::Kind::WorkItem(self)
    }

    fn with_project_key(mut self, key: &str) -> Self {
        self.display_key = format!("{key}-{}", self.number);
        self
    }

    audit_fields!(id, project_id);
}

impl Entity for v1::Sprint {
    const KIND: EntityKind = EntityKind::Sprint;
    const TABLE: &'static str = "sprints";
    const NAME: &'static str = "sprint";

    fn validate(&self) -> Result<()> {
        check_id("id", &self.id)?;
        check_id("project_id", &self.project_id)?;
        text::single_line("name", &self.name, text::MAX_NAME)?;
        text::multi_line("goal", &self.goal, text::MAX_SHORT_TEXT)?;
        check_enum("status", self.status, convert::sprint_status)?;
        check_sprint_dates(self.start_at, self.end_at)?;
        check_audit(self)
    }

    fn into_kind(self) -> v1::entity::Kind {
        v1::entity::Kind::Sprint(self)
    }

    audit_fields!(id, project_id);
}

impl Entity for v1::Comment {
    const KIND: EntityKind = EntityKind::Comment;
    const TABLE: &'static str = "comments";
    const NAME: &'static str = "comment";

    fn validate(&self) -> Result<()> {
        check_id("id", &self.id)?;
        check_id("project_id", &self.project_id)?;
        check_id("work_item_id", &self.work_item_id)?;
        text::required_multi_line("content", &self.content, text::MAX_LONG_TEXT)?;
        check_audit(self)
    }

    fn into_kind(self) -> v1::entity::Kind {
        v1::entity::Kind::Comment(self)
    }

    audit_fields!(id, project_id);
}

impl Entity for v1::TimeEntry {
    const KIND: EntityKind = EntityKind::TimeEntry;
    const TABLE: &'static str = "time_entries";
    const NAME: &'static str = "time entry";

    fn validate(&self) -> Result<()> {
        check_id("id", &self.id)?;
        check_id("project_id", &self.project_id)?;
        check_id("work_item_id", &self.work_item_id)?;
        UserId::parse("user_id", &self.user_id)?;
        rules::check_time_range("started_at", self.started_at, "ended_at", self.ended_at)?;
        text::multi_line("description", &self.description, text::MAX_TIME_ENTRY_NOTE)?;
        check_audit(self)
    }

    fn into_kind(self) -> v1::entity::Kind {
        v1::entity::Kind::TimeEntry(self)
    }

    audit_fields!(id, project_id);
}

impl Entity for v1::Dependency {
    const KIND: EntityKind = EntityKind::Dependency;
    const TABLE: &'static str = "dependencies";
    const NAME: &'static str = "dependency";

    fn validate(&self) -> Result<()> {
        check_id("id", &self.id)?;
        check_id("project_id", &self.project_id)?;
        check_id("blocking_item_id", &self.blocking_item_id)?;
        check_id("blocked_item_id", &self.blocked_item_id)?;
        rules::check_dependency_ends(&self.blocking_item_id, &self.blocked_item_id)?;
        check_enum(
            "dependency_type",
            self.dependency_type,
            convert::dependency_type,
        )?;
        check_audit(self)
    }

    fn into_kind(self) -> v1::entity::Kind {
        v1::entity::Kind::Dependency(self)
    }

    audit_fields!(id, project_id);
}

impl Entity for v1::SwimLane {
    const KIND: EntityKind = EntityKind::SwimLane;
    const TABLE: &'static str = "swim_lanes";
    const NAME: &'static str = "swim lane";

    fn validate(&self) -> Result<()> {
        check_id("id", &self.id)?;
        check_id("project_id", &self.project_id)?;
        text::single_line("name", &self.name, text::MAX_LANE_NAME)?;
        check_enum("status", self.status, convert::work_item_status)?;
        if let Some(limit) = self.wip_limit {
            rules::check_wip_limit(limit)?;
        }
        check_enum("wip_policy", self.wip_policy, convert::wip_policy)?;
        check_audit(self)
    }

    fn into_kind(self) -> v1::entity::Kind {
        v1::entity::Kind::SwimLane(self)
    }

    audit_fields!(id, project_id);
}

impl Entity for v1::LlmContext {
    const KIND: EntityKind = EntityKind::LlmContext;
    const TABLE: &'static str = "llm_context";
    const NAME: &'static str = "LLM context";

    fn validate(&self) -> Result<()> {
        check_id("id", &self.id)?;
        check_id("project_id", &self.project_id)?;
        check_enum("category", self.category, convert::llm_context_category)?;
        text::single_line("title", &self.title, text::MAX_NAME)?;
        text::required_multi_line("content", &self.content, text::MAX_LONG_TEXT)?;
        check_audit(self)
    }

    fn into_kind(self) -> v1::entity::Kind {
        v1::entity::Kind::LlmContext(self)
    }

    audit_fields!(id, project_id);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> v1::WorkItem {
        let mut item = v1::WorkItem {
            id: EntityId::new().to_text(),
            project_id: EntityId::new().to_text(),
            number: 42,
            item_type: v1::WorkItemType::Story.into(),
            title: "Board".into(),
            status: v1::WorkItemStatus::InProgress.into(),
            priority: v1::Priority::High.into(),
            story_points: Some(5),
            rank: rank::for_new_item(1),
            ..Default::default()
        };
        item.stamp_created("alice", 1_700_000_000_000);
        item
    }

    #[test]
    fn display_keys() {
        let item = v1::WorkItem {
            number: 42,
            ..Default::default()
        }
        .with_project_key("PM");
        assert_eq!(item.display_key, "PM-42");
    }

    #[test]
    fn fields_follow_the_column_list_without_identifying_and_audit_columns() {
        let item = item();
        let names: Vec<&str> = item.fields().iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "number",
                "item_type",
                "parent_id",
                "title",
                "description",
                "status",
                "priority",
                "story_points",
                "assignee_id",
                "sprint_id",
                "rank",
                "deleted_at"
            ]
        );
        let fields = item.fields();
        assert_eq!(fields[0], ("number", Some("42".into())));
        assert_eq!(fields[1], ("item_type", Some("story".into())));
        assert_eq!(fields[2], ("parent_id", None));
        assert_eq!(fields[5], ("status", Some("in_progress".into())));
        assert_eq!(fields[7], ("story_points", Some("5".into())));
        // Every column is either described or identifying/audit: none is forgotten.
        let described = fields.len();
        let not_described = v1::WorkItem::COLUMNS
            .iter()
            .filter(|c| NOT_DESCRIBED.contains(&c.name))
            .count();
        assert_eq!(described + not_described, v1::WorkItem::COLUMNS.len());
    }

    #[test]
    fn rows_read_back_what_they_bind() {
        let item = item();
        let values = item.fold_values(Vec::new(), |mut values, value| {
            values.push(match value {
                Value::Text(s) => Stored::Text(s.to_owned()),
                Value::OptText(s) => Stored::OptText(s.map(str::to_owned)),
                Value::Int(i) => Stored::Int(i),
                Value::OptInt(i) => Stored::OptInt(i),
            });
            values
        });
        let mut by_column = v1::WorkItem::COLUMNS.iter().zip(values);
        let read = v1::WorkItem::from_values(|name, shape| {
            let (column, value) = by_column.next().expect("a value per column");
            assert_eq!((column.name, column.shape), (name, shape));
            Ok(value)
        })
        .unwrap();
        assert_eq!(read, item);
    }

    #[test]
    fn validate_names_the_field_that_breaks_a_rule() {
        assert!(item().validate().is_ok());
        type Breaks = fn(&mut v1::WorkItem);
        let cases: Vec<(Breaks, &str)> = vec![
            (|w| w.title = String::new(), "title"),
            (|w| w.title = "a\nb".into(), "title"),
            (|w| w.status = 99, "status"),
            (|w| w.priority = 0, "priority"),
            (|w| w.story_points = Some(1_000_000), "story_points"),
            (|w| w.assignee_id = Some(String::new()), "assignee_id"),
            (|w| w.parent_id = Some("NOT-A-UUID".into()), "parent_id"),
            (|w| w.number = 0, "number"),
            (|w| w.rank = String::new(), "rank"),
            (|w| w.version = 0, "version"),
            (|w| w.created_at = i64::MAX, "created_at"),
        ];
        for (break_it, field) in cases {
            let mut item = item();
            break_it(&mut item);
            match item.validate() {
                Err(Error::InvalidArgument { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: expected an invalid argument, got {other:?}"),
            }
        }
    }
}
