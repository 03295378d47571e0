//! The writer: gapless seqs for concurrent writers, the pragmas of every pooled connection,
//! the SQLite build's own options, `UNAVAILABLE` from a full queue, and one committed group of
//! mixed commands applied in order.

use pm_core::kinds::EntityKind;
use pm_db::EventFilter;
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;

use crate::support::*;

use v1::ErrorCode as E;
use v1::WorkItemType as T;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_get_gapless_seqs() {
    const TASKS: u64 = 16;
    const PER_TASK: u64 = 50;
    let (_env, tenant, project) = setup().await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let tenant = tenant.clone();
            let project_id = project.id.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..PER_TASK {
                    let result = exec(
                        &tenant,
                        &ALICE,
                        new_item(&project_id, T::Task, &format!("Task {t}-{i}"), None),
                    )
                    .await
                    .expect("every create succeeds");
                    seqs.push(result.seq);
                }
                seqs
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        let mine = task.await.expect("task finished");
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "one writer's seqs grow"
        );
        seqs.extend(mine);
    }
    // The project took seqs 1 and 2.
    let last = 2 + TASKS * PER_TASK;
    seqs.sort_unstable();
    assert_eq!(seqs, (3..=last).collect::<Vec<_>>());
    assert_eq!(tenant.head_seq(), last);

    let events = tenant
        .read_events(0, None, 10_000, &EventFilter::default())
        .await
        .unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>()
    );
    for event in &events {
        assert_eq!(event.decode().unwrap().seq, event.seq);
    }
    let item_events = events
        .iter()
        .filter(|e| e.kind == EntityKind::WorkItem)
        .count();

    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let page = list_items(&tenant, &ALICE, &project.id, 500, &token).await;
        items.extend(page.items);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(items.len() as u64, TASKS * PER_TASK);
    assert_eq!(item_events, items.len());
    let mut numbers: Vec<u64> = items.iter().map(|i| i.number).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=TASKS * PER_TASK).collect::<Vec<_>>());
}

#[tokio::test]
async fn every_pooled_connection_has_the_pragmas() {
    let env = TestEnv::new();
    let tenant = env.tenant("acme").await;
    let size = env.engine.config().read_pool_size;
    assert_eq!(size, 4);
    let mut connections = Vec::new();
    for _ in 0..size {
        connections.push(tenant.read_pool().acquire().await.unwrap());
    }
    assert_eq!(tenant.read_pool().size(), size as usize);
    for conn in &mut connections {
        let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(journal_mode, "wal");
        for (pragma, expected) in [
            ("synchronous", 1),
            ("foreign_keys", 1),
            ("busy_timeout", 5_000),
            ("temp_store", 2),
            ("cache_size", -8_192),
            // A new tenant is smaller than its page cache: not memory-mapped (see
            // `wal::a_connection_is_memory_mapped_once_the_database_is_larger_than_its_page_cache`).
            ("mmap_size", 0),
            // Above where the writer starts the WAL over: the file is not cut back each time.
            ("journal_size_limit", 64 * 1024 * 1024),
        ] {
            let value: i64 = sqlx::query_scalar(&format!("PRAGMA {pragma}"))
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            assert_eq!(value, expected, "PRAGMA {pragma}");
        }
    }
}

/// The bundled SQLite is built as `.cargo/config.toml` says: a build that lost those flags
/// (a different working directory, a changed `libsqlite3-sys`) would put every connection's
/// page cache back behind one process-wide mutex, and nothing else would notice.
#[tokio::test]
async fn sqlite_is_built_without_process_wide_cache_and_memory_locks() {
    let env = TestEnv::new();
    let tenant = env.tenant("acme").await;
    let mut conn = tenant.read_pool().acquire().await.unwrap();
    let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let has = |option: &str| options.iter().any(|o| o == option);
    assert!(has("DEFAULT_MEMSTATUS=0"), "{options:?}");
    assert!(has("DISABLE_PAGECACHE_OVERFLOW_STATS"), "{options:?}");
    assert!(!has("ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
    // What the schema needs is still there.
    assert!(has("ENABLE_FTS5"), "{options:?}");
}

#[tokio::test]
async fn a_full_writer_queue_answers_unavailable() {
    let env = TestEnv::with(|c| {
        c.writer.queue_capacity = 1;
        c.writer.max_group = 1;
    });
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "PM").await;
    let results = futures::future::join_all((0..200).map(|i| {
        exec(
            &tenant,
            &ALICE,
            new_item(&project.id, T::Task, &format!("Item {i}"), None),
        )
    }))
    .await;
    let mut seqs = Vec::new();
    let mut unavailable = 0;
    for result in &results {
        match result {
            Ok(r) => seqs.push(r.seq),
            Err(e) => {
                assert_eq!(e.code(), E::Unavailable, "{e:?}");
                unavailable += 1;
            }
        }
    }
    assert!(unavailable >= 1, "the queue of one overflowed");
    assert!(!seqs.is_empty());
    assert_eq!(seqs.len() + unavailable, 200);
    seqs.sort_unstable();
    assert_eq!(seqs, (3..3 + seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(tenant.head_seq(), 2 + seqs.len() as u64);
    assert_eq!(
        all_items(&tenant, &ALICE, &project.id, true).await.len(),
        seqs.len()
    );
    // The refusal was momentary.
    let (_, seq) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(&project.id, T::Task, "Later", None),
    )
    .await;
    assert_eq!(seq, 3 + seqs.len() as u64);
}

/// Commands queued together are committed as one group; inside it every command still sees
/// the ones before it, fails alone, and gets its own consecutive seq.
#[tokio::test]
async fn one_group_of_mixed_commands_applies_in_order() {
    mixed_group(false).await;
}

#[tokio::test]
async fn one_group_of_mixed_commands_applies_in_order_with_a_savepoint_per_command() {
    mixed_group(true).await;
}

async fn mixed_group(savepoint_per_command: bool) {
    let env = TestEnv::with(|c| c.writer.savepoint_per_command = savepoint_per_command);
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "PM").await;
    let pid = project.id.as_str();
    let (story, _) =
        run::<v1::WorkItem>(&tenant, &ALICE, new_item(pid, T::Story, "Story", None)).await;
    let (x, _) = run::<v1::WorkItem>(&tenant, &ALICE, new_item(pid, T::Task, "X", None)).await;
    let head = tenant.head_seq();
    assert_eq!(head, 4);
    let groups = tenant
        .writer_stats()
        .groups
        .load(std::sync::atomic::Ordering::Relaxed);

    let create = |title: &str, parent: Option<&str>| command(new_item(pid, T::Task, title, parent));
    let batch = |titles: &[&str]| v1::Batch {
        atomic: true,
        commands: titles.iter().map(|t| create(t, None)).collect(),
    };
    let keyed_g = keyed("g", new_item(pid, T::Task, "Gamma", None));
    let (a, bad, comment, c, de, f, update, g, g_again) = tokio::join!(
        tenant.execute(&ALICE, create("Alpha", Some(&story.id))),
        tenant.execute(&ALICE, create("Broken", Some(&a_uuid()))),
        tenant.execute(
            &ALICE,
            command(C::CreateComment(v1::CreateComment {
                work_item_id: x.id.clone(),
                content: "Zeppelin".into(),
            }))
        ),
        tenant.execute(&ALICE, create("Charlie", None)),
        tenant.batch(&ALICE, batch(&["Delta", "Echo"])),
        tenant.batch(&ALICE, batch(&["Foxtrot", ""])),
        tenant.execute(
            &ALICE,
            command(C::UpdateWorkItem(v1::UpdateWorkItem {
                id: x.id.clone(),
                expected_version: 1,
                title: Some("X renamed".into()),
                ..Default::default()
            }))
        ),
        tenant.execute(&ALICE, keyed_g.clone()),
        tenant.execute(&ALICE, keyed_g.clone()),
    );
    assert_eq!(
        tenant
            .writer_stats()
            .groups
            .load(std::sync::atomic::Ordering::Relaxed),
        groups + 1,
        "precondition: the joined commands were committed as one group"
    );

    let item = |r: &v1::CommandResult| entity_as::<v1::WorkItem>(r.entity.as_ref());
    let a = a.unwrap();
    assert_eq!(
        (a.seq, item(&a).number, item(&a).parent_id.as_deref()),
        (5, 3, Some(story.id.as_str()))
    );
    assert_invalid(&bad.unwrap_err(), "parent_id");
    let comment = comment.unwrap();
    assert_eq!(comment.seq, 6);
    let c = c.unwrap();
    assert_eq!((c.seq, item(&c).number), (7, 4));
    let de: Vec<(u64, u64)> = de
        .unwrap()
        .outcomes
        .iter()
        .map(|o| match &o.outcome {
            Some(v1::command_outcome::Outcome::CommandResult(r)) => (r.seq, item(r).number),
            other => panic!("unexpected outcome {other:?}"),
        })
        .collect();
    assert_eq!(de, [(8, 5), (9, 6)]);
    assert_invalid(&f.unwrap_err(), "commands[1].title");
    let update = update.unwrap();
    assert_eq!((update.seq, item(&update).version), (10, 2));
    let (g, g_again) = (g.unwrap(), g_again.unwrap());
    assert_eq!((g.seq, item(&g).number, g.replayed), (11, 7, false));
    assert_eq!(
        (g_again.seq, g_again.replayed, &g_again.entity),
        (11, true, &g.entity)
    );
    assert_eq!(tenant.head_seq(), 11);

    let items = all_items(&tenant, &ALICE, pid, true).await;
    assert_eq!(
        items
            .iter()
            .map(|i| (i.title.as_str(), i.number))
            .collect::<Vec<_>>(),
        [
            ("Story", 1),
            ("X renamed", 2),
            ("Alpha", 3),
            ("Charlie", 4),
            ("Delta", 5),
            ("Echo", 6),
            ("Gamma", 7)
        ]
    );
    assert_eq!(items[2], unblocked(&item(&a)));
    assert_eq!(items[6], unblocked(&item(&g)));
    assert_eq!(search(&tenant, pid, "gamma").await.unwrap(), ["Gamma"]);
    assert_eq!(
        search(&tenant, pid, "zeppelin").await.unwrap(),
        ["X renamed"]
    );
    let events = tenant
        .read_events(head, None, 100, &EventFilter::default())
        .await
        .unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (5..=11).collect::<Vec<_>>()
    );
    let logged_a = events[0].decode().unwrap();
    assert_eq!(logged_a.change, Some(v1::event::Change::WorkItem(item(&a))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_command_is_no_longer_in_flight() {
    // A caller that closes its tenant as soon as it has its answer (a client leaving, an
    // operator's command) must find the tenant idle, never still busy with that command.
    let (_env, tenant, project) = setup().await;
    for i in 0..200 {
        exec(
            &tenant,
            &ALICE,
            new_item(&project.id, T::Task, &format!("Task {i}"), None),
        )
        .await
        .unwrap();
        assert_eq!(tenant.writes_in_flight(), 0, "after command {i}");
    }
}
