//! Work items' and comments' text reaches the full-text indexes in batches (SQLite): reads
//! never see an index behind its rows, before or after a batch, and the indexes end up
//! exactly as the rows' text.

use std::sync::atomic::Ordering::Relaxed;

use pm_proto::v1;
use pm_proto::v1::command::Kind as C;
use pm_proto::v1::query::Kind as Q;
use pm_proto::v1::query_result::Result as R;
use sqlx::{Connection, SqliteConnection};

use crate::env::TestTenant;
use crate::support::*;

/// Seqs per batch (the engine's `TEXT_BATCH`).
const BATCH: u64 = 64;

/// A connection of the test's own to the tenant's database file.
async fn raw(tenant: &TestTenant) -> SqliteConnection {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(tenant.dir().join(pm_db::sqlite::DB_FILE))
        .busy_timeout(std::time::Duration::from_secs(5));
    SqliteConnection::connect_with(&options).await.unwrap()
}

/// The rowids noted in `table` (a `*_fts_pending` table), in order.
async fn noted(tenant: &TestTenant, table: &str) -> Vec<i64> {
    let mut conn = raw(tenant).await;
    let rows = sqlx::query_scalar(&format!("SELECT {table}.rowid FROM {table} ORDER BY 1"))
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    rows
}

/// The rowids of the items waiting for the index, in order: those noted (edited since the
/// index took them) and those past the rowid up to which the index holds every item.
async fn waiting(tenant: &TestTenant) -> Vec<i64> {
    let mut conn = raw(tenant).await;
    let rows = sqlx::query_scalar(
        "SELECT item_rowid FROM work_item_fts_pending \
         UNION \
         SELECT rowid FROM work_items \
         WHERE rowid > (SELECT item_rowid FROM work_item_fts_upto) \
         ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    rows
}

/// How many comments wait for the index: those noted (edited since the index took them) and
/// those past the rowid up to which the index holds every comment.
async fn comments_waiting(tenant: &TestTenant) -> i64 {
    let mut conn = raw(tenant).await;
    let waiting = sqlx::query_scalar(
        "SELECT COUNT(*) FROM ( \
             SELECT comment_rowid FROM comment_fts_pending \
             UNION \
             SELECT rowid FROM comments \
             WHERE rowid > (SELECT comment_rowid FROM comment_fts_upto))",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    waiting
}

/// FTS5's own check that `fts` holds exactly its rows' current text.
async fn assert_index_matches(tenant: &TestTenant, fts: &str) {
    let mut conn = raw(tenant).await;
    sqlx::query(&format!(
        "INSERT INTO {fts} ({fts}, rank) VALUES ('integrity-check', 1)"
    ))
    .execute(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("{fts} holds exactly its rows' text: {e}"));
    conn.close().await.unwrap();
}

async fn assert_index_matches_items(tenant: &TestTenant) {
    assert_index_matches(tenant, "work_item_fts").await;
}

/// Waits for the batches the writer owes to have run, as an idle writer runs them before the
/// next command: the text that waits is then exactly what came after the last multiple of
/// [`BATCH`].
async fn settle(tenant: &TestTenant) {
    tenant.run_owed_batches().await.expect("owed batches ran");
}

/// Renames `item` (as ALICE), keeping `item` at its new version, and lets the writer run
/// what the rename's commit owes.
async fn rename(tenant: &TestTenant, item: &mut v1::WorkItem, title: &str) {
    let update = C::UpdateWorkItem(v1::UpdateWorkItem {
        id: item.id.clone(),
        expected_version: item.version,
        title: Some(title.into()),
        ..Default::default()
    });
    *item = run::<v1::WorkItem>(tenant, &ALICE, update).await.0;
    settle(tenant).await;
}

/// The titles tenant-wide `Search` finds for `text`, best first (one page of up to 500).
async fn found(tenant: &TestTenant, text: &str) -> Vec<String> {
    let search = Q::Search(v1::Search {
        text: text.into(),
        page: page500(),
        ..Default::default()
    });
    match query(tenant, &ALICE, search).await.unwrap() {
        R::SearchResult(r) => r.items.into_iter().map(|h| h.title).collect(),
        other => panic!("expected SearchResult, got {other:?}"),
    }
}

/// Owed batches the writer has committed on their own, between groups.
fn batch_commits(tenant: &TestTenant) -> u64 {
    tenant.writer_stats().batch_commits.load(Relaxed)
}

/// Waits (10 s at most) until the writer has committed an owed batch on its own: no caller
/// waits for one, so nothing else says when it has run.
async fn until_a_batch_commits(tenant: &TestTenant) {
    let waited = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while batch_commits(tenant) == 0 {
            tokio::task::yield_now().await;
        }
    });
    waited
        .await
        .expect("an owed batch ran while the writer was idle");
}

/// The batch a crossing commit owes runs by itself once the writer has nothing queued, in a
/// transaction of its own, with no search and no caller waiting for it.
#[tokio::test]
async fn the_batch_a_commit_owes_runs_once_the_writer_is_idle() {
    let (_env, tenant, project) = setup().await;
    while tenant.head_seq() < BATCH {
        let title = format!("Filler {}", tenant.head_seq());
        let kind = new_item(&project.id, v1::WorkItemType::Task, &title, None);
        run::<v1::WorkItem>(&tenant, &ALICE, kind).await;
        if tenant.head_seq() < BATCH {
            assert_eq!(batch_commits(&tenant), 0);
        }
    }
    assert_eq!(tenant.head_seq(), BATCH);
    until_a_batch_commits(&tenant).await;
    assert_eq!(batch_commits(&tenant), 1);
    assert_eq!(waiting(&tenant).await, Vec::<i64>::new());
    assert_index_matches_items(&tenant).await;
}

/// Under a queue that never empties, each crossing commit folds the batch the one before it
/// owed into its own script: only the last one runs by itself, once the writer is idle, and
/// the index ends up exactly as the rows' text.
#[tokio::test]
async fn a_crossing_commit_folds_in_the_batch_still_owed_while_the_queue_stays_full() {
    let env = TestEnv::with(|config| config.writer.max_group = 8);
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "PM").await;
    let start = tenant.head_seq();
    // Past three multiples of the batch. On this single-threaded runtime every command is
    // queued before the writer runs once, and the groups of 8 keep the queue from emptying
    // until the last of them.
    let count = 3 * BATCH + 5 - start;
    let commands = (0..count).map(|n| {
        let kind = new_item(
            &project.id,
            v1::WorkItemType::Task,
            &format!("Item {n}"),
            None,
        );
        exec(&tenant, &ALICE, kind)
    });
    for result in futures::future::join_all(commands).await {
        result.unwrap();
    }
    assert_eq!(tenant.head_seq(), 3 * BATCH + 5);
    until_a_batch_commits(&tenant).await;
    // The batches owed at 64 and 128 went into the commits that crossed 128 and 192.
    assert_eq!(batch_commits(&tenant), 1);
    let groups = tenant.writer_stats().groups.load(Relaxed);
    assert!(groups >= count / 8, "{groups} groups");
    // The last batch took everything waiting when it ran, the 5 items past 192 too.
    assert_eq!(waiting(&tenant).await, Vec::<i64>::new());
    assert_index_matches_items(&tenant).await;
}

#[tokio::test]
async fn searches_see_every_committed_text_before_and_after_its_batch() {
    let (_env, tenant, project) = setup().await;
    let pid = project.id.as_str();
    let mut items = Vec::new();
    let mut head = 0;
    while head < BATCH + 3 {
        let n = items.len();
        let (item, seq) = run::<v1::WorkItem>(
            &tenant,
            &ALICE,
            new_item(pid, v1::WorkItemType::Task, &format!("Filler {n}"), None),
        )
        .await;
        settle(&tenant).await;
        items.push(item);
        head = seq;
    }
    // The batch owed by the commit that crossed seq 64 indexed everything up to it: only the
    // items created after it wait.
    let after_batch = (head - BATCH) as usize;

    assert_eq!(waiting(&tenant).await.len(), after_batch);

    // A search from a snapshot with waiting items goes through the writer, which indexes
    // them first: every item is found, and none waits any longer.
    assert_eq!(
        search(&tenant, pid, "filler").await.unwrap().len(),
        items.len()
    );
    assert_eq!(waiting(&tenant).await, Vec::<i64>::new());
    assert_index_matches_items(&tenant).await;

    // Renamed twice before the next batch: only the last title is found, by both reads.
    rename(&tenant, &mut items[3], "Quokka habitat").await;
    rename(&tenant, &mut items[3], "Numbat nest").await;
    assert_eq!(waiting(&tenant).await.len(), 1);
    assert_eq!(found(&tenant, "quokka").await, Vec::<String>::new());
    assert_eq!(found(&tenant, "numbat").await, ["Numbat nest"]);
    assert_eq!(
        search(&tenant, pid, "numbat").await.unwrap(),
        ["Numbat nest"]
    );
    assert_eq!(
        search(&tenant, pid, "filler").await.unwrap().len(),
        items.len() - 1
    );
    // An item created and renamed within one batch: never indexed under its first title.
    let (mut fresh, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(pid, v1::WorkItemType::Task, "Wombat burrow", None),
    )
    .await;
    rename(&tenant, &mut fresh, "Bilby den").await;
    assert_eq!(found(&tenant, "wombat").await, Vec::<String>::new());
    assert_eq!(found(&tenant, "bilby").await, ["Bilby den"]);
    assert_index_matches_items(&tenant).await;

    // The same answers from the read pool once nothing waits.
    assert_eq!(waiting(&tenant).await, Vec::<i64>::new());
    assert_eq!(found(&tenant, "quokka").await, Vec::<String>::new());
    assert_eq!(found(&tenant, "numbat").await, ["Numbat nest"]);
    assert_eq!(found(&tenant, "bilby").await, ["Bilby den"]);

    // 63 renames: the batch owed by the commit that crosses the next multiple of 64 indexes
    // those up to it.
    let before = tenant.head_seq();
    for (i, item) in items.iter_mut().enumerate().take(BATCH as usize) {
        if i != 3 {
            rename(&tenant, item, &format!("Renamed {i}")).await;
        }
    }
    let head = tenant.head_seq();
    assert_eq!(head, before + BATCH - 1);
    assert_eq!(waiting(&tenant).await.len() as u64, head % BATCH);
    assert_eq!(found(&tenant, "renamed").await.len(), BATCH as usize - 1);
    assert_eq!(
        search(&tenant, pid, "filler").await.unwrap().len(),
        items.len() - BATCH as usize
    );
    assert_eq!(waiting(&tenant).await, Vec::<i64>::new());
    assert_index_matches_items(&tenant).await;
}
#[tokio::test]
async fn a_query_that_reads_no_text_leaves_the_batch_waiting() {
    let (_env, tenant, project) = setup().await;
    let pid = project.id.as_str();
    run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(pid, v1::WorkItemType::Bug, "Platypus tracker", None),
    )
    .await;
    assert_eq!(waiting(&tenant).await.len(), 1);
    assert_eq!(all_items(&tenant, &ALICE, pid, false).await.len(), 1);
    assert_eq!(waiting(&tenant).await.len(), 1);
    assert_eq!(
        search(&tenant, pid, "platypus").await.unwrap(),
        ["Platypus tracker"]
    );
    assert_eq!(waiting(&tenant).await, Vec::<i64>::new());
}

#[tokio::test]
async fn comments_are_found_by_their_last_text_before_and_after_their_batch() {
    let (_env, tenant, project) = setup().await;
    let pid = project.id.as_str();
    let (item, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(pid, v1::WorkItemType::Task, "Feeding schedule", None),
    )
    .await;
    let comment = |content: &str| {
        C::CreateComment(v1::CreateComment {
            work_item_id: item.id.clone(),
            content: content.into(),
        })
    };
    let (first, _) = run::<v1::Comment>(&tenant, &ALICE, comment("The echidna sleeps")).await;
    // Waiting past the bound, not noted.
    assert_eq!(comments_waiting(&tenant).await, 1);
    assert_eq!(
        noted(&tenant, "comment_fts_pending").await,
        Vec::<i64>::new()
    );
    assert_eq!(found(&tenant, "echidna").await, ["Feeding schedule"]);
    assert_eq!(
        search(&tenant, pid, "echidna").await.unwrap(),
        ["Feeding schedule"]
    );
    assert_eq!(comments_waiting(&tenant).await, 0);
    assert_index_matches(&tenant, "comment_fts").await;

    // Edited twice before the next batch: only the last text is found.
    let mut edited = first;
    for content in ["The dingo howls", "The kookaburra laughs"] {
        let update = C::UpdateComment(v1::UpdateComment {
            id: edited.id.clone(),
            expected_version: edited.version,
            content: content.into(),
        });
        edited = run::<v1::Comment>(&tenant, &ALICE, update).await.0;
    }
    assert_eq!(comments_waiting(&tenant).await, 1);
    assert_eq!(found(&tenant, "echidna").await, Vec::<String>::new());
    assert_eq!(found(&tenant, "dingo").await, Vec::<String>::new());
    assert_eq!(found(&tenant, "kookaburra").await, ["Feeding schedule"]);
    assert_eq!(
        search(&tenant, pid, "dingo").await.unwrap(),
        Vec::<String>::new()
    );

    // Comments indexed by a batch, with no search in between.
    let before = tenant.head_seq();
    for n in 0..BATCH {
        run::<v1::Comment>(&tenant, &ALICE, comment(&format!("Wallaby sighting {n}"))).await;
        settle(&tenant).await;
    }
    assert_eq!(tenant.head_seq(), before + BATCH);
    assert_eq!(
        comments_waiting(&tenant).await as u64,
        tenant.head_seq() % BATCH
    );
    assert_eq!(
        search(&tenant, pid, "wallaby").await.unwrap(),
        ["Feeding schedule"]
    );
    assert_eq!(comments_waiting(&tenant).await, 0);
    assert_index_matches(&tenant, "comment_fts").await;
    assert_index_matches_items(&tenant).await;
}

#[tokio::test]
async fn a_closing_tenant_indexes_what_it_noted() {
    let env = crate::env::TestEnv::new();
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "PM").await;
    let (item, _) = run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(&project.id, v1::WorkItemType::Task, "Quoll survey", None),
    )
    .await;
    run::<v1::Comment>(
        &tenant,
        &ALICE,
        C::CreateComment(v1::CreateComment {
            work_item_id: item.id.clone(),
            content: "Seen near the creek".into(),
        }),
    )
    .await;
    assert_eq!(waiting(&tenant).await.len(), 1);
    assert_eq!(comments_waiting(&tenant).await, 1);
    drop(tenant);
    assert_eq!(env.engine.close_idle().await, 1);

    let reopened = env.tenant("acme").await;
    assert_eq!(waiting(&reopened).await, Vec::<i64>::new());
    assert_eq!(comments_waiting(&reopened).await, 0);
    assert_index_matches_items(&reopened).await;
    assert_index_matches(&reopened, "comment_fts").await;
    assert_eq!(found(&reopened, "creek").await, ["Quoll survey"]);
}

#[tokio::test]
async fn a_search_that_cannot_index_fails_alone_and_the_writer_goes_on() {
    let env = crate::env::TestEnv::new();
    let tenant = env.tenant("acme").await;
    let project = create_project(&tenant, &ALICE, "PM").await;
    // Twenty items whose words are all different: indexing them takes new pages.
    for n in 0..20 {
        let title: Vec<String> = (0..40).map(|w| format!("w{n}x{w}")).collect();
        run::<v1::WorkItem>(
            &tenant,
            &ALICE,
            new_item(&project.id, v1::WorkItemType::Task, &title.join(" "), None),
        )
        .await;
    }
    assert_eq!(waiting(&tenant).await.len(), 20);
    // No room for a single new page.
    let mut conn = raw(&tenant).await;
    let (pages, free): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT * FROM pragma_page_count), (SELECT * FROM pragma_freelist_count)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    assert_eq!(free, 0);
    env.engine.set_max_tenant_bytes(Some(pages as u64 * 4096));

    let error = query(
        &tenant,
        &ALICE,
        Q::Search(v1::Search {
            text: "w3x7".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(code(&error), v1::ErrorCode::Unavailable, "{error}");
    assert_eq!(
        error.to_string(),
        "the tenant's storage is full (database or disk is full); retry later"
    );
    // Nothing was indexed, nothing was lost, and the writer's transaction did not stay open.
    assert_eq!(waiting(&tenant).await.len(), 20);
    env.engine.set_max_tenant_bytes(None);
    assert_eq!(found(&tenant, "w3x7").await.len(), 1);
    run::<v1::WorkItem>(
        &tenant,
        &ALICE,
        new_item(&project.id, v1::WorkItemType::Task, "After the fault", None),
    )
    .await;
    assert_eq!(found(&tenant, "fault").await, ["After the fault"]);
    assert_index_matches_items(&tenant).await;
}

/// A fresh environment whose tenant `acme` has only the migrations before `version`, and a
/// connection of the test's own to its file.
async fn acme_before(version: i64) -> (crate::env::TestEnv, SqliteConnection) {
    let env = crate::env::TestEnv::new();
    let file = env
        .engine
        .config()
        .db_file(&pm_core::TenantId::parse("acme").unwrap());
    let conn = database_before(&file, version).await;
    (env, conn)
}

/// How binaries before a bound migration wrote one table's rows: the insert (binding the row
/// number and its text), their text batch, an edit of row 2, and the notes left.
struct OldWay {
    insert: &'static str,
    index: &'static str,
    edit: &'static str,
    noted: &'static str,
}

/// Rows 1 to 3 ("Echidna n") indexed by the old batch, row 2 then edited to "Dugong 2", rows 4
/// and 5 new: the old triggers noted row 2 (with the text the index holds) and rows 4 and 5.
async fn write_the_old_way(conn: &mut SqliteConnection, old: &OldWay) {
    let insert = |n: i64| sqlx::query(old.insert).bind(n).bind(format!("Echidna {n}"));
    for n in 1..=3 {
        insert(n).execute(&mut *conn).await.unwrap();
    }
    sqlx::raw_sql(old.index).execute(&mut *conn).await.unwrap();
    sqlx::query(old.edit).execute(&mut *conn).await.unwrap();
    for n in 4..=5 {
        insert(n).execute(&mut *conn).await.unwrap();
    }
    let noted: Vec<(i64, i64)> = sqlx::query_as(old.noted)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert_eq!(noted, [(2, 1), (4, 0), (5, 0)]);
}

/// After a migration to a rowid bound (the tests below): rows 1, 3, 4 and 5 are found by their
/// first text ("Echidna n") and row 2 only by its edited one ("Dugong 2"), the bound is at the
/// last row, and only the update trigger is left on `table`.
async fn assert_migrated_to_a_bound(tenant: &TestTenant, fts: &str, upto: &str, table: &str) {
    let mut conn = raw(tenant).await;
    let sql = format!("SELECT rowid FROM {fts} WHERE {fts} MATCH $1 ORDER BY rowid");
    for (text, rowids) in [("echidna", vec![1, 3, 4, 5]), ("dugong", vec![2])] {
        let found: Vec<i64> = sqlx::query_scalar(&sql)
            .bind(text)
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(found, rowids, "{fts} MATCH {text}");
    }
    // (1, the bound): the table's one row.
    let row: (i64, i64) = sqlx::query_as(&format!("SELECT * FROM {upto}"))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(row, (1, 5));
    let triggers: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = $1 ORDER BY name",
    )
    .bind(table)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(triggers, [format!("{table}_fts_update")]);
    conn.close().await.unwrap();
}

/// A tenant from before new items went unnoted (`20261201130000`), with new items noted and an
/// edit of an indexed one noted with its old text: the migration indexes all of it, and from
/// then on the index holds every item up to the bound it sets.
#[tokio::test]
async fn the_migration_to_an_items_bound_indexes_what_was_noted() {
    let (env, mut conn) = acme_before(20261201130000).await;
    // The rows only: no project behind them.
    let old_way = OldWay {
        insert: "INSERT INTO work_items (id, project_id, number, item_type, title, \
                                         description, status, priority, rank, version, \
                                         created_at, created_by, updated_at, updated_by) \
                 VALUES ('i' || $1, 'p', $1, 'task', $2, '', 'todo', 'low', 'r' || $1, 1, 0, \
                         'a', 0, 'a')",
        index: "INSERT INTO work_item_fts (rowid, title, description) \
                SELECT w.rowid, w.title, w.description \
                FROM work_item_fts_pending AS p JOIN work_items AS w ON w.rowid = p.item_rowid; \
                DELETE FROM work_item_fts_pending",
        edit: "UPDATE work_items SET title = 'Dugong 2' WHERE number = 2",
        noted: "SELECT item_rowid, indexed FROM work_item_fts_pending ORDER BY 1",
    };
    write_the_old_way(&mut conn, &old_way).await;
    conn.close().await.unwrap();

    let tenant = env.tenant("acme").await;
    assert_eq!(waiting(&tenant).await, Vec::<i64>::new());
    assert_index_matches_items(&tenant).await;
    assert_migrated_to_a_bound(&tenant, "work_item_fts", "work_item_fts_upto", "work_items").await;
}

/// The same for comments (`20261201140000`): a comment indexed then edited (noted with its old
/// text) and two new ones (noted without) are indexed by the migration, which sets the bound.
#[tokio::test]
async fn the_migration_to_a_comments_bound_indexes_what_was_noted() {
    let (env, mut conn) = acme_before(20261201140000).await;
    // The rows only: no project or work item behind them.
    let old_way = OldWay {
        insert: "INSERT INTO comments (id, project_id, work_item_id, content, version, \
                                       created_at, created_by, updated_at, updated_by) \
                 VALUES ('c' || $1, 'p', 'i', $2, 1, 0, 'a', 0, 'a')",
        index: "INSERT INTO comment_fts (rowid, content) \
                SELECT c.rowid, c.content \
                FROM comment_fts_pending AS p JOIN comments AS c ON c.rowid = p.comment_rowid; \
                DELETE FROM comment_fts_pending",
        edit: "UPDATE comments SET content = 'Dugong 2' WHERE id = 'c2'",
        noted: "SELECT comment_rowid, indexed FROM comment_fts_pending ORDER BY 1",
    };
    write_the_old_way(&mut conn, &old_way).await;
    conn.close().await.unwrap();

    let tenant = env.tenant("acme").await;
    assert_eq!(comments_waiting(&tenant).await, 0);
    assert_index_matches(&tenant, "comment_fts").await;
    assert_migrated_to_a_bound(&tenant, "comment_fts", "comment_fts_upto", "comments").await;
}
