//! The scenarios. Each creates its own database, measures, and returns one
//! JSON object; the human-readable lines are printed as it goes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;
use webhookd::signing::SecretBox;
use webhookd::webhooks::{self, CreateWebhook};

use crate::process::{self, Daemon, Usage};
use crate::sink::{Sink, Tally};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// How big each scenario is.
pub struct Sizes {
    throughput_events: i64,
    fanout_events: i64,
    fanout_webhooks: usize,
    latency_seconds: u64,
    latency_rate: u64,
    isolation_events: i64,
    replica_events: i64,
    producer_seconds: u64,
    backlogs: [i64; 2],
    backlog_measured: u64,
    soak_seconds: u64,
    soak_rate: u64,
}

impl Sizes {
    /// The sizes of the scenarios.
    pub fn full() -> Sizes {
        Sizes {
            throughput_events: 50_000,
            fanout_events: 5_000,
            fanout_webhooks: 10,
            latency_seconds: 30,
            latency_rate: 200,
            isolation_events: 5_000,
            replica_events: 50_000,
            producer_seconds: 10,
            backlogs: [10_000, 1_000_000],
            backlog_measured: 20_000,
            soak_seconds: 600,
            soak_rate: 3_500,
        }
    }

    /// About a minute in all.
    pub fn quick() -> Sizes {
        Sizes {
            throughput_events: 10_000,
            fanout_events: 1_000,
            fanout_webhooks: 10,
            latency_seconds: 10,
            latency_rate: 200,
            isolation_events: 2_000,
            replica_events: 10_000,
            producer_seconds: 3,
            backlogs: [10_000, 100_000],
            backlog_measured: 5_000,
            soak_seconds: 60,
            soak_rate: 1_000,
        }
    }
}

/// What every scenario shares.
pub struct Bench {
    server_url: String,
    /// The receiver.
    pub sink: Sink,
    key: String,
    secrets: SecretBox,
}

/// A database of one scenario's own; dropped afterwards.
struct BenchDb {
    server_url: String,
    name: String,
    url: String,
    client: tokio_postgres::Client,
}

impl BenchDb {
    async fn drop_database(self) {
        drop(self.client);
        if let Ok(admin) = webhookd::db::connect_single(&self.server_url).await {
            let _ = admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .await;
        }
    }
}

/// One drain of a pre-filled outbox.
struct Drained {
    deliveries: u64,
    seconds: f64,
    usage: Vec<Usage>,
    postgres_cpu: f64,
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
            "duplicates": self.duplicates,
        })
    }

    fn print(&self, label: &str) {
        println!(
            "  {label:<28} {:>8} deliveries in {:>6.2}s = {:>7.0}/s   daemon CPU {:>5.2}s  peak RSS {:>5.1} MiB   PostgreSQL CPU {:>5.2}s ({:.0}% of machine)   duplicates {}",
            self.deliveries,
            self.seconds,
            self.rate(),
            self.cpu(),
            self.peak_rss(),
            self.postgres_cpu,
            self.postgres_share() * 100.0,
            self.duplicates
        );
    }
}

fn round3(value: f64) -> f64 {
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
        let name = format!(
            "webhookd_bench_{}",
            &Uuid::new_v4().simple().to_string()[..12]
        );
        let admin = webhookd::db::connect_single(&self.server_url).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        let url = webhookd::db::url_with_database(&self.server_url, &name);
        let mut client = webhookd::db::connect_single(&url).await?;
        webhookd::db::migrate(&mut client).await?;
        Ok(BenchDb {
            server_url: self.server_url.clone(),
            name,
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
        };
        Ok(webhooks::create(
            &db.client,
            &self.secrets,
            &webhookd::sender::SystemResolver,
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
            db.client
                .execute(
                    "INSERT INTO outbox.events (organization_id, event, data)
                     SELECT $1, 'vote.created',
                            jsonb_build_object('id', 'v' || i, 'post_id', 'p' || i, 'post_title', 'Add dark mode')
                     FROM generate_series($2::bigint, $3::bigint) AS i",
                    &[&org, &(done + 1), &(done + chunk)],
                )
                .await?;
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
        let mut usage = Vec::new();
        for daemon in daemons {
            usage.push(daemon.stop().await);
        }
        let recorded: i64 = db
            .client
            .query_one(
                "SELECT count(*) FROM outbox.deliveries WHERE status = 'delivered'",
                &[],
            )
            .await?
            .get(0);
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
        db.client
            .execute("SELECT outbox.emit($1, 'vote.created', '{\"id\": \"warm-up\", \"post_id\": \"p\"}')", &[&org])
            .await?;
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

impl Bench {
    /// Producer cost (scenario 4): a pgbench-style business transaction at
    /// 8 clients, without and with one `outbox.emit`, NOTIFY off and on. No
    /// daemon runs: this is what producers pay.
    pub async fn producer(&self, sizes: &Sizes) -> BenchResult<serde_json::Value> {
        const CLIENTS: usize = 8;
        let seconds = sizes.producer_seconds;
        println!("producer: business transaction at {CLIENTS} clients, {seconds}s per mode");
        let db = self.fresh_db().await?;
        db.client
            .batch_execute(
                "CREATE TABLE bench_accounts (id int PRIMARY KEY, balance bigint NOT NULL DEFAULT 0);
                 CREATE TABLE bench_tellers (id int PRIMARY KEY, balance bigint NOT NULL DEFAULT 0);
                 CREATE TABLE bench_history (id bigserial PRIMARY KEY, account int, teller int, delta int,
                                             at timestamptz DEFAULT now());
                 INSERT INTO bench_accounts (id) SELECT generate_series(1, 100000);
                 INSERT INTO bench_tellers (id) SELECT generate_series(1, 100);",
            )
            .await?;
        // Not in the batch above: VACUUM cannot run inside its implicit transaction.
        db.client
            .batch_execute("VACUUM ANALYZE bench_accounts, bench_tellers")
            .await?;
        let org = Uuid::new_v4();
        let mut modes = Vec::new();
        for (name, emit, notify) in [
            ("no outbox", false, false),
            ("emit, NOTIFY off", true, false),
            ("emit, NOTIFY on", true, true),
        ] {
            db.client
                .execute(
                    "SELECT setval('outbox.wakeup_notify', $1)",
                    &[&(notify as i64)],
                )
                .await?;
            let deadline = Instant::now() + Duration::from_secs(seconds);
            let mut clients = Vec::new();
            for client_index in 0..CLIENTS {
                let mut client = webhookd::db::connect_single(&db.url).await?;
                clients.push(tokio::spawn(async move {
                    let mut done = 0u64;
                    let mut i = client_index as i32;
                    while Instant::now() < deadline {
                        i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345) & 0x7fff_ffff;
                        let (account, teller) = (i % 100_000 + 1, i % 100 + 1);
                        let Ok(tx) = client.transaction().await else { break };
                        let step = async {
                            tx.execute("UPDATE bench_accounts SET balance = balance + 1 WHERE id = $1", &[&account]).await?;
                            tx.execute("UPDATE bench_tellers SET balance = balance + 1 WHERE id = $1", &[&teller]).await?;
                            tx.execute(
                                "INSERT INTO bench_history (account, teller, delta) VALUES ($1, $2, 1)",
                                &[&account, &teller],
                            )
                            .await?;
                            if emit {
                                let data = json!({"id": format!("v{account}"), "post_id": format!("p{teller}")});
                                tx.execute("SELECT outbox.emit($1, 'vote.created', $2)", &[&org, &data]).await?;
                            }
                            Ok::<_, tokio_postgres::Error>(())
                        };
                        if step.await.is_err() || tx.commit().await.is_err() {
                            break;
                        }
                        done += 1;
                    }
                    done
                }));
            }
            let mut total = 0;
            for client in clients {
                total += client.await?;
            }
            let tps = total as f64 / seconds as f64;
            println!("  {name:<28} {tps:>8.0} TPS");
            modes.push((name, tps));
        }
        db.client
            .execute("SELECT setval('outbox.wakeup_notify', 1)", &[])
            .await?;
        let base = modes[0].1;
        for (name, tps) in &modes[1..] {
            println!(
                "  {name:<28} {:>7.1} % TPS compared with no outbox",
                (tps / base - 1.0) * 100.0
            );
        }
        db.drop_database().await;
        Ok(json!({
            "scenario": "producer",
            "clients": CLIENTS,
            "seconds_per_mode": seconds,
            "tps": {"no_outbox": modes[0].1.round(), "emit_notify_off": modes[1].1.round(), "emit_notify_on": modes[2].1.round()},
            "overhead_percent": {
                "notify_off": round3((1.0 - modes[1].1 / base) * 100.0),
                "notify_on": round3((1.0 - modes[2].1 / base) * 100.0),
            },
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

impl Bench {
    /// 5. Backlog: claim time and delivery rate with a small and a large
    /// number of pending deliveries.
    pub async fn backlog(&self, sizes: &Sizes) -> BenchResult<serde_json::Value> {
        println!(
            "backlog: claim time and the rate of the first {} deliveries, with {} and {} pending",
            sizes.backlog_measured, sizes.backlogs[0], sizes.backlogs[1]
        );
        let mut runs = Vec::new();
        for pending in sizes.backlogs {
            let db = self.fresh_db().await?;
            let org = Uuid::new_v4();
            let webhook = self.webhook(&db, org, "/ok").await?;
            // Straight into the tables: the scenario is about the queue, and
            // fan-out of a million events would dominate the setup.
            db.client
                .batch_execute("ALTER TABLE outbox.events DISABLE TRIGGER events_notify")
                .await?;
            self.fill(&db, org, pending).await?;
            db.client
                .execute(
                    "WITH fanned AS (UPDATE outbox.events SET fanned_out_at = now() RETURNING id, organization_id)
                     INSERT INTO outbox.deliveries (event_id, webhook_id, organization_id)
                     SELECT id, $1, organization_id FROM fanned",
                    &[&webhook],
                )
                .await?;
            db.client
                .batch_execute("ALTER TABLE outbox.events ENABLE TRIGGER events_notify")
                .await?;
            db.client
                .batch_execute("VACUUM ANALYZE outbox.events, outbox.deliveries")
                .await?;
            let claim_ms = claim_time(&db.url).await?;
            let drained = self.drain(&db, 1, sizes.backlog_measured, &[]).await?;
            println!(
                "  {pending:>9} pending: claim {claim_ms:.2} ms (median of 5, EXPLAIN ANALYZE)"
            );
            drained.print(&format!("{pending} pending"));
            runs.push(
                json!({"pending": pending, "claim_ms": round3(claim_ms), "result": drained.json()}),
            );
            db.drop_database().await;
        }
        Ok(json!({"scenario": "backlog", "runs": runs}))
    }

    /// 6. Soak: a steady rate for a long time with a short retention; dead
    /// tuples and table sizes sampled as it goes.
    pub async fn soak(&self, sizes: &Sizes) -> BenchResult<serde_json::Value> {
        let (seconds, rate) = (sizes.soak_seconds, sizes.soak_rate);
        println!("soak: {rate} events/s for {seconds}s, 1 webhook, --retention 1m; table sizes every {}s", seconds / 10);
        let db = self.fresh_db().await?;
        let org = Uuid::new_v4();
        self.webhook(&db, org, "/ok").await?;
        self.sink.tally.reset();
        let daemon = Daemon::spawn(&db.url, &self.key, &["--retention", "1m"])?;
        let producer = webhookd::db::connect_single(&db.url).await?;
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let per_tick = (rate / 10) as i64;
        let mut samples = Vec::new();
        let mut next_sample = Duration::ZERO;
        let mut produced = 0i64;
        while started.elapsed() < Duration::from_secs(seconds) {
            tick.tick().await;
            producer
                .execute(
                    "INSERT INTO outbox.events (organization_id, event, data)
                     SELECT $1, 'vote.created', jsonb_build_object('id', 'v' || i, 'post_id', 'p')
                     FROM generate_series($2::bigint, $3::bigint) AS i",
                    &[&org, &(produced + 1), &(produced + per_tick)],
                )
                .await?;
            produced += per_tick;
            if started.elapsed() >= next_sample {
                let sample = table_sample(&db.client).await?;
                println!(
                    "  t={:>4}s delivered {:>8}  live/dead tuples: deliveries {}/{} events {}/{} attempts {}/{}  total size {:.1} MiB",
                    started.elapsed().as_secs(),
                    self.sink.tally.ok.load(Ordering::Relaxed),
                    sample["deliveries"]["live"], sample["deliveries"]["dead"],
                    sample["events"]["live"], sample["events"]["dead"],
                    sample["delivery_attempts"]["live"], sample["delivery_attempts"]["dead"],
                    sample["total_mib"].as_f64().unwrap_or(0.0)
                );
                samples.push(json!({"t": started.elapsed().as_secs(), "tables": sample}));
                next_sample += Duration::from_secs((seconds / 10).max(1));
            }
        }
        let usage = daemon.stop().await;
        println!(
            "  produced {produced}, delivered {}; daemon CPU {:.1}s, peak RSS {:.1} MiB",
            self.sink.tally.ok.load(Ordering::Relaxed),
            usage.cpu_seconds,
            usage.peak_rss_mib
        );
        db.drop_database().await;
        Ok(json!({
            "scenario": "soak",
            "seconds": seconds,
            "rate": rate,
            "produced": produced,
            "delivered": self.sink.tally.ok.load(Ordering::Relaxed),
            "daemon_cpu_seconds": round3(usage.cpu_seconds),
            "daemon_peak_rss_mib": round3(usage.peak_rss_mib),
            "samples": samples,
        }))
    }
}

/// Median execution time of the daemon's claim statement, planned as the
/// daemon's sessions plan it, in a transaction that is rolled back.
async fn claim_time(url: &str) -> BenchResult<f64> {
    let mut client = webhookd::db::connect_single(url).await?;
    client.batch_execute("SET enable_bitmapscan = off").await?;
    let claim = include_str!("../../../sql/queries/claim.sql");
    let mut times = Vec::new();
    for _ in 0..5 {
        let tx = client.transaction().await?;
        let statement = tx
            .prepare(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {claim}"))
            .await?;
        let lease: i64 = 90_000;
        let (none, free): (Vec<Uuid>, Vec<i32>) = (Vec::new(), Vec::new());
        let row = tx
            .query_one(
                &statement,
                &[
                    &128i64,
                    &256i64,
                    &false,
                    &none,
                    &free,
                    &8i32,
                    &lease,
                    &Uuid::new_v4(),
                ],
            )
            .await?;
        let plan: serde_json::Value = row.get(0);
        times.push(plan[0]["Execution Time"].as_f64().unwrap_or(f64::NAN));
        tx.rollback().await?;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[2])
}

/// Live and dead tuples and total sizes of the queue's tables.
async fn table_sample(client: &tokio_postgres::Client) -> BenchResult<serde_json::Value> {
    let rows = client
        .query(
            "SELECT relname, n_live_tup, n_dead_tup, pg_total_relation_size(relid)::float8 / 1048576 AS mib
             FROM pg_stat_user_tables WHERE schemaname = 'outbox'
               AND relname IN ('events', 'deliveries', 'delivery_attempts')",
            &[],
        )
        .await?;
    let mut sample = serde_json::Map::new();
    let mut total = 0.0;
    for row in rows {
        let mib: f64 = row.get("mib");
        total += mib;
        sample.insert(
            row.get::<_, String>("relname"),
            json!({"live": row.get::<_, i64>("n_live_tup"), "dead": row.get::<_, i64>("n_dead_tup"), "mib": round3(mib)}),
        );
    }
    sample.insert("total_mib".to_string(), json!(round3(total)));
    Ok(serde_json::Value::Object(sample))
}
