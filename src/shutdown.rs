//! A shutdown signal every service can wait on or poll, and the process
//! signals (SIGINT, SIGTERM) that trigger it in `webhookd run` and `webhookd demo`.

use tokio::sync::watch;

/// Triggers shutdown; dropping it does not.
#[derive(Debug, Clone)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Observes shutdown. Clone freely.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and observer.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    /// Asks every observer to stop.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// True once shutdown was asked for.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when shutdown is asked for (at once if it already was).
    pub async fn wait(&mut self) {
        // An error means the trigger is gone, which also means: stop.
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Runs `future` unless shutdown comes first (`None` then, and `future`
    /// is dropped): a service's wait for its next round.
    pub async fn before<F: std::future::Future>(&mut self, future: F) -> Option<F::Output> {
        tokio::select! {
            output = future => Some(output),
            _ = self.wait() => None,
        }
    }
}

/// SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    StopSignals::install().wait().await
}

/// SIGINT and SIGTERM, caught from the moment this is made: a stop asked for
/// while the daemon is still starting is then a clean stop, not the default
/// action's kill.
pub struct StopSignals {
    terminate: Option<tokio::signal::unix::Signal>,
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    /// Installs the handlers now.
    pub fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        StopSignals {
            terminate: signal(SignalKind::terminate()).ok(),
            interrupt: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// Until either arrives.
    pub async fn wait(self) {
        let StopSignals {
            mut terminate,
            mut interrupt,
        } = self;
        let terminate = async {
            match &mut terminate {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        let interrupt = async {
            match &mut interrupt {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = terminate => {}
            _ = interrupt => {}
        }
    }
}
