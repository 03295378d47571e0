//! Tenants: isolation, malformed ids that never reach the file system, reopening with data
//! and head, and the bound on open tenants (least recently used first).

use std::sync::Arc;

use pm_core::TenantId;
use pm_db::{EventFilter, SqliteConfig, SqliteEngine};
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;
use pm_proto::v1::query::Kind as Q;
use pm_proto::v1::query_result::Result as R;

use crate::support::*;

use v1::ErrorCode as E;
use v1::WorkItemType as T;

#[tokio::test]
async fn tenants_are_isolated() {
    let env = TestEnv::new();
    let acme = env.tenant("acme").await;
    let globex = env.tenant("globex").await;
    let acme_project = create_project(&acme, &ALICE, "PM").await;
    let globex_project = create_project(&globex, &ALICE, "PM").await;
    assert_ne!(acme_project.id, globex_project.id);
    let (acme_item, acme_seq) = run::<v1::WorkItem>(
        &acme,
        &ALICE,
        new_item(&acme_project.id, T::Task, "Acme secret", None),
    )
    .await;
    let (globex_item, globex_seq) = run::<v1::WorkItem>(
        &globex,
        &ALICE,
        new_item(&globex_project.id, T::Task, "Globex plan", None),
    )
    .await;
    // Each tenant counts its own changes from 1.
    assert_eq!((acme_seq, globex_seq), (3, 3));
    assert_eq!((acme.head_seq(), globex.head_seq()), (3, 3));
    let globex_log = globex
        .read_events(0, None, 100, &EventFilter::default())
        .await
        .unwrap();
    assert_eq!(
        globex_log.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(globex_log.iter().all(|e| e.project_id == globex_project.id));

    // Acme's ids mean nothing in globex.
    let err = get::<v1::Project>(&globex, &ALICE, &acme_project.id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), E::NotFound);
    let err = get::<v1::WorkItem>(&globex, &ALICE, &acme_item.id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), E::NotFound);
    let err = query(
        &globex,
        &ALICE,
        Q::ListWorkItems(v1::ListWorkItems {
            project_id: acme_project.id.clone(),
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), E::NotFound);
    for write in [
        C::UpdateWorkItem(v1::UpdateWorkItem {
            id: acme_item.id.clone(),
            expected_version: 1,
            title: Some("Stolen".into()),
            ..Default::default()
        }),
        C::CreateComment(v1::CreateComment {
            work_item_id: acme_item.id.clone(),
            content: "Hi".into(),
        }),
        new_item(&acme_project.id, T::Task, "Planted", None),
        C::DeleteProject(v1::DeleteProject {
            id: acme_project.id.clone(),
            expected_version: 1,
        }),
    ] {
        let err = fail(&globex, &ALICE, write.clone()).await;
        assert_eq!(err.code(), E::NotFound, "{write:?}");
        assert!(!err.to_wire().message.contains(&acme_item.id));
    }
    assert_eq!((acme.head_seq(), globex.head_seq()), (3, 3));

    // Lists show only the tenant's own rows; the same display key names different items.
    let projects = list!(&globex, &ALICE, ListProjects { include_deleted: true, ..Default::default() } => ListProjectsResult);
    assert_eq!(projects, vec![globex_project.clone()]);
    assert_eq!(
        all_items(&globex, &ALICE, &globex_project.id, true).await,
        vec![unblocked(&globex_item)]
    );
    assert_eq!(
        search(&globex, &globex_project.id, "secret").await.unwrap(),
        Vec::<String>::new()
    );
    let by_key = query(
        &globex,
        &ALICE,
        Q::GetWorkItem(v1::GetWorkItem {
            id: String::new(),
            display_key: "PM-1".into(),
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        by_key,
        R::GetWorkItemResult(v1::GetWorkItemResult {
            work_item: Some(unblocked(&globex_item)),
            as_of_seq: 3,
        })
    );
    assert_eq!(
        all_items(&acme, &ALICE, &acme_project.id, true).await,
        vec![unblocked(&acme_item)]
    );

    // Separate files in separate directories.
    let root = env.dir.path().join("tenants");
    assert_eq!(acme.dir(), root.join("acme"));
    assert_eq!(globex.dir(), root.join("globex"));
    assert!(root.join("acme").join("tenant.db").is_file());
    assert!(root.join("globex").join("tenant.db").is_file());
    let titles: Vec<String> = sqlx::query_scalar("SELECT title FROM work_items")
        .fetch_all(&mut *globex.read_pool().acquire().await.unwrap())
        .await
        .unwrap();
    assert_eq!(titles, ["Globex plan"]);
}

#[tokio::test]
async fn malformed_tenant_ids_never_reach_the_file_system() {
    let env = TestEnv::new();
    let _acme = env.tenant("acme").await;
    let too_long = "a".repeat(64);
    for bad in [
        "..",
        ".",
        "a/b",
        "/etc",
        "a\\b",
        "%2e%2e",
        "Acme",
        too_long.as_str(),
        "",
        "acmé",
        "a\0b",
        "-acme",
        "acme.db",
        "acme ",
    ] {
        match TenantId::parse(bad) {
            Err(pm_core::Error::InvalidArgument { field, .. }) => {
                assert_eq!(field, "tenant_id", "{bad:?}")
            }
            other => panic!("{bad:?} must be refused, got {other:?}"),
        }
    }
    assert_eq!(
        TenantId::parse(&"a".repeat(63)).unwrap().as_str(),
        "a".repeat(63)
    );
    let names = |dir: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(env.dir.path()), ["tenants"]);
    assert_eq!(names(&env.dir.path().join("tenants")), ["acme"]);
    assert_eq!(env.engine.open_count(), 1);
}

#[tokio::test]
async fn a_closed_tenant_reopens_with_its_data_and_head() {
    let env = TestEnv::new();
    let id = TenantId::parse("acme").unwrap();
    let (project, item) = {
        let tenant = env.engine.open_tenant(&id).await.unwrap();
        let project = create_project(&tenant, &ALICE, "PM").await;
        let (item, _) = run::<v1::WorkItem>(
            &tenant,
            &ALICE,
            new_item(&project.id, T::Task, "Kept", None),
        )
        .await;
        let keyed_first = tenant
            .execute(
                &ALICE,
                keyed(
                    "before-close",
                    new_item(&project.id, T::Task, "Keyed", None),
                ),
            )
            .await
            .unwrap();
        assert_eq!(keyed_first.seq, 4);
        // A held tenant is not idle.
        assert_eq!(env.engine.close_idle().await, 0);
        (project, item)
    };
    assert_eq!(env.engine.open_count(), 1);
    assert_eq!(env.engine.close_idle().await, 1);
    assert_eq!(env.engine.open_count(), 0);

    let tenant = env.tenant("acme").await;
    assert_eq!(tenant.head_seq(), 4);
    assert_eq!(
        get::<v1::Project>(&tenant, &ALICE, &project.id)
            .await
            .unwrap(),
        project
    );
    let items = all_items(&tenant, &ALICE, &project.id, true).await;
    assert_eq!(
        items.iter().map(|i| i.title.as_str()).collect::<Vec<_>>(),
        ["Kept", "Keyed"]
    );
    assert_eq!(items[0], unblocked(&item));
    // Idempotency answers survive the reopen.
    let replayed = tenant
        .execute(
            &ALICE,
            keyed(
                "before-close",
                new_item(&project.id, T::Task, "Keyed", None),
            ),
        )
        .await
        .unwrap();
    assert_eq!((replayed.seq, replayed.replayed), (4, true));
    let (third, seq) =
        run::<v1::WorkItem>(&tenant, &ALICE, new_item(&project.id, T::Task, "New", None)).await;
    assert_eq!((seq, third.number), (5, 3));
    drop(tenant);
    assert_eq!(env.engine.close_idle().await, 1);

    // Another engine over the same directory sees the same tenant.
    let engine = SqliteEngine::new(SqliteConfig::new(env.dir.path()));
    let tenant = engine.open_tenant(&id).await.unwrap();
    assert_eq!(tenant.head_seq(), 5);
    let again = all_items(&tenant, &ALICE, &project.id, true).await;
    assert_eq!(again.len(), 3);
    assert_eq!(
        (&again[0], &again[2]),
        (&unblocked(&item), &unblocked(&third))
    );
    let log = tenant
        .read_events(0, None, 100, &EventFilter::default())
        .await
        .unwrap();
    assert_eq!(
        log.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let (_, seq) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(&project.id, T::Task, "Fourth", None),
    )
    .await;
    assert_eq!(seq, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_evicted_and_opened_again_at_once_has_all_it_stored() {
    let env = TestEnv::with(|c| c.max_open_tenants = 1);
    for round in 0..5u64 {
        let a = env.tenant("a").await;
        let project = match round {
            0 => create_project(&a, &ALICE, "PA").await.id,
            _ => project_ids(&a, &ALICE).await.remove(0),
        };
        // Enough in the WAL that closing it (its final checkpoint) takes a while.
        for n in 0..40 {
            create_item(&a, &ALICE, &project, T::Task, &format!("r{round} {n}")).await;
        }
        let head = a.head_seq();
        assert_eq!(
            head,
            2 + 40 * (round + 1),
            "the project, its member, the items"
        );
        drop(a);
        // Opening b evicts a, which closes in its own task; a opens again straight away,
        // after that close has ended, with everything it stored.
        drop(env.tenant("b").await);
        let a = env.tenant("a").await;
        assert_eq!(a.head_seq(), head);
        assert_eq!(
            all_items(&a, &ALICE, &project, false).await.len() as u64,
            40 * (round + 1)
        );
        drop(a);
    }
    assert_eq!(env.engine.close_idle().await, 1);
    let dir = env
        .engine
        .config()
        .tenant_dir(&TenantId::parse("a").unwrap());
    let wal = std::fs::metadata(dir.join("tenant.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the last close checkpointed everything");
}

#[tokio::test]
async fn open_tenants_are_bounded_least_recently_used_first() {
    let env = TestEnv::with(|c| c.max_open_tenants = 2);
    let a = env.tenant("a").await;
    let a_project = create_project(&a, &ALICE, "PA").await;
    let a_weak = Arc::downgrade(&a);
    drop(a);
    let b = env.tenant("b").await;
    let b_weak = Arc::downgrade(&b);
    drop(b);
    assert_eq!(env.engine.open_count(), 2);

    let c = env.tenant("c").await;
    assert_eq!(env.engine.open_count(), 2);
    assert!(
        a_weak.upgrade().is_none(),
        "a, the least recently used, was closed"
    );
    assert!(b_weak.upgrade().is_some(), "b stays open");
    drop(c);

    // Reopening a closes b (now the least recently used) and keeps a's data.
    let a = env.tenant("a").await;
    assert_eq!(env.engine.open_count(), 2);
    assert!(b_weak.upgrade().is_none(), "b was closed");
    assert_eq!(a.head_seq(), 2);
    assert_eq!(
        get::<v1::Project>(&a, &ALICE, &a_project.id).await.unwrap(),
        a_project
    );

    // With both open tenants in use, a third cannot open.
    let c = env.tenant("c").await;
    let err = env
        .engine
        .open(&TenantId::parse("d").unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.code(), E::Unavailable);
    assert_eq!(env.engine.open_count(), 2);
    assert!(!env.dir.path().join("tenants").join("d").exists());
    // Both still work.
    assert_eq!(a.head_seq(), 2);
    assert_eq!(c.head_seq(), 0);

    // Released, one makes room.
    drop(c);
    let d = env.tenant("d").await;
    assert_eq!(d.head_seq(), 0);
    assert_eq!(env.engine.open_count(), 2);
}
