//! `pm-load`: load scenarios against a running pm-server. See `pm-load --help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pm_load::fanout::FanoutOptions;
use pm_load::idle::IdleOptions;
use pm_load::slow::SlowOptions;
use pm_load::storm::StormOptions;
use pm_load::write::WriteOptions;
use pm_load::{Report, Target};

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
    /// The server's WebSocket URL.
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
    Write {
        #[arg(long, default_value_t = 1)]
        tenants: usize,
        /// Connections per tenant.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Requests in flight per connection.
        #[arg(long, default_value_t = 8)]
        pipeline: usize,
        /// Total commands per second (open loop); omit to send as fast as acknowledged.
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value = "10s", value_parser = duration)]
        duration: Duration,
        /// Stop after this many commands.
        #[arg(long)]
        count: Option<u64>,
    },
    /// One writer and S subscribers in one tenant.
    Fanout {
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        /// Writer commands per second; omit to write as fast as acknowledged.
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value_t = 8)]
        pipeline: usize,
        #[arg(long, default_value = "10s", value_parser = duration)]
        duration: Duration,
    },
    /// N authenticated, subscribed, idle connections; server memory per connection.
    Idle {
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        #[arg(long, default_value = "5s", value_parser = duration)]
        hold: Duration,
    },
    /// N subscribed connections drop at once and reconnect with resume.
    Storm {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Events committed per tenant while the clients are away.
        #[arg(long, default_value_t = 10)]
        missed: u64,
    },
    /// Healthy subscribers with and without K stalled ones.
    Slow {
        #[arg(long, default_value_t = 20)]
        healthy: usize,
        #[arg(long, default_value_t = 100)]
        stalled: usize,
        /// Writer commands per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Length of each phase.
        #[arg(long, default_value = "5s", value_parser = duration)]
        phase: Duration,
        /// How much longer phase B may run while stalled subscribers are still connected.
        #[arg(long, default_value = "60s", value_parser = duration)]
        cut_off_limit: Duration,
    },
}

fn duration(raw: &str) -> Result<Duration, String> {
    let split = raw
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{raw}` is not a duration like 500ms, 10s or 2m"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => return Err(format!("unknown unit `{unit}` in `{raw}` (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{raw}`: {e}"))
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
            Scenario::Write {
                tenants,
                connections,
                pipeline,
                rate,
                duration,
                count,
            } => {
                let options = WriteOptions {
                    tenants,
                    connections,
                    pipeline,
                    rate,
                    duration,
                    count,
                };
                pm_load::write::run(&target, &options, progress).await
            }
            Scenario::Fanout {
                subscribers,
                rate,
                pipeline,
                duration,
            } => {
                let options = FanoutOptions {
                    subscribers,
                    rate,
                    pipeline,
                    duration,
                };
                pm_load::fanout::run(&target, &options, progress).await
            }
            Scenario::Idle { connections, hold } => {
                pm_load::idle::run(&target, &IdleOptions { connections, hold }, progress).await
            }
            Scenario::Storm { clients, missed } => {
                pm_load::storm::run(&target, &StormOptions { clients, missed }, progress).await
            }
            Scenario::Slow {
                healthy,
                stalled,
                rate,
                phase,
                cut_off_limit,
            } => {
                let options = SlowOptions {
                    healthy,
                    stalled,
                    rate,
                    phase,
                    cut_off_limit,
                };
                pm_load::slow::run(&target, &options, progress).await
            }
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
