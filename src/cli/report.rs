//! What the operator commands share: the data directory argument, how a command reports
//! ([`Report`], [`Failure`]), storage errors as operators read them, and the per-tenant loop.

use std::path::PathBuf;
use std::process::ExitCode;

use pm_core::TenantId;

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

/// Which engine an operator command works on: the data directory's SQLite tenants, or with
/// `--engine postgres` the tenants of a PostgreSQL database (a cluster's storage).
#[derive(Debug, Clone, clap::Args)]
pub struct Storage {
    #[command(flatten)]
    pub data: DataDir,
    /// `sqlite` (the data directory) or `postgres` (the database of `--postgres-url`).
    #[arg(long, env = "PM_STORAGE_ENGINE", value_enum, default_value_t = EngineArg::Sqlite)]
    pub engine: EngineArg,
    #[command(flatten)]
    pub postgres: PostgresUrl,
}

/// The storage engines an operator command can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineArg {
    /// The data directory's SQLite files.
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

/// The PostgreSQL database argument.
#[derive(Debug, Clone, clap::Args)]
pub struct PostgresUrl {
    /// `postgres://user@host:port/database`. May carry a password: prefer the variable.
    #[arg(long, env = "PM_STORAGE_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: Option<String>,
}

impl PostgresUrl {
    /// Connects to the database (a couple of connections: one command at a time).
    pub async fn connect(&self) -> Result<pm_db::postgres::PostgresEngine, Failure> {
        let url = self.postgres_url.as_deref().ok_or_else(|| {
            Failure("PostgreSQL needs --postgres-url (or PM_STORAGE_POSTGRES_URL)".into())
        })?;
        let mut config = pm_db::postgres::PostgresConfig::new(url);
        config.max_connections = 2;
        pm_db::postgres::PostgresEngine::connect(config)
            .await
            .map_err(|e| Failure(format!("cannot reach PostgreSQL: {}", operator_text(&e))))
    }
}

impl Storage {
    /// The PostgreSQL engine when `--engine postgres`; `None` for the data directory.
    pub async fn postgres(&self) -> Result<Option<pm_db::postgres::PostgresEngine>, Failure> {
        match self.engine {
            EngineArg::Sqlite => Ok(None),
            EngineArg::Postgres => self.postgres.connect().await.map(Some),
        }
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

/// `kind=N` for every kind of line of an export, in file order.
pub fn counts(counts: &pm_db::export::Counts) -> String {
    counts
        .iter()
        .map(|(kind, n)| format!("{kind}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
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
