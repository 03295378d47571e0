//! The listener: one port for `/ws`, `/healthz`, `/readyz` and `/metrics`, and an orderly
//! shutdown.
//!
//! [`serve`] takes an already-bound listener and a shutdown future, so tests bind port 0 and
//! stop the server when they are done.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::app::App;
use crate::{http, metrics, session};

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
    app.set_ready(true);
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
                let permit = app.connection_place();
                connections.spawn(connection(app.clone(), stream, peer, permit, stop_rx.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    tracing::info!(connections = connections.len(), "shutting down");
    app.set_ready(false);
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
        ("GET", "/readyz") if app.is_ready() => {
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
            let body = app.metrics.render();
            http::respond(&mut stream, "200 OK", metrics::CONTENT_TYPE, &body).await
        }
        (_, "/ws") => {
            let Some(permit) = permit else {
                app.metrics.connections_refused.inc();
                let _ = http::respond(
                    &mut stream,
                    "503 Service Unavailable",
                    "text/plain",
                    "too many connections\n",
                )
                .await;
                return;
            };
            if !app.is_ready() {
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
                    app.metrics.connections_total.inc();
                    app.metrics.connections_open.inc();
                    session::run(app.clone(), ws, peer, stop).await;
                    app.metrics.connections_open.dec();
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
