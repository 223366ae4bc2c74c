//! Stage 1: turn committed events into one delivery row per active webhook of
//! their organization. Each event fans out exactly once: the events are locked
//! (`SKIP LOCKED`, so replicas share the work), their deliveries inserted and
//! the events marked in one statement.
//!
//! The claim loop fans out one batch per round itself, which keeps the path
//! from a fresh event to its send short. When that batch comes back full, a
//! backlog is waiting: a [`FanOutPump`] then drains it on its own connection
//! while the loop goes on claiming, instead of the loop alternating between
//! the two and the database working on one statement at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tracing::warn;

use crate::admin::metrics::Metrics;
use crate::db::queue;
use crate::error::Result;
use crate::shutdown::Shutdown;

/// Fan-out settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanOutConfig {
    /// Events per statement of the claim loop's own fan-out: small, because
    /// the loop claims nothing while it runs (500 events of an organization
    /// with 10 webhooks take ~150 ms).
    pub batch: i32,
    /// Events per statement of the [`FanOutPump`].
    pub pump_batch: i32,
}

impl Default for FanOutConfig {
    fn default() -> Self {
        FanOutConfig {
            batch: 50,
            pump_batch: 500,
        }
    }
}

/// The fan-out service.
#[derive(Clone)]
pub struct FanOut {
    config: FanOutConfig,
    pool: Pool,
}

impl FanOut {
    /// A fan-out over this pool.
    pub fn new(config: FanOutConfig, pool: Pool) -> Self {
        FanOut { config, pool }
    }

    /// Fans out one batch of the claim loop's size.
    pub async fn run_once(&self) -> Result<FanOutRound> {
        self.run_batch(self.config.batch).await
    }

    async fn run_batch(&self, batch: i32) -> Result<FanOutRound> {
        let client = self.pool.get().await?;
        let count = queue::fan_out(&**client, batch).await?;
        Ok(FanOutRound {
            events: count.events,
            deliveries: count.deliveries,
            more: count.events >= i64::from(batch),
        })
    }
}

/// What one call of [`FanOut::run_once`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanOutRound {
    /// Events fanned out.
    pub events: i64,
    /// Deliveries created.
    pub deliveries: i64,
    /// The batch was full: more events are probably waiting.
    pub more: bool,
}

/// Drains a fan-out backlog in the background, one pump at a time.
pub struct FanOutPump {
    fanout: FanOut,
    running: Arc<AtomicBool>,
    /// Woken after each batch that created deliveries, and when the pump stops.
    fanned: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl FanOutPump {
    /// A pump that wakes `fanned` whenever it has created deliveries.
    pub fn new(fanout: FanOut, fanned: Arc<Notify>, metrics: Arc<Metrics>) -> Self {
        FanOutPump {
            fanout,
            running: Arc::new(AtomicBool::new(false)),
            fanned,
            metrics,
        }
    }

    /// Whether a pump is draining the backlog right now.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Starts draining unless a pump already is. It stops at the first short
    /// batch, on an error (the claim loop fans out again on its next round
    /// and starts a new pump if it must) or at shutdown.
    pub fn start(&self, shutdown: Shutdown) {
        if self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let fanout = self.fanout.clone();
        let running = self.running.clone();
        let fanned = self.fanned.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            while !shutdown.is_triggered() {
                match fanout.run_batch(fanout.config.pump_batch).await {
                    Ok(round) => {
                        metrics.fanned_out(round.events, round.deliveries);
                        if round.deliveries > 0 {
                            fanned.notify_one();
                        }
                        if !round.more {
                            break;
                        }
                    }
                    Err(err) => {
                        warn!(error = %err.one_line(), "fan-out of the backlog failed; the delivery loop takes over");
                        break;
                    }
                }
            }
            running.store(false, Ordering::Release);
            fanned.notify_one();
        });
    }
}
