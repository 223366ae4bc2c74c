//! The demo's receiver: a plain HTTP server on 127.0.0.1 that verifies every
//! signature the way a customer's receiver should (HMAC over the raw body,
//! constant-time comparison) and reports each arrival to the demo.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How an endpoint of the demo receiver behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Always 200 when the signature verifies.
    Healthy,
    /// 503 on each delivery's first attempt, 200 afterwards.
    FailFirstAttempt,
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The endpoint's name (its path without the slash).
    pub endpoint: String,
    /// `X-ProductBridge-Event`.
    pub event: String,
    /// `X-ProductBridge-Delivery-Id`.
    pub delivery_id: String,
    /// Whether the signature verified against the endpoint's secret.
    pub signature_ok: bool,
    /// What the receiver answered.
    pub status: u16,
    /// Whether this delivery id had arrived before.
    pub repeat: bool,
}

#[derive(Default)]
struct Endpoints {
    secrets: HashMap<String, (String, Behaviour)>,
    seen: HashSet<String>,
}

/// The running receiver.
pub struct DemoReceiver {
    /// Where it listens.
    pub address: SocketAddr,
    endpoints: Arc<Mutex<Endpoints>>,
}

impl DemoReceiver {
    /// Binds 127.0.0.1 on a free port; arrivals go to `arrivals`.
    pub async fn start(arrivals: mpsc::UnboundedSender<Arrival>) -> std::io::Result<DemoReceiver> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let endpoints = Arc::new(Mutex::new(Endpoints::default()));
        let shared = endpoints.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let endpoints = shared.clone();
                let arrivals = arrivals.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        handle(request, endpoints.clone(), arrivals.clone())
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(DemoReceiver { address, endpoints })
    }

    /// Registers an endpoint at `/{name}` verifying with `secret`.
    pub fn add_endpoint(&self, name: &str, secret: &str, behaviour: Behaviour) {
        let mut endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        endpoints
            .secrets
            .insert(name.to_string(), (secret.to_string(), behaviour));
    }

    /// The URL of an endpoint.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.address)
    }
}

async fn handle(
    request: Request<Incoming>,
    endpoints: Arc<Mutex<Endpoints>>,
    arrivals: mpsc::UnboundedSender<Arrival>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let endpoint = request.uri().path().trim_start_matches('/').to_string();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let event = header("x-productbridge-event");
    let delivery_id = header("x-productbridge-delivery-id");
    let signature = header("x-productbridge-signature");
    // The raw bytes, exactly as sent: re-serialised JSON would not verify.
    let body = match Limited::new(request.into_body(), 1024 * 1024)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::PAYLOAD_TOO_LARGE)),
    };
    let (secret, behaviour, repeat) = {
        let mut endpoints = endpoints
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some((secret, behaviour)) = endpoints.secrets.get(&endpoint).cloned() else {
            return Ok(reply(StatusCode::NOT_FOUND));
        };
        let repeat = !endpoints.seen.insert(delivery_id.clone());
        (secret, behaviour, repeat)
    };
    let signature_ok = verify(&secret, &body, &signature);
    let status = if !signature_ok {
        StatusCode::UNAUTHORIZED
    } else if behaviour == Behaviour::FailFirstAttempt && !repeat {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let _ = arrivals.send(Arrival {
        endpoint,
        event,
        delivery_id,
        signature_ok,
        status: status.as_u16(),
        repeat,
    });
    Ok(reply(status))
}

/// `sha256=<hex>` checked in constant time by the MAC library.
fn verify(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_signature) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_signature) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

fn reply(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
