//! `pm-server client`: a protocol client for scripts and people.
//!
//! Requests are given in the proto3 JSON mapping of a `ClientFrame` body (camelCase fields,
//! enum names), as arguments or one per line on standard input, for example
//! `{"command": {"createProject": {"key": "PM", "name": "Board"}}}`. Every answer is printed
//! as one JSON line (the `Response`); `watch` prints events as JSON lines.
//!
//! Exit codes: 0 all requests succeeded, 1 at least one answered with an error, 2 the
//! connection or the input failed.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use pm_client::{Client, ClientError, ClientOptions};
use pm_proto::v1;

use super::version::BUILD_VERSION;

/// `pm-server client [--url URL] [--token T] send|watch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// WebSocket URL of the server.
    #[arg(long, env = "PM_URL", default_value = "ws://127.0.0.1:7400/ws")]
    url: String,
    /// Token to connect with.
    #[arg(long, env = "PM_TOKEN", hide_env_values = true)]
    token: String,
    /// `send` or `watch`.
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Send requests (ClientFrame bodies in the proto3 JSON mapping), given as arguments or one
    /// per line on standard input, e.g. '{"query": {"listProjects": {}}}'. Prints each
    /// Response as a JSON line; exits 1 if any was an error, 2 on connection or input errors.
    Send {
        /// The requests; none: read standard input.
        requests: Vec<String>,
    },
    /// Subscribe and print events as JSON lines until interrupted (reconnects and resumes).
    Watch {
        /// Only these projects (repeatable).
        #[arg(long = "project")]
        projects: Vec<String>,
        /// Only these entity types, e.g. work_item (repeatable).
        #[arg(long = "type")]
        types: Vec<String>,
        /// Start after this change number (default: only new changes).
        #[arg(long)]
        from_seq: Option<u64>,
    },
}

/// Sends or watches; the exit code says how it went (see the module documentation).
pub async fn run(args: Args) -> ExitCode {
    match args.what {
        What::Send { requests } => send(&args.url, &args.token, requests).await,
        What::Watch {
            projects,
            types,
            from_seq,
        } => watch(&args.url, &args.token, projects, types, from_seq).await,
    }
}

/// Exit code: every request succeeded.
const OK: u8 = 0;
/// Exit code: a request was answered with an error.
const ANSWERED_WITH_ERROR: u8 = 1;
/// Exit code: connection, protocol or input failure.
const FAILED: u8 = 2;

async fn connect(url: &str, token: &str) -> Result<Client, ExitCode> {
    let options = ClientOptions {
        client_name: format!("pm-server-client/{}", BUILD_VERSION),
        ..ClientOptions::default()
    };
    match Client::connect(url, token, options).await {
        Ok((client, _welcome)) => Ok(client),
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(FAILED))
        }
    }
}

/// Parses one request: a `ClientFrame` in JSON, whose body is the request.
fn parse(line: &str) -> Result<v1::client_frame::Body, String> {
    let frame: v1::ClientFrame = serde_json::from_str(line).map_err(|e| {
        format!("not a ClientFrame in the proto3 JSON mapping ({e}); e.g. {{\"query\": {{\"listProjects\": {{}}}}}}")
    })?;
    match frame.body {
        Some(v1::client_frame::Body::Hello(_)) => Err("hello is sent by the client itself".into()),
        Some(body) => Ok(body),
        None => Err("the frame has no request (command, query, batch, ...)".into()),
    }
}

/// Sends each request in order and prints each `Response` as a JSON line.
async fn send(url: &str, token: &str, requests: Vec<String>) -> ExitCode {
    let lines: Vec<String> = if requests.is_empty() {
        let stdin = std::io::stdin();
        let mut lines = Vec::new();
        for line in stdin.lock().lines() {
            match line {
                Ok(line) if line.trim().is_empty() => {}
                Ok(line) => lines.push(line),
                Err(e) => {
                    eprintln!("error: reading standard input: {e}");
                    return ExitCode::from(FAILED);
                }
            }
        }
        lines
    } else {
        requests
    };
    let mut bodies = Vec::with_capacity(lines.len());
    for (n, line) in lines.iter().enumerate() {
        match parse(line) {
            Ok(body) => bodies.push(body),
            Err(e) => {
                eprintln!("error: request {}: {e}", n + 1);
                return ExitCode::from(FAILED);
            }
        }
    }
    let client = match connect(url, token).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let mut status = OK;
    let mut out = std::io::stdout().lock();
    for (n, body) in bodies.into_iter().enumerate() {
        let request_id = n as u64 + 1;
        let result = match client.request(body).await {
            Ok(result) => result,
            Err(ClientError::Server {
                code,
                message,
                field,
                current,
            }) => {
                status = ANSWERED_WITH_ERROR;
                v1::response::Result::Error(v1::Error {
                    code: code.into(),
                    message,
                    field,
                    current,
                })
            }
            Err(e) => {
                eprintln!("error: request {request_id}: {e}");
                client.close().await;
                return ExitCode::from(FAILED);
            }
        };
        let response = v1::Response {
            request_id,
            result: Some(result),
        };
        let json = serde_json::to_string(&response).expect("responses serialize");
        if writeln!(out, "{json}").is_err() {
            // A closed pipe (e.g. `| head`): stop quietly.
            break;
        }
    }
    client.close().await;
    ExitCode::from(status)
}

/// Subscribes and prints every event as a JSON line until interrupted or disconnected.
async fn watch(
    url: &str,
    token: &str,
    project_ids: Vec<String>,
    entity_types: Vec<String>,
    from_seq: Option<u64>,
) -> ExitCode {
    let mut types = Vec::with_capacity(entity_types.len());
    for name in &entity_types {
        let wire = format!("ENTITY_TYPE_{}", name.to_ascii_uppercase());
        match v1::EntityType::from_str_name(&wire) {
            Some(t) => types.push(t),
            None => {
                eprintln!("error: unknown entity type {name:?} (project, work_item, comment, ...)");
                return ExitCode::from(FAILED);
            }
        }
    }
    let options = ClientOptions {
        client_name: format!("pm-server-client/{}", BUILD_VERSION),
        reconnect: Some(pm_client::Backoff::default()),
        ..ClientOptions::default()
    };
    let (client, welcome) = match Client::connect(url, token, options).await {
        Ok(connected) => connected,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(FAILED);
        }
    };
    let Some(mut events) = client.events() else {
        eprintln!("error: the event stream is already taken");
        return ExitCode::from(FAILED);
    };
    let from = from_seq.unwrap_or(welcome.head_seq);
    if let Err(e) = client.subscribe(project_ids, types, from).await {
        eprintln!("error: {e}");
        return ExitCode::from(if matches!(e, ClientError::Server { .. }) {
            ANSWERED_WITH_ERROR
        } else {
            FAILED
        });
    }
    let mut out = std::io::stdout().lock();
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                let json = serde_json::to_string(&event).expect("events serialize");
                if writeln!(out, "{json}").and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.close().await;
    ExitCode::from(OK)
}
