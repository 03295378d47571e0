//! Property tests over a live connection, frames: random bytes and mutated valid frames.
//! Whatever arrives, the server never panics, answers every undecodable frame with the exact
//! `INVALID_ARGUMENT` and every request exactly once with a result or a coded error (never
//! `INTERNAL`, never text that names SQL or files), keeps the connection open, and keeps
//! serving other connections. Well-formed but wrong requests are in `fuzz_requests`.
//!
//! Inputs come from proptest strategies drawn with a `TestRunner` inside the async test (one
//! server for all cases). A failing case prints its input; the runner's seed is random per
//! run, so CI explores new inputs each time.

use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message as _;
use tokio_tungstenite::tungstenite::Message;

use pm_proto::v1;
use pm_proto::v1::client_frame::Body as In;
use pm_proto::v1::response::Result as Out;
use pm_proto::v1::server_frame::Body;
use v1::command::Kind as Cmd;
use v1::query::Kind as Q;

use crate::support::*;

/// Frames per run: cheaper than commands, and most random bytes do not decode at all.
const FRAME_CASES: u32 = 1_024;

/// Valid frames that mutations start from.
fn templates(project: &str, item: &str) -> Vec<Vec<u8>> {
    let frame = |request_id, body| {
        v1::ClientFrame {
            request_id,
            body: Some(body),
        }
        .encode_to_vec()
    };
    let command = |kind| {
        In::Command(v1::Command {
            idempotency_key: String::new(),
            kind: Some(kind),
        })
    };
    vec![
        frame(
            1,
            command(Cmd::CreateWorkItem(v1::CreateWorkItem {
                project_id: project.into(),
                item_type: v1::WorkItemType::Bug.into(),
                title: "fuzzed".into(),
                story_points: Some(3),
                ..Default::default()
            })),
        ),
        frame(
            2,
            command(Cmd::UpdateWorkItem(v1::UpdateWorkItem {
                id: item.into(),
                expected_version: 1,
                title: Some("fuzzed".into()),
                clear_fields: vec!["assignee_id".into()],
                ..Default::default()
            })),
        ),
        frame(
            3,
            In::Query(v1::Query {
                kind: Some(Q::ListWorkItems(v1::ListWorkItems {
                    project_id: project.into(),
                    text: "fuzz".into(),
                    page: Some(v1::PageRequest {
                        page_size: 5,
                        page_token: String::new(),
                    }),
                    ..Default::default()
                })),
            }),
        ),
        frame(
            4,
            In::Batch(v1::Batch {
                commands: vec![v1::Command {
                    idempotency_key: "k".into(),
                    kind: Some(Cmd::CreateComment(v1::CreateComment {
                        work_item_id: item.into(),
                        content: "c".into(),
                    })),
                }],
                atomic: true,
            }),
        ),
        frame(
            5,
            In::Subscribe(v1::Subscribe {
                project_ids: vec![project.into()],
                entity_types: vec![v1::EntityType::WorkItem.into()],
                from_seq: 1,
            }),
        ),
    ]
}

/// Random bytes, or a valid frame with bytes flipped, inserted or cut.
fn frame_bytes(templates: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        proptest::sample::select(templates),
        vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..3),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut bytes, edits, cut)| {
            for (at, byte, how) in edits {
                let i = at.index(bytes.len() + 1);
                match how {
                    // Low bits only: text stays ASCII, numbers and tags change.
                    0 if i < bytes.len() => bytes[i] ^= (byte & 0x1f) | 1,
                    1 => bytes.insert(i, byte),
                    _ if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => bytes.push(byte),
                }
            }
            if cut.index(8) == 0 {
                let keep = cut.index(bytes.len() + 1);
                bytes.truncate(keep);
            }
            bytes
        });
    prop_oneof![1 => vec(any::<u8>(), 0..512), 3 => mutated]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_frames_get_coded_answers_and_never_break_the_server() {
    let app = spawn_app_with(|s| {
        s.limits.requests_per_second = 1_000_000;
        s.limits.request_burst = 1_000_000;
    })
    .await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let (item, _) = alice.create_item(&project.id, "target").await;
    let (mut bystander, _) = app.client("acme", "alice").await;
    assert_eq!(bystander.subscribe(3).await, Ok(3));
    let (mut fuzzed, _) = app.client("acme", "alice").await;

    let strategy = frame_bytes(templates(&project.id, &item.id));
    let mut runner = runner(FRAME_CASES);
    let (mut undecodable, mut requests) = (0, 0);
    for case in 0..i64::from(FRAME_CASES) {
        let bytes = draw(&mut runner, &strategy);
        fuzzed.send_raw(Message::Binary(bytes.clone().into())).await;
        // What the server must answer, worked out from the bytes: the response's request id
        // and, for undecodable bytes, the exact error (for requests: any coded answer).
        let mut expected: Option<(u64, Option<v1::Error>)> = None;
        let mut expected_pongs = 1;
        match v1::ClientFrame::decode(&bytes[..]) {
            Err(_) => {
                undecodable += 1;
                let error = v1::Error {
                    code: v1::ErrorCode::InvalidArgument.into(),
                    message: "the frame is not a valid ClientFrame".into(),
                    field: String::new(),
                    current: None,
                };
                expected = Some((0, Some(error)));
            }
            Ok(v1::ClientFrame {
                body: Some(In::Ping(_)),
                ..
            }) => expected_pongs += 1,
            Ok(frame) => {
                requests += 1;
                expected = Some((frame.request_id, None));
            }
        }
        // The ping's pong closes the case; a request's answer may come before or after it.
        fuzzed
            .send(0, In::Ping(v1::Ping { client_time: case }))
            .await;
        let mut pongs = 0;
        while pongs < expected_pongs || expected.is_some() {
            match fuzzed.frame().await {
                Body::Pong(_) => pongs += 1,
                Body::Response(r) if Some(r.request_id) == expected.as_ref().map(|e| e.0) => {
                    let (_, exact) = expected.take().expect("checked by the guard");
                    match (r.result, exact) {
                        (Some(Out::Error(e)), Some(exact)) => assert_eq!(e, exact, "{bytes:?}"),
                        (Some(Out::Error(e)), None) => assert_coded(&e, &bytes),
                        (Some(_), None) => {}
                        (other, _) => panic!("unexpected {other:?} for {bytes:?}"),
                    }
                }
                // A mutated Subscribe may have subscribed this connection: its events come
                // in between, at any time.
                Body::Event(_) => {}
                other => panic!("unexpected {other:?} for {bytes:?}"),
            }
        }
    }
    assert!(undecodable > 0 && requests > 0, "{undecodable} {requests}");
    eprintln!("{FRAME_CASES} frames: {undecodable} undecodable, {requests} requests");

    // Everyone is still served: a new change reaches the bystander, and the fuzzed
    // connection answers an ordinary request.
    let (fresh, seq) = alice.create_item(&project.id, "after the fuzz").await;
    loop {
        let event = bystander.event().await;
        if event.seq == seq {
            assert_eq!(event.entity_id, fresh.id);
            break;
        }
    }
    match fuzzed
        .query(Q::GetWorkItem(v1::GetWorkItem {
            id: fresh.id.clone(),
            display_key: String::new(),
        }))
        .await
    {
        Ok(v1::query_result::Result::GetWorkItemResult(r)) => {
            assert_eq!(r.work_item, Some(unblocked(&fresh)))
        }
        other => panic!("{other:?}"),
    }
}
