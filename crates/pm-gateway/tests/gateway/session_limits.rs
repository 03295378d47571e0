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

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pm_gateway::auth::unix_now;
use pm_proto::v1;
use pm_proto::v1::client_frame::Body as In;
use pm_proto::v1::response::Result as Out;
use pm_proto::v1::server_frame::Body;
use serde_json::json;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::support::*;

/// A valid HS256 secret that is not the server's.
const OTHER_SECRET: &str = "another-secret-that-is-at-least-32-bytes-long";

/// Signs `claims` with `alg` and `secret`.
fn sign(claims: &serde_json::Value, alg: Algorithm, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HMAC signing cannot fail")
}

/// A token the server accepts, for `tenant`/`user`, expiring at `exp` (Unix seconds).
fn token_until(tenant: &str, user: &str, exp: u64) -> String {
    sign(
        &json!({"sub": user, "tid": tenant, "exp": exp}),
        Algorithm::HS256,
        SECRET,
    )
}

fn hello(token: &str) -> In {
    In::Hello(v1::Hello {
        token: token.into(),
        client_name: "session-limits".into(),
        protocol_version: 1,
    })
}

fn list_projects() -> In {
    In::Query(v1::Query {
        kind: Some(v1::query::Kind::ListProjects(v1::ListProjects::default())),
    })
}

/// What `ListProjects` answers on an empty tenant.
fn no_projects() -> Out {
    Out::QueryResult(v1::QueryResult {
        result: Some(v1::query_result::Result::ListProjectsResult(
            v1::ListProjectsResult {
                items: vec![],
                next_page_token: String::new(),
                as_of_seq: 0,
            },
        )),
    })
}

fn error_response(request_id: u64, code: v1::ErrorCode, message: &str, field: &str) -> Body {
    Body::Response(v1::Response {
        request_id,
        result: Some(Out::Error(error(code, message, field))),
    })
}

fn goodbye(reason: v1::CloseReason, message: &str, resume_from_seq: u64) -> v1::Goodbye {
    v1::Goodbye {
        reason: reason.into(),
        message: message.into(),
        resume_from_seq,
    }
}

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

/// Connects, sends `Hello{token}` and returns the goodbye and close code it gets.
async fn refused(app: &TestApp, token: &str) -> (v1::Goodbye, Option<u16>) {
    let mut client = Client::connect(app.addr).await;
    client.send(0, hello(token)).await;
    client.goodbye().await
}

fn auth_failed(message: &str) -> (v1::Goodbye, Option<u16>) {
    (goodbye(v1::CloseReason::AuthFailed, message, 0), Some(4001))
}

/// Sends `ClientFrame{ping}` and expects its `Pong`, skipping nothing else.
async fn ping_pong(client: &mut Client, client_time: i64) {
    client.send(0, In::Ping(v1::Ping { client_time })).await;
    match client.frame().await {
        Body::Pong(pong) => assert_eq!(pong.client_time, client_time),
        other => panic!("expected a Pong, got {other:?}"),
    }
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
async fn an_expired_token_gets_auth_expired_and_4001() {
    let app = spawn_app().await;
    // Past the 30 s leeway.
    let token = token_until("acme", "alice", unix_now() - 3600);
    assert_eq!(
        refused(&app, &token).await,
        (
            goodbye(v1::CloseReason::AuthExpired, "the token has expired", 0),
            Some(4001)
        )
    );
}

#[tokio::test]
async fn a_token_signed_with_another_secret_gets_auth_failed_and_4001() {
    let app = spawn_app().await;
    let token = sign(
        &json!({"sub": "alice", "tid": "acme", "exp": unix_now() + 3600}),
        Algorithm::HS256,
        OTHER_SECRET,
    );
    assert_eq!(
        refused(&app, &token).await,
        auth_failed("invalid token: bad signature")
    );
}

#[tokio::test]
async fn a_token_of_another_algorithm_is_refused_even_with_the_right_secret() {
    let app = spawn_app().await;
    let token = sign(
        &json!({"sub": "alice", "tid": "acme", "exp": unix_now() + 3600}),
        Algorithm::HS384,
        SECRET,
    );
    assert_eq!(
        refused(&app, &token).await,
        auth_failed("invalid token: algorithm HS384 is not accepted")
    );
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_refused() {
    let app = spawn_app().await;
    // {"alg":"none","typ":"JWT"} . {"sub":"alice","tid":"acme","exp":9999999999} . (empty)
    let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.\
                 eyJzdWIiOiJhbGljZSIsInRpZCI6ImFjbWUiLCJleHAiOjk5OTk5OTk5OTl9.";
    // `none` is not even an algorithm the header parser knows.
    assert_eq!(
        refused(&app, token).await,
        auth_failed("invalid token: malformed token")
    );
}

#[tokio::test]
async fn an_empty_token_is_refused() {
    let app = spawn_app().await;
    assert_eq!(
        refused(&app, "").await,
        auth_failed("invalid token: no token was given")
    );
}

#[tokio::test]
async fn a_token_whose_tenant_id_is_a_path_is_refused() {
    let app = spawn_app().await;
    let token = token_until("../etc", "alice", unix_now() + 3600);
    assert_eq!(
        refused(&app, &token).await,
        auth_failed(
            "invalid token: claim `tid`: tenant_id: must start with a lower-case letter or digit"
        )
    );
    // Nothing was created for it next to the tenants.
    assert!(!app.data_dir().join("etc").exists());
}

#[tokio::test]
async fn a_first_frame_other_than_hello_is_refused() {
    let app = spawn_app().await;
    let expected = auth_failed("the first frame must be ClientFrame{hello}");

    let mut client = Client::connect(app.addr).await;
    client.send(0, In::Ping(v1::Ping { client_time: 1 })).await;
    assert_eq!(client.goodbye().await, expected);

    let mut client = Client::connect(app.addr).await;
    client.send(1, list_projects()).await;
    assert_eq!(client.goodbye().await, expected);
}

#[tokio::test]
async fn a_text_first_frame_is_refused() {
    let app = spawn_app().await;
    let mut client = Client::connect(app.addr).await;
    let token = app.token("acme", "alice");
    // Even a text frame that carries a valid token: the first frame must be binary.
    client.send_raw(Message::Text(token.into())).await;
    assert_eq!(
        client.goodbye().await,
        auth_failed("the first frame must be a binary ClientFrame with Hello")
    );
}

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

#[tokio::test]
async fn a_second_hello_is_an_invalid_argument() {
    let app = spawn_app().await;
    let (mut client, _) = app.client("acme", "alice").await;
    client.send(7, hello(&app.token("acme", "alice"))).await;
    assert_eq!(
        client.frame().await,
        error_response(
            7,
            v1::ErrorCode::InvalidArgument,
            "already authenticated",
            "hello"
        )
    );
}

// ---- Heartbeat -----------------------------------------------------------------------------

/// Connections the server counts as open.
fn open_connections(app: &TestApp) -> u64 {
    app.app.metrics.connections_open.get()
}

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

// ---- RefreshToken --------------------------------------------------------------------------

fn refresh(token: &str) -> In {
    In::RefreshToken(v1::RefreshToken {
        token: token.into(),
    })
}

#[tokio::test]
async fn a_fresh_token_for_the_same_user_is_accepted_with_its_expiry() {
    let app = spawn_app().await;
    let (mut client, _) = app.client("acme", "alice").await;
    let exp = unix_now() + 7200;
    assert_eq!(
        client
            .request(refresh(&token_until("acme", "alice", exp)))
            .await,
        Out::RefreshTokenResult(v1::RefreshTokenResult {
            expires_at: exp as i64 * 1000
        })
    );
}

#[tokio::test]
async fn a_refresh_token_for_another_user_or_tenant_is_permission_denied() {
    let app = spawn_app().await;
    let (mut client, _) = app.client("acme", "alice").await;
    let denied = Out::Error(error(
        v1::ErrorCode::PermissionDenied,
        "the token is for another tenant or user",
        "token",
    ));
    assert_eq!(
        client.request(refresh(&app.token("acme", "bob"))).await,
        denied
    );
    assert_eq!(
        client.request(refresh(&app.token("globex", "alice"))).await,
        denied
    );
    // The connection still acts as alice of acme.
    assert_eq!(client.request(list_projects()).await, no_projects());
}

#[tokio::test]
async fn a_bad_refresh_token_is_unauthenticated() {
    let app = spawn_app().await;
    let (mut client, _) = app.client("acme", "alice").await;
    assert_eq!(
        client.request(refresh("garbage")).await,
        Out::Error(error(
            v1::ErrorCode::Unauthenticated,
            "invalid token: malformed token",
            "token"
        ))
    );
    let expired = token_until("acme", "alice", unix_now() - 3600);
    assert_eq!(
        client.request(refresh(&expired)).await,
        Out::Error(error(
            v1::ErrorCode::Unauthenticated,
            "the token has expired",
            "token"
        ))
    );
}

#[tokio::test]
async fn the_subscription_keeps_delivering_after_a_refresh() {
    let app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let (mut watcher, welcome) = app.client("acme", "alice").await;
    let head = welcome.head_seq;
    assert_eq!(watcher.subscribe(head).await, Ok(head));

    let exp = unix_now() + 7200;
    assert_eq!(
        watcher
            .request(refresh(&token_until("acme", "alice", exp)))
            .await,
        Out::RefreshTokenResult(v1::RefreshTokenResult {
            expires_at: exp as i64 * 1000
        })
    );
    let (item, seq) = alice.create_item(&project.id, "after the refresh").await;
    let event = watcher.event().await;
    assert_eq!(event.seq, seq);
    assert_eq!(event.entity_id, item.id);
    assert_eq!(event.action, v1::ChangeAction::Created as i32);
}

#[tokio::test]
async fn a_token_within_the_leeway_is_not_welcomed_and_dropped_at_once() {
    // Five seconds past `exp`, within the 30 s clock-skew leeway. Refusing it at Hello and
    // accepting it for the leeway are both fair; welcoming it and then closing the connection
    // at once for the same expiry is not.
    let app = spawn_app().await;
    let mut client = Client::connect(app.addr).await;
    client
        .send(0, hello(&token_until("acme", "alice", unix_now() - 5)))
        .await;
    match client.frame().await {
        Body::Welcome(welcome) => {
            assert_eq!(welcome.user_id, "alice");
            // A moment later (virtual: nothing here waits on the database) it still answers.
            tokio::time::pause();
            tokio::time::sleep(Duration::from_secs(1)).await;
            ping_pong(&mut client, 1).await;
        }
        Body::Goodbye(goodbye) => {
            assert_eq!(goodbye.reason, v1::CloseReason::AuthExpired as i32);
            assert!(matches!(client.recv().await, Received::Closed(Some(4001))));
        }
        other => panic!("expected Welcome or Goodbye, got {other:?}"),
    }
}

// Token expiry runs on the real clock: the server measures a token's remaining lifetime
// against the system clock, which tokio's paused clock does not move. `exp` is in whole
// seconds, so a token minted with `exp = now + 2` expires in one to two seconds.

#[tokio::test]
async fn a_connection_is_closed_when_its_token_expires() {
    // Without leeway: the connection ends when the token does.
    let app = spawn_app_with(|s| s.auth.leeway_secs = 0).await;
    let mut client = Client::connect(app.addr).await;
    client
        .hello(&token_until("acme", "alice", unix_now() + 2))
        .await;
    assert_eq!(
        client.goodbye().await,
        (
            goodbye(
                v1::CloseReason::AuthExpired,
                "the token expired; connect again with a fresh one",
                0
            ),
            Some(4001)
        )
    );
}

#[tokio::test]
async fn a_refreshed_token_keeps_the_connection_open_past_the_old_expiry() {
    // Without leeway, so that the old token really ends during the test.
    let app = spawn_app_with(|s| s.auth.leeway_secs = 0).await;
    let mut client = Client::connect(app.addr).await;
    let old_exp = unix_now() + 2;
    client.hello(&token_until("acme", "alice", old_exp)).await;
    let exp = unix_now() + 3600;
    assert_eq!(
        client
            .request(refresh(&token_until("acme", "alice", exp)))
            .await,
        Out::RefreshTokenResult(v1::RefreshTokenResult {
            expires_at: exp as i64 * 1000
        })
    );
    // Nothing may arrive until well past the first token's expiry (the test above shows
    // that without the refresh a goodbye does).
    let past_old_expiry =
        std::time::UNIX_EPOCH + Duration::from_secs(old_exp) + Duration::from_millis(300);
    let wait = past_old_expiry
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    if let Ok(received) = tokio::time::timeout(wait, client.recv()).await {
        panic!("expected silence past the old expiry, got {received:?}");
    }
    ping_pong(&mut client, 42).await;
}

// ---- Shutdown ------------------------------------------------------------------------------

#[tokio::test]
async fn shutdown_says_goodbye_with_the_resume_seq_and_1001_then_refuses_connections() {
    let mut app = spawn_app().await;
    let (mut alice, _) = app.client("acme", "alice").await;
    let project = alice.create_project("PM").await;
    let (_, item_seq) = alice.create_item(&project.id, "one").await;
    let (mut watcher, _) = app.client("acme", "alice").await;
    assert_eq!(watcher.subscribe(0).await, Ok(item_seq));
    for expected in 1..=item_seq {
        assert_eq!(watcher.event().await.seq, expected);
    }

    // `shutdown` unwraps what `serve` returned: it panics unless the server ended with Ok.
    let ((), watcher_bye, alice_bye) =
        tokio::join!(app.shutdown(), watcher.goodbye(), alice.goodbye());
    let bye = |seq| {
        goodbye(
            v1::CloseReason::Shutdown,
            "the server is shutting down",
            seq,
        )
    };
    assert_eq!(watcher_bye, (bye(item_seq), Some(1001)));
    assert_eq!(alice_bye, (bye(0), Some(1001)));

    match tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr)).await {
        Err(tungstenite::Error::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused)
        }
        other => panic!("expected a refused connection, got {other:?}"),
    }
}
