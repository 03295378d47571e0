//! The handle: cheap to clone, every clone sends through the same connection task.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pm_proto::v1::{self, client_frame::Body as In, response::Result as Out};
use tokio::sync::{mpsc, oneshot, watch};

use crate::connection;
use crate::error::{ClientError, Result};
use crate::options::ClientOptions;
use crate::task::{ConnectionState, Request, Shared, Subscription, Task, Track};

/// A connection to pm-server. Clones share the connection; requests from any clone are
/// pipelined. The connection task ends on [`Client::close`] or when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    requests: mpsc::Sender<Request>,
    events: Mutex<Option<mpsc::Receiver<v1::Event>>>,
    state: watch::Receiver<ConnectionState>,
    shared: Arc<Shared>,
    request_timeout: Duration,
}

impl Client {
    /// Opens a WebSocket to `url` (e.g. `ws://127.0.0.1:7400/ws`), sends `Hello` with
    /// `token` and waits for `Welcome`. A `Goodbye` instead is [`ClientError::Rejected`].
    pub async fn connect(
        url: impl Into<String>,
        token: impl Into<String>,
        options: ClientOptions,
    ) -> Result<(Client, v1::Welcome)> {
        let url = url.into();
        let token = token.into();
        let (ws, welcome) = connection::open(
            url.clone(),
            token.clone(),
            options.client_name.clone(),
            options.connect_timeout,
        )
        .await?;
        let (requests_tx, requests_rx) = mpsc::channel(options.send_buffer.max(1));
        let (events_tx, events_rx) = mpsc::channel(options.event_buffer.max(1));
        let (state_tx, state_rx) = watch::channel(ConnectionState::Connected {
            connection_id: welcome.connection_id.clone(),
        });
        let shared = Arc::new(Shared::default());
        let request_timeout = options.request_timeout;
        let task = Task::new(
            url,
            token,
            options,
            requests_rx,
            events_tx,
            state_tx,
            shared.clone(),
        );
        // Owned by the handles: it ends when they are all dropped or one calls `close`.
        tokio::spawn(task.run(ws));
        let client = Client {
            inner: Arc::new(Inner {
                requests: requests_tx,
                events: Mutex::new(Some(events_rx)),
                state: state_rx,
                shared,
                request_timeout,
            }),
        };
        Ok((client, welcome))
    }

    /// Sends any request and waits for its `Response`; a server `Error` becomes
    /// [`ClientError::Server`].
    pub async fn request(&self, body: In) -> Result<Out> {
        self.call(body, Track::Plain).await
    }

    async fn call(&self, body: In, track: Track) -> Result<Out> {
        self.ask(|reply| Request::Call {
            body: Box::new(body),
            track,
            reply,
        })
        .await
    }

    /// Hands a request to the connection task and waits for its answer, both within the
    /// request timeout.
    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T>>) -> Request,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + self.inner.request_timeout;
        tokio::time::timeout_at(deadline, self.inner.requests.send(request(reply)))
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(|_| ClientError::Closed)?;
        match tokio::time::timeout_at(deadline, answer).await {
            Err(_) => Err(ClientError::Timeout),
            Ok(Err(_)) => Err(ClientError::Closed),
            Ok(Ok(result)) => result,
        }
    }

    /// Runs a command without an idempotency key.
    pub async fn command(&self, kind: v1::command::Kind) -> Result<v1::CommandResult> {
        self.command_with_key(String::new(), kind).await
    }

    /// Runs a command with an idempotency key: the same key within 24 h returns the first
    /// answer (`replayed: true`) and changes nothing.
    pub async fn command_with_key(
        &self,
        key: impl Into<String>,
        kind: v1::command::Kind,
    ) -> Result<v1::CommandResult> {
        let command = v1::Command {
            idempotency_key: key.into(),
            kind: Some(kind),
        };
        match self.request(In::Command(command)).await? {
            Out::CommandResult(result) => Ok(result),
            other => Err(unexpected("CommandResult", &other)),
        }
    }

    /// Runs a query and returns its result (which carries `as_of_seq`).
    pub async fn query(&self, kind: v1::query::Kind) -> Result<v1::query_result::Result> {
        match self
            .request(In::Query(v1::Query { kind: Some(kind) }))
            .await?
        {
            Out::QueryResult(v1::QueryResult {
                result: Some(result),
            }) => Ok(result),
            other => Err(unexpected("QueryResult", &other)),
        }
    }

    /// Runs several commands in one request; `atomic` commits all or nothing.
    pub async fn batch(&self, commands: Vec<v1::Command>, atomic: bool) -> Result<v1::BatchResult> {
        match self
            .request(In::Batch(v1::Batch { commands, atomic }))
            .await?
        {
            Out::BatchResult(result) => Ok(result),
            other => Err(unexpected("BatchResult", &other)),
        }
    }

    /// Sends `Ping` and returns the round-trip time to the `Pong`.
    pub async fn ping(&self) -> Result<Duration> {
        self.ask(|reply| Request::Ping { reply }).await
    }

    /// Replaces the connection's token; later reconnects use the new one too. Returns the
    /// new token's expiry (Unix milliseconds).
    pub async fn refresh_token(&self, token: impl Into<String>) -> Result<i64> {
        let token = token.into();
        let body = In::RefreshToken(v1::RefreshToken {
            token: token.clone(),
        });
        match self.call(body, Track::RefreshToken(token)).await? {
            Out::RefreshTokenResult(result) => Ok(result.expires_at),
            other => Err(unexpected("RefreshTokenResult", &other)),
        }
    }

    /// Subscribes (replacing any subscription) to events after `from_seq`; empty lists mean
    /// everything the caller may see. Returns the server's `head_seq`. Events arrive on
    /// [`Client::events`]; after a reconnect the client subscribes again from the last
    /// event it delivered.
    pub async fn subscribe(
        &self,
        project_ids: Vec<String>,
        entity_types: Vec<v1::EntityType>,
        from_seq: u64,
    ) -> Result<u64> {
        let subscription = Subscription {
            project_ids,
            entity_types: entity_types.into_iter().map(i32::from).collect(),
        };
        let body = subscription.request(from_seq);
        match self
            .call(body, Track::Subscribe(subscription, from_seq))
            .await?
        {
            Out::SubscribeResult(result) => Ok(result.head_seq),
            other => Err(unexpected("SubscribeResult", &other)),
        }
    }

    /// Ends the subscription (also for future reconnects).
    pub async fn unsubscribe(&self) -> Result<()> {
        let body = In::Unsubscribe(v1::Unsubscribe {});
        match self.call(body, Track::Unsubscribe).await? {
            Out::UnsubscribeResult(_) => Ok(()),
            other => Err(unexpected("UnsubscribeResult", &other)),
        }
    }

    /// The event stream, in seq order without gap or duplicate across reconnects; `None`
    /// after the first call (there is one stream per client). A consumer that falls
    /// `event_buffer` events behind stalls the connection until the server cuts it off.
    pub fn events(&self) -> Option<mpsc::Receiver<v1::Event>> {
        self.inner
            .events
            .lock()
            .expect("events lock is never poisoned")
            .take()
    }

    /// The seq of the last event put into the event stream (or the `from_seq` of the
    /// latest subscription).
    pub fn last_seq(&self) -> u64 {
        self.inner.shared.last_seq.load(Ordering::Acquire)
    }

    /// Connection state changes: connected, reconnecting, closed.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state.clone()
    }

    /// Why the subscription could not be resumed after a reconnect (e.g. `RESYNC_REQUIRED`),
    /// once; the subscription is then off and the owner should take a fresh snapshot.
    pub fn take_resume_error(&self) -> Option<ClientError> {
        self.inner
            .shared
            .resume_error
            .lock()
            .expect("resume_error lock is never poisoned")
            .take()
    }

    /// Closes the connection cleanly; requests in flight fail with `Closed`. Later calls on
    /// any clone fail with `Closed`.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self
            .inner
            .requests
            .send(Request::Close { done })
            .await
            .is_ok()
        {
            let _ = closed.await;
        }
    }
}

fn unexpected(wanted: &str, got: &Out) -> ClientError {
    let got = match got {
        Out::SubscribeResult(_) => "SubscribeResult",
        Out::UnsubscribeResult(_) => "UnsubscribeResult",
        Out::CommandResult(_) => "CommandResult",
        Out::QueryResult(_) => "QueryResult without a result",
        Out::BatchResult(_) => "BatchResult",
        Out::RefreshTokenResult(_) => "RefreshTokenResult",
        Out::Error(_) => "Error",
    };
    ClientError::UnexpectedResponse(format!("expected {wanted}, got {got}"))
}
