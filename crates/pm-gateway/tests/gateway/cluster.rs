//! A cluster in one test process (issue 11): three gateway nodes, each with a PostgreSQL
//! engine of its own on one shared database and a NATS connection of its own under one
//! subject prefix, serving real WebSocket clients on their own ports. The guarantees of one
//! node must hold across them: gapless seqs whichever node writes, every node's subscribers
//! getting every write in seq order, resume on any node (100 random cycles), delivery of a
//! commit whose publish was lost within the head-check interval, NATS stopped for 10 s under
//! writes (a private `nats-server`), and `RESYNC_REQUIRED` for a position the log no longer
//! holds.
//!
//! The tests run only when both `PM_TEST_POSTGRES_URL` and `PM_TEST_NATS_URL` are set;
//! otherwise each prints [`SKIP`] and passes, and CI fails on that line. Each test makes a
//! database of its own (dropped at the end) and a random subject prefix.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use pm_db::postgres::testing::TestDatabase;
use pm_db::postgres::{PostgresConfig, PostgresEngine};
use pm_gateway::relay::{Bus, BusConfig};
use tokio::time::Instant;

use crate::support::*;

/// What a cluster test prints when it does not run; CI fails if it finds this line.
const SKIP: &str =
    "skipped: PM_TEST_POSTGRES_URL and PM_TEST_NATS_URL not both set (cluster tests)";

/// Nodes on one database and one bus.
struct TestCluster {
    nodes: Vec<TestApp>,
    // Dropped after the nodes.
    _database: TestDatabase,
}

impl TestCluster {
    /// `count` nodes whose relays check the log every `head_check`; `None` (after printing
    /// [`SKIP`]) without the servers.
    async fn start(count: usize, head_check: Duration) -> Option<TestCluster> {
        let nats = std::env::var("PM_TEST_NATS_URL").ok()?;
        Self::start_on(&nats, count, head_check).await
    }

    /// The same on the NATS server at `nats`, which may be down.
    async fn start_on(nats: &str, count: usize, head_check: Duration) -> Option<TestCluster> {
        Self::start_with(nats, count, head_check, |_| {}).await
    }

    /// The same, each node's engine configured by `configure`.
    async fn start_with(
        nats: &str,
        count: usize,
        head_check: Duration,
        configure: impl Fn(&mut PostgresConfig),
    ) -> Option<TestCluster> {
        let (Ok(postgres), Ok(_)) = (
            std::env::var("PM_TEST_POSTGRES_URL"),
            std::env::var("PM_TEST_NATS_URL"),
        ) else {
            // Straight to stderr: the harness captures `eprintln!` of passing tests.
            let _ = writeln!(std::io::stderr(), "{SKIP}");
            return None;
        };
        let database = TestDatabase::create(&postgres).expect("the test user may create databases");
        let prefix = format!("pmtest{}", uuid::Uuid::new_v4().simple());
        let mut nodes = Vec::new();
        for _ in 0..count {
            let mut config = PostgresConfig::new(database.url());
            config.max_connections = 8;
            configure(&mut config);
            let engine = PostgresEngine::connect(config)
                .await
                .expect("the test database is reachable");
            let bus = Bus::connect(BusConfig {
                url: nats.to_owned(),
                prefix: prefix.clone(),
                head_check_interval: head_check,
                ..BusConfig::default()
            })
            .await
            .expect("a bus connection");
            assert!(bus.wait_connected(Duration::from_secs(5)).await);
            nodes.push(TestApp::spawn_node(Arc::new(engine), Some(bus), |_| {}).await);
        }
        Some(TestCluster {
            nodes,
            _database: database,
        })
    }

    /// A welcomed client of `user` on node `node`.
    async fn client(&self, node: usize, user: &str) -> Client {
        self.nodes[node].client("acme", user).await.0
    }
}

/// A subscriber from seq 0 on `client`, reading until `head` arrives: every seq it got.
fn watch(
    mut client: Client,
    head: Arc<tokio::sync::watch::Sender<u64>>,
) -> tokio::task::JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        client.subscribe(0).await.expect("subscribed");
        let mut until = head.subscribe();
        let mut seqs: Vec<u64> = Vec::new();
        loop {
            let last = *until.borrow_and_update();
            if last > 0 && seqs.last() == Some(&last) {
                return seqs;
            }
            tokio::select! {
                event = client.event() => seqs.push(event.seq),
                _ = until.changed() => {}
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_write_one_tenant_with_gapless_seqs_and_every_node_delivers_all_in_order() {
    const WRITERS: usize = 4;
    const ITEMS: usize = 50;
    let Some(cluster) = TestCluster::start(3, Duration::from_secs(1)).await else {
        return;
    };
    let mut admin = cluster.client(0, "alice").await;
    let project = admin.create_project("PM").await;
    let head = Arc::new(tokio::sync::watch::channel(0u64).0);
    let mut watchers = Vec::new();
    for node in 0..3 {
        watchers.push(watch(cluster.client(node, "alice").await, head.clone()));
    }
    let mut writers = Vec::new();
    for node in 0..3 {
        for writer in 0..WRITERS {
            let mut client = cluster.client(node, "alice").await;
            let project = project.id.clone();
            writers.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..ITEMS {
                    let title = format!("node {node} writer {writer} item {i}");
                    seqs.push(client.create_item(&project, &title).await.1);
                }
                seqs
            }));
        }
    }
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.await.expect("a writer finished"));
    }
    acked.sort_unstable();
    let first = acked[0];
    let last = first + (3 * WRITERS * ITEMS) as u64 - 1;
    assert_eq!(
        acked,
        (first..=last).collect::<Vec<u64>>(),
        "gapless, no seq twice"
    );
    head.send_replace(last);
    for (node, watcher) in watchers.into_iter().enumerate() {
        let seqs = tokio::time::timeout(Duration::from_secs(30), watcher)
            .await
            .unwrap_or_else(|_| panic!("node {node}'s subscriber got every event in time"))
            .expect("the subscriber finished");
        assert_eq!(seqs, (1..=last).collect::<Vec<u64>>(), "node {node}");
    }
    // A node that relayed the others' commits says so in its Welcome.
    for node in 0..3 {
        let (_, welcome) = cluster.nodes[node].client("acme", "bob").await;
        assert_eq!(welcome.head_seq, last, "node {node}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_publish_is_suppressed_reaches_other_nodes_within_the_head_check() {
    let head_check = Duration::from_millis(500);
    let Some(cluster) = TestCluster::start(2, head_check).await else {
        return;
    };
    let mut writer = cluster.client(0, "alice").await;
    let project = writer.create_project("PM").await;
    let mut subscriber = cluster.client(1, "alice").await;
    let head = subscriber.subscribe(0).await.expect("subscribed");
    assert_eq!(
        seqs(&events_until(&mut subscriber, head).await),
        (1..=head).collect::<Vec<u64>>()
    );
    let published = cluster.nodes[0].app.metrics.bus_published.get();

    cluster.nodes[0].app.suppress_publishing(true);
    let committed = Instant::now();
    let (_, seq) = writer.create_item(&project.id, "never published").await;
    assert_eq!(subscriber.event().await.seq, seq);
    let took = committed.elapsed();
    assert!(took <= head_check + Duration::from_secs(1), "took {took:?}");
    assert_eq!(
        cluster.nodes[0].app.metrics.bus_published.get(),
        published,
        "nothing was published"
    );

    // Publishing again: the next commit comes over the bus, long before a head check.
    cluster.nodes[0].app.suppress_publishing(false);
    let (_, next) = writer.create_item(&project.id, "published").await;
    assert_eq!(subscriber.event().await.seq, next);
    assert_eq!(
        cluster.nodes[0].app.metrics.bus_published.get(),
        published + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resuming_on_random_nodes_gets_exactly_the_missed_events() {
    const CYCLES: usize = 100;
    let Some(cluster) = TestCluster::start(3, Duration::from_secs(1)).await else {
        return;
    };
    let mut admin = cluster.client(0, "alice").await;
    let project = admin.create_project("PM").await;
    // A small deterministic generator: the same nodes and counts on every run.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    let mut seen: Vec<u64> = Vec::new();
    let mut writers: Vec<Client> = Vec::new();
    for node in 0..3 {
        writers.push(cluster.client(node, "alice").await);
    }
    for cycle in 0..CYCLES {
        // Writes through random nodes while nobody is subscribed...
        for i in 0..next(8) {
            let node = next(3) as usize;
            let title = format!("cycle {cycle} item {i}");
            writers[node].create_item(&project.id, &title).await;
        }
        // ...then a resume on a random node, from the last seq seen, reading part of what
        // it missed before going away again.
        let node = next(3) as usize;
        let mut watcher = cluster.client(node, "alice").await;
        let from = seen.last().copied().unwrap_or(0);
        let head = watcher.subscribe(from).await.expect("resumed");
        let wanted = (head - from).min(next(12) + 1);
        for _ in 0..wanted.min(head - from) {
            seen.push(watcher.event().await.seq);
        }
    }
    let mut watcher = cluster.client(0, "alice").await;
    let from = *seen.last().expect("events were seen");
    let head = watcher.subscribe(from).await.expect("resumed");
    if head > from {
        seen.extend(seqs(&events_until(&mut watcher, head).await));
    }
    assert_eq!(seen, (1..=head).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_stopped_for_ten_seconds_writes_go_on_and_subscribers_miss_nothing() {
    if std::env::var("PM_TEST_NATS_URL").is_err() {
        let _ = writeln!(std::io::stderr(), "{SKIP}");
        return;
    }
    let head_check = Duration::from_millis(500);
    let mut nats = PrivateNats::start();
    let Some(cluster) = TestCluster::start_on(&nats.url(), 2, head_check).await else {
        return;
    };
    let mut writer = cluster.client(0, "alice").await;
    let project = writer.create_project("PM").await;
    let mut subscriber = cluster.client(1, "alice").await;
    let mut last = subscriber.subscribe(0).await.expect("subscribed");
    let mut seen = Vec::new();
    catch_up(&mut subscriber, &mut seen, last).await;
    for i in 0..10 {
        last = writer
            .create_item(&project.id, &format!("before {i}"))
            .await
            .1;
    }
    catch_up(&mut subscriber, &mut seen, last).await;

    nats.stop();
    let outage = Instant::now();
    let mut during = 0;
    while outage.elapsed() < Duration::from_secs(10) {
        last = writer
            .create_item(&project.id, &format!("during {during}"))
            .await
            .1;
        during += 1;
        if during % 10 == 0 {
            // Delivered while NATS is down, by reading the log.
            catch_up(&mut subscriber, &mut seen, last).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    catch_up(&mut subscriber, &mut seen, last).await;
    nats.restart();
    for i in 0..10 {
        last = writer
            .create_item(&project.id, &format!("after {i}"))
            .await
            .1;
    }
    catch_up(&mut subscriber, &mut seen, last).await;
    assert!(during >= 50, "{during} writes while NATS was down");
    assert_eq!(
        seen,
        (1..=last).collect::<Vec<u64>>(),
        "in order, no gap, no duplicate"
    );
    subscriber.assert_nothing_more(1).await;
    assert!(cluster.nodes[0].app.metrics.bus_publish_failures.get() >= during);
}

/// Reads `subscriber`'s events into `seen` until it has seen `last` (nothing if it has).
async fn catch_up(subscriber: &mut Client, seen: &mut Vec<u64>, last: u64) {
    if seen.last().is_none_or(|seen| *seen < last) {
        seen.extend(seqs(&events_until(subscriber, last).await));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_the_log_no_longer_holds_gets_resync_required_on_any_node() {
    let Ok(nats) = std::env::var("PM_TEST_NATS_URL") else {
        let _ = writeln!(std::io::stderr(), "{SKIP}");
        return;
    };
    let retention = pm_db::Retention {
        max_events: Some(5),
        max_age: None,
        interval: Duration::from_millis(50),
    };
    let Some(cluster) = TestCluster::start_with(&nats, 2, Duration::from_secs(1), |config| {
        config.writer.retention = retention.clone();
    })
    .await
    else {
        return;
    };
    let mut writer = cluster.client(0, "alice").await;
    let project = writer.create_project("PM").await;
    let mut last = 0;
    for i in 0..20 {
        last = writer.create_item(&project.id, &format!("{i}")).await.1;
    }
    let mut reader = cluster.client(1, "alice").await;
    // The writer prunes in the background; wait for it, bounded.
    let mut answer = reader.subscribe(1).await;
    for _ in 0..100 {
        if answer.is_err() {
            break;
        }
        reader = cluster.client(1, "alice").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        answer = reader.subscribe(1).await;
    }
    let error = answer.expect_err("seq 1 was pruned");
    assert_eq!(code(&error), pm_proto::v1::ErrorCode::ResyncRequired);
    // A position the log still holds resumes, on either node.
    for node in 0..2 {
        let mut client = cluster.client(node, "alice").await;
        assert_eq!(client.subscribe(last - 2).await, Ok(last));
        assert_eq!(
            seqs(&events_until(&mut client, last).await),
            vec![last - 1, last]
        );
    }
}
