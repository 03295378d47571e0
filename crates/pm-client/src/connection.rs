//! One WebSocket: opening it with `Hello`/`Welcome`, and the writer that owns its sink.

use std::time::Duration;

use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use pm_proto::v1::{self, client_frame::Body as In, server_frame::Body};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::{ClientError, Result};

/// The client side of a WebSocket.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long to wait for the close frame that follows a refusal.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Frames written per flush at most, so that a steady stream still gets flushed.
const BURST: usize = 256;

/// Bytes asked of the socket per read. tungstenite zeroes this much of its read buffer before
/// every read: its default (128 KiB) made zeroing a quarter of a busy client's CPU, while
/// most frames are a few hundred bytes. Larger frames are still read whole, in several reads.
const READ_BUFFER: usize = 16 * 1024;

/// The socket's settings: a read buffer sized for small frames, no other change.
fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(READ_BUFFER)
}

/// Encodes a client frame as one binary WebSocket message.
pub(crate) fn encode(request_id: u64, body: In) -> Message {
    let frame = v1::ClientFrame {
        request_id,
        body: Some(body),
    };
    Message::Binary(frame.encode_to_vec().into())
}

/// Opens the socket, sends `Hello` and waits for `Welcome`; a `Goodbye` instead becomes
/// [`ClientError::Rejected`] with the close code that follows it.
pub(crate) async fn open(
    url: String,
    token: String,
    client_name: String,
    timeout: Duration,
) -> Result<(Ws, v1::Welcome)> {
    let handshake = async {
        // Nagle off: requests are small and each one waits for its answer.
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(
            url.as_str(),
            Some(websocket_config()),
            true,
        )
        .await
        .map_err(|e| ClientError::Connect(Box::new(e)))?;
        let hello = In::Hello(v1::Hello {
            token,
            client_name,
            protocol_version: pm_proto::PROTOCOL_VERSION,
        });
        ws.send(encode(0, hello))
            .await
            .map_err(|e| ClientError::Connect(Box::new(e)))?;
        loop {
            let bytes = match ws.next().await {
                None => return Err(ClientError::Handshake("closed before Welcome".into())),
                Some(Err(e)) => return Err(ClientError::Handshake(e.to_string())),
                Some(Ok(Message::Binary(bytes))) => bytes,
                Some(Ok(Message::Close(frame))) => {
                    return Err(ClientError::Handshake(format!(
                        "closed before Welcome (close code {:?})",
                        frame.map(|f| u16::from(f.code))
                    )))
                }
                Some(Ok(_)) => continue,
            };
            match v1::ServerFrame::decode(bytes)?.body {
                Some(Body::Welcome(welcome)) => return Ok((ws, welcome)),
                Some(Body::Goodbye(goodbye)) => {
                    let close_code = close_code(&mut ws).await;
                    return Err(ClientError::Rejected {
                        reason: v1::CloseReason::try_from(goodbye.reason)
                            .unwrap_or(v1::CloseReason::Unspecified),
                        message: goodbye.message,
                        close_code,
                    });
                }
                _ => {
                    return Err(ClientError::Handshake(
                        "the server answered Hello with something other than Welcome".into(),
                    ))
                }
            }
        }
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| ClientError::Timeout)?
}

/// Reads up to the close frame (briefly) and returns its code.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Close(frame) = message {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// The writer task of one connection: drains the queue with `feed` and flushes once per
/// burst. Ends when the queue closes (sending a close frame) or the socket fails.
pub(crate) async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut queue: mpsc::Receiver<Message>,
) {
    while let Some(message) = queue.recv().await {
        if sink.feed(message).await.is_err() {
            return;
        }
        let mut burst = 1;
        while burst < BURST {
            let Ok(message) = queue.try_recv() else { break };
            if sink.feed(message).await.is_err() {
                return;
            }
            burst += 1;
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}
