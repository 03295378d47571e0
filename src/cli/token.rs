//! `pm-server token`: mint a development HS256 token, and the development secret that
//! `serve --dev` keeps in the data directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pm_core::{TenantId, UserId};
use pm_gateway::auth;

use super::report::{Failure, Outcome, Report};

/// `pm-server token --tenant T --user U [--name N] [--ttl-secs S] [--dev-data-dir DIR]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tenant id (`tid`).
    #[arg(long)]
    tenant: String,
    /// User id (`sub`).
    #[arg(long)]
    user: String,
    /// Display name (`name`).
    #[arg(long)]
    name: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    ttl_secs: u64,
    /// Use the development secret of this data directory instead of `PM_JWT_SECRET`.
    #[arg(long)]
    dev_data_dir: Option<PathBuf>,
}

/// Prints a token signed with `PM_JWT_SECRET` (or the development secret).
pub fn run(args: Args) -> Outcome {
    let secret = match &args.dev_data_dir {
        Some(dir) => dev_secret(dir)
            .map_err(|e| Failure(format!("cannot read the development secret: {e}")))?,
        None => std::env::var("PM_JWT_SECRET").unwrap_or_default(),
    };
    let tenant = TenantId::parse(&args.tenant).map_err(|e| Failure(e.to_string()))?;
    let user = UserId::parse("user", &args.user).map_err(|e| Failure(e.to_string()))?;
    let token = auth::mint_hs256(
        &secret,
        &tenant,
        &user,
        args.name.as_deref(),
        Duration::from_secs(args.ttl_secs),
    )
    .map_err(|e| Failure(e.to_string()))?;
    Ok(Report::ok(format!("{token}\n")))
}

/// The file holding the development secret inside a data directory.
pub const DEV_SECRET_FILE: &str = "dev-secret";

/// Reads the development secret of `data_dir`, creating it (random, 0600) if missing.
pub fn dev_secret(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join(DEV_SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(secret) if secret.trim().len() >= auth::MIN_SECRET_BYTES => {
            return Ok(secret.trim().to_owned())
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
    let secret: String = (0..2)
        .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(&path)?, secret.as_bytes())?;
    Ok(secret)
}
