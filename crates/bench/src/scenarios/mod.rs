//! The scenarios. Each creates its own database, measures, and returns one
//! JSON object; the human-readable lines are printed as it goes.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use devkit::scratch::ScratchDb;
use serde_json::json;
use uuid::Uuid;
use webhookd::manage::{self, CreateWebhook};
use webhookd::signing::SecretBox;

use crate::pgstats;
use crate::process::{self, Daemon, Usage};
use crate::sink::{Sink, Tally};
use crate::sql::{self, Events};

mod ceiling;
mod database;
mod latency;
mod sizes;
mod tenants;
mod xmin;

use ceiling::CeilingRates;

pub use sizes::Sizes;
pub use tenants::Scheme;

pub type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// What every scenario shares.
pub struct Bench {
    server_url: String,
    /// The receiver.
    pub sink: Sink,
    key: String,
    secrets: SecretBox,
    /// The ceiling's rates, once it ran (the first scenario when asked for).
    ceiling: OnceLock<CeilingRates>,
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
            ceiling: OnceLock::new(),
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
        self.webhook_at(db, org, &self.sink.url(path)).await
    }

    /// A webhook of `org` to `url`, private targets allowed (the receivers
    /// are on loopback).
    async fn webhook_at(&self, db: &BenchDb, org: Uuid, url: &str) -> BenchResult<Uuid> {
        let request = CreateWebhook {
            organization_id: org,
            url,
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
        wait_for_ok(tally, expected, Duration::from_secs(900), &mut daemons).await?;
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

    /// Throughput (scenario 1): committed events, one webhook, one replica;
    /// and what each delivery writes.
    pub async fn throughput(&self, sizes: &Sizes) -> BenchResult<serde_json::Value> {
        println!(
            "throughput: {} committed events, 1 webhook, 1 replica",
            sizes.throughput_events
        );
        let db = self.fresh_db().await?;
        let org = Uuid::new_v4();
        self.webhook(&db, org, "/ok").await?;
        self.fill(&db, org, sizes.throughput_events).await?;
        let me = pgstats::backend_pid(&db.client).await?;
        pgstats::settle(&db.client, db.scratch.name(), me).await?;
        let before = pgstats::writes(&db.client).await?;
        let expected = sizes.throughput_events as u64;
        let drained = self.drain(&db, 1, expected, &[]).await?;
        // The daemon has exited: its counters are published.
        pgstats::settle(&db.client, db.scratch.name(), me).await?;
        let after = pgstats::writes(&db.client).await?;
        let writes = pgstats::per_delivery(&before, &after, expected);
        drained.print("1 webhook");
        let share = self.share_of_ceiling(drained.rate(), false);
        pgstats::print_per_delivery(&writes);
        db.drop_database().await;
        Ok(json!({
            "scenario": "throughput", "events": sizes.throughput_events, "webhooks": 1, "replicas": 1,
            "result": drained.json(), "share_of_ceiling": share, "writes_per_delivery": writes,
        }))
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
        let share = self.share_of_ceiling(drained.rate(), true);
        db.drop_database().await;
        Ok(
            json!({"scenario": "fanout", "events": sizes.fanout_events, "webhooks": sizes.fanout_webhooks, "replicas": 1, "result": drained.json(), "share_of_ceiling": share}),
        )
    }

    /// `rate` as a share of the ceiling measured in this run (with many
    /// webhooks when `fanout`), printed; `None` when the ceiling did not run.
    fn share_of_ceiling(&self, rate: f64, fanout: bool) -> Option<f64> {
        let ceiling = self.ceiling.get()?;
        let best = if fanout {
            ceiling.fanout
        } else {
            ceiling.single
        };
        let share = round3(rate / best);
        println!(
            "  {:<28} {:.0}% of the ceiling ({best:.0}/s: the daemon's statements without HTTP)",
            "",
            share * 100.0
        );
        Some(share)
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

/// A first event proves the daemon listens before the clock starts; then
/// the tally starts afresh, recording each arrival's time.
async fn warm_up(
    tally: &Tally,
    client: &tokio_postgres::Client,
    org: uuid::Uuid,
    daemon: &mut Daemon,
) -> BenchResult<()> {
    sql::emit_warm_up(client, org).await?;
    let limit = Duration::from_secs(30);
    wait_for_ok(tally, 1, limit, std::slice::from_mut(daemon)).await?;
    tally.reset();
    tally.record_arrivals();
    Ok(())
}

/// Waits until `/ok` saw `expected` requests, printing progress to stderr;
/// gives up at `limit`, or at once when one of `daemons` has exited.
async fn wait_for_ok(
    tally: &Tally,
    expected: u64,
    limit: Duration,
    daemons: &mut [Daemon],
) -> BenchResult<()> {
    let deadline = Instant::now() + limit;
    let mut last_report = Instant::now();
    loop {
        let seen = tally.ok.load(Ordering::Relaxed);
        if seen >= expected {
            return Ok(());
        }
        if daemons.iter_mut().any(Daemon::exited) {
            return Err(format!(
                "a daemon exited after {seen} of {expected} deliveries (its errors are above)"
            )
            .into());
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

/// The value of an unlabelled metric in a `/metrics` text, if present.
fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .parse::<f64>()
            .ok()
    })
}

/// The body of one HTTP/1.1 GET with `Connection: close` (the daemon's admin
/// endpoints).
async fn http_get(address: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}
