use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use pm_core::{TenantId, UserId};
use pm_server::cli::{self, Cli, ClientCommand, Command, TenantsCommand};
use pm_server::config::Settings;
use pm_server::{auth, server};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve {
            config,
            listen,
            data_dir,
            set,
            dev,
        } => {
            let mut overrides = set;
            if let Some(listen) = listen {
                overrides.push(format!("server.listen={listen}"));
            }
            if let Some(dir) = data_dir {
                overrides.push(format!("server.data_dir={}", dir.display()));
            }
            serve(config, overrides, dev).await
        }
        Command::Token {
            tenant,
            user,
            name,
            ttl_secs,
            dev_data_dir,
        } => {
            let secret = match dev_data_dir {
                Some(dir) => match cli::dev_secret(&dir) {
                    Ok(secret) => secret,
                    Err(e) => return fail(format!("cannot read the development secret: {e}")),
                },
                None => std::env::var("PM_JWT_SECRET").unwrap_or_default(),
            };
            let (tenant, user) = match (TenantId::parse(&tenant), UserId::parse("user", &user)) {
                (Ok(t), Ok(u)) => (t, u),
                (Err(e), _) | (_, Err(e)) => return fail(e.to_string()),
            };
            match auth::mint_hs256(
                &secret,
                &tenant,
                &user,
                name.as_deref(),
                Duration::from_secs(ttl_secs),
            ) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e.to_string()),
            }
        }
        Command::Client { url, token, what } => match what {
            ClientCommand::Send { requests } => {
                pm_server::client_cli::send(&url, &token, requests).await
            }
            ClientCommand::Watch {
                projects,
                types,
                from_seq,
            } => pm_server::client_cli::watch(&url, &token, projects, types, from_seq).await,
        },
        Command::Migrate {
            data_dir,
            tenants,
            parallel,
            migrations_dir,
        } => migrate(&data_dir, &tenants, parallel, migrations_dir).await,
        Command::Backup { data, to, tenants } => {
            let config = pm_db::RegistryConfig::new(data.data_dir);
            report(pm_server::backup::backup(&config, &tenants, &to).await)
        }
        Command::Restore {
            data,
            from,
            tenants,
            force,
        } => {
            let config = pm_db::RegistryConfig::new(data.data_dir);
            report(pm_server::backup::restore(&config, &tenants, &from, force).await)
        }
        Command::Export { data, tenant, out } => {
            let config = pm_db::RegistryConfig::new(data.data_dir);
            match pm_server::backup::export(&config, &tenant, out.as_deref()).await {
                Ok(summary) => {
                    eprintln!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Import {
            data,
            tenant,
            file,
            dry_run,
            replace,
        } => {
            let config = pm_db::RegistryConfig::new(data.data_dir);
            let options = pm_db::export::ImportOptions { dry_run, replace };
            match pm_server::backup::import(&config, &tenant, file.as_deref(), options).await {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Tenants { what } => match what {
            TenantsCommand::List { data_dir, json } => {
                match pm_server::tenants::list(&pm_db::RegistryConfig::new(data_dir), json).await {
                    Ok(text) => {
                        print!("{text}");
                        if json {
                            println!();
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                }
            }
            TenantsCommand::Stats {
                data_dir,
                tenants,
                json,
                migrations_dir,
            } => {
                let mut config = pm_db::RegistryConfig::new(data_dir);
                config.migrations_dir = migrations_dir;
                match pm_server::tenants::stats(&config, &tenants, json).await {
                    Ok((text, failed)) => {
                        print!("{text}");
                        if json {
                            println!();
                        }
                        if failed {
                            ExitCode::FAILURE
                        } else {
                            ExitCode::SUCCESS
                        }
                    }
                    Err(e) => fail(e),
                }
            }
        },
    }
}

/// Prints a per-tenant report; exit 1 if any tenant failed.
fn report(result: Result<(String, bool), String>) -> ExitCode {
    match result {
        Ok((text, failed)) => {
            print!("{text}");
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => fail(e),
    }
}

fn fail(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

async fn serve(config: Option<std::path::PathBuf>, overrides: Vec<String>, dev: bool) -> ExitCode {
    let mut settings =
        match Settings::load(config.as_deref(), |k| std::env::var(k).ok(), &overrides) {
            Ok(settings) => settings,
            Err(e) => return fail(e.to_string()),
        };
    if dev && settings.auth.secret.is_empty() {
        match cli::dev_secret(&settings.server.data_dir) {
            Ok(secret) => settings.auth.secret = secret,
            Err(e) => return fail(format!("cannot create the development secret: {e}")),
        }
    }
    let listener = match tokio::net::TcpListener::bind(settings.server.listen).await {
        Ok(listener) => listener,
        Err(e) => return fail(format!("cannot listen on {}: {e}", settings.server.listen)),
    };
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let secret = settings.auth.secret.clone();
    let data_dir = settings.server.data_dir.clone();
    let app = match server::App::new(settings) {
        Ok(app) => app,
        Err(e) => return fail(e.to_string()),
    };
    tracing::info!(%address, version = pm_server::BUILD_VERSION, "serving");
    if dev {
        let tenant = TenantId::parse("dev").expect("a valid tenant id");
        let user = UserId::parse("sub", "dev-user").expect("a valid user id");
        match auth::mint_hs256(
            &secret,
            &tenant,
            &user,
            Some("Dev User"),
            Duration::from_secs(24 * 3600),
        ) {
            Ok(token) => {
                println!("pm-server {} (development mode)", pm_server::BUILD_VERSION);
                println!("  data directory: {}", data_dir.display());
                println!("  WebSocket:      ws://{address}/ws");
                println!("  token (tenant dev, user dev-user, 24 h):\n    {token}");
                println!("  try it:         export PM_URL=ws://{address}/ws PM_TOKEN={token}");
                println!(
                    r#"                  pm-server client send '{{"command": {{"createProject": {{"key": "PM", "name": "Board"}}}}}}'"#
                );
                println!("                  pm-server client watch --from-seq 0");
                println!("                  (from a checkout: cargo run --release -- client ...)");
                println!(
                    "  more tokens:    pm-server token --dev-data-dir {} --tenant dev --user alice",
                    data_dir.display()
                );
                println!("  health:         curl http://{address}/healthz");
            }
            Err(e) => return fail(e.to_string()),
        }
    }
    // SIGHUP: apply new migrations of `storage.migrations_dir` while serving.
    let migrations = tokio::spawn(server::migrate_online_on_sighup(app.clone()));
    let served = server::serve(listener, app, shutdown_signal()).await;
    migrations.abort();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.to_string()),
    }
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

async fn migrate(
    data_dir: &std::path::Path,
    tenants: &[String],
    parallel: usize,
    migrations_dir: Option<std::path::PathBuf>,
) -> ExitCode {
    use pm_server::migrate::Outcome;

    let reports = match pm_server::migrate::run(data_dir, tenants, parallel, migrations_dir).await {
        Ok(reports) => reports,
        Err(e) => return fail(e),
    };
    let (mut created, mut migrated, mut current, mut failed) = (0, 0, 0, 0);
    for report in &reports {
        let what = match &report.outcome {
            Outcome::Created => {
                created += 1;
                format!("created     head_seq={}", report.head_seq)
            }
            Outcome::Migrated { from, to } => {
                migrated += 1;
                format!("migrated    {from} -> {to}, head_seq={}", report.head_seq)
            }
            Outcome::Current => {
                current += 1;
                format!("current     head_seq={}", report.head_seq)
            }
            Outcome::Failed(e) => {
                failed += 1;
                format!("FAILED      {e}")
            }
        };
        println!("{:<40} {what}", report.tenant);
    }
    println!(
        "{} tenant(s): {created} created, {migrated} migrated, {current} already current, {failed} failed",
        reports.len()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
