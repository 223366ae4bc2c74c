//! The management API for the dashboard backend (docs/CONTRACT.md §7), served on the
//! admin address only when `WEBHOOKD_ADMIN_TOKEN` is set.
//!
//! Every request needs `Authorization: Bearer <token>`, compared in constant
//! time ([`crate::admin::token`]). JSON in and out; errors are
//! `{"error": "<one line>"}` with 400, 401, 404, 405 or 409.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use uuid::Uuid;

use crate::admin::token::AdminToken;
use crate::delivery::sender::Resolve;
use crate::error::{Error, ErrorKind};
use crate::keys::Keyring;
use crate::manage::{
    self, view::echo, CreateWebhook, DeliveryFilter, RecoverWindow, SignatureScheme,
};

/// Largest request body read.
const MAX_BODY: usize = 64 * 1024;

/// What the API needs.
pub struct ManagementApi {
    token: AdminToken,
    pool: Pool,
    secrets: Keyring,
    allow_private_targets: bool,
    resolver: Arc<dyn Resolve>,
}

/// The API's settings.
pub struct ApiConfig {
    /// The bearer token.
    pub token: String,
    /// Seals new webhook secrets with its current key.
    pub secrets: Keyring,
    /// As `--allow-private-targets`.
    pub allow_private_targets: bool,
    /// Name resolution for the URL check at creation.
    pub resolver: Arc<dyn Resolve>,
}

type ApiResult = Result<(StatusCode, serde_json::Value), ApiError>;

/// An error answer.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let status = match err.kind() {
            ErrorKind::Input | ErrorKind::Config => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::warn!(error = %err.one_line(), "management API request failed");
        }
        ApiError(status, err.one_line())
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

impl ManagementApi {
    /// The API over the daemon's pool.
    pub fn new(config: ApiConfig, pool: Pool) -> Self {
        ManagementApi {
            token: AdminToken::new(&config.token),
            pool,
            secrets: config.secrets,
            allow_private_targets: config.allow_private_targets,
            resolver: config.resolver,
        }
    }

    /// Answers one request under `/v1/`.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let (status, body) = match self.route(request).await {
            Ok((status, body)) => (status, body),
            Err(ApiError(status, message)) => (status, serde_json::json!({ "error": message })),
        };
        let mut response = if status == StatusCode::NO_CONTENT {
            Response::new(Full::new(Bytes::new()))
        } else {
            let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            response
        };
        *response.status_mut() = status;
        response
    }

    fn authorized(&self, request: &Request<Incoming>) -> bool {
        let presented = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or("");
        self.token.matches(presented)
    }

    // One arm per endpoint, so the whole API reads as one table; each arm
    // only parses its input and calls `manage`.
    async fn route(&self, request: Request<Incoming>) -> ApiResult {
        if !self.authorized(&request) {
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token".to_string(),
            ));
        }
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or("").to_string();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let method = request.method().clone();
        match (method, segments.as_slice()) {
            (Method::POST, ["v1", "organizations", org, "webhooks"]) => {
                let org = parse_id(org, "organization id")?;
                let body: CreateBody = read_json(request).await?;
                self.create(org, body).await
            }
            (Method::GET, ["v1", "organizations", org, "webhooks"]) => {
                let org = parse_id(org, "organization id")?;
                let client = self.pool.get().await.map_err(Error::from)?;
                ok_json(StatusCode::OK, manage::list(&**client, org).await?)
            }
            (Method::DELETE, ["v1", "webhooks", id]) => {
                let id = parse_id(id, "webhook id")?;
                let mut client = self.pool.get().await.map_err(Error::from)?;
                manage::revoke(&mut client, id).await?;
                Ok((StatusCode::NO_CONTENT, serde_json::Value::Null))
            }
            (Method::GET, ["v1", "webhooks", id, "deliveries"]) => {
                let id = parse_id(id, "webhook id")?;
                let filter = delivery_filter(&query)?;
                let client = self.pool.get().await.map_err(Error::from)?;
                ok_json(
                    StatusCode::OK,
                    manage::deliveries(&**client, id, &filter).await?,
                )
            }
            (Method::POST, ["v1", "deliveries", id, "redeliver"]) => {
                let id = parse_id(id, "delivery id")?;
                let client = self.pool.get().await.map_err(Error::from)?;
                manage::redeliver(&**client, id).await?;
                ok_json(
                    StatusCode::ACCEPTED,
                    serde_json::json!({ "id": id, "status": "pending" }),
                )
            }
            (Method::POST, ["v1", "webhooks", id, "enable"]) => {
                let id = parse_id(id, "webhook id")?;
                let client = self.pool.get().await.map_err(Error::from)?;
                manage::enable(&**client, id).await?;
                Ok((StatusCode::NO_CONTENT, serde_json::Value::Null))
            }
            (Method::POST, ["v1", "webhooks", id, "recover"]) => {
                let id = parse_id(id, "webhook id")?;
                let body: RecoverBody = read_json(request).await?;
                let since = parse_time(&body.since, "since")?;
                let until = parse_time(&body.until, "until")?;
                let window = RecoverWindow::new(since, until)?;
                let client = self.pool.get().await.map_err(Error::from)?;
                let requeued = manage::recover(&**client, id, window).await?;
                ok_json(
                    StatusCode::ACCEPTED,
                    serde_json::json!({ "requeued": requeued }),
                )
            }
            (_, ["v1", "organizations", _, "webhooks"])
            | (_, ["v1", "webhooks", _])
            | (_, ["v1", "webhooks", _, "deliveries" | "recover" | "enable"])
            | (_, ["v1", "deliveries", _, "redeliver"]) => Err(ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method not allowed on {path}"),
            )),
            _ => Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {path}"),
            )),
        }
    }

    async fn create(&self, org: Uuid, body: CreateBody) -> ApiResult {
        let request = CreateWebhook {
            organization_id: org,
            url: &body.url,
            label: body.label.as_deref().unwrap_or(""),
            allow_private_targets: self.allow_private_targets,
            signature_scheme: match body.signature_scheme.as_deref() {
                Some(name) => SignatureScheme::parse(name)?,
                None => SignatureScheme::default(),
            },
        };
        let client = self.pool.get().await.map_err(Error::from)?;
        let created = manage::create(
            &**client,
            self.secrets.current(),
            self.resolver.as_ref(),
            &request,
        )
        .await?;
        ok_json(StatusCode::CREATED, created)
    }
}

/// A JSON answer.
fn ok_json(status: StatusCode, body: impl serde::Serialize) -> ApiResult {
    Ok((status, serde_json::to_value(body).unwrap_or_default()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    url: String,
    label: Option<String>,
    signature_scheme: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoverBody {
    since: String,
    until: String,
}

async fn read_json<T: for<'de> Deserialize<'de>>(
    request: Request<Incoming>,
) -> Result<T, ApiError> {
    let body = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| {
            bad_request(format!(
                "request body is larger than {} KiB",
                MAX_BODY / 1024
            ))
        })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|err| bad_request(format!("invalid JSON body: {err}")))
}

fn parse_id(text: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text)
        .map_err(|_| bad_request(format!("{what} \"{}\" is not a UUID", echo(text))))
}

fn parse_time(text: &str, field: &str) -> Result<DateTime<Utc>, ApiError> {
    Ok(manage::parse_time(text, field)?)
}

/// `status`, `limit`, `before` and `before_id` of the deliveries listing.
fn delivery_filter(query: &str) -> Result<DeliveryFilter, ApiError> {
    let mut filter = DeliveryFilter::default();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        filter = match key {
            _ if value.is_empty() && ["status", "limit", "before", "before_id"].contains(&key) => {
                filter
            }
            "status" => filter.with_status(&value)?,
            "limit" => filter.with_limit(&value)?,
            "before" => filter.with_before(parse_time(&value, "before")?),
            "before_id" => filter.with_before_id(parse_id(&value, "before_id")?),
            other => {
                return Err(bad_request(format!(
                    "unknown query parameter \"{}\"",
                    echo(other)
                )))
            }
        };
    }
    Ok(filter)
}

/// Enough of percent-decoding for query values and form fields (`%3A`, `+`).
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            percent_decode("2026-05-09T12%3A34%3A56Z"),
            "2026-05-09T12:34:56Z"
        );
        assert_eq!(percent_decode("a+b%2"), "a b%2");
        // A multi-byte character after `%` is kept, not split.
        assert_eq!(percent_decode("%é1"), "%é1");
    }

    #[test]
    fn delivery_filters_are_validated() {
        let filter =
            delivery_filter("status=failed&limit=5&before=2026-05-09T12%3A34%3A56Z").unwrap();
        assert_eq!(filter.status.as_deref(), Some("failed"));
        assert_eq!(filter.limit, 5);
        assert!(filter.before.is_some());
        assert!(delivery_filter("status=lost").is_err());
        assert!(delivery_filter("limit=0").is_err());
        assert!(delivery_filter("limit=101").is_err());
        assert!(delivery_filter("before=yesterday").is_err());
        assert!(delivery_filter("colour=red").is_err());
    }
}
