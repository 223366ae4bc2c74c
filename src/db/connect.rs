//! Turning a connection URL into connections: libpq's `sslmode` and
//! `sslrootcert` on top of what the driver parses itself, one TLS connector
//! for every connection (pool, LISTEN, one-shot commands), and connection
//! errors said in one line that names the setting to fix.
//!
//! The driver knows only `disable`, `prefer` and `require`; `verify-ca` and
//! `verify-full` (and the CA file) are taken out of the URL here and become
//! the TLS connector's settings, so users keep the URLs they already use with
//! `psql`. See `docs/PRODUCTION.md` for what each mode checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use native_tls::{Certificate, TlsConnector};
use postgres_native_tls::MakeTlsConnector;
use tokio_postgres::config::SslMode as DriverSslMode;

use crate::error::{Error, Result};

/// How long one host may take to accept a connection when the URL does not
/// say (`connect_timeout`): an unreachable server is reported, not waited on.
const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it, unverified; plaintext otherwise (the default).
    Prefer,
    /// TLS, unverified (verified against `sslrootcert` when one is given).
    Require,
    /// TLS; the certificate chain must lead to a trusted root.
    VerifyCa,
    /// TLS; trusted chain and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str, setting: &str) -> Result<Self> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::config(format!(
                    "{setting}: unknown sslmode \"{other}\": use disable, prefer, require, \
                     verify-ca or verify-full"
                )))
            }
        })
    }

    /// What the driver is told: it only needs to know whether TLS is off,
    /// optional or required; the checking is the connector's.
    fn for_driver(self) -> DriverSslMode {
        match self {
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Prefer => DriverSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverSslMode::Require,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where the root certificates for `verify-ca` / `verify-full` come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RootCerts {
    /// The operating system's trust store (no `sslrootcert`, or `sslrootcert=system`).
    System,
    /// Only the certificates in this PEM file, as libpq does.
    File(PathBuf),
}

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

/// What to change after a failed TLS handshake whose `reason` is
/// [`describe_tls`](crate::delivery::sender::describe_tls)'s: a name mismatch (OpenSSL
/// says "Hostname mismatch" or, for an IP address, "IP address mismatch")
/// is the URL's host or `sslmode`, anything else the CA file.
fn tls_advice(sslmode: SslMode, reason: &str, setting: &str) -> String {
    let name_mismatch =
        reason.contains("ostname mismatch") || reason.contains("IP address mismatch");
    match sslmode {
        SslMode::VerifyFull if name_mismatch => format!(
            "; sslmode=verify-full needs a server certificate that names the host in {setting}: \
             connect by a name the certificate carries, or use sslmode=verify-ca"
        ),
        SslMode::VerifyCa | SslMode::VerifyFull | SslMode::Require => format!(
            "; check that sslrootcert in {setting} holds the CA that signed the server's certificate"
        ),
        SslMode::Disable | SslMode::Prefer => String::new(),
    }
}

/// Refuses combinations that would check less than they seem to, as libpq
/// does: the system's trust store vouches for any publicly trusted
/// certificate, so it means something only together with the host name
/// check of `verify-full`; and that check needs a host name to check.
fn check_verification(
    sslmode: SslMode,
    sslrootcert: Option<&str>,
    config: &tokio_postgres::Config,
    setting: &str,
) -> Result<()> {
    match (sslmode, sslrootcert) {
        (SslMode::VerifyCa, None) => {
            return Err(Error::config(format!(
                "{setting}: sslmode=verify-ca needs sslrootcert=FILE, the CA that signs the \
                 server's certificate (with the system's trust store any publicly trusted \
                 certificate would pass); or use sslmode=verify-full"
            )))
        }
        (
            SslMode::Disable | SslMode::Prefer | SslMode::Require | SslMode::VerifyCa,
            Some("system"),
        ) => {
            return Err(Error::config(format!(
                "{setting}: sslrootcert=system needs sslmode=verify-full (the system's trust store \
                 vouches for any publicly trusted certificate, so only the host name check makes \
                 it mean something)"
            )))
        }
        _ => {}
    }
    let named = |host: &tokio_postgres::config::Host| matches!(host, tokio_postgres::config::Host::Tcp(name) if !name.is_empty());
    if sslmode == SslMode::VerifyFull
        && (config.get_hosts().is_empty() || !config.get_hosts().iter().all(named))
    {
        return Err(Error::config(format!(
            "{setting}: sslmode=verify-full needs a host name for every host (not only hostaddr, \
             not a Unix socket) to check the server's certificate against"
        )));
    }
    Ok(())
}

/// The TLS connector for a mode. `prefer` and `require` encrypt without
/// checking the certificate (libpq does the same), unless a CA file is given
/// with `require`, which libpq then treats as `verify-ca`.
fn tls_connector(sslmode: SslMode, roots: &RootCerts, setting: &str) -> Result<MakeTlsConnector> {
    let mut builder = TlsConnector::builder();
    let verify_chain = match sslmode {
        SslMode::Disable | SslMode::Prefer => false,
        SslMode::Require => matches!(roots, RootCerts::File(_)),
        SslMode::VerifyCa | SslMode::VerifyFull => true,
    };
    if verify_chain {
        if let RootCerts::File(path) = roots {
            builder.disable_built_in_roots(true);
            for certificate in read_root_certificates(path, setting)? {
                builder.add_root_certificate(certificate);
            }
        }
        builder.danger_accept_invalid_hostnames(sslmode != SslMode::VerifyFull);
    } else {
        builder.danger_accept_invalid_certs(true);
        builder.danger_accept_invalid_hostnames(true);
    }
    let connector = builder
        .build()
        .map_err(|err| Error::config(format!("{setting}: cannot set up TLS: {err}")))?;
    Ok(MakeTlsConnector::new(connector))
}

/// The PEM certificates of an `sslrootcert` file.
fn read_root_certificates(path: &Path, setting: &str) -> Result<Vec<Certificate>> {
    let pem = std::fs::read(path).map_err(|err| {
        Error::config(format!(
            "{setting}: cannot read sslrootcert {}: {err}",
            path.display()
        ))
    })?;
    let certificates = crate::config::pem_certificates(&pem).map_err(|reason| {
        Error::config(format!(
            "{setting}: sslrootcert {}: {reason}",
            path.display()
        ))
    })?;
    Ok(certificates)
}

/// A URL with its TLS parameters taken out.
#[derive(Debug, PartialEq, Eq)]
struct SplitUrl {
    /// What the driver parses.
    rest: String,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

/// Parameters libpq knows that webhookd does not support; named in the error
/// rather than reported by the driver as unknown.
const UNSUPPORTED: &[&str] = &["sslcert", "sslkey", "sslpassword", "sslcrl", "sslcrldir"];

fn split_ssl_parameters(url: &str, setting: &str) -> Result<SplitUrl> {
    let url = url.trim();
    let pairs = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        None
    } else {
        Some(())
    };
    let mut sslmode = None;
    let mut sslrootcert = None;
    let mut take = |key: &str, value: String| -> Result<bool> {
        match key {
            "sslmode" => sslmode = Some(value),
            "sslrootcert" => sslrootcert = Some(value),
            key if UNSUPPORTED.contains(&key) => {
                return Err(Error::config(format!(
                    "{setting}: {key} is not supported (client certificates and revocation \
                     lists): authenticate with a password over TLS instead"
                )))
            }
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = match pairs {
        None => split_url_query(url, &mut take)?,
        Some(()) => split_key_values(url, setting, &mut take)?,
    };
    Ok(SplitUrl {
        rest,
        sslmode,
        sslrootcert,
    })
}

/// `postgres://…?a=b&sslmode=x`: removes the parameters `take` claims.
fn split_url_query(
    url: &str,
    take: &mut impl FnMut(&str, String) -> Result<bool>,
) -> Result<String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(url.to_string());
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !take(&percent_decode(key), percent_decode(value))? {
            kept.push(pair);
        }
    }
    Ok(if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    })
}

/// `host=h sslmode='verify-full'`: removes the parameters `take` claims and
/// writes the rest back, quoted.
fn split_key_values(
    text: &str,
    setting: &str,
    take: &mut impl FnMut(&str, String) -> Result<bool>,
) -> Result<String> {
    let mut kept = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(Error::config(format!(
                "{setting} is not a valid PostgreSQL URL: expected key=value at character {}",
                text.chars().count() - chars.clone().count()
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let value = read_value(&mut chars, &key, setting)?;
        if !take(&key, value.clone())? {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    Ok(kept.join(" "))
}

fn read_value(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    key: &str,
    setting: &str,
) -> Result<String> {
    if chars.next_if_eq(&'\'').is_none() {
        return Ok(std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())).collect());
    }
    let mut value = String::new();
    loop {
        match chars.next() {
            Some('\'') => return Ok(value),
            Some('\\') => value.extend(chars.next()),
            Some(c) => value.push(c),
            None => {
                return Err(Error::config(format!(
                    "{setting} is not a valid PostgreSQL URL: unterminated quote in {key}"
                )))
            }
        }
    }
}

/// `%2F` → `/`; anything malformed is kept as typed.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> SplitUrl {
        split_ssl_parameters(url, "DATABASE_URL").unwrap()
    }

    #[test]
    fn ssl_parameters_come_out_of_a_url_and_the_rest_stays() {
        let s = split(
            "postgres://app:pw@db1:5432,db2:5433/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&target_session_attrs=read-write",
        );
        assert_eq!(
            s.rest,
            "postgres://app:pw@db1:5432,db2:5433/app?target_session_attrs=read-write"
        );
        assert_eq!(s.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(s.sslrootcert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(
            split("postgres://h/db?sslmode=require").rest,
            "postgres://h/db"
        );
        assert_eq!(split("postgres://h/db").sslmode, None);
    }

    #[test]
    fn ssl_parameters_come_out_of_key_value_form_with_quotes() {
        let s = split(
            "host=db user=app sslmode = verify-ca sslrootcert='/etc/my ca.pem' password='a\\'b'",
        );
        assert_eq!(s.rest, "host='db' user='app' password='a\\'b'");
        assert_eq!(s.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(s.sslrootcert.as_deref(), Some("/etc/my ca.pem"));
        let config: tokio_postgres::Config = s.rest.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"a'b"[..]));
    }

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

    #[test]
    fn a_name_mismatch_points_at_the_host_and_anything_else_at_the_ca_file() {
        for reason in [
            "TLS: certificate verify failed (Hostname mismatch)",
            "TLS: certificate verify failed (IP address mismatch)",
        ] {
            let advice = tls_advice(SslMode::VerifyFull, reason, "DATABASE_URL");
            assert!(
                advice.contains("names the host in DATABASE_URL"),
                "{advice}"
            );
            assert!(advice.contains("sslmode=verify-ca"), "{advice}");
        }
        let reason = "TLS: certificate verify failed (unable to get local issuer certificate)";
        for mode in [SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
            let advice = tls_advice(mode, reason, "--listen-database-url");
            assert!(
                advice.contains("sslrootcert in --listen-database-url"),
                "{advice}"
            );
        }
        assert_eq!(tls_advice(SslMode::Prefer, reason, "DATABASE_URL"), "");
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
