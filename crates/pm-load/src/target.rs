//! The server under test: its URL, how tokens are minted for it, and shared setup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pm_client::{Client, ClientOptions};
use pm_proto::v1;
use serde::Serialize;

use crate::{Error, Result};

/// How long minted tokens last: longer than any bounded run.
const TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);

/// Most commands per `Batch` (the server's default `storage.max_batch_commands` is 100).
const BATCH: usize = 50;

/// The server under test.
#[derive(Clone)]
pub struct Target {
    /// WebSocket URL, e.g. `ws://127.0.0.1:7400/ws`; for a cluster, the nodes' URLs
    /// separated by commas.
    pub url: String,
    /// Each node's URL: connections go to them in turn.
    urls: Vec<String>,
    turn: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Process id of the server, for reading its memory from `/proc/<pid>/status`.
    pub server_pid: Option<u32>,
    key: EncodingKey,
    /// Makes the tenant names of one run distinct from every earlier run's.
    run_id: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never printed.
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("server_pid", &self.server_pid)
            .field("run_id", &self.run_id)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    tid: &'a str,
    exp: u64,
}

impl Target {
    /// A target at `url` whose tokens are signed with the server's HS256 `secret`.
    pub fn new(url: impl Into<String>, secret: &str) -> Result<Self> {
        if secret.len() < 32 {
            return Err(Error::Setup(
                "the HS256 secret must be at least 32 bytes (the server refuses shorter ones)"
                    .into(),
            ));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970");
        let url = url.into();
        let urls: Vec<String> = url.split(',').map(|u| u.trim().to_owned()).collect();
        if urls.iter().any(|u| u.is_empty()) {
            return Err(Error::Setup(format!("an empty URL in --url {url:?}")));
        }
        Ok(Target {
            url,
            urls,
            turn: Default::default(),
            server_pid: None,
            key: EncodingKey::from_secret(secret.as_bytes()),
            run_id: base36(now.as_millis() as u64 % 36u64.pow(8)),
        })
    }

    /// The URL of the next connection: the nodes in turn (the first connection of a run
    /// goes to the first node).
    pub fn next_url(&self) -> &str {
        let turn = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.urls[turn % self.urls.len()]
    }

    /// How many nodes the URL names (more than one: a cluster).
    pub fn nodes(&self) -> usize {
        self.urls.len()
    }

    /// The server's `/metrics` URL, on the same host and port as the WebSocket (of the
    /// first node, for a cluster).
    pub fn metrics_url(&self) -> Option<String> {
        let (host, _) = ws_parts(&self.urls[0])?;
        Some(format!("http://{host}/metrics"))
    }

    /// A token for `user` in `tenant`.
    pub fn token(&self, tenant: &str, user: &str) -> String {
        let claims = Claims {
            sub: user,
            tid: tenant,
            exp: unix_now().as_secs() + TOKEN_TTL.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// A tenant id no earlier run used: `load-<scenario>-<run>-<n>`.
    pub fn tenant(&self, scenario: &str, n: usize) -> String {
        format!("load-{scenario}-{}-{n}", self.run_id)
    }

    /// Connects `user` to `tenant` with the client library.
    pub async fn client(&self, tenant: &str, user: &str) -> Result<Client> {
        let options = ClientOptions {
            client_name: concat!("pm-load/", env!("CARGO_PKG_VERSION")).into(),
            event_buffer: 64 * 1024,
            send_buffer: 4096,
            ..ClientOptions::default()
        };
        let (client, _) =
            Client::connect(self.next_url(), self.token(tenant, user), options).await?;
        Ok(client)
    }

    /// Creates a project in `tenant` as [`ADMIN`] and adds `members` with `role`; the
    /// admin's client and the project id.
    pub async fn project_with_members(
        &self,
        tenant: &str,
        members: &[String],
        role: v1::ProjectRole,
    ) -> Result<(Client, String)> {
        let admin = self.client(tenant, ADMIN).await?;
        let project = create_project(&admin).await?;
        for chunk in members.chunks(BATCH) {
            let commands = chunk
                .iter()
                .map(|user| v1::Command {
                    idempotency_key: String::new(),
                    kind: Some(v1::command::Kind::AddMember(v1::AddMember {
                        project_id: project.clone(),
                        user_id: user.clone(),
                        role: role.into(),
                    })),
                })
                .collect();
            admin.batch(commands, true).await?;
        }
        Ok((admin, project))
    }
}

/// The user that creates each scenario's project.
pub const ADMIN: &str = "load-admin";

/// A `CreateWorkItem` in `project`.
pub fn create_item(project: &str, n: u64) -> v1::command::Kind {
    v1::command::Kind::CreateWorkItem(v1::CreateWorkItem {
        project_id: project.to_owned(),
        item_type: v1::WorkItemType::Task.into(),
        title: format!("load item {n}"),
        ..Default::default()
    })
}

async fn create_project(admin: &Client) -> Result<String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let salt = unix_now().as_nanos() as u64;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Keys are upper-case letters; a random one keeps reruns against one tenant apart.
    let key = format!(
        "L{}",
        letters((salt ^ n.wrapping_mul(0x9E37_79B9)) % 26u64.pow(6))
    );
    let result = admin
        .command(v1::command::Kind::CreateProject(v1::CreateProject {
            key: key.clone(),
            name: format!("pm-load {key}"),
            description: "created by pm-load".into(),
        }))
        .await?;
    match result.entity.and_then(|e| e.kind) {
        Some(v1::entity::Kind::Project(project)) => Ok(project.id),
        other => Err(Error::Setup(format!(
            "CreateProject answered {other:?} instead of a project"
        ))),
    }
}

/// Time since the Unix epoch.
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
}

fn base36(mut n: u64) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

fn letters(mut n: u64) -> String {
    let mut out = String::new();
    for _ in 0..6 {
        out.push(char::from(b'A' + (n % 26) as u8));
        n /= 26;
    }
    out
}

/// Reads the server's resident memory: from `/proc/<pid>/status` when the pid is known,
/// otherwise from `process_resident_memory_bytes` on `/metrics`.
pub async fn server_rss(target: &Target) -> Result<u64> {
    if let Some(pid) = target.server_pid {
        let status = tokio::fs::read_to_string(format!("/proc/{pid}/status"))
            .await
            .map_err(|e| Error::Setup(format!("cannot read /proc/{pid}/status: {e}")))?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or_else(|| Error::Setup(format!("no VmRSS in /proc/{pid}/status")))?;
        return Ok(kib * 1024);
    }
    let text = metrics(target).await?;
    metric(&text, "process_resident_memory_bytes")
        .map(|v| v as u64)
        .ok_or_else(|| {
            Error::Setup(
                "the server's /metrics has no process_resident_memory_bytes; pass --server-pid"
                    .into(),
            )
        })
}

/// Fetches the server's `/metrics` text (plain HTTP/1.1, no TLS: the server is on loopback).
pub async fn metrics(target: &Target) -> Result<String> {
    let url = target
        .metrics_url()
        .ok_or_else(|| Error::Setup(format!("cannot derive /metrics from {}", target.url)))?;
    let fail = |e: &dyn std::error::Error| Error::Setup(format!("GET {url}: {}", causes(e)));
    let uri: hyper::Uri = url.parse().map_err(|e| fail(&e))?;
    let client: HttpClient<HttpConnector, Empty<Bytes>> =
        HttpClient::builder(TokioExecutor::new()).build_http();
    let response = client.get(uri).await.map_err(|e| fail(&e))?;
    if response.status() != hyper::StatusCode::OK {
        return Err(Error::Setup(format!(
            "GET {url} answered {:?} {}",
            response.version(),
            response.status()
        )));
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(&e))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|e| fail(&e))
}

/// An error and its causes, as one line: the client's own error only says which step failed.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The value of an unlabelled metric in Prometheus text or OpenMetrics (comments, `# EOF`
/// and labelled series are skipped; a timestamp after the value is ignored).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let mut fields = l.split_whitespace();
        (fields.next()? == name)
            .then(|| fields.next()?.parse().ok())
            .flatten()
    })
}

/// A `ws://` URL's authority (`host:port`) and path (`/` when it has none); `None` for any
/// other scheme.
pub(crate) fn ws_parts(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("ws://")?;
    Some(match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ws_url_splits_into_authority_and_path() {
        assert_eq!(
            ws_parts("ws://127.0.0.1:7400/ws"),
            Some(("127.0.0.1:7400", "/ws"))
        );
        assert_eq!(ws_parts("ws://node-2:7400"), Some(("node-2:7400", "/")));
        assert_eq!(ws_parts("wss://127.0.0.1:7400/ws"), None);
    }

    /// A server on a free loopback port that answers every request with `answer`.
    async fn answering(answer: &'static str) -> Target {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut byte = [0u8];
                while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).await.unwrap() == 1 {
                    head.push(byte[0]);
                }
                assert!(head.starts_with(b"GET /metrics HTTP/1.1\r\n"));
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        Target::new(format!("ws://{address}/ws"), &"s".repeat(32)).unwrap()
    }

    #[tokio::test]
    async fn metrics_reads_the_body_and_names_the_url_in_errors() {
        let target = answering(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
             1e\r\nprocess_resident_memory_bytes \r\n3\r\n42\n\r\n6\r\n# EOF\n\r\n0\r\n\r\n",
        )
        .await;
        let text = metrics(&target).await.unwrap();
        assert_eq!(text, "process_resident_memory_bytes 42\n# EOF\n");
        assert_eq!(server_rss(&target).await.unwrap(), 42);

        let target =
            answering("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 5\r\n\r\nbusy\n").await;
        let url = target.metrics_url().unwrap();
        match metrics(&target).await {
            Err(Error::Setup(e)) => {
                assert_eq!(
                    e,
                    format!("GET {url} answered HTTP/1.1 503 Service Unavailable")
                )
            }
            other => panic!("{other:?}"),
        }

        // Nobody listens on a port just given back.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let target = Target::new(format!("ws://{address}/ws"), &"s".repeat(32)).unwrap();
        match metrics(&target).await {
            Err(Error::Setup(e)) => assert!(
                e.starts_with(&format!("GET http://{address}/metrics: "))
                    && e.contains("Connection refused"),
                "{e}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn metric_reads_prometheus_text_and_openmetrics() {
        let prometheus = "# HELP process_resident_memory_bytes Resident memory.\n\
            # TYPE process_resident_memory_bytes gauge\n\
            process_resident_memory_bytes 12345678\n\
            pm_requests_total{kind=\"query\"} 3\n\
            pm_slow_consumer_disconnects_total 2\n";
        assert_eq!(
            metric(prometheus, "process_resident_memory_bytes"),
            Some(12_345_678.0)
        );
        assert_eq!(
            metric(prometheus, "pm_slow_consumer_disconnects_total"),
            Some(2.0)
        );
        assert_eq!(metric(prometheus, "pm_requests_total"), None, "labelled");
        assert_eq!(metric(prometheus, "process_resident_memory"), None);

        let openmetrics = "# TYPE process_resident_memory_bytes gauge\n\
            # UNIT process_resident_memory_bytes bytes\n\
            process_resident_memory_bytes 1.5e7 1700000000\n\
            # TYPE pm_slow_consumer_disconnects counter\n\
            pm_slow_consumer_disconnects_total 4\n\
            # EOF\n";
        assert_eq!(
            metric(openmetrics, "process_resident_memory_bytes"),
            Some(15_000_000.0)
        );
        assert_eq!(
            metric(openmetrics, "pm_slow_consumer_disconnects_total"),
            Some(4.0)
        );
    }
}
