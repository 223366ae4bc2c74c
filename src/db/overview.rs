//! The operator page's reads (docs/OPERATIONS.md, "The operator page"):
//! every webhook with its status fields, one webhook, the newest failed
//! deliveries and attempts per minute. Each is bounded and index-backed at
//! any table size; the plans are described in the query files.

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use crate::db::webhooks::{self, WebhookRow};
use crate::db::{self, Query};
use crate::error::Result;

/// Every organization's webhooks with their status fields, by organization
/// and oldest first, at most `limit`.
pub async fn webhooks(client: &impl GenericClient, limit: i64) -> Result<Vec<WebhookRow>> {
    webhooks::listed(client, None, None, Some(limit)).await
}

/// One webhook with its status fields, or `None` when there is no such webhook.
pub async fn webhook(client: &impl GenericClient, webhook_id: Uuid) -> Result<Option<WebhookRow>> {
    let mut rows = webhooks::listed(client, None, Some(webhook_id), Some(1)).await?;
    Ok(rows.pop())
}

/// A failed delivery with its webhook.
#[derive(Debug, Clone)]
pub struct FailureRow {
    /// Delivery id.
    pub id: Uuid,
    /// Its webhook.
    pub webhook_id: Uuid,
    /// Its organization.
    pub organization_id: Uuid,
    /// The webhook's label.
    pub label: String,
    /// The webhook's URL.
    pub url: String,
    /// Event type.
    pub event: String,
    /// Attempts made in the last round.
    pub attempts: i32,
    /// When the last attempt started.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// HTTP status of the last attempt.
    pub last_status_code: Option<i32>,
    /// Reason of the last failure.
    pub last_error: Option<String>,
    /// When the delivery was created.
    pub created_at: DateTime<Utc>,
}

/// The newest failed deliveries across all webhooks, at most `limit`.
pub async fn failures(client: &impl GenericClient, limit: i64) -> Result<Vec<FailureRow>> {
    const FAILURES: Query = db::named!("listing failed deliveries", "ui_failures");
    FAILURES.map(client, &[(&limit, Type::INT8)], failure).await
}

fn failure(row: &Row) -> FailureRow {
    FailureRow {
        id: row.get("id"),
        webhook_id: row.get("webhook_id"),
        organization_id: row.get("organization_id"),
        label: row.get("label"),
        url: row.get("url"),
        event: row.get("event"),
        attempts: row.get("attempts"),
        last_attempt_at: row.get("last_attempt_at"),
        last_status_code: row.get("last_status_code"),
        last_error: row.get("last_error"),
        created_at: row.get("created_at"),
    }
}

/// Attempts that started within one minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteRow {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    /// Attempts that delivered (a 2xx).
    pub delivered: i64,
    /// Every other attempt.
    pub not_delivered: i64,
}

/// Attempts per minute over the last `minutes` minutes (the current one
/// included), oldest first, one row per minute. `late_margin_seconds` bounds
/// how long after its start an attempt can be recorded (see the query file).
pub async fn attempts_per_minute(
    client: &impl GenericClient,
    minutes: i32,
    late_margin_seconds: f64,
) -> Result<Vec<MinuteRow>> {
    const PER_MINUTE: Query = db::named!("counting recent attempts", "ui_attempts_per_minute");
    let params: [db::Param; 2] = [(&minutes, Type::INT4), (&late_margin_seconds, Type::FLOAT8)];
    PER_MINUTE
        .map(client, &params, |row| MinuteRow {
            minute: row.get("minute"),
            delivered: row.get("delivered"),
            not_delivered: row.get("not_delivered"),
        })
        .await
}
