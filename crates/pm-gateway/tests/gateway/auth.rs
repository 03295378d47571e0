//! Hello and token verification: the `Welcome`, the rules for the first frame, and every way
//! a token is refused at Hello (another secret or algorithm, `alg: none`, RS256 key confusion,
//! tampered or malformed tokens, missing or malformed claims, a configured issuer and
//! audience), each with the exact goodbye and close code.
//!
//! What happens to a token after Hello (expiry, leeway, `RefreshToken`) is in
//! `token_lifetime`; tenant ids in tokens are in `tenancy`.

use jsonwebtoken::Algorithm;
use pm_gateway::auth::unix_now;
use pm_proto::v1;
use pm_proto::v1::client_frame::Body as In;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// A valid HS256 secret that is not the server's.
const OTHER_SECRET: &str = "another-secret-that-is-at-least-32-bytes-long";

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A hand-built token: `header` and `claims` as JSON, then `signature` (already encoded).
fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// A goodbye and the close code that followed it.
type Refusal = (v1::Goodbye, Option<u16>);

// ---- Hello ---------------------------------------------------------------------------------

#[tokio::test]
async fn hello_gets_a_welcome_with_every_field() {
    let app = spawn_app().await;
    let (_client, welcome) = app.client("acme", "alice").await;
    assert_eq!(welcome.user_id, "alice");
    assert_eq!(welcome.tenant_id, "acme");
    assert_eq!(welcome.protocol_version, 1);
    assert_eq!(welcome.head_seq, 0);
    assert_eq!(welcome.heartbeat_interval_ms, 15_000);
    assert_eq!(welcome.max_frame_bytes, 1024 * 1024);
    assert_eq!(welcome.server_version, pm_gateway::testing::TEST_VERSION);
    assert_eq!(welcome.connection_id.len(), 36);
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

// ---- Tokens refused at Hello --------------------------------------------------------------

#[tokio::test]
async fn a_bad_token_gets_goodbye_and_4001() {
    let app = spawn_app().await;
    let mut client = Client::connect(app.addr).await;
    client
        .send(
            0,
            In::Hello(v1::Hello {
                token: "not-a-token".into(),
                client_name: String::new(),
                protocol_version: 1,
            }),
        )
        .await;
    let (goodbye, code) = client.goodbye().await;
    assert_eq!(goodbye.reason, v1::CloseReason::AuthFailed as i32);
    assert_eq!(goodbye.message, "invalid token: malformed token");
    assert_eq!(code, Some(4001));
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
async fn forged_and_stale_hs256_tokens_are_refused_with_4001() {
    use crate::support::goodbye_without_resume as goodbye;
    let app = spawn_app().await;
    let good = claims("acme", "alice", json!({}));
    let token = hs256(&good);
    let (header, rest) = token.split_once('.').expect("three parts");
    let (payload, signature) = rest.split_once('.').expect("three parts");
    // One changed character in the signature (the first, whose bits all count).
    let flipped = format!(
        "{}{}",
        if signature.starts_with('A') { 'B' } else { 'A' },
        &signature[1..]
    );
    // Another tenant's claims under this token's signature.
    let globex = b64(claims("globex", "alice", json!({})).to_string().as_bytes());
    let bad_signature = "invalid token: bad signature";
    let malformed = "invalid token: malformed token";
    let now = unix_now();
    let attacks: Vec<(&str, String, Refusal)> = vec![
        (
            "alg none, no signature",
            raw_token(&json!({"alg": "none", "typ": "JWT"}), &good, ""),
            auth_failed(malformed),
        ),
        (
            "alg none, with the real signature",
            raw_token(&json!({"alg": "none"}), &good, signature),
            auth_failed(malformed),
        ),
        (
            "alg None",
            raw_token(&json!({"alg": "None"}), &good, ""),
            auth_failed(malformed),
        ),
        (
            "alg NONE",
            raw_token(&json!({"alg": "NONE"}), &good, ""),
            auth_failed(malformed),
        ),
        (
            "no alg",
            raw_token(&json!({"typ": "JWT"}), &good, signature),
            auth_failed(malformed),
        ),
        (
            "HS384 with the right secret",
            sign(&good, Algorithm::HS384, SECRET.as_bytes()),
            auth_failed("invalid token: algorithm HS384 is not accepted"),
        ),
        (
            "HS512 with the right secret",
            sign(&good, Algorithm::HS512, SECRET.as_bytes()),
            auth_failed("invalid token: algorithm HS512 is not accepted"),
        ),
        (
            "another secret",
            sign(
                &good,
                Algorithm::HS256,
                b"another-secret-that-is-at-least-32-bytes-long",
            ),
            auth_failed(bad_signature),
        ),
        (
            "empty secret",
            sign(&good, Algorithm::HS256, b""),
            auth_failed(bad_signature),
        ),
        (
            "tampered signature",
            format!("{header}.{payload}.{flipped}"),
            auth_failed(bad_signature),
        ),
        (
            "signature stripped",
            format!("{header}.{payload}."),
            auth_failed(bad_signature),
        ),
        (
            "claims swapped for another tenant's",
            format!("{header}.{globex}.{signature}"),
            auth_failed(bad_signature),
        ),
        (
            "two parts",
            format!("{header}.{payload}"),
            auth_failed(malformed),
        ),
        (
            "four parts",
            format!("{token}.{signature}"),
            auth_failed(malformed),
        ),
        ("not base64", "%%%.%%%.%%%".into(), auth_failed(malformed)),
        (
            "empty",
            String::new(),
            auth_failed("invalid token: no token was given"),
        ),
        (
            "expired past the leeway",
            hs256(&claims("acme", "alice", json!({"exp": now - 3600}))),
            (
                goodbye(v1::CloseReason::AuthExpired, "the token has expired"),
                Some(4001),
            ),
        ),
        (
            "exp zero",
            hs256(&claims("acme", "alice", json!({"exp": 0}))),
            (
                goodbye(v1::CloseReason::AuthExpired, "the token has expired"),
                Some(4001),
            ),
        ),
        (
            "not yet valid",
            hs256(&claims("acme", "alice", json!({"nbf": now + 3600}))),
            auth_failed("the token is not valid yet"),
        ),
        (
            "missing tid",
            hs256(&json!({"sub": "alice", "exp": now + 3600})),
            auth_failed("invalid token: malformed claims (sub, tid and exp are required)"),
        ),
        (
            "missing sub",
            hs256(&json!({"tid": "acme", "exp": now + 3600})),
            auth_failed("invalid token: malformed claims (sub, tid and exp are required)"),
        ),
        (
            "missing exp",
            hs256(&json!({"sub": "alice", "tid": "acme"})),
            auth_failed("invalid token: malformed claims (sub, tid and exp are required)"),
        ),
        (
            "tid of the wrong type",
            hs256(&claims("acme", "alice", json!({"tid": ["acme", "globex"]}))),
            auth_failed("invalid token: malformed claims (sub, tid and exp are required)"),
        ),
        (
            "exp as a string",
            hs256(&claims("acme", "alice", json!({"exp": "never"}))),
            auth_failed("invalid token: malformed claims (sub, tid and exp are required)"),
        ),
    ];
    for (name, token, expected) in attacks {
        assert_eq!(refused(&app, &token).await, expected, "{name}");
    }
    // The same server welcomes the honest token.
    let (_client, welcome) = app.client("acme", "alice").await;
    assert_eq!(welcome.user_id, "alice");
}

/// An RSA public key (the private half was discarded when it was generated): the server only
/// ever needs the public key, and so does the attacker.
const RSA_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAzoL0vwYY/aytWWFbAKJa
jEV4vgIEXtHmthKj4MsHSOR8hIkVyBMhZbgvpvBq63BBe5gKFKEZko4vAhCIgSgs
FKcgkcFOMN0ajiCy76QacFKxklM6N6CcyJad4Oa/beStWoVnjytvbNcKfIMfLMww
S1cl3mixclnCfW0gcCogUwyz/pVBoF0JrLTCe+C3FazB6lOoP7jyOeBHCFhCaBxQ
lu0W+gTc+J4rTWRbpjulBjfXU3qqs2l5aLJHfPUsNv5QGrfLci4h0X6pJzDwAai6
JZIjRt3yMTWkA0uFtj9qR8zGkCU7/VBGB4eJvhfrCYvUWblEFJ+4XGm3mc9phPtT
7QIDAQAB
-----END PUBLIC KEY-----
";

#[tokio::test]
async fn rs256_key_confusion_and_forged_rsa_signatures_are_refused() {
    let keys = tempfile::tempdir().unwrap();
    let public_file = keys.path().join("jwt.pub.pem");
    std::fs::write(&public_file, RSA_PUBLIC_PEM).unwrap();
    let app = spawn_app_with(|s| {
        s.auth.algorithm = "RS256".into();
        s.auth.public_key_file = Some(public_file.clone());
    })
    .await;
    let good = claims("acme", "alice", json!({}));
    let attacks: Vec<(&str, String, &str)> = vec![
        (
            "HS256 signed with the PEM text of the public key",
            sign(&good, Algorithm::HS256, RSA_PUBLIC_PEM.as_bytes()),
            "invalid token: algorithm HS256 is not accepted",
        ),
        (
            "HS256 signed with the PEM without its last newline",
            sign(
                &good,
                Algorithm::HS256,
                RSA_PUBLIC_PEM.trim_end().as_bytes(),
            ),
            "invalid token: algorithm HS256 is not accepted",
        ),
        (
            "HS256 signed with the server's would-be HMAC secret",
            sign(&good, Algorithm::HS256, SECRET.as_bytes()),
            "invalid token: algorithm HS256 is not accepted",
        ),
        (
            "RS256 header over a made-up signature",
            raw_token(
                &json!({"alg": "RS256", "typ": "JWT"}),
                &good,
                &b64(&[7u8; 256]),
            ),
            "invalid token: bad signature",
        ),
        (
            "RS256 header, no signature",
            raw_token(&json!({"alg": "RS256"}), &good, ""),
            "invalid token: bad signature",
        ),
        (
            "alg none",
            raw_token(&json!({"alg": "none"}), &good, ""),
            "invalid token: malformed token",
        ),
        (
            "PS256 (another RSA scheme)",
            raw_token(&json!({"alg": "PS256"}), &good, &b64(&[7u8; 256])),
            "invalid token: algorithm PS256 is not accepted",
        ),
    ];
    for (name, token, message) in attacks {
        assert_eq!(refused(&app, &token).await, auth_failed(message), "{name}");
    }
}

#[tokio::test]
async fn a_configured_issuer_and_audience_must_be_present_and_right() {
    let app = spawn_app_with(|s| {
        s.auth.issuer = Some("https://id.example".into());
        s.auth.audience = Some("pm".into());
    })
    .await;
    let iss = "https://id.example";
    let attacks: Vec<(&str, Value, &str)> = vec![
        (
            "no issuer",
            json!({"aud": "pm"}),
            "invalid token: missing claim `iss`",
        ),
        (
            "no audience",
            json!({"iss": iss}),
            "invalid token: missing claim `aud`",
        ),
        (
            "wrong issuer",
            json!({"iss": "https://evil.example", "aud": "pm"}),
            "invalid token: wrong issuer",
        ),
        (
            "issuer differing in case",
            json!({"iss": "https://ID.example", "aud": "pm"}),
            "invalid token: wrong issuer",
        ),
        (
            "wrong audience",
            json!({"iss": iss, "aud": "other"}),
            "invalid token: wrong audience",
        ),
        (
            "empty audience",
            json!({"iss": iss, "aud": ""}),
            "invalid token: wrong audience",
        ),
    ];
    for (name, extra, message) in attacks {
        let token = hs256(&claims("acme", "alice", extra));
        assert_eq!(refused(&app, &token).await, auth_failed(message), "{name}");
    }
    let token = hs256(&claims("acme", "alice", json!({"iss": iss, "aud": "pm"})));
    let mut client = Client::connect(app.addr).await;
    assert_eq!(client.hello(&token).await.user_id, "alice");
}

#[tokio::test]
async fn user_ids_with_control_characters_or_overlong_are_refused() {
    let app = spawn_app().await;
    let control = "must not contain whitespace or control characters";
    let attacks: Vec<(String, &str)> = vec![
        ("alice\0".into(), control),
        ("alice\nadmin".into(), control),
        ("alice bob".into(), control),
        ("\u{7f}".into(), control),
        ("a".repeat(129), "must be at most 128 bytes"),
        (String::new(), "is required"),
    ];
    for (sub, why) in attacks {
        let token = hs256(&claims("acme", &sub, json!({})));
        assert_eq!(
            refused(&app, &token).await,
            auth_failed(&format!("invalid token: claim `sub`: sub: {why}")),
            "sub {sub:?}"
        );
    }
}
