//! The xmin scenario: a steady rate while a transaction elsewhere in the
//! database stays open for the whole run, so that no dead row can be
//! removed. Commit-to-arrival latency window by window; the queue tables'
//! and indexes' sizes and dead tuples as it goes, before and after; and
//! what the daemon's `/metrics` says about the horizon at the end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use super::{http_get, round3, wait_for_ok, warm_up, Bench, BenchDb, BenchResult, Sizes};
use crate::process::Daemon;
use crate::sql;

/// The queue's tables whose sizes are reported.
const TABLES: [&str; 4] = ["webhooks", "events", "deliveries", "delivery_attempts"];

/// When each event committed, by its `data.id`.
type Commits = Arc<Mutex<HashMap<String, Instant>>>;

/// What happened while the transaction was held.
struct HeldRun {
    /// When it began.
    started: Instant,
    commits: HashMap<String, Instant>,
    /// Sizes at the end of each window.
    samples: Vec<Value>,
    /// Sizes at the end, still held.
    after: Value,
    /// The daemon's horizon metrics at the end, still held.
    metrics: Value,
    held_seconds: f64,
}

impl Bench {
    /// xmin (issue: a transaction held open elsewhere): `--xmin-rate`
    /// events/s for `--xmin-seconds` while one session holds a REPEATABLE
    /// READ transaction with an xid open from start to end.
    pub async fn xmin(&self, sizes: &Sizes) -> BenchResult<Value> {
        let (seconds, rate) = (sizes.xmin_seconds, sizes.xmin_rate.max(1));
        let window = (seconds / 10).clamp(5, 60);
        println!(
            "xmin: {rate} events/s for {seconds}s, 1 webhook, 1 replica, a transaction held open \
             all along; latency by commit time in {window}s windows"
        );
        let db = self.fresh_db().await?;
        let org = Uuid::new_v4();
        self.webhook(&db, org, "/ok").await?;
        let autovacuum = sql::autovacuum(&db.client).await?;
        let tally = &self.sink.tally;
        tally.reset();
        let mut daemon = Daemon::spawn(&db.url, &self.key, &[])?;
        let admin = daemon.admin_address().await?;
        warm_up(tally, &db.client, org, &mut daemon).await?;
        let before = sql::relation_sizes(&db.client, &TABLES).await?;
        let run = self
            .held_run(&db, org, (rate, seconds, window), admin)
            .await?;
        let usage = daemon.stop().await;

        let arrivals = tally.take_arrivals();
        let windows = latency_windows(&run.commits, &arrivals, run.started, window, &run.samples);
        let overall = percentiles(&mut latencies(&run.commits, &arrivals, run.started, None));
        print_windows(&windows);
        print_sizes(&before, &run.after);
        println!(
            "  {} events: commit-to-arrival overall p50 {} ms  p95 {} ms  p99 {} ms  max {} ms   \
             daemon CPU {:.2}s  peak RSS {:.1} MiB   autovacuum {autovacuum}",
            cell(&overall["events"]),
            cell(&overall["p50"]),
            cell(&overall["p95"]),
            cell(&overall["p99"]),
            cell(&overall["max"]),
            usage.cpu_seconds,
            usage.peak_rss_mib
        );
        println!(
            "  daemon /metrics after {:.0}s held: webhookd_xmin_horizon_age_seconds {} \
             (checked every 30s), webhookd_xmin_horizon_age_transactions {}",
            run.held_seconds,
            cell(&run.metrics["xmin_horizon_age_seconds"]),
            cell(&run.metrics["xmin_horizon_age_transactions"])
        );
        db.drop_database().await;
        Ok(json!({
            "scenario": "xmin",
            "rate_per_second": rate,
            "seconds": seconds,
            "window_seconds": window,
            "autovacuum": autovacuum,
            "latency_ms": overall,
            "windows": windows,
            "relations_before": before,
            "relations_after": run.after,
            "held_seconds_when_metrics_read": round3(run.held_seconds),
            "daemon_metrics": run.metrics,
            "daemon_cpu_seconds": round3(usage.cpu_seconds),
            "daemon_peak_rss_mib": round3(usage.peak_rss_mib),
        }))
    }

    /// Holds a transaction open, produces `rate` events/s for `seconds`
    /// sampling sizes every `window` seconds, waits for every delivery,
    /// reads sizes and the daemon's metrics, and only then commits.
    async fn held_run(
        &self,
        db: &BenchDb,
        org: Uuid,
        (rate, seconds, window): (u64, u64, u64),
        admin: SocketAddr,
    ) -> BenchResult<HeldRun> {
        let holder = hold_transaction(&db.url).await?;
        let started = Instant::now();
        let commits: Commits = Arc::default();
        let producer = tokio::spawn(produce(db.url.clone(), org, rate, seconds, commits.clone()));
        let mut samples = Vec::new();
        for boundary in (window..=seconds).step_by(window as usize) {
            tokio::time::sleep_until((started + Duration::from_secs(boundary)).into()).await;
            samples.push(sql::relation_sizes(&db.client, &TABLES).await?);
        }
        producer.await??;
        let commits = commits.lock().unwrap().clone();
        wait_for_ok(
            &self.sink.tally,
            commits.len() as u64,
            Duration::from_secs(120),
            // The daemon is the caller's; the deadline bounds this wait.
            &mut [],
        )
        .await?;
        let metrics = horizon_metrics(admin, Duration::from_secs(35)).await;
        let held_seconds = started.elapsed().as_secs_f64();
        let after = sql::relation_sizes(&db.client, &TABLES).await?;
        holder.batch_execute("COMMIT").await?;
        Ok(HeldRun {
            started,
            commits,
            samples,
            after,
            metrics,
            held_seconds,
        })
    }
}

/// A session that holds the xmin horizon: a REPEATABLE READ snapshot and an
/// xid, as a long report or `pg_dump` would, left open until COMMIT.
async fn hold_transaction(url: &str) -> BenchResult<tokio_postgres::Client> {
    let separator = if url.contains('?') { '&' } else { '?' };
    let client =
        webhookd::db::connect_single(&format!("{url}{separator}application_name=stuck-report"))
            .await?;
    sql::hold_horizon(&client).await?;
    Ok(client)
}

/// Emits `rate` events a second for `seconds` from one connection, each in
/// its own transaction, recording when each commit returned.
async fn produce(
    url: String,
    org: Uuid,
    rate: u64,
    seconds: u64,
    commits: Commits,
) -> Result<(), String> {
    let client = webhookd::db::connect_single(&url)
        .await
        .map_err(|err| err.to_string())?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    for i in 0..rate * seconds {
        tick.tick().await;
        let id = format!("X{i}");
        let data = json!({"id": id, "post_id": "p1"});
        webhookd::db::webhooks::emit(&client, org, "vote.created", &data)
            .await
            .map_err(|err| format!("producer: {}", err.one_line()))?;
        commits.lock().unwrap().insert(id, Instant::now());
    }
    Ok(())
}

/// Commit-to-arrival in ms of the events committed in `window` (seconds
/// since `started`: [from, to)), or of all.
fn latencies(
    commits: &HashMap<String, Instant>,
    arrivals: &[(String, Instant)],
    started: Instant,
    window: Option<(u64, u64)>,
) -> Vec<f64> {
    arrivals
        .iter()
        .filter_map(|(id, arrived)| {
            let committed = commits.get(id)?;
            let at = committed.saturating_duration_since(started).as_secs_f64();
            if let Some((from, to)) = window {
                if at < from as f64 || at >= to as f64 {
                    return None;
                }
            }
            // The receiver can see a delivery before the producer's COMMIT
            // acknowledgement reaches it; that counts as zero.
            Some(arrived.saturating_duration_since(*committed).as_secs_f64() * 1000.0)
        })
        .collect()
}

/// Count, p50, p95, p99 and max of `values` (sorted in place).
fn percentiles(values: &mut [f64]) -> Value {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        values
            .get(((values.len() as f64 - 1.0) * q).round() as usize)
            .map(|v| round3(*v))
    };
    json!({"events": values.len(), "p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": at(1.0)})
}

/// Latency by commit window, each with the sizes sampled at its end.
fn latency_windows(
    commits: &HashMap<String, Instant>,
    arrivals: &[(String, Instant)],
    started: Instant,
    window: u64,
    samples: &[Value],
) -> Vec<Value> {
    samples
        .iter()
        .enumerate()
        .map(|(index, sample)| {
            let from = index as u64 * window;
            let mut values = latencies(commits, arrivals, started, Some((from, from + window)));
            json!({
                "from_s": from,
                "to_s": from + window,
                "latency_ms": percentiles(&mut values),
                "relations_at_end": sample,
            })
        })
        .collect()
}

/// A JSON number or string as a table cell (`Value`'s Display ignores widths).
fn cell(value: &Value) -> String {
    match value {
        Value::Number(n) if n.is_f64() => format!("{:.2}", n.as_f64().unwrap_or(f64::NAN)),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Null => "—".to_string(),
        other => other.to_string(),
    }
}

fn print_windows(windows: &[Value]) {
    println!(
        "  {:>9} {:>7} {:>8} {:>8} {:>8} {:>8}   {:>11} {:>13} {:>17} {:>15}",
        "window s",
        "events",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "webhooks kB",
        "dead webhooks",
        "deliveries_due kB",
        "dead deliveries"
    );
    for window in windows {
        let latency = &window["latency_ms"];
        let relations = &window["relations_at_end"];
        println!(
            "  {:>9} {:>7} {:>8} {:>8} {:>8} {:>8}   {:>11} {:>13} {:>17} {:>15}",
            format!("{}-{}", cell(&window["from_s"]), cell(&window["to_s"])),
            cell(&latency["events"]),
            cell(&latency["p50"]),
            cell(&latency["p95"]),
            cell(&latency["p99"]),
            cell(&latency["max"]),
            cell(&relations["webhooks"]["total_kib"]),
            cell(&relations["webhooks"]["dead_tuples"]),
            cell(&relations["deliveries"]["indexes_kib"]["deliveries_due"]),
            cell(&relations["deliveries"]["dead_tuples"]),
        );
    }
}

fn print_sizes(before: &Value, after: &Value) {
    println!(
        "  {:<40} {:>12} {:>12} {:>14}",
        "relation (kB: heap; total)", "before", "after", "dead tuples"
    );
    for table in TABLES {
        let (b, a) = (&before[table], &after[table]);
        println!(
            "  {:<40} {:>12} {:>12} {:>14}",
            format!("outbox.{table}"),
            format!("{}; {}", cell(&b["heap_kib"]), cell(&b["total_kib"])),
            format!("{}; {}", cell(&a["heap_kib"]), cell(&a["total_kib"])),
            format!("{} → {}", cell(&b["dead_tuples"]), cell(&a["dead_tuples"]))
        );
        if let Some(indexes) = a["indexes_kib"].as_object() {
            for (index, kib) in indexes {
                println!(
                    "  {:<40} {:>12} {:>12}",
                    format!("  {index}"),
                    cell(&b["indexes_kib"][index]),
                    cell(kib)
                );
            }
        }
    }
}

/// The daemon's horizon metrics, once its check has seen the held
/// transaction (it looks every 30 s) or after `limit`.
async fn horizon_metrics(admin: SocketAddr, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let text = http_get(admin, "/metrics").await.unwrap_or_default();
        let value = |name: &str| super::metric_value(&text, name);
        let seconds = value("webhookd_xmin_horizon_age_seconds");
        if seconds.unwrap_or(0.0) > 0.0 || Instant::now() > deadline {
            let dead: serde_json::Map<String, Value> = TABLES
                .iter()
                .map(|t| {
                    let name = format!("webhookd_table_dead_tuples{{table=\"{t}\"}}");
                    (t.to_string(), json!(value(&name)))
                })
                .collect();
            return json!({
                "xmin_horizon_age_seconds": seconds.map(round3),
                "xmin_horizon_age_transactions": value("webhookd_xmin_horizon_age_transactions"),
                "table_dead_tuples": dead,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
