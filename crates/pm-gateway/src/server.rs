//! The listener: one port for `/ws`, `/healthz`, `/readyz` and `/metrics`, and an orderly
//! shutdown.
//!
//! [`listen`] binds the port with the configured backlog; [`serve`] takes an already-bound listener and a shutdown future, so tests bind port 0 and
//! stop the server when they are done.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::app::App;
use crate::http;

/// Binds `address` with a `listen(2)` backlog of `backlog` connections (`server.listen_backlog`;
/// tokio's own `bind` takes 1,024, which a reconnect storm of thousands overflows). The
/// address is reusable at once after a restart, as with `TcpListener::bind`.
pub fn listen(address: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(backlog)
}

/// Serves connections on `listener` until `shutdown` completes, then stops accepting, lets
/// every connection finish its in-flight requests and say goodbye within the drain timeout,
/// closes the tenants, and returns.
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
                connections.spawn(http::connection(app.clone(), stream, peer, permit, stop_rx.clone()));
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
        while connections.join_next().await.is_some() {}
    }
    // Every connection has ended: close the tenants, so that their storage is left tidy
    // (a tenant still held elsewhere stays open and is logged).
    let closed = app.engine.close_idle().await;
    tracing::info!(tenants = closed, "tenants closed");
    Ok(())
}
