//! `pm-server serve`: the gateway on one port until SIGINT or SIGTERM, with online schema
//! migrations on SIGHUP; `--dev` adds a development secret and prints a ready-to-use token and
//! the board's URL signed in with it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use pm_core::{TenantId, UserId};
use pm_gateway::settings::StorageEngine;
use pm_gateway::{auth, App, Settings};

use super::report::Failure;
use super::token::dev_secret;
use super::version::BUILD_VERSION;

/// The web origins `--dev` allows besides the server's own: loopback, any port.
const DEV_ORIGINS: &[&str] = &["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"];

/// `pm-server serve [--config FILE] [--listen ADDR] [--data-dir DIR] [--set K=V]... [--dev]`.
#[derive(Debug, clap::Args)]
pub struct Args {
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
}

/// Serves until SIGINT or SIGTERM; exit code 0 after an orderly shutdown.
pub async fn run(args: Args) -> ExitCode {
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.print(),
    }
}

async fn serve(args: Args) -> Result<(), Failure> {
    let mut overrides = args.set;
    if let Some(listen) = args.listen {
        overrides.push(format!("server.listen={listen}"));
    }
    if let Some(dir) = args.data_dir {
        overrides.push(format!("server.data_dir={}", dir.display()));
    }
    let mut settings = Settings::load(
        args.config.as_deref(),
        |k| std::env::var(k).ok(),
        &overrides,
    )
    .map_err(|e| Failure(e.to_string()))?;
    let shutdown = shutdown_signal()
        .map_err(|e| Failure(format!("cannot listen for SIGINT and SIGTERM: {e}")))?;
    if args.dev {
        // Pages served by a development server on this machine (any port) may connect.
        for origin in DEV_ORIGINS {
            if !settings.server.allowed_origins.iter().any(|o| o == origin) {
                settings.server.allowed_origins.push((*origin).to_owned());
            }
        }
    }
    if args.dev && settings.auth.secret.is_empty() {
        settings.auth.secret = dev_secret(&settings.server.data_dir)
            .map_err(|e| Failure(format!("cannot create the development secret: {e}")))?;
    }
    let listener = pm_gateway::listen(settings.server.listen, settings.server.listen_backlog)
        .map_err(|e| Failure(format!("cannot listen on {}: {e}", settings.server.listen)))?;
    let local = listener.local_addr().ok();
    let address = local.map(|a| a.to_string()).unwrap_or_default();
    let secret = settings.auth.secret.clone();
    let data_dir = settings.server.data_dir.clone();
    let engine = settings.storage.engine;
    let bus = !settings.bus.nats_url.is_empty();
    let app = App::open(settings, BUILD_VERSION)
        .await
        .map_err(|e| Failure(e.to_string()))?;
    tracing::info!(%address, version = BUILD_VERSION, "serving");
    if engine == StorageEngine::Postgres {
        // Neither URL is logged: they may carry credentials.
        tracing::info!(bus, "tenants are stored in PostgreSQL");
    }
    if args.dev {
        print_dev_banner(&secret, local, &data_dir)?;
    }
    // SIGHUP: apply new migrations of `storage.migrations_dir` while serving.
    let migrations = tokio::spawn(app.clone().migrate_online_on_sighup());
    // On a worker thread, not this one (`main`'s `block_on`): there every accepted connection
    // and every connection that ended was a cross-thread wake-up of this thread, a quarter of
    // the server's context switches in a reconnect storm.
    let served = tokio::spawn(pm_gateway::serve(listener, app, shutdown)).await;
    migrations.abort();
    match served {
        Ok(served) => served.map_err(|e| Failure(e.to_string())),
        Err(e) => Err(Failure(format!("the server stopped unexpectedly: {e}"))),
    }
}

/// What `--dev` prints: where the server is, the board signed in, a token for tenant `dev`,
/// and how to use it.
fn print_dev_banner(
    secret: &str,
    local: Option<std::net::SocketAddr>,
    data_dir: &std::path::Path,
) -> Result<(), Failure> {
    // A browser cannot open 0.0.0.0 or [::]: point it at loopback on the same port.
    let address = match local {
        Some(a) if a.ip().is_unspecified() && a.is_ipv4() => format!("127.0.0.1:{}", a.port()),
        Some(a) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
        Some(a) => a.to_string(),
        None => String::new(),
    };
    let tenant = TenantId::parse("dev").expect("a valid tenant id");
    let user = UserId::parse("sub", "dev-user").expect("a valid user id");
    let token = auth::mint_hs256(
        secret,
        &tenant,
        &user,
        Some("Dev User"),
        Duration::from_secs(24 * 3600),
    )
    .map_err(|e| Failure(e.to_string()))?;
    println!("pm-server {} (development mode)", BUILD_VERSION);
    println!("  data directory: {}", data_dir.display());
    // The token rides in the fragment, which the browser keeps to itself: it never reaches a
    // request line or a log. The page moves it to session storage and clears the address bar.
    println!("  board:          http://{address}/#token={token}");
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
    Ok(())
}

/// Completes on SIGINT or SIGTERM. The handlers are installed at once (not when the future
/// is first polled), so a signal that arrives while the server is starting is not lost to the
/// default action, which would end the process without draining.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
