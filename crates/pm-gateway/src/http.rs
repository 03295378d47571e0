//! The HTTP/1.1 side of the one port, on `hyper`: `GET /healthz`, `/readyz` and `/metrics`
//! answered as plain HTTP, `/ws` upgraded to a WebSocket that tokio-tungstenite then
//! serves, and every other path the board page's files ([`assets`]).
//!
//! Each accepted socket is one [`connection`]: hyper reads requests (keep-alive; a request
//! head must arrive within the hello timeout, which also closes silent and idle sockets) until
//! one upgrades, and the same task then runs the WebSocket session on the upgraded socket. A
//! socket holds its place among `limits.max_connections` for as long as it is open; an upgrade
//! without a place is refused with HTTP 503 while the probes still answer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::app::App;
use crate::{assets, metrics, session};

/// Longest request head accepted (hyper's smallest read buffer bound).
const MAX_HEAD: usize = 8 * 1024;

type Body = Full<Bytes>;

/// Serves one accepted socket to its end: HTTP requests until the peer leaves, the request
/// head timeout passes or shutdown begins, or a WebSocket session once `/ws` is upgraded.
pub(crate) async fn connection(
    app: Arc<App>,
    stream: TcpStream,
    peer: SocketAddr,
    place: Option<OwnedSemaphorePermit>,
    mut stop: watch::Receiver<bool>,
) {
    // The upgrade a `/ws` request was answered with, for this task to take over once hyper
    // has written the 101 and let go of the socket.
    let upgrade: Arc<Mutex<Option<OnUpgrade>>> = Arc::default();
    let has_place = place.is_some();
    let service = {
        let app = app.clone();
        let upgrade = upgrade.clone();
        hyper::service::service_fn(move |request| {
            let answer = route(&app, request, has_place, &upgrade);
            async move { Ok::<_, Infallible>(answer) }
        })
    };
    // On the heap, so that its state (kilobytes) is freed once the connection upgrades
    // instead of staying in this task's future for the WebSocket's whole life.
    let mut http = Box::pin(
        hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(app.settings.limits.hello_timeout_ms))
            .max_buf_size(MAX_HEAD)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades(),
    );
    let served = tokio::select! {
        served = http.as_mut() => served,
        _ = stop.changed() => {
            // Finish the request in progress, if any, then close.
            http.as_mut().graceful_shutdown();
            http.as_mut().await
        }
    };
    drop(http);
    if let Err(error) = served {
        tracing::debug!(%peer, %error, "HTTP connection ended with an error");
        return;
    }
    let pending = upgrade
        .lock()
        .expect("upgrade lock is never poisoned")
        .take();
    let Some(pending) = pending else { return };
    let upgraded = match pending.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(%peer, %error, "the WebSocket upgrade failed");
            return;
        }
    };
    let Some((read, write)) = crate::socket::split(upgraded) else {
        tracing::error!(%peer, "the upgraded connection is not a TCP stream; dropped");
        return;
    };
    let ws =
        WebSocketStream::from_raw_socket(read, Role::Server, Some(app.websocket_config())).await;
    app.metrics.connections_total.inc();
    app.metrics.connections_open.inc();
    session::run(app.clone(), ws, write, peer, stop).await;
    app.metrics.connections_open.dec();
    drop(place);
}

/// Answers one request; a `/ws` upgrade leaves its `OnUpgrade` in `upgrade`.
fn route(
    app: &App,
    mut request: Request<Incoming>,
    has_place: bool,
    upgrade: &Mutex<Option<OnUpgrade>>,
) -> Response<Body> {
    let get = request.method() == Method::GET;
    match request.uri().path() {
        "/healthz" if get => text(StatusCode::OK, "ok\n"),
        "/readyz" if get && app.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" if get => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" if get => {
            let mut response = text(StatusCode::OK, app.metrics.render());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            response
        }
        "/ws" => {
            if !has_place {
                app.metrics.connections_refused.inc();
                return closing(text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many connections\n",
                ));
            }
            if !app.is_ready() {
                return closing(text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"));
            }
            let headers = request.headers();
            if !app
                .origins
                .allows(headers.get(header::ORIGIN), headers.get(header::HOST))
            {
                tracing::debug!(origin = ?headers.get(header::ORIGIN), "WebSocket upgrade from another origin refused");
                return closing(text(
                    StatusCode::FORBIDDEN,
                    "this page's origin may not open a WebSocket here (server.allowed_origins)\n",
                ));
            }
            let Some(accept) = websocket_accept(&request) else {
                return closing(text(
                    StatusCode::BAD_REQUEST,
                    "expected a WebSocket upgrade (GET /ws with Upgrade: websocket, version 13)\n",
                ));
            };
            *upgrade.lock().expect("upgrade lock is never poisoned") =
                Some(hyper::upgrade::on(&mut request));
            let mut response = Response::new(Body::default());
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
            response
        }
        // The board page's files, and 404/405 for anything else.
        path => assets::answer(request.method(), path, request.headers()),
    }
}

/// The `Sec-WebSocket-Accept` of a valid upgrade request (RFC 6455 §4.2.1), or `None`.
fn websocket_accept(request: &Request<Incoming>) -> Option<HeaderValue> {
    let headers = request.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let valid = request.method() == Method::GET
        && has_token(header::UPGRADE, "websocket")
        && has_token(header::CONNECTION, "upgrade")
        && headers.get(header::SEC_WEBSOCKET_VERSION) == Some(&HeaderValue::from_static("13"));
    let key = headers.get(header::SEC_WEBSOCKET_KEY).filter(|_| valid)?;
    HeaderValue::from_str(&derive_accept_key(key.as_bytes())).ok()
}

/// A plain-text answer that is never cached.
fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Body::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An answer after which the connection closes: a refused upgrade leaves nothing to keep the
/// socket for.
fn closing(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
