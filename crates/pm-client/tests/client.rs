//! The client against the real server (in-process, port 0, a fresh data directory per test),
//! plus a fake peer where the real server cannot misbehave on demand.

use std::path::Path;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pm_client::v1::{self, command::Kind as Cmd};
use pm_client::{Backoff, Client, ClientError, ClientOptions, ConnectionState};
use pm_gateway::testing::{TestServer, SECRET};
use pm_gateway::Settings;
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::Message;

/// How long a test waits for anything before failing (a safety net, not a synchronization).
const WAIT: Duration = Duration::from_secs(20);

/// A running server (the gateway's own test server).
type TestApp = TestServer;

async fn spawn_app(data_dir: &Path, configure: impl FnOnce(&mut Settings)) -> TestApp {
    TestServer::spawn_in(data_dir, configure).await
}

fn serve_on(
    listener: TcpListener,
    data_dir: &Path,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    TestServer::serve_on(listener, data_dir, configure)
}

/// Connects `user` of tenant `acme`.
async fn connect(app: &TestApp, user: &str, options: ClientOptions) -> (Client, v1::Welcome) {
    within(Client::connect(app.url(), token(user, None), options))
        .await
        .expect("connected")
}

/// An HS256 token for tenant `acme`, valid for an hour, with an optional issuer.
fn token(user: &str, issuer: Option<&str>) -> String {
    let Some(issuer) = issuer else {
        return pm_gateway::testing::token("acme", user);
    };
    let claims = pm_gateway::auth::Claims {
        sub: user.into(),
        tid: "acme".into(),
        exp: pm_gateway::auth::unix_now() + 3600,
        name: None,
        email: None,
        nbf: None,
        iss: Some(issuer.into()),
        aud: None,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("finished in time")
}

async fn create_project(client: &Client, key: &str) -> (v1::Project, u64) {
    let result = client
        .command(Cmd::CreateProject(v1::CreateProject {
            key: key.into(),
            name: key.into(),
            description: String::new(),
        }))
        .await
        .expect("project created");
    match result.entity.and_then(|e| e.kind) {
        Some(v1::entity::Kind::Project(project)) => (project, result.seq),
        other => panic!("expected a project, got {other:?}"),
    }
}

fn create_item(project_id: &str, title: &str, description: &str) -> Cmd {
    Cmd::CreateWorkItem(v1::CreateWorkItem {
        project_id: project_id.into(),
        item_type: v1::WorkItemType::Task.into(),
        title: title.into(),
        description: description.into(),
        ..Default::default()
    })
}

/// Receives events until `last`, returning their seqs and titles.
async fn events_until(events: &mut mpsc::Receiver<v1::Event>, last: u64) -> Vec<(u64, String)> {
    let mut received = Vec::new();
    while received.last().map(|(seq, _)| *seq) != Some(last) {
        let event = within(events.recv()).await.expect("the stream is open");
        let title = match &event.change {
            Some(v1::event::Change::WorkItem(item)) => item.title.clone(),
            _ => String::new(),
        };
        received.push((event.seq, title));
    }
    received
}

fn seqs(received: &[(u64, String)]) -> Vec<u64> {
    received.iter().map(|(seq, _)| *seq).collect()
}

fn reconnecting() -> ClientOptions {
    ClientOptions {
        reconnect: Some(Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(200),
            jitter: 0.5,
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn connects_and_is_welcomed() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path(), |_| {}).await;
    let (client, welcome) = connect(&app, "alice", ClientOptions::default()).await;
    assert_eq!(welcome.user_id, "alice");
    assert_eq!(welcome.tenant_id, "acme");
    assert_eq!(welcome.protocol_version, 1);
    assert_eq!(welcome.head_seq, 0);
    assert_eq!(welcome.heartbeat_interval_ms, 15_000);
    assert_eq!(welcome.max_frame_bytes, 1_048_576);
    assert!(!welcome.connection_id.is_empty());
    assert_eq!(
        *client.state().borrow(),
        ConnectionState::Connected {
            connection_id: welcome.connection_id.clone()
        }
    );
    let rtt = within(client.ping()).await.expect("pong");
    assert!(rtt < WAIT, "round trip {rtt:?}");

    client.close().await;
    assert_eq!(*client.state().borrow(), ConnectionState::Closed);
    assert!(matches!(client.ping().await, Err(ClientError::Closed)));
    assert!(matches!(
        client.command(create_item("x", "y", "")).await,
        Err(ClientError::Closed)
    ));
}

#[tokio::test]
async fn a_bad_token_is_rejected_with_the_reason_and_close_code() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path(), |_| {}).await;
    let error = within(Client::connect(
        app.url(),
        "not-a-jwt",
        ClientOptions::default(),
    ))
    .await
    .expect_err("rejected");
    match error {
        ClientError::Rejected {
            reason,
            message,
            close_code,
        } => {
            assert_eq!(reason, v1::CloseReason::AuthFailed);
            assert_eq!(close_code, Some(4001));
            assert!(message.starts_with("invalid token"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_pipelined_commands_from_clones_all_commit_with_consecutive_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path(), |_| {}).await;
    let (client, _) = connect(&app, "alice", ClientOptions::default()).await;
    let (project, project_seq) = create_project(&client, "PM").await;
    assert_eq!(
        project_seq, 2,
        "the project and its admin member take seqs 1 and 2"
    );

    let mut set = JoinSet::new();
    for i in 0..50 {
        let client = client.clone();
        let command = create_item(&project.id, &format!("item {i}"), "");
        set.spawn(async move { client.command(command).await });
    }
    let mut seqs = Vec::new();
    while let Some(result) = within(set.join_next()).await {
        let result = result.unwrap().expect("command succeeded");
        assert!(!result.replayed);
        seqs.push(result.seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (3..=52).collect::<Vec<u64>>());
}

#[tokio::test]
async fn server_errors_carry_code_message_field_and_current_entity() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path(), |_| {}).await;
    let (client, _) = connect(&app, "alice", ClientOptions::default()).await;
    let (project, _) = create_project(&client, "PM").await;
    let updated = client
        .command(Cmd::UpdateProject(v1::UpdateProject {
            id: project.id.clone(),
            expected_version: 1,
            name: Some("Board".into()),
            ..Default::default()
        }))
        .await
        .expect("the first update applies");
    let current = updated.entity.expect("the entity after the change");

    let error = client
        .command(Cmd::UpdateProject(v1::UpdateProject {
            id: project.id.clone(),
            expected_version: 1,
            name: Some("Stale".into()),
            ..Default::default()
        }))
        .await
        .expect_err("a stale version conflicts");
    assert_eq!(error.code(), Some(v1::ErrorCode::Conflict));
    match error {
        ClientError::Server {
            field, current: c, ..
        } => {
            assert_eq!(field, "");
            assert_eq!(c, Some(Box::new(current)));
        }
        other => panic!("expected a server error, got {other:?}"),
    }

    let error = client
        .command(create_item(&project.id, "", ""))
        .await
        .expect_err("an empty title is invalid");
    match error {
        ClientError::Server {
            code,
            field,
            current,
            ..
        } => {
            assert_eq!(code, v1::ErrorCode::InvalidArgument);
            assert_eq!(field, "title");
            assert_eq!(current, None);
        }
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn queries_batches_and_idempotency_keys() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path(), |_| {}).await;
    let (client, _) = connect(&app, "alice", ClientOptions::default()).await;
    let (project, _) = create_project(&client, "PM").await;

    let first = client
        .command_with_key("key-1", create_item(&project.id, "keyed", ""))
        .await
        .unwrap();
    let again = client
        .command_with_key("key-1", create_item(&project.id, "keyed", ""))
        .await
        .unwrap();
    assert_eq!(first.seq, 3);
    assert!(!first.replayed);
    assert_eq!(again.seq, 3);
    assert!(again.replayed);

    let command = |title: &str| v1::Command {
        idempotency_key: String::new(),
        kind: Some(create_item(&project.id, title, "")),
    };
    let batch = client
        .batch(vec![command("a"), command("b")], true)
        .await
        .unwrap();
    assert_eq!(batch.outcomes.len(), 2);

    match client
        .query(v1::query::Kind::ListWorkItems(v1::ListWorkItems {
            project_id: project.id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
    {
        v1::query_result::Result::ListWorkItemsResult(list) => {
            assert_eq!(list.as_of_seq, 5);
            let mut titles: Vec<String> = list.items.into_iter().map(|i| i.title).collect();
            titles.sort();
            assert_eq!(titles, vec!["a", "b", "keyed"]);
        }
        other => panic!("expected a work item list, got {other:?}"),
    }
}

#[tokio::test]
async fn events_arrive_in_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path(), |_| {}).await;
    let (writer, _) = connect(&app, "alice", ClientOptions::default()).await;
    let (project, head) = create_project(&writer, "PM").await;
    let (watcher, _) = connect(&app, "alice", ClientOptions::default()).await;
    let mut events = watcher.events().expect("the stream");
    assert!(watcher.events().is_none(), "one stream per client");
    // From 0: the two project events come from the log, the rest live.
    assert_eq!(watcher.subscribe(vec![], vec![], 0).await.unwrap(), head);
    for i in 0..20 {
        writer
            .command(create_item(&project.id, &format!("item {i}"), ""))
            .await
            .unwrap();
    }
    let received = events_until(&mut events, 22).await;
    assert_eq!(seqs(&received), (1..=22).collect::<Vec<u64>>());
    let titles: Vec<&str> = received[2..].iter().map(|(_, t)| t.as_str()).collect();
    let expected: Vec<String> = (0..20).map(|i| format!("item {i}")).collect();
    assert_eq!(titles, expected);
    assert_eq!(watcher.last_seq(), 22);

    watcher.unsubscribe().await.unwrap();
    writer
        .command(create_item(&project.id, "unseen", ""))
        .await
        .unwrap();
    // The ping is answered after anything the server sent before it: no event came.
    watcher.ping().await.unwrap();
    assert!(events.try_recv().is_err());
}

/// A fake server: welcomes, then hands every later client frame to `on_frame`, which says
/// whether to keep the connection.
async fn fake_server(
    on_frame: impl Fn(v1::ClientFrame) -> bool + Send + 'static,
) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(socket).await.unwrap();
        let _hello = ws.next().await;
        let welcome = v1::ServerFrame {
            body: Some(v1::server_frame::Body::Welcome(v1::Welcome {
                connection_id: "fake".into(),
                ..Default::default()
            })),
        };
        ws.send(Message::Binary(welcome.encode_to_vec().into()))
            .await
            .unwrap();
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Binary(bytes) = message {
                if !on_frame(v1::ClientFrame::decode(bytes).unwrap()) {
                    return;
                }
            }
        }
    });
    (url, task)
}

#[tokio::test]
async fn a_request_without_an_answer_times_out() {
    let (url, _server) = fake_server(|_| true).await;
    let options = ClientOptions {
        request_timeout: Duration::from_millis(50),
        ..Default::default()
    };
    let (client, welcome) = within(Client::connect(url, "token", options))
        .await
        .unwrap();
    assert_eq!(welcome.connection_id, "fake");
    assert!(matches!(
        client.command(create_item("p", "t", "")).await,
        Err(ClientError::Timeout)
    ));
    assert!(matches!(client.ping().await, Err(ClientError::Timeout)));
    // The connection is still usable afterwards.
    assert_eq!(
        *client.state().borrow(),
        ConnectionState::Connected {
            connection_id: "fake".into()
        }
    );
}

#[tokio::test]
async fn requests_in_flight_fail_with_disconnected_when_the_connection_drops() {
    // The fake server drops the socket on the first request.
    let (url, _server) = fake_server(|frame| frame.request_id == 0).await;
    let (client, _) = within(Client::connect(url, "token", ClientOptions::default()))
        .await
        .unwrap();
    let mut state = client.state();
    assert!(matches!(
        within(client.command(create_item("p", "t", ""))).await,
        Err(ClientError::Disconnected)
    ));
    // Without reconnect, the client is closed for good.
    within(state.wait_for(|s| *s == ConnectionState::Closed))
        .await
        .unwrap();
    assert!(matches!(client.ping().await, Err(ClientError::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_consumer_is_cut_off_reconnects_and_resumes_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(dir.path(), |s| {
        s.limits.outgoing_queue = 16;
        s.limits.requests_per_second = 1_000_000;
        s.limits.request_burst = 1_000_000;
    })
    .await;
    let (writer, _) = connect(&app, "alice", ClientOptions::default()).await;
    let (project, head) = create_project(&writer, "PM").await;

    let options = ClientOptions {
        event_buffer: 8,
        ..reconnecting()
    };
    let (watcher, welcome) = connect(&app, "alice", options).await;
    let mut events = watcher.events().unwrap();
    assert_eq!(watcher.subscribe(vec![], vec![], head).await.unwrap(), head);

    // The watcher's events are not read until the server has cut it off: its stream fills,
    // it stops reading, the server's queue overflows. Large events fill the socket buffers
    // sooner; writes go on (pipelined) until the cut-off, and then some more.
    let description = "d".repeat(1_000);
    let metrics = app.app.metrics.clone();
    let mut written = 0u64;
    let mut after_cut = 0;
    while after_cut < 3 {
        assert!(written < 40_000, "the watcher was never cut off");
        if metrics.slow_consumer_disconnects.get() > 0 {
            after_cut += 1;
        }
        let mut set = JoinSet::new();
        for i in 0..100 {
            let writer = writer.clone();
            let command = create_item(&project.id, &format!("item {}", written + i), &description);
            set.spawn(async move { writer.command(command).await });
        }
        while let Some(result) = within(set.join_next()).await {
            result.unwrap().expect("item created");
        }
        written += 100;
    }
    let last = writer
        .command(create_item(&project.id, "last", ""))
        .await
        .unwrap()
        .seq;
    assert_eq!(last, head + written + 1);

    let received = events_until(&mut events, last).await;
    assert_eq!(seqs(&received), (head + 1..=last).collect::<Vec<u64>>());
    assert_eq!(received.last().unwrap().1, "last");
    assert_eq!(watcher.last_seq(), last);
    assert_eq!(metrics.slow_consumer_disconnects.get(), 1);
    // It is on a new connection now.
    let state = watcher.state().borrow().clone();
    match state {
        ConnectionState::Connected { connection_id } => {
            assert_ne!(connection_id, welcome.connection_id)
        }
        other => panic!("expected connected, got {other:?}"),
    }
    assert!(watcher.take_resume_error().is_none());
    // Nothing more: the ping is answered after anything sent before it.
    watcher.ping().await.unwrap();
    assert!(events.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refreshed_token_survives_a_server_restart_and_the_stream_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = spawn_app(dir.path(), |_| {}).await;
    let (writer, _) = connect(&first, "alice", ClientOptions::default()).await;
    let (project, head) = create_project(&writer, "PM").await;
    // The watcher starts with a token from issuer `old`; the restarted server requires `pm`.
    let (watcher, welcome) = within(Client::connect(
        first.url(),
        token("alice", Some("old")),
        reconnecting(),
    ))
    .await
    .unwrap();
    let mut events = watcher.events().unwrap();
    assert_eq!(watcher.subscribe(vec![], vec![], 0).await.unwrap(), head);

    let expires_at = watcher
        .refresh_token(token("alice", Some("pm")))
        .await
        .unwrap();
    let now_ms = pm_gateway::auth::unix_now() as i64 * 1000;
    assert!((now_ms + 3_500_000..=now_ms + 3_700_000).contains(&expires_at));
    let error = watcher
        .refresh_token(token("bob", None))
        .await
        .expect_err("another user's token is refused");
    assert_eq!(error.code(), Some(v1::ErrorCode::PermissionDenied));

    for i in 0..5 {
        writer
            .command(create_item(&project.id, &format!("before {i}"), ""))
            .await
            .unwrap();
    }
    let before = events_until(&mut events, head + 5).await;
    assert_eq!(seqs(&before), (1..=head + 5).collect::<Vec<u64>>());

    // Restart on the same port and data directory, now requiring `iss = pm`.
    let mut state = watcher.state();
    first.shutdown().await;
    within(state.wait_for(|s| matches!(s, ConnectionState::Reconnecting { .. })))
        .await
        .unwrap();
    drop(writer);
    let listener = TcpListener::bind(first.addr).await.unwrap();
    let second = serve_on(listener, dir.path(), |s| s.auth.issuer = Some("pm".into()));
    let writer = within(Client::connect(
        second.url(),
        token("alice", Some("pm")),
        ClientOptions::default(),
    ))
    .await
    .unwrap()
    .0;
    for i in 0..5 {
        writer
            .command(create_item(&project.id, &format!("after {i}"), ""))
            .await
            .unwrap();
    }
    let after = events_until(&mut events, head + 10).await;
    assert_eq!(seqs(&after), (head + 6..=head + 10).collect::<Vec<u64>>());
    let titles: Vec<&str> = after.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        titles,
        ["after 0", "after 1", "after 2", "after 3", "after 4"]
    );
    within(state.wait_for(|s| matches!(s, ConnectionState::Connected { connection_id } if *connection_id != welcome.connection_id)))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_reconnect_with_a_refused_token_closes_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = spawn_app(dir.path(), |_| {}).await;
    let (watcher, _) = within(Client::connect(
        first.url(),
        token("alice", Some("old")),
        reconnecting(),
    ))
    .await
    .unwrap();
    let mut state = watcher.state();
    first.shutdown().await;
    let listener = TcpListener::bind(first.addr).await.unwrap();
    let _second = serve_on(listener, dir.path(), |s| s.auth.issuer = Some("pm".into()));
    within(state.wait_for(|s| *s == ConnectionState::Closed))
        .await
        .unwrap();
    assert!(matches!(watcher.ping().await, Err(ClientError::Closed)));
}
