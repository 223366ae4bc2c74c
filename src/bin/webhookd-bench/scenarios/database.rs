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

/// Median execution time of the daemon's claim statement, planned as the
/// daemon's sessions plan it, in a transaction that is rolled back.
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
