//! `pm-server import`: load a JSON Lines export into one tenant, all or nothing.

use std::io::BufReader;
use std::path::PathBuf;

use pm_core::TenantId;
use pm_db::export::ImportOptions;
use pm_db::sqlite::transfer;

use super::report::{counts, DataDir, Failure, Outcome, Report};

/// `pm-server import --tenant T [FILE] [--dry-run] [--replace]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    data: DataDir,
    /// The tenant to import into.
    #[arg(long)]
    tenant: String,
    /// The export file; standard input when absent.
    file: Option<PathBuf>,
    /// Validate and report counts; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Replace the content of a tenant that has some (merging is not supported).
    #[arg(long)]
    replace: bool,
}

/// Imports the file (or standard input) and reports what was (or would be) imported.
pub async fn run(args: Args) -> Outcome {
    let config = args.data.sqlite_config();
    let id = TenantId::parse(&args.tenant).map_err(|e| Failure(e.to_string()))?;
    let options = ImportOptions {
        dry_run: args.dry_run,
        replace: args.replace,
    };
    let report = match &args.file {
        None => transfer::import_tenant(&config, &id, std::io::stdin().lock(), options).await,
        Some(path) => {
            let file = std::fs::File::open(path)
                .map_err(|e| Failure(format!("cannot open {}: {e}", path.display())))?;
            transfer::import_tenant(&config, &id, BufReader::new(file), options).await
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
