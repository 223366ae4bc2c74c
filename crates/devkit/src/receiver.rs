//! A webhook receiver on 127.0.0.1 for tests and the demo: plain HTTP or
//! HTTPS, recording every request as it arrives (headers and raw body), and
//! answering as the caller's function says: a status and headers, after a
//! delay, or never. Signatures are checked here with hmac and sha2, not with
//! the product's signing code, so a check holds the product to the contract
//! (docs/CONTRACT.md) rather than to itself.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// When it arrived (before any delay of the answer).
    pub at: Instant,
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// All headers.
    pub headers: HeaderMap,
    /// The raw body, exactly as sent (re-serialised JSON would not verify).
    pub body: Bytes,
    /// Whether `X-ProductBridge-Signature` verified against the secret given
    /// for this path ([`Receiver::verify`]); `None` when none was given.
    pub signature_ok: Option<bool>,
    /// Whether this delivery id had arrived before.
    pub repeat: bool,
    /// The status answered (0 while the answer is being chosen).
    pub status: u16,
}

impl Arrival {
    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }

    /// `X-ProductBridge-Delivery-Id`.
    pub fn delivery_id(&self) -> String {
        self.header("x-productbridge-delivery-id")
    }
}

/// What to answer one request.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Wait this long before answering (work stays in flight meanwhile).
    pub delay: Duration,
    /// Never answer (until the client gives up).
    pub hang: bool,
}

impl Reply {
    /// `status` at once, with a body of `ok`.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
            hang: false,
        }
    }

    /// Never answers.
    pub fn hang() -> Reply {
        Reply {
            hang: true,
            ..Reply::status(200)
        }
    }

    /// The same answer after `delay`.
    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// The same answer with a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

impl From<u16> for Reply {
    fn from(status: u16) -> Reply {
        Reply::status(status)
    }
}

/// Chooses the answer for an arrival.
pub type Respond = dyn Fn(&Arrival) -> Reply + Send + Sync;
/// Runs after a request is recorded and before it is answered (a test's
/// gate holding requests, say).
pub type Hold = dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

/// How to start a [`Receiver`].
pub struct ReceiverBuilder {
    respond: Arc<Respond>,
    tls: Option<tokio_native_tls::TlsAcceptor>,
    hold: Option<Arc<Hold>>,
    events: Option<mpsc::UnboundedSender<Arrival>>,
}

impl ReceiverBuilder {
    /// Answers with `respond` (the default answers 200).
    pub fn respond(mut self, respond: impl Fn(&Arrival) -> Reply + Send + Sync + 'static) -> Self {
        self.respond = Arc::new(respond);
        self
    }

    /// Speaks HTTPS with `acceptor`.
    pub fn tls(mut self, acceptor: tokio_native_tls::TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

    /// Runs `hold` between recording and answering each request.
    pub fn hold(mut self, hold: Arc<Hold>) -> Self {
        self.hold = Some(hold);
        self
    }

    /// Also sends each arrival, with its status, to `events`.
    pub fn events(mut self, events: mpsc::UnboundedSender<Arrival>) -> Self {
        self.events = Some(events);
        self
    }

    /// Binds a free port on 127.0.0.1 and serves until the runtime ends.
    pub async fn start(self) -> std::io::Result<Receiver> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let receiver = Receiver {
            address: listener.local_addr()?,
            state: Arc::default(),
        };
        let shared = Arc::new(Serve {
            state: receiver.state.clone(),
            builder: self,
        });
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(shared.clone().connection(stream));
            }
        });
        Ok(receiver)
    }
}

/// What the receiver has seen, shared with its connections.
#[derive(Default)]
struct State {
    arrivals: Mutex<Vec<Arrival>>,
    secrets: Mutex<HashMap<String, String>>,
    seen: Mutex<HashSet<String>>,
    arrived: Notify,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Serve {
    state: Arc<State>,
    builder: ReceiverBuilder,
}

impl Serve {
    async fn connection(self: Arc<Self>, stream: tokio::net::TcpStream) {
        let serve = self.clone();
        let service = service_fn(move |request| serve.clone().answer(request));
        match &self.builder.tls {
            Some(acceptor) => {
                if let Ok(stream) = acceptor.accept(stream).await {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            }
            None => {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        }
    }

    async fn answer(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        let mut arrival = self.record(request).await;
        let reply = (self.builder.respond)(&arrival);
        arrival.status = reply.status;
        lock(&self.state.arrivals).push(arrival.clone());
        self.state.arrived.notify_waiters();
        if let Some(events) = &self.builder.events {
            let _ = events.send(arrival);
        }
        if let Some(hold) = &self.builder.hold {
            hold().await;
        }
        if reply.hang {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(reply.delay).await;
        let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
        *response.status_mut() =
            hyper::StatusCode::from_u16(reply.status).unwrap_or(hyper::StatusCode::OK);
        for (name, value) in reply.headers {
            if let Ok(value) = value.parse() {
                response.headers_mut().insert(name, value);
            }
        }
        Ok(response)
    }

    async fn record(&self, request: Request<Incoming>) -> Arrival {
        let at = Instant::now();
        let method = request.method().to_string();
        let path = request
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let headers = request.headers().clone();
        let body = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut arrival = Arrival {
            at,
            method,
            path,
            headers,
            body,
            signature_ok: None,
            repeat: false,
            status: 0,
        };
        let secret = lock(&self.state.secrets).get(&arrival.path).cloned();
        arrival.signature_ok = secret.map(|secret| {
            verify_signature(
                &secret,
                &arrival.body,
                &arrival.header("x-productbridge-signature"),
            )
        });
        let id = arrival.delivery_id();
        arrival.repeat = !id.is_empty() && !lock(&self.state.seen).insert(id);
        arrival
    }
}

/// A running receiver; clones share it.
#[derive(Clone)]
pub struct Receiver {
    /// Where it listens.
    pub address: SocketAddr,
    state: Arc<State>,
}

impl Receiver {
    /// A receiver answering 200, to be configured.
    pub fn builder() -> ReceiverBuilder {
        ReceiverBuilder {
            respond: Arc::new(|_| Reply::status(200)),
            tls: None,
            hold: None,
            events: None,
        }
    }

    /// Answers every request with `status`.
    pub async fn with_status(status: u16) -> std::io::Result<Receiver> {
        Receiver::builder()
            .respond(move |_| Reply::status(status))
            .start()
            .await
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Checks the signature of requests to `path` against `secret` from now on.
    pub fn verify(&self, path: &str, secret: &str) {
        lock(&self.state.secrets).insert(path.to_string(), secret.to_string());
    }

    /// Everything received so far.
    pub fn arrivals(&self) -> Vec<Arrival> {
        lock(&self.state.arrivals).clone()
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        lock(&self.state.arrivals).len()
    }

    /// Waits until at least `n` requests arrived; `Err` with what did arrive
    /// after `limit`.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Result<Vec<Arrival>, Vec<Arrival>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.state.arrived.notified();
            let arrivals = self.arrivals();
            if arrivals.len() >= n {
                return Ok(arrivals);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(self.arrivals());
            }
        }
    }
}

/// `sha256=<hex>` of HMAC-SHA256 over `body` with `secret`, as
/// docs/CONTRACT.md defines `X-ProductBridge-Signature`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` is the signature of `body` with `secret`, compared in
/// constant time by the MAC library, as a customer's receiver should.
pub fn verify_signature(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(expected) = header
        .strip_prefix("sha256=")
        .and_then(|hex_signature| hex::decode(hex_signature).ok())
    else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}
