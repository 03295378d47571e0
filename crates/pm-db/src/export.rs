//! Export and import of one tenant as JSON Lines (`pm-server export` / `import`).
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
//! All lines are parsed and validated before anything is written: the same field rules as
//! commands (`pm-core` text, id, vocabulary, time, hierarchy and dependency rules), every
//! reference resolved within the file (same project, existing parent, sprint, work item),
//! no cycle of live `blocks` links, each project keeps an admin, and a gapless change log
//! ending at the header's `head_seq`. Rules that held only when a command ran (a parent or
//! sprint being live at the time, sprint status transitions) are not checked, because later
//! changes legitimately break them. The rows are then inserted in one transaction, each row
//! on its own so that a constraint of the database (unique keys and numbers, one active
//! sprint per project, one running timer per user) is reported with its line. All or
//! nothing: one bad row and nothing is written, and a new tenant is not even created.
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
use std::str::FromStr;

use futures::TryStreamExt;
use pm_core::kinds::{ChangeAction, EntityKind, WorkItemType};
use pm_core::{rank, rules, text, EntityId, TenantId, UserId};
use pm_proto::{convert, v1};
use prost::Message;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};

use crate::backup::{remove_if_exists, sync_dir};
use crate::changelog::{self, PendingEvent};
use crate::error::{Error, Result};
use crate::lock::TenantLock;
use crate::records::{self, Record};
use crate::registry::{RegistryConfig, DB_FILE};
use crate::MIGRATOR;

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

/// Writes tenant `id` to `out` as JSON Lines; see the module documentation.
pub async fn export_tenant<W: Write + Send>(
    config: &RegistryConfig,
    id: &TenantId,
    out: &mut W,
) -> Result<ExportSummary> {
    let db = config.tenant_dir(id).join(DB_FILE);
    if !db.is_file() {
        return Err(Error::NotFound(format!("tenant {id} has no database")));
    }
    let mut conn = SqliteConnectOptions::new()
        .filename(&db)
        .read_only(true)
        .connect()
        .await?;
    let summary = export_snapshot(&mut conn, id, out).await;
    conn.close().await?;
    let summary = summary?;
    out.flush()?;
    Ok(summary)
}

async fn export_snapshot<W: Write + Send>(
    conn: &mut SqliteConnection,
    id: &TenantId,
    out: &mut W,
) -> Result<ExportSummary> {
    let mut tx = conn.begin().await?;
    let schema_version = schema_version(&mut tx).await?;
    let newest = newest_schema();
    if schema_version < newest {
        return Err(Error::FailedPrecondition(format!(
            "tenant {id} is at schema version {schema_version}, not {newest}; run `pm-server migrate` first"
        )));
    }
    let header = Header {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        tenant: id.to_string(),
        schema_version,
        head_seq: changelog::head_seq(&mut *tx).await?,
    };
    write_json(out, &header)?;
    let counts = vec![
        (KINDS[0], rows::<v1::Project, _>(&mut tx, "id", out).await?),
        (
            KINDS[1],
            rows::<v1::ProjectMember, _>(&mut tx, "project_id, user_id", out).await?,
        ),
        (KINDS[2], rows::<v1::Sprint, _>(&mut tx, "id", out).await?),
        (KINDS[3], rows::<v1::WorkItem, _>(&mut tx, "id", out).await?),
        (KINDS[4], rows::<v1::Comment, _>(&mut tx, "id", out).await?),
        (
            KINDS[5],
            rows::<v1::TimeEntry, _>(&mut tx, "id", out).await?,
        ),
        (
            KINDS[6],
            rows::<v1::Dependency, _>(&mut tx, "id", out).await?,
        ),
        (KINDS[7], rows::<v1::SwimLane, _>(&mut tx, "id", out).await?),
        (
            KINDS[8],
            rows::<v1::LlmContext, _>(&mut tx, "id", out).await?,
        ),
        (CHANGE, changes(&mut tx, out).await?),
    ];
    tx.rollback().await?;
    Ok(ExportSummary { header, counts })
}

async fn rows<R: Record + Serialize, W: Write + Send>(
    conn: &mut SqliteConnection,
    order_by: &str,
    out: &mut W,
) -> Result<u64> {
    let sql = format!(
        "SELECT {} FROM {} ORDER BY {order_by}",
        R::COLUMNS.join(", "),
        R::TABLE
    );
    let mut stream = sqlx::query(&sql).fetch(&mut *conn);
    let mut count = 0;
    while let Some(row) = stream.try_next().await? {
        write_json(
            out,
            &Line {
                kind: R::KIND.as_str(),
                data: R::from_row(&row)?,
            },
        )?;
        count += 1;
    }
    Ok(count)
}

async fn changes<W: Write + Send>(conn: &mut SqliteConnection, out: &mut W) -> Result<u64> {
    let mut stream =
        sqlx::query("SELECT seq, event FROM change_log ORDER BY seq").fetch(&mut *conn);
    let mut count = 0;
    while let Some(row) = stream.try_next().await? {
        let seq: i64 = row.try_get("seq")?;
        let blob: Vec<u8> = row.try_get("event")?;
        let event = v1::Event::decode(blob.as_slice())
            .map_err(|e| Error::Corrupt(format!("change {seq}: {e}")))?;
        if event.seq != seq as u64 {
            return Err(Error::Corrupt(format!(
                "change {seq} holds the event of seq {}",
                event.seq
            )));
        }
        write_json(
            out,
            &Line {
                kind: CHANGE,
                data: event,
            },
        )?;
        count += 1;
    }
    Ok(count)
}

#[derive(Serialize)]
struct Line<T> {
    kind: &'static str,
    data: T,
}

fn write_json<W: Write, T: Serialize>(out: &mut W, value: &T) -> Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::other)?;
    out.write_all(b"\n")?;
    Ok(())
}

async fn schema_version(conn: &mut SqliteConnection) -> Result<i64> {
    let migrated: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !migrated {
        return Ok(0);
    }
    Ok(
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await?,
    )
}

fn newest_schema() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
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

/// Imports JSON Lines from `input` into tenant `id`; see the module documentation.
pub async fn import_tenant<R: BufRead>(
    config: &RegistryConfig,
    id: &TenantId,
    input: R,
    options: ImportOptions,
) -> Result<ImportReport> {
    let data = Dataset::read(input)?;
    data.validate()?;
    let dir = config.tenant_dir(id);
    let db = dir.join(DB_FILE);
    if options.dry_run && !db.is_file() {
        // Nothing on disk to look at: load into a throw-away database.
        let mut conn = SqliteConnectOptions::from_str("sqlite::memory:")?
            .foreign_keys(true)
            .connect()
            .await?;
        MIGRATOR.run_direct(&mut conn).await?;
        let replaced = data.load(&mut conn, id, options).await;
        conn.close().await?;
        return Ok(data.report(replaced?, options));
    }
    let created_dir = !dir.exists();
    std::fs::create_dir_all(&dir)?;
    let imported = import_locked(&data, &dir, id, options).await;
    if imported.is_err() && created_dir {
        // Leave nothing behind for a tenant that did not exist.
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(data.report(imported?, options))
}

async fn import_locked(
    data: &Dataset,
    dir: &std::path::Path,
    id: &TenantId,
    options: ImportOptions,
) -> Result<bool> {
    let _lock = TenantLock::exclusive(dir, id.as_str())?;
    let db = dir.join(DB_FILE);
    if db.is_file() {
        let mut conn = RegistryConfig::new(dir)
            .connect_options(&db)
            .connect()
            .await?;
        let loaded = async {
            let version = schema_version(&mut conn).await?;
            if version < newest_schema() {
                if options.dry_run {
                    return Err(Error::FailedPrecondition(format!(
                        "tenant {id} is at schema version {version}; run `pm-server migrate` first"
                    )));
                }
                MIGRATOR.run_direct(&mut conn).await?;
            }
            data.load(&mut conn, id, options).await
        }
        .await;
        conn.close().await?;
        return loaded;
    }
    // A new tenant: build the database beside its final name, rename when complete.
    let building = dir.join(format!("{DB_FILE}.importing"));
    remove_if_exists(&building)?;
    let built = async {
        let mut conn = SqliteConnectOptions::new()
            .filename(&building)
            .create_if_missing(true)
            .foreign_keys(true)
            .connect()
            .await?;
        let loaded = async {
            MIGRATOR.run_direct(&mut conn).await?;
            data.load(&mut conn, id, options).await
        }
        .await;
        conn.close().await?;
        loaded?;
        std::fs::File::open(&building)?.sync_all()?;
        std::fs::rename(&building, &db)?;
        sync_dir(dir)?;
        Ok(false)
    }
    .await;
    if built.is_err() {
        let _ = remove_if_exists(&building);
    }
    built
}

/// A parsed export: rows with their line numbers.
#[derive(Debug, Default)]
struct Dataset {
    header: Option<Header>,
    projects: Vec<(usize, v1::Project)>,
    members: Vec<(usize, v1::ProjectMember)>,
    sprints: Vec<(usize, v1::Sprint)>,
    items: Vec<(usize, v1::WorkItem)>,
    comments: Vec<(usize, v1::Comment)>,
    time_entries: Vec<(usize, v1::TimeEntry)>,
    dependencies: Vec<(usize, v1::Dependency)>,
    lanes: Vec<(usize, v1::SwimLane)>,
    contexts: Vec<(usize, v1::LlmContext)>,
    changes: Vec<(usize, v1::Event)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    kind: String,
    data: serde_json::Value,
}

/// An error about line `line` (1-based), for a row of `kind`.
fn at_line(line: usize, kind: &str, error: impl Into<Error>) -> Error {
    let place = if kind.is_empty() {
        format!("line {line}")
    } else {
        format!("line {line} ({kind})")
    };
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
    fn read<R: BufRead>(input: R) -> Result<Dataset> {
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
                if header.schema_version > newest_schema() {
                    return Err(at_line(
                        1,
                        "",
                        Error::invalid(
                            "schema_version",
                            format!("is newer than this pm-server knows ({})", newest_schema()),
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
                    // Derived from the project key; never stored.
                    item.display_key.clear();
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
                "swim_lane" => data.lanes.push((line, parse_data(line, kind, raw.data)?)),
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

    fn header(&self) -> &Header {
        self.header
            .as_ref()
            .expect("read() refuses input without a header")
    }

    fn counts(&self) -> Counts {
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

    fn report(&self, replaced: bool, options: ImportOptions) -> ImportReport {
        ImportReport {
            source: self.header().clone(),
            counts: self.counts(),
            replaced,
            dry_run: options.dry_run,
        }
    }

    /// Every rule that can be checked without the database, row by row.
    fn validate(&self) -> Result<()> {
        let mut projects: HashMap<&str, usize> = HashMap::new();
        for (line, p) in &self.projects {
            let at = |e: Error| at_line(*line, "project", e);
            check_id("id", &p.id).map_err(at)?;
            text::project_key("key", &p.key).map_err(|e| at(e.into()))?;
            text::single_line("name", &p.name, text::MAX_NAME).map_err(|e| at(e.into()))?;
            text::multi_line("description", &p.description, text::MAX_SHORT_TEXT)
                .map_err(|e| at(e.into()))?;
            convert::required("status", convert::project_status("status", p.status))
                .map_err(|e| at(e.into()))?;
            check_audit(p).map_err(at)?;
            unique(&mut projects, &p.id, *line).map_err(at)?;
        }
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
            let at = |e: Error| at_line(*line, "project_member", e);
            project("project_id", &m.project_id).map_err(at)?;
            UserId::parse("user_id", &m.user_id).map_err(|e| at(e.into()))?;
            let role = convert::required("role", convert::role("role", m.role))
                .map_err(|e| at(e.into()))?;
            if m.deleted_at.is_some() {
                return Err(at(Error::invalid(
                    "deleted_at",
                    "removed members are not stored",
                )));
            }
            check_audit(m).map_err(at)?;
            if !members.insert((&m.project_id, &m.user_id)) {
                return Err(at(Error::invalid("user_id", "is listed twice")));
            }
            if role == pm_core::kinds::Role::Admin {
                admins.insert(&m.project_id);
            }
        }
        for (line, p) in &self.projects {
            if !admins.contains(p.id.as_str()) {
                return Err(at_line(
                    *line,
                    "project",
                    Error::invalid("id", "has no admin member (a project must keep one)"),
                ));
            }
        }

        let mut sprints: HashMap<&str, &str> = HashMap::new();
        let mut seen = HashMap::new();
        for (line, s) in &self.sprints {
            let at = |e: Error| at_line(*line, "sprint", e);
            check_id("id", &s.id).map_err(at)?;
            project("project_id", &s.project_id).map_err(at)?;
            text::single_line("name", &s.name, text::MAX_NAME).map_err(|e| at(e.into()))?;
            text::multi_line("goal", &s.goal, text::MAX_SHORT_TEXT).map_err(|e| at(e.into()))?;
            convert::required("status", convert::sprint_status("status", s.status))
                .map_err(|e| at(e.into()))?;
            match (s.start_at, s.end_at) {
                (Some(start), end) => rules::check_time_range("start_at", start, "end_at", end),
                (None, Some(end)) => rules::check_timestamp("end_at", end),
                (None, None) => Ok(()),
            }
            .map_err(|e| at(e.into()))?;
            check_audit(s).map_err(at)?;
            unique(&mut seen, &s.id, *line).map_err(at)?;
            sprints.insert(&s.id, &s.project_id);
        }

        let mut items: HashMap<&str, (&str, WorkItemType)> = HashMap::new();
        for (line, w) in &self.items {
            let at = |e: Error| at_line(*line, "work_item", e);
            check_id("id", &w.id).map_err(at)?;
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
            let at = |e: Error| at_line(*line, "work_item", e);
            project("project_id", &w.project_id).map_err(at)?;
            if w.number == 0 {
                return Err(at(Error::invalid("number", "must be at least 1")));
            }
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
            text::single_line("title", &w.title, text::MAX_TITLE).map_err(|e| at(e.into()))?;
            text::multi_line("description", &w.description, text::MAX_LONG_TEXT)
                .map_err(|e| at(e.into()))?;
            convert::required("status", convert::work_item_status("status", w.status))
                .map_err(|e| at(e.into()))?;
            convert::required("priority", convert::priority("priority", w.priority))
                .map_err(|e| at(e.into()))?;
            if let Some(points) = w.story_points {
                rules::check_story_points(points).map_err(|e| at(e.into()))?;
            }
            if let Some(assignee) = &w.assignee_id {
                UserId::parse("assignee_id", assignee).map_err(|e| at(e.into()))?;
            }
            if let Some(sprint) = &w.sprint_id {
                if sprints.get(sprint.as_str()) != Some(&w.project_id.as_str()) {
                    return Err(at(Error::invalid(
                        "sprint_id",
                        "must be a sprint of the same project in this export",
                    )));
                }
            }
            rank::check(&w.rank).map_err(|e| at(e.into()))?;
            check_audit(w).map_err(at)?;
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

        let mut seen = HashMap::new();
        for (line, c) in &self.comments {
            let at = |e: Error| at_line(*line, "comment", e);
            check_id("id", &c.id).map_err(at)?;
            project("project_id", &c.project_id).map_err(at)?;
            item_in("work_item_id", &c.work_item_id, &c.project_id).map_err(at)?;
            text::required_multi_line("content", &c.content, text::MAX_LONG_TEXT)
                .map_err(|e| at(e.into()))?;
            check_audit(c).map_err(at)?;
            unique(&mut seen, &c.id, *line).map_err(at)?;
        }
        let mut seen = HashMap::new();
        for (line, t) in &self.time_entries {
            let at = |e: Error| at_line(*line, "time_entry", e);
            check_id("id", &t.id).map_err(at)?;
            project("project_id", &t.project_id).map_err(at)?;
            item_in("work_item_id", &t.work_item_id, &t.project_id).map_err(at)?;
            UserId::parse("user_id", &t.user_id).map_err(|e| at(e.into()))?;
            rules::check_time_range("started_at", t.started_at, "ended_at", t.ended_at)
                .map_err(|e| at(e.into()))?;
            text::multi_line("description", &t.description, text::MAX_TIME_ENTRY_NOTE)
                .map_err(|e| at(e.into()))?;
            check_audit(t).map_err(at)?;
            unique(&mut seen, &t.id, *line).map_err(at)?;
        }
        let mut seen = HashMap::new();
        for (line, d) in &self.dependencies {
            let at = |e: Error| at_line(*line, "dependency", e);
            check_id("id", &d.id).map_err(at)?;
            project("project_id", &d.project_id).map_err(at)?;
            item_in("blocking_item_id", &d.blocking_item_id, &d.project_id).map_err(at)?;
            item_in("blocked_item_id", &d.blocked_item_id, &d.project_id).map_err(at)?;
            rules::check_dependency_ends(&d.blocking_item_id, &d.blocked_item_id)
                .map_err(|e| at(e.into()))?;
            convert::required(
                "dependency_type",
                convert::dependency_type("dependency_type", d.dependency_type),
            )
            .map_err(|e| at(e.into()))?;
            check_audit(d).map_err(at)?;
            unique(&mut seen, &d.id, *line).map_err(at)?;
        }
        self.check_no_blocking_cycle()?;
        let mut seen = HashMap::new();
        for (line, l) in &self.lanes {
            let at = |e: Error| at_line(*line, "swim_lane", e);
            check_id("id", &l.id).map_err(at)?;
            project("project_id", &l.project_id).map_err(at)?;
            text::single_line("name", &l.name, text::MAX_LANE_NAME).map_err(|e| at(e.into()))?;
            convert::required("status", convert::work_item_status("status", l.status))
                .map_err(|e| at(e.into()))?;
            if let Some(limit) = l.wip_limit {
                rules::check_wip_limit(limit).map_err(|e| at(e.into()))?;
            }
            check_audit(l).map_err(at)?;
            unique(&mut seen, &l.id, *line).map_err(at)?;
        }
        let mut seen = HashMap::new();
        for (line, c) in &self.contexts {
            let at = |e: Error| at_line(*line, "llm_context", e);
            check_id("id", &c.id).map_err(at)?;
            project("project_id", &c.project_id).map_err(at)?;
            convert::required(
                "category",
                convert::llm_context_category("category", c.category),
            )
            .map_err(|e| at(e.into()))?;
            text::single_line("title", &c.title, text::MAX_NAME).map_err(|e| at(e.into()))?;
            text::required_multi_line("content", &c.content, text::MAX_LONG_TEXT)
                .map_err(|e| at(e.into()))?;
            check_audit(c).map_err(at)?;
            unique(&mut seen, &c.id, *line).map_err(at)?;
        }

        let mut last: Option<u64> = None;
        for (line, e) in &self.changes {
            let at = |err: Error| at_line(*line, CHANGE, err);
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
            Some((line, _)) => Err(at_line(
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

    /// Loads the rows into `conn` in one transaction, committed unless this is a dry run.
    /// Returns whether existing content was replaced.
    async fn load(
        &self,
        conn: &mut SqliteConnection,
        id: &TenantId,
        options: ImportOptions,
    ) -> Result<bool> {
        let mut tx = conn.begin().await?;
        // Rows of one table may refer to each other in any order (a parent with a later id).
        sqlx::query("PRAGMA defer_foreign_keys = ON")
            .execute(&mut *tx)
            .await?;
        let changes = changelog::head_seq(&mut *tx).await?;
        let projects: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM projects")
            .fetch_one(&mut *tx)
            .await?;
        let replaced = changes > 0 || projects > 0;
        if replaced && !options.replace {
            return Err(Error::FailedPrecondition(format!(
                "tenant {id} is not empty ({projects} project(s), head seq {changes}); \
                 use --replace to replace its content (merging is not supported)"
            )));
        }
        if replaced {
            for table in [
                "change_log",
                "idempotency",
                "dependencies",
                "time_entries",
                "comments",
                "llm_context",
                "swim_lanes",
                "work_items",
                "sprints",
                "project_members",
                "projects",
            ] {
                sqlx::query(&format!("DELETE FROM {table}"))
                    .execute(&mut *tx)
                    .await?;
            }
            // The full-text indexes follow inserts and updates by trigger, not deletes.
            for fts in ["work_item_fts", "comment_fts"] {
                sqlx::query(&format!("INSERT INTO {fts} ({fts}) VALUES ('delete-all')"))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        insert_rows(&mut tx, &self.projects).await?;
        insert_rows(&mut tx, &self.members).await?;
        insert_rows(&mut tx, &self.sprints).await?;
        insert_rows(&mut tx, &self.items).await?;
        insert_rows(&mut tx, &self.comments).await?;
        insert_rows(&mut tx, &self.time_entries).await?;
        insert_rows(&mut tx, &self.dependencies).await?;
        insert_rows(&mut tx, &self.lanes).await?;
        insert_rows(&mut tx, &self.contexts).await?;
        let pending = self
            .changes
            .iter()
            .map(|(line, e)| {
                let (kind, action) =
                    change_columns(e).map_err(|err| at_line(*line, CHANGE, err))?;
                Ok(PendingEvent {
                    seq: e.seq,
                    at: e.at,
                    actor_id: e.actor_id.clone(),
                    project_id: e.project_id.clone(),
                    kind,
                    entity_id: e.entity_id.clone(),
                    action,
                    event: e.encode_to_vec(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        for chunk in pending.chunks(changelog::ROWS_PER_INSERT) {
            let sql = changelog::append_sql(chunk.len());
            let mut query = sqlx::query(&sql);
            for event in chunk {
                query = changelog::bind(query, event);
            }
            query.execute(&mut *tx).await?;
        }
        let dangling = sqlx::query("PRAGMA foreign_key_check")
            .fetch_all(&mut *tx)
            .await?;
        if !dangling.is_empty() {
            return Err(Error::invalid(
                "import",
                format!("{} row(s) refer to rows that are not there", dangling.len()),
            ));
        }
        if options.dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(replaced)
    }
}

async fn insert_rows<R: Record>(conn: &mut SqliteConnection, rows: &[(usize, R)]) -> Result<()> {
    for (line, row) in rows {
        records::insert(conn, row)
            .await
            .map_err(|e| match e.as_database_error() {
                Some(db) => at_line(
                    *line,
                    R::KIND.as_str(),
                    Error::invalid("", format!("refused by the database: {}", db.message())),
                ),
                None => Error::Database(e),
            })?;
    }
    Ok(())
}

/// The change-log columns of an event, checked like the columns' constraints.
fn change_columns(e: &v1::Event) -> Result<(EntityKind, ChangeAction)> {
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

fn check_id(field: &str, id: &str) -> Result<()> {
    let parsed = EntityId::parse(field, id)?;
    if parsed.to_text() != id {
        return Err(Error::invalid(field, "must be a lower-case UUID"));
    }
    Ok(())
}

fn unique<'a>(seen: &mut HashMap<&'a str, usize>, id: &'a str, line: usize) -> Result<()> {
    match seen.insert(id, line) {
        Some(first) => Err(Error::invalid(
            "id",
            format!("is listed twice (first on line {first})"),
        )),
        None => Ok(()),
    }
}

/// The audit fields every entity carries.
fn check_audit<R: Record + Audit>(row: &R) -> Result<()> {
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

/// `created_at`, `created_by`, `updated_at`, `updated_by`.
trait Audit {
    fn audit(&self) -> (i64, &str, i64, &str);
}

macro_rules! audit {
    ($($message:ident),+) => {
        $(impl Audit for v1::$message {
            fn audit(&self) -> (i64, &str, i64, &str) {
                (self.created_at, &self.created_by, self.updated_at, &self.updated_by)
            }
        })+
    };
}

audit!(
    Project,
    ProjectMember,
    Sprint,
    WorkItem,
    Comment,
    TimeEntry,
    Dependency,
    SwimLane,
    LlmContext
);
