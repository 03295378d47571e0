//! The connection task: owns the socket (through a reader loop and a writer task), allocates
//! request ids, correlates responses, delivers events in seq order, and reconnects.
//!
//! It never waits on the socket's writer while it could be reading: a request is taken from
//! the handles only once there is room in the writer's queue. It does stop reading while the
//! event stream is full; the server then cuts the connection off (`SLOW_CONSUMER`) and, with
//! reconnect on, the task resumes from the last event it delivered.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use pm_proto::v1::{self, client_frame::Body as In, response::Result as Out, server_frame::Body};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::connection::{self, Ws};
use crate::error::{ClientError, Result};
use crate::options::{Backoff, ClientOptions};

/// How long the writer may take to send the close frame when a connection ends.
const WRITER_GRACE: Duration = Duration::from_secs(1);

/// Whether the client is connected, as seen through [`Client::state`](crate::Client::state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Welcomed by the server; requests are sent.
    Connected {
        /// `Welcome.connection_id` of the current connection.
        connection_id: String,
    },
    /// The connection dropped; waiting for (or making) reconnect attempt `attempt`.
    Reconnecting {
        /// 1 for the first attempt after a drop.
        attempt: u32,
    },
    /// Closed for good: by `close`, by a refusal that retrying cannot fix, or after a drop
    /// without reconnect.
    Closed,
}

/// A message from a handle to the task.
#[derive(Debug)]
pub(crate) enum Request {
    /// A request that gets one `Response`.
    Call {
        body: Box<In>,
        track: Track,
        reply: oneshot::Sender<Result<Out>>,
    },
    /// An application-level ping, answered by `Pong`.
    Ping {
        reply: oneshot::Sender<Result<Duration>>,
    },
    /// Close the connection and end the task.
    Close { done: oneshot::Sender<()> },
}

/// What the task must remember about a request when its answer arrives.
#[derive(Debug, Clone)]
pub(crate) enum Track {
    Plain,
    Subscribe(Subscription, u64),
    Unsubscribe,
    RefreshToken(String),
}

/// The filters of a subscription, kept to subscribe again after a reconnect.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub(crate) project_ids: Vec<String>,
    pub(crate) entity_types: Vec<i32>,
}

impl Subscription {
    pub(crate) fn request(&self, from_seq: u64) -> In {
        In::Subscribe(v1::Subscribe {
            project_ids: self.project_ids.clone(),
            entity_types: self.entity_types.clone(),
            from_seq,
        })
    }
}

/// State shared between the task and the handles.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// The seq of the last event put into the event stream.
    pub(crate) last_seq: AtomicU64,
    /// Why the subscription could not be resumed after a reconnect, until taken.
    pub(crate) resume_error: Mutex<Option<ClientError>>,
}

#[derive(Debug)]
struct Pending {
    /// `None` for the task's own resubscribe.
    reply: Option<oneshot::Sender<Result<Out>>>,
    track: Track,
}

/// How one connection ended.
enum Exit {
    /// Dropped by the server or the network.
    Lost,
    /// `close()` (with someone waiting) or every handle dropped.
    Close(Option<oneshot::Sender<()>>),
}

/// What a server frame asks of the reader loop.
enum Flow {
    Continue,
    Event(Box<v1::Event>),
    Goodbye,
}

/// The connection task.
pub(crate) struct Task {
    url: String,
    token: String,
    options: ClientOptions,
    requests: mpsc::Receiver<Request>,
    events: mpsc::Sender<v1::Event>,
    state: watch::Sender<ConnectionState>,
    shared: Arc<Shared>,
    next_id: u64,
    pending: HashMap<u64, Pending>,
    prune_at: usize,
    pings: VecDeque<(Instant, oneshot::Sender<Result<Duration>>)>,
    subscription: Option<Subscription>,
    last_seq: u64,
}

impl Task {
    /// Builds the task for a connection that `connect` already opened.
    pub(crate) fn new(
        url: String,
        token: String,
        options: ClientOptions,
        requests: mpsc::Receiver<Request>,
        events: mpsc::Sender<v1::Event>,
        state: watch::Sender<ConnectionState>,
        shared: Arc<Shared>,
    ) -> Self {
        Task {
            url,
            token,
            options,
            requests,
            events,
            state,
            shared,
            next_id: 0,
            pending: HashMap::new(),
            prune_at: 64,
            pings: VecDeque::new(),
            subscription: None,
            last_seq: 0,
        }
    }

    /// Serves connections until the client is closed or dropped, or a drop cannot be repaired.
    pub(crate) async fn run(mut self, ws: Ws) {
        let mut ws = ws;
        loop {
            match self.serve(ws).await {
                Exit::Close(done) => {
                    self.fail_all(|| ClientError::Closed);
                    self.state.send_replace(ConnectionState::Closed);
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
                Exit::Lost => {
                    self.fail_all(|| ClientError::Disconnected);
                    let Some(backoff) = self.options.reconnect.clone() else {
                        tracing::debug!("connection lost; reconnect is off");
                        self.state.send_replace(ConnectionState::Closed);
                        return;
                    };
                    match self.reconnect(&backoff).await {
                        Ok(next) => ws = next,
                        Err(done) => {
                            self.state.send_replace(ConnectionState::Closed);
                            if let Some(done) = done {
                                let _ = done.send(());
                            }
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Fails every request in flight.
    fn fail_all(&mut self, error: impl Fn() -> ClientError) {
        for (_, pending) in self.pending.drain() {
            if let Some(reply) = pending.reply {
                let _ = reply.send(Err(error()));
            }
        }
        for (_, reply) in self.pings.drain(..) {
            let _ = reply.send(Err(error()));
        }
    }

    /// Reconnects with backoff; `Err` when the client was closed meanwhile or the server
    /// refused in a way retrying cannot fix.
    async fn reconnect(
        &mut self,
        backoff: &Backoff,
    ) -> std::result::Result<Ws, Option<oneshot::Sender<()>>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.state
                .send_replace(ConnectionState::Reconnecting { attempt });
            self.while_disconnected(tokio::time::sleep(backoff.delay(attempt)))
                .await?;
            let open = connection::open(
                self.url.clone(),
                self.token.clone(),
                self.options.client_name.clone(),
                self.options.connect_timeout,
            );
            match self.while_disconnected(open).await? {
                Ok((ws, welcome)) => {
                    tracing::debug!(attempt, connection = %welcome.connection_id, "reconnected");
                    self.state.send_replace(ConnectionState::Connected {
                        connection_id: welcome.connection_id,
                    });
                    return Ok(ws);
                }
                Err(ClientError::Rejected {
                    reason: reason @ (v1::CloseReason::AuthFailed | v1::CloseReason::AuthExpired),
                    message,
                    ..
                }) => {
                    tracing::warn!(?reason, %message, "reconnect refused; giving up");
                    return Err(None);
                }
                Err(error) => tracing::debug!(attempt, %error, "reconnect failed"),
            }
        }
    }

    /// Runs `work` while answering requests with `Disconnected`; `Err` if the client is
    /// closed or dropped meanwhile.
    async fn while_disconnected<F: Future>(
        &mut self,
        work: F,
    ) -> std::result::Result<F::Output, Option<oneshot::Sender<()>>> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                output = &mut work => return Ok(output),
                request = self.requests.recv() => match request {
                    None => return Err(None),
                    Some(Request::Close { done }) => return Err(Some(done)),
                    Some(Request::Call { reply, .. }) => {
                        let _ = reply.send(Err(ClientError::Disconnected));
                    }
                    Some(Request::Ping { reply }) => {
                        let _ = reply.send(Err(ClientError::Disconnected));
                    }
                },
            }
        }
    }

    fn allocate_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn track(&mut self, id: u64, pending: Pending) {
        self.pending.insert(id, pending);
        if self.pending.len() >= self.prune_at {
            // Callers that timed out dropped their receivers; forget those requests unless
            // their answer changes the task's own state.
            self.pending.retain(|_, p| {
                !matches!(p.track, Track::Plain) || p.reply.as_ref().is_some_and(|r| !r.is_closed())
            });
            self.prune_at = (self.pending.len() * 2).max(64);
        }
    }

    /// One connection, from `Welcome` to its end.
    async fn serve(&mut self, ws: Ws) -> Exit {
        let (sink, mut stream) = ws.split();
        let (writer_tx, writer_rx) = mpsc::channel(self.options.send_buffer.max(1));
        let writer = tokio::spawn(connection::write_loop(sink, writer_rx));

        if let Some(subscription) = self.subscription.clone() {
            let id = self.allocate_id();
            let message = connection::encode(id, subscription.request(self.last_seq));
            // The queue is new and has room for at least one frame.
            if writer_tx.try_send(message).is_ok() {
                self.track(
                    id,
                    Pending {
                        reply: None,
                        track: Track::Subscribe(subscription, self.last_seq),
                    },
                );
            }
        }

        // An event waiting for room in the event stream; the socket is not read meanwhile.
        let mut held: Option<Box<v1::Event>> = None;
        let exit = loop {
            // An owned permit and a field borrow, so that the handlers may use `self`.
            let events = self.events.clone();
            let requests = &mut self.requests;
            tokio::select! {
                permit = events.reserve_owned(), if held.is_some() => {
                    let event = held.take().expect("the branch runs only with an event held");
                    self.last_seq = event.seq;
                    self.shared.last_seq.store(event.seq, Ordering::Release);
                    // Nobody listening: the event is dropped, the position still advances.
                    if let Ok(permit) = permit {
                        permit.send(*event);
                    }
                }
                message = stream.next(), if held.is_none() => {
                    let bytes = match message {
                        None => break Exit::Lost,
                        Some(Err(error)) => {
                            tracing::debug!(%error, "read failed");
                            break Exit::Lost;
                        }
                        Some(Ok(Message::Binary(bytes))) => bytes,
                        Some(Ok(Message::Close(frame))) => {
                            tracing::debug!(?frame, "the server closed the connection");
                            break Exit::Lost;
                        }
                        Some(Ok(_)) => continue,
                    };
                    match self.on_frame(bytes) {
                        Flow::Continue => {}
                        Flow::Event(event) => held = Some(event),
                        Flow::Goodbye => break Exit::Lost,
                    }
                }
                (permit, request) = async {
                    let permit = writer_tx.reserve().await;
                    (permit, requests.recv().await)
                } => {
                    let permit = match (permit, request) {
                        (_, None) => break Exit::Close(None),
                        (_, Some(Request::Close { done })) => break Exit::Close(Some(done)),
                        (Ok(permit), Some(request)) => (permit, request),
                        (Err(_), Some(request)) => {
                            // The writer is gone: the socket failed.
                            match request {
                                Request::Call { reply, .. } => { let _ = reply.send(Err(ClientError::Disconnected)); }
                                Request::Ping { reply } => { let _ = reply.send(Err(ClientError::Disconnected)); }
                                Request::Close { .. } => unreachable!("matched above"),
                            }
                            break Exit::Lost;
                        }
                    };
                    match permit {
                        (permit, Request::Call { body, track, reply }) => {
                            let id = self.allocate_id();
                            permit.send(connection::encode(id, *body));
                            self.track(id, Pending { reply: Some(reply), track });
                        }
                        (permit, Request::Ping { reply }) => {
                            permit.send(connection::encode(0, In::Ping(v1::Ping { client_time: now_ms() })));
                            self.pings.push_back((Instant::now(), reply));
                        }
                        (_, Request::Close { .. }) => unreachable!("matched above"),
                    }
                }
            }
        };
        // Closing the queue makes the writer send a close frame and end.
        drop(writer_tx);
        let abort = writer.abort_handle();
        if tokio::time::timeout(WRITER_GRACE, writer).await.is_err() {
            abort.abort();
        }
        exit
    }

    /// Handles one server frame.
    fn on_frame(&mut self, bytes: Bytes) -> Flow {
        let frame = match v1::ServerFrame::decode(bytes) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::warn!(%error, "undecodable server frame ignored");
                return Flow::Continue;
            }
        };
        match frame.body {
            Some(Body::Response(response)) => {
                let Some(pending) = self.pending.remove(&response.request_id) else {
                    if let Some(Out::Error(error)) = response.result {
                        tracing::warn!(request_id = response.request_id, message = %error.message, "server error for no pending request");
                    }
                    return Flow::Continue;
                };
                self.settle(pending, response.result);
                Flow::Continue
            }
            Some(Body::Event(event)) => {
                // The server never repeats an event; this guards the no-duplicate promise.
                if event.seq <= self.last_seq {
                    return Flow::Continue;
                }
                Flow::Event(Box::new(event))
            }
            Some(Body::Pong(_)) => {
                // Pongs come back in the order the pings were sent.
                if let Some((sent, reply)) = self.pings.pop_front() {
                    let _ = reply.send(Ok(sent.elapsed()));
                }
                Flow::Continue
            }
            Some(Body::Goodbye(goodbye)) => {
                tracing::debug!(
                    reason = ?v1::CloseReason::try_from(goodbye.reason),
                    message = %goodbye.message,
                    resume_from_seq = goodbye.resume_from_seq,
                    "goodbye"
                );
                Flow::Goodbye
            }
            Some(Body::Welcome(_)) | None => Flow::Continue,
        }
    }

    /// Answers a request and applies what its success means to the task's state.
    fn settle(&mut self, pending: Pending, result: Option<Out>) {
        let result = match result {
            None => Err(ClientError::UnexpectedResponse(
                "a response without a result".into(),
            )),
            Some(Out::Error(error)) => Err(ClientError::server(error)),
            Some(out) => Ok(out),
        };
        match (&pending.track, &result) {
            (Track::Subscribe(subscription, from_seq), Ok(Out::SubscribeResult(_))) => {
                // Everything after the ack belongs to this subscription, from `from_seq` on.
                self.subscription = Some(subscription.clone());
                self.last_seq = *from_seq;
                self.shared.last_seq.store(*from_seq, Ordering::Release);
            }
            (Track::Unsubscribe, Ok(Out::UnsubscribeResult(_))) => self.subscription = None,
            (Track::RefreshToken(token), Ok(Out::RefreshTokenResult(_))) => {
                self.token = token.clone();
            }
            _ => {}
        }
        match pending.reply {
            Some(reply) => {
                let _ = reply.send(result);
            }
            None => {
                if let Err(error) = result {
                    // The task's own resubscribe failed: the stream cannot continue without a
                    // gap (e.g. `RESYNC_REQUIRED`); the owner must take a fresh snapshot.
                    tracing::warn!(%error, "resuming the subscription failed");
                    self.subscription = None;
                    *self
                        .shared
                        .resume_error
                        .lock()
                        .expect("resume_error lock is never poisoned") = Some(error);
                }
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
