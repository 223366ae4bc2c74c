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

/// One batch's health for one webhook, folded as the completer does.
async fn fold(
    client: &tokio_postgres::Client,
    webhook: Uuid,
    success: Option<&str>,
    failure: Option<(&str, &str)>,
) {
    let at = |text: &str| text.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    webhookd::db::queue::fold_webhook_health(
        client,
        &[webhookd::db::queue::WebhookHealth {
            webhook_id: webhook,
            last_success_at: success.map(at),
            last_failure_at: failure.map(|(time, _)| at(time)),
            last_failure_reason: failure.map(|(_, reason)| reason.to_string()),
        }],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn webhook_status_folds_only_forward_in_any_order_and_leaves_untouched_rows_alone() {
    let app = TestApp::new().await;
    let webhook = app
        .create_webhook(Uuid::new_v4(), "http://127.0.0.1:9/x")
        .await;
    let client = app.db.client().await;
    let shown = || async {
        let row = client
            .query_one(
                "SELECT last_success_at::text, last_failure_at::text, last_failure_reason,
                        xmin::text || '/' || xmax::text
                 FROM outbox.webhooks WHERE id = $1",
                &[&webhook.id],
            )
            .await
            .unwrap();
        let field = |i: usize| row.get::<_, Option<String>>(i);
        (field(0), field(1), field(2), field(3).unwrap())
    };
    let t = |s: &str| format!("2026-01-01T00:00:{s}Z");
    fold(&client, webhook.id, Some(&t("10")), None).await;
    fold(&client, webhook.id, None, Some((&t("12"), "HTTP 503"))).await;
    let failing = shown().await;
    assert_eq!(failing.0.as_deref(), Some("2026-01-01 00:00:10+00"));
    assert_eq!(failing.2.as_deref(), Some("HTTP 503"));
    // A batch from a slower replica arrives late: nothing goes backwards,
    // and the row is not even locked (a lock would write its xmax).
    fold(
        &client,
        webhook.id,
        Some(&t("09")),
        Some((&t("11"), "timeout")),
    )
    .await;
    assert_eq!(shown().await, failing);
    // A newer failure replaces the reason; a newer success shows at once.
    fold(
        &client,
        webhook.id,
        None,
        Some((&t("13"), "connection refused")),
    )
    .await;
    assert_eq!(shown().await.2.as_deref(), Some("connection refused"));
    fold(&client, webhook.id, Some(&t("14")), None).await;
    let healthy = shown().await;
    assert_eq!(healthy.0.as_deref(), Some("2026-01-01 00:00:14+00"));
    assert_eq!(
        healthy.2.as_deref(),
        Some("connection refused"),
        "the last failure's reason stays"
    );
}
