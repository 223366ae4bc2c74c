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
}

impl Notifier {
    /// `wake` is notified on every notification and after every reconnect;
    /// `listening` tells readiness checks whether LISTEN is active.
    pub fn new(config: NotifierConfig, wake: Arc<Notify>, listening: Arc<AtomicBool>) -> Self {
        Notifier {
            config,
            wake,
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
