//! The benchmark's receiver: counts and timestamps arrivals and verifies
//! nothing, so it is never the bottleneck (its own capacity is measured).
//! Paths choose behaviour: `/ok` answers 204, `/fail` 503, `/hang` never;
//! `/w/{index}` answers 204 like `/ok` and, when asked, records the first
//! arrival per index (the tenants scenario's webhooks).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What the sink has seen.
#[derive(Default)]
pub struct Tally {
    /// Requests to `/ok`.
    pub ok: AtomicU64,
    /// Requests to `/fail` and `/hang`.
    pub bad: AtomicU64,
    /// Delivery ids seen on `/ok`, to count duplicates.
    ids: Mutex<HashSet<u128>>,
    /// Arrivals that repeated a delivery id.
    pub duplicates: AtomicU64,
    /// When the last `/ok` request arrived.
    last_ok: Mutex<Option<Instant>>,
    /// (event data id, arrival) when latency is being recorded.
    arrivals: Mutex<Option<Vec<(String, Instant)>>>,
    /// First arrival per `/w/{index}` when those are being recorded.
    firsts: Mutex<Option<Vec<Option<Instant>>>>,
}

impl Tally {
    /// Starts recording `data.id` and arrival time of each `/ok` request.
    pub fn record_arrivals(&self) {
        *self.arrivals.lock().unwrap() = Some(Vec::new());
    }

    /// The recorded arrivals.
    pub fn take_arrivals(&self) -> Vec<(String, Instant)> {
        self.arrivals.lock().unwrap().take().unwrap_or_default()
    }

    /// Starts recording the first arrival at each of `/w/0` .. `/w/{count - 1}`.
    pub fn record_firsts(&self, count: usize) {
        *self.firsts.lock().unwrap() = Some(vec![None; count]);
    }

    /// The recorded first arrivals, by index (`None`: nothing arrived).
    pub fn take_firsts(&self) -> Vec<Option<Instant>> {
        self.firsts.lock().unwrap().take().unwrap_or_default()
    }

    /// When the last `/ok` request arrived.
    pub fn last_ok(&self) -> Option<Instant> {
        *self.last_ok.lock().unwrap()
    }

    /// Forgets everything (between scenarios).
    pub fn reset(&self) {
        self.ok.store(0, Ordering::Relaxed);
        self.bad.store(0, Ordering::Relaxed);
        self.duplicates.store(0, Ordering::Relaxed);
        self.ids.lock().unwrap().clear();
        *self.last_ok.lock().unwrap() = None;
        *self.arrivals.lock().unwrap() = None;
        *self.firsts.lock().unwrap() = None;
    }
}

/// The running sink.
pub struct Sink {
    /// Where it listens.
    pub address: SocketAddr,
    /// What it saw.
    pub tally: Arc<Tally>,
    /// The accept loops, ended when the sink is dropped.
    listeners: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.abort();
        }
    }
}

impl Sink {
    /// Listens on 127.0.0.1, on its own runtime threads' share of the machine.
    pub async fn start() -> std::io::Result<Sink> {
        Sink::start_on(&[]).await
    }

    /// Listens on 127.0.0.1 and on each of `more` (loopback addresses), all
    /// on the same port, counting into one tally.
    pub async fn start_on(more: &[IpAddr]) -> std::io::Result<Sink> {
        Sink::start_tls_on(more, Vec::new()).await
    }

    /// As [`Sink::start_on`], speaking TLS when `acceptors` are given: one
    /// for 127.0.0.1, then one for each of `more`.
    pub async fn start_tls_on(
        more: &[IpAddr],
        acceptors: Vec<tokio_native_tls::TlsAcceptor>,
    ) -> std::io::Result<Sink> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let tally = Arc::new(Tally::default());
        let mut listeners = vec![listener];
        for ip in more {
            listeners.push(TcpListener::bind((*ip, address.port())).await?);
        }
        let mut acceptors = acceptors.into_iter();
        let listeners = listeners
            .into_iter()
            .map(|listener| serve(listener, tally.clone(), acceptors.next()))
            .collect();
        Ok(Sink {
            address,
            tally,
            listeners,
        })
    }

    /// URL of a behaviour path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}

/// Accepts connections on `listener` (with TLS when `tls` is given) and
/// answers them, counting into `tally`.
fn serve(
    listener: TcpListener,
    shared: Arc<Tally>,
    tls: Option<tokio_native_tls::TlsAcceptor>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                // Out of descriptors (thousands of hosts, several connections
                // each): keep listening and take the next once some closed,
                // rather than refuse every later connection.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let tally = shared.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| respond(request, tally.clone()));
                let http = http1::Builder::new();
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                    Some(tls) => {
                        if let Ok(stream) = tls.accept(stream).await {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                }
            });
        }
    })
}

async fn respond(
    request: Request<Incoming>,
    tally: Arc<Tally>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = request.uri().path().to_string();
    let id = request
        .headers()
        .get("x-productbridge-delivery-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| uuid::Uuid::parse_str(v).ok())
        .map(|v| v.as_u128());
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let status = match path.as_str() {
        "/fail" => {
            tally.bad.fetch_add(1, Ordering::Relaxed);
            StatusCode::SERVICE_UNAVAILABLE
        }
        "/hang" => {
            tally.bad.fetch_add(1, Ordering::Relaxed);
            std::future::pending::<()>().await;
            StatusCode::OK
        }
        _ => {
            let now = Instant::now();
            if let Some(id) = id {
                if !tally.ids.lock().unwrap().insert(id) {
                    tally.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Some(arrivals) = tally.arrivals.lock().unwrap().as_mut() {
                if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) {
                    if let Some(data_id) = value["data"]["id"].as_str() {
                        arrivals.push((data_id.to_string(), now));
                    }
                }
            }
            if let Some(index) = path
                .strip_prefix("/w/")
                .and_then(|i| i.parse::<usize>().ok())
            {
                if let Some(firsts) = tally.firsts.lock().unwrap().as_mut() {
                    if let Some(first @ None) = firsts.get_mut(index) {
                        *first = Some(now);
                    }
                }
            }
            *tally.last_ok.lock().unwrap() = Some(now);
            tally.ok.fetch_add(1, Ordering::Relaxed);
            StatusCode::NO_CONTENT
        }
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    Ok(response)
}

/// Requests per second the sink takes from `connections` keep-alive clients
/// in this process for `duration`: what it could absorb at most.
pub async fn measure_capacity(sink: &Sink, connections: usize, duration: Duration) -> f64 {
    let body = Bytes::from(vec![b'x'; 300]);
    let deadline = tokio::time::Instant::now() + duration;
    let mut clients = Vec::new();
    for _ in 0..connections {
        let address = sink.address;
        let body = body.clone();
        clients.push(tokio::spawn(async move {
            let Ok(stream) = tokio::net::TcpStream::connect(address).await else {
                return 0u64;
            };
            let _ = stream.set_nodelay(true);
            let Ok((mut sender, connection)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            else {
                return 0;
            };
            tokio::spawn(connection);
            let mut sent = 0u64;
            while tokio::time::Instant::now() < deadline {
                let request = Request::post("/ok")
                    .header("host", "sink")
                    .body(Full::new(body.clone()))
                    .expect("static request");
                if sender.ready().await.is_err() {
                    break;
                }
                match sender.send_request(request).await {
                    Ok(response) => {
                        let _ = response.into_body().collect().await;
                        sent += 1;
                    }
                    Err(_) => break,
                }
            }
            sent
        }));
    }
    let started = std::time::Instant::now();
    let mut total = 0;
    for client in clients {
        total += client.await.unwrap_or(0);
    }
    total as f64 / started.elapsed().as_secs_f64()
}
