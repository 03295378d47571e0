//! When the server refuses or drops a connection: the total cap (HTTP 503 at the upgrade,
//! while probes still answer), per-user and per-tenant caps (1013), a flood of idle sockets, the
//! hello timeout and slow handshakes, heartbeats (a silent client is closed after three
//! intervals, an active one stays), and handshakes accepted while the runtime is busy.
//!
//! Timers run on tokio's paused clock where nothing waits on SQLite: the hello-timeout and
//! heartbeat tests touch no database once connected, so `tokio::time::pause()` there makes the
//! timers exact and instant. Tests that wait for database answers keep the real clock: with a
//! paused clock the runtime would look idle while SQLite works on its own threads and jump
//! straight to the client's 10 s timeout.

use std::time::Duration;

use pm_proto::v1;
use pm_proto::v1::client_frame::Body as In;
use pm_proto::v1::server_frame::Body;
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::support::*;

/// Closes a client's WebSocket and waits for the server's close reply.
async fn close(mut client: Client) {
    client
        .ws
        .close(None)
        .await
        .expect("the close frame is sent");
    assert!(matches!(client.recv().await, Received::Closed(_)));
}

/// Reads everything until the server closes the socket.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    match tokio::time::timeout(WAIT, stream.read_to_end(&mut bytes)).await {
        Ok(Ok(_)) => {}
        // A reset after the server gave up counts as closed too.
        Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Err(_) => panic!("the server never closed the socket"),
    }
    bytes
}

/// A WebSocket connect that must be refused over HTTP: its status and body.
async fn http_refusal(app: &TestApp) -> (u16, String) {
    match tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr)).await {
        Err(tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            String::from_utf8(response.body().clone().unwrap_or_default()).unwrap(),
        ),
        Err(other) => panic!("expected an HTTP refusal, got {other:?}"),
        Ok(_) => panic!("expected an HTTP refusal, got a connection"),
    }
}

// ---- Connection caps -----------------------------------------------------------------------

#[tokio::test]
async fn an_upgrade_over_the_total_limit_gets_http_503() {
    let app = spawn_app_with(|s| s.limits.max_connections = 1).await;
    let (first, _) = app.client("acme", "alice").await;

    let error = tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr))
        .await
        .expect_err("the second connection is refused");
    match error {
        tungstenite::Error::Http(response) => {
            assert_eq!(response.status(), 503);
            assert_eq!(
                response.body().as_deref(),
                Some(&b"too many connections\n"[..])
            );
        }
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }

    close(first).await;
    let (_again, welcome) = app.client("acme", "bob").await;
    assert_eq!(welcome.user_id, "bob");
}

#[tokio::test]
async fn a_user_over_the_per_user_limit_gets_too_many_connections_and_1013() {
    let app = spawn_app_with(|s| s.limits.max_connections_per_user = 2).await;
    let (first, _) = app.client("acme", "alice").await;
    let (_second, _) = app.client("acme", "alice").await;

    assert_eq!(
        refused(&app, &app.token("acme", "alice")).await,
        (
            goodbye(
                v1::CloseReason::TooManyConnections,
                "too many connections for this user",
                0
            ),
            Some(1013)
        )
    );
    // Another user of the same tenant, and the same user id in another tenant, still connect.
    let (_bob, welcome) = app.client("acme", "bob").await;
    assert_eq!(welcome.user_id, "bob");
    let (_other, welcome) = app.client("globex", "alice").await;
    assert_eq!(welcome.tenant_id, "globex");

    // A closed connection gives its place back.
    close(first).await;
    let (_third, welcome) = app.client("acme", "alice").await;
    assert_eq!(welcome.user_id, "alice");
}

#[tokio::test]
async fn connection_floods_of_one_user_and_one_tenant_are_refused_with_1013() {
    use crate::support::goodbye_without_resume as goodbye;
    let app = spawn_app_with(|s| {
        s.limits.max_connections_per_user = 3;
        s.limits.max_connections_per_tenant = 5;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(app.client("acme", "alice").await.0);
    }
    let per_user = (
        goodbye(
            v1::CloseReason::TooManyConnections,
            "too many connections for this user",
        ),
        Some(1013),
    );
    for _ in 0..5 {
        assert_eq!(refused(&app, &app.token("acme", "alice")).await, per_user);
    }
    held.push(app.client("acme", "bob").await.0);
    held.push(app.client("acme", "carol").await.0);
    let per_tenant = (
        goodbye(
            v1::CloseReason::TooManyConnections,
            "too many connections for this tenant",
        ),
        Some(1013),
    );
    for user in ["dave", "erin", "bob"] {
        assert_eq!(refused(&app, &app.token("acme", user)).await, per_tenant);
    }
    // Another tenant is not affected by acme's flood.
    assert_eq!(app.client("globex", "alice").await.1.tenant_id, "globex");
}

#[tokio::test]
async fn a_flood_of_idle_sockets_is_capped_and_then_timed_out() {
    let app = spawn_app_with(|s| {
        s.limits.max_connections = 8;
        s.limits.hello_timeout_ms = 500;
    })
    .await;
    // Eight sockets that never finish their request head hold every place.
    let mut idle = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(b"GET /ws HTTP/1.1\r\n").await.unwrap();
        idle.push(stream);
    }
    // A health check proves the server has taken them all (it serves in accept order).
    assert_eq!(app.http_get("/healthz").await, (200, "ok\n".into()));
    assert_eq!(
        http_refusal(&app).await,
        (503, "too many connections\n".into())
    );
    // Probes still answer while the flood holds the cap.
    assert_eq!(app.http_get("/readyz").await, (200, "ready\n".into()));
    // The flood ends at the hello timeout: each is closed without an answer...
    for stream in &mut idle {
        assert_eq!(read_to_close(stream).await, b"");
    }
    // ...and its place is free again (the permit goes with the task, just after the socket).
    let mut client = loop {
        match tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr)).await {
            Ok((ws, _)) => break ws,
            Err(tungstenite::Error::Http(r)) if r.status() == 503 => tokio::task::yield_now().await,
            Err(other) => panic!("{other:?}"),
        }
    };
    use futures::{SinkExt, StreamExt};
    let hello = v1::ClientFrame {
        request_id: 0,
        body: Some(In::Hello(v1::Hello {
            token: app.token("acme", "alice"),
            client_name: String::new(),
            protocol_version: 1,
        })),
    };
    client
        .send(Message::Binary(hello.encode_to_vec().into()))
        .await
        .unwrap();
    let Some(Ok(Message::Binary(welcome))) = client.next().await else {
        panic!("expected the welcome");
    };
    assert!(matches!(
        v1::ServerFrame::decode(welcome).unwrap().body,
        Some(Body::Welcome(_))
    ));
}

// ---- Hello timeout -------------------------------------------------------------------------

#[tokio::test]
async fn no_hello_within_the_hello_timeout_gets_hello_timeout_and_4001() {
    let app = spawn_app_with(|s| s.limits.hello_timeout_ms = 200).await;
    let mut client = Client::connect(app.addr).await;
    // The upgrade is done; from here on only the server's hello timer can end the wait.
    tokio::time::pause();
    assert_eq!(
        client.goodbye().await,
        (
            goodbye(v1::CloseReason::HelloTimeout, "no Hello within 200 ms", 0),
            Some(4001)
        )
    );
}

/// The status line of a WebSocket upgrade with `extra` headers.
async fn upgrade_status(app: &TestApp, host: &str, extra: &str) -> String {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(
            format!(
                "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n") {
        let mut byte = [0u8];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap().trim_end().to_owned()
}

#[tokio::test]
async fn a_page_of_another_origin_cannot_open_a_websocket() {
    let app = spawn_app_with(|s| {
        s.server.allowed_origins = vec![
            "https://board.example.com".into(),
            "http://localhost:*".into(),
        ];
    })
    .await;
    let host = app.addr.to_string();
    let switching = "HTTP/1.1 101 Switching Protocols";
    let forbidden = "HTTP/1.1 403 Forbidden";
    for (origin, expected) in [
        // Programs send no Origin; the server's own pages, and the listed origins, may.
        (String::new(), switching),
        (format!("Origin: http://{host}\r\n"), switching),
        ("Origin: https://board.example.com\r\n".into(), switching),
        ("Origin: http://localhost:5173\r\n".into(), switching),
        // A page on any other site (cross-site WebSocket hijacking), a sandboxed page, a
        // look-alike host, another scheme or port of a listed origin: refused.
        ("Origin: https://evil.example\r\n".into(), forbidden),
        ("Origin: null\r\n".into(), forbidden),
        (
            "Origin: http://localhost.evil.example\r\n".into(),
            forbidden,
        ),
        ("Origin: http://board.example.com\r\n".into(), forbidden),
        (
            "Origin: https://board.example.com:444\r\n".into(),
            forbidden,
        ),
    ] {
        assert_eq!(
            upgrade_status(&app, &host, &origin).await,
            expected,
            "{origin:?}"
        );
    }
    // The refusal says why.
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(
            format!(
                "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
                 Origin: https://evil.example\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.ends_with(
            "\r\n\r\nthis page's origin may not open a WebSocket here (server.allowed_origins)\n"
        ),
        "{answer}"
    );
}

/// A WebSocket upgrade on a raw socket, answered 101.
async fn raw_upgrade(app: &TestApp) -> TcpStream {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    read_switching(&mut stream).await;
    stream
}

/// Reads the answer's head, byte by byte (what follows is WebSocket frames), and checks it
/// is 101.
async fn read_switching(stream: &mut TcpStream) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101 "), "{head:?}");
}

/// Splits unmasked server frames: (opcode, payload) each.
fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let (len, header) = match bytes[1] & 0x7f {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => panic!("no server frame here is that large"),
            n => (n as usize, 2),
        };
        frames.push((opcode, bytes[header..header + len].to_vec()));
        bytes = &bytes[header + len..];
    }
    assert!(bytes.is_empty(), "a truncated frame");
    frames
}

#[tokio::test]
async fn slow_handshakes_are_cut_off_at_the_hello_timeout() {
    use crate::support::goodbye_without_resume as goodbye;
    let app = spawn_app_with(|s| s.limits.hello_timeout_ms = 300).await;

    // A socket that says nothing: closed without an answer.
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    assert_eq!(read_to_close(&mut silent).await, b"");

    // Slowloris: half a request head, then nothing.
    let mut slow_head = TcpStream::connect(app.addr).await.unwrap();
    slow_head
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    assert_eq!(read_to_close(&mut slow_head).await, b"");

    // Upgraded, then half a frame header of the Hello, then nothing.
    let expected_goodbye = v1::ServerFrame {
        body: Some(Body::Goodbye(goodbye(
            v1::CloseReason::HelloTimeout,
            "no Hello within 300 ms",
        ))),
    }
    .encode_to_vec();
    let mut close_payload = 4001u16.to_be_bytes().to_vec();
    close_payload.extend_from_slice(b"no Hello within 300 ms");
    for partial in [
        &b""[..],
        &[0x82][..],
        &[0x82, 0xff][..],
        &[0x82, 0x85, 1, 2, 3, 4, 0][..],
    ] {
        let mut stream = raw_upgrade(&app).await;
        stream.write_all(partial).await.unwrap();
        let frames = server_frames(&read_to_close(&mut stream).await);
        assert_eq!(
            frames,
            vec![
                (0x2, expected_goodbye.clone()),
                (0x8, close_payload.clone())
            ],
            "after {partial:?}"
        );
    }
    // Nobody was counted as connected, and the server still serves.
    assert_eq!(app.http_get("/healthz").await, (200, "ok\n".into()));
    let (_client, welcome) = app.client("acme", "alice").await;
    assert_eq!(welcome.user_id, "alice");
}

// ---- Heartbeat -----------------------------------------------------------------------------

// The client must not read while it is meant to be silent: reading a WebSocket answers the
// server's pings, which counts as traffic. So the test waits on the paused clock instead:
// `sleep` returns only after every timer before it has fired and the runtime has gone idle,
// that is after the server has acted on each heartbeat tick.

#[tokio::test]
async fn a_silent_client_is_closed_after_three_heartbeat_intervals() {
    let app = spawn_app_with(|s| s.limits.heartbeat_interval_ms = 1_000).await;
    let (mut client, welcome) = app.client("acme", "alice").await;
    assert_eq!(welcome.heartbeat_interval_ms, 1_000);
    tokio::time::pause();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(open_connections(&app), 1, "still open after 2.5 intervals");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // The server has given up by now; the client wakes up and reads what it was sent: two
    // pings (which it answers), the goodbye and the close frame. A server that had not given
    // up would keep the client busy with pings forever, hence the outer (virtual) limit.
    let closing = tokio::time::timeout(Duration::from_secs(60), client.goodbye())
        .await
        .expect("the server closes a silent client");
    assert_eq!(
        closing,
        (
            goodbye(
                v1::CloseReason::HeartbeatTimeout,
                "no traffic for three heartbeat intervals",
                0
            ),
            Some(1001)
        )
    );
}

#[tokio::test]
async fn an_active_client_outlives_many_heartbeat_intervals() {
    let app = spawn_app_with(|s| s.limits.heartbeat_interval_ms = 1_000).await;
    let (mut client, _) = app.client("acme", "alice").await;
    tokio::time::pause();
    // A ping every half interval for six intervals, twice the silence allowed.
    for i in 0..12 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        ping_pong(&mut client, i).await;
    }
    assert_eq!(open_connections(&app), 1);
}

#[tokio::test]
async fn a_hello_sent_with_the_upgrade_request_is_answered() {
    let app = spawn_app().await;
    let token = token_until("acme", "alice", pm_gateway::auth::unix_now() + 3_600);
    let payload = v1::ClientFrame {
        request_id: 0,
        body: Some(hello(&token)),
    }
    .encode_to_vec();
    // The request and a masked binary frame (a zero mask leaves the payload as it is), in one
    // write: the server reads the frame's first bytes with the request's head.
    let mut bytes = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    bytes.extend_from_slice(&[0x82, 0x80 | 126]);
    bytes.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    bytes.extend_from_slice(&payload);
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    read_switching(&mut stream).await;
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        stream,
        tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    let message = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut ws))
        .await
        .expect("the server answers in time");
    let Some(Ok(Message::Binary(bytes))) = message else {
        panic!("expected the Welcome, got {message:?}");
    };
    match v1::ServerFrame::decode(bytes).unwrap().body {
        Some(Body::Welcome(welcome)) => assert_eq!(welcome.user_id, "alice"),
        other => panic!("expected the Welcome, got {other:?}"),
    }
}

/// Connections are accepted on a thread of their own: while every task of the server waits
/// (here, the test's single-threaded runtime is blocked), a burst of connections four times
/// the kernel's queue completes its handshakes, and each is served once the runtime is free.
/// Accepted by a task, every connection past the first 65 (a listen backlog of 64) would wait
/// in vain for the kernel to take its SYN. The thread wakes within microseconds, not within
/// the 64 connects (about 10 µs each on loopback) that would fill the queue, and a handshake
/// dropped all the same is retried by its client a second later, well within the timeout.
#[tokio::test]
async fn a_burst_larger_than_the_backlog_is_accepted_while_the_runtime_is_busy() {
    const BACKLOG: u32 = 64;
    const BURST: usize = 4 * BACKLOG as usize;
    let dir = tempfile::tempdir().unwrap();
    let listener = pm_gateway::server::listen(([127, 0, 0, 1], 0).into(), BACKLOG).unwrap();
    let mut app = TestApp::serve_on(listener, dir.path(), |_| {});
    // The server runs (its accept thread started) before the runtime is blocked.
    assert_eq!(app.http_get("/healthz").await, (200, "ok\n".into()));
    let addr = app.addr;
    let connecting = std::thread::spawn(move || {
        (0..BURST)
            .map(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
            .collect::<std::io::Result<Vec<_>>>()
    });
    // Blocks the runtime's only thread, and with it every task of the server, until the
    // clients have connected or one has given up.
    let connected = connecting
        .join()
        .unwrap()
        .expect("every handshake completes while the runtime is blocked");
    let mut served = Vec::new();
    for stream in connected {
        stream.set_nonblocking(true).unwrap();
        let mut stream = TcpStream::from_std(stream).unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        served.push(answer.lines().next().unwrap_or_default().to_owned());
    }
    assert_eq!(served, vec!["HTTP/1.1 200 OK".to_owned(); BURST]);
    app.shutdown().await;
}
