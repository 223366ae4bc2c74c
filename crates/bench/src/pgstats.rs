//! What the server's statistics say a run cost it: WAL written
//! (`pg_stat_wal`), rows inserted, updated and deleted per table of the
//! outbox schema (`pg_stat_user_tables`), transactions per database
//! (`pg_stat_database`) and, where the extension is loaded, statements with
//! their server time (`pg_stat_statements`). Every statement here carries
//! [`MARK`], so that the bench's own readings are told from the daemon's.
//!
//! Backends publish their counters lazily (PostgreSQL 15: at most once a
//! second while busy and about 10 s after going idle, always when they exit;
//! before 15 through the statistics collector, asynchronously). A reading
//! after a run therefore first waits until every other client backend of the
//! database has exited (an exiting backend publishes its counters before it
//! leaves `pg_stat_activity`), then flushes the reading session's own
//! (`pg_stat_force_next_flush()`, 15+); on older servers it polls until the
//! counters stop changing.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::scenarios::{round3, BenchResult};

/// In the text of every statement of this file.
pub const MARK: &str = "/* webhookd-bench */";

/// How long a reading waits for other backends to leave.
const SETTLE_LIMIT: Duration = Duration::from_secs(20);

/// This session's backend pid.
pub async fn backend_pid(client: &Client) -> BenchResult<i32> {
    let sql = "/* webhookd-bench */ SELECT pg_backend_pid()";
    Ok(client.query_one(sql, &[]).await?.get(0))
}

/// The server processes connected to `database` for the daemon (its
/// default `application_name`): its pool's and its LISTEN connection's.
pub async fn daemon_backends(client: &Client, database: &str) -> BenchResult<Vec<i32>> {
    let sql = "/* webhookd-bench */ SELECT pid FROM pg_stat_activity
               WHERE datname = $1 AND application_name = 'webhookd'";
    let rows = client.query(sql, &[&database]).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Waits (bounded) until no client backend but `keep` is connected to
/// `database`, then makes sure the counters read next are complete.
pub async fn settle(client: &Client, database: &str, keep: i32) -> BenchResult<()> {
    let others = "/* webhookd-bench */ SELECT count(*) FROM pg_stat_activity
                  WHERE datname = $1 AND pid <> $2 AND pid <> pg_backend_pid()
                    AND backend_type = 'client backend'";
    let deadline = Instant::now() + SETTLE_LIMIT;
    while client
        .query_one(others, &[&database, &keep])
        .await?
        .get::<_, i64>(0)
        > 0
    {
        if Instant::now() > deadline {
            return Err(format!("other sessions still connected to {database}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if flush(client).await? {
        return Ok(());
    }
    // Before PostgreSQL 15: wait until two readings half a second apart agree.
    let sum = "/* webhookd-bench */ SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = $1)
                 + coalesce((SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables), 0)::bigint";
    let mut last: i64 = client.query_one(sum, &[&database]).await?.get(0);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now: i64 = client.query_one(sum, &[&database]).await?.get(0);
        if now == last {
            break;
        }
        last = now;
    }
    Ok(())
}

/// Publishes this session's own counters (PostgreSQL 15+), this statement's
/// transaction included; false when the server cannot be asked to.
pub async fn flush(client: &Client) -> BenchResult<bool> {
    let force = "/* webhookd-bench */ SELECT to_regproc('pg_stat_force_next_flush') IS NOT NULL";
    if !client.query_one(force, &[]).await?.get::<_, bool>(0) {
        return Ok(false);
    }
    // Flushed when this statement's transaction ends, before it returns.
    let flush = "/* webhookd-bench */ SELECT pg_stat_force_next_flush()";
    client.batch_execute(flush).await?;
    Ok(true)
}

/// WAL and per-table row counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct Writes {
    /// (records, full-page images, bytes); `None` before PostgreSQL 14.
    wal: Option<[f64; 3]>,
    /// Per outbox table: inserts, updates, HOT updates, deletes.
    tables: BTreeMap<String, [i64; 4]>,
}

/// Reads [`Writes`] (the outbox tables of the session's database).
pub async fn writes(client: &Client) -> BenchResult<Writes> {
    let has_wal = "/* webhookd-bench */ SELECT to_regclass('pg_catalog.pg_stat_wal') IS NOT NULL";
    let wal = if client.query_one(has_wal, &[]).await?.get(0) {
        let row = client
            .query_one(
                "/* webhookd-bench */ SELECT wal_records::float8, wal_fpi::float8, wal_bytes::float8 FROM pg_stat_wal",
                &[],
            )
            .await?;
        Some([row.get(0), row.get(1), row.get(2)])
    } else {
        None
    };
    let mut tables = BTreeMap::new();
    for row in client
        .query(
            "/* webhookd-bench */ SELECT relname::text, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del
             FROM pg_stat_user_tables WHERE schemaname = 'outbox'",
            &[],
        )
        .await?
    {
        tables.insert(
            row.get(0),
            [row.get(1), row.get(2), row.get(3), row.get(4)],
        );
    }
    Ok(Writes { wal, tables })
}

/// What happened between two readings, per delivery, as JSON: WAL bytes,
/// records and full-page images, and each table's row changes (tables
/// without any left out).
pub fn per_delivery(before: &Writes, after: &Writes, deliveries: u64) -> Value {
    let per = |value: f64| round3(value / deliveries.max(1) as f64);
    let wal = match (before.wal, after.wal) {
        (Some(b), Some(a)) => json!({
            "bytes": per(a[2] - b[2]),
            "records": per(a[0] - b[0]),
            "full_page_images": per(a[1] - b[1]),
        }),
        _ => Value::Null,
    };
    let mut tables = serde_json::Map::new();
    for (name, a) in &after.tables {
        let b = before.tables.get(name).copied().unwrap_or_default();
        let delta: Vec<f64> = (0..4).map(|i| (a[i] - b[i]) as f64).collect();
        if delta.iter().all(|d| *d == 0.0) {
            continue;
        }
        tables.insert(
            name.clone(),
            json!({
                "inserts": per(delta[0]),
                "updates": per(delta[1]),
                "hot_updates": per(delta[2]),
                "deletes": per(delta[3]),
            }),
        );
    }
    json!({"deliveries": deliveries, "wal": wal, "tables": tables})
}

/// Prints [`per_delivery`]'s result as a small table.
pub fn print_per_delivery(writes: &Value) {
    let wal = &writes["wal"];
    match wal["bytes"].as_f64() {
        Some(bytes) => println!(
            "    per delivery: WAL {bytes:.0} bytes in {:.2} records ({:.3} full-page images; cluster-wide)",
            wal["records"].as_f64().unwrap_or(f64::NAN),
            wal["full_page_images"].as_f64().unwrap_or(f64::NAN)
        ),
        None => println!("    per delivery: WAL not reported (pg_stat_wal needs PostgreSQL 14)"),
    }
    println!(
        "    {:<22} {:>8} {:>8} {:>8} {:>8}",
        "per delivery", "inserts", "updates", "HOT", "deletes"
    );
    for (table, counts) in writes["tables"].as_object().into_iter().flatten() {
        let cell = |key: &str| counts[key].as_f64().unwrap_or(f64::NAN);
        println!(
            "    {:<22} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            format!("outbox.{table}"),
            cell("inserts"),
            cell("updates"),
            cell("hot_updates"),
            cell("deletes")
        );
    }
}

/// Transactions committed and rolled back in `database` so far.
pub async fn transactions(client: &Client, database: &str) -> BenchResult<(i64, i64)> {
    let row = client
        .query_one(
            "/* webhookd-bench */ SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = $1",
            &[&database],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// Makes `pg_stat_statements` usable in the session's database, or says
/// why it cannot be: it must be installed and in `shared_preload_libraries`.
pub async fn enable_statements(client: &Client) -> BenchResult<Result<(), String>> {
    let available = "/* webhookd-bench */ SELECT EXISTS (SELECT 1 FROM pg_available_extensions
                     WHERE name = 'pg_stat_statements')";
    if !client.query_one(available, &[]).await?.get::<_, bool>(0) {
        return Ok(Err(
            "pg_stat_statements is not installed on the server".into()
        ));
    }
    let preload: String = client
        .query_one("/* webhookd-bench */ SHOW shared_preload_libraries", &[])
        .await?
        .get(0);
    if !preload.split(',').any(|l| l.trim() == "pg_stat_statements") {
        return Ok(Err(
            "pg_stat_statements is not in shared_preload_libraries".into()
        ));
    }
    let create = "/* webhookd-bench */ CREATE EXTENSION IF NOT EXISTS pg_stat_statements";
    Ok(match client.batch_execute(create).await {
        Ok(()) => Ok(()),
        Err(err) => Err(format!("cannot create pg_stat_statements: {err}")),
    })
}

/// Top-level statements run in the session's database so far, by text:
/// (calls, execution ms). The bench's own (marked) are left out.
pub async fn statements(client: &Client) -> BenchResult<HashMap<String, (i64, f64)>> {
    let rows = client
        .query(
            "/* webhookd-bench */ SELECT query, sum(calls)::bigint, sum(total_exec_time)::float8
             FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
             GROUP BY query",
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter(|row| !row.get::<_, String>(0).contains(MARK))
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect())
}
