//! The listener: one port for `/ws`, `/healthz`, `/readyz` and `/metrics`, and an orderly
//! shutdown.
//!
//! [`listen`] binds the port with the configured backlog; [`serve`] takes an already-bound
//! listener and a shutdown future, so tests bind port 0 and stop the server when they are
//! done. Connections are accepted on a thread of their own (see [`Acceptor`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
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
    let mut acceptor = Acceptor::start(listener, app.settings.limits.max_connections)?;
    app.set_ready(true);
    tokio::pin!(shutdown);
    let ended = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            accepted = acceptor.next() => {
                let Some((stream, peer)) = accepted else {
                    break Err(std::io::Error::other("the accept thread stopped unexpectedly"));
                };
                let stream = match TcpStream::from_std(stream) {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "registering an accepted connection failed");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let permit = app.connection_place();
                connections.spawn(http::connection(app.clone(), stream, peer, permit, stop_rx.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    };
    tracing::info!(connections = connections.len(), "shutting down");
    app.set_ready(false);
    // The port closes here; connections accepted but not yet served are closed with it.
    acceptor.stop().await;
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
    ended
}

/// Accepts connections on a thread of its own and hands them to the serve loop.
///
/// On the runtime, the accept loop was one task among the connections it spawned: in a
/// reconnect storm it ran once per few hundred of their first polls (each an HTTP upgrade and
/// a resume), and the kernel's accept queue, at most `net.core.somaxconn` (4,096 by default),
/// overflowed. With 15,000 clients reconnecting at once, 8 runs of 12 dropped 1,466 to 8,385
/// handshakes, and each of those clients came back only when its SYN was retried, a second
/// later or more (BENCHMARKS.md, fourteenth session). This thread
/// is woken by the kernel alone and only accepts, so the queue is emptied as fast as
/// handshakes complete. The connections wait for the serve loop in a queue as long as
/// `limits.max_connections` (one waiting there holds no place yet; past that many, the thread
/// waits and the kernel's queue fills again). With a queue of 4,096 there, 1,644 handshakes of
/// a storm were still dropped: the serve loop is a task among the connections too.
struct Acceptor {
    accepted: mpsc::Receiver<(std::net::TcpStream, SocketAddr)>,
    /// Dropping it ends the thread, which closes the listener.
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Acceptor {
    /// Moves `listener` to a new accept thread, with a single-threaded runtime of its own;
    /// up to `queue` accepted connections wait for the serve loop.
    fn start(listener: TcpListener, queue: usize) -> std::io::Result<Acceptor> {
        let listener = listener.into_std()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let listener = {
            let _on_this_runtime = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let (to_serve, accepted) = mpsc::channel(queue.max(1));
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("pm-accept".into())
            .spawn(move || runtime.block_on(accept(listener, to_serve, stopped)))?;
        Ok(Acceptor {
            accepted,
            stop,
            thread,
        })
    }

    /// The next accepted connection; `None` if the thread has ended (it only ends when told).
    async fn next(&mut self) -> Option<(std::net::TcpStream, SocketAddr)> {
        self.accepted.recv().await
    }

    /// Ends the thread and waits until the listener is closed; the connections still queued
    /// are closed.
    async fn stop(self) {
        let Acceptor {
            accepted,
            stop,
            thread,
        } = self;
        drop(stop);
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::error!("the accept thread failed");
        }
        drop(accepted);
    }
}

/// The accept thread's loop: accepts until `stopped` (or the serve loop is gone).
async fn accept(
    listener: TcpListener,
    to_serve: mpsc::Sender<(std::net::TcpStream, SocketAddr)>,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        // The stream moves to the serving runtime, which registers it with its own driver.
        match accepted.and_then(|(stream, peer)| Ok((stream.into_std()?, peer))) {
            Ok(connection) => {
                let sent = tokio::select! {
                    biased;
                    _ = &mut stopped => return,
                    sent = to_serve.send(connection) => sent,
                };
                if sent.is_err() {
                    return;
                }
            }
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::select! {
                    _ = &mut stopped => return,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
}
