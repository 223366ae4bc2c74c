//! LISTEN for producers' wake-ups on a dedicated connection (never through a
//! pool: a pooled connection can be recycled and its LISTEN lost).
//!
//! A lost connection loses no work, only latency: the main loop also polls.
//! After every (re)connect the loop is woken at once, because notifications
//! sent while disconnected are gone.
//!
//! LISTEN through a transaction-mode connection pooler succeeds and then
//! receives nothing: the server session that ran it goes back to the pooler's
//! pool. So LISTEN is trusted only once a probe notification, sent through
//! the daemon's pool, has come back on it. When none does, the replica polls
//! instead (see `docs/PRODUCTION.md`), or refuses to start when the operator
//! named the LISTEN URL explicitly.

use std::future::poll_fn;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_postgres::AsyncMessage;
use tracing::{info, warn};

use crate::admin::metrics::Metrics;
use crate::db::{DatabaseTarget, Preparing};
use crate::error::{Error, ErrorKind, Result};
use crate::service::Service;
use crate::shutdown::Shutdown;

/// The channel the `outbox.events` trigger notifies.
pub const CHANNEL: &str = "outbox_wakeup";

/// Probes sent, each waited for `probe_timeout`, before LISTEN is called deaf.
const PROBES: u32 = 3;

/// How often a poll-only replica checks whether LISTEN works after all.
const DEAF_RECHECK: Duration = Duration::from_secs(300);

/// Payloads of probe notifications start with this; other replicas treat a
/// probe as an ordinary wake-up (one extra look, harmless).
const PROBE_PREFIX: &str = "probe:";

/// Notifier settings.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// Where to LISTEN.
    pub database: DatabaseTarget,
    /// The operator set the LISTEN URL: if LISTEN cannot work there, that is
    /// a configuration error rather than a reason to poll.
    pub explicit: bool,
    /// How often the connection is checked with a query.
    pub ping_interval: Duration,
    /// Longest pause between reconnect attempts.
    pub max_reconnect_delay: Duration,
    /// How long a probe notification may take to come back.
    pub probe_timeout: Duration,
}

/// Whether this replica hears producers' notifications; shared with the main
/// loop (how long it may sleep) and `/readyz`.
#[derive(Debug, Default)]
pub struct ListenStatus(AtomicU8);

/// The states of [`ListenStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenState {
    /// Not listening yet, or reconnecting after a lost connection.
    Connecting,
    /// LISTEN is active and a probe came back on it.
    Active,
    /// LISTEN cannot work on this connection (a transaction-mode pooler):
    /// the replica polls.
    PollOnly,
}

impl ListenStatus {
    /// The current state.
    pub fn get(&self) -> ListenState {
        match self.0.load(Ordering::Relaxed) {
            1 => ListenState::Active,
            2 => ListenState::PollOnly,
            _ => ListenState::Connecting,
        }
    }

    fn set(&self, state: ListenState) {
        let value = match state {
            ListenState::Connecting => 0,
            ListenState::Active => 1,
            ListenState::PollOnly => 2,
        };
        self.0.store(value, Ordering::Relaxed);
    }
}

/// Why one LISTEN connection ended.
enum ListenEnd {
    /// The connection failed or was lost: reconnect.
    Lost(String),
    /// LISTEN succeeded but no probe came back: it will never work there.
    Deaf,
}

/// What the first connection found, for the daemon's start-up.
pub type FirstListen = oneshot::Receiver<Result<ListenState>>;

/// The LISTEN service.
pub struct Notifier {
    config: NotifierConfig,
    pool: Pool,
    wake: Arc<Notify>,
    status: Arc<ListenStatus>,
    metrics: Arc<Metrics>,
    /// Allowed once a probe sent through the pool comes back on the pool's
    /// own URL; forbidden while LISTEN there is deaf.
    preparing: Preparing,
    /// Where the first connection's finding goes, once asked for.
    first: Option<oneshot::Sender<Result<ListenState>>>,
}

impl Notifier {
    /// `wake` is notified on every notification and after every reconnect;
    /// `status` tells the loop and readiness checks what LISTEN is doing.
    /// Probes are sent through `pool`, which may keep its statements prepared
    /// (`preparing`) once one comes back on the pool's own URL.
    pub fn new(
        config: NotifierConfig,
        pool: Pool,
        wake: Arc<Notify>,
        status: Arc<ListenStatus>,
        metrics: Arc<Metrics>,
        preparing: Preparing,
    ) -> Self {
        Notifier {
            config,
            pool,
            wake,
            status,
            metrics,
            preparing,
            first: None,
        }
    }

    /// What the first connection will find: active, poll-only, or an error
    /// that should stop the daemon (the explicit LISTEN URL is unreachable
    /// or deaf). Asked for before the notifier starts.
    pub fn first_listen(&mut self) -> FirstListen {
        let (first_tx, first_rx) = oneshot::channel();
        self.first = Some(first_tx);
        first_rx
    }

    /// Listens until shutdown, reconnecting with capped backoff.
    async fn listen_until(
        &self,
        mut shutdown: Shutdown,
        mut first: Option<oneshot::Sender<Result<ListenState>>>,
    ) {
        let mut delay = Duration::from_millis(100);
        let mut reconnects = 0u64;
        while !shutdown.is_triggered() {
            let ended = tokio::select! {
                ended = self.listen_once(&mut first) => ended,
                _ = shutdown.wait() => break,
            };
            match ended {
                ListenEnd::Deaf => {
                    let was_polling = self.status.get() == ListenState::PollOnly;
                    if !self.poll_only(first.take(), was_polling) {
                        return;
                    }
                    // A pooler can be reconfigured or bypassed without a
                    // restart of ours: look again now and then.
                    tokio::select! {
                        _ = tokio::time::sleep(DEAF_RECHECK) => continue,
                        _ = shutdown.wait() => break,
                    }
                }
                ListenEnd::Lost(reason) => {
                    self.status.set(ListenState::Connecting);
                    // The proof is gone with the connection (a failover or a
                    // changed address may lead elsewhere): unnamed until the
                    // next probe comes back.
                    self.preparing.set(false);
                    if let Some(first) = first.take() {
                        if self.config.explicit {
                            // `reason` already says what failed ("cannot
                            // connect to the database: …"), so no prefix of its own.
                            let _ = first.send(Err(Error::other(format!(
                                "--listen-database-url: {reason}"
                            ))));
                            return;
                        }
                        let _ = first.send(Ok(ListenState::Connecting));
                    }
                    reconnects += 1;
                    self.metrics.listen_reconnect();
                    warn!(%reason, reconnects, retry_in_ms = delay.as_millis() as u64,
                          "LISTEN connection lost; polling continues meanwhile");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait() => break,
            }
            delay = (delay * 2).min(self.config.max_reconnect_delay);
        }
        self.status.set(ListenState::Connecting);
    }

    /// LISTEN cannot work here: say so (once), and leave the replica
    /// polling; false when the daemon must stop instead (an explicit LISTEN
    /// URL at start-up).
    fn poll_only(
        &self,
        first: Option<oneshot::Sender<Result<ListenState>>>,
        already_said: bool,
    ) -> bool {
        let target = self.config.database.redacted();
        if self.config.explicit {
            if let Some(first) = first {
                let _ = first.send(Err(Error::config(format!(
                    "--listen-database-url {target}: LISTEN succeeded but no notification came \
                     back within {}s; this looks like a connection pooler in transaction mode: \
                     point --listen-database-url at the PostgreSQL server directly",
                    (self.config.probe_timeout * PROBES).as_secs_f64()
                ))));
                return false;
            }
        }
        if !already_said {
            warn!(
                database = %target,
                "LISTEN receives no notifications on this connection (a connection pooler in \
                 transaction mode?): polling instead, so new events wait up to the poll interval; \
                 set --listen-database-url to a direct connection to the server for prompt delivery"
            );
        }
        self.status.set(ListenState::PollOnly);
        self.preparing.set(false);
        if let Some(first) = first {
            let _ = first.send(Ok(ListenState::PollOnly));
        }
        true
    }

    /// One connection's life: connect, LISTEN, probe, forward notifications, ping.
    async fn listen_once(
        &self,
        first: &mut Option<oneshot::Sender<Result<ListenState>>>,
    ) -> ListenEnd {
        let (client, mut connection) = match self.config.database.connect_raw().await {
            Ok(connected) => connected,
            Err(err) => return ListenEnd::Lost(err.one_line()),
        };
        let (tx, mut payloads) = mpsc::unbounded_channel::<String>();
        let driver = tokio::spawn(async move {
            loop {
                match poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(note))) => {
                        if tx.send(note.payload().to_string()).is_err() {
                            return "notifier stopped".to_string();
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return format!("connection error: {err}"),
                    None => return "connection closed".to_string(),
                }
            }
        });
        let _abort = AbortOnDrop(driver.abort_handle());
        if let Err(err) = crate::db::listen(&client).await {
            return ListenEnd::Lost(err.to_string());
        }
        match self.probes_heard(&mut payloads).await {
            Ok(true) => {}
            Ok(false) => return ListenEnd::Deaf,
            Err(err) => return ListenEnd::Lost(err.to_string()),
        }
        if self.status.get() == ListenState::PollOnly {
            info!("LISTEN receives notifications now; polling stops");
        }
        self.status.set(ListenState::Active);
        // The probe crossed the pool's connections and came back here: with
        // both on one URL, that is no pooler in transaction mode.
        self.preparing.set(!self.config.explicit);
        if let Some(first) = first.take() {
            let _ = first.send(Ok(ListenState::Active));
        }
        info!(channel = CHANNEL, "listening for wake-ups");
        // Anything notified before LISTEN took effect is found by this poll.
        self.wake.notify_one();

        self.forward(&client, &mut payloads, driver).await
    }

    /// Whether one of up to [`PROBES`] probes came back. A probe can be slow
    /// on a loaded server: LISTEN is called deaf only when several in a row
    /// never come back.
    async fn probes_heard(&self, payloads: &mut mpsc::UnboundedReceiver<String>) -> Result<bool> {
        for _ in 0..PROBES {
            if self.probe(payloads).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Wakes the loop on every notification and pings the connection, until
    /// it is lost.
    async fn forward(
        &self,
        client: &tokio_postgres::Client,
        payloads: &mut mpsc::UnboundedReceiver<String>,
        mut driver: tokio::task::JoinHandle<String>,
    ) -> ListenEnd {
        let mut ping = tokio::time::interval(self.config.ping_interval);
        ping.tick().await;
        loop {
            tokio::select! {
                payload = payloads.recv() => {
                    if payload.is_none() {
                        return ListenEnd::Lost("connection closed".to_string());
                    }
                    self.wake.notify_one();
                }
                _ = ping.tick() => {
                    let alive = tokio::time::timeout(self.config.ping_interval, crate::db::ping(client)).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        return ListenEnd::Lost("ping failed".to_string());
                    }
                }
                ended = &mut driver => {
                    return ListenEnd::Lost(ended.unwrap_or_else(|_| "connection task ended".to_string()));
                }
            }
        }
    }

    /// Sends a notification with a payload of its own through the pool and
    /// waits for it here. `Ok(false)`: it never came (LISTEN is deaf);
    /// `Err`: the pool could not send it, which says nothing about LISTEN.
    async fn probe(&self, payloads: &mut mpsc::UnboundedReceiver<String>) -> Result<bool> {
        let payload = format!("{PROBE_PREFIX}{}", uuid::Uuid::new_v4());
        let sent = async {
            let client = self.pool.get().await.map_err(Error::from)?;
            crate::db::notify(&**client, &payload).await
        };
        sent.await.map_err(|err| {
            let message = format!(
                "cannot send the LISTEN probe through the DATABASE_URL pool: {}",
                err.one_line()
            );
            Error::with_source(ErrorKind::Unavailable, message, err)
        })?;
        let heard = tokio::time::timeout(self.config.probe_timeout, async {
            while let Some(received) = payloads.recv().await {
                if received == payload {
                    return true;
                }
            }
            false
        })
        .await;
        match heard {
            Ok(true) => Ok(true),
            Ok(false) => Err(Error::unavailable("connection closed")),
            Err(_) => Ok(false),
        }
    }
}

impl Service for Notifier {
    const NAME: &'static str = "notifier";

    async fn run(mut self, shutdown: Shutdown) {
        let first = self.first.take();
        self.listen_until(shutdown, first).await;
    }
}

/// Ends the connection's driver task when the connection's life ends.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
