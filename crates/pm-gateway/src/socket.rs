//! A connection's socket, split in two: tungstenite reads it, and the server writes its own
//! frames to it.
//!
//! A server's frames are not masked, so an event framed once is the same bytes on every
//! subscriber's socket: the hub frames a delivery's events once ([`frame_into`]) and each
//! subscriber's writer queues that shared buffer as it is. Written through tungstenite, every
//! event would be framed, copied into each connection's write buffer and its shared count
//! dropped, for every subscriber (about a fifth of the server's time at 10,000 subscribers).
//!
//! The reading side hands tungstenite a socket whose writes go nowhere ([`ReadSide`]): what
//! tungstenite would write itself, its replies to the client's pings and closes, the session
//! sends through the writer instead, in order with everything else.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use hyper_util::rt::TokioIo;
use pm_db::CommittedEvent;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

/// The reading side of a connection, as tungstenite sees it.
pub(crate) type Ws = WebSocketStream<ReadSide>;

/// Opcodes of the frames the server sends (RFC 6455, 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opcode {
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

/// Splits `upgraded` into the side tungstenite reads and the side the writer writes: the TCP
/// stream's own halves, which share nothing but the socket (halves of hyper's connection
/// object would take a lock at every read and write). `None` if hyper does not give the TCP
/// stream back, which it always does for the streams [`crate::http`] serves.
pub(crate) fn split(upgraded: hyper::upgrade::Upgraded) -> Option<(ReadSide, FrameWriter)> {
    let parts = upgraded.downcast::<TokioIo<TcpStream>>().ok()?;
    let (read, write) = parts.io.into_inner().into_split();
    let read = ReadSide {
        // A copy: the slice would keep hyper's whole read buffer (8 KiB) alive.
        early: Bytes::copy_from_slice(&parts.read_buf),
        io: read,
    };
    Some((read, FrameWriter::new(write)))
}

/// The socket's reading half, for tungstenite: first the bytes hyper had read past the
/// upgrade request (a client may send its `Hello` at once), then the socket. Its writes are
/// dropped: the only bytes tungstenite writes on a server's reading side are its automatic
/// answers to pings and closes, and the session answers those through the [`FrameWriter`].
#[derive(Debug)]
pub(crate) struct ReadSide {
    early: Bytes,
    io: OwnedReadHalf,
}

impl AsyncRead for ReadSide {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.early.is_empty() {
            let take = self.early.len().min(buf.remaining());
            buf.put_slice(&self.early.split_to(take));
            if self.early.is_empty() {
                self.early = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadSide {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Appends the frame of one message (`opcode`, FIN, not masked) carrying `payload` to `out`.
pub(crate) fn frame_into(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    out.push(0x80 | opcode as u8);
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// The longest header [`frame_into`] writes.
pub(crate) const MAX_HEADER: usize = 10;

/// Slices written with one `writev` at most.
const MAX_SLICES: usize = 64;

/// The socket's writing half: frames queued as chunks of bytes, written with `writev` by
/// [`FrameWriter::flush`].
#[derive(Debug)]
pub(crate) struct FrameWriter<W = OwnedWriteHalf> {
    io: W,
    chunks: VecDeque<Bytes>,
    /// Bytes queued and not yet written.
    queued: usize,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer of `io`, with nothing queued.
    pub(crate) fn new(io: W) -> FrameWriter<W> {
        FrameWriter {
            io,
            chunks: VecDeque::new(),
            queued: 0,
        }
    }

    /// Queues one message: framed here, with a copy of `payload`.
    pub(crate) fn message(&mut self, opcode: Opcode, payload: &[u8]) {
        let mut frame = Vec::with_capacity(MAX_HEADER + payload.len());
        frame_into(&mut frame, opcode, payload);
        self.framed(Bytes::from(frame));
    }

    /// Queues frames framed already (by [`frame_into`]), as they are.
    pub(crate) fn framed(&mut self, frames: Bytes) {
        if !frames.is_empty() {
            self.queued += frames.len();
            self.chunks.push_back(frames);
        }
    }

    /// Queues a close frame with `code` and `reason` (at most 123 bytes).
    pub(crate) fn close(&mut self, code: u16, reason: &str) {
        let mut payload = Vec::with_capacity(2 + reason.len());
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(reason.as_bytes());
        self.message(Opcode::Close, &payload);
    }

    /// Bytes queued and not written yet.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// Writes everything queued; completes once the socket has taken it all.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        while !self.chunks.is_empty() {
            let written = std::future::poll_fn(|cx| {
                // Made at each poll, on the stack: in the future's state this kilobyte would
                // be kept by every connection's writer task, idle or not.
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let count = self.chunks.len().min(MAX_SLICES);
                for (slice, chunk) in slices.iter_mut().zip(&self.chunks) {
                    *slice = IoSlice::new(chunk);
                }
                Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count])
            })
            .await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.consume(written);
        }
        // An idle connection keeps no queue (most connections are idle most of the time).
        self.chunks = VecDeque::new();
        self.io.flush().await
    }

    /// Drops the first `written` bytes of the queue.
    fn consume(&mut self, mut written: usize) {
        self.queued -= written;
        while written > 0 {
            let chunk = self.chunks.front_mut().expect("written bytes were queued");
            if chunk.len() <= written {
                written -= chunk.len();
                self.chunks.pop_front();
            } else {
                chunk.advance(written);
                written = 0;
            }
        }
    }

    /// Ends the writing side of the socket (TCP FIN).
    pub(crate) async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

/// A delivery's events framed as WebSocket messages once, for every subscriber: a server's
/// frames are not masked, so the same bytes serve them all.
pub(crate) struct Framed {
    bytes: Bytes,
    /// Where the frame of each event ends in `bytes`.
    ends: Vec<usize>,
}

impl Framed {
    /// `events`, framed one after the other.
    pub(crate) fn new(events: &[&CommittedEvent]) -> Framed {
        let size = events.iter().map(|e| MAX_HEADER + e.frame.len()).sum();
        let mut bytes = Vec::with_capacity(size);
        let ends = events
            .iter()
            .map(|event| {
                frame_into(&mut bytes, Opcode::Binary, &event.frame);
                bytes.len()
            })
            .collect();
        Framed {
            bytes: Bytes::from(bytes),
            ends,
        }
    }

    /// The frames of the events at `positions` (ascending): one chunk per run of neighbours,
    /// each with the seq of its last event. A subscriber that wants every event gets one
    /// chunk, the whole buffer. One that wants less than half of it gets a copy of its frames
    /// instead, so that its queue (if it is slow) does not keep the others' events in memory.
    pub(crate) fn chunks(
        &self,
        events: &[&CommittedEvent],
        positions: &[usize],
    ) -> Vec<(u64, Bytes)> {
        let mut chunks = Vec::new();
        let mut rest = positions;
        while let Some(&first) = rest.first() {
            // The run goes on while the positions do.
            let len = rest
                .iter()
                .enumerate()
                .take_while(|&(i, &at)| at == first + i)
                .count();
            let last = rest[len - 1];
            let start = if first == 0 { 0 } else { self.ends[first - 1] };
            chunks.push((events[last].seq, self.bytes.slice(start..self.ends[last])));
            rest = &rest[len..];
        }
        let wanted: usize = chunks.iter().map(|(_, frames)| frames.len()).sum();
        match chunks.last() {
            Some(&(last_seq, _)) if wanted * 2 < self.bytes.len() => {
                let mut own = Vec::with_capacity(wanted);
                for (_, frames) in &chunks {
                    own.extend_from_slice(frames);
                }
                vec![(last_seq, Bytes::from(own))]
            }
            _ => chunks,
        }
    }
}

/// `payloads` framed as binary messages, one after the other.
#[cfg(test)]
pub(crate) fn binary_frames(payloads: impl IntoIterator<Item = impl AsRef<[u8]>>) -> Bytes {
    let mut out = Vec::new();
    for payload in payloads {
        frame_into(&mut out, Opcode::Binary, payload.as_ref());
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
    use tokio_tungstenite::tungstenite::Message;

    use super::*;

    #[tokio::test]
    async fn a_client_reads_every_frame_the_writer_queued_through_partial_writes() {
        // A 1 KiB pipe: the writer's vectored writes are taken a piece at a time.
        let (ours, theirs) = tokio::io::duplex(1024);
        let client = tokio::spawn(async move {
            let mut ws = WebSocketStream::from_raw_socket(theirs, Role::Client, None).await;
            let mut read = Vec::new();
            while let Some(Ok(message)) = ws.next().await {
                let last = message.is_close();
                read.push(message);
                if last {
                    return read;
                }
            }
            read
        });
        let large = vec![7; 70_000];
        let mut shared = Vec::new();
        frame_into(&mut shared, Opcode::Binary, b"one");
        frame_into(&mut shared, Opcode::Binary, &large);
        let mut writer = FrameWriter::new(ours);
        writer.message(Opcode::Binary, b"first");
        writer.framed(Bytes::from(shared));
        writer.message(Opcode::Ping, b"p");
        writer.close(4008, "slow");
        assert_eq!(
            writer.queued(),
            (2 + 5) + (2 + 3) + (10 + 70_000) + (2 + 1) + (2 + 6)
        );
        writer.flush().await.unwrap();
        assert_eq!(writer.queued(), 0);
        assert_eq!(
            client.await.unwrap(),
            [
                Message::Binary(Bytes::from_static(b"first")),
                Message::Binary(Bytes::from_static(b"one")),
                Message::Binary(Bytes::from(large)),
                Message::Ping(Bytes::from_static(b"p")),
                Message::Close(Some(CloseFrame {
                    code: CloseCode::from(4008),
                    reason: "slow".into(),
                })),
            ]
        );
    }

    #[test]
    fn frames_carry_the_length_in_the_shortest_form() {
        let mut out = Vec::new();
        frame_into(&mut out, Opcode::Binary, b"abc");
        assert_eq!(out, [0x82, 3, b'a', b'b', b'c']);

        for (len, header) in [
            (125, vec![0x82, 125]),
            (126, vec![0x82, 126, 0, 126]),
            (65_535, vec![0x82, 126, 0xff, 0xff]),
            (65_536, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let mut out = Vec::new();
            frame_into(&mut out, Opcode::Binary, &vec![7; len]);
            assert_eq!(out[..header.len()], header[..], "length {len}");
            assert_eq!(out.len(), header.len() + len);
        }

        let mut out = Vec::new();
        frame_into(&mut out, Opcode::Close, &[0x03, 0xe8]);
        assert_eq!(out, [0x88, 2, 0x03, 0xe8]);
    }
}
