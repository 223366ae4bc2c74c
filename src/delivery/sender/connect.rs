//! Opening a connection to a webhook target: resolve, check every address
//! against the guard, connect TCP to a checked address, then TLS. One connect
//! timeout covers all three, as a receiver sees it.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tracing::debug;

use super::outcome::{describe_hyper, describe_io, describe_tls, format_duration, OutcomeCode};
use crate::guard::{blocked_kind, TargetUrl};

/// A boxed future, as the resolver returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Turns a host name into addresses. Injectable so tests can point names at
/// any address without outside DNS.
pub trait Resolve: Send + Sync + 'static {
    /// All addresses for `host`, with `port` filled in.
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>>;
}

/// The system resolver (getaddrinfo on a blocking thread).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// Why a connection could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectFailure {
    /// Stable code.
    pub code: OutcomeCode,
    /// Human reason.
    pub reason: String,
}

impl ConnectFailure {
    fn new(code: OutcomeCode, reason: impl Into<String>) -> Self {
        ConnectFailure {
            code,
            reason: reason.into(),
        }
    }
}

/// What the connector needs to know.
#[derive(Clone)]
pub struct Connector {
    /// DNS + TCP + TLS must finish within this.
    pub connect_timeout: Duration,
    /// Lifts the address guard (tests, local development).
    pub allow_private_targets: bool,
    /// TLS settings, roots included.
    pub tls: tokio_native_tls::TlsConnector,
    /// Name resolution.
    pub resolver: Arc<dyn Resolve>,
}

impl Connector {
    /// Opens an HTTP/1.1 connection to the target and returns its sender; the
    /// connection itself runs on a spawned task until either side closes it.
    pub async fn connect(
        &self,
        target: &TargetUrl,
    ) -> Result<SendRequest<Full<Bytes>>, ConnectFailure> {
        let deadline = Instant::now() + self.connect_timeout;
        let limit = format_duration(self.connect_timeout);
        let addresses = self.checked_addresses(target, deadline, &limit).await?;

        let mut last_error = None;
        let mut tcp = None;
        for address in addresses {
            match timeout_at(deadline, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => {
                    tcp = Some(stream);
                    break;
                }
                Ok(Err(err)) => {
                    debug!(%address, error = %err, "connect failed");
                    last_error = Some(err);
                }
                Err(_) => {
                    return Err(ConnectFailure::new(
                        OutcomeCode::ConnectTimeout,
                        format!("connect timed out after {limit}"),
                    ))
                }
            }
        }
        let tcp = match (tcp, last_error) {
            (Some(tcp), _) => tcp,
            (None, Some(err)) => {
                let (code, reason) = describe_io(&err);
                return Err(ConnectFailure::new(code, reason));
            }
            (None, None) => {
                return Err(ConnectFailure::new(
                    OutcomeCode::Dns,
                    "host resolved to no addresses",
                ))
            }
        };
        // Webhook requests are small and latency-bound.
        let _ = tcp.set_nodelay(true);

        if target.https {
            let tls = match timeout_at(deadline, self.tls.connect(&target.host, tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    return Err(ConnectFailure::new(OutcomeCode::Tls, describe_tls(&err)))
                }
                Err(_) => {
                    return Err(ConnectFailure::new(
                        OutcomeCode::ConnectTimeout,
                        format!("TLS handshake timed out after {limit}"),
                    ))
                }
            };
            handshake(TokioIo::new(tls)).await
        } else {
            handshake(TokioIo::new(tcp)).await
        }
    }

    /// The target's addresses that may be connected to, in resolver order.
    async fn checked_addresses(
        &self,
        target: &TargetUrl,
        deadline: Instant,
        limit: &str,
    ) -> Result<Vec<SocketAddr>, ConnectFailure> {
        let resolved = match target.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, target.port)],
            Err(_) => {
                match timeout_at(deadline, self.resolver.resolve(&target.host, target.port)).await {
                    Ok(Ok(addresses)) => addresses,
                    Ok(Err(err)) => {
                        return Err(ConnectFailure::new(
                            OutcomeCode::Dns,
                            format!("DNS: cannot resolve {}: {}", target.host, dns_detail(&err)),
                        ))
                    }
                    Err(_) => {
                        return Err(ConnectFailure::new(
                            OutcomeCode::ConnectTimeout,
                            format!("DNS lookup of {} timed out after {limit}", target.host),
                        ))
                    }
                }
            }
        };
        if self.allow_private_targets {
            return Ok(resolved);
        }
        // Any blocked address refuses the whole target, as at creation: a
        // name that mixes public and internal answers is a rebinding attempt
        // or a misconfiguration, and neither should be half-delivered to.
        if let Some(address) = resolved.iter().find(|a| blocked_kind(a.ip()).is_some()) {
            return Err(ConnectFailure::new(
                OutcomeCode::BlockedAddress,
                format!("blocked address {}", address.ip()),
            ));
        }
        if resolved.is_empty() {
            return Err(ConnectFailure::new(
                OutcomeCode::Dns,
                "host resolved to no addresses",
            ));
        }
        Ok(resolved)
    }
}

fn dns_detail(err: &io::Error) -> String {
    let text = err.to_string();
    // getaddrinfo's text, e.g. "failed to lookup address information: Name or service not known".
    text.rsplit(": ").next().unwrap_or(&text).to_string()
}

async fn handshake<T>(io: TokioIo<T>) -> Result<SendRequest<Full<Bytes>>, ConnectFailure>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new()
        // A receiver's response headers have no business being large.
        .max_buf_size(64 * 1024)
        .handshake(io)
        .await
        .map_err(|err| {
            let (code, reason) = describe_hyper(&err);
            ConnectFailure::new(code, reason)
        })?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            debug!(error = %err, "connection ended with an error");
        }
    });
    Ok(sender)
}
