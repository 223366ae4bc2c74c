//! The reliability tests' view of a database with daemons at work: a
//! connection the tests' faults spare, counts of delivered rows, bulk
//! events, and what `pg_stat_activity` says about the daemons' sessions.

use std::time::Duration;

use uuid::Uuid;
use webhookd::manage::{self, CreateWebhook};
use webhookd::signing::SecretBox;

use super::wait_until;

/// Emits `$2` `vote.created` events for organization `$1` in one statement.
const BULK_EMIT: &str = "INSERT INTO outbox.events (organization_id, event, data)
     SELECT $1, 'vote.created', jsonb_build_object('id', 'v' || i, 'post_id', 'p' || i)
     FROM generate_series(1, $2::bigint) i";

/// A connection for the test's own queries, named so that terminating the
/// daemon's connections (`application_name = 'webhookd'`) spares it.
pub async fn observer(url: &str) -> tokio_postgres::Client {
    let named = format!(
        "{url}{}application_name=webhookd-tests",
        if url.contains('?') { "&" } else { "?" }
    );
    webhookd::db::connect_single(&named)
        .await
        .expect("connect to the test database")
}

pub async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.expect(sql).get(0)
}

pub async fn delivered(db: &tokio_postgres::Client) -> i64 {
    count(
        db,
        "SELECT count(*) FROM outbox.deliveries WHERE status = 'delivered'",
    )
    .await
}

pub async fn wait_for_delivered(db: &tokio_postgres::Client, n: i64, limit: Duration) {
    wait_until(&format!("{n} deliveries delivered"), limit, || async {
        delivered(db).await == n
    })
    .await;
}

pub async fn emit_many(db: &tokio_postgres::Client, org: Uuid, n: i64) {
    let inserted = db.execute(BULK_EMIT, &[&org, &n]).await.expect("bulk emit");
    assert_eq!(inserted, n as u64);
}

/// Terminates every backend of the daemon(s) on `database`; returns how many.
pub async fn terminate_daemon_connections(db: &tokio_postgres::Client, database: &str) -> usize {
    db.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND application_name = 'webhookd' AND pid <> pg_backend_pid()",
        &[&database],
    )
    .await
    .expect("terminate the daemon's connections")
    .iter()
    .filter(|row| row.get::<_, bool>(0))
    .count()
}

/// True when a daemon connection waits for a lock (the write-back, here).
pub async fn write_back_waits_on_a_lock(db: &tokio_postgres::Client, database: &str) -> bool {
    db.query_one(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = $1 AND application_name = 'webhookd' AND wait_event_type = 'Lock'",
        &[&database],
    )
    .await
    .expect("read pg_stat_activity")
    .get::<_, i64>(0)
        > 0
}

/// True when every daemon connection has been idle for 2 s: longer than any
/// short wait of the claim loop (the fence wait is at most 1 s), so the loop
/// is in its long sleep. The LISTEN connection must be among them.
pub async fn daemon_is_quiet(db: &tokio_postgres::Client, database: &str) -> bool {
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE state <> 'idle' OR state_change > now() - interval '2 seconds'),
                    count(*) FILTER (WHERE query ILIKE 'LISTEN%' OR query = 'SELECT 1')
             FROM pg_stat_activity
             WHERE datname = $1 AND application_name = 'webhookd'",
            &[&database],
        )
        .await
        .expect("read pg_stat_activity");
    row.get::<_, i64>(0) == 0 && row.get::<_, i64>(1) > 0
}

/// Creates a webhook on any database (the throwaway cluster has no TestApp).
pub async fn create_webhook(url: &str, key: &str, org: Uuid, target: &str) -> Uuid {
    let client = webhookd::db::connect_single(url).await.unwrap();
    let secrets = SecretBox::from_base64(key).unwrap();
    manage::create(
        &client,
        &secrets,
        &webhookd::delivery::sender::SystemResolver,
        &CreateWebhook {
            organization_id: org,
            url: target,
            label: "restart",
            allow_private_targets: true,
            signature_scheme: Default::default(),
        },
    )
    .await
    .expect("create webhook")
    .id
}
