//! The storage error, and how it is shown on the wire.

use pm_proto::v1;

/// A failed storage operation. Every variant but the internal ones is an answer for the
/// client; internal ones are logged by the caller and shown only as `INTERNAL`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request is malformed or out of range.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// The request field, e.g. `title`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The entity does not exist or the caller may not see it.
    #[error("{0}")]
    NotFound(String),
    /// `expected_version` did not match.
    #[error("{message}")]
    Conflict {
        /// Safe description.
        message: String,
        /// The entity as it is now.
        current: Box<v1::Entity>,
    },
    /// The current state forbids the change.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller's role does not allow the request.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request exceeds a limit.
    #[error("{0}")]
    TooLarge(String),
    /// The storage cannot take the request now; safe to retry.
    #[error("{0}")]
    Unavailable(String),
    /// The requested change-log position is no longer retained.
    #[error("changes after seq {0} are no longer retained")]
    ResyncRequired(u64),
    /// The tenant's storage has no room: the disk is full, or the database reached the
    /// tenant's size limit. Nothing was written; retry once there is room.
    #[error("the tenant's storage is full (database or disk is full); retry later")]
    StorageFull,
    /// Reading or writing the tenant's files failed at the operating system (`SQLITE_IOERR`,
    /// `SQLITE_CANTOPEN`, ...). Nothing was written; the detail is for the log only.
    #[error("the tenant's storage failed ({0}); retry later")]
    StorageIo(String),
    /// The tenant's database file is damaged (`SQLITE_CORRUPT`, `SQLITE_NOTADB`): it is taken
    /// out of service until an operator restores it from a backup.
    #[error("{}", damaged(tenant, detail))]
    Damaged {
        /// The tenant.
        tenant: String,
        /// What SQLite said.
        detail: String,
    },
    /// An unexpected database failure.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The migrations directory cannot be used (unreadable, or it changes or lacks a
    /// migration already in use).
    #[error("invalid migrations directory {0}")]
    InvalidMigrations(String),
    /// A file-system operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Stored data could not be read back (a bug or a damaged file).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

/// Result of a storage operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a damaged database is reported as: what is wrong and what to do.
fn damaged(tenant: &str, detail: &str) -> String {
    if tenant.is_empty() {
        return format!("the database is damaged ({detail})");
    }
    format!(
        "tenant {tenant}'s database is damaged ({detail}); an operator must restore it from a \
         backup (pm-server restore --tenant {tenant})"
    )
}

/// SQLite's primary result codes that say the storage, not the request, failed.
const SQLITE_IOERR: i32 = 10;
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;
const SQLITE_NOTADB: i32 = 26;

impl From<sqlx::Error> for Error {
    /// Database errors that are faults of the storage (a full disk, an I/O error, a damaged
    /// file) get their own variants, so that they are answered and handled as such.
    fn from(error: sqlx::Error) -> Self {
        // Result codes are SQLite's; PostgreSQL's errors are mapped where they are met.
        let code = error
            .as_database_error()
            .filter(|db| db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some())
            .and_then(|db| db.code())
            .and_then(|code| code.parse::<i32>().ok());
        let detail = || {
            error
                .as_database_error()
                .map_or_else(|| error.to_string(), |db| db.message().to_owned())
        };
        // Extended result codes carry the primary code in their low byte.
        match code.map(|code| code & 0xff) {
            Some(SQLITE_FULL) => Error::StorageFull,
            Some(SQLITE_IOERR | SQLITE_CANTOPEN) => Error::StorageIo(detail()),
            Some(SQLITE_CORRUPT | SQLITE_NOTADB) => Error::Damaged {
                tenant: String::new(),
                detail: detail(),
            },
            _ => Error::Database(error),
        }
    }
}

impl From<pm_core::Error> for Error {
    fn from(error: pm_core::Error) -> Self {
        match error {
            pm_core::Error::InvalidArgument { field, message } => {
                Error::InvalidArgument { field, message }
            }
            pm_core::Error::FailedPrecondition(message) => Error::FailedPrecondition(message),
        }
    }
}

impl Error {
    /// The same failure for another caller of the same group (errors are not `Clone`: a
    /// database error is not): the storage's condition, or that the change was not stored.
    pub(crate) fn for_another_caller(&self) -> Error {
        match self {
            Error::StorageFull => Error::StorageFull,
            Error::StorageIo(detail) => Error::StorageIo(detail.clone()),
            Error::Damaged { tenant, detail } => Error::Damaged {
                tenant: tenant.clone(),
                detail: detail.clone(),
            },
            Error::Unavailable(message) => Error::Unavailable(message.clone()),
            _ => Error::Unavailable("the change could not be stored; retry".into()),
        }
    }

    /// An `InvalidArgument` for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Whether the storage failed rather than the request (a full disk, an I/O error, a
    /// damaged file): the transaction it happened in may be gone, and the writer must know.
    pub fn is_storage_fault(&self) -> bool {
        matches!(
            self,
            Error::StorageFull | Error::StorageIo(_) | Error::Damaged { .. }
        )
    }

    /// The same error naming `tenant` where it says which tenant is damaged.
    pub fn for_tenant(self, tenant: &str) -> Self {
        match self {
            Error::Damaged { detail, .. } => Error::Damaged {
                tenant: tenant.to_owned(),
                detail,
            },
            other => other,
        }
    }

    /// Whether this is an unexpected failure (logged, shown as `INTERNAL`).
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Error::Database(_)
                | Error::Migrate(_)
                | Error::InvalidMigrations(_)
                | Error::Io(_)
                | Error::Corrupt(_)
        )
    }

    /// The wire code of this error.
    pub fn code(&self) -> v1::ErrorCode {
        use v1::ErrorCode as C;
        match self {
            Error::InvalidArgument { .. } => C::InvalidArgument,
            Error::NotFound(_) => C::NotFound,
            Error::Conflict { .. } => C::Conflict,
            Error::FailedPrecondition(_) => C::FailedPrecondition,
            Error::PermissionDenied(_) => C::PermissionDenied,
            Error::TooLarge(_) => C::TooLarge,
            Error::Unavailable(_)
            | Error::StorageFull
            | Error::StorageIo(_)
            | Error::Damaged { .. } => C::Unavailable,
            Error::ResyncRequired(_) => C::ResyncRequired,
            Error::Database(_)
            | Error::Migrate(_)
            | Error::InvalidMigrations(_)
            | Error::Io(_)
            | Error::Corrupt(_) => C::Internal,
        }
    }

    /// The wire form: internal details (SQL, paths) never leave the server.
    pub fn to_wire(&self) -> v1::Error {
        let (message, field, current) = match self {
            Error::InvalidArgument { field, message } => {
                (format!("{field} {message}"), field.clone(), None)
            }
            Error::Conflict { message, current } => {
                (message.clone(), String::new(), Some(current.clone()))
            }
            e if e.is_internal() => ("internal error".to_owned(), String::new(), None),
            // The operating system's words may name paths: not for clients.
            Error::StorageIo(_) => (
                "the tenant's storage failed; retry later".to_owned(),
                String::new(),
                None,
            ),
            e => (e.to_string(), String::new(), None),
        };
        v1::Error {
            code: self.code().into(),
            message,
            field,
            current,
        }
    }

    /// The same error with its field nested under `prefix` (e.g. `commands[2]`).
    pub fn with_field_prefix(self, prefix: &str) -> Self {
        match self {
            Error::InvalidArgument { field, message } => {
                pm_core::Error::InvalidArgument { field, message }
                    .with_field_prefix(prefix)
                    .into()
            }
            other => other,
        }
    }
}
