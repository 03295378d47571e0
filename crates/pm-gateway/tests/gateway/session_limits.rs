//! End-to-end tests: session_limits. Hello and tokens, heartbeats, frame rules, rate and
//! connection limits, token refresh and shutdown, each checked on the decoded frames and the
//! close code the client sees.
//!
//! Timers run on tokio's paused clock where nothing waits on SQLite: after the `Welcome`
//! (which opens the tenant) those tests touch no database, so `tokio::time::pause()` there
//! makes the hello timeout and heartbeats exact and instant. Tests that wait for database
//! answers keep the real clock: with a paused clock the runtime would look idle while SQLite
//! works on its own threads and jump straight to the client's 10 s timeout. Token expiry
//! keeps it too (see there).

use std::collections::BTreeMap;
use std::time::Duration;

use pm_gateway::auth::unix_now;
use pm_proto::v1;
use pm_proto::v1::client_frame::Body as In;
use pm_proto::v1::response::Result as Out;
use pm_proto::v1::server_frame::Body;
use tokio_tungstenite::tungstenite::{self, Message};

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

/// Closes a client's WebSocket and waits for the server's close reply.
async fn close(mut client: Client) {
    client
        .ws
        .close(None)
        .await
        .expect("the close frame is sent");
    assert!(matches!(client.recv().await, Received::Closed(_)));
}

// ---- Hello and tokens ----------------------------------------------------------------------

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

// ---- Frames after Hello --------------------------------------------------------------------

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

#[tokio::test]
async fn an_undecodable_frame_gets_invalid_argument_and_the_connection_stays_usable() {
    let app = spawn_app().await;
    let (mut client, _) = app.client("acme", "alice").await;
    client.send_raw(garbage()).await;
    assert_eq!(client.frame().await, not_a_client_frame());
    assert_eq!(client.request(list_projects()).await, no_projects());
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

// ---- Rate limit ----------------------------------------------------------------------------

#[tokio::test]
async fn requests_beyond_the_burst_are_rate_limited_and_abuse_closes_with_4029() {
    // One token a second: the whole exchange takes milliseconds, so no token comes back
    // before the end (the real clock: the queries wait on SQLite).
    let app = spawn_app_with(|s| {
        s.limits.requests_per_second = 1;
        s.limits.request_burst = 3;
        s.limits.rate_limit_strikes = 5;
    })
    .await;
    let (mut client, _) = app.client("acme", "alice").await;
    let limited = || {
        Out::Error(error(
            v1::ErrorCode::RateLimited,
            "too many requests; slow down",
            "",
        ))
    };

    // Pipelined: five requests before reading any answer.
    for id in 1..=5 {
        client.send(id, list_projects()).await;
    }
    let mut answers = BTreeMap::new();
    while answers.len() < 5 {
        match client.frame().await {
            Body::Response(r) => {
                let result = r.result.expect("a response carries a result");
                assert!(
                    answers.insert(r.request_id, result).is_none(),
                    "one answer per id"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected = BTreeMap::from([
        (1, no_projects()),
        (2, no_projects()),
        (3, no_projects()),
        (4, limited()),
        (5, limited()),
    ]);
    assert_eq!(answers, expected);

    // Strikes 3, 4 and 5 are still answered...
    for id in 6..=8 {
        client.send(id, list_projects()).await;
        assert_eq!(
            client.frame().await,
            Body::Response(v1::Response {
                request_id: id,
                result: Some(limited())
            })
        );
    }
    // ...the sixth ends the connection.
    client.send(9, list_projects()).await;
    assert_eq!(
        client.goodbye().await,
        (
            goodbye(v1::CloseReason::RateLimitAbuse, "too many requests", 0),
            Some(4029)
        )
    );
}

#[tokio::test]
async fn pings_are_not_rate_limited() {
    let app = spawn_app_with(|s| {
        s.limits.requests_per_second = 1;
        s.limits.request_burst = 1;
        s.limits.rate_limit_strikes = 1;
    })
    .await;
    let (mut client, _) = app.client("acme", "alice").await;
    for i in 0..20 {
        ping_pong(&mut client, i).await;
    }
    assert_eq!(client.request(list_projects()).await, no_projects());
}

// ---- Connection limits ---------------------------------------------------------------------

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
