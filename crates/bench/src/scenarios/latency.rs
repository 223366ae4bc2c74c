//! The latency scenario: a steady rate from 4 producer connections, each
//! event in its own transaction; commit-to-arrival latency, how long the
//! producers' COMMITs took, and what the daemon made the database do per
//! event meanwhile (statements and their server time from
//! `pg_stat_statements` where it is loaded, else transactions from
//! `pg_stat_database`) and its own CPU per event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use super::{round3, wait_for_ok, warm_up, Bench, BenchResult, Sizes};
use crate::process::{self, Daemon};
use crate::{pgstats, sql};

const PRODUCERS: u64 = 4;

/// Away: events sent one by one before the retries pile up, enough for
/// each of the daemon's connections to settle into its plans.
const AWAY_WARM_UP_EVENTS: usize = 40;

/// What the producers saw: when each event's COMMIT returned, by its
/// `data.id`, and how long each COMMIT took in ms.
#[derive(Default)]
struct Produced {
    commits: HashMap<String, Instant>,
    commit_ms: Vec<f64>,
}

impl Bench {
    /// 3. Latency: a steady rate from 4 producer connections; commit-to-arrival.
    pub async fn latency(&self, sizes: &Sizes) -> BenchResult<Value> {
        println!(
            "latency: {} events/s for {}s from {PRODUCERS} producer connections, 1 webhook, 1 replica",
            sizes.latency_rate, sizes.latency_seconds
        );
        self.steady_rate(sizes, 0).await
    }

    /// Away: the latency scenario while another organization's receiver is
    /// away, `away_pending` of its deliveries waiting for their retry. They
    /// pile up after the daemon has run for a while on a small queue, and the
    /// deliveries' statistics are from before (autovacuum off, or not yet
    /// round). What a healthy webhook's latency and cost become beside a
    /// large backlog.
    pub async fn away(&self, sizes: &Sizes) -> BenchResult<Value> {
        println!(
            "away: as latency, while {} retries of another organization's webhook wait (piled up after the daemon started; statistics from before)",
            sizes.away_pending
        );
        self.steady_rate(sizes, sizes.away_pending).await
    }

    /// The latency scenario, with `away_pending` retries of another
    /// organization's webhook waiting beside it.
    async fn steady_rate(&self, sizes: &Sizes, away_pending: i64) -> BenchResult<Value> {
        let db = self.fresh_db().await?;
        let org = Uuid::new_v4();
        self.webhook(&db, org, "/ok").await?;
        let away = if away_pending > 0 {
            let away = Uuid::new_v4();
            let webhook = self.webhook(&db, away, "/away").await?;
            self.fill(&db, away, away_pending).await?;
            sql::away_events(&db.client, away).await?;
            Some((away, webhook))
        } else {
            None
        };
        let mut counter = DaemonCounter::start(&self.server_url, &db).await?;
        let tally = &self.sink.tally;
        tally.reset();
        let postgres_before = process::postgres_cpu_seconds();
        let mut daemon = Daemon::spawn(&db.url, &self.key, &[])?;
        warm_up(tally, &db.client, org, &mut daemon).await?;
        if let Some((away, webhook)) = away {
            // The daemon settles into its plans while the queue is small,
            // then the away receiver's retries pile up.
            for _ in 1..AWAY_WARM_UP_EVENTS {
                warm_up(tally, &db.client, org, &mut daemon).await?;
            }
            let made = sql::away_retries(&db.client, away, webhook).await?;
            println!("  {made} retries now wait for the away receiver");
            // The extra warm-up events and the retries' statement.
            counter
                .writes_from_here(&db, AWAY_WARM_UP_EVENTS as i64)
                .await?;
        }
        counter
            .window_starts(&db, daemon.usage().cpu_seconds)
            .await?;

        let started = Instant::now();
        let produced = produce(&db.url, org, sizes).await?;
        let total = produced.commits.len() as u64;
        wait_for_ok(
            tally,
            total,
            Duration::from_secs(60),
            std::slice::from_mut(&mut daemon),
        )
        .await?;
        counter.window_ends(&db).await?;
        let seconds = started.elapsed().as_secs_f64();
        let postgres_cpu = process::postgres_cpu_seconds() - postgres_before;
        let usage = daemon.stop().await;
        let cost = counter.finish(&db, total, usage.cpu_seconds).await?;
        let mut latencies = commit_to_arrival(&produced.commits, tally.take_arrivals());
        let [p50, p95, p99, max] = quantiles(&mut latencies);
        println!(
            "  {} events: commit-to-arrival p50 {p50:.2} ms  p95 {p95:.2} ms  p99 {p99:.2} ms  max {max:.2} ms   daemon CPU {:.2}s  peak RSS {:.1} MiB   PostgreSQL CPU {:.2}s ({:.0}% of machine)",
            latencies.len(),
            usage.cpu_seconds,
            usage.peak_rss_mib,
            postgres_cpu,
            postgres_cpu / (seconds * process::cores() as f64) * 100.0
        );
        let mut commit_ms = produced.commit_ms;
        let [c50, c95, c99, cmax] = quantiles(&mut commit_ms);
        println!("  producers' COMMIT: p50 {c50:.2} ms  p95 {c95:.2} ms  p99 {c99:.2} ms  max {cmax:.2} ms");
        print_cost(&cost);
        db.drop_database().await;
        Ok(json!({
            "scenario": if away_pending > 0 { "away" } else { "latency" },
            "away_pending": away_pending,
            "rate_per_second": sizes.latency_rate,
            "seconds": sizes.latency_seconds,
            "producers": PRODUCERS,
            "events": latencies.len(),
            "latency_ms": {"p50": round3(p50), "p95": round3(p95), "p99": round3(p99), "max": round3(max)},
            "daemon_cpu_seconds": round3(usage.cpu_seconds),
            "daemon_peak_rss_mib": round3(usage.peak_rss_mib),
            "postgres_cpu_seconds": round3(postgres_cpu),
            "producer_commit_ms": {"p50": round3(c50), "p95": round3(c95), "p99": round3(c99), "max": round3(cmax)},
            "daemon_cost_per_event": cost,
        }))
    }
}

/// Commit-to-arrival in ms of each event that arrived.
fn commit_to_arrival(
    commits: &HashMap<String, Instant>,
    arrivals: Vec<(String, Instant)>,
) -> Vec<f64> {
    arrivals
        .into_iter()
        .filter_map(|(id, arrived)| {
            let committed = commits.get(&id)?;
            // The receiver can see a delivery before the producer's COMMIT
            // acknowledgement reaches it; that counts as zero.
            Some(arrived.saturating_duration_since(*committed).as_secs_f64() * 1000.0)
        })
        .collect()
}

/// p50, p95, p99 and max of `values` (sorted in place); NaN when empty.
fn quantiles(values: &mut [f64]) -> [f64; 4] {
    values.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| {
        values
            .get(((values.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    [at(0.50), at(0.95), at(0.99), at(1.0)]
}

/// Runs the producers: `latency_rate` events a second for `latency_seconds`
/// over [`PRODUCERS`] connections, each event `outbox.emit` in a transaction
/// of its own, its COMMIT timed.
async fn produce(url: &str, org: Uuid, sizes: &Sizes) -> BenchResult<Produced> {
    let produced: Arc<Mutex<Produced>> = Arc::default();
    let per_producer = sizes.latency_rate / PRODUCERS;
    let mut producers = Vec::new();
    for producer in 0..PRODUCERS {
        let mut client = webhookd::db::connect_single(url).await?;
        let produced = produced.clone();
        let count = per_producer * sizes.latency_seconds;
        producers.push(tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_secs_f64(1.0 / per_producer as f64));
            for i in 0..count {
                tick.tick().await;
                let id = format!("L{producer}-{i}");
                let data = json!({"id": id, "post_id": "p1"});
                let Ok(tx) = client.transaction().await else {
                    continue;
                };
                if webhookd::db::webhooks::emit(&tx, org, "vote.created", &data)
                    .await
                    .is_err()
                {
                    continue;
                }
                let committing = Instant::now();
                if tx.commit().await.is_ok() {
                    let mut produced = produced.lock().unwrap();
                    produced.commits.insert(id, Instant::now());
                    produced
                        .commit_ms
                        .push(committing.elapsed().as_secs_f64() * 1000.0);
                }
            }
            // The connection closes here, which publishes its statistics.
        }));
    }
    for producer in producers {
        producer.await?;
    }
    let produced = std::mem::take(&mut *produced.lock().unwrap());
    Ok(produced)
}

/// Counts what the daemon makes the database do. Transactions come from
/// `pg_stat_database` over the daemon's whole run (its counters are
/// published late, so only a reading before it starts and after it exited is
/// exact): start-up, the warm-up event, the window and shutdown. Statements
/// come from `pg_stat_statements`, which counts at once, over the window
/// and shutdown only.
struct DaemonCounter {
    /// A session in the server's own database: its readings are no
    /// transactions of the scenario's database.
    server: tokio_postgres::Client,
    bench_pid: i32,
    /// Why `pg_stat_statements` cannot be used, if it cannot.
    statements: Result<HashMap<String, (i64, f64)>, String>,
    transactions: (i64, i64),
    /// Row and WAL counters before the daemon starts.
    writes: pgstats::Writes,
    daemon_cpu: f64,
    /// CPU seconds of the daemon's server processes (its pool's and its
    /// LISTEN connection's) at the window's start, by process id.
    backends: HashMap<i32, f64>,
    /// What they used over the window.
    backends_cpu: f64,
    /// The bench's own transactions beyond [`OWN_TRANSACTIONS`].
    own_extra: i64,
}

/// Transactions the bench's own session runs in the scenario's database
/// between the readings: the warm-up event and the final flush (two
/// statements), plus two readings of `pg_stat_statements` when used.
const OWN_TRANSACTIONS: i64 = 3;

impl DaemonCounter {
    /// Before the daemon starts: enables `pg_stat_statements` if it can and
    /// reads the transactions so far.
    async fn start(server_url: &str, db: &super::BenchDb) -> BenchResult<DaemonCounter> {
        let server = webhookd::db::connect_single(server_url).await?;
        let statements = pgstats::enable_statements(&db.client)
            .await?
            .map(|()| HashMap::new());
        let bench_pid = pgstats::backend_pid(&db.client).await?;
        pgstats::flush(&db.client).await?;
        pgstats::settle(&server, db.scratch.name(), bench_pid).await?;
        let transactions = pgstats::transactions(&server, db.scratch.name()).await?;
        let writes = pgstats::writes(&db.client).await?;
        Ok(DaemonCounter {
            server,
            bench_pid,
            statements,
            transactions,
            writes,
            daemon_cpu: 0.0,
            backends: HashMap::new(),
            backends_cpu: 0.0,
            own_extra: 0,
        })
    }

    /// Counts writes from here on, leaving out the bench's own before (the
    /// away scenario's retries), and `own` more transactions of the bench's
    /// own (its extra warm-up events and the retries) besides this reading's
    /// own five (a flush of two statements, then three). The daemon's writes
    /// for the warm-up events may be published later and so still count
    /// (its counters are published up to a second late while busy): at most
    /// their 39 deliveries' worth, under 1 % of the window's.
    async fn writes_from_here(&mut self, db: &super::BenchDb, own: i64) -> BenchResult<()> {
        const READING: i64 = 5;
        self.own_extra += own + READING;
        pgstats::flush(&db.client).await?;
        self.writes = pgstats::writes(&db.client).await?;
        Ok(())
    }

    /// When the measured window starts: the statements so far, and the
    /// daemon's CPU seconds.
    async fn window_starts(&mut self, db: &super::BenchDb, daemon_cpu: f64) -> BenchResult<()> {
        if self.statements.is_ok() {
            self.statements = Ok(pgstats::statements(&db.client).await?);
        }
        self.daemon_cpu = daemon_cpu;
        self.backends = self.backends_cpu(db).await?;
        Ok(())
    }

    /// When the last event has arrived, before the daemon stops: what its
    /// server processes used since the window started.
    async fn window_ends(&mut self, db: &super::BenchDb) -> BenchResult<()> {
        let now = self.backends_cpu(db).await?;
        self.backends_cpu = now
            .iter()
            .map(|(pid, cpu)| cpu - self.backends.get(pid).copied().unwrap_or(0.0))
            .sum();
        Ok(())
    }

    /// CPU seconds so far of each server process serving the daemon, read
    /// from /proc (the server runs on this machine). Unlike
    /// `pg_stat_statements`, this counts all of the daemon's server work:
    /// parsing, planning, commits and the protocol too.
    async fn backends_cpu(&self, db: &super::BenchDb) -> BenchResult<HashMap<i32, f64>> {
        let pids = pgstats::daemon_backends(&self.server, db.scratch.name()).await?;
        Ok(pids
            .into_iter()
            .filter_map(|pid| Some((pid, process::cpu_seconds(u32::try_from(pid).ok()?)?)))
            .collect())
    }

    /// After the daemon stopped and the producers disconnected: the cost
    /// per event of the `events` produced in the window, as JSON.
    async fn finish(
        &self,
        db: &super::BenchDb,
        events: u64,
        daemon_cpu: f64,
    ) -> BenchResult<Value> {
        let per = |value: f64| round3(value / events.max(1) as f64);
        let statements = match &self.statements {
            Ok(before) => {
                let after = pgstats::statements(&db.client).await?;
                statement_cost(before, &after, events)
            }
            Err(reason) => json!({"available": false, "reason": reason}),
        };
        let name = db.scratch.name();
        pgstats::settle(&self.server, name, self.bench_pid).await?;
        pgstats::flush(&db.client).await?;
        let (commits, rollbacks) = pgstats::transactions(&self.server, name).await?;
        let own = OWN_TRANSACTIONS + self.own_extra + if self.statements.is_ok() { 2 } else { 0 };
        let daemon_commits = commits - self.transactions.0 - events as i64 - own;
        // Over the daemon's whole run, so the warm-up event's delivery counts.
        let writes = pgstats::per_delivery(
            &self.writes,
            &pgstats::writes(&db.client).await?,
            events + 1,
        );
        Ok(json!({
            "writes": writes,
            "daemon_cpu_ms": per((daemon_cpu - self.daemon_cpu) * 1000.0),
            "daemon_backends_cpu_ms": per(self.backends_cpu * 1000.0),
            "statements": statements,
            "transactions": {
                "span": "the daemon's whole run: start-up, warm-up event, window, shutdown",
                "daemon_commits": per(daemon_commits as f64),
                "rollbacks": per((rollbacks - self.transactions.1) as f64),
            },
        }))
    }
}

/// The daemon's statements between two `pg_stat_statements` readings, per
/// event: everything but the producers' (`outbox.emit` and one BEGIN and
/// COMMIT per event), with the most called listed.
fn statement_cost(
    before: &HashMap<String, (i64, f64)>,
    after: &HashMap<String, (i64, f64)>,
    events: u64,
) -> Value {
    let per = |value: f64| round3(value / events.max(1) as f64);
    let mut daemon: Vec<(String, i64, f64)> = Vec::new();
    for (query, (calls, ms)) in after {
        let (calls_before, ms_before) = before.get(query).copied().unwrap_or_default();
        let (mut calls, mut ms) = (calls - calls_before, ms - ms_before);
        let text = query.trim().to_ascii_uppercase();
        let producers = if query.contains("outbox.emit(") {
            calls
        } else if ["BEGIN", "START TRANSACTION", "COMMIT"].contains(&text.as_str()) {
            (events as i64).min(calls)
        } else {
            0
        };
        if calls > 0 {
            ms -= ms * producers as f64 / calls as f64;
        }
        calls -= producers;
        if calls > 0 {
            daemon.push((query.clone(), calls, ms));
        }
    }
    daemon.sort_by_key(|d| std::cmp::Reverse(d.1));
    let top: Vec<Value> = daemon
        .iter()
        .take(10)
        .map(|(query, calls, ms)| {
            json!({"query": statement_text(query),
                   "calls": per(*calls as f64), "server_ms": per(*ms)})
        })
        .collect();
    json!({
        "available": true,
        "span": "the window and the daemon's shutdown",
        "daemon_statements": per(daemon.iter().map(|d| d.1 as f64).sum()),
        "daemon_server_ms": per(daemon.iter().map(|d| d.2).sum()),
        "top": top,
    })
}

/// A statement's text without its comment lines, on one line, shortened.
fn statement_text(query: &str) -> String {
    let text = query
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .flat_map(str::split_whitespace)
        .collect::<Vec<_>>()
        .join(" ");
    text.chars().take(90).collect()
}

fn print_cost(cost: &Value) {
    let statements = &cost["statements"];
    println!(
        "  daemon per event: CPU {:.3} ms; {:.3} transactions ({})",
        cost["daemon_cpu_ms"].as_f64().unwrap_or(f64::NAN),
        cost["transactions"]["daemon_commits"]
            .as_f64()
            .unwrap_or(f64::NAN),
        cost["transactions"]["span"].as_str().unwrap_or_default()
    );
    println!(
        "  server processes serving the daemon: CPU {:.3} ms per event (/proc, the window)",
        cost["daemon_backends_cpu_ms"].as_f64().unwrap_or(f64::NAN)
    );
    // WAL is cluster-wide here: it includes the producers' events.
    pgstats::print_per_delivery(&cost["writes"]);
    if statements["available"] != json!(true) {
        println!(
            "  daemon statements per event: not counted ({}); transactions from pg_stat_database instead",
            statements["reason"].as_str().unwrap_or_default()
        );
        return;
    }
    println!(
        "  daemon statements per event: {:.3}, server time {:.3} ms (pg_stat_statements, top level)",
        statements["daemon_statements"].as_f64().unwrap_or(f64::NAN),
        statements["daemon_server_ms"].as_f64().unwrap_or(f64::NAN)
    );
    for top in statements["top"].as_array().into_iter().flatten() {
        println!(
            "    {:>8.3} calls {:>8.4} ms  {}",
            top["calls"].as_f64().unwrap_or(f64::NAN),
            top["server_ms"].as_f64().unwrap_or(f64::NAN),
            top["query"].as_str().unwrap_or_default()
        );
    }
}
