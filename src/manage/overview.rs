//! What the operator page shows (docs/OPERATIONS.md, "The operator page"),
//! read-only: every webhook with its status, the backlog, attempts per
//! minute, one webhook, and the newest failures across all webhooks. The
//! page renders these; the deliveries of a webhook come from
//! [`super::deliveries`], as in the management API.

use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::{no_webhook, WebhookView};
use crate::db::overview as queries;
/// A failed delivery with its webhook, as the failures view shows it.
pub use crate::db::overview::FailureRow as Failure;
/// Attempts that started within one minute, as the chart shows them.
pub use crate::db::overview::MinuteRow as MinuteCount;
pub use crate::db::stats::QueueDepths;
use crate::error::Result;

/// Most webhooks the overview lists.
pub const MAX_WEBHOOKS: i64 = 500;
/// Most failed deliveries the failures view lists.
pub const MAX_FAILURES: i64 = 100;
/// Minutes the attempts chart covers.
pub const RATE_MINUTES: i32 = 30;
/// How long after its start an attempt may still be recorded: more than
/// any sensible `--lease` (an attempt is recorded within its lease or
/// dropped), so the chart's bounded read misses none.
const LATE_RECORD_MARGIN_SECONDS: f64 = 15.0 * 60.0;

/// The overview.
#[derive(Debug, Clone)]
pub struct Overview {
    /// Webhooks by organization, oldest first, at most [`MAX_WEBHOOKS`].
    pub webhooks: Vec<WebhookView>,
    /// More webhooks exist than are listed.
    pub truncated: bool,
    /// The queue, as `/metrics` reports it.
    pub backlog: QueueDepths,
    /// Attempts per minute over the last [`RATE_MINUTES`], oldest first.
    pub rate: Vec<MinuteCount>,
}

/// Every webhook with its status, the backlog and the attempts chart.
pub async fn overview(client: &impl GenericClient) -> Result<Overview> {
    let mut rows = queries::webhooks(client, MAX_WEBHOOKS + 1).await?;
    let truncated = rows.len() as i64 > MAX_WEBHOOKS;
    rows.truncate(MAX_WEBHOOKS as usize);
    let backlog = crate::db::stats::queue_depths(client).await?;
    let rate =
        queries::attempts_per_minute(client, RATE_MINUTES, LATE_RECORD_MARGIN_SECONDS).await?;
    Ok(Overview {
        webhooks: rows.into_iter().map(WebhookView::listed).collect(),
        truncated,
        backlog,
        rate,
    })
}

/// One webhook with its status fields.
pub async fn webhook(client: &impl GenericClient, webhook_id: Uuid) -> Result<WebhookView> {
    queries::webhook(client, webhook_id)
        .await?
        .map(WebhookView::listed)
        .ok_or_else(|| no_webhook(webhook_id))
}

/// The newest failed deliveries across all webhooks, at most [`MAX_FAILURES`].
pub async fn failures(client: &impl GenericClient) -> Result<Vec<Failure>> {
    queries::failures(client, MAX_FAILURES).await
}
