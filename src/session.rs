//! One WebSocket connection: `Hello` and authentication, then pipelined requests, a
//! subscription, heartbeats and an orderly close.
//!
//! The socket is split: this task reads and dispatches; a writer task owns the sink and drains
//! the connection's bounded outgoing queue with `feed`, flushing once when the queue is empty.
//! Requests run concurrently (up to `max_in_flight_requests`) and answer by `request_id`.
//! Closing on purpose goes through [`Close`]: the writer drops what is queued, sends `Goodbye`
//! with the last event seq it actually wrote, then the close frame.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use pm_core::kinds::EntityKind;
use pm_core::EntityId;
use pm_db::{EventFilter, Tenant};
use pm_proto::frame::encode_server_frame;
use pm_proto::v1::{self, client_frame::Body as In, response::Result as Out, server_frame::Body};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use crate::auth::{AuthError, Identity};
use crate::hub::{Channels, Filter, Registration};
use crate::limits::Refused;
use crate::server::App;

type Ws = WebSocketStream<TcpStream>;

/// Something for the connection's writer to send.
#[derive(Debug)]
pub enum Outbound {
    /// An encoded `ServerFrame` (response, welcome, pong).
    Frame(Bytes),
    /// An encoded `ServerFrame{event}` and its seq.
    Event {
        /// The event's change number.
        seq: u64,
        /// The shared encoded frame.
        frame: Bytes,
    },
    /// The events of one committed group that this connection wants, in seq order: one queue
    /// slot per group, so a large group does not overflow a healthy subscriber.
    Events(Vec<(u64, Bytes)>),
    /// A WebSocket ping.
    Ping,
}

/// Why the server closes a connection on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// The outgoing queue overflowed.
    SlowConsumer,
    /// The server is shutting down.
    Shutdown,
    /// Token problems.
    Unauthenticated(v1::CloseReason, String),
    /// Repeated rate-limit violations.
    RateLimitAbuse,
    /// No traffic for three heartbeat intervals.
    HeartbeatTimeout,
    /// A connection limit.
    TooManyConnections(String),
    /// A text frame (1003) or repeated garbage (1007).
    Protocol(u16, String),
    /// The server failed in a way the connection cannot recover from (1011).
    Internal,
}

impl Close {
    fn parts(&self) -> (v1::CloseReason, String, u16) {
        use v1::CloseReason as R;
        match self {
            Close::SlowConsumer => (
                R::SlowConsumer,
                "the connection did not keep up with its events; resume from resume_from_seq"
                    .into(),
                4008,
            ),
            Close::Shutdown => (R::Shutdown, "the server is shutting down".into(), 1001),
            Close::Unauthenticated(reason, message) => (*reason, message.clone(), 4001),
            Close::RateLimitAbuse => (R::RateLimitAbuse, "too many requests".into(), 4029),
            Close::HeartbeatTimeout => (
                R::HeartbeatTimeout,
                "no traffic for three heartbeat intervals".into(),
                1001,
            ),
            Close::TooManyConnections(message) => (R::TooManyConnections, message.clone(), 1013),
            Close::Protocol(code, message) => (R::ProtocolViolation, message.clone(), *code),
            Close::Internal => (
                R::Unspecified,
                "internal error; reconnect and resume".into(),
                1011,
            ),
        }
    }
}

/// How long the server waits for the client's Close after sending its own.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(2);

/// Runs one upgraded connection to its end.
pub async fn run(app: Arc<App>, ws: Ws, peer: SocketAddr, mut shutdown: watch::Receiver<bool>) {
    let connection_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("connection", id = %connection_id, %peer, tenant = tracing::field::Empty, user = tracing::field::Empty);
    async move {
        let limits = app.settings.limits.clone();
        let (sink, mut stream) = ws.split();
        let (out_tx, out_rx) = mpsc::channel(limits.outgoing_queue);
        let (goodbye_tx, goodbye_rx) = oneshot::channel();
        let last_event = Arc::new(AtomicU64::new(0));
        // A peer that takes no bytes for as long as a silent one may stay is gone.
        let grace = app.settings.heartbeat() * 3;
        let writer = tokio::spawn(write_loop(
            sink,
            out_rx,
            goodbye_rx,
            last_event.clone(),
            grace,
        ));

        let closing = match hello(&app, &mut stream, &out_tx, &connection_id).await {
            Err(close) => Some(close),
            Ok((session, close_rx)) => {
                let span = tracing::Span::current();
                span.record("tenant", session.tenant.id().as_str());
                span.record("user", session.identity().user.as_str());
                session
                    .serve(&mut stream, out_tx, close_rx, &mut shutdown)
                    .await
            }
        };
        let server_closes = closing.is_some();
        match closing {
            Some(close) => {
                let _ = goodbye_tx.send(close);
            }
            // The client closed; dropping the goodbye sender ends the writer.
            None => drop(goodbye_tx),
        }
        let _ = writer.await;
        if server_closes {
            // The closing handshake: wait (briefly) for the client's Close before dropping the
            // socket, so that a client still writing does not lose the Goodbye to a reset.
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
                while let Some(Ok(message)) = stream.next().await {
                    if message.is_close() {
                        break;
                    }
                }
            })
            .await;
        }
        tracing::debug!("connection closed");
    }
    .instrument(span)
    .await
}

/// The writer task: queue to socket, `feed` then one `flush` per burst.
///
/// A client that stops reading blocks the socket, and with it a burst in progress: the
/// goodbye is therefore watched during bursts too, and the goodbye itself gets `grace` to go
/// out (the peer may start reading again) before the socket is dropped without it. Without
/// that bound a peer that keeps its connection open but never reads again would hold the
/// connection, its queue and its task forever.
async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut queue: mpsc::Receiver<Outbound>,
    mut goodbye: oneshot::Receiver<Close>,
    last_event: Arc<AtomicU64>,
    grace: Duration,
) {
    loop {
        let item = tokio::select! {
            biased;
            close = &mut goodbye => {
                finish(sink, close.ok(), &last_event, grace).await;
                return;
            }
            item = queue.recv() => item,
        };
        let Some(item) = item else {
            // The session is over; it may still have a goodbye to send.
            let close = goodbye.await.ok();
            finish(sink, close, &last_event, grace).await;
            return;
        };
        let written = tokio::select! {
            biased;
            close = &mut goodbye => Err(close.ok()),
            written = write_burst(&mut sink, item, &mut queue, &last_event) => Ok(written),
        };
        match written {
            Ok(true) => {}
            Ok(false) => return,
            Err(close) => {
                finish(sink, close, &last_event, grace).await;
                return;
            }
        }
    }
}

/// Writes `first` and whatever else is queued (a bounded burst), then flushes once. False if
/// the socket failed. `last_event` follows every event handed to the sink: those are written
/// before anything fed after them, the goodbye included.
async fn write_burst(
    sink: &mut SplitSink<Ws, Message>,
    first: Outbound,
    queue: &mut mpsc::Receiver<Outbound>,
    last_event: &AtomicU64,
) -> bool {
    let mut next = Some(first);
    let mut burst = 0;
    while let Some(item) = next.take() {
        let fed = match item {
            Outbound::Frame(frame) => sink.feed(Message::Binary(frame)).await.is_ok(),
            Outbound::Event { seq, frame } => feed_event(sink, seq, frame, last_event).await,
            Outbound::Events(events) => {
                let mut fed = true;
                for (seq, frame) in events {
                    fed = feed_event(sink, seq, frame, last_event).await;
                    if !fed {
                        break;
                    }
                }
                fed
            }
            Outbound::Ping => sink.feed(Message::Ping(Bytes::new())).await.is_ok(),
        };
        if !fed {
            return false;
        }
        burst += 1;
        // Bound a burst so that a steady stream still gets flushed.
        if burst < MAX_BURST {
            next = queue.try_recv().ok();
        }
    }
    sink.flush().await.is_ok()
}

/// Queue items written before a flush at most, so that a steady stream still gets flushed.
const MAX_BURST: usize = 256;

/// Hands one event to the socket and records it as the last one a resume may start after.
async fn feed_event(
    sink: &mut SplitSink<Ws, Message>,
    seq: u64,
    frame: Bytes,
    last_event: &AtomicU64,
) -> bool {
    let fed = sink.feed(Message::Binary(frame)).await.is_ok();
    if fed {
        last_event.store(seq, Ordering::Release);
    }
    fed
}

/// Ends the socket: with `Goodbye` (the last event seq handed to the socket) and the close
/// code, or with a plain close when the client left first. Whatever is still queued is
/// dropped. A peer that takes nothing for `grace` does not get the goodbye: the socket is
/// dropped instead.
async fn finish(
    mut sink: SplitSink<Ws, Message>,
    close: Option<Close>,
    last_event: &AtomicU64,
    grace: Duration,
) {
    let _ = tokio::time::timeout(grace, async {
        if let Some(close) = close {
            let (reason, message, code) = close.parts();
            let goodbye = encode_server_frame(Body::Goodbye(v1::Goodbye {
                reason: reason.into(),
                message: message.clone(),
                resume_from_seq: last_event.load(Ordering::Acquire),
            }));
            let _ = sink.feed(Message::Binary(goodbye)).await;
            let _ = sink
                .feed(Message::Close(Some(CloseFrame {
                    code: CloseCode::from(code),
                    reason: message.into(),
                })))
                .await;
            let _ = sink.flush().await;
        }
        let _ = sink.close().await;
    })
    .await;
}

fn frame(body: Body) -> Outbound {
    Outbound::Frame(encode_server_frame(body))
}

fn response(request_id: u64, result: Out) -> Outbound {
    frame(Body::Response(v1::Response {
        request_id,
        result: Some(result),
    }))
}

fn error(code: v1::ErrorCode, message: impl Into<String>, field: &str) -> v1::Error {
    v1::Error {
        code: code.into(),
        message: message.into(),
        field: field.into(),
        current: None,
    }
}

/// An authenticated connection.
struct Session {
    app: Arc<App>,
    tenant: Arc<Tenant>,
    identity: Mutex<Identity>,
    out: mpsc::Sender<Outbound>,
    close: mpsc::Sender<Close>,
    subscription: tokio::sync::Mutex<Option<Registration>>,
    slot: crate::limits::ConnectionSlot,
}

fn unauthenticated(message: &str) -> Close {
    Close::Unauthenticated(v1::CloseReason::AuthFailed, message.to_owned())
}

/// Waits for `Hello`, checks the token and limits, opens the tenant and sends `Welcome`.
async fn hello(
    app: &Arc<App>,
    stream: &mut SplitStream<Ws>,
    out: &mpsc::Sender<Outbound>,
    connection_id: &str,
) -> Result<(Session, mpsc::Receiver<Close>), Close> {
    let limits = &app.settings.limits;
    let timeout = Duration::from_millis(limits.hello_timeout_ms);
    let first = match tokio::time::timeout(timeout, stream.next()).await {
        Err(_) => {
            return Err(Close::Unauthenticated(
                v1::CloseReason::HelloTimeout,
                format!("no Hello within {} ms", limits.hello_timeout_ms),
            ))
        }
        Ok(None) | Ok(Some(Err(_))) => {
            return Err(unauthenticated("the connection failed before Hello"))
        }
        Ok(Some(Ok(message))) => message,
    };
    let Message::Binary(bytes) = first else {
        return Err(unauthenticated(
            "the first frame must be a binary ClientFrame with Hello",
        ));
    };
    let Ok(v1::ClientFrame {
        body: Some(In::Hello(hello)),
        ..
    }) = v1::ClientFrame::decode(bytes)
    else {
        return Err(unauthenticated(
            "the first frame must be ClientFrame{hello}",
        ));
    };
    if hello.protocol_version > pm_proto::PROTOCOL_VERSION {
        return Err(Close::Protocol(
            1002,
            format!(
                "protocol version {} is not supported (this server speaks 1)",
                hello.protocol_version
            ),
        ));
    }
    let identity = app.verifier.verify(&hello.token).map_err(|e| match e {
        AuthError::Expired => Close::Unauthenticated(v1::CloseReason::AuthExpired, e.to_string()),
        other => unauthenticated(&other.to_string()),
    })?;
    let slot = app
        .counts
        .admit(
            &identity.tenant,
            &identity.user,
            limits.max_connections_per_tenant,
            limits.max_connections_per_user,
        )
        .map_err(|refused| {
            app.metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            Close::TooManyConnections(match refused {
                Refused::Tenant => "too many connections for this tenant".into(),
                Refused::User => "too many connections for this user".into(),
            })
        })?;
    let tenant = app.registry.open(&identity.tenant).await.map_err(|e| {
        tracing::warn!(error = %e, "opening the tenant failed");
        Close::TooManyConnections("the tenant cannot be opened now; retry".into())
    })?;
    let welcome = frame(Body::Welcome(v1::Welcome {
        connection_id: connection_id.to_owned(),
        user_id: identity.user.as_str().to_owned(),
        tenant_id: identity.tenant.as_str().to_owned(),
        server_version: crate::BUILD_VERSION.to_owned(),
        protocol_version: pm_proto::PROTOCOL_VERSION,
        head_seq: tenant.head_seq(),
        heartbeat_interval_ms: u32::try_from(limits.heartbeat_interval_ms).unwrap_or(u32::MAX),
        max_frame_bytes: u32::try_from(limits.max_frame_bytes).unwrap_or(u32::MAX),
    }));
    if out.send(welcome).await.is_err() {
        return Err(unauthenticated("the connection closed"));
    }
    tracing::debug!(client = %hello.client_name, "welcomed");
    let (close, close_rx) = mpsc::channel(4);
    let session = Session {
        app: app.clone(),
        tenant,
        identity: Mutex::new(identity),
        out: out.clone(),
        close,
        subscription: tokio::sync::Mutex::new(None),
        slot,
    };
    Ok((session, close_rx))
}

/// Consecutive undecodable frames before the connection is closed (1007).
const GARBAGE_LIMIT: u32 = 16;

impl Session {
    fn identity(&self) -> Identity {
        self.identity
            .lock()
            .expect("identity lock is never poisoned")
            .clone()
    }

    /// Reads and dispatches until the client leaves (`None`) or the server closes.
    async fn serve(
        self,
        stream: &mut SplitStream<Ws>,
        out: mpsc::Sender<Outbound>,
        mut close_rx: mpsc::Receiver<Close>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Close> {
        let session = Arc::new(self);
        let limits = session.app.settings.limits.clone();
        let permits = Arc::new(Semaphore::new(limits.max_in_flight_requests));
        let mut requests = JoinSet::new();
        // Reconnecting does not refill the budget: it continues where the user's last
        // connection left it.
        let mut bucket = session
            .slot
            .bucket(limits.requests_per_second, limits.request_burst);
        let mut strikes = 0u32;
        let mut garbage = 0u32;
        let heartbeat = session.app.settings.heartbeat();
        let mut ticker = tokio::time::interval(heartbeat);
        ticker.tick().await;
        let mut last_heard = tokio::time::Instant::now();
        // The token is valid until its expiry plus the leeway the verifier allows.
        let leeway_ms = i64::try_from(session.app.settings.auth.leeway_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        let expiry = expiry_instant(session.identity().expires_at_ms.saturating_add(leeway_ms));
        let token_expiry = tokio::time::sleep_until(expiry);
        tokio::pin!(token_expiry);

        // The next request's place among those in flight, taken before its frame is read: a
        // client at the limit is not read from (backpressure), while closes, heartbeats and
        // shutdown are still acted on. (Waiting for the place after reading the frame once
        // left a client that pipelined without reading its answers holding the connection
        // forever, deaf to the slow-consumer close.)
        let mut place: Option<tokio::sync::OwnedSemaphorePermit> = None;
        let close = loop {
            tokio::select! {
                acquired = permits.clone().acquire_owned(), if place.is_none() => {
                    place = Some(acquired.expect("the semaphore is never closed"));
                }
                message = stream.next(), if place.is_some() => {
                    let message = match message {
                        None => break None,
                        Some(Err(WsError::Capacity(_))) => break Some(Close::Protocol(1009, format!("frames are limited to {} bytes", limits.max_frame_bytes))),
                        Some(Err(error)) => {
                            tracing::debug!(%error, "read failed");
                            break None;
                        }
                        Some(Ok(message)) => message,
                    };
                    last_heard = tokio::time::Instant::now();
                    let bytes = match message {
                        Message::Binary(bytes) => bytes,
                        Message::Text(_) => break Some(Close::Protocol(1003, "text frames are not supported; send binary protobuf".into())),
                        Message::Close(_) => break None,
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                    };
                    let Ok(client_frame) = v1::ClientFrame::decode(bytes) else {
                        garbage += 1;
                        if garbage >= GARBAGE_LIMIT {
                            break Some(Close::Protocol(1007, "too many undecodable frames".into()));
                        }
                        let _ = out.send(response(0, Out::Error(error(v1::ErrorCode::InvalidArgument, "the frame is not a valid ClientFrame", "")))).await;
                        continue;
                    };
                    garbage = 0;
                    let request_id = client_frame.request_id;
                    let Some(body) = client_frame.body else {
                        let _ = out.send(response(request_id, Out::Error(error(v1::ErrorCode::InvalidArgument, "the frame has no body", "body")))).await;
                        continue;
                    };
                    if let In::Ping(ping) = body {
                        let pong = v1::Pong { client_time: ping.client_time, server_time: now_ms() };
                        let _ = out.send(frame(Body::Pong(pong))).await;
                        continue;
                    }
                    if !bucket.take() {
                        session.app.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
                        strikes += 1;
                        if strikes > limits.rate_limit_strikes {
                            break Some(Close::RateLimitAbuse);
                        }
                        let _ = out.send(response(request_id, Out::Error(error(v1::ErrorCode::RateLimited, "too many requests; slow down", "")))).await;
                        continue;
                    }
                    let permit = place.take().expect("the branch runs only with a place");
                    let session = session.clone();
                    requests.spawn(async move {
                        let _permit = permit;
                        session.handle(request_id, body).await;
                    });
                }
                Some(_) = requests.join_next() => {}
                Some(close) = close_rx.recv() => break Some(close),
                _ = ticker.tick() => {
                    if last_heard.elapsed() >= heartbeat * 3 {
                        break Some(Close::HeartbeatTimeout);
                    }
                    let _ = out.try_send(Outbound::Ping);
                }
                () = &mut token_expiry => {
                    let expires = expiry_instant(session.identity().expires_at_ms.saturating_add(leeway_ms));
                    if expires <= tokio::time::Instant::now() {
                        break Some(Close::Unauthenticated(v1::CloseReason::AuthExpired, "the token expired; connect again with a fresh one".into()));
                    }
                    // Refreshed meanwhile.
                    token_expiry.as_mut().reset(expires);
                }
                _ = shutdown.changed() => {
                    // Finish what is in flight, then say goodbye.
                    let drain = Duration::from_millis(session.app.settings.server.drain_timeout_ms);
                    let _ = tokio::time::timeout(drain, async { while requests.join_next().await.is_some() {} }).await;
                    break Some(Close::Shutdown);
                }
            }
        };
        requests.abort_all();
        session.slot.park(bucket);
        // Leave the hub before the writer is told to stop.
        session.subscription.lock().await.take();
        close
    }

    /// Answers one request.
    async fn handle(self: &Arc<Self>, request_id: u64, body: In) {
        let started = Instant::now();
        let kind: &'static str = match &body {
            In::Command(_) => "command",
            In::Query(_) => "query",
            In::Batch(_) => "batch",
            In::Subscribe(_) => "subscribe",
            In::Unsubscribe(_) => "unsubscribe",
            In::RefreshToken(_) => "refresh_token",
            In::Hello(_) | In::Ping(_) => "hello",
        };
        let span = tracing::debug_span!(
            "request",
            request_id,
            kind,
            outcome = tracing::field::Empty,
            latency_us = tracing::field::Empty
        );
        // `Ok(None)`: the handler answered by itself (subscribe answers before its replay).
        let result: Result<Option<Out>, v1::Error> = async {
            if request_id == 0 {
                return Err(error(
                    v1::ErrorCode::InvalidArgument,
                    "request_id must be non-zero",
                    "request_id",
                ));
            }
            let user = self.identity().user;
            let answer = match body {
                In::Command(command) => self
                    .tenant
                    .execute(&user, command)
                    .await
                    .map(Out::CommandResult)
                    .map_err(|e| self.wire(e)),
                In::Query(query) => self
                    .tenant
                    .query(&user, query)
                    .await
                    .map(Out::QueryResult)
                    .map_err(|e| self.wire(e)),
                In::Batch(batch) => self
                    .tenant
                    .batch(&user, batch)
                    .await
                    .map(Out::BatchResult)
                    .map_err(|e| self.wire(e)),
                In::Subscribe(subscribe) => {
                    return self.subscribe(request_id, subscribe).await.map(|()| None)
                }
                In::Unsubscribe(_) => {
                    self.subscription.lock().await.take();
                    Ok(Out::UnsubscribeResult(v1::UnsubscribeResult {}))
                }
                In::RefreshToken(refresh) => self.refresh(refresh),
                In::Hello(_) => Err(error(
                    v1::ErrorCode::InvalidArgument,
                    "already authenticated",
                    "hello",
                )),
                In::Ping(_) => unreachable!("pings are answered by the reader"),
            };
            answer.map(Some)
        }
        .instrument(span.clone())
        .await;
        let outcome = outcome_label(&result);
        let latency = started.elapsed();
        span.record("outcome", outcome);
        span.record("latency_us", latency.as_micros() as u64);
        span.in_scope(|| tracing::debug!("answered"));
        self.app.metrics.request(kind, outcome, latency);
        let answer = match result {
            Ok(None) => return,
            Ok(Some(out)) => out,
            Err(e) => Out::Error(e),
        };
        let _ = self.out.send(response(request_id, answer)).await;
    }

    fn wire(&self, error: pm_db::Error) -> v1::Error {
        if error.is_internal() {
            tracing::error!(%error, "request failed");
        }
        error.to_wire()
    }

    fn refresh(&self, refresh: v1::RefreshToken) -> Result<Out, v1::Error> {
        let identity = self
            .app
            .verifier
            .verify(&refresh.token)
            .map_err(|e| error(v1::ErrorCode::Unauthenticated, e.to_string(), "token"))?;
        let mut current = self
            .identity
            .lock()
            .expect("identity lock is never poisoned");
        if identity.tenant != current.tenant || identity.user != current.user {
            return Err(error(
                v1::ErrorCode::PermissionDenied,
                "the token is for another tenant or user",
                "token",
            ));
        }
        let expires_at = identity.expires_at_ms;
        *current = identity;
        Ok(Out::RefreshTokenResult(v1::RefreshTokenResult {
            expires_at,
        }))
    }

    /// Registers the subscription, answers, replays `(from_seq, head]` from the log, then
    /// goes live. A new subscription replaces the previous one.
    async fn subscribe(
        self: &Arc<Self>,
        request_id: u64,
        s: v1::Subscribe,
    ) -> Result<(), v1::Error> {
        let mut slot = self.subscription.lock().await;
        slot.take();
        let user = self.identity().user;
        let kinds = s
            .entity_types
            .iter()
            .map(|raw| {
                pm_proto::convert::required(
                    "entity_types",
                    pm_proto::convert::entity_type("entity_types", *raw),
                )
            })
            .collect::<Result<Vec<EntityKind>, _>>()
            .map_err(|e| pm_db::Error::from(e).to_wire())?;
        let projects = if s.project_ids.is_empty() {
            None
        } else {
            let mut projects = HashSet::new();
            for raw in &s.project_ids {
                let id = EntityId::parse("project_ids", raw)
                    .map_err(|e| pm_db::Error::from(e).to_wire())?
                    .to_text();
                projects.insert(id);
            }
            Some(projects)
        };
        // Register first: from here on the hub keeps every committed group for us. Then read
        // the memberships, the head and the oldest retained seq in one snapshot: everything up
        // to the head is sent from the log, everything after it from the hub's buffer, with
        // permissions as of the head. Position checks come before the ack, so that a request
        // gets exactly one answer.
        let hub = self.app.hubs.get(&self.tenant, &self.app.metrics);
        let registration = hub.register(
            user.clone(),
            Filter {
                projects: projects.clone(),
                kinds: kinds.clone(),
            },
            Channels {
                out: self.out.clone(),
                close: self.close.clone(),
                capacity: self.app.settings.limits.outgoing_queue,
            },
        );
        let snapshot = self
            .tenant
            .subscription_snapshot(&user)
            .await
            .map_err(|e| self.wire(e))?;
        if s.from_seq > snapshot.head {
            return Err(error(
                v1::ErrorCode::InvalidArgument,
                "from_seq is after the latest change",
                "from_seq",
            ));
        }
        if snapshot
            .oldest
            .is_some_and(|oldest| oldest > s.from_seq.saturating_add(1))
        {
            return Err(error(
                v1::ErrorCode::ResyncRequired,
                "from_seq is older than the retained change log: take a fresh snapshot \
                 (List*, which answers as_of_seq) and subscribe again from its as_of_seq",
                "from_seq",
            ));
        }
        let (memberships, head) = (snapshot.memberships, snapshot.head);
        let allowed: HashSet<String> = memberships.into_iter().map(|(p, _)| p).collect();
        if let Some(projects) = &projects {
            if !projects.iter().all(|p| allowed.contains(p)) {
                return Err(error(
                    v1::ErrorCode::NotFound,
                    "project not found",
                    "project_ids",
                ));
            }
        }
        let _ = self
            .out
            .send(response(
                request_id,
                Out::SubscribeResult(v1::SubscribeResult { head_seq: head }),
            ))
            .await;

        // Replay (from_seq, head] with the permissions as of the head, a page at a time.
        const PAGE: u32 = 1_000;
        let project_ids: Vec<String> = match &projects {
            Some(p) => p.iter().cloned().collect(),
            None => allowed.iter().cloned().collect(),
        };
        let mut after = s.from_seq;
        while after < head && !project_ids.is_empty() {
            let filter = EventFilter {
                project_ids: project_ids.clone(),
                kinds: kinds.clone(),
            };
            let events = match self
                .tenant
                .read_events(after, Some(head), PAGE, &filter)
                .await
            {
                Ok(events) => events,
                Err(e) => {
                    // Already answered: the stream would have a hole, so end the connection;
                    // the client resumes from what it received.
                    self.wire(e);
                    let _ = self.close.try_send(Close::Internal);
                    return Ok(());
                }
            };
            let full_page = events.len() == PAGE as usize;
            self.app
                .metrics
                .events_delivered
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            for event in events {
                after = event.seq;
                let item = Outbound::Event {
                    seq: event.seq,
                    frame: event.frame(),
                };
                if self.out.send(item).await.is_err() {
                    return Ok(());
                }
            }
            if !full_page {
                break;
            }
        }
        if hub.go_live(&registration, allowed, head) {
            *slot = Some(registration);
        }
        Ok(())
    }
}

/// The metrics label of a request's outcome: `ok` or the error code.
fn outcome_label<T>(result: &Result<T, v1::Error>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => v1::ErrorCode::try_from(e.code)
            .map(|c| c.as_str_name())
            .unwrap_or("INTERNAL"),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The tokio instant at which a Unix-millisecond expiry falls.
fn expiry_instant(expires_at_ms: i64) -> tokio::time::Instant {
    let remaining = expires_at_ms.saturating_sub(now_ms()).max(0) as u64;
    // Far-future expiries are capped (a year) to keep the timer in range.
    tokio::time::Instant::now() + Duration::from_millis(remaining.min(365 * 24 * 3600 * 1000))
}
