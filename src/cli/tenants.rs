//! `pm-server tenants list|stats|check`: what is in a data directory, as a table or JSON, and
//! whether its databases are sound; `tenants move`: a SQLite tenant copied into PostgreSQL.

use std::path::PathBuf;

use pm_core::TenantId;
use pm_db::postgres::{admin, PostgresEngine};
use pm_db::sqlite::inspect::{self, TenantStats, Thoroughness};
use pm_db::SqliteConfig;
use serde_json::json;

use super::report::{
    counts, each_tenant, operator_text, resolve_tenants, DataDir, Failure, Outcome, PostgresUrl,
    Report, Storage,
};

/// `pm-server tenants list|stats|check|move`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `list`, `stats`, `check` or `move`.
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Tenant ids and their size on disk.
    List {
        #[command(flatten)]
        storage: Storage,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Per tenant: size, schema version, head seq, last activity, entity counts.
    Stats {
        #[command(flatten)]
        storage: Storage,
        /// Only these tenants (repeatable); all by default.
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Migrations directory the schema versions are compared with (default: embedded).
        #[arg(long, env = "PM_STORAGE_MIGRATIONS_DIR")]
        migrations_dir: Option<PathBuf>,
    },
    /// Reads every page of each tenant's database, then checks every foreign key (read-only,
    /// safe while serving), and reports damage; exit code 1 if any tenant is damaged or cannot
    /// be checked.
    Check {
        #[command(flatten)]
        data: DataDir,
        /// Only these tenants (repeatable); all by default.
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        /// `integrity_check` (indexes against tables too) instead of `quick_check`: slower.
        #[arg(long)]
        full: bool,
    },
    /// Copies a SQLite tenant into PostgreSQL with the same ids, rows and seqs, so that its
    /// clients resume on a cluster without a reset. The SQLite tenant is locked meanwhile (a
    /// server that has it open makes this fail) and left as it was, as a backup.
    Move {
        #[command(flatten)]
        data: DataDir,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Where to: `postgres`.
        #[arg(long, value_enum)]
        to: Destination,
        #[command(flatten)]
        postgres: PostgresUrl,
        /// Replace the content the tenant already has in PostgreSQL.
        #[arg(long)]
        replace: bool,
        /// Validate and load in a transaction that is rolled back (the PostgreSQL tenant must
        /// exist).
        #[arg(long)]
        dry_run: bool,
    },
}

/// Where `tenants move` copies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Destination {
    /// The PostgreSQL database of `--postgres-url`.
    Postgres,
}

/// Lists the tenants or reports their statistics.
pub async fn run(args: Args) -> Outcome {
    let (mut report, json) = match args.what {
        What::List { storage, json } => {
            let rows = match storage.postgres().await? {
                Some(engine) => postgres_rows(&engine).await?,
                None => sqlite_rows(&storage.data.sqlite_config())?,
            };
            (list(&rows, json), json)
        }
        What::Stats {
            storage,
            tenants,
            json,
            migrations_dir,
        } => {
            let results = match storage.postgres().await? {
                Some(engine) => postgres_stats(&engine, &tenants).await?,
                None => {
                    let mut config = storage.data.sqlite_config();
                    config.migrations_dir = migrations_dir;
                    sqlite_stats(&config, &tenants).await?
                }
            };
            (stats(&results, json), json)
        }
        What::Check {
            data,
            tenants,
            full,
        } => (check(&data.sqlite_config(), &tenants, full).await?, false),
        What::Move {
            data,
            tenant,
            to: Destination::Postgres,
            postgres,
            replace,
            dry_run,
        } => {
            let options = pm_db::export::ImportOptions { dry_run, replace };
            (
                move_to_postgres(&data, &tenant, &postgres, options).await?,
                false,
            )
        }
    };
    if json {
        report.stdout.push('\n');
    }
    Ok(report)
}

/// Each tenant directory: the id and its size, or the name that is not a tenant id.
fn sqlite_rows(config: &SqliteConfig) -> Result<Vec<(String, Option<u64>)>, Failure> {
    let tenants = config
        .list_tenants()
        .map_err(|e| Failure(format!("cannot read the data directory: {e}")))?;
    Ok(tenants
        .into_iter()
        .map(|t| match t {
            Ok(id) => (id.to_string(), Some(config.size_on_disk(&id))),
            Err(name) => (name, None),
        })
        .collect())
}

/// Each tenant schema of the database: the id and its size, or the schema's name.
async fn postgres_rows(engine: &PostgresEngine) -> Result<Vec<(String, Option<u64>)>, Failure> {
    let tenants = admin::list_tenants(engine.pool())
        .await
        .map_err(|e| Failure::from(&e))?;
    Ok(tenants
        .into_iter()
        .map(|t| match t.tenant {
            Ok(id) => (id.to_string(), Some(t.size_bytes)),
            Err(schema) => (schema, None),
        })
        .collect())
}

/// One line per tenant: the id and its size, or why the name is not a tenant.
fn list(rows: &[(String, Option<u64>)], as_json: bool) -> Report {
    if as_json {
        let items: Vec<_> = rows
            .iter()
            .map(|(name, size)| match size {
                Some(size) => json!({"tenant": name, "size_bytes": size}),
                None => json!({"tenant": name, "error": "not a valid tenant id"}),
            })
            .collect();
        return Report::ok(serde_json::to_string_pretty(&items).expect("JSON values serialize"));
    }
    let mut out = format!("{:<40} {:>10}\n", "TENANT", "SIZE");
    for (name, size) in rows {
        match size {
            Some(size) => out.push_str(&format!("{name:<40} {:>10}\n", human_size(*size))),
            None => out.push_str(&format!("{name:<40} {:>10}\n", "(invalid id, ignored)")),
        }
    }
    out.push_str(&format!(
        "{} tenant(s)\n",
        rows.iter().filter(|(_, s)| s.is_some()).count()
    ));
    Report::ok(out)
}

/// Most problems one line reports (`integrity_check` may list thousands).
const PROBLEMS_SHOWN: usize = 3;

/// Checks the named tenants (all when empty): one line each, `ok` or what is wrong.
async fn check(config: &SqliteConfig, names: &[String], full: bool) -> Outcome {
    let ids = resolve_tenants(names, || config.list_tenants())
        .map_err(|e| Failure(format!("cannot read the data directory: {e}")))?;
    let thoroughness = if full {
        Thoroughness::Full
    } else {
        Thoroughness::Quick
    };
    Ok(each_tenant(&ids, "sound", async |id| {
        let problems = inspect::check_tenant(config, id, thoroughness).await?;
        if problems.is_empty() {
            return Ok(format!("{:<24} ok", id.as_str()));
        }
        let mut detail = problems[..problems.len().min(PROBLEMS_SHOWN)].join("; ");
        if problems.len() > PROBLEMS_SHOWN {
            detail.push_str(&format!("; and {} more", problems.len() - PROBLEMS_SHOWN));
        }
        Err(pm_db::Error::Damaged {
            tenant: id.to_string(),
            detail,
        })
    })
    .await)
}

/// A tenant's statistics, or its name and why there are none.
type StatsResult = Result<TenantStats, (String, String)>;

/// Statistics of the named SQLite tenants (all when empty).
async fn sqlite_stats(
    config: &SqliteConfig,
    names: &[String],
) -> Result<Vec<StatsResult>, Failure> {
    let ids = resolve_tenants(names, || config.list_tenants())
        .map_err(|e| Failure(format!("cannot read the data directory: {e}")))?;
    let mut results = Vec::new();
    for id in ids {
        results.push(match id {
            Ok(id) => inspect::tenant_stats(config, &id)
                .await
                .map_err(|e| (id.to_string(), operator_text(&e))),
            Err(name) => Err((name, "not a valid tenant id".into())),
        });
    }
    Ok(results)
}

/// Statistics of the named tenants of the database (all when empty).
async fn postgres_stats(
    engine: &PostgresEngine,
    names: &[String],
) -> Result<Vec<StatsResult>, Failure> {
    let listed = if names.is_empty() {
        postgres_rows(engine).await?
    } else {
        names.iter().map(|n| (n.clone(), Some(0))).collect()
    };
    let mut results = Vec::new();
    for (name, _) in listed {
        results.push(match TenantId::parse(&name) {
            Ok(id) => admin::tenant_stats(engine.pool(), &id)
                .await
                .map_err(|e| (name, operator_text(&e))),
            Err(_) => Err((name, "not a valid tenant id".into())),
        });
    }
    Ok(results)
}

/// Statistics, one line per tenant (or JSON). Failures are reported per tenant.
fn stats(results: &[StatsResult], as_json: bool) -> Report {
    let failed = results.iter().any(Result::is_err);
    if as_json {
        let items: Vec<_> = results
            .iter()
            .map(|r| match r {
                Ok(s) => json!({
                    "tenant": s.tenant,
                    "size_bytes": s.size_bytes,
                    "wal_bytes": s.wal_bytes,
                    "schema_version": s.schema_version,
                    "migration_pending": s.migration_pending,
                    "head_seq": s.head_seq,
                    "oldest_seq": s.oldest_seq,
                    "last_activity": s.last_activity,
                    "counts": s.counts.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                }),
                Err((name, error)) => json!({"tenant": name, "error": error}),
            })
            .collect();
        return Report {
            stdout: serde_json::to_string_pretty(&items).expect("JSON values serialize"),
            stderr: String::new(),
            failed,
        };
    }
    let mut out = format!(
        "{:<24} {:>9} {:>9} {:>15} {:>9} {:<20} {:>8} {:>10} {:>8}\n",
        "TENANT",
        "SIZE",
        "WAL",
        "SCHEMA",
        "HEAD_SEQ",
        "LAST_ACTIVITY",
        "PROJECTS",
        "WORK_ITEMS",
        "COMMENTS"
    );
    for result in results {
        match result {
            Ok(s) => {
                let count = |kind: &str| {
                    s.counts
                        .iter()
                        .find(|(k, _)| *k == kind)
                        .map_or(0, |(_, v)| *v)
                };
                let schema = if s.migration_pending {
                    format!("{} (old)", s.schema_version)
                } else {
                    s.schema_version.to_string()
                };
                out.push_str(&format!(
                    "{:<24} {:>9} {:>9} {:>15} {:>9} {:<20} {:>8} {:>10} {:>8}\n",
                    s.tenant,
                    human_size(s.size_bytes),
                    human_size(s.wal_bytes),
                    schema,
                    s.head_seq,
                    s.last_activity.map_or_else(|| "-".to_owned(), iso_time),
                    count("projects"),
                    count("work_items"),
                    count("comments"),
                ));
            }
            Err((name, error)) => out.push_str(&format!("{name:<24} FAILED: {error}\n")),
        }
    }
    Report {
        stdout: out,
        stderr: String::new(),
        failed,
    }
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
fn iso_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `tenants move --to postgres`.
async fn move_to_postgres(
    data: &DataDir,
    tenant: &str,
    postgres: &PostgresUrl,
    options: pm_db::export::ImportOptions,
) -> Outcome {
    let id = pm_core::TenantId::parse(tenant).map_err(|e| Failure(e.to_string()))?;
    let engine = postgres.connect().await?;
    let report = pm_db::postgres::transfer::move_from_sqlite(
        &data.sqlite_config(),
        engine.pool(),
        &id,
        options,
    )
    .await
    .map_err(|e| Failure::from(&e))?;
    let what = if report.dry_run {
        "dry run, nothing written: would move"
    } else {
        "moved"
    };
    let replaced = if report.replaced {
        " (replacing its content there)"
    } else {
        ""
    };
    Ok(Report::ok(format!(
        "{what} tenant {id} to PostgreSQL{replaced} (head_seq={}): {}\n",
        report.source.head_seq,
        counts(&report.counts)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_sizes() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_time(1_770_651_588_000), "2026-02-09T15:39:48Z");
        assert_eq!(iso_time(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 * 1024 * 1024), "5.0 MiB");
    }
}
