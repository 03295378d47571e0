//! The error every domain rule returns.

use std::fmt;

/// A rule was broken. Messages are safe to show to a client: they never contain paths or SQL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A field of the request is malformed or out of range.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// The request field, e.g. `title`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The request is well formed, but the current state does not allow it.
    #[error("{0}")]
    FailedPrecondition(String),
}

/// Result of a domain rule.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An `InvalidArgument` for `field`.
    pub fn invalid(field: impl Into<String>, message: impl fmt::Display) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            message: message.to_string(),
        }
    }

    /// A `FailedPrecondition` with `message`.
    pub fn precondition(message: impl fmt::Display) -> Self {
        Error::FailedPrecondition(message.to_string())
    }

    /// The same error with its field nested under `prefix` (e.g. `commands[2].title`).
    pub fn with_field_prefix(self, prefix: &str) -> Self {
        match self {
            Error::InvalidArgument { field, message } if field.is_empty() => {
                Error::InvalidArgument {
                    field: prefix.to_owned(),
                    message,
                }
            }
            Error::InvalidArgument { field, message } => Error::InvalidArgument {
                field: format!("{prefix}.{field}"),
                message,
            },
            other => other,
        }
    }
}
