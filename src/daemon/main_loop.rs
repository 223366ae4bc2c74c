//! The main loop: fan out new events, claim what is due into free slots,
//! start a task per delivery; when a claim comes back short, turn producers'
//! NOTIFY on, look once more, then sleep until a notification, the next due
//! time, a freed slot or the fallback poll, whichever is first
//! ([`super::sleep`]).
//!
//! At shutdown it stops claiming, gives the deliveries in flight the grace
//! period and releases the leases of those that do not finish in it, so
//! another replica sends them at once rather than after the lease.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::sleep::{Signals, Sleep, Tick, POLL_WITHOUT_LISTEN};
use super::wakeup::{IdleStep, WakeupSwitch};
use crate::admin::metrics::{Metrics, PerWebhookState};
use crate::db;
use crate::db::queue::NextWork;
use crate::db::Preparing;
use crate::delivery::claimer::{Claim, Claimer, InFlight};
use crate::delivery::dispatcher::Dispatcher;
use crate::delivery::fanout::{FanOut, PumpControl};
use crate::delivery::notifier::ListenState;
use crate::delivery::sender::Sender;
use crate::error::Result;
use crate::service::{Ending, Service};
use crate::shutdown::Shutdown;

/// First pause after a failed round; doubles up to [`ERROR_DELAY_MAX`].
const ERROR_DELAY_FIRST: Duration = Duration::from_millis(100);
/// Longest pause after failed rounds.
const ERROR_DELAY_MAX: Duration = Duration::from_secs(5);
/// How often idle connections to receivers are closed and quiet webhooks'
/// state is forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// The loop's timing.
#[derive(Debug, Clone, Copy)]
pub(super) struct LoopTiming {
    /// Longest sleep without any wake-up.
    pub poll_interval: Duration,
    /// How long in-flight deliveries may finish after shutdown.
    pub shutdown_grace: Duration,
}

/// The main loop and what it drives.
pub(super) struct MainLoop {
    pub fanout: FanOut,
    pub pump: PumpControl,
    pub claimer: Claimer,
    pub dispatcher: Arc<Dispatcher>,
    pub in_flight: Arc<InFlight>,
    pub pool: Pool,
    pub preparing: Preparing,
    pub sender: Arc<Sender>,
    pub metrics: Arc<Metrics>,
    pub signals: Signals,
    pub timing: LoopTiming,
}

/// What the loop's fan-out did.
#[derive(Debug, Clone, Copy, Default)]
struct Fanned {
    /// The batch was full.
    more: bool,
    /// Deliveries it created leased and started.
    leased: usize,
    /// Nothing else is due: the claim is skipped, and this says when work
    /// is next due.
    caught_up: Option<NextWork>,
}

/// What one claim asked for and got.
#[derive(Debug, Clone, Copy)]
struct Claimed {
    asked: usize,
    count: usize,
}

impl Service for MainLoop {
    const NAME: &'static str = "main loop";
    // Its send tasks' results are owed to the completer, and their leases
    // to the other replicas.
    const ENDING: Ending = Ending::Drains;

    /// Claims and sends until shutdown, then finishes or gives back what is
    /// in flight. Returning drops the dispatcher, the last sender of the
    /// completer's channel: the completer then flushes and returns.
    async fn run(self, shutdown: Shutdown) {
        let mut tasks = JoinSet::new();
        self.claim_until(&mut tasks, shutdown).await;
        // Leave producers' NOTIFY on: the replicas that remain may be idle.
        if let Err(err) = self.set_wakeup_notify(true).await {
            warn!(error = %err.one_line(), "cannot turn wake-up notifications back on");
        }
        self.finish_in_flight(tasks).await;
    }
}

impl MainLoop {
    /// Rounds and sleeps until shutdown; a failed round is retried with backoff.
    async fn claim_until(&self, tasks: &mut JoinSet<()>, mut shutdown: Shutdown) {
        let mut switch = WakeupSwitch::default();
        let mut error_delay = ERROR_DELAY_FIRST;
        let mut last_prune = tokio::time::Instant::now();
        while !shutdown.is_triggered() {
            // Reap finished tasks so the set does not grow.
            while tasks.try_join_next().is_some() {}
            if last_prune.elapsed() > PRUNE_EVERY {
                self.forget_idle_state();
                last_prune = tokio::time::Instant::now();
            }
            let sleep = match self.tick(tasks, &mut switch).await {
                Ok(Tick::Again) => {
                    error_delay = ERROR_DELAY_FIRST;
                    continue;
                }
                Ok(Tick::Sleep(sleep)) => {
                    error_delay = ERROR_DELAY_FIRST;
                    sleep
                }
                Err(err) => {
                    warn!(error = %err.one_line(), retry_in_ms = error_delay.as_millis() as u64,
                          "delivery loop error; retrying");
                    let sleep = Sleep::only(error_delay);
                    error_delay = (error_delay * 2).min(ERROR_DELAY_MAX);
                    // Whatever state the switch is in, find out again after an error.
                    switch = WakeupSwitch::default();
                    sleep
                }
            };
            sleep.wait(&self.signals, &mut shutdown).await;
        }
    }

    /// Closes idle connections past their timeout and forgets the state of
    /// webhooks that went quiet (or were revoked); once nothing is in
    /// flight, hands freed memory back to the system.
    fn forget_idle_state(&self) {
        self.sender.prune_idle_connections();
        let state = PerWebhookState {
            tracked_webhooks: self.in_flight.forget_quiet(),
            cached_signers: self.dispatcher.forget_quiet(),
            idle_connections: self.sender.idle_connections(),
        };
        self.metrics.per_webhook_state(&state);
        if self.in_flight.total() == 0 {
            super::memory::give_back();
        }
    }

    /// One round: fan out (leasing and starting what fits), claim what else
    /// is due, dispatch; then decide how long to sleep.
    async fn tick(&self, tasks: &mut JoinSet<()>, switch: &mut WakeupSwitch) -> Result<Tick> {
        let fanned = self.fan_out(tasks).await?;
        if let Some(next) = fanned.caught_up {
            // The common case at a modest rate: one statement per event.
            return self.drained(switch, fanned.leased, Some(next)).await;
        }
        let claimed = self.claim(tasks).await?;
        if claimed.asked == 0 {
            // Every slot is taken until results are written: the completer
            // writes what it holds now and wakes the loop.
            self.signals.starved.notify_one();
            return Ok(Tick::Sleep(Sleep::until_recorded(
                self.timing.poll_interval,
            )));
        }
        let pumping = self.pump.is_running();
        if claimed.count == claimed.asked || fanned.more || pumping {
            return self.busy(switch, claimed, pumping).await;
        }
        self.drained(switch, claimed.count, None).await
    }

    /// The loop's own fan-out batch, whose new deliveries that fit into free
    /// slots come back leased and are started at once; skipped while the
    /// pump drains a backlog, and a full batch starts the pump.
    async fn fan_out(&self, tasks: &mut JoinSet<()>) -> Result<Fanned> {
        if self.pump.is_running() {
            return Ok(Fanned::default());
        }
        let slots = self.claimer.slots(&self.in_flight);
        let round = self.fanout.run_leasing(&slots).await?;
        self.metrics
            .fanned_out(round.round.events, round.round.deliveries);
        if round.round.more {
            self.pump.start();
        }
        let fanned = Fanned {
            more: round.round.more,
            leased: round.leased.deliveries.len(),
            caught_up: round.caught_up(),
        };
        self.metrics.claimed(fanned.leased);
        if fanned.leased > 0 {
            self.dispatch(round.leased, tasks).await?;
        }
        Ok(fanned)
    }

    /// Claims into the free slots and starts a task per claimed delivery.
    async fn claim(&self, tasks: &mut JoinSet<()>) -> Result<Claimed> {
        let claim = self.claimer.run_once(&self.in_flight).await?;
        self.metrics.claimed(claim.deliveries.len());
        let claimed = Claimed {
            asked: claim.asked,
            count: claim.deliveries.len(),
        };
        if claimed.count > 0 {
            self.dispatch(claim, tasks).await?;
        }
        Ok(claimed)
    }

    /// Starts the claimed deliveries; gives them back if that fails.
    async fn dispatch(&self, claim: Claim, tasks: &mut JoinSet<()>) -> Result<()> {
        let leases: Vec<_> = claim
            .deliveries
            .iter()
            .map(|d| (d.id, claim.token))
            .collect();
        if let Err(err) = self.dispatcher.dispatch(claim, tasks).await {
            // Nothing was started: give the rows back now rather than
            // after the lease, with their attempt count restored.
            let client = self.pool.get().await?;
            db::queue::release(&**client, &leases).await?;
            return Err(err);
        }
        Ok(())
    }

    /// A full claim, a full fan-out or a running pump: more work is waiting.
    async fn busy(
        &self,
        switch: &mut WakeupSwitch,
        claimed: Claimed,
        pumping: bool,
    ) -> Result<Tick> {
        // The loop polls back to back, so producers need not pay for NOTIFY.
        // Only a replica that hears notifications manages the switch.
        if self.signals.listen.get() == ListenState::Active && switch.on_busy() {
            self.set_wakeup_notify(false).await?;
        }
        if claimed.count < claimed.asked && pumping {
            // Claimed all there is for now: the pump wakes the loop when
            // its next batch has created deliveries.
            let saturated = self.in_flight.any_saturated();
            return Ok(Tick::Sleep(Sleep::after_round(
                self.timing.poll_interval,
                saturated,
            )));
        }
        Ok(Tick::Again)
    }

    /// Claimed less than it asked for: turn NOTIFY on, wait out its fence,
    /// then sleep until the next due time at the most. `known` is when work
    /// is next due if this round already read it.
    async fn drained(
        &self,
        switch: &mut WakeupSwitch,
        claimed: usize,
        known: Option<NextWork>,
    ) -> Result<Tick> {
        let poll_interval = self.timing.poll_interval;
        let next = match known {
            Some(next) => next,
            None => {
                let client = self.pool.get().await?;
                db::queue::next_work(self.preparing.session(&client)).await?
            }
        };
        let listening = self.signals.listen.get() == ListenState::Active;
        let most = match switch.on_idle(&next) {
            // No notification can come: nothing to switch on or fence, and
            // the loop looks again sooner.
            _ if !listening => poll_interval.min(POLL_WITHOUT_LISTEN),
            IdleStep::TurnOn => {
                if let Some(fence) = self.set_wakeup_notify(true).await? {
                    switch.turned_on(fence);
                }
                return Ok(Tick::Again);
            }
            IdleStep::LookAgain => return Ok(Tick::Again),
            IdleStep::WaitForFence(wait) => wait.min(poll_interval),
            IdleStep::Sleep => poll_interval,
        };
        let saturated = self.in_flight.any_saturated();
        let sleep = match next.due_in {
            // Due work held back by a webhook at its cap: a freed slot wakes
            // the loop; polling would only scan the same rows again.
            Some(Duration::ZERO) if saturated => most,
            // Due work another replica is claiming right now: look again soon.
            Some(Duration::ZERO) if claimed == 0 => Duration::from_millis(50).min(most),
            Some(Duration::ZERO) => return Ok(Tick::Again),
            Some(wait) => wait.min(most),
            None => most,
        };
        Ok(Tick::Sleep(Sleep::after_round(sleep, saturated)))
    }

    /// Turns producers' NOTIFY on or off; on returns the fence.
    async fn set_wakeup_notify(&self, on: bool) -> Result<Option<i64>> {
        let client = self.pool.get().await?;
        db::queue::set_wakeup_notify(&**client, on).await
    }

    /// Waits out the grace period for the send tasks; cancels what is left
    /// and releases its leases.
    async fn finish_in_flight(&self, mut tasks: JoinSet<()>) {
        info!(
            in_flight = self.in_flight.total(),
            "shutting down: no new claims; finishing in-flight deliveries"
        );
        let finished = tokio::time::timeout(self.timing.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if finished.is_ok() {
            return;
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        let held = self.in_flight.held_leases();
        let released = async {
            let client = self.pool.get().await?;
            db::queue::release(&**client, &held).await
        };
        match released.await {
            Ok(released) => info!(
                released,
                "released deliveries still in flight after the grace period"
            ),
            Err(err) => {
                warn!(error = %err.one_line(), "cannot release leases; they expire by themselves")
            }
        }
    }
}
