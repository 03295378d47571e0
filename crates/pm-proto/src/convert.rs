//! Wire enums <-> domain vocabulary. Unknown wire values are `INVALID_ARGUMENT` on the field
//! that carried them; the `*_UNSPECIFIED` zero value reads as "absent".

use pm_core::kinds;
use pm_core::{Error, Result};

use crate::v1;

macro_rules! enum_mapping {
    ($(#[$meta:meta])* $fn_name:ident: $core:ident <=> $wire:ident { $($c:ident <=> $w:ident),+ $(,)? }) => {
        impl From<kinds::$core> for v1::$wire {
            fn from(value: kinds::$core) -> Self {
                match value {
                    $(kinds::$core::$c => v1::$wire::$w),+
                }
            }
        }

        $(#[$meta])*
        /// `Ok(None)` for the unspecified (zero) value; an error for values this version
        /// does not know.
        pub fn $fn_name(field: &str, raw: i32) -> Result<Option<kinds::$core>> {
            match v1::$wire::try_from(raw) {
                $(Ok(v1::$wire::$w) => Ok(Some(kinds::$core::$c)),)+
                Ok(_) => Ok(None),
                Err(_) => Err(Error::invalid(field, format_args!("unknown value {raw}"))),
            }
        }
    };
}

enum_mapping! {
    /// Reads a wire `ProjectStatus`.
    project_status: ProjectStatus <=> ProjectStatus { Active <=> Active, Archived <=> Archived }
}
enum_mapping! {
    /// Reads a wire `ProjectRole`.
    role: Role <=> ProjectRole { Viewer <=> Viewer, Editor <=> Editor, Admin <=> Admin }
}
enum_mapping! {
    /// Reads a wire `WorkItemType`.
    work_item_type: WorkItemType <=> WorkItemType { Epic <=> Epic, Story <=> Story, Task <=> Task, Bug <=> Bug }
}
enum_mapping! {
    /// Reads a wire `WorkItemStatus`.
    work_item_status: WorkItemStatus <=> WorkItemStatus {
        Backlog <=> Backlog, Todo <=> Todo, InProgress <=> InProgress, Review <=> Review, Done <=> Done,
        Cancelled <=> Cancelled,
    }
}
enum_mapping! {
    /// Reads a wire `WipPolicy`.
    wip_policy: WipPolicy <=> WipPolicy { None <=> None, Warn <=> Warn, Refuse <=> Refuse }
}
enum_mapping! {
    /// Reads a wire `Priority`.
    priority: Priority <=> Priority { Low <=> Low, Medium <=> Medium, High <=> High, Critical <=> Critical }
}
enum_mapping! {
    /// Reads a wire `SprintStatus`.
    sprint_status: SprintStatus <=> SprintStatus {
        Planned <=> Planned, Active <=> Active, Completed <=> Completed, Cancelled <=> Cancelled,
    }
}
enum_mapping! {
    /// Reads a wire `DependencyType`.
    dependency_type: DependencyType <=> DependencyType { Blocks <=> Blocks, RelatesTo <=> RelatesTo }
}
enum_mapping! {
    /// Reads a wire `LlmContextCategory`.
    llm_context_category: LlmContextCategory <=> LlmContextCategory {
        SchemaDoc <=> SchemaDoc, QueryPattern <=> QueryPattern, BusinessRule <=> BusinessRule,
        Example <=> Example, Instruction <=> Instruction,
    }
}
enum_mapping! {
    /// Reads a wire `EntityType`.
    entity_type: EntityKind <=> EntityType {
        Project <=> Project, ProjectMember <=> ProjectMember, WorkItem <=> WorkItem,
        Sprint <=> Sprint, Comment <=> Comment, TimeEntry <=> TimeEntry,
        Dependency <=> Dependency, SwimLane <=> SwimLane, LlmContext <=> LlmContext,
    }
}
enum_mapping! {
    /// Reads a wire `ChangeAction`.
    change_action: ChangeAction <=> ChangeAction {
        Created <=> Created, Updated <=> Updated, Deleted <=> Deleted,
        Restored <=> Restored, Moved <=> Moved,
    }
}

/// Reads a required wire enum: the unspecified value is an error.
pub fn required<T>(field: &str, parsed: Result<Option<T>>) -> Result<T> {
    parsed?.ok_or_else(|| Error::invalid(field, "is required"))
}

/// Wire value of a domain enum, for assigning to a generated `i32` field.
pub fn wire<C, W>(value: C) -> i32
where
    W: From<C> + Into<i32>,
{
    W::from(value).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_unknown_values() {
        for status in kinds::WorkItemStatus::ALL {
            let raw: i32 = v1::WorkItemStatus::from(*status).into();
            assert_eq!(work_item_status("status", raw).unwrap(), Some(*status));
        }
        for kind in kinds::EntityKind::ALL {
            let raw: i32 = v1::EntityType::from(*kind).into();
            assert_eq!(entity_type("entity_type", raw).unwrap(), Some(*kind));
        }
        assert_eq!(work_item_status("status", 0).unwrap(), None);
        assert_eq!(
            work_item_status("status", 99).unwrap_err(),
            Error::invalid("status", "unknown value 99")
        );
        assert_eq!(
            required("item_type", work_item_type("item_type", 0)).unwrap_err(),
            Error::invalid("item_type", "is required")
        );
        assert_eq!(wire::<_, v1::Priority>(kinds::Priority::High), 3);
        assert_eq!(
            wire::<_, v1::WorkItemStatus>(kinds::WorkItemStatus::Cancelled),
            6
        );
        for policy in kinds::WipPolicy::ALL {
            let raw: i32 = v1::WipPolicy::from(*policy).into();
            assert_eq!(wip_policy("wip_policy", raw).unwrap(), Some(*policy));
        }
    }
}
