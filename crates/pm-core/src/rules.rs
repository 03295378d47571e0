//! Rules between fields and entities: hierarchy, sprint lifecycle, dependencies, time entries
//! and numeric ranges.

use crate::error::{Error, Result};
use crate::kinds::{SprintStatus, WorkItemType};

/// Largest story point estimate.
pub const MAX_STORY_POINTS: u32 = 1_000;
/// Largest swim lane WIP limit.
pub const MAX_WIP_LIMIT: u32 = 10_000;

/// The work item types a `child` may hang under; epics have no parent.
///
/// The hierarchy is epic > story > task/bug. A parent is optional for stories, tasks and
/// bugs. Because each level may only point to a strictly higher one and types never change,
/// the hierarchy cannot contain a cycle.
pub fn allowed_parents(child: WorkItemType) -> &'static [WorkItemType] {
    match child {
        WorkItemType::Epic => &[],
        WorkItemType::Story => &[WorkItemType::Epic],
        WorkItemType::Task | WorkItemType::Bug => &[WorkItemType::Story],
    }
}

/// Checks that an item of type `child` may have a parent of type `parent`.
pub fn check_parent(child: WorkItemType, parent: WorkItemType) -> Result<()> {
    let allowed = allowed_parents(child);
    if allowed.contains(&parent) {
        return Ok(());
    }
    let article = |t: WorkItemType| match t {
        WorkItemType::Epic => "an",
        _ => "a",
    };
    let message = match allowed {
        [] => format!("{} {child} cannot have a parent", article(child)),
        [only] => format!(
            "the parent of a {child} must be {} {only}, not {} {parent}",
            article(*only),
            article(parent)
        ),
        _ => unreachable!("each type has at most one allowed parent type"),
    };
    Err(Error::invalid("parent_id", message))
}

/// Checks a sprint status change. Allowed: planned -> active -> completed, and
/// planned or active -> cancelled. Staying in the same status is always allowed.
pub fn check_sprint_transition(from: SprintStatus, to: SprintStatus) -> Result<()> {
    use SprintStatus::*;
    let ok = from == to
        || matches!(
            (from, to),
            (Planned, Active) | (Active, Completed) | (Planned | Active, Cancelled)
        );
    if ok {
        Ok(())
    } else {
        Err(Error::precondition(format_args!(
            "a {from} sprint cannot become {to}"
        )))
    }
}

/// Latest accepted timestamp: 9999-12-31T23:59:59.999Z, in Unix milliseconds.
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// Checks that a timestamp lies between 1970 and the year 9999.
pub fn check_timestamp(field: &str, at: i64) -> Result<()> {
    if !(0..=MAX_TIMESTAMP_MS).contains(&at) {
        return Err(Error::invalid(
            field,
            "must be Unix milliseconds between 1970 and 9999",
        ));
    }
    Ok(())
}

/// Checks that both ends are valid timestamps and the end is strictly after the start.
pub fn check_time_range(
    start_field: &str,
    start: i64,
    end_field: &str,
    end: Option<i64>,
) -> Result<()> {
    check_timestamp(start_field, start)?;
    if let Some(end) = end {
        check_timestamp(end_field, end)?;
    }
    match end {
        Some(end) if end <= start => Err(Error::invalid(
            end_field,
            format_args!("must be after {start_field}"),
        )),
        _ => Ok(()),
    }
}

/// Checks that the two ends of a dependency differ.
pub fn check_dependency_ends(blocking: &str, blocked: &str) -> Result<()> {
    if blocking == blocked {
        return Err(Error::invalid(
            "blocked_item_id",
            "a work item cannot depend on itself",
        ));
    }
    Ok(())
}

/// Checks a story point estimate.
pub fn check_story_points(points: u32) -> Result<()> {
    if points > MAX_STORY_POINTS {
        return Err(Error::invalid(
            "story_points",
            format_args!("must be at most {MAX_STORY_POINTS}"),
        ));
    }
    Ok(())
}

/// Checks a swim lane WIP limit.
pub fn check_wip_limit(limit: u32) -> Result<()> {
    if limit == 0 || limit > MAX_WIP_LIMIT {
        return Err(Error::invalid(
            "wip_limit",
            format_args!("must be between 1 and {MAX_WIP_LIMIT}"),
        ));
    }
    Ok(())
}

/// Checks that `expected_version` was given (versions start at 1).
pub fn check_expected_version(version: u64) -> Result<()> {
    if version == 0 {
        return Err(Error::invalid(
            "expected_version",
            "is required (versions start at 1)",
        ));
    }
    Ok(())
}

/// Checks the names in an update's `clear_fields` against the fields that may be cleared,
/// and that no field is both set and cleared.
pub fn check_clear_fields(
    clear: &[String],
    clearable: &[&str],
    set: &[(&str, bool)],
) -> Result<()> {
    for name in clear {
        if !clearable.contains(&name.as_str()) {
            return Err(Error::invalid(
                "clear_fields",
                format_args!(
                    "`{name}` cannot be cleared (clearable: {})",
                    clearable.join(", ")
                ),
            ));
        }
        if set.iter().any(|(field, present)| *present && field == name) {
            return Err(Error::invalid(
                "clear_fields",
                format_args!("`{name}` is both set and cleared"),
            ));
        }
    }
    Ok(())
}

/// Page size bounds for list queries.
pub mod page {
    use crate::error::{Error, Result};

    /// Page size used when the request asks for 0.
    pub const DEFAULT: u32 = 50;
    /// Largest page size.
    pub const MAX: u32 = 500;

    /// The effective page size for a requested one.
    pub fn size(requested: u32) -> Result<u32> {
        match requested {
            0 => Ok(DEFAULT),
            n if n <= MAX => Ok(n),
            _ => Err(Error::invalid(
                "page.page_size",
                format_args!("must be at most {MAX}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{SprintStatus::*, WorkItemType::*};

    #[test]
    fn hierarchy() {
        assert!(check_parent(Story, Epic).is_ok());
        assert!(check_parent(Task, Story).is_ok());
        assert!(check_parent(Bug, Story).is_ok());
        assert_eq!(
            check_parent(Epic, Epic).unwrap_err(),
            Error::invalid("parent_id", "an epic cannot have a parent")
        );
        assert_eq!(
            check_parent(Task, Epic).unwrap_err(),
            Error::invalid(
                "parent_id",
                "the parent of a task must be a story, not an epic"
            )
        );
        assert!(check_parent(Story, Story).is_err());
        assert!(check_parent(Story, Task).is_err());
        assert!(check_parent(Task, Task).is_err());
        assert!(check_parent(Task, Bug).is_err());
    }

    #[test]
    fn hierarchy_levels_strictly_decrease_so_no_cycle_is_possible() {
        let level = |t: WorkItemType| match t {
            Epic => 0,
            Story => 1,
            Task | Bug => 2,
        };
        for child in WorkItemType::ALL {
            for parent in allowed_parents(*child) {
                assert!(level(*parent) < level(*child));
            }
        }
    }

    #[test]
    fn sprint_lifecycle() {
        let allowed = [
            (Planned, Active),
            (Active, Completed),
            (Planned, Cancelled),
            (Active, Cancelled),
        ];
        for from in SprintStatus::ALL {
            for to in SprintStatus::ALL {
                let ok = from == to || allowed.contains(&(*from, *to));
                assert_eq!(
                    check_sprint_transition(*from, *to).is_ok(),
                    ok,
                    "{from}->{to}"
                );
            }
        }
        assert_eq!(
            check_sprint_transition(Completed, Active).unwrap_err(),
            Error::precondition("a completed sprint cannot become active")
        );
    }

    #[test]
    fn ranges() {
        assert!(check_story_points(0).is_ok());
        assert!(check_story_points(1000).is_ok());
        assert!(check_story_points(1001).is_err());
        assert!(check_wip_limit(0).is_err());
        assert!(check_wip_limit(1).is_ok());
        assert!(check_time_range("started_at", 10, "ended_at", Some(11)).is_ok());
        assert!(check_time_range("started_at", 10, "ended_at", None).is_ok());
        assert!(check_time_range("started_at", -1, "ended_at", None).is_err());
        assert_eq!(
            check_time_range("started_at", i64::MAX, "ended_at", None).unwrap_err(),
            Error::invalid(
                "started_at",
                "must be Unix milliseconds between 1970 and 9999"
            )
        );
        assert!(check_time_range("started_at", 1, "ended_at", Some(i64::MAX)).is_err());
        assert!(check_timestamp("at", MAX_TIMESTAMP_MS).is_ok());
        assert_eq!(
            check_time_range("started_at", 10, "ended_at", Some(10)).unwrap_err(),
            Error::invalid("ended_at", "must be after started_at")
        );
        assert!(check_dependency_ends("a", "a").is_err());
        assert!(check_expected_version(0).is_err());
        assert_eq!(page::size(0).unwrap(), 50);
        assert_eq!(page::size(500).unwrap(), 500);
        assert!(page::size(501).is_err());
    }

    #[test]
    fn clear_fields() {
        let clearable = ["story_points", "assignee_id"];
        assert!(check_clear_fields(&["assignee_id".into()], &clearable, &[]).is_ok());
        assert_eq!(
            check_clear_fields(&["title".into()], &clearable, &[]).unwrap_err(),
            Error::invalid(
                "clear_fields",
                "`title` cannot be cleared (clearable: story_points, assignee_id)"
            )
        );
        assert!(check_clear_fields(
            &["assignee_id".into()],
            &clearable,
            &[("assignee_id", true)]
        )
        .is_err());
    }
}
