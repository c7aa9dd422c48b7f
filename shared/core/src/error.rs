//! The crate's error type.

use crate::state::IllegalTransition;

/// Errors from the domain, the stores and the brokers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The thing asked for does not exist (or belongs to another tenant).
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with the current state.
    #[error(transparent)]
    Transition(#[from] IllegalTransition),
    /// A uniqueness or other conflict.
    #[error("{0}")]
    Conflict(String),
    /// Invalid input: the caller's mistake, its text meant for the caller.
    #[error("{0}")]
    Invalid(String),
    /// An internal fault: a bug, or stored data that cannot be read. Never
    /// the caller's doing; its text is for the log, not for a client.
    #[error("internal error: {0}")]
    Internal(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The broker failed.
    #[error("broker error: {0}")]
    Broker(String),
    /// Configuration is wrong.
    #[error("configuration error: {0}")]
    Config(String),
}

impl From<lapin::Error> for Error {
    fn from(e: lapin::Error) -> Self {
        Error::Broker(e.to_string())
    }
}

/// JSON here is what the process writes (messages, stored columns) or reads
/// back from its own store: a failure is a fault, not bad input. A client's
/// JSON is parsed by the API, with errors of its own.
impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Internal(e.to_string())
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
