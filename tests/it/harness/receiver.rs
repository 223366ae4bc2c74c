//! A real HTTP(S) receiver on 127.0.0.1 that records every request and answers
//! with a status chosen per request by the test.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// When it arrived.
    pub at: Instant,
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// All headers.
    pub headers: HeaderMap,
    /// The raw body.
    pub body: Bytes,
}

impl Recorded {
    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }

    /// The delivery id header.
    pub fn delivery_id(&self) -> String {
        self.header("x-productbridge-delivery-id")
    }
}

/// What to answer: status and optional extra headers.
pub type Responder = dyn Fn(&Recorded) -> (u16, Vec<(&'static str, String)>) + Send + Sync;

/// The receiver.
#[derive(Clone)]
pub struct Receiver {
    /// Where it listens.
    pub address: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    arrived: Arc<Notify>,
}

impl Receiver {
    /// Answers every request with `status`.
    pub async fn with_status(status: u16) -> Receiver {
        Receiver::start(move |_| (status, Vec::new())).await
    }

    /// Plain HTTP receiver answering with `respond`.
    pub async fn start(
        respond: impl Fn(&Recorded) -> (u16, Vec<(&'static str, String)>) + Send + Sync + 'static,
    ) -> Receiver {
        Receiver::start_inner(Arc::new(respond), None).await
    }

    /// HTTPS receiver using `acceptor`.
    pub async fn start_tls(
        acceptor: tokio_native_tls::TlsAcceptor,
        respond: impl Fn(&Recorded) -> (u16, Vec<(&'static str, String)>) + Send + Sync + 'static,
    ) -> Receiver {
        Receiver::start_inner(Arc::new(respond), Some(acceptor)).await
    }

    async fn start_inner(
        respond: Arc<Responder>,
        tls: Option<tokio_native_tls::TlsAcceptor>,
    ) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let address = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let receiver = Receiver {
            address,
            requests: requests.clone(),
            arrived: arrived.clone(),
        };
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let respond = respond.clone();
                let requests = requests.clone();
                let arrived = arrived.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let respond = respond.clone();
                        let requests = requests.clone();
                        let arrived = arrived.clone();
                        async move {
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
                            let recorded = Recorded {
                                at,
                                method,
                                path,
                                headers,
                                body,
                            };
                            let (status, extra) = respond(&recorded);
                            requests.lock().unwrap().push(recorded);
                            arrived.notify_waiters();
                            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            for (name, value) in extra {
                                response.headers_mut().insert(name, value.parse().unwrap());
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    match tls {
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
                });
            }
        });
        receiver
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived; panics after `limit`.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.arrived.notified();
            let requests = self.requests();
            if requests.len() >= n {
                return requests;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "timed out after {limit:?}: {} of {n} requests arrived",
                    self.requests().len()
                );
            }
        }
    }
}
