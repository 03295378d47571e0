//! The reading side of a connection: what each incoming message is (a request, an answer to
//! send at once, or the end), with the frame rules (size, binary only, decodable) and the
//! request budget applied.

use pm_core::time::now_ms;
use std::sync::Arc;

use pm_proto::v1::{self, client_frame::Body as In, response::Result as Out, server_frame::Body};
use prost::Message as _;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::connection::{self, Close, Outbound};
use crate::limits::TokenBucket;
use crate::metrics::Metrics;
use crate::settings::Limits;

/// What the reader makes of one incoming message.
pub(crate) enum Read {
    /// Nothing to do (a WebSocket control frame).
    Nothing,
    /// An answer to send at once: a pong, or a refusal that needs no request place.
    Answer(Outbound),
    /// A WebSocket ping's payload, to answer with a pong if there is room for it (a ping
    /// answered late or not at all harms nobody; RFC 6455 lets a pong answer only the latest).
    WebSocketPing(bytes::Bytes),
    /// A request to handle.
    Request(u64, In),
    /// The connection ends: the client left (`None`), or the server closes it.
    End(Option<Close>),
}

/// The reading side's state: the request budget, and counts of refused frames.
pub(crate) struct Reader {
    /// Reconnecting does not refill the budget: it continues where the user's last
    /// connection left it.
    pub(crate) bucket: TokenBucket,
    /// Requests refused for the rate limit; beyond `rate_limit_strikes` the connection goes.
    strikes: u32,
    /// Undecodable frames in a row.
    garbage: u32,
    /// When the client was last heard from.
    pub(crate) last_heard: tokio::time::Instant,
    /// The largest frame taken (`limits.max_frame_bytes`), for the refusal's text.
    max_frame_bytes: usize,
    /// `limits.rate_limit_strikes`.
    rate_limit_strikes: u32,
    metrics: Arc<Metrics>,
}

impl Reader {
    /// A reader spending `bucket` under `limits`.
    pub(crate) fn new(bucket: TokenBucket, limits: &Limits, metrics: Arc<Metrics>) -> Reader {
        Reader {
            bucket,
            strikes: 0,
            garbage: 0,
            last_heard: tokio::time::Instant::now(),
            max_frame_bytes: limits.max_frame_bytes,
            rate_limit_strikes: limits.rate_limit_strikes,
            metrics,
        }
    }

    /// Decodes one message and applies the frame rules and the request budget.
    pub(crate) fn read(&mut self, message: Option<Result<Message, WsError>>) -> Read {
        let message = match message {
            None => return Read::End(None),
            Some(Err(WsError::Capacity(_))) => {
                return Read::End(Some(Close::Protocol(
                    1009,
                    format!("frames are limited to {} bytes", self.max_frame_bytes),
                )))
            }
            Some(Err(error)) => {
                tracing::debug!(%error, "read failed");
                return Read::End(None);
            }
            Some(Ok(message)) => message,
        };
        self.last_heard = tokio::time::Instant::now();
        let bytes = match message {
            Message::Binary(bytes) => bytes,
            Message::Text(_) => {
                return Read::End(Some(Close::Protocol(
                    1003,
                    "text frames are not supported; send binary protobuf".into(),
                )))
            }
            Message::Close(_) => return Read::End(None),
            // Answered by the session: tungstenite's own answer goes nowhere (see
            // `crate::socket`).
            Message::Ping(payload) => return Read::WebSocketPing(payload),
            Message::Pong(_) | Message::Frame(_) => return Read::Nothing,
        };
        let Ok(frame) = v1::ClientFrame::decode(bytes) else {
            self.garbage += 1;
            if self.garbage >= GARBAGE_LIMIT {
                return Read::End(Some(Close::Protocol(
                    1007,
                    "too many undecodable frames".into(),
                )));
            }
            return refuse(
                0,
                v1::ErrorCode::InvalidArgument,
                "the frame is not a valid ClientFrame",
                "",
            );
        };
        self.garbage = 0;
        let request_id = frame.request_id;
        let Some(body) = frame.body else {
            return refuse(
                request_id,
                v1::ErrorCode::InvalidArgument,
                "the frame has no body",
                "body",
            );
        };
        if let In::Ping(ping) = body {
            let pong = v1::Pong {
                client_time: ping.client_time,
                server_time: now_ms(),
            };
            return Read::Answer(connection::frame(Body::Pong(pong)));
        }
        if !self.bucket.take() {
            self.metrics.rate_limited.inc();
            self.strikes += 1;
            if self.strikes > self.rate_limit_strikes {
                return Read::End(Some(Close::RateLimitAbuse));
            }
            return refuse(
                request_id,
                v1::ErrorCode::RateLimited,
                "too many requests; slow down",
                "",
            );
        }
        Read::Request(request_id, body)
    }
}

/// An error answer to request `request_id`.
fn refuse(request_id: u64, code: v1::ErrorCode, message: &str, field: &str) -> Read {
    let error = v1::Error::new(code, message, field);
    Read::Answer(connection::response(request_id, Out::Error(error)))
}

/// Consecutive undecodable frames before the connection is closed (1007).
const GARBAGE_LIMIT: u32 = 16;
