//! Writer throughput: `CreateWorkItem` commands acknowledged after commit, from concurrent
//! callers, on one tenant and spread over many.
//!
//! ```text
//! cargo bench -p pm-db --bench writer -- [--commands N] [--callers C] [--tenants 1,100]
//!                                        [--savepoint-per-command]
//! ```
//!
//! Prints, per tenant count: commands/s, round-trip latency percentiles (submit to
//! acknowledgement) and the mean number of jobs per committed transaction.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pm_core::{TenantId, UserId};
use pm_db::{SqliteConfig, SqliteEngine, SqliteTenant, Tenant as _};
use pm_proto::v1;
use pm_proto::v1::command::Kind;

struct Options {
    commands: u64,
    callers: usize,
    tenants: Vec<usize>,
    savepoint_per_command: bool,
}

fn options() -> Options {
    let mut options = Options {
        commands: 200_000,
        callers: 64,
        tenants: vec![1, 100],
        savepoint_per_command: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--commands" => options.commands = value().parse().expect("--commands N"),
            "--callers" => options.callers = value().parse().expect("--callers N"),
            "--tenants" => {
                options.tenants = value()
                    .split(',')
                    .map(|n| n.parse().expect("--tenants 1,100"))
                    .collect()
            }
            "--savepoint-per-command" => options.savepoint_per_command = true,
            // `cargo bench` passes `--bench`; ignore what is not ours.
            _ => {}
        }
    }
    options
}

fn create_item(project_id: &str, n: u64) -> v1::Command {
    v1::Command {
        idempotency_key: String::new(),
        kind: Some(Kind::CreateWorkItem(v1::CreateWorkItem {
            project_id: project_id.to_owned(),
            item_type: v1::WorkItemType::Task.into(),
            title: format!("Benchmark task {n}"),
            description: "Created by the writer benchmark.".into(),
            priority: v1::Priority::High.into(),
            ..Default::default()
        })),
    }
}

async fn run(options: &Options, tenant_count: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = SqliteConfig::new(dir.path());
    config.max_open_tenants = tenant_count.max(1);
    config.writer.savepoint_per_command = options.savepoint_per_command;
    let engine = SqliteEngine::new(config);
    let actor = UserId::parse("sub", "bench-user").expect("valid user id");

    let mut tenants: Vec<(Arc<SqliteTenant>, String)> = Vec::with_capacity(tenant_count);
    for i in 0..tenant_count {
        let id = TenantId::parse(&format!("bench-{i}")).expect("valid tenant id");
        let tenant = engine.open_tenant(&id).await.expect("tenant opens");
        let project = tenant
            .execute(
                &actor,
                v1::Command {
                    idempotency_key: String::new(),
                    kind: Some(Kind::CreateProject(v1::CreateProject {
                        key: "BENCH".into(),
                        name: "Benchmark".into(),
                        description: String::new(),
                    })),
                },
            )
            .await
            .expect("project created");
        let project_id = match project.entity.and_then(|e| e.kind) {
            Some(v1::entity::Kind::Project(p)) => p.id,
            other => panic!("expected a project, got {other:?}"),
        };
        tenants.push((tenant, project_id));
    }
    let tenants = Arc::new(tenants);

    // Warm-up: caches, prepared statements, WAL file.
    for (tenant, project) in tenants.iter() {
        for n in 0..200 {
            tenant
                .execute(&actor, create_item(project, n))
                .await
                .expect("warm-up");
        }
    }
    let base_groups: u64 = tenants
        .iter()
        .map(|(t, _)| t.writer_stats().groups.load(Ordering::Relaxed))
        .sum();
    let base_jobs: u64 = tenants
        .iter()
        .map(|(t, _)| t.writer_stats().jobs.load(Ordering::Relaxed))
        .sum();

    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut callers = Vec::with_capacity(options.callers);
    for caller in 0..options.callers {
        let tenants = tenants.clone();
        let issued = issued.clone();
        let actor = actor.clone();
        let total = options.commands;
        callers.push(tokio::spawn(async move {
            let mut latencies =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let (tenant, project) = &tenants[caller % tenants.len()];
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let sent = Instant::now();
                tenant
                    .execute(&actor, create_item(project, n))
                    .await
                    .expect("command acknowledged");
                latencies
                    .record(sent.elapsed().as_micros().max(1) as u64)
                    .expect("in range");
            }
            latencies
        }));
    }
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for caller in callers {
        latencies
            .add(caller.await.expect("caller task"))
            .expect("same bounds");
    }
    let elapsed = started.elapsed();
    let groups: u64 = tenants
        .iter()
        .map(|(t, _)| t.writer_stats().groups.load(Ordering::Relaxed))
        .sum::<u64>()
        - base_groups;
    let jobs: u64 = tenants
        .iter()
        .map(|(t, _)| t.writer_stats().jobs.load(Ordering::Relaxed))
        .sum::<u64>()
        - base_jobs;
    let apply: u64 = tenants
        .iter()
        .map(|(t, _)| t.writer_stats().apply_micros.load(Ordering::Relaxed))
        .sum();
    let commit: u64 = tenants
        .iter()
        .map(|(t, _)| t.writer_stats().commit_micros.load(Ordering::Relaxed))
        .sum();
    let us = |q: f64| Duration::from_micros(latencies.value_at_quantile(q));
    println!(
        "tenants={tenant_count:<4} callers={} commands={} savepoint_per_command={}: {:>8.0} commands/s  p50={:?} p99={:?} max={:?}  mean group={:.1} jobs ({} commits)  writer: apply {:.1} us/job, commit {:.1} us/job",
        options.callers,
        options.commands,
        options.savepoint_per_command,
        options.commands as f64 / elapsed.as_secs_f64(),
        us(0.50),
        us(0.99),
        Duration::from_micros(latencies.max()),
        jobs as f64 / groups.max(1) as f64,
        groups,
        apply as f64 / jobs.max(1) as f64,
        commit as f64 / jobs.max(1) as f64,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let options = options();
    for &tenants in &options.tenants {
        run(&options, tenants).await;
    }
}
