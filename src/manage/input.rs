//! Checking what the CLI and the API were asked to do, before any of it
//! touches the database: a new webhook's URL, label and resolved addresses,
//! a page of deliveries, a window of deliveries to recover.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::delivery::sender::Resolve;
use crate::error::{Error, Result};
use crate::guard::{blocked_kind, TargetUrl};
use crate::signing::SignatureScheme;

use super::view::echo;

/// Longest label accepted.
pub const MAX_LABEL_LEN: usize = 200;

/// Most deliveries per page.
pub const MAX_PAGE: i64 = 100;

/// Deliveries per page when the caller does not say.
const DEFAULT_PAGE: i64 = 20;

/// The states a delivery can be in, as `status` filters name them.
const DELIVERY_STATUSES: [&str; 4] = ["pending", "delivered", "failed", "cancelled"];

/// What creating a webhook needs.
pub struct CreateWebhook<'a> {
    /// Owning organization.
    pub organization_id: Uuid,
    /// Target URL as typed.
    pub url: &'a str,
    /// Label (may be empty).
    pub label: &'a str,
    /// Lift the https and public-address rules.
    pub allow_private_targets: bool,
    /// How its requests are signed.
    pub signature_scheme: SignatureScheme,
}

/// The checks that need neither the network nor the database: URL syntax,
/// scheme, IP-literal addresses and the label. Callers run it before
/// connecting, so bad input is reported as such even when the database is down.
pub fn validate(request: &CreateWebhook<'_>) -> Result<TargetUrl> {
    let target = TargetUrl::parse(request.url, request.allow_private_targets)
        .map_err(|reason| Error::input(format!("invalid webhook URL: {reason}")))?;
    validate_label(request.label)?;
    Ok(target)
}

fn validate_label(label: &str) -> Result<()> {
    if label.chars().count() > MAX_LABEL_LEN {
        return Err(Error::input(format!(
            "label is {} characters long; at most {MAX_LABEL_LEN} are allowed",
            label.chars().count()
        )));
    }
    if label.chars().any(char::is_control) {
        return Err(Error::input("label must not contain control characters"));
    }
    Ok(())
}

/// Every address the host resolves to must be public; the sender checks again
/// at each delivery, since DNS can change.
pub(super) async fn check_resolves_public(
    target: &TargetUrl,
    resolver: &dyn Resolve,
) -> Result<()> {
    if target.host.parse::<std::net::IpAddr>().is_ok() {
        // IP literals were checked by TargetUrl::parse.
        return Ok(());
    }
    let host = &target.host;
    let addresses = resolver.resolve(host, target.port).await.map_err(|err| {
        Error::input(format!(
            "invalid webhook URL: cannot resolve host {host}: {err}"
        ))
    })?;
    if addresses.is_empty() {
        return Err(Error::input(format!(
            "invalid webhook URL: host {host} resolves to no addresses"
        )));
    }
    for address in addresses {
        if let Some(kind) = blocked_kind(address.ip()) {
            return Err(Error::input(format!(
                "invalid webhook URL: host {host} resolves to a {kind} address ({}), which is \
                 blocked (use --allow-private-targets for local testing)",
                address.ip()
            )));
        }
    }
    Ok(())
}

/// An event to emit, as the CLI was given it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The organization it belongs to.
    pub organization_id: Uuid,
    /// Its type name (the database checks it).
    pub event: String,
    /// Its `data`.
    pub data: serde_json::Value,
}

impl NewEvent {
    /// `data` is JSON text (`webhookd emit --data`); the database checks
    /// the rest.
    pub fn parse(organization_id: Uuid, event: String, data: &str) -> Result<Self> {
        let data = serde_json::from_str(data)
            .map_err(|err| Error::input(format!("--data is not valid JSON: {err}")))?;
        Ok(NewEvent {
            organization_id,
            event,
            data,
        })
    }
}

/// Which of a webhook's deliveries to list: newest first, optionally only
/// one status and only those created before a time.
#[derive(Debug, Clone)]
pub struct DeliveryFilter {
    /// Only this status.
    pub status: Option<String>,
    /// Only created before this …
    pub before: Option<DateTime<Utc>>,
    /// … or at that very time with a smaller id: the last item of a page,
    /// so that deliveries sharing a creation time are not skipped.
    pub before_id: Option<Uuid>,
    /// At most this many.
    pub limit: i64,
}

impl Default for DeliveryFilter {
    fn default() -> Self {
        DeliveryFilter {
            status: None,
            before: None,
            before_id: None,
            limit: DEFAULT_PAGE,
        }
    }
}

impl DeliveryFilter {
    /// Only deliveries in `status` (one of pending, delivered, failed, cancelled).
    pub fn with_status(self, status: &str) -> Result<Self> {
        if !DELIVERY_STATUSES.contains(&status) {
            return Err(Error::input(format!(
                "status must be one of {}, got \"{}\"",
                DELIVERY_STATUSES.join(", "),
                echo(status)
            )));
        }
        Ok(DeliveryFilter {
            status: Some(status.to_string()),
            ..self
        })
    }

    /// At most `limit` deliveries, a whole number from 1 to [`MAX_PAGE`].
    pub fn with_limit(self, limit: &str) -> Result<Self> {
        let limit = limit
            .parse::<i64>()
            .ok()
            .filter(|limit| (1..=MAX_PAGE).contains(limit))
            .ok_or_else(|| {
                Error::input(format!("limit must be a whole number from 1 to {MAX_PAGE}"))
            })?;
        Ok(DeliveryFilter { limit, ..self })
    }

    /// Only deliveries created before `before`.
    pub fn with_before(self, before: DateTime<Utc>) -> Self {
        DeliveryFilter {
            before: Some(before),
            ..self
        }
    }

    /// With [`Self::with_before`]: deliveries created at that very time
    /// whose id is smaller than `before_id` count as before it too.
    pub fn with_before_id(self, before_id: Uuid) -> Self {
        DeliveryFilter {
            before_id: Some(before_id),
            ..self
        }
    }
}

/// The creation times of the failed deliveries to recover: [since, until),
/// or from `since` on when there is no `until`.
#[derive(Debug, Clone, Copy)]
pub struct RecoverWindow {
    pub(super) since: DateTime<Utc>,
    pub(super) until: Option<DateTime<Utc>>,
}

impl RecoverWindow {
    /// A window that is not empty.
    pub fn new(since: DateTime<Utc>, until: DateTime<Utc>) -> Result<Self> {
        if since >= until {
            return Err(Error::input("\"since\" must be earlier than \"until\""));
        }
        Ok(RecoverWindow {
            since,
            until: Some(until),
        })
    }

    /// Everything created from `since` on, by the database's clock.
    pub fn since(since: DateTime<Utc>) -> Self {
        RecoverWindow { since, until: None }
    }
}

/// An RFC 3339 time given as `field`; the error names the field and echoes
/// what was given.
pub fn parse_time(text: &str, field: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| {
            Error::input(format!(
                "\"{field}\" must be an RFC 3339 time such as 2026-05-09T12:34:56Z, got \"{}\"",
                echo(text)
            ))
        })
}
