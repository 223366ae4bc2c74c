//! The admin listener on `--admin-addr`: `/healthz` (the process is alive),
//! `/readyz` (the database answers, LISTEN is active or known not to work,
//! and every active webhook's secret opens with a configured key) and `/metrics`
//! (Prometheus text format), and under `/v1/` the management API when it is
//! enabled ([`crate::admin::api`]). Anything else is 404.

pub mod api;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::Pool;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::db::SchemaState;
use crate::delivery::notifier::{ListenState, ListenStatus};
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;

/// What readiness looks at.
#[derive(Clone)]
pub struct Readiness {
    /// The daemon's pool.
    pub pool: Pool,
    /// What LISTEN is doing, set by the notifier.
    pub listen: Arc<ListenStatus>,
    /// What `/metrics` reports.
    pub metrics: Arc<crate::admin::metrics::Metrics>,
    /// This replica's in-flight deliveries.
    pub in_flight: Arc<crate::delivery::claimer::InFlight>,
    /// Ids of the keys this daemon opens webhook secrets with.
    pub secret_key_ids: Arc<[String]>,
    /// The management API, when `WEBHOOKD_ADMIN_TOKEN` is set.
    pub api: Option<Arc<crate::admin::api::ManagementApi>>,
}

/// Binds the admin address (port 0 picks a free one) and serves until shutdown.
/// Returns the bound address (the caller logs it once start-up succeeded).
pub async fn serve(
    address: SocketAddr,
    readiness: Readiness,
    mut shutdown: Shutdown,
) -> Result<SocketAddr> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|err| Error::config(format!("cannot listen on --admin-addr {address}: {err}")))?;
    let bound = listener
        .local_addr()
        .map_err(|err| Error::other(format!("admin listener: {err}")))?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.wait() => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let readiness = readiness.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| respond(request, readiness.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

async fn respond(
    request: Request<Incoming>,
    readiness: Readiness,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    if request.uri().path().starts_with("/v1/") {
        if let Some(api) = &readiness.api {
            return Ok(api.handle(request).await);
        }
    }
    let (status, body) = match request.uri().path() {
        "/healthz" => (StatusCode::OK, r#"{"status":"ok"}"#.to_string()),
        "/metrics" => {
            let text = readiness
                .metrics
                .render(
                    &readiness.pool,
                    readiness.in_flight.total(),
                    &readiness.secret_key_ids,
                )
                .await;
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            return Ok(response);
        }
        "/readyz" => {
            let (database, schema) = database_state(&readiness.pool).await;
            let listen = readiness.listen.get();
            // Poll-only is a working mode (slower to react), not an outage.
            let listen_ok = matches!(listen, ListenState::Active | ListenState::PollOnly);
            let secrets = match database {
                DatabaseState::Ok => secrets_state(&readiness).await,
                _ => None,
            };
            // A look that failed says nothing about the keys: the database
            // field reports what is wrong then.
            let secrets_ok = !matches!(secrets, Some(Some(_)));
            let status = if database == DatabaseState::Ok && listen_ok && secrets_ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = serde_json::json!({
                "status": if status == StatusCode::OK { "ready" } else { "not ready" },
                "database": match database {
                    DatabaseState::Ok => "ok",
                    DatabaseState::Unreachable => "unreachable",
                    DatabaseState::SchemaOutdated => "schema missing or outdated: run webhookd migrate",
                },
                "listen": match listen {
                    ListenState::Active => "active",
                    ListenState::Connecting => "reconnecting",
                    ListenState::PollOnly => "unavailable: no notifications arrive on this connection \
                        (a pooler in transaction mode?); polling every second instead",
                },
                "secrets": match secrets {
                    Some(None) => "ok".to_string(),
                    Some(Some(problem)) => problem,
                    None => "unknown".to_string(),
                },
                "schema": schema.as_ref().map(schema_field),
            });
            (status, body.to_string())
        }
        _ => (
            StatusCode::NOT_FOUND,
            r#"{"error":"not found"}"#.to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// What `/readyz` says of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DatabaseState {
    Ok,
    Unreachable,
    /// Reachable, but the schema is missing or older than this binary.
    SchemaOutdated,
}

/// The database's state, and its schema's when it answered. A newer schema
/// is `Ok`: migrations are expand-only, so this replica keeps delivering.
async fn database_state(pool: &Pool) -> (DatabaseState, Option<SchemaState>) {
    let check = async {
        let client = pool.get().await.map_err(Error::from)?;
        crate::db::schema_state(&**client).await
    };
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(schema)) if schema.is_usable() => (DatabaseState::Ok, Some(schema)),
        Ok(Ok(schema)) => (DatabaseState::SchemaOutdated, Some(schema)),
        _ => (DatabaseState::Unreachable, None),
    }
}

/// `Some(None)` when every active webhook's secret is sealed with a configured
/// key, `Some(Some(why))` when some are not, `None` when the look failed.
async fn secrets_state(readiness: &Readiness) -> Option<Option<String>> {
    let look = async {
        let client = readiness.pool.get().await.map_err(Error::from)?;
        crate::keys::unconfigured_webhooks(&**client, &readiness.secret_key_ids).await
    };
    match tokio::time::timeout(Duration::from_secs(2), look).await {
        Ok(Ok(missing)) => Some(crate::keys::describe_unconfigured(&missing)),
        _ => None,
    }
}

/// `/readyz`'s `schema` field: both versions and what they mean for this
/// replica.
fn schema_field(schema: &SchemaState) -> serde_json::Value {
    let state = match schema {
        SchemaState::Current => "current".to_string(),
        SchemaState::Newer { .. } => {
            "newer: a newer release migrated this database; upgrade this replica".to_string()
        }
        SchemaState::Older { .. } => format!("older: {}", schema.describe()),
        SchemaState::Missing => format!("missing: {}", schema.describe()),
    };
    serde_json::json!({
        "database": schema.database_version(),
        "binary": crate::db::SCHEMA_VERSION,
        "state": state,
    })
}
