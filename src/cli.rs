//! The `pm-server` command line: one module per command, each with its arguments and its
//! run function.
//!
//! Operator commands that work tenant by tenant (`backup`, `restore`, `migrate`, `tenants
//! stats`) answer with a [`Report`](report::Report): one line per tenant, a summary, and exit
//! code 1 if any tenant failed, while the others still ran. A command that cannot run at all
//! (an unreadable directory, a bad argument) is a [`Failure`](report::Failure): `error: ...`
//! and exit code 1.

pub mod backup;
pub mod client;
pub mod export;
pub mod import;
pub mod logging;
pub mod migrate;
pub mod report;
pub mod restore;
pub mod serve;
pub mod tenants;
pub mod token;
pub mod version;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use logging::LogFormat;
use version::BUILD_VERSION;

/// pm-server: real-time backend for agile boards.
#[derive(Debug, Parser)]
#[command(name = "pm-server", version = BUILD_VERSION, about)]
pub struct Cli {
    /// Log format on stderr: `text` (coloured only on a terminal) or `json` (one object a
    /// line, with span fields). What is logged is `PM_LOG` (default `info`).
    #[arg(
        long,
        global = true,
        env = "PM_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve WebSocket clients (and /healthz, /readyz, /metrics) until SIGINT or SIGTERM.
    Serve(serve::Args),
    /// Mint an HS256 token with the configured secret (`PM_JWT_SECRET`).
    Token(token::Args),
    /// What is in the data directory: `list` (ids and sizes) or `stats` (schema, head seq,
    /// counts, last activity). Read-only; safe while a server is running.
    Tenants(tenants::Args),
    /// Talk to a server: send requests given as JSON, or watch events (JSON lines out).
    Client(client::Args),
    /// Bring tenant databases to the current schema (creating the named ones if missing).
    Migrate(migrate::Args),
    /// Consistent online copies of tenant databases into `<to>/<tenant>.db`, each verified
    /// with `PRAGMA integrity_check`; safe while a server is serving them.
    Backup(backup::Args),
    /// Replace tenant databases with verified backups from `<from>/<tenant>.db`. A tenant a
    /// running server has open is always refused.
    Restore(restore::Args),
    /// Write one tenant as JSON Lines (header line, then one row per line, change log
    /// included); safe while a server is serving it.
    Export(export::Args),
    /// Load an export into one tenant (pm-server's JSON Lines, or with `--from agile-board`
    /// the upstream board's JSON): every row validated, one transaction. Refuses a tenant with
    /// content (unless --replace) and one a running server has open.
    Import(import::Args),
}

/// Runs a command to its end; the process's exit code.
pub async fn run(command: Command) -> ExitCode {
    let report = match command {
        Command::Serve(args) => return serve::run(args).await,
        Command::Client(args) => return client::run(args).await,
        Command::Token(args) => token::run(args),
        Command::Tenants(args) => tenants::run(args).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::Backup(args) => backup::run(args).await,
        Command::Restore(args) => restore::run(args).await,
        Command::Export(args) => export::run(args).await,
        Command::Import(args) => import::run(args).await,
    };
    match report {
        Ok(report) => report.print(),
        Err(failure) => failure.print(),
    }
}
