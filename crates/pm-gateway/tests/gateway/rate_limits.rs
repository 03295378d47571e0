//! Request rate limits: a token bucket per connection answers `RATE_LIMITED` beyond the burst
//! and closes with 4029 after repeated strikes; pings do not count; and a closed connection
//! leaves its unspent budget to the user's next one, so reconnecting does not refill it.

use std::collections::BTreeMap;

use pm_proto::v1;
use pm_proto::v1::response::Result as Out;
use pm_proto::v1::server_frame::Body;

use crate::support::*;

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
async fn requests_taken_before_the_abuse_close_are_answered_before_the_goodbye() {
    let app = spawn_app_with(|s| {
        s.limits.requests_per_second = 1;
        s.limits.request_burst = 3;
        s.limits.rate_limit_strikes = 1;
    })
    .await;
    let (mut client, _) = app.client("acme", "alice").await;
    // Pipelined, nothing read: three commands within the burst (still running on the writer
    // when the close comes), one strike, and the second strike that ends the connection.
    for (id, key) in [(1, "AAA"), (2, "BBB"), (3, "CCC")] {
        let create = v1::client_frame::Body::Command(v1::Command {
            idempotency_key: String::new(),
            kind: Some(v1::command::Kind::CreateProject(v1::CreateProject {
                key: key.into(),
                name: key.into(),
                description: String::new(),
            })),
        });
        client.send(id, create).await;
    }
    client.send(4, list_projects()).await;
    client.send(5, list_projects()).await;

    // Every request taken is answered, then the goodbye: the commands with their commits,
    // the strike with RATE_LIMITED, the closing request with nothing.
    let mut answers = BTreeMap::new();
    let farewell = loop {
        match client.frame().await {
            Body::Response(r) => {
                let answer = match r.result.expect("a response carries a result") {
                    Out::CommandResult(c) => format!("committed at seq {}", c.seq),
                    Out::Error(e) => e.message,
                    other => panic!("unexpected {other:?}"),
                };
                assert!(answers.insert(r.request_id, answer).is_none());
            }
            Body::Goodbye(g) => break g,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        farewell,
        goodbye(v1::CloseReason::RateLimitAbuse, "too many requests", 0)
    );
    assert_eq!(answers.len(), 4, "{answers:?}");
    assert_eq!(answers[&4], "too many requests; slow down");
    // The three commits, in some order: seqs 1 to 6 (a project and its admin each).
    let mut seqs: Vec<&str> = (1..=3).map(|id| answers[&id].as_str()).collect();
    seqs.sort();
    assert_eq!(
        seqs,
        [
            "committed at seq 2",
            "committed at seq 4",
            "committed at seq 6"
        ]
    );
    assert!(matches!(client.recv().await, Received::Closed(Some(4029))));
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

#[tokio::test]
async fn reconnecting_does_not_refill_the_request_budget() {
    use crate::support::goodbye_without_resume as goodbye;
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
