//! A cluster of real `pm-server` processes (issue 11): three `serve` processes on their own
//! ports, one PostgreSQL database (`storage.engine = "postgres"`) and one NATS server
//! (`bus.nats_url`), driven by `pm-client` as any client would.
//!
//! - Three nodes × four writers × 500 commands on one tenant: the acknowledged seqs are
//!   exactly the head's range, and a subscriber on node 1 gets every write made through
//!   nodes 2 and 3 in seq order, no gap, no duplicate. Twenty tenants written at once through
//!   all three nodes stay gapless each.
//! - `kill -9` of a node under load: every command it (or another node) acknowledged is in
//!   the change log at its seq, the log is gapless, and a restarted node carries on at
//!   head + 1.
//! - `pm-server tenants move --to postgres` copies a single node's SQLite tenant into the
//!   cluster's database: the same export from either engine, and a client resumes from its
//!   last seq on the cluster.
//!
//! The tests run only when both `PM_TEST_POSTGRES_URL` and `PM_TEST_NATS_URL` are set;
//! otherwise each prints [`SKIP`] and passes, and CI fails on that line. Each test makes a
//! database of its own (dropped at the end) and a random subject prefix.

#[path = "support/process.rs"]
mod process;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use pm_client::v1::{self, command::Kind as Cmd};
use pm_client::Client;
use pm_core::{TenantId, UserId};
use pm_db::postgres::testing::TestDatabase;
use tokio::sync::mpsc;

const SECRET: &str = "cluster-test-secret-that-is-at-least-32-bytes";
/// What a cluster test prints when it does not run; CI fails if it finds this line.
const SKIP: &str =
    "skipped: PM_TEST_POSTGRES_URL and PM_TEST_NATS_URL not both set (cluster process tests)";
/// An upper bound for anything the test waits for (a safety net, not a synchronization).
const WAIT: Duration = Duration::from_secs(60);

/// Three server processes on one database and one bus.
struct Cluster {
    nodes: Vec<Node>,
    database: TestDatabase,
    nats: String,
    prefix: String,
    data_dir: tempfile::TempDir,
}

impl Cluster {
    /// `count` nodes; `None` (after printing [`SKIP`]) without the servers.
    async fn start(count: usize) -> Option<Cluster> {
        let (Ok(postgres), Ok(nats)) = (
            std::env::var("PM_TEST_POSTGRES_URL"),
            std::env::var("PM_TEST_NATS_URL"),
        ) else {
            // Straight to stderr: the harness captures `eprintln!` of passing tests.
            let _ = writeln!(std::io::stderr(), "{SKIP}");
            return None;
        };
        let mut cluster = Cluster {
            nodes: Vec::new(),
            database: TestDatabase::create(&postgres).expect("the test user may create databases"),
            nats,
            prefix: format!("pmtest{}", uuid::Uuid::new_v4().simple()),
            data_dir: tempfile::tempdir().expect("a temporary directory"),
        };
        for _ in 0..count {
            let node = cluster.spawn().await;
            cluster.nodes.push(node);
        }
        Some(cluster)
    }

    /// Starts one more `pm-server serve` on the cluster's database and bus.
    async fn spawn(&self) -> Node {
        let (url, nats, prefix) = (self.database.url(), self.nats.clone(), self.prefix.clone());
        let data_dir = self.data_dir.path().to_owned();
        tokio::task::spawn_blocking(move || Node::spawn(&url, &nats, &prefix, &data_dir))
            .await
            .expect("starting a node did not panic")
    }
}

/// A `pm-server serve` child process.
struct Node {
    child: Option<Child>,
    url: String,
}

impl Node {
    fn spawn(database: &str, nats: &str, prefix: &str, data_dir: &Path) -> Node {
        let mut command = process::serve_dev(data_dir, SECRET);
        command
            .args(["--set", "storage.engine=postgres"])
            .args(["--set", "storage.postgres_max_connections=8"])
            .args(["--set", &format!("bus.prefix={prefix}")])
            .args(["--set", "bus.head_check_interval_ms=500"])
            // URLs through the environment, as an operator would pass credentials.
            .env("PM_STORAGE_POSTGRES_URL", database)
            .env("PM_BUS_NATS_URL", nats);
        let (child, url) = process::start(command);
        Node {
            child: Some(child),
            url,
        }
    }

    /// SIGKILL; checks that the node was still running until then.
    fn kill(&mut self) {
        process::kill(self.child.take().expect("the node is running"));
    }

    async fn connect(&self, tenant: &str) -> Client {
        process::connect(&self.url, SECRET, (tenant, "alice"), 16_384, WAIT).await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A failing test must not leave the process behind.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn create_project(client: &Client, key: &str) -> String {
    let result = client
        .command(Cmd::CreateProject(v1::CreateProject {
            key: key.into(),
            name: key.into(),
            description: String::new(),
        }))
        .await
        .expect("project created");
    match result.entity.and_then(|e| e.kind) {
        Some(v1::entity::Kind::Project(p)) => p.id,
        other => panic!("{other:?}"),
    }
}

/// Creates a task; its seq and id.
async fn create_item(
    client: &Client,
    project: &str,
    title: &str,
) -> pm_client::Result<(u64, String)> {
    let result = client
        .command(Cmd::CreateWorkItem(v1::CreateWorkItem {
            project_id: project.into(),
            title: title.into(),
            item_type: v1::WorkItemType::Task.into(),
            ..Default::default()
        }))
        .await?;
    match result.entity.and_then(|e| e.kind) {
        Some(v1::entity::Kind::WorkItem(item)) => Ok((result.seq, item.id)),
        other => panic!("{other:?}"),
    }
}

/// Reads `events` until `head`; every event in the order received.
async fn events_until(events: &mut mpsc::Receiver<v1::Event>, head: u64) -> Vec<v1::Event> {
    let mut received: Vec<v1::Event> = Vec::new();
    while received.last().map_or(0, |e| e.seq) < head {
        let event = tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap_or_else(|_| panic!("event {} of {head} in time", received.len() + 1))
            .expect("the event stream stays open");
        received.push(event);
    }
    received
}

fn seqs(events: &[v1::Event]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_four_writers_each_give_seqs_exactly_one_to_head_delivered_everywhere() {
    const WRITERS: usize = 4;
    const COMMANDS: usize = 500;
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let admin = cluster.nodes[0].connect("acme").await;
    let project = Arc::new(create_project(&admin, "PM").await);
    let subscriber = cluster.nodes[0].connect("acme").await;
    let mut events = subscriber.events().expect("the event stream");
    subscriber
        .subscribe(vec![], vec![], 0)
        .await
        .expect("subscribed");
    let mut writers = Vec::new();
    for (n, node) in cluster.nodes.iter().enumerate() {
        for w in 0..WRITERS {
            let client = node.connect("acme").await;
            let project = project.clone();
            writers.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..COMMANDS {
                    let title = format!("node {n} writer {w} command {i}");
                    acked.push(create_item(&client, &project, &title).await.expect("acked"));
                }
                (n, acked)
            }));
        }
    }
    let mut acked: BTreeMap<u64, (usize, String)> = BTreeMap::new();
    for writer in writers {
        let (node, items) = writer.await.expect("a writer finished");
        for (seq, id) in items {
            assert!(
                acked.insert(seq, (node, id)).is_none(),
                "seq {seq} acknowledged twice"
            );
        }
    }
    let first = *acked.keys().next().expect("acknowledged writes");
    let head = first + (3 * WRITERS * COMMANDS) as u64 - 1;
    assert_eq!(acked.len(), 3 * WRITERS * COMMANDS);
    assert_eq!(
        *acked.keys().last().unwrap(),
        head,
        "seqs {first}..={head} without a gap"
    );

    let delivered = events_until(&mut events, head).await;
    assert_eq!(seqs(&delivered), (1..=head).collect::<Vec<u64>>());
    for event in &delivered[first as usize - 1..] {
        let (_, id) = &acked[&event.seq];
        assert_eq!(&event.entity_id, id, "seq {}", event.seq);
    }
    let remote = acked.values().filter(|(node, _)| *node != 0).count();
    assert_eq!(
        remote,
        2 * WRITERS * COMMANDS,
        "node 1's subscriber got nodes 2 and 3's writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_tenants_written_through_three_nodes_at_once_stay_gapless_each() {
    const TENANTS: usize = 20;
    const COMMANDS: usize = 20;
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let cluster = Arc::new(cluster);
    let mut tenants = Vec::new();
    for t in 0..TENANTS {
        let cluster = cluster.clone();
        tenants.push(tokio::spawn(async move {
            let tenant = format!("tenant-{t}");
            let admin = cluster.nodes[t % 3].connect(&tenant).await;
            let project = Arc::new(create_project(&admin, "PM").await);
            let mut writers = Vec::new();
            for node in &cluster.nodes {
                let client = node.connect(&tenant).await;
                let project = project.clone();
                writers.push(tokio::spawn(async move {
                    let mut seqs = Vec::new();
                    for i in 0..COMMANDS {
                        seqs.push(
                            create_item(&client, &project, &format!("{i}"))
                                .await
                                .expect("acked")
                                .0,
                        );
                    }
                    seqs
                }));
            }
            let mut seqs = Vec::new();
            for writer in writers {
                seqs.extend(writer.await.expect("a writer finished"));
            }
            seqs.sort_unstable();
            (tenant, seqs)
        }));
    }
    for tenant in tenants {
        let (tenant, seqs) = tenant.await.expect("a tenant finished");
        let first = seqs[0];
        let expected: Vec<u64> = (first..first + (3 * COMMANDS) as u64).collect();
        assert_eq!(seqs, expected, "{tenant}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_node_under_load_loses_no_acknowledged_command() {
    const WRITERS: usize = 2;
    let Some(mut cluster) = Cluster::start(3).await else {
        return;
    };
    let admin = cluster.nodes[0].connect("acme").await;
    let project = Arc::new(create_project(&admin, "PM").await);
    let (acks, mut acked_rx) = mpsc::unbounded_channel::<(usize, u64, String)>();
    let mut writers = Vec::new();
    for (n, node) in cluster.nodes.iter().enumerate() {
        for w in 0..WRITERS {
            let client = node.connect("acme").await;
            let (project, acks) = (project.clone(), acks.clone());
            writers.push(tokio::spawn(async move {
                // Writes until its node is gone (node 2) or 400 commands are acknowledged.
                for i in 0..400 {
                    match create_item(&client, &project, &format!("node {n} writer {w} {i}")).await
                    {
                        Ok((seq, id)) => acks.send((n, seq, id)).expect("the test listens"),
                        Err(_) if n == 2 => return,
                        Err(error) => panic!("node {n} failed: {error}"),
                    }
                }
            }));
        }
    }
    drop(acks);
    // Kill node 2 once it has acknowledged 150 commands, with its writers in flight.
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let mut from_node_2 = 0;
    while from_node_2 < 150 {
        let (node, seq, id) = acked_rx.recv().await.expect("writers are running");
        from_node_2 += usize::from(node == 2);
        acked.insert(seq, id);
    }
    cluster.nodes[2].kill();
    for writer in writers {
        writer.await.expect("a writer finished");
    }
    while let Some((_, seq, id)) = acked_rx.recv().await {
        acked.insert(seq, id);
    }

    // Everything acknowledged, by any node, is in the log at its seq; the log has no gap.
    let reader = cluster.nodes[1].connect("acme").await;
    let mut events = reader.events().expect("the event stream");
    let head = reader
        .subscribe(vec![], vec![], 0)
        .await
        .expect("subscribed");
    let logged = events_until(&mut events, head).await;
    assert_eq!(seqs(&logged), (1..=head).collect::<Vec<u64>>());
    for (seq, id) in &acked {
        assert_eq!(
            &logged[*seq as usize - 1].entity_id,
            id,
            "acknowledged seq {seq}"
        );
    }
    assert!(
        acked.len() >= 150 + 2 * WRITERS * 400,
        "{} acknowledged",
        acked.len()
    );

    // A node started in its place carries on at head + 1.
    cluster.nodes[2] = cluster.spawn().await;
    let writer = cluster.nodes[2].connect("acme").await;
    let (seq, _) = create_item(&writer, &project, "after the kill")
        .await
        .expect("acked");
    assert_eq!(seq, head + 1);
    let next = tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("in time");
    assert_eq!(
        next.map(|e| e.seq),
        Some(head + 1),
        "node 2's write reached node 1"
    );
}

/// `pm-server` run to its end with the cluster's database in its environment.
fn pm_server(cluster: &Cluster, args: &[&str], data_dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pm-server"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("PM_STORAGE_POSTGRES_URL", cluster.database.url())
        .env("PM_LOG", "error")
        .output()
        .expect("pm-server runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_move_copies_a_sqlite_tenant_whose_clients_resume_on_the_cluster() {
    let Some(cluster) = Cluster::start(1).await else {
        return;
    };
    // A SQLite tenant written by a single node of its own.
    let single = tempfile::tempdir().expect("a data directory");
    let engine = pm_db::SqliteEngine::new(pm_db::SqliteConfig::new(single.path()));
    let tenant = pm_db::Engine::open(&engine, &TenantId::parse("acme").unwrap())
        .await
        .expect("opens");
    let alice = UserId::parse("sub", "alice").unwrap();
    let command = |kind| v1::Command {
        idempotency_key: String::new(),
        kind: Some(kind),
    };
    let project = tenant
        .execute(
            &alice,
            command(Cmd::CreateProject(v1::CreateProject {
                key: "MV".into(),
                name: "Moved".into(),
                description: String::new(),
            })),
        )
        .await
        .expect("project");
    let project_id = match project.entity.and_then(|e| e.kind) {
        Some(v1::entity::Kind::Project(p)) => p.id,
        other => panic!("{other:?}"),
    };
    for i in 0..5 {
        tenant
            .execute(
                &alice,
                command(Cmd::CreateWorkItem(v1::CreateWorkItem {
                    project_id: project_id.clone(),
                    title: format!("item {i}"),
                    item_type: v1::WorkItemType::Task.into(),
                    ..Default::default()
                })),
            )
            .await
            .expect("item");
    }
    let head = tenant.head_seq();
    drop(tenant);
    drop(engine);

    let dir = single.path();
    let moved = pm_server(
        &cluster,
        &["tenants", "move", "--tenant", "acme", "--to", "postgres"],
        dir,
    );
    assert_eq!(moved.status.code(), Some(0), "{}", text(&moved.stderr));
    assert_eq!(
        text(&moved.stdout).trim(),
        format!(
            "moved tenant acme to PostgreSQL (head_seq={head}): project=1 project_member=1 \
             sprint=0 work_item=5 comment=0 time_entry=0 dependency=0 swim_lane=0 \
             llm_context=0 change={head}"
        )
    );
    // The same export from either engine.
    let from_sqlite = pm_server(&cluster, &["export", "--tenant", "acme"], dir);
    let from_postgres = pm_server(
        &cluster,
        &["export", "--tenant", "acme", "--engine", "postgres"],
        dir,
    );
    assert_eq!(
        from_postgres.status.code(),
        Some(0),
        "{}",
        text(&from_postgres.stderr)
    );
    assert_eq!(text(&from_postgres.stdout), text(&from_sqlite.stdout));
    // Moving again is refused: the PostgreSQL tenant has content.
    let again = pm_server(
        &cluster,
        &["tenants", "move", "--tenant", "acme", "--to", "postgres"],
        dir,
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("use --replace"),
        "{}",
        text(&again.stderr)
    );

    // The operator commands see it in the database.
    let migrated = pm_server(
        &cluster,
        &[
            "migrate", "--engine", "postgres", "--tenant", "acme", "--tenant", "newco",
        ],
        dir,
    );
    assert_eq!(
        migrated.status.code(),
        Some(0),
        "{}",
        text(&migrated.stderr)
    );
    assert_eq!(
        text(&migrated.stdout),
        format!(
            "{:<40} current     head_seq={head}\n{:<40} created     head_seq=0\n\
             2 tenant(s): 1 created, 0 migrated, 1 already current, 0 failed\n",
            "acme", "newco"
        )
    );
    let listed = pm_server(
        &cluster,
        &["tenants", "list", "--engine", "postgres", "--json"],
        dir,
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    let names: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|t| t["tenant"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["acme", "newco"]);
    let stats = pm_server(
        &cluster,
        &[
            "tenants", "stats", "--engine", "postgres", "--json", "--tenant", "acme",
        ],
        dir,
    );
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("JSON");
    assert_eq!(stats[0]["head_seq"], head);
    assert_eq!(stats[0]["oldest_seq"], 1);
    assert_eq!(stats[0]["migration_pending"], false);
    assert_eq!(stats[0]["counts"]["work_items"], 5);

    // A client that had seen seq 2 on the single node resumes on the cluster: the rest, then
    // a new write at head + 1.
    let client = cluster.nodes[0].connect("acme").await;
    let mut events = client.events().expect("the event stream");
    assert_eq!(
        client.subscribe(vec![], vec![], 2).await.expect("resumed"),
        head
    );
    assert_eq!(
        seqs(&events_until(&mut events, head).await),
        (3..=head).collect::<Vec<u64>>()
    );
    let (seq, _) = create_item(&client, &project_id, "on the cluster")
        .await
        .expect("acked");
    assert_eq!(seq, head + 1);
}
