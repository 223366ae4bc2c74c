//! Stage 4: write attempt results back in batches, fenced by the lease token:
//! the delivery rows and one attempt-log row each; and the per-webhook
//! status fields, folded about once a second per webhook instead of once per
//! delivery or batch.
//!
//! A batch that cannot be written is retried; if the lease runs out first the
//! write is fenced off and the delivery is simply sent again (at least once).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, warn};
use uuid::Uuid;

use crate::admin::metrics::Metrics;
use crate::db::queue::{self, AttemptRecord, NextStatus, WebhookHealth};
use crate::db::Preparing;
use crate::delivery::claimer::InFlight;
use crate::error::Result;
use crate::maintenance::disabler;
use crate::service::{Ending, Service};
use crate::shutdown::Shutdown;

/// Completer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompleterConfig {
    /// Most results per write.
    pub batch: usize,
    /// How long the first result of a batch may wait for company.
    pub linger: Duration,
    /// How long a batch is retried; past the lease the fence drops it anyway.
    pub give_up_after: Duration,
}

/// Most results in one write-back.
const BATCH_MAX: usize = 500;

/// How long a result waits for others to share its write-back. A call
/// costs PostgreSQL about as much as two and a half results in it, so
/// writing each result alone, as a 2 ms wait did at a modest rate, cost
/// about three times as much per result as a shared call, and woke the
/// daemon once more per event. At 200 deliveries a second a call now takes
/// about ten (docs/ARCHITECTURE.md, "Write-backs wait for company"). The
/// price: a row shows `delivered` about this much later, and a crash in
/// that window sends those deliveries again, which at-least-once allows;
/// waiting results count against `--max-in-flight` like sending ones.
pub const LINGER_DEFAULT: Duration = Duration::from_millis(50);

impl CompleterConfig {
    /// Settings for a replica holding at most `max_in_flight` deliveries
    /// unrecorded: a batch is written once it holds half of them, so that
    /// results waiting for company never stall the claim for long.
    pub fn for_max_in_flight(max_in_flight: usize, give_up_after: Duration) -> Self {
        CompleterConfig {
            batch: (max_in_flight / 2).clamp(1, BATCH_MAX),
            give_up_after,
            ..CompleterConfig::default()
        }
    }
}

impl Default for CompleterConfig {
    fn default() -> Self {
        CompleterConfig {
            batch: BATCH_MAX,
            linger: LINGER_DEFAULT,
            give_up_after: crate::delivery::claimer::LEASE_DEFAULT,
        }
    }
}

/// Whom the completer tells about a write, and who tells it to hurry.
pub struct CompleterSignals {
    /// After every write: results no longer count against `--max-in-flight`.
    pub recorded: Arc<Notify>,
    /// From the claim: `--max-in-flight` is used up, so results waiting for
    /// company hold up new work; the waiting batch is written at once. (A
    /// signal that finds no batch waiting ends the next wait early: one
    /// smaller write, no harm.)
    pub starved: Arc<Notify>,
    /// After a write that scheduled a retry: it may be due before the claim
    /// loop's planned wake-up.
    pub retry_scheduled: Arc<Notify>,
}

/// What one write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompleteOutcome {
    /// Results written.
    pub written: u64,
    /// Results dropped by the fence (lease lost or delivery cancelled).
    pub fenced: u64,
}

/// What the completer works with, built once by the daemon.
pub struct CompleterParts {
    /// Where results are written.
    pub pool: Pool,
    /// Whether the write-back may stay prepared on the pool's connections.
    pub preparing: Preparing,
    /// Whom it tells about a write.
    pub signals: CompleterSignals,
    /// What `/metrics` reports.
    pub metrics: Arc<Metrics>,
    /// In-flight accounting shared with the claimer: a written result frees
    /// its place under `--max-in-flight`.
    pub in_flight: Arc<InFlight>,
    /// The dispatcher's results.
    pub results: mpsc::Receiver<AttemptRecord>,
}

/// The write-back service.
pub struct Completer {
    config: CompleterConfig,
    parts: CompleterParts,
}

impl Completer {
    /// A completer writing what arrives on `parts.results`.
    pub fn new(config: CompleterConfig, parts: CompleterParts) -> Self {
        Completer { config, parts }
    }

    /// Lets the first result of a batch wait `linger` for company, up to
    /// `batch` results, unless the claim is starved meanwhile: with slow
    /// receivers holding most of `--max-in-flight`, a wait each time would
    /// pace everyone else to one claim per linger.
    async fn gather(
        &self,
        results: &mut mpsc::Receiver<AttemptRecord>,
        batch: &mut Vec<AttemptRecord>,
    ) {
        let linger = tokio::time::sleep(self.config.linger);
        tokio::pin!(linger);
        while batch.len() < self.config.batch {
            tokio::select! {
                biased;
                more = results.recv() => match more {
                    Some(record) => batch.push(record),
                    None => break,
                },
                _ = self.parts.signals.starved.notified() => break,
                _ = &mut linger => break,
            }
        }
    }

    /// A batch was written or given up on: either way no longer this
    /// replica's to re-send after a crash, so the claim may take more.
    fn recorded(&self, batch: &[AttemptRecord]) {
        self.parts.in_flight.recorded(batch.len());
        if batch
            .iter()
            .any(|record| matches!(record.next, NextStatus::RetryIn(_)))
        {
            self.parts.signals.retry_scheduled.notify_one();
        }
        self.parts.signals.recorded.notify_one();
    }

    /// Folds the webhooks whose status is due (all of them when `all`).
    /// Best effort: the status fields are the dashboard's summary, and the
    /// next outcome of the webhook brings them up to date anyway.
    async fn fold_health(&self, health: &mut PendingHealth, all: bool) {
        let due = health.take_due(tokio::time::Instant::now(), all);
        if due.is_empty() {
            return;
        }
        let folded = async {
            let client = self.parts.pool.get().await?;
            queue::fold_webhook_health(&**client, &due).await
        };
        if let Err(err) = folded.await {
            warn!(error = %err.one_line(), webhooks = due.len(), "cannot update webhook status");
        }
    }

    /// Disables the webhooks whose receivers answered 410 in this batch
    /// (rare: a receiver says it once).
    async fn disable_gone(&self, batch: &[AttemptRecord]) {
        let mut gone: Vec<Uuid> = batch
            .iter()
            .filter(|record| record.disables_webhook)
            .map(|record| record.webhook_id)
            .collect();
        if gone.is_empty() {
            return;
        }
        gone.sort();
        gone.dedup();
        disabler::disable_gone(&self.parts.pool, &self.parts.metrics, &gone).await;
    }

    /// Writes one batch, retrying with backoff for as long as its leases could
    /// still be valid; after that the fence would drop it anyway.
    async fn write_with_retries(&self, batch: &[AttemptRecord]) -> bool {
        let mut delay = Duration::from_millis(50);
        let give_up = tokio::time::Instant::now() + self.config.give_up_after;
        loop {
            match self.run_once(batch).await {
                Ok(outcome) => {
                    self.parts.metrics.fenced(outcome.fenced);
                    if outcome.fenced > 0 {
                        debug!(
                            fenced = outcome.fenced,
                            "results dropped: lease lost or delivery cancelled"
                        );
                    }
                    return true;
                }
                Err(err) if tokio::time::Instant::now() < give_up => {
                    warn!(error = %err.one_line(), results = batch.len(), retry_in_ms = delay.as_millis() as u64,
                          "cannot write delivery results; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(err) => {
                    warn!(error = %err.one_line(), results = batch.len(),
                          "giving up on writing delivery results; the deliveries will be sent again when their leases expire");
                    return false;
                }
            }
        }
    }

    /// Writes one batch: delivery rows and attempt log. (Webhook status
    /// is folded apart, at most about once a second per webhook.)
    pub async fn run_once(&self, batch: &[AttemptRecord]) -> Result<CompleteOutcome> {
        if batch.is_empty() {
            return Ok(CompleteOutcome::default());
        }
        let client = self.parts.pool.get().await?;
        let written = queue::complete(self.parts.preparing.session(&client), batch).await?;
        Ok(CompleteOutcome {
            written,
            fenced: batch.len() as u64 - written,
        })
    }
}

impl Service for Completer {
    const NAME: &'static str = "completer";
    // The results of deliveries already sent are owed to the database: it
    // returns once the dispatcher, the channel's last sender, is gone.
    const ENDING: Ending = Ending::Drains;

    /// Writes results as they arrive until every sender of `results` is gone,
    /// then returns: the last batch is flushed before.
    async fn run(mut self, _shutdown: Shutdown) {
        // Closed by its senders, not by shutdown: see `ENDING`.
        let (_, closed) = mpsc::channel(1);
        let mut results = std::mem::replace(&mut self.parts.results, closed);
        let mut batch = Vec::with_capacity(self.config.batch);
        let mut health = PendingHealth::default();
        loop {
            let next = match health.next_due() {
                Some(due) => tokio::select! {
                    next = results.recv() => next,
                    _ = tokio::time::sleep_until(due) => {
                        self.fold_health(&mut health, false).await;
                        continue;
                    }
                },
                None => results.recv().await,
            };
            match next {
                Some(record) => batch.push(record),
                None => break,
            }
            self.gather(&mut results, &mut batch).await;
            if self.write_with_retries(&batch).await {
                health.add(summarise_health(&batch));
                self.fold_health(&mut health, false).await;
                self.disable_gone(&batch).await;
            }
            self.recorded(&batch);
            batch.clear();
        }
        self.fold_health(&mut health, true).await;
    }
}

/// How long a webhook's folded status may lag behind its outcomes while
/// they keep the same kind: each fold rewrites the webhook's row, which a
/// long transaction elsewhere keeps from being vacuumed.
const FOLD_EVERY: Duration = Duration::from_secs(1);

/// Webhook status not yet folded, and when each webhook was last folded.
/// A webhook is folded at once when its latest outcome turns (success after
/// failure or the other way round) or was never folded here, else at most
/// once per [`FOLD_EVERY`].
#[derive(Debug, Default)]
struct PendingHealth {
    waiting: HashMap<Uuid, WebhookHealth>,
    /// Per webhook: when it was last folded and whether its latest outcome
    /// then was a success. Entries older than [`FOLD_EVERY`] are dropped.
    folded: HashMap<Uuid, (tokio::time::Instant, bool)>,
}

impl PendingHealth {
    fn add(&mut self, batch: Vec<WebhookHealth>) {
        for health in batch {
            match self.waiting.get_mut(&health.webhook_id) {
                Some(waiting) => merge_health(waiting, health),
                None => {
                    self.waiting.insert(health.webhook_id, health);
                }
            }
        }
    }

    /// The earliest time a waiting webhook is due.
    fn next_due(&self) -> Option<tokio::time::Instant> {
        self.waiting
            .keys()
            .map(|id| match self.folded.get(id) {
                Some((at, _)) => *at + FOLD_EVERY,
                None => tokio::time::Instant::now(),
            })
            .min()
    }

    /// Takes the waiting webhooks that are due at `now` (all when `all`).
    fn take_due(&mut self, now: tokio::time::Instant, all: bool) -> Vec<WebhookHealth> {
        self.folded.retain(|_, (at, _)| now < *at + FOLD_EVERY);
        let due: Vec<Uuid> = self
            .waiting
            .values()
            .filter(|health| {
                all || match self.folded.get(&health.webhook_id) {
                    None => true,
                    Some((_, succeeded)) => latest_succeeded(health) != *succeeded,
                }
            })
            .map(|health| health.webhook_id)
            .collect();
        let mut taken: Vec<WebhookHealth> = due
            .iter()
            .filter_map(|id| self.waiting.remove(id))
            .collect();
        for health in &taken {
            self.folded
                .insert(health.webhook_id, (now, latest_succeeded(health)));
        }
        taken.sort_by_key(|h| h.webhook_id);
        taken
    }
}

/// Whether the latest outcome in `health` is a success.
fn latest_succeeded(health: &WebhookHealth) -> bool {
    match (health.last_success_at, health.last_failure_at) {
        (Some(success), Some(failure)) => success > failure,
        (success, _) => success.is_some(),
    }
}

/// Folds `newer` into `into`: latest times, the latest failure's reason.
fn merge_health(into: &mut WebhookHealth, newer: WebhookHealth) {
    into.last_success_at = into.last_success_at.max(newer.last_success_at);
    if newer.last_failure_at.is_some() && newer.last_failure_at >= into.last_failure_at {
        into.last_failure_at = newer.last_failure_at;
        into.last_failure_reason = newer.last_failure_reason;
    }
}

/// The latest success and failure per webhook in a batch.
fn summarise_health(batch: &[AttemptRecord]) -> Vec<WebhookHealth> {
    let mut by_webhook: HashMap<Uuid, WebhookHealth> = HashMap::new();
    for record in batch {
        let finished_at = record.started_at
            + chrono::Duration::from_std(record.duration)
                .unwrap_or_else(|_| chrono::Duration::zero());
        let health = by_webhook
            .entry(record.webhook_id)
            .or_insert_with(|| WebhookHealth {
                webhook_id: record.webhook_id,
                last_success_at: None,
                last_failure_at: None,
                last_failure_reason: None,
            });
        if record.next == NextStatus::Delivered {
            health.last_success_at = health.last_success_at.max(Some(finished_at));
        } else if health.last_failure_at.is_none_or(|at| at <= finished_at) {
            health.last_failure_at = Some(finished_at);
            health.last_failure_reason = record.reason.clone();
        }
    }
    let mut health: Vec<_> = by_webhook.into_values().collect();
    health.sort_by_key(|h| h.webhook_id);
    health
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_written_once_it_holds_half_of_what_may_be_in_flight() {
        let lease = Duration::from_secs(30);
        assert_eq!(CompleterConfig::for_max_in_flight(8, lease).batch, 4);
        assert_eq!(CompleterConfig::for_max_in_flight(1, lease).batch, 1);
        assert_eq!(CompleterConfig::for_max_in_flight(512, lease).batch, 256);
        assert_eq!(
            CompleterConfig::for_max_in_flight(100_000, lease).batch,
            BATCH_MAX
        );
        assert_eq!(
            CompleterConfig::for_max_in_flight(8, lease).linger,
            LINGER_DEFAULT
        );
    }

    fn outcome(webhook: Uuid, success_s: Option<i64>, failure_s: Option<i64>) -> WebhookHealth {
        let at = |s: i64| chrono::DateTime::from_timestamp(s, 0).unwrap();
        WebhookHealth {
            webhook_id: webhook,
            last_success_at: success_s.map(at),
            last_failure_at: failure_s.map(at),
            last_failure_reason: failure_s.map(|s| format!("failure at {s}")),
        }
    }

    #[test]
    fn a_webhook_is_folded_at_once_first_then_at_most_once_a_second_unless_its_outcome_turns() {
        let webhook = Uuid::new_v4();
        let start = tokio::time::Instant::now();
        let mut pending = PendingHealth::default();
        pending.add(vec![outcome(webhook, Some(10), None)]);
        assert_eq!(
            pending.take_due(start, false).len(),
            1,
            "never folded: at once"
        );
        pending.add(vec![outcome(webhook, Some(11), None)]);
        assert!(
            pending.take_due(start, false).is_empty(),
            "same kind: waits"
        );
        assert_eq!(pending.next_due(), Some(start + FOLD_EVERY));
        pending.add(vec![outcome(webhook, None, Some(12))]);
        let turned = pending.take_due(start, false);
        assert_eq!(turned.len(), 1, "success then failure: at once");
        assert_eq!(
            turned[0].last_success_at,
            Some(chrono::DateTime::from_timestamp(11, 0).unwrap()),
            "what waited is folded with it"
        );
        assert_eq!(
            turned[0].last_failure_reason.as_deref(),
            Some("failure at 12")
        );
        pending.add(vec![outcome(webhook, None, Some(13))]);
        assert!(pending.take_due(start, false).is_empty());
        assert_eq!(pending.take_due(start + FOLD_EVERY, false).len(), 1);
        pending.add(vec![outcome(webhook, None, Some(14))]);
        assert_eq!(pending.take_due(start, true).len(), 1, "shutdown folds all");
        assert_eq!(pending.next_due(), None);
    }

    #[test]
    fn merged_health_keeps_the_latest_times_and_the_latest_failures_reason() {
        let webhook = Uuid::new_v4();
        let mut into = outcome(webhook, Some(20), Some(15));
        merge_health(&mut into, outcome(webhook, Some(18), Some(12)));
        assert_eq!(into, outcome(webhook, Some(20), Some(15)));
        merge_health(&mut into, outcome(webhook, None, Some(16)));
        assert_eq!(into, outcome(webhook, Some(20), Some(16)));
    }
}
