//! The change log's batched indexes (`change_log_projects`, `change_log_entities`, beside
//! `change_log_actors`): `ListActivity` of one project or one entity and a replay of one
//! project are exactly their part of the log, read through the pairs up to the last multiple
//! of 256 seqs a commit crossed and from the log itself after it. The PostgreSQL suite runs
//! the same file against that engine's plain indexes.

use pm_db::{EventFilter, Tenant as _};
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;
use pm_proto::v1::query::Kind as Q;
use pm_proto::v1::query_result::Result as R;

use crate::support::*;

use v1::WorkItemType as T;

/// Every page of `ListActivity` as ALICE, of `page_size`, narrowed by `project_id` and
/// `entity_id` ("": any), oldest first or newest first: each page's seqs.
async fn pages(
    tenant: &TestTenant,
    (project_id, entity_id): (&str, &str),
    oldest_first: bool,
    page_size: u32,
) -> Vec<Vec<u64>> {
    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let list = Q::ListActivity(v1::ListActivity {
            page: Some(v1::PageRequest {
                page_size,
                page_token,
            }),
            project_id: project_id.into(),
            entity_id: entity_id.into(),
            oldest_first,
            ..Default::default()
        });
        let result = query(tenant, &ALICE, list).await.unwrap();
        let R::ListActivityResult(r) = result else {
            panic!("unexpected result {result:?}")
        };
        assert_eq!(r.as_of_seq, tenant.head_seq());
        pages.push(r.items.iter().map(|a| a.seq).collect());
        if r.next_page_token.is_empty() {
            return pages;
        }
        page_token = r.next_page_token;
    }
}

/// The seqs of one project's events replayed from `after` (to `until`), `limit` at a time.
async fn replay(
    tenant: &TestTenant,
    project_id: &str,
    mut after: u64,
    until: Option<u64>,
    limit: u32,
) -> Vec<u64> {
    let filter = EventFilter {
        project_ids: vec![project_id.to_owned()],
        kinds: Vec::new(),
    };
    let mut seqs = Vec::new();
    loop {
        let events = tenant
            .read_events(after, until, limit, &filter)
            .await
            .unwrap();
        assert!(events.len() <= limit as usize);
        assert!(events.iter().all(|e| e.project_id == project_id));
        seqs.extend(events.iter().map(|e| e.seq));
        match events.last() {
            Some(last) if events.len() == limit as usize => after = last.seq,
            _ => return seqs,
        }
    }
}

#[tokio::test]
async fn activity_and_replay_of_one_project_or_entity_are_exactly_their_part_of_the_log() {
    let (_env, tenant, first) = setup().await;
    let second = create_project(&tenant, &ALICE, "TWO").await;
    // Seqs 1..=4: the two projects and ALICE's memberships. Then 300 items, one commit each,
    // one in three in the first project, and every 20th commit an edit of one item of the
    // first: 320 commits past one batch (256) and short of the next.
    let (mut tracked, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(&first.id, T::Task, "Tracked", None),
    )
    .await;
    for i in 1..320 {
        if i % 20 == 0 {
            let edit = C::UpdateWorkItem(v1::UpdateWorkItem {
                id: tracked.id.clone(),
                expected_version: tracked.version,
                title: Some(format!("Tracked, edit {i}")),
                ..Default::default()
            });
            tracked = run::<v1::WorkItem>(&tenant, &ALICE, edit).await.0;
            continue;
        }
        let project = if i % 3 == 0 { &first } else { &second };
        let title = format!("Item {i}");
        run::<v1::WorkItem>(
            &tenant,
            &ALICE,
            new_item(&project.id, T::Task, &title, None),
        )
        .await;
    }
    let head = tenant.head_seq();
    assert_eq!(head, 324);
    let whole = list!(&tenant, &ALICE, ListActivity { ..Default::default() } => ListActivityResult);
    assert_eq!(whole.len(), 324);
    let part = |keep: &dyn Fn(&v1::ActivityEntry) -> bool| -> Vec<u64> {
        whole.iter().filter(|e| keep(e)).map(|e| e.seq).collect()
    };
    let of_first = part(&|e| e.project_id == first.id);
    let of_second = part(&|e| e.project_id == second.id);
    let of_tracked = part(&|e| e.entity_id == tracked.id);
    // The first project: its creation, ALICE's membership, the tracked item, its 15 edits and
    // 101 other items; the second: its creation, ALICE's membership and 203 items.
    assert_eq!(
        (of_first.len(), of_second.len(), of_tracked.len()),
        (119, 205, 16)
    );
    assert!(of_tracked.first() > Some(&256) && of_tracked.last() < Some(&256));

    for (filter, newest_first) in [
        ((first.id.as_str(), ""), &of_first),
        ((second.id.as_str(), ""), &of_second),
        (("", tracked.id.as_str()), &of_tracked),
        ((first.id.as_str(), tracked.id.as_str()), &of_tracked),
    ] {
        let oldest_first: Vec<u64> = newest_first.iter().rev().copied().collect();
        for (oldest, want) in [(false, newest_first), (true, &oldest_first)] {
            let pages = pages(&tenant, filter, oldest, 7).await;
            assert!(
                pages.iter().rev().skip(1).all(|p| p.len() == 7),
                "{pages:?}"
            );
            assert_eq!(&pages.concat(), want, "{filter:?}, oldest first: {oldest}");
        }
    }
    // The tracked item in the other project: nothing.
    let elsewhere = pages(&tenant, (second.id.as_str(), tracked.id.as_str()), false, 7).await;
    assert_eq!(elsewhere, [Vec::<u64>::new()]);

    // Replay of one project, from before, at and after the batch's end, in pages that end
    // on either side of it.
    let of_first_asc: Vec<u64> = of_first.iter().rev().copied().collect();
    for after in [0, 100, 255, 256, 257, 300, head] {
        let want: Vec<u64> = of_first_asc
            .iter()
            .copied()
            .filter(|&s| s > after)
            .collect();
        for limit in [1, 7, 50, 500] {
            let got = replay(&tenant, &first.id, after, None, limit).await;
            assert_eq!(got, want, "after {after}, {limit} at a time");
        }
        let until = 280;
        let bounded: Vec<u64> = want.iter().copied().filter(|&s| s <= until).collect();
        assert_eq!(
            replay(&tenant, &first.id, after, Some(until), 7).await,
            bounded
        );
    }

    // The next batch (512, crossed by the second of two commits of 100 items) holds every
    // event since.
    for n in 0..2 {
        let batch = v1::Batch {
            atomic: false,
            commands: (0..100)
                .map(|i| command(new_item(&second.id, T::Bug, &format!("Bug {n}.{i}"), None)))
                .collect(),
        };
        tenant.batch(&ALICE, batch).await.expect("batch committed");
    }
    assert_eq!(tenant.head_seq(), 524);
    let second_asc = replay(&tenant, &second.id, 0, None, 64).await;
    assert_eq!(second_asc.len(), 405);
    assert_eq!(&second_asc[205..], (325..=524).collect::<Vec<u64>>());
    let newest = pages(&tenant, (second.id.as_str(), ""), false, 500).await;
    assert_eq!(
        newest.concat(),
        second_asc.into_iter().rev().collect::<Vec<u64>>()
    );
    assert_eq!(
        replay(&tenant, &first.id, 324, None, 7).await,
        Vec::<u64>::new()
    );
}
