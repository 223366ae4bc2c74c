//! What one attempt came to: a stable machine code plus the human reason that
//! goes into `last_error` and the attempt log (docs/CONTRACT.md §5 gives the style),
//! and what the receiver asked of us: a later retry (`Retry-After` on 429
//! and 503) or no more deliveries at all (410 Gone), docs/CONTRACT.md §3.

use std::error::Error as StdError;
use std::io;
use std::time::{Duration, SystemTime};

use hyper::header::HeaderValue;
use hyper::StatusCode;

/// The reason of a 410 answer: the delivery fails at once and the webhook
/// is disabled.
pub const GONE_REASON: &str =
    "HTTP 410 Gone: the receiver says this webhook is gone; webhook disabled";

/// Stable code of an attempt's outcome, stored in `delivery_attempts.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeCode {
    /// A 2xx response.
    Delivered,
    /// A non-2xx, non-3xx status.
    HttpStatus,
    /// A 3xx response; never followed.
    Redirect,
    /// DNS, TCP connect or TLS handshake did not finish within the connect timeout.
    ConnectTimeout,
    /// No complete response within the response timeout.
    ResponseTimeout,
    /// Connection refused, reset or closed early.
    Connection,
    /// TLS failed: certificate, protocol, host name.
    Tls,
    /// The host name did not resolve.
    Dns,
    /// The target resolved to a blocked (non-public) address.
    BlockedAddress,
    /// The peer did not speak HTTP/1.1.
    Protocol,
    /// The stored URL is not deliverable (e.g. now fails validation).
    InvalidUrl,
}

impl OutcomeCode {
    /// The code as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeCode::Delivered => "delivered",
            OutcomeCode::HttpStatus => "http_status",
            OutcomeCode::Redirect => "redirect",
            OutcomeCode::ConnectTimeout => "connect_timeout",
            OutcomeCode::ResponseTimeout => "response_timeout",
            OutcomeCode::Connection => "connection",
            OutcomeCode::Tls => "tls",
            OutcomeCode::Dns => "dns",
            OutcomeCode::BlockedAddress => "blocked_address",
            OutcomeCode::Protocol => "protocol",
            OutcomeCode::InvalidUrl => "invalid_url",
        }
    }
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What happened, as a stable code.
    pub code: OutcomeCode,
    /// The HTTP status when a response arrived (3xx included).
    pub status_code: Option<u16>,
    /// Why it failed, for people; `None` on success.
    pub reason: Option<String>,
    /// The first bytes of the response body, lossily decoded.
    pub response_excerpt: Option<String>,
    /// How long a 429 or 503 answer asked us to wait (`Retry-After`);
    /// `None` without the header or when it is malformed.
    pub retry_after: Option<Duration>,
}

impl Outcome {
    /// True for a 2xx response.
    pub fn is_success(&self) -> bool {
        self.code == OutcomeCode::Delivered
    }

    /// The receiver answered 410 Gone: the webhook is to be disabled.
    pub fn is_gone(&self) -> bool {
        self.code == OutcomeCode::HttpStatus && self.status_code == Some(410)
    }

    /// A failure without a response.
    pub fn failure(code: OutcomeCode, reason: impl Into<String>) -> Outcome {
        Outcome {
            code,
            status_code: None,
            reason: Some(reason.into()),
            response_excerpt: None,
            retry_after: None,
        }
    }

    /// Classifies a response: [`Outcome::from_status`], plus its
    /// `Retry-After` header when the status is 429 or 503, read at `now`.
    pub fn from_response(
        status: StatusCode,
        retry_after: Option<&HeaderValue>,
        response_excerpt: Option<String>,
        now: SystemTime,
    ) -> Outcome {
        let asks_to_wait = matches!(status.as_u16(), 429 | 503);
        let retry_after = retry_after
            .filter(|_| asks_to_wait)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, now));
        Outcome {
            retry_after,
            ..Outcome::from_status(status, response_excerpt)
        }
    }

    /// Classifies a response status: 2xx succeeds, 3xx is a redirect that is
    /// not followed, anything else is a failure named by its status.
    pub fn from_status(status: StatusCode, response_excerpt: Option<String>) -> Outcome {
        let (code, reason) = if status.is_success() {
            (OutcomeCode::Delivered, None)
        } else if status.is_redirection() {
            (
                OutcomeCode::Redirect,
                Some(format!("redirect (HTTP {}) not followed", status.as_u16())),
            )
        } else if status == StatusCode::GONE {
            (OutcomeCode::HttpStatus, Some(GONE_REASON.to_string()))
        } else {
            let text = match status.canonical_reason() {
                Some(name) => format!("HTTP {} {name}", status.as_u16()),
                None => format!("HTTP {}", status.as_u16()),
            };
            (OutcomeCode::HttpStatus, Some(text))
        };
        Outcome {
            code,
            status_code: Some(status.as_u16()),
            reason,
            response_excerpt,
            retry_after: None,
        }
    }
}

/// A `Retry-After` value (RFC 9110 §10.2.3) as a delay from `now`: whole
/// seconds, or an HTTP date (a date already past asks for no delay).
/// Anything else is malformed: `None`, and the schedule alone decides.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More seconds than a u64 holds is still a valid (absurd) request:
        // the cap applies to it like to any other.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `300ms`, `10s`, `2m`: the same notation the flags take.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(60_000) && millis >= 60_000 {
        format!("{}m", millis / 60_000)
    } else if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

/// Names an I/O failure the way an operator would say it.
pub fn describe_io(err: &io::Error) -> (OutcomeCode, String) {
    let text = match err.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        io::ErrorKind::ConnectionReset => "connection reset by peer".to_string(),
        io::ErrorKind::ConnectionAborted => "connection aborted".to_string(),
        io::ErrorKind::BrokenPipe => "connection closed while sending (broken pipe)".to_string(),
        io::ErrorKind::UnexpectedEof => "connection closed before a complete response".to_string(),
        io::ErrorKind::AddrNotAvailable => "address not available".to_string(),
        _ => match err.raw_os_error() {
            // EHOSTUNREACH, ENETUNREACH
            Some(113) => "host unreachable".to_string(),
            Some(101) => "network unreachable".to_string(),
            _ => format!("connection failed: {err}"),
        },
    };
    (OutcomeCode::Connection, text)
}

/// Names a failure of the HTTP exchange itself (after connecting).
pub fn describe_hyper(err: &hyper::Error) -> (OutcomeCode, String) {
    if err.is_parse() || err.is_parse_status() || err.is_parse_too_large() {
        return (
            OutcomeCode::Protocol,
            format!("invalid HTTP response: {}", innermost(err)),
        );
    }
    if let Some(io) = find_source::<io::Error>(err) {
        return describe_io(io);
    }
    if err.is_incomplete_message() || err.is_canceled() || err.is_closed() {
        return (
            OutcomeCode::Connection,
            "connection closed before a complete response".to_string(),
        );
    }
    (
        OutcomeCode::Connection,
        format!("HTTP error: {}", innermost(err)),
    )
}

/// Names a TLS handshake failure. native-tls (OpenSSL here) only offers text,
/// so the short OpenSSL reason is picked out of it.
pub fn describe_tls(err: &native_tls::Error) -> String {
    if let Some(io) = find_source::<io::Error>(err) {
        return format!("TLS: {}", describe_io(io).1);
    }
    let text = err.to_string();
    for known in [
        "certificate verify failed",
        "wrong version number",
        "unsupported protocol",
        "handshake failure",
        "unexpected eof while reading",
        "packet length too long",
        "tlsv1 alert internal error",
        "sslv3 alert handshake failure",
    ] {
        if text.contains(known) {
            // OpenSSL appends the verify result in parentheses, e.g.
            // "(self-signed certificate)" or "(Hostname mismatch)".
            let detail = text
                .rfind('(')
                .and_then(|start| {
                    text[start..]
                        .find(')')
                        .map(|end| &text[start..start + end + 1])
                })
                .filter(|_| known == "certificate verify failed");
            return match detail {
                Some(detail) => format!("TLS: {known} {detail}"),
                None => format!("TLS: {known}"),
            };
        }
    }
    format!("TLS: {}", text.lines().next().unwrap_or("handshake failed"))
}

fn innermost(err: &(dyn StdError + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// The first error of type `T` in `err`'s chain of sources.
pub(crate) fn find_source<'a, T: StdError + 'static>(
    err: &'a (dyn StdError + 'static),
) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_classify_as_spec_says() {
        for code in [200, 201, 202, 204, 299] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(Outcome::from_status(status, None).is_success(), "{code}");
        }
        let redirect = Outcome::from_status(StatusCode::FOUND, None);
        assert_eq!(
            redirect.reason.as_deref(),
            Some("redirect (HTTP 302) not followed")
        );
        assert_eq!(redirect.status_code, Some(302));
        let unavailable = Outcome::from_status(StatusCode::SERVICE_UNAVAILABLE, None);
        assert_eq!(
            unavailable.reason.as_deref(),
            Some("HTTP 503 Service Unavailable")
        );
        let odd = Outcome::from_status(StatusCode::from_u16(599).unwrap(), None);
        assert_eq!(odd.reason.as_deref(), Some("HTTP 599"));
    }

    #[test]
    fn gone_names_the_disabled_webhook() {
        let gone = Outcome::from_status(StatusCode::GONE, None);
        assert!(gone.is_gone());
        assert_eq!(gone.reason.as_deref(), Some(GONE_REASON));
        assert!(!Outcome::from_status(StatusCode::NOT_FOUND, None).is_gone());
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date_and_ignores_the_rest() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(parse_retry_after("120", now), secs(120));
        assert_eq!(parse_retry_after(" 0 ", now), secs(0));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            secs(u64::MAX)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now),
            secs(120)
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:50:37 GMT", now),
            secs(60),
            "the obsolete RFC 850 form"
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            secs(0),
            "a date in the past asks for no delay"
        );
        for malformed in ["", "-5", "1.5", "soon", "120s", "Sun, 06 Nov 1994"] {
            assert_eq!(parse_retry_after(malformed, now), None, "{malformed:?}");
        }
    }

    #[test]
    fn only_429_and_503_ask_for_a_delay() {
        let now = SystemTime::now();
        let thirty = HeaderValue::from_static("30");
        for (status, expected) in [
            (429, Some(Duration::from_secs(30))),
            (503, Some(Duration::from_secs(30))),
            (500, None),
            (200, None),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            let outcome = Outcome::from_response(status, Some(&thirty), None, now);
            assert_eq!(outcome.retry_after, expected, "{status}");
        }
        let tomorrow = HeaderValue::from_static("tomorrow");
        let outcome =
            Outcome::from_response(StatusCode::TOO_MANY_REQUESTS, Some(&tomorrow), None, now);
        assert_eq!(outcome.retry_after, None, "malformed: the schedule decides");
    }

    #[test]
    fn durations_print_like_the_flags() {
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    }
}
