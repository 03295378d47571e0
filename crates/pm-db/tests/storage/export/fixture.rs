//! The source tenant of the export tests: the real export loaded through commands, and a
//! project with every entity kind.

use std::collections::HashMap;

use pm_db::SqliteTenant;
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;

use crate::real_data::{Export, DANGLING_DEPENDENCY};
use crate::support::*;

/// Loads the real export (`../shared/data`) through commands: project, work items (parents
/// first), dependencies and comments.
pub(super) async fn load_real_data(tenant: &SqliteTenant) {
    let export = Export::load();
    let (project, _) = run::<v1::Project>(
        tenant,
        &ALICE,
        C::CreateProject(v1::CreateProject {
            key: export.key.clone(),
            name: export.name.clone(),
            description: export.description.clone(),
        }),
    )
    .await;
    let mut ids: HashMap<String, String> = HashMap::new();
    for level in [
        v1::WorkItemType::Epic,
        v1::WorkItemType::Story,
        v1::WorkItemType::Task,
    ] {
        let mut items: Vec<_> = export
            .items
            .iter()
            .filter(|i| i.item_type == level)
            .collect();
        items.sort_by_key(|i| i.number);
        for i in items {
            let (item, _) = run::<v1::WorkItem>(
                tenant,
                &ALICE,
                C::CreateWorkItem(v1::CreateWorkItem {
                    project_id: project.id.clone(),
                    item_type: i.item_type.into(),
                    parent_id: i.parent_id.as_ref().map(|p| ids[p].clone()),
                    title: i.title.clone(),
                    description: i.description.clone(),
                    status: i.status.into(),
                    priority: i.priority.into(),
                    ..Default::default()
                }),
            )
            .await;
            ids.insert(i.id.clone(), item.id);
        }
    }
    for d in export
        .dependencies
        .iter()
        .filter(|d| d.id != DANGLING_DEPENDENCY)
    {
        run::<v1::Dependency>(
            tenant,
            &ALICE,
            C::CreateDependency(v1::CreateDependency {
                blocking_item_id: ids[&d.blocking].clone(),
                blocked_item_id: ids[&d.blocked].clone(),
                dependency_type: v1::DependencyType::Blocks.into(),
            }),
        )
        .await;
    }
    for c in &export.comments {
        run::<v1::Comment>(
            tenant,
            &ALICE,
            C::CreateComment(v1::CreateComment {
                work_item_id: ids[&c.work_item_id].clone(),
                content: c.content.clone(),
            }),
        )
        .await;
    }
}

pub(super) const UNICODE_TITLE: &str = "Story — 修复登录 🐛 «é» עברית";

/// A project with every entity kind, deleted and restored rows, a removed member, a running
/// timer and text in many scripts; plus a deleted project.
pub(super) async fn load_every_kind(tenant: &SqliteTenant) {
    let t = tenant;
    let (p, _) = run::<v1::Project>(
        t,
        &ALICE,
        C::CreateProject(v1::CreateProject {
            key: "UNI".into(),
            name: "Ünïcødé ✓ 看板".into(),
            description: "Zeilen\nmit «Umlauten», e\u{301} und 🚀".into(),
        }),
    )
    .await;
    let pid = p.id.clone();
    for (user, role) in [
        ("bob", v1::ProjectRole::Editor),
        ("carol", v1::ProjectRole::Viewer),
    ] {
        run::<v1::ProjectMember>(
            t,
            &ALICE,
            C::AddMember(v1::AddMember {
                project_id: pid.clone(),
                user_id: user.into(),
                role: role.into(),
            }),
        )
        .await;
    }
    run::<v1::ProjectMember>(
        t,
        &ALICE,
        C::RemoveMember(v1::RemoveMember {
            project_id: pid.clone(),
            user_id: "carol".into(),
            expected_version: 1,
        }),
    )
    .await;
    let (sprint, _) = run::<v1::Sprint>(
        t,
        &ALICE,
        C::CreateSprint(v1::CreateSprint {
            project_id: pid.clone(),
            name: "Sprint 🏃 1".into(),
            goal: "目标: ship".into(),
            start_at: Some(1_700_000_000_000),
            end_at: Some(1_701_000_000_000),
        }),
    )
    .await;
    run::<v1::Sprint>(
        t,
        &ALICE,
        C::UpdateSprint(v1::UpdateSprint {
            id: sprint.id.clone(),
            expected_version: 1,
            status: Some(v1::SprintStatus::Active.into()),
            ..Default::default()
        }),
    )
    .await;
    let (dropped, _) = run::<v1::Sprint>(
        t,
        &ALICE,
        C::CreateSprint(v1::CreateSprint {
            project_id: pid.clone(),
            name: "Abgesagt".into(),
            ..Default::default()
        }),
    )
    .await;
    run::<v1::Sprint>(
        t,
        &ALICE,
        C::DeleteSprint(v1::DeleteSprint {
            id: dropped.id,
            expected_version: 1,
        }),
    )
    .await;
    let (epic, _) = create_item(t, &ALICE, &pid, v1::WorkItemType::Epic, "Épopée 🚀").await;
    let (story, _) = run::<v1::WorkItem>(
        t,
        &ALICE,
        C::CreateWorkItem(v1::CreateWorkItem {
            project_id: pid.clone(),
            item_type: v1::WorkItemType::Story.into(),
            parent_id: Some(epic.id.clone()),
            title: UNICODE_TITLE.into(),
            description: "multi\nline ✓\n\n| a | b |".into(),
            status: v1::WorkItemStatus::Todo.into(),
            priority: v1::Priority::High.into(),
            story_points: Some(5),
            assignee_id: Some("bob".into()),
            sprint_id: Some(sprint.id.clone()),
        }),
    )
    .await;
    let mut children = Vec::new();
    for (kind, title) in [
        (v1::WorkItemType::Task, "Aufgabe ⚙"),
        (v1::WorkItemType::Bug, "Fehler 🐞"),
        (v1::WorkItemType::Task, "gelöscht"),
    ] {
        let (item, _) = run::<v1::WorkItem>(
            t,
            &ALICE,
            C::CreateWorkItem(v1::CreateWorkItem {
                project_id: pid.clone(),
                item_type: kind.into(),
                parent_id: Some(story.id.clone()),
                title: title.into(),
                ..Default::default()
            }),
        )
        .await;
        children.push(item);
    }
    let (task, bug, gone) = (&children[0], &children[1], &children[2]);
    run::<v1::WorkItem>(
        t,
        &ALICE,
        C::DeleteWorkItem(v1::DeleteWorkItem {
            id: gone.id.clone(),
            expected_version: 1,
        }),
    )
    .await;
    run::<v1::WorkItem>(
        t,
        &ALICE,
        C::DeleteWorkItem(v1::DeleteWorkItem {
            id: bug.id.clone(),
            expected_version: 1,
        }),
    )
    .await;
    run::<v1::WorkItem>(
        t,
        &ALICE,
        C::RestoreWorkItem(v1::RestoreWorkItem {
            id: bug.id.clone(),
            expected_version: 2,
        }),
    )
    .await;
    run::<v1::WorkItem>(
        t,
        &ALICE,
        C::MoveWorkItem(v1::MoveWorkItem {
            id: task.id.clone(),
            expected_version: 1,
            status: Some(v1::WorkItemStatus::InProgress.into()),
            after_id: Some(bug.id.clone()),
            ..Default::default()
        }),
    )
    .await;
    run::<v1::Comment>(
        t,
        &ALICE,
        C::CreateComment(v1::CreateComment {
            work_item_id: story.id.clone(),
            content: "Kommentar 👍 ñ\n> zitiert".into(),
        }),
    )
    .await;
    let (comment, _) = run::<v1::Comment>(
        t,
        &BOB,
        C::CreateComment(v1::CreateComment {
            work_item_id: task.id.clone(),
            content: "wird gelöscht".into(),
        }),
    )
    .await;
    run::<v1::Comment>(
        t,
        &BOB,
        C::DeleteComment(v1::DeleteComment {
            id: comment.id,
            expected_version: 1,
        }),
    )
    .await;
    run::<v1::TimeEntry>(
        t,
        &ALICE,
        C::CreateTimeEntry(v1::CreateTimeEntry {
            work_item_id: task.id.clone(),
            started_at: 1_700_000_000_000,
            ended_at: 1_700_003_600_000,
            description: "Zeit ⏱".into(),
        }),
    )
    .await;
    run::<v1::TimeEntry>(
        t,
        &BOB,
        C::StartTimer(v1::StartTimer {
            work_item_id: story.id.clone(),
            description: "läuft".into(),
        }),
    )
    .await;
    for (blocking, blocked, kind) in [
        (&task.id, &bug.id, v1::DependencyType::Blocks),
        (&story.id, &epic.id, v1::DependencyType::RelatesTo),
    ] {
        run::<v1::Dependency>(
            t,
            &ALICE,
            C::CreateDependency(v1::CreateDependency {
                blocking_item_id: blocking.clone(),
                blocked_item_id: blocked.clone(),
                dependency_type: kind.into(),
            }),
        )
        .await;
    }
    let (link, _) = run::<v1::Dependency>(
        t,
        &ALICE,
        C::CreateDependency(v1::CreateDependency {
            blocking_item_id: bug.id.clone(),
            blocked_item_id: epic.id.clone(),
            dependency_type: v1::DependencyType::Blocks.into(),
        }),
    )
    .await;
    run::<v1::Dependency>(
        t,
        &ALICE,
        C::DeleteDependency(v1::DeleteDependency {
            id: link.id,
            expected_version: 1,
        }),
    )
    .await;
    for (name, position, wip_limit) in [("In Arbeit ⚙", 1, Some(3)), ("Fertig ✓", 2, None)] {
        run::<v1::SwimLane>(
            t,
            &ALICE,
            C::CreateSwimLane(v1::CreateSwimLane {
                project_id: pid.clone(),
                name: name.into(),
                status: v1::WorkItemStatus::InProgress.into(),
                position,
                wip_limit,
                // The lane with a limit warns; the other keeps the default.
                wip_policy: if wip_limit.is_some() {
                    v1::WipPolicy::Warn.into()
                } else {
                    v1::WipPolicy::Unspecified.into()
                },
            }),
        )
        .await;
    }
    run::<v1::LlmContext>(
        t,
        &ALICE,
        C::CreateLlmContext(v1::CreateLlmContext {
            project_id: pid.clone(),
            category: v1::LlmContextCategory::BusinessRule.into(),
            title: "Regel №1".into(),
            content: "Epics → Stories → Tasks; 任务".into(),
            priority: -3,
        }),
    )
    .await;
    let old = create_project(t, &ALICE, "OLD").await;
    run::<v1::Project>(
        t,
        &ALICE,
        C::DeleteProject(v1::DeleteProject {
            id: old.id,
            expected_version: 1,
        }),
    )
    .await;
}
