//! Configuration in two stages. Stage one is what the user typed: flags and
//! environment variables, all read by clap ([`RunArgs`], [`SecretArgs`] and
//! the global `--database-url` of `cli::Cli`); nothing else reads the
//! environment. Stage two is [`RunArgs::validate`]: it checks all of it at
//! once and builds the typed [`DaemonConfig`], whose parts (ClaimerConfig,
//! SenderConfig, …) are each defined by the service that takes them. What
//! comes from outside rather than from the user, the name resolver, is a
//! parameter of `validate`, so tests pass theirs.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::daemon::{DaemonConfig, ListenConfig};
use crate::db::DatabaseTarget;
use crate::delivery::claimer::{ClaimerConfig, LEASE_DEFAULT};
use crate::delivery::completer::CompleterConfig;
use crate::delivery::fanout::FanOutConfig;
use crate::delivery::retry::{RetryPolicy, MAX_JITTER};
use crate::delivery::sender::{format_duration, Resolve, SenderConfig};
use crate::error::{Error, Result};
use crate::keys::{Keyring, CURRENT_KEY_VAR, PREVIOUS_KEYS_VAR};
use crate::signing::SecretBox;

/// `--disable-after` unless given.
pub const DISABLE_AFTER_DEFAULT: Duration = Duration::from_secs(5 * 86_400);

/// Shortest admin token accepted: it guards webhook creation.
pub const MIN_TOKEN_LEN: usize = 16;

/// Parses `300ms`, `60s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(Error::config("durations cannot be negative"));
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| {
            Error::config(format!(
                "\"{text}\" has no unit: write e.g. 300ms, 60s or 5m"
            ))
        })?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        Error::config(format!(
            "\"{text}\" is not a duration: write e.g. 300ms, 60s or 5m"
        ))
    })?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        _ => {
            return Err(Error::config(format!(
                "unknown unit \"{unit}\" in \"{text}\": use ms, s, m, h or d"
            )))
        }
    };
    if !seconds.is_finite() || seconds > 365.0 * 86_400.0 {
        return Err(Error::config(format!("\"{text}\" is too long")));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn positive_duration(text: &str) -> Result<Duration> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err(Error::config("must be greater than zero"));
    }
    Ok(duration)
}

/// How long finished events are kept; `None` keeps them forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPeriod(pub Option<Duration>);

/// A retention period, or `off` to keep everything.
fn retention(text: &str) -> Result<RetentionPeriod> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(RetentionPeriod(None));
    }
    positive_duration(text).map(|keep| RetentionPeriod(Some(keep)))
}

/// How long every delivery of a webhook must have failed before it is
/// disabled; `None` never disables one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisableAfter(pub Option<Duration>);

/// A duration, or `0` (with or without a unit) to never disable.
fn disable_after(text: &str) -> Result<DisableAfter> {
    if text.trim() == "0" {
        return Ok(DisableAfter(None));
    }
    let after = parse_duration(text)?;
    Ok(DisableAfter(Some(after).filter(|after| !after.is_zero())))
}

/// `webhookd run` flags; each also reads `WEBHOOKD_<NAME>`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Delay before the first retry; doubles for each later one.
    #[arg(long, env = "WEBHOOKD_RETRY_BASE_DELAY", default_value = "60s", value_parser = positive_duration, value_name = "DURATION", allow_hyphen_values = true)]
    pub retry_base_delay: Duration,
    /// Longest delay a 429 or 503 answer's Retry-After is honoured for; a
    /// retry is never due earlier than the schedule says.
    #[arg(long, env = "WEBHOOKD_MAX_RETRY_AFTER", default_value = "1h", value_parser = positive_duration, value_name = "DURATION", allow_hyphen_values = true)]
    pub max_retry_after: Duration,
    /// Disable a webhook whose every delivery has failed for this long
    /// (no success since); `0` never does.
    #[arg(long, env = "WEBHOOKD_DISABLE_AFTER", default_value = "5d", value_parser = disable_after, value_name = "DURATION|0", allow_hyphen_values = true)]
    pub disable_after: DisableAfter,
    /// Retries after the first attempt.
    #[arg(long, env = "WEBHOOKD_MAX_RETRIES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub max_retries: u32,
    /// Time allowed for DNS, TCP connect and TLS handshake.
    #[arg(long, env = "WEBHOOKD_CONNECT_TIMEOUT", default_value = "10s", value_parser = positive_duration, value_name = "DURATION", allow_hyphen_values = true)]
    pub connect_timeout: Duration,
    /// Time from sending a request to a complete response.
    #[arg(long, env = "WEBHOOKD_RESPONSE_TIMEOUT", default_value = "30s", value_parser = positive_duration, value_name = "DURATION", allow_hyphen_values = true)]
    pub response_timeout: Duration,
    /// Allow http:// URLs and loopback/private addresses (tests, local use).
    #[arg(long, env = "WEBHOOKD_ALLOW_PRIVATE_TARGETS", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_private_targets: bool,
    /// How long a claimed delivery stays reserved; must exceed connect + response timeout.
    #[arg(long, env = "WEBHOOKD_LEASE", default_value = "90s", value_parser = positive_duration, value_name = "DURATION", allow_hyphen_values = true)]
    pub lease: Duration,
    /// Address for health and metrics.
    #[arg(
        long,
        env = "WEBHOOKD_ADMIN_ADDR",
        default_value = "127.0.0.1:9187",
        value_name = "HOST:PORT"
    )]
    pub admin_addr: std::net::SocketAddr,
    /// Longest sleep between looks at the database when no notification comes.
    #[arg(long, env = "WEBHOOKD_POLL_INTERVAL", default_value = "5s", value_parser = positive_duration, value_name = "DURATION", allow_hyphen_values = true)]
    pub poll_interval: Duration,
    /// Deliveries in flight at once, all webhooks together.
    #[arg(long, env = "WEBHOOKD_MAX_IN_FLIGHT", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_in_flight: u32,
    /// Most deliveries in flight at once to one webhook. Each webhook starts
    /// at 8, gains one per quick success and halves on timeouts, connection
    /// failures, 429 and 503.
    #[arg(long, env = "WEBHOOKD_MAX_IN_FLIGHT_PER_WEBHOOK", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_in_flight_per_webhook: u32,
    /// After SIGTERM, how long in-flight requests may finish before their leases are released.
    #[arg(long, env = "WEBHOOKD_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration, value_name = "DURATION", allow_hyphen_values = true)]
    pub shutdown_grace: Duration,
    /// PEM file of extra trusted root certificates (the system roots stay trusted).
    #[arg(long, env = "WEBHOOKD_EXTRA_CA_FILE", value_name = "PATH")]
    pub extra_ca_file: Option<std::path::PathBuf>,
    /// Delete events (with their deliveries and attempts) this long after
    /// they were emitted, once every delivery is finished; `off` keeps all.
    #[arg(long, env = "WEBHOOKD_RETENTION", default_value = "30d", value_parser = retention, value_name = "DURATION|off", allow_hyphen_values = true)]
    pub retention: RetentionPeriod,
    /// Database connections in the pool.
    #[arg(long, env = "WEBHOOKD_DB_POOL_SIZE", default_value_t = 8, value_parser = clap::value_parser!(u32).range(2..=200))]
    pub db_pool_size: u32,
    /// URL of the LISTEN connection (default: DATABASE_URL). Point it at the
    /// server directly when DATABASE_URL goes through a transaction-mode
    /// pooler, which cannot deliver notifications.
    #[arg(
        long,
        env = "WEBHOOKD_LISTEN_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub listen_database_url: Option<String>,
}

impl RunArgs {
    /// Stage two: checks the flags, the database URL and the secrets
    /// together and builds the daemon's configuration. `resolver` turns
    /// webhook hosts into addresses (the system's, or a test's).
    // Long because it is the one place every flag meets its service's
    // config: one struct literal, read top to bottom.
    pub fn validate(
        &self,
        database_url: &str,
        secrets: &SecretArgs,
        resolver: Arc<dyn Resolve>,
    ) -> Result<DaemonConfig> {
        let max_in_flight = self.max_in_flight as usize;
        let completer = CompleterConfig::for_max_in_flight(max_in_flight, self.lease);
        // A result also waits for company before it is written.
        let budget = self.connect_timeout + self.response_timeout + completer.linger;
        if self.lease <= budget {
            return Err(Error::config(format!(
                "--lease ({}) must exceed --connect-timeout + --response-timeout + the write-back's \
                 {} wait ({}), or a slow request could be sent twice",
                format_duration(self.lease),
                format_duration(completer.linger),
                format_duration(budget)
            )));
        }
        let extra_root_certificates = match &self.extra_ca_file {
            Some(path) => read_certificates(path)?,
            None => Vec::new(),
        };
        let database = crate::db::parse_url(database_url)?;
        let listen = match &self.listen_database_url {
            Some(url) => Some(DatabaseTarget::parse(url, "--listen-database-url")?),
            None => None,
        };
        Ok(DaemonConfig {
            listen: ListenConfig {
                database: listen.clone().unwrap_or_else(|| database.clone()),
                explicit: listen.is_some(),
            },
            database,
            retry: RetryPolicy {
                base_delay: self.retry_base_delay,
                max_retries: self.max_retries,
                jitter: MAX_JITTER,
                max_retry_after: self.max_retry_after,
            },
            sender: SenderConfig {
                connect_timeout: self.connect_timeout,
                response_timeout: self.response_timeout,
                allow_private_targets: self.allow_private_targets,
                extra_root_certificates,
                resolver,
                ..SenderConfig::default()
            },
            claimer: ClaimerConfig {
                batch: 256.min(max_in_flight),
                max_in_flight,
                pacing: crate::delivery::pacing::PacingConfig::up_to(
                    self.max_in_flight_per_webhook as usize,
                ),
                lease: self.lease,
            },
            fanout: FanOutConfig::default(),
            completer,
            poll_interval: self.poll_interval,
            shutdown_grace: self.shutdown_grace,
            secrets: secrets.keyring()?,
            unopenable_secret_delay: crate::delivery::dispatcher::UNOPENABLE_SECRET_DELAY,
            pool_size: self.db_pool_size as usize,
            admin_addr: self.admin_addr,
            admin_token: secrets.admin_token()?,
            retention: crate::maintenance::retention::RetentionConfig {
                keep: self.retention.0,
                ..Default::default()
            },
            disabler: crate::maintenance::disabler::DisablerConfig::after(self.disable_after.0),
        })
    }
}

impl Default for RunArgs {
    fn default() -> Self {
        RunArgs {
            retry_base_delay: Duration::from_secs(60),
            max_retry_after: crate::delivery::retry::MAX_RETRY_AFTER_DEFAULT,
            disable_after: DisableAfter(Some(DISABLE_AFTER_DEFAULT)),
            max_retries: 3,
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(30),
            allow_private_targets: false,
            lease: LEASE_DEFAULT,
            admin_addr: ([127, 0, 0, 1], 9187).into(),
            poll_interval: Duration::from_secs(5),
            max_in_flight: 512,
            max_in_flight_per_webhook: crate::delivery::claimer::MAX_IN_FLIGHT_PER_WEBHOOK_DEFAULT
                as u32,
            shutdown_grace: Duration::from_secs(20),
            extra_ca_file: None,
            retention: RetentionPeriod(Some(Duration::from_secs(30 * 86_400))),
            db_pool_size: 8,
            listen_database_url: None,
        }
    }
}

/// Stage one of the secrets: `WEBHOOKD_SECRET_KEY`,
/// `WEBHOOKD_SECRET_KEY_PREVIOUS` and `WEBHOOKD_ADMIN_TOKEN` as set. They are
/// read from the environment only in practice: the flags clap needs for
/// them are hidden, since secrets on a command line show in `ps`. Values
/// that are not UTF-8 are kept as they are, so that validation can say
/// what is wrong with them.
#[derive(Debug, Clone, Default, Args)]
pub struct SecretArgs {
    /// The key that seals webhook secrets (base64 of 32 bytes).
    #[arg(long, env = CURRENT_KEY_VAR, global = true, hide = true, value_parser = clap::value_parser!(OsString))]
    pub secret_key: Option<OsString>,
    /// Keys that may still open secrets, comma-separated.
    #[arg(long, env = PREVIOUS_KEYS_VAR, global = true, hide = true, value_parser = clap::value_parser!(OsString))]
    pub secret_key_previous: Option<OsString>,
    /// Bearer token of the management API; unset or empty leaves it off.
    #[arg(long, env = "WEBHOOKD_ADMIN_TOKEN", global = true, hide = true, value_parser = clap::value_parser!(OsString))]
    pub admin_token: Option<OsString>,
}

impl SecretArgs {
    /// Only a current key (tests, the demo).
    pub fn with_key(key: &str) -> Self {
        SecretArgs {
            secret_key: Some(key.into()),
            ..SecretArgs::default()
        }
    }

    /// The current key as text; unset, empty and not UTF-8 are all `None`
    /// (validation then says it is not set).
    pub fn current_key(&self) -> Option<&str> {
        self.secret_key
            .as_deref()
            .and_then(|key| key.to_str())
            .filter(|key| !key.is_empty())
    }

    /// The current key, or says how to set it.
    pub fn secret_box(&self) -> Result<SecretBox> {
        match self.current_key() {
            None => Err(Error::config(format!(
                "{CURRENT_KEY_VAR} is not set: set it to base64 of 32 random bytes \
                 (e.g. `export {CURRENT_KEY_VAR}=$(openssl rand -base64 32)`); it encrypts webhook secrets"
            ))),
            Some(key) => SecretBox::from_base64(key),
        }
    }

    /// The current key with the previous ones.
    pub fn keyring(&self) -> Result<Keyring> {
        let previous = match &self.secret_key_previous {
            None => "",
            Some(value) => value.to_str().ok_or_else(|| {
                Error::config(format!(
                    "{PREVIOUS_KEYS_VAR} is not valid base64: expected comma-separated keys \
                     in the form of {CURRENT_KEY_VAR}"
                ))
            })?,
        };
        Keyring::new(self.secret_box()?).with_previous(previous)
    }

    /// The admin token: unset or empty leaves the management API off; a
    /// short token is refused, since it guards webhook creation.
    pub fn admin_token(&self) -> Result<Option<String>> {
        let Some(token) = &self.admin_token else {
            return Ok(None);
        };
        // Not UTF-8: as good as unset, as it always was.
        let Some(token) = token.to_str().filter(|token| !token.is_empty()) else {
            return Ok(None);
        };
        if token.chars().count() < MIN_TOKEN_LEN {
            return Err(Error::config(format!(
                "WEBHOOKD_ADMIN_TOKEN is shorter than {MIN_TOKEN_LEN} characters: use a long \
                 random value (e.g. `openssl rand -hex 32`)"
            )));
        }
        Ok(Some(token.to_string()))
    }
}

fn read_certificates(path: &std::path::Path) -> Result<Vec<native_tls::Certificate>> {
    let pem = std::fs::read(path).map_err(|err| {
        Error::config(format!(
            "cannot read --extra-ca-file {}: {err}",
            path.display()
        ))
    })?;
    pem_certificates(&pem)
        .map_err(|reason| Error::config(format!("--extra-ca-file {}: {reason}", path.display())))
}

/// Every `CERTIFICATE` block of a PEM file; an error says what is wrong with
/// the file (the caller names it).
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<native_tls::Certificate>> {
    let text = String::from_utf8_lossy(pem);
    let mut certificates = Vec::new();
    let mut rest = text.as_ref();
    const END: &str = "-----END CERTIFICATE-----";
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let Some(end) = rest[start..].find(END) else {
            break;
        };
        let block = &rest[start..start + end + END.len()];
        let certificate = native_tls::Certificate::from_pem(block.as_bytes())
            .map_err(|err| Error::config(format!("invalid certificate: {err}")))?;
        certificates.push(certificate);
        rest = &rest[start + end + END.len()..];
    }
    if certificates.is_empty() {
        return Err(Error::config("holds no PEM certificate"));
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::sender::SystemResolver;

    fn validate(args: &RunArgs, key: Option<&str>) -> Result<DaemonConfig> {
        let secrets = key.map(SecretArgs::with_key).unwrap_or_default();
        args.validate(
            "postgres://x@localhost/db",
            &secrets,
            Arc::new(SystemResolver),
        )
    }

    #[test]
    fn durations_take_the_documented_units() {
        assert_eq!(
            parse_duration("300ms").unwrap(),
            (Duration::from_millis(300))
        );
        assert_eq!(parse_duration("60s").unwrap(), (Duration::from_secs(60)));
        assert_eq!(parse_duration("5m").unwrap(), (Duration::from_secs(300)));
        assert_eq!(
            parse_duration("1.5s").unwrap(),
            (Duration::from_millis(1500))
        );
        assert!(parse_duration("-5s")
            .unwrap_err()
            .to_string()
            .contains("negative"));
        assert!(parse_duration("60")
            .unwrap_err()
            .to_string()
            .contains("no unit"));
        assert_eq!(
            parse_duration("7d").unwrap(),
            (Duration::from_secs(7 * 86_400))
        );
        assert!(parse_duration("5w")
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
        assert_eq!(retention("off").unwrap(), RetentionPeriod(None));
        assert_eq!(
            retention("1h").unwrap(),
            RetentionPeriod(Some(Duration::from_secs(3600)))
        );
        assert!(positive_duration("0s").is_err());
    }

    #[test]
    fn disable_after_takes_a_duration_or_zero_for_never() {
        assert_eq!(disable_after("0").unwrap(), DisableAfter(None));
        assert_eq!(disable_after("0s").unwrap(), DisableAfter(None));
        assert_eq!(
            disable_after("2s").unwrap(),
            DisableAfter(Some(Duration::from_secs(2)))
        );
        assert_eq!(
            disable_after("500ms").unwrap(),
            DisableAfter(Some(Duration::from_millis(500)))
        );
        assert!(disable_after("-1d")
            .unwrap_err()
            .to_string()
            .contains("negative"));
        assert!(disable_after("400d")
            .unwrap_err()
            .to_string()
            .contains("too long"));
        assert!(disable_after("soon").is_err());
    }

    #[test]
    fn lease_must_exceed_connect_plus_response_timeout() {
        let key = SecretBox::generate_key_base64();
        let args = RunArgs {
            lease: Duration::from_secs(40),
            ..RunArgs::default()
        };
        let err = validate(&args, Some(&key)).err().unwrap();
        assert!(
            err.to_string().contains("--lease (40s) must exceed"),
            "{err}"
        );
        assert!(validate(&RunArgs::default(), Some(&key)).is_ok());
    }

    #[test]
    fn missing_secret_key_says_how_to_make_one() {
        let err = validate(&RunArgs::default(), None).err().unwrap();
        assert!(err.to_string().contains("WEBHOOKD_SECRET_KEY is not set"));
        assert!(err.is_user_error());
    }
}
