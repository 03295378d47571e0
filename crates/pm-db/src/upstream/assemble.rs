//! Putting the converted rows together: import order (parents first), the members every
//! referenced user becomes, notes on numbering, and the change log of one created event per
//! row.

use super::rows::File;
use super::*;

/// The converted rows, each with its place, per kind in change-log order.
pub(super) struct Rows {
    pub(super) projects: Vec<(String, v1::Project)>,
    pub(super) members: Vec<(String, v1::ProjectMember)>,
    pub(super) sprints: Vec<(String, v1::Sprint)>,
    pub(super) lanes: Vec<(String, v1::SwimLane)>,
    pub(super) items: Vec<(String, v1::WorkItem)>,
    pub(super) comments: Vec<(String, v1::Comment)>,
    pub(super) dependencies: Vec<(String, v1::Dependency)>,
    pub(super) time_entries: Vec<(String, v1::TimeEntry)>,
}

impl Rows {
    /// The dataset: the rows, a created event for each (in the order of the fields above),
    /// and a place for each row and each event.
    pub(super) fn into_dataset(self, projects: &HashMap<String, ProjectInfo>) -> Dataset {
        let mut data = Dataset::default();
        let mut log = Log::default();
        for (place, row) in self.projects {
            let line = log.row(&mut data, place, &row, None);
            data.projects.push((line, row));
        }
        for (place, row) in self.members {
            let line = log.row(&mut data, place, &row, None);
            data.members.push((line, row));
        }
        for (place, row) in self.sprints {
            let line = log.row(&mut data, place, &row, None);
            data.sprints.push((line, row));
        }
        for (place, row) in self.lanes {
            let line = log.row(&mut data, place, &row, None);
            data.lanes.push((line, row));
        }
        for (place, row) in self.items {
            let key = &projects[&row.project_id].key;
            let line = log.row(&mut data, place, &row, Some(key));
            data.items.push((line, row));
        }
        for (place, row) in self.comments {
            let line = log.row(&mut data, place, &row, None);
            data.comments.push((line, row));
        }
        for (place, row) in self.dependencies {
            let line = log.row(&mut data, place, &row, None);
            data.dependencies.push((line, row));
        }
        for (place, row) in self.time_entries {
            let line = log.row(&mut data, place, &row, None);
            data.time_entries.push((line, row));
        }
        for (place, event) in log.events {
            data.places.push(place);
            data.changes.push((data.places.len(), event));
        }
        data
    }
}

/// Sorts work items parents before children: by depth in the hierarchy, then project
/// (file order), then number.
pub(super) fn parents_first(
    items: &mut [(String, v1::WorkItem)],
    projects: &HashMap<String, ProjectInfo>,
) {
    let parents: HashMap<String, Option<String>> = items
        .iter()
        .map(|(_, w)| (w.id.clone(), w.parent_id.clone()))
        .collect();
    let depth = |id: &str| -> usize {
        let mut depth = 0;
        let mut at = id;
        // Bounded: a cycle is refused by validation later; here it must only end.
        while let Some(Some(parent)) = parents.get(at) {
            depth += 1;
            if depth > parents.len() {
                break;
            }
            at = parent;
        }
        depth
    };
    items.sort_by_cached_key(|(_, w)| (depth(&w.id), projects[&w.project_id].order, w.number));
}

/// The members of each project: every user its rows refer to (authors, assignees, time
/// entry users); the project's creator as admin and first, the others as editors by id.
pub(super) fn members(
    rows: &Rows,
    projects: &HashMap<String, ProjectInfo>,
) -> Vec<(String, v1::ProjectMember)> {
    // Pairs of (project, user), every reference of every row.
    let mut refs: Vec<(&str, &str)> = Vec::new();
    for (_, p) in &rows.projects {
        refs.extend([
            (p.id.as_str(), p.created_by.as_str()),
            (&p.id, &p.updated_by),
        ]);
    }
    for (_, s) in &rows.sprints {
        refs.extend([
            (s.project_id.as_str(), s.created_by.as_str()),
            (&s.project_id, &s.updated_by),
        ]);
    }
    for (_, w) in &rows.items {
        refs.extend([
            (w.project_id.as_str(), w.created_by.as_str()),
            (&w.project_id, &w.updated_by),
        ]);
        refs.extend(w.assignee_id.as_deref().map(|a| (w.project_id.as_str(), a)));
    }
    for (_, c) in &rows.comments {
        refs.extend([
            (c.project_id.as_str(), c.created_by.as_str()),
            (&c.project_id, &c.updated_by),
        ]);
    }
    for (_, d) in &rows.dependencies {
        refs.push((&d.project_id, &d.created_by));
    }
    for (_, t) in &rows.time_entries {
        refs.push((&t.project_id, &t.user_id));
    }
    let mut users: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for (project, user) in refs {
        users.entry(project).or_default().insert(user);
    }
    let mut members = Vec::new();
    for (_, p) in &rows.projects {
        let info = &projects[&p.id];
        let mut users: Vec<&str> = users
            .get(p.id.as_str())
            .into_iter()
            .flatten()
            .copied()
            .collect();
        users.sort_by_key(|u| (*u != info.created_by, *u));
        for user in users {
            let role = if user == info.created_by {
                Role::Admin
            } else {
                Role::Editor
            };
            members.push((
                format!("project_member (user {user} of project {})", info.key),
                v1::ProjectMember {
                    project_id: p.id.clone(),
                    user_id: user.to_owned(),
                    role: v1::ProjectRole::from(role).into(),
                    version: 1,
                    created_at: info.created_at,
                    created_by: info.created_by.clone(),
                    updated_at: info.created_at,
                    updated_by: info.created_by.clone(),
                    deleted_at: None,
                    // Filled in by queries.
                    display_name: String::new(),
                },
            ));
        }
    }
    members
}

/// A note for each project whose next item the upstream would number differently.
pub(super) fn next_number_notes(
    file: &File,
    rows: &Rows,
    projects: &HashMap<String, ProjectInfo>,
) -> Vec<String> {
    let mut notes = Vec::new();
    for up in &file.projects {
        let id = map_id(EntityKind::Project, &up.row.id);
        let (Some(next), Some(info)) = (up.row.next_work_item_number, projects.get(&id)) else {
            continue;
        };
        let highest = rows
            .items
            .iter()
            .filter(|(_, w)| w.project_id == id)
            .map(|(_, w)| w.number)
            .max()
            .unwrap_or(0);
        if u64::try_from(next).ok() != Some(highest + 1) {
            notes.push(format!(
                "project {}: the upstream would number its next item {next}; pm-server numbers \
                 it {} (after the highest number imported)",
                info.key,
                highest + 1
            ));
        }
    }
    notes
}

/// How a dangling reference reads in a refusal.
pub(super) fn refusal(d: &Dangling) -> String {
    let missing = if d.target_skipped {
        "is not imported"
    } else {
        "is not in the file"
    };
    format!(
        "{} {} ({}): {} refers to {} {}, which {missing}",
        d.kind, d.name, d.place, d.field, d.target, d.target_id
    )
}

/// The change log being built: one created event per row.
#[derive(Default)]
pub(super) struct Log {
    pub(super) events: Vec<(String, v1::Event)>,
}

impl Log {
    /// Adds `row` (from `place`) to the places, and its created event; the row's line.
    pub(super) fn row<R: Entity>(
        &mut self,
        data: &mut Dataset,
        place: String,
        row: &R,
        project_key: Option<&str>,
    ) -> usize {
        let seq = self.events.len() as u64 + 1;
        let (at, actor, ..) = row.audit();
        let actor = actor.to_owned();
        let entity = match project_key {
            Some(key) => row.clone().with_project_key(key),
            None => row.clone(),
        };
        let event = Change::created(&entity).into_event(seq, at, &actor);
        self.events
            .push((format!("change seq {seq} (created {place})"), event));
        data.places.push(place);
        data.places.len()
    }
}
