//! Receivers that misbehave: every way ends in the retry schedule with a specific reason.
//!
//! Misbehaviour hyper would not produce comes from [`RawServer`], a bare TCP
//! server on 127.0.0.1 that plays a script on each connection. Every case runs
//! with one retry (1 s timeouts where a timeout is the case) and checks the
//! reason in both `deliveries.last_error` and each `delivery_attempts.reason`,
//! with the stable outcome code beside it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{timeout_at, Instant};
use uuid::Uuid;
use webhookd::config::RunArgs;
use webhookd::EventType;

use crate::harness::tls::test_pki;
use crate::harness::{sample, test_args, Receiver, TestApp};
use crate::ssrf::MapResolver;

const WAIT: Duration = Duration::from_secs(20);
/// No script runs longer than this, whatever the client does.
const SCRIPT_LIMIT: Duration = Duration::from_secs(20);

/// 1 s timeouts and one retry 200 ms after the first failure.
fn fast_args() -> RunArgs {
    RunArgs {
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(1),
        lease: Duration::from_secs(5),
        max_retries: 1,
        retry_base_delay: Duration::from_millis(200),
        ..test_args()
    }
}

/// As [`fast_args`] where no timeout is under test, with room to spare, so
/// that a busy test machine cannot turn a case into a timeout.
fn roomy_args() -> RunArgs {
    RunArgs {
        connect_timeout: Duration::from_secs(3),
        response_timeout: Duration::from_secs(3),
        lease: Duration::from_secs(10),
        ..fast_args()
    }
}

/// A bare TCP server on 127.0.0.1 playing `script` on every connection.
struct RawServer {
    address: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl RawServer {
    async fn start<F, Fut>(script: F) -> RawServer
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let server = RawServer {
            address: listener.local_addr().unwrap(),
            accepted: accepted.clone(),
        };
        // Ends with the test's runtime; each script bounds itself.
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(script(stream));
            }
        });
        server
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}/hook", self.address)
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Reads one request, head and `Content-Length` body; false when the client
/// went away or sent something else first.
async fn read_request(stream: &mut TcpStream) -> bool {
    let deadline = Instant::now() + SCRIPT_LIMIT;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                return true;
            }
        }
        if buffer.len() > 1 << 20 {
            return false;
        }
        match timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buffer.extend_from_slice(&chunk[..n]),
            _ => return false,
        }
    }
}

/// Holds the connection open, reading and discarding, until the client closes it.
async fn wait_for_close(stream: &mut TcpStream) {
    let deadline = Instant::now() + SCRIPT_LIMIT;
    let mut chunk = [0u8; 4096];
    while let Ok(Ok(n)) = timeout_at(deadline, stream.read(&mut chunk)).await {
        if n == 0 {
            return;
        }
    }
}

/// One delivery's end state and its attempt log.
#[derive(Debug)]
struct Settled {
    status: String,
    attempts: i32,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    log: Vec<Attempt>,
}

/// One row of `outbox.delivery_attempts`.
#[derive(Debug, Clone, PartialEq)]
struct Attempt {
    outcome: String,
    status_code: Option<i32>,
    reason: Option<String>,
    excerpt: Option<String>,
    duration_ms: i32,
}

async fn settled(app: &TestApp, webhook: Uuid) -> Settled {
    let client = app.db.client().await;
    let row = client
        .query_one(
            "SELECT id, status, attempts, last_status_code, last_error
             FROM outbox.deliveries WHERE webhook_id = $1",
            &[&webhook],
        )
        .await
        .unwrap();
    let delivery: Uuid = row.get("id");
    let log = client
        .query(
            "SELECT outcome, status_code, reason, response_excerpt, duration_ms
             FROM outbox.delivery_attempts WHERE delivery_id = $1 ORDER BY attempt",
            &[&delivery],
        )
        .await
        .unwrap()
        .iter()
        .map(|a| Attempt {
            outcome: a.get(0),
            status_code: a.get(1),
            reason: a.get(2),
            excerpt: a.get(3),
            duration_ms: a.get(4),
        })
        .collect();
    Settled {
        status: row.get("status"),
        attempts: row.get("attempts"),
        last_status_code: row.get("last_status_code"),
        last_error: row.get("last_error"),
        log,
    }
}

/// Asserts the delivery was tried twice (first attempt and its one retry),
/// both failing alike with `outcome` and `status_code`, and ended `failed`;
/// returns the reason both attempts and `last_error` carry.
fn retried_once_then_failed(settled: &Settled, outcome: &str, status_code: Option<i32>) -> String {
    assert_eq!(settled.status, "failed", "{settled:?}");
    assert_eq!(settled.attempts, 2, "{settled:?}");
    assert_eq!(settled.log.len(), 2, "{settled:?}");
    assert_eq!(settled.last_status_code, status_code, "{settled:?}");
    let reason = settled
        .last_error
        .clone()
        .unwrap_or_else(|| panic!("a failure without a reason: {settled:?}"));
    for attempt in &settled.log {
        assert_eq!(attempt.outcome, outcome, "{settled:?}");
        assert_eq!(attempt.status_code, status_code, "{settled:?}");
        assert_eq!(
            attempt.reason.as_deref(),
            Some(reason.as_str()),
            "{settled:?}"
        );
    }
    reason
}

/// Creates one webhook per URL, runs the daemon with `config` until one
/// event's deliveries to all of them have settled, and returns their ids.
/// Delivers one event to `url` with the fast settings, expects one retry
/// and then `failed` with `outcome`; returns the failure reason.
async fn fast_failure(app: &TestApp, url: String, outcome: &str, status: Option<i32>) -> String {
    let config = app.config(&fast_args());
    let webhooks = deliver_one_event(app, config, &[url], "failed").await;
    retried_once_then_failed(&settled(app, webhooks[0]).await, outcome, status)
}

async fn deliver_one_event(
    app: &TestApp,
    config: webhookd::daemon::DaemonConfig,
    urls: &[String],
    settles_as: &str,
) -> Vec<Uuid> {
    let org = Uuid::new_v4();
    let mut webhooks = Vec::new();
    for url in urls {
        webhooks.push(app.create_webhook(org, url).await.id);
    }
    let daemon = app.spawn_daemon(config);
    app.emit(org, "post.created", sample(EventType::PostCreated))
        .await;
    app.wait_for_deliveries(&format!("status = '{settles_as}'"), urls.len() as i64)
        .await;
    daemon.stop().await.unwrap();
    webhooks
}

#[tokio::test]
async fn error_and_redirect_statuses_fail_with_the_status_named_and_are_retried() {
    let app = TestApp::new().await;
    let receiver = Receiver::start(|request| {
        let status = request.path.trim_start_matches("/s").parse().unwrap_or(200);
        (status, vec![("location", "/followed".to_string())])
    })
    .await;
    let cases = [
        (404, "http_status", "HTTP 404 Not Found"),
        // 410 is not retried: it disables the webhook (outages.rs).
        (429, "http_status", "HTTP 429 Too Many Requests"),
        (499, "http_status", "HTTP 499"),
        (500, "http_status", "HTTP 500 Internal Server Error"),
        (502, "http_status", "HTTP 502 Bad Gateway"),
        (301, "redirect", "redirect (HTTP 301) not followed"),
        (307, "redirect", "redirect (HTTP 307) not followed"),
        (308, "redirect", "redirect (HTTP 308) not followed"),
    ];
    let urls: Vec<String> = cases
        .iter()
        .map(|(status, _, _)| receiver.url(&format!("/s{status}")))
        .collect();
    let webhooks = deliver_one_event(&app, app.config(&roomy_args()), &urls, "failed").await;

    for (webhook, (status, outcome, reason)) in webhooks.into_iter().zip(cases) {
        let settled = settled(&app, webhook).await;
        assert_eq!(
            retried_once_then_failed(&settled, outcome, Some(status)),
            reason
        );
        assert_eq!(
            settled.log[0].excerpt.as_deref(),
            Some("ok"),
            "the body is kept"
        );
    }
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2 * cases.len(), "one retry each, no more");
    assert!(
        requests.iter().all(|r| r.path != "/followed"),
        "a redirect was followed"
    );
}

#[tokio::test]
async fn a_receiver_that_accepts_and_never_answers_times_out_waiting_for_the_response() {
    let app = TestApp::new().await;
    let server = RawServer::start(|mut stream| async move {
        read_request(&mut stream).await;
        wait_for_close(&mut stream).await;
    })
    .await;
    let reason = fast_failure(&app, server.url("http"), "response_timeout", None).await;
    assert_eq!(reason, "timed out after 1s waiting for response");
    assert_eq!(server.connections(), 2, "a fresh connection per attempt");
}

#[tokio::test]
async fn a_body_that_trickles_forever_times_out_and_is_never_a_success() {
    let app = TestApp::new().await;
    let server = RawServer::start(|mut stream| async move {
        if !read_request(&mut stream).await {
            return;
        }
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        if stream.write_all(head).await.is_err() {
            return;
        }
        // One byte every 100 ms, for at most 20 s, until the client hangs up.
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if stream.write_all(b"1\r\nx\r\n").await.is_err() {
                return;
            }
        }
    })
    .await;
    let reason = fast_failure(&app, server.url("http"), "response_timeout", Some(200)).await;
    assert_eq!(
        reason,
        "timed out after 1s reading the response body (HTTP 200)"
    );
}

#[tokio::test]
async fn a_closed_port_fails_as_connection_refused() {
    let app = TestApp::new().await;
    let address = {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("http://{address}/hook");
    let webhooks = deliver_one_event(&app, app.config(&roomy_args()), &[url], "failed").await;

    let settled = settled(&app, webhooks[0]).await;
    let reason = retried_once_then_failed(&settled, "connection", None);
    assert_eq!(reason, "connection refused");
}

#[tokio::test]
async fn a_connection_reset_or_closed_mid_response_fails_with_a_connection_reason() {
    let app = TestApp::new().await;
    let reset = RawServer::start(|mut stream| async move {
        if read_request(&mut stream).await {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
            // An abortive close: RST instead of FIN.
            let _ = stream.set_zero_linger();
        }
    })
    .await;
    let closed = RawServer::start(|mut stream| async move {
        if read_request(&mut stream).await {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
            let _ = stream.shutdown().await;
        }
    })
    .await;
    let urls = [reset.url("http"), closed.url("http")];
    let webhooks = deliver_one_event(&app, app.config(&roomy_args()), &urls, "failed").await;

    let reason = retried_once_then_failed(&settled(&app, webhooks[0]).await, "connection", None);
    assert_eq!(reason, "connection reset by peer");
    let reason = retried_once_then_failed(&settled(&app, webhooks[1]).await, "connection", None);
    assert_eq!(reason, "connection closed before a complete response");
    assert_eq!(reset.connections(), 2);
    assert_eq!(
        closed.connections(),
        2,
        "a request is sent once per attempt"
    );
}

#[tokio::test]
async fn a_receiver_that_does_not_speak_http_fails_as_a_protocol_error() {
    let app = TestApp::new().await;
    let server = RawServer::start(|mut stream| async move {
        if read_request(&mut stream).await {
            let _ = stream.write_all(b"hello\r\n\r\n").await;
            wait_for_close(&mut stream).await;
        }
    })
    .await;
    let webhooks = deliver_one_event(
        &app,
        app.config(&roomy_args()),
        &[server.url("http")],
        "failed",
    )
    .await;

    let settled = settled(&app, webhooks[0]).await;
    let reason = retried_once_then_failed(&settled, "protocol", None);
    assert!(reason.starts_with("invalid HTTP response"), "{reason}");
    assert_eq!(reason, "invalid HTTP response: invalid HTTP version parsed");
}

/// How an endless-body script ended.
#[derive(Debug)]
struct StreamEnded {
    written: u64,
    /// The write error that ended it, `None` if the script's own limits did.
    error: Option<io::ErrorKind>,
}

#[tokio::test]
async fn an_endless_200_body_is_cut_off_after_the_read_cap_and_the_connection_dropped() {
    const CHUNK: usize = 16 * 1024;
    /// Far beyond the 64 KiB read cap plus any socket buffers.
    const MAX_WRITTEN: u64 = 256 * 1024 * 1024;
    let app = TestApp::new().await;
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel();
    let server = RawServer::start(move |mut stream| {
        let ended_tx = ended_tx.clone();
        async move {
            if !read_request(&mut stream).await {
                return;
            }
            let deadline = Instant::now() + SCRIPT_LIMIT;
            let mut chunk = format!("{CHUNK:x}\r\n").into_bytes();
            chunk.extend(std::iter::repeat_n(b'x', CHUNK));
            chunk.extend_from_slice(b"\r\n");
            let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
            let mut ended = StreamEnded {
                written: 0,
                error: None,
            };
            let mut next: &[u8] = head;
            while ended.written < MAX_WRITTEN {
                match timeout_at(deadline, stream.write_all(next)).await {
                    Ok(Ok(())) => ended.written += next.len() as u64,
                    Ok(Err(err)) => {
                        ended.error = Some(err.kind());
                        break;
                    }
                    Err(_) => break,
                }
                next = &chunk;
            }
            let _ = ended_tx.send(ended);
        }
    })
    .await;
    let webhooks = deliver_one_event(
        &app,
        app.config(&roomy_args()),
        &[server.url("http")],
        "delivered",
    )
    .await;

    let settled = settled(&app, webhooks[0]).await;
    assert_eq!(settled.attempts, 1, "{settled:?}");
    assert_eq!(settled.last_status_code, Some(200));
    assert_eq!(settled.last_error, None);
    assert_eq!(settled.log.len(), 1);
    assert_eq!(settled.log[0].outcome, "delivered");
    let limit = roomy_args().response_timeout.as_millis() as i32;
    assert!(
        settled.log[0].duration_ms < limit,
        "the attempt ended at the read cap, not at the response timeout: {settled:?}"
    );
    let excerpt = settled.log[0].excerpt.clone().unwrap_or_default();
    assert!(
        !excerpt.is_empty() && excerpt.len() <= 512 && excerpt.bytes().all(|b| b == b'x'),
        "{excerpt:?}"
    );

    let ended = tokio::time::timeout(WAIT, ended_rx.recv())
        .await
        .expect("the server's writes end within the deadline")
        .unwrap();
    assert!(
        matches!(
            ended.error,
            Some(io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset)
        ),
        "the client closed the connection: {ended:?}"
    );
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_fails_with_a_tls_reason() {
    let app = TestApp::new().await;
    let receiver = Receiver::start_tls(test_pki().acceptor, |_| (200, Vec::new())).await;
    // `localhost` without the system resolver: straight to the receiver.
    let resolver = MapResolver::default();
    resolver.set("localhost", vec![receiver.address]);
    let config = app.config_with(&roomy_args(), &secrets(&app), Arc::new(resolver));
    let url = format!("https://localhost:{}/hook", receiver.address.port());
    let webhooks = deliver_one_event(&app, config, &[url], "failed").await;

    let reason = retried_once_then_failed(&settled(&app, webhooks[0]).await, "tls", None);
    assert_eq!(
        reason,
        "TLS: certificate verify failed (unable to get local issuer certificate)"
    );
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn a_certificate_for_another_host_or_from_an_impostor_ca_fails_with_a_tls_reason() {
    let app = TestApp::new().await;
    let trusted = test_pki();
    // Every test CA has the same name, so this one poses as the trusted CA
    // with a key of its own.
    let impostor = test_pki();
    let for_localhost = Receiver::start_tls(trusted.acceptor, |_| (200, Vec::new())).await;
    let forged = Receiver::start_tls(impostor.acceptor, |_| (200, Vec::new())).await;
    let port = for_localhost.address.port();
    // Names the certificates do or do not carry, pointed at the receivers by hand.
    let resolver = MapResolver::default();
    resolver.set("elsewhere.test", vec![for_localhost.address]);
    resolver.set("localhost", vec![forged.address]);
    let mut config = app.config_with(&roomy_args(), &secrets(&app), Arc::new(resolver));
    config.sender.extra_root_certificates =
        vec![native_tls::Certificate::from_pem(trusted.ca_pem.as_bytes()).unwrap()];
    let urls = [
        format!("https://127.0.0.1:{port}/hook"),
        format!("https://elsewhere.test:{port}/hook"),
        format!("https://localhost:{}/hook", forged.address.port()),
    ];
    let webhooks = deliver_one_event(&app, config, &urls, "failed").await;

    let mut reasons = Vec::new();
    for webhook in webhooks {
        let reason = retried_once_then_failed(&settled(&app, webhook).await, "tls", None);
        assert!(reason.starts_with("TLS: "), "{reason}");
        // The detail is OpenSSL's text, whose capitals changed between
        // versions ("Hostname mismatch" in 1.1, "hostname mismatch" in 3.0).
        reasons.push(format!("TLS: {}", reason["TLS: ".len()..].to_lowercase()));
    }
    assert_eq!(
        reasons,
        [
            "TLS: certificate verify failed (ip address mismatch)",
            "TLS: certificate verify failed (hostname mismatch)",
            "TLS: certificate verify failed (certificate signature failure)",
        ]
    );
    assert!(for_localhost.requests().is_empty());
    assert!(forged.requests().is_empty());
}

#[tokio::test]
async fn a_tls_handshake_that_never_completes_times_out_as_a_connect_timeout() {
    let app = TestApp::new().await;
    // Takes the ClientHello and never answers it.
    let server = RawServer::start(|mut stream| async move {
        wait_for_close(&mut stream).await;
    })
    .await;
    let reason = fast_failure(&app, server.url("https"), "connect_timeout", None).await;
    assert_eq!(reason, "TLS handshake timed out after 1s");
    assert_eq!(server.connections(), 2);
}

/// The test database's key, as `WEBHOOKD_SECRET_KEY` would give it.
fn secrets(app: &TestApp) -> webhookd::config::SecretArgs {
    webhookd::config::SecretArgs::with_key(&app.key)
}
