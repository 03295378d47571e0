//! Frames after Hello: ping and pong, a request id of zero, a frame without a body,
//! undecodable frames (each answered, 1007 after sixteen in a row), text frames (1003), and
//! sizes: a frame over `max_frame_bytes` (1009), and oversized or repeated fields inside a
//! frame, each with its exact refusal.

use futures::StreamExt;
use pm_gateway::auth::unix_now;
use pm_proto::v1;
use pm_proto::v1::client_frame::Body as In;
use pm_proto::v1::response::Result as Out;
use pm_proto::v1::server_frame::Body;
use prost::Message as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use v1::command::Kind as Cmd;
use v1::query::Kind as Q;

use crate::support::*;

/// Bytes that are no `ClientFrame`: an unterminated varint key.
fn garbage() -> Message {
    Message::Binary(vec![0xff, 0xff, 0xff].into())
}

/// The answer to [`garbage`].
fn not_a_client_frame() -> Body {
    error_response(
        0,
        v1::ErrorCode::InvalidArgument,
        "the frame is not a valid ClientFrame",
        "",
    )
}

#[tokio::test]
async fn a_ping_gets_a_pong_echoing_the_client_time() {
    let app = spawn_app().await;
    let (mut client, _) = app.client("acme", "alice").await;
    let before = unix_now() as i64 * 1000;
    client
        .send(
            0,
            In::Ping(v1::Ping {
                client_time: 123_456,
            }),
        )
        .await;
    let pong = match client.frame().await {
        Body::Pong(pong) => pong,
        other => panic!("expected a Pong, got {other:?}"),
    };
    let after = (unix_now() as i64 + 1) * 1000;
    assert_eq!(pong.client_time, 123_456);
    assert!(
        (before..=after).contains(&pong.server_time),
        "server_time {} is not within [{before}, {after}]",
        pong.server_time
    );
}

/// The next WebSocket message, of any kind.
async fn next_message(client: &mut Client) -> Message {
    tokio::time::timeout(WAIT, client.ws.next())
        .await
        .expect("the server answers in time")
        .expect("the connection is open")
        .expect("a message")
}

#[tokio::test]
async fn a_websocket_ping_gets_its_pong_and_a_close_gets_a_close() {
    let app = spawn_app().await;
    let (mut client, _) = app.client("acme", "alice").await;
    client
        .send_raw(Message::Ping(b"are you there".to_vec().into()))
        .await;
    assert_eq!(
        next_message(&mut client).await,
        Message::Pong(b"are you there".to_vec().into())
    );
    // Still served after the control frames.
    client.assert_nothing_more(7).await;
    client
        .ws
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        }))
        .await
        .unwrap();
    match next_message(&mut client).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected the close's answer, got {other:?}"),
    }
    assert!(client.ws.next().await.is_none(), "the connection ends");
}

#[tokio::test]
async fn a_request_with_id_zero_gets_invalid_argument_on_request_id() {
    let app = spawn_app().await;
    let (mut client, _) = app.client("acme", "alice").await;
    client.send(0, list_projects()).await;
    assert_eq!(
        client.frame().await,
        error_response(
            0,
            v1::ErrorCode::InvalidArgument,
            "request_id must be non-zero",
            "request_id"
        )
    );
}

#[tokio::test]
async fn a_frame_without_a_body_gets_invalid_argument() {
    let app = spawn_app().await;
    let (mut client, _) = app.client("acme", "alice").await;
    let empty = v1::ClientFrame {
        request_id: 5,
        body: None,
    };
    client
        .send_raw(Message::Binary(
            prost::Message::encode_to_vec(&empty).into(),
        ))
        .await;
    assert_eq!(
        client.frame().await,
        error_response(
            5,
            v1::ErrorCode::InvalidArgument,
            "the frame has no body",
            "body"
        )
    );
}

#[tokio::test]
async fn an_undecodable_frame_gets_invalid_argument_and_the_connection_stays_usable() {
    let app = spawn_app().await;
    let (mut client, _) = app.client("acme", "alice").await;
    client.send_raw(garbage()).await;
    assert_eq!(client.frame().await, not_a_client_frame());
    assert_eq!(client.request(list_projects()).await, no_projects());
}

#[tokio::test]
async fn sixteen_undecodable_frames_in_a_row_close_the_connection_with_1007() {
    let app = spawn_app().await;
    let (mut client, _) = app.client("acme", "alice").await;
    // One at a time, so that each answer is read before the closing goodbye can drop it.
    for _ in 0..15 {
        client.send_raw(garbage()).await;
        assert_eq!(client.frame().await, not_a_client_frame());
    }
    client.send_raw(garbage()).await;
    assert_eq!(
        client.goodbye().await,
        (
            goodbye(
                v1::CloseReason::ProtocolViolation,
                "too many undecodable frames",
                0
            ),
            Some(1007)
        )
    );
}

#[tokio::test]
async fn a_valid_frame_resets_the_garbage_count() {
    let app = spawn_app().await;
    let (mut client, _) = app.client("acme", "alice").await;
    for round in 0..2 {
        for _ in 0..15 {
            client.send_raw(garbage()).await;
            assert_eq!(client.frame().await, not_a_client_frame());
        }
        ping_pong(&mut client, round).await;
    }
    assert_eq!(client.request(list_projects()).await, no_projects());
}

#[tokio::test]
async fn a_text_frame_after_hello_gets_protocol_violation_and_1003() {
    let app = spawn_app().await;
    let (mut client, _) = app.client("acme", "alice").await;
    client.send_raw(Message::Text("{\"ping\":{}}".into())).await;
    assert_eq!(
        client.goodbye().await,
        (
            goodbye(
                v1::CloseReason::ProtocolViolation,
                "text frames are not supported; send binary protobuf",
                0
            ),
            Some(1003)
        )
    );
}

// ---- Sizes ---------------------------------------------------------------------------------

#[tokio::test]
async fn an_oversized_frame_closes_the_connection_with_1009() {
    let app = spawn_app_with(|s| s.limits.max_frame_bytes = 4096).await;
    let (mut client, welcome) = app.client("acme", "alice").await;
    assert_eq!(welcome.max_frame_bytes, 4096);
    client
        .send_raw(Message::Binary(vec![0u8; 10_000].into()))
        .await;
    assert_eq!(
        client.goodbye().await,
        (
            goodbye(
                v1::CloseReason::ProtocolViolation,
                "frames are limited to 4096 bytes",
                0
            ),
            Some(1009)
        )
    );
}

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
    use crate::support::goodbye_without_resume as goodbye;
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
