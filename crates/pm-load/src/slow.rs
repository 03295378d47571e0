//! `slow`: healthy subscribers under a steady write rate, first alone (phase A), then next to
//! K subscribers that stop reading, on sockets with a small receive buffer (phase B). Reports
//! the healthy subscribers' commit-to-delivery latency in both phases, and checks that every
//! stalled subscriber was cut off (`Goodbye{SLOW_CONSUMER}`, close 4008) with a resume seq
//! from which it then resumed without losing an event.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use pm_proto::v1;
use serde::Serialize;
use tokio::sync::watch;

use crate::fanout::{follow_all, subscribers};
use crate::progress::Progress;
use crate::raw::RawConn;
use crate::report::{histogram, Report};
use crate::target::{create_item, metric, metrics, Target};
use crate::write::{items_in, open_loop, Tally};
use crate::{Error, Result};

/// A stalled subscriber's receive buffer: small, so the server's queue fills quickly.
const STALLED_RECV_BUFFER: u32 = 4 * 1024;

/// Options of the `slow` scenario.
#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct SlowOptions {
    /// Subscribers that keep reading.
    #[arg(long, default_value_t = 20)]
    pub healthy: usize,
    /// Subscribers that stop reading in phase B.
    #[arg(long, default_value_t = 100)]
    pub stalled: usize,
    /// Commands per second from the writer, in both phases.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Length of each phase.
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    pub phase: Duration,
    /// How long phase B may run on while waiting for every stalled subscriber to be cut off.
    #[arg(long, default_value = "60s", value_parser = crate::parse_duration)]
    pub cut_off_limit: Duration,
}

/// Runs the scenario.
pub async fn run(target: &Target, options: &SlowOptions, progress: bool) -> Result<Report> {
    if options.healthy == 0 || !(options.rate > 0.0 && options.rate.is_finite()) {
        return Err(Error::Setup(
            "healthy must be at least 1 and rate a positive number".into(),
        ));
    }
    let tenant = target.tenant("slow", 0);
    let healthy_users: Vec<String> = (0..options.healthy)
        .map(|i| format!("load-healthy-{i}"))
        .collect();
    let stalled_users: Vec<String> = (0..options.stalled)
        .map(|i| format!("load-stalled-{i}"))
        .collect();
    let everyone: Vec<String> = healthy_users
        .iter()
        .chain(&stalled_users)
        .cloned()
        .collect();
    let (admin, project) = target
        .project_with_members(&tenant, &everyone, v1::ProjectRole::Viewer)
        .await?;
    let head = admin.command(create_item(&project, 0)).await?.seq;

    let phase = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = watch::channel(u64::MAX);
    let delivered = Arc::new(AtomicU64::new(0));
    let healthy_conns = subscribers(target, &tenant, &healthy_users, head, None).await?;
    let mut readers = follow_all(healthy_conns, head, &stop_rx, &delivered, &phase);
    let _bar = Progress::start(
        progress,
        "slow",
        "delivered",
        options.phase * 2,
        delivered.clone(),
    );
    let started = Instant::now();
    let shared = |budget| {
        (
            admin.clone(),
            items_in(&project),
            Arc::new(AtomicU64::new(budget)),
            Arc::new(AtomicU64::new(0)),
        )
    };
    let deadline = |d| tokio::time::Instant::now() + d;
    let mut writer = Tally::new();

    // Phase A: healthy subscribers alone.
    writer.merge(open_loop(shared(u64::MAX), deadline(options.phase), options.rate, 64).await);

    // Phase B: the stalled ones join from the current head and never read again.
    let stalled_from = admin.command(create_item(&project, 1)).await?.seq;
    let cut_before = slow_disconnects(target).await;
    let stalled = subscribers(
        target,
        &tenant,
        &stalled_users,
        stalled_from,
        Some(STALLED_RECV_BUFFER),
    )
    .await?;
    phase.store(1, Ordering::Relaxed);
    let phase_b = Instant::now();
    writer.merge(open_loop(shared(u64::MAX), deadline(options.phase), options.rate, 64).await);
    // Keep writing until the server has cut every stalled subscriber off (if /metrics says).
    while phase_b.elapsed() < options.phase + options.cut_off_limit {
        match (cut_before, slow_disconnects(target).await) {
            (Some(before), Some(now)) if now - before >= options.stalled as f64 => break,
            (Some(_), Some(_)) => {}
            _ => break,
        }
        let step = Duration::from_millis(500);
        writer.merge(open_loop(shared(u64::MAX), deadline(step), options.rate, 64).await);
    }
    let phase_b_s = phase_b.elapsed().as_secs_f64();
    let last = admin.command(create_item(&project, 2)).await?.seq;
    stop_tx.send_replace(last);

    let mut healthy = [histogram(), histogram()];
    let (mut complete, mut disorder) = (0usize, 0u64);
    while let Some(seen) = readers.join_next().await {
        let seen = seen.expect("subscriber tasks do not panic");
        for (total, part) in healthy.iter_mut().zip(&seen.latency) {
            total.add(part).expect("same bounds");
        }
        disorder += seen.out_of_order;
        complete += usize::from(seen.last >= last && seen.error.is_none());
    }

    // Each stalled subscriber now reads what the server left it, then resumes.
    let outcomes: Vec<Result<Stalled>> = stream::iter(stalled.into_iter().zip(&stalled_users))
        .map(|(conn, user)| resume_stalled(target, &tenant, user, conn, stalled_from, last))
        .buffer_unordered(64)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    admin.close().await;

    let (mut cut_off, mut resumed, mut failures) = (0usize, 0usize, Vec::new());
    for outcome in outcomes {
        match outcome {
            Ok(s) => {
                cut_off += usize::from(s.cut_off);
                resumed += usize::from(s.resumed_without_loss);
                if let Some(note) = s.note {
                    failures.push(note);
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    let p99 = |h: &hdrhistogram::Histogram<u64>| h.value_at_quantile(0.99) as f64;
    let mut report = Report::new("slow", &target.url, options);
    report.figure("healthy subscribers", options.healthy as f64, "");
    report.figure("stalled subscribers", options.stalled as f64, "");
    report.figure("phase B length", phase_b_s, "s");
    report.figure(
        "healthy p99 change with stalled ones",
        (p99(&healthy[1]) / p99(&healthy[0]).max(1.0) - 1.0) * 100.0,
        "%",
    );
    report.figure("stalled cut off (4008)", cut_off as f64, "");
    report.latency("healthy, alone (A)", &healthy[0]);
    report.latency("healthy, beside stalled (B)", &healthy[1]);
    report.latency("writer round trip", &writer.latency);
    report.check(
        "healthy subscribers got every event once, in order",
        complete == options.healthy && disorder == 0,
        format!(
            "{complete}/{} complete, {disorder} out of order",
            options.healthy
        ),
    );
    report.check(
        "stalled subscribers were cut off with 4008 and a resume seq",
        cut_off == options.stalled,
        format!(
            "{cut_off}/{}{}",
            options.stalled,
            failures
                .first()
                .map(|f| format!(", first problem: {f}"))
                .unwrap_or_default()
        ),
    );
    report.check(
        "cut-off subscribers resumed without loss",
        resumed == options.stalled,
        format!("{resumed}/{}", options.stalled),
    );
    let errors: u64 = writer.errors.values().sum();
    report.check(
        "every write acknowledged",
        errors == 0,
        format!("{:?}", writer.errors),
    );
    Ok(report.finish(elapsed))
}

async fn slow_disconnects(target: &Target) -> Option<f64> {
    let text = metrics(target).await.ok()?;
    metric(&text, "pm_slow_consumer_disconnects_total")
}

struct Stalled {
    cut_off: bool,
    resumed_without_loss: bool,
    note: Option<String>,
}

/// Reads what the server sent before the cut-off, then resumes from the `Goodbye`'s seq and
/// reads to `last`: together the seqs must be exactly `from + 1 ..= last`.
async fn resume_stalled(
    target: &Target,
    tenant: &str,
    user: &str,
    conn: RawConn,
    from: u64,
    last: u64,
) -> Result<Stalled> {
    let drained = conn.drain(Duration::from_secs(30)).await?;
    let contiguous = drained
        .events
        .iter()
        .enumerate()
        .all(|(i, seq)| *seq == from + 1 + i as u64);
    let read_to = drained.events.last().copied().unwrap_or(from);
    let goodbye = match drained.goodbye {
        Some(g) if g.reason == v1::CloseReason::SlowConsumer as i32 => g,
        other => {
            return Ok(Stalled {
                cut_off: false,
                resumed_without_loss: false,
                note: Some(format!(
                    "expected Goodbye{{SLOW_CONSUMER}}, got {other:?} and close {:?}",
                    drained.close_code
                )),
            })
        }
    };
    let cut_off = drained.close_code == Some(4008) && goodbye.resume_from_seq == read_to;
    let mut note = (!cut_off).then(|| {
        format!(
            "close {:?}, resume_from_seq {} after reading to {read_to}",
            drained.close_code, goodbye.resume_from_seq
        )
    });
    let (mut conn, _) = RawConn::open(target, tenant, user, None).await?;
    conn.subscribe(goodbye.resume_from_seq).await?;
    let in_order = conn.read_through(goodbye.resume_from_seq, last).await?;
    let resumed_without_loss = contiguous && in_order;
    if !resumed_without_loss && note.is_none() {
        note = Some(format!(
            "seqs not contiguous (before cut-off: {contiguous}, after resume: {in_order})"
        ));
    }
    Ok(Stalled {
        cut_off,
        resumed_without_loss,
        note,
    })
}
