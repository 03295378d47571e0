//! A connection's outgoing side: what may be queued for a client ([`Outbound`]), why the
//! server closes a connection on purpose ([`Close`]), and the writer task that owns the
//! socket's writing half.
//!
//! The writer drains the connection's bounded queue into the socket's [`FrameWriter`] and
//! writes once per burst (about ten times the frames per second of a write per frame).
//! Closing on purpose goes through a separate channel: the writer drops what is still queued
//! and sends `Goodbye` whose `resume_from_seq` is the last event it actually handed to the
//! socket, then the close frame. This module depends on nothing else of the gateway but the
//! socket's framing, so the session and the hub can both use it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pm_proto::frame::encode_server_frame;
use pm_proto::v1::{self, server_frame::Body};
use tokio::io::AsyncWrite;
use tokio::sync::oneshot;

use crate::outbox::Outbox;
use crate::socket::{FrameWriter, Opcode};

/// Something for the connection's writer to send.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// An encoded `ServerFrame` (response, welcome, pong).
    Frame(Bytes),
    /// An encoded `ServerFrame{event}` and its seq.
    Event {
        /// The event's change number.
        seq: u64,
        /// The shared encoded frame.
        frame: Bytes,
    },
    /// The events of one committed group that this connection wants, in seq order: one queue
    /// slot per group, so a large group does not overflow a healthy subscriber.
    Events(Vec<(u64, Bytes)>),
    /// Events framed already as WebSocket messages (see [`crate::socket`]), in seq order:
    /// each chunk holds one or more whole frames, and the seq of its last event.
    Framed(Vec<(u64, Bytes)>),
    /// A WebSocket ping.
    Ping,
    /// The answer to the client's ping, with its payload.
    Pong(Bytes),
}

/// Asks a connection to close, from wherever the reason arises (the hub, a request, the
/// session): the first reason given wins. A `Mutex` and a `Notify` instead of a channel: an
/// idle connection keeps one of these, and a channel's first block costs a kilobyte.
#[derive(Debug, Default)]
pub(crate) struct CloseSignal {
    reason: std::sync::Mutex<Option<Close>>,
    notify: tokio::sync::Notify,
}

impl CloseSignal {
    /// Asks for the connection to be closed for `close` (unless another reason came first).
    pub(crate) fn request(&self, close: Close) {
        self.reason
            .lock()
            .expect("close lock is never poisoned")
            .get_or_insert(close);
        // Stores a wake-up if nobody waits yet, so none is lost.
        self.notify.notify_one();
    }

    /// Completes with the first reason asked for.
    pub(crate) async fn requested(&self) -> Close {
        loop {
            let notified = self.notify.notified();
            if let Some(close) = self
                .reason
                .lock()
                .expect("close lock is never poisoned")
                .take()
            {
                return close;
            }
            notified.await;
        }
    }
}

/// Why the server closes a connection on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Close {
    /// The outgoing queue overflowed.
    SlowConsumer,
    /// The server is shutting down.
    Shutdown,
    /// Token problems.
    Unauthenticated(v1::CloseReason, String),
    /// Repeated rate-limit violations.
    RateLimitAbuse,
    /// No traffic for three heartbeat intervals.
    HeartbeatTimeout,
    /// A connection limit.
    TooManyConnections(String),
    /// The tenant cannot be served (damaged, or it cannot be opened now).
    TenantUnavailable(String),
    /// A text frame (1003) or repeated garbage (1007).
    Protocol(u16, String),
    /// The server failed in a way the connection cannot recover from (1011).
    Internal,
}

impl Close {
    /// Whether the requests already taken are answered, and what is queued goes out, before
    /// the goodbye: not for a peer that stopped reading (its full queue is why it is closed)
    /// or went silent.
    pub(crate) fn lets_queue_out(&self) -> bool {
        !matches!(self, Close::SlowConsumer | Close::HeartbeatTimeout)
    }

    /// The goodbye reason, its text and the close code.
    pub(crate) fn parts(&self) -> (v1::CloseReason, String, u16) {
        use v1::CloseReason as R;
        match self {
            Close::SlowConsumer => (
                R::SlowConsumer,
                "the connection did not keep up with its events; resume from resume_from_seq"
                    .into(),
                4008,
            ),
            Close::Shutdown => (R::Shutdown, "the server is shutting down".into(), 1001),
            Close::Unauthenticated(reason, message) => (*reason, message.clone(), 4001),
            Close::RateLimitAbuse => (R::RateLimitAbuse, "too many requests".into(), 4029),
            Close::HeartbeatTimeout => (
                R::HeartbeatTimeout,
                "no traffic for three heartbeat intervals".into(),
                1001,
            ),
            Close::TooManyConnections(message) => (R::TooManyConnections, message.clone(), 1013),
            Close::TenantUnavailable(message) => (R::TenantUnavailable, message.clone(), 1013),
            Close::Protocol(code, message) => (R::ProtocolViolation, message.clone(), *code),
            Close::Internal => (
                R::Unspecified,
                "internal error; reconnect and resume".into(),
                1011,
            ),
        }
    }
}

/// The writer task: queue to socket, one write per burst.
///
/// A client that stops reading blocks the socket, and with it a burst in progress: the
/// goodbye is therefore watched during bursts too, and the goodbye itself gets `grace` to go
/// out (the peer may start reading again) before the socket is dropped without it. Without
/// that bound a peer that keeps its connection open but never reads again would hold the
/// connection, its queue and its task forever.
///
/// The session ends the writer through `goodbye`: a reason to say goodbye with, or (dropped)
/// none because the client left. Once the writer ends, the queue refuses every sender.
pub(crate) async fn write_loop(
    mut socket: FrameWriter,
    queue: Arc<Outbox>,
    mut goodbye: oneshot::Receiver<Close>,
    last_event: Arc<AtomicU64>,
    grace: Duration,
) {
    struct Closing<'a>(&'a Outbox);
    impl Drop for Closing<'_> {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let _closing = Closing(&queue);
    loop {
        let item = tokio::select! {
            biased;
            close = &mut goodbye => {
                // Boxed: once per connection, and kept out of the loop's state (its size is
                // paid by every idle connection).
                Box::pin(finish(socket, close.ok(), &queue, &last_event, grace)).await;
                return;
            }
            item = queue.recv() => item,
        };
        let written = {
            let burst = write_burst(&mut socket, item, &queue, &last_event);
            tokio::pin!(burst);
            tokio::select! {
                biased;
                close = &mut goodbye => {
                    let close = close.ok();
                    // An orderly goodbye lets the burst in progress end (within `grace`), so
                    // that nothing it took from the queue is lost; a slow consumer's does not.
                    // Boxed: the timer is paid only by a connection that gets here.
                    if close.as_ref().is_some_and(Close::lets_queue_out)
                        && !matches!(Box::pin(tokio::time::timeout(grace, &mut burst)).await, Ok(true))
                    {
                        // The socket failed, or the peer took nothing for `grace`.
                        return;
                    }
                    Err(close)
                }
                written = &mut burst => Ok(written),
            }
        };
        match written {
            Ok(true) => {}
            Ok(false) => return,
            Err(close) => {
                Box::pin(finish(socket, close, &queue, &last_event, grace)).await;
                return;
            }
        }
    }
}

/// Writes `first` and whatever else is queued (a bounded burst), then flushes once. False if
/// the socket failed. `last_event` follows every event handed to the writer: those are
/// written before anything queued after them, the goodbye included.
async fn write_burst<W: AsyncWrite + Unpin>(
    socket: &mut FrameWriter<W>,
    first: Outbound,
    queue: &Outbox,
    last_event: &AtomicU64,
) -> bool {
    let mut next = Some(first);
    let mut burst = 0;
    while let Some(item) = next.take() {
        let last = match item {
            Outbound::Frame(frame) => {
                socket.message(Opcode::Binary, &frame);
                None
            }
            Outbound::Event { seq, frame } => {
                socket.message(Opcode::Binary, &frame);
                Some(seq)
            }
            Outbound::Events(events) => {
                for (_, frame) in &events {
                    socket.message(Opcode::Binary, frame);
                }
                events.last().map(|(seq, _)| *seq)
            }
            Outbound::Framed(chunks) => {
                let last = chunks.last().map(|(seq, _)| *seq);
                for (_, frames) in chunks {
                    socket.framed(frames);
                }
                last
            }
            Outbound::Ping => {
                socket.message(Opcode::Ping, &[]);
                None
            }
            Outbound::Pong(payload) => {
                socket.message(Opcode::Pong, &payload);
                None
            }
        };
        if let Some(seq) = last {
            last_event.store(seq, Ordering::Release);
        }
        burst += 1;
        // A large backlog goes out in pieces, so that what is queued stays bounded.
        if socket.queued() >= WRITE_AT && socket.flush().await.is_err() {
            return false;
        }
        // Bound a burst so that a steady stream still gets flushed.
        if burst < MAX_BURST {
            next = queue.try_recv();
        }
    }
    socket.flush().await.is_ok()
}

/// Queue items written before a flush at most, so that a steady stream still gets flushed.
const MAX_BURST: usize = 256;

/// Bytes queued by a burst beyond which they are written before the burst goes on.
const WRITE_AT: usize = 64 * 1024;

/// Ends the socket: with `Goodbye` (the last event seq handed to the socket) and the close
/// code, or with a plain close when the client left first. Before a goodbye that
/// [lets the queue out](Close::lets_queue_out), what the session queued (the answers to the
/// requests it finished, the events before them) is written first; otherwise it is dropped.
/// A peer that takes nothing for `grace` does not get the goodbye: the socket is dropped
/// instead.
async fn finish(
    mut socket: FrameWriter,
    close: Option<Close>,
    queue: &Outbox,
    last_event: &AtomicU64,
    grace: Duration,
) {
    let _ = tokio::time::timeout(grace, async {
        if let Some(close) = close {
            if close.lets_queue_out() {
                while let Some(item) = queue.try_recv() {
                    if !write_burst(&mut socket, item, queue, last_event).await {
                        return;
                    }
                }
            }
            let (reason, message, code) = close.parts();
            let goodbye = encode_server_frame(Body::Goodbye(v1::Goodbye {
                reason: reason.into(),
                message: message.clone(),
                resume_from_seq: last_event.load(Ordering::Acquire),
            }));
            socket.message(Opcode::Binary, &goodbye);
            socket.close(code, close_frame_reason(&message));
        } else {
            // The client closed (or the socket failed): the answer to its close.
            socket.close(NORMAL_CLOSURE, "");
        }
        if socket.flush().await.is_ok() {
            socket.shutdown().await;
        }
    })
    .await;
}

/// The close code of a normal closure.
const NORMAL_CLOSURE: u16 = 1000;

/// The longest reason a close frame carries: its payload (2 bytes of code, then the reason)
/// must fit in 125 bytes.
const MAX_CLOSE_REASON: usize = 123;

/// `message` cut (at a character boundary) to what a close frame carries; the goodbye before
/// it has the whole text.
fn close_frame_reason(message: &str) -> &str {
    if message.len() <= MAX_CLOSE_REASON {
        return message;
    }
    let mut end = MAX_CLOSE_REASON;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// An encoded frame to send.
pub(crate) fn frame(body: Body) -> Outbound {
    Outbound::Frame(encode_server_frame(body))
}

/// The encoded answer to request `request_id`.
pub(crate) fn response(request_id: u64, result: v1::response::Result) -> Outbound {
    frame(Body::Response(v1::Response {
        request_id,
        result: Some(result),
    }))
}

/// A storage failure as the client is told about it; unexpected ones (which the client only
/// sees as `INTERNAL`) are logged here, once.
pub(crate) fn storage_error(error: pm_db::Error) -> v1::Error {
    if error.is_internal() {
        tracing::error!(%error, "request failed");
    }
    error.to_wire()
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::WebSocketStream;

    use super::*;
    use crate::socket::binary_frames as frames;

    #[tokio::test]
    async fn a_burst_writes_every_item_in_order_and_records_the_last_event_of_the_last_chunk() {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let mut socket = FrameWriter::new(ours);
        let queue = Outbox::new(8);
        // Two runs of one delivery (seqs 3..4 and 7), then an answer queued behind them.
        queue
            .try_send(Outbound::Framed(vec![
                (4, frames([b"e3", b"e4"])),
                (7, frames([b"e7"])),
            ]))
            .unwrap();
        queue
            .try_send(Outbound::Frame(Bytes::from_static(b"answer")))
            .unwrap();
        let last_event = AtomicU64::new(0);
        let first = queue.try_recv().unwrap();
        assert!(write_burst(&mut socket, first, &queue, &last_event).await);
        assert_eq!(last_event.load(Ordering::Acquire), 7);
        assert!(queue.try_recv().is_none(), "the burst took the whole queue");

        let mut client = WebSocketStream::from_raw_socket(theirs, Role::Client, None).await;
        let mut read = Vec::new();
        for _ in 0..4 {
            read.push(client.next().await.unwrap().unwrap());
        }
        let binary = |bytes: &'static [u8]| Message::Binary(Bytes::from_static(bytes));
        assert_eq!(
            read,
            [
                binary(b"e3"),
                binary(b"e4"),
                binary(b"e7"),
                binary(b"answer")
            ]
        );
    }

    #[test]
    fn close_frame_reasons_fit_the_control_frame_limit() {
        assert_eq!(close_frame_reason("retry"), "retry");
        let exact = "a".repeat(MAX_CLOSE_REASON);
        assert_eq!(close_frame_reason(&exact), exact);
        // Cut at 123 bytes, and never inside a character ("é" is two bytes).
        let long = format!("{}é{}", "a".repeat(MAX_CLOSE_REASON - 1), "b".repeat(50));
        assert_eq!(close_frame_reason(&long), "a".repeat(MAX_CLOSE_REASON - 1));
        let ascii = "x".repeat(300);
        assert_eq!(close_frame_reason(&ascii).len(), MAX_CLOSE_REASON);
    }
}
