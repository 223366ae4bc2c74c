//! Disabling webhooks whose receiver is gone (docs/CONTRACT.md §3, §4): at
//! once when it answers 410 (the completer calls [`disable_gone`]), and,
//! through the [`Disabler`] service, when every delivery has failed for
//! `--disable-after`.
//!
//! Why a sweep and not a check in the completer's fold of webhook status: a
//! webhook whose last delivery gave up gets no more results to fold, yet its
//! failing run still ages. The sweep reads only the partial index of failing
//! webhooks (migration 0007), under a transaction-level advisory lock so one
//! replica sweeps at a time, about every quarter of `--disable-after` and at
//! least once a minute, so a webhook is disabled at most that much late.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tracing::warn;
use uuid::Uuid;

use crate::admin::metrics::{DisableCause, Metrics};
use crate::db::outage::{self, DisabledWebhook, FailingWebhook};
use crate::delivery::sender::outcome::GONE_REASON;
use crate::error::Result;
use crate::service::Service;
use crate::shutdown::Shutdown;

/// Longest time between two sweeps.
const SWEEP_AT_MOST_EVERY: Duration = Duration::from_secs(60);
/// Shortest time between two sweeps (a sub-second `--disable-after`).
const SWEEP_AT_LEAST_EVERY: Duration = Duration::from_millis(100);

/// When failing webhooks are disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisablerConfig {
    /// `--disable-after`; `None` never disables a webhook for failing.
    pub disable_after: Option<Duration>,
    /// How often to sweep.
    pub interval: Duration,
}

impl DisablerConfig {
    /// Sweeps four times per `disable_after`, within 100 ms to a minute.
    pub fn after(disable_after: Option<Duration>) -> Self {
        let interval = disable_after
            .map(|after| after / 4)
            .unwrap_or(SWEEP_AT_MOST_EVERY)
            .clamp(SWEEP_AT_LEAST_EVERY, SWEEP_AT_MOST_EVERY);
        DisablerConfig {
            disable_after,
            interval,
        }
    }
}

impl Default for DisablerConfig {
    fn default() -> Self {
        DisablerConfig::after(Some(crate::config::DISABLE_AFTER_DEFAULT))
    }
}

/// The sweep for `--disable-after`.
pub struct Disabler {
    config: DisablerConfig,
    pool: Pool,
    metrics: Arc<Metrics>,
}

impl Disabler {
    /// A sweeper over this pool.
    pub fn new(config: DisablerConfig, pool: Pool, metrics: Arc<Metrics>) -> Self {
        Disabler {
            config,
            pool,
            metrics,
        }
    }

    /// One sweep; returns the webhooks it disabled (none when another
    /// replica holds the sweep).
    pub async fn run_once(&self) -> Result<Vec<DisabledWebhook>> {
        let Some(after) = self.config.disable_after else {
            return Ok(Vec::new());
        };
        let mut client = self.pool.get().await?;
        let reason = |webhook: &FailingWebhook| failing_reason(webhook, after);
        let disabled = outage::disable_failing(&mut client, after, reason)
            .await?
            .unwrap_or_default();
        report_disabled(&self.metrics, DisableCause::Failing, &disabled);
        Ok(disabled)
    }
}

impl Service for Disabler {
    const NAME: &'static str = "disabler";

    /// Sweeps every `interval` until shutdown; errors (a deadlock with a
    /// write-back included) are logged and retried at the next sweep.
    async fn run(self, mut shutdown: Shutdown) {
        if self.config.disable_after.is_none() {
            return;
        }
        loop {
            let wait = tokio::time::sleep(self.config.interval);
            if shutdown.before(wait).await.is_none() {
                return;
            }
            if let Err(err) = self.run_once().await {
                warn!(error = %err.one_line(), "sweep for failing webhooks failed; next sweep retries");
            }
        }
    }
}

/// Disables the webhooks whose receiver answered 410 Gone. Best effort: a
/// webhook this fails to disable answers 410 again on its next delivery.
pub async fn disable_gone(pool: &Pool, metrics: &Metrics, webhook_ids: &[Uuid]) {
    for webhook_id in webhook_ids {
        let disabled = async {
            let mut client = pool.get().await?;
            outage::disable(&mut client, *webhook_id, GONE_REASON).await
        };
        match disabled.await {
            Ok(disabled) => report_disabled(metrics, DisableCause::Gone, &Vec::from_iter(disabled)),
            Err(err) => {
                warn!(%webhook_id, error = %err.one_line(), "cannot disable the webhook its receiver says is gone")
            }
        }
    }
}

/// One warning and one count per webhook disabled (never its secret or URL).
fn report_disabled(metrics: &Metrics, cause: DisableCause, disabled: &[DisabledWebhook]) {
    for webhook in disabled {
        metrics.webhook_disabled(cause);
        warn!(
            webhook_id = %webhook.id,
            organization_id = %webhook.organization_id,
            reason = %webhook.reason,
            failed_deliveries = webhook.failed_deliveries,
            "webhook disabled: nothing is sent to it until `webhookd webhooks enable`; \
             its pending deliveries failed and `webhookd recover` replays them"
        );
    }
}

/// `disabled_reason` of a webhook disabled by the sweep.
fn failing_reason(webhook: &FailingWebhook, after: Duration) -> String {
    let mut reason = format!(
        "every delivery failed since {} (--disable-after {})",
        crate::event::format_occurred_at(webhook.failing_since),
        flag_duration(after)
    );
    if let Some(last) = &webhook.last_failure_reason {
        reason.push_str("; last error: ");
        reason.push_str(last);
    }
    reason
}

/// A duration as the flags take it, in the largest unit that divides it.
fn flag_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    let units = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    for (size, unit) in units {
        if millis >= size && millis.is_multiple_of(size) {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_four_times_per_period_within_bounds() {
        let every = |after| DisablerConfig::after(after).interval;
        assert_eq!(
            every(Some(Duration::from_secs(2))),
            Duration::from_millis(500)
        );
        assert_eq!(
            every(Some(Duration::from_secs(5 * 86_400))),
            SWEEP_AT_MOST_EVERY
        );
        assert_eq!(
            every(Some(Duration::from_millis(100))),
            SWEEP_AT_LEAST_EVERY
        );
        assert_eq!(every(None), SWEEP_AT_MOST_EVERY);
    }

    #[test]
    fn the_reason_names_the_run_the_flag_and_the_last_error() {
        let webhook = FailingWebhook {
            id: Uuid::nil(),
            failing_since: chrono::DateTime::from_timestamp(1_778_330_096, 789_000_000).unwrap(),
            last_failure_reason: Some("HTTP 500 Internal Server Error".into()),
        };
        assert_eq!(
            failing_reason(&webhook, Duration::from_secs(5 * 86_400)),
            "every delivery failed since 2026-05-09T12:34:56.789Z (--disable-after 5d); \
             last error: HTTP 500 Internal Server Error"
        );
        assert_eq!(flag_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(flag_duration(Duration::from_secs(90)), "90s");
        assert_eq!(flag_duration(Duration::from_secs(7200)), "2h");
    }
}
