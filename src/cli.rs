//! The `pm-server` command line: one module per command, each with its arguments and its
//! run function.
//!
//! Operator commands that work tenant by tenant (`backup`, `restore`, `migrate`, `tenants
//! stats`) answer with a [`Report`]: one line per tenant, a summary, and exit code 1 if any
//! tenant failed, while the others still ran. A command that cannot run at all (an
//! unreadable directory, a bad argument) is a [`Failure`]: `error: ...` and exit code 1.

pub mod backup;
pub mod client;
pub mod export;
pub mod import;
pub mod migrate;
pub mod restore;
pub mod serve;
pub mod tenants;
pub mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pm_core::TenantId;

/// pm-server: real-time backend for agile boards.
#[derive(Debug, Parser)]
#[command(name = "pm-server", version = crate::BUILD_VERSION, about)]
pub struct Cli {
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
    /// Load a JSON Lines export into one tenant: every row validated, one transaction. Refuses
    /// a tenant with content (unless --replace) and one a running server has open.
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

/// The data directory argument of the operator commands.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDir {
    /// Root data directory; tenants live in `<data-dir>/tenants/<id>/`.
    #[arg(long, env = "PM_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

impl DataDir {
    /// The SQLite engine's configuration of this data directory (default tuning).
    pub fn sqlite_config(&self) -> pm_db::SqliteConfig {
        pm_db::SqliteConfig::new(&self.data_dir)
    }
}

/// What a command printed, and whether part of it failed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// For standard output.
    pub stdout: String,
    /// For standard error (summaries next to data on standard output).
    pub stderr: String,
    /// Whether something failed (exit code 1), while the rest still ran.
    pub failed: bool,
}

impl Report {
    /// A successful report of `stdout`.
    pub fn ok(stdout: impl Into<String>) -> Report {
        Report {
            stdout: stdout.into(),
            ..Report::default()
        }
    }

    /// Prints the report; exit code 1 if something failed.
    pub fn print(self) -> ExitCode {
        print!("{}", self.stdout);
        eprint!("{}", self.stderr);
        if self.failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// A command that could not run: `error: ...`, exit code 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl Failure {
    /// Prints `error: ...` to standard error; exit code 1.
    pub fn print(self) -> ExitCode {
        eprintln!("error: {}", self.0);
        ExitCode::FAILURE
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure(message)
    }
}

impl From<&pm_db::Error> for Failure {
    fn from(error: &pm_db::Error) -> Self {
        Failure(operator_text(error))
    }
}

/// A command's outcome.
pub type Outcome = Result<Report, Failure>;

/// A storage error as an operator reads it: the database's own message, never SQL.
pub fn operator_text(error: &pm_db::Error) -> String {
    match error {
        pm_db::Error::Database(e) => format!(
            "database error: {}",
            e.as_database_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned())
        ),
        other => other.to_string(),
    }
}

/// The tenants named, or all that `find` lists when none are; invalid names stay as errors.
pub fn resolve_tenants(
    names: &[String],
    find: impl FnOnce() -> std::io::Result<Vec<Result<TenantId, String>>>,
) -> std::io::Result<Vec<Result<TenantId, String>>> {
    if names.is_empty() {
        return find();
    }
    Ok(names
        .iter()
        .map(|n| TenantId::parse(n).map_err(|_| n.clone()))
        .collect())
}

/// Runs `run` for each tenant in turn: one line each (its own, or `FAILED` and the reason),
/// then a summary counting those `done` and the failures. One failure does not stop the rest.
pub async fn each_tenant(
    ids: &[Result<TenantId, String>],
    done: &str,
    mut run: impl AsyncFnMut(&TenantId) -> pm_db::Result<String>,
) -> Report {
    let mut out = String::new();
    let (mut ok, mut failed) = (0, 0);
    for id in ids {
        let line = match id {
            Ok(id) => match run(id).await {
                Ok(line) => {
                    ok += 1;
                    line
                }
                Err(e) => {
                    failed += 1;
                    format!("{:<24} FAILED  {}", id.as_str(), operator_text(&e))
                }
            },
            Err(name) => {
                failed += 1;
                format!("{name:<24} FAILED  not a valid tenant id")
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&format!(
        "{} tenant(s): {ok} {done}, {failed} failed\n",
        ids.len()
    ));
    Report {
        stdout: out,
        stderr: String::new(),
        failed: failed > 0,
    }
}
