//! The dashboard's contract: its views, and a role that reads them and
//! nothing that holds secret material.

use tokio_postgres::error::SqlState;
use uuid::Uuid;
use webhookd::EventType;

use crate::harness::{sample, test_args, Receiver, TestApp};

#[tokio::test]
async fn the_dashboard_role_reads_its_views_and_nothing_else() {
    let app = TestApp::new().await;
    let receiver = Receiver::with_status(200).await;
    let org = Uuid::new_v4();
    app.create_webhook(org, &receiver.url("/hook")).await;
    let daemon = app.spawn_daemon(app.config(&test_args()));
    app.emit(org, "post.created", sample(EventType::PostCreated))
        .await;
    app.wait_for_deliveries("status = 'delivered'", 1).await;
    daemon.stop().await.unwrap();

    let client = app.db.client().await;
    client
        .batch_execute("SET ROLE outbox_dashboard")
        .await
        .unwrap();
    for (view, expected) in [
        ("outbox.webhook_status", 1i64),
        ("outbox.delivery_log", 1),
        ("outbox.attempt_log", 1),
    ] {
        let rows: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {view} WHERE organization_id = $1"),
                &[&org],
            )
            .await
            .unwrap_or_else(|err| panic!("the dashboard role reads {view}: {err}"))
            .get(0);
        assert_eq!(rows, expected, "{view}");
    }
    let log = client
        .query_one(
            "SELECT event, status, attempts FROM outbox.delivery_log",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(log.get::<_, String>(0), "post.created");
    assert_eq!(log.get::<_, String>(1), "delivered");
    for table in [
        "outbox.webhooks",
        "outbox.deliveries",
        "outbox.events",
        "outbox.delivery_attempts",
    ] {
        let err = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect_err("the dashboard role must not read the tables");
        assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{table}"
        );
    }
    let secret_columns: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.columns
             WHERE table_schema = 'outbox'
               AND table_name IN ('webhook_status', 'delivery_log', 'attempt_log')
               AND column_name LIKE '%secret%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(secret_columns, 0);
}
