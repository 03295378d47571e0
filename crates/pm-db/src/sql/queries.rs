//! Reads. Each query runs in one read transaction on the tenant's read pool and answers with
//! `as_of_seq`, the change number its rows reflect (read in the same transaction), so a
//! client may subscribe from exactly there. Users see only projects they are members of:
//! everything else is `NOT_FOUND` or simply not listed.

use std::collections::HashMap;

use pm_core::kinds::Role;
use pm_core::{text, EntityId, UserId};
use pm_proto::{convert, v1};
use sqlx::{QueryBuilder, Row};

use super::dialect::{self, Conn, Db};
use super::pages::list;
use super::people::{assignee_names, names};
use super::{changelog, read_model, records, search};
use crate::engine::SubscriptionSnapshot;
use crate::entity::Entity;
use crate::error::{Error, Result};

use v1::query::Kind as Q;
use v1::query_result::Result as R;

/// Runs `query` as `actor`.
pub(crate) async fn run(
    conn: &mut Conn,
    actor: &UserId,
    query: v1::Query,
) -> Result<v1::QueryResult> {
    let kind = query
        .kind
        .ok_or_else(|| Error::invalid("kind", "the query names no operation"))?;
    let as_of_seq = changelog::head_seq(&mut *conn).await?;
    let mut r = Reader {
        conn,
        actor,
        as_of_seq,
    };
    let result = match kind {
        Q::GetProject(q) => {
            let project: v1::Project = r.get("id", &q.id).await?.0;
            R::GetProjectResult(v1::GetProjectResult {
                project: Some(project),
                as_of_seq,
            })
        }
        Q::ListProjects(q) => r.list_projects(q).await?,
        Q::GetBoardSummary(q) => r.board_summary(q).await?,
        Q::GetWorkItemHierarchy(q) => r.hierarchy(q).await?,
        Q::GetRunningTimer(_) => r.running_timer().await?,
        Q::GetTimeTotals(q) => r.time_totals(q).await?,
        Q::ListMembers(q) => {
            let project_id = r.project("project_id", &q.project_id).await?.0;
            let (items, next_page_token) =
                list::<v1::ProjectMember>(r.conn, &["t.user_id"], q.page.as_ref(), |b| {
                    b.push(" AND t.project_id = ").push_bind(project_id);
                })
                .await?;
            let mut items: Vec<v1::ProjectMember> = items;
            let names = names(r.conn, items.iter().map(|m| m.user_id.as_str())).await?;
            for member in &mut items {
                member.display_name = names.get(&member.user_id).cloned().unwrap_or_default();
            }
            R::ListMembersResult(v1::ListMembersResult {
                items,
                next_page_token,
                as_of_seq,
            })
        }
        Q::GetWorkItem(q) => R::GetWorkItemResult(v1::GetWorkItemResult {
            work_item: Some(r.get_work_item(q).await?),
            as_of_seq,
        }),
        Q::ListWorkItems(q) => r.list_work_items(q).await?,
        Q::GetSprint(q) => R::GetSprintResult(v1::GetSprintResult {
            sprint: Some(r.get("id", &q.id).await?.0),
            as_of_seq,
        }),
        Q::ListSprints(q) => {
            let project_id = r.project("project_id", &q.project_id).await?.0;
            let status = convert::sprint_status("status", q.status.unwrap_or_default())?;
            let (items, next_page_token) =
                list::<v1::Sprint>(r.conn, &["t.created_at", "t.id"], q.page.as_ref(), |b| {
                    b.push(" AND t.project_id = ").push_bind(project_id);
                    if let Some(status) = status {
                        b.push(" AND t.status = ").push_bind(status.as_str());
                    }
                    live_only(b, q.include_deleted);
                })
                .await?;
            R::ListSprintsResult(v1::ListSprintsResult {
                items,
                next_page_token,
                as_of_seq,
            })
        }
        Q::GetComment(q) => R::GetCommentResult(v1::GetCommentResult {
            comment: Some(r.get("id", &q.id).await?.0),
            as_of_seq,
        }),
        Q::ListComments(q) => {
            let item = r
                .get::<v1::WorkItem>("work_item_id", &q.work_item_id)
                .await?
                .0;
            let (items, next_page_token) =
                list::<v1::Comment>(r.conn, &["t.created_at", "t.id"], q.page.as_ref(), |b| {
                    b.push(" AND t.work_item_id = ").push_bind(item.id);
                    live_only(b, q.include_deleted);
                })
                .await?;
            R::ListCommentsResult(v1::ListCommentsResult {
                items,
                next_page_token,
                as_of_seq,
            })
        }
        Q::GetTimeEntry(q) => R::GetTimeEntryResult(v1::GetTimeEntryResult {
            time_entry: Some(r.get("id", &q.id).await?.0),
            as_of_seq,
        }),
        Q::ListTimeEntries(q) => {
            let project_id = r.project("project_id", &q.project_id).await?.0;
            let work_item = optional_id("work_item_id", q.work_item_id.as_deref())?;
            let user = q
                .user_id
                .as_deref()
                .map(|u| UserId::parse("user_id", u))
                .transpose()?;
            let (items, next_page_token) =
                list::<v1::TimeEntry>(r.conn, &["t.started_at", "t.id"], q.page.as_ref(), |b| {
                    b.push(" AND t.project_id = ").push_bind(project_id);
                    if let Some(id) = work_item {
                        b.push(" AND t.work_item_id = ").push_bind(id);
                    }
                    if let Some(user) = user {
                        b.push(" AND t.user_id = ")
                            .push_bind(user.as_str().to_owned());
                    }
                    live_only(b, q.include_deleted);
                })
                .await?;
            R::ListTimeEntriesResult(v1::ListTimeEntriesResult {
                items,
                next_page_token,
                as_of_seq,
            })
        }
        Q::GetDependency(q) => R::GetDependencyResult(v1::GetDependencyResult {
            dependency: Some(r.get("id", &q.id).await?.0),
            as_of_seq,
        }),
        Q::ListDependencies(q) => {
            let project_id = r.project("project_id", &q.project_id).await?.0;
            let work_item = optional_id("work_item_id", q.work_item_id.as_deref())?;
            let direction = v1::DependencyDirection::try_from(q.direction).map_err(|_| {
                Error::invalid("direction", format!("unknown value {}", q.direction))
            })?;
            let sides: &[&str] = match direction {
                v1::DependencyDirection::Unspecified | v1::DependencyDirection::Both => {
                    &["t.blocking_item_id", "t.blocked_item_id"]
                }
                v1::DependencyDirection::Blocking => &["t.blocking_item_id"],
                v1::DependencyDirection::BlockedBy => &["t.blocked_item_id"],
            };
            if work_item.is_none() && sides.len() == 1 {
                return Err(Error::invalid(
                    "direction",
                    "needs work_item_id: the item whose side it names",
                ));
            }
            let dependency_type =
                convert::dependency_type("dependency_type", q.dependency_type.unwrap_or_default())?;
            let (items, next_page_token) =
                list::<v1::Dependency>(r.conn, &["t.created_at", "t.id"], q.page.as_ref(), |b| {
                    b.push(" AND t.project_id = ").push_bind(project_id);
                    if let Some(id) = work_item {
                        b.push(" AND (");
                        for (i, side) in sides.iter().enumerate() {
                            if i > 0 {
                                b.push(" OR ");
                            }
                            b.push(format_args!("{side} = ")).push_bind(id.clone());
                        }
                        b.push(")");
                    }
                    if let Some(kind) = dependency_type {
                        b.push(" AND t.dependency_type = ").push_bind(kind.as_str());
                    }
                    live_only(b, q.include_deleted);
                })
                .await?;
            R::ListDependenciesResult(v1::ListDependenciesResult {
                items,
                next_page_token,
                as_of_seq,
            })
        }
        Q::GetSwimLane(q) => R::GetSwimLaneResult(v1::GetSwimLaneResult {
            swim_lane: Some(r.get("id", &q.id).await?.0),
            as_of_seq,
        }),
        Q::ListSwimLanes(q) => {
            let project_id = r.project("project_id", &q.project_id).await?.0;
            let (items, next_page_token) =
                list::<v1::SwimLane>(r.conn, &["t.position", "t.id"], q.page.as_ref(), |b| {
                    b.push(" AND t.project_id = ").push_bind(project_id);
                    live_only(b, q.include_deleted);
                })
                .await?;
            R::ListSwimLanesResult(v1::ListSwimLanesResult {
                items,
                next_page_token,
                as_of_seq,
            })
        }
        Q::GetLlmContext(q) => R::GetLlmContextResult(v1::GetLlmContextResult {
            llm_context: Some(r.get("id", &q.id).await?.0),
            as_of_seq,
        }),
        Q::ListLlmContext(q) => {
            let project_id = r.project("project_id", &q.project_id).await?.0;
            let category =
                convert::llm_context_category("category", q.category.unwrap_or_default())?;
            let (items, next_page_token) =
                list::<v1::LlmContext>(r.conn, &["-t.priority", "t.id"], q.page.as_ref(), |b| {
                    b.push(" AND t.project_id = ").push_bind(project_id);
                    if let Some(category) = category {
                        b.push(" AND t.category = ").push_bind(category.as_str());
                    }
                    live_only(b, q.include_deleted);
                })
                .await?;
            R::ListLlmContextResult(v1::ListLlmContextResult {
                items,
                next_page_token,
                as_of_seq,
            })
        }
        Q::ListActivity(q) => r.list_activity(q).await?,
        Q::Search(q) => r.search(q).await?,
        Q::ListUsers(q) => r.list_users(q).await?,
    };
    Ok(v1::QueryResult {
        result: Some(result),
    })
}

/// Reads the [`SubscriptionSnapshot`] of each of `users` (in their order) in ONE statement: a
/// single SELECT reads one snapshot, so memberships, head and oldest agree, and any number of
/// subscribes cost one round trip to SQLite's thread instead of four each (BEGIN, head,
/// members, ROLLBACK). Memberships of deleted projects come too, marked, for a subscriber to
/// see such a project again once it is restored.
pub(crate) async fn subscription_snapshots(
    conn: &mut Conn,
    users: &[UserId],
) -> Result<Vec<SubscriptionSnapshot>> {
    let users: Vec<&str> = users.iter().map(UserId::as_str).collect();
    let rows = sqlx::query(&format!(
        r#"
        SELECT NULL AS user_id, NULL AS project_id, NULL AS role,
               (SELECT MIN(seq) FROM change_log) AS oldest,
               ({}) AS head, NULL AS deleted
        UNION ALL
        SELECT m.user_id, m.project_id, m.role, NULL, NULL, p.deleted_at IS NOT NULL
        FROM project_members AS m
        JOIN projects AS p ON p.id = m.project_id
        WHERE {}
        "#,
        dialect::HEAD_SEQ,
        dialect::in_id_list("m.user_id", 1),
    ))
    .bind(dialect::id_list(&users))
    .fetch_all(&mut *conn)
    .await?;
    let empty = SubscriptionSnapshot {
        memberships: Vec::new(),
        deleted: Vec::new(),
        head: 0,
        oldest: None,
    };
    let mut snapshots = vec![empty; users.len()];
    // The same user may be asked for more than once (two connections of theirs).
    let mut asked: HashMap<&str, Vec<usize>> = HashMap::with_capacity(users.len());
    for (i, user) in users.iter().enumerate() {
        asked.entry(*user).or_default().push(i);
    }
    for row in &rows {
        let Some(user) = row.try_get::<Option<String>, _>("user_id")? else {
            let head = row.try_get::<i64, _>("head")? as u64;
            let oldest = row.try_get::<Option<i64>, _>("oldest")?.map(|s| s as u64);
            for snapshot in &mut snapshots {
                (snapshot.head, snapshot.oldest) = (head, oldest);
            }
            continue;
        };
        let project: String = row.try_get("project_id")?;
        let deleted: bool = row.try_get("deleted")?;
        let role = if deleted {
            None
        } else {
            let role: String = row.try_get("role")?;
            Some(Role::parse("role", &role).map_err(|_| Error::Corrupt("unknown role".into()))?)
        };
        for &i in asked.get(user.as_str()).into_iter().flatten() {
            match role {
                Some(role) => snapshots[i].memberships.push((project.clone(), role)),
                None => snapshots[i].deleted.push(project.clone()),
            }
        }
    }
    Ok(snapshots)
}

/// One query's read transaction, as `actor`, and the change number it reads as of.
pub(crate) struct Reader<'a> {
    pub(crate) conn: &'a mut Conn,
    pub(crate) actor: &'a UserId,
    pub(crate) as_of_seq: u64,
}

/// `SELECT m.project_id ...`: the live projects `actor` is a member of. Open at its end for
/// more conditions on the membership `m`.
pub(crate) fn my_projects(b: &mut QueryBuilder<'_, Db>, actor: &str) {
    b.push(
        "SELECT m.project_id FROM project_members AS m \
         JOIN projects AS mp ON mp.id = m.project_id \
         WHERE mp.deleted_at IS NULL AND m.user_id = ",
    )
    .push_bind(actor.to_owned());
}

impl Reader<'_> {
    /// ` AND {column} IN (...)`: the live projects the caller is a member of.
    pub(crate) fn in_my_projects(&self, b: &mut QueryBuilder<'_, Db>, column: &str) {
        b.push(format_args!(" AND {column} IN ("));
        my_projects(b, self.actor.as_str());
        b.push(")");
    }
}

pub(crate) fn live_only(b: &mut QueryBuilder<'_, Db>, include_deleted: bool) {
    if !include_deleted {
        b.push(" AND t.deleted_at IS NULL");
    }
}

pub(crate) fn optional_id(field: &str, raw: Option<&str>) -> Result<Option<String>> {
    Ok(raw
        .map(|id| EntityId::parse(field, id))
        .transpose()?
        .map(EntityId::to_text))
}

impl Reader<'_> {
    /// The caller's role and the key of a live project it is a member of.
    async fn membership(&mut self, project_id: &str) -> Result<Option<(Role, String)>> {
        let row = sqlx::query(
            r#"
            SELECT m.role, p.key
            FROM project_members AS m
            JOIN projects AS p ON p.id = m.project_id
            WHERE m.project_id = $1 AND m.user_id = $2 AND p.deleted_at IS NULL
            "#,
        )
        .bind(project_id)
        .bind(self.actor.as_str())
        .fetch_optional(&mut *self.conn)
        .await?;
        row.map(|row| -> Result<(Role, String)> {
            let role: String = row.try_get("role")?;
            let role =
                Role::parse("role", &role).map_err(|_| Error::Corrupt("unknown role".into()))?;
            Ok((role, row.try_get("key")?))
        })
        .transpose()
    }

    /// A project id from the request that the caller is a member of: (id, key).
    pub(crate) async fn project(&mut self, field: &str, raw: &str) -> Result<(String, String)> {
        let id = EntityId::parse(field, raw)?.to_text();
        let (_, key) = self
            .membership(&id)
            .await?
            .ok_or_else(|| Error::NotFound("project not found".into()))?;
        Ok((id, key))
    }

    /// An entity by id, deleted or not, if the caller may see its project.
    pub(crate) async fn get<T: Entity>(&mut self, field: &str, raw: &str) -> Result<(T, String)> {
        let id = EntityId::parse(field, raw)?.to_text();
        let not_found = || Error::NotFound(format!("{} not found", T::NAME));
        let record: T = records::find(&mut *self.conn, &id)
            .await?
            .ok_or_else(not_found)?;
        let (_, key) = self
            .membership(record.project_id())
            .await?
            .ok_or_else(not_found)?;
        Ok((record, key))
    }

    async fn get_work_item(&mut self, q: v1::GetWorkItem) -> Result<v1::WorkItem> {
        let id = match (q.id.is_empty(), q.display_key.is_empty()) {
            (false, true) => q.id,
            (true, false) => {
                let (key, number) = text::parse_display_key("display_key", &q.display_key)?;
                let id: Option<String> = sqlx::query_scalar(
                    r#"
                    SELECT w.id FROM work_items AS w JOIN projects AS p ON p.id = w.project_id
                    WHERE p.key = $1 AND w.number = $2
                    "#,
                )
                .bind(key)
                .bind(number as i64)
                .fetch_optional(&mut *self.conn)
                .await?;
                id.ok_or_else(|| Error::NotFound("work item not found".into()))?
            }
            _ => {
                return Err(Error::invalid(
                    "id",
                    "give exactly one of id and display_key",
                ))
            }
        };
        let (item, key) = self.get::<v1::WorkItem>("id", &id).await?;
        let mut items = [item.with_project_key(&key)];
        read_model::fill_blocked(self.conn, &mut items).await?;
        assignee_names(self.conn, &mut items).await?;
        let [item] = items;
        Ok(item)
    }

    async fn list_projects(&mut self, q: v1::ListProjects) -> Result<R> {
        let status = convert::project_status("status", q.status.unwrap_or_default())?;
        let actor = self.actor.as_str().to_owned();
        let admin = actor.clone();
        let (items, next_page_token) =
            list::<v1::Project>(self.conn, &["t.key"], q.page.as_ref(), |b| {
                b.push(" AND t.id IN (SELECT project_id FROM project_members WHERE user_id = ")
                    .push_bind(actor)
                    .push(")");
                if let Some(status) = status {
                    b.push(" AND t.status = ").push_bind(status.as_str());
                }
                if q.include_deleted {
                    // A deleted project is shown only to its admins, who may restore it.
                    b.push(
                        " AND (t.deleted_at IS NULL OR t.id IN (SELECT project_id \
                         FROM project_members WHERE role = 'admin' AND user_id = ",
                    )
                    .push_bind(admin)
                    .push("))");
                } else {
                    live_only(b, false);
                }
            })
            .await?;
        Ok(R::ListProjectsResult(v1::ListProjectsResult {
            items,
            next_page_token,
            as_of_seq: self.as_of_seq,
        }))
    }

    async fn list_work_items(&mut self, q: v1::ListWorkItems) -> Result<R> {
        let (project_id, key) = self.project("project_id", &q.project_id).await?;
        let sprint = optional_id("sprint_id", q.sprint_id.as_deref())?;
        let parent = optional_id("parent_id", q.parent_id.as_deref())?;
        let assignee = q
            .assignee_id
            .as_deref()
            .map(|a| UserId::parse("assignee_id", a))
            .transpose()?;
        let item_type = convert::work_item_type("item_type", q.item_type.unwrap_or_default())?;
        let statuses = q
            .statuses
            .iter()
            .map(|s| convert::required("statuses", convert::work_item_status("statuses", *s)))
            .collect::<pm_core::Result<Vec<_>>>()?;
        let search = if q.text.trim().is_empty() {
            None
        } else {
            Some(search::text_query(&q.text)?)
        };
        let (items, next_page_token) =
            list::<v1::WorkItem>(self.conn, &["t.rank", "t.id"], q.page.as_ref(), |b| {
                b.push(" AND t.project_id = ").push_bind(project_id);
                if let Some(sprint) = sprint {
                    b.push(" AND t.sprint_id = ").push_bind(sprint);
                }
                if let Some(parent) = parent {
                    b.push(" AND t.parent_id = ").push_bind(parent);
                }
                if let Some(assignee) = assignee {
                    b.push(" AND t.assignee_id = ")
                        .push_bind(assignee.as_str().to_owned());
                }
                if let Some(item_type) = item_type {
                    b.push(" AND t.item_type = ").push_bind(item_type.as_str());
                }
                if !statuses.is_empty() {
                    b.push(" AND t.status IN (");
                    let mut list = b.separated(", ");
                    for status in &statuses {
                        list.push_bind(status.as_str());
                    }
                    b.push(")");
                }
                if let Some(search) = search {
                    search::push_item_filter(b, search);
                }
                live_only(b, q.include_deleted);
            })
            .await?;
        let mut items: Vec<v1::WorkItem> = items
            .into_iter()
            .map(|item| item.with_project_key(&key))
            .collect();
        read_model::fill_blocked(self.conn, &mut items).await?;
        assignee_names(self.conn, &mut items).await?;
        Ok(R::ListWorkItemsResult(v1::ListWorkItemsResult {
            items,
            next_page_token,
            as_of_seq: self.as_of_seq,
        }))
    }
}
