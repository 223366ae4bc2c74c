//! TLS for database connections: libpq's `sslmode` values, where root
//! certificates come from, the checks that refuse settings which would verify
//! less than they seem to, and the connector that enforces a mode.

use std::path::{Path, PathBuf};

use native_tls::{Certificate, TlsConnector};
use postgres_native_tls::MakeTlsConnector;
use tokio_postgres::config::SslMode as DriverSslMode;

use crate::error::{Error, Result};

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
    pub(super) fn parse(value: &str, setting: &str) -> Result<Self> {
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
    pub(super) fn for_driver(self) -> DriverSslMode {
        match self {
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Prefer => DriverSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverSslMode::Require,
        }
    }

    pub(super) fn name(self) -> &'static str {
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
pub(super) enum RootCerts {
    /// The operating system's trust store (no `sslrootcert`, or `sslrootcert=system`).
    System,
    /// Only the certificates in this PEM file, as libpq does.
    File(PathBuf),
}

/// What to change after a failed TLS handshake whose `reason` is
/// [`describe_tls`](crate::delivery::sender::describe_tls)'s: a name mismatch (OpenSSL
/// says "Hostname mismatch" or, for an IP address, "IP address mismatch")
/// is the URL's host or `sslmode`, anything else the CA file.
pub(super) fn tls_advice(sslmode: SslMode, reason: &str, setting: &str) -> String {
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
pub(super) fn check_verification(
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
pub(super) fn tls_connector(
    sslmode: SslMode,
    roots: &RootCerts,
    setting: &str,
) -> Result<MakeTlsConnector> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
