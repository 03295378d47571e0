//! `write`: T tenants × C connections sending `CreateWorkItem` as fast as they are
//! acknowledged (closed loop, `pipeline` requests in flight per connection), or at a fixed
//! total rate (open loop, latency measured from each command's scheduled send time, so a
//! stalled server is not hidden by a stalled generator).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pm_client::{Client, ClientError};
use pm_proto::v1;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::cpu::CpuClock;
use crate::progress::Progress;
use crate::report::{histogram, record, Report};
use crate::target::{create_item, Target};
use crate::{Error, Result};

/// Options of the `write` scenario.
#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct WriteOptions {
    /// Tenants, each with its own database and writer.
    #[arg(long, default_value_t = 1)]
    pub tenants: usize,
    /// Connections per tenant.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Requests in flight per connection (closed loop); the cap on them at a fixed rate.
    #[arg(long, default_value_t = 8)]
    pub pipeline: usize,
    /// Commands per second over all connections; omit to send as fast as acknowledged.
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long to send.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    pub duration: Duration,
    /// Stop after this many commands, if sooner.
    #[arg(long)]
    pub count: Option<u64>,
}

/// What one sending task saw.
pub(crate) struct Tally {
    pub(crate) latency: Histogram<u64>,
    pub(crate) errors: BTreeMap<String, u64>,
    /// At a fixed rate: how late each command left after its scheduled time (the generator's
    /// own share of the round trip, which is measured from the scheduled time).
    pub(crate) lateness: Histogram<u64>,
}

impl Tally {
    pub(crate) fn new() -> Tally {
        Tally {
            latency: histogram(),
            errors: BTreeMap::new(),
            lateness: histogram(),
        }
    }

    pub(crate) fn merge(&mut self, other: Tally) {
        self.latency.add(&other.latency).expect("same bounds");
        self.lateness.add(&other.lateness).expect("same bounds");
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
    }

    fn outcome(&mut self, result: std::result::Result<v1::CommandResult, ClientError>, us: u64) {
        match result {
            Ok(_) => record(&mut self.latency, us),
            Err(e) => {
                let code = match e.code() {
                    Some(code) => code.as_str_name().to_owned(),
                    None => e.to_string(),
                };
                *self.errors.entry(code).or_default() += 1;
            }
        }
    }
}

/// Runs the scenario.
pub async fn run(target: &Target, options: &WriteOptions, progress: bool) -> Result<Report> {
    if options.tenants == 0 || options.connections == 0 || options.pipeline == 0 {
        return Err(Error::Setup(
            "tenants, connections and pipeline must be at least 1".into(),
        ));
    }
    if options.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(Error::Setup("--rate must be a positive number".into()));
    }
    // Set up every tenant before the clock starts.
    let mut writers: Vec<(Client, String)> = Vec::new();
    for t in 0..options.tenants {
        let tenant = target.tenant("write", t);
        let users: Vec<String> = (0..options.connections)
            .map(|c| format!("load-writer-{c}"))
            .collect();
        let (admin, project) = target
            .project_with_members(&tenant, &users, v1::ProjectRole::Editor)
            .await?;
        admin.close().await;
        for user in &users {
            writers.push((target.client(&tenant, user).await?, project.clone()));
        }
    }

    let budget = Arc::new(AtomicU64::new(options.count.unwrap_or(u64::MAX)));
    let acked = Arc::new(AtomicU64::new(0));
    let _bar = Progress::start(progress, "write", "acked", options.duration, acked.clone());
    let clock = CpuClock::start(target).await;
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + options.duration;
    let mut tasks = JoinSet::new();
    let per_connection = options.rate.map(|r| r / writers.len() as f64);
    for (client, project) in &writers {
        let shared = (
            client.clone(),
            items_in(project),
            budget.clone(),
            acked.clone(),
        );
        match per_connection {
            None => {
                for _ in 0..options.pipeline {
                    tasks.spawn(closed_loop(shared.clone(), deadline));
                }
            }
            Some(rate) => {
                tasks.spawn(open_loop(shared, deadline, rate, options.pipeline));
            }
        }
    }
    let mut tally = Tally::new();
    while let Some(done) = tasks.join_next().await {
        tally.merge(done.map_err(|e| Error::Setup(format!("a sender panicked: {e}")))?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = clock.stop(target).await;
    for (client, _) in &writers {
        client.close().await;
    }

    let ok = tally.latency.len();
    let failed: u64 = tally.errors.values().sum();
    let mut report = Report::new("write", &target.url, options);
    report.figure("acked commands", ok as f64, "");
    report.figure("acked commands/s", ok as f64 / elapsed, "cmd/s");
    report.figure("failed commands", failed as f64, "");
    report.figure("connections", writers.len() as f64, "");
    cpu.report(&mut report, ok, "command");
    report.latency("round trip (send to ack)", &tally.latency);
    if options.rate.is_some() {
        report.latency("sent after its scheduled time", &tally.lateness);
    }
    let errors: Vec<String> = tally
        .errors
        .iter()
        .map(|(c, n)| format!("{c}: {n}"))
        .collect();
    report.check(
        "every command acknowledged",
        failed == 0 && ok > 0,
        if errors.is_empty() {
            format!("{ok} acknowledged")
        } else {
            errors.join(", ")
        },
    );
    Ok(report.finish(elapsed))
}

/// The `n`th command a sender sends.
pub(crate) type Commands = Arc<dyn Fn(u64) -> v1::command::Kind + Send + Sync>;

/// `CreateWorkItem`s in `project`.
pub(crate) fn items_in(project: &str) -> Commands {
    let project = project.to_owned();
    Arc::new(move |n| create_item(&project, n))
}

/// What a sender needs: its client, its commands, the shared budget and the acked counter.
pub(crate) type Shared = (Client, Commands, Arc<AtomicU64>, Arc<AtomicU64>);

/// Takes one command from the budget; false once it is spent.
fn take(budget: &AtomicU64) -> bool {
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

pub(crate) async fn closed_loop(shared: Shared, deadline: tokio::time::Instant) -> Tally {
    let (client, commands, budget, acked) = shared;
    let mut tally = Tally::new();
    let mut n = 0u64;
    while tokio::time::Instant::now() < deadline && take(&budget) {
        let sent = Instant::now();
        let result = client.command(commands(n)).await;
        let us = sent.elapsed().as_micros() as u64;
        if result.is_ok() {
            acked.fetch_add(1, Ordering::Relaxed);
        }
        tally.outcome(result, us);
        n += 1;
    }
    tally
}

/// Ticks `rate` times a second until `until`, each carrying the instant it was scheduled
/// for, from a thread of its own. A task sleeping on tokio's timer until each send would be
/// woken on the next millisecond tick, late by half a millisecond on average (more on a busy
/// machine), and the round trip, which runs from the scheduled time, would carry that delay.
/// The thread ends at `until`, or when the receiver is dropped.
fn pace(rate: f64, until: Instant) -> tokio::sync::mpsc::Receiver<Instant> {
    // A slow consumer queues ticks with their scheduled time: its delay is still measured.
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    let interval = Duration::from_secs_f64(1.0 / rate);
    std::thread::Builder::new()
        .name("pm-load-pacer".into())
        .spawn(move || {
            let mut next = Instant::now();
            while next < until {
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                if tx.blocking_send(next).is_err() {
                    return;
                }
                next += interval;
            }
        })
        .expect("the pacer thread starts");
    rx
}

/// Sends at `rate` a second until `until` (ticks from [`pace`]), at most `in_flight` at once:
/// waiting for a place counts, since latency runs from each tick's scheduled time. `send`
/// makes the next request (`None`: stop); `done` takes each outcome with how late it left
/// and its latency, both in microseconds.
pub(crate) async fn paced<T, F>(
    rate: f64,
    until: Instant,
    in_flight: usize,
    mut send: impl FnMut() -> Option<F>,
    mut done: impl FnMut(T, u64, u64),
) where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut ticks = pace(rate, until);
    let permits = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let mut requests = JoinSet::new();
    while let Some(at) = ticks.recv().await {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let Some(request) = send() else { break };
        let late = at.elapsed().as_micros() as u64;
        requests.spawn(async move {
            let outcome = request.await;
            drop(permit);
            (outcome, late, at.elapsed().as_micros() as u64)
        });
        while let Some(finished) = requests.try_join_next() {
            let (outcome, late, us) = finished.expect("request tasks do not panic");
            done(outcome, late, us);
        }
    }
    while let Some(finished) = requests.join_next().await {
        let (outcome, late, us) = finished.expect("request tasks do not panic");
        done(outcome, late, us);
    }
}

/// `shared`'s commands at `rate` a second until `deadline`, at most `in_flight` at once.
pub(crate) async fn open_loop(
    shared: Shared,
    deadline: tokio::time::Instant,
    rate: f64,
    in_flight: usize,
) -> Tally {
    let (client, commands, budget, acked) = shared;
    let mut tally = Tally::new();
    let mut n = 0u64;
    let send = || {
        if !take(&budget) {
            return None;
        }
        let (client, kind, acked) = (client.clone(), commands(n), acked.clone());
        n += 1;
        Some(async move {
            let result = client.command(kind).await;
            if result.is_ok() {
                acked.fetch_add(1, Ordering::Relaxed);
            }
            result
        })
    };
    paced(
        rate,
        deadline.into_std(),
        in_flight,
        send,
        |result, late, us| {
            record(&mut tally.lateness, late);
            tally.outcome(result, us);
        },
    )
    .await;
    tally
}
