use super::*;
use pm_core::kinds::{ChangeAction, EntityKind};

fn event(seq: u64, project: &str, kind: EntityKind, frame_len: usize) -> CommittedEvent {
    CommittedEvent {
        seq,
        project_id: project.to_owned(),
        kind,
        entity_id: format!("entity-{seq:06}"),
        action: ChangeAction::Created,
        frame: Bytes::from(vec![seq as u8; frame_len]),
    }
}

/// A group of the seqs in `seqs`, each with a 100-byte frame in project `p`.
fn group(seqs: impl IntoIterator<Item = u64>) -> Arc<[CommittedEvent]> {
    seqs.into_iter()
        .map(|seq| event(seq, "p", EntityKind::WorkItem, 100))
        .collect()
}

fn metrics() -> Arc<Metrics> {
    Arc::new(Metrics::new(pm_db::EngineFigures::default))
}

/// The seqs the ring holds, in order, read group by group.
fn held(ring: &Ring) -> Vec<u64> {
    ring.groups
        .iter()
        .flat_map(|(group, _)| group.iter().map(|e| e.seq))
        .collect()
}

fn one_size() -> usize {
    size_of_event(&event(1, "p", EntityKind::WorkItem, 100))
}

#[test]
fn eviction_keeps_the_ring_contiguous_newest_and_within_its_bound() {
    let metrics = metrics();
    // Room for 10 events of this size, not 11.
    let bound = one_size() * 10 + one_size() / 2;
    let mut ring = Ring::new(bound, metrics.clone());
    let mut next = 1;
    let mut appended = Vec::new();
    for len in [1u64, 3, 4, 2, 5, 1, 7, 2, 3, 6, 4] {
        ring.append(&group(next..next + len));
        appended.push((next, len));
        next += len;
        let seqs = held(&ring);
        let (first, last) = (ring.first_seq().unwrap(), ring.last_seq().unwrap());
        assert_eq!(last, next - 1, "the newest group is always kept");
        assert_eq!(seqs, (first..=last).collect::<Vec<_>>(), "no gap");
        assert_eq!(ring.events, seqs.len());
        assert_eq!(ring.bytes, seqs.len() * one_size());
        assert!(ring.bytes <= bound, "{} > {bound}", ring.bytes);
        // Whole groups are evicted, oldest first, and no more than needed: the group just
        // before `first` would not fit back.
        if let Some((_, len)) = appended.iter().find(|(start, len)| start + len == first) {
            assert!(
                ring.bytes + *len as usize * one_size() > bound,
                "evicted too much"
            );
        } else {
            assert_eq!(first, 1);
        }
        assert_eq!(metrics.ring_bytes.get(), ring.bytes as u64);
        assert_eq!(metrics.ring_events.get(), ring.events as u64);
    }
    // The last groups were 3, 6 and 4 events: 6 + 4 fit, 3 + 6 + 4 do not.
    assert_eq!(held(&ring), (next - 10..next).collect::<Vec<_>>());
    drop(ring);
    assert_eq!(metrics.ring_bytes.get(), 0);
    assert_eq!(metrics.ring_events.get(), 0);
}

#[test]
fn a_group_that_does_not_continue_the_ring_starts_it_over() {
    let mut ring = Ring::new(1 << 20, metrics());
    ring.append(&group(1..=3));
    // The hub lagged: 4 is missing.
    ring.append(&group(5..=6));
    assert_eq!(held(&ring), vec![5, 6]);
    // A group with a hole in itself keeps only its last run.
    ring.append(&group([7, 8, 10, 11]));
    assert_eq!(held(&ring), vec![10, 11]);
    assert_eq!(ring.events, 2);
    assert_eq!(ring.bytes, 2 * one_size());
}

#[test]
fn what_the_ring_already_holds_is_skipped() {
    let mut ring = Ring::new(1 << 20, metrics());
    ring.append(&group(1..=3));
    // A catch-up page overlapping the feed, then a repeat of it.
    ring.append(&group(2..=5));
    ring.append(&group(4..=5));
    assert_eq!(held(&ring), vec![1, 2, 3, 4, 5]);
    assert_eq!(ring.events, 5);
    assert_eq!(ring.bytes, 5 * one_size());
}

#[test]
fn a_group_larger_than_the_bound_empties_the_ring_and_the_next_one_starts_it() {
    let metrics = metrics();
    let mut ring = Ring::new(one_size() * 3, metrics.clone());
    ring.append(&group(1..=2));
    ring.append(&group(3..=6));
    assert_eq!(held(&ring), Vec::<u64>::new());
    assert_eq!((ring.first_seq(), ring.last_seq()), (None, None));
    assert_eq!((ring.events, ring.bytes), (0, 0));
    assert_eq!(metrics.ring_bytes.get(), 0);
    assert!(ring.page(2, 6, 100, |_| true).is_none());
    ring.append(&group(7..=8));
    assert_eq!(held(&ring), vec![7, 8]);
}

#[test]
fn a_ring_of_zero_bytes_keeps_nothing() {
    let metrics = metrics();
    let mut ring = Ring::new(0, metrics.clone());
    ring.append(&group(1..=3));
    assert_eq!((ring.events, ring.bytes), (0, 0));
    assert_eq!(metrics.ring_events.get(), 0);
    assert!(ring.page(0, 3, 100, |_| true).is_none());
}

#[test]
fn a_page_starts_right_after_the_position_and_stops_at_the_limit_or_the_end() {
    let mut ring = Ring::new(1 << 20, metrics());
    ring.append(&group(11..=13));
    ring.append(&group(14..=20));
    let seqs = |page: &Page| page.events.iter().map(|(s, _)| *s).collect::<Vec<_>>();
    // Not held: older than the ring, or at or past its newest event.
    assert!(ring.page(9, 20, 100, |_| true).is_none());
    assert!(ring.page(20, 25, 100, |_| true).is_none());
    assert!(ring.page(25, 30, 100, |_| true).is_none());
    // From the ring's very first event.
    let page = ring.page(10, 20, 100, |_| true).unwrap();
    assert_eq!((seqs(&page), page.through), ((11..=20).collect(), 20));
    // Stops at `until`, across a group boundary.
    let page = ring.page(12, 15, 100, |_| true).unwrap();
    assert_eq!((seqs(&page), page.through), (vec![13, 14, 15], 15));
    // `until` past what the ring holds: as far as it goes.
    let page = ring.page(18, 30, 100, |_| true).unwrap();
    assert_eq!((seqs(&page), page.through), (vec![19, 20], 20));
    // The limit counts events looked at, wanted or not.
    let page = ring.page(10, 20, 4, |e| e.seq % 2 == 0).unwrap();
    assert_eq!((seqs(&page), page.through), (vec![12, 14], 14));
    // Frames are the ring's own bytes, shared.
    let page = ring.page(16, 17, 100, |_| true).unwrap();
    assert_eq!(page.events[0].1, Bytes::from(vec![17u8; 100]));
}

#[test]
fn a_page_keeps_what_the_filter_wants() {
    let mut ring = Ring::new(1 << 20, metrics());
    let events: Arc<[CommittedEvent]> = vec![
        event(1, "a", EntityKind::WorkItem, 10),
        event(2, "b", EntityKind::WorkItem, 10),
        event(3, "a", EntityKind::Comment, 10),
        event(4, "a", EntityKind::WorkItem, 10),
    ]
    .into();
    ring.append(&events);
    let page = ring
        .page(0, 4, 100, |e| {
            e.project_id == "a" && e.kind == EntityKind::WorkItem
        })
        .unwrap();
    assert_eq!(
        page.events.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![1, 4]
    );
    assert_eq!(page.through, 4);
}
