//! Management queries: webhooks, their deliveries, redelivery and emitting
//! events. Rows only; what they mean to a user is decided in `manage`.

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use crate::db::{self, Query};
use crate::error::Result;

/// A webhook row with its `outbox.webhook_status` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRow {
    /// Webhook id.
    pub id: Uuid,
    /// Owning organization.
    pub organization_id: Uuid,
    /// Target URL.
    pub url: String,
    /// Label.
    pub label: String,
    /// `active`, `disabled` or `revoked`.
    pub status: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Revocation time.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Latest 2xx.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Latest failed attempt.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Its reason.
    pub last_failure_reason: Option<String>,
    /// Pending deliveries.
    pub pending_deliveries: i64,
    /// Failed deliveries.
    pub failed_deliveries: i64,
    /// When it was disabled (while it is).
    pub disabled_at: Option<DateTime<Utc>>,
    /// Why (while it is).
    pub disabled_reason: Option<String>,
    /// `productbridge` or `standard`.
    pub signature_scheme: String,
}

/// What a new webhook row holds.
#[derive(Debug, Clone)]
pub struct NewWebhook<'a> {
    /// Chosen by the caller, because it is bound into the secret's encryption.
    pub id: Uuid,
    /// Owning organization.
    pub organization_id: Uuid,
    /// Validated URL.
    pub url: &'a str,
    /// Label.
    pub label: &'a str,
    /// Sealed secret.
    pub secret_ciphertext: &'a [u8],
    /// Key id of the sealing key.
    pub secret_key_id: &'a str,
    /// `productbridge` or `standard`.
    pub signature_scheme: &'a str,
}

/// Inserts a webhook; the row has no status fields yet (all zero).
pub async fn insert(client: &impl GenericClient, webhook: &NewWebhook<'_>) -> Result<WebhookRow> {
    const INSERT: Query = db::named!("creating the webhook", "webhook_insert");
    let params: [db::Param; 7] = [
        (&webhook.id, Type::UUID),
        (&webhook.organization_id, Type::UUID),
        (&webhook.url, Type::TEXT),
        (&webhook.label, Type::TEXT),
        (&webhook.secret_ciphertext, Type::BYTEA),
        (&webhook.secret_key_id, Type::TEXT),
        (&webhook.signature_scheme, Type::TEXT),
    ];
    let row = INSERT.one(client, &params).await?;
    Ok(WebhookRow {
        id: row.get("id"),
        organization_id: row.get("organization_id"),
        url: row.get("url"),
        label: row.get("label"),
        status: row.get("status"),
        created_at: row.get("created_at"),
        revoked_at: None,
        last_success_at: None,
        last_failure_at: None,
        last_failure_reason: None,
        pending_deliveries: 0,
        failed_deliveries: 0,
        disabled_at: None,
        disabled_reason: None,
        signature_scheme: row.get("signature_scheme"),
    })
}

/// An organization's webhooks with their status fields, oldest first.
pub async fn list(client: &impl GenericClient, organization_id: Uuid) -> Result<Vec<WebhookRow>> {
    listed(client, Some(organization_id), None, None).await
}

/// Webhooks with their status fields: of one organization, one webhook, or
/// (both `None`) every webhook, by organization and oldest first, at most
/// `limit`.
pub(crate) async fn listed(
    client: &impl GenericClient,
    organization_id: Option<Uuid>,
    webhook_id: Option<Uuid>,
    limit: Option<i64>,
) -> Result<Vec<WebhookRow>> {
    const LIST: Query = db::named!("listing webhooks", "webhook_list");
    let params: [db::Param; 3] = [
        (&organization_id, Type::UUID),
        (&webhook_id, Type::UUID),
        (&limit, Type::INT8),
    ];
    LIST.map(client, &params, listed_webhook).await
}

fn listed_webhook(row: &Row) -> WebhookRow {
    WebhookRow {
        id: row.get("webhook_id"),
        organization_id: row.get("organization_id"),
        url: row.get("url"),
        label: row.get("label"),
        status: row.get("status"),
        created_at: row.get("created_at"),
        revoked_at: row.get("revoked_at"),
        last_success_at: row.get("last_success_at"),
        last_failure_at: row.get("last_failure_at"),
        last_failure_reason: row.get("last_failure_reason"),
        pending_deliveries: row.get("pending_deliveries"),
        failed_deliveries: row.get("failed_deliveries"),
        disabled_at: row.get("disabled_at"),
        disabled_reason: row.get("disabled_reason"),
        signature_scheme: row.get("signature_scheme"),
    }
}

/// What a revoke did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revoked {
    /// False when the webhook was already revoked.
    pub newly_revoked: bool,
    /// Pending deliveries cancelled.
    pub cancelled: u64,
}

/// Revokes a webhook and cancels its pending deliveries, in one transaction;
/// `None` when there is no such webhook. The cancel and a daemon's
/// write-back both lock many delivery rows, so they can deadlock;
/// PostgreSQL then aborts one of them, and a revoke simply runs again (it
/// is idempotent).
pub async fn revoke(
    client: &mut tokio_postgres::Client,
    webhook_id: Uuid,
) -> Result<Option<Revoked>> {
    db::again_on_deadlock!("revoke", revoke_once(client, webhook_id))
}

async fn revoke_once(
    client: &mut tokio_postgres::Client,
    webhook_id: Uuid,
) -> Result<Option<Revoked>> {
    const CANCEL: Query = db::named!(
        "cancelling pending deliveries",
        "deliveries_cancel_for_webhook"
    );
    const REVOKE: Query = db::named!("revoking the webhook", "webhook_revoke");
    const LOCK: Query = db::named!("revoking the webhook", "webhook_lock");
    let tx = db::begin(client, "revoking the webhook").await?;
    let id = [(&webhook_id as _, Type::UUID)];
    if LOCK.opt(&tx, &id).await?.is_none() {
        return Ok(None);
    }
    let newly_revoked = REVOKE.execute(&tx, &id).await? > 0;
    let cancelled = CANCEL.execute(&tx, &id).await?;
    db::commit(tx, "revoking the webhook").await?;
    Ok(Some(Revoked {
        newly_revoked,
        cancelled,
    }))
}

/// Puts a failed or delivered delivery of an active webhook back to
/// pending; false when it is not one.
pub async fn redeliver(client: &impl GenericClient, delivery_id: Uuid) -> Result<bool> {
    const REDELIVER: Query = db::named!("redelivering", "delivery_redeliver");
    let requeued = REDELIVER.opt(client, &[(&delivery_id, Type::UUID)]).await?;
    Ok(requeued.is_some())
}

/// A delivery's status and its webhook's, or `None` when there is no such
/// delivery.
pub async fn delivery_state(
    client: &impl GenericClient,
    delivery_id: Uuid,
) -> Result<Option<(String, String)>> {
    const DELIVERY_STATE: Query = db::named!("redelivering", "delivery_state");
    let state = DELIVERY_STATE
        .opt(client, &[(&delivery_id, Type::UUID)])
        .await?;
    Ok(state.map(|row| (row.get("status"), row.get("webhook_status"))))
}

/// Emits one event through `outbox.emit` in the caller's transaction (or on
/// its own); validation errors come back with kind [`crate::error::ErrorKind::Input`].
pub async fn emit(
    client: &impl GenericClient,
    organization_id: Uuid,
    event: &str,
    data: &serde_json::Value,
) -> Result<Uuid> {
    const EMIT: Query = db::named!("emitting the event", "emit");
    let params: [db::Param; 3] = [
        (&organization_id, Type::UUID),
        (&event, Type::TEXT),
        (&data, Type::JSONB),
    ];
    Ok(EMIT.one(client, &params).await?.get(0))
}

/// One attempt of a delivery.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    /// Attempt number within its round.
    pub attempt: i32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: i32,
    /// Stable outcome code.
    pub outcome: String,
    /// HTTP status, when a response arrived.
    pub status_code: Option<i32>,
    /// Failure reason.
    pub reason: Option<String>,
    /// First bytes of the response body.
    pub response_excerpt: Option<String>,
    /// The delay a 429 or 503 answer asked for (`Retry-After`), in seconds.
    pub retry_after_seconds: Option<i32>,
}

/// One delivery with its attempts.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    /// Delivery id.
    pub id: Uuid,
    /// Event id.
    pub event_id: Uuid,
    /// Event type.
    pub event: String,
    /// pending, delivered, failed or cancelled.
    pub status: String,
    /// Attempts made in the current round.
    pub attempts: i32,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the last attempt started.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// HTTP status of the last attempt.
    pub last_status_code: Option<i32>,
    /// Reason of the last failure.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When it was created (the page cursor).
    pub created_at: DateTime<Utc>,
    /// Every attempt, oldest first.
    pub attempt_log: Vec<AttemptRow>,
}

/// Which deliveries to list.
#[derive(Debug, Clone)]
pub struct DeliveryPage<'a> {
    /// Only this status.
    pub status: Option<&'a str>,
    /// Only created before this …
    pub before: Option<DateTime<Utc>>,
    /// … or at that time with a smaller id.
    pub before_id: Option<Uuid>,
    /// At most this many.
    pub limit: i64,
}

/// A webhook's status (`active`/`disabled`/`revoked`), or `None` when there is no such webhook.
pub async fn webhook_state(
    client: &impl GenericClient,
    webhook_id: Uuid,
) -> Result<Option<String>> {
    const WEBHOOK_STATE: Query = db::named!("reading the webhook", "webhook_state");
    let row = WEBHOOK_STATE
        .opt(client, &[(&webhook_id, Type::UUID)])
        .await?;
    Ok(row.map(|row| row.get(0)))
}

/// A webhook's recent deliveries, newest first, each with its attempts.
pub async fn deliveries(
    client: &impl GenericClient,
    webhook_id: Uuid,
    page: &DeliveryPage<'_>,
) -> Result<Vec<DeliveryRow>> {
    const ATTEMPT_LOG: Query = db::named!("listing attempts", "attempts_for_deliveries");
    const DELIVERIES: Query = db::named!("listing deliveries", "deliveries_for_webhook");
    let params: [db::Param; 5] = [
        (&webhook_id, Type::UUID),
        (&page.status, Type::TEXT),
        (&page.before, Type::TIMESTAMPTZ),
        (&page.limit, Type::INT8),
        (&page.before_id, Type::UUID),
    ];
    let rows = DELIVERIES.all(client, &params).await?;
    let mut deliveries: Vec<DeliveryRow> = rows.iter().map(delivery).collect();
    let ids: Vec<Uuid> = deliveries.iter().map(|d| d.id).collect();
    let attempts = ATTEMPT_LOG.all(client, &[(&ids, Type::UUID_ARRAY)]).await?;
    let mut by_delivery: std::collections::HashMap<Uuid, Vec<AttemptRow>> =
        std::collections::HashMap::new();
    for row in &attempts {
        by_delivery
            .entry(row.get("delivery_id"))
            .or_default()
            .push(attempt(row));
    }
    for delivery in &mut deliveries {
        delivery.attempt_log = by_delivery.remove(&delivery.id).unwrap_or_default();
    }
    Ok(deliveries)
}

fn delivery(row: &Row) -> DeliveryRow {
    DeliveryRow {
        id: row.get("id"),
        event_id: row.get("event_id"),
        event: row.get("event"),
        status: row.get("status"),
        attempts: row.get("attempts"),
        next_attempt_at: row.get("next_attempt_at"),
        last_attempt_at: row.get("last_attempt_at"),
        last_status_code: row.get("last_status_code"),
        last_error: row.get("last_error"),
        delivered_at: row.get("delivered_at"),
        created_at: row.get("created_at"),
        attempt_log: Vec::new(),
    }
}

fn attempt(row: &Row) -> AttemptRow {
    AttemptRow {
        attempt: row.get("attempt"),
        started_at: row.get("started_at"),
        duration_ms: row.get("duration_ms"),
        outcome: row.get("outcome"),
        status_code: row.get("status_code"),
        reason: row.get("reason"),
        response_excerpt: row.get("response_excerpt"),
        retry_after_seconds: row.get("retry_after_seconds"),
    }
}

/// Puts every failed delivery of a webhook created in [since, until) back to
/// pending (no `until`: up to now); returns how many.
pub async fn recover(
    client: &impl GenericClient,
    webhook_id: Uuid,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
) -> Result<u64> {
    const RECOVER: Query = db::named!("recovering failed deliveries", "webhook_recover");
    let params: [db::Param; 3] = [
        (&webhook_id, Type::UUID),
        (&since, Type::TIMESTAMPTZ),
        (&until, Type::TIMESTAMPTZ),
    ];
    RECOVER.execute(client, &params).await
}
