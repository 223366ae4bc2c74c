//! Prometheus metrics, served on `/metrics` of the admin address.
//!
//! Labels stay bounded: outcomes are the fixed [`OutcomeCode`] set, and no
//! metric is labelled per webhook or per delivery (per-webhook health lives in
//! `outbox.webhook_status`). Queue depths are read from the database at scrape
//! time, through the partial indexes, so a replica's numbers are the whole
//! queue's, not its own share.

use std::sync::atomic::AtomicU64;

use deadpool_postgres::Pool;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

use crate::db;
use crate::delivery::sender::OutcomeCode;

/// The `outcome` label of attempts.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// One of the stable outcome codes.
    pub outcome: &'static str,
}

/// Why a webhook was disabled: the `cause` label of
/// `webhookd_webhooks_disabled_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisableCause {
    /// Its receiver answered 410 Gone.
    Gone,
    /// Every delivery failed for `--disable-after`.
    Failing,
}

impl DisableCause {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DisableCause::Gone => "gone",
            DisableCause::Failing => "failing",
        }
    }
}

/// The `cause` label of disabled webhooks.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    /// `gone` or `failing`.
    pub cause: &'static str,
}

/// The `table` label of per-table gauges: one of the queue's four tables.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    /// `webhooks`, `events`, `deliveries` or `delivery_attempts`.
    pub table: String,
}

/// The queue's depths and the pool's state, read at scrape time.
struct ScrapedGauges {
    pending: Gauge,
    due: Gauge,
    failed: Gauge,
    oldest_due_age: Gauge<f64, AtomicU64>,
    fanout_lag: Gauge<f64, AtomicU64>,
    unopenable_secrets: Gauge,
    database_up: Gauge,
    pool_size: Gauge,
    pool_available: Gauge,
}

impl ScrapedGauges {
    fn register(r: &mut Registry) -> Self {
        ScrapedGauges {
            pending: registered(
                r,
                "deliveries_pending",
                "Pending deliveries (all replicas), in flight included",
            ),
            due: registered(r, "deliveries_due", "Pending deliveries due now"),
            failed: registered(r, "deliveries_failed", "Deliveries that failed for good"),
            oldest_due_age: registered(
                r,
                "oldest_due_age_seconds",
                "How long the oldest due delivery has been waiting (0 when none)",
            ),
            fanout_lag: registered(
                r,
                "fanout_lag_seconds",
                "Age of the oldest event not yet fanned out (0 when none)",
            ),
            unopenable_secrets: registered(
                r,
                "webhooks_unopenable_secrets",
                "Active webhooks whose secret is sealed with a key this daemon is not configured \
                 with; their deliveries wait (see /readyz)",
            ),
            database_up: registered(r, "database_up", "1 when the scrape could read the queue"),
            pool_size: registered(r, "db_pool_connections", "Connections in the pool"),
            pool_available: registered(
                r,
                "db_pool_idle_connections",
                "Idle connections in the pool",
            ),
        }
    }
}

/// What this replica keeps per webhook and per receiver host, as the main
/// loop last found it (every 10 s): all three fall back once webhooks go
/// quiet or are revoked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerWebhookState {
    /// Webhooks whose pace (in-flight slots) is remembered.
    pub tracked_webhooks: usize,
    /// Webhooks whose signing key is cached.
    pub cached_signers: usize,
    /// Idle keep-alive connections to receivers.
    pub idle_connections: usize,
}

struct PerWebhookGauges {
    tracked_webhooks: Gauge,
    cached_signers: Gauge,
    idle_connections: Gauge,
}

impl PerWebhookGauges {
    fn register(r: &mut Registry) -> Self {
        PerWebhookGauges {
            tracked_webhooks: registered(
                r,
                "tracked_webhooks",
                "Webhooks whose in-flight pace this replica remembers (forgotten when quiet)",
            ),
            cached_signers: registered(
                r,
                "cached_signers",
                "Webhooks whose signing key this replica caches (dropped when quiet)",
            ),
            idle_connections: registered(
                r,
                "idle_connections",
                "Idle keep-alive connections to receivers (capped, closed when idle too long)",
            ),
        }
    }
}

/// What holds vacuum back, set by the horizon check
/// ([`crate::maintenance::horizon`]) every round rather than at scrape time.
struct HorizonGauges {
    age_seconds: Gauge<f64, AtomicU64>,
    age_transactions: Gauge,
    dead_tuples: Family<TableLabel, Gauge>,
}

impl HorizonGauges {
    fn register(registry: &mut Registry) -> Self {
        HorizonGauges {
            age_seconds: registered(
                registry,
                "xmin_horizon_age_seconds",
                "How long the oldest transaction, replication slot or prepared transaction \
                 holding this database's xmin horizon has held it (0 when none); dead rows newer \
                 than it cannot be vacuumed",
            ),
            age_transactions: registered(
                registry,
                "xmin_horizon_age_transactions",
                "Age in transaction ids of the oldest xmin horizon held in this database (0 when none)",
            ),
            dead_tuples: registered(
                registry,
                "table_dead_tuples",
                "Dead tuples of the queue's tables, from the statistics",
            ),
        }
    }
}

/// Registers a new metric of its default shape under `name`; returns it.
fn registered<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    registered_as(registry, name, help, M::default())
}

/// Registers `metric` under `name`; returns it.
fn registered_as<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// Every metric of one daemon.
pub struct Metrics {
    registry: Registry,
    attempts: Family<OutcomeLabel, Counter>,
    attempt_duration: Histogram,
    claims: Counter,
    claim_batch: Histogram,
    fanned_out_events: Counter,
    fanned_out_deliveries: Counter,
    results_fenced: Counter,
    listen_reconnects: Counter,
    webhooks_disabled: Family<CauseLabel, Counter>,
    in_flight: Gauge,
    per_webhook: PerWebhookGauges,
    scraped: ScrapedGauges,
    horizon: HorizonGauges,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric under the `webhookd_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("webhookd");
        let r = &mut registry;
        Metrics {
            attempts: registered(r, "delivery_attempts", "Delivery attempts by outcome"),
            // 1 ms to about 33 s: spans a local receiver up to the response timeout.
            attempt_duration: registered_as(
                r,
                "attempt_duration_seconds",
                "Duration of delivery attempts",
                Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            ),
            claims: registered(
                r,
                "claims",
                "Claim statements that leased at least one delivery",
            ),
            claim_batch: registered_as(
                r,
                "claim_batch_size",
                "Deliveries leased per claim",
                Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            ),
            fanned_out_events: registered(
                r,
                "fanned_out_events",
                "Events fanned out by this replica",
            ),
            fanned_out_deliveries: registered(
                r,
                "fanned_out_deliveries",
                "Delivery rows created by this replica's fan-out",
            ),
            results_fenced: registered(
                r,
                "results_fenced",
                "Attempt results dropped because the lease was lost or the delivery cancelled",
            ),
            listen_reconnects: registered(
                r,
                "listen_reconnects",
                "Times the LISTEN connection was lost",
            ),
            webhooks_disabled: registered(
                r,
                "webhooks_disabled",
                "Webhooks this replica disabled, by cause: gone (HTTP 410) or failing \
                 (--disable-after)",
            ),
            // Counted from claim to write-back, not only while the request is
            // out: a result waiting for the completer still holds its slot.
            in_flight: registered(
                r,
                "in_flight",
                "Deliveries claimed by this replica and not yet written back",
            ),
            per_webhook: PerWebhookGauges::register(r),
            scraped: ScrapedGauges::register(r),
            horizon: HorizonGauges::register(r),
            registry,
        }
    }

    /// The horizon check's reading: how long and how many transaction ids
    /// the oldest holder has held the xmin horizon (0 and 0 when none).
    pub fn xmin_horizon(&self, age_seconds: f64, age_transactions: i64) {
        self.horizon.age_seconds.set(age_seconds);
        self.horizon.age_transactions.set(age_transactions);
    }

    /// Dead tuples of one queue table.
    pub fn dead_tuples(&self, table: &str, dead: i64) {
        self.horizon
            .dead_tuples
            .get_or_create(&TableLabel {
                table: table.to_string(),
            })
            .set(dead);
    }

    /// One attempt finished.
    pub fn attempt(&self, outcome: OutcomeCode, duration: std::time::Duration) {
        self.attempts
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            })
            .inc();
        self.attempt_duration.observe(duration.as_secs_f64());
    }

    /// A claim leased `count` deliveries.
    pub fn claimed(&self, count: usize) {
        if count > 0 {
            self.claims.inc();
            self.claim_batch.observe(count as f64);
        }
    }

    /// A fan-out round.
    pub fn fanned_out(&self, events: i64, deliveries: i64) {
        self.fanned_out_events.inc_by(events.max(0) as u64);
        self.fanned_out_deliveries.inc_by(deliveries.max(0) as u64);
    }

    /// Results the fence dropped.
    pub fn fenced(&self, count: u64) {
        self.results_fenced.inc_by(count);
    }

    /// A webhook was disabled.
    pub fn webhook_disabled(&self, cause: DisableCause) {
        self.webhooks_disabled
            .get_or_create(&CauseLabel {
                cause: cause.as_str(),
            })
            .inc();
    }

    /// What the main loop found kept per webhook and per host.
    pub fn per_webhook_state(&self, state: &PerWebhookState) {
        let gauges = &self.per_webhook;
        gauges.tracked_webhooks.set(state.tracked_webhooks as i64);
        gauges.cached_signers.set(state.cached_signers as i64);
        gauges.idle_connections.set(state.idle_connections as i64);
    }

    /// The LISTEN connection was lost.
    pub fn listen_reconnect(&self) {
        self.listen_reconnects.inc();
    }

    /// The text exposition, after reading the queue from the database.
    /// `secret_key_ids` are the keys this daemon opens webhook secrets with.
    pub async fn render(&self, pool: &Pool, in_flight: usize, secret_key_ids: &[String]) -> String {
        self.in_flight.set(in_flight as i64);
        let status = pool.status();
        self.scraped.pool_size.set(status.size as i64);
        self.scraped.pool_available.set(status.available as i64);
        let sampled = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            let client = pool.get().await.ok()?;
            let depths = db::stats::queue_depths(&**client).await.ok()?;
            let unopenable = crate::keys::unconfigured_webhooks(&**client, secret_key_ids)
                .await
                .ok()?;
            Some((depths, unopenable))
        })
        .await
        .ok()
        .flatten();
        match sampled {
            Some((depths, unopenable)) => {
                self.scraped.database_up.set(1);
                self.scraped
                    .unopenable_secrets
                    .set(unopenable.iter().map(|(_, count)| count).sum());
                self.scraped.pending.set(depths.pending);
                self.scraped.due.set(depths.due);
                self.scraped.failed.set(depths.failed);
                self.scraped
                    .oldest_due_age
                    .set(depths.oldest_due_age_seconds);
                self.scraped.fanout_lag.set(depths.fanout_lag_seconds);
            }
            None => {
                self.scraped.database_up.set(0);
            }
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
