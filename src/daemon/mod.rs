//! Wires the stages together and owns the main loop and shutdown.
//!
//! The loop: fan out new events, claim what is due into free slots, start a
//! task per delivery; when a claim comes back short, turn producers' NOTIFY
//! on, look once more, then sleep until a notification, the next due time,
//! a freed slot or the fallback poll, whichever is first.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::admin::metrics::Metrics;
use crate::db::{self, DatabaseTarget};
use crate::delivery::claimer::{Claimer, ClaimerConfig, InFlight};
use crate::delivery::completer::{Completer, CompleterConfig};
use crate::delivery::dispatcher::{Dispatcher, DispatcherParts};
use crate::delivery::fanout::{FanOut, FanOutConfig, FanOutPump, FanOutRound};
use crate::delivery::notifier::{
    IdleStep, ListenState, ListenStatus, Notifier, NotifierConfig, WakeupSwitch,
};
use crate::delivery::retry::RetryPolicy;
use crate::delivery::sender::{Sender, SenderConfig};
use crate::error::{Error, Result};
use crate::keys::Keyring;
use crate::shutdown::Shutdown;

/// Everything `webhookd run` needs, validated.
#[derive(Clone)]
pub struct DaemonConfig {
    /// The database: the pool's connections.
    pub database: DatabaseTarget,
    /// Where LISTEN connects.
    pub listen: ListenConfig,
    /// Retry schedule.
    pub retry: RetryPolicy,
    /// HTTP settings.
    pub sender: SenderConfig,
    /// Claim batch, caps and lease.
    pub claimer: ClaimerConfig,
    /// Fan-out batch.
    pub fanout: FanOutConfig,
    /// Write-back batching.
    pub completer: CompleterConfig,
    /// Longest sleep without any wake-up.
    pub poll_interval: Duration,
    /// How long in-flight requests may finish after SIGTERM before their
    /// leases are released.
    pub shutdown_grace: Duration,
    /// Seals new webhook secrets and opens stored ones.
    pub secrets: Keyring,
    /// How long a delivery whose webhook secret no configured key opens
    /// waits before it is claimed again (see
    /// [`crate::delivery::dispatcher::UNOPENABLE_SECRET_DELAY`]).
    pub unopenable_secret_delay: Duration,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Where `/healthz`, `/readyz`, `/metrics` and the management API are served.
    pub admin_addr: std::net::SocketAddr,
    /// `WEBHOOKD_ADMIN_TOKEN`: enables the management API.
    pub admin_token: Option<String>,
    /// How long finished events are kept.
    pub retention: crate::maintenance::retention::RetentionConfig,
}

/// The LISTEN connection's target.
#[derive(Clone, Debug)]
pub struct ListenConfig {
    /// `--listen-database-url`, or `DATABASE_URL` when that is not set.
    pub database: DatabaseTarget,
    /// Set by the operator: a LISTEN that cannot work there is a
    /// configuration error, not a reason to fall back to polling.
    pub explicit: bool,
}

/// Shared signals between the loop, the notifier and the send tasks.
struct Signals {
    /// NOTIFY arrived, or the notifier reconnected.
    wake: Arc<Notify>,
    /// An in-flight delivery finished: its webhook has a free slot.
    slot_freed: Arc<Notify>,
    /// The completer wrote a batch: that much global capacity is back.
    recorded: Arc<Notify>,
    /// Whether LISTEN works (for the loop's sleeps and for readiness).
    listen: Arc<ListenStatus>,
}

/// Runs the daemon until `shutdown`; returns once in-flight work is finished
/// or released and every result is written.
pub async fn run(config: DaemonConfig, shutdown: Shutdown) -> Result<()> {
    let pool = db::connect_pool(&config.database, config.pool_size).await?;
    {
        let client = pool.get().await?;
        // Not on a newer schema either, though it would work: a replica
        // left on an old release is better noticed at its start.
        db::schema_state(&**client).await?.require_current()?;
        crate::keys::warn_if_unconfigured(&**client, &config.secrets).await;
    }
    let sender = Arc::new(Sender::new(config.sender.clone())?);
    let signals = Signals {
        wake: Arc::new(Notify::new()),
        slot_freed: Arc::new(Notify::new()),
        recorded: Arc::new(Notify::new()),
        listen: Arc::new(ListenStatus::default()),
    };
    let metrics = Arc::new(Metrics::new());
    let in_flight = Arc::new(InFlight::new(config.claimer.pacing));

    // Bound before LISTEN settles, so the address is taken (and /readyz
    // answers, "reconnecting") from the start.
    let admin_address = crate::admin::serve(
        config.admin_addr,
        crate::admin::Readiness {
            pool: pool.clone(),
            listen: signals.listen.clone(),
            metrics: metrics.clone(),
            in_flight: in_flight.clone(),
            secret_key_ids: config.secrets.key_ids().into(),
            api: config.admin_token.as_ref().map(|token| {
                Arc::new(crate::admin::api::ManagementApi::new(
                    crate::admin::api::ApiConfig {
                        token: token.clone(),
                        secrets: config.secrets.clone(),
                        allow_private_targets: config.sender.allow_private_targets,
                        resolver: config.sender.resolver.clone(),
                    },
                    pool.clone(),
                ))
            }),
        },
        shutdown.clone(),
    )
    .await?;

    let (notifier_task, first_listen) = Notifier::new(
        NotifierConfig {
            database: config.listen.database.clone(),
            explicit: config.listen.explicit,
            ping_interval: Duration::from_secs(15),
            max_reconnect_delay: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
        },
        pool.clone(),
        signals.wake.clone(),
        signals.listen.clone(),
        metrics.clone(),
    )
    .spawn(shutdown.clone());
    // An explicit LISTEN URL that is unreachable or cannot deliver
    // notifications stops the start, so that case is waited for. Otherwise
    // delivery starts at once and polls until LISTEN is settled.
    if config.listen.explicit {
        if let Ok(Err(err)) = first_listen.await {
            notifier_task.abort();
            return Err(err);
        }
    }
    info!(address = %admin_address, "admin endpoints: /healthz, /readyz, /metrics");
    let vacuum_task = tokio::spawn(
        crate::maintenance::vacuum::Vacuum::new(Default::default(), pool.clone())
            .run(shutdown.clone()),
    );
    let horizon_task = tokio::spawn(
        crate::maintenance::horizon::Horizon::new(
            Default::default(),
            pool.clone(),
            metrics.clone(),
        )
        .run(shutdown.clone()),
    );
    let retention_task = tokio::spawn(
        crate::maintenance::retention::Retention::new(config.retention, pool.clone())
            .run(shutdown.clone()),
    );

    // Every queued result is also counted in `in_flight` until written, so
    // the channel never holds more than `max_in_flight`.
    let (results_tx, results_rx) = mpsc::channel(config.claimer.max_in_flight.max(1));
    let completer_task = tokio::spawn(
        Completer::new(
            config.completer,
            pool.clone(),
            crate::delivery::completer::CompleterSignals {
                recorded: signals.recorded.clone(),
                retry_scheduled: signals.wake.clone(),
            },
            metrics.clone(),
            in_flight.clone(),
        )
        .run(results_rx),
    );

    let dispatcher = Dispatcher::new(DispatcherParts {
        sender: sender.clone(),
        retry: config.retry,
        secrets: config.secrets.clone(),
        unopenable_delay: config.unopenable_secret_delay,
        allow_private_targets: config.sender.allow_private_targets,
        pool: pool.clone(),
        in_flight: in_flight.clone(),
        results: results_tx,
        slot_freed: signals.slot_freed.clone(),
        metrics: metrics.clone(),
    });
    let fanout = FanOut::new(config.fanout, pool.clone());
    let main_loop = MainLoop {
        pump: FanOutPump::new(fanout.clone(), signals.wake.clone(), metrics.clone()),
        fanout,
        claimer: Claimer::new(config.claimer, pool.clone()),
        dispatcher,
        in_flight: in_flight.clone(),
        pool: pool.clone(),
        poll_interval: config.poll_interval,
        listen: signals.listen.clone(),
        sender,
        metrics,
    };
    info!(
        max_in_flight = config.claimer.max_in_flight,
        per_webhook = config.claimer.pacing.max,
        lease_s = config.claimer.lease.as_secs(),
        "webhookd running"
    );
    let mut tasks = JoinSet::new();
    main_loop.run(&signals, &mut tasks, shutdown).await;

    info!(
        in_flight = in_flight.total(),
        "shutting down: no new claims; finishing in-flight deliveries"
    );
    let finished = tokio::time::timeout(config.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        let held = in_flight.held_leases();
        match pool.get().await.map_err(Error::from) {
            Ok(client) => match db::queue::release(&**client, &held).await {
                Ok(released) => info!(
                    released,
                    "released deliveries still in flight after the grace period"
                ),
                Err(err) => {
                    warn!(error = %err.one_line(), "cannot release leases; they expire by themselves")
                }
            },
            Err(err) => {
                warn!(error = %err.one_line(), "cannot release leases; they expire by themselves")
            }
        }
    }
    // The loop and the tasks held the dispatcher, and with it the last sender
    // of the results channel: the completer now flushes and returns.
    let _ = completer_task.await;
    notifier_task.abort();
    retention_task.abort();
    vacuum_task.abort();
    horizon_task.abort();
    info!("webhookd stopped");
    Ok(())
}

struct MainLoop {
    fanout: FanOut,
    pump: FanOutPump,
    claimer: Claimer,
    dispatcher: Arc<Dispatcher>,
    in_flight: Arc<InFlight>,
    pool: Pool,
    poll_interval: Duration,
    listen: Arc<ListenStatus>,
    sender: Arc<Sender>,
    metrics: Arc<Metrics>,
}

impl MainLoop {
    async fn run(self, signals: &Signals, tasks: &mut JoinSet<()>, mut shutdown: Shutdown) {
        let mut switch = WakeupSwitch::default();
        let mut error_delay = Duration::from_millis(100);
        let mut last_prune = tokio::time::Instant::now();
        while !shutdown.is_triggered() {
            // Reap finished tasks so the set does not grow.
            while tasks.try_join_next().is_some() {}
            if last_prune.elapsed() > Duration::from_secs(10) {
                self.sender.prune_idle_connections();
                last_prune = tokio::time::Instant::now();
            }
            let sleep = match self.tick(tasks, &mut switch, &shutdown).await {
                Ok(Tick::Again) => {
                    error_delay = Duration::from_millis(100);
                    continue;
                }
                Ok(Tick::Sleep(sleep)) => {
                    error_delay = Duration::from_millis(100);
                    sleep
                }
                Err(err) => {
                    warn!(error = %err.one_line(), retry_in_ms = error_delay.as_millis() as u64,
                          "delivery loop error; retrying");
                    let sleep = Sleep::only(error_delay);
                    error_delay = (error_delay * 2).min(Duration::from_secs(5));
                    // Whatever state the switch is in, find out again after an error.
                    switch = WakeupSwitch::default();
                    sleep
                }
            };
            sleep.wait(signals, &mut shutdown).await;
        }
        // Leave producers' NOTIFY on: the replicas that remain may be idle.
        let turned_on = async {
            let client = self.pool.get().await?;
            db::queue::set_wakeup_notify(&**client, true).await
        };
        if let Err(err) = turned_on.await {
            warn!(error = %err.one_line(), "cannot turn wake-up notifications back on");
        }
    }

    /// One round: fan out, claim, dispatch; then decide how long to sleep.
    async fn tick(
        &self,
        tasks: &mut JoinSet<()>,
        switch: &mut WakeupSwitch,
        shutdown: &Shutdown,
    ) -> Result<Tick> {
        let fanned = if self.pump.is_running() {
            FanOutRound::default()
        } else {
            let fanned = self.fanout.run_once().await?;
            self.metrics.fanned_out(fanned.events, fanned.deliveries);
            if fanned.more {
                self.pump.start(shutdown.clone());
            }
            fanned
        };
        let claim = self.claimer.run_once(&self.in_flight).await?;
        self.metrics.claimed(claim.deliveries.len());
        let asked = claim.asked;
        let claimed = claim.deliveries.len();
        if claimed > 0 {
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
        }
        if asked == 0 {
            // Every slot is taken until results are written: the completer
            // wakes the loop.
            return Ok(Tick::Sleep(Sleep {
                for_at_most: self.poll_interval,
                until_slot_freed: false,
                until_recorded: true,
            }));
        }
        let pumping = self.pump.is_running();
        if claimed == asked || fanned.more || pumping {
            // Busy: the loop polls back to back, so producers need not pay
            // for NOTIFY.
            // Only a replica that hears notifications manages the switch.
            if self.listen.get() == ListenState::Active && switch.on_busy() {
                let client = self.pool.get().await?;
                db::queue::set_wakeup_notify(&**client, false).await?;
            }
            if claimed < asked && pumping {
                // Claimed all there is for now: the pump wakes the loop when
                // its next batch has created deliveries.
                let saturated = self.in_flight.any_saturated();
                return Ok(Tick::Sleep(Sleep::after_round(
                    self.poll_interval,
                    saturated,
                )));
            }
            return Ok(Tick::Again);
        }
        // Drained.
        let client = self.pool.get().await?;
        let next = db::queue::next_work(&**client).await?;
        let listening = self.listen.get() == ListenState::Active;
        let most = match switch.on_idle(&next) {
            // No notification can come: nothing to switch on or fence, and
            // the loop looks again sooner.
            _ if !listening => self.poll_interval.min(POLL_WITHOUT_LISTEN),
            IdleStep::TurnOn => {
                if let Some(fence) = db::queue::set_wakeup_notify(&**client, true).await? {
                    switch.turned_on(fence);
                }
                return Ok(Tick::Again);
            }
            IdleStep::LookAgain => return Ok(Tick::Again),
            IdleStep::WaitForFence(wait) => wait.min(self.poll_interval),
            IdleStep::Sleep => self.poll_interval,
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
}
/// Longest sleep while LISTEN is not active (reconnecting, or a pooler that
/// cannot deliver notifications): the latency of a new event then.
pub const POLL_WITHOUT_LISTEN: Duration = Duration::from_secs(1);

/// How long a freed slot waits for company before the loop claims again.
const SLOT_LINGER: Duration = Duration::from_millis(2);

enum Tick {
    /// More work is likely right away.
    Again,
    /// Sleep unless woken.
    Sleep(Sleep),
}

/// How long the loop sleeps, and which signals besides a wake-up (NOTIFY,
/// the fan-out pump, a scheduled retry) and shutdown end the sleep early.
#[derive(Debug, Clone, Copy)]
struct Sleep {
    for_at_most: Duration,
    /// A webhook at its cap held work back.
    until_slot_freed: bool,
    /// `--max-in-flight` held work back until results are written.
    until_recorded: bool,
}

impl Sleep {
    /// A sleep of at most `for_at_most` that a freed slot ends only when
    /// some webhook is `saturated` (at its cap): otherwise a finished
    /// delivery enables nothing the last round did not already take, and
    /// waking for each one would cost a round of queries per delivery.
    fn after_round(for_at_most: Duration, saturated: bool) -> Self {
        Sleep {
            for_at_most,
            until_slot_freed: saturated,
            until_recorded: false,
        }
    }

    /// Only a wake-up, shutdown or the time ends it.
    fn only(duration: Duration) -> Self {
        Sleep {
            for_at_most: duration,
            until_slot_freed: false,
            until_recorded: false,
        }
    }

    async fn wait(self, signals: &Signals, shutdown: &mut Shutdown) {
        let deadline = tokio::time::Instant::now() + self.for_at_most;
        loop {
            tokio::select! {
                _ = signals.wake.notified() => return,
                _ = signals.slot_freed.notified() => {
                    if self.until_slot_freed {
                        // Deliveries finish in bursts: let a few more slots
                        // free up so one claim refills many of them.
                        tokio::time::sleep(SLOT_LINGER).await;
                        return;
                    }
                }
                _ = signals.recorded.notified() => {
                    if self.until_recorded {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = shutdown.wait() => return,
            }
        }
    }
}
