//! A bare protobuf WebSocket: one socket, no tasks, no queues.
//!
//! Scenarios that hold thousands of sockets, stall on purpose or drop them abruptly use this
//! rather than `pm-client`, whose reconnect and pipelining would get in the way. Events are
//! decoded into [`EventHead`] (seq and commit time only): prost skips the entity, so the
//! load generator spends its share of the two cores on reading, not on decoding.

use std::time::Duration;

use pm_proto::v1::{self, client_frame::Body as In};
use prost::Message as _;
use tokio::net::TcpSocket;

use crate::target::{ws_parts, Target};
use crate::wire::{io, Message, Socket};
use crate::{Error, Result};

/// Upper bound for the handshake (TCP, upgrade, `Hello`/`Welcome`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The two fields of an event the scenarios use.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EventHead {
    /// The change's seq.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// Commit time, Unix milliseconds.
    #[prost(int64, tag = "2")]
    pub at: i64,
}

/// `ServerFrame` with its oneof read as plain optional fields (the same wire format), and the
/// event read as an [`EventHead`].
#[derive(Clone, PartialEq, prost::Message)]
struct FrameHead {
    #[prost(message, optional, tag = "1")]
    welcome: Option<v1::Welcome>,
    #[prost(message, optional, tag = "2")]
    response: Option<v1::Response>,
    #[prost(message, optional, tag = "3")]
    event: Option<EventHead>,
    #[prost(message, optional, tag = "4")]
    pong: Option<v1::Pong>,
    #[prost(message, optional, tag = "5")]
    goodbye: Option<v1::Goodbye>,
}

/// What arrived on a [`RawConn`].
#[derive(Debug)]
pub enum Incoming {
    /// `Welcome` (only during the handshake).
    Welcome(v1::Welcome),
    /// The answer to a request (boxed: it can carry a whole query result).
    Response(Box<v1::Response>),
    /// A committed change.
    Event(EventHead),
    /// The answer to a `Ping`.
    Pong,
    /// The server is about to close the connection.
    Goodbye(v1::Goodbye),
    /// The connection closed, with the close code if the server sent one.
    Closed(Option<u16>),
}

/// One WebSocket to the server, after `Welcome`.
#[derive(Debug)]
pub struct RawConn {
    socket: Socket,
    next_request: u64,
}

impl RawConn {
    /// Connects `user` to `tenant`. `recv_buffer` shrinks the socket's receive buffer, so a
    /// client that stops reading backs the server up quickly.
    pub async fn open(
        target: &Target,
        tenant: &str,
        user: &str,
        recv_buffer: Option<u32>,
    ) -> Result<(RawConn, v1::Welcome)> {
        let token = target.token(tenant, user);
        tokio::time::timeout(CONNECT_TIMEOUT, Self::handshake(target, token, recv_buffer))
            .await
            .map_err(|_| Error::Connection(format!("no Welcome within {CONNECT_TIMEOUT:?}")))?
    }

    async fn handshake(
        target: &Target,
        token: String,
        recv_buffer: Option<u32>,
    ) -> Result<(RawConn, v1::Welcome)> {
        let url = target.next_url();
        let (authority, path) = ws_parts(url)
            .ok_or_else(|| Error::Setup(format!("only ws:// URLs are supported: {url}")))?;
        let address = tokio::net::lookup_host(authority)
            .await
            .map_err(|e| Error::Connection(format!("resolving {authority}: {e}")))?
            .next()
            .ok_or_else(|| Error::Connection(format!("{authority} resolves to nothing")))?;
        let socket = if address.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(io)?;
        if let Some(bytes) = recv_buffer {
            socket.set_recv_buffer_size(bytes).map_err(io)?;
        }
        socket.set_nodelay(true).map_err(io)?;
        spread_source(&socket, address);
        let stream = socket.connect(address).await.map_err(io)?;
        let socket = Socket::upgrade(stream, authority, path).await?;
        let mut conn = RawConn {
            socket,
            next_request: 1,
        };
        let hello = In::Hello(v1::Hello {
            token,
            client_name: concat!("pm-load/", env!("CARGO_PKG_VERSION")).into(),
            protocol_version: pm_proto::PROTOCOL_VERSION,
        });
        conn.send(0, hello).await?;
        match conn.next().await? {
            Incoming::Welcome(welcome) => Ok((conn, welcome)),
            Incoming::Goodbye(goodbye) => Err(Error::Connection(format!(
                "refused: {:?} {}",
                v1::CloseReason::try_from(goodbye.reason),
                goodbye.message
            ))),
            other => Err(Error::Connection(format!(
                "expected Welcome, got {other:?}"
            ))),
        }
    }

    /// Sends one request frame.
    pub async fn send(&mut self, request_id: u64, body: In) -> Result<()> {
        let frame = v1::ClientFrame {
            request_id,
            body: Some(body),
        };
        self.socket.send(&frame.encode_to_vec()).await
    }

    /// When the last frame [`RawConn::next`] returned arrived, Unix microseconds.
    pub fn arrived_at(&self) -> i64 {
        self.socket.read_at()
    }

    /// Subscribes to everything visible from `from_seq`; the head seq from the ack. Events
    /// follow the ack.
    pub async fn subscribe(&mut self, from_seq: u64) -> Result<u64> {
        let id = self.next_request;
        self.next_request += 1;
        let subscribe = In::Subscribe(v1::Subscribe {
            project_ids: vec![],
            entity_types: vec![],
            from_seq,
        });
        self.send(id, subscribe).await?;
        loop {
            match self.next().await? {
                Incoming::Response(r) if r.request_id == id => {
                    return match r.result {
                        Some(v1::response::Result::SubscribeResult(ack)) => Ok(ack.head_seq),
                        other => Err(Error::Connection(format!("Subscribe answered {other:?}"))),
                    }
                }
                Incoming::Pong | Incoming::Response(_) => {}
                other => {
                    return Err(Error::Connection(format!(
                        "expected the Subscribe ack, got {other:?}"
                    )))
                }
            }
        }
    }

    /// The next frame. WebSocket pings are answered while reading. Cancel-safe.
    pub async fn next(&mut self) -> Result<Incoming> {
        let bytes = match self.socket.next().await? {
            Message::Binary(bytes) => bytes,
            Message::Close(code) => return Ok(Incoming::Closed(code)),
        };
        if let Some(event) = event_head(bytes) {
            return Ok(Incoming::Event(event));
        }
        let frame = FrameHead::decode(bytes)
            .map_err(|e| Error::Connection(format!("undecodable ServerFrame: {e}")))?;
        Ok(if let Some(event) = frame.event {
            Incoming::Event(event)
        } else if let Some(response) = frame.response {
            Incoming::Response(Box::new(response))
        } else if let Some(goodbye) = frame.goodbye {
            Incoming::Goodbye(goodbye)
        } else if let Some(welcome) = frame.welcome {
            Incoming::Welcome(welcome)
        } else if frame.pong.is_some() {
            Incoming::Pong
        } else {
            return Err(Error::Connection("an empty ServerFrame".into()));
        })
    }

    /// Reads events until seq `last`, after a subscription from `from`; whether they came
    /// exactly as `from + 1 ..= last`, one each, in order.
    pub async fn read_through(&mut self, from: u64, last: u64) -> Result<bool> {
        let mut expected = from + 1;
        let mut exact = true;
        while expected <= last {
            match self.next().await? {
                Incoming::Event(event) => {
                    exact &= event.seq == expected;
                    expected = event.seq + 1;
                }
                Incoming::Pong | Incoming::Response(_) => {}
                other => {
                    return Err(Error::Connection(format!(
                        "expected events up to {last}, got {other:?}"
                    )))
                }
            }
        }
        Ok(exact)
    }

    /// Reads until the close; every event on the way, the `Goodbye` if one came, and the
    /// close code. For clients that stopped reading and now collect what the server left.
    pub async fn drain(mut self, limit: Duration) -> Result<Drained> {
        let mut drained = Drained::default();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let next = tokio::time::timeout_at(deadline, self.next())
                .await
                .map_err(|_| Error::Connection(format!("still open after {limit:?}")))?;
            match next {
                Ok(Incoming::Event(e)) => drained.events.push(e.seq),
                Ok(Incoming::Goodbye(g)) => drained.goodbye = Some(g),
                Ok(Incoming::Closed(code)) => {
                    drained.close_code = code;
                    return Ok(drained);
                }
                Ok(_) => {}
                // A reset after the close frame was lost: what was read still counts.
                Err(_) if drained.goodbye.is_some() => return Ok(drained),
                Err(e) => return Err(e),
            }
        }
    }
}

/// What [`RawConn::drain`] found.
#[derive(Debug, Default)]
pub struct Drained {
    /// Seqs of the events read, in order.
    pub events: Vec<u64>,
    /// The `Goodbye`, if the server said why it closed.
    pub goodbye: Option<v1::Goodbye>,
    /// The WebSocket close code.
    pub close_code: Option<u16>,
}

/// An event frame's seq and commit time read straight from its first bytes, without
/// walking the rest of the event: the server writes `ServerFrame{event}` as field 3 first,
/// and the event's fields in order, seq (1) and time (2) first. Anything else (another frame,
/// fields in another order) is `None` and decoded in full; this is only the common case made
/// cheap, a tenth of the generator's CPU in a fan-out.
fn event_head(mut bytes: &[u8]) -> Option<EventHead> {
    use prost::encoding::decode_varint;
    const EVENT: u8 = 3 << 3 | 2;
    const SEQ: u8 = 1 << 3;
    const AT: u8 = 2 << 3;
    bytes = bytes.strip_prefix(&[EVENT])?;
    let len = decode_varint(&mut bytes).ok()?;
    if usize::try_from(len).ok()? != bytes.len() {
        return None;
    }
    bytes = bytes.strip_prefix(&[SEQ])?;
    let seq = decode_varint(&mut bytes).ok()?;
    bytes = bytes.strip_prefix(&[AT])?;
    let at = decode_varint(&mut bytes).ok()?;
    Some(EventHead { seq, at: at as i64 })
}

/// Loopback source addresses that connections to a loopback server are spread over.
const LOOPBACK_SOURCES: u32 = 64;

/// Binds `socket` to one of [`LOOPBACK_SOURCES`] loopback addresses (127.0.1.0 and up) in
/// turn when `server` is an IPv4 loopback address.
///
/// From one source address, each `connect` makes the kernel search the ephemeral ports for
/// one not yet used towards the server, and with the tens of thousands of sockets of a storm
/// (the old ones still in `TIME_WAIT`) that search took a fifth of the generator's CPU
/// (`__inet_hash_connect`, `__inet_check_established`), slowing the very storm it measures.
/// Real clients come from many addresses. A system whose loopback has only 127.0.0.1 (macOS)
/// refuses the first bind; connections then use the default source.
fn spread_source(socket: &TcpSocket, server: std::net::SocketAddr) {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static REFUSED: AtomicBool = AtomicBool::new(false);
    let IpAddr::V4(ip) = server.ip() else { return };
    if !ip.is_loopback() || REFUSED.load(Ordering::Relaxed) {
        return;
    }
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % LOOPBACK_SOURCES;
    let source = SocketAddr::from((Ipv4Addr::new(127, 0, 1, n as u8), 0));
    if socket.bind(source).is_err() {
        REFUSED.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_frame_reads_as_its_full_decoding_does() {
        let event = |seq, at| v1::ServerFrame {
            body: Some(v1::server_frame::Body::Event(v1::Event {
                seq,
                at,
                actor_id: "alice".into(),
                project_id: "p".repeat(300),
                ..Default::default()
            })),
        };
        for (seq, at) in [(1, 1), (300, 1_764_000_000_000), (u64::MAX, i64::MAX)] {
            let bytes = event(seq, at).encode_to_vec();
            let full = FrameHead::decode(bytes.as_slice()).unwrap().event.unwrap();
            assert_eq!(event_head(&bytes), Some(full.clone()));
            assert_eq!(full, EventHead { seq, at });
        }
        // Not an event, a field left out (a zero is not written), a cut frame: left to the
        // full decoding.
        let pong = v1::ServerFrame {
            body: Some(v1::server_frame::Body::Pong(v1::Pong::default())),
        };
        assert_eq!(event_head(&pong.encode_to_vec()), None);
        assert_eq!(event_head(&event(5, 0).encode_to_vec()), None);
        let whole = event(5, 6).encode_to_vec();
        assert_eq!(event_head(&whole[..whole.len() - 1]), None);
        assert_eq!(event_head(&[]), None);
    }

    /// Linux routes all of 127.0.0.0/8 to the loopback interface; other systems may not.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn connections_to_a_loopback_server_come_from_loopback_addresses_in_turn() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        let mut sources = Vec::new();
        for _ in 0..3 {
            let socket = TcpSocket::new_v4().unwrap();
            spread_source(&socket, server);
            let _stream = socket.connect(server).await.unwrap();
            let (_, peer) = listener.accept().await.unwrap();
            sources.push(peer.ip());
        }
        for source in &sources {
            let std::net::IpAddr::V4(ip) = source else {
                panic!("an IPv4 server is reached from IPv4: {sources:?}");
            };
            assert_eq!(ip.octets()[..3], [127, 0, 1], "{sources:?}");
        }
        // In turn: three different addresses (other tests' connections may take turns in
        // between, but not 64 of them).
        assert!(
            sources[0] != sources[1] && sources[1] != sources[2] && sources[0] != sources[2],
            "{sources:?}"
        );
    }
}
