//! Scenarios about PostgreSQL itself: what producers pay, how the claim
//! behaves with a large backlog, and whether the tables stay bounded.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;

use super::{round3, Bench, BenchResult, Sizes};
use crate::process::Daemon;

impl Bench {
    /// Producer cost (scenario 4): a pgbench-style business transaction at
    /// 8 clients, without and with one `outbox.emit`, NOTIFY off and on, and
    /// for reference with the same row inserted into a plain table. No
    /// daemon runs: this is what producers pay. The modes take turns, each
    /// after a VACUUM, and each mode's median round counts: the tables grow
    /// during a run, which would otherwise favour whichever mode ran first.
    pub async fn producer(&self, sizes: &Sizes) -> BenchResult<serde_json::Value> {
        let seconds = sizes.producer_seconds;
        let rounds = sizes.producer_rounds;
        println!(
            "producer: business transaction at {PRODUCER_CLIENTS} clients, {rounds} rounds of {seconds}s per mode"
        );
        let db = self.fresh_db().await?;
        db.client
            .batch_execute(
                "CREATE TABLE bench_accounts (id int PRIMARY KEY, balance bigint NOT NULL DEFAULT 0);
                 CREATE TABLE bench_tellers (id int PRIMARY KEY, balance bigint NOT NULL DEFAULT 0);
                 CREATE TABLE bench_history (id bigserial PRIMARY KEY, account int, teller int, delta int,
                                             at timestamptz DEFAULT now());
                 CREATE TABLE bench_plain_events (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                                                  organization_id uuid NOT NULL, event text NOT NULL,
                                                  data jsonb NOT NULL,
                                                  occurred_at timestamptz NOT NULL DEFAULT clock_timestamp());
                 INSERT INTO bench_accounts (id) SELECT generate_series(1, 100000);
                 INSERT INTO bench_tellers (id) SELECT generate_series(1, 100);",
            )
            .await?;
        let modes = [
            ProducerMode::NoOutbox,
            ProducerMode::PlainInsert,
            ProducerMode::Emit { notify: false },
            ProducerMode::Emit { notify: true },
        ];
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        for round in 1..=rounds {
            for (index, mode) in modes.iter().enumerate() {
                // Not in one batch: VACUUM cannot run inside a transaction.
                for table in [
                    "bench_accounts",
                    "bench_tellers",
                    "bench_history",
                    "bench_plain_events",
                    "outbox.events",
                ] {
                    db.client
                        .batch_execute(&format!("VACUUM ANALYZE {table}"))
                        .await?;
                }
                let tps = business_transactions(&db.url, *mode, seconds).await?;
                println!("  round {round}: {:<34} {tps:>8.0} TPS", mode.name());
                samples[index].push(tps);
            }
        }
        db.client
            .execute("SELECT setval('outbox.wakeup_notify', 1)", &[])
            .await?;
        let medians: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
        let base = medians[0];
        let overhead = |tps: f64| round3((1.0 - tps / base) * 100.0);
        for (mode, tps) in modes.iter().zip(&medians) {
            println!(
                "  {:<34} {tps:>8.0} TPS (median), {:>6.1} % fewer than without the outbox",
                mode.name(),
                overhead(*tps)
            );
        }
        db.drop_database().await;
        Ok(json!({
            "scenario": "producer",
            "clients": PRODUCER_CLIENTS,
            "seconds_per_mode": seconds,
            "rounds": rounds,
            "tps": {
                "no_outbox": medians[0].round(),
                "plain_insert": medians[1].round(),
                "emit_notify_off": medians[2].round(),
                "emit_notify_on": medians[3].round(),
            },
            "overhead_percent": {
                "plain_insert": overhead(medians[1]),
                "notify_off": overhead(medians[2]),
                "notify_on": overhead(medians[3]),
            },
        }))
    }
}

const PRODUCER_CLIENTS: usize = 8;

/// What a business transaction adds to its three statements.
#[derive(Debug, Clone, Copy)]
enum ProducerMode {
    /// Nothing.
    NoOutbox,
    /// The same row into a table without triggers or extra indexes: the
    /// floor any outbox insert pays.
    PlainInsert,
    /// `outbox.emit`, with the wake-up switch off or on.
    Emit { notify: bool },
}

impl ProducerMode {
    fn name(self) -> &'static str {
        match self {
            ProducerMode::NoOutbox => "no outbox",
            ProducerMode::PlainInsert => "same row into a plain table",
            ProducerMode::Emit { notify: false } => "emit, NOTIFY off",
            ProducerMode::Emit { notify: true } => "emit, NOTIFY on",
        }
    }
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the business transaction on [`PRODUCER_CLIENTS`] connections for
/// `seconds`; returns transactions per second.
async fn business_transactions(url: &str, mode: ProducerMode, seconds: u64) -> BenchResult<f64> {
    let admin = webhookd::db::connect_single(url).await?;
    let notify = matches!(mode, ProducerMode::Emit { notify: true });
    admin
        .execute(
            "SELECT setval('outbox.wakeup_notify', $1)",
            &[&(notify as i64)],
        )
        .await?;
    let org = Uuid::new_v4();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut clients = Vec::new();
    for client_index in 0..PRODUCER_CLIENTS {
        let mut client = webhookd::db::connect_single(url).await?;
        // Prepared once per connection, as an application's driver or
        // pgbench's `-M prepared` would.
        let extra = match mode {
            ProducerMode::NoOutbox => None,
            ProducerMode::PlainInsert => Some(
                "INSERT INTO bench_plain_events (organization_id, event, data) VALUES ($1, 'vote.created', $2)",
            ),
            ProducerMode::Emit { .. } => Some("SELECT outbox.emit($1, 'vote.created', $2)"),
        };
        let accounts = client
            .prepare("UPDATE bench_accounts SET balance = balance + 1 WHERE id = $1")
            .await?;
        let tellers = client
            .prepare("UPDATE bench_tellers SET balance = balance + 1 WHERE id = $1")
            .await?;
        let history = client
            .prepare("INSERT INTO bench_history (account, teller, delta) VALUES ($1, $2, 1)")
            .await?;
        let extra = match extra {
            Some(sql) => Some(client.prepare(sql).await?),
            None => None,
        };
        clients.push(tokio::spawn(async move {
            let mut done = 0u64;
            let mut i = client_index as i32;
            while Instant::now() < deadline {
                i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345) & 0x7fff_ffff;
                let (account, teller) = (i % 100_000 + 1, i % 100 + 1);
                let Ok(tx) = client.transaction().await else {
                    break;
                };
                let step = async {
                    tx.execute(&accounts, &[&account]).await?;
                    tx.execute(&tellers, &[&teller]).await?;
                    tx.execute(&history, &[&account, &teller]).await?;
                    if let Some(extra) = &extra {
                        let data =
                            json!({"id": format!("v{account}"), "post_id": format!("p{teller}")});
                        tx.execute(extra, &[&org, &data]).await?;
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
    Ok(total as f64 / seconds as f64)
}

impl Bench {
    /// Backlog (scenario 5): claim time and delivery rate with a small and a
    /// large number of pending deliveries.
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
                .batch_execute("SELECT setval('outbox.wakeup_notify', 0)")
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
                .batch_execute("SELECT setval('outbox.wakeup_notify', 1)")
                .await?;
            db.client
                .batch_execute("VACUUM ANALYZE outbox.events, outbox.deliveries")
                .await?;
            let claim_ms = claim_time(&db.url).await?;
            // Never wait for more deliveries than the backlog holds.
            let measured = sizes.backlog_measured.min(pending as u64);
            let drained = self.drain(&db, 1, measured, &[]).await?;
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

    /// Soak (scenario 6): a steady rate for a long time with a short
    /// retention; dead tuples and table sizes sampled as it goes.
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

/// Median execution time of the daemon's claim statement (the call of its
/// PL/pgSQL function, whose settings it carries), in a transaction that is
/// rolled back; the median leaves out the first call's planning.
async fn claim_time(url: &str) -> BenchResult<f64> {
    let mut client = webhookd::db::connect_single(url).await?;
    client.batch_execute("SET enable_bitmapscan = off").await?;
    let claim = include_str!("../../../../sql/queries/claim.sql");
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
                    &128i32,
                    &256i32,
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
