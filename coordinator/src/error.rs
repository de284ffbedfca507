//! The coordinator's error type. It is mapped to a gRPC status at one point, in `service`.

use std::sync::Arc;

use crate::queue::Refusal;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Unavailable(String),
    /// The database refused or failed a statement (shared: one failed commit answers every
    /// caller of its batch).
    #[error("database error: {0}")]
    Database(#[source] Arc<sqlx::Error>),
    /// What the database holds cannot be used (a newer schema, an unreadable row).
    #[error("storage error: {0}")]
    Storage(String),
    /// Another coordinator leads (Postgres): its advertised address.
    #[error("this coordinator is a standby; the leader is at {}", if .0.is_empty() { "an unknown address" } else { .0.as_str() })]
    NotLeader(String),
    /// A write batch found another coordinator's epoch: this one lost the leadership, and its
    /// batch was not committed.
    #[error(
        "this coordinator lost the leadership (another coordinator took over); nothing of this batch was committed"
    )]
    Fenced,
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match e {
            // Not a fault: the read pool is closed at shutdown, or all its connections are
            // busy; the caller may retry.
            sqlx::Error::PoolClosed => Error::Unavailable("the coordinator is shutting down".into()),
            sqlx::Error::PoolTimedOut => Error::Unavailable("the coordinator is busy; retry".into()),
            // The database cannot be reached (Postgres restarting, a cut network): the
            // coordinator recovers once it can, so the caller may retry.
            sqlx::Error::Io(e) => Error::Unavailable(format!("the database is unreachable ({e}); retry")),
            sqlx::Error::Database(d) if d.code().is_some_and(|c| unreachable(&c)) => {
                Error::Unavailable(format!("the database is unavailable ({}); retry", d.message()))
            }
            e => Error::Database(Arc::new(e)),
        }
    }
}

/// Postgres error codes that mean the server is going away or not accepting work yet:
/// class 08 (connection exceptions), 57P01-57P03 (shutting down, cannot connect now).
fn unreachable(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NotFound(m) => Error::NotFound(m),
            Refusal::InvalidArgument(m) => Error::InvalidArgument(m),
            Refusal::FailedPrecondition(m) => Error::FailedPrecondition(m),
        }
    }
}

/// Shorthand for an `InvalidArgument` naming a field.
pub(crate) fn invalid(field: impl std::fmt::Display, msg: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("{field}: {msg}"))
}
