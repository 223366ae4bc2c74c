//! Stage 3: send one signed POST and say what came of it.
//!
//! The sender owns the HTTP side: its own small keep-alive pool per origin,
//! the address guard (through [`connect::Connector`]), the connect and response
//! timeouts, and a cap on how much of a response body is read. It knows
//! nothing of the database; the completer records what it returns.

pub mod connect;
pub mod outcome;
mod pool;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request, Response};
use tokio::time::timeout_at;
use uuid::Uuid;

pub use connect::{Resolve, SystemResolver};
pub use outcome::{describe_tls, format_duration, Outcome, OutcomeCode};

use crate::error::{Error, Result};
use crate::guard::TargetUrl;
use connect::Connector;
use outcome::describe_hyper;
use pool::{ConnectionPool, Lease, PoolLimits, PooledConnection};

/// Default connect timeout (DNS + TCP + TLS), docs/CONTRACT.md §3.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default time from sending to a complete response, docs/CONTRACT.md §3.
pub const RESPONSE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// How much of a response body is read at most; the rest is never read.
pub const RESPONSE_READ_CAP: usize = 64 * 1024;
/// How much of it is kept in the attempt log.
pub const RESPONSE_EXCERPT_LEN: usize = 512;
/// Idle connections kept in all. Each holds its buffers, a task and, for
/// HTTPS, a TLS session (about 40 KiB plain, more with TLS), so this caps the
/// pool at a few MiB however many receiver hosts there are; it is a quarter
/// of the default `--max-in-flight`, enough for the hosts that are busy right
/// now to find a connection (docs/ARCHITECTURE.md, "Connections").
pub const MAX_IDLE_DEFAULT: usize = 128;
/// Connections per origin, idle or in use. A fast receiver answers in about
/// a millisecond, so 32 connections carry tens of thousands of requests a
/// second to one host; a request beyond them waits briefly for one to come
/// free instead of paying a new handshake. Soft: past that wait it opens its
/// own, so a webhook whose requests hang cannot hold up other webhooks on
/// the same host.
pub const MAX_PER_ORIGIN_DEFAULT: usize = 32;
/// Idle connections kept per origin: as many as it may have, so a host at
/// steady concurrency never has a connection closed only to open it again.
/// The global cap is what bounds memory.
pub const MAX_IDLE_PER_ORIGIN_DEFAULT: usize = MAX_PER_ORIGIN_DEFAULT;
/// How long an idle connection is kept: below the keep-alive timeout of most
/// servers and load balancers (60 s and more), so a reused connection is
/// rarely one the receiver is closing; and short enough that a quiet or
/// revoked webhook's host holds nothing for long.
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(20);
/// `User-Agent` of every request.
pub const USER_AGENT_VALUE: &str = concat!("ProductBridge-Webhooks/", env!("CARGO_PKG_VERSION"));

/// The sender's settings.
#[derive(Clone)]
pub struct SenderConfig {
    /// DNS + TCP + TLS.
    pub connect_timeout: Duration,
    /// From sending the request to the end of the (capped) response.
    pub response_timeout: Duration,
    /// Allow `http://` and non-public addresses.
    pub allow_private_targets: bool,
    /// Extra trusted roots (PEM), e.g. a test CA; the system roots stay trusted.
    pub extra_root_certificates: Vec<native_tls::Certificate>,
    /// Connections per origin, idle or in use; more requests wait.
    pub max_per_origin: usize,
    /// Idle connections kept in all, least recently used closed first.
    pub max_idle: usize,
    /// Idle connections kept per origin.
    pub max_idle_per_origin: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
    /// Name resolution; the system resolver unless a test injects one.
    pub resolver: Arc<dyn Resolve>,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            response_timeout: RESPONSE_TIMEOUT_DEFAULT,
            allow_private_targets: false,
            extra_root_certificates: Vec::new(),
            max_per_origin: MAX_PER_ORIGIN_DEFAULT,
            max_idle: MAX_IDLE_DEFAULT,
            max_idle_per_origin: MAX_IDLE_PER_ORIGIN_DEFAULT,
            idle_timeout: IDLE_TIMEOUT_DEFAULT,
            resolver: Arc::new(SystemResolver),
        }
    }
}

/// One request to make.
#[derive(Debug, Clone)]
pub struct OutgoingRequest<'a> {
    /// Where to.
    pub target: &'a TargetUrl,
    /// The envelope bytes.
    pub body: Bytes,
    /// `X-ProductBridge-Event`.
    pub event: &'a str,
    /// `X-ProductBridge-Signature`.
    pub signature: &'a str,
    /// `X-ProductBridge-Webhook-Id`.
    pub webhook_id: Uuid,
    /// `X-ProductBridge-Delivery-Id`.
    pub delivery_id: Uuid,
    /// The webhook's signature scheme's own headers (`webhook-id`,
    /// `webhook-timestamp`, `webhook-signature` for `standard`), if any.
    pub scheme_headers: &'a [(&'static str, String)],
}

/// Sends webhook requests. Share one per daemon (it holds the pool).
pub struct Sender {
    config: SenderConfig,
    connector: Connector,
    pool: ConnectionPool,
}

impl Sender {
    /// Builds the TLS connector once; fails on an unusable TLS setup.
    pub fn new(config: SenderConfig) -> Result<Sender> {
        let mut tls = native_tls::TlsConnector::builder();
        tls.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
        for root in &config.extra_root_certificates {
            tls.add_root_certificate(root.clone());
        }
        let tls = tls
            .build()
            .map_err(|err| Error::config(format!("cannot set up TLS: {err}")))?;
        let connector = Connector {
            connect_timeout: config.connect_timeout,
            allow_private_targets: config.allow_private_targets,
            tls: tokio_native_tls::TlsConnector::from(tls),
            resolver: config.resolver.clone(),
        };
        let pool = ConnectionPool::new(PoolLimits {
            max_per_origin: config.max_per_origin,
            max_idle: config.max_idle,
            max_idle_per_origin: config.max_idle_per_origin,
            idle_timeout: config.idle_timeout,
        });
        Ok(Sender {
            config,
            connector,
            pool,
        })
    }

    /// Makes one attempt. Never fails: every problem is an [`Outcome`].
    pub async fn send(&self, request: &OutgoingRequest<'_>) -> Outcome {
        // Waiting for one of the host's connections counts as connecting.
        let deadline = tokio::time::Instant::now() + self.config.connect_timeout;
        let slot = match self.pool.acquire(request.target, deadline).await {
            Lease::Open(slot) => slot,
            // A pooled connection the receiver closed while idle fails before
            // the request is written; that is not the receiver's fault, so one
            // fresh connection is tried before the attempt counts as failed.
            Lease::Reused(connection) => match self.exchange(connection, request).await {
                Exchange::Done(outcome) => return outcome,
                Exchange::StaleConnection(slot) => slot,
            },
        };
        match self.connector.connect(request.target).await {
            Ok(sender) => match self.exchange(slot.connected(sender), request).await {
                Exchange::Done(outcome) => outcome,
                Exchange::StaleConnection(_) => Outcome::failure(
                    OutcomeCode::Connection,
                    "connection closed before a complete response",
                ),
            },
            Err(failure) => Outcome::failure(failure.code, failure.reason),
        }
    }

    /// Drops idle connections past their idle timeout.
    pub fn prune_idle_connections(&self) {
        self.pool.prune();
    }

    /// Idle pooled connections right now.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle_count()
    }

    async fn exchange(
        &self,
        mut connection: PooledConnection,
        request: &OutgoingRequest<'_>,
    ) -> Exchange {
        let sender = &mut connection.sender;
        let deadline = tokio::time::Instant::now() + self.config.response_timeout;
        let limit = format_duration(self.config.response_timeout);
        let timed_out = || {
            Outcome::failure(
                OutcomeCode::ResponseTimeout,
                format!("timed out after {limit} waiting for response"),
            )
        };

        if timeout_at(deadline, sender.ready())
            .await
            .map(|ready| ready.is_err())
            .unwrap_or(true)
        {
            return Exchange::StaleConnection(connection.into_slot());
        }
        let started = Instant::now();
        let response =
            match timeout_at(deadline, sender.try_send_request(build_request(request))).await {
                Err(_) => return Exchange::Done(timed_out()),
                Ok(Ok(response)) => response,
                Ok(Err(err)) => {
                    return match send_failed(err, started) {
                        Ok(()) => Exchange::StaleConnection(connection.into_slot()),
                        Err(outcome) => Exchange::Done(outcome),
                    }
                }
            };
        let status = response.status();
        let retry_after = response.headers().get(RETRY_AFTER).cloned();
        match timeout_at(deadline, read_capped(response)).await {
            Err(_) => Exchange::Done(body_failed(
                status,
                OutcomeCode::ResponseTimeout,
                format!(
                    "timed out after {limit} reading the response body (HTTP {})",
                    status.as_u16()
                ),
            )),
            Ok(Err(err)) => {
                let (code, reason) = describe_hyper(&err);
                let http = status.as_u16();
                let reason = format!("{reason} (while reading the body of HTTP {http})");
                Exchange::Done(body_failed(status, code, reason))
            }
            Ok(Ok(read)) => {
                if read.complete {
                    self.pool.checkin(connection);
                }
                Exchange::Done(Outcome::from_response(
                    status,
                    retry_after.as_ref(),
                    read.excerpt,
                    std::time::SystemTime::now(),
                ))
            }
        }
    }
}

/// A request that got no response. A pooled connection that was dead
/// before the request went out (hyper hands the request back, or the
/// connection closed at once) is stale (`Ok`) and the request is sent again
/// on a fresh one; anything else is the attempt's outcome.
fn send_failed(
    err: hyper::client::conn::TrySendError<hyper::Request<Full<Bytes>>>,
    started: Instant,
) -> Result<(), Outcome> {
    let never_written = err.message().is_some();
    let error = err.into_error();
    if never_written
        || (error.is_incomplete_message() && started.elapsed() < Duration::from_millis(50))
    {
        return Ok(());
    }
    let (code, reason) = describe_hyper(&error);
    Err(Outcome::failure(code, reason))
}

/// A response whose body could not be read: the attempt failed, but the
/// status it answered with is kept.
fn body_failed(status: hyper::StatusCode, code: OutcomeCode, reason: String) -> Outcome {
    Outcome {
        status_code: Some(status.as_u16()),
        ..Outcome::failure(code, reason)
    }
}

enum Exchange {
    Done(Outcome),
    /// The pooled connection was dead before the request went out; its
    /// place, to open a fresh one in.
    StaleConnection(pool::Slot),
}

fn build_request(request: &OutgoingRequest<'_>) -> Request<Full<Bytes>> {
    let mut http = Request::new(Full::new(request.body.clone()));
    *http.method_mut() = Method::POST;
    *http.uri_mut() = request
        .target
        .path_and_query()
        .parse()
        .unwrap_or_else(|_| hyper::Uri::from_static("/"));
    let headers = http.headers_mut();
    let value =
        |text: &str| HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""));
    headers.insert(HOST, value(&request.target.host_header()));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    headers.insert("x-productbridge-event", value(request.event));
    headers.insert("x-productbridge-signature", value(request.signature));
    headers.insert(
        "x-productbridge-webhook-id",
        value(&request.webhook_id.to_string()),
    );
    headers.insert(
        "x-productbridge-delivery-id",
        value(&request.delivery_id.to_string()),
    );
    for (name, text) in request.scheme_headers {
        headers.insert(*name, value(text));
    }
    http
}

struct CappedBody {
    excerpt: Option<String>,
    /// Read to the end, so the connection can carry another request.
    complete: bool,
}

/// Reads at most [`RESPONSE_READ_CAP`] bytes of the body: an endless body is
/// cut off (and its connection dropped), never buffered whole.
async fn read_capped(response: Response<Incoming>) -> Result<CappedBody, hyper::Error> {
    let mut body = response.into_body();
    let mut kept = Vec::new();
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(data) = frame.data_ref() {
            read += data.len();
            let room = RESPONSE_EXCERPT_LEN.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
            if read > RESPONSE_READ_CAP {
                return Ok(CappedBody {
                    excerpt: excerpt(kept),
                    complete: false,
                });
            }
        }
    }
    Ok(CappedBody {
        excerpt: excerpt(kept),
        complete: true,
    })
}

fn excerpt(bytes: Vec<u8>) -> Option<String> {
    if bytes.is_empty() {
        return None;
    }
    // Lossy: a cut may split a character, and the log is for people.
    Some(String::from_utf8_lossy(&bytes).replace('\0', ""))
}
