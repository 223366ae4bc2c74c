//! Idle keep-alive connections per origin. Reusing a connection saves the TCP
//! and TLS handshakes, which dominate a small webhook POST.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;

use crate::guard::TargetUrl;

/// Connections are pooled per scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Origin {
    https: bool,
    host: String,
    port: u16,
}

impl Origin {
    fn of(target: &TargetUrl) -> Self {
        Origin {
            https: target.https,
            host: target.host.clone(),
            port: target.port,
        }
    }
}

struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// The pool. Cheap to lock: it only moves senders in and out.
pub struct ConnectionPool {
    idle: Mutex<HashMap<Origin, Vec<Idle>>>,
    max_idle_per_origin: usize,
    idle_timeout: Duration,
}

impl ConnectionPool {
    /// An empty pool.
    pub fn new(max_idle_per_origin: usize, idle_timeout: Duration) -> Self {
        ConnectionPool {
            idle: Mutex::new(HashMap::new()),
            max_idle_per_origin,
            idle_timeout,
        }
    }

    /// The most recently used live connection to the target's origin.
    pub fn checkout(&self, target: &TargetUrl) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let origin = Origin::of(target);
        let list = idle.get_mut(&origin)?;
        let mut found = None;
        while let Some(candidate) = list.pop() {
            if !candidate.sender.is_closed() && candidate.since.elapsed() < self.idle_timeout {
                found = Some(candidate.sender);
                break;
            }
        }
        if list.is_empty() {
            idle.remove(&origin);
        }
        found
    }

    /// Returns a connection whose last response was read to the end.
    pub fn checkin(&self, target: &TargetUrl, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let list = idle.entry(Origin::of(target)).or_default();
        if list.len() < self.max_idle_per_origin {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Drops connections idle for longer than the idle timeout.
    pub fn prune(&self) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        idle.retain(|_, list| {
            list.retain(|entry| {
                !entry.sender.is_closed() && entry.since.elapsed() < self.idle_timeout
            });
            !list.is_empty()
        });
    }

    /// Number of idle connections, for metrics and tests.
    pub fn idle_count(&self) -> usize {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        idle.values().map(Vec::len).sum()
    }
}
