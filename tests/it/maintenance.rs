//! Retention keeps the tables bounded without touching unfinished work.

use std::time::Duration;

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
    for _ in 0..3 {
        app.emit(org, "vote.created", sample(EventType::VoteCreated))
            .await;
    }
    app.emit(org_broken, "vote.created", sample(EventType::VoteCreated))
        .await;
    app.wait_for_deliveries("status = 'delivered'", 3).await;
    broken.wait_for(1, Duration::from_secs(20)).await;
    let client = app.db.client().await;
    client
        .execute(
            "UPDATE outbox.events SET occurred_at = now() - interval '2 days'",
            &[],
        )
        .await
        .unwrap();
    app.emit(org, "vote.deleted", sample(EventType::VoteDeleted))
        .await;
    app.wait_for_deliveries("status = 'delivered'", 4).await;
    daemon.stop().await.unwrap();

    let pool = webhookd::db::connect_pool(&app.db.url, 2).await.unwrap();
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

    let outcome = retention.run_once(&shutdown).await.unwrap();
    assert_eq!(
        outcome.events_deleted, 3,
        "the three old, delivered events, in batches of 2"
    );
    assert_eq!(
        app.db.count("SELECT count(*) FROM outbox.events").await,
        2,
        "the recent one and the pending one"
    );
    assert_eq!(
        app.db.count("SELECT count(*) FROM outbox.deliveries").await,
        2
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
