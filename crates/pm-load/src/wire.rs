//! The client's end of a WebSocket, as the raw scenarios use it: the upgrade, then the
//! server's messages read in place from one buffer per connection, and masked frames written.
//!
//! tungstenite parses and formats each frame's header; this module owns the buffer. Through
//! tokio-tungstenite every message was copied into an allocation of its own and every read
//! registered the task's waker again: with a thousand subscribers at a million events a
//! second, the generator spent more CPU on an event than the server did, and set the
//! fan-out's figure. Here a read brings in as many messages as have arrived, and each is
//! looked at where it lies.

use std::hash::{BuildHasher, RandomState};
use std::io::{Cursor, ErrorKind};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

use crate::{Error, Result};

/// The largest message accepted from the server.
pub const MAX_MESSAGE: usize = 16 << 20;

/// What the first read of a connection asks for. An idle connection keeps this much.
const FIRST_READ: usize = 4 * 1024;

/// What one read asks for at most: a read that fills its space doubles the next one's, up to
/// this.
const LARGEST_READ: usize = 64 * 1024;

/// The largest upgrade response accepted.
const MAX_HEAD: usize = 16 * 1024;

/// A message from the server.
#[derive(Debug, PartialEq)]
pub enum Message<'a> {
    /// A binary message's payload, valid until the next read.
    Binary(&'a [u8]),
    /// The server closed the WebSocket, with its close code if it gave one. The close is
    /// answered.
    Close(Option<u16>),
}

/// One upgraded connection to the server.
#[derive(Debug)]
pub struct Socket {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    read: BytesMut,
    /// How many of `read`'s first bytes the last message returned took; dropped at the next read.
    consumed: usize,
    /// What the next read asks for.
    chunk: usize,
    /// The fragments of a message the server split, until its last one.
    fragments: Option<Vec<u8>>,
    /// A message reassembled from fragments, returned in place like any other.
    assembled: Vec<u8>,
    /// Answers (pong, close) not yet written. They are written without waiting, so that
    /// reading stays cancel-safe; a `send` writes what is left first.
    unsent: Vec<u8>,
    /// When the read that brought the last message in returned, Unix microseconds.
    read_at: i64,
    closed: bool,
}

impl Socket {
    /// Upgrades `stream` to a WebSocket at `host` and `path` (`/ws`). Checks the server's
    /// `Sec-WebSocket-Accept`.
    pub async fn upgrade(mut stream: TcpStream, host: &str, path: &str) -> Result<Socket> {
        let key = generate_key();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut read = BytesMut::with_capacity(FIRST_READ);
        let head = loop {
            if stream.read_buf(&mut read).await.map_err(io)? == 0 {
                return Err(upgrade("the server closed the connection before answering"));
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&read) {
                Ok(httparse::Status::Complete(len)) => {
                    check_response(&response, &key)?;
                    break len;
                }
                Ok(httparse::Status::Partial) if read.len() < MAX_HEAD => {
                    read.reserve(FIRST_READ);
                }
                Ok(httparse::Status::Partial) => {
                    return Err(upgrade(format!("a response head over {MAX_HEAD} bytes")))
                }
                Err(e) => return Err(upgrade(format!("unreadable response: {e}"))),
            }
        };
        // Whatever came after the head is the first frames.
        read.advance(head);
        let read_at = unix_micros();
        Ok(Socket {
            stream,
            read,
            consumed: 0,
            chunk: FIRST_READ,
            fragments: None,
            assembled: Vec::new(),
            unsent: Vec::new(),
            read_at,
            closed: false,
        })
    }

    /// Sends `payload` as one binary message, after any answer still unsent.
    pub async fn send(&mut self, payload: &[u8]) -> Result<()> {
        queue(&mut self.unsent, OpCode::Data(Data::Binary), payload);
        self.stream
            .write_all(&self.unsent)
            .await
            .map_err(|e| Error::Connection(format!("send: {e}")))?;
        self.unsent.clear();
        Ok(())
    }

    /// When the read that brought in the last message returned, Unix microseconds: the
    /// message's arrival, however long it then waited in the buffer.
    pub fn read_at(&self) -> i64 {
        self.read_at
    }

    /// The next message. Pings are answered, pongs skipped. Cancel-safe: a message is
    /// consumed only when returned. After a close, `Close(None)`.
    pub async fn next(&mut self) -> Result<Message<'_>> {
        self.read.advance(std::mem::take(&mut self.consumed));
        loop {
            if self.closed {
                return Ok(Message::Close(None));
            }
            if let Some((header, start, end)) = self.frame()? {
                match header.opcode {
                    OpCode::Data(Data::Binary) if header.is_final => {
                        self.consumed = end;
                        return Ok(Message::Binary(&self.read[start..end]));
                    }
                    OpCode::Data(Data::Binary) => {
                        if self.fragments.is_some() {
                            return Err(protocol("a new message inside a fragmented one"));
                        }
                        self.fragments = Some(self.read[start..end].to_vec());
                        self.read.advance(end);
                    }
                    OpCode::Data(Data::Continue) => {
                        let Some(mut fragments) = self.fragments.take() else {
                            return Err(protocol("a continuation with no message to continue"));
                        };
                        if fragments.len() + (end - start) > MAX_MESSAGE {
                            return Err(protocol(format!("a message over {MAX_MESSAGE} bytes")));
                        }
                        fragments.extend_from_slice(&self.read[start..end]);
                        self.read.advance(end);
                        if header.is_final {
                            self.assembled = fragments;
                            return Ok(Message::Binary(&self.assembled));
                        }
                        self.fragments = Some(fragments);
                    }
                    OpCode::Data(_) => return Err(protocol("the server sent a text message")),
                    OpCode::Control(Control::Ping) => {
                        let payload = Bytes::copy_from_slice(&self.read[start..end]);
                        self.read.advance(end);
                        queue(&mut self.unsent, OpCode::Control(Control::Pong), &payload);
                        self.write_unsent()?;
                    }
                    OpCode::Control(Control::Close) => {
                        let code = (end - start >= 2)
                            .then(|| u16::from_be_bytes([self.read[start], self.read[start + 1]]));
                        self.read.advance(end);
                        self.closed = true;
                        let echo = code.map(u16::to_be_bytes);
                        queue(
                            &mut self.unsent,
                            OpCode::Control(Control::Close),
                            echo.as_ref().map_or(&[], |c| c.as_slice()),
                        );
                        // The close is best effort: the server may have gone already.
                        let _ = self.write_unsent();
                        return Ok(Message::Close(code));
                    }
                    OpCode::Control(_) => self.read.advance(end),
                }
                continue;
            }
            self.fill().await?;
        }
    }

    /// The first whole frame in the buffer: its header and where its payload lies. `None`
    /// when more bytes are needed; the space they need is reserved.
    fn frame(&mut self) -> Result<Option<(FrameHeader, usize, usize)>> {
        let mut cursor = Cursor::new(&self.read[..]);
        let Some((header, len)) = FrameHeader::parse(&mut cursor).map_err(protocol)? else {
            return Ok(None);
        };
        if header.mask.is_some() {
            return Err(protocol("the server masked a frame"));
        }
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(protocol("a frame with reserved bits set"));
        }
        let len = usize::try_from(len)
            .ok()
            .filter(|len| *len <= MAX_MESSAGE)
            .ok_or_else(|| protocol(format!("a frame over {MAX_MESSAGE} bytes")))?;
        let start = cursor.position() as usize;
        let end = start + len;
        if self.read.len() < end {
            self.read.reserve(end - self.read.len());
            return Ok(None);
        }
        Ok(Some((header, start, end)))
    }

    /// Reads what has arrived, at least one byte.
    async fn fill(&mut self) -> Result<()> {
        self.write_unsent()?;
        self.read.reserve(self.chunk);
        let room = self.read.capacity() - self.read.len();
        let n = self
            .stream
            .read_buf(&mut self.read)
            .await
            .map_err(|e| Error::Connection(format!("read: {e}")))?;
        if n == 0 {
            return Err(Error::Connection(
                "read: the server closed the connection without a WebSocket close".into(),
            ));
        }
        if n == room {
            self.chunk = (self.chunk * 2).min(LARGEST_READ);
        }
        self.read_at = unix_micros();
        Ok(())
    }

    /// Writes what it can of the unsent answers without waiting.
    fn write_unsent(&mut self) -> Result<()> {
        while !self.unsent.is_empty() {
            match self.stream.try_write(&self.unsent) {
                Ok(n) => drop(self.unsent.drain(..n)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(Error::Connection(format!("send: {e}"))),
            }
        }
        Ok(())
    }
}

/// Appends `payload` as one masked frame to `out`.
fn queue(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let header = FrameHeader {
        opcode,
        mask: Some(mask()),
        ..FrameHeader::default()
    };
    Frame::from_payload(header, Bytes::copy_from_slice(payload))
        .format(out)
        .expect("writing to a Vec does not fail");
}

/// A fresh masking key (RFC 6455, 5.3). `RandomState` is seeded randomly per thread and
/// changes at every `new`.
fn mask() -> [u8; 4] {
    (RandomState::new().hash_one(()) as u32).to_ne_bytes()
}

fn check_response(response: &httparse::Response<'_, '_>, key: &str) -> Result<()> {
    if response.code != Some(101) {
        return Err(upgrade(format!(
            "HTTP {} {}",
            response.code.unwrap_or_default(),
            response.reason.unwrap_or_default()
        )));
    }
    let accept = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .ok_or_else(|| upgrade("no Sec-WebSocket-Accept in the 101 response"))?;
    if accept.value != derive_accept_key(key.as_bytes()).as_bytes() {
        return Err(upgrade(
            "a Sec-WebSocket-Accept that does not match the key",
        ));
    }
    Ok(())
}

fn unix_micros() -> i64 {
    crate::target::unix_now().as_micros() as i64
}

fn upgrade(what: impl std::fmt::Display) -> Error {
    Error::Connection(format!("upgrade: {what}"))
}

fn protocol(what: impl std::fmt::Display) -> Error {
    Error::Connection(format!("read: {what}"))
}

/// An I/O error on a connection.
pub(crate) fn io(e: std::io::Error) -> Error {
    Error::Connection(e.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::*;

    const BINARY: u8 = 0x2;
    const CLOSE: u8 = 0x8;
    const PING: u8 = 0x9;
    const PONG: u8 = 0xA;
    const FIN: u8 = 0x80;

    /// An unmasked frame as a server writes it, framed by hand.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            len @ 0..=125 => out.push(len as u8),
            len @ 126..=0xFFFF => {
                out.push(126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    /// Reads the upgrade request and answers it with `accept` (the right key's when `None`)
    /// and `status`, followed by `then` in the same write.
    async fn answer(stream: &mut TcpStream, status: &str, accept: Option<&str>, then: &[u8]) {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.unwrap());
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("GET /ws HTTP/1.1\r\n"), "{head}");
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        let accept = accept.map_or_else(|| derive_accept_key(key.as_bytes()), String::from);
        let mut response = format!(
            "HTTP/1.1 {status}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             sec-websocket-accept: {accept}\r\n\r\n"
        )
        .into_bytes();
        response.extend_from_slice(then);
        stream.write_all(&response).await.unwrap();
    }

    /// The next frame the client wrote: its first byte and its payload, unmasked. Checks
    /// that it was masked.
    async fn client_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
        tokio::time::timeout(Duration::from_secs(10), read_client_frame(stream))
            .await
            .expect("the client writes a frame")
    }

    async fn read_client_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
        let first = stream.read_u8().await.unwrap();
        let second = stream.read_u8().await.unwrap();
        assert_eq!(second & 0x80, 0x80, "a client's frames are masked");
        let len = match second & 0x7F {
            126 => usize::from(stream.read_u16().await.unwrap()),
            127 => stream.read_u64().await.unwrap() as usize,
            len => usize::from(len),
        };
        let mut mask = [0; 4];
        stream.read_exact(&mut mask).await.unwrap();
        let mut payload = vec![0; len];
        stream.read_exact(&mut payload).await.unwrap();
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        (first, payload)
    }

    /// A client socket upgraded by `server`, which gets the accepted stream.
    async fn pair<F, Fut>(server: F) -> (Result<Socket>, tokio::task::JoinHandle<TcpStream>)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = TcpStream> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            server(stream).await
        });
        let stream = TcpStream::connect(address).await.unwrap();
        let socket = Socket::upgrade(stream, &address.to_string(), "/ws").await;
        (socket, server)
    }

    #[tokio::test]
    async fn frames_sent_with_the_upgrade_response_are_read_and_a_ping_is_answered() {
        let mut first = frame(FIN | BINARY, b"a");
        first.extend(frame(FIN | PING, b"p"));
        first.extend(frame(FIN | BINARY, b"bc"));
        let (socket, server) = pair(|mut stream| async move {
            answer(&mut stream, "101 Switching Protocols", None, &first).await;
            stream
        })
        .await;
        let mut socket = socket.unwrap();
        assert_eq!(socket.next().await.unwrap(), Message::Binary(b"a"));
        assert_eq!(socket.next().await.unwrap(), Message::Binary(b"bc"));
        let mut stream = server.await.unwrap();
        assert_eq!(client_frame(&mut stream).await, (FIN | PONG, b"p".to_vec()));
        socket.send(b"xyz").await.unwrap();
        assert_eq!(
            client_frame(&mut stream).await,
            (FIN | BINARY, b"xyz".to_vec())
        );
    }

    #[tokio::test]
    async fn a_refused_upgrade_or_a_wrong_accept_key_is_an_error() {
        let (socket, _) = pair(|mut stream| async move {
            answer(&mut stream, "403 Forbidden", None, &[]).await;
            stream
        })
        .await;
        assert_eq!(
            socket.unwrap_err().to_string(),
            Error::Connection("upgrade: HTTP 403 Forbidden".into()).to_string()
        );
        let (socket, _) = pair(|mut stream| async move {
            answer(
                &mut stream,
                "101 Switching Protocols",
                Some("bm90IGl0"),
                &[],
            )
            .await;
            stream
        })
        .await;
        assert_eq!(
            socket.unwrap_err().to_string(),
            Error::Connection("upgrade: a Sec-WebSocket-Accept that does not match the key".into())
                .to_string()
        );
    }

    #[tokio::test]
    async fn a_message_split_over_reads_and_over_fragments_arrives_whole() {
        let large: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        let mut bytes = frame(FIN | BINARY, &large);
        // A fragmented message with a ping between its fragments (RFC 6455, 5.4).
        bytes.extend(frame(BINARY, b"he"));
        bytes.extend(frame(FIN | PING, b""));
        bytes.extend(frame(0x0, b"ll"));
        bytes.extend(frame(FIN, b"o"));
        bytes.extend(frame(FIN | BINARY, b"!"));
        let (socket, server) = pair(|mut stream| async move {
            answer(&mut stream, "101 Switching Protocols", None, &[]).await;
            for piece in bytes.chunks(997) {
                stream.write_all(piece).await.unwrap();
                stream.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            stream
        })
        .await;
        let mut socket = socket.unwrap();
        assert_eq!(socket.next().await.unwrap(), Message::Binary(&large));
        assert_eq!(socket.next().await.unwrap(), Message::Binary(b"hello"));
        assert_eq!(socket.next().await.unwrap(), Message::Binary(b"!"));
        let mut stream = server.await.unwrap();
        assert_eq!(client_frame(&mut stream).await, (FIN | PONG, Vec::new()));
    }

    #[tokio::test]
    async fn a_close_is_reported_with_its_code_and_answered() {
        let close = frame(FIN | CLOSE, &[0x03, 0xF0, b'b', b'y', b'e']);
        let (socket, server) = pair(|mut stream| async move {
            answer(&mut stream, "101 Switching Protocols", None, &close).await;
            stream
        })
        .await;
        let mut socket = socket.unwrap();
        assert_eq!(socket.next().await.unwrap(), Message::Close(Some(1008)));
        assert_eq!(socket.next().await.unwrap(), Message::Close(None));
        let mut stream = server.await.unwrap();
        assert_eq!(
            client_frame(&mut stream).await,
            (FIN | CLOSE, vec![0x03, 0xF0])
        );
    }

    #[tokio::test]
    async fn what_a_server_must_not_send_is_an_error() {
        let masked = [FIN | BINARY, 0x80 | 1, 1, 2, 3, 4, b'x' ^ 1];
        let cases: [(Vec<u8>, &str); 4] = [
            (masked.to_vec(), "read: the server masked a frame"),
            (
                frame(FIN | 0x1, b"text"),
                "read: the server sent a text message",
            ),
            (
                frame(FIN, b"x"),
                "read: a continuation with no message to continue",
            ),
            (
                [0x80 | BINARY, 127]
                    .into_iter()
                    .chain((17u64 << 20).to_be_bytes())
                    .collect(),
                "read: a frame over 16777216 bytes",
            ),
        ];
        for (bytes, error) in cases {
            let (socket, _server) = pair(|mut stream| async move {
                answer(&mut stream, "101 Switching Protocols", None, &bytes).await;
                stream
            })
            .await;
            let mut socket = socket.unwrap();
            assert_eq!(
                socket.next().await.unwrap_err().to_string(),
                Error::Connection(error.into()).to_string()
            );
        }
    }
}
