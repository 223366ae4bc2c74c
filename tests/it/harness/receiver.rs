//! The tests' receiver: devkit's HTTP(S) receiver on 127.0.0.1, recording
//! every request, with the answer chosen per request by the test, and waits
//! that fail the test when requests do not come.

use std::time::Duration;

pub use devkit::receiver::{Arrival as Recorded, Reply};

/// A running receiver (clones share it).
#[derive(Clone)]
pub struct Receiver(devkit::receiver::Receiver);

impl std::ops::Deref for Receiver {
    type Target = devkit::receiver::Receiver;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Receiver {
    /// A receiver to configure before [`Receiver::started`].
    pub fn builder() -> devkit::receiver::ReceiverBuilder {
        devkit::receiver::Receiver::builder()
    }

    /// Answers every request with `status`.
    pub async fn with_status(status: u16) -> Receiver {
        Receiver::start(move |_| (status, Vec::new())).await
    }

    /// Plain HTTP receiver answering with `respond`: a status and extra headers.
    pub async fn start(
        respond: impl Fn(&Recorded) -> (u16, Vec<(&'static str, String)>) + Send + Sync + 'static,
    ) -> Receiver {
        Receiver::started(devkit::receiver::Receiver::builder().respond(reply_with(respond))).await
    }

    /// HTTPS receiver using `acceptor`.
    pub async fn start_tls(
        acceptor: tokio_native_tls::TlsAcceptor,
        respond: impl Fn(&Recorded) -> (u16, Vec<(&'static str, String)>) + Send + Sync + 'static,
    ) -> Receiver {
        let builder = devkit::receiver::Receiver::builder()
            .respond(reply_with(respond))
            .tls(acceptor);
        Receiver::started(builder).await
    }

    /// Answers 200 after `delay`, so work stays in flight meanwhile.
    pub async fn slow(delay: Duration) -> Receiver {
        let builder =
            devkit::receiver::Receiver::builder().respond(move |_| Reply::status(200).after(delay));
        Receiver::started(builder).await
    }

    /// Starts a configured receiver.
    pub async fn started(builder: devkit::receiver::ReceiverBuilder) -> Receiver {
        Receiver(builder.start().await.expect("a receiver on 127.0.0.1"))
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.0.arrivals()
    }

    /// Waits until at least `n` requests arrived; panics after `limit`.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Recorded> {
        self.0.wait_for(n, limit).await.unwrap_or_else(|arrived| {
            panic!(
                "timed out after {limit:?}: {} of {n} requests arrived",
                arrived.len()
            )
        })
    }
}

fn reply_with(
    respond: impl Fn(&Recorded) -> (u16, Vec<(&'static str, String)>) + Send + Sync + 'static,
) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    move |recorded| {
        let (status, headers) = respond(recorded);
        headers
            .into_iter()
            .fold(Reply::status(status), |reply, (name, value)| {
                reply.header(name, value)
            })
    }
}
