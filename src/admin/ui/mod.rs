//! The operator page under `/ui/` (docs/OPERATIONS.md, "The operator page";
//! docs/CONTRACT.md §7): read-only HTML views of webhooks, the backlog,
//! recent deliveries and failures, served on the admin address only when
//! `WEBHOOKD_ADMIN_TOKEN` is set, behind a sign-in form that takes the token.
//!
//! Self-contained: server-rendered HTML with inline CSS and SVG, no script,
//! nothing loaded from elsewhere, and a Content-Security-Policy that says so.
//! Reads go through the service layer ([`crate::manage`]) as the API's do.
//! Routing and answers are here; sessions in [`session`], HTML in [`html`],
//! [`views`], [`webhook`] and [`chart`].

mod chart;
mod html;
mod session;
mod views;
mod webhook;

use bytes::Bytes;
use deadpool_postgres::Pool;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use uuid::Uuid;

use crate::admin::api::percent_decode;
use crate::admin::token::AdminToken;
use crate::error::{Error, ErrorKind};
use crate::manage::{self, DeliveryFilter};
use session::Sessions;

/// Largest sign-in form read.
const MAX_FORM: usize = 4 * 1024;
/// Deliveries the webhook view lists.
const DELIVERIES_SHOWN: &str = "50";

/// Headers on every answer: nothing but inline style and data: images may
/// load, forms post only here, no framing, no caching, no referrer.
const SECURITY_HEADERS: [(&str, &str); 6] = [
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("content-type", "text/html; charset=utf-8"),
];

/// The operator page: the token to sign in with, the sessions, the pool.
pub struct OperatorPage {
    token: AdminToken,
    sessions: Sessions,
    pool: Pool,
}

/// One answer before it becomes a response.
struct Answer {
    status: StatusCode,
    body: String,
    location: Option<&'static str>,
    cookie: Option<String>,
}

impl Answer {
    fn html(status: StatusCode, body: String) -> Self {
        Answer {
            status,
            body,
            location: None,
            cookie: None,
        }
    }

    /// A `303 See Other` to `location`.
    fn redirect(location: &'static str) -> Self {
        Answer {
            location: Some(location),
            ..Answer::html(StatusCode::SEE_OTHER, String::new())
        }
    }

    fn with_cookie(self, cookie: String) -> Self {
        Answer {
            cookie: Some(cookie),
            ..self
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from(self.body)));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        for (name, value) in SECURITY_HEADERS {
            headers.insert(name, HeaderValue::from_static(value));
        }
        if let Some(location) = self.location {
            headers.insert(header::LOCATION, HeaderValue::from_static(location));
        }
        if let Some(value) = self.cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(header::SET_COOKIE, value);
        }
        response
    }
}

impl OperatorPage {
    /// The page for `token`, reading through `pool`.
    pub fn new(token: &str, pool: Pool) -> Self {
        OperatorPage {
            token: AdminToken::new(token),
            sessions: Sessions::default(),
            pool,
        }
    }

    /// Answers one request for `/ui` or under `/ui/`.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let signed_in = self.sessions.is_live(request.headers());
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let answer = match (method, path.as_str()) {
            (Method::GET, "/ui") => Answer::redirect("/ui/"),
            (Method::GET, "/ui/login") if signed_in => Answer::redirect("/ui/"),
            (Method::GET, "/ui/login") => Answer::html(StatusCode::OK, views::login(None)),
            (Method::POST, "/ui/login") => self.sign_in(request).await,
            (Method::POST, "/ui/logout") => self.sign_out(request.headers()),
            (Method::GET, _) if !signed_in => Answer::redirect("/ui/login"),
            (Method::GET, _) => self.view(&path, request.uri().query()).await,
            (_, "/ui/login" | "/ui/logout") => Answer::html(
                StatusCode::METHOD_NOT_ALLOWED,
                message_page("Method not allowed", signed_in),
            ),
            _ => Answer::html(StatusCode::NOT_FOUND, message_page("Not found", signed_in)),
        };
        answer.into_response()
    }

    /// Checks the form's token; on success starts a session and goes to the
    /// overview, otherwise shows the form again with 401.
    async fn sign_in(&self, request: Request<Incoming>) -> Answer {
        let form = match Limited::new(request.into_body(), MAX_FORM).collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let token = form_field(&form, "token").unwrap_or_default();
        if token.is_empty() || !self.token.matches(&token) {
            return Answer::html(StatusCode::UNAUTHORIZED, views::login(Some("Wrong token.")));
        }
        let id = self.sessions.start();
        Answer::redirect("/ui/").with_cookie(session::set_cookie(&id))
    }

    fn sign_out(&self, headers: &HeaderMap) -> Answer {
        self.sessions.end(headers);
        Answer::redirect("/ui/login").with_cookie(session::clear_cookie())
    }

    /// A signed-in GET: the overview, a webhook or the failures.
    async fn view(&self, path: &str, query: Option<&str>) -> Answer {
        let rendered = match path {
            "/ui/" => self.overview().await,
            "/ui/failures" => self.failures().await,
            _ => match path.strip_prefix("/ui/webhooks/") {
                Some(id) => self.webhook(id, query).await,
                None => Err(Error::not_found(format!("no page at {}", path))),
            },
        };
        match rendered {
            Ok(body) => Answer::html(StatusCode::OK, body),
            Err(err) => error_answer(&err),
        }
    }

    async fn overview(&self) -> crate::Result<String> {
        let client = self.pool.get().await?;
        Ok(views::overview(
            &manage::overview::overview(&**client).await?,
        ))
    }

    async fn failures(&self) -> crate::Result<String> {
        let client = self.pool.get().await?;
        Ok(views::failures(
            &manage::overview::failures(&**client).await?,
        ))
    }

    async fn webhook(&self, id: &str, query: Option<&str>) -> crate::Result<String> {
        let id = Uuid::parse_str(id).map_err(|_| {
            Error::not_found(format!("no webhook with id {}", manage::view::echo(id)))
        })?;
        let status = query.and_then(|q| form_field(q.as_bytes(), "status"));
        let mut filter = DeliveryFilter::default().with_limit(DELIVERIES_SHOWN)?;
        if let Some(status) = &status {
            filter = filter.with_status(status)?;
        }
        let client = self.pool.get().await?;
        let webhook = manage::overview::webhook(&**client, id).await?;
        let deliveries = manage::deliveries(&**client, id, &filter).await?;
        Ok(webhook::render(&webhook, status.as_deref(), &deliveries))
    }
}

/// A failed view as a page: 404, 400 or, for the database, 500 (logged).
fn error_answer(err: &Error) -> Answer {
    let status = match err.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Input => StatusCode::BAD_REQUEST,
        _ => {
            tracing::warn!(error = %err.one_line(), "operator page request failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    Answer::html(status, message_page(&err.one_line(), true))
}

fn message_page(message: &str, signed_in: bool) -> String {
    let body = format!(
        "<h1>{}</h1><p><a href=\"/ui/\">Overview</a></p>",
        html::esc(message)
    );
    html::page(message, signed_in, &body)
}

/// A form or query field, percent-decoded.
fn form_field(form: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(form)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| percent_decode(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_decoded() {
        assert_eq!(
            form_field(b"a=1&token=abc%2Bd+e", "token").as_deref(),
            Some("abc+d e")
        );
        assert_eq!(form_field(b"tokens=x", "token"), None);
    }
}
