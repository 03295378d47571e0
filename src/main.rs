//! The `pm-server` binary: parses the command line and runs the command (see
//! [`pm_server::cli`]).

use std::process::ExitCode;

use clap::Parser;
use pm_server::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::logging::init(cli.log_format);
    cli::run(cli.command).await
}
