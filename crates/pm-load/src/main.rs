//! `pm-load`: load scenarios against a running pm-server. See `pm-load --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use pm_load::fanout::FanoutOptions;
use pm_load::idle::IdleOptions;
use pm_load::read::ReadOptions;
use pm_load::slow::SlowOptions;
use pm_load::storm::StormOptions;
use pm_load::tenants::TenantsOptions;
use pm_load::write::WriteOptions;
use pm_load::{Report, Target};

/// The server's allocator: at a storm's 15,000 connections glibc's `malloc` and `free` were
/// about 5 % of the generator's CPU, which it shares with the server on one machine.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for pm-server. Start the server first (`pm-server serve --dev`); pm-load
/// mints its tokens with the same secret (`--secret-file`, or `PM_JWT_SECRET`).
#[derive(Parser)]
#[command(name = "pm-load", version)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Args)]
struct Common {
    /// The server's WebSocket URL; for a cluster, its nodes' URLs separated by commas
    /// (connections go to them in turn).
    #[arg(long, global = true, default_value = "ws://127.0.0.1:7400/ws")]
    url: String,
    /// File holding the server's HS256 secret (what `serve --dev` writes).
    #[arg(long, global = true, default_value = "data/dev-secret")]
    secret_file: PathBuf,
    /// The server's process id, to read its memory from /proc (otherwise /metrics is used).
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Print the report as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// No progress bar, even on a terminal.
    #[arg(long, global = true)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Scenario {
    /// T tenants × C connections writing as fast as acknowledged, or at --rate.
    Write(WriteOptions),
    /// One writer and S subscribers in one tenant.
    Fanout(FanoutOptions),
    /// N authenticated, subscribed, idle connections; server memory per connection.
    Idle(IdleOptions),
    /// N subscribed connections drop at once and reconnect with resume.
    Storm(StormOptions),
    /// Healthy subscribers with and without K stalled ones.
    Slow(SlowOptions),
    /// Many small tenants touched round robin: create, then cold opens.
    Tenants(TenantsOptions),
    /// R readers querying a realistic tenant (10,000 items over 20 projects); latency per
    /// query kind, optionally beside a writer.
    Read(ReadOptions),
}

fn secret(common: &Common) -> Result<String, String> {
    if let Ok(secret) = std::env::var("PM_JWT_SECRET") {
        return Ok(secret);
    }
    std::fs::read_to_string(&common.secret_file)
        .map(|s| s.trim().to_owned())
        .map_err(|e| {
            format!(
                "cannot read the server's secret from {}: {e}\n\
                 Start `pm-server serve --dev` in this directory, or pass --secret-file / PM_JWT_SECRET.",
                common.secret_file.display()
            )
        })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(async {
        let secret = secret(&cli.common)?;
        let mut target = Target::new(&cli.common.url, &secret).map_err(|e| e.to_string())?;
        target.server_pid = cli.common.server_pid;
        let progress = !cli.common.quiet;
        let report: pm_load::Result<Report> = match cli.scenario {
            Scenario::Write(options) => pm_load::write::run(&target, &options, progress).await,
            Scenario::Fanout(options) => pm_load::fanout::run(&target, &options, progress).await,
            Scenario::Idle(options) => pm_load::idle::run(&target, &options, progress).await,
            Scenario::Storm(options) => pm_load::storm::run(&target, &options, progress).await,
            Scenario::Slow(options) => pm_load::slow::run(&target, &options, progress).await,
            Scenario::Tenants(options) => pm_load::tenants::run(&target, &options, progress).await,
            Scenario::Read(options) => pm_load::read::run(&target, &options, progress).await,
        };
        report.map_err(|e| e.to_string())
    });
    match result {
        Ok(report) => {
            if cli.common.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("reports serialize")
                );
            } else {
                print!("{}", report.to_text());
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("pm-load: {e}");
            ExitCode::from(2)
        }
    }
}
