//! Stage 1: turn committed events into one delivery row per active webhook of
//! their organization. Each event fans out exactly once: the events are locked
//! (`SKIP LOCKED`, so replicas share the work), their deliveries inserted and
//! the events marked in one statement.
//!
//! The claim loop fans out one batch per round itself, which keeps the path
//! from a fresh event to its send short. When that batch comes back full, a
//! backlog is waiting: the [`FanOutPump`], a service of the daemon, then
//! drains it on its own connection while the loop goes on claiming, instead
//! of the loop alternating between the two and the database working on one
//! statement at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tracing::warn;

use crate::admin::metrics::Metrics;
use crate::db::queue::{self, NextWork};
use crate::db::Preparing;
use crate::delivery::claimer::{self, Claim, Slots};
use crate::error::Result;
use crate::service::Service;
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
    preparing: Preparing,
}

impl FanOut {
    /// A fan-out over this pool.
    pub fn new(config: FanOutConfig, pool: Pool, preparing: Preparing) -> Self {
        FanOut {
            config,
            pool,
            preparing,
        }
    }

    /// Fans out one batch of the claim loop's size and creates the
    /// deliveries that fit into `slots` already leased, ready to send: no
    /// claim is needed for them.
    pub async fn run_leasing(&self, slots: &Slots) -> Result<LeasingRound> {
        let client = self.pool.get().await?;
        let token = claimer::lease_token();
        let batch = self.config.batch;
        let session = self.preparing.session(&client);
        let done = queue::fan_out_lease(session, batch, &slots.room(token)).await?;
        Ok(LeasingRound {
            round: FanOutRound {
                events: done.count.events,
                deliveries: done.count.deliveries,
                more: done.count.events >= i64::from(batch),
            },
            leased: Claim {
                token,
                asked: slots.limit,
                deliveries: done.deliveries,
            },
            unleased: done.unleased,
            next: done.next,
        })
    }

    async fn run_batch(&self, batch: i32) -> Result<FanOutRound> {
        let client = self.pool.get().await?;
        let count = queue::fan_out(self.preparing.session(&client), batch).await?;
        Ok(FanOutRound {
            events: count.events,
            deliveries: count.deliveries,
            more: count.events >= i64::from(batch),
        })
    }
}

/// What one fan-out statement did: the pump's ([`FanOutPump::run_once`]) or the leasing one's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanOutRound {
    /// Events fanned out.
    pub events: i64,
    /// Deliveries created.
    pub deliveries: i64,
    /// The batch was full: more events are probably waiting.
    pub more: bool,
}

/// What one call of [`FanOut::run_leasing`] did.
#[derive(Debug)]
pub struct LeasingRound {
    /// Events fanned out and deliveries created.
    pub round: FanOutRound,
    /// The deliveries created already leased.
    pub leased: Claim,
    /// Deliveries created due now that found no free slot.
    pub unleased: i64,
    /// When work is next due, read by the same statement (it cannot see
    /// the rows it created itself: `unleased` counts those).
    pub next: NextWork,
}

impl LeasingRound {
    /// When nothing but what this round leased is due (the batch was not
    /// full, every delivery found a slot, no retry or expired lease is due),
    /// the claim has nothing to find: when work is next due.
    pub fn caught_up(&self) -> Option<NextWork> {
        let nothing_else = !self.round.more
            && self.unleased == 0
            && self.next.due_in != Some(std::time::Duration::ZERO);
        nothing_else.then_some(self.next)
    }
}

/// Starts the [`FanOutPump`] and tells whether it is draining; the claim
/// loop's side of it.
#[derive(Clone, Default)]
pub struct PumpControl {
    running: Arc<AtomicBool>,
    start: Arc<Notify>,
}

impl PumpControl {
    /// Whether the pump is draining the backlog right now.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Starts draining unless the pump already is. It stops at the first
    /// short batch, on an error (the claim loop fans out again on its next
    /// round and starts the pump again if it must) or at shutdown.
    pub fn start(&self) {
        if !self.running.swap(true, Ordering::AcqRel) {
            self.start.notify_one();
        }
    }
}

/// Drains a fan-out backlog in the background when the claim loop asks
/// through its [`PumpControl`]; a service of the daemon, so it stops with it.
pub struct FanOutPump {
    fanout: FanOut,
    control: PumpControl,
    /// Woken after each batch that created deliveries, and when a drain ends.
    fanned: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl FanOutPump {
    /// A pump that wakes `fanned` whenever it has created deliveries.
    pub fn new(fanout: FanOut, fanned: Arc<Notify>, metrics: Arc<Metrics>) -> Self {
        FanOutPump {
            fanout,
            control: PumpControl::default(),
            fanned,
            metrics,
        }
    }

    /// What starts it and tells whether it runs.
    pub fn control(&self) -> PumpControl {
        self.control.clone()
    }

    /// Drains until a batch comes back short, an error or shutdown.
    async fn drain(&self, shutdown: &Shutdown) {
        while !shutdown.is_triggered() {
            match self.run_once().await {
                Ok(round) if round.more => {}
                Ok(_) => break,
                Err(err) => {
                    warn!(error = %err.one_line(), "fan-out of the backlog failed; the delivery loop takes over");
                    break;
                }
            }
        }
        self.control.running.store(false, Ordering::Release);
        self.fanned.notify_one();
    }

    /// Fans out one batch of the pump's size.
    pub async fn run_once(&self) -> Result<FanOutRound> {
        let round = self.fanout.run_batch(self.fanout.config.pump_batch).await?;
        self.metrics.fanned_out(round.events, round.deliveries);
        if round.deliveries > 0 {
            self.fanned.notify_one();
        }
        Ok(round)
    }
}

impl Service for FanOutPump {
    const NAME: &'static str = "fan-out pump";

    /// Waits for the claim loop to start a drain, drains, waits again.
    async fn run(self, mut shutdown: Shutdown) {
        loop {
            if shutdown
                .before(self.control.start.notified())
                .await
                .is_none()
            {
                return;
            }
            self.drain(&shutdown).await;
        }
    }
}
