//! The listener: one port for `/ws`, `/healthz`, `/readyz` and `/metrics`, and an orderly
//! shutdown.
//!
//! [`serve`] takes an already-bound listener and a shutdown future, so tests bind port 0 and
//! stop the server when they are done.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pm_db::TenantRegistry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::auth::{AuthConfigError, Verifier};
use crate::config::Settings;
use crate::hub::Hubs;
use crate::limits::ConnectionCounts;
use crate::metrics::{Metrics, TenantFigures};
use crate::{http, session};

/// Everything connections share.
#[derive(Debug)]
pub struct App {
    /// The settings in force.
    pub settings: Settings,
    /// Open tenants.
    pub registry: TenantRegistry,
    /// Token verification.
    pub verifier: Verifier,
    /// Fan-out per tenant.
    pub hubs: Hubs,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Connections per tenant and user.
    pub counts: Arc<ConnectionCounts>,
    connections: Arc<Semaphore>,
    ready: AtomicBool,
}

impl App {
    /// Builds the shared state from settings.
    pub fn new(settings: Settings) -> Result<Arc<App>, AuthConfigError> {
        let verifier = Verifier::new(&settings.auth)?;
        Ok(Arc::new(App {
            registry: TenantRegistry::new(settings.registry_config()),
            verifier,
            hubs: Hubs::default(),
            metrics: Arc::new(Metrics::default()),
            counts: Arc::new(ConnectionCounts::default()),
            connections: Arc::new(Semaphore::new(settings.limits.max_connections)),
            ready: AtomicBool::new(false),
            settings,
        }))
    }

    fn websocket_config(&self) -> WebSocketConfig {
        let max = self.settings.limits.max_frame_bytes;
        // A small read buffer keeps idle connections cheap (~9 KiB instead of ~130 KiB). The
        // write buffer gathers what one flush sends (a burst of events) into few writes; with
        // 0, tungstenite writes every frame with its own syscall.
        WebSocketConfig::default()
            .read_buffer_size(4 * 1024)
            .write_buffer_size(8 * 1024)
            .max_write_buffer_size(max.saturating_mul(4).max(64 * 1024))
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
    }
}

/// Serves connections on `listener` until `shutdown` completes, then stops accepting, lets
/// every connection finish its in-flight requests and say goodbye, and returns within the
/// drain timeout.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    app.ready.store(true, Ordering::Release);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let permit = app.connections.clone().try_acquire_owned().ok();
                connections.spawn(connection(app.clone(), stream, peer, permit, stop_rx.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    tracing::info!(connections = connections.len(), "shutting down");
    app.ready.store(false, Ordering::Release);
    drop(listener);
    let _ = stop_tx.send(true);
    let grace =
        Duration::from_millis(app.settings.server.drain_timeout_ms) + Duration::from_secs(2);
    if tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            left = connections.len(),
            "drain timeout: closing remaining connections"
        );
        connections.abort_all();
    }
    Ok(())
}

async fn connection(
    app: Arc<App>,
    mut stream: TcpStream,
    peer: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
    stop: watch::Receiver<bool>,
) {
    let timeout = Duration::from_millis(app.settings.limits.hello_timeout_ms);
    let request = match tokio::time::timeout(timeout, http::read_head(&mut stream)).await {
        Ok(Ok(request)) => request,
        Ok(Err(http::HeadError::Bad(why))) => {
            let _ = http::respond(
                &mut stream,
                "400 Bad Request",
                "text/plain",
                &format!("{why}\n"),
            )
            .await;
            return;
        }
        Ok(Err(_)) | Err(_) => return,
    };
    let result = match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/healthz") => http::respond(&mut stream, "200 OK", "text/plain", "ok\n").await,
        ("GET", "/readyz") if app.ready.load(Ordering::Acquire) => {
            http::respond(&mut stream, "200 OK", "text/plain", "ready\n").await
        }
        ("GET", "/readyz") => {
            http::respond(
                &mut stream,
                "503 Service Unavailable",
                "text/plain",
                "not ready\n",
            )
            .await
        }
        ("GET", "/metrics") => {
            let body = app.metrics.render(&tenant_figures(&app));
            http::respond(&mut stream, "200 OK", "text/plain; version=0.0.4", &body).await
        }
        (_, "/ws") => {
            let Some(permit) = permit else {
                app.metrics
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                let _ = http::respond(
                    &mut stream,
                    "503 Service Unavailable",
                    "text/plain",
                    "too many connections\n",
                )
                .await;
                return;
            };
            if !app.ready.load(Ordering::Acquire) {
                let _ = http::respond(
                    &mut stream,
                    "503 Service Unavailable",
                    "text/plain",
                    "shutting down\n",
                )
                .await;
                return;
            }
            match http::upgrade(&mut stream, &request).await {
                Ok(true) => {
                    let ws = WebSocketStream::from_partially_read(
                        stream,
                        request.rest,
                        Role::Server,
                        Some(app.websocket_config()),
                    )
                    .await;
                    app.metrics
                        .connections_total
                        .fetch_add(1, Ordering::Relaxed);
                    app.metrics.connections_open.fetch_add(1, Ordering::Relaxed);
                    session::run(app.clone(), ws, peer, stop).await;
                    app.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                    Ok(())
                }
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            }
        }
        _ => {
            http::respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                "not found: try /ws, /healthz, /readyz or /metrics\n",
            )
            .await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

fn tenant_figures(app: &App) -> TenantFigures {
    let stats = app.registry.writer_totals();
    TenantFigures {
        open: app.registry.open_count() as u64,
        groups: stats.0,
        jobs: stats.1,
        pruned_events: app.registry.pruned_events_total(),
        schema: app.registry.schema_status(),
    }
}

/// Rolls out the migrations directory to the open tenants (see
/// [`TenantRegistry::migrate_online`]) and logs the outcome: what SIGHUP does.
pub async fn migrate_online(app: &App) -> pm_db::Result<pm_db::RolloutReport> {
    let report = app.registry.migrate_online().await.inspect_err(|error| {
        tracing::error!(%error, "online schema migration refused; nothing was changed");
    })?;
    match &report.failed {
        None => tracing::info!(
            target_version = report.target_version,
            tenants = report.migrated.len(),
            closed_pending = report.closed_pending,
            "online schema migration done"
        ),
        Some((tenant, error)) => tracing::error!(
            target_version = report.target_version,
            %tenant,
            %error,
            migrated = report.migrated.len(),
            skipped = report.skipped.len(),
            "online schema migration FAILED; stopped the rollout"
        ),
    }
    Ok(report)
}

/// Runs [`migrate_online`] on every SIGHUP, until the returned future is dropped.
pub async fn migrate_online_on_sighup(app: Arc<App>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => hangup,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; online migrations are off");
                return;
            }
        };
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the migrations directory");
            let _ = migrate_online(&app).await;
        }
    }
    #[cfg(not(unix))]
    {
        let _ = app;
        std::future::pending::<()>().await;
    }
}
