//! `tenants`: many small tenants, each touched in turn, as a server hosting thousands of teams
//! sees them. Round 1 creates every tenant (its database, its schema and a project); each later
//! round opens every tenant again, round robin, so that with more tenants than the server keeps
//! open (`limits.max_open_tenants`) each touch is a cold open of a closed database. A touch is
//! one connection: `Hello` until `Welcome` (the server opens the tenant there), then one request
//! (`CreateProject` in round 1, `ListProjects` after, which must list exactly that project).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use pm_client::{Client, ClientOptions};
use pm_proto::v1;
use serde::Serialize;

use crate::cpu::CpuClock;
use crate::progress::Progress;
use crate::report::{histogram, record, Report};
use crate::target::{metric, metrics, Target, ADMIN};
use crate::{Error, Result};

/// Options of the `tenants` scenario.
#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct TenantsOptions {
    /// Tenants, each with its own database.
    #[arg(long, default_value_t = 10_000)]
    pub tenants: usize,
    /// Rounds over all tenants: the first creates them, the others reopen them.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Touches in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

/// What one touch measured.
struct Touch {
    open_us: u64,
    request_us: u64,
    /// `ListProjects` listed exactly the tenant's project (always true in round 1).
    exact: bool,
}

/// What one round measured.
struct Round {
    open: Histogram<u64>,
    request: Histogram<u64>,
    errors: Vec<String>,
    inexact: u64,
    elapsed: Duration,
}

/// Runs the scenario.
pub async fn run(target: &Target, options: &TenantsOptions, progress: bool) -> Result<Report> {
    if options.tenants == 0 || options.rounds == 0 || options.concurrency == 0 {
        return Err(Error::Setup(
            "tenants, rounds and concurrency must be at least 1".into(),
        ));
    }
    let touched = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let total = options.tenants as u64 * options.rounds as u64;
    // The bar counts touches; its "duration" is only a scale for the display.
    let _bar = Progress::start(
        progress,
        "tenants",
        "touched",
        Duration::from_secs(total.max(1)),
        touched.clone(),
    );
    let started = Instant::now();
    let mut rounds = Vec::new();
    // The server's CPU is measured over the reopening rounds.
    let mut clock = None;
    for round in 0..options.rounds {
        if round == 1 {
            clock = Some(CpuClock::start(target).await);
        }
        rounds.push(run_round(target, options, round == 0, &touched).await);
    }
    let elapsed = started.elapsed();
    let cpu = match clock {
        Some(clock) => Some(clock.stop(target).await),
        None => None,
    };

    let mut report = Report::new("tenants", &target.url, options);
    for (n, round) in rounds.iter().enumerate() {
        let name = if n == 0 { "create" } else { "reopen" };
        report.figure(
            &format!("round {} ({name}) touches/s", n + 1),
            options.tenants as f64 / round.elapsed.as_secs_f64(),
            "tenants/s",
        );
    }
    if let Some(cpu) = cpu {
        let reopens = options.tenants as u64 * (options.rounds as u64 - 1);
        cpu.report(&mut report, reopens, "reopen");
    }
    let mut open = [histogram(), histogram()];
    let mut request = [histogram(), histogram()];
    for (n, round) in rounds.iter().enumerate() {
        let i = usize::from(n > 0);
        open[i].add(&round.open).expect("same bounds");
        request[i].add(&round.request).expect("same bounds");
    }
    report.latency("open, new tenant (hello→welcome)", &open[0]);
    report.latency("first request, new tenant", &request[0]);
    if options.rounds > 1 {
        report.latency("open, closed tenant (hello→welcome)", &open[1]);
        report.latency("first request, closed tenant", &request[1]);
    }
    match metrics(target).await {
        Ok(text) => {
            if let Some(open) = metric(&text, "pm_open_tenants") {
                report.figure("tenants open on the server at the end", open, "tenants");
            }
        }
        Err(e) => report.check("server metrics read", false, e.to_string()),
    }
    let errors: Vec<&String> = rounds.iter().flat_map(|r| &r.errors).collect();
    report.check(
        "every touch answered",
        errors.is_empty(),
        match errors.first() {
            None => format!("{total} touches"),
            Some(first) => format!("{} of {total} failed, first: {first}", errors.len()),
        },
    );
    let inexact: u64 = rounds.iter().map(|r| r.inexact).sum();
    report.check(
        "every reopened tenant lists exactly its project",
        inexact == 0,
        format!("{inexact} listed something else"),
    );
    Ok(report.finish(elapsed.as_secs_f64()))
}

async fn run_round(
    target: &Target,
    options: &TenantsOptions,
    create: bool,
    touched: &std::sync::atomic::AtomicU64,
) -> Round {
    let started = Instant::now();
    let outcomes: Vec<std::result::Result<Touch, String>> = stream::iter(0..options.tenants)
        .map(|n| async move {
            let outcome = touch(target, &target.tenant("tenants", n), create).await;
            touched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            outcome.map_err(|e| e.to_string())
        })
        .buffer_unordered(options.concurrency)
        .collect()
        .await;
    let mut round = Round {
        open: histogram(),
        request: histogram(),
        errors: Vec::new(),
        inexact: 0,
        elapsed: started.elapsed(),
    };
    for outcome in outcomes {
        match outcome {
            Ok(touch) => {
                record(&mut round.open, touch.open_us);
                record(&mut round.request, touch.request_us);
                if !touch.exact {
                    round.inexact += 1;
                }
            }
            Err(e) => round.errors.push(e),
        }
    }
    round
}

/// One connection to `tenant`: open it, one request, close.
async fn touch(target: &Target, tenant: &str, create: bool) -> Result<Touch> {
    let options = ClientOptions {
        client_name: concat!("pm-load/", env!("CARGO_PKG_VERSION")).into(),
        ..ClientOptions::default()
    };
    let started = Instant::now();
    let (client, _) =
        Client::connect(target.next_url(), target.token(tenant, ADMIN), options).await?;
    let opened = Instant::now();
    let exact = if create {
        client
            .command(v1::command::Kind::CreateProject(v1::CreateProject {
                key: "TN".into(),
                name: format!("{tenant} board"),
                description: String::new(),
            }))
            .await?;
        true
    } else {
        let listed = client
            .query(v1::query::Kind::ListProjects(v1::ListProjects::default()))
            .await?;
        matches!(
            listed,
            v1::query_result::Result::ListProjectsResult(page)
                if page.items.len() == 1 && page.items[0].key == "TN"
        )
    };
    let answered = Instant::now();
    client.close().await;
    Ok(Touch {
        open_us: (opened - started).as_micros() as u64,
        request_us: (answered - opened).as_micros() as u64,
        exact,
    })
}
