//! pm-load: measures a running pm-server over real WebSockets.
//!
//! Every scenario is bounded in count and time, talks to loopback by default, and returns a
//! [`Report`] with HDR-histogram percentiles that prints as a table or as JSON.
//!
//! # Layout
//! - [`target`]: where the server is, how tokens are minted, and the setup every scenario
//!   shares (a fresh tenant, a project, members).
//! - [`raw`]: a bare protobuf WebSocket for clients that must be cheap (thousands of idle
//!   sockets) or misbehave (stall, drop); writers use the `pm-client` library.
//! - [`wire`]: the client's end of a WebSocket under [`raw`]: the upgrade, and frames read
//!   in place from one buffer per connection.
//! - [`report`]: percentiles, figures and checks, printed as text or JSON.
//! - [`progress`]: the progress bar on a terminal.
//! - [`cpu`]: the server's and pm-load's CPU time over a measured phase.
//! - One module per scenario: [`write`], [`fanout`], [`idle`], [`storm`], [`slow`],
//!   [`tenants`], [`read`]; [`seed`] writes the realistic tenant `read` queries.

pub mod cpu;
pub mod fanout;
pub mod idle;
pub mod progress;
pub mod raw;
pub mod read;
pub mod report;
pub mod seed;
pub mod slow;
pub mod storm;
pub mod target;
pub mod tenants;
pub mod wire;
pub mod write;

pub use report::Report;
pub use target::Target;

/// Why a scenario could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad options, or the server refused the setup (creating tenants, projects, members).
    #[error("{0}")]
    Setup(String),
    /// A request through `pm-client` failed.
    #[error(transparent)]
    Client(#[from] pm_client::ClientError),
    /// A raw WebSocket failed or the server answered something unexpected.
    #[error("connection: {0}")]
    Connection(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Parses a duration such as `500ms`, `10s`, `1.5m` or `10` (seconds).
pub fn parse_duration(raw: &str) -> std::result::Result<std::time::Duration, String> {
    let split = raw
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{raw}` is not a duration like 500ms, 10s or 2m"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => return Err(format!("unknown unit `{unit}` in `{raw}` (use ms, s or m)")),
    };
    std::time::Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{raw}`: {e}"))
}
