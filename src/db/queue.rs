//! The daemon's queue queries: fan-out, claim, write-back, release and the
//! wake-up switch.
//! Each is one statement and one round trip; the hot ones call the PL/pgSQL
//! functions of migrations 0005 and 0009, which keep their plans, and are
//! sent prepared where [`crate::db::Preparing`] allows, else unnamed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::db::{self, Query, Session};
use crate::error::Result;

/// What one fan-out batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanOutCount {
    /// Events marked fanned out.
    pub events: i64,
    /// Delivery rows created.
    pub deliveries: i64,
}

/// Fans out up to `batch` events.
pub async fn fan_out<'c>(client: impl Into<Session<'c>>, batch: i32) -> Result<FanOutCount> {
    const FAN_OUT: Query = db::named!("fanning out events", "fan_out");
    let row = FAN_OUT
        .one_in(client.into(), &[(&batch, Type::INT4)])
        .await?;
    Ok(FanOutCount {
        events: row.get("events"),
        deliveries: row.get("deliveries"),
    })
}

/// The parameters of one claim.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    /// How many of the oldest due rows to look at (fairness window).
    pub scan_window: i32,
    /// Look webhook by webhook instead of at the oldest due rows.
    pub by_webhook: bool,
    /// The free slots to fill and the lease.
    pub room: Room<'a>,
}

/// A claimed delivery with what sending it needs.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// Delivery id (the receiver's idempotency key).
    pub id: Uuid,
    /// Webhook id.
    pub webhook_id: Uuid,
    /// Event id.
    pub event_id: Uuid,
    /// This attempt's number, 1-based.
    pub attempt: i32,
    /// Event type name.
    pub event: String,
    /// The event's organization.
    pub organization_id: Uuid,
    /// When the event was emitted.
    pub occurred_at: DateTime<Utc>,
    /// The event's `data`, serialised by the database.
    pub data: String,
    /// The webhook's URL.
    pub url: String,
}

/// Leases due deliveries.
pub async fn claim<'c>(
    client: impl Into<Session<'c>>,
    request: &ClaimRequest<'_>,
) -> Result<ClaimedRows> {
    const CLAIM: Query = db::named!("claiming deliveries", "claim");
    let room = &request.room;
    let lease_ms = i64::try_from(room.lease.as_millis()).unwrap_or(i64::MAX);
    let rows = CLAIM
        .all_in(
            client.into(),
            &[
                (&room.limit, Type::INT4),
                (&request.scan_window, Type::INT4),
                (&request.by_webhook, Type::BOOL),
                (&room.busy, Type::UUID_ARRAY),
                (&room.free_slots, Type::INT4_ARRAY),
                (&room.per_webhook_cap, Type::INT4),
                (&lease_ms, Type::INT8),
                (&room.token, Type::UUID),
            ],
        )
        .await?;
    let window_rows = rows.first().map(|row| row.get("window_rows")).unwrap_or(0);
    let deliveries = rows.iter().map(claimed_delivery).collect();
    Ok(ClaimedRows {
        deliveries,
        window_rows,
    })
}

/// A leased row of the claim or of the leasing fan-out.
fn claimed_delivery(row: &tokio_postgres::Row) -> ClaimedDelivery {
    ClaimedDelivery {
        id: row.get("id"),
        webhook_id: row.get("webhook_id"),
        event_id: row.get("event_id"),
        attempt: row.get("attempts"),
        event: row.get("event"),
        organization_id: row.get("organization_id"),
        occurred_at: row.get("occurred_at"),
        data: row.get("data"),
        url: row.get("url"),
    }
}

/// The free slots a lease may fill, as the claim and the leasing fan-out
/// take them.
#[derive(Debug, Clone)]
pub struct Room<'a> {
    /// Lease at most this many in all.
    pub limit: i32,
    /// Webhooks with deliveries in flight …
    pub busy: &'a [Uuid],
    /// … and how many more each may take (0: at its cap).
    pub free_slots: &'a [i32],
    /// Slots of a webhook with nothing in flight.
    pub per_webhook_cap: i32,
    /// How long the rows stay reserved.
    pub lease: Duration,
    /// Fencing token written on every leased row.
    pub token: Uuid,
}

/// What one leasing fan-out did.
#[derive(Debug, Clone)]
pub struct FannedAndLeased {
    /// Events and deliveries.
    pub count: FanOutCount,
    /// Deliveries created due now but not leased (no free slot).
    pub unleased: i64,
    /// The deliveries created already leased, ready to send.
    pub deliveries: Vec<ClaimedDelivery>,
    /// When there is next something to do, as [`next_work`] says, from the
    /// same statement (it does not count `unleased`).
    pub next: NextWork,
}

/// Fans out up to `batch` events, creating the deliveries that fit into
/// `room` already leased (migration 0009).
pub async fn fan_out_lease<'c>(
    client: impl Into<Session<'c>>,
    batch: i32,
    room: &Room<'_>,
) -> Result<FannedAndLeased> {
    const FAN_OUT_LEASE: Query = db::named!("fanning out events", "fan_out_lease");
    let lease_ms = i64::try_from(room.lease.as_millis()).unwrap_or(i64::MAX);
    let rows = FAN_OUT_LEASE
        .all_in(
            client.into(),
            &[
                (&batch, Type::INT4),
                (&room.limit, Type::INT4),
                (&room.busy, Type::UUID_ARRAY),
                (&room.free_slots, Type::INT4_ARRAY),
                (&room.per_webhook_cap, Type::INT4),
                (&lease_ms, Type::INT8),
                (&room.token, Type::UUID),
            ],
        )
        .await?;
    // The one row without a delivery id carries the batch's summary.
    let (summary, leased): (Vec<_>, Vec<_>) = rows
        .iter()
        .partition(|row| row.get::<_, Option<Uuid>>("id").is_none());
    let summary = summary.first().ok_or_else(|| {
        crate::error::Error::schema("outbox.daemon_fan_out_lease returned no summary row")
    })?;
    Ok(FannedAndLeased {
        count: FanOutCount {
            events: summary.get("events"),
            deliveries: summary.get("deliveries"),
        },
        unleased: summary.get("unleased"),
        deliveries: leased.into_iter().map(claimed_delivery).collect(),
        next: next_work_of(summary),
    })
}

/// What one claim statement leased.
#[derive(Debug, Clone, Default)]
pub struct ClaimedRows {
    /// The leased deliveries.
    pub deliveries: Vec<ClaimedDelivery>,
    /// How many due rows the window held (0 when nothing was leased).
    pub window_rows: i64,
}

/// Where an attempt leaves its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStatus {
    /// 2xx: done.
    Delivered,
    /// Failed; another attempt after the delay.
    RetryIn(Duration),
    /// Failed for the last time.
    Failed,
}

/// One attempt to write back.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// Delivery id.
    pub delivery_id: Uuid,
    /// Webhook id.
    pub webhook_id: Uuid,
    /// The lease token the claim wrote; fences the write.
    pub lease_token: Uuid,
    /// Attempt number, 1-based.
    pub attempt: i32,
    /// Where the delivery goes next.
    pub next: NextStatus,
    /// HTTP status, when a response arrived.
    pub status_code: Option<i32>,
    /// Stable outcome code.
    pub outcome: &'static str,
    /// Failure reason.
    pub reason: Option<String>,
    /// First bytes of the response body.
    pub response_excerpt: Option<String>,
    /// When the request started.
    pub started_at: DateTime<Utc>,
    /// How long the attempt took.
    pub duration: Duration,
    /// The delay a 429 or 503 answer asked for (`Retry-After`), before any cap.
    pub retry_after: Option<Duration>,
    /// The receiver said the webhook is gone (410): disable it.
    pub disables_webhook: bool,
}

/// Writes a batch of attempts back; returns how many landed (the others had
/// lost their lease or been cancelled).
pub async fn complete<'c>(
    client: impl Into<Session<'c>>,
    records: &[AttemptRecord],
) -> Result<u64> {
    const COMPLETE: Query = db::named!("writing delivery results", "complete");
    let ids: Vec<Uuid> = records.iter().map(|r| r.delivery_id).collect();
    let tokens: Vec<Uuid> = records.iter().map(|r| r.lease_token).collect();
    let statuses: Vec<&str> = records
        .iter()
        .map(|r| match r.next {
            NextStatus::Delivered => "delivered",
            NextStatus::RetryIn(_) => "pending",
            NextStatus::Failed => "failed",
        })
        .collect();
    let codes: Vec<Option<i32>> = records.iter().map(|r| r.status_code).collect();
    let reasons: Vec<Option<&str>> = records.iter().map(|r| r.reason.as_deref()).collect();
    let retry_in_ms: Vec<Option<i64>> = records
        .iter()
        .map(|r| match r.next {
            NextStatus::RetryIn(delay) => {
                Some(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
            }
            _ => None,
        })
        .collect();
    let attempts: Vec<i32> = records.iter().map(|r| r.attempt).collect();
    let started: Vec<DateTime<Utc>> = records.iter().map(|r| r.started_at).collect();
    let durations: Vec<i32> = records
        .iter()
        .map(|r| i32::try_from(r.duration.as_millis()).unwrap_or(i32::MAX))
        .collect();
    let outcomes: Vec<&str> = records.iter().map(|r| r.outcome).collect();
    let excerpts: Vec<Option<&str>> = records
        .iter()
        .map(|r| r.response_excerpt.as_deref())
        .collect();
    let retry_after: Vec<Option<i32>> = records
        .iter()
        .map(|r| r.retry_after.map(whole_seconds))
        .collect();
    let row = COMPLETE
        .one_in(
            client.into(),
            &[
                (&ids, Type::UUID_ARRAY),
                (&tokens, Type::UUID_ARRAY),
                (&statuses, Type::TEXT_ARRAY),
                (&codes, Type::INT4_ARRAY),
                (&reasons, Type::TEXT_ARRAY),
                (&retry_in_ms, Type::INT8_ARRAY),
                (&attempts, Type::INT4_ARRAY),
                (&started, Type::TIMESTAMPTZ_ARRAY),
                (&durations, Type::INT4_ARRAY),
                (&outcomes, Type::TEXT_ARRAY),
                (&excerpts, Type::TEXT_ARRAY),
                (&retry_after, Type::INT4_ARRAY),
            ],
        )
        .await?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// Seconds, rounded up (a delay asked for is never shown shorter than it
/// was), as the attempt log's `retry_after_seconds` holds them.
fn whole_seconds(delay: Duration) -> i32 {
    let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    i32::try_from(seconds).unwrap_or(i32::MAX)
}

/// The latest success and failure of one webhook within a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookHealth {
    /// Webhook id.
    pub webhook_id: Uuid,
    /// Latest 2xx in the batch.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Latest failure in the batch.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Its reason.
    pub last_failure_reason: Option<String>,
}

/// Folds a batch's per-webhook health into `outbox.webhooks`.
pub async fn fold_webhook_health(
    client: &impl GenericClient,
    health: &[WebhookHealth],
) -> Result<()> {
    const FOLD_WEBHOOK_STATUS: Query = db::named!("updating webhook status", "fold_webhook_status");
    let ids: Vec<Uuid> = health.iter().map(|h| h.webhook_id).collect();
    let successes: Vec<Option<DateTime<Utc>>> = health.iter().map(|h| h.last_success_at).collect();
    let failures: Vec<Option<DateTime<Utc>>> = health.iter().map(|h| h.last_failure_at).collect();
    let reasons: Vec<Option<&str>> = health
        .iter()
        .map(|h| h.last_failure_reason.as_deref())
        .collect();
    FOLD_WEBHOOK_STATUS
        .all(
            client,
            &[
                (&ids, Type::UUID_ARRAY),
                (&successes, Type::TIMESTAMPTZ_ARRAY),
                (&failures, Type::TIMESTAMPTZ_ARRAY),
                (&reasons, Type::TEXT_ARRAY),
            ],
        )
        .await?;
    Ok(())
}

/// Gives leased, unattempted deliveries back, due at once.
pub async fn release(client: &impl GenericClient, leases: &[(Uuid, Uuid)]) -> Result<u64> {
    const RELEASE: Query = db::named!("releasing leased deliveries", "release");
    let (ids, tokens): (Vec<Uuid>, Vec<Uuid>) = leases.iter().copied().unzip();
    RELEASE
        .execute(
            client,
            &[(&ids, Type::UUID_ARRAY), (&tokens, Type::UUID_ARRAY)],
        )
        .await
}

/// What an idle replica needs to decide how long to sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextWork {
    /// Until something is due, by the database's clock; `None` when nothing
    /// is pending at all.
    pub due_in: Option<Duration>,
    /// Whether producers NOTIFY right now.
    pub notify_on: bool,
    /// The oldest transaction id still running (the snapshot's xmin).
    pub oldest_running: i64,
}

/// When there is next something to do, and the state of the wake-up switch.
pub async fn next_work<'c>(client: impl Into<Session<'c>>) -> Result<NextWork> {
    const NEXT_WAKEUP: Query = db::named!("finding the next due delivery", "next_wakeup");
    let row = NEXT_WAKEUP.one_in(client.into(), &[]).await?;
    Ok(next_work_of(&row))
}

fn next_work_of(row: &tokio_postgres::Row) -> NextWork {
    let next_at: Option<DateTime<Utc>> = row.get("next_at");
    let now: DateTime<Utc> = row.get("db_now");
    NextWork {
        due_in: next_at.map(|next| (next - now).to_std().unwrap_or(Duration::ZERO)),
        notify_on: row.get::<_, Option<bool>>("notify_on").unwrap_or(true),
        oldest_running: row.get("oldest_running"),
    }
}

/// Turns producers' NOTIFY on or off. When turning it on, returns the fence:
/// transactions below it may have seen it off.
pub async fn set_wakeup_notify(client: &impl GenericClient, notify: bool) -> Result<Option<i64>> {
    const TRANSACTION_FENCE: Query =
        db::named!("reading the transaction fence", "transaction_fence");
    const SET_WAKEUP: Query = db::named!("switching wake-up notifications", "set_wakeup");
    SET_WAKEUP.all(client, &[(&notify, Type::BOOL)]).await?;
    if !notify {
        return Ok(None);
    }
    let row = TRANSACTION_FENCE.one(client, &[]).await?;
    Ok(Some(row.get("fence")))
}
