//! The `pm-server` binary: parses the command line and runs the command (see
//! [`pm_server::cli`]).

use std::process::ExitCode;

use clap::Parser;
use pm_server::cli::{self, Cli};

/// mimalloc for Rust's allocations; with its `override` feature it also stands in for
/// `malloc` and `free`, so SQLite's allocations (thousands per opened tenant, on its
/// connections' threads) go to it too. glibc's allocator spent a quarter of the server's CPU
/// on them when tenants were opened and closed by the thousand.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::logging::init(cli.log_format);
    cli::run(cli.command).await
}
