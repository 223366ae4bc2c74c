//! The crate's error type. It is opaque: callers ask what kind of failure it
//! is ([`Error::kind`], [`Error::is_user_error`]) instead of matching on its
//! representation or its text; `main` maps that to the exit codes of
//! docs/CONTRACT.md §6 and the management API to HTTP statuses (§7).

use tokio_postgres::error::SqlState;

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bad flags, environment or key material. Exit code 2.
    Config,
    /// Bad input from the caller: an invalid event, URL or id. Exit code 2,
    /// HTTP 400.
    Input,
    /// The thing asked for does not exist. Exit code 2, HTTP 404.
    NotFound,
    /// The request is valid but the thing is in a state that forbids it (a
    /// pending delivery cannot be redelivered). Exit code 2, HTTP 409.
    Conflict,
    /// The database has no webhookd schema or an older one. Exit code 2.
    Schema,
    /// The database failed a statement. Exit code 1.
    Database,
    /// The database could not be reached. Exit code 1.
    Unavailable,
    /// Anything else at run time (I/O, a subprocess). Exit code 1.
    Other,
}

/// Everything that can go wrong in webhookd's library API.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    /// What went wrong; for a database error, what webhookd was doing.
    message: String,
    source: Option<Source>,
}

#[derive(Debug)]
enum Source {
    Driver(tokio_postgres::Error),
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// `Error::input(message)` and the like: [`Error::new`] with the kind named.
macro_rules! shorthands {
    ($($(#[$doc:meta])* $name:ident => $kind:ident;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(message: impl Into<String>) -> Self {
                Error::new(ErrorKind::$kind, message)
            }
        )*
    };
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error of `kind` caused by `source`; the message says what failed
    /// and is shown alone, so it should carry what the user needs of `source`.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error {
            source: Some(Source::Other(Box::new(source))),
            ..Error::new(kind, message)
        }
    }

    shorthands! {
        /// Bad flags, environment or key material.
        config => Config;
        /// Bad input from the caller.
        input => Input;
        /// The thing asked for does not exist.
        not_found => NotFound;
        /// The thing is in a state that forbids the request.
        conflict => Conflict;
        /// The schema is missing or older than this binary needs.
        schema => Schema;
        /// The database could not be reached.
        unavailable => Unavailable;
        /// Anything else at run time.
        other => Other;
    }

    /// Wraps a driver error, turning validation errors raised by the schema
    /// (SQLSTATE 22023, invalid_parameter_value) into [`ErrorKind::Input`]
    /// with the database's own message, which names the event type and
    /// field, and a missing schema into [`ErrorKind::Schema`].
    pub fn db(context: impl Into<String>, source: tokio_postgres::Error) -> Self {
        if let Some(db) = source.as_db_error() {
            if db.code() == &SqlState::INVALID_PARAMETER_VALUE {
                return Error::input(db.message());
            }
            if db.code() == &SqlState::UNDEFINED_TABLE
                || db.code() == &SqlState::UNDEFINED_FUNCTION
                || db.code() == &SqlState::INVALID_SCHEMA_NAME
            {
                return Error::schema(format!(
                    "the database has no webhookd schema ({}): run `webhookd migrate`",
                    db.message()
                ));
            }
        }
        Error {
            source: Some(Source::Driver(source)),
            ..Error::new(ErrorKind::Database, context)
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The SQLSTATE of a database error.
    pub fn sql_state(&self) -> Option<&SqlState> {
        match &self.source {
            Some(Source::Driver(source)) => source.code(),
            _ => None,
        }
    }

    /// True when the user can fix it by changing input or configuration
    /// (exit code 2); false for operational failures (exit code 1).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Config
                | ErrorKind::Input
                | ErrorKind::NotFound
                | ErrorKind::Conflict
                | ErrorKind::Schema
        )
    }

    /// One line for a terminal: the message plus the driver's detail, no backtrace.
    pub fn one_line(&self) -> String {
        match &self.source {
            Some(Source::Driver(source)) => {
                format!("{}: {}", self.message, driver_detail(source))
            }
            _ => self.message.clone(),
        }
        .replace('\n', " ")
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(Source::Driver(source)) => write!(f, "{}: {source}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.source {
            Some(Source::Driver(source)) => Some(source),
            Some(Source::Other(source)) => Some(source.as_ref()),
            None => None,
        }
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
            other => Error::unavailable(format!("cannot connect to the database: {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_decide_whose_fault_it_is() {
        assert!(Error::input("bad").is_user_error());
        assert!(Error::schema("old").is_user_error());
        assert!(!Error::unavailable("down").is_user_error());
        assert!(!Error::other("broke").is_user_error());
        assert_eq!(Error::not_found("gone").kind(), ErrorKind::NotFound);
    }

    #[test]
    fn the_message_is_the_text_and_the_source_is_kept() {
        let io = std::io::Error::other("disk on fire");
        let err = Error::with_source(ErrorKind::Other, "cannot write: disk on fire", io);
        assert_eq!(err.to_string(), "cannot write: disk on fire");
        assert_eq!(err.one_line(), "cannot write: disk on fire");
        let source = std::error::Error::source(&err).expect("a source");
        assert_eq!(source.to_string(), "disk on fire");
    }
}
