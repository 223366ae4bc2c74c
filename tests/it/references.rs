//! The queue's references without foreign keys (migration 15): deleting
//! events or webhooks still takes their deliveries and those deliveries'
//! attempts with them, and nothing else; truncating a referenced table alone
//! still fails and changes nothing.

use uuid::Uuid;
use webhookd::db::queue;

use crate::harness::TestApp;

/// Two events of one organization with two webhooks: four deliveries, each
/// with one logged attempt. Returns (events, webhooks).
async fn four_deliveries_with_attempts(
    client: &tokio_postgres::Client,
    app: &TestApp,
) -> (Vec<Uuid>, Vec<Uuid>) {
    let org = Uuid::new_v4();
    let mut webhooks = Vec::new();
    for path in ["/a", "/b"] {
        webhooks.push(
            app.create_webhook(org, &format!("http://127.0.0.1:9{path}"))
                .await
                .id,
        );
    }
    let events: Vec<Uuid> = client
        .query(
            "INSERT INTO outbox.events (organization_id, event, data) \
             SELECT $1, 'vote.created', jsonb_build_object('id', 'v' || i, 'post_id', 'p') \
             FROM generate_series(1, 2) AS i RETURNING id",
            &[&org],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let fanned = queue::fan_out(client, 10).await.unwrap();
    assert_eq!(fanned.deliveries, 4);
    client
        .execute(
            "INSERT INTO outbox.delivery_attempts \
                 (delivery_id, webhook_id, organization_id, attempt, started_at, duration_ms, outcome) \
             SELECT id, webhook_id, organization_id, 1, now(), 3, 'http_status' \
             FROM outbox.deliveries",
            &[],
        )
        .await
        .unwrap();
    (events, webhooks)
}

/// (deliveries, attempts) left.
async fn counts(client: &tokio_postgres::Client) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM outbox.deliveries), \
                    (SELECT count(*) FROM outbox.delivery_attempts)",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn deleting_an_event_or_a_webhook_takes_its_deliveries_and_their_attempts() {
    let app = TestApp::new().await;
    let client = app.db.client().await;
    let (events, webhooks) = four_deliveries_with_attempts(&client, &app).await;

    client
        .execute("DELETE FROM outbox.events WHERE id = $1", &[&events[0]])
        .await
        .unwrap();
    assert_eq!(
        counts(&client).await,
        (2, 2),
        "the other event's two remain"
    );
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM outbox.deliveries WHERE event_id = $1",
            &[&events[1]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 2);

    client
        .execute("DELETE FROM outbox.webhooks WHERE id = $1", &[&webhooks[0]])
        .await
        .unwrap();
    let rest: Vec<(Uuid, Uuid)> = client
        .query(
            "SELECT d.webhook_id, a.delivery_id FROM outbox.deliveries d \
             JOIN outbox.delivery_attempts a ON a.delivery_id = d.id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        rest.len(),
        1,
        "one delivery and its attempt remain: {rest:?}"
    );
    assert_eq!(rest[0].0, webhooks[1]);
    assert_eq!(counts(&client).await, (1, 1), "no orphaned attempt is left");
}

#[tokio::test]
async fn truncating_a_referenced_table_alone_fails_and_together_succeeds() {
    let app = TestApp::new().await;
    let client = app.db.client().await;
    four_deliveries_with_attempts(&client, &app).await;

    for (table, pointing) in [
        ("outbox.events", "outbox.deliveries points at it"),
        ("outbox.webhooks", "outbox.deliveries points at it"),
        ("outbox.deliveries", "outbox.delivery_attempts points at it"),
    ] {
        let err = client
            .batch_execute(&format!("TRUNCATE {table}"))
            .await
            .expect_err("truncating a referenced table alone fails");
        let message = err.as_db_error().unwrap().message().to_string();
        assert!(message.contains(pointing), "TRUNCATE {table}: {message}");
        assert_eq!(
            counts(&client).await,
            (4, 4),
            "TRUNCATE {table} changed nothing"
        );
    }

    client
        .batch_execute(
            "TRUNCATE outbox.events, outbox.webhooks, outbox.deliveries, outbox.delivery_attempts",
        )
        .await
        .unwrap();
    assert_eq!(counts(&client).await, (0, 0));
}
