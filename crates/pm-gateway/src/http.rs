//! A thin HTTP/1.1 layer: reads one request head, answers `GET /healthz`, `/readyz` and
//! `/metrics`, and upgrades `GET /ws` to a WebSocket (tokio-tungstenite over the same socket).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Longest request head accepted.
const MAX_HEAD: usize = 8 * 1024;

/// A parsed request head.
#[derive(Debug)]
pub struct Request {
    /// `GET`, ...
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// Header names in lower case, values trimmed.
    pub headers: Vec<(String, String)>,
    /// Bytes read after the head (the client may send its first frame right away).
    pub rest: Vec<u8>,
}

impl Request {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Why a request head could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// The peer closed or the socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Not HTTP/1.1, or too large.
    #[error("bad request: {0}")]
    Bad(&'static str),
}

/// Reads a request head (up to `MAX_HEAD` bytes).
pub async fn read_head(stream: &mut TcpStream) -> Result<Request, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HeadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let scan_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf[scan_from..].windows(4).position(|w| w == b"\r\n\r\n") {
            break scan_from + pos + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(HeadError::Bad("request head too large"));
        }
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| HeadError::Bad("not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().ok_or(HeadError::Bad("empty request"))?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Bad("malformed request line"));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(HeadError::Bad("not HTTP/1.x"));
    }
    let path = target.split('?').next().unwrap_or("").to_owned();
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Request {
        method: method.to_owned(),
        path,
        headers,
        rest: buf[end..].to_vec(),
    })
}

/// Writes a complete response and closes the write side.
pub async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Checks a WebSocket upgrade request and answers `101 Switching Protocols`; on a bad request,
/// answers `400` and returns `false`.
pub async fn upgrade(stream: &mut TcpStream, request: &Request) -> std::io::Result<bool> {
    let key = request.header("sec-websocket-key");
    let valid = request.method == "GET"
        && request.header_has_token("upgrade", "websocket")
        && request.header_has_token("connection", "upgrade")
        && request.header("sec-websocket-version") == Some("13")
        && key.is_some();
    let Some(key) = key.filter(|_| valid) else {
        respond(
            stream,
            "400 Bad Request",
            "text/plain",
            "expected a WebSocket upgrade (GET /ws with Upgrade: websocket, version 13)\n",
        )
        .await?;
        return Ok(false);
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    stream.write_all(response.as_bytes()).await?;
    Ok(true)
}
