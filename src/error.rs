//! The crate's error type. Callers ask it what kind of failure it is
//! ([`Error::is_user_error`]) instead of matching message text; `main` maps that
//! to the exit codes of docs/CONTRACT.md §6.

use tokio_postgres::error::SqlState;

/// Everything that can go wrong in webhookd's library API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flags, environment or key material. Exit code 2.
    #[error("{0}")]
    Config(String),
    /// Bad input from the caller: an invalid event, URL or id. Exit code 2.
    #[error("{0}")]
    Input(String),
    /// The thing asked for does not exist. Exit code 2.
    #[error("{0}")]
    NotFound(String),
    /// The request is valid but the thing is in a state that forbids it (a
    /// pending delivery cannot be redelivered). Exit code 2.
    #[error("{0}")]
    Conflict(String),
    /// The database has no webhookd schema or an older one. Exit code 2.
    #[error("{0}")]
    Schema(String),
    /// The database could not be reached or failed. Exit code 1.
    #[error("{context}: {source}")]
    Database {
        /// What webhookd was doing.
        context: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Could not get a connection from the pool. Exit code 1.
    #[error("cannot connect to the database: {0}")]
    Pool(String),
    /// Anything else at run time (I/O, a subprocess). Exit code 1.
    #[error("{0}")]
    Other(String),
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a driver error, turning validation errors raised by the schema
    /// (SQLSTATE 22023, invalid_parameter_value) into [`Error::Input`] with the
    /// database's own message, which names the event type and field.
    pub fn db(context: impl Into<String>, source: tokio_postgres::Error) -> Self {
        if let Some(db) = source.as_db_error() {
            if db.code() == &SqlState::INVALID_PARAMETER_VALUE {
                return Error::Input(db.message().to_string());
            }
            if db.code() == &SqlState::UNDEFINED_TABLE
                || db.code() == &SqlState::UNDEFINED_FUNCTION
                || db.code() == &SqlState::INVALID_SCHEMA_NAME
            {
                return Error::Schema(format!(
                    "the database has no webhookd schema ({}): run `webhookd migrate`",
                    db.message()
                ));
            }
        }
        Error::Database {
            context: context.into(),
            source,
        }
    }

    /// Bad flags, environment or key material.
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config(message.into())
    }

    /// Bad input from the caller.
    pub fn input(message: impl Into<String>) -> Self {
        Error::Input(message.into())
    }

    /// The thing asked for does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::NotFound(message.into())
    }

    /// The thing is in a state that forbids the request.
    pub fn conflict(message: impl Into<String>) -> Self {
        Error::Conflict(message.into())
    }

    /// Anything else at run time.
    pub fn other(message: impl Into<String>) -> Self {
        Error::Other(message.into())
    }

    /// The SQLSTATE of a database error.
    pub fn sql_state(&self) -> Option<&SqlState> {
        match self {
            Error::Database { source, .. } => source.code(),
            _ => None,
        }
    }

    /// True when the user can fix it by changing input or configuration
    /// (exit code 2); false for operational failures (exit code 1).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::Config(_)
                | Error::Input(_)
                | Error::NotFound(_)
                | Error::Conflict(_)
                | Error::Schema(_)
        )
    }

    /// One line for a terminal: the message plus the driver's detail, no backtrace.
    pub fn one_line(&self) -> String {
        match self {
            Error::Database { context, source } => format!("{context}: {}", driver_detail(source)),
            other => other.to_string(),
        }
        .replace('\n', " ")
    }
}

/// The server's own message when there is one, else the driver's error with
/// its causes (e.g. "error connecting to server: Connection refused").
pub(crate) fn driver_detail(source: &tokio_postgres::Error) -> String {
    if let Some(db) = source.as_db_error() {
        return db.message().to_string();
    }
    let mut text = source.to_string();
    let mut cause = std::error::Error::source(source);
    while let Some(inner) = cause {
        text = format!("{text}: {inner}");
        cause = inner.source();
    }
    text
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        match err {
            deadpool_postgres::PoolError::Backend(source) => Error::db("database", source),
            other => Error::Pool(other.to_string()),
        }
    }
}
