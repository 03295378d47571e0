//! The board's read model: reads that combine several tables, each in the query's one read
//! transaction and answered with its `as_of_seq` like every query (`queries`), each checked
//! against the caller's memberships the same way (a non-member gets `NOT_FOUND`).
//!
//! - The `blocked` flag of work items ([`fill_blocked`]) is derived when items are read, not
//!   stored: one indexed statement per answer (`dependencies_by_blocked`), so it is right the
//!   moment a blocker changes status, without writing anything to the blocked items (a stored
//!   flag would cost every status change a write per item it blocks, and an event for each).
//! - `GetBoardSummary`: counts and story points per status and per lane, WIP limits, sprint
//!   progress; `GetWorkItemHierarchy`: ancestors and subtree (recursive CTEs);
//!   `GetRunningTimer`: the caller's timer in any project; `GetTimeTotals`: time spent,
//!   grouped, within a time range.

use pm_core::time::now_ms;
use std::collections::{HashMap, HashSet};

use pm_core::kinds::WorkItemStatus;
use pm_core::{rules, UserId};
use pm_proto::v1;
use sqlx::{QueryBuilder, Row};

use super::dialect::{self, Conn, Db};
use super::queries::{optional_id, Reader};
use super::records;
use crate::access::not_found;
use crate::entity::Entity;
use crate::error::{Error, Result};

use v1::query_result::Result as R;

/// At most this many time-total groups, or descendants in a hierarchy, in one answer.
const MAX_ROWS: usize = 1_000;

/// Hierarchies are three levels deep; a deeper walk can only be damaged data.
const MAX_DEPTH: i64 = 64;

/// The work items among `ids` (bound with [`dialect::id_list`]) with an open blocker: a live `blocks` link from
/// a live item that is not closed (the list of closed statuses, `WorkItemStatus::is_closed`,
/// is spelled out; a test holds it to the domain's).
fn blocked_sql() -> String {
    format!(
        "{BLOCKED_HEAD}{}{BLOCKED_TAIL}",
        dialect::in_id_list("d.blocked_item_id", 1)
    )
}

const BLOCKED_HEAD: &str = r#"
    SELECT DISTINCT d.blocked_item_id
    FROM dependencies AS d
    JOIN work_items AS blocker ON blocker.id = d.blocking_item_id
    WHERE "#;

const BLOCKED_TAIL: &str = r#"
      AND d.dependency_type = 'blocks'
      AND d.deleted_at IS NULL
      AND blocker.deleted_at IS NULL
      AND blocker.status NOT IN ('done', 'cancelled')
"#;

/// Live work items of a project per status: count and story points.
const STATUS_COUNTS: &str = r#"
    SELECT status, COUNT(*) AS items, COALESCE(SUM(story_points), 0) AS points
    FROM work_items
    WHERE project_id = $1 AND deleted_at IS NULL
    GROUP BY status
"#;

/// The same for the items of one sprint.
const SPRINT_STATUS_COUNTS: &str = r#"
    SELECT status, COUNT(*) AS items, COALESCE(SUM(story_points), 0) AS points
    FROM work_items
    WHERE project_id = $1 AND sprint_id = $2 AND deleted_at IS NULL
    GROUP BY status
"#;

/// Sets `blocked` on each of `items`, in one statement.
pub(crate) async fn fill_blocked(conn: &mut Conn, items: &mut [v1::WorkItem]) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = items.iter().map(|item| item.id.as_str()).collect();
    let blocked: Vec<String> = sqlx::query_scalar(&blocked_sql())
        .bind(dialect::id_list(&ids))
        .fetch_all(&mut *conn)
        .await?;
    let blocked: HashSet<String> = blocked.into_iter().collect();
    for item in items {
        item.blocked = Some(blocked.contains(&item.id));
    }
    Ok(())
}

/// A count that fits the wire's `uint32` (sums of story points could, in theory, not).
fn count(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

/// Counts per stored status name: (items, story points).
type Counts = HashMap<String, (u32, u32)>;

async fn status_counts(
    conn: &mut Conn,
    project_id: &str,
    sprint_id: Option<&str>,
) -> Result<Counts> {
    let rows = match sprint_id {
        None => sqlx::query(STATUS_COUNTS).bind(project_id),
        Some(sprint) => sqlx::query(SPRINT_STATUS_COUNTS)
            .bind(project_id)
            .bind(sprint),
    }
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get::<String, _>("status")?,
                (count(row.try_get("items")?), count(row.try_get("points")?)),
            ))
        })
        .collect()
}

/// One `StatusCount` per status, in workflow order, zeros included.
fn every_status(counts: &Counts) -> Vec<v1::StatusCount> {
    WorkItemStatus::ALL
        .iter()
        .map(|status| {
            let (items, story_points) = counts.get(status.as_str()).copied().unwrap_or_default();
            v1::StatusCount {
                status: v1::WorkItemStatus::from(*status).into(),
                items,
                story_points,
            }
        })
        .collect()
}

impl Reader<'_> {
    pub(crate) async fn board_summary(&mut self, q: v1::GetBoardSummary) -> Result<R> {
        let (project_id, _) = self.project("project_id", &q.project_id).await?;
        let sprint_id = optional_id("sprint_id", q.sprint_id.as_deref())?;

        let counts = status_counts(self.conn, &project_id, None).await?;
        let lanes = sqlx::query(&format!(
            r#"
            SELECT {}
            FROM swim_lanes AS t
            WHERE t.project_id = $1 AND t.deleted_at IS NULL
            ORDER BY t.position, t.id
            "#,
            records::select_columns::<v1::SwimLane>("t")
        ))
        .bind(&project_id)
        .fetch_all(&mut *self.conn)
        .await?
        .iter()
        .map(records::from_row::<v1::SwimLane>)
        .collect::<Result<Vec<_>>>()?;
        let lanes = lanes
            .into_iter()
            .map(|lane| {
                let status = pm_proto::convert::work_item_status("status", lane.status)
                    .ok()
                    .flatten()
                    .map_or("", WorkItemStatus::as_str);
                let (items, story_points) = counts.get(status).copied().unwrap_or_default();
                v1::SwimLaneLoad {
                    over_limit: lane.wip_limit.is_some_and(|limit| items > limit),
                    swim_lane: Some(lane),
                    items,
                    story_points,
                }
            })
            .collect();

        let sprint: Option<v1::Sprint> = match sprint_id {
            Some(id) => {
                let sprint: v1::Sprint = records::find(&mut *self.conn, &id)
                    .await?
                    .filter(|s: &v1::Sprint| s.project_id == project_id)
                    .ok_or_else(|| not_found("sprint"))?;
                Some(sprint)
            }
            None => sqlx::query(&format!(
                r#"
                SELECT {}
                FROM sprints AS t
                WHERE t.project_id = $1 AND t.status = 'active' AND t.deleted_at IS NULL
                "#,
                records::select_columns::<v1::Sprint>("t")
            ))
            .bind(&project_id)
            .fetch_optional(&mut *self.conn)
            .await?
            .as_ref()
            .map(records::from_row)
            .transpose()?,
        };
        let sprint_progress = match sprint {
            None => None,
            Some(sprint) => {
                let counts = status_counts(self.conn, &project_id, Some(&sprint.id)).await?;
                let statuses = every_status(&counts);
                let closed = |s: &&v1::StatusCount| {
                    pm_proto::convert::work_item_status("status", s.status)
                        .ok()
                        .flatten()
                        .is_some_and(WorkItemStatus::is_closed)
                };
                let sum = |f: fn(&v1::StatusCount) -> u32, only_closed: bool| {
                    statuses
                        .iter()
                        .filter(|s| !only_closed || closed(s))
                        .fold(0u32, |total, s| total.saturating_add(f(s)))
                };
                Some(v1::SprintProgress {
                    items: sum(|s| s.items, false),
                    closed_items: sum(|s| s.items, true),
                    story_points: sum(|s| s.story_points, false),
                    closed_story_points: sum(|s| s.story_points, true),
                    sprint: Some(sprint),
                    statuses,
                })
            }
        };
        Ok(R::GetBoardSummaryResult(v1::GetBoardSummaryResult {
            statuses: every_status(&counts),
            lanes,
            sprint_progress,
            as_of_seq: self.as_of_seq,
        }))
    }

    pub(crate) async fn hierarchy(&mut self, q: v1::GetWorkItemHierarchy) -> Result<R> {
        let (item, key) = self.get::<v1::WorkItem>("id", &q.id).await?;
        let columns = records::select_columns::<v1::WorkItem>("t");
        let ancestors = sqlx::query(&format!(
            r#"
            WITH RECURSIVE ancestors (id, depth) AS (
                SELECT parent_id, 1 FROM work_items WHERE id = $1 AND parent_id IS NOT NULL
                UNION ALL
                SELECT w.parent_id, a.depth + 1
                FROM work_items AS w
                JOIN ancestors AS a ON w.id = a.id
                WHERE w.parent_id IS NOT NULL AND a.depth < $2
            )
            SELECT {columns}
            FROM ancestors AS a
            JOIN work_items AS t ON t.id = a.id
            ORDER BY a.depth DESC
            "#
        ))
        .bind(&item.id)
        .bind(MAX_DEPTH)
        .fetch_all(&mut *self.conn)
        .await?;
        let descendants = sqlx::query(&format!(
            r#"
            WITH RECURSIVE subtree (id, depth) AS (
                SELECT id, 1
                FROM work_items
                WHERE parent_id = $1 AND ($2 OR deleted_at IS NULL)
                UNION ALL
                SELECT w.id, s.depth + 1
                FROM work_items AS w
                JOIN subtree AS s ON w.parent_id = s.id
                WHERE s.depth < $3 AND ($2 OR w.deleted_at IS NULL)
            )
            SELECT {columns}
            FROM subtree AS s
            JOIN work_items AS t ON t.id = s.id
            ORDER BY s.depth, t.rank, t.id
            LIMIT $4
            "#
        ))
        .bind(&item.id)
        .bind(q.include_deleted)
        .bind(MAX_DEPTH)
        .bind(MAX_ROWS as i64 + 1)
        .fetch_all(&mut *self.conn)
        .await?;
        let truncated = descendants.len() > MAX_ROWS;
        // All of them in one list for one `blocked` statement: ancestors, the item, below.
        let mut items = ancestors
            .iter()
            .chain(descendants.iter().take(MAX_ROWS))
            .map(records::from_row::<v1::WorkItem>)
            .collect::<Result<Vec<_>>>()?;
        let above = ancestors.len();
        items.insert(above, item);
        let mut items: Vec<v1::WorkItem> = items
            .into_iter()
            .map(|item| item.with_project_key(&key))
            .collect();
        fill_blocked(self.conn, &mut items).await?;
        super::people::assignee_names(self.conn, &mut items).await?;
        let descendants = items.split_off(above + 1);
        let work_item = items.pop();
        Ok(R::GetWorkItemHierarchyResult(
            v1::GetWorkItemHierarchyResult {
                ancestors: items,
                work_item,
                descendants,
                truncated,
                as_of_seq: self.as_of_seq,
            },
        ))
    }

    pub(crate) async fn running_timer(&mut self) -> Result<R> {
        let row = sqlx::query(&format!(
            r#"
            SELECT {}, p.key AS project_key
            FROM time_entries AS t
            JOIN projects AS p ON p.id = t.project_id
            JOIN project_members AS m ON m.project_id = t.project_id AND m.user_id = t.user_id
            WHERE t.user_id = $1
              AND t.ended_at IS NULL
              AND t.deleted_at IS NULL
              AND p.deleted_at IS NULL
            "#,
            records::select_columns::<v1::TimeEntry>("t")
        ))
        .bind(self.actor.as_str())
        .fetch_optional(&mut *self.conn)
        .await?;
        let (time_entry, work_item) = match row {
            None => (None, None),
            Some(row) => {
                let entry: v1::TimeEntry = records::from_row(&row)?;
                let key: String = row.try_get("project_key")?;
                let item: v1::WorkItem = records::find(&mut *self.conn, &entry.work_item_id)
                    .await?
                    .ok_or_else(|| Error::Corrupt("a time entry without its work item".into()))?;
                let mut items = [item.with_project_key(&key)];
                fill_blocked(self.conn, &mut items).await?;
                super::people::assignee_names(self.conn, &mut items).await?;
                let [item] = items;
                (Some(entry), Some(item))
            }
        };
        Ok(R::GetRunningTimerResult(v1::GetRunningTimerResult {
            time_entry,
            work_item,
            as_of_seq: self.as_of_seq,
        }))
    }

    pub(crate) async fn time_totals(&mut self, q: v1::GetTimeTotals) -> Result<R> {
        let group = v1::TimeGrouping::try_from(q.group_by)
            .map_err(|_| Error::invalid("group_by", format!("unknown value {}", q.group_by)))?;
        let work_item = optional_id("work_item_id", q.work_item_id.as_deref())?;
        let sprint = optional_id("sprint_id", q.sprint_id.as_deref())?;
        let user = q
            .user_id
            .as_deref()
            .map(|u| UserId::parse("user_id", u))
            .transpose()?;
        if let Some(start) = q.start_at {
            rules::check_time_range("start_at", start, "end_at", q.end_at)?;
        } else if let Some(end) = q.end_at {
            rules::check_timestamp("end_at", end)?;
        }
        let project = if q.project_id.is_empty() {
            None
        } else {
            Some(self.project("project_id", &q.project_id).await?.0)
        };
        let now = now_ms();
        // Entries start at 0 or later (a CHECK), so 0 and i64::MAX leave a side open.
        let start = q.start_at.unwrap_or(0);
        let end = q.end_at.unwrap_or(i64::MAX);
        let (key, label) = match group {
            v1::TimeGrouping::Unspecified => ("''", "''"),
            v1::TimeGrouping::WorkItem => ("t.work_item_id", "p.key || '-' || w.number"),
            v1::TimeGrouping::Sprint => ("COALESCE(w.sprint_id, '')", "COALESCE(s.name, '')"),
            v1::TimeGrouping::User => ("t.user_id", "t.user_id"),
            v1::TimeGrouping::Project => ("t.project_id", "p.key"),
        };

        // Each entry counts its part within [start, end); a running timer ends now. Sums are
        // TOTAL (floating point, exact to 2^53 ms) so that no amount of entries overflows.
        let mut b = QueryBuilder::<Db>::new(format!(
            r#"
            SELECT group_key, group_label,
                   TOTAL(duration) AS duration, COUNT(*) AS entries,
                   SUM(TOTAL(duration)) OVER () AS all_duration,
                   SUM(COUNT(*)) OVER () AS all_entries
            FROM (
                SELECT {key} AS group_key, {label} AS group_label,
                       MIN(COALESCE(t.ended_at, "#
        ));
        b.push_bind(now)
            .push("), ")
            .push_bind(end)
            .push(") - MAX(t.started_at, ")
            .push_bind(start)
            .push(
                r#") AS duration
                FROM time_entries AS t
                JOIN work_items AS w ON w.id = t.work_item_id
                JOIN projects AS p ON p.id = t.project_id
                LEFT JOIN sprints AS s ON s.id = w.sprint_id
                WHERE t.deleted_at IS NULL AND w.deleted_at IS NULL AND t.started_at < "#,
            )
            .push_bind(end);
        match project {
            Some(project) => {
                b.push(" AND t.project_id = ").push_bind(project);
            }
            None => self.in_my_projects(&mut b, "t.project_id"),
        }
        if let Some(id) = work_item {
            b.push(" AND t.work_item_id = ").push_bind(id);
        }
        if let Some(id) = sprint {
            b.push(" AND w.sprint_id = ").push_bind(id);
        }
        if let Some(user) = user {
            b.push(" AND t.user_id = ")
                .push_bind(user.as_str().to_owned());
        }
        b.push(
            r#"
            )
            WHERE duration > 0
            GROUP BY group_key
            ORDER BY duration DESC, group_key
            LIMIT "#,
        )
        .push_bind(MAX_ROWS as i64 + 1);
        let rows = b.build().fetch_all(&mut *self.conn).await?;

        let (duration_ms, entries) = match rows.first() {
            None => (0, 0),
            Some(row) => (
                // `as` saturates: a float beyond i64 becomes i64::MAX.
                row.try_get::<f64, _>("all_duration")? as i64,
                count(row.try_get("all_entries")?),
            ),
        };
        let truncated = rows.len() > MAX_ROWS;
        let groups = if group == v1::TimeGrouping::Unspecified {
            Vec::new()
        } else {
            rows.iter()
                .take(MAX_ROWS)
                .map(|row| {
                    Ok(v1::TimeTotal {
                        key: row.try_get("group_key")?,
                        label: row.try_get("group_label")?,
                        duration_ms: row.try_get::<f64, _>("duration")? as i64,
                        entries: count(row.try_get("entries")?),
                    })
                })
                .collect::<Result<Vec<_>>>()?
        };
        Ok(R::GetTimeTotalsResult(v1::GetTimeTotalsResult {
            groups,
            duration_ms,
            entries,
            truncated,
            as_of_seq: self.as_of_seq,
            now,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_blocker_is_one_of_the_domain_s_closed_statuses() {
        let closed: Vec<String> = WorkItemStatus::ALL
            .iter()
            .filter(|s| s.is_closed())
            .map(|s| format!("'{s}'"))
            .collect();
        let list = format!("NOT IN ({})", closed.join(", "));
        assert!(blocked_sql().contains(&list), "{list}");
    }
}
