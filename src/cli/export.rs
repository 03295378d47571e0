//! `pm-server export`: one tenant as JSON Lines (format in `pm_db::export`).

use std::path::{Path, PathBuf};

use pm_core::TenantId;
use pm_db::export::ExportSummary;
use pm_db::postgres::PostgresEngine;
use pm_db::sqlite::transfer;
use pm_db::SqliteConfig;

use super::report::{counts, Failure, Outcome, Report, Storage};

/// `pm-server export --tenant T [-o FILE] [--engine postgres --postgres-url URL]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    storage: Storage,
    /// The tenant.
    #[arg(long)]
    tenant: String,
    /// Output file (written whole or not at all); standard output by default.
    #[arg(long, short)]
    out: Option<PathBuf>,
}

/// Exports the tenant; the summary line goes to standard error, next to the data.
pub async fn run(args: Args) -> Outcome {
    let id = TenantId::parse(&args.tenant).map_err(|e| Failure(e.to_string()))?;
    let source = match args.storage.postgres().await? {
        Some(engine) => Source::Postgres(engine),
        None => Source::Sqlite(args.storage.data.sqlite_config()),
    };
    let summary = match &args.out {
        None => {
            let mut stdout = std::io::BufWriter::new(std::io::stdout());
            source.export(&id, &mut stdout).await
        }
        Some(path) => to_file(&source, &id, path).await?,
    }
    .map_err(|e| Failure::from(&e))?;
    Ok(Report {
        stderr: format!(
            "exported tenant {id}: head_seq={}, {}\n",
            summary.header.head_seq,
            counts(&summary.counts)
        ),
        ..Report::default()
    })
}

/// Where the tenant is read from.
enum Source {
    Sqlite(SqliteConfig),
    Postgres(PostgresEngine),
}

impl Source {
    async fn export<W: std::io::Write + Send>(
        &self,
        id: &TenantId,
        out: &mut W,
    ) -> pm_db::Result<ExportSummary> {
        match self {
            Source::Sqlite(config) => transfer::export_tenant(config, id, out).await,
            Source::Postgres(engine) => {
                pm_db::postgres::transfer::export_tenant(engine.pool(), id, out).await
            }
        }
    }
}

/// Writes the export beside `path` and renames it into place once complete and synced.
async fn to_file(
    source: &Source,
    id: &TenantId,
    path: &Path,
) -> Result<pm_db::Result<ExportSummary>, Failure> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let file = std::fs::File::create(&partial)
        .map_err(|e| Failure(format!("cannot create {}: {e}", partial.display())))?;
    let mut file = std::io::BufWriter::new(file);
    let written = source.export(id, &mut file).await;
    let finished = written.and_then(|summary| {
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&partial, path)?;
        Ok(summary)
    });
    if finished.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    Ok(finished)
}
