//! The one lifecycle of the daemon's background services: each is built
//! (Config/new), started as a task of a [`Services`] group, and stopped with
//! the group, in reverse order of start, so that nothing the daemon started
//! outlives it (docs/ARCHITECTURE.md).

use std::future::Future;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::shutdown::Shutdown;

/// How a service ends once shutdown is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It still owes work (results to write, deliveries to finish or give
    /// back): the group waits until it returns by itself.
    Drains,
    /// It owes nothing: the group cancels it if it has not returned yet, so
    /// a running vacuum or an open admin connection does not hold the stop up.
    Cancelled,
}

/// A background service of the daemon.
pub trait Service: Send + 'static {
    /// Its name, for the warning when it panicked.
    const NAME: &'static str;
    /// How it ends at shutdown.
    const ENDING: Ending = Ending::Cancelled;

    /// Runs until `shutdown` (a service that [`Ending::Drains`] returns once
    /// its work is done).
    fn run(self, shutdown: Shutdown) -> impl Future<Output = ()> + Send;
}

/// One started service.
struct ServiceHandle {
    name: &'static str,
    ending: Ending,
    join: JoinHandle<()>,
}

/// Started services, in the order of their start. Dropped without
/// [`Services::stop`] (a start that failed half-way), it cancels them all.
pub struct Services {
    shutdown: Shutdown,
    started: Vec<ServiceHandle>,
    /// The name of the first service that panicked.
    panicked: watch::Sender<Option<&'static str>>,
}

/// Reports its service's panic to the group while the panic unwinds the
/// service's task.
struct PanicReport {
    name: &'static str,
    panicked: watch::Sender<Option<&'static str>>,
}

impl Drop for PanicReport {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.panicked.send_if_modified(|first| {
                first.get_or_insert(self.name);
                true
            });
        }
    }
}

impl Services {
    /// An empty group whose services stop at `shutdown`.
    pub fn new(shutdown: Shutdown) -> Self {
        Services {
            shutdown,
            started: Vec::new(),
            panicked: watch::Sender::new(None),
        }
    }

    /// Starts `service` on a task of its own.
    pub fn start<S: Service>(&mut self, service: S) {
        let report = PanicReport {
            name: S::NAME,
            panicked: self.panicked.clone(),
        };
        let run = service.run(self.shutdown.clone());
        self.started.push(ServiceHandle {
            name: S::NAME,
            ending: S::ENDING,
            join: tokio::spawn(async move {
                let _report = report;
                run.await;
            }),
        });
    }

    /// Resolves with the name of a service that panicked: the daemon is
    /// then missing a part and must stop rather than look healthy.
    pub fn panicked(&self) -> impl Future<Output = &'static str> + Send + 'static {
        let mut panicked = self.panicked.subscribe();
        async move {
            let name = match panicked.wait_for(Option::is_some).await {
                Ok(name) => *name,
                Err(_) => None,
            };
            match name {
                Some(name) => name,
                // The group is gone, and with it every service.
                None => std::future::pending().await,
            }
        }
    }

    /// Stops every service, the last started first: waits for those that
    /// drain, cancels the others. The shutdown must have been triggered, or
    /// the draining ones never return.
    pub async fn stop(mut self) {
        while let Some(service) = self.started.pop() {
            if service.ending == Ending::Cancelled {
                service.join.abort();
            }
            if let Err(err) = service.join.await {
                if err.is_panic() {
                    warn!(service = service.name, "service panicked");
                }
            }
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for service in &self.started {
            service.join.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records its name when its task ends, however it ends.
    struct Ended(&'static str, Arc<Mutex<Vec<&'static str>>>);

    impl Drop for Ended {
        fn drop(&mut self) {
            self.1.lock().unwrap().push(self.0);
        }
    }

    /// Never returns by itself.
    struct Forever(Ended);

    impl Service for Forever {
        const NAME: &'static str = "forever";

        async fn run(self, _shutdown: Shutdown) {
            let _ended = self.0;
            std::future::pending::<()>().await;
        }
    }

    /// Returns at shutdown, after a pause of work still owed.
    struct Draining(Ended);

    impl Service for Draining {
        const NAME: &'static str = "draining";
        const ENDING: Ending = Ending::Drains;

        async fn run(self, mut shutdown: Shutdown) {
            let _ended = self.0;
            shutdown.wait().await;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    struct Panicking;

    impl Service for Panicking {
        const NAME: &'static str = "panicking";

        async fn run(self, _shutdown: Shutdown) {
            panic!("a bug");
        }
    }

    #[tokio::test]
    async fn stop_ends_every_service_last_started_first() {
        let ended = Arc::new(Mutex::new(Vec::new()));
        let (trigger, shutdown) = crate::shutdown::channel();
        let mut services = Services::new(shutdown);
        services.start(Forever(Ended("first", ended.clone())));
        services.start(Draining(Ended("second", ended.clone())));
        services.start(Forever(Ended("third", ended.clone())));
        trigger.trigger();
        services.stop().await;
        assert_eq!(*ended.lock().unwrap(), ["third", "second", "first"]);
    }

    #[tokio::test]
    async fn a_panic_is_reported_with_the_service_name() {
        let (_trigger, shutdown) = crate::shutdown::channel();
        let mut services = Services::new(shutdown);
        let panicked = services.panicked();
        services.start(Panicking);
        assert_eq!(panicked.await, "panicking");
    }
}
