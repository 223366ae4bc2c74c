//! The ceiling: the daemon's own statements back to back, without HTTP, as
//! fast as this PostgreSQL runs them. It shows what the database can do,
//! and the delivery scenarios report their rate as a share of it.
//!
//! Each worker is one connection doing what one replica's loop, pump and
//! completer do for a backlog, one after the other: fan-out (the loop's batch,
//! leasing what fits, then the pump's while batches come back full), the claim through the product's
//! own `Claimer` (its two passes, its window and the per-webhook pacing, which
//! grows on fast successes as it would), the write-back of every claimed row
//! as delivered with its attempt-log row (the arguments the dispatcher builds
//! for a 204), and the webhook status fold about once a second per webhook.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::{json, Value};
use uuid::Uuid;
use webhookd::db::queue::{self, AttemptRecord, ClaimedDelivery, NextStatus, WebhookHealth};
use webhookd::db::Preparing;
use webhookd::delivery::claimer::{Claimer, ClaimerConfig, InFlight};
use webhookd::delivery::fanout::{FanOut, FanOutConfig};
use webhookd::delivery::pacing::Feedback;
use webhookd::delivery::sender::OutcomeCode;

use super::{round3, Bench, BenchResult, Sizes};
use crate::{pgstats, sql};

/// How often a webhook's status is folded while its outcomes keep their kind
/// (the completer's rule, src/delivery/completer.rs).
const FOLD_EVERY: Duration = Duration::from_secs(1);
/// Longest a ceiling run may take.
const RUN_LIMIT: Duration = Duration::from_secs(900);

/// The best rates of the ceiling, in deliveries per second.
#[derive(Debug, Clone, Copy)]
pub struct CeilingRates {
    /// One webhook (throughput and backlog compare with this).
    pub single: f64,
    /// Many webhooks per organization (fan-out compares with this).
    pub fanout: f64,
}

/// One ceiling run.
struct Run {
    workers: usize,
    deliveries: u64,
    seconds: f64,
    writes: Value,
}

impl Run {
    fn rate(&self) -> f64 {
        self.deliveries as f64 / self.seconds
    }
}

impl Bench {
    /// The ceiling with one webhook and with many, each at every worker
    /// count of `sizes`; remembers the best rates for the other scenarios.
    pub async fn ceiling(&self, sizes: &Sizes) -> BenchResult<Value> {
        println!(
            "ceiling: the daemon's statements back to back, no HTTP (fan-out, claim, write-back, status fold); {:?} connections",
            sizes.ceiling_workers
        );
        let deliveries = sizes.ceiling_deliveries;
        let single = self.ceiling_variant(sizes, deliveries, 1).await?;
        let webhooks = sizes.fanout_webhooks;
        let fanout = self
            .ceiling_variant(sizes, deliveries / webhooks as i64, webhooks)
            .await?;
        let best = |runs: &[Run]| runs.iter().map(Run::rate).fold(0.0, f64::max);
        let rates = CeilingRates {
            single: best(&single),
            fanout: best(&fanout),
        };
        let _ = self.ceiling.set(rates);
        let runs_json = |runs: &[Run]| -> Vec<Value> {
            runs.iter()
                .map(|r| json!({"workers": r.workers, "deliveries": r.deliveries, "seconds": round3(r.seconds),
                                "deliveries_per_second": r.rate().round(), "writes_per_delivery": r.writes}))
                .collect()
        };
        Ok(json!({
            "scenario": "ceiling",
            "deliveries_per_second": rates.single.round(),
            "fanout_deliveries_per_second": rates.fanout.round(),
            "fanout_webhooks": sizes.fanout_webhooks,
            "runs": runs_json(&single),
            "fanout_runs": runs_json(&fanout),
        }))
    }

    /// `events` events to an organization with `webhooks` webhooks, drained
    /// by each worker count in a fresh database; prints each run and the
    /// writes per delivery of the fastest.
    async fn ceiling_variant(
        &self,
        sizes: &Sizes,
        events: i64,
        webhooks: usize,
    ) -> BenchResult<Vec<Run>> {
        let mut runs = Vec::new();
        for &workers in sizes.ceiling_workers {
            let db = self.fresh_db().await?;
            let org = Uuid::new_v4();
            for _ in 0..webhooks {
                self.webhook(&db, org, "/ok").await?;
            }
            // Producers would not notify while a daemon is busy either.
            sql::set_wakeup_notify(&db.client, false).await?;
            self.fill(&db, org, events).await?;
            sql::vacuum_analyze(&db.client, &["outbox.events"]).await?;
            let expected = events as u64 * webhooks as u64;
            let me = pgstats::backend_pid(&db.client).await?;
            pgstats::settle(&db.client, db.scratch.name(), me).await?;
            let before = pgstats::writes(&db.client).await?;
            let seconds = drain_statements(&db.url, workers, expected).await?;
            pgstats::settle(&db.client, db.scratch.name(), me).await?;
            let after = pgstats::writes(&db.client).await?;
            let recorded = sql::delivered(&db.client).await? as u64;
            if recorded < expected {
                return Err(format!("ceiling: {recorded} of {expected} recorded").into());
            }
            let writes = pgstats::per_delivery(&before, &after, expected);
            let run = Run {
                workers,
                deliveries: expected,
                seconds,
                writes,
            };
            println!(
                "  {webhooks:>2} webhook(s), {workers} connection(s): {expected:>8} deliveries in {seconds:>6.2}s = {:>7.0}/s",
                run.rate()
            );
            runs.push(run);
            db.drop_database().await;
        }
        if let Some(best) = runs.iter().max_by(|a, b| a.rate().total_cmp(&b.rate())) {
            println!("  writes of the fastest ({} connection(s)):", best.workers);
            pgstats::print_per_delivery(&best.writes);
        }
        Ok(runs)
    }
}

/// Runs `workers` connections until `expected` deliveries were written
/// back; returns the seconds it took.
async fn drain_statements(url: &str, workers: usize, expected: u64) -> BenchResult<f64> {
    let target = webhookd::db::parse_url(url)?;
    let mut pools = Vec::new();
    for _ in 0..workers {
        pools.push(webhookd::db::connect_pool(&target, 1).await?);
    }
    let written = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + RUN_LIMIT;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for pool in pools {
        let written = written.clone();
        tasks.push(tokio::spawn(async move {
            worker(pool, &written, expected, deadline)
                .await
                .map_err(|err| err.one_line())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    if written.load(Ordering::Relaxed) < expected {
        return Err(format!("ceiling: not drained within {}s", RUN_LIMIT.as_secs()).into());
    }
    Ok(seconds)
}

/// One connection's rounds: fan out, claim, write back, fold; until
/// `written` reaches `expected` (or the deadline passes). Its pool holds one
/// connection, so each step takes it in turn.
async fn worker(
    pool: Pool,
    written: &AtomicU64,
    expected: u64,
    deadline: Instant,
) -> webhookd::Result<()> {
    let config = ClaimerConfig::default();
    // As the daemon sends them on a direct connection: prepared.
    let preparing = Preparing::default();
    preparing.set(true);
    let claimer = Claimer::new(config, pool.clone(), preparing.clone());
    let in_flight = InFlight::new(config.pacing);
    let fan_out = FanOutConfig::default();
    let loop_fan_out = FanOut::new(fan_out, pool.clone(), preparing.clone());
    let mut fan_out_batch = fan_out.batch;
    let mut health = Health::default();
    while written.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        // The loop's own batch leases what fits into free slots; a full one
        // starts the pump, which drains in larger ones and leases nothing.
        let (events, claim) = if fan_out_batch == fan_out.batch {
            let round = loop_fan_out.run_leasing(&claimer.slots(&in_flight)).await?;
            let claim = if round.leased.deliveries.is_empty() {
                claimer.run_once(&in_flight).await?
            } else {
                round.leased
            };
            (round.round.events, claim)
        } else {
            // The pool's one connection: given back before the claim takes it.
            let fanned = {
                let client = pool.get().await?;
                queue::fan_out(preparing.session(&client), fan_out_batch).await?
            };
            (fanned.events, claimer.run_once(&in_flight).await?)
        };
        fan_out_batch = if events >= i64::from(fan_out_batch) {
            fan_out.pump_batch
        } else {
            fan_out.batch
        };
        if claim.deliveries.is_empty() {
            if events == 0 {
                // Another connection holds what is left for a moment.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            continue;
        }
        let records: Vec<AttemptRecord> = claim
            .deliveries
            .iter()
            .map(|delivery| {
                in_flight.start(delivery, claim.token);
                in_flight.finish(delivery.id, delivery.webhook_id, Feedback::Fast);
                delivered(delivery, claim.token)
            })
            .collect();
        let client = pool.get().await?;
        let landed = queue::complete(preparing.session(&client), &records).await?;
        in_flight.recorded(records.len());
        health.add(&records);
        health.fold(&client, false).await?;
        written.fetch_add(landed, Ordering::Relaxed);
    }
    health.fold(&**pool.get().await?, true).await
}

/// What the dispatcher hands the completer for a 204 that took a millisecond.
fn delivered(delivery: &ClaimedDelivery, token: Uuid) -> AttemptRecord {
    AttemptRecord {
        delivery_id: delivery.id,
        webhook_id: delivery.webhook_id,
        lease_token: token,
        attempt: delivery.attempt,
        next: NextStatus::Delivered,
        status_code: Some(204),
        outcome: OutcomeCode::Delivered.as_str(),
        reason: None,
        response_excerpt: None,
        started_at: Utc::now(),
        duration: Duration::from_millis(1),
        retry_after: None,
        disables_webhook: false,
    }
}

/// Webhook status waiting to be folded, as the completer keeps it: a webhook
/// is folded at once the first time, then at most once per [`FOLD_EVERY`]
/// (every outcome here is a success, so its kind never turns).
#[derive(Default)]
struct Health {
    /// Latest success not yet folded, per webhook.
    waiting: HashMap<Uuid, DateTime<Utc>>,
    /// When each webhook was last folded.
    folded: HashMap<Uuid, Instant>,
}

impl Health {
    fn add(&mut self, records: &[AttemptRecord]) {
        for record in records {
            let finished = record.started_at + chrono::Duration::milliseconds(1);
            let latest = self.waiting.entry(record.webhook_id).or_insert(finished);
            *latest = (*latest).max(finished);
        }
    }

    /// Folds the webhooks that are due (all waiting ones when `all`).
    async fn fold(&mut self, client: &tokio_postgres::Client, all: bool) -> webhookd::Result<()> {
        let now = Instant::now();
        let due: Vec<Uuid> = self
            .waiting
            .keys()
            .filter(|id| {
                all || self
                    .folded
                    .get(*id)
                    .is_none_or(|at| now >= *at + FOLD_EVERY)
            })
            .copied()
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let mut health: Vec<WebhookHealth> = Vec::new();
        for id in due {
            let success = self.waiting.remove(&id);
            self.folded.insert(id, now);
            health.push(WebhookHealth {
                webhook_id: id,
                last_success_at: success,
                last_failure_at: None,
                last_failure_reason: None,
            });
        }
        health.sort_by_key(|h| h.webhook_id);
        queue::fold_webhook_health(client, &health).await
    }
}
