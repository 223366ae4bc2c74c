//! The write-back's plan on a real database (migration 0012): it finds its
//! rows by primary key, also when its connection settled on a plan while the
//! queue was small and the statistics are from before a backlog built up,
//! so writing back one batch does not read the backlog. The same for giving
//! leases back, whose statement is planned for each call: its index reads
//! are bounded the same way (the old statement read the pending rows
//! through deliveries_due). And which result of a batch lands and is logged
//! when two share a delivery (migration 0013 joins them once). And that
//! results arriving one by one, at a modest rate, share write-backs.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use uuid::Uuid;
use webhookd::admin::metrics::Metrics;
use webhookd::db::queue::{self, AttemptRecord};
use webhookd::db::Preparing;
use webhookd::delivery::claimer::InFlight;
use webhookd::delivery::completer::{
    Completer, CompleterConfig, CompleterParts, CompleterSignals, LINGER_DEFAULT,
};
use webhookd::delivery::pacing::PacingConfig;
use webhookd::service::Service;

use crate::harness::{delivered_attempt, test_args, Receiver, TestApp};

/// Pending deliveries behind the batch: enough that reading them all shows.
const BACKLOG: i64 = 20_000;
/// Deliveries per statement, as a busy completer sends them.
const BATCH: i64 = 128;
/// Deliveries per statement while the queue is small: one, as at a modest
/// rate.
const SMALL_BATCH: i64 = 1;
/// Statements of each kind on one connection while the queue is small, and
/// again with the backlog: past the five custom plans after which PostgreSQL
/// may keep a generic one for the session.
const ROUNDS: usize = 20;

/// Most index entries a statement may read per row of its batch: the row's
/// lookup (and, before migration 15, the attempt log's foreign-key check),
/// which meets one primary-key entry per version of the row not yet vacuumed
/// away (the fan-out's insert, the lease, …; more while other transactions
/// hold the horizon back). Reading the backlog would be about 150 per row.
const READS_PER_ROW: i64 = 16;

/// Index entries this session read through any index of outbox.deliveries.
const INDEX_READS: &str = "SELECT sum(pg_stat_get_xact_tuples_returned(indexrelid))::bigint \
     FROM pg_index WHERE indrelid = 'outbox.deliveries'::regclass";

#[tokio::test]
async fn write_back_and_release_read_their_rows_by_key_beside_a_backlog() {
    let app = TestApp::new().await;
    let org = Uuid::new_v4();
    app.create_webhook(org, "http://127.0.0.1:9/away").await;
    let client = app.db.client().await;
    // Statistics from a quiet moment: nothing pending yet.
    client
        .batch_execute("ANALYZE outbox.deliveries")
        .await
        .unwrap();
    let small = SMALL_BATCH * 2 * ROUNDS as i64;
    add_pending(&client, org, small).await;
    // The connection settles into its plans while the queue is small.
    for round in 0..ROUNDS {
        write_back_and_release(&client, SMALL_BATCH, &format!("small queue, round {round}")).await;
    }

    add_pending(&client, org, BACKLOG).await;
    for round in 0..ROUNDS {
        write_back_and_release(&client, BATCH, &format!("backlog, round {round}")).await;
    }
    let (delivered, leased): (i64, i64) = {
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'delivered'), \
                        count(*) FILTER (WHERE lease_token IS NOT NULL) \
                 FROM outbox.deliveries",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(
        (delivered, leased),
        ((SMALL_BATCH + BATCH) * ROUNDS as i64, 0)
    );
}

/// A stale result (from a lease that has since passed to another sender) and
/// the fresh one for the same delivery can share a write-back batch: only the
/// fresh one lands, and the attempt log holds exactly it.
#[tokio::test]
async fn a_stale_and_a_fresh_result_in_one_batch_log_only_the_fresh_one() {
    let app = TestApp::new().await;
    let org = Uuid::new_v4();
    app.create_webhook(org, "http://127.0.0.1:9/shared").await;
    let client = app.db.client().await;
    add_pending(&client, org, 1).await;
    let (stale_token, first) = lease_batch(&client, 1).await;
    // The lease passes on: a second claim re-leases the row under a new token.
    client
        .execute(
            "UPDATE outbox.deliveries SET lease_token = NULL WHERE id = $1",
            &[&first[0].0],
        )
        .await
        .unwrap();
    let (fresh_token, second) = lease_batch(&client, 1).await;
    let (id, webhook, attempt) = second[0];
    assert_eq!(id, first[0].0);

    let mut stale = delivered_attempt(id, webhook, first[0].2, stale_token);
    stale.next = queue::NextStatus::Failed;
    stale.status_code = Some(500);
    stale.outcome = "http_error";
    stale.reason = Some("HTTP 500".into());
    let fresh = delivered_attempt(id, webhook, attempt, fresh_token);
    let landed = queue::complete(&client, &[stale, fresh.clone(), fresh])
        .await
        .unwrap();
    assert_eq!(landed, 1);

    let row = client
        .query_one(
            "SELECT status, last_status_code, last_error FROM outbox.deliveries WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, Option<i32>>(1)),
        ("delivered".to_string(), Some(204))
    );
    assert_eq!(row.get::<_, Option<String>>(2), None);
    let logged: Vec<(i32, Option<i32>, String)> = client
        .query(
            "SELECT attempt, status_code, outcome FROM outbox.delivery_attempts \
             WHERE delivery_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(logged, vec![(attempt, Some(204), "delivered".to_string())]);
}

/// Events sent one at a time: each is emitted once the previous one has
/// arrived, so each is fanned out, sent and answered on its own, as at a
/// modest rate.
const ONE_BY_ONE: usize = 12;

/// Results that arrive one by one, each a few milliseconds after the one
/// before, wait for company (`LINGER_DEFAULT`) and share write-backs instead
/// of each paying for a call of its own. A write-back sets `delivered_at` to
/// its transaction's start for every row it lands, so consecutive distinct
/// values are consecutive calls: none may follow the previous one sooner
/// than the linger, however fast or slow the machine is.
#[tokio::test]
async fn write_backs_of_results_arriving_one_by_one_wait_for_company() {
    let app = TestApp::new().await;
    let receiver = Receiver::with_status(200).await;
    let org = Uuid::new_v4();
    app.create_webhook(org, &receiver.url("/one-by-one")).await;
    let daemon = app.spawn_daemon(app.config(&test_args()));
    let producer = app.db.client().await;
    for sent in 1..=ONE_BY_ONE {
        let data = serde_json::json!({"id": format!("v{sent}"), "post_id": "p"});
        webhookd::db::webhooks::emit(&producer, org, "vote.created", &data)
            .await
            .unwrap();
        receiver.wait_for(sent, Duration::from_secs(20)).await;
    }
    app.wait_for_deliveries("status = 'delivered'", ONE_BY_ONE as i64)
        .await;
    daemon.stop().await.unwrap();

    let calls: Vec<f64> = producer
        .query(
            "SELECT DISTINCT extract(epoch FROM delivered_at)::float8 * 1000 \
             FROM outbox.deliveries ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    println!(
        "{ONE_BY_ONE} results sent one by one, written back in {} calls",
        calls.len()
    );
    // Timers never fire early; a millisecond for the clocks' rounding.
    let linger_ms = LINGER_DEFAULT.as_secs_f64() * 1000.0 - 1.0;
    for pair in calls.windows(2) {
        assert!(
            pair[1] - pair[0] >= linger_ms,
            "two write-backs {:.1} ms apart, less than the linger",
            pair[1] - pair[0]
        );
    }
}

/// A result waiting for company is written at once when the claim reports
/// `--max-in-flight` used up: otherwise slow receivers holding most of it
/// would pace every other webhook to one claim per linger. With an hour's
/// linger only that signal can get the result written within the wait.
#[tokio::test]
async fn a_starved_claim_has_the_waiting_results_written_at_once() {
    let app = TestApp::new().await;
    let org = Uuid::new_v4();
    app.create_webhook(org, "http://127.0.0.1:9/starved").await;
    let client = app.db.client().await;
    add_pending(&client, org, 1).await;
    let (token, leased) = lease_batch(&client, 1).await;
    let (id, webhook, attempt) = leased[0];

    let target = webhookd::db::parse_url(&app.db.url).unwrap();
    let starved = Arc::new(Notify::new());
    let (results, received) = mpsc::channel(8);
    let completer = Completer::new(
        CompleterConfig {
            batch: 4,
            linger: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(30),
        },
        CompleterParts {
            pool: webhookd::db::connect_pool(&target, 2).await.unwrap(),
            preparing: Preparing::default(),
            signals: CompleterSignals {
                recorded: Arc::new(Notify::new()),
                retry_scheduled: Arc::new(Notify::new()),
                starved: starved.clone(),
            },
            metrics: Arc::new(Metrics::new()),
            in_flight: Arc::new(InFlight::new(PacingConfig::up_to(8))),
            results: received,
        },
    );
    let (_stop, shutdown) = webhookd::shutdown::channel();
    let running = tokio::spawn(completer.run(shutdown));

    results
        .send(delivered_attempt(id, webhook, attempt, token))
        .await
        .unwrap();
    starved.notify_one();
    app.db
        .wait_for_count(
            "the waiting result written",
            "SELECT count(*) FROM outbox.deliveries WHERE status = 'delivered'",
            1,
            Duration::from_secs(20),
        )
        .await;
    drop(results);
    running.await.unwrap();
}

/// Commits `events` events of `org` and fans them out: one pending delivery
/// each to its one webhook.
async fn add_pending(client: &tokio_postgres::Client, org: Uuid, events: i64) {
    client
        .execute(
            "INSERT INTO outbox.events (organization_id, event, data) \
             SELECT $1, 'vote.created', jsonb_build_object('id', 'v' || i, 'post_id', 'p') \
             FROM generate_series(1, $2::bigint) AS i",
            &[&org, &events],
        )
        .await
        .unwrap();
    let fanned = queue::fan_out(client, i32::try_from(events).unwrap())
        .await
        .unwrap();
    assert_eq!(fanned.deliveries, events);
}

/// Leases `batch` deliveries and writes them back as delivered, then leases
/// `batch` more and gives them back; each statement must read about its own
/// rows only (its lookups), not the pending ones beside them.
async fn write_back_and_release(client: &tokio_postgres::Client, batch: i64, what: &str) {
    let pending: i64 = client
        .query_one(
            "SELECT count(*) FROM outbox.deliveries WHERE status = 'pending'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let bound = READS_PER_ROW * batch;

    let (token, leased) = lease_batch(client, batch).await;
    let records: Vec<AttemptRecord> = leased
        .iter()
        .map(|(id, webhook, attempt)| delivered_attempt(*id, *webhook, *attempt, token))
        .collect();
    let (landed, read) = counting_index_reads(client, queue::complete(client, &records)).await;
    assert_eq!(landed, batch as u64, "write-back, {what}");
    assert!(
        read <= bound,
        "write-back, {what}: {batch} rows read {read} index entries with {pending} pending"
    );

    let (token, leased) = lease_batch(client, batch).await;
    let leases: Vec<(Uuid, Uuid)> = leased.iter().map(|(id, _, _)| (*id, token)).collect();
    let (released, read) = counting_index_reads(client, queue::release(client, &leases)).await;
    assert_eq!(released, batch as u64, "release, {what}");
    assert!(
        read <= bound,
        "release, {what}: {batch} rows read {read} index entries with {pending} pending"
    );
}

/// Leases the first `batch` pending deliveries that are not leased, as a
/// claim would: (token, [(id, webhook, attempt)]).
async fn lease_batch(
    client: &tokio_postgres::Client,
    batch: i64,
) -> (Uuid, Vec<(Uuid, Uuid, i32)>) {
    let token = Uuid::new_v4();
    let rows = client
        .query(
            "UPDATE outbox.deliveries SET lease_token = $1, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM outbox.deliveries \
                          WHERE status = 'pending' AND lease_token IS NULL \
                          ORDER BY id LIMIT $2) \
             RETURNING id, webhook_id, attempts",
            &[&token, &batch],
        )
        .await
        .unwrap();
    let leased = rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    (token, leased)
}

/// Runs `statement` and reads how many index entries of outbox.deliveries it
/// read, both within one transaction: the session's counters are flushed
/// only between transactions.
async fn counting_index_reads<T>(
    client: &tokio_postgres::Client,
    statement: impl Future<Output = webhookd::Result<T>>,
) -> (T, i64) {
    client.batch_execute("BEGIN").await.unwrap();
    let before: i64 = client.query_one(INDEX_READS, &[]).await.unwrap().get(0);
    let result = statement.await.unwrap();
    let after: i64 = client.query_one(INDEX_READS, &[]).await.unwrap().get(0);
    client.batch_execute("COMMIT").await.unwrap();
    (result, after - before)
}
