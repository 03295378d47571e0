//! The security suite: every attack of the threat model in `SECURITY.md`, end to end over real
//! sockets, each asserting the exact refusal (goodbye reason and message, close code, HTTP
//! status or error code, message and field) and, where it matters, that nothing leaked or was
//! created.
//!
//! Attacks are grouped in tables; each row is one attack. The counts quoted in `SECURITY.md`
//! are the rows of these tables plus the single-attack tests.

use pm_proto::v1;
use pm_proto::v1::client_frame::Body as In;
use pm_proto::v1::response::Result as Out;
use pm_proto::v1::server_frame::Body;
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use v1::command::Kind as Cmd;
use v1::query::Kind as Q;

use crate::support::*;

// ---- Helpers -------------------------------------------------------------------------------

fn goodbye(reason: v1::CloseReason, message: &str) -> v1::Goodbye {
    v1::Goodbye {
        reason: reason.into(),
        message: message.into(),
        resume_from_seq: 0,
    }
}

// ---- 4. Slow handshakes --------------------------------------------------------------------

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
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101 "), "{head:?}");
    stream
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

// ---- 5. Floods -----------------------------------------------------------------------------

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

#[tokio::test]
async fn connection_floods_of_one_user_and_one_tenant_are_refused_with_1013() {
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

// ---- 6. Oversized and repeated input -------------------------------------------------------

fn encoded(request_id: u64, body: In) -> Vec<u8> {
    v1::ClientFrame {
        request_id,
        body: Some(body),
    }
    .encode_to_vec()
}

/// Sends raw frame bytes and returns the response to `request_id`.
async fn answer_to(client: &mut Client, request_id: u64, bytes: Vec<u8>) -> Out {
    client.send_raw(Message::Binary(bytes.into())).await;
    match client.frame().await {
        Body::Response(r) if r.request_id == request_id => r.result.expect("a result"),
        other => panic!("expected the response to {request_id}, got {other:?}"),
    }
}

#[tokio::test]
async fn oversized_and_repeated_fields_get_exact_refusals() {
    let app = spawn_app_with(|s| s.limits.max_frame_bytes = 256 * 1024).await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let (item, _) = alice.create_item(&project.id, "target").await;
    // Field errors read "<field> <what is wrong>".
    let invalid = |message: &str, field: &str| {
        Out::Error(error(
            v1::ErrorCode::InvalidArgument,
            &format!("{field} {message}"),
            field,
        ))
    };

    // Text fields over their limits.
    let cases: Vec<(&str, Cmd, Out)> = vec![
        (
            "a 501-character title",
            create_item(&project.id, &"t".repeat(501)),
            invalid("must be at most 500 characters", "title"),
        ),
        (
            "a 100,001-character description",
            Cmd::CreateWorkItem(v1::CreateWorkItem {
                project_id: project.id.clone(),
                item_type: v1::WorkItemType::Task.into(),
                title: "ok".into(),
                description: "d".repeat(100_001),
                ..Default::default()
            }),
            invalid("must be at most 100000 characters", "description"),
        ),
        (
            "a 201-character project name",
            Cmd::CreateProject(v1::CreateProject {
                key: "BIG".into(),
                name: "n".repeat(201),
                description: String::new(),
            }),
            invalid("must be at most 200 characters", "name"),
        ),
        (
            "a title with a NUL",
            create_item(&project.id, "evil\0title"),
            invalid("must be a single line of text", "title"),
        ),
        (
            "20,000 clear_fields, the last one not clearable",
            Cmd::UpdateWorkItem(v1::UpdateWorkItem {
                id: item.id.clone(),
                expected_version: 1,
                clear_fields: [vec!["assignee_id".to_owned(); 19_999], vec!["title".into()]]
                    .concat(),
                ..Default::default()
            }),
            invalid(
                "`title` cannot be cleared (clearable: story_points, assignee_id)",
                "clear_fields",
            ),
        ),
    ];
    let mut id = 100;
    for (name, command, expected) in cases {
        id += 1;
        let bytes = encoded(
            id,
            In::Command(v1::Command {
                idempotency_key: String::new(),
                kind: Some(command),
            }),
        );
        assert_eq!(answer_to(&mut alice, id, bytes).await, expected, "{name}");
    }

    // 20,000 times the same clearable field is one clear: one change, nothing else touched.
    id += 1;
    let bytes = encoded(
        id,
        In::Command(v1::Command {
            idempotency_key: String::new(),
            kind: Some(Cmd::UpdateWorkItem(v1::UpdateWorkItem {
                id: item.id.clone(),
                expected_version: 1,
                clear_fields: vec!["assignee_id".into(); 20_000],
                ..Default::default()
            })),
        }),
    );
    match answer_to(&mut alice, id, bytes).await {
        Out::CommandResult(r) => {
            assert_eq!(r.seq, 4);
            match r.entity.and_then(|e| e.kind) {
                Some(v1::entity::Kind::WorkItem(w)) => assert_eq!(
                    w,
                    v1::WorkItem {
                        version: 2,
                        updated_at: w.updated_at,
                        ..item.clone()
                    }
                ),
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }

    // An idempotency key over 128 bytes.
    id += 1;
    let bytes = encoded(
        id,
        In::Command(v1::Command {
            idempotency_key: "k".repeat(129),
            kind: Some(create_item(&project.id, "keyed")),
        }),
    );
    assert_eq!(
        answer_to(&mut alice, id, bytes).await,
        invalid("must be at most 128 bytes", "idempotency_key")
    );

    // A batch of 5,000 commands (the limit is 100).
    id += 1;
    let bytes = encoded(
        id,
        In::Batch(v1::Batch {
            commands: vec![
                v1::Command {
                    idempotency_key: String::new(),
                    kind: Some(create_item(&project.id, "x")),
                };
                5_000
            ],
            atomic: true,
        }),
    );
    assert_eq!(
        answer_to(&mut alice, id, bytes).await,
        Out::Error(error(
            v1::ErrorCode::TooLarge,
            "a batch holds at most 100 commands",
            ""
        ))
    );

    // A subscription naming 6,000 projects, none the caller's.
    id += 1;
    let many: Vec<String> = (0..6_000).map(|_| unknown_id()).collect();
    let bytes = encoded(
        id,
        In::Subscribe(v1::Subscribe {
            project_ids: many,
            entity_types: vec![],
            from_seq: 0,
        }),
    );
    assert_eq!(
        answer_to(&mut alice, id, bytes).await,
        Out::Error(error(
            v1::ErrorCode::NotFound,
            "project not found",
            "project_ids"
        ))
    );

    // A list filter repeating one status 50,000 times, and a huge page size.
    id += 1;
    let bytes = encoded(
        id,
        In::Query(v1::Query {
            kind: Some(Q::ListWorkItems(v1::ListWorkItems {
                project_id: project.id.clone(),
                statuses: vec![v1::WorkItemStatus::Todo.into(); 50_000],
                page: Some(v1::PageRequest {
                    page_size: u32::MAX,
                    page_token: String::new(),
                }),
                ..Default::default()
            })),
        }),
    );
    assert_eq!(
        answer_to(&mut alice, id, bytes).await,
        invalid("must be at most 500", "page.page_size")
    );

    // The same field repeated 10,000 times in the encoding: the last one counts (protobuf's
    // rule), so it is one ordinary, valid title.
    id += 1;
    let mut create = v1::CreateWorkItem {
        project_id: project.id.clone(),
        item_type: v1::WorkItemType::Task.into(),
        title: "first".into(),
        ..Default::default()
    }
    .encode_to_vec();
    for i in 0..10_000 {
        v1::CreateWorkItem {
            title: format!("title {i}"),
            ..Default::default()
        }
        .encode_raw(&mut create);
    }
    let mut command = Vec::new();
    prost::encoding::bytes::encode(20, &create, &mut command);
    let mut frame = Vec::new();
    prost::encoding::uint64::encode(1, &id, &mut frame);
    prost::encoding::bytes::encode(6, &command, &mut frame);
    match v1::ClientFrame::decode(&frame[..]).unwrap().body {
        Some(In::Command(v1::Command {
            kind: Some(Cmd::CreateWorkItem(c)),
            ..
        })) => assert_eq!(c.title, "title 9999"),
        other => panic!("field 6 is `command`: {other:?}"),
    }
    match answer_to(&mut alice, id, frame).await {
        Out::CommandResult(r) => match r.entity.and_then(|e| e.kind) {
            Some(v1::entity::Kind::WorkItem(w)) => assert_eq!(w.title, "title 9999"),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }

    // Deeply nested unknown groups: the decoder's recursion limit refuses them.
    let mut nested = Vec::new();
    for _ in 0..5_000 {
        prost::encoding::encode_key(99, prost::encoding::WireType::StartGroup, &mut nested);
    }
    for _ in 0..5_000 {
        prost::encoding::encode_key(99, prost::encoding::WireType::EndGroup, &mut nested);
    }
    alice.send_raw(Message::Binary(nested.into())).await;
    assert_eq!(
        alice.frame().await,
        Body::Response(v1::Response {
            request_id: 0,
            result: Some(Out::Error(error(
                v1::ErrorCode::InvalidArgument,
                "the frame is not a valid ClientFrame",
                ""
            ))),
        })
    );

    // One byte over the frame limit ends the connection with 1009.
    alice
        .send_raw(Message::Binary(vec![0u8; 256 * 1024 + 1].into()))
        .await;
    assert_eq!(
        alice.goodbye().await,
        (
            goodbye(
                v1::CloseReason::ProtocolViolation,
                "frames are limited to 262144 bytes"
            ),
            Some(1009)
        )
    );
}

// ---- 7. Rate-limit evasion -----------------------------------------------------------------

#[tokio::test]
async fn reconnecting_does_not_refill_the_request_budget() {
    // One token a second, a burst of three: the test takes far less than a second per token.
    let app = spawn_app_with(|s| {
        s.limits.requests_per_second = 1;
        s.limits.request_burst = 3;
        s.limits.rate_limit_strikes = 2;
    })
    .await;
    let limited = Out::Error(error(
        v1::ErrorCode::RateLimited,
        "too many requests; slow down",
        "",
    ));
    let (mut first, _) = app.client("acme", "alice").await;
    for _ in 0..3 {
        assert!(matches!(
            first.request(list_projects()).await,
            Out::QueryResult(_)
        ));
    }
    assert_eq!(first.request(list_projects()).await, limited);
    drop(first);

    // A new connection of the same user starts with what the last one left: nothing.
    for attempt in 0..5 {
        let (mut again, _) = app.client("acme", "alice").await;
        assert_eq!(
            again.request(list_projects()).await,
            limited,
            "reconnect {attempt}"
        );
        again.ws.close(None).await.unwrap();
        assert!(matches!(again.recv().await, Received::Closed(_)));
    }
    // Abuse still ends in 4029 on the new connection.
    let (mut abuser, _) = app.client("acme", "alice").await;
    assert_eq!(abuser.request(list_projects()).await, limited);
    assert_eq!(abuser.request(list_projects()).await, limited);
    abuser.send(99, list_projects()).await;
    assert_eq!(
        abuser.goodbye().await,
        (
            goodbye(v1::CloseReason::RateLimitAbuse, "too many requests"),
            Some(4029)
        )
    );
    // Other users of the tenant keep their own budget.
    let (mut bob, _) = app.client("acme", "bob").await;
    assert!(matches!(
        bob.request(list_projects()).await,
        Out::QueryResult(_)
    ));
    // Budgets are per tenant too: the same user id elsewhere is someone else.
    let (mut elsewhere, _) = app.client("globex", "alice").await;
    assert!(matches!(
        elsewhere.request(list_projects()).await,
        Out::QueryResult(_)
    ));
}
