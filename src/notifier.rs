//! LISTEN for producers' wake-ups on a dedicated connection (never through a
//! pool: a pooled connection can be recycled and its LISTEN lost).
//!
//! A lost connection loses no work, only latency: the dispatcher also polls.
//! After every (re)connect the dispatcher is woken at once, because
//! notifications sent while disconnected are gone.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_postgres::AsyncMessage;
use tracing::{info, warn};

use crate::db;
use crate::db::queue::NextWork;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// The channel the `outbox.events` trigger notifies.
pub const CHANNEL: &str = "outbox_wakeup";

/// Notifier settings.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// Where to LISTEN.
    pub database_url: String,
    /// How often the connection is checked with a query.
    pub ping_interval: Duration,
    /// Longest pause between reconnect attempts.
    pub max_reconnect_delay: Duration,
}

/// The LISTEN service.
pub struct Notifier {
    config: NotifierConfig,
    wake: Arc<Notify>,
    listening: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Notifier {
    /// `wake` is notified on every notification and after every reconnect;
    /// `listening` tells readiness checks whether LISTEN is active.
    pub fn new(
        config: NotifierConfig,
        wake: Arc<Notify>,
        listening: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Notifier {
            config,
            wake,
            metrics,
            listening,
        }
    }

    /// Listens until shutdown, reconnecting with capped backoff.
    pub async fn run(self, mut shutdown: Shutdown) {
        let mut delay = Duration::from_millis(100);
        let mut reconnects = 0u64;
        while !shutdown.is_triggered() {
            tokio::select! {
                result = self.listen_once() => {
                    self.listening.store(false, Ordering::Relaxed);
                    match result {
                        Ok(()) => delay = Duration::from_millis(100),
                        Err(reason) => {
                            reconnects += 1;
                            self.metrics.listen_reconnect();
                            warn!(%reason, reconnects, retry_in_ms = delay.as_millis() as u64,
                                  "LISTEN connection lost; polling continues meanwhile");
                        }
                    }
                }
                _ = shutdown.wait() => break,
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait() => break,
            }
            delay = (delay * 2).min(self.config.max_reconnect_delay);
        }
        self.listening.store(false, Ordering::Relaxed);
    }

    /// One connection's life: connect, LISTEN, forward notifications, ping.
    async fn listen_once(&self) -> Result<(), String> {
        let config = db::parse_url(&self.config.database_url).map_err(|err| err.to_string())?;
        let (client, mut connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|err| format!("cannot connect: {err}"))?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            loop {
                match poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(_))) => {
                        if tx.send(()).is_err() {
                            return "notifier stopped".to_string();
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return format!("connection error: {err}"),
                    None => return "connection closed".to_string(),
                }
            }
        });
        let listen = client.batch_execute(&format!("LISTEN {CHANNEL}")).await;
        if let Err(err) = listen {
            driver.abort();
            return Err(format!("LISTEN failed: {err}"));
        }
        self.listening.store(true, Ordering::Relaxed);
        info!(channel = CHANNEL, "listening for wake-ups");
        // Anything notified before LISTEN took effect is found by this poll.
        self.wake.notify_one();

        let mut ping = tokio::time::interval(self.config.ping_interval);
        ping.tick().await;
        let mut driver = driver;
        loop {
            tokio::select! {
                woke = rx.recv() => {
                    if woke.is_none() {
                        break;
                    }
                    self.wake.notify_one();
                }
                _ = ping.tick() => {
                    let alive = tokio::time::timeout(self.config.ping_interval, client.simple_query("SELECT 1")).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        driver.abort();
                        return Err("ping failed".to_string());
                    }
                }
                ended = &mut driver => {
                    return Err(ended.unwrap_or_else(|_| "connection task ended".to_string()));
                }
            }
        }
        Err("connection closed".to_string())
    }
}

/// First pause while waiting for the fence; doubles up to [`FENCE_WAIT_MAX`].
const FENCE_WAIT_FIRST: Duration = Duration::from_millis(5);
/// Longest pause while waiting for the fence. A long transaction elsewhere
/// holds the fence back; one cheap query a second is what it costs then.
const FENCE_WAIT_MAX: Duration = Duration::from_secs(1);

/// One replica's side of the producers' NOTIFY switch (DESIGN decision 2).
///
/// Busy: off, the loop polls back to back anyway. Drained: on, then wait until
/// every transaction that could have seen it off has ended (the fence), and
/// look once more before a long sleep. Without the fence, a producer that
/// inserted while the switch was off and committed after the last look would
/// wait for the fallback poll.
#[derive(Debug, Default)]
pub struct WakeupSwitch {
    /// This replica turned it off and has not seen it on since.
    off: bool,
    /// Transactions with an id below this may have seen the switch off.
    fence: Option<i64>,
    fence_wait: Duration,
}

/// What a drained loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleStep {
    /// The switch is off: turn it on (then call [`WakeupSwitch::turned_on`]).
    TurnOn,
    /// The fence has passed: look for work once more now.
    LookAgain,
    /// Transactions that may have seen the switch off are still running:
    /// look again after this long.
    WaitForFence(Duration),
    /// Nothing to wait for: sleep until woken.
    Sleep,
}

impl WakeupSwitch {
    /// The loop found a full batch. True when the switch must be turned off.
    pub fn on_busy(&mut self) -> bool {
        self.fence = None;
        !std::mem::replace(&mut self.off, true)
    }

    /// The switch was turned on; `fence` is what the database returned.
    pub fn turned_on(&mut self, fence: i64) {
        self.off = false;
        self.fence = Some(fence);
        self.fence_wait = FENCE_WAIT_FIRST;
    }

    /// The loop is drained; `next` is the latest reading. The switch is read
    /// every time, since another replica may have turned it off and died.
    pub fn on_idle(&mut self, next: &NextWork) -> IdleStep {
        if !next.notify_on {
            return IdleStep::TurnOn;
        }
        self.off = false;
        match self.fence {
            Some(fence) if next.oldest_running < fence => {
                let wait = self.fence_wait;
                self.fence_wait = (self.fence_wait * 2).min(FENCE_WAIT_MAX);
                IdleStep::WaitForFence(wait)
            }
            Some(_) => {
                self.fence = None;
                IdleStep::LookAgain
            }
            None => IdleStep::Sleep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(notify_on: bool, oldest_running: i64) -> NextWork {
        NextWork {
            due_in: None,
            notify_on,
            oldest_running,
        }
    }

    #[test]
    fn busy_turns_the_switch_off_once() {
        let mut switch = WakeupSwitch::default();
        assert!(switch.on_busy());
        assert!(!switch.on_busy());
    }

    #[test]
    fn drained_turns_it_on_then_waits_for_the_fence_then_looks_once_more() {
        let mut switch = WakeupSwitch::default();
        switch.on_busy();
        assert_eq!(switch.on_idle(&reading(false, 100)), IdleStep::TurnOn);
        switch.turned_on(120);
        assert_eq!(
            switch.on_idle(&reading(true, 110)),
            IdleStep::WaitForFence(FENCE_WAIT_FIRST)
        );
        assert_eq!(
            switch.on_idle(&reading(true, 110)),
            IdleStep::WaitForFence(FENCE_WAIT_FIRST * 2)
        );
        assert_eq!(switch.on_idle(&reading(true, 120)), IdleStep::LookAgain);
        assert_eq!(switch.on_idle(&reading(true, 130)), IdleStep::Sleep);
    }

    #[test]
    fn a_switch_left_off_by_another_replica_is_turned_back_on() {
        let mut switch = WakeupSwitch::default();
        assert_eq!(switch.on_idle(&reading(false, 1)), IdleStep::TurnOn);
    }

    #[test]
    fn fence_waits_are_capped() {
        let mut switch = WakeupSwitch::default();
        switch.turned_on(10);
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            if let IdleStep::WaitForFence(wait) = switch.on_idle(&reading(true, 1)) {
                last = wait;
            }
        }
        assert_eq!(last, FENCE_WAIT_MAX);
    }
}
