//! `pm-server restore`: replace tenant databases with verified backups.

use std::path::PathBuf;

use pm_core::TenantId;
use pm_db::sqlite::backup::{self, RestoreReport};

use super::report::{each_tenant, resolve_tenants, DataDir, Failure, Outcome};

/// `pm-server restore --from DIR [--tenant T]... [--force]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    data: DataDir,
    /// Backup directory, as written by `backup --to`.
    #[arg(long)]
    from: PathBuf,
    /// Only these tenants (repeatable). Without it: every backup in the directory.
    #[arg(long = "tenant")]
    tenants: Vec<String>,
    /// Replace a tenant that already has a database (never one a server has open).
    #[arg(long)]
    force: bool,
}

/// Restores the named tenants (every backup in `--from` when none are named), one line each.
pub async fn run(args: Args) -> Outcome {
    let config = args.data.sqlite_config();
    let ids = resolve_tenants(&args.tenants, || backup::list_backups(&args.from))
        .map_err(|e| Failure(format!("cannot read the backup directory: {e}")))?;
    Ok(each_tenant(&ids, "restored", async |id: &TenantId| {
        let file = args.from.join(backup::backup_file_name(id));
        let report = backup::restore_tenant(&config, id, &file, args.force).await?;
        Ok(line(id, &report))
    })
    .await)
}

fn line(id: &TenantId, report: &RestoreReport) -> String {
    format!(
        "{:<24} {}  head_seq={}, schema={}",
        id.as_str(),
        if report.replaced {
            "replaced"
        } else {
            "restored"
        },
        report.verified.head_seq,
        report.verified.schema_version
    )
}
