//! One WebSocket connection: `Hello` and authentication, then pipelined requests, a
//! subscription, heartbeats and an orderly close.
//!
//! The socket is split: this task reads and dispatches; a writer task
//! ([`connection`](crate::connection)) owns the sink and drains the connection's bounded
//! outgoing queue. Requests run concurrently (up to `max_in_flight_requests`) and answer by
//! `request_id`. Closing on purpose goes through [`Close`]: the writer drops what is queued,
//! sends `Goodbye` with the last event seq it actually wrote, then the close frame.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use pm_db::{Tenant, UserProfile};
use pm_proto::v1::{self, client_frame::Body as In, response::Result as Out, server_frame::Body};
use prost::Message as _;
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tracing::Instrument;

use crate::app::App;
use crate::auth::{AuthError, Identity};
use crate::connection::{self, write_loop, Close, CloseSignal, Outbound};
use crate::hub::{Channels, Registration};
use crate::limits::Refused;
use crate::outbox::Outbox;
use crate::reader::{Read, Reader};
use crate::resume::{self, Interest};
use crate::socket::{FrameWriter, Ws};
use pm_core::time::now_ms;

/// How long the server waits for the client's Close after sending its own.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(2);

/// Runs one upgraded connection to its end.
///
/// A plain function around [`connection`]: the socket is split here, before any future is
/// made, so that no future keeps a (moved-out) copy of it for the connection's whole life.
pub(crate) fn run(
    app: Arc<App>,
    ws: Ws,
    sink: FrameWriter,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> {
    let connection_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!(
        "connection",
        id = %connection_id,
        %peer,
        tenant = tracing::field::Empty,
        user = tracing::field::Empty,
    );
    connection(app, sink, ws, connection_id, shutdown).instrument(span)
}

async fn connection(
    app: Arc<App>,
    sink: FrameWriter,
    mut stream: Ws,
    connection_id: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let out_tx = Arc::new(Outbox::new(app.settings.limits.outgoing_queue));
    let (goodbye_tx, goodbye_rx) = oneshot::channel();
    let last_event = Arc::new(AtomicU64::new(0));
    // A peer that takes no bytes for as long as a silent one may stay is gone.
    let grace = app.settings.heartbeat() * 3;
    let writer = tokio::spawn(write_loop(
        sink,
        out_tx.clone(),
        goodbye_rx,
        last_event.clone(),
        grace,
    ));

    let closing = match hello(&app, &mut stream, &out_tx, &connection_id).await {
        Err(close) => Some(close),
        Ok(session) => {
            let span = tracing::Span::current();
            span.record("tenant", session.tenant.id().as_str());
            span.record("user", session.identity().user.as_str());
            drop(connection_id);
            session.serve(&mut stream, out_tx, &mut shutdown).await
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

/// An authenticated connection.
struct Session {
    app: Arc<App>,
    tenant: Arc<dyn Tenant>,
    identity: Mutex<Identity>,
    out: Arc<Outbox>,
    close: Arc<CloseSignal>,
    subscription: tokio::sync::Mutex<Option<Registration>>,
    slot: crate::limits::ConnectionSlot,
}

fn unauthenticated(message: &str) -> Close {
    Close::Unauthenticated(v1::CloseReason::AuthFailed, message.to_owned())
}

/// Waits for `Hello`, checks the token and limits, opens the tenant and sends `Welcome`.
async fn hello(
    app: &Arc<App>,
    stream: &mut Ws,
    out: &Arc<Outbox>,
    connection_id: &str,
) -> Result<Arc<Session>, Close> {
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
            app.metrics.connections_refused.inc();
            Close::TooManyConnections(match refused {
                Refused::Tenant => "too many connections for this tenant".into(),
                Refused::User => "too many connections for this user".into(),
            })
        })?;
    let tenant = app
        .engine
        .open(&identity.tenant)
        .await
        .map_err(|e| match e {
            // Logged at ERROR once by the engine when it was quarantined; the client is told
            // why, as the tenant's own error.
            pm_db::Error::Damaged { .. } => Close::TenantUnavailable(e.to_string()),
            e => {
                tracing::warn!(error = %e, "opening the tenant failed");
                Close::TenantUnavailable("the tenant cannot be opened now; retry later".into())
            }
        })?;
    if let Some(cluster) = &app.cluster {
        cluster.publish_commits(&tenant);
    }
    remember(&*tenant, &profile(&identity)).await;
    let welcome = connection::frame(Body::Welcome(v1::Welcome {
        connection_id: connection_id.to_owned(),
        user_id: identity.user.as_str().to_owned(),
        tenant_id: identity.tenant.as_str().to_owned(),
        server_version: app.server_version.clone(),
        protocol_version: pm_proto::PROTOCOL_VERSION,
        head_seq: tenant.head_seq(),
        heartbeat_interval_ms: u32::try_from(limits.heartbeat_interval_ms).unwrap_or(u32::MAX),
        max_frame_bytes: u32::try_from(limits.max_frame_bytes).unwrap_or(u32::MAX),
    }));
    if out.send(welcome).await.is_err() {
        return Err(unauthenticated("the connection closed"));
    }
    tracing::debug!(client = %hello.client_name, "welcomed");
    let close = Arc::new(CloseSignal::default());
    let session = Session {
        app: app.clone(),
        tenant,
        identity: Mutex::new(identity),
        out: out.clone(),
        close,
        subscription: tokio::sync::Mutex::new(None),
        slot,
    };
    Ok(Arc::new(session))
}

/// The profile a token's claims describe.
fn profile(identity: &Identity) -> UserProfile {
    UserProfile::from_claims(
        identity.user.clone(),
        identity.name.as_deref(),
        identity.email.as_deref(),
    )
}

/// Keeps the user's profile up to date. A failure only costs a stale name, so the session
/// goes on; the storage fault itself shows in the tenant's health and metrics.
async fn remember(tenant: &dyn Tenant, profile: &UserProfile) {
    // Never holds up a session for long: a busy writer only delays the name.
    match tokio::time::timeout(REMEMBER_TIMEOUT, tenant.remember_user(profile)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "the user's profile was not recorded"),
        Err(_) => tracing::debug!("recording the user's profile timed out"),
    }
}

/// How long Hello and RefreshToken wait for the user's profile to be recorded.
const REMEMBER_TIMEOUT: Duration = Duration::from_secs(2);

impl Session {
    fn identity(&self) -> Identity {
        self.identity
            .lock()
            .expect("identity lock is never poisoned")
            .clone()
    }

    /// When the token in force stops being valid: its expiry plus the leeway the verifier
    /// allows.
    fn token_deadline(&self) -> tokio::time::Instant {
        let leeway_ms = i64::try_from(self.app.settings.auth.leeway_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        expiry_instant(self.identity().expires_at_ms.saturating_add(leeway_ms))
    }

    /// Reads and dispatches until the client leaves (`None`) or the server closes.
    async fn serve(
        self: Arc<Self>,
        stream: &mut Ws,
        out: Arc<Outbox>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Close> {
        let session = self;
        let app = session.app.clone();
        let limits = &app.settings.limits;
        let permits = Arc::new(Semaphore::new(limits.max_in_flight_requests));
        let mut requests = JoinSet::new();
        let bucket = session
            .slot
            .bucket(limits.requests_per_second, limits.request_burst);
        let mut reader = Reader::new(bucket, limits, session.app.metrics.clone());
        let heartbeat = session.app.settings.heartbeat();
        let mut ticker = tokio::time::interval(heartbeat);
        ticker.tick().await;
        let token_expiry = tokio::time::sleep_until(session.token_deadline());
        tokio::pin!(token_expiry);

        // The next request's place among those in flight, taken before its frame is read: a
        // client at the limit is not read from (backpressure), while closes, heartbeats and
        // shutdown are still acted on. (Waiting for the place after reading the frame once
        // left a client that pipelined without reading its answers holding the connection
        // forever, deaf to the slow-consumer close.)
        let mut place: Option<OwnedSemaphorePermit> = None;
        let close = loop {
            tokio::select! {
                acquired = permits.clone().acquire_owned(), if place.is_none() => {
                    place = Some(acquired.expect("the semaphore is never closed"));
                }
                message = stream.next(), if place.is_some() => match reader.read(message) {
                    Read::Nothing => {}
                    Read::Answer(answer) => {
                        let _ = out.send(answer).await;
                    }
                    Read::WebSocketPing(payload) => {
                        // Never waits: a client that pings without reading must not stall
                        // its own reader (and with it the close requests).
                        let _ = out.try_send(Outbound::Pong(payload));
                    }
                    Read::Request(request_id, body) => {
                        let permit = place.take().expect("the branch runs only with a place");
                        let session = session.clone();
                        // In the connection's span: a request's log lines carry its
                        // connection, tenant and user.
                        requests.spawn(
                            async move {
                                let _permit = permit;
                                session.handle(request_id, body).await;
                            }
                            .in_current_span(),
                        );
                    }
                    Read::End(close) => break close,
                },
                Some(_) = requests.join_next() => {}
                close = session.close.requested() => break Some(close),
                _ = ticker.tick() => {
                    if reader.last_heard.elapsed() >= heartbeat * 3 {
                        break Some(Close::HeartbeatTimeout);
                    }
                    let _ = out.try_send(Outbound::Ping);
                }
                () = &mut token_expiry => {
                    let deadline = session.token_deadline();
                    if deadline <= tokio::time::Instant::now() {
                        break Some(Close::Unauthenticated(
                            v1::CloseReason::AuthExpired,
                            "the token expired; connect again with a fresh one".into(),
                        ));
                    }
                    // Refreshed meanwhile.
                    token_expiry.as_mut().reset(deadline);
                }
                _ = shutdown.changed() => break Some(Close::Shutdown),
            }
        };
        if close.as_ref().is_some_and(Close::lets_queue_out) {
            // Requests already taken are answered before the goodbye (the writer sends what
            // is queued first), within the shutdown's drain time: a client closed for abuse
            // or at shutdown still learns what became of each request it sent before.
            // Boxed: its timer is paid only by a connection that gets here, not by every
            // idle one (this future's size is part of each connection's memory).
            let drain = Duration::from_millis(session.app.settings.server.drain_timeout_ms);
            let _ = Box::pin(tokio::time::timeout(drain, async {
                while requests.join_next().await.is_some() {}
            }))
            .await;
        }
        requests.abort_all();
        session.slot.park(reader.bucket);
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
        // A damaged tenant is out of service: the request is answered, then the connection
        // closed with the reason.
        let mut out_of_service = None;
        let mut storage_error = |error: pm_db::Error| {
            if matches!(error, pm_db::Error::Damaged { .. }) {
                out_of_service = Some(error.to_string());
            }
            connection::storage_error(error)
        };
        // `Ok(None)`: the handler answered by itself (subscribe answers before its replay).
        let result: Result<Option<Out>, v1::Error> = async {
            if request_id == 0 {
                return Err(v1::Error::new(
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
                    .map_err(&mut storage_error),
                In::Query(query) => self
                    .tenant
                    .query(&user, query)
                    .await
                    .map(Out::QueryResult)
                    .map_err(&mut storage_error),
                In::Batch(batch) => self
                    .tenant
                    .batch(&user, batch)
                    .await
                    .map(Out::BatchResult)
                    .map_err(&mut storage_error),
                In::Subscribe(subscribe) => {
                    return self.subscribe(request_id, subscribe).await.map(|()| None)
                }
                In::Unsubscribe(_) => {
                    self.subscription.lock().await.take();
                    Ok(Out::UnsubscribeResult(v1::UnsubscribeResult {}))
                }
                In::RefreshToken(refresh) => self.refresh(refresh).await,
                In::Hello(_) => Err(v1::Error::new(
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
        let _ = self
            .out
            .send(connection::response(request_id, answer))
            .await;
        if let Some(message) = out_of_service {
            self.close.request(Close::TenantUnavailable(message));
        }
    }

    async fn refresh(&self, refresh: v1::RefreshToken) -> Result<Out, v1::Error> {
        let identity =
            self.app.verifier.verify(&refresh.token).map_err(|e| {
                v1::Error::new(v1::ErrorCode::Unauthenticated, e.to_string(), "token")
            })?;
        let expires_at = identity.expires_at_ms;
        let profile = profile(&identity);
        {
            let mut current = self
                .identity
                .lock()
                .expect("identity lock is never poisoned");
            if identity.tenant != current.tenant || identity.user != current.user {
                return Err(v1::Error::new(
                    v1::ErrorCode::PermissionDenied,
                    "the token is for another tenant or user",
                    "token",
                ));
            }
            *current = identity;
        }
        remember(&*self.tenant, &profile).await;
        Ok(Out::RefreshTokenResult(v1::RefreshTokenResult {
            expires_at,
        }))
    }

    /// Subscribes (see [`resume`](crate::resume)); a new subscription replaces the previous
    /// one.
    async fn subscribe(
        self: &Arc<Self>,
        request_id: u64,
        request: v1::Subscribe,
    ) -> Result<(), v1::Error> {
        let mut slot = self.subscription.lock().await;
        slot.take();
        let interest = Interest::parse(&request)?;
        let hub = self.app.hubs.get(&self.tenant, &self.app.metrics);
        let channels = Channels {
            out: self.out.clone(),
            close: self.close.clone(),
            capacity: self.app.settings.limits.outgoing_queue,
        };
        let user = self.identity().user;
        *slot = resume::subscribe(
            &hub,
            &self.tenant,
            &user,
            interest,
            request_id,
            channels,
            &self.app.metrics,
        )
        .await?;
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

/// The tokio instant at which a Unix-millisecond expiry falls.
fn expiry_instant(expires_at_ms: i64) -> tokio::time::Instant {
    let remaining = expires_at_ms.saturating_sub(now_ms()).max(0) as u64;
    // Far-future expiries are capped (a year) to keep the timer in range.
    tokio::time::Instant::now() + Duration::from_millis(remaining.min(365 * 24 * 3600 * 1000))
}
