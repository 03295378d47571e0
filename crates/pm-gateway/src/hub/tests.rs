//! The hub's filtering of a group for one subscriber: memberships and projects changing inside
//! a group, the kind filter and the resume position.

use bytes::Bytes;

use super::*;
use crate::socket::binary_frames;

fn event(
    seq: u64,
    project: &str,
    kind: EntityKind,
    entity: &str,
    action: ChangeAction,
) -> CommittedEvent {
    CommittedEvent {
        seq,
        project_id: project.into(),
        kind,
        entity_id: entity.into(),
        action,
        frame: Bytes::from(seq.to_be_bytes().to_vec()),
    }
}

fn item(seq: u64, project: &str) -> CommittedEvent {
    event(
        seq,
        project,
        EntityKind::WorkItem,
        "item",
        ChangeAction::Created,
    )
}

fn subscriber(user: &str, allowed: &[&str], kinds: Vec<EntityKind>) -> Subscriber {
    Subscriber {
        user: UserId::parse("user", user).unwrap(),
        filter: Filter {
            projects: None,
            kinds,
        },
        allowed: allowed.iter().map(|p| p.to_string()).collect(),
        deleted: HashSet::new(),
        skip_until: 0,
        out: Arc::new(Outbox::new(8)),
        close: Arc::new(CloseSignal::default()),
        buffer: None,
        capacity: 8,
    }
}

/// The seqs of the events of `group` that `sub` wants.
fn picked(sub: &mut Subscriber, group: &[CommittedEvent]) -> Vec<u64> {
    let wanted = select(sub, group.iter());
    wanted.iter().map(|at| group[*at].seq).collect()
}

#[test]
fn memberships_changed_inside_a_group_apply_from_their_own_event_on() {
    let mut sub = subscriber("bob", &["a"], Vec::new());
    let member =
        |seq, project, action| event(seq, project, EntityKind::ProjectMember, "bob", action);
    let group = [
        item(1, "b"),
        item(2, "b"),
        member(3, "b", ChangeAction::Created),
        item(4, "b"),
        item(5, "a"),
        member(6, "a", ChangeAction::Deleted),
        item(7, "a"),
        // Another user's membership changes nothing for bob.
        event(
            8,
            "a",
            EntityKind::ProjectMember,
            "carol",
            ChangeAction::Created,
        ),
        item(9, "b"),
        event(10, "b", EntityKind::Project, "b", ChangeAction::Deleted),
        item(11, "b"),
    ];
    assert_eq!(picked(&mut sub, &group), [3, 4, 5, 6, 9, 10]);
    assert!(sub.allowed.is_empty());
    // Project b was deleted while bob was a member; a was left.
    assert_eq!(sub.deleted, HashSet::from(["b".to_string()]));
}

#[test]
fn the_members_of_a_restored_project_see_it_again_from_its_restoration_on() {
    let mut sub = subscriber("bob", &["a"], Vec::new());
    sub.deleted.insert("c".into());
    let project = |seq, id, action| event(seq, id, EntityKind::Project, id, action);
    let group = [
        project(1, "a", ChangeAction::Deleted),
        item(2, "a"),
        project(3, "a", ChangeAction::Restored),
        item(4, "a"),
        // Deleted before bob subscribed, restored now.
        project(5, "c", ChangeAction::Restored),
        item(6, "c"),
        // Bob was never a member of d.
        project(7, "d", ChangeAction::Restored),
        item(8, "d"),
    ];
    assert_eq!(picked(&mut sub, &group), [1, 3, 4, 5, 6]);
    assert_eq!(
        sub.allowed,
        HashSet::from(["a".to_string(), "c".to_string()])
    );
    assert!(sub.deleted.is_empty());
    // Removed from a deleted project: never again, even once it is restored.
    sub.deleted.insert("e".into());
    let member = event(
        9,
        "e",
        EntityKind::ProjectMember,
        "bob",
        ChangeAction::Deleted,
    );
    let group = [
        member,
        project(10, "e", ChangeAction::Restored),
        item(11, "e"),
    ];
    assert_eq!(picked(&mut sub, &group), Vec::<u64>::new());
    assert!(sub.deleted.is_empty());
}

#[test]
fn the_kind_filter_and_the_resume_position_apply_to_every_event() {
    let mut sub = subscriber("bob", &["a"], vec![EntityKind::WorkItem]);
    sub.skip_until = 2;
    let group = [
        item(1, "a"),
        item(2, "a"),
        event(3, "a", EntityKind::Comment, "c", ChangeAction::Created),
        item(4, "a"),
        item(5, "z"),
        item(6, "a"),
    ];
    assert_eq!(picked(&mut sub, &group), [4, 6]);
}

#[test]
fn a_delivery_is_framed_once_and_each_run_of_wanted_events_is_one_chunk() {
    let group = [
        item(1, "a"),
        item(2, "a"),
        item(3, "b"),
        item(4, "a"),
        item(5, "a"),
    ];
    let events: Vec<&CommittedEvent> = group.iter().collect();
    let framed = Framed::new(&events);
    let frames = |seqs: &[u64]| binary_frames(seqs.iter().map(|seq| seq.to_be_bytes()));
    assert_eq!(
        framed.chunks(&events, &[0, 1, 3, 4]),
        [(2, frames(&[1, 2])), (5, frames(&[4, 5]))]
    );
    // Every event: the whole buffer, the same bytes for every subscriber.
    let all = framed.chunks(&events, &[0, 1, 2, 3, 4]);
    assert_eq!(all, [(5, frames(&[1, 2, 3, 4, 5]))]);
    let again = framed.chunks(&events, &[0, 1, 2, 3, 4]);
    assert_eq!(again[0].1.as_ptr(), all[0].1.as_ptr());
    // Less than half of it: a copy, one chunk, that keeps nothing else alive.
    let few = framed.chunks(&events, &[0, 2]);
    assert_eq!(few, [(3, frames(&[1, 3]))]);
    let shared = all[0].1.as_ptr_range();
    assert!(!shared.contains(&few[0].1.as_ptr()), "a copy, not a slice");
    assert!(framed.chunks(&events, &[]).is_empty());
}
