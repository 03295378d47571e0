//! A token's lifetime: an expired token is refused at Hello, one within the clock-skew leeway
//! is either refused or honoured (never welcomed and dropped), a connection ends when its token
//! expires, and `RefreshToken` extends it: accepted for the same tenant and user (the
//! subscription keeps delivering), refused for anyone else or for a bad token.

use std::time::Duration;

use pm_gateway::auth::unix_now;
use pm_proto::v1;
use pm_proto::v1::client_frame::Body as In;
use pm_proto::v1::response::Result as Out;
use pm_proto::v1::server_frame::Body;

use crate::support::*;

fn refresh(token: &str) -> In {
    In::RefreshToken(v1::RefreshToken {
        token: token.into(),
    })
}

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
