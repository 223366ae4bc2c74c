//! Retention keeps the tables bounded without touching unfinished work.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;
use webhookd::config::RunArgs;
use webhookd::maintenance::retention::{Retention, RetentionConfig};
use webhookd::EventType;

use crate::harness::{sample, test_args, Receiver, TestApp};

#[tokio::test]
async fn retention_deletes_old_finished_events_with_their_deliveries_and_keeps_the_rest() {
    let app = TestApp::new().await;
    let healthy = Receiver::with_status(200).await;
    let broken = Receiver::with_status(503).await;
    let (org, org_broken) = (Uuid::new_v4(), Uuid::new_v4());
    app.create_webhook(org, &healthy.url("/ok")).await;
    app.create_webhook(org_broken, &broken.url("/down")).await;
    let daemon = app.spawn_daemon(app.config(&RunArgs {
        retry_base_delay: Duration::from_secs(600),
        ..test_args()
    }));
    // Retention finds old events by their time-ordered ids: old events get
    // ids of their time, and one a random id from before those.
    let client = app.db.client().await;
    let two_days = Duration::from_secs(2 * 86_400);
    for id in [
        time_ordered_id(two_days),
        time_ordered_id(two_days),
        legacy_id(),
    ] {
        insert_event(&client, id, org).await;
    }
    insert_event(&client, time_ordered_id(two_days), org_broken).await;
    app.wait_for_deliveries("status = 'delivered'", 3).await;
    broken.wait_for(1, Duration::from_secs(20)).await;
    client
        .execute(
            "UPDATE outbox.events SET occurred_at = now() - interval '2 days'",
            &[],
        )
        .await
        .unwrap();
    app.emit(org, "vote.deleted", sample(EventType::VoteDeleted))
        .await;
    // An old id does not make an event old: occurred_at decides.
    insert_event(&client, time_ordered_id(two_days), org).await;
    app.wait_for_deliveries("status = 'delivered'", 5).await;
    daemon.stop().await.unwrap();

    let pool = webhookd::db::connect_pool(&webhookd::db::parse_url(&app.db.url).unwrap(), 2)
        .await
        .unwrap();
    let (_trigger, shutdown) = webhookd::shutdown::channel();
    let retention = Retention::new(
        RetentionConfig {
            keep: Some(Duration::from_secs(86_400)),
            batch: 2,
            ..RetentionConfig::default()
        },
        pool.clone(),
    );

    // Another replica sweeping: this one leaves it alone.
    let mut holder = app.db.client().await;
    let held = holder.transaction().await.unwrap();
    held.execute("SELECT pg_advisory_xact_lock(8243122671965202799)", &[])
        .await
        .unwrap();
    let outcome = retention.run_once(&shutdown).await.unwrap();
    assert!(outcome.skipped);
    assert_eq!(outcome.events_deleted, 0);
    held.rollback().await.unwrap();

    // A sweep that stops at its batch limit says more is left, so the next
    // one comes soon rather than after the interval.
    let one_batch = Retention::new(
        RetentionConfig {
            keep: Some(Duration::from_secs(86_400)),
            batch: 2,
            max_batches: 1,
            ..RetentionConfig::default()
        },
        pool.clone(),
    );
    let outcome = one_batch.run_once(&shutdown).await.unwrap();
    assert_eq!(outcome.events_deleted, 2);
    assert!(outcome.more, "one of the three old events is left");

    let outcome = retention.run_once(&shutdown).await.unwrap();
    assert_eq!(
        outcome.events_deleted, 1,
        "the third old, delivered event: the one with a random id"
    );
    assert!(!outcome.more);
    assert_eq!(
        app.db.count("SELECT count(*) FROM outbox.events").await,
        3,
        "the two recent ones and the pending one"
    );
    assert_eq!(
        app.db
            .count(
                "SELECT count(*) FROM outbox.events WHERE occurred_at < now() - interval '1 day'"
            )
            .await,
        1,
        "of the old events only the pending one is left"
    );
    assert_eq!(
        app.db.count("SELECT count(*) FROM outbox.deliveries").await,
        3
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM outbox.deliveries WHERE status = 'pending'")
            .await,
        1,
        "unfinished work is never deleted"
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM outbox.delivery_attempts a WHERE NOT EXISTS (SELECT 1 FROM outbox.deliveries d WHERE d.id = a.delivery_id)")
            .await,
        0,
        "attempts go with their deliveries"
    );
}

#[tokio::test]
async fn the_vacuum_sweeper_vacuums_a_table_whose_dead_tuples_pass_the_threshold() {
    use webhookd::maintenance::vacuum::{Vacuum, VacuumConfig};
    let app = TestApp::new().await;
    let client = app.db.client().await;
    client
        .execute(
            "INSERT INTO outbox.events (organization_id, event, data)
             SELECT gen_random_uuid(), 'vote.created', jsonb_build_object('id', 'v' || i, 'post_id', 'p')
             FROM generate_series(1, 500) AS i",
            &[],
        )
        .await
        .unwrap();
    client
        .execute("UPDATE outbox.events SET fanned_out_at = now()", &[])
        .await
        .unwrap();
    let dead = "SELECT coalesce(sum(n_dead_tup), 0)::bigint FROM pg_stat_user_tables
                WHERE schemaname = 'outbox' AND relname = 'events'";
    // Statistics reach the shared counters a moment after the transaction.
    crate::harness::wait_until(
        "the dead tuples are counted",
        Duration::from_secs(20),
        || async { app.db.count(dead).await >= 500 },
    )
    .await;

    let pool = webhookd::db::connect_pool(&webhookd::db::parse_url(&app.db.url).unwrap(), 2)
        .await
        .unwrap();
    let vacuum = Vacuum::new(
        VacuumConfig {
            min_dead: 100,
            dead_fraction: 0.0,
            autovacuum_grace: Duration::ZERO,
            ..VacuumConfig::default()
        },
        pool,
    );
    let vacuumed = vacuum.run_once().await.unwrap();
    assert!(vacuumed.contains(&"events".to_string()), "{vacuumed:?}");
    assert!(
        !vacuumed.contains(&"delivery_attempts".to_string()),
        "nothing dead there"
    );
    crate::harness::wait_until(
        "the dead tuples are gone",
        Duration::from_secs(20),
        || async { app.db.count(dead).await == 0 },
    )
    .await;
}

/// Inserts a `vote.created` event with the id given, as a producer may.
async fn insert_event(client: &tokio_postgres::Client, id: Uuid, org: Uuid) {
    client
        .execute(
            "INSERT INTO outbox.events (id, organization_id, event, data) VALUES ($1, $2, 'vote.created', $3)",
            &[&id, &org, &sample(EventType::VoteCreated)],
        )
        .await
        .unwrap();
}

/// A version-7 id made `age` ago: the first 48 bits are its Unix time in
/// milliseconds, as `outbox.uuid_v7()` makes them.
fn time_ordered_id(age: Duration) -> Uuid {
    let made = SystemTime::now() - age;
    let millis = made.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let mut bytes = *Uuid::new_v4().as_bytes();
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6] = (bytes[6] & 0x0f) | 0x70;
    Uuid::from_bytes(bytes)
}

/// A random (version 4) id above every time-ordered one, as events had
/// before time-ordered ids (migration 4).
fn legacy_id() -> Uuid {
    let mut bytes = *Uuid::new_v4().as_bytes();
    bytes[0] = 0xff;
    Uuid::from_bytes(bytes)
}
