//! `storm`: N subscribed connections drop at once; while they are away the tenant moves on;
//! then all N reconnect at the same moment and resume from the last seq they saw. Reports
//! reconnects per second, the time until every client is caught up, and checks that each
//! got exactly the events it missed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pm_proto::v1;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::cpu::CpuClock;
use crate::fanout::subscribers;
use crate::idle::PER_TENANT;
use crate::progress::Progress;
use crate::raw::RawConn;
use crate::report::{histogram, record, Report};
use crate::target::{create_item, Target};
use crate::{Error, Result};

/// Upper bound for one client's reconnect and catch-up.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(120);

/// Options of the `storm` scenario.
#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct StormOptions {
    /// Clients that drop and come back.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Events committed in each tenant while the clients are away.
    #[arg(long, default_value_t = 10)]
    pub missed: u64,
}

struct Tenant {
    id: String,
    users: Vec<String>,
    resume_from: u64,
    head: u64,
}

/// How one client came back.
struct Return {
    resubscribed_us: u64,
    caught_up_us: u64,
    exact: bool,
}

/// Runs the scenario.
pub async fn run(target: &Target, options: &StormOptions, progress: bool) -> Result<Report> {
    if options.clients == 0 {
        return Err(Error::Setup("clients must be at least 1".into()));
    }
    let mut tenants = Vec::new();
    let mut conns = Vec::new();
    for (t, first) in (0..options.clients).step_by(PER_TENANT).enumerate() {
        let id = target.tenant("storm", t);
        let users: Vec<String> = (first..options.clients.min(first + PER_TENANT))
            .map(|i| format!("load-storm-{i}"))
            .collect();
        let (admin, project) = target
            .project_with_members(&id, &users, v1::ProjectRole::Viewer)
            .await?;
        let resume_from = admin.command(create_item(&project, 0)).await?.seq;
        conns.extend(subscribers(target, &id, &users, resume_from, None).await?);
        tenants.push((
            Tenant {
                id,
                users,
                resume_from,
                head: resume_from,
            },
            admin,
            project,
        ));
    }

    // Everyone drops at once: the sockets close without a WebSocket close handshake.
    drop(conns);
    let mut away = Vec::with_capacity(tenants.len());
    for (mut tenant, admin, project) in tenants {
        for n in 0..options.missed {
            tenant.head = admin.command(create_item(&project, n + 1)).await?.seq;
        }
        admin.close().await;
        // Shared by its returning clients' tasks.
        away.push(Arc::new(tenant));
    }

    let returned = Arc::new(AtomicU64::new(0));
    let _bar = Progress::start(
        progress,
        "storm",
        "caught up",
        Duration::from_secs(5),
        returned.clone(),
    );
    let clock = CpuClock::start(target).await;
    let started = Instant::now();
    // Each client its own task, all started at once: that is the storm. (Polled together in
    // one task, as `buffer_unordered` does, every handshake ran on one of the generator's
    // threads, and the generator, not the server, set the pace.)
    let shared = Arc::new(target.clone());
    let mut returning = JoinSet::new();
    for tenant in &away {
        for user in &tenant.users {
            let (target, tenant, user) = (shared.clone(), tenant.clone(), user.clone());
            let returned = returned.clone();
            returning.spawn(async move {
                let back = tokio::time::timeout(
                    CATCH_UP_LIMIT,
                    come_back(&target, &tenant, &user, started),
                )
                .await
                .map_err(|_| {
                    Error::Connection(format!("not caught up within {CATCH_UP_LIMIT:?}"))
                })??;
                returned.fetch_add(1, Ordering::Relaxed);
                Ok::<_, Error>(back)
            });
        }
    }
    let results: Vec<Result<Return>> = returning.join_all().await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = clock.stop(target).await;

    let (mut resubscribe, mut catch_up) = (histogram(), histogram());
    let (mut exact, mut failed) = (0usize, Vec::new());
    let mut last_resubscribed = 0u64;
    for result in results {
        match result {
            Ok(back) => {
                record(&mut resubscribe, back.resubscribed_us);
                record(&mut catch_up, back.caught_up_us);
                last_resubscribed = last_resubscribed.max(back.resubscribed_us);
                exact += usize::from(back.exact);
            }
            Err(e) => failed.push(e.to_string()),
        }
    }
    let all_resubscribed_s = last_resubscribed as f64 / 1e6;
    let mut report = Report::new("storm", &target.url, options);
    report.figure("clients", options.clients as f64, "");
    report.figure("tenants", away.len() as f64, "");
    report.figure(
        "resumed connections/s",
        (options.clients - failed.len()) as f64 / all_resubscribed_s.max(1e-6),
        "conn/s",
    );
    report.figure("time until all resubscribed", all_resubscribed_s, "s");
    report.figure("time until all caught up", catch_up.max() as f64 / 1e6, "s");
    cpu.report(&mut report, exact as u64, "resume");
    report.latency("storm start to resubscribed", &resubscribe);
    report.latency("storm start to caught up", &catch_up);
    report.check(
        "every client came back",
        failed.is_empty(),
        match failed.first() {
            None => format!("{} of {}", options.clients, options.clients),
            Some(e) => format!("{} failed, first: {e}", failed.len()),
        },
    );
    report.check(
        "each resumed with exactly the events it missed",
        exact == options.clients,
        format!(
            "{exact} of {} got seqs resume+1..=head ({} per tenant) with no gap or duplicate",
            options.clients, options.missed
        ),
    );
    Ok(report.finish(elapsed))
}

async fn come_back(target: &Target, tenant: &Tenant, user: &str, storm: Instant) -> Result<Return> {
    let (mut conn, _) = RawConn::open(target, &tenant.id, user, None).await?;
    conn.subscribe(tenant.resume_from).await?;
    let resubscribed_us = storm.elapsed().as_micros() as u64;
    let exact = conn.read_through(tenant.resume_from, tenant.head).await?;
    Ok(Return {
        resubscribed_us,
        caught_up_us: storm.elapsed().as_micros() as u64,
        exact,
    })
}
