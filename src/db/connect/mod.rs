//! Turning a connection URL into connections: libpq's `sslmode` and
//! `sslrootcert` on top of what the driver parses itself, one TLS connector
//! for every connection (pool, LISTEN, one-shot commands), and connection
//! errors said in one line that names the setting to fix.
//!
//! The driver knows only `disable`, `prefer` and `require`; `verify-ca` and
//! `verify-full` (and the CA file) are taken out of the URL here and become
//! the TLS connector's settings, so users keep the URLs they already use with
//! `psql`. See `docs/PRODUCTION.md` for what each mode checks.

use std::path::PathBuf;
use std::time::Duration;

use postgres_native_tls::MakeTlsConnector;

use crate::error::{Error, Result};

mod tls;
mod url;

pub use tls::SslMode;
use tls::{check_verification, tls_advice, tls_connector, RootCerts};
use url::split_ssl_parameters;

/// How long one host may take to accept a connection when the URL does not
/// say (`connect_timeout`): an unreachable server is reported, not waited on.
const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// A parsed, checked connection URL: the driver's configuration plus the TLS
/// connector that enforces its `sslmode`. Cheap to clone.
#[derive(Clone)]
pub struct DatabaseTarget {
    config: tokio_postgres::Config,
    tls: MakeTlsConnector,
    sslmode: SslMode,
    /// The setting the URL came from, for messages (`DATABASE_URL`, …).
    setting: &'static str,
    redacted: String,
}

impl std::fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DatabaseTarget({}, sslmode={})",
            self.redacted,
            self.sslmode.name()
        )
    }
}

impl DatabaseTarget {
    /// Parses `url` (URL or `key=value` form); `setting` names where it came
    /// from in error messages. Reads the `sslrootcert` file now, so a missing
    /// or malformed CA is a configuration error before anything connects.
    pub fn parse(url: &str, setting: &'static str) -> Result<Self> {
        let split = split_ssl_parameters(url, setting)?;
        let sslmode = match &split.sslmode {
            Some(value) => SslMode::parse(value, setting)?,
            None => SslMode::Prefer,
        };
        let mut config: tokio_postgres::Config = split.rest.parse().map_err(|err| {
            Error::config(format!("{setting} is not a valid PostgreSQL URL: {err}"))
        })?;
        config.ssl_mode(sslmode.for_driver());
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT_DEFAULT);
        }
        if config.get_application_name().is_none() {
            config.application_name("webhookd");
        }
        let roots = match split.sslrootcert.as_deref() {
            None | Some("system") => RootCerts::System,
            Some(path) => RootCerts::File(PathBuf::from(path)),
        };
        check_verification(sslmode, split.sslrootcert.as_deref(), &config, setting)?;
        let tls = tls_connector(sslmode, &roots, setting)?;
        Ok(DatabaseTarget {
            redacted: super::redact_url(&split.rest),
            config,
            tls,
            sslmode,
            setting,
        })
    }

    /// The driver's configuration (hosts, user, database, timeouts).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The TLS connector every connection to this target uses.
    pub fn tls(&self) -> MakeTlsConnector {
        self.tls.clone()
    }

    /// Where it points, without the password, for messages.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// Opens one connection; the caller drives it (LISTEN reads its messages).
    pub async fn connect_raw(
        &self,
    ) -> Result<(
        tokio_postgres::Client,
        tokio_postgres::Connection<
            tokio_postgres::Socket,
            postgres_native_tls::TlsStream<tokio_postgres::Socket>,
        >,
    )> {
        let limit = self.start_up_limit();
        match tokio::time::timeout(limit, self.config.connect(self.tls())).await {
            Ok(connected) => connected.map_err(|err| self.connect_error(&err)),
            Err(_) => Err(cannot_connect(format!(
                "{} (no connection within {}s: a server accepted but did not finish TLS or \
                 authentication; a pooler with no free server connection does this)",
                self.redacted,
                limit.as_secs()
            ))),
        }
    }

    /// How long opening one connection may take, start-up included: the
    /// driver's `connect_timeout` covers only each host's TCP connect, and a
    /// server that accepts and then stalls would otherwise hang us forever.
    pub fn start_up_limit(&self) -> std::time::Duration {
        let per_host = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(CONNECT_TIMEOUT_DEFAULT);
        let hosts = u32::try_from(self.config.get_hosts().len().max(1)).unwrap_or(1);
        per_host * hosts * 2
    }

    /// Opens one connection and drives it on a task of its own.
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        let (client, connection) = self.connect_raw().await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "database connection closed");
            }
        });
        Ok(client)
    }

    /// A failed connection attempt as one line: where, why, and for TLS and
    /// authentication failures the setting that most likely needs changing.
    /// With several hosts the driver reports only the last host's failure.
    pub fn connect_error(&self, err: &tokio_postgres::Error) -> Error {
        let hosts = self.config.get_hosts().len();
        let tried = if hosts > 1 {
            format!("all {hosts} hosts failed, the last with: ")
        } else {
            String::new()
        };
        cannot_connect(format!("{} ({tried}{})", self.redacted, self.describe(err)))
    }

    fn describe(&self, err: &tokio_postgres::Error) -> String {
        use tokio_postgres::error::SqlState;
        if let Some(db) = err.as_db_error() {
            let hint = if db.code() == &SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && self.sslmode == SslMode::Disable
            {
                format!(
                    "; the server may accept only TLS connections, and {} has sslmode=disable: \
                     use sslmode=require or verify-full",
                    self.setting
                )
            } else {
                String::new()
            };
            return format!("{}{hint}", db.message());
        }
        if let Some(tls) = crate::delivery::sender::outcome::find_source::<native_tls::Error>(err) {
            let reason = crate::delivery::sender::describe_tls(tls);
            return format!(
                "{reason}{}",
                tls_advice(self.sslmode, &reason, self.setting)
            );
        }
        if self.sslmode != SslMode::Disable
            && self.sslmode != SslMode::Prefer
            && err.to_string().contains("does not support TLS")
        {
            return format!(
                "the server does not support TLS, and {} has sslmode={}",
                self.setting,
                self.sslmode.name()
            );
        }
        crate::error::driver_detail(err)
    }
}

/// The database could not be reached: `detail` says where and why.
pub(crate) fn cannot_connect(detail: String) -> Error {
    Error::unavailable(format!("cannot connect to the database: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::config::SslMode as DriverSslMode;

    #[test]
    fn bad_tls_settings_are_configuration_errors_naming_the_setting() {
        let err = DatabaseTarget::parse("postgres://h/db?sslmode=verify", "DATABASE_URL")
            .err()
            .unwrap();
        assert!(err.is_user_error());
        assert!(
            err.to_string().contains("unknown sslmode \"verify\""),
            "{err}"
        );
        let err = DatabaseTarget::parse(
            "postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            "--listen-database-url",
        )
        .err()
        .unwrap();
        assert!(err.is_user_error());
        assert!(
            err.to_string()
                .starts_with("--listen-database-url: cannot read sslrootcert /nonexistent/ca.pem"),
            "{err}"
        );
        let err = DatabaseTarget::parse("postgres://h/db?sslcert=/c.pem", "DATABASE_URL")
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("sslcert is not supported"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn with_several_hosts_the_error_says_all_failed() {
        let target = DatabaseTarget::parse(
            "postgres://u:pw@127.0.0.1:1,127.0.0.1:2/db?connect_timeout=2",
            "DATABASE_URL",
        )
        .unwrap();
        let err = target.connect().await.err().unwrap().to_string();
        assert!(
            err.starts_with(
                "cannot connect to the database: postgres://u@127.0.0.1:1,127.0.0.1:2/db \
                 (all 2 hosts failed, the last with: "
            ),
            "{err}"
        );
        let single = DatabaseTarget::parse("postgres://u@127.0.0.1:1/db", "DATABASE_URL").unwrap();
        let err = single.connect().await.err().unwrap().to_string();
        assert!(!err.contains("hosts failed"), "{err}");
    }

    #[test]
    fn settings_that_would_check_less_than_they_seem_are_refused() {
        for (url, says) in [
            (
                "postgres://h/db?sslmode=verify-ca",
                "verify-ca needs sslrootcert",
            ),
            (
                "postgres://h/db?sslmode=verify-ca&sslrootcert=system",
                "needs sslmode=verify-full",
            ),
            (
                "postgres://h/db?sslmode=require&sslrootcert=system",
                "needs sslmode=verify-full",
            ),
            (
                "hostaddr=127.0.0.1 sslmode=verify-full",
                "needs a host name",
            ),
            (
                "host=/var/run/postgresql sslmode=verify-full",
                "needs a host name",
            ),
        ] {
            let err = DatabaseTarget::parse(url, "DATABASE_URL").err().unwrap();
            assert!(err.is_user_error(), "{url}");
            assert!(err.to_string().contains(says), "{url}: {err}");
        }
        assert!(DatabaseTarget::parse(
            "postgres://h/db?sslmode=verify-full&sslrootcert=system",
            "DATABASE_URL"
        )
        .is_ok());
    }

    #[test]
    fn a_malformed_key_value_url_is_not_echoed() {
        let err = DatabaseTarget::parse("host=h password=my secret", "DATABASE_URL")
            .err()
            .unwrap();
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(err.to_string().contains("at character"), "{err}");
    }

    #[test]
    fn the_driver_is_told_whether_tls_is_required() {
        for (mode, driver) in [
            ("disable", DriverSslMode::Disable),
            ("prefer", DriverSslMode::Prefer),
            ("require", DriverSslMode::Require),
            ("verify-ca", DriverSslMode::Require),
            ("verify-full", DriverSslMode::Require),
        ] {
            let ca = std::env::temp_dir().join(format!("webhookd-ca-{}.pem", uuid::Uuid::new_v4()));
            let issued = rcgen::generate_simple_self_signed(vec!["h".to_string()]).unwrap();
            std::fs::write(&ca, issued.cert.pem()).unwrap();
            let url = format!(
                "postgres://h/db?sslmode={mode}&sslrootcert={}",
                ca.display()
            );
            let target = DatabaseTarget::parse(&url, "DATABASE_URL").unwrap();
            let _ = std::fs::remove_file(&ca);
            assert_eq!(target.config().get_ssl_mode(), driver, "{mode}");
        }
        let default = DatabaseTarget::parse("postgres://h/db", "DATABASE_URL").unwrap();
        assert_eq!(default.config().get_ssl_mode(), DriverSslMode::Prefer);
    }
}
