//! The end-to-end harness: a server on port 0 with a fresh data directory, and real
//! WebSocket clients; then the helpers that several test files share (queries, probes of what
//! a caller must not see, tokens and goodbyes, events, drawing proptest inputs).
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pm_gateway::auth::unix_now;
use pm_proto::v1;
use pm_proto::v1::client_frame::Body as In;
use pm_proto::v1::response::Result as Out;
use pm_proto::v1::server_frame::Body;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};
use prost::Message as _;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use v1::command::Kind as Cmd;
use v1::query::Kind as Q;
use v1::query_result::Result as QR;

pub use pm_core::time::now_ms;
pub use pm_gateway::testing::{TestServer as TestApp, SECRET};
pub use pm_gateway::Settings;

pub async fn spawn_app() -> TestApp {
    TestApp::spawn().await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    TestApp::spawn_with(configure).await
}

/// The gateway tests' own steps on a test server.
pub(crate) trait TestAppExt {
    /// A connected, welcomed client.
    async fn client(&self, tenant: &str, user: &str) -> (Client, v1::Welcome);
    /// `GET path` over a fresh connection: the status and the body.
    async fn http_get(&self, path: &str) -> (u16, String);
}

impl TestAppExt for TestApp {
    async fn client(&self, tenant: &str, user: &str) -> (Client, v1::Welcome) {
        let mut client = Client::connect(self.addr).await;
        let welcome = client.hello(&self.token(tenant, user)).await;
        (client, welcome)
    }

    async fn http_get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        let status = text[9..12].parse().unwrap();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

/// How long a test waits for a frame before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// A test client: one WebSocket.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

/// What the server sent, other than frames.
#[derive(Debug)]
pub enum Received {
    Frame(Box<Body>),
    Closed(Option<u16>),
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        Client { ws, next_id: 0 }
    }

    /// A client whose socket receive buffer is `bytes` (the kernel may round it up): it
    /// stalls sooner when it stops reading.
    pub async fn connect_with_receive_buffer(addr: SocketAddr, bytes: u32) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(
            format!("ws://{addr}/ws"),
            MaybeTlsStream::Plain(stream),
        )
        .await
        .unwrap();
        Client { ws, next_id: 0 }
    }

    pub async fn send(&mut self, request_id: u64, body: In) {
        let frame = v1::ClientFrame {
            request_id,
            body: Some(body),
        };
        self.ws
            .send(Message::Binary(frame.encode_to_vec().into()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.unwrap();
    }

    /// The next frame or close, failing the test after `WAIT`.
    pub async fn recv(&mut self) -> Received {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("the server answers in time");
            match message {
                None => return Received::Closed(None),
                Some(Err(_)) => return Received::Closed(None),
                Some(Ok(Message::Binary(bytes))) => {
                    let frame = v1::ServerFrame::decode(bytes).expect("a valid ServerFrame");
                    return Received::Frame(Box::new(frame.body.expect("a frame with a body")));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Received::Closed(frame.map(|f| u16::from(f.code)))
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    pub async fn frame(&mut self) -> Body {
        match self.recv().await {
            Received::Frame(body) => *body,
            Received::Closed(code) => {
                panic!("connection closed ({code:?}) while a frame was expected")
            }
        }
    }

    /// The close code after a goodbye: returns (goodbye, close code).
    pub async fn goodbye(&mut self) -> (v1::Goodbye, Option<u16>) {
        let goodbye = loop {
            match self.recv().await {
                Received::Frame(body) => match *body {
                    Body::Goodbye(g) => break g,
                    _ => continue,
                },
                Received::Closed(code) => panic!("closed ({code:?}) without a goodbye"),
            }
        };
        let code = loop {
            match self.recv().await {
                Received::Closed(code) => break code,
                Received::Frame(_) => continue,
            }
        };
        (goodbye, code)
    }

    pub async fn hello(&mut self, token: &str) -> v1::Welcome {
        self.send(
            0,
            In::Hello(v1::Hello {
                token: token.into(),
                client_name: "test".into(),
                protocol_version: 1,
            }),
        )
        .await;
        match self.frame().await {
            Body::Welcome(w) => w,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    /// Sends a request and waits for its response, skipping events.
    pub async fn request(&mut self, body: In) -> v1::response::Result {
        self.next_id += 1;
        let id = self.next_id;
        self.send(id, body).await;
        loop {
            match self.frame().await {
                Body::Response(r) if r.request_id == id => return r.result.expect("a result"),
                Body::Event(_) | Body::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    pub async fn command(
        &mut self,
        kind: v1::command::Kind,
    ) -> Result<v1::CommandResult, v1::Error> {
        match self
            .request(In::Command(v1::Command {
                idempotency_key: String::new(),
                kind: Some(kind),
            }))
            .await
        {
            v1::response::Result::CommandResult(r) => Ok(r),
            v1::response::Result::Error(e) => Err(e),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub async fn query(
        &mut self,
        kind: v1::query::Kind,
    ) -> Result<v1::query_result::Result, v1::Error> {
        match self
            .request(In::Query(v1::Query { kind: Some(kind) }))
            .await
        {
            v1::response::Result::QueryResult(r) => Ok(r.result.expect("a result")),
            v1::response::Result::Error(e) => Err(e),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub async fn create_project(&mut self, key: &str) -> v1::Project {
        let result = self
            .command(v1::command::Kind::CreateProject(v1::CreateProject {
                key: key.into(),
                name: key.into(),
                description: String::new(),
            }))
            .await
            .expect("project created");
        match result.entity.and_then(|e| e.kind) {
            Some(v1::entity::Kind::Project(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    pub async fn create_item(&mut self, project_id: &str, title: &str) -> (v1::WorkItem, u64) {
        let result = self
            .command(create_item(project_id, title))
            .await
            .expect("item created");
        match result.entity.and_then(|e| e.kind) {
            Some(v1::entity::Kind::WorkItem(w)) => (w, result.seq),
            other => panic!("{other:?}"),
        }
    }

    pub async fn subscribe(&mut self, from_seq: u64) -> Result<u64, v1::Error> {
        match self
            .request(In::Subscribe(v1::Subscribe {
                project_ids: vec![],
                entity_types: vec![],
                from_seq,
            }))
            .await
        {
            v1::response::Result::SubscribeResult(r) => Ok(r.head_seq),
            v1::response::Result::Error(e) => Err(e),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The next event (skipping nothing else: a response here fails the test).
    pub async fn event(&mut self) -> v1::Event {
        match self.frame().await {
            Body::Event(e) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// Subscribes with filters; the ack's head seq or the error.
    pub async fn subscribe_to(
        &mut self,
        project_ids: &[&str],
        entity_types: &[v1::EntityType],
        from_seq: u64,
    ) -> Result<u64, v1::Error> {
        match self
            .request(In::Subscribe(v1::Subscribe {
                project_ids: project_ids.iter().map(|p| (*p).to_owned()).collect(),
                entity_types: entity_types.iter().map(|t| *t as i32).collect(),
                from_seq,
            }))
            .await
        {
            v1::response::Result::SubscribeResult(r) => Ok(r.head_seq),
            v1::response::Result::Error(e) => Err(e),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Adds `user` to `project` with `role` (the caller must be an admin); the change's seq.
    pub async fn add_member(&mut self, project: &str, user: &str, role: v1::ProjectRole) -> u64 {
        let result = self
            .command(v1::command::Kind::AddMember(v1::AddMember {
                project_id: project.into(),
                user_id: user.into(),
                role: role.into(),
            }))
            .await
            .expect("member added");
        match result.entity.as_ref().and_then(|e| e.kind.as_ref()) {
            Some(v1::entity::Kind::ProjectMember(m)) => {
                assert_eq!(
                    (m.project_id.as_str(), m.user_id.as_str(), m.role),
                    (project, user, role as i32)
                );
            }
            other => panic!("expected a member, got {other:?}"),
        }
        result.seq
    }

    /// Sends a `Ping` and requires the very next frame to be its `Pong`: nothing else was
    /// queued for this connection before it.
    ///
    /// The `Pong` goes through the same outgoing queue as events, so an event queued before the
    /// ping arrives before the pong. The proof is only sound once every event that could still
    /// arrive has been published, so each such check follows the receipt (here or on a barrier
    /// connection) of the last event written.
    pub async fn assert_nothing_more(&mut self, tag: i64) {
        self.send(0, In::Ping(v1::Ping { client_time: tag })).await;
        match self.frame().await {
            Body::Pong(pong) => assert_eq!(pong.client_time, tag),
            other => panic!("expected only the Pong, got {other:?}"),
        }
    }
}

/// A `CreateWorkItem` (a task) in `project_id`.
pub fn create_item(project_id: &str, title: &str) -> v1::command::Kind {
    v1::command::Kind::CreateWorkItem(v1::CreateWorkItem {
        project_id: project_id.into(),
        item_type: v1::WorkItemType::Task.into(),
        title: title.into(),
        ..Default::default()
    })
}

/// The `Error` a test expects: `code`, exact `message` and `field`.
pub fn error(code: v1::ErrorCode, message: &str, field: &str) -> v1::Error {
    v1::Error {
        code: code.into(),
        message: message.into(),
        field: field.into(),
        current: None,
    }
}

// ---- Queries ------------------------------------------------------------------------------

/// The known code of an error.
pub fn code(error: &v1::Error) -> v1::ErrorCode {
    v1::ErrorCode::try_from(error.code).expect("a known error code")
}

/// A `ListWorkItems` page request, optionally searching titles for `text`.
pub fn list_query(project_id: &str, page_size: u32, page_token: &str, text: &str) -> Q {
    Q::ListWorkItems(v1::ListWorkItems {
        project_id: project_id.into(),
        page: Some(v1::PageRequest {
            page_size,
            page_token: page_token.into(),
        }),
        text: text.into(),
        ..Default::default()
    })
}

pub async fn list_items(
    client: &mut Client,
    project_id: &str,
    page_size: u32,
    page_token: &str,
    text: &str,
) -> Result<v1::ListWorkItemsResult, v1::Error> {
    match client
        .query(list_query(project_id, page_size, page_token, text))
        .await?
    {
        QR::ListWorkItemsResult(r) => Ok(r),
        other => panic!("expected ListWorkItemsResult, got {other:?}"),
    }
}

/// A work item as reads show it when nothing blocks it: reads derive `blocked`, command
/// results and events leave it out.
pub fn unblocked(item: &v1::WorkItem) -> v1::WorkItem {
    v1::WorkItem {
        blocked: Some(false),
        ..item.clone()
    }
}

/// One page holding every item (at most 500).
pub async fn all_items(client: &mut Client, project_id: &str) -> v1::ListWorkItemsResult {
    let page = list_items(client, project_id, 500, "", "")
        .await
        .expect("items listed");
    assert_eq!(page.next_page_token, "", "everything fits one page");
    page
}

pub async fn get_work_item(
    client: &mut Client,
    id: &str,
    display_key: &str,
) -> Result<v1::WorkItem, v1::Error> {
    match client
        .query(Q::GetWorkItem(v1::GetWorkItem {
            id: id.into(),
            display_key: display_key.into(),
        }))
        .await?
    {
        QR::GetWorkItemResult(r) => Ok(r.work_item.expect("a work item")),
        other => panic!("expected GetWorkItemResult, got {other:?}"),
    }
}

pub async fn get_project(client: &mut Client, id: &str) -> Result<v1::GetProjectResult, v1::Error> {
    match client
        .query(Q::GetProject(v1::GetProject { id: id.into() }))
        .await?
    {
        QR::GetProjectResult(r) => Ok(r),
        other => panic!("expected GetProjectResult, got {other:?}"),
    }
}

pub async fn list_activity(
    client: &mut Client,
    query: v1::ListActivity,
) -> Result<v1::ListActivityResult, v1::Error> {
    match client.query(Q::ListActivity(query)).await? {
        QR::ListActivityResult(r) => Ok(r),
        other => panic!("expected ListActivityResult, got {other:?}"),
    }
}

/// A `ListProjects` request.
pub fn list_projects() -> In {
    In::Query(v1::Query {
        kind: Some(Q::ListProjects(v1::ListProjects::default())),
    })
}

/// What `ListProjects` answers on an empty tenant.
pub fn no_projects() -> Out {
    Out::QueryResult(v1::QueryResult {
        result: Some(QR::ListProjectsResult(v1::ListProjectsResult {
            items: vec![],
            next_page_token: String::new(),
            as_of_seq: 0,
        })),
    })
}

/// The response to `request_id`: the error `code`, exact `message` and `field`.
pub fn error_response(request_id: u64, code: v1::ErrorCode, message: &str, field: &str) -> Body {
    Body::Response(v1::Response {
        request_id,
        result: Some(Out::Error(error(code, message, field))),
    })
}

// ---- Probes of what a caller must not see ---------------------------------------------------

/// A fresh UUIDv7 that names nothing.
pub fn unknown_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Every way a caller might reach a project or an item it must not see, as requests.
pub fn probes(project_id: &str, item_id: &str, display_key: &str) -> Vec<(&'static str, In)> {
    let query = |kind| In::Query(v1::Query { kind: Some(kind) });
    let command = |kind| {
        In::Command(v1::Command {
            idempotency_key: String::new(),
            kind: Some(kind),
        })
    };
    vec![
        (
            "GetProject",
            query(Q::GetProject(v1::GetProject {
                id: project_id.into(),
            })),
        ),
        (
            "ListMembers",
            query(Q::ListMembers(v1::ListMembers {
                project_id: project_id.into(),
                page: None,
            })),
        ),
        (
            "GetWorkItem by id",
            query(Q::GetWorkItem(v1::GetWorkItem {
                id: item_id.into(),
                display_key: String::new(),
            })),
        ),
        (
            "GetWorkItem by display key",
            query(Q::GetWorkItem(v1::GetWorkItem {
                id: String::new(),
                display_key: display_key.into(),
            })),
        ),
        (
            "ListWorkItems",
            query(Q::ListWorkItems(v1::ListWorkItems {
                project_id: project_id.into(),
                ..Default::default()
            })),
        ),
        (
            "ListWorkItems with a text search",
            query(Q::ListWorkItems(v1::ListWorkItems {
                project_id: project_id.into(),
                text: "secret".into(),
                ..Default::default()
            })),
        ),
        (
            "ListSprints",
            query(Q::ListSprints(v1::ListSprints {
                project_id: project_id.into(),
                ..Default::default()
            })),
        ),
        (
            "ListComments",
            query(Q::ListComments(v1::ListComments {
                work_item_id: item_id.into(),
                ..Default::default()
            })),
        ),
        (
            "Search in the project",
            query(Q::Search(v1::Search {
                text: "secret".into(),
                project_id: project_id.into(),
                ..Default::default()
            })),
        ),
        (
            "ListSwimLanes",
            query(Q::ListSwimLanes(v1::ListSwimLanes {
                project_id: project_id.into(),
                ..Default::default()
            })),
        ),
        (
            "GetBoardSummary",
            query(Q::GetBoardSummary(v1::GetBoardSummary {
                project_id: project_id.into(),
                sprint_id: None,
            })),
        ),
        (
            "GetWorkItemHierarchy",
            query(Q::GetWorkItemHierarchy(v1::GetWorkItemHierarchy {
                id: item_id.into(),
                include_deleted: true,
            })),
        ),
        (
            "GetTimeTotals",
            query(Q::GetTimeTotals(v1::GetTimeTotals {
                project_id: project_id.into(),
                group_by: v1::TimeGrouping::User.into(),
                ..Default::default()
            })),
        ),
        (
            "ListDependencies of an item",
            query(Q::ListDependencies(v1::ListDependencies {
                project_id: project_id.into(),
                work_item_id: Some(item_id.into()),
                direction: v1::DependencyDirection::BlockedBy.into(),
                ..Default::default()
            })),
        ),
        (
            "CreateWorkItem",
            command(create_item(project_id, "planted")),
        ),
        (
            "UpdateWorkItem",
            command(Cmd::UpdateWorkItem(v1::UpdateWorkItem {
                id: item_id.into(),
                expected_version: 1,
                title: Some("taken over".into()),
                ..Default::default()
            })),
        ),
        (
            "DeleteWorkItem",
            command(Cmd::DeleteWorkItem(v1::DeleteWorkItem {
                id: item_id.into(),
                expected_version: 1,
            })),
        ),
        (
            "CreateComment",
            command(Cmd::CreateComment(v1::CreateComment {
                work_item_id: item_id.into(),
                content: "planted".into(),
            })),
        ),
        (
            "AddMember (granting oneself access)",
            command(Cmd::AddMember(v1::AddMember {
                project_id: project_id.into(),
                user_id: "mallory".into(),
                role: v1::ProjectRole::Admin.into(),
            })),
        ),
        (
            "DeleteProject",
            command(Cmd::DeleteProject(v1::DeleteProject {
                id: project_id.into(),
                expected_version: 1,
            })),
        ),
    ]
}

/// The answer to a request, as an error (a success fails the test).
pub async fn refusal(client: &mut Client, name: &str, body: In) -> v1::Error {
    match client.request(body).await {
        Out::Error(e) => e,
        other => panic!("{name}: expected a refusal, got {other:?}"),
    }
}

/// Sends every probe for the real ids and for ids that exist nowhere: the answers must be the
/// same, so that the refusal tells the attacker nothing (not even that the id exists).
pub async fn assert_probes_learn_nothing(
    client: &mut Client,
    project: &str,
    item: &str,
    key: &str,
) {
    let real = probes(project, item, key);
    let guessed = probes(&unknown_id(), &unknown_id(), "ZZZ-1");
    for ((name, real), (_, guessed)) in real.into_iter().zip(guessed) {
        let got = refusal(client, name, real).await;
        let baseline = refusal(client, name, guessed).await;
        assert_eq!(
            v1::ErrorCode::try_from(got.code),
            Ok(v1::ErrorCode::NotFound),
            "{name}: {got:?}"
        );
        assert_eq!(
            got, baseline,
            "{name}: the refusal differs from a made-up id's"
        );
        assert!(!got.message.contains(project) && !got.message.contains(item));
    }
}

// ---- Tokens, Hello and goodbyes -----------------------------------------------------------

/// Signs `claims` with HMAC `alg` and `secret`.
pub fn sign(claims: &Value, alg: Algorithm, secret: impl AsRef<[u8]>) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_ref()),
    )
    .expect("HMAC signing cannot fail")
}

/// Valid claims for `tenant`/`user`, an hour from expiry, with `extra` merged in.
pub fn claims(tenant: &str, user: &str, extra: Value) -> Value {
    let mut claims = json!({"sub": user, "tid": tenant, "exp": unix_now() + 3600});
    if let (Value::Object(into), Value::Object(from)) = (&mut claims, extra) {
        into.extend(from);
    }
    claims
}

/// `claims` signed as the server expects (HS256 with its secret).
pub fn hs256(claims: &Value) -> String {
    sign(claims, Algorithm::HS256, SECRET)
}

/// A token the server accepts, for `tenant`/`user`, expiring at `exp` (Unix seconds).
pub fn token_until(tenant: &str, user: &str, exp: u64) -> String {
    sign(
        &json!({"sub": user, "tid": tenant, "exp": exp}),
        Algorithm::HS256,
        SECRET,
    )
}

/// A `Hello` with `token`.
pub fn hello(token: &str) -> In {
    In::Hello(v1::Hello {
        token: token.into(),
        client_name: "test".into(),
        protocol_version: 1,
    })
}

/// Connects, sends `Hello{token}` and returns the goodbye and close code it gets.
pub async fn refused(app: &TestApp, token: &str) -> (v1::Goodbye, Option<u16>) {
    let mut client = Client::connect(app.addr).await;
    client.send(0, hello(token)).await;
    client.goodbye().await
}

/// The `Goodbye` a test expects.
pub fn goodbye(reason: v1::CloseReason, message: &str, resume_from_seq: u64) -> v1::Goodbye {
    v1::Goodbye {
        reason: reason.into(),
        message: message.into(),
        resume_from_seq,
    }
}

/// [`goodbye`] with no resume position. The tests that came from the security suite call it
/// `goodbye` (through a `use … as goodbye` at their top), so that they read as written.
pub fn goodbye_without_resume(reason: v1::CloseReason, message: &str) -> v1::Goodbye {
    goodbye(reason, message, 0)
}

/// The refusal of a Hello: `Goodbye{AUTH_FAILED, message}` and close code 4001.
pub fn auth_failed(message: &str) -> (v1::Goodbye, Option<u16>) {
    (goodbye(v1::CloseReason::AuthFailed, message, 0), Some(4001))
}

// ---- Connections and events -----------------------------------------------------------------

/// Sends `ClientFrame{ping}` and expects its `Pong`, skipping nothing else.
pub async fn ping_pong(client: &mut Client, client_time: i64) {
    client.send(0, In::Ping(v1::Ping { client_time })).await;
    match client.frame().await {
        Body::Pong(pong) => assert_eq!(pong.client_time, client_time),
        other => panic!("expected a Pong, got {other:?}"),
    }
}

/// Connections the server counts as open.
pub fn open_connections(app: &TestApp) -> u64 {
    app.app.metrics.connections_open.get()
}

/// Reads events until one with `seq >= last` arrives; fails on anything but an event.
pub async fn events_until(client: &mut Client, last: u64) -> Vec<v1::Event> {
    let mut events = Vec::new();
    loop {
        let event = client.event().await;
        let seq = event.seq;
        events.push(event);
        if seq >= last {
            return events;
        }
    }
}

pub fn seqs(events: &[v1::Event]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

// ---- Property tests over a live connection --------------------------------------------------

/// A proptest runner for `cases` inputs, drawn by hand inside an async test.
pub fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        ..Config::default()
    })
}

pub fn draw<S: Strategy>(runner: &mut TestRunner, strategy: &S) -> S::Value {
    strategy
        .new_tree(runner)
        .expect("the strategy draws a value")
        .current()
}

/// Checks that an error is one a client can act on and that it leaks nothing.
pub fn assert_coded(error: &v1::Error, input: &dyn std::fmt::Debug) {
    use v1::ErrorCode as C;
    let code = C::try_from(error.code);
    assert!(
        matches!(
            code,
            Ok(C::InvalidArgument
                | C::NotFound
                | C::Conflict
                | C::FailedPrecondition
                | C::PermissionDenied
                | C::ResyncRequired
                | C::Unauthenticated)
        ),
        "{error:?} for {input:?}"
    );
    assert!(!error.message.is_empty(), "{error:?} for {input:?}");
    let lower = error.message.to_lowercase();
    for leak in [
        "sql",
        "select ",
        "insert ",
        ".rs:",
        "/tmp",
        "tenant.db",
        "panicked",
    ] {
        assert!(!lower.contains(leak), "{error:?} for {input:?}");
    }
}

// ---- A NATS server of a test's own --------------------------------------------------------

/// A NATS server of this test's own on a free port, to stop and start again; killed on drop.
/// Never the shared one.
pub struct PrivateNats {
    port: u16,
    child: Option<std::process::Child>,
}

impl PrivateNats {
    pub fn start() -> PrivateNats {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().expect("a bound port").port()
        };
        let mut nats = PrivateNats { port, child: None };
        nats.restart();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        let child = std::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server is installed (the tests with PM_TEST_NATS_URL need it)");
        self.child = Some(child);
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
    }
}
