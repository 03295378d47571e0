//! The `pm-server` binary: parses the command line and runs the command (see
//! [`pm_server::cli`]).

use std::process::ExitCode;

use clap::Parser;
use pm_server::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    cli::run(Cli::parse().command).await
}
