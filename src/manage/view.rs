//! What the management API and the CLI print (docs/CONTRACT.md §6 and §7):
//! webhooks, deliveries and attempts made from database rows, with every
//! time written the way event envelopes write them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::db::webhooks::{AttemptRow, DeliveryRow, WebhookRow};

/// A time as every answer writes it: RFC 3339, UTC, milliseconds.
pub fn time(at: DateTime<Utc>) -> String {
    crate::event::format_occurred_at(at)
}

/// At most the first 64 characters of what a user sent, for error messages
/// that echo it.
pub fn echo(text: &str) -> String {
    text.chars().take(64).collect()
}

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
    /// `active`, `disabled` or `revoked`.
    pub status: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// `productbridge` or `standard` (docs/CONTRACT.md §1).
    pub signature_scheme: String,
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
    /// When it was disabled (while it is).
    pub disabled_at: Option<String>,
    /// Why (while it is).
    pub disabled_reason: Option<String>,
}

impl WebhookView {
    /// A created webhook, with its secret.
    pub(super) fn created(row: WebhookRow, secret: String) -> Self {
        WebhookView::new(row, Some(secret), None)
    }

    /// A listed webhook, with its status fields.
    pub(super) fn listed(row: WebhookRow) -> Self {
        let health = WebhookHealthView {
            revoked_at: row.revoked_at.map(time),
            last_success_at: row.last_success_at.map(time),
            last_failure_at: row.last_failure_at.map(time),
            last_failure_reason: row.last_failure_reason.clone(),
            pending_deliveries: row.pending_deliveries,
            failed_deliveries: row.failed_deliveries,
            disabled_at: row.disabled_at.map(time),
            disabled_reason: row.disabled_reason.clone(),
        };
        WebhookView::new(row, None, Some(health))
    }

    fn new(row: WebhookRow, secret: Option<String>, health: Option<WebhookHealthView>) -> Self {
        WebhookView {
            id: row.id,
            organization_id: row.organization_id,
            url: row.url,
            label: row.label,
            status: row.status,
            created_at: time(row.created_at),
            signature_scheme: row.signature_scheme,
            secret,
            health,
        }
    }
}

/// One attempt as the management API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    /// Attempt number within its round.
    pub attempt: i32,
    /// When it started.
    pub started_at: String,
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

/// One delivery with its attempts, as the management API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
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
    pub next_attempt_at: Option<String>,
    /// When the last attempt started.
    pub last_attempt_at: Option<String>,
    /// HTTP status of the last attempt.
    pub last_status_code: Option<i32>,
    /// Reason of the last failure.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<String>,
    /// When it was created (the page cursor).
    pub created_at: String,
    /// Every attempt, oldest first.
    pub attempt_log: Vec<AttemptView>,
}

impl From<DeliveryRow> for DeliveryView {
    fn from(row: DeliveryRow) -> Self {
        DeliveryView {
            id: row.id,
            event_id: row.event_id,
            event: row.event,
            status: row.status,
            attempts: row.attempts,
            next_attempt_at: row.next_attempt_at.map(time),
            last_attempt_at: row.last_attempt_at.map(time),
            last_status_code: row.last_status_code,
            last_error: row.last_error,
            delivered_at: row.delivered_at.map(time),
            created_at: time(row.created_at),
            attempt_log: row.attempt_log.into_iter().map(AttemptView::from).collect(),
        }
    }
}

impl From<AttemptRow> for AttemptView {
    fn from(row: AttemptRow) -> Self {
        AttemptView {
            attempt: row.attempt,
            started_at: time(row.started_at),
            duration_ms: row.duration_ms,
            outcome: row.outcome,
            status_code: row.status_code,
            reason: row.reason,
            response_excerpt: row.response_excerpt,
            retry_after_seconds: row.retry_after_seconds,
        }
    }
}
