//! Managing webhooks, the one path the CLI and the management API share:
//! create (validate the URL, generate and seal the secret), list, revoke,
//! enable, redeliver, recover and list deliveries. Each checks its input and
//! returns a typed result or an [`Error`] whose kind says whose fault it is
//! (docs/CONTRACT.md §6, §7); callers only parse, call and render.

mod input;
pub mod overview;
pub mod view;

pub use crate::db::webhooks::Revoked;
pub use crate::signing::SignatureScheme;
pub use input::{
    parse_time, validate, CreateWebhook, DeliveryFilter, NewEvent, RecoverWindow, MAX_LABEL_LEN,
    MAX_PAGE,
};
pub use view::{AttemptView, DeliveryView, WebhookHealthView, WebhookView};

use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::db;
use crate::db::webhooks::{self as queries, DeliveryPage, NewWebhook};
use crate::delivery::sender::Resolve;
use crate::error::{Error, Result};
use crate::signing::{SecretBox, SigningSecret};

/// Validates the URL and label, checks where the host resolves, generates the
/// secret in the form of the webhook's signature scheme and stores it sealed. The returned view carries the secret: the
/// only time it is ever shown.
pub async fn create(
    client: &impl GenericClient,
    secrets: &SecretBox,
    resolver: &dyn Resolve,
    request: &CreateWebhook<'_>,
) -> Result<WebhookView> {
    let target = validate(request)?;
    if !request.allow_private_targets {
        input::check_resolves_public(&target, resolver).await?;
    }
    let id = Uuid::new_v4();
    let secret = SigningSecret::generate_for(request.signature_scheme);
    let sealed = secrets.seal(id, &secret);
    let new = NewWebhook {
        id,
        organization_id: request.organization_id,
        url: request.url,
        label: request.label,
        secret_ciphertext: &sealed,
        secret_key_id: secrets.key_id(),
        signature_scheme: request.signature_scheme.as_str(),
    };
    let row = queries::insert(client, &new).await?;
    Ok(WebhookView::created(row, secret.expose().to_string()))
}

/// An organization's webhooks with their status fields.
pub async fn list(client: &impl GenericClient, organization_id: Uuid) -> Result<Vec<WebhookView>> {
    let rows = queries::list(client, organization_id).await?;
    Ok(rows.into_iter().map(WebhookView::listed).collect())
}

/// Revokes a webhook and cancels its pending deliveries (idempotent).
pub async fn revoke(client: &mut tokio_postgres::Client, webhook_id: Uuid) -> Result<Revoked> {
    queries::revoke(client, webhook_id)
        .await?
        .ok_or_else(|| no_webhook(webhook_id))
}

/// Puts a failed or delivered delivery back to pending for a new round of
/// attempts and wakes the daemons; explains why when it cannot.
pub async fn redeliver(client: &impl GenericClient, delivery_id: Uuid) -> Result<()> {
    if queries::redeliver(client, delivery_id).await? {
        return db::notify_wakeup(client).await;
    }
    let Some((status, webhook_status)) = queries::delivery_state(client, delivery_id).await? else {
        return Err(Error::not_found(format!(
            "no delivery with id {delivery_id}"
        )));
    };
    Err(Error::conflict(match webhook_status.as_str() {
        "active" => format!(
            "delivery {delivery_id} is {status}; only failed or delivered deliveries can be redelivered"
        ),
        "disabled" => format!(
            "delivery {delivery_id} belongs to a disabled webhook: enable it first \
             (webhookd webhooks enable)"
        ),
        _ => format!("delivery {delivery_id} belongs to a revoked webhook and cannot be redelivered"),
    }))
}

/// What enabling did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enabled {
    /// It was disabled and is active now.
    Enabled,
    /// It was active already; nothing changed.
    AlreadyActive,
}

/// Makes a disabled webhook active again (an active one stays so). A
/// revoked webhook cannot be: that is for good (docs/CONTRACT.md §4).
/// Its failed deliveries stay failed: `recover` replays them.
pub async fn enable(client: &impl GenericClient, webhook_id: Uuid) -> Result<Enabled> {
    if db::outage::enable(client, webhook_id).await? {
        return Ok(Enabled::Enabled);
    }
    match webhook_status(client, webhook_id).await?.as_str() {
        "active" => Ok(Enabled::AlreadyActive),
        "disabled" => Err(Error::conflict(format!(
            "webhook {webhook_id} was disabled again meanwhile; enable it again"
        ))),
        _ => Err(Error::conflict(format!(
            "webhook {webhook_id} is revoked; a revoked webhook cannot be enabled \
             (create a new one)"
        ))),
    }
}

/// Puts every failed delivery of an active webhook created within `window`
/// back to pending and wakes the daemons; returns how many.
pub async fn recover(
    client: &impl GenericClient,
    webhook_id: Uuid,
    window: RecoverWindow,
) -> Result<u64> {
    match webhook_status(client, webhook_id).await?.as_str() {
        "active" => {}
        "disabled" => {
            return Err(Error::conflict(format!(
                "webhook {webhook_id} is disabled; enable it first (webhookd webhooks enable), \
                 then recover its deliveries"
            )))
        }
        _ => {
            return Err(Error::conflict(format!(
                "webhook {webhook_id} is revoked; its deliveries cannot be recovered"
            )))
        }
    }
    let requeued = queries::recover(client, webhook_id, window.since, window.until).await?;
    db::notify_wakeup(client).await?;
    Ok(requeued)
}

/// A webhook's recent deliveries, newest first, each with its attempts.
pub async fn deliveries(
    client: &impl GenericClient,
    webhook_id: Uuid,
    filter: &DeliveryFilter,
) -> Result<Vec<DeliveryView>> {
    webhook_status(client, webhook_id).await?;
    let page = DeliveryPage {
        status: filter.status.as_deref(),
        before: filter.before,
        before_id: filter.before_id,
        limit: filter.limit,
    };
    let rows = queries::deliveries(client, webhook_id, &page).await?;
    Ok(rows.into_iter().map(DeliveryView::from).collect())
}

/// Emits one event, validated by the database like `outbox.emit`; returns its id.
pub async fn emit(client: &impl GenericClient, event: &NewEvent) -> Result<Uuid> {
    queries::emit(client, event.organization_id, &event.event, &event.data).await
}

async fn webhook_status(client: &impl GenericClient, webhook_id: Uuid) -> Result<String> {
    queries::webhook_state(client, webhook_id)
        .await?
        .ok_or_else(|| no_webhook(webhook_id))
}

fn no_webhook(webhook_id: Uuid) -> Error {
    Error::not_found(format!("no webhook with id {webhook_id}"))
}
