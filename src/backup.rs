//! `pm-server backup` / `restore` / `export` / `import`: the operator side of
//! `pm_db::backup` and `pm_db::export`, with one report line per tenant.

use std::io::BufReader;
use std::path::Path;

use pm_core::TenantId;
use pm_db::backup::{self, BackupReport, RestoreReport};
use pm_db::export::{self, Counts, ImportOptions};
use pm_db::{inspect, RegistryConfig};

/// The tenants named, or all found by `find` when none are; invalid names stay as errors.
fn resolve(
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

/// Backs up the named tenants (all when empty) into `dest`. Returns the report and whether
/// any tenant failed; one failure does not stop the others.
pub async fn backup(
    config: &RegistryConfig,
    names: &[String],
    dest: &Path,
) -> Result<(String, bool), String> {
    let ids = resolve(names, || inspect::list_tenants(config))
        .map_err(|e| format!("cannot read the data directory: {e}"))?;
    Ok(each_tenant(&ids, "backed up", async |id: &TenantId| {
        let report = backup::backup_tenant(config, id, dest).await?;
        Ok(backup_line(id, &report))
    })
    .await)
}

/// Runs `run` for each tenant in turn, one report line each (its own line, or `FAILED` and
/// the reason), then a summary counting the ones `done` and the failures; whether any failed.
async fn each_tenant(
    ids: &[Result<TenantId, String>],
    done: &str,
    mut run: impl AsyncFnMut(&TenantId) -> pm_db::Result<String>,
) -> (String, bool) {
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
                    format!("{:<24} FAILED  {}", id.as_str(), safe(&e))
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
    (out, failed > 0)
}

fn backup_line(id: &TenantId, report: &BackupReport) -> String {
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

/// Restores the named tenants (all backups in `from` when empty) from `from`.
pub async fn restore(
    config: &RegistryConfig,
    names: &[String],
    from: &Path,
    force: bool,
) -> Result<(String, bool), String> {
    let ids = resolve(names, || backup::list_backups(from))
        .map_err(|e| format!("cannot read the backup directory: {e}"))?;
    Ok(each_tenant(&ids, "restored", async |id: &TenantId| {
        let file = from.join(backup::backup_file_name(id));
        let report = backup::restore_tenant(config, id, &file, force).await?;
        Ok(restore_line(id, &report))
    })
    .await)
}

fn restore_line(id: &TenantId, report: &RestoreReport) -> String {
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

/// Exports one tenant to `out` (a file, written whole or not at all) or standard output.
/// Returns the summary line for standard error.
pub async fn export(
    config: &RegistryConfig,
    tenant: &str,
    out: Option<&Path>,
) -> Result<String, String> {
    let id = TenantId::parse(tenant).map_err(|e| e.to_string())?;
    let summary = match out {
        None => {
            let mut stdout = std::io::BufWriter::new(std::io::stdout());
            export::export_tenant(config, &id, &mut stdout).await
        }
        Some(path) => {
            let mut partial = path.as_os_str().to_owned();
            partial.push(".partial");
            let partial = std::path::PathBuf::from(partial);
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(&partial)
                    .map_err(|e| format!("cannot create {}: {e}", partial.display()))?,
            );
            let written = export::export_tenant(config, &id, &mut file).await;
            let finished = written.and_then(|summary| {
                let file = file.into_inner().map_err(|e| e.into_error())?;
                file.sync_all()?;
                std::fs::rename(&partial, path)?;
                Ok(summary)
            });
            if finished.is_err() {
                let _ = std::fs::remove_file(&partial);
            }
            finished
        }
    }
    .map_err(|e| safe(&e))?;
    Ok(format!(
        "exported tenant {id}: head_seq={}, {}",
        summary.header.head_seq,
        counts(&summary.counts)
    ))
}

/// Imports a file (or standard input) into one tenant.
pub async fn import(
    config: &RegistryConfig,
    tenant: &str,
    input: Option<&Path>,
    options: ImportOptions,
) -> Result<String, String> {
    let id = TenantId::parse(tenant).map_err(|e| e.to_string())?;
    let report = match input {
        None => export::import_tenant(config, &id, std::io::stdin().lock(), options).await,
        Some(path) => {
            let file = std::fs::File::open(path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            export::import_tenant(config, &id, BufReader::new(file), options).await
        }
    }
    .map_err(|e| safe(&e))?;
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
    Ok(format!(
        "{what} into tenant {id}{replaced} from tenant {} (head_seq={}): {}",
        report.source.tenant,
        report.source.head_seq,
        counts(&report.counts)
    ))
}

fn counts(counts: &Counts) -> String {
    counts
        .iter()
        .map(|(kind, n)| format!("{kind}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Storage errors for the operator, without SQL.
fn safe(error: &pm_db::Error) -> String {
    match error {
        pm_db::Error::Database(e) => format!(
            "database error: {}",
            e.as_database_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned())
        ),
        other => other.to_string(),
    }
}
