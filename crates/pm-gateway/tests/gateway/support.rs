//! The end-to-end harness: a server on port 0 with a fresh data directory, and real
//! WebSocket clients.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pm_proto::v1;
use pm_proto::v1::client_frame::Body as In;
use pm_proto::v1::server_frame::Body;
use prost::Message as _;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

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
