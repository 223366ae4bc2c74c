//! The daemon (`webhookd run`): [`Daemon::start`] connects, checks the
//! schema and starts every service in order (`start.rs`); the [`Running`]
//! daemon it returns tells its admin address and, on
//! [`Running::shutdown`], stops claiming, gives in-flight sends the grace
//! period, releases the leases left and stops the services in reverse
//! order, so no task it started outlives it. The claim loop itself is in
//! `main_loop.rs`.

mod main_loop;
pub mod memory;
mod sleep;
mod start;
mod wakeup;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tracing::info;

use crate::db::DatabaseTarget;
use crate::delivery::claimer::ClaimerConfig;
use crate::delivery::completer::CompleterConfig;
use crate::delivery::fanout::FanOutConfig;
use crate::delivery::retry::RetryPolicy;
use crate::delivery::sender::SenderConfig;
use crate::error::{Error, Result};
use crate::keys::Keyring;
use crate::maintenance::disabler::DisablerConfig;
use crate::maintenance::retention::RetentionConfig;
use crate::service::Services;
use crate::shutdown::{Shutdown, ShutdownTrigger};

pub use sleep::POLL_WITHOUT_LISTEN;

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
    pub admin_addr: SocketAddr,
    /// `WEBHOOKD_ADMIN_TOKEN`: enables the management API.
    pub admin_token: Option<String>,
    /// How long finished events are kept.
    pub retention: RetentionConfig,
    /// When a failing webhook is disabled.
    pub disabler: DisablerConfig,
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

/// Starts the daemon.
pub struct Daemon;

impl Daemon {
    /// Connects, checks the schema, and starts the services: the admin
    /// server, the notifier, the maintenance services, the completer, the
    /// fan-out pump and the main loop. An error stops what was started.
    pub async fn start(config: DaemonConfig) -> Result<Running> {
        let (trigger, shutdown) = crate::shutdown::channel();
        let (services, admin_addr) = start::start_services(&config, shutdown).await?;
        Ok(Running {
            trigger,
            services,
            admin_addr,
        })
    }
}

/// A started daemon. Dropped without [`Running::shutdown`], its tasks are
/// cancelled without the grace period.
pub struct Running {
    trigger: ShutdownTrigger,
    services: Services,
    admin_addr: SocketAddr,
}

impl Running {
    /// Where the admin server listens: `--admin-addr` with the port the
    /// system chose when it was 0.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Resolves with an error when a service panicked: the daemon is then
    /// missing a part, and the caller should shut it down.
    pub fn failed(&self) -> impl Future<Output = Error> + Send + 'static {
        let panicked = self.services.panicked();
        async move {
            let name = panicked.await;
            Error::other(format!("the {name} stopped unexpectedly; the daemon stops"))
        }
    }

    /// Stops claiming, lets in-flight deliveries finish within the grace
    /// period, releases the leases of those that do not, writes every
    /// result, and stops every service; returns once all of that is done.
    pub async fn shutdown(self) {
        self.trigger.trigger();
        self.services.stop().await;
        info!("webhookd stopped");
    }
}

/// Runs the daemon until `shutdown` (or a service fails); returns once
/// in-flight work is finished or released and every result is written.
pub async fn run(config: DaemonConfig, mut shutdown: Shutdown) -> Result<()> {
    let running = Daemon::start(config).await?;
    let outcome = tokio::select! {
        _ = shutdown.wait() => Ok(()),
        failed = running.failed() => Err(failed),
    };
    running.shutdown().await;
    outcome
}
