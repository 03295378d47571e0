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
    };
}

/// Reads one column, by its stored kind.
macro_rules! read_column {
    ($row:ident, $column:expr, text) => {
        $row.try_get::<String, _>($column)?
    };
    ($row:ident, $column:expr, opt_text) => {
        $row.try_get::<Option<String>, _>($column)?
    };
    ($row:ident, $column:expr, time) => {
        $row.try_get::<i64, _>($column)?
    };
    ($row:ident, $column:expr, opt_time) => {
        $row.try_get::<Option<i64>, _>($column)?
    };
    ($row:ident, $column:expr, count) => {
        get_u64($row, $column)?
    };
    ($row:ident, $column:expr, small) => {
        get_opt_u32($row, $column)?.unwrap_or_default()
    };
    ($row:ident, $column:expr, opt_small) => {
        get_opt_u32($row, $column)?
    };
    ($row:ident, $column:expr, signed) => {
        get_i32($row, $column)?
    };
    ($row:ident, $column:expr, ($wire:ident, $text:ident)) => {
        $wire($row.try_get($column)?)?
    };
}

/// Binds one column, by its stored kind.
macro_rules! bind_column {
    ($query:ident, $value:expr, text) => {
        $query.bind($value)
    };
    ($query:ident, $value:expr, opt_text) => {
        $query.bind($value)
    };
    ($query:ident, $value:expr, time) => {
        $query.bind(*$value)
    };
    ($query:ident, $value:expr, opt_time) => {
        $query.bind(*$value)
    };
    ($query:ident, $value:expr, count) => {
        $query.bind(*$value as i64)
    };
    ($query:ident, $value:expr, small) => {
        $query.bind(i64::from(*$value))
    };
    ($query:ident, $value:expr, opt_small) => {
        $query.bind($value.map(i64::from))
    };
    ($query:ident, $value:expr, signed) => {
        $query.bind(i64::from(*$value))
    };
    ($query:ident, $value:expr, ($wire:ident, $text:ident)) => {
        $query.bind($text(*$value))
    };
}

/// `COLUMNS`, `from_row` and `bind` from one list of `field: kind` (columns are named like
/// the fields), so the three can never disagree on names or order.
macro_rules! columns {
    ($message:ident { $($field:ident: $kind:tt),+ $(,)? }) => {
        const COLUMNS: &'static [&'static str] = &[$(stringify!($field)),+];

        // Fields that are not stored (a work item's `display_key`) take their defaults; for
        // the messages without such fields the update is empty.
        #[allow(clippy::needless_update)]
        fn from_row(row: &SqliteRow) -> Result<Self> {
            Ok(v1::$message {
                $($field: read_column!(row, stringify!($field), $kind),)+
                ..Default::default()
            })
        }

        fn bind<'q>(&'q self, query: Q<'q>) -> Q<'q> {
            $(let query = bind_column!(query, &self.$field, $kind);)+
            query
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

fn get_i32(row: &SqliteRow, column: &str) -> Result<i32> {
    let value: i64 = row.try_get(column)?;
    i32::try_from(value).map_err(|_| Error::Corrupt(format!("{column} out of range")))
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
    columns!(Project {
        id: text,
        key: text,
        name: text,
        description: text,
        status: (project_status_wire, project_status_text),
        version: count,
        created_at: time,
        created_by: text,
        updated_at: time,
        updated_by: text,
        deleted_at: opt_time,
    });

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

    audit_fields!(id, id);
}
impl Record for v1::ProjectMember {
    const KIND: EntityKind = EntityKind::ProjectMember;
    const TABLE: &'static str = "project_members";
    const NAME: &'static str = "member";
    columns!(ProjectMember {
        project_id: text,
        user_id: text,
        role: (role_wire, role_text),
        version: count,
        created_at: time,
        created_by: text,
        updated_at: time,
        updated_by: text,
        deleted_at: opt_time,
    });

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

    audit_fields!(user_id, project_id);
}
impl Record for v1::WorkItem {
    const KIND: EntityKind = EntityKind::WorkItem;
    const TABLE: &'static str = "work_items";
    const NAME: &'static str = "work item";
    // `display_key` is derived from the project key and is not stored.
    columns!(WorkItem {
        id: text,
        project_id: text,
        number: count,
        item_type: (item_type_wire, item_type_text),
        parent_id: opt_text,
        title: text,
        description: text,
        status: (status_wire, status_text),
        priority: (priority_wire, priority_text),
        story_points: opt_small,
        assignee_id: opt_text,
        sprint_id: opt_text,
        rank: text,
        version: count,
        created_at: time,
        created_by: text,
        updated_at: time,
        updated_by: text,
        deleted_at: opt_time,
    });

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

    audit_fields!(id, project_id);
}
impl Record for v1::Sprint {
    const KIND: EntityKind = EntityKind::Sprint;
    const TABLE: &'static str = "sprints";
    const NAME: &'static str = "sprint";
    columns!(Sprint {
        id: text,
        project_id: text,
        name: text,
        goal: text,
        status: (sprint_status_wire, sprint_status_text),
        start_at: opt_time,
        end_at: opt_time,
        version: count,
        created_at: time,
        created_by: text,
        updated_at: time,
        updated_by: text,
        deleted_at: opt_time,
    });

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

    audit_fields!(id, project_id);
}
impl Record for v1::Comment {
    const KIND: EntityKind = EntityKind::Comment;
    const TABLE: &'static str = "comments";
    const NAME: &'static str = "comment";
    columns!(Comment {
        id: text,
        project_id: text,
        work_item_id: text,
        content: text,
        version: count,
        created_at: time,
        created_by: text,
        updated_at: time,
        updated_by: text,
        deleted_at: opt_time,
    });

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

    audit_fields!(id, project_id);
}
impl Record for v1::TimeEntry {
    const KIND: EntityKind = EntityKind::TimeEntry;
    const TABLE: &'static str = "time_entries";
    const NAME: &'static str = "time entry";
    columns!(TimeEntry {
        id: text,
        project_id: text,
        work_item_id: text,
        user_id: text,
        started_at: time,
        ended_at: opt_time,
        description: text,
        version: count,
        created_at: time,
        created_by: text,
        updated_at: time,
        updated_by: text,
        deleted_at: opt_time,
    });

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

    audit_fields!(id, project_id);
}
impl Record for v1::Dependency {
    const KIND: EntityKind = EntityKind::Dependency;
    const TABLE: &'static str = "dependencies";
    const NAME: &'static str = "dependency";
    columns!(Dependency {
        id: text,
        project_id: text,
        blocking_item_id: text,
        blocked_item_id: text,
        dependency_type: (dependency_type_wire, dependency_type_text),
        version: count,
        created_at: time,
        created_by: text,
        updated_at: time,
        updated_by: text,
        deleted_at: opt_time,
    });

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

    audit_fields!(id, project_id);
}
impl Record for v1::SwimLane {
    const KIND: EntityKind = EntityKind::SwimLane;
    const TABLE: &'static str = "swim_lanes";
    const NAME: &'static str = "swim lane";
    columns!(SwimLane {
        id: text,
        project_id: text,
        name: text,
        status: (status_wire, status_text),
        position: small,
        wip_limit: opt_small,
        version: count,
        created_at: time,
        created_by: text,
        updated_at: time,
        updated_by: text,
        deleted_at: opt_time,
    });

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

    audit_fields!(id, project_id);
}
impl Record for v1::LlmContext {
    const KIND: EntityKind = EntityKind::LlmContext;
    const TABLE: &'static str = "llm_context";
    const NAME: &'static str = "LLM context";
    columns!(LlmContext {
        id: text,
        project_id: text,
        category: (category_wire, category_text),
        title: text,
        content: text,
        priority: signed,
        version: count,
        created_at: time,
        created_by: text,
        updated_at: time,
        updated_by: text,
        deleted_at: opt_time,
    });

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

    audit_fields!(id, project_id);
}
