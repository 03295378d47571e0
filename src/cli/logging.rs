//! The log on stderr, for every command: `PM_LOG` chooses what is logged (an `EnvFilter`,
//! default `info`), `--log-format` / `PM_LOG_FORMAT` how: `text` for people, `json` (one
//! object a line, with the fields of the spans the event happened in) for log collectors.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line an event; coloured only when stderr is a terminal.
    Text,
    /// One JSON object a line: timestamp, level, target, the event's fields (message
    /// included), `span` (the innermost span) and `spans` (all of them, outermost first).
    Json,
}

/// Installs the process's subscriber; call once, before anything logs.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("PM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(colour()).init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

/// Colour for a person at a terminal only: escape codes in a file or a pipe are noise to
/// `grep` and to log collectors. `NO_COLOR` (non-empty) turns it off on a terminal too.
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
