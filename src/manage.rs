//! Managing webhooks: create (validate the URL, generate and seal the secret),
//! list, revoke, redeliver. Shared by the CLI and, later, the management API.

use serde::Serialize;
use uuid::Uuid;

use crate::db::webhooks::{self as queries, NewWebhook, WebhookRow};
use crate::delivery::sender::Resolve;
use crate::error::{Error, Result};
use crate::event::format_occurred_at;
use crate::guard::{blocked_kind, TargetUrl};
use crate::signing::{SecretBox, SigningSecret};

/// Longest label accepted.
pub const MAX_LABEL_LEN: usize = 200;

/// A webhook as the CLI prints it (docs/CONTRACT.md §6). `secret` only on creation.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookView {
    /// Webhook id.
    pub id: Uuid,
    /// Owning organization.
    pub organization_id: Uuid,
    /// Target URL.
    pub url: String,
    /// Label.
    pub label: String,
    /// `active` or `revoked`.
    pub status: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// The signing secret, present exactly once: in the answer to create.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Status fields (list only).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub health: Option<WebhookHealthView>,
}

/// The `outbox.webhook_status` fields of a listed webhook.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookHealthView {
    /// Revocation time.
    pub revoked_at: Option<String>,
    /// Latest 2xx.
    pub last_success_at: Option<String>,
    /// Latest failed attempt.
    pub last_failure_at: Option<String>,
    /// Its reason.
    pub last_failure_reason: Option<String>,
    /// Pending deliveries.
    pub pending_deliveries: i64,
    /// Failed deliveries.
    pub failed_deliveries: i64,
}

impl WebhookView {
    fn from_row(row: WebhookRow, secret: Option<String>, with_health: bool) -> Self {
        let health = with_health.then(|| WebhookHealthView {
            revoked_at: row.revoked_at.map(format_occurred_at),
            last_success_at: row.last_success_at.map(format_occurred_at),
            last_failure_at: row.last_failure_at.map(format_occurred_at),
            last_failure_reason: row.last_failure_reason.clone(),
            pending_deliveries: row.pending_deliveries,
            failed_deliveries: row.failed_deliveries,
        });
        WebhookView {
            id: row.id,
            organization_id: row.organization_id,
            url: row.url,
            label: row.label,
            status: row.status,
            created_at: format_occurred_at(row.created_at),
            secret,
            health,
        }
    }
}

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
}

/// Validates the URL and label, checks where the host resolves, generates the
/// secret and stores it sealed. The returned view carries the secret: the
/// only time it is ever shown.
pub async fn create(
    client: &impl tokio_postgres::GenericClient,
    secrets: &SecretBox,
    resolver: &dyn Resolve,
    request: &CreateWebhook<'_>,
) -> Result<WebhookView> {
    let target = validate(request)?;
    if !request.allow_private_targets {
        check_resolves_public(&target, resolver).await?;
    }
    let id = Uuid::new_v4();
    let secret = SigningSecret::generate();
    let sealed = secrets.seal(id, &secret);
    let row = queries::insert(
        client,
        &NewWebhook {
            id,
            organization_id: request.organization_id,
            url: request.url,
            label: request.label,
            secret_ciphertext: &sealed,
            secret_key_id: secrets.key_id(),
        },
    )
    .await?;
    Ok(WebhookView::from_row(
        row,
        Some(secret.expose().to_string()),
        false,
    ))
}

/// An organization's webhooks with their status fields.
pub async fn list(
    client: &impl tokio_postgres::GenericClient,
    organization_id: Uuid,
) -> Result<Vec<WebhookView>> {
    Ok(queries::list(client, organization_id)
        .await?
        .into_iter()
        .map(|row| WebhookView::from_row(row, None, true))
        .collect())
}

/// The checks that need neither the network nor the database: URL syntax,
/// scheme, IP-literal addresses and the label. Callers run it before
/// connecting, so bad input is reported as such even when the database is down.
pub fn validate(request: &CreateWebhook<'_>) -> Result<TargetUrl> {
    let target = TargetUrl::parse(request.url, request.allow_private_targets)
        .map_err(|reason| Error::Input(format!("invalid webhook URL: {reason}")))?;
    validate_label(request.label)?;
    Ok(target)
}

fn validate_label(label: &str) -> Result<()> {
    if label.chars().count() > MAX_LABEL_LEN {
        return Err(Error::Input(format!(
            "label is {} characters long; at most {MAX_LABEL_LEN} are allowed",
            label.chars().count()
        )));
    }
    if label.chars().any(char::is_control) {
        return Err(Error::Input(
            "label must not contain control characters".to_string(),
        ));
    }
    Ok(())
}

/// Every address the host resolves to must be public; the sender checks again
/// at each delivery, since DNS can change.
async fn check_resolves_public(target: &TargetUrl, resolver: &dyn Resolve) -> Result<()> {
    if target.host.parse::<std::net::IpAddr>().is_ok() {
        // IP literals were checked by TargetUrl::parse.
        return Ok(());
    }
    let addresses = resolver
        .resolve(&target.host, target.port)
        .await
        .map_err(|err| {
            Error::Input(format!(
                "invalid webhook URL: cannot resolve host {}: {err}",
                target.host
            ))
        })?;
    if addresses.is_empty() {
        return Err(Error::Input(format!(
            "invalid webhook URL: host {} resolves to no addresses",
            target.host
        )));
    }
    for address in addresses {
        if let Some(kind) = blocked_kind(address.ip()) {
            return Err(Error::Input(format!(
                "invalid webhook URL: host {} resolves to a {kind} address ({}), which is blocked \
                 (use --allow-private-targets for local testing)",
                target.host,
                address.ip()
            )));
        }
    }
    Ok(())
}
