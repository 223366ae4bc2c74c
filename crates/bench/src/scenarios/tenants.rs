//! Tenants: many organizations with a few webhooks each, every webhook on
//! its own loopback address so that each is a distinct receiver host; then
//! the same counts with every webhook on one host, as the baseline; first
//! over plain HTTP, then over HTTPS (a receiver certificate for every
//! address, its CA given to the daemon with `--extra-ca-file`). It shows the
//! rate, the daemon's memory and connections while busy and once idle, what
//! it keeps per webhook, and how evenly the webhooks get their first delivery.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use super::{http_get, round3, wait_for_ok, Bench, BenchDb, BenchResult, Sizes};
use crate::pki;
use crate::process::{self, Daemon};
use crate::sink::Sink;
use crate::sql;

/// Longest a run may take (a backlog that drains takes well under a
/// minute; deliveries that failed for good are never waited out).
const RUN_LIMIT: Duration = Duration::from_secs(300);
/// How long after the last delivery the daemon's idle RSS is first read.
const IDLE_AFTER: Duration = Duration::from_secs(5);
/// And read again: past the idle-connection timeout (20 s), the quiet time
/// after which a webhook's state is forgotten (30 s) and the main loop's next
/// prune (every 10 s), when all per-webhook and per-host state should be gone.
const SETTLED_AFTER: Duration = Duration::from_secs(45);
/// Addresses per third octet: 127.0.a.1 ..= 127.0.a.250.
const PER_OCTET: usize = 250;

/// How many organizations, webhooks and events.
#[derive(Debug, Clone, Copy)]
struct Shape {
    organizations: usize,
    per_organization: usize,
    events: i64,
}

impl Shape {
    fn webhooks(&self) -> usize {
        self.organizations * self.per_organization
    }

    fn deliveries(&self) -> u64 {
        self.webhooks() as u64 * self.events as u64
    }
}

/// Time from the daemon's start to each webhook's first delivery, in ms.
struct Firsts {
    p50: f64,
    p95: f64,
    max: f64,
}

impl Firsts {
    /// From the first arrivals by webhook; every webhook must have one.
    fn from(started: Instant, firsts: &[Option<Instant>]) -> BenchResult<Firsts> {
        let mut ms = Vec::with_capacity(firsts.len());
        for (index, first) in firsts.iter().enumerate() {
            let first = first.ok_or_else(|| format!("webhook {index} got no delivery"))?;
            ms.push(first.duration_since(started).as_secs_f64() * 1000.0);
        }
        ms.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        Ok(Firsts {
            p50: at(0.5),
            p95: at(0.95),
            max: at(1.0),
        })
    }

    /// How much longer the last webhook waited than the median one.
    fn spread(&self) -> f64 {
        self.max / self.p50
    }
}

/// What the daemon keeps once the work is done, [`SETTLED_AFTER`] the last
/// delivery: its RSS, connections, and its own per-webhook gauges.
struct Settled {
    rss_mib: f64,
    connections: usize,
    /// `webhookd_tracked_webhooks`, `webhookd_cached_signers`,
    /// `webhookd_idle_connections` from `/metrics`.
    gauges: [Option<f64>; 3],
}

const STATE_GAUGES: [&str; 3] = [
    "webhookd_tracked_webhooks",
    "webhookd_cached_signers",
    "webhookd_idle_connections",
];

/// One drain of the tenants' outbox.
struct HostRun {
    deliveries: u64,
    seconds: f64,
    /// From the first delivery's arrival to the last: without the daemon's
    /// start-up, which dominates the small `--quick` runs.
    drain_seconds: f64,
    peak_rss_mib: f64,
    idle_rss_mib: f64,
    open_connections: usize,
    settled: Settled,
    firsts: Firsts,
    duplicates: u64,
}

impl HostRun {
    fn rate(&self) -> f64 {
        self.deliveries as f64 / self.seconds
    }

    fn drain_rate(&self) -> f64 {
        self.deliveries as f64 / self.drain_seconds
    }

    fn json(&self) -> Value {
        json!({
            "deliveries": self.deliveries,
            "seconds": round3(self.seconds),
            "deliveries_per_second": self.rate().round(),
            "drain_seconds": round3(self.drain_seconds),
            "drain_deliveries_per_second": self.drain_rate().round(),
            "daemon_peak_rss_mib": round3(self.peak_rss_mib),
            "daemon_idle_rss_mib": round3(self.idle_rss_mib),
            "open_connections": self.open_connections,
            "settled": {
                "after_seconds": SETTLED_AFTER.as_secs(),
                "daemon_rss_mib": round3(self.settled.rss_mib),
                "open_connections": self.settled.connections,
                "tracked_webhooks": self.settled.gauges[0],
                "cached_signers": self.settled.gauges[1],
                "idle_connections": self.settled.gauges[2],
            },
            "first_delivery_ms": {
                "p50": round3(self.firsts.p50),
                "p95": round3(self.firsts.p95),
                "max": round3(self.firsts.max),
                "max_over_p50": round3(self.firsts.spread()),
            },
            "duplicates": self.duplicates,
        })
    }

    fn print(&self, label: &str) {
        println!(
            "  {label:<28} {:>8} deliveries in {:>6.2}s = {:>7.0}/s (first to last arrival {:.2}s = {:.0}/s)   peak RSS {:>5.1} MiB  idle RSS {:>5.1} MiB   {} connections to the receiver   duplicates {}",
            self.deliveries,
            self.seconds,
            self.rate(),
            self.drain_seconds,
            self.drain_rate(),
            self.peak_rss_mib,
            self.idle_rss_mib,
            self.open_connections,
            self.duplicates
        );
        let gauge = |g: Option<f64>| g.map_or("?".to_string(), |v| format!("{v:.0}"));
        println!(
            "  {:<28} {}s after: RSS {:.1} MiB, {} connections; tracked webhooks {}, cached signers {}, idle connections {}",
            "",
            SETTLED_AFTER.as_secs(),
            self.settled.rss_mib,
            self.settled.connections,
            gauge(self.settled.gauges[0]),
            gauge(self.settled.gauges[1]),
            gauge(self.settled.gauges[2]),
        );
        println!(
            "  {:<28} first delivery per webhook: p50 {:.0} ms  p95 {:.0} ms  max {:.0} ms  (max/p50 {:.2})",
            "",
            self.firsts.p50,
            self.firsts.p95,
            self.firsts.max,
            self.firsts.spread()
        );
    }
}

/// The receiver host of webhook `index`: 127.0.a.b with a and b from 1
/// (Linux routes all of 127.0.0.0/8 to loopback, so these bind as they are).
fn host_address(index: usize) -> IpAddr {
    let a = 1 + index / PER_OCTET;
    let b = 1 + index % PER_OCTET;
    let a = u8::try_from(a).expect("at most 63,750 webhooks");
    IpAddr::V4(Ipv4Addr::new(127, 0, a, b as u8))
}

/// How the receiver is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTPS, the receiver's certificate covering every address.
    Https,
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl Bench {
    /// Tenants: many receiver hosts against one, over each of `schemes`.
    pub async fn tenants(&self, sizes: &Sizes, schemes: &[Scheme]) -> BenchResult<Value> {
        let mut results = Vec::new();
        for scheme in schemes {
            results.push(self.tenants_over(sizes, *scheme).await?);
        }
        Ok(json!({ "scenario": "tenants", "runs": results }))
    }

    async fn tenants_over(&self, sizes: &Sizes, scheme: Scheme) -> BenchResult<Value> {
        let (organizations, per_organization, events) = sizes.tenants;
        let shape = Shape {
            organizations,
            per_organization,
            events,
        };
        println!(
            "tenants over {}: {organizations} organizations x {per_organization} webhooks, {events} committed events each = {} deliveries, 1 replica",
            scheme.name(),
            shape.deliveries()
        );
        let hosts: Vec<IpAddr> = (0..shape.webhooks()).map(host_address).collect();
        let (sink, ca_file) = match scheme {
            Scheme::Http => (Sink::start_on(&hosts).await?, None),
            Scheme::Https => {
                let mut covered = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
                covered.extend(&hosts);
                let pki = pki::receiver_pki(&covered)?;
                let sink = Sink::start_tls_on(&hosts, pki.acceptors).await?;
                (sink, Some(pki.ca_file))
            }
        };
        let receiver = Receiver {
            sink: &sink,
            scheme,
            ca_file: ca_file.as_deref(),
        };
        let runs: BenchResult<(HostRun, HostRun)> = async {
            let many = self.tenants_run(&receiver, shape, true).await?;
            let one = self.tenants_run(&receiver, shape, false).await?;
            Ok((many, one))
        }
        .await;
        if let Some(file) = &ca_file {
            let _ = std::fs::remove_file(file);
        }
        let (many, one) = runs?;
        many.print(&format!("{} hosts", shape.webhooks()));
        one.print("1 host");
        let ratio = many.rate() / one.rate();
        let drain_ratio = many.drain_rate() / one.drain_rate();
        println!(
            "  rate with {} hosts: {:.0}% of the rate with one host ({:.0}% first to last arrival)",
            shape.webhooks(),
            ratio * 100.0,
            drain_ratio * 100.0
        );
        Ok(json!({
            "scheme": scheme.name(),
            "organizations": organizations,
            "webhooks": shape.webhooks(),
            "deliveries": shape.deliveries(),
            "many_hosts": many.json(),
            "one_host": one.json(),
            "rate_ratio": round3(ratio),
            "drain_rate_ratio": round3(drain_ratio),
        }))
    }

    /// Creates the webhooks (each on its own host when `many_hosts`, else all
    /// on 127.0.0.1 with distinct paths), commits the events, and drains them.
    async fn tenants_run(
        &self,
        receiver: &Receiver<'_>,
        shape: Shape,
        many_hosts: bool,
    ) -> BenchResult<HostRun> {
        let db = self.fresh_db().await?;
        let port = receiver.sink.address.port();
        let scheme = receiver.scheme.name();
        for organization in 0..shape.organizations {
            let org = Uuid::new_v4();
            for slot in 0..shape.per_organization {
                let index = organization * shape.per_organization + slot;
                let host = if many_hosts {
                    host_address(index)
                } else {
                    IpAddr::V4(Ipv4Addr::LOCALHOST)
                };
                let url = format!("{scheme}://{host}:{port}/w/{index}");
                self.webhook_at(&db, org, &url).await?;
            }
            self.fill(&db, org, shape.events).await?;
        }
        let run = self.tenants_drain(receiver, &db, shape).await;
        db.drop_database().await;
        run
    }

    /// One replica on the filled outbox until every delivery arrived; reads
    /// its connections at once and its RSS [`IDLE_AFTER`] later, then stops it.
    async fn tenants_drain(
        &self,
        receiver: &Receiver<'_>,
        db: &BenchDb,
        shape: Shape,
    ) -> BenchResult<HostRun> {
        let sink = receiver.sink;
        let tally = &sink.tally;
        tally.reset();
        tally.record_firsts(shape.webhooks());
        let expected = shape.deliveries();
        let started = Instant::now();
        let extra: Vec<&str> = match receiver.ca_file.and_then(|file| file.to_str()) {
            Some(file) => vec!["--extra-ca-file", file],
            None => Vec::new(),
        };
        let mut daemons = vec![Daemon::spawn(&db.url, &self.key, &extra)?];
        wait_for_ok(tally, expected, RUN_LIMIT, &mut daemons).await?;
        let daemon = daemons.remove(0);
        let open_connections = process::established_to(daemon.pid(), sink.address.port());
        let last = tally.last_ok().unwrap_or_else(Instant::now);
        let seconds = last.duration_since(started).as_secs_f64();
        // A measured interval, not a wait for a condition: how much the
        // daemon gives back once the backlog is gone.
        tokio::time::sleep_until((last + IDLE_AFTER).into()).await;
        let idle_rss_mib = process::rss_mib(daemon.pid());
        tokio::time::sleep_until((last + SETTLED_AFTER).into()).await;
        let settled = settled(&daemon, sink.address.port()).await;
        let usage = daemon.stop().await;
        let recorded = sql::delivered(&db.client).await?;
        if (recorded as u64) < expected {
            return Err(
                format!("only {recorded} of {expected} deliveries recorded as delivered").into(),
            );
        }
        let firsts = tally.take_firsts();
        let earliest = firsts.iter().flatten().min().copied().unwrap_or(started);
        Ok(HostRun {
            deliveries: expected,
            seconds,
            drain_seconds: last.duration_since(earliest).as_secs_f64(),
            settled,
            peak_rss_mib: usage.peak_rss_mib,
            idle_rss_mib,
            open_connections,
            firsts: Firsts::from(started, &firsts)?,
            duplicates: tally.duplicates.load(Ordering::Relaxed),
        })
    }
}

/// The receiver of one variant.
struct Receiver<'a> {
    sink: &'a Sink,
    scheme: Scheme,
    /// The CA to trust, for HTTPS.
    ca_file: Option<&'a std::path::Path>,
}

/// The daemon's RSS, connections and per-webhook gauges now.
async fn settled(daemon: &Daemon, port: u16) -> Settled {
    let text = match daemon.admin_address().await {
        Ok(admin) => http_get(admin, "/metrics").await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let value = |name: &str| super::metric_value(&text, name);
    Settled {
        rss_mib: process::rss_mib(daemon.pid()),
        connections: process::established_to(daemon.pid(), port),
        gauges: STATE_GAUGES.map(value),
    }
}
