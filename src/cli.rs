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
    /// Bring tenant databases to the current schema (creating the named ones if missing).
    Migrate {
        /// Root data directory; tenants live in `<data-dir>/tenants/<id>/`.
        #[arg(long, env = "PM_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Only these tenants (repeatable). Without it: every tenant found in the data dir.
        #[arg(long = "tenant")]
        tenants: Vec<String>,
    },
}
