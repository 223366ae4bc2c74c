//! The scenarios. Each creates its own database, measures, and returns one
//! JSON object; the human-readable lines are printed as it goes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devkit::scratch::ScratchDb;
use serde_json::json;
use uuid::Uuid;
use webhookd::manage::{self, CreateWebhook};
use webhookd::signing::SecretBox;

use crate::process::{self, Daemon, Usage};
use crate::sink::{Sink, Tally};
use crate::sql::{self, Events};

mod database;
mod sizes;
mod xmin;

pub use sizes::Sizes;

pub type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// What every scenario shares.
pub struct Bench {
    server_url: String,
    /// The receiver.
    pub sink: Sink,
    key: String,
    secrets: SecretBox,
}

/// A database of one scenario's own, migrated; dropped afterwards.
struct BenchDb {
    scratch: ScratchDb,
    url: String,
    client: tokio_postgres::Client,
}

impl BenchDb {
    async fn drop_database(self) {
        drop(self.client);
        self.scratch.drop_now().await;
    }
}

/// One drain of a pre-filled outbox.
struct Drained {
    deliveries: u64,
    seconds: f64,
    usage: Vec<Usage>,
    postgres_cpu: f64,
    /// This process (receiver and bookkeeping).
    bench_cpu: f64,
    /// Share of the whole machine's CPU that was busy.
    machine_busy: f64,
    duplicates: u64,
}

impl Drained {
    fn rate(&self) -> f64 {
        self.deliveries as f64 / self.seconds
    }

    fn cpu(&self) -> f64 {
        self.usage.iter().map(|u| u.cpu_seconds).sum()
    }

    fn peak_rss(&self) -> f64 {
        self.usage
            .iter()
            .map(|u| u.peak_rss_mib)
            .fold(0.0, f64::max)
    }

    fn postgres_share(&self) -> f64 {
        self.postgres_cpu / (self.seconds * process::cores() as f64)
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "deliveries": self.deliveries,
            "seconds": round3(self.seconds),
            "deliveries_per_second": self.rate().round(),
            "daemon_cpu_seconds": round3(self.cpu()),
            "daemon_peak_rss_mib": round3(self.peak_rss()),
            "postgres_cpu_seconds": round3(self.postgres_cpu),
            "postgres_cpu_share_of_machine": round3(self.postgres_share()),
            "bench_cpu_seconds": round3(self.bench_cpu),
            "machine_busy_share": round3(self.machine_busy),
            "duplicates": self.duplicates,
        })
    }

    fn print(&self, label: &str) {
        println!(
            "  {label:<28} {:>8} deliveries in {:>6.2}s = {:>7.0}/s   daemon CPU {:>5.2}s  peak RSS {:>5.1} MiB   PostgreSQL CPU {:>5.2}s ({:.0}% of machine)   receiver CPU {:>5.2}s   machine {:.0}% busy   duplicates {}",
            self.deliveries,
            self.seconds,
            self.rate(),
            self.cpu(),
            self.peak_rss(),
            self.postgres_cpu,
            self.postgres_share() * 100.0,
            self.bench_cpu,
            self.machine_busy * 100.0,
            self.duplicates
        );
    }
}

pub fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

impl Bench {
    /// Checks the server and starts the receiver.
    pub async fn new(server_url: &str) -> BenchResult<Bench> {
        webhookd::db::connect_single(server_url).await?;
        let key = SecretBox::generate_key_base64();
        Ok(Bench {
            server_url: server_url.to_string(),
            sink: Sink::start().await?,
            secrets: SecretBox::from_base64(&key)?,
            key,
        })
    }

    async fn fresh_db(&self) -> BenchResult<BenchDb> {
        let scratch = ScratchDb::create(&self.server_url, "webhookd_bench").await?;
        let url = scratch.url().to_string();
        let mut client = webhookd::db::connect_single(&url).await?;
        webhookd::db::migrate(&mut client).await?;
        Ok(BenchDb {
            scratch,
            url,
            client,
        })
    }

    async fn webhook(&self, db: &BenchDb, org: Uuid, path: &str) -> BenchResult<Uuid> {
        let url = self.sink.url(path);
        let request = CreateWebhook {
            organization_id: org,
            url: &url,
            label: "bench",
            allow_private_targets: true,
            signature_scheme: Default::default(),
        };
        Ok(manage::create(
            &db.client,
            &self.secrets,
            &webhookd::delivery::sender::SystemResolver,
            &request,
        )
        .await?
        .id)
    }

    /// Commits `events` events for `org` in chunks (before any daemon runs).
    async fn fill(&self, db: &BenchDb, org: Uuid, events: i64) -> BenchResult<()> {
        let mut done = 0;
        while done < events {
            let chunk = (events - done).min(10_000);
            sql::insert_events(&db.client, Events::Fill, org, (done + 1, done + chunk)).await?;
            done += chunk;
        }
        Ok(())
    }

    /// Starts `replicas` daemons on a filled outbox and waits until `expected`
    /// deliveries reached `/ok`.
    async fn drain(
        &self,
        db: &BenchDb,
        replicas: usize,
        expected: u64,
        extra: &[&str],
    ) -> BenchResult<Drained> {
        let tally = &self.sink.tally;
        tally.reset();
        let postgres_before = process::postgres_cpu_seconds();
        let bench_before = process::own_cpu_seconds();
        let machine_before = process::machine_ticks();
        let started = Instant::now();
        let mut daemons = Vec::new();
        for _ in 0..replicas {
            daemons.push(Daemon::spawn(&db.url, &self.key, extra)?);
        }
        wait_for_ok(tally, expected, Duration::from_secs(900)).await?;
        let seconds = tally
            .last_ok()
            .unwrap_or_else(Instant::now)
            .duration_since(started)
            .as_secs_f64();
        // Read before the daemons stop: their backends take their CPU time
        // with them when they exit.
        let postgres_cpu = process::postgres_cpu_seconds() - postgres_before;
        let bench_cpu = process::own_cpu_seconds() - bench_before;
        let machine_busy = process::busy_share(machine_before, process::machine_ticks());
        let mut usage = Vec::new();
        for daemon in daemons {
            usage.push(daemon.stop().await);
        }
        let recorded = sql::delivered(&db.client).await?;
        if (recorded as u64) < expected {
            return Err(
                format!("only {recorded} of {expected} deliveries recorded as delivered").into(),
            );
        }
        Ok(Drained {
            deliveries: expected,
            seconds,
            usage,
            postgres_cpu,
            bench_cpu,
            machine_busy,
            duplicates: tally.duplicates.load(Ordering::Relaxed),
        })
    }

    /// 1. Throughput: committed events, one webhook, one replica.
    pub async fn throughput(&self, sizes: &Sizes) -> BenchResult<serde_json::Value> {
        println!(
            "throughput: {} committed events, 1 webhook, 1 replica",
            sizes.throughput_events
        );
        let db = self.fresh_db().await?;
        let org = Uuid::new_v4();
        self.webhook(&db, org, "/ok").await?;
        self.fill(&db, org, sizes.throughput_events).await?;
        let drained = self
            .drain(&db, 1, sizes.throughput_events as u64, &[])
            .await?;
        drained.print("1 webhook");
        db.drop_database().await;
        Ok(
            json!({"scenario": "throughput", "events": sizes.throughput_events, "webhooks": 1, "replicas": 1, "result": drained.json()}),
        )
    }

    /// 2. Fan-out: committed events to an organization with many webhooks.
    pub async fn fanout(&self, sizes: &Sizes) -> BenchResult<serde_json::Value> {
        println!(
            "fanout: {} committed events x {} webhooks, 1 replica",
            sizes.fanout_events, sizes.fanout_webhooks
        );
        let db = self.fresh_db().await?;
        let org = Uuid::new_v4();
        for _ in 0..sizes.fanout_webhooks {
            self.webhook(&db, org, "/ok").await?;
        }
        self.fill(&db, org, sizes.fanout_events).await?;
        let expected = sizes.fanout_events as u64 * sizes.fanout_webhooks as u64;
        let drained = self.drain(&db, 1, expected, &[]).await?;
        drained.print(&format!("{} webhooks", sizes.fanout_webhooks));
        db.drop_database().await;
        Ok(
            json!({"scenario": "fanout", "events": sizes.fanout_events, "webhooks": sizes.fanout_webhooks, "replicas": 1, "result": drained.json()}),
        )
    }

    /// 7. Replicas: the throughput scenario with 1, 2 and 4 replicas.
    pub async fn replicas(&self, sizes: &Sizes) -> BenchResult<serde_json::Value> {
        println!(
            "replicas: {} committed events, 1 webhook",
            sizes.replica_events
        );
        let mut runs = Vec::new();
        for replicas in [1, 2, 4] {
            let db = self.fresh_db().await?;
            let org = Uuid::new_v4();
            self.webhook(&db, org, "/ok").await?;
            self.fill(&db, org, sizes.replica_events).await?;
            let drained = self
                .drain(&db, replicas, sizes.replica_events as u64, &[])
                .await?;
            drained.print(&format!("{replicas} replica(s)"));
            runs.push(json!({"replicas": replicas, "result": drained.json()}));
            db.drop_database().await;
        }
        Ok(json!({"scenario": "replicas", "events": sizes.replica_events, "runs": runs}))
    }

    /// 3. Latency: a steady rate from 4 producer connections; commit-to-arrival.
    pub async fn latency(&self, sizes: &Sizes) -> BenchResult<serde_json::Value> {
        const PRODUCERS: u64 = 4;
        println!(
            "latency: {} events/s for {}s from {PRODUCERS} producer connections, 1 webhook, 1 replica",
            sizes.latency_rate, sizes.latency_seconds
        );
        let db = self.fresh_db().await?;
        let org = Uuid::new_v4();
        self.webhook(&db, org, "/ok").await?;
        let tally = &self.sink.tally;
        tally.reset();
        let postgres_before = process::postgres_cpu_seconds();
        let daemon = Daemon::spawn(&db.url, &self.key, &[])?;
        // A first event proves the daemon listens before the clock starts.
        sql::emit_warm_up(&db.client, org).await?;
        wait_for_ok(tally, 1, Duration::from_secs(30)).await?;
        tally.reset();
        tally.record_arrivals();

        let commits: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let per_producer = sizes.latency_rate / PRODUCERS;
        let total = per_producer * PRODUCERS * sizes.latency_seconds;
        let mut producers = Vec::new();
        let started = Instant::now();
        for producer in 0..PRODUCERS {
            let client = webhookd::db::connect_single(&db.url).await?;
            let commits = commits.clone();
            let count = per_producer * sizes.latency_seconds;
            producers.push(tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval(Duration::from_secs_f64(1.0 / per_producer as f64));
                for i in 0..count {
                    tick.tick().await;
                    let id = format!("L{producer}-{i}");
                    let data = json!({"id": id, "post_id": "p1"});
                    if webhookd::db::webhooks::emit(&client, org, "vote.created", &data)
                        .await
                        .is_ok()
                    {
                        commits.lock().unwrap().insert(id, Instant::now());
                    }
                }
            }));
        }
        for producer in producers {
            producer.await?;
        }
        wait_for_ok(tally, total, Duration::from_secs(60)).await?;
        let seconds = started.elapsed().as_secs_f64();
        let postgres_cpu = process::postgres_cpu_seconds() - postgres_before;
        let usage = daemon.stop().await;
        let commits = commits.lock().unwrap().clone();
        let mut latencies: Vec<f64> = tally
            .take_arrivals()
            .into_iter()
            .filter_map(|(id, arrived)| {
                let committed = commits.get(&id)?;
                // The receiver can see a delivery before the producer's COMMIT
                // acknowledgement reaches it; that counts as zero.
                Some(arrived.saturating_duration_since(*committed).as_secs_f64() * 1000.0)
            })
            .collect();
        latencies.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        let (p50, p95, p99, max) = (at(0.50), at(0.95), at(0.99), at(1.0));
        println!(
            "  {} events: commit-to-arrival p50 {p50:.2} ms  p95 {p95:.2} ms  p99 {p99:.2} ms  max {max:.2} ms   daemon CPU {:.2}s  peak RSS {:.1} MiB   PostgreSQL CPU {:.2}s ({:.0}% of machine)",
            latencies.len(),
            usage.cpu_seconds,
            usage.peak_rss_mib,
            postgres_cpu,
            postgres_cpu / (seconds * process::cores() as f64) * 100.0
        );
        db.drop_database().await;
        Ok(json!({
            "scenario": "latency",
            "rate_per_second": sizes.latency_rate,
            "seconds": sizes.latency_seconds,
            "producers": PRODUCERS,
            "events": latencies.len(),
            "latency_ms": {"p50": round3(p50), "p95": round3(p95), "p99": round3(p99), "max": round3(max)},
            "daemon_cpu_seconds": round3(usage.cpu_seconds),
            "daemon_peak_rss_mib": round3(usage.peak_rss_mib),
            "postgres_cpu_seconds": round3(postgres_cpu),
        }))
    }

    /// Per-webhook isolation: healthy webhooks' rate with and without a
    /// hanging and a failing webhook beside them.
    pub async fn isolation(&self, sizes: &Sizes) -> BenchResult<serde_json::Value> {
        let events = sizes.isolation_events;
        println!(
            "isolation: {events} events for each of 2 organizations with 2 healthy webhooks each; then again with a hanging and a failing webhook in one of them"
        );
        let mut runs = Vec::new();
        for with_bad in [false, true] {
            let db = self.fresh_db().await?;
            let (org_a, org_b) = (Uuid::new_v4(), Uuid::new_v4());
            for org in [org_a, org_b] {
                self.webhook(&db, org, "/ok").await?;
                self.webhook(&db, org, "/ok").await?;
            }
            if with_bad {
                self.webhook(&db, org_a, "/hang").await?;
                self.webhook(&db, org_a, "/fail").await?;
            }
            self.fill(&db, org_a, events).await?;
            self.fill(&db, org_b, events).await?;
            let healthy = events as u64 * 4;
            let drained = self
                .drain(&db, 1, healthy, &["--shutdown-grace", "1s"])
                .await?;
            let bad = self.sink.tally.bad.load(Ordering::Relaxed);
            let label = if with_bad {
                "with hanging + failing"
            } else {
                "healthy only"
            };
            drained.print(label);
            if with_bad {
                println!(
                    "  {:<28} {bad} requests reached the hanging and failing webhooks meanwhile",
                    ""
                );
            }
            runs.push((with_bad, drained, bad));
            db.drop_database().await;
        }
        let baseline = runs[0].1.rate();
        let with_bad = runs[1].1.rate();
        println!(
            "  healthy rate with bad webhooks: {:.0}% of the rate without them",
            with_bad / baseline * 100.0
        );
        Ok(json!({
            "scenario": "isolation",
            "events_per_organization": events,
            "healthy_only": runs[0].1.json(),
            "with_bad_webhooks": runs[1].1.json(),
            "bad_requests_meanwhile": runs[1].2,
            "healthy_rate_ratio": round3(with_bad / baseline),
        }))
    }
}

/// Waits until `/ok` saw `expected` requests, printing progress to stderr.
async fn wait_for_ok(tally: &Tally, expected: u64, limit: Duration) -> BenchResult<()> {
    let deadline = Instant::now() + limit;
    let mut last_report = Instant::now();
    loop {
        let seen = tally.ok.load(Ordering::Relaxed);
        if seen >= expected {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {seen} of {expected} deliveries arrived within {}s",
                limit.as_secs()
            )
            .into());
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            eprintln!("    … {seen}/{expected}");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
