//! Keep-alive connections per origin. Reusing a connection saves the TCP
//! and TLS handshakes, which dominate a small webhook POST.
//!
//! Four bounds keep the pool's memory and the receivers' descriptors
//! independent of how many receiver hosts there are and how much work is
//! queued (docs/ARCHITECTURE.md, "Connections"):
//!
//! - connections per origin, idle or in use: a request beyond it waits for
//!   one of them rather than opening another. Deliveries to one host then
//!   reuse a few warm connections instead of opening (and, past the idle
//!   cap, closing) one per concurrent request, which costs a handshake each,
//!   a TLS one for HTTPS;
//! - idle connections in all, least recently used closed first: each holds
//!   buffers, a task and, for HTTPS, a TLS session, so thousands of hosts
//!   must not each keep one;
//! - idle connections per origin;
//! - an idle timeout: a connection unused this long is closed, so a quiet or
//!   revoked webhook's host holds nothing, and the pool empties once the
//!   work is done.
//!
//! Every operation is O(log n) in the number of idle connections: an ordered
//! map by check-in sequence gives the least recently used one, and each
//! origin keeps its own idle connections' sequence numbers oldest first.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use tokio::sync::Notify;

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

/// The pool's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Connections per origin, idle or in use.
    pub max_per_origin: usize,
    /// Idle connections kept in all, across origins.
    pub max_idle: usize,
    /// Idle connections kept per origin.
    pub max_idle_per_origin: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
}

/// The right to one connection to an origin: held while it is opened, used
/// and kept idle; dropping it (with its connection) frees the place for
/// the next request waiting for that origin.
pub struct Slot {
    origin: Origin,
    /// Weak: idle connections live inside the pool, and a strong reference
    /// from each would keep the pool (and them) alive after it is dropped.
    shared: Weak<Shared>,
}

impl Slot {
    /// The connection opened in this slot.
    pub fn connected(self, sender: SendRequest<Full<Bytes>>) -> PooledConnection {
        PooledConnection { sender, slot: self }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut state = shared.lock();
        if let Some(origin) = state.origins.get_mut(&self.origin) {
            origin.open = origin.open.saturating_sub(1);
            origin.freed.notify_one();
            // Waiters keep the entry: they wait on its `freed`.
            if origin.open == 0 && origin.waiting == 0 {
                state.origins.remove(&self.origin);
            }
        }
    }
}

/// A connection and its slot. Dropped, the connection closes.
pub struct PooledConnection {
    /// Sends requests on it.
    pub sender: SendRequest<Full<Bytes>>,
    slot: Slot,
}

impl PooledConnection {
    /// Closes the connection, keeping its place to open another.
    pub fn into_slot(self) -> Slot {
        self.slot
    }
}

/// What [`ConnectionPool::acquire`] hands out.
pub enum Lease {
    /// An idle connection, most recently used first.
    Reused(PooledConnection),
    /// A place to open a new connection in.
    Open(Slot),
}

struct Idle {
    connection: PooledConnection,
    since: Instant,
}

/// Requests that may queue for each busy connection of an origin before
/// another is opened: a claim hands a webhook about 8 deliveries at a time,
/// which then ride 2 connections.
const QUEUED_PER_CONNECTION: usize = 4;

/// How long a request waits for a busy connection before it opens its own:
/// many round trips to a fast receiver, a small delay next to a slow one's
/// answer. It is also the most a request waits behind another webhook's
/// requests to the same host that hang, since the per-origin cap is soft.
const PATIENCE: Duration = Duration::from_millis(50);

/// One origin's connections.
#[derive(Default)]
struct OriginState {
    /// Idle or in use (or being opened).
    open: usize,
    /// Requests waiting for one of them.
    waiting: usize,
    /// The idle ones' sequence numbers, oldest first.
    idle: VecDeque<u64>,
    /// Notified when a connection is checked in or closed.
    freed: Arc<Notify>,
}

#[derive(Default)]
struct PoolState {
    /// Every idle connection by check-in sequence: the first is the least
    /// recently used.
    by_age: BTreeMap<u64, Idle>,
    /// Origins with at least one connection.
    origins: HashMap<Origin, OriginState>,
    next_sequence: u64,
}

impl PoolState {
    /// A request stopped waiting for `origin`'s connections.
    fn stop_waiting(&mut self, origin: &Origin) {
        if let Some(entry) = self.origins.get_mut(origin) {
            entry.waiting = entry.waiting.saturating_sub(1);
            if entry.open == 0 && entry.waiting == 0 {
                self.origins.remove(origin);
            }
        }
    }

    /// Takes the idle connection checked in as `sequence` out of both maps.
    fn take(&mut self, sequence: u64) -> Option<Idle> {
        let idle = self.by_age.remove(&sequence)?;
        if let Some(origin) = self.origins.get_mut(&idle.connection.slot.origin) {
            if origin.idle.front() == Some(&sequence) {
                origin.idle.pop_front();
            } else if let Some(at) = origin.idle.iter().position(|s| *s == sequence) {
                origin.idle.remove(at);
            }
        }
        Some(idle)
    }
}

struct Shared {
    state: Mutex<PoolState>,
    limits: PoolLimits,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The pool. Cheap to lock: it only moves senders in and out. Connections
/// taken out of it are dropped only after its lock is released, since
/// dropping one takes the lock to free its slot.
pub struct ConnectionPool {
    shared: Arc<Shared>,
}

impl ConnectionPool {
    /// An empty pool.
    pub fn new(limits: PoolLimits) -> Self {
        ConnectionPool {
            shared: Arc::new(Shared {
                state: Mutex::new(PoolState::default()),
                limits,
            }),
        }
    }

    /// The most recently used live idle connection to the target's origin,
    /// else a slot to open one in.
    ///
    /// A request that finds every connection of its origin busy waits for
    /// one rather than opening another, for at most [`PATIENCE`] (and not
    /// past `deadline`), as long as the origin's queue is short
    /// ([`QUEUED_PER_CONNECTION`] per connection) or it has `max_per_origin`
    /// connections already: a burst of deliveries to one host then rides a
    /// few connections one after another instead of paying a handshake each,
    /// while a slow receiver still gets more connections after a moment.
    /// The cap is soft: many customers' receivers often share one host, and
    /// one webhook whose requests hang there must not hold up the others.
    pub async fn acquire(&self, target: &TargetUrl, deadline: tokio::time::Instant) -> Lease {
        let origin = Origin::of(target);
        let max = self.shared.limits.max_per_origin.max(1);
        let mut patient = true;
        loop {
            let mut dead = Vec::new();
            let freed = {
                let mut state = self.shared.lock();
                while let Some(sequence) = state
                    .origins
                    .get_mut(&origin)
                    .and_then(|o| o.idle.pop_back())
                {
                    let Some(idle) = state.by_age.remove(&sequence) else {
                        continue;
                    };
                    if idle.connection.sender.is_closed()
                        || idle.since.elapsed() >= self.shared.limits.idle_timeout
                    {
                        dead.push(idle);
                        continue;
                    }
                    drop(state);
                    drop(dead);
                    return Lease::Reused(idle.connection);
                }
                let entry = state.origins.entry(origin.clone()).or_default();
                // A dead idle connection still holds its slot until dropped
                // below: count it as closed.
                let live = entry.open - dead.len();
                let crowded = entry.waiting >= live * QUEUED_PER_CONNECTION;
                if live == 0 || !patient || (live < max && crowded) {
                    entry.open += 1;
                    drop(state);
                    drop(dead);
                    return Lease::Open(Slot {
                        origin,
                        shared: Arc::downgrade(&self.shared),
                    });
                }
                entry.waiting += 1;
                entry.freed.clone()
            };
            drop(dead);
            let until = deadline.min(tokio::time::Instant::now() + PATIENCE);
            let woken = tokio::time::timeout_at(until, freed.notified()).await;
            self.shared.lock().stop_waiting(&origin);
            if woken.is_err() {
                patient = false;
            }
        }
    }

    /// Returns a connection whose last response was read to the end. Past a
    /// cap, the least recently used connection (of the origin, or of all)
    /// is closed.
    pub fn checkin(&self, connection: PooledConnection) {
        let limits = self.shared.limits;
        if connection.sender.is_closed() || limits.max_idle == 0 || limits.max_idle_per_origin == 0
        {
            return;
        }
        let mut evicted = Vec::new();
        {
            let mut state = self.shared.lock();
            let sequence = state.next_sequence;
            state.next_sequence += 1;
            let origin = connection.slot.origin.clone();
            state.by_age.insert(
                sequence,
                Idle {
                    connection,
                    since: Instant::now(),
                },
            );
            let (over_origin, freed) = match state.origins.get_mut(&origin) {
                Some(entry) => {
                    entry.idle.push_back(sequence);
                    let over = entry.idle.len() > limits.max_idle_per_origin;
                    (
                        over.then(|| entry.idle.front().copied()).flatten(),
                        Some(entry.freed.clone()),
                    )
                }
                None => (None, None),
            };
            if let Some(oldest) = over_origin.and_then(|s| state.take(s)) {
                evicted.push(oldest);
            }
            while state.by_age.len() > limits.max_idle {
                let Some(oldest) = state.by_age.keys().next().copied() else {
                    break;
                };
                evicted.extend(state.take(oldest));
            }
            if let Some(freed) = freed {
                freed.notify_one();
            }
        }
        drop(evicted);
    }

    /// Closes connections idle for longer than the idle timeout (the oldest
    /// first, so it stops at the first one still fresh) and those the
    /// receiver closed.
    pub fn prune(&self) {
        let mut dropped = Vec::new();
        {
            let mut state = self.shared.lock();
            while let Some((sequence, idle)) = state.by_age.first_key_value() {
                if idle.since.elapsed() < self.shared.limits.idle_timeout {
                    break;
                }
                let sequence = *sequence;
                dropped.extend(state.take(sequence));
            }
            // Bounded by the global cap, and only every prune interval.
            let closed: Vec<u64> = state
                .by_age
                .iter()
                .filter(|(_, idle)| idle.connection.sender.is_closed())
                .map(|(sequence, _)| *sequence)
                .collect();
            for sequence in closed {
                dropped.extend(state.take(sequence));
            }
        }
        drop(dropped);
    }

    /// Number of idle connections, for metrics and tests.
    pub fn idle_count(&self) -> usize {
        self.shared.lock().by_age.len()
    }

    /// Number of origins with a connection, idle or in use.
    #[cfg(test)]
    fn origin_count(&self) -> usize {
        self.shared.lock().origins.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use hyper::server::conn::http1 as server_http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A real local server answering 200 to everything, on one port.
    async fn server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = service_fn(|_request| async {
                        Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::new())))
                    });
                    let _ = server_http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        address
    }

    fn soon() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(5)
    }

    /// A new connection to the test server in a slot of `target`'s origin.
    async fn opened(
        pool: &ConnectionPool,
        target: &TargetUrl,
        address: SocketAddr,
    ) -> PooledConnection {
        let Lease::Open(slot) = pool.acquire(target, soon()).await else {
            panic!("expected a slot to open a connection in");
        };
        let stream = TcpStream::connect(address).await.expect("connect");
        let (sender, connection) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(connection);
        slot.connected(sender)
    }

    /// A pool key; the connection itself always goes to the test server.
    fn target(address: SocketAddr, host: &str) -> TargetUrl {
        let url = format!("http://{host}:{}/", address.port());
        TargetUrl::parse(&url, true).expect("target")
    }

    fn limits(max_idle: usize, per_origin: usize) -> PoolLimits {
        PoolLimits {
            max_per_origin: per_origin,
            max_idle,
            max_idle_per_origin: per_origin,
            idle_timeout: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn the_global_idle_cap_closes_the_least_recently_used_origins_connection() {
        let address = server().await;
        let pool = ConnectionPool::new(limits(2, 4));
        let hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
        let targets: Vec<_> = hosts.iter().map(|h| target(address, h)).collect();
        for target in &targets {
            let connection = opened(&pool, target, address).await;
            pool.checkin(connection);
        }
        assert_eq!(pool.idle_count(), 2);
        assert_eq!(pool.origin_count(), 2, "the evicted origin holds nothing");
        assert!(matches!(
            pool.acquire(&targets[0], soon()).await,
            Lease::Open(_)
        ));
        for target in &targets[1..] {
            assert!(matches!(
                pool.acquire(target, soon()).await,
                Lease::Reused(_)
            ));
        }
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(pool.origin_count(), 0, "dropped leases free their origins");
    }

    #[tokio::test]
    async fn a_request_waits_for_a_busy_connection_rather_than_open_another() {
        let address = server().await;
        let pool = Arc::new(ConnectionPool::new(limits(16, 32)));
        let one = target(address, "127.0.0.1");
        let first = opened(&pool, &one, address).await;
        let waiting = tokio::spawn({
            let (pool, one) = (pool.clone(), one.clone());
            async move { matches!(pool.acquire(&one, soon()).await, Lease::Reused(_)) }
        });
        tokio::task::yield_now().await;
        pool.checkin(first);
        assert!(
            waiting.await.expect("waiter"),
            "the checked-in connection is handed on"
        );
    }

    #[tokio::test]
    async fn past_its_patience_a_request_opens_another_connection_even_past_the_cap() {
        let address = server().await;
        let pool = ConnectionPool::new(limits(16, 2));
        let one = target(address, "127.0.0.1");
        let _first = opened(&pool, &one, address).await;
        let later = tokio::time::Instant::now() + PATIENCE * 3;
        let started = tokio::time::Instant::now();
        let Lease::Open(_second) = pool.acquire(&one, later).await else {
            panic!("a second connection after waiting");
        };
        assert!(started.elapsed() >= PATIENCE, "it waited first");
        let started = tokio::time::Instant::now();
        assert!(
            matches!(pool.acquire(&one, later).await, Lease::Open(_)),
            "a third, past the cap, rather than a failure"
        );
        assert!(started.elapsed() >= PATIENCE, "it waited first");
    }

    #[tokio::test]
    async fn prune_closes_connections_past_the_idle_timeout() {
        let address = server().await;
        let pool = ConnectionPool::new(PoolLimits {
            idle_timeout: Duration::ZERO,
            ..limits(8, 8)
        });
        let one = target(address, "127.0.0.1");
        let first = opened(&pool, &one, address).await;
        let second = opened(&pool, &one, address).await;
        pool.checkin(first);
        pool.checkin(second);
        assert_eq!(pool.idle_count(), 2);
        pool.prune();
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(pool.origin_count(), 0);
    }
}
