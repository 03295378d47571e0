//! An async client for pm-server: one WebSocket, protobuf frames (`pm_proto::v1`), pipelined
//! requests from cheap clones of one handle, an event stream in seq order, and optional
//! automatic reconnect that resumes the subscription from the last delivered event, with no
//! gap and no duplicate.
//!
//! ```no_run
//! # async fn example() -> Result<(), pm_client::ClientError> {
//! use pm_client::{Backoff, Client, ClientOptions};
//! let options = ClientOptions { reconnect: Some(Backoff::default()), ..Default::default() };
//! let (client, welcome) = Client::connect("ws://127.0.0.1:7400/ws", "<jwt>", options).await?;
//! let mut events = client.events().expect("the first call returns the stream");
//! client.subscribe(vec![], vec![], welcome.head_seq).await?;
//! while let Some(event) = events.recv().await {
//!     println!("{} {:?}", event.seq, event.action());
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`client`]: the [`Client`] handle and its typed requests (`command`, `query`, `batch`,
//!   `subscribe`, `ping`, `refresh_token`, `close`).
//! - `task`: the connection task: request ids and correlation, event delivery, reconnect and
//!   resume; [`ConnectionState`].
//! - `connection`: opening a socket with `Hello`/`Welcome`, and the writer (feed, then flush).
//! - [`options`]: [`ClientOptions`] and the reconnect [`Backoff`].
//! - [`error`]: [`ClientError`], the one error type.

pub mod client;
mod connection;
pub mod error;
pub mod options;
mod task;

pub use client::Client;
pub use error::{ClientError, Result};
pub use options::{Backoff, ClientOptions};
pub use pm_proto::v1;
pub use task::ConnectionState;
