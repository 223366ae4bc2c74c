//! Management queries: webhooks, redelivery and emitting events.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;
use uuid::Uuid;

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
    let row = client
        .query_one(
            include_str!("../../sql/queries/webhook_insert.sql"),
            &[
                &webhook.id,
                &webhook.organization_id,
                &webhook.url,
                &webhook.label,
                &webhook.secret_ciphertext,
                &webhook.secret_key_id,
            ],
        )
        .await
        .map_err(|err| Error::db("creating the webhook", err))?;
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
    let rows = client
        .query(
            include_str!("../../sql/queries/webhook_list.sql"),
            &[&organization_id],
        )
        .await
        .map_err(|err| Error::db("listing webhooks", err))?;
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
    let found = tx
        .query_opt(
            include_str!("../../sql/queries/webhook_lock.sql"),
            &[&webhook_id],
        )
        .await
        .map_err(|err| Error::db("revoking the webhook", err))?;
    if found.is_none() {
        return Err(Error::NotFound(format!("no webhook with id {webhook_id}")));
    }
    let newly_revoked = tx
        .execute(
            include_str!("../../sql/queries/webhook_revoke.sql"),
            &[&webhook_id],
        )
        .await
        .map_err(|err| Error::db("revoking the webhook", err))?
        > 0;
    let cancelled = tx
        .execute(
            include_str!("../../sql/queries/deliveries_cancel_for_webhook.sql"),
            &[&webhook_id],
        )
        .await
        .map_err(|err| Error::db("cancelling pending deliveries", err))?;
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
    let requeued = client
        .query_opt(
            include_str!("../../sql/queries/delivery_redeliver.sql"),
            &[&delivery_id],
        )
        .await
        .map_err(|err| Error::db("redelivering", err))?;
    if requeued.is_some() {
        return Ok(());
    }
    let state = client
        .query_opt(
            include_str!("../../sql/queries/delivery_state.sql"),
            &[&delivery_id],
        )
        .await
        .map_err(|err| Error::db("redelivering", err))?;
    let Some(state) = state else {
        return Err(Error::NotFound(format!(
            "no delivery with id {delivery_id}"
        )));
    };
    let status: String = state.get("status");
    let webhook_status: String = state.get("webhook_status");
    Err(Error::Input(if webhook_status != "active" {
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
    let row = client
        .query_one(
            include_str!("../../sql/queries/emit.sql"),
            &[&organization_id, &event, data],
        )
        .await
        .map_err(|err| Error::db("emitting the event", err))?;
    Ok(row.get(0))
}
