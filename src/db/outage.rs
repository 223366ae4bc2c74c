//! Receiver outages: disabling a webhook (its receiver answered 410 Gone, or
//! every delivery failed for `--disable-after`) together with failing its
//! pending deliveries, and enabling it again (docs/CONTRACT.md §3, §4).
//!
//! Disabling runs as revoking does: the webhook row is locked FOR UPDATE
//! first, so a fan-out holding FOR KEY SHARE on it finishes before and one
//! starting after sees it disabled; then its pending deliveries fail in the
//! same transaction. A disabled webhook therefore never has a pending
//! delivery, and the claim never sends to one.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Transaction};
use uuid::Uuid;

use crate::db::{self, Query};
use crate::error::Result;

/// The advisory lock that lets only one replica sweep for failing webhooks.
pub const DISABLE_SWEEP_LOCK: i64 = 0x6469_7361_626c_6572; // "disabler"

/// A webhook this call disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisabledWebhook {
    /// Webhook id.
    pub id: Uuid,
    /// Its organization.
    pub organization_id: Uuid,
    /// Why it was disabled (`disabled_reason`).
    pub reason: String,
    /// Its pending deliveries, now failed.
    pub failed_deliveries: u64,
}

/// An active webhook whose deliveries have all failed for long enough.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailingWebhook {
    /// Webhook id.
    pub id: Uuid,
    /// The first failure after its latest success.
    pub failing_since: DateTime<Utc>,
    /// Its latest failure's reason.
    pub last_failure_reason: Option<String>,
}

/// Disables one active webhook with `reason` and fails its pending
/// deliveries; `None` when it is not active (already disabled, revoked, or
/// unknown).
pub async fn disable(
    client: &mut tokio_postgres::Client,
    webhook_id: Uuid,
    reason: &str,
) -> Result<Option<DisabledWebhook>> {
    let disabled = db::again_on_deadlock!("disable", disable_once(client, webhook_id, reason))?;
    Ok(disabled.into_iter().next())
}

async fn disable_once(
    client: &mut tokio_postgres::Client,
    webhook_id: Uuid,
    reason: &str,
) -> Result<Vec<DisabledWebhook>> {
    const LOCK: Query = db::named!("disabling the webhook", "webhook_lock");
    let tx = db::begin(client, "disabling the webhook").await?;
    if LOCK.opt(&tx, &[(&webhook_id, Type::UUID)]).await?.is_none() {
        return Ok(Vec::new());
    }
    let disabled = disable_locked(&tx, &[webhook_id], &[reason.to_string()]).await?;
    db::commit(tx, "disabling the webhook").await?;
    Ok(disabled)
}

/// One sweep for `--disable-after`: disables every active webhook whose
/// deliveries have all failed for at least `failing_for`, each with the
/// reason `reason` gives it. `None` when another replica holds the sweep.
pub async fn disable_failing(
    client: &mut tokio_postgres::Client,
    failing_for: Duration,
    reason: impl Fn(&FailingWebhook) -> String,
) -> Result<Option<Vec<DisabledWebhook>>> {
    const FAILING: Query = db::named!("finding failing webhooks", "webhooks_failing");
    let tx = db::begin(client, "sweeping for failing webhooks").await?;
    if !db::retention::try_sweep_lock(&tx, DISABLE_SWEEP_LOCK).await? {
        return Ok(None);
    }
    let failing_ms = i64::try_from(failing_for.as_millis()).unwrap_or(i64::MAX);
    let failing = FAILING
        .map(&tx, &[(&failing_ms, Type::INT8)], |row| FailingWebhook {
            id: row.get("id"),
            failing_since: row.get("failing_since"),
            last_failure_reason: row.get("last_failure_reason"),
        })
        .await?;
    if failing.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let ids: Vec<Uuid> = failing.iter().map(|w| w.id).collect();
    let reasons: Vec<String> = failing.iter().map(reason).collect();
    let disabled = disable_locked(&tx, &ids, &reasons).await?;
    db::commit(tx, "disabling failing webhooks").await?;
    Ok(Some(disabled))
}

/// Disables the webhooks `ids` (locked by the caller) with `reasons` and
/// fails their pending deliveries.
async fn disable_locked(
    tx: &Transaction<'_>,
    ids: &[Uuid],
    reasons: &[String],
) -> Result<Vec<DisabledWebhook>> {
    const DISABLE: Query = db::named!("disabling webhooks", "webhooks_disable");
    const FAIL: Query = db::named!(
        "failing the deliveries of disabled webhooks",
        "deliveries_fail_for_disabled"
    );
    let mut disabled = DISABLE
        .map(
            tx,
            &[(&ids, Type::UUID_ARRAY), (&reasons, Type::TEXT_ARRAY)],
            |row| DisabledWebhook {
                id: row.get("id"),
                organization_id: row.get("organization_id"),
                reason: row.get("disabled_reason"),
                failed_deliveries: 0,
            },
        )
        .await?;
    if disabled.is_empty() {
        return Ok(disabled);
    }
    let newly: Vec<Uuid> = disabled.iter().map(|w| w.id).collect();
    let mut failed: HashMap<Uuid, u64> = HashMap::new();
    for row in FAIL.all(tx, &[(&newly, Type::UUID_ARRAY)]).await? {
        *failed.entry(row.get("webhook_id")).or_default() += 1;
    }
    for webhook in &mut disabled {
        webhook.failed_deliveries = failed.get(&webhook.id).copied().unwrap_or(0);
    }
    Ok(disabled)
}

/// Makes a disabled webhook active again; false when it was not disabled.
pub async fn enable(client: &impl GenericClient, webhook_id: Uuid) -> Result<bool> {
    const ENABLE: Query = db::named!("enabling the webhook", "webhook_enable");
    let enabled = ENABLE.opt(client, &[(&webhook_id, Type::UUID)]).await?;
    Ok(enabled.is_some())
}
