//! Batches: an atomic batch commits all of its commands or none.

use pm_db::EventFilter;
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;

use crate::support::*;

use v1::ErrorCode as E;
use v1::WorkItemType as T;

#[tokio::test]
async fn an_atomic_batch_commits_all_or_nothing() {
    let (_env, tenant, project) = setup().await;
    let pid = project.id.as_str();
    let batch = |atomic: bool, titles: &[&str]| v1::Batch {
        atomic,
        commands: titles
            .iter()
            .map(|t| command(new_item(pid, T::Task, t, None)))
            .collect(),
    };
    let err = tenant
        .batch(&ALICE, batch(true, &["One", "Two", ""]))
        .await
        .unwrap_err();
    assert_invalid(&err, "commands[2].title");
    assert_eq!(err.to_wire().field, "commands[2].title");
    assert_eq!(tenant.head_seq(), 2);
    assert_eq!(all_items(&tenant, &ALICE, pid, true).await, vec![]);
    let logged = tenant
        .read_events(0, None, 100, &EventFilter::default())
        .await
        .unwrap();
    assert_eq!(logged.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);

    // Nothing of it left a trace: numbering starts at 1.
    let (item, seq) =
        run::<v1::WorkItem>(&tenant, &ALICE, new_item(pid, T::Task, "After", None)).await;
    assert_eq!((item.number, seq), (1, 3));

    // A failure other than validation rolls back just the same.
    let mut mixed = batch(true, &["Three", "Four"]);
    mixed.commands.insert(
        1,
        command(C::UpdateWorkItem(v1::UpdateWorkItem {
            id: a_uuid(),
            expected_version: 1,
            title: Some("Ghost".into()),
            ..Default::default()
        })),
    );
    let err = tenant.batch(&ALICE, mixed).await.unwrap_err();
    assert_eq!(err.code(), E::NotFound);
    assert_eq!(tenant.head_seq(), 3);

    // A good atomic batch commits every command, with consecutive seqs.
    let done = tenant
        .batch(&ALICE, batch(true, &["A", "B", "C"]))
        .await
        .unwrap();
    let results: Vec<(u64, u64)> = done
        .outcomes
        .iter()
        .map(|o| match &o.outcome {
            Some(v1::command_outcome::Outcome::CommandResult(r)) => {
                (r.seq, entity_as::<v1::WorkItem>(r.entity.as_ref()).number)
            }
            other => panic!("unexpected outcome {other:?}"),
        })
        .collect();
    assert_eq!(results, [(4, 2), (5, 3), (6, 4)]);

    // Without `atomic`, the bad command fails alone.
    let done = tenant
        .batch(&ALICE, batch(false, &["X", "", "Y"]))
        .await
        .unwrap();
    assert_eq!(done.outcomes.len(), 3);
    match &done.outcomes[0].outcome {
        Some(v1::command_outcome::Outcome::CommandResult(r)) => {
            assert_eq!(r.seq, 7);
            assert_eq!(entity_as::<v1::WorkItem>(r.entity.as_ref()).title, "X");
        }
        other => panic!("unexpected outcome {other:?}"),
    }
    match &done.outcomes[1].outcome {
        Some(v1::command_outcome::Outcome::Error(e)) => {
            assert_eq!(e.code, E::InvalidArgument as i32);
            assert_eq!(e.field, "commands[1].title");
        }
        other => panic!("unexpected outcome {other:?}"),
    }
    match &done.outcomes[2].outcome {
        Some(v1::command_outcome::Outcome::CommandResult(r)) => {
            assert_eq!(r.seq, 8);
            assert_eq!(entity_as::<v1::WorkItem>(r.entity.as_ref()).title, "Y");
        }
        other => panic!("unexpected outcome {other:?}"),
    }
    assert_eq!(tenant.head_seq(), 8);
    let titles: Vec<String> = all_items(&tenant, &ALICE, pid, true)
        .await
        .into_iter()
        .map(|i| i.title)
        .collect();
    assert_eq!(titles, ["After", "A", "B", "C", "X", "Y"]);

    // An empty batch is refused.
    let err = tenant
        .batch(
            &ALICE,
            v1::Batch {
                atomic: true,
                commands: vec![],
            },
        )
        .await
        .unwrap_err();
    assert_invalid(&err, "commands");
}
