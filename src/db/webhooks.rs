//! Management queries: webhooks, redelivery and emitting events.

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::db;
use crate::error::{Error, Result};

/// A webhook row as the dashboard and the CLI show it.
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
    /// `active` or `revoked`.
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
}

/// Inserts a webhook; returns id, organization, url, label, status, created_at.
pub async fn insert(client: &impl GenericClient, webhook: &NewWebhook<'_>) -> Result<WebhookRow> {
    let row = db::query_one(
        client,
        "creating the webhook",
        include_str!("../../sql/queries/webhook_insert.sql"),
        &[
            (&webhook.id, Type::UUID),
            (&webhook.organization_id, Type::UUID),
            (&webhook.url, Type::TEXT),
            (&webhook.label, Type::TEXT),
            (&webhook.secret_ciphertext, Type::BYTEA),
            (&webhook.secret_key_id, Type::TEXT),
        ],
    )
    .await?;
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
    })
}

/// An organization's webhooks with their status fields, oldest first.
pub async fn list(client: &impl GenericClient, organization_id: Uuid) -> Result<Vec<WebhookRow>> {
    let rows = db::query(
        client,
        "listing webhooks",
        include_str!("../../sql/queries/webhook_list.sql"),
        &[(&organization_id, Type::UUID)],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|row| WebhookRow {
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
        })
        .collect())
}

/// What a revoke did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revoked {
    /// False when the webhook was already revoked.
    pub newly_revoked: bool,
    /// Pending deliveries cancelled.
    pub cancelled: u64,
}

/// Revokes a webhook and cancels its pending deliveries, in one transaction.
/// The cancel and a daemon's write-back both lock many delivery rows, so they
/// can deadlock; PostgreSQL then aborts one of them, and a revoke simply runs
/// again (it is idempotent).
pub async fn revoke(client: &mut tokio_postgres::Client, webhook_id: Uuid) -> Result<Revoked> {
    const ATTEMPTS: usize = 3;
    let mut attempt = 1;
    loop {
        match revoke_once(client, webhook_id).await {
            Err(Error::Database { source, .. })
                if attempt < ATTEMPTS
                    && source.code()
                        == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) =>
            {
                tracing::debug!(%webhook_id, attempt, "revoke deadlocked with a write-back; again");
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

async fn revoke_once(client: &mut tokio_postgres::Client, webhook_id: Uuid) -> Result<Revoked> {
    let tx = client
        .transaction()
        .await
        .map_err(|err| Error::db("revoking the webhook", err))?;
    let found = db::query_opt(
        &tx,
        "revoking the webhook",
        include_str!("../../sql/queries/webhook_lock.sql"),
        &[(&webhook_id, Type::UUID)],
    )
    .await?;
    if found.is_none() {
        return Err(Error::NotFound(format!("no webhook with id {webhook_id}")));
    }
    let newly_revoked = db::execute(
        &tx,
        "revoking the webhook",
        include_str!("../../sql/queries/webhook_revoke.sql"),
        &[(&webhook_id, Type::UUID)],
    )
    .await?
        > 0;
    let cancelled = db::execute(
        &tx,
        "cancelling pending deliveries",
        include_str!("../../sql/queries/deliveries_cancel_for_webhook.sql"),
        &[(&webhook_id, Type::UUID)],
    )
    .await?;
    tx.commit()
        .await
        .map_err(|err| Error::db("revoking the webhook", err))?;
    Ok(Revoked {
        newly_revoked,
        cancelled,
    })
}

/// Puts a failed or delivered delivery back to pending for a new round of
/// attempts. Explains why when it cannot.
pub async fn redeliver(client: &impl GenericClient, delivery_id: Uuid) -> Result<()> {
    let requeued = db::query_opt(
        client,
        "redelivering",
        include_str!("../../sql/queries/delivery_redeliver.sql"),
        &[(&delivery_id, Type::UUID)],
    )
    .await?;
    if requeued.is_some() {
        return Ok(());
    }
    let state = db::query_opt(
        client,
        "redelivering",
        include_str!("../../sql/queries/delivery_state.sql"),
        &[(&delivery_id, Type::UUID)],
    )
    .await?;
    let Some(state) = state else {
        return Err(Error::NotFound(format!(
            "no delivery with id {delivery_id}"
        )));
    };
    let status: String = state.get("status");
    let webhook_status: String = state.get("webhook_status");
    Err(Error::Conflict(if webhook_status != "active" {
        format!("delivery {delivery_id} belongs to a revoked webhook and cannot be redelivered")
    } else {
        format!("delivery {delivery_id} is {status}; only failed or delivered deliveries can be redelivered")
    }))
}

/// Emits one event through `outbox.emit` in the caller's transaction (or on
/// its own); validation errors come back as [`Error::Input`].
pub async fn emit(
    client: &impl GenericClient,
    organization_id: Uuid,
    event: &str,
    data: &serde_json::Value,
) -> Result<Uuid> {
    let row = db::query_one(
        client,
        "emitting the event",
        include_str!("../../sql/queries/emit.sql"),
        &[
            (&organization_id, Type::UUID),
            (&event, Type::TEXT),
            (&data, Type::JSONB),
        ],
    )
    .await?;
    Ok(row.get(0))
}

/// One attempt as the management API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttemptRow {
    /// Attempt number within its round.
    pub attempt: i32,
    /// When it started.
    #[serde(serialize_with = "crate::event::timestamp::one")]
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
}

/// One delivery with its attempts.
#[derive(Debug, Clone, serde::Serialize)]
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
    #[serde(serialize_with = "crate::event::timestamp::optional")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the last attempt started.
    #[serde(serialize_with = "crate::event::timestamp::optional")]
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// HTTP status of the last attempt.
    pub last_status_code: Option<i32>,
    /// Reason of the last failure.
    pub last_error: Option<String>,
    /// When it was delivered.
    #[serde(serialize_with = "crate::event::timestamp::optional")]
    pub delivered_at: Option<DateTime<Utc>>,
    /// When it was created (the page cursor).
    #[serde(serialize_with = "crate::event::timestamp::one")]
    pub created_at: DateTime<Utc>,
    /// Every attempt, oldest first.
    pub attempt_log: Vec<AttemptRow>,
}

/// Which deliveries to list.
#[derive(Debug, Clone)]
pub struct DeliveryFilter {
    /// Only this status.
    pub status: Option<String>,
    /// Only created before this.
    pub before: Option<DateTime<Utc>>,
    /// At most this many.
    pub limit: i64,
}

/// A webhook's status (`active`/`revoked`), or NotFound.
pub async fn webhook_state(client: &impl GenericClient, webhook_id: Uuid) -> Result<String> {
    db::query_opt(
        client,
        "reading the webhook",
        include_str!("../../sql/queries/webhook_state.sql"),
        &[(&webhook_id, Type::UUID)],
    )
    .await?
    .map(|row| row.get(0))
    .ok_or_else(|| Error::NotFound(format!("no webhook with id {webhook_id}")))
}

/// A webhook's recent deliveries, newest first, each with its attempts.
pub async fn deliveries(
    client: &impl GenericClient,
    webhook_id: Uuid,
    filter: &DeliveryFilter,
) -> Result<Vec<DeliveryRow>> {
    webhook_state(client, webhook_id).await?;
    let rows = db::query(
        client,
        "listing deliveries",
        include_str!("../../sql/queries/deliveries_for_webhook.sql"),
        &[
            (&webhook_id, Type::UUID),
            (&filter.status, Type::TEXT),
            (&filter.before, Type::TIMESTAMPTZ),
            (&filter.limit, Type::INT8),
        ],
    )
    .await?;
    let mut deliveries: Vec<DeliveryRow> = rows
        .iter()
        .map(|row| DeliveryRow {
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
        })
        .collect();
    let ids: Vec<Uuid> = deliveries.iter().map(|d| d.id).collect();
    let attempts = db::query(
        client,
        "listing attempts",
        include_str!("../../sql/queries/attempts_for_deliveries.sql"),
        &[(&ids, Type::UUID_ARRAY)],
    )
    .await?;
    let mut by_delivery: std::collections::HashMap<Uuid, Vec<AttemptRow>> =
        std::collections::HashMap::new();
    for row in attempts {
        by_delivery
            .entry(row.get("delivery_id"))
            .or_default()
            .push(AttemptRow {
                attempt: row.get("attempt"),
                started_at: row.get("started_at"),
                duration_ms: row.get("duration_ms"),
                outcome: row.get("outcome"),
                status_code: row.get("status_code"),
                reason: row.get("reason"),
                response_excerpt: row.get("response_excerpt"),
            });
    }
    for delivery in &mut deliveries {
        delivery.attempt_log = by_delivery.remove(&delivery.id).unwrap_or_default();
    }
    Ok(deliveries)
}

/// Puts every failed delivery of a webhook created in [since, until) back to
/// pending; returns how many.
pub async fn recover(
    client: &impl GenericClient,
    webhook_id: Uuid,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<u64> {
    if webhook_state(client, webhook_id).await? != "active" {
        return Err(Error::Conflict(format!(
            "webhook {webhook_id} is revoked; its deliveries cannot be recovered"
        )));
    }
    db::execute(
        client,
        "recovering failed deliveries",
        include_str!("../../sql/queries/webhook_recover.sql"),
        &[
            (&webhook_id, Type::UUID),
            (&since, Type::TIMESTAMPTZ),
            (&until, Type::TIMESTAMPTZ),
        ],
    )
    .await
}
