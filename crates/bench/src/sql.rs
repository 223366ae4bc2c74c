//! Every SQL statement of the benchmark, in one place: filling the outbox,
//! the producer scenario's business tables and statements, the daemon's
//! claim under EXPLAIN, and the table statistics the scenarios report.
//! Fan-out and webhooks go through webhookd's own functions, not SQL here;
//! the server's statistics are read in `pgstats.rs`.

use serde_json::{json, Value};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::scenarios::{round3, BenchResult};

/// The daemon's claim statement, measured by [`claim_time`].
const CLAIM: &str = include_str!("../../../sql/queries/claim.sql");

/// The producer scenario's tables, filled: a pgbench-like schema, a plain
/// table of the outbox's shape without triggers or extra indexes, and a copy
/// of `outbox.events` without its trigger (the same defaults, primary key and
/// fan-out index) with an `emit` of the same body as `outbox.emit`'s: what
/// `emit` would cost if nothing checked the row.
const BUSINESS_TABLES: &str = "
    CREATE TABLE bench_accounts (id int PRIMARY KEY, balance bigint NOT NULL DEFAULT 0);
    CREATE TABLE bench_tellers (id int PRIMARY KEY, balance bigint NOT NULL DEFAULT 0);
    CREATE TABLE bench_history (id bigserial PRIMARY KEY, account int, teller int, delta int,
                                at timestamptz DEFAULT now());
    CREATE TABLE bench_plain_events (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                                     organization_id uuid NOT NULL, event text NOT NULL,
                                     data jsonb NOT NULL,
                                     occurred_at timestamptz NOT NULL DEFAULT clock_timestamp());
    -- LIKE copies no triggers. The identity's cache is set as migration 10
    -- set the original's, and the function is outbox.emit's body
    -- (sql/migrations/0003_cheaper_emit.sql) pointed at the copy.
    CREATE TABLE bench_untriggered_events (LIKE outbox.events INCLUDING ALL);
    ALTER TABLE bench_untriggered_events ALTER COLUMN seq SET CACHE 64;
    CREATE FUNCTION bench_emit_untriggered(organization_id uuid, event text, data jsonb)
    RETURNS uuid LANGUAGE plpgsql AS $$
    DECLARE
        event_id uuid;
    BEGIN
        INSERT INTO bench_untriggered_events (organization_id, event, data)
        VALUES (bench_emit_untriggered.organization_id, bench_emit_untriggered.event,
                bench_emit_untriggered.data)
        RETURNING id INTO event_id;
        RETURN event_id;
    END;
    $$;
    INSERT INTO bench_accounts (id) SELECT generate_series(1, 100000);
    INSERT INTO bench_tellers (id) SELECT generate_series(1, 100);";

/// The tables vacuumed before each producer round.
pub const PRODUCER_TABLES: [&str; 6] = [
    "bench_accounts",
    "bench_tellers",
    "bench_history",
    "bench_plain_events",
    "bench_untriggered_events",
    "outbox.events",
];

/// The business transaction's three statements ($1 account, $2 teller).
pub const BUSINESS_ACCOUNT: &str = "UPDATE bench_accounts SET balance = balance + 1 WHERE id = $1";
pub const BUSINESS_TELLER: &str = "UPDATE bench_tellers SET balance = balance + 1 WHERE id = $1";
pub const BUSINESS_HISTORY: &str =
    "INSERT INTO bench_history (account, teller, delta) VALUES ($1, $2, 1)";
/// What a business transaction adds: the same row into the plain table, or
/// `outbox.emit` ($1 organization, $2 data).
pub const PLAIN_INSERT: &str =
    "INSERT INTO bench_plain_events (organization_id, event, data) VALUES ($1, 'vote.created', $2)";
pub const EMIT: &str = "SELECT outbox.emit($1, 'vote.created', $2)";
/// The same through the copy of the outbox table without its trigger.
pub const EMIT_UNTRIGGERED: &str = "SELECT bench_emit_untriggered($1, 'vote.created', $2)";

/// `vote.created` events numbered $2..=$3 for organization $1, in one
/// statement: a filled outbox before any daemon runs.
const FILL: &str = "INSERT INTO outbox.events (organization_id, event, data)
     SELECT $1, 'vote.created',
            jsonb_build_object('id', 'v' || i, 'post_id', 'p' || i, 'post_title', 'Add dark mode')
     FROM generate_series($2::bigint, $3::bigint) AS i";

/// The same with the soak's smaller events, one tick's worth.
const SOAK_TICK: &str = "INSERT INTO outbox.events (organization_id, event, data)
     SELECT $1, 'vote.created', jsonb_build_object('id', 'v' || i, 'post_id', 'p')
     FROM generate_series($2::bigint, $3::bigint) AS i";

/// Which events [`insert_events`] commits.
#[derive(Debug, Clone, Copy)]
pub enum Events {
    /// A filled outbox's.
    Fill,
    /// A soak tick's.
    SoakTick,
}

/// Commits the events numbered `from..=to` for `org` in one statement.
pub async fn insert_events(
    client: &Client,
    events: Events,
    org: Uuid,
    (from, to): (i64, i64),
) -> BenchResult<()> {
    let sql = match events {
        Events::Fill => FILL,
        Events::SoakTick => SOAK_TICK,
    };
    client.execute(sql, &[&org, &from, &to]).await?;
    Ok(())
}

/// One event through `outbox.emit`, proving a daemon listens before a clock starts.
pub async fn emit_warm_up(client: &Client, org: Uuid) -> BenchResult<()> {
    let data = json!({"id": "warm-up", "post_id": "p"});
    client.execute(EMIT, &[&org, &data]).await?;
    Ok(())
}

/// Deliveries recorded as delivered.
pub async fn delivered(client: &Client) -> BenchResult<i64> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM outbox.deliveries WHERE status = 'delivered'",
            &[],
        )
        .await?
        .get(0))
}

/// Creates and fills the producer scenario's tables.
pub async fn create_business_tables(client: &Client) -> BenchResult<()> {
    Ok(client.batch_execute(BUSINESS_TABLES).await?)
}

/// `VACUUM ANALYZE` of each table, one statement each (VACUUM cannot run in
/// a transaction, which a multi-statement batch is).
pub async fn vacuum_analyze(client: &Client, tables: &[&str]) -> BenchResult<()> {
    for table in tables {
        client
            .batch_execute(&format!("VACUUM ANALYZE {table}"))
            .await?;
    }
    Ok(())
}

/// The away scenario's retries: every event of $1 becomes one delivery to
/// webhook $2 that failed once and waits an hour for its retry, inserted as
/// such (no dead rows that would bring a vacuum, and with it fresh
/// statistics, while the scenario runs).
const AWAY_RETRIES: &str = "
    INSERT INTO outbox.deliveries
        (event_id, webhook_id, organization_id, attempts, next_attempt_at, last_attempt_at,
         last_error)
    SELECT id, $2, $1, 1, now() + interval '1 hour', now(), 'connect: connection refused'
    FROM outbox.events
    WHERE organization_id = $1";

/// Marks the events of `org` fanned out before any daemon runs, so that
/// only [`away_retries`] makes their deliveries; takes the deliveries'
/// statistics while none are pending, as autovacuum would have before an
/// outage.
pub async fn away_events(client: &Client, org: Uuid) -> BenchResult<()> {
    client
        .execute(
            "UPDATE outbox.events SET fanned_out_at = now() WHERE organization_id = $1",
            &[&org],
        )
        .await?;
    vacuum_analyze(client, &["outbox.events"]).await?;
    client.batch_execute("ANALYZE outbox.deliveries").await?;
    Ok(())
}

/// Makes the events of `org` retries of `webhook`; returns how many.
pub async fn away_retries(client: &Client, org: Uuid, webhook: Uuid) -> BenchResult<u64> {
    Ok(client.execute(AWAY_RETRIES, &[&org, &webhook]).await?)
}

/// Turns the wake-up NOTIFY of `outbox.emit` on or off (migration 0003).
pub async fn set_wakeup_notify(client: &Client, on: bool) -> BenchResult<()> {
    client
        .execute("SELECT setval('outbox.wakeup_notify', $1)", &[&(on as i64)])
        .await?;
    Ok(())
}

/// The server's `autovacuum` setting.
pub async fn autovacuum(client: &Client) -> BenchResult<String> {
    Ok(client
        .query_one("SELECT current_setting('autovacuum')", &[])
        .await?
        .get(0))
}

/// Opens what holds the xmin horizon on `client`: a REPEATABLE READ
/// snapshot and an xid, as a long report or `pg_dump` would; COMMIT ends it.
pub async fn hold_horizon(client: &Client) -> BenchResult<()> {
    Ok(client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT txid_current();")
        .await?)
}

/// Median execution time in ms of the daemon's claim statement (the call of
/// its PL/pgSQL function, whose settings it carries), in a transaction that
/// is rolled back; the median of 5 leaves out the first call's planning.
pub async fn claim_time(client: &mut Client) -> BenchResult<f64> {
    client.batch_execute("SET enable_bitmapscan = off").await?;
    let mut times = Vec::new();
    for _ in 0..5 {
        let tx = client.transaction().await?;
        let statement = tx
            .prepare(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {CLAIM}"))
            .await?;
        let lease: i64 = 90_000;
        let (none, free): (Vec<Uuid>, Vec<i32>) = (Vec::new(), Vec::new());
        let arguments: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
            &128i32,
            &256i32,
            &false,
            &none,
            &free,
            &8i32,
            &lease,
            &Uuid::new_v4(),
        ];
        let plan: Value = tx.query_one(&statement, &arguments).await?.get(0);
        times.push(plan[0]["Execution Time"].as_f64().unwrap_or(f64::NAN));
        tx.rollback().await?;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[2])
}

/// Live and dead tuples and total sizes of the queue's tables (the soak).
pub async fn table_sample(client: &Client) -> BenchResult<Value> {
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
    Ok(Value::Object(sample))
}

/// Heap, total and per-index sizes (KiB) and live/dead tuples of `tables`
/// of the outbox schema (the xmin scenario).
pub async fn relation_sizes(client: &Client, tables: &[&str]) -> BenchResult<Value> {
    let tables: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
    let mut sizes = serde_json::Map::new();
    for row in client
        .query(
            "SELECT relname::text, n_live_tup, n_dead_tup,
                    pg_relation_size(relid) / 1024 AS heap_kib,
                    pg_total_relation_size(relid) / 1024 AS total_kib
             FROM pg_stat_user_tables WHERE schemaname = 'outbox' AND relname = ANY($1)",
            &[&tables],
        )
        .await?
    {
        sizes.insert(
            row.get(0),
            json!({
                "live_tuples": row.get::<_, i64>(1),
                "dead_tuples": row.get::<_, i64>(2),
                "heap_kib": row.get::<_, i64>(3),
                "total_kib": row.get::<_, i64>(4),
                "indexes_kib": {},
            }),
        );
    }
    for row in client
        .query(
            "SELECT relname::text, indexrelname::text, pg_relation_size(indexrelid) / 1024
             FROM pg_stat_user_indexes WHERE schemaname = 'outbox' AND relname = ANY($1)",
            &[&tables],
        )
        .await?
    {
        let (table, index): (String, String) = (row.get(0), row.get(1));
        if let Some(indexes) = sizes
            .get_mut(&table)
            .and_then(|t| t["indexes_kib"].as_object_mut())
        {
            indexes.insert(index, json!(row.get::<_, i64>(2)));
        }
    }
    Ok(Value::Object(sizes))
}
