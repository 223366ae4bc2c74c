//! Scenarios about PostgreSQL itself: what producers pay, how the claim
//! behaves with a large backlog, and whether the tables stay bounded.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;

use super::{round3, Bench, BenchResult, Sizes};
use crate::pgstats;
use crate::process::{self, Daemon};
use crate::sql::{self, Events};

impl Bench {
    /// Producer cost (scenario 4): a pgbench-style business transaction at
    /// 8 clients, without and with one `outbox.emit`, NOTIFY off and on, and
    /// for reference with the same row inserted into a plain table and
    /// through `emit` into a copy of the outbox table without its trigger
    /// (what checking, stamping and announcing the row costs). No daemon
    /// runs: this is what producers pay. Each round runs every mode
    /// once, each after a VACUUM, in an order that rotates from round to
    /// round: the tables grow during a run, and a shared machine's speed
    /// drifts, which would otherwise favour whichever mode runs first.
    /// What `emit` costs beyond the plain insert is taken within each round
    /// (both against that round's run without the outbox), so that drift
    /// between rounds cancels; the report gives every round's figure and
    /// their median, not only the medians of each mode.
    pub async fn producer(&self, sizes: &Sizes) -> BenchResult<serde_json::Value> {
        let seconds = sizes.producer_seconds;
        let rounds = sizes.producer_rounds;
        println!(
            "producer: business transaction at {PRODUCER_CLIENTS} clients, {rounds} rounds of {seconds}s per mode"
        );
        let db = self.fresh_db().await?;
        sql::create_business_tables(&db.client).await?;
        let modes = PRODUCER_MODES;
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        let mut cpu_samples: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        for round in 0..rounds {
            for turn in 0..modes.len() {
                let index = (turn + round) % modes.len();
                let mode = modes[index];
                sql::vacuum_analyze(&db.client, &sql::PRODUCER_TABLES).await?;
                let run = business_transactions(&db.url, mode, seconds).await?;
                println!(
                    "  round {}: {:<34} {:>8.0} TPS {:>7.1} µs server CPU per transaction",
                    round + 1,
                    mode.name(),
                    run.tps,
                    run.cpu_us
                );
                samples[index].push(run.tps);
                cpu_samples[index].push(run.cpu_us);
            }
        }
        sql::set_wakeup_notify(&db.client, true).await?;
        // Per round: the points by which emit (NOTIFY off), and emit without
        // the trigger, lose more TPS than the plain insert, and their extra
        // server CPU per transaction.
        let beyond_plain = Paired::of(&samples, &cpu_samples, EMIT_OFF);
        let untriggered = Paired::of(&samples, &cpu_samples, UNTRIGGERED);
        let medians: Vec<f64> = samples.iter().map(|s| middle(s)).collect();
        let cpu_medians: Vec<f64> = cpu_samples.iter().map(|s| middle(s)).collect();
        let base = medians[NO_OUTBOX];
        let overhead = |tps: f64| round3((1.0 - tps / base) * 100.0);
        for ((mode, tps), cpu_us) in modes.iter().zip(&medians).zip(&cpu_medians) {
            println!(
                "  {:<34} {tps:>8.0} TPS (median), {:>6.1} % fewer than without the outbox; \
                 {cpu_us:>6.1} µs server CPU per transaction (median), {:>+6.1} µs",
                mode.name(),
                overhead(*tps),
                cpu_us - cpu_medians[NO_OUTBOX]
            );
        }
        println!(
            "  emit (NOTIFY off) beyond the plain table, within each round: {} points \
             (median {:.1}); {} µs server CPU per transaction (median {:.1})",
            list(&beyond_plain.points),
            middle(&beyond_plain.points),
            list(&beyond_plain.cpu_us),
            middle(&beyond_plain.cpu_us),
        );
        println!(
            "  emit without its trigger beyond the plain table, within each round: {} points \
             (median {:.1}); {} µs server CPU per transaction (median {:.1})",
            list(&untriggered.points),
            middle(&untriggered.points),
            list(&untriggered.cpu_us),
            middle(&untriggered.cpu_us),
        );
        db.drop_database().await;
        Ok(json!({
            "scenario": "producer",
            "clients": PRODUCER_CLIENTS,
            "seconds_per_mode": seconds,
            "rounds": rounds,
            "tps": {
                "no_outbox": medians[NO_OUTBOX].round(),
                "plain_insert": medians[PLAIN].round(),
                "emit_notify_off": medians[EMIT_OFF].round(),
                "emit_notify_on": medians[EMIT_ON].round(),
                "emit_untriggered": medians[UNTRIGGERED].round(),
            },
            "overhead_percent": {
                "plain_insert": overhead(medians[PLAIN]),
                "notify_off": overhead(medians[EMIT_OFF]),
                "notify_on": overhead(medians[EMIT_ON]),
                "untriggered": overhead(medians[UNTRIGGERED]),
            },
            "server_cpu_us_per_transaction": {
                "no_outbox": round3(cpu_medians[NO_OUTBOX]),
                "plain_insert": round3(cpu_medians[PLAIN]),
                "emit_notify_off": round3(cpu_medians[EMIT_OFF]),
                "emit_notify_on": round3(cpu_medians[EMIT_ON]),
                "emit_untriggered": round3(cpu_medians[UNTRIGGERED]),
            },
            "emit_beyond_plain_per_round": beyond_plain.json(),
            "untriggered_beyond_plain_per_round": untriggered.json(),
        }))
    }
}

/// The producer scenario's modes; the indexes below name their places.
const PRODUCER_MODES: [ProducerMode; 5] = [
    ProducerMode::NoOutbox,
    ProducerMode::PlainInsert,
    ProducerMode::Emit { notify: false },
    ProducerMode::Emit { notify: true },
    ProducerMode::EmitUntriggered,
];
const NO_OUTBOX: usize = 0;
const PLAIN: usize = 1;
const EMIT_OFF: usize = 2;
const EMIT_ON: usize = 3;
const UNTRIGGERED: usize = 4;

/// What one mode costs beyond the plain insert, round by round.
struct Paired {
    /// Its TPS loss minus the plain insert's, in percentage points of that
    /// round's run without the outbox.
    points: Vec<f64>,
    /// Its server CPU per transaction minus the plain insert's, in µs.
    cpu_us: Vec<f64>,
}

impl Paired {
    /// From each mode's samples in round order, for the mode at `mode`.
    fn of(tps: &[Vec<f64>], cpu_us: &[Vec<f64>], mode: usize) -> Paired {
        let rounds = tps[NO_OUTBOX].len();
        let points = (0..rounds)
            .map(|r| (tps[PLAIN][r] - tps[mode][r]) / tps[NO_OUTBOX][r] * 100.0)
            .collect();
        let cpu_us = (0..rounds)
            .map(|r| cpu_us[mode][r] - cpu_us[PLAIN][r])
            .collect();
        Paired { points, cpu_us }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "points": self.points.iter().map(|p| round3(*p)).collect::<Vec<_>>(),
            "median_points": round3(middle(&self.points)),
            "server_cpu_us": self.cpu_us.iter().map(|c| round3(*c)).collect::<Vec<_>>(),
            "median_server_cpu_us": round3(middle(&self.cpu_us)),
        })
    }
}

/// The median, the mean of the two middle values for an even count: with
/// a few rounds, taking the upper middle would lean one way.
fn middle(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// "11.3 / 20.3 / 4.6": one decimal each.
fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.1}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

const PRODUCER_CLIENTS: usize = 8;
/// Events per fan-out statement while a backlog is set up.
const FAN_OUT_BATCH: i32 = 10_000;

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
    /// `emit`'s body into a copy of `outbox.events` without its trigger:
    /// the outbox row's defaults and indexes and the function call, with
    /// nothing checking the row.
    EmitUntriggered,
}

impl ProducerMode {
    fn name(self) -> &'static str {
        match self {
            ProducerMode::NoOutbox => "no outbox",
            ProducerMode::PlainInsert => "same row into a plain table",
            ProducerMode::Emit { notify: false } => "emit, NOTIFY off",
            ProducerMode::Emit { notify: true } => "emit, NOTIFY on",
            ProducerMode::EmitUntriggered => "emit without its trigger",
        }
    }
}

/// What one mode's run of the business transaction measured.
struct ProducerRun {
    /// Transactions per second over all clients.
    tps: f64,
    /// CPU its clients' backends spent per transaction, in µs. Unlike TPS,
    /// this hardly moves when other work shares the machine's cores.
    cpu_us: f64,
}

/// Runs the business transaction on [`PRODUCER_CLIENTS`] connections for
/// `seconds`.
async fn business_transactions(
    url: &str,
    mode: ProducerMode,
    seconds: u64,
) -> BenchResult<ProducerRun> {
    let admin = webhookd::db::connect_single(url).await?;
    let notify = matches!(mode, ProducerMode::Emit { notify: true });
    sql::set_wakeup_notify(&admin, notify).await?;
    let org = Uuid::new_v4();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut clients = Vec::new();
    for client_index in 0..PRODUCER_CLIENTS {
        let mut client = webhookd::db::connect_single(url).await?;
        // Prepared once per connection, as an application's driver or
        // pgbench's `-M prepared` would.
        let extra = match mode {
            ProducerMode::NoOutbox => None,
            ProducerMode::PlainInsert => Some(sql::PLAIN_INSERT),
            ProducerMode::Emit { .. } => Some(sql::EMIT),
            ProducerMode::EmitUntriggered => Some(sql::EMIT_UNTRIGGERED),
        };
        let accounts = client.prepare(sql::BUSINESS_ACCOUNT).await?;
        let tellers = client.prepare(sql::BUSINESS_TELLER).await?;
        let history = client.prepare(sql::BUSINESS_HISTORY).await?;
        let extra = match extra {
            Some(sql) => Some(client.prepare(sql).await?),
            None => None,
        };
        let backend = pgstats::backend_pid(&client).await? as u32;
        clients.push(tokio::spawn(async move {
            let cpu_before = process::cpu_seconds(backend);
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
            // Read while the connection, and so its backend, still lives.
            let cpu = match (cpu_before, process::cpu_seconds(backend)) {
                (Some(before), Some(after)) => after - before,
                _ => f64::NAN,
            };
            (done, cpu)
        }));
    }
    let (mut total, mut cpu) = (0, 0.0);
    for client in clients {
        let (done, seconds) = client.await?;
        total += done;
        cpu += seconds;
    }
    Ok(ProducerRun {
        tps: total as f64 / seconds as f64,
        cpu_us: cpu * 1e6 / total.max(1) as f64,
    })
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
            self.webhook(&db, org, "/ok").await?;
            // Filled and fanned out before the daemon starts: the scenario is
            // about the queue, so fan-out (webhookd's own, in large batches)
            // is setup here, with the wake-up NOTIFY off meanwhile.
            sql::set_wakeup_notify(&db.client, false).await?;
            self.fill(&db, org, pending).await?;
            while webhookd::db::queue::fan_out(&db.client, FAN_OUT_BATCH)
                .await?
                .events
                > 0
            {}
            sql::set_wakeup_notify(&db.client, true).await?;
            sql::vacuum_analyze(&db.client, &["outbox.events", "outbox.deliveries"]).await?;
            let mut claimer = webhookd::db::connect_single(&db.url).await?;
            let claim_ms = sql::claim_time(&mut claimer).await?;
            // Never wait for more deliveries than the backlog holds.
            let measured = sizes.backlog_measured.min(pending as u64);
            let drained = self.drain(&db, 1, measured, &[]).await?;
            println!(
                "  {pending:>9} pending: claim {claim_ms:.2} ms (median of 5, EXPLAIN ANALYZE)"
            );
            drained.print(&format!("{pending} pending"));
            let share = self.share_of_ceiling(drained.rate(), false);
            runs.push(
                json!({"pending": pending, "claim_ms": round3(claim_ms), "result": drained.json(), "share_of_ceiling": share}),
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
            let tick_events = (produced + 1, produced + per_tick);
            sql::insert_events(&producer, Events::SoakTick, org, tick_events).await?;
            produced += per_tick;
            if started.elapsed() >= next_sample {
                let sample = sql::table_sample(&db.client).await?;
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
