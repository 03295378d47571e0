//! The `pm-server` command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// pm-server: real-time backend for agile boards.
#[derive(Debug, Parser)]
#[command(name = "pm-server", version = crate::BUILD_VERSION, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve WebSocket clients (and /healthz, /readyz, /metrics) until SIGINT or SIGTERM.
    Serve {
        /// Settings file (TOML); `PM_*` variables and flags override it.
        #[arg(long, env = "PM_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address, e.g. 127.0.0.1:7400 (overrides `server.listen`).
        #[arg(long)]
        listen: Option<String>,
        /// Data directory (overrides `server.data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Any setting, as `section.key=value` (repeatable), e.g. `limits.max_connections=500`.
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        set: Vec<String>,
        /// Development mode: a generated secret kept in the data directory, and a ready-to-use
        /// token printed at start.
        #[arg(long)]
        dev: bool,
    },
    /// Mint an HS256 token with the configured secret (`PM_JWT_SECRET`).
    Token {
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
    },
    /// What is in the data directory: `list` (ids and sizes) or `stats` (schema, head seq,
    /// counts, last activity). Read-only; safe while a server is running.
    Tenants {
        /// `list` or `stats`.
        #[command(subcommand)]
        what: TenantsCommand,
    },
    /// Talk to a server: send requests given as JSON, or watch events (JSON lines out).
    Client {
        /// WebSocket URL of the server.
        #[arg(long, env = "PM_URL", default_value = "ws://127.0.0.1:7400/ws")]
        url: String,
        /// Token to connect with.
        #[arg(long, env = "PM_TOKEN", hide_env_values = true)]
        token: String,
        /// `send` or `watch`.
        #[command(subcommand)]
        what: ClientCommand,
    },
    /// Bring tenant databases to the current schema (creating the named ones if missing).
    Migrate {
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
    },
    /// Consistent online copies of tenant databases into `<to>/<tenant>.db`, each verified
    /// with `PRAGMA integrity_check`; safe while a server is serving them.
    Backup {
        #[command(flatten)]
        data: DataDir,
        /// Backup directory (created if missing); an older backup of a tenant is replaced.
        #[arg(long)]
        to: PathBuf,
        /// Only these tenants (repeatable). Without it: every tenant in the data dir.
        #[arg(long = "tenant")]
        tenants: Vec<String>,
    },
    /// Replace tenant databases with verified backups from `<from>/<tenant>.db`. A tenant a
    /// running server has open is always refused.
    Restore {
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
    },
    /// Write one tenant as JSON Lines (header line, then one row per line, change log
    /// included); safe while a server is serving it.
    Export {
        #[command(flatten)]
        data: DataDir,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Output file (written whole or not at all); standard output by default.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Load a JSON Lines export into one tenant: every row validated, one transaction. Refuses
    /// a tenant with content (unless --replace) and one a running server has open.
    Import {
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
    },
}

/// `pm-server backup|restore|export|import` (data directory operations).
#[derive(Debug, clap::Args)]
pub struct DataDir {
    /// Root data directory; tenants live in `<data-dir>/tenants/<id>/`.
    #[arg(long, env = "PM_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

/// `pm-server client ...`.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Send requests (ClientFrame bodies in the proto3 JSON mapping), given as arguments or one
    /// per line on standard input, e.g. '{"query": {"listProjects": {}}}'. Prints each
    /// Response as a JSON line; exits 1 if any was an error, 2 on connection or input errors.
    Send {
        /// The requests; none: read standard input.
        requests: Vec<String>,
    },
    /// Subscribe and print events as JSON lines until interrupted (reconnects and resumes).
    Watch {
        /// Only these projects (repeatable).
        #[arg(long = "project")]
        projects: Vec<String>,
        /// Only these entity types, e.g. work_item (repeatable).
        #[arg(long = "type")]
        types: Vec<String>,
        /// Start after this change number (default: only new changes).
        #[arg(long)]
        from_seq: Option<u64>,
    },
}

/// `pm-server tenants ...`.
#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Tenant ids and their size on disk.
    List {
        /// Root data directory.
        #[arg(long, env = "PM_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Per tenant: size, schema version, head seq, last activity, entity counts.
    Stats {
        /// Root data directory.
        #[arg(long, env = "PM_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
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
}

/// The file holding the development secret inside a data directory.
pub const DEV_SECRET_FILE: &str = "dev-secret";

/// Reads the development secret of `data_dir`, creating it (random, 0600) if missing.
pub fn dev_secret(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join(DEV_SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(secret) if secret.trim().len() >= crate::auth::MIN_SECRET_BYTES => {
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
