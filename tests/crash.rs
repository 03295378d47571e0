//! Crash consistency: the real `pm-server` binary is killed with SIGKILL while clients write,
//! restarted on the same data directory, and checked against every acknowledgement it gave.
//!
//! # A round
//! 1. **Write.** For each of [`TENANTS`], [`WRITERS`] connections (`pm-client`) keep
//!    [`WINDOW`] requests in flight each: creates (with an idempotency key), updates and
//!    deletes of the writer's own items (so every version is known exactly and nothing
//!    conflicts), atomic batches (creates plus an update of an existing item), and atomic
//!    batches whose last command is invalid ("doomed": they must be answered with an error and
//!    leave nothing). Every acknowledgement is recorded: the seq and the entity after the change.
//!    Requests not yet answered are kept as pending, and so are a few ([`IGNORED_PERCENT`])
//!    whose answer the writer ignores on purpose: they stand for changes committed just
//!    before the kill whose answer never left, a window the kill itself rarely hits.
//! 2. **Kill.** Once the writers together reach a randomly chosen number of acknowledgements,
//!    the server gets SIGKILL (`Child::kill`) with requests in flight. Those requests may or
//!    may not have been applied; the connection drop is all the client learns.
//! 3. **Check the files, server stopped** (each tenant's SQLite file opened read-only):
//!    `PRAGMA integrity_check` is `ok`; the change log's seqs are exactly `1..=head`.
//! 4. **Check through the restarted server** (which also proves it recovers and serves):
//!    - every acknowledged change is in the log at its seq, for its entity, with the entity
//!      exactly as acknowledged;
//!    - each pending request is wholly applied or not at all: a create is there once or not;
//!      an update or delete moved the version by one with exactly its fields, or nothing; an
//!      atomic batch has all its items and its update (at consecutive seqs) or none of them;
//!      a doomed batch has nothing;
//!    - `ListWorkItems` (as of `head`) equals the model exactly (acknowledged state plus the
//!      pending changes found applied), with nothing extra; and the last logged event of each
//!      item carries that same item;
//!    - `Subscribe{from_seq: k}` for `k` in {0, the head checked last round, the head, three
//!      random positions} answers `head_seq = head` and delivers exactly the logged events
//!      `k+1..=head`; then a probe command gets seq `head + 1` (the head survived recovery)
//!      and is the very next event on every one of those subscriptions (no duplicate, no extra);
//!    - pending creates are sent again with their idempotency key: one that was applied is
//!      answered with the stored result (`replayed`, same item and seq), one that was not is
//!      applied now (the key was not stored without the change).
//! 5. The restarted server serves the next round. After the last round it is stopped with
//!    SIGTERM (exit 0) and the files are checked once more, with no WAL left beside them.
//!
//! The server is started as `serve --dev --listen 127.0.0.1:0`: dev mode prints the bound
//! address; with `PM_JWT_SECRET` set it uses that secret, so the test mints tokens for any
//! tenant. The rate limit is raised so pipelining writers are never `RATE_LIMITED`.
//!
//! # Randomness, soak
//! Every choice (the kill points, the operations, the resume positions) comes from one seeded
//! generator; the seed is printed, and `PM_CRASH_SEED=<seed>` replays the same choices (the
//! timing of the machine still differs, so the exact kill moment does not repeat). The CI test
//! runs [`CI_ROUNDS`] rounds; the ignored `crash_soak` runs `PM_CRASH_ROUNDS` (default 30):
//!
//! ```sh
//! PM_CRASH_ROUNDS=100 cargo test --release --test crash -- --ignored --nocapture
//! ```

#[path = "support/process.rs"]
mod process;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use pm_client::v1::client_frame::Body as In;
use pm_client::v1::response::Result as Out;
use pm_client::v1::{self, command::Kind as Cmd};
use pm_client::{Client, ClientError};
use prost::Message as _;
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::{mpsc, Notify};

const SECRET: &str = "crash-test-secret-that-is-at-least-32-bytes";
/// Tenants written concurrently, each with its own database file.
const TENANTS: [&str; 3] = ["crash-a", "crash-b", "crash-c"];
/// The one user of each tenant (admin of its project, so it sees every event).
const USER: &str = "alice";
/// Connections writing to each tenant.
const WRITERS: usize = 2;
/// Requests each writer keeps in flight.
const WINDOW: usize = 8;
/// Creates in an atomic batch (plus one update when the writer owns a free item).
const BATCH_CREATES: usize = 4;
/// Requests whose answer the writers ignore (percent): to the checks they are unacknowledged
/// but (mostly) applied, like changes committed just before a kill whose answer never left.
/// Killing hits that window rarely: it lasts from `COMMIT` to the answer's arrival only.
const IGNORED_PERCENT: u64 = 3;
/// Rounds of the bounded test that runs in CI.
const CI_ROUNDS: u64 = 5;
/// An upper bound for anything the test waits for (a safety net, not a synchronization).
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_and_nothing_unacknowledged_is_half_applied() {
    let plan = Plan {
        rounds: CI_ROUNDS,
        acks_per_round: (150, 400),
    };
    let figures = run(&plan, seed()).await;
    assert_eq!(figures.rounds, CI_ROUNDS);
    assert!(figures.acked_requests >= CI_ROUNDS * plan.acks_per_round.0);
    // The run exercised what it claims to: unacknowledged requests applied and not, retries
    // answered from the idempotency store, batches both acknowledged and rejected.
    assert!(figures.pending_at_kill > 0, "{figures:?}");
    assert!(figures.pending_applied > 0, "{figures:?}");
    assert!(figures.retries_replayed > 0, "{figures:?}");
    assert!(figures.batches_acked > 0, "{figures:?}");
    assert!(figures.doomed_rejected > 0, "{figures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: PM_CRASH_ROUNDS=100 cargo test --release --test crash -- --ignored --nocapture"]
async fn crash_soak() {
    let rounds = std::env::var("PM_CRASH_ROUNDS")
        .map(|r| r.parse().expect("PM_CRASH_ROUNDS is a number"))
        .unwrap_or(30);
    let figures = run(
        &Plan {
            rounds,
            acks_per_round: (150, 1500),
        },
        seed(),
    )
    .await;
    assert_eq!(figures.rounds, rounds);
}

/// How much to do.
#[derive(Debug)]
struct Plan {
    rounds: u64,
    /// The kill comes after this many acknowledged requests (inclusive range, chosen per round).
    acks_per_round: (u64, u64),
}

/// What a run did and verified.
#[derive(Debug, Default)]
struct Figures {
    /// Kill rounds survived (killed, restarted, checked).
    rounds: u64,
    /// Acknowledged requests (a batch is one).
    acked_requests: u64,
    /// Acknowledged commands (each command of a batch counts), probes and retries included.
    acked_writes: u64,
    /// Acknowledged atomic batches.
    batches_acked: u64,
    /// Doomed atomic batches answered with their error.
    doomed_rejected: u64,
    /// Requests in flight at the kills, plus those whose answer was ignored on purpose.
    pending_at_kill: u64,
    /// ... of which answers ignored on purpose.
    ignored_answers: u64,
    /// ... of which found applied after the restart.
    pending_applied: u64,
    /// Atomic batches among the pending ones (all or nothing checked).
    pending_batches: u64,
    /// Subscriptions checked against the log.
    resumes_checked: u64,
    /// Pending creates sent again and answered from the idempotency store.
    retries_replayed: u64,
    /// Pending creates sent again and applied then (they had not been before).
    retries_applied: u64,
    /// Change-log rows over all tenants at the end.
    log_rows: u64,
}

fn seed() -> u64 {
    match std::env::var("PM_CRASH_SEED") {
        Ok(seed) => seed.parse().expect("PM_CRASH_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos() as u64,
    }
}

async fn run(plan: &Plan, seed: u64) -> Figures {
    println!(
        "crash: seed {seed} (replay the choices with PM_CRASH_SEED={seed}), {} rounds",
        plan.rounds
    );
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut rng = Rng(seed);
    let mut figures = Figures::default();

    let mut server = Server::start(dir.path()).await;
    let mut tenants = Vec::new();
    for name in TENANTS {
        tenants.push(Arc::new(Mutex::new(Tenant::create(&server, name).await)));
    }
    for round in 1..=plan.rounds {
        let target = rng.range(plan.acks_per_round);
        write_until_killed(&mut server, &tenants, round, target, &mut rng, &mut figures).await;

        let mut logs = Vec::new();
        for tenant in TENANTS {
            logs.push(read_tenant_file(dir.path(), tenant).await);
        }
        server = Server::start(dir.path()).await;
        for (tenant, log) in tenants.iter().zip(&logs) {
            verify(&server, tenant, log, round, &mut rng, &mut figures).await;
        }
        figures.rounds += 1;
        println!(
            "crash: round {round} survived ({} s): {figures:?}",
            started.elapsed().as_secs()
        );
    }
    assert_eq!(server.stop(), Some(0), "SIGTERM after the last round");
    for name in TENANTS {
        let wal = dir.path().join("tenants").join(name).join("tenant.db-wal");
        assert_eq!(
            std::fs::metadata(&wal).map_or(0, |m| m.len()),
            0,
            "{name}: a clean shutdown checkpoints the WAL into tenant.db"
        );
    }
    for (name, tenant) in TENANTS.iter().zip(&tenants) {
        let log = read_tenant_file(dir.path(), name).await;
        let tenant = lock(tenant);
        assert_eq!(
            log.len() as u64,
            tenant.checked_head,
            "{name}: head after SIGTERM"
        );
        figures.log_rows += log.len() as u64;
    }
    println!(
        "crash: seed {seed}: {} kill rounds survived, {} acknowledged writes verified \
         ({} requests, {} atomic batches acknowledged, {} doomed batches rejected), \
         {} requests unacknowledged at the kills ({} applied, {} not; {} answers ignored on \
         purpose; {} atomic batches), \
         {} resumes checked, pending creates retried: {} replayed, {} applied; \
         {} change-log rows; {:.1} s",
        figures.rounds,
        figures.acked_writes,
        figures.acked_requests,
        figures.batches_acked,
        figures.doomed_rejected,
        figures.pending_at_kill,
        figures.pending_applied,
        figures.pending_at_kill - figures.pending_applied,
        figures.ignored_answers,
        figures.pending_batches,
        figures.resumes_checked,
        figures.retries_replayed,
        figures.retries_applied,
        figures.log_rows,
        started.elapsed().as_secs_f64(),
    );
    figures
}

// --- The server process ---

/// A `pm-server serve` child process.
#[derive(Debug)]
struct Server {
    child: Option<Child>,
    url: String,
}

impl Server {
    async fn start(data_dir: &Path) -> Server {
        let data_dir = data_dir.to_owned();
        tokio::task::spawn_blocking(move || Server::spawn(&data_dir))
            .await
            .expect("starting the server did not panic")
    }

    fn spawn(data_dir: &Path) -> Server {
        let (child, url) = process::start(process::serve_dev(data_dir, SECRET));
        Server {
            child: Some(child),
            url,
        }
    }

    /// SIGKILL; checks that the server was still running until then.
    fn kill(&mut self) {
        process::kill(self.child.take().expect("the server is running"));
    }

    /// SIGTERM, then the exit code.
    fn stop(mut self) -> Option<i32> {
        let mut child = self.child.take().expect("the server is running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        child.wait().expect("the server is reaped").code()
    }

    async fn connect(&self, tenant: &str, event_buffer: usize) -> Client {
        process::connect(&self.url, SECRET, (tenant, USER), event_buffer, WAIT).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failing test must not leave the process behind.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// --- The model: what the server acknowledged, and what is pending ---

/// Everything the test knows about one tenant.
#[derive(Debug)]
struct Tenant {
    name: &'static str,
    project_id: String,
    /// Every work item that exists, as last acknowledged (or found applied after a crash).
    items: BTreeMap<String, v1::WorkItem>,
    /// Every acknowledged change by seq: the entity id and, for work items, the item after it.
    acked: BTreeMap<u64, Acked>,
    /// Requests sent and not answered yet, by request number.
    pending: HashMap<u64, Pending>,
    /// Markers of doomed batches that were answered with their error.
    rejected: Vec<String>,
    /// The head after the last round's checks.
    checked_head: u64,
    next_request: u64,
}

#[derive(Debug)]
struct Acked {
    entity_id: String,
    item: Option<v1::WorkItem>,
}

/// A request in flight.
#[derive(Debug, Clone)]
enum Pending {
    Create {
        title: String,
    },
    Update {
        id: String,
        from: u64,
        title: String,
        points: u32,
    },
    Delete {
        id: String,
        from: u64,
    },
    /// Creates titled `{marker}0..` and optionally an update (id, from version, new title).
    Batch {
        marker: String,
        update: Option<(String, u64, String)>,
    },
    /// Creates titled `{marker}0`, `{marker}1`, then an invalid create: must fail whole.
    Doomed {
        marker: String,
    },
}

impl Tenant {
    /// Creates the tenant's project (its user becomes admin).
    async fn create(server: &Server, name: &'static str) -> Tenant {
        let client = server.connect(name, 1024).await;
        let result = client
            .command(Cmd::CreateProject(v1::CreateProject {
                key: "CR".into(),
                name: "Crash".into(),
                description: String::new(),
            }))
            .await
            .expect("project created");
        let Some(v1::entity::Kind::Project(project)) = result.entity.and_then(|e| e.kind) else {
            panic!("CreateProject answers with the project");
        };
        // Seq 1 is the admin membership, 2 the project.
        assert_eq!(result.seq, 2);
        client.close().await;
        Tenant {
            name,
            project_id: project.id.clone(),
            items: BTreeMap::new(),
            acked: BTreeMap::from([(
                2,
                Acked {
                    entity_id: project.id,
                    item: None,
                },
            )]),
            pending: HashMap::new(),
            rejected: Vec::new(),
            checked_head: 2,
            next_request: 0,
        }
    }

    fn ack(&mut self, seq: u64, item: &v1::WorkItem) {
        let previous = self.acked.insert(
            seq,
            Acked {
                entity_id: item.id.clone(),
                item: Some(item.clone()),
            },
        );
        assert!(
            previous.is_none(),
            "{}: seq {seq} acknowledged twice",
            self.name
        );
        self.items.insert(item.id.clone(), item.clone());
    }
}

fn lock(tenant: &Mutex<Tenant>) -> MutexGuard<'_, Tenant> {
    tenant.lock().expect("a tenant lock is never poisoned")
}

fn work_item(result: &v1::CommandResult) -> v1::WorkItem {
    match result.entity.as_ref().and_then(|e| e.kind.as_ref()) {
        Some(v1::entity::Kind::WorkItem(item)) => item.clone(),
        other => panic!("expected a work item, got {other:?}"),
    }
}

fn create(project_id: &str, title: &str) -> Cmd {
    Cmd::CreateWorkItem(v1::CreateWorkItem {
        project_id: project_id.into(),
        item_type: v1::WorkItemType::Task.into(),
        title: title.into(),
        ..Default::default()
    })
}

fn update(id: &str, from: u64, title: &str, points: u32) -> Cmd {
    Cmd::UpdateWorkItem(v1::UpdateWorkItem {
        id: id.into(),
        expected_version: from,
        title: Some(title.into()),
        story_points: Some(points),
        ..Default::default()
    })
}

fn command(kind: Cmd) -> v1::Command {
    v1::Command {
        idempotency_key: String::new(),
        kind: Some(kind),
    }
}

// --- Writers ---

/// Counts acknowledged requests over all writers and wakes the killer at the target.
#[derive(Debug)]
struct KillSwitch {
    acks: AtomicU64,
    target: u64,
    reached: Notify,
}

impl KillSwitch {
    fn ack(&self) {
        if self.acks.fetch_add(1, Ordering::AcqRel) + 1 == self.target {
            self.reached.notify_one();
        }
    }
}

async fn write_until_killed(
    server: &mut Server,
    tenants: &[Arc<Mutex<Tenant>>],
    round: u64,
    target: u64,
    rng: &mut Rng,
    figures: &mut Figures,
) {
    let switch = Arc::new(KillSwitch {
        acks: AtomicU64::new(0),
        target,
        reached: Notify::new(),
    });
    let mut writers = Vec::new();
    for tenant in tenants {
        let (name, live) = {
            let tenant = lock(tenant);
            let live: Vec<String> = tenant
                .items
                .values()
                .filter(|item| item.deleted_at.is_none())
                .map(|item| item.id.clone())
                .collect();
            (tenant.name, live)
        };
        for index in 0..WRITERS {
            writers.push(Writer {
                client: server.connect(name, 1024).await,
                tenant: tenant.clone(),
                owned: live.iter().skip(index).step_by(WRITERS).cloned().collect(),
                busy: HashSet::new(),
                ignored: HashSet::new(),
                rng: rng.fork(),
                tag: format!("r{round}.w{index}"),
                count: 0,
                switch: switch.clone(),
                figures: WriterFigures::default(),
            });
        }
    }
    let handles: Vec<_> = writers
        .into_iter()
        .map(|writer| tokio::spawn(writer.run()))
        .collect();
    tokio::time::timeout(WAIT, switch.reached.notified())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "round {round}: {} of {target} acknowledgements in time",
                switch.acks.load(Ordering::Acquire)
            )
        });
    // A random delay after the target acknowledgement, so that the kill does not always
    // land just after the server answered a group (then the next one is rarely committed).
    let delay = Duration::from_micros(rng.below(4_000));
    tokio::task::spawn_blocking(move || std::thread::sleep(delay))
        .await
        .expect("the delay did not panic");
    server.kill();
    for handle in handles {
        let done = tokio::time::timeout(WAIT, handle)
            .await
            .expect("writers end once the server is gone")
            .expect("a writer did not panic");
        figures.acked_requests += done.acked_requests;
        figures.acked_writes += done.acked_writes;
        figures.batches_acked += done.batches_acked;
        figures.doomed_rejected += done.doomed_rejected;
        figures.ignored_answers += done.ignored_answers;
    }
    for tenant in tenants {
        figures.pending_at_kill += lock(tenant).pending.len() as u64;
    }
}

#[derive(Debug, Default)]
struct WriterFigures {
    acked_requests: u64,
    acked_writes: u64,
    batches_acked: u64,
    doomed_rejected: u64,
    ignored_answers: u64,
}

/// One connection writing to one tenant until the connection is gone.
#[derive(Debug)]
struct Writer {
    client: Client,
    tenant: Arc<Mutex<Tenant>>,
    /// Live items only this writer changes, so it always knows their version.
    owned: Vec<String>,
    /// Owned items with a change in flight.
    busy: HashSet<String>,
    /// Requests whose answer is ignored: they stay pending, as if the answer had been lost.
    ignored: HashSet<u64>,
    rng: Rng,
    /// Makes titles unique in the tenant: `r{round}.w{writer}`.
    tag: String,
    count: u64,
    switch: Arc<KillSwitch>,
    figures: WriterFigures,
}

/// A request on its way: its number and, in the end, its answer.
type InFlight = Pin<Box<dyn Future<Output = (u64, pm_client::Result<Out>)> + Send>>;

impl Writer {
    async fn run(mut self) -> WriterFigures {
        let mut in_flight = FuturesUnordered::new();
        let mut connected = true;
        loop {
            while connected && in_flight.len() < WINDOW {
                in_flight.push(self.send());
            }
            let Some((request, answer)) = in_flight.next().await else {
                break;
            };
            connected &= self.settle(request, answer);
        }
        self.figures
    }

    /// A free owned item, at random.
    fn free_item(&mut self) -> Option<String> {
        let free: Vec<&String> = self
            .owned
            .iter()
            .filter(|id| !self.busy.contains(*id))
            .collect();
        if free.is_empty() {
            return None;
        }
        let id = free[self.rng.below(free.len() as u64) as usize].clone();
        self.busy.insert(id.clone());
        Some(id)
    }

    /// Chooses the next request, records it as pending and sends it.
    fn send(&mut self) -> InFlight {
        self.count += 1;
        let title = format!("{}.{}", self.tag, self.count);
        let roll = self.rng.below(100);
        let target = if (40..90).contains(&roll) {
            self.free_item()
        } else {
            None
        };
        let mut tenant = lock(&self.tenant);
        let project = tenant.project_id.clone();
        let version = |id: &str| tenant.items[id].version;
        let pending = match (roll, target) {
            (40..=69, Some(id)) => Pending::Update {
                from: version(&id),
                id,
                title: format!("{title}.u"),
                points: (self.count % 1000) as u32,
            },
            (70..=74, Some(id)) => Pending::Delete {
                from: version(&id),
                id,
            },
            (75..=89, Some(id)) => Pending::Batch {
                marker: format!("{title}.b"),
                update: Some((id.clone(), version(&id), format!("{title}.bu"))),
            },
            (75..=89, None) => Pending::Batch {
                marker: format!("{title}.b"),
                update: None,
            },
            (90..=99, _) => Pending::Doomed {
                marker: format!("{title}.x"),
            },
            // 0..40, and changes for which the writer has no free item yet.
            _ => Pending::Create { title },
        };
        tenant.next_request += 1;
        let request = tenant.next_request;
        tenant.pending.insert(request, pending.clone());
        if self.rng.below(100) < IGNORED_PERCENT {
            self.ignored.insert(request);
        }
        drop(tenant);

        let body = match pending {
            Pending::Create { title } => In::Command(v1::Command {
                idempotency_key: title.clone(),
                kind: Some(create(&project, &title)),
            }),
            Pending::Update {
                id,
                from,
                title,
                points,
            } => In::Command(command(update(&id, from, &title, points))),
            Pending::Delete { id, from } => {
                In::Command(command(Cmd::DeleteWorkItem(v1::DeleteWorkItem {
                    id,
                    expected_version: from,
                })))
            }
            Pending::Batch { marker, update: u } => {
                let mut commands: Vec<v1::Command> = (0..BATCH_CREATES)
                    .map(|i| command(create(&project, &format!("{marker}{i}"))))
                    .collect();
                if let Some((id, from, title)) = u {
                    commands.push(command(update(&id, from, &title, 1)));
                }
                In::Batch(v1::Batch {
                    commands,
                    atomic: true,
                })
            }
            Pending::Doomed { marker } => In::Batch(v1::Batch {
                commands: vec![
                    command(create(&project, &format!("{marker}0"))),
                    command(create(&project, &format!("{marker}1"))),
                    command(create(&project, "")),
                ],
                atomic: true,
            }),
        };
        let client = self.client.clone();
        Box::pin(async move { (request, client.request(body).await) })
    }

    /// Records an answer; false when the connection is gone (the request stays pending).
    fn settle(&mut self, request: u64, answer: pm_client::Result<Out>) -> bool {
        if let Err(ClientError::Disconnected | ClientError::Closed) = answer {
            return false;
        }
        if self.ignored.remove(&request) {
            self.figures.ignored_answers += 1;
            return true;
        }
        let mut tenant = lock(&self.tenant);
        let name = tenant.name;
        let pending = tenant
            .pending
            .remove(&request)
            .expect("every request is pending until answered");
        match (pending, answer) {
            (Pending::Create { title }, Ok(Out::CommandResult(result))) => {
                let item = work_item(&result);
                assert_eq!((item.title.as_str(), item.version), (title.as_str(), 1));
                assert!(!result.replayed, "{name}: {title} was sent once");
                tenant.ack(result.seq, &item);
                self.owned.push(item.id);
                self.figures.acked_writes += 1;
            }
            (
                Pending::Update {
                    id,
                    from,
                    title,
                    points,
                },
                Ok(Out::CommandResult(result)),
            ) => {
                let item = work_item(&result);
                assert_eq!(
                    (&item.id, item.version, &item.title, item.story_points),
                    (&id, from + 1, &title, Some(points))
                );
                tenant.ack(result.seq, &item);
                self.busy.remove(&id);
                self.figures.acked_writes += 1;
            }
            (Pending::Delete { id, from }, Ok(Out::CommandResult(result))) => {
                let item = work_item(&result);
                assert_eq!((&item.id, item.version), (&id, from + 1));
                assert!(item.deleted_at.is_some(), "{name}: {id} deleted");
                tenant.ack(result.seq, &item);
                self.busy.remove(&id);
                self.owned.retain(|owned| *owned != id);
                self.figures.acked_writes += 1;
            }
            (Pending::Batch { marker, update }, Ok(Out::BatchResult(result))) => {
                let commands = BATCH_CREATES + usize::from(update.is_some());
                assert_eq!(result.outcomes.len(), commands, "{name}: {marker}");
                let results: Vec<&v1::CommandResult> = result
                    .outcomes
                    .iter()
                    .map(|o| match &o.outcome {
                        Some(v1::command_outcome::Outcome::CommandResult(r)) => r,
                        other => panic!("{name}: {marker}: atomic batch outcome {other:?}"),
                    })
                    .collect();
                let first = results[0].seq;
                for (i, result) in results.iter().enumerate() {
                    assert_eq!(result.seq, first + i as u64, "{name}: {marker}: one batch");
                    let item = work_item(result);
                    if i < BATCH_CREATES {
                        assert_eq!(
                            (item.title.as_str(), item.version),
                            (format!("{marker}{i}").as_str(), 1)
                        );
                        self.owned.push(item.id.clone());
                    } else {
                        let (id, from, title) = update.as_ref().expect("a fifth command");
                        assert_eq!((&item.id, item.version, &item.title), (id, from + 1, title));
                        self.busy.remove(id);
                    }
                    tenant.ack(result.seq, &item);
                }
                self.figures.acked_writes += commands as u64;
                self.figures.batches_acked += 1;
            }
            (Pending::Doomed { marker }, Err(e)) => {
                match &e {
                    ClientError::Server { code, field, .. }
                        if *code == v1::ErrorCode::InvalidArgument
                            && field == "commands[2].title" => {}
                    other => panic!("{name}: doomed batch {marker}: {other}"),
                }
                tenant.rejected.push(marker);
                self.figures.doomed_rejected += 1;
                drop(tenant);
                self.switch.ack();
                self.figures.acked_requests += 1;
                return true;
            }
            (pending, Err(e)) => {
                panic!("{name}: {pending:?} answered with {e}")
            }
            (pending, _) => panic!("{name}: {pending:?}: an answer of the wrong kind"),
        }
        drop(tenant);
        self.switch.ack();
        self.figures.acked_requests += 1;
        true
    }
}

// --- Checks ---

/// With the server stopped: integrity, gapless seqs; returns the logged events in seq order.
async fn read_tenant_file(data_dir: &Path, tenant: &str) -> Vec<v1::Event> {
    let path: PathBuf = data_dir.join("tenants").join(tenant).join("tenant.db");
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .read_only(true)
        .connect()
        .await
        .expect("the tenant file opens");
    let integrity: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await
        .expect("integrity_check runs");
    assert_eq!(integrity, ["ok"], "{tenant}: PRAGMA integrity_check");
    let rows: Vec<(i64, String, Vec<u8>)> =
        sqlx::query_as("SELECT seq, entity_id, event FROM change_log ORDER BY seq")
            .fetch_all(&mut conn)
            .await
            .expect("the change log reads");
    conn.close().await.expect("closed");
    let mut events = Vec::with_capacity(rows.len());
    for (i, (seq, entity_id, bytes)) in rows.into_iter().enumerate() {
        assert_eq!(seq, i as i64 + 1, "{tenant}: change-log seqs are gapless");
        let event = v1::Event::decode(bytes.as_slice()).expect("a logged event decodes");
        assert_eq!((event.seq, &event.entity_id), (seq as u64, &entity_id));
        events.push(event);
    }
    events
}

async fn verify(
    server: &Server,
    tenant: &Mutex<Tenant>,
    log: &[v1::Event],
    round: u64,
    rng: &mut Rng,
    figures: &mut Figures,
) {
    let head = log.len() as u64;
    let (name, project_id) = {
        let tenant = lock(tenant);
        (tenant.name, tenant.project_id.clone())
    };
    let client = server.connect(name, 1024).await;
    let listed = list_items(&client, &project_id, head).await;
    let by_title: HashMap<&str, &v1::WorkItem> =
        listed.values().map(|i| (i.title.as_str(), i)).collect();
    let seq_of = |id: &str| {
        log.iter()
            .find(|e| e.entity_id == id)
            .map(|e| e.seq)
            .expect("a listed item was logged")
    };

    let mut retries = Vec::new();
    {
        let mut model = lock(tenant);
        // Every acknowledged change is in the log, exactly as acknowledged.
        for (seq, acked) in &model.acked {
            let event = log
                .get(*seq as usize - 1)
                .unwrap_or_else(|| panic!("{name}: acknowledged seq {seq} is lost (head {head})"));
            assert_eq!(event.entity_id, acked.entity_id, "{name}: seq {seq}");
            if let Some(item) = &acked.item {
                assert_eq!(
                    event.change,
                    Some(v1::event::Change::WorkItem(item.clone())),
                    "{name}: seq {seq}"
                );
            }
        }

        // Each pending request: wholly applied or not at all.
        let pending: Vec<Pending> = model.pending.drain().map(|(_, p)| p).collect();
        for request in pending {
            let applied = match &request {
                Pending::Create { title } => {
                    let found = by_title.get(title.as_str()).copied();
                    if let Some(item) = found {
                        assert_eq!(item.version, 1, "{name}: {title}");
                        model.items.insert(item.id.clone(), item.clone());
                    }
                    retries.push((title.clone(), found.map(|i| i.id.clone())));
                    found.is_some()
                }
                Pending::Update {
                    id,
                    from,
                    title,
                    points,
                } => {
                    let now = &listed[id];
                    let applied = now.version != *from;
                    if applied {
                        assert_eq!(
                            (now.version, &now.title, now.story_points),
                            (from + 1, title, Some(*points)),
                            "{name}: an update is applied whole"
                        );
                        model.items.insert(id.clone(), now.clone());
                    }
                    applied
                }
                Pending::Delete { id, from } => {
                    let now = &listed[id];
                    let applied = now.version != *from;
                    if applied {
                        assert_eq!(now.version, from + 1, "{name}: {id}");
                        assert!(now.deleted_at.is_some(), "{name}: {id} deleted");
                        model.items.insert(id.clone(), now.clone());
                    }
                    applied
                }
                Pending::Batch { marker, update } => {
                    figures.pending_batches += 1;
                    let found: Vec<&v1::WorkItem> = (0..BATCH_CREATES)
                        .filter_map(|i| by_title.get(format!("{marker}{i}").as_str()).copied())
                        .collect();
                    assert!(
                        found.is_empty() || found.len() == BATCH_CREATES,
                        "{name}: atomic batch {marker} half applied: {} of {BATCH_CREATES} items",
                        found.len()
                    );
                    let applied = !found.is_empty();
                    let mut seqs: Vec<u64> = found.iter().map(|i| seq_of(&i.id)).collect();
                    for item in found {
                        assert_eq!(item.version, 1, "{name}: {marker}");
                        model.items.insert(item.id.clone(), item.clone());
                    }
                    if let Some((id, from, title)) = update {
                        let now = &listed[id];
                        if applied {
                            assert_eq!(
                                (now.version, &now.title),
                                (from + 1, title),
                                "{name}: atomic batch {marker} has its update"
                            );
                            model.items.insert(id.clone(), now.clone());
                            let last = log
                                .iter()
                                .rev()
                                .find(|e| e.entity_id == *id)
                                .expect("the update was logged");
                            seqs.push(last.seq);
                        } else {
                            assert_eq!(now.version, *from, "{name}: {marker}: no update alone");
                        }
                    }
                    if applied {
                        let first = seqs[0];
                        let expected: Vec<u64> = (first..first + seqs.len() as u64).collect();
                        assert_eq!(seqs, expected, "{name}: {marker}: one transaction");
                    }
                    applied
                }
                Pending::Doomed { marker } => {
                    for i in 0..2 {
                        let title = format!("{marker}{i}");
                        assert!(
                            !by_title.contains_key(title.as_str()),
                            "{name}: the doomed batch {marker} left {title}"
                        );
                    }
                    false
                }
            };
            figures.pending_applied += u64::from(applied);
        }
        for marker in &model.rejected {
            assert!(
                !by_title.contains_key(format!("{marker}0").as_str()),
                "{name}: the rejected batch {marker} left an item"
            );
        }

        // The server's state is exactly the model: nothing lost, nothing extra.
        let missing: Vec<&String> = model
            .items
            .keys()
            .filter(|id| !listed.contains_key(*id))
            .collect();
        let extra: Vec<&str> = listed
            .values()
            .filter(|item| !model.items.contains_key(&item.id))
            .map(|item| item.title.as_str())
            .collect();
        let differing: Vec<(&v1::WorkItem, &v1::WorkItem)> = model
            .items
            .values()
            .filter_map(|item| listed.get(&item.id).map(|now| (item, now)))
            .filter(|(item, now)| item != now)
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty() && differing.is_empty(),
            "{name}: missing {missing:?}, extra {extra:?}, differing {differing:?}"
        );
        // ... and the log's last word on every item is that state.
        let mut from_log: BTreeMap<&str, &v1::WorkItem> = BTreeMap::new();
        for event in log {
            if let Some(v1::event::Change::WorkItem(item)) = &event.change {
                from_log.insert(&event.entity_id, item);
            }
        }
        assert!(
            from_log.len() == listed.len()
                && from_log.iter().all(|(id, item)| listed[*id] == **item),
            "{name}: the log replays to the listed state"
        );
    }

    // Resume from several positions.
    let mut positions = BTreeSet::from([0, head, lock(tenant).checked_head.min(head)]);
    for _ in 0..3 {
        positions.insert(rng.range((0, head)));
    }
    let subscribers = futures::future::join_all(
        positions
            .iter()
            .map(|from| resume(server, name, *from, log)),
    )
    .await;
    figures.resumes_checked += subscribers.len() as u64;

    // The next change gets head + 1 and is the very next event everywhere.
    let probe = client
        .command(create(&project_id, &format!("probe.r{round}")))
        .await
        .expect("the probe is acknowledged");
    assert_eq!(probe.seq, head + 1, "{name}: the head survived recovery");
    let probe_item = work_item(&probe);
    for (from, mut events, subscriber) in subscribers {
        let next = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("the probe event arrives")
            .expect("the stream is open");
        assert_eq!(
            (next.seq, &next.change),
            (
                head + 1,
                &Some(v1::event::Change::WorkItem(probe_item.clone()))
            ),
            "{name}: after resuming from {from}, the next event is the probe"
        );
        subscriber.close().await;
    }
    lock(tenant).ack(probe.seq, &probe_item);
    figures.acked_writes += 1;

    // Pending creates again, with their idempotency keys.
    for (title, found) in retries {
        let result = client
            .command_with_key(title.clone(), create(&project_id, &title))
            .await
            .expect("the retry is acknowledged");
        let item = work_item(&result);
        let mut model = lock(tenant);
        match found {
            Some(id) => {
                assert!(result.replayed, "{name}: {title} was applied: replayed");
                assert_eq!(item, model.items[&id], "{name}: {title}: the stored answer");
                assert_eq!(result.seq, seq_of(&id), "{name}: {title}: the stored seq");
                figures.retries_replayed += 1;
            }
            None => {
                assert!(
                    !result.replayed,
                    "{name}: {title} was not applied: applied now"
                );
                assert_eq!((item.title.as_str(), item.version), (title.as_str(), 1));
                model.ack(result.seq, &item);
                figures.retries_applied += 1;
                figures.acked_writes += 1;
            }
        }
    }
    {
        let mut model = lock(tenant);
        model.checked_head = model.acked.keys().next_back().copied().unwrap_or(0);
    }
    client.close().await;
}

/// Every work item of the project (deleted ones too), each page as of `head`.
async fn list_items(
    client: &Client,
    project_id: &str,
    head: u64,
) -> BTreeMap<String, v1::WorkItem> {
    let mut items = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let result = client
            .query(v1::query::Kind::ListWorkItems(v1::ListWorkItems {
                project_id: project_id.into(),
                page: Some(v1::PageRequest {
                    page_size: 500,
                    page_token,
                }),
                include_deleted: true,
                ..Default::default()
            }))
            .await
            .expect("ListWorkItems answers");
        let v1::query_result::Result::ListWorkItemsResult(page) = result else {
            panic!("ListWorkItems answers with ListWorkItemsResult");
        };
        assert_eq!(
            page.as_of_seq, head,
            "the restarted server's head is the log's"
        );
        for mut item in page.items {
            // Reads derive `blocked`, which command results and events leave out; the
            // workload links nothing, so nothing is blocked, and the rest must match exactly.
            assert_eq!(item.blocked.take(), Some(false), "{item:?}");
            items.insert(item.id.clone(), item);
        }
        if page.next_page_token.is_empty() {
            return items;
        }
        page_token = page.next_page_token;
    }
}

/// Subscribes from `from` and checks the replay against the log; returns the open stream.
async fn resume(
    server: &Server,
    tenant: &str,
    from: u64,
    log: &[v1::Event],
) -> (u64, mpsc::Receiver<v1::Event>, Client) {
    // Room for the whole replay: the test reads it only after subscribing.
    let client = server.connect(tenant, log.len() + 16).await;
    let mut events = client.events().expect("the first call returns the stream");
    let head = client
        .subscribe(vec![], vec![], from)
        .await
        .expect("subscribed");
    assert_eq!(head, log.len() as u64, "{tenant}: SubscribeResult.head_seq");
    for expected in &log[from as usize..] {
        let event = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("the replay arrives in time")
            .expect("the stream is open");
        assert_eq!(
            &event, expected,
            "{tenant}: resuming from {from}, event {}",
            expected.seq
        );
    }
    (from, events, client)
}

// --- Randomness ---

/// SplitMix64: small, seedable, good enough to choose test operations.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `low..=high`.
    fn range(&mut self, (low, high): (u64, u64)) -> u64 {
        low + self.below(high - low + 1)
    }

    /// An independent generator for a task.
    fn fork(&mut self) -> Rng {
        Rng(self.next())
    }
}
