//! Why a throwaway cluster could not be started, changed or stopped.

use std::io;

/// Why the throwaway cluster could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Neither PATH nor /usr/lib/postgresql/*/bin has initdb and pg_ctl.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under \
         /usr/lib/postgresql/*/bin: install PostgreSQL or set DATABASE_URL"
    )]
    BinariesNotFound,
    /// A tool beside initdb and pg_ctl (pg_basebackup) is not installed.
    #[error("{0} not found beside pg_ctl or on PATH")]
    ToolNotFound(String),
    /// Running as root and there is no unprivileged user to run PostgreSQL as.
    #[error(
        "PostgreSQL refuses to run as root and neither user `postgres` nor `nobody` exists: \
         run webhookd as a normal user or set DATABASE_URL"
    )]
    NoUnprivilegedUser,
    /// Running as root and there is no way to switch to the unprivileged user.
    #[error(
        "PostgreSQL refuses to run as root and neither runuser nor su was found to run it \
         as `{user}`: run webhookd as a normal user or set DATABASE_URL"
    )]
    NoUserSwitch {
        /// The user PostgreSQL would have run as.
        user: String,
    },
    /// A file to place in the data directory has a name that is not a plain
    /// file name (a path, `.` or `..`).
    #[error("{0:?} is not a plain file name for the data directory")]
    BadFileName(String),
    /// A file system or socket operation failed.
    #[error("could not {action}: {source}")]
    Io {
        /// What we were doing, e.g. "create temporary directory /tmp/x".
        action: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A program could not be executed at all.
    #[error("could not run {program}: {source}")]
    Spawn {
        /// The program, e.g. "/usr/lib/postgresql/15/bin/initdb".
        program: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// initdb exited with an error or hung.
    #[error("initdb failed: {0}")]
    Initdb(String),
    /// pg_basebackup (copying a primary for a standby) failed or hung.
    #[error("pg_basebackup failed: {0}")]
    Basebackup(String),
    /// pg_ctl start reported that the server could not start.
    #[error("PostgreSQL failed to start: {0}")]
    Start(String),
    /// The server did not accept connections in time.
    #[error("PostgreSQL did not start within 30s: {0}")]
    StartTimeout(String),
    /// pg_ctl promote failed, or the server did not accept writes in time.
    #[error("PostgreSQL was not promoted: {0}")]
    Promote(String),
    /// pg_ctl stop failed or hung, even with an immediate shutdown.
    #[error("PostgreSQL did not stop: {0}")]
    Stop(String),
}
