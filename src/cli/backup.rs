//! `pm-server backup`: consistent online copies of tenant databases.

use std::path::PathBuf;

use pm_core::TenantId;
use pm_db::sqlite::backup::{self, BackupReport};

use super::report::{each_tenant, resolve_tenants, DataDir, Failure, Outcome};

/// `pm-server backup --to DIR [--tenant T]...`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    data: DataDir,
    /// Backup directory (created if missing); an older backup of a tenant is replaced.
    #[arg(long)]
    to: PathBuf,
    /// Only these tenants (repeatable). Without it: every tenant in the data dir.
    #[arg(long = "tenant")]
    tenants: Vec<String>,
}

/// Backs up the named tenants (all when none are named) into `--to`, one line each.
pub async fn run(args: Args) -> Outcome {
    let config = args.data.sqlite_config();
    let ids = resolve_tenants(&args.tenants, || config.list_tenants())
        .map_err(|e| Failure(format!("cannot read the data directory: {e}")))?;
    Ok(each_tenant(&ids, "backed up", async |id: &TenantId| {
        let report = backup::backup_tenant(&config, id, &args.to).await?;
        Ok(line(id, &report))
    })
    .await)
}

fn line(id: &TenantId, report: &BackupReport) -> String {
    format!(
        "{:<24} ok      {} bytes, head_seq={}, schema={}, {} ms -> {}",
        id.as_str(),
        report.bytes,
        report.verified.head_seq,
        report.verified.schema_version,
        report.elapsed.as_millis(),
        report.file.display()
    )
}
