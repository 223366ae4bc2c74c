//! Stage 4: write attempt results back in batches, fenced by the lease token:
//! the delivery rows, one attempt-log row each, and the per-webhook status
//! fields folded once per batch instead of once per delivery.
//!
//! A batch that cannot be written is retried; if the lease runs out first the
//! write is fenced off and the delivery is simply sent again (at least once).

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, warn};
use uuid::Uuid;

use crate::claimer::InFlight;
use crate::db::queue::{self, AttemptRecord, NextStatus, WebhookHealth};
use crate::error::Result;
use crate::metrics::Metrics;

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

impl Default for CompleterConfig {
    fn default() -> Self {
        CompleterConfig {
            batch: 500,
            linger: Duration::from_millis(2),
            give_up_after: crate::claimer::LEASE_DEFAULT,
        }
    }
}

/// Whom the completer tells about a write.
pub struct CompleterSignals {
    /// After every write: results no longer count against `--max-in-flight`.
    pub recorded: std::sync::Arc<Notify>,
    /// After a write that scheduled a retry: it may be due before the claim
    /// loop's planned wake-up.
    pub retry_scheduled: std::sync::Arc<Notify>,
}

/// What one write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompleteOutcome {
    /// Results written.
    pub written: u64,
    /// Results dropped by the fence (lease lost or delivery cancelled).
    pub fenced: u64,
}

/// The write-back service.
pub struct Completer {
    config: CompleterConfig,
    pool: Pool,
    signals: CompleterSignals,
    metrics: std::sync::Arc<Metrics>,
    in_flight: std::sync::Arc<InFlight>,
}

impl Completer {
    /// A completer over this pool, telling the claim loop through `signals`.
    pub fn new(
        config: CompleterConfig,
        pool: Pool,
        signals: CompleterSignals,
        metrics: std::sync::Arc<Metrics>,
        in_flight: std::sync::Arc<InFlight>,
    ) -> Self {
        Completer {
            in_flight,
            metrics,
            config,
            pool,
            signals,
        }
    }

    /// Writes results as they arrive until every sender of `results` is gone,
    /// then returns: the last batch is flushed before.
    pub async fn run(self, mut results: mpsc::Receiver<AttemptRecord>) {
        let mut batch = Vec::with_capacity(self.config.batch);
        loop {
            match results.recv().await {
                Some(record) => batch.push(record),
                None => break,
            }
            let linger = tokio::time::sleep(self.config.linger);
            tokio::pin!(linger);
            while batch.len() < self.config.batch {
                tokio::select! {
                    biased;
                    more = results.recv() => match more {
                        Some(record) => batch.push(record),
                        None => break,
                    },
                    _ = &mut linger => break,
                }
            }
            self.write_with_retries(&batch).await;
            // Written or given up on: either way no longer this replica's to
            // re-send after a crash, so the claim may take more.
            self.in_flight.recorded(batch.len());
            if batch
                .iter()
                .any(|record| matches!(record.next, NextStatus::RetryIn(_)))
            {
                self.signals.retry_scheduled.notify_one();
            }
            self.signals.recorded.notify_one();
            batch.clear();
        }
    }

    /// Writes one batch, retrying with backoff for as long as its leases could
    /// still be valid; after that the fence would drop it anyway.
    async fn write_with_retries(&self, batch: &[AttemptRecord]) {
        let mut delay = Duration::from_millis(50);
        let give_up = tokio::time::Instant::now() + self.config.give_up_after;
        loop {
            match self.run_once(batch).await {
                Ok(outcome) => {
                    self.metrics.fenced(outcome.fenced);
                    if outcome.fenced > 0 {
                        debug!(
                            fenced = outcome.fenced,
                            "results dropped: lease lost or delivery cancelled"
                        );
                    }
                    return;
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
                    return;
                }
            }
        }
    }

    /// Writes one batch: delivery rows and attempt log, then webhook status.
    pub async fn run_once(&self, batch: &[AttemptRecord]) -> Result<CompleteOutcome> {
        if batch.is_empty() {
            return Ok(CompleteOutcome::default());
        }
        let client = self.pool.get().await?;
        let written = queue::complete(&**client, batch).await?;
        queue::fold_webhook_health(&**client, &summarise_health(batch)).await?;
        Ok(CompleteOutcome {
            written,
            fenced: batch.len() as u64 - written,
        })
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
