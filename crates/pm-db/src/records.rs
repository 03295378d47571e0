//! Entity rows: one column list per entity drives its INSERT, its version-checked UPDATE,
//! its row mapping and the field list used to describe changes.

use pm_core::kinds::{self, EntityKind};
use pm_proto::{convert, v1};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Row, Sqlite, SqliteConnection, SqliteExecutor};

use crate::error::{Error, Result};

pub(crate) type Q<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

/// A stored entity.
pub(crate) trait Record: Sized + Clone + Send + Unpin + 'static {
    const KIND: EntityKind;
    const TABLE: &'static str;
    /// For messages: "work item".
    const NAME: &'static str;
    /// Columns in bind order; the first is the key used by `find` and `update`.
    const COLUMNS: &'static [&'static str];

    fn from_row(row: &SqliteRow) -> Result<Self>;
    fn bind<'q>(&'q self, query: Q<'q>) -> Q<'q>;
    /// The fields a change describes, rendered as text (`None` = null).
    fn fields(&self) -> Vec<(&'static str, Option<String>)>;
    fn into_kind(self) -> v1::entity::Kind;
    fn entity_id(&self) -> &str;
    fn project_id(&self) -> &str;
    fn version(&self) -> u64;
    fn deleted_at(&self) -> Option<i64>;
    fn set_deleted_at(&mut self, at: Option<i64>);
    /// Marks a change by `actor` at `now`: version + 1 and the `updated_*` fields.
    fn touch(&mut self, actor: &str, now: i64);

    /// Marks a new entity created by `actor` at `now`: version 1 and every audit field.
    fn stamp_created(&mut self, actor: &str, now: i64);

    fn into_entity(self) -> v1::Entity {
        v1::Entity::of(self.into_kind())
    }

    /// Fills fields derived from the project (the work item's `display_key`).
    fn with_project_key(self, _key: &str) -> Self {
        self
    }
}

macro_rules! audit_fields {
    () => {
        fn entity_id(&self) -> &str {
            &self.id
        }
        fn project_id(&self) -> &str {
            &self.project_id
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
    };
}

/// `INSERT INTO t (c1, ...) VALUES (?1, ...)`.
pub(crate) async fn insert<R: Record>(conn: &mut SqliteConnection, record: &R) -> sqlx::Result<()> {
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        R::TABLE,
        R::COLUMNS.join(", "),
        placeholders(R::COLUMNS.len())
    );
    record.bind(sqlx::query(&sql)).execute(&mut *conn).await?;
    Ok(())
}

/// Rows per multi-row insert of `R`, within SQLite's 32,766 bound parameters.
pub(crate) fn rows_per_insert<R: Record>() -> usize {
    (30_000 / R::COLUMNS.len()).min(1_000)
}

/// `INSERT INTO t (c1, ...) VALUES (?, ...), ...` for `rows` rows.
pub(crate) fn insert_many_sql<R: Record>(rows: usize) -> String {
    let row = format!("({})", placeholders(R::COLUMNS.len()));
    format!(
        "INSERT INTO {} ({}) VALUES {}",
        R::TABLE,
        R::COLUMNS.join(", "),
        vec![row.as_str(); rows].join(", ")
    )
}

/// Inserts many rows of one kind with one statement per `rows_per_insert` rows.
pub(crate) async fn insert_many<R: Record>(
    conn: &mut SqliteConnection,
    records: &[R],
) -> sqlx::Result<()> {
    for chunk in records.chunks(rows_per_insert::<R>()) {
        let sql = insert_many_sql::<R>(chunk.len());
        let mut query = sqlx::query(&sql);
        for record in chunk {
            query = record.bind(query);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Writes every column of `record` if the stored version is `expected`; false if not.
pub(crate) async fn update<R: Record>(
    conn: &mut SqliteConnection,
    record: &R,
    expected: u64,
) -> sqlx::Result<bool> {
    let sql = format!(
        "UPDATE {table} SET ({cols}) = ({values}) WHERE {key} = ? AND version = ?",
        table = R::TABLE,
        cols = R::COLUMNS.join(", "),
        values = placeholders(R::COLUMNS.len()),
        key = R::COLUMNS[0],
    );
    let done = record
        .bind(sqlx::query(&sql))
        .bind(record.entity_id())
        .bind(expected as i64)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Finds a row by its key column, deleted or not.
pub(crate) async fn find<'c, R: Record>(
    executor: impl SqliteExecutor<'c>,
    id: &str,
) -> Result<Option<R>> {
    let sql = format!(
        "SELECT {} FROM {} WHERE {} = ?1",
        R::COLUMNS.join(", "),
        R::TABLE,
        R::COLUMNS[0]
    );
    let row = sqlx::query(&sql).bind(id).fetch_optional(executor).await?;
    row.as_ref().map(R::from_row).transpose()
}

/// `SELECT` of every column of `R`, for list queries that add their own clauses.
pub(crate) fn select_columns<R: Record>(alias: &str) -> String {
    R::COLUMNS
        .iter()
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `?, ?, ...`: anonymous parameters. Numbered ones (`?7`) make SQLite look each one up by
/// name in a list, which turns binding a multi-row insert quadratic.
fn placeholders(count: usize) -> String {
    vec!["?"; count].join(", ")
}

// --- Enum columns: stored as their domain names. ---

macro_rules! stored_enum {
    ($to_text:ident, $from_text:ident, $core:ident, $wire:ident, $convert:ident) => {
        /// Stored name of a wire value; invalid values store as "" and are refused by the
        /// column's CHECK constraint.
        pub(crate) fn $to_text(raw: i32) -> &'static str {
            match convert::$convert("", raw) {
                Ok(Some(value)) => value.as_str(),
                _ => "",
            }
        }

        pub(crate) fn $from_text(stored: &str) -> Result<i32> {
            kinds::$core::parse("", stored)
                .map(|value| v1::$wire::from(value).into())
                .map_err(|_| Error::Corrupt(format!("unknown {} {stored:?}", stringify!($core))))
        }
    };
}

stored_enum!(
    project_status_text,
    project_status_wire,
    ProjectStatus,
    ProjectStatus,
    project_status
);
stored_enum!(role_text, role_wire, Role, ProjectRole, role);
stored_enum!(
    item_type_text,
    item_type_wire,
    WorkItemType,
    WorkItemType,
    work_item_type
);
stored_enum!(
    status_text,
    status_wire,
    WorkItemStatus,
    WorkItemStatus,
    work_item_status
);
stored_enum!(priority_text, priority_wire, Priority, Priority, priority);
stored_enum!(
    sprint_status_text,
    sprint_status_wire,
    SprintStatus,
    SprintStatus,
    sprint_status
);
stored_enum!(
    dependency_type_text,
    dependency_type_wire,
    DependencyType,
    DependencyType,
    dependency_type
);
stored_enum!(
    category_text,
    category_wire,
    LlmContextCategory,
    LlmContextCategory,
    llm_context_category
);

fn text(value: &str) -> Option<String> {
    Some(value.to_owned())
}

fn opt<T: ToString>(value: &Option<T>) -> Option<String> {
    value.as_ref().map(ToString::to_string)
}

fn get_u64(row: &SqliteRow, column: &str) -> Result<u64> {
    let value: i64 = row.try_get(column)?;
    u64::try_from(value).map_err(|_| Error::Corrupt(format!("negative {column}")))
}

fn get_opt_u32(row: &SqliteRow, column: &str) -> Result<Option<u32>> {
    let value: Option<i64> = row.try_get(column)?;
    value
        .map(|v| u32::try_from(v).map_err(|_| Error::Corrupt(format!("{column} out of range"))))
        .transpose()
}

impl Record for v1::Project {
    const KIND: EntityKind = EntityKind::Project;
    const TABLE: &'static str = "projects";
    const NAME: &'static str = "project";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "key",
        "name",
        "description",
        "status",
        "version",
        "created_at",
        "created_by",
        "updated_at",
        "updated_by",
        "deleted_at",
    ];

    fn from_row(row: &SqliteRow) -> Result<Self> {
        Ok(v1::Project {
            id: row.try_get("id")?,
            key: row.try_get("key")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            status: project_status_wire(row.try_get("status")?)?,
            version: get_u64(row, "version")?,
            created_at: row.try_get("created_at")?,
            created_by: row.try_get("created_by")?,
            updated_at: row.try_get("updated_at")?,
            updated_by: row.try_get("updated_by")?,
            deleted_at: row.try_get("deleted_at")?,
        })
    }

    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        q.bind(&self.id)
            .bind(&self.key)
            .bind(&self.name)
            .bind(&self.description)
            .bind(project_status_text(self.status))
            .bind(self.version as i64)
            .bind(self.created_at)
            .bind(&self.created_by)
            .bind(self.updated_at)
            .bind(&self.updated_by)
            .bind(self.deleted_at)
    }

    fn fields(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("key", text(&self.key)),
            ("name", text(&self.name)),
            ("description", text(&self.description)),
            ("status", text(project_status_text(self.status))),
            ("deleted_at", opt(&self.deleted_at)),
        ]
    }

    fn into_kind(self) -> v1::entity::Kind {
        v1::entity::Kind::Project(self)
    }

    fn entity_id(&self) -> &str {
        &self.id
    }
    fn project_id(&self) -> &str {
        &self.id
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
}

impl Record for v1::ProjectMember {
    const KIND: EntityKind = EntityKind::ProjectMember;
    const TABLE: &'static str = "project_members";
    const NAME: &'static str = "member";
    const COLUMNS: &'static [&'static str] = &[
        "project_id",
        "user_id",
        "role",
        "version",
        "created_at",
        "created_by",
        "updated_at",
        "updated_by",
        "deleted_at",
    ];

    fn from_row(row: &SqliteRow) -> Result<Self> {
        Ok(v1::ProjectMember {
            project_id: row.try_get("project_id")?,
            user_id: row.try_get("user_id")?,
            role: role_wire(row.try_get("role")?)?,
            version: get_u64(row, "version")?,
            created_at: row.try_get("created_at")?,
            created_by: row.try_get("created_by")?,
            updated_at: row.try_get("updated_at")?,
            updated_by: row.try_get("updated_by")?,
            deleted_at: row.try_get("deleted_at")?,
        })
    }

    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        q.bind(&self.project_id)
            .bind(&self.user_id)
            .bind(role_text(self.role))
            .bind(self.version as i64)
            .bind(self.created_at)
            .bind(&self.created_by)
            .bind(self.updated_at)
            .bind(&self.updated_by)
            .bind(self.deleted_at)
    }

    fn fields(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("user_id", text(&self.user_id)),
            ("role", text(role_text(self.role))),
            ("deleted_at", opt(&self.deleted_at)),
        ]
    }

    fn into_kind(self) -> v1::entity::Kind {
        v1::entity::Kind::ProjectMember(self)
    }

    fn entity_id(&self) -> &str {
        &self.user_id
    }
    fn project_id(&self) -> &str {
        &self.project_id
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
}

impl Record for v1::WorkItem {
    const KIND: EntityKind = EntityKind::WorkItem;
    const TABLE: &'static str = "work_items";
    const NAME: &'static str = "work item";
    // `display_key` is derived from the project key and is not stored.
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "project_id",
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
        "version",
        "created_at",
        "created_by",
        "updated_at",
        "updated_by",
        "deleted_at",
    ];

    fn from_row(row: &SqliteRow) -> Result<Self> {
        Ok(v1::WorkItem {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            number: get_u64(row, "number")?,
            display_key: String::new(),
            item_type: item_type_wire(row.try_get("item_type")?)?,
            parent_id: row.try_get("parent_id")?,
            title: row.try_get("title")?,
            description: row.try_get("description")?,
            status: status_wire(row.try_get("status")?)?,
            priority: priority_wire(row.try_get("priority")?)?,
            story_points: get_opt_u32(row, "story_points")?,
            assignee_id: row.try_get("assignee_id")?,
            sprint_id: row.try_get("sprint_id")?,
            rank: row.try_get("rank")?,
            version: get_u64(row, "version")?,
            created_at: row.try_get("created_at")?,
            created_by: row.try_get("created_by")?,
            updated_at: row.try_get("updated_at")?,
            updated_by: row.try_get("updated_by")?,
            deleted_at: row.try_get("deleted_at")?,
        })
    }

    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        q.bind(&self.id)
            .bind(&self.project_id)
            .bind(self.number as i64)
            .bind(item_type_text(self.item_type))
            .bind(&self.parent_id)
            .bind(&self.title)
            .bind(&self.description)
            .bind(status_text(self.status))
            .bind(priority_text(self.priority))
            .bind(self.story_points.map(i64::from))
            .bind(&self.assignee_id)
            .bind(&self.sprint_id)
            .bind(&self.rank)
            .bind(self.version as i64)
            .bind(self.created_at)
            .bind(&self.created_by)
            .bind(self.updated_at)
            .bind(&self.updated_by)
            .bind(self.deleted_at)
    }

    fn fields(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("number", Some(self.number.to_string())),
            ("item_type", text(item_type_text(self.item_type))),
            ("parent_id", opt(&self.parent_id)),
            ("title", text(&self.title)),
            ("description", text(&self.description)),
            ("status", text(status_text(self.status))),
            ("priority", text(priority_text(self.priority))),
            ("story_points", opt(&self.story_points)),
            ("assignee_id", opt(&self.assignee_id)),
            ("sprint_id", opt(&self.sprint_id)),
            ("rank", text(&self.rank)),
            ("deleted_at", opt(&self.deleted_at)),
        ]
    }

    fn into_kind(self) -> v1::entity::Kind {
        v1::entity::Kind::WorkItem(self)
    }

    fn with_project_key(mut self, key: &str) -> Self {
        self.display_key = format!("{key}-{}", self.number);
        self
    }

    audit_fields!();
}

impl Record for v1::Sprint {
    const KIND: EntityKind = EntityKind::Sprint;
    const TABLE: &'static str = "sprints";
    const NAME: &'static str = "sprint";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "project_id",
        "name",
        "goal",
        "status",
        "start_at",
        "end_at",
        "version",
        "created_at",
        "created_by",
        "updated_at",
        "updated_by",
        "deleted_at",
    ];

    fn from_row(row: &SqliteRow) -> Result<Self> {
        Ok(v1::Sprint {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            name: row.try_get("name")?,
            goal: row.try_get("goal")?,
            status: sprint_status_wire(row.try_get("status")?)?,
            start_at: row.try_get("start_at")?,
            end_at: row.try_get("end_at")?,
            version: get_u64(row, "version")?,
            created_at: row.try_get("created_at")?,
            created_by: row.try_get("created_by")?,
            updated_at: row.try_get("updated_at")?,
            updated_by: row.try_get("updated_by")?,
            deleted_at: row.try_get("deleted_at")?,
        })
    }

    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        q.bind(&self.id)
            .bind(&self.project_id)
            .bind(&self.name)
            .bind(&self.goal)
            .bind(sprint_status_text(self.status))
            .bind(self.start_at)
            .bind(self.end_at)
            .bind(self.version as i64)
            .bind(self.created_at)
            .bind(&self.created_by)
            .bind(self.updated_at)
            .bind(&self.updated_by)
            .bind(self.deleted_at)
    }

    fn fields(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("name", text(&self.name)),
            ("goal", text(&self.goal)),
            ("status", text(sprint_status_text(self.status))),
            ("start_at", opt(&self.start_at)),
            ("end_at", opt(&self.end_at)),
            ("deleted_at", opt(&self.deleted_at)),
        ]
    }

    fn into_kind(self) -> v1::entity::Kind {
        v1::entity::Kind::Sprint(self)
    }

    audit_fields!();
}

impl Record for v1::Comment {
    const KIND: EntityKind = EntityKind::Comment;
    const TABLE: &'static str = "comments";
    const NAME: &'static str = "comment";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "project_id",
        "work_item_id",
        "content",
        "version",
        "created_at",
        "created_by",
        "updated_at",
        "updated_by",
        "deleted_at",
    ];

    fn from_row(row: &SqliteRow) -> Result<Self> {
        Ok(v1::Comment {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            work_item_id: row.try_get("work_item_id")?,
            content: row.try_get("content")?,
            version: get_u64(row, "version")?,
            created_at: row.try_get("created_at")?,
            created_by: row.try_get("created_by")?,
            updated_at: row.try_get("updated_at")?,
            updated_by: row.try_get("updated_by")?,
            deleted_at: row.try_get("deleted_at")?,
        })
    }

    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        q.bind(&self.id)
            .bind(&self.project_id)
            .bind(&self.work_item_id)
            .bind(&self.content)
            .bind(self.version as i64)
            .bind(self.created_at)
            .bind(&self.created_by)
            .bind(self.updated_at)
            .bind(&self.updated_by)
            .bind(self.deleted_at)
    }

    fn fields(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("work_item_id", text(&self.work_item_id)),
            ("content", text(&self.content)),
            ("deleted_at", opt(&self.deleted_at)),
        ]
    }

    fn into_kind(self) -> v1::entity::Kind {
        v1::entity::Kind::Comment(self)
    }

    audit_fields!();
}

impl Record for v1::TimeEntry {
    const KIND: EntityKind = EntityKind::TimeEntry;
    const TABLE: &'static str = "time_entries";
    const NAME: &'static str = "time entry";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "project_id",
        "work_item_id",
        "user_id",
        "started_at",
        "ended_at",
        "description",
        "version",
        "created_at",
        "created_by",
        "updated_at",
        "updated_by",
        "deleted_at",
    ];

    fn from_row(row: &SqliteRow) -> Result<Self> {
        Ok(v1::TimeEntry {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            work_item_id: row.try_get("work_item_id")?,
            user_id: row.try_get("user_id")?,
            started_at: row.try_get("started_at")?,
            ended_at: row.try_get("ended_at")?,
            description: row.try_get("description")?,
            version: get_u64(row, "version")?,
            created_at: row.try_get("created_at")?,
            created_by: row.try_get("created_by")?,
            updated_at: row.try_get("updated_at")?,
            updated_by: row.try_get("updated_by")?,
            deleted_at: row.try_get("deleted_at")?,
        })
    }

    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        q.bind(&self.id)
            .bind(&self.project_id)
            .bind(&self.work_item_id)
            .bind(&self.user_id)
            .bind(self.started_at)
            .bind(self.ended_at)
            .bind(&self.description)
            .bind(self.version as i64)
            .bind(self.created_at)
            .bind(&self.created_by)
            .bind(self.updated_at)
            .bind(&self.updated_by)
            .bind(self.deleted_at)
    }

    fn fields(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("work_item_id", text(&self.work_item_id)),
            ("user_id", text(&self.user_id)),
            ("started_at", Some(self.started_at.to_string())),
            ("ended_at", opt(&self.ended_at)),
            ("description", text(&self.description)),
            ("deleted_at", opt(&self.deleted_at)),
        ]
    }

    fn into_kind(self) -> v1::entity::Kind {
        v1::entity::Kind::TimeEntry(self)
    }

    audit_fields!();
}

impl Record for v1::Dependency {
    const KIND: EntityKind = EntityKind::Dependency;
    const TABLE: &'static str = "dependencies";
    const NAME: &'static str = "dependency";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "project_id",
        "blocking_item_id",
        "blocked_item_id",
        "dependency_type",
        "version",
        "created_at",
        "created_by",
        "updated_at",
        "updated_by",
        "deleted_at",
    ];

    fn from_row(row: &SqliteRow) -> Result<Self> {
        Ok(v1::Dependency {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            blocking_item_id: row.try_get("blocking_item_id")?,
            blocked_item_id: row.try_get("blocked_item_id")?,
            dependency_type: dependency_type_wire(row.try_get("dependency_type")?)?,
            version: get_u64(row, "version")?,
            created_at: row.try_get("created_at")?,
            created_by: row.try_get("created_by")?,
            updated_at: row.try_get("updated_at")?,
            updated_by: row.try_get("updated_by")?,
            deleted_at: row.try_get("deleted_at")?,
        })
    }

    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        q.bind(&self.id)
            .bind(&self.project_id)
            .bind(&self.blocking_item_id)
            .bind(&self.blocked_item_id)
            .bind(dependency_type_text(self.dependency_type))
            .bind(self.version as i64)
            .bind(self.created_at)
            .bind(&self.created_by)
            .bind(self.updated_at)
            .bind(&self.updated_by)
            .bind(self.deleted_at)
    }

    fn fields(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("blocking_item_id", text(&self.blocking_item_id)),
            ("blocked_item_id", text(&self.blocked_item_id)),
            (
                "dependency_type",
                text(dependency_type_text(self.dependency_type)),
            ),
            ("deleted_at", opt(&self.deleted_at)),
        ]
    }

    fn into_kind(self) -> v1::entity::Kind {
        v1::entity::Kind::Dependency(self)
    }

    audit_fields!();
}

impl Record for v1::SwimLane {
    const KIND: EntityKind = EntityKind::SwimLane;
    const TABLE: &'static str = "swim_lanes";
    const NAME: &'static str = "swim lane";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "project_id",
        "name",
        "status",
        "position",
        "wip_limit",
        "version",
        "created_at",
        "created_by",
        "updated_at",
        "updated_by",
        "deleted_at",
    ];

    fn from_row(row: &SqliteRow) -> Result<Self> {
        Ok(v1::SwimLane {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            name: row.try_get("name")?,
            status: status_wire(row.try_get("status")?)?,
            position: get_opt_u32(row, "position")?.unwrap_or_default(),
            wip_limit: get_opt_u32(row, "wip_limit")?,
            version: get_u64(row, "version")?,
            created_at: row.try_get("created_at")?,
            created_by: row.try_get("created_by")?,
            updated_at: row.try_get("updated_at")?,
            updated_by: row.try_get("updated_by")?,
            deleted_at: row.try_get("deleted_at")?,
        })
    }

    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        q.bind(&self.id)
            .bind(&self.project_id)
            .bind(&self.name)
            .bind(status_text(self.status))
            .bind(i64::from(self.position))
            .bind(self.wip_limit.map(i64::from))
            .bind(self.version as i64)
            .bind(self.created_at)
            .bind(&self.created_by)
            .bind(self.updated_at)
            .bind(&self.updated_by)
            .bind(self.deleted_at)
    }

    fn fields(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("name", text(&self.name)),
            ("status", text(status_text(self.status))),
            ("position", Some(self.position.to_string())),
            ("wip_limit", opt(&self.wip_limit)),
            ("deleted_at", opt(&self.deleted_at)),
        ]
    }

    fn into_kind(self) -> v1::entity::Kind {
        v1::entity::Kind::SwimLane(self)
    }

    audit_fields!();
}

impl Record for v1::LlmContext {
    const KIND: EntityKind = EntityKind::LlmContext;
    const TABLE: &'static str = "llm_context";
    const NAME: &'static str = "LLM context";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "project_id",
        "category",
        "title",
        "content",
        "priority",
        "version",
        "created_at",
        "created_by",
        "updated_at",
        "updated_by",
        "deleted_at",
    ];

    fn from_row(row: &SqliteRow) -> Result<Self> {
        let priority: i64 = row.try_get("priority")?;
        Ok(v1::LlmContext {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            category: category_wire(row.try_get("category")?)?,
            title: row.try_get("title")?,
            content: row.try_get("content")?,
            priority: i32::try_from(priority)
                .map_err(|_| Error::Corrupt("priority out of range".into()))?,
            version: get_u64(row, "version")?,
            created_at: row.try_get("created_at")?,
            created_by: row.try_get("created_by")?,
            updated_at: row.try_get("updated_at")?,
            updated_by: row.try_get("updated_by")?,
            deleted_at: row.try_get("deleted_at")?,
        })
    }

    fn bind<'q>(&'q self, q: Q<'q>) -> Q<'q> {
        q.bind(&self.id)
            .bind(&self.project_id)
            .bind(category_text(self.category))
            .bind(&self.title)
            .bind(&self.content)
            .bind(i64::from(self.priority))
            .bind(self.version as i64)
            .bind(self.created_at)
            .bind(&self.created_by)
            .bind(self.updated_at)
            .bind(&self.updated_by)
            .bind(self.deleted_at)
    }

    fn fields(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("category", text(category_text(self.category))),
            ("title", text(&self.title)),
            ("content", text(&self.content)),
            ("priority", Some(self.priority.to_string())),
            ("deleted_at", opt(&self.deleted_at)),
        ]
    }

    fn into_kind(self) -> v1::entity::Kind {
        v1::entity::Kind::LlmContext(self)
    }

    audit_fields!();
}
