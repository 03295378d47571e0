//! Several engines on one database, as the nodes of a cluster are: their writers of one
//! tenant take turns on its counter row, so seqs stay gapless and in commit order, and each
//! writer applies its commands to what the others committed.

use std::collections::BTreeSet;
use std::sync::Arc;

use pm_db::postgres::{PostgresConfig, PostgresEngine};
use pm_db::EventFilter;
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;

use crate::env::TestEnv;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_writing_one_tenant_get_gapless_seqs_and_distinct_numbers() {
    let env = TestEnv::new();
    let node1 = env.tenant("acme").await;
    let project = create_project(&node1, &ALICE, "OPS").await;
    let others: Vec<PostgresEngine> = (0..2).map(|_| another_node(&env)).collect();
    let mut nodes = vec![node1.clone()];
    for engine in &others {
        nodes.push(
            engine
                .open_tenant(&acme())
                .await
                .expect("opens on another node"),
        );
    }

    const WRITERS: usize = 4;
    const PER_WRITER: usize = 25;
    let mut tasks = Vec::new();
    for node in &nodes {
        for w in 0..WRITERS {
            let (node, project_id) = (Arc::clone(node), project.id.clone());
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..PER_WRITER {
                    let result = exec(
                        &node,
                        &ALICE,
                        C::CreateWorkItem(v1::CreateWorkItem {
                            project_id: project_id.clone(),
                            item_type: v1::WorkItemType::Task.into(),
                            title: format!("writer {w} item {i}"),
                            ..Default::default()
                        }),
                    )
                    .await
                    .expect("every command commits");
                    seqs.push(result.seq);
                }
                seqs
            }));
        }
    }
    let mut acked = BTreeSet::new();
    for task in tasks {
        acked.extend(task.await.expect("writer task"));
    }
    let total = (nodes.len() * WRITERS * PER_WRITER) as u64;
    // The project's create took seq 1 (and its admin membership seq 2).
    let first = acked.first().copied().expect("commands were acknowledged");
    assert_eq!(acked.len() as u64, total);
    assert_eq!(acked.last().copied(), Some(first + total - 1));

    let logged = node1
        .read_events(0, None, 10_000, &EventFilter::default())
        .await
        .expect("the log reads");
    let seqs: Vec<u64> = logged.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=first + total - 1).collect::<Vec<_>>());

    // Every item got its own number, 1..=total, whichever node created it.
    let items = list_items(&node1, &ALICE, &project.id, 500, "").await;
    assert!(items.next_page_token.is_empty());
    let numbers: BTreeSet<u64> = items.items.iter().map(|item| item.number).collect();
    assert_eq!(numbers, (1..=total).collect::<BTreeSet<_>>());
}

/// Another engine on the test's database: another node.
fn another_node(env: &TestEnv) -> PostgresEngine {
    let mut config = PostgresConfig::new(env.url());
    config.max_connections = 4;
    PostgresEngine::connect_lazy(config).expect("a valid URL")
}

#[tokio::test]
async fn a_writer_follows_what_other_nodes_changed_in_the_facts_it_caches() {
    use v1::ErrorCode as E;
    use v1::WorkItemStatus as S;
    let env = TestEnv::new();
    let node1 = env.tenant("acme").await;
    let engine2 = another_node(&env);
    let node2 = engine2.open_tenant(&acme()).await.expect("opens on node 2");
    let project = create_project(&node1, &ALICE, "OPS").await;
    let pid = project.id.as_str();
    add_member(&node1, pid, &BOB, v1::ProjectRole::Editor).await;
    let item = |title: &str, status: S| {
        C::CreateWorkItem(v1::CreateWorkItem {
            project_id: pid.into(),
            item_type: v1::WorkItemType::Task.into(),
            title: title.into(),
            status: status.into(),
            ..Default::default()
        })
    };

    // Node 1's writer learns Bob's role, the project, its next number and its WIP lanes.
    let (first, _) = run::<v1::WorkItem>(&node1, &BOB, item("one", S::InProgress)).await;
    assert_eq!(first.number, 1);
    // Node 2 numbers an item: node 1 numbers after it.
    let (second, _) = run::<v1::WorkItem>(&node2, &ALICE, item("two", S::Todo)).await;
    assert_eq!(second.number, 2);
    let (third, _) = run::<v1::WorkItem>(&node1, &BOB, item("three", S::Todo)).await;
    assert_eq!(third.number, 3);

    // A WIP limit set on node 2 holds on node 1.
    run::<v1::SwimLane>(
        &node2,
        &ALICE,
        C::CreateSwimLane(v1::CreateSwimLane {
            project_id: pid.into(),
            name: "Doing".into(),
            status: S::InProgress.into(),
            position: 0,
            wip_limit: Some(1),
            wip_policy: v1::WipPolicy::Refuse.into(),
        }),
    )
    .await;
    let error = fail(&node1, &BOB, item("four", S::InProgress)).await;
    assert_eq!(error.code(), E::FailedPrecondition, "{error:?}");

    // Bob made a viewer on node 2: node 1 refuses his writes.
    let member = |expected_version: u64, role: Option<v1::ProjectRole>| match role {
        Some(role) => C::UpdateMember(v1::UpdateMember {
            project_id: pid.into(),
            user_id: "bob".into(),
            expected_version,
            role: role.into(),
        }),
        None => C::RemoveMember(v1::RemoveMember {
            project_id: pid.into(),
            user_id: "bob".into(),
            expected_version,
        }),
    };
    run::<v1::ProjectMember>(&node2, &ALICE, member(1, Some(v1::ProjectRole::Viewer))).await;
    let error = fail(&node1, &BOB, item("five", S::Todo)).await;
    assert_eq!(error.code(), E::PermissionDenied, "{error:?}");
    // Removed on node 2: to node 1 he is a stranger to the project.
    exec(&node2, &ALICE, member(2, None))
        .await
        .expect("Bob removed on node 2");
    let error = fail(&node1, &BOB, item("six", S::Todo)).await;
    assert_eq!(error.code(), E::NotFound, "{error:?}");

    // The project archived on node 2: node 1 refuses content writes.
    run::<v1::Project>(
        &node2,
        &ALICE,
        C::UpdateProject(v1::UpdateProject {
            id: pid.into(),
            expected_version: 1,
            status: Some(v1::ProjectStatus::Archived.into()),
            ..Default::default()
        }),
    )
    .await;
    let error = fail(&node1, &ALICE, item("seven", S::Todo)).await;
    assert_eq!(error.code(), E::FailedPrecondition, "{error:?}");

    // Every refusal on node 1 left the log as node 2 wrote it.
    let logged = node1
        .read_events(0, None, 100, &EventFilter::default())
        .await
        .expect("the log reads");
    assert_eq!(logged.len() as u64, node1.head_seq());
    assert_eq!(node2.head_seq(), node1.head_seq());
}

#[tokio::test]
async fn an_online_rollout_reports_each_open_tenant_at_the_newest_migration() {
    let env = TestEnv::new();
    let acme = env.tenant("acme").await;
    let _globex = env.tenant("globex").await;
    create_project(&acme, &ALICE, "OPS").await;

    let report = env.engine.migrate_online().await.expect("the rollout runs");
    let newest = pm_db::postgres::PG_MIGRATOR
        .iter()
        .map(|m| m.version)
        .max()
        .expect("migrations are embedded");
    assert_eq!(report.target_version, newest);
    let mut migrated = report.migrated.clone();
    migrated.sort_by(|a, b| a.0.cmp(&b.0));
    let at_newest = pm_db::SchemaChange {
        from: newest,
        to: newest,
    };
    assert_eq!(
        migrated,
        [
            ("acme".to_owned(), at_newest),
            ("globex".to_owned(), at_newest)
        ]
    );
    assert!(report.failed.is_none() && report.skipped.is_empty());

    let figures = env.engine.figures();
    assert_eq!(figures.open_tenants, 2);
    // The project's create is one group of one job.
    assert_eq!((figures.committed_groups, figures.committed_jobs), (1, 1));
}
