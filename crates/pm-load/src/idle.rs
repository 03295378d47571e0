//! `idle`: N authenticated, subscribed connections that then do nothing (but answer the
//! server's pings). Reports the server's resident memory per connection: the growth from
//! before the first connection to when all N are up, divided by N.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::fanout::CONNECT_CONCURRENCY;
use crate::progress::Progress;
use crate::raw::{Incoming, RawConn};
use crate::report::{histogram, record, Report};
use crate::target::{server_rss, Target};
use crate::{Error, Result};

/// Connections per tenant (the server's default cap per tenant is 10,000).
pub(crate) const PER_TENANT: usize = 5_000;

/// How long to let the server settle before reading its memory.
const SETTLE: Duration = Duration::from_secs(2);

/// Options of the `idle` scenario.
#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct IdleOptions {
    /// Connections to hold open.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// How long to hold them once all are open.
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    pub hold: Duration,
}

/// Runs the scenario.
pub async fn run(target: &Target, options: &IdleOptions, progress: bool) -> Result<Report> {
    if options.connections == 0 {
        return Err(Error::Setup("connections must be at least 1".into()));
    }
    let baseline = server_rss(target).await?;
    let opened = Arc::new(AtomicU64::new(0));
    let _bar = Progress::start(
        progress,
        "idle",
        "connected",
        options.hold + SETTLE,
        opened.clone(),
    );
    let started = Instant::now();
    let slots: Vec<(String, String)> = (0..options.connections)
        .map(|i| {
            let tenant = target.tenant("idle", i / PER_TENANT);
            (tenant, format!("load-idle-{i}"))
        })
        .collect();
    let results: Vec<Result<(RawConn, u64)>> = stream::iter(&slots)
        .map(|(tenant, user)| {
            let opened = opened.clone();
            async move {
                let begun = Instant::now();
                let (mut conn, _) = RawConn::open(target, tenant, user, None).await?;
                conn.subscribe(0).await?;
                opened.fetch_add(1, Ordering::Relaxed);
                Ok((conn, begun.elapsed().as_micros() as u64))
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let connect_elapsed = started.elapsed().as_secs_f64();

    let (stop_tx, stop_rx) = watch::channel(());
    let mut holders = JoinSet::new();
    let mut handshake = histogram();
    let mut failed = Vec::new();
    for result in results {
        match result {
            Ok((conn, us)) => {
                record(&mut handshake, us);
                holders.spawn(hold(conn, stop_rx.clone()));
            }
            Err(e) => failed.push(e.to_string()),
        }
    }
    let open = holders.len();
    tokio::time::sleep(SETTLE).await;
    let loaded = server_rss(target).await?;
    tokio::time::sleep(options.hold).await;
    let held = server_rss(target).await?;
    stop_tx.send_replace(());
    let mut dropped = Vec::new();
    while let Some(done) = holders.join_next().await {
        if let Some(reason) = done.expect("holders do not panic") {
            dropped.push(reason);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();

    let per_connection =
        |rss: u64| rss.saturating_sub(baseline) as f64 / open.max(1) as f64 / 1024.0;
    let mut report = Report::new("idle", &target.url, options);
    report.figure("connections open", open as f64, "");
    report.figure(
        "connections/s while opening",
        open as f64 / connect_elapsed,
        "conn/s",
    );
    report.figure("server RSS before", baseline as f64 / 1048576.0, "MiB");
    report.figure("server RSS with all open", loaded as f64 / 1048576.0, "MiB");
    report.figure("server RSS per connection", per_connection(loaded), "KiB");
    report.figure(
        "server RSS per connection after hold",
        per_connection(held),
        "KiB",
    );
    report.latency("connect + hello + subscribe", &handshake);
    report.check(
        "every connection opened",
        failed.is_empty(),
        match failed.first() {
            None => format!("{open} open"),
            Some(e) => format!("{} failed, first: {e}", failed.len()),
        },
    );
    report.check(
        "every connection stayed open while idle",
        dropped.is_empty(),
        match dropped.first() {
            None => format!("{open} held for {:?}", options.hold + SETTLE),
            Some(e) => format!("{} dropped, first: {e}", dropped.len()),
        },
    );
    Ok(report.finish(elapsed))
}

/// Keeps reading (so pings are answered) until told to stop; why it closed, if it did.
async fn hold(mut conn: RawConn, mut stop: watch::Receiver<()>) -> Option<String> {
    loop {
        tokio::select! {
            next = conn.next() => match next {
                Ok(Incoming::Pong | Incoming::Event(_) | Incoming::Response(_)) => {}
                Ok(other) => return Some(format!("{other:?}")),
                Err(e) => return Some(e.to_string()),
            },
            _ = stop.changed() => return None,
        }
    }
}
