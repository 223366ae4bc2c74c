//! Receiver outages (docs/CONTRACT.md §3, §4): Retry-After on 429 and 503,
//! 410 Gone disabling a webhook, `--disable-after` disabling one that keeps
//! failing, and `webhooks enable` + `recover` bringing its backlog back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use uuid::Uuid;
use webhookd::config::RunArgs;
use webhookd::delivery::sender::outcome::GONE_REASON;

use crate::harness::process::{create_args, message, Outcome, Replica, Webhookd};
use crate::harness::{api_call, test_args, wait_until, Receiver, TestApp};

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "test-admin-token-0123456789";

/// One value of the test database.
async fn value<T: for<'a> tokio_postgres::types::FromSql<'a>>(app: &TestApp, sql: &str) -> T {
    app.db
        .client()
        .await
        .query_one(sql, &[])
        .await
        .expect(sql)
        .get(0)
}

/// The webhook's status as `outbox.webhook_status` shows it.
async fn webhook_status(app: &TestApp, webhook: Uuid) -> String {
    value(
        app,
        &format!("SELECT status FROM outbox.webhook_status WHERE webhook_id = '{webhook}'"),
    )
    .await
}

async fn wait_disabled(app: &TestApp, webhook: Uuid) {
    wait_until("the webhook is disabled", WAIT, || async {
        webhook_status(app, webhook).await == "disabled"
    })
    .await;
}

/// `webhookd ARGS` (split at spaces) on the test database with its key.
async fn cli(app: &TestApp, args: &str) -> Outcome {
    let args: Vec<&str> = args.split_whitespace().collect();
    Webhookd::new(&app.db.url, &args)
        .key(&app.key)
        .output()
        .await
}

/// A post.created whose data carries `id`, to tell deliveries apart.
fn post(id: &str) -> Value {
    json!({"id": id, "title": "t"})
}

#[tokio::test]
async fn retry_after_pushes_the_next_attempt_back_within_the_cap_and_a_malformed_one_is_ignored() {
    let app = TestApp::new().await;
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(90));
    let receiver = Receiver::start(move |request| match request.path.as_str() {
        "/seconds" => (429, vec![("retry-after", "30".to_string())]),
        "/capped" => (503, vec![("retry-after", "7200".to_string())]),
        "/date" => (503, vec![("retry-after", date.clone())]),
        _ => (429, vec![("retry-after", "in a while".to_string())]),
    })
    .await;
    let org = Uuid::new_v4();
    let mut webhooks = Vec::new();
    for path in ["/seconds", "/capped", "/date", "/malformed"] {
        webhooks.push(app.create_webhook(org, &receiver.url(path)).await.id);
    }
    let args = RunArgs {
        max_retry_after: Duration::from_secs(120),
        max_retries: 100,
        ..test_args()
    };
    let daemon = app.spawn_daemon(app.config(&args));
    app.emit(org, "post.created", post("p1")).await;
    // The malformed one follows the 200 ms schedule: a second attempt comes.
    wait_until(
        "two attempts for the malformed Retry-After",
        WAIT,
        || async {
            receiver
                .requests()
                .iter()
                .filter(|r| r.path == "/malformed")
                .count()
                >= 2
        },
    )
    .await;
    app.wait_for_deliveries("attempts >= 1 AND last_status_code IS NOT NULL", 4)
        .await;
    daemon.stop().await.unwrap();

    // (asked in the log, least and most delay honoured, in seconds)
    let expected = [
        (Some(30), 30.0, 31.0),
        (Some(7200), 120.0, 121.0),
        (Some(89), 88.0, 91.0),
    ];
    for (webhook, (asked, least, most)) in webhooks.iter().zip(expected) {
        let row = app
            .db
            .client()
            .await
            .query_one(
                "SELECT a.retry_after_seconds,
                        extract(epoch FROM d.next_attempt_at - a.started_at)::float8 AS after_start,
                        extract(epoch FROM d.next_attempt_at - now())::float8 AS from_now
                 FROM outbox.deliveries d
                 JOIN outbox.attempt_log a ON a.delivery_id = d.id
                 WHERE d.webhook_id = $1 AND d.status = 'pending'",
                &[webhook],
            )
            .await
            .unwrap();
        let logged: Option<i32> = row.get(0);
        let (after_start, from_now): (f64, f64) = (row.get(1), row.get(2));
        match asked {
            Some(89) => assert!(matches!(logged, Some(88..=90)), "{logged:?}"),
            _ => assert_eq!(logged, asked),
        }
        assert!(
            after_start >= least,
            "due {after_start}s after the attempt, asked {least}s"
        );
        assert!(from_now <= most, "due in {from_now}s, at most {most}s");
    }
    let malformed: i64 = value(
        &app,
        &format!(
            "SELECT count(*) FROM outbox.attempt_log WHERE webhook_id = '{}' \
             AND retry_after_seconds IS NULL AND status_code = 429",
            webhooks[3]
        ),
    )
    .await;
    assert!(malformed >= 2, "the malformed header is logged as none");
    for path in ["/seconds", "/capped", "/date"] {
        let sent = receiver
            .requests()
            .iter()
            .filter(|r| r.path == path)
            .count();
        assert_eq!(sent, 1, "{path} was not tried again before it asked");
    }
}

#[tokio::test]
async fn gone_fails_at_once_disables_the_webhook_and_enable_through_the_api_undoes_it() {
    let app = TestApp::new().await;
    let receiver = Receiver::start(|request| {
        let status = if request.path == "/gone" { 410 } else { 200 };
        (status, Vec::new())
    })
    .await;
    let org = Uuid::new_v4();
    let gone = app.create_webhook(org, &receiver.url("/gone")).await.id;
    app.create_webhook(org, &receiver.url("/ok")).await;
    let revoked = app.create_webhook(org, &receiver.url("/revoked")).await.id;
    webhookd::manage::revoke(&mut app.db.client().await, revoked)
        .await
        .unwrap();
    let (daemon, admin) = app
        .spawn_daemon_with_admin(
            RunArgs {
                max_retries: 5,
                ..test_args()
            },
            Some(TOKEN),
        )
        .await;
    app.emit(org, "post.created", post("p1")).await;
    wait_disabled(&app, gone).await;
    app.wait_for_deliveries("status = 'failed' AND attempts = 1", 1)
        .await;
    let last_error: String = value(
        &app,
        "SELECT last_error FROM outbox.deliveries WHERE status = 'failed'",
    )
    .await;
    assert_eq!(last_error, GONE_REASON);

    // New events fan out as failed, naming the disabled webhook; nothing is sent.
    app.emit(org, "post.created", post("p2")).await;
    app.wait_for_deliveries("status = 'delivered'", 2).await;
    app.wait_for_deliveries(
        &format!("status = 'failed' AND last_error = 'webhook disabled: {GONE_REASON}'"),
        1,
    )
    .await;
    let to_gone = receiver
        .requests()
        .iter()
        .filter(|r| r.path == "/gone")
        .count();
    assert_eq!(to_gone, 1, "one request to the gone receiver, no retry");

    let metrics = crate::harness::http_request(admin, "GET", "/metrics", "", "").await;
    let counted = r#"webhookd_webhooks_disabled_total{cause="gone"} 1"#;
    assert!(metrics.lines().any(|l| l == counted), "{metrics}");

    let shown = listed_webhook(admin, org, gone).await;
    assert_eq!(shown["status"], "disabled");
    assert_eq!(shown["disabled_reason"], GONE_REASON);
    assert!(shown["disabled_at"].is_string(), "{shown}");

    let recover = json!({"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"});
    let path = |id: Uuid, what: &str| format!("/v1/webhooks/{id}/{what}");
    let (status, answer) = api_call(
        admin,
        "POST",
        &path(gone, "recover"),
        Some(TOKEN),
        Some(recover.clone()),
    )
    .await;
    assert_eq!(status, 409, "recover before enable: {answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("enable it first"),
        "{answer}"
    );
    let (status, _) = api_call(admin, "POST", &path(revoked, "enable"), Some(TOKEN), None).await;
    assert_eq!(status, 409, "a revoked webhook cannot be enabled");
    let (status, _) = api_call(
        admin,
        "POST",
        &path(Uuid::new_v4(), "enable"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 404);
    for _ in 0..2 {
        let (status, _) = api_call(admin, "POST", &path(gone, "enable"), Some(TOKEN), None).await;
        assert_eq!(status, 204, "enable, and again: a no-op");
    }
    let shown = listed_webhook(admin, org, gone).await;
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["disabled_reason"], Value::Null);
    assert_eq!(webhook_status(&app, revoked).await, "revoked");
    let (status, answer) = api_call(
        admin,
        "POST",
        &path(gone, "recover"),
        Some(TOKEN),
        Some(recover),
    )
    .await;
    assert_eq!((status, answer), (202, json!({"requeued": 2})));
    daemon.stop().await.unwrap();
}

/// `webhook` as the API lists it.
async fn listed_webhook(admin: std::net::SocketAddr, org: Uuid, webhook: Uuid) -> Value {
    let path = format!("/v1/organizations/{org}/webhooks");
    let (status, webhooks) = api_call(admin, "GET", &path, Some(TOKEN), None).await;
    assert_eq!(status, 200, "{webhooks}");
    let listed = webhooks.as_array().unwrap().iter();
    listed
        .clone()
        .find(|w| w["id"] == webhook.to_string())
        .cloned()
        .unwrap_or_else(|| panic!("{webhook} is not listed: {webhooks}"))
}

/// A receiver down (500) until `up` is set.
async fn outage_receiver(up: Arc<AtomicBool>) -> Receiver {
    Receiver::start(move |_| {
        let status = if up.load(Ordering::SeqCst) { 200 } else { 500 };
        (status, Vec::new())
    })
    .await
}

#[tokio::test]
async fn a_webhook_failing_for_disable_after_is_disabled_then_enable_and_recover_deliver_its_backlog_in_order(
) {
    let app = TestApp::new().await;
    let up = Arc::new(AtomicBool::new(false));
    let receiver = outage_receiver(up.clone()).await;
    let org = Uuid::new_v4().to_string();
    let created = Webhookd::new(&app.db.url, &create_args(&org, &receiver.url("/hook")))
        .key(&app.key)
        .output()
        .await
        .json();
    let webhook = created["id"].as_str().unwrap().to_string();
    let id = Uuid::parse_str(&webhook).unwrap();
    let flags = [
        "--disable-after",
        "2s",
        "--retry-base-delay",
        "200ms",
        "--max-retries",
        "100",
        "--max-in-flight-per-webhook",
        "1",
        "--poll-interval",
        "500ms",
    ];
    let mut replica = Replica::start(&app.db.url, &app.key, &flags).await;
    replica.wait_ready().await;
    let org_id = Uuid::parse_str(&org).unwrap();
    app.emit(org_id, "post.created", post("p1")).await;
    wait_disabled(&app, id).await;
    let reason: String = value(
        &app,
        &format!("SELECT disabled_reason FROM outbox.webhooks WHERE id = '{webhook}'"),
    )
    .await;
    assert!(
        reason.starts_with("every delivery failed since "),
        "{reason}"
    );
    assert!(
        reason.contains("(--disable-after 2s); last error: HTTP 500 Internal Server Error"),
        "{reason}"
    );
    app.wait_for_deliveries(
        "status = 'failed' AND last_error LIKE 'webhook disabled: every delivery failed%'",
        1,
    )
    .await;

    let sent = receiver.count();
    app.emit(org_id, "post.created", post("p2")).await;
    app.emit(org_id, "post.created", post("p3")).await;
    app.wait_for_deliveries(
        "status = 'failed' AND last_error LIKE 'webhook disabled: %'",
        3,
    )
    .await;
    assert_eq!(
        receiver.count(),
        sent,
        "nothing is sent to a disabled webhook"
    );

    let metrics = crate::harness::http_request(replica.admin, "GET", "/metrics", "", "").await;
    let counted = r#"webhookd_webhooks_disabled_total{cause="failing"} 1"#;
    assert!(metrics.lines().any(|l| l == counted), "{metrics}");
    wait_until("the log says the webhook was disabled", WAIT, || async {
        replica.log_events().iter().any(|event| {
            message(event).starts_with("webhook disabled")
                && event["webhook_id"] == webhook.as_str()
                && event["level"] == "WARN"
        })
    })
    .await;
    assert!(
        !replica.log_text().contains("whsec_"),
        "no secret in the log"
    );

    up.store(true, Ordering::SeqCst);
    let enabled = cli(&app, &format!("webhooks enable {webhook}")).await;
    assert!(
        enabled.succeeded().contains("enabled"),
        "{}",
        enabled.stdout
    );
    let again = cli(&app, &format!("webhooks enable {webhook}")).await;
    assert!(
        again.succeeded().contains("already active"),
        "{}",
        again.stdout
    );
    let listed = cli(&app, &format!("webhooks list --org {org}"))
        .await
        .json();
    assert_eq!(listed[0]["status"], "active");
    assert_eq!(listed[0]["disabled_at"], Value::Null);
    let since = "--since 2000-01-01T00:00:00Z";
    let recovered = cli(&app, &format!("recover --webhook {webhook} {since}")).await;
    assert_eq!(recovered.json(), json!({"requeued": 3}));
    app.wait_for_deliveries("status = 'delivered'", 3).await;
    let delivered: Vec<String> = receiver
        .requests()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["data"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        delivered,
        ["p1", "p2", "p3"],
        "the backlog in order of creation"
    );

    let listing = cli(
        &app,
        &format!("deliveries list --webhook {webhook} --limit 5"),
    )
    .await
    .json();
    let listing = listing.as_array().unwrap();
    assert_eq!(listing.len(), 3);
    assert!(listing
        .iter()
        .all(|d| d["status"] == "delivered" && !d["attempt_log"].as_array().unwrap().is_empty()));
    assert!(
        listing[0]["created_at"].as_str() >= listing[2]["created_at"].as_str(),
        "newest first"
    );
    replica.signal("-TERM");
    assert!(replica.exit_status().await.success());
}

#[tokio::test]
async fn bad_outage_input_exits_2_with_one_line_and_changes_nothing() {
    let app = TestApp::new().await;
    let receiver = Receiver::with_status(200).await;
    let org = Uuid::new_v4();
    let webhook = app
        .create_webhook(org, &receiver.url("/hook"))
        .await
        .id
        .to_string();
    cli(&app, &format!("webhooks revoke {webhook}"))
        .await
        .succeeded();
    let refused = cli(&app, &format!("webhooks enable {webhook}")).await;
    assert!(
        refused.failed_with(2).contains("revoked"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        webhook_status(&app, Uuid::parse_str(&webhook).unwrap()).await,
        "revoked"
    );
    let unknown = cli(&app, &format!("webhooks enable {}", Uuid::new_v4())).await;
    assert!(
        unknown.failed_with(2).contains("no webhook"),
        "{}",
        unknown.stderr
    );

    for (args, says) in [
        (format!("recover --webhook {webhook} --since 2026-05-09T12:00:00Z --until 2026-05-09T11:00:00Z"), "earlier"),
        (format!("recover --webhook {webhook} --since yesterday"), "RFC 3339"),
        (format!("deliveries list --webhook {webhook} --status lost"), "status must be one of"),
        (format!("deliveries list --webhook {webhook} --limit 0"), "limit"),
        ("run --disable-after -1d".to_string(), "negative"),
        ("run --disable-after 400d".to_string(), "too long"),
        ("run --max-retry-after 0s".to_string(), "greater than zero"),
        ("run --max-retry-after soon".to_string(), "not a duration"),
    ] {
        let outcome = cli(&app, &args).await;
        let line = outcome.failed_with(2);
        assert!(line.contains(says), "`{args}`: {line}");
    }
    let changed: i64 = value(&app, "SELECT count(*) FROM outbox.deliveries").await;
    assert_eq!(changed, 0);
}
