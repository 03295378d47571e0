//! `fanout`: one writer and S subscribers in one tenant. Every subscriber must receive every
//! event once and in order; the latency is from the event's commit time (`Event.at`, Unix
//! milliseconds, stamped by the tenant's writer) to its arrival at the subscriber, so it is
//! accurate to the millisecond.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use pm_proto::v1;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cpu::CpuClock;
use crate::progress::Progress;
use crate::raw::{Incoming, RawConn};
use crate::report::{histogram, record, Report};
use crate::target::{create_item, Target};
use crate::write::{closed_loop, items_in, open_loop, Tally};
use crate::{Error, Result};

/// Connections opened at once while setting up.
pub(crate) const CONNECT_CONCURRENCY: usize = 256;

/// Options of the `fanout` scenario.
#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct FanoutOptions {
    /// Subscribers, each on its own connection as its own user.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Commands per second from the writer; omit to write as fast as acknowledged.
    #[arg(long)]
    pub rate: Option<f64>,
    /// The writer's requests in flight.
    #[arg(long, default_value_t = 8)]
    pub pipeline: usize,
    /// How long to write.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    pub duration: Duration,
}

/// What one subscriber saw.
#[derive(Debug)]
pub(crate) struct Seen {
    /// Latency by phase (the value of `phase` when the event arrived).
    pub(crate) latency: [Histogram<u64>; 2],
    pub(crate) received: u64,
    pub(crate) out_of_order: u64,
    pub(crate) last: u64,
    pub(crate) finished: Option<Instant>,
    pub(crate) error: Option<String>,
}

/// Reads events until the seq in `stop` is reached, checking that seqs follow `from` one by
/// one.
/// A [`follow`] task for each of `conns`, all from `from`.
pub(crate) fn follow_all(
    conns: Vec<RawConn>,
    from: u64,
    stop: &watch::Receiver<u64>,
    delivered: &Arc<AtomicU64>,
    phase: &Arc<AtomicUsize>,
) -> JoinSet<Seen> {
    let mut readers = JoinSet::new();
    for conn in conns {
        readers.spawn(follow(
            conn,
            from,
            stop.clone(),
            delivered.clone(),
            phase.clone(),
        ));
    }
    readers
}

/// Events a subscriber counts on its own before adding them to the shared count.
const COUNT_EVERY: u64 = 64;

pub(crate) async fn follow(
    mut conn: RawConn,
    from: u64,
    mut stop: watch::Receiver<u64>,
    delivered: Arc<AtomicU64>,
    phase: Arc<AtomicUsize>,
) -> Seen {
    let mut seen = Seen {
        latency: [histogram(), histogram()],
        received: 0,
        out_of_order: 0,
        last: from,
        finished: None,
        error: None,
    };
    // One wait for the stop for all events, not one made and dropped per event (a tenth of
    // the generator's CPU at a million events a second).
    let mut last_wanted = *stop.borrow_and_update();
    let mut uncounted = 0;
    let wait = |mut stop: watch::Receiver<u64>| async move {
        let changed = stop.changed().await;
        (stop, changed)
    };
    let stopping = wait(stop);
    tokio::pin!(stopping);
    loop {
        if seen.last >= last_wanted {
            delivered.fetch_add(uncounted, Ordering::Relaxed);
            seen.finished = Some(Instant::now());
            return seen;
        }
        tokio::select! {
            next = conn.next() => match next {
                Ok(Incoming::Event(event)) => {
                    let phase = phase.load(Ordering::Relaxed).min(1);
                    let latency = conn.arrived_at() - event.at * 1000;
                    record(&mut seen.latency[phase], latency.max(0) as u64);
                    if event.seq != seen.last + 1 {
                        seen.out_of_order += 1;
                    }
                    seen.last = seen.last.max(event.seq);
                    seen.received += 1;
                    uncounted += 1;
                    // The shared count is for the progress bar; one cache line that every
                    // subscriber's task wrote at every event cost both cores.
                    if uncounted == COUNT_EVERY {
                        delivered.fetch_add(std::mem::take(&mut uncounted), Ordering::Relaxed);
                    }
                }
                Ok(Incoming::Pong | Incoming::Response(_)) => {}
                Ok(other) => {
                    seen.error = Some(format!("{other:?}"));
                    return seen;
                }
                Err(e) => {
                    seen.error = Some(e.to_string());
                    return seen;
                }
            },
            (mut stop, changed) = &mut stopping => {
                if changed.is_err() {
                    seen.error = Some("the run ended before this subscriber caught up".into());
                    return seen;
                }
                last_wanted = *stop.borrow_and_update();
                stopping.set(wait(stop));
            },
        }
    }
}

/// Opens one connection per user and subscribes each from `from`.
pub(crate) async fn subscribers(
    target: &Target,
    tenant: &str,
    users: &[String],
    from: u64,
    recv_buffer: Option<u32>,
) -> Result<Vec<RawConn>> {
    stream::iter(users)
        .map(|user| async move {
            let (mut conn, _) = RawConn::open(target, tenant, user, recv_buffer).await?;
            conn.subscribe(from).await?;
            Ok::<_, Error>(conn)
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Runs the scenario.
pub async fn run(target: &Target, options: &FanoutOptions, progress: bool) -> Result<Report> {
    if options.subscribers == 0 || options.pipeline == 0 {
        return Err(Error::Setup(
            "subscribers and pipeline must be at least 1".into(),
        ));
    }
    let tenant = target.tenant("fanout", 0);
    let users: Vec<String> = (0..options.subscribers)
        .map(|s| format!("load-sub-{s}"))
        .collect();
    let (admin, project) = target
        .project_with_members(&tenant, &users, v1::ProjectRole::Viewer)
        .await?;
    let head = admin.command(create_item(&project, 0)).await?.seq;
    let conns = subscribers(target, &tenant, &users, head, None).await?;

    // Fanout has one phase: every latency goes to the first histogram.
    let phase = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = watch::channel(u64::MAX);
    let delivered = Arc::new(AtomicU64::new(0));
    let mut readers = follow_all(conns, head, &stop_rx, &delivered, &phase);
    let _bar = Progress::start(
        progress,
        "fanout",
        "delivered",
        options.duration,
        delivered.clone(),
    );
    let clock = CpuClock::start(target).await;
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + options.duration;
    let shared = (
        admin.clone(),
        items_in(&project),
        Arc::new(AtomicU64::new(u64::MAX)),
        Arc::new(AtomicU64::new(0)),
    );
    let writer = match options.rate {
        None => {
            let mut tally = Tally::new();
            let mut tasks = JoinSet::new();
            for _ in 0..options.pipeline {
                tasks.spawn(closed_loop(shared.clone(), deadline));
            }
            while let Some(t) = tasks.join_next().await {
                tally.merge(t.expect("writer tasks do not panic"));
            }
            tally
        }
        Some(rate) => open_loop(shared, deadline, rate, options.pipeline).await,
    };
    // Every earlier commit has a lower seq than this one.
    let last = admin.command(create_item(&project, u64::MAX)).await?.seq;
    let written = last - head;
    stop_tx.send_replace(last);
    let write_elapsed = started.elapsed().as_secs_f64();

    let grace = Duration::from_secs(30);
    let mut total = histogram();
    let (mut received, mut complete, mut disorder, mut finished) = (0u64, 0usize, 0u64, started);
    let mut failures = Vec::new();
    let collected = tokio::time::timeout(grace, async {
        let mut all = Vec::new();
        while let Some(seen) = readers.join_next().await {
            all.push(seen.expect("subscriber tasks do not panic"));
        }
        all
    })
    .await;
    let all = match collected {
        Ok(all) => all,
        Err(_) => {
            readers.abort_all();
            Vec::new()
        }
    };
    let cpu = clock.stop(target).await;
    for seen in &all {
        total.add(&seen.latency[0]).expect("same bounds");
        received += seen.received;
        disorder += seen.out_of_order;
        if seen.last >= last && seen.error.is_none() {
            complete += 1;
        }
        if let Some(at) = seen.finished {
            finished = finished.max(at);
        }
        if let Some(e) = &seen.error {
            failures.push(e.clone());
        }
    }
    let elapsed = finished
        .duration_since(started)
        .as_secs_f64()
        .max(write_elapsed);
    admin.close().await;

    let mut report = Report::new("fanout", &target.url, options);
    report.figure("events written", written as f64, "");
    report.figure("writes/s", written as f64 / write_elapsed, "cmd/s");
    report.figure("deliveries", received as f64, "");
    report.figure("deliveries/s", received as f64 / elapsed, "events/s");
    report.figure("subscribers", options.subscribers as f64, "");
    cpu.report(&mut report, received, "delivery");
    report.latency("commit to subscriber", &total);
    report.latency("writer round trip", &writer.latency);
    report.check(
        "every subscriber got every event once, in order",
        complete == options.subscribers
            && disorder == 0
            && received == written * options.subscribers as u64,
        format!(
            "{complete}/{} complete, {received} of {} deliveries, {disorder} out of order{}",
            options.subscribers,
            written * options.subscribers as u64,
            failures
                .first()
                .map(|e| format!(", first failure: {e}"))
                .unwrap_or_default()
        ),
    );
    let errors: u64 = writer.errors.values().sum();
    report.check(
        "every write acknowledged",
        errors == 0,
        format!("{:?}", writer.errors),
    );
    Ok(report.finish(elapsed))
}
