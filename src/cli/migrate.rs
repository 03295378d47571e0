//! `pm-server migrate`: brings tenant databases to the current schema, several at a time, and
//! reports each as created, migrated, already current or failed. One failing tenant does not
//! stop the others.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use pm_core::TenantId;
use pm_db::postgres::admin::MigrateOutcome;
use pm_db::sqlite::{inspect, migrations};
use pm_db::{Engine as _, SqliteConfig, SqliteEngine, Tenant};

use super::report::{operator_text, resolve_tenants, EngineArg, Failure, PostgresUrl, Report};

/// `pm-server migrate [--tenant T]... [--parallel N] [--migrations-dir DIR] [--status]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Root data directory; tenants live in `<data-dir>/tenants/<id>/`.
    #[arg(long, env = "PM_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Only these tenants (repeatable). Without it: every tenant found in the data dir.
    #[arg(long = "tenant")]
    tenants: Vec<String>,
    /// Tenants migrated at once.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Migrations directory to apply instead of the embedded migrations (a superset of them).
    #[arg(long, env = "PM_STORAGE_MIGRATIONS_DIR")]
    migrations_dir: Option<PathBuf>,
    /// Change nothing: list each tenant's applied and pending migrations by name.
    #[arg(long)]
    status: bool,
    /// `sqlite` (the data directory) or `postgres` (the tenant schemas of `--postgres-url`).
    #[arg(long, env = "PM_STORAGE_ENGINE", value_enum, default_value_t = EngineArg::Sqlite)]
    engine: EngineArg,
    #[command(flatten)]
    postgres: PostgresUrl,
}

/// Migrates and reports one line per tenant, then a summary; exit code 1 if any failed.
pub async fn run(args: Args) -> Result<Report, Failure> {
    let reports = match (args.engine, args.status) {
        (EngineArg::Sqlite, true) => return status(&args).await,
        (EngineArg::Postgres, true) => {
            return Err(Failure(
                "--status reads SQLite data directories; on PostgreSQL, `pm-server tenants \
                 stats --engine postgres` shows each tenant's schema version"
                    .into(),
            ))
        }
        (EngineArg::Sqlite, false) => migrate(
            &args.data_dir,
            &args.tenants,
            args.parallel,
            args.migrations_dir,
        )
        .await
        .map_err(Failure)?,
        (EngineArg::Postgres, false) => migrate_postgres(&args.postgres, &args.tenants).await?,
    };
    let (mut created, mut migrated, mut current, mut failed) = (0, 0, 0, 0);
    let mut out = String::new();
    for report in &reports {
        let what = match &report.outcome {
            Outcome::Created => {
                created += 1;
                format!("created     head_seq={}", report.head_seq)
            }
            Outcome::Migrated { from, to } => {
                migrated += 1;
                format!("migrated    {from} -> {to}, head_seq={}", report.head_seq)
            }
            Outcome::Current => {
                current += 1;
                format!("current     head_seq={}", report.head_seq)
            }
            Outcome::Failed(e) => {
                failed += 1;
                format!("FAILED      {e}")
            }
        };
        out.push_str(&format!("{:<40} {what}\n", report.tenant));
    }
    out.push_str(&format!(
        "{} tenant(s): {created} created, {migrated} migrated, {current} already current, {failed} failed\n",
        reports.len()
    ));
    Ok(Report {
        stdout: out,
        stderr: String::new(),
        failed: failed > 0,
    })
}

/// Creates or migrates the named tenant schemas (all of the database's when none are), one
/// after the other: PostgreSQL runs each migration in the database, not here.
async fn migrate_postgres(
    postgres: &PostgresUrl,
    names: &[String],
) -> Result<Vec<TenantReport>, Failure> {
    let engine = postgres.connect().await?;
    let pool = engine.pool();
    let ids: Vec<Result<TenantId, String>> = if names.is_empty() {
        pm_db::postgres::admin::list_tenants(pool)
            .await
            .map_err(|e| Failure::from(&e))?
            .into_iter()
            .map(|t| t.tenant)
            .collect()
    } else {
        names
            .iter()
            .map(|n| TenantId::parse(n).map_err(|_| n.clone()))
            .collect()
    };
    let mut reports = Vec::new();
    for id in ids {
        reports.push(match id {
            Ok(id) => match pm_db::postgres::admin::migrate_tenant(pool, &id).await {
                Ok((outcome, head_seq)) => TenantReport {
                    tenant: id.to_string(),
                    outcome: match outcome {
                        MigrateOutcome::Created => Outcome::Created,
                        MigrateOutcome::Migrated { from, to } => Outcome::Migrated { from, to },
                        MigrateOutcome::Current => Outcome::Current,
                    },
                    head_seq,
                },
                Err(e) => TenantReport::failed(id.to_string(), operator_text(&e)),
            },
            Err(name) => TenantReport::failed(name, "not a valid tenant id".into()),
        });
    }
    Ok(reports)
}

/// `--status`: per tenant, its applied and pending migrations (read-only; safe while serving).
async fn status(args: &Args) -> Result<Report, Failure> {
    let mut config = SqliteConfig::new(&args.data_dir);
    config.migrations_dir = args.migrations_dir.clone();
    let ids = resolve_tenants(&args.tenants, || config.list_tenants())
        .map_err(|e| Failure(format!("cannot read the data directory: {e}")))?;
    let mut out = String::new();
    let (mut current, mut behind, mut failed) = (0, 0, 0);
    for id in &ids {
        let id = match id {
            Ok(id) => id,
            Err(name) => {
                failed += 1;
                out.push_str(&format!("{name}: FAILED  not a valid tenant id\n"));
                continue;
            }
        };
        match inspect::migration_status(&config, id).await {
            Ok(status) => {
                if status.pending.is_empty() {
                    current += 1;
                    out.push_str(&format!("{id}: current\n"));
                } else {
                    behind += 1;
                    out.push_str(&format!("{id}: {} pending\n", status.pending.len()));
                }
                for (state, list) in [("applied", &status.applied), ("pending", &status.pending)] {
                    for (version, description) in list {
                        out.push_str(&format!("  {state}  {version} {description}\n"));
                    }
                }
            }
            Err(e) => {
                failed += 1;
                out.push_str(&format!("{id}: FAILED  {}\n", operator_text(&e)));
            }
        }
    }
    out.push_str(&format!(
        "{} tenant(s): {current} current, {behind} with pending migrations, {failed} failed\n",
        ids.len()
    ));
    Ok(Report {
        stdout: out,
        stderr: String::new(),
        failed: failed > 0,
    })
}

/// What happened to one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It had no database; one was created at the current schema.
    Created,
    /// Pending migrations were applied.
    Migrated {
        /// Schema version before.
        from: i64,
        /// Schema version after.
        to: i64,
    },
    /// Nothing to do.
    Current,
    /// It could not be opened or migrated.
    Failed(String),
}

/// One tenant's report.
#[derive(Debug)]
pub struct TenantReport {
    /// The tenant, as named or as found on disk.
    pub tenant: String,
    /// What happened, and its head seq afterwards (0 on failure).
    pub outcome: Outcome,
    /// The latest change number after migrating.
    pub head_seq: u64,
}

impl TenantReport {
    /// The report of a tenant that could not be migrated, and why.
    fn failed(tenant: String, why: String) -> TenantReport {
        TenantReport {
            tenant,
            outcome: Outcome::Failed(why),
            head_seq: 0,
        }
    }
}

/// Migrates `tenants`, or every tenant directory under `data_dir` if empty, `parallel` at a
/// time, to the migrations of `migrations_dir` (default: the embedded ones). Reports come
/// back sorted by tenant. An unreadable data directory or an unusable migrations directory
/// is an error before anything is touched.
pub async fn migrate(
    data_dir: &Path,
    tenants: &[String],
    parallel: usize,
    migrations_dir: Option<PathBuf>,
) -> Result<Vec<TenantReport>, String> {
    if let Some(dir) = &migrations_dir {
        migrations::newest_version(Some(dir)).map_err(|e| e.to_string())?;
    }
    let mut config = SqliteConfig::new(data_dir);
    config.migrations_dir = migrations_dir;
    let names: Vec<String> = if tenants.is_empty() {
        config
            .list_tenants()
            .map_err(|e| format!("cannot read {}: {e}", data_dir.display()))?
            .into_iter()
            .map(|t| t.map(|id| id.to_string()).unwrap_or_else(|name| name))
            .collect()
    } else {
        tenants.to_vec()
    };
    let total = names.len();
    let engine = SqliteEngine::new(config);
    // On stderr, and only on a terminal (indicatif hides it elsewhere), for more than one.
    let progress = if total > 1 {
        ProgressBar::new(total as u64).with_style(
            ProgressStyle::with_template("migrating: {pos}/{len}").expect("the template is valid"),
        )
    } else {
        ProgressBar::hidden()
    };
    let mut reports: Vec<TenantReport> = futures::stream::iter(names)
        .map(|name| migrate_one(&engine, name))
        .buffer_unordered(parallel.max(1))
        .inspect(|_| progress.inc(1))
        .collect()
        .await;
    progress.finish();
    engine.close_idle().await;
    reports.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    Ok(reports)
}

async fn migrate_one(engine: &SqliteEngine, name: String) -> TenantReport {
    let failed = TenantReport::failed;
    let id = match TenantId::parse(&name) {
        Ok(id) => id,
        Err(e) => return failed(name, e.to_string()),
    };
    let config = engine.config();
    let before = match inspect::schema_version(config, &id).await {
        Ok(version) => version,
        Err(e) => return failed(name, e.to_string()),
    };
    let opened = engine.open_tenant(&id).await;
    let head_seq = match &opened {
        Ok(tenant) => tenant.head_seq(),
        Err(e) => return failed(name, e.to_string()),
    };
    drop(opened);
    let after = match inspect::schema_version(config, &id).await {
        Ok(version) => version.unwrap_or(0),
        Err(e) => return failed(name, e.to_string()),
    };
    let outcome = match before {
        None => Outcome::Created,
        Some(from) if from < after => Outcome::Migrated { from, to: after },
        Some(_) => Outcome::Current,
    };
    TenantReport {
        tenant: name,
        outcome,
        head_seq,
    }
}
