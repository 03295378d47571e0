use std::process::ExitCode;

use clap::Parser;
use pm_server::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Migrate { data_dir, tenants } => {
            let reports = match pm_server::migrate::run(&data_dir, &tenants).await {
                Ok(reports) => reports,
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", data_dir.display());
                    return ExitCode::FAILURE;
                }
            };
            let mut failed = 0;
            for report in &reports {
                match &report.outcome {
                    Ok(head) => println!("{:<40} ok      head_seq={head}", report.tenant),
                    Err(e) => {
                        failed += 1;
                        println!("{:<40} FAILED  {e}", report.tenant);
                    }
                }
            }
            println!(
                "{} tenant(s): {} migrated or current, {failed} failed",
                reports.len(),
                reports.len() - failed
            );
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
