//! `read`: R readers query a realistic tenant (see [`crate::seed`]) with the mix a board
//! team makes: board loads, filtered item lists, single items, board summaries, hierarchies,
//! dependencies, comments, activity pages, searches, time totals and running timers. Each
//! reader sends as soon as its previous answer arrives (closed loop), or all together at a
//! fixed rate (open loop, latency from each query's scheduled time). Optionally a writer
//! changes the tenant at a fixed rate meanwhile. Latency is reported per query kind.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pm_client::Client;
use pm_proto::v1;
use pm_proto::v1::query::Kind as Q;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::progress::Progress;
use crate::report::{histogram, record, Report};
use crate::seed::{self, Corpus, Dataset, Rng, Shape};
use crate::target::Target;
use crate::write::{open_loop, paced, Commands, Tally};
use crate::{Error, Result};

/// Options of the `read` scenario.
#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct ReadOptions {
    /// Concurrent readers, each on its own connection.
    #[arg(long, default_value_t = 32)]
    pub readers: usize,
    /// Projects in the tenant.
    #[arg(long, default_value_t = 20)]
    pub projects: usize,
    /// Work items over all projects (plus a comment or time entry per item, a dependency per
    /// ten, sprints, lanes and LLM context).
    #[arg(long, default_value_t = 10_000)]
    pub items: usize,
    /// An upstream board export to take titles, descriptions and comments from (e.g.
    /// `../shared/data/agile-board-export.json`); a built-in vocabulary otherwise.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Queries per second over all readers; omit for each reader to send as soon as answered.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Commands per second a writer sends meanwhile (new items, comments, time entries).
    #[arg(long, default_value_t = 0.0)]
    pub write_rate: f64,
    /// How long to read.
    #[arg(long, default_value = "20s", value_parser = crate::parse_duration)]
    pub duration: Duration,
    /// Only these kinds of query (comma-separated), e.g. to profile one; all by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Kind>,
}

/// The kinds of query in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `ListWorkItems` of a project, one page of 500: what a board page loads.
    Board,
    /// `ListWorkItems` with a filter (statuses, assignee, sprint or text), 50.
    Filtered,
    /// `GetWorkItem`.
    Item,
    /// `GetBoardSummary`.
    Summary,
    /// `GetWorkItemHierarchy` of an epic or story.
    Hierarchy,
    /// `ListDependencies` of a work item.
    Dependencies,
    /// `ListComments` of a work item.
    Comments,
    /// `ListActivity` of a project, 40.
    Activity,
    /// `Search` for two words of a title, 20.
    Search,
    /// `Search` for one of the most frequent words, 20.
    SearchCommon,
    /// `GetTimeTotals` of a project by user.
    TimeTotals,
    /// `GetRunningTimer`.
    RunningTimer,
}

/// Each kind's weight in the mix.
const MIX: &[(Kind, usize)] = &[
    (Kind::Board, 2),
    (Kind::Filtered, 3),
    (Kind::Item, 3),
    (Kind::Summary, 2),
    (Kind::Hierarchy, 1),
    (Kind::Dependencies, 1),
    (Kind::Comments, 2),
    (Kind::Activity, 2),
    (Kind::Search, 2),
    (Kind::SearchCommon, 1),
    (Kind::TimeTotals, 1),
    (Kind::RunningTimer, 1),
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Board => "board: ListWorkItems, 500",
            Kind::Filtered => "ListWorkItems, filtered, 50",
            Kind::Item => "GetWorkItem",
            Kind::Summary => "GetBoardSummary",
            Kind::Hierarchy => "GetWorkItemHierarchy",
            Kind::Dependencies => "ListDependencies of an item",
            Kind::Comments => "ListComments of an item",
            Kind::Activity => "ListActivity, project, 40",
            Kind::Search => "Search, two words, 20",
            Kind::SearchCommon => "Search, one common word, 20",
            Kind::TimeTotals => "GetTimeTotals by user",
            Kind::RunningTimer => "GetRunningTimer",
        }
    }

    /// A kind drawn by weight from `mix` (not empty).
    fn draw(rng: &mut Rng, mix: &[(Kind, usize)]) -> Kind {
        let total: usize = mix.iter().map(|(_, w)| w).sum();
        let mut n = rng.below(total);
        for (kind, weight) in mix {
            if n < *weight {
                return *kind;
            }
            n -= weight;
        }
        unreachable!("n is below the sum of the weights")
    }

    /// A query of this kind on a random part of `data`.
    fn query(self, rng: &mut Rng, data: &Dataset) -> Q {
        let project = rng.pick(&data.projects);
        let page = |size| {
            Some(v1::PageRequest {
                page_size: size,
                page_token: String::new(),
            })
        };
        let item = rng.pick(&project.items).clone();
        match self {
            Kind::Board => Q::ListWorkItems(v1::ListWorkItems {
                project_id: project.id.clone(),
                page: page(500),
                ..Default::default()
            }),
            Kind::Filtered => {
                let mut list = v1::ListWorkItems {
                    project_id: project.id.clone(),
                    page: page(50),
                    ..Default::default()
                };
                match rng.below(4) {
                    0 => {
                        list.statuses = vec![
                            v1::WorkItemStatus::InProgress.into(),
                            v1::WorkItemStatus::Review.into(),
                        ]
                    }
                    1 => list.assignee_id = Some(seed::team_member(rng.below(seed::TEAM))),
                    2 => list.sprint_id = Some(project.sprints[0].clone()),
                    _ => list.text = rng.pick(&data.terms).clone(),
                }
                Q::ListWorkItems(list)
            }
            Kind::Item => Q::GetWorkItem(v1::GetWorkItem {
                id: item,
                ..Default::default()
            }),
            Kind::Summary => Q::GetBoardSummary(v1::GetBoardSummary {
                project_id: project.id.clone(),
                sprint_id: None,
            }),
            Kind::Hierarchy => Q::GetWorkItemHierarchy(v1::GetWorkItemHierarchy {
                id: rng.pick(&project.parents).clone(),
                include_deleted: false,
            }),
            Kind::Dependencies => Q::ListDependencies(v1::ListDependencies {
                project_id: project.id.clone(),
                page: page(50),
                work_item_id: Some(item),
                ..Default::default()
            }),
            Kind::Comments => Q::ListComments(v1::ListComments {
                work_item_id: item,
                page: page(50),
                include_deleted: false,
            }),
            Kind::Activity => Q::ListActivity(v1::ListActivity {
                page: page(40),
                project_id: project.id.clone(),
                ..Default::default()
            }),
            Kind::Search => Q::Search(v1::Search {
                text: rng.pick(&data.phrases).clone(),
                page: page(20),
                ..Default::default()
            }),
            Kind::SearchCommon => Q::Search(v1::Search {
                text: rng.pick(&data.terms).clone(),
                page: page(20),
                ..Default::default()
            }),
            Kind::TimeTotals => Q::GetTimeTotals(v1::GetTimeTotals {
                project_id: project.id.clone(),
                group_by: v1::TimeGrouping::User.into(),
                ..Default::default()
            }),
            Kind::RunningTimer => Q::GetRunningTimer(v1::GetRunningTimer {}),
        }
    }
}

/// What readers saw, per kind.
struct Seen {
    latency: BTreeMap<Kind, Histogram<u64>>,
    errors: BTreeMap<String, u64>,
    /// Searches that found nothing: every term occurs in the tenant, so none should.
    empty_searches: u64,
}

impl Seen {
    fn new() -> Seen {
        Seen {
            latency: BTreeMap::new(),
            errors: BTreeMap::new(),
            empty_searches: 0,
        }
    }

    fn record(&mut self, kind: Kind, result: pm_client::Result<v1::query_result::Result>, us: u64) {
        match result {
            Ok(answer) => {
                if let v1::query_result::Result::SearchResult(found) = &answer {
                    self.empty_searches += u64::from(found.items.is_empty());
                }
                record(self.latency.entry(kind).or_insert_with(histogram), us)
            }
            Err(e) => {
                let code = e
                    .code()
                    .map_or_else(|| e.to_string(), |c| c.as_str_name().to_owned());
                *self
                    .errors
                    .entry(format!("{}: {code}", kind.name()))
                    .or_default() += 1;
            }
        }
    }

    fn merge(&mut self, other: Seen) {
        for (kind, h) in other.latency {
            let mine = self.latency.entry(kind).or_insert_with(histogram);
            mine.add(&h).expect("same bounds");
        }
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
        self.empty_searches += other.empty_searches;
    }
}

/// Runs the scenario: seeds a fresh tenant, then reads it.
pub async fn run(target: &Target, options: &ReadOptions, progress: bool) -> Result<Report> {
    if options.readers == 0 {
        return Err(Error::Setup("--readers must be at least 1".into()));
    }
    if options.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(Error::Setup("--rate must be a positive number".into()));
    }
    if !(options.write_rate >= 0.0 && options.write_rate.is_finite()) {
        return Err(Error::Setup("--write-rate must be 0 or more".into()));
    }
    let corpus = match &options.corpus {
        Some(path) => Corpus::from_export(path)?,
        None => Corpus::builtin(),
    };
    let tenant = target.tenant("read", 0);
    let shape = Shape {
        projects: options.projects,
        items: options.items,
        readers: options.readers,
    };
    let seeding = Instant::now();
    let data = Arc::new(seed::seed(target, &tenant, &shape, &corpus).await?);
    let seeding = seeding.elapsed().as_secs_f64();

    let mut readers = Vec::with_capacity(options.readers);
    for r in 0..options.readers {
        readers.push(target.client(&tenant, &seed::reader(r)).await?);
    }
    let writer = if options.write_rate > 0.0 {
        Some(target.client(&tenant, &seed::team_member(0)).await?)
    } else {
        None
    };

    let answered = Arc::new(AtomicU64::new(0));
    let _bar = Progress::start(
        progress,
        "read",
        "answered",
        options.duration,
        answered.clone(),
    );
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + options.duration;
    let writing = writer.clone().map(|client| {
        let shared = (
            client,
            writes(&data),
            Arc::new(AtomicU64::new(u64::MAX)),
            Arc::new(AtomicU64::new(0)),
        );
        tokio::spawn(open_loop(shared, deadline, options.write_rate, 64))
    });
    let mix: Arc<[(Kind, usize)]> = MIX
        .iter()
        .filter(|(kind, _)| options.only.is_empty() || options.only.contains(kind))
        .copied()
        .collect();
    let per_reader = options.rate.map(|r| r / options.readers as f64);
    let mut tasks = JoinSet::new();
    for (r, client) in readers.iter().enumerate() {
        let reading = Reading {
            client: client.clone(),
            data: data.clone(),
            mix: mix.clone(),
            rng: Rng(1 + r as u64),
            answered: answered.clone(),
            deadline,
        };
        match per_reader {
            None => tasks.spawn(reading.closed()),
            Some(rate) => tasks.spawn(reading.open(rate)),
        };
    }
    let mut seen = Seen::new();
    while let Some(done) = tasks.join_next().await {
        seen.merge(done.map_err(|e| Error::Setup(format!("a reader panicked: {e}")))?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let written = match writing {
        Some(task) => Some(
            task.await
                .map_err(|e| Error::Setup(format!("the writer panicked: {e}")))?,
        ),
        None => None,
    };
    for client in readers.iter().chain(writer.iter()) {
        client.close().await;
    }
    Ok(report(
        target, options, &data, seeding, elapsed, seen, written,
    ))
}

fn report(
    target: &Target,
    options: &ReadOptions,
    data: &Dataset,
    seeding: f64,
    elapsed: f64,
    seen: Seen,
    written: Option<Tally>,
) -> Report {
    let mut report = Report::new("read", &target.url, options);
    let items: usize = data.projects.iter().map(|p| p.items.len()).sum();
    report.figure("projects", data.projects.len() as f64, "");
    report.figure("work items", items as f64, "");
    report.figure("seeding commands", data.commands as f64, "");
    report.figure("seeding time", seeding, "s");
    report.figure("readers", options.readers as f64, "");
    let mut all = histogram();
    for h in seen.latency.values() {
        all.add(h).expect("same bounds");
    }
    let failed: u64 = seen.errors.values().sum();
    report.figure("answered queries", all.len() as f64, "");
    report.figure("answered queries/s", all.len() as f64 / elapsed, "q/s");
    report.figure("failed queries", failed as f64, "");
    report.latency("every query", &all);
    for (kind, h) in &seen.latency {
        report.latency(kind.name(), h);
    }
    let errors: Vec<String> = seen
        .errors
        .iter()
        .map(|(c, n)| format!("{c}: {n}"))
        .collect();
    report.check(
        "every query answered",
        failed == 0 && !all.is_empty(),
        if errors.is_empty() {
            format!("{} answered", all.len())
        } else {
            errors.join(", ")
        },
    );
    let searches: u64 = [Kind::Search, Kind::SearchCommon]
        .iter()
        .filter_map(|k| seen.latency.get(k))
        .map(|h| h.len())
        .sum();
    report.check(
        "every search found something",
        seen.empty_searches == 0,
        format!(
            "{} of {searches} searches found nothing",
            seen.empty_searches
        ),
    );
    if let Some(written) = written {
        let acked = written.latency.len();
        let failed: u64 = written.errors.values().sum();
        report.figure("writer acked commands/s", acked as f64 / elapsed, "cmd/s");
        report.latency("writer round trip", &written.latency);
        // The writer is open loop: falling well short of its rate means the server could not
        // keep up with it (or with the readers beside it).
        let planned = options.write_rate * options.duration.as_secs_f64();
        report.check(
            "writer kept its rate, every write acknowledged",
            failed == 0 && acked as f64 >= 0.95 * planned,
            format!("{acked} acknowledged of {planned:.0} planned, {failed} failed"),
        );
    }
    report.finish(elapsed)
}

/// The writer's commands: a new item, two comments and a time entry in every four, spread
/// over the projects and their items.
fn writes(data: &Arc<Dataset>) -> Commands {
    let data = data.clone();
    Arc::new(move |n| {
        let mut rng = Rng(n ^ 0xC0FF_EE00);
        let project = rng.pick(&data.projects);
        let item = rng.pick(&project.items).clone();
        match n % 4 {
            0 => crate::target::create_item(&project.id, n),
            1 | 2 => v1::command::Kind::CreateComment(v1::CreateComment {
                work_item_id: item,
                content: format!("pm-load read writer comment {n}"),
            }),
            _ => {
                let ended_at = crate::target::unix_now().as_millis() as i64;
                v1::command::Kind::CreateTimeEntry(v1::CreateTimeEntry {
                    work_item_id: item,
                    started_at: ended_at - 1_800_000,
                    ended_at,
                    description: String::new(),
                })
            }
        }
    })
}

/// One reader's loop.
struct Reading {
    client: Client,
    data: Arc<Dataset>,
    mix: Arc<[(Kind, usize)]>,
    rng: Rng,
    answered: Arc<AtomicU64>,
    deadline: tokio::time::Instant,
}

impl Reading {
    /// Sends a query as soon as the previous one is answered.
    async fn closed(mut self) -> Seen {
        let mut seen = Seen::new();
        while tokio::time::Instant::now() < self.deadline {
            let kind = Kind::draw(&mut self.rng, &self.mix);
            let query = kind.query(&mut self.rng, &self.data);
            let sent = Instant::now();
            let result = self.client.query(query).await;
            if result.is_ok() {
                self.answered.fetch_add(1, Ordering::Relaxed);
            }
            seen.record(kind, result, sent.elapsed().as_micros() as u64);
        }
        seen
    }

    /// Sends `rate` queries per second whatever the answers (at most 16 in flight; waiting
    /// for one counts in the latency).
    async fn open(mut self, rate: f64) -> Seen {
        // Readers start spread over one interval, not all at once.
        let offset = Duration::from_secs_f64((self.rng.next_u64() % 1000) as f64 / 1000.0 / rate);
        tokio::time::sleep(offset).await;
        let mut seen = Seen::new();
        let send = || {
            let kind = Kind::draw(&mut self.rng, &self.mix);
            let query = kind.query(&mut self.rng, &self.data);
            let (client, answered) = (self.client.clone(), self.answered.clone());
            Some(async move {
                let result = client.query(query).await;
                if result.is_ok() {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                (kind, result)
            })
        };
        let until = self.deadline.into_std();
        paced(rate, until, 16, send, |(kind, result), _, us| {
            seen.record(kind, result, us)
        })
        .await;
        seen
    }
}
