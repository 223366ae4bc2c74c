//! The admin server: binds `--admin-addr`, routes each request, and runs as a
//! service of the daemon, so neither its listener nor its connections outlive
//! the daemon.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use deadpool_postgres::Pool;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::admin::api::ManagementApi;
use crate::admin::metrics::Metrics;
use crate::admin::ui::OperatorPage;
use crate::delivery::claimer::InFlight;
use crate::delivery::notifier::ListenStatus;
use crate::error::{Error, Result};
use crate::service::Service;
use crate::shutdown::Shutdown;

/// What the admin server answers from.
#[derive(Clone)]
pub struct AdminState {
    /// The daemon's pool.
    pub pool: Pool,
    /// What LISTEN is doing, set by the notifier.
    pub listen: Arc<ListenStatus>,
    /// What `/metrics` reports.
    pub metrics: Arc<Metrics>,
    /// This replica's in-flight deliveries.
    pub in_flight: Arc<InFlight>,
    /// Ids of the keys this daemon opens webhook secrets with.
    pub secret_key_ids: Arc<[String]>,
    /// The management API, when `WEBHOOKD_ADMIN_TOKEN` is set.
    pub api: Option<Arc<ManagementApi>>,
    /// The operator page under `/ui/`, with the API.
    pub ui: Option<Arc<OperatorPage>>,
}

/// The admin listener, bound and not yet serving.
pub struct AdminServer {
    listener: TcpListener,
    address: SocketAddr,
    state: AdminState,
}

impl AdminServer {
    /// Binds `address` (port 0 picks a free one).
    pub async fn bind(address: SocketAddr, state: AdminState) -> Result<Self> {
        let listener = TcpListener::bind(address).await.map_err(|err| {
            Error::config(format!("cannot listen on --admin-addr {address}: {err}"))
        })?;
        let address = listener
            .local_addr()
            .map_err(|err| Error::other(format!("admin listener: {err}")))?;
        Ok(AdminServer {
            listener,
            address,
            state,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }
}

impl Service for AdminServer {
    const NAME: &'static str = "admin server";

    /// Accepts until shutdown, then closes the listener; the connections
    /// open then are served until the daemon stops the service.
    async fn run(self, mut shutdown: Shutdown) {
        let AdminServer {
            listener, state, ..
        } = self;
        let mut connections = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.wait() => break,
            };
            while connections.try_join_next().is_some() {}
            let Ok((stream, _)) = accepted else { continue };
            let state = state.clone();
            let service = service_fn(move |request| respond(request, state.clone()));
            connections
                .spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
        drop(listener);
        while connections.join_next().await.is_some() {}
    }
}

async fn respond(
    request: Request<Incoming>,
    state: AdminState,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    if request.uri().path().starts_with("/v1/") {
        if let Some(api) = &state.api {
            return Ok(api.handle(request).await);
        }
    }
    let path = request.uri().path();
    if path == "/ui" || path.starts_with("/ui/") {
        if let Some(ui) = &state.ui {
            return Ok(ui.handle(request).await);
        }
    }
    let (status, body, content_type) = match request.uri().path() {
        "/healthz" => (StatusCode::OK, r#"{"status":"ok"}"#.to_string(), JSON),
        "/metrics" => {
            let text = state
                .metrics
                .render(&state.pool, state.in_flight.total(), &state.secret_key_ids)
                .await;
            (StatusCode::OK, text, PROMETHEUS_TEXT)
        }
        "/readyz" => {
            let (status, body) = crate::admin::readiness::readyz(&state).await;
            (status, body, JSON)
        }
        _ => (
            StatusCode::NOT_FOUND,
            r#"{"error":"not found"}"#.to_string(),
            JSON,
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    Ok(response)
}

const JSON: &str = "application/json";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
