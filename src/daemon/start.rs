//! The daemon's start: connect, check the schema, then build and start each
//! service in the order they depend on each other. What the services share
//! (the pool, the metrics, the in-flight count, the loop's signals) is made
//! once here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;
use tracing::info;

use super::main_loop::{LoopTiming, MainLoop};
use super::sleep::Signals;
use super::DaemonConfig;
use crate::admin::api::{ApiConfig, ManagementApi};
use crate::admin::metrics::Metrics;
use crate::admin::ui::OperatorPage;
use crate::admin::{AdminServer, AdminState};
use crate::db;
use crate::db::queue::AttemptRecord;
use crate::db::Preparing;
use crate::delivery::claimer::{Claimer, InFlight};
use crate::delivery::completer::{Completer, CompleterParts, CompleterSignals};
use crate::delivery::dispatcher::{Dispatcher, DispatcherParts};
use crate::delivery::fanout::{FanOut, FanOutPump};
use crate::delivery::notifier::{Notifier, NotifierConfig};
use crate::delivery::sender::Sender;
use crate::error::Result;
use crate::maintenance::disabler::Disabler;
use crate::maintenance::horizon::Horizon;
use crate::maintenance::retention::Retention;
use crate::maintenance::vacuum::Vacuum;
use crate::service::Services;
use crate::shutdown::Shutdown;

/// What the services share.
struct Shared {
    pool: Pool,
    sender: Arc<Sender>,
    metrics: Arc<Metrics>,
    in_flight: Arc<InFlight>,
    signals: Signals,
    preparing: Preparing,
}

/// Starts every service on `shutdown`; returns them, in start order, and the
/// admin server's bound address. On an error what was started is dropped,
/// which cancels it.
pub(super) async fn start_services(
    config: &DaemonConfig,
    shutdown: Shutdown,
) -> Result<(Services, SocketAddr)> {
    let shared = connect(config).await?;
    let mut services = Services::new(shutdown);
    // Bound before LISTEN settles, so the address is taken (and /readyz
    // answers, "reconnecting") from the start.
    let admin = AdminServer::bind(config.admin_addr, admin_state(config, &shared)).await?;
    let admin_addr = admin.local_addr();
    services.start(admin);
    start_notifier(config, &shared, &mut services).await?;
    info!(address = %admin_addr, "admin endpoints: /healthz, /readyz, /metrics");
    services.start(Vacuum::new(Default::default(), shared.pool.clone()));
    services.start(Horizon::new(
        Default::default(),
        shared.pool.clone(),
        shared.metrics.clone(),
    ));
    services.start(Retention::new(config.retention, shared.pool.clone()));
    services.start(Disabler::new(
        config.disabler,
        shared.pool.clone(),
        shared.metrics.clone(),
    ));
    start_delivery(config, shared, &mut services);
    Ok((services, admin_addr))
}

/// The pool, checked against the schema, and what the services share.
async fn connect(config: &DaemonConfig) -> Result<Shared> {
    let pool = db::connect_pool(&config.database, config.pool_size).await?;
    {
        let client = pool.get().await?;
        // Not on a newer schema either, though it would work: a replica
        // left on an old release is better noticed at its start.
        db::schema_state(&**client).await?.require_current()?;
        crate::keys::warn_if_unconfigured(&**client, &config.secrets).await;
    }
    Ok(Shared {
        pool,
        sender: Arc::new(Sender::new(config.sender.clone())?),
        metrics: Arc::new(Metrics::new()),
        in_flight: Arc::new(InFlight::new(config.claimer.pacing)),
        signals: Signals::default(),
        preparing: Preparing::default(),
    })
}

/// What the admin server answers from, with the management API and the
/// operator page when a token is configured.
fn admin_state(config: &DaemonConfig, shared: &Shared) -> AdminState {
    let api = config.admin_token.as_ref().map(|token| {
        Arc::new(ManagementApi::new(
            ApiConfig {
                token: token.clone(),
                secrets: config.secrets.clone(),
                allow_private_targets: config.sender.allow_private_targets,
                resolver: config.sender.resolver.clone(),
            },
            shared.pool.clone(),
        ))
    });
    let ui = config
        .admin_token
        .as_ref()
        .map(|token| Arc::new(OperatorPage::new(token, shared.pool.clone())));
    AdminState {
        pool: shared.pool.clone(),
        listen: shared.signals.listen.clone(),
        metrics: shared.metrics.clone(),
        in_flight: shared.in_flight.clone(),
        secret_key_ids: config.secrets.key_ids().into(),
        api,
        ui,
    }
}

/// Starts LISTEN. An explicit LISTEN URL that is unreachable or cannot
/// deliver notifications stops the start, so that case is waited for.
/// Otherwise delivery starts at once and polls until LISTEN is settled.
async fn start_notifier(
    config: &DaemonConfig,
    shared: &Shared,
    services: &mut Services,
) -> Result<()> {
    let mut notifier = Notifier::new(
        NotifierConfig {
            database: config.listen.database.clone(),
            explicit: config.listen.explicit,
            ping_interval: Duration::from_secs(15),
            max_reconnect_delay: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
        },
        shared.pool.clone(),
        shared.signals.wake.clone(),
        shared.signals.listen.clone(),
        shared.metrics.clone(),
        shared.preparing.clone(),
    );
    let first_listen = notifier.first_listen();
    services.start(notifier);
    if config.listen.explicit {
        if let Ok(Err(err)) = first_listen.await {
            return Err(err);
        }
    }
    Ok(())
}

/// The completer; returns the sender of its results.
fn start_completer(
    config: &DaemonConfig,
    shared: &Shared,
    services: &mut Services,
) -> mpsc::Sender<AttemptRecord> {
    // Every queued result is also counted in `in_flight` until written, so
    // the channel never holds more than `max_in_flight`.
    let (results, received) = mpsc::channel(config.claimer.max_in_flight.max(1));
    services.start(Completer::new(
        config.completer,
        CompleterParts {
            pool: shared.pool.clone(),
            preparing: shared.preparing.clone(),
            signals: CompleterSignals {
                recorded: shared.signals.recorded.clone(),
                starved: shared.signals.starved.clone(),
                retry_scheduled: shared.signals.wake.clone(),
            },
            metrics: shared.metrics.clone(),
            in_flight: shared.in_flight.clone(),
            results: received,
        },
    ));
    results
}

/// The completer, the fan-out pump and the main loop that drives them.
fn start_delivery(config: &DaemonConfig, shared: Shared, services: &mut Services) {
    let results = start_completer(config, &shared, services);
    let fanout = FanOut::new(config.fanout, shared.pool.clone(), shared.preparing.clone());
    let pump = FanOutPump::new(
        fanout.clone(),
        shared.signals.wake.clone(),
        shared.metrics.clone(),
    );
    let pump_control = pump.control();
    services.start(pump);
    let dispatcher = Dispatcher::new(DispatcherParts {
        sender: shared.sender.clone(),
        retry: config.retry,
        secrets: config.secrets.clone(),
        unopenable_delay: config.unopenable_secret_delay,
        allow_private_targets: config.sender.allow_private_targets,
        pool: shared.pool.clone(),
        in_flight: shared.in_flight.clone(),
        results,
        slot_freed: shared.signals.slot_freed.clone(),
        metrics: shared.metrics.clone(),
    });
    info!(
        max_in_flight = config.claimer.max_in_flight,
        per_webhook = config.claimer.pacing.max,
        lease_s = config.claimer.lease.as_secs(),
        "webhookd running"
    );
    services.start(MainLoop {
        fanout,
        pump: pump_control,
        claimer: Claimer::new(
            config.claimer,
            shared.pool.clone(),
            shared.preparing.clone(),
        ),
        dispatcher,
        in_flight: shared.in_flight,
        pool: shared.pool,
        preparing: shared.preparing,
        sender: shared.sender,
        metrics: shared.metrics,
        signals: shared.signals,
        timing: LoopTiming {
            poll_interval: config.poll_interval,
            shutdown_grace: config.shutdown_grace,
        },
    });
}
