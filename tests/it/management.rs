//! Webhook management: status fields, revoke, redeliver.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;
use webhookd::config::RunArgs;
use webhookd::EventType;

use crate::harness::{sample, test_args, wait_until, Receiver, TestApp};

const WAIT: Duration = Duration::from_secs(20);

async fn status_row(app: &TestApp, webhook: Uuid) -> tokio_postgres::Row {
    app.db
        .client()
        .await
        .query_one(
            "SELECT * FROM outbox.webhook_status WHERE webhook_id = $1",
            &[&webhook],
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn webhook_status_shows_last_success_last_failure_and_counts_and_revoke_cancels_pending() {
    let app = TestApp::new().await;
    let healthy = Receiver::with_status(200).await;
    let broken = Receiver::with_status(500).await;
    let org = Uuid::new_v4();
    let good = app.create_webhook(org, &healthy.url("/ok")).await.id;
    let bad = app.create_webhook(org, &broken.url("/down")).await.id;

    // Phase 1: no retries, so the broken webhook's delivery fails for good.
    let daemon = app.spawn_daemon(app.config(&RunArgs {
        max_retries: 0,
        ..test_args()
    }));
    app.emit(org, "post.created", sample(EventType::PostCreated))
        .await;
    app.wait_for_deliveries("status <> 'pending'", 2).await;
    daemon.stop().await.unwrap();

    // Phase 2: a long retry delay, so the next failure stays pending.
    let daemon = app.spawn_daemon(app.config(&RunArgs {
        retry_base_delay: Duration::from_secs(600),
        ..test_args()
    }));
    app.emit(org, "post.deleted", sample(EventType::PostDeleted))
        .await;
    wait_until("the second failure is recorded", WAIT, || async {
        app.db
            .count("SELECT count(*) FROM outbox.delivery_attempts WHERE outcome = 'http_status'")
            .await
            == 2
            && app
                .db
                .count("SELECT count(*) FROM outbox.deliveries WHERE status = 'delivered'")
                .await
                == 2
    })
    .await;

    let good_row = status_row(&app, good).await;
    assert_eq!(good_row.get::<_, String>("status"), "active");
    assert!(good_row
        .get::<_, Option<chrono::DateTime<chrono::Utc>>>("last_success_at")
        .is_some());
    assert!(good_row
        .get::<_, Option<chrono::DateTime<chrono::Utc>>>("last_failure_at")
        .is_none());
    assert_eq!(good_row.get::<_, i64>("pending_deliveries"), 0);
    assert_eq!(good_row.get::<_, i64>("failed_deliveries"), 0);

    let bad_row = status_row(&app, bad).await;
    assert!(bad_row
        .get::<_, Option<chrono::DateTime<chrono::Utc>>>("last_success_at")
        .is_none());
    assert!(bad_row
        .get::<_, Option<chrono::DateTime<chrono::Utc>>>("last_failure_at")
        .is_some());
    assert_eq!(
        bad_row
            .get::<_, Option<String>>("last_failure_reason")
            .as_deref(),
        Some("HTTP 500 Internal Server Error")
    );
    assert_eq!(bad_row.get::<_, i64>("pending_deliveries"), 1);
    assert_eq!(bad_row.get::<_, i64>("failed_deliveries"), 1);
    assert_eq!(bad_row.get::<_, String>("label"), "test");
    assert_eq!(bad_row.get::<_, String>("url"), broken.url("/down"));

    // Revoke: the pending retry is cancelled at once and never sent.
    let revoked = webhookd::manage::revoke(&mut app.db.client().await, bad)
        .await
        .unwrap();
    assert!(revoked.newly_revoked);
    assert_eq!(revoked.cancelled, 1);
    let again = webhookd::manage::revoke(&mut app.db.client().await, bad)
        .await
        .unwrap();
    assert!(!again.newly_revoked, "revoke is idempotent");
    let bad_row = status_row(&app, bad).await;
    assert_eq!(bad_row.get::<_, String>("status"), "revoked");
    assert_eq!(bad_row.get::<_, i64>("pending_deliveries"), 0);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM outbox.deliveries WHERE status = 'cancelled' AND next_attempt_at IS NULL")
            .await,
        1
    );

    // Events after the revoke get no delivery for it.
    app.emit(org, "vote.created", sample(EventType::VoteCreated))
        .await;
    healthy.wait_for(3, WAIT).await;
    app.db
        .wait_for_count(
            "the new event is fanned out",
            "SELECT count(*) FROM outbox.events WHERE fanned_out_at IS NULL",
            0,
            WAIT,
        )
        .await;
    daemon.stop().await.unwrap();
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM outbox.deliveries WHERE webhook_id = '{bad}'"
            ))
            .await,
        2
    );
    assert_eq!(
        broken.requests().len(),
        2,
        "nothing sent to the revoked webhook after the revoke"
    );
}

#[tokio::test]
async fn redeliver_puts_a_failed_delivery_back_with_the_same_id_and_body() {
    let app = TestApp::new().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    // Fails the first request, accepts the rest.
    let receiver = Receiver::start(move |_| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        (if n == 0 { 500 } else { 200 }, Vec::new())
    })
    .await;
    let org = Uuid::new_v4();
    app.create_webhook(org, &receiver.url("/hook")).await;
    let daemon = app.spawn_daemon(app.config(&RunArgs {
        max_retries: 0,
        ..test_args()
    }));
    app.emit(org, "comment.deleted", sample(EventType::CommentDeleted))
        .await;
    app.wait_for_deliveries("status = 'failed'", 1).await;
    let client = app.db.client().await;
    let delivery: Uuid = client
        .query_one("SELECT id FROM outbox.deliveries", &[])
        .await
        .unwrap()
        .get(0);

    webhookd::manage::redeliver(&client, delivery)
        .await
        .unwrap();
    webhookd::db::notify_wakeup(&client).await.unwrap();
    app.wait_for_deliveries("status = 'delivered'", 1).await;
    daemon.stop().await.unwrap();

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].delivery_id(), delivery.to_string());
    assert_eq!(requests[1].delivery_id(), delivery.to_string());
    assert_eq!(requests[0].body, requests[1].body);

    // Delivered can be redelivered again; a pending one or an unknown id cannot.
    webhookd::manage::redeliver(&client, delivery)
        .await
        .unwrap();
    let pending = webhookd::manage::redeliver(&client, delivery)
        .await
        .unwrap_err();
    assert!(pending.to_string().contains("is pending"), "{pending}");
    let unknown = webhookd::manage::redeliver(&client, Uuid::new_v4())
        .await
        .unwrap_err();
    assert_eq!(unknown.kind(), webhookd::ErrorKind::NotFound, "{unknown}");
}

async fn http_get(address: std::net::SocketAddr, path: &str) -> String {
    crate::harness::http_request(address, "GET", path, "", "").await
}

#[tokio::test]
async fn healthz_answers_and_readyz_reports_ready_once_listen_is_active() {
    let app = TestApp::new().await;
    let (daemon, admin) = app
        .spawn_daemon_with_admin(RunArgs { ..test_args() }, None)
        .await;
    wait_until("/readyz says ready", WAIT, || async {
        match tokio::net::TcpStream::connect(admin).await {
            Ok(_) => http_get(admin, "/readyz").await.starts_with("HTTP/1.1 200"),
            Err(_) => false,
        }
    })
    .await;
    let ready = http_get(admin, "/readyz").await;
    assert!(
        ready.contains(r#""database":"ok""#) && ready.contains(r#""listen":"active""#),
        "{ready}"
    );
    assert!(http_get(admin, "/healthz")
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(http_get(admin, "/nope").await.starts_with("HTTP/1.1 404"));
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_count_attempts_by_outcome_and_report_the_queue() {
    let app = TestApp::new().await;
    let healthy = Receiver::with_status(200).await;
    let broken = Receiver::with_status(503).await;
    let org = Uuid::new_v4();
    app.create_webhook(org, &healthy.url("/ok")).await;
    app.create_webhook(org, &broken.url("/down")).await;
    let (daemon, admin) = app
        .spawn_daemon_with_admin(
            RunArgs {
                retry_base_delay: Duration::from_secs(600),
                ..test_args()
            },
            None,
        )
        .await;
    app.emit(org, "vote.deleted", sample(EventType::VoteDeleted))
        .await;
    app.wait_for_deliveries("status = 'delivered'", 1).await;
    app.db
        .wait_for_count(
            "the failure is recorded",
            "SELECT count(*) FROM outbox.delivery_attempts",
            2,
            WAIT,
        )
        .await;
    let metrics = http_get(admin, "/metrics").await;
    daemon.stop().await.unwrap();
    for line in [
        r#"webhookd_delivery_attempts_total{outcome="delivered"} 1"#,
        r#"webhookd_delivery_attempts_total{outcome="http_status"} 1"#,
        "webhookd_deliveries_pending 1",
        "webhookd_deliveries_due 0",
        "webhookd_deliveries_failed 0",
        "webhookd_database_up 1",
        "webhookd_fanned_out_events_total 1",
        "webhookd_attempt_duration_seconds_count 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing `{line}` in:\n{metrics}"
        );
    }
    assert!(!metrics.contains("whsec_"), "no secret in metrics");
}
