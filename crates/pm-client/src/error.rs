//! The client's one error type.

use pm_proto::v1;
use tokio_tungstenite::tungstenite;

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket could not be opened (DNS, TCP, HTTP upgrade).
    #[error("connecting failed: {0}")]
    Connect(#[source] Box<tungstenite::Error>),
    /// The server answered the handshake with something other than `Welcome` or `Goodbye`,
    /// or closed the socket without a word.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The server refused the connection with `Goodbye` (bad token, limits, shutdown).
    #[error(
        "the server refused the connection ({reason:?}, close code {close_code:?}): {message}"
    )]
    Rejected {
        /// Why, as the server put it.
        reason: v1::CloseReason,
        /// The server's explanation.
        message: String,
        /// The WebSocket close code that followed the goodbye, if one arrived.
        close_code: Option<u16>,
    },
    /// The server answered the request with an `Error`.
    #[error("{code:?}: {message}")]
    Server {
        /// The stable error code.
        code: v1::ErrorCode,
        /// Text for humans.
        message: String,
        /// The offending request field; empty if none.
        field: String,
        /// For `CONFLICT`: the entity as it is now.
        current: Option<Box<v1::Entity>>,
    },
    /// No answer within the request (or connect) timeout.
    #[error("no answer in time")]
    Timeout,
    /// The connection dropped while the request was in flight or before it could be sent; the
    /// request may or may not have been applied.
    #[error("the connection dropped")]
    Disconnected,
    /// The client was closed (by `close`, a terminal rejection, or without reconnect).
    #[error("the client is closed")]
    Closed,
    /// A server frame could not be decoded.
    #[error("undecodable server frame: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The server answered with a result of another kind than the request asked for.
    #[error("unexpected answer: {0}")]
    UnexpectedResponse(String),
}

/// `Result` with [`ClientError`].
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

impl ClientError {
    /// The error code, for server errors.
    pub fn code(&self) -> Option<v1::ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn server(error: v1::Error) -> Self {
        ClientError::Server {
            code: v1::ErrorCode::try_from(error.code).unwrap_or(v1::ErrorCode::Unspecified),
            message: error.message,
            field: error.field,
            current: error.current,
        }
    }
}
