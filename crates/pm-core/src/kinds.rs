//! Closed vocabularies and the names they are stored under (in the database, in change-log
//! field values and in exports).

use crate::error::{Error, Result};

macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored name, e.g. `in_progress`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses a stored name, reporting errors against `field`.
            pub fn parse(field: &str, raw: &str) -> Result<Self> {
                match raw {
                    $($text => Ok($name::$variant),)+
                    _ => Err(Error::invalid(
                        field,
                        format_args!("must be one of: {}", [$($text),+].join(", ")),
                    )),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// Whether a project is in use.
    ProjectStatus { Active => "active", Archived => "archived" }
}

vocabulary! {
    /// A member's role; each role includes the rights of the ones before it.
    Role { Viewer => "viewer", Editor => "editor", Admin => "admin" }
}

vocabulary! {
    /// The kind of a work item; see [`crate::rules::check_parent`] for the hierarchy.
    WorkItemType { Epic => "epic", Story => "story", Task => "task", Bug => "bug" }
}

vocabulary! {
    /// Workflow status of a work item.
    WorkItemStatus {
        Backlog => "backlog",
        Todo => "todo",
        InProgress => "in_progress",
        Review => "review",
        Done => "done",
        /// Won't do: closed without being done.
        Cancelled => "cancelled",
    }
}

vocabulary! {
    /// What a swim lane's WIP limit does when a change would take the lane over it.
    WipPolicy { None => "none", Warn => "warn", Refuse => "refuse" }
}

vocabulary! {
    /// Priority of a work item.
    Priority { Low => "low", Medium => "medium", High => "high", Critical => "critical" }
}

vocabulary! {
    /// Sprint lifecycle; see [`crate::rules::check_sprint_transition`].
    SprintStatus {
        Planned => "planned",
        Active => "active",
        Completed => "completed",
        Cancelled => "cancelled",
    }
}

vocabulary! {
    /// The kind of link between two work items.
    DependencyType { Blocks => "blocks", RelatesTo => "relates_to" }
}

vocabulary! {
    /// The kind of an LLM context row.
    LlmContextCategory {
        SchemaDoc => "schema_doc",
        QueryPattern => "query_pattern",
        BusinessRule => "business_rule",
        Example => "example",
        Instruction => "instruction",
    }
}

vocabulary! {
    /// Entity kinds of the change log.
    EntityKind {
        Project => "project",
        ProjectMember => "project_member",
        WorkItem => "work_item",
        Sprint => "sprint",
        Comment => "comment",
        TimeEntry => "time_entry",
        Dependency => "dependency",
        SwimLane => "swim_lane",
        LlmContext => "llm_context",
    }
}

vocabulary! {
    /// What a change did.
    ChangeAction {
        Created => "created",
        Updated => "updated",
        Deleted => "deleted",
        Restored => "restored",
        Moved => "moved",
    }
}

impl WorkItemStatus {
    /// Closed statuses: done or cancelled. A closed blocker no longer blocks, and sprint
    /// progress counts closed items as finished.
    pub fn is_closed(self) -> bool {
        matches!(self, WorkItemStatus::Done | WorkItemStatus::Cancelled)
    }
}

impl Role {
    /// Whether this role includes the rights of `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        for s in WorkItemStatus::ALL {
            assert_eq!(WorkItemStatus::parse("status", s.as_str()).unwrap(), *s);
        }
        for k in EntityKind::ALL {
            assert_eq!(EntityKind::parse("entity_type", k.as_str()).unwrap(), *k);
        }
        assert_eq!(WorkItemStatus::InProgress.to_string(), "in_progress");
        for p in WipPolicy::ALL {
            assert_eq!(WipPolicy::parse("wip_policy", p.as_str()).unwrap(), *p);
        }
    }

    #[test]
    fn done_and_cancelled_are_the_closed_statuses() {
        let closed: Vec<_> = WorkItemStatus::ALL
            .iter()
            .filter(|s| s.is_closed())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(closed, ["done", "cancelled"]);
    }

    #[test]
    fn unknown_names_list_the_choices() {
        assert_eq!(
            Priority::parse("priority", "urgent").unwrap_err(),
            Error::invalid("priority", "must be one of: low, medium, high, critical")
        );
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin.allows(Role::Editor));
        assert!(Role::Editor.allows(Role::Viewer));
        assert!(Role::Editor.allows(Role::Editor));
        assert!(!Role::Viewer.allows(Role::Editor));
        assert!(!Role::Editor.allows(Role::Admin));
    }
}
