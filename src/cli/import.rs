//! `pm-server import`: load an export into one tenant, all or nothing: pm-server's own JSON
//! Lines, or the upstream board's JSON export (`--from agile-board`).

use std::io::BufReader;
use std::path::PathBuf;

use pm_core::TenantId;
use pm_db::export::ImportOptions;
use pm_db::sqlite::transfer;
use pm_db::upstream::{UpstreamOptions, UpstreamReport};

use super::report::{counts, Failure, Outcome, Report, Storage};

/// The format of the file to import.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// pm-server's own export (JSON Lines, `pm-server export`).
    #[default]
    PmServer,
    /// The export of the upstream blazor-agile-board server (one JSON object,
    /// `schema_version` 1): ids, numbers, times, authors, versions and positions kept.
    AgileBoard,
}

/// `pm-server import --tenant T [--from FORMAT] [FILE] [--dry-run] [--replace] [--skip-dangling]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    storage: Storage,
    /// The tenant to import into.
    #[arg(long)]
    tenant: String,
    /// The export file; standard input when absent.
    file: Option<PathBuf>,
    /// The format of the file.
    #[arg(long, value_enum, default_value_t = Format::PmServer)]
    from: Format,
    /// Validate and report counts; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Replace the content of a tenant that has some (merging is not supported).
    #[arg(long)]
    replace: bool,
    /// `--from agile-board`: import without references to rows that are not in the file
    /// (each reported), instead of refusing.
    #[arg(long)]
    skip_dangling: bool,
}

/// Imports the file (or standard input) and reports what was (or would be) imported.
pub async fn run(args: Args) -> Outcome {
    let config = args.storage.data.sqlite_config();
    let id = TenantId::parse(&args.tenant).map_err(|e| Failure(e.to_string()))?;
    let postgres = args.storage.postgres().await?;
    if args.from == Format::AgileBoard {
        if postgres.is_some() {
            return Err(Failure(
                "--from agile-board imports into SQLite tenants; import it there, then \
                 `pm-server tenants move` it to PostgreSQL"
                    .into(),
            ));
        }
        return agile_board(&config, &id, &args).await;
    }
    if args.skip_dangling {
        return Err(Failure(
            "--skip-dangling applies to --from agile-board only (a pm-server export has no \
             dangling references)"
                .into(),
        ));
    }
    let options = ImportOptions {
        dry_run: args.dry_run,
        replace: args.replace,
    };
    let input: Box<dyn std::io::BufRead + Send> = match &args.file {
        None => Box::new(BufReader::new(std::io::stdin())),
        Some(path) => Box::new(BufReader::new(open(path)?)),
    };
    let report = match &postgres {
        None => transfer::import_tenant(&config, &id, input, options).await,
        Some(engine) => {
            pm_db::postgres::transfer::import_tenant(engine.pool(), &id, input, options).await
        }
    }
    .map_err(|e| Failure::from(&e))?;
    let what = if report.dry_run {
        "dry run, nothing written: would import"
    } else {
        "imported"
    };
    let replaced = if report.replaced {
        " (replacing its content)"
    } else {
        ""
    };
    Ok(Report::ok(format!(
        "{what} into tenant {id}{replaced} from tenant {} (head_seq={}): {}\n",
        report.source.tenant,
        report.source.head_seq,
        counts(&report.counts)
    )))
}

fn open(path: &std::path::Path) -> Result<std::fs::File, Failure> {
    std::fs::File::open(path).map_err(|e| Failure(format!("cannot open {}: {e}", path.display())))
}

async fn agile_board(config: &pm_db::SqliteConfig, id: &TenantId, args: &Args) -> Outcome {
    let options = UpstreamOptions {
        dry_run: args.dry_run,
        replace: args.replace,
        skip_dangling: args.skip_dangling,
    };
    let report = match &args.file {
        None => transfer::import_agile_board(config, id, std::io::stdin().lock(), options).await,
        Some(path) => {
            let file = open(path)?;
            transfer::import_agile_board(config, id, BufReader::new(file), options).await
        }
    }
    .map_err(|e| Failure::from(&e))?;
    Ok(Report::ok(agile_board_text(id, &report)))
}

/// The report: one line with the counts, then one line per reference left out and per note.
fn agile_board_text(id: &TenantId, report: &UpstreamReport) -> String {
    let what = if report.dry_run {
        "dry run, nothing written: would import"
    } else {
        "imported"
    };
    let replaced = if report.replaced {
        " (replacing its content)"
    } else {
        ""
    };
    let exported = match (&report.exported_at, &report.exported_by) {
        (Some(at), Some(by)) => format!(", exported {at} by {by}"),
        (Some(at), None) => format!(", exported {at}"),
        _ => String::new(),
    };
    let mut text = format!(
        "{what} into tenant {id}{replaced} from an agile-board export (schema_version 1{exported}): {}\n",
        counts(&report.counts)
    );
    for skipped in &report.skipped {
        text.push_str(&format!("skipped: {skipped}\n"));
    }
    for note in &report.notes {
        text.push_str(&format!("note: {note}\n"));
    }
    text
}
