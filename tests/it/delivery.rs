//! End-to-end delivery: bodies, headers, signatures, isolation, the retry
//! schedule and how statuses are classified.

use std::collections::HashSet;
use std::time::Duration;

use uuid::Uuid;
use webhookd::EventType;

use crate::harness::{expected_signature, sample, test_args, wait_until, Receiver, TestApp};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn every_event_type_is_delivered_once_per_active_webhook_signed_and_exact() {
    let app = TestApp::new().await;
    let receiver = Receiver::with_status(200).await;
    let org = Uuid::new_v4();
    let first = app.create_webhook(org, &receiver.url("/first")).await;
    let second = app
        .create_webhook(org, &receiver.url("/second?token=abc"))
        .await;
    let revoked = app.create_webhook(org, &receiver.url("/revoked")).await;
    webhookd::manage::revoke(&mut app.db.client().await, revoked.id)
        .await
        .unwrap();

    let daemon = app.spawn_daemon(app.config(&test_args()));
    let mut emitted = Vec::new();
    for event in EventType::ALL {
        let id = app.emit(org, event.as_str(), sample(event)).await;
        emitted.push((id, event));
    }
    let requests = receiver.wait_for(22, WAIT).await;
    app.wait_for_deliveries("status = 'delivered'", 22).await;
    daemon.stop().await.unwrap();

    let occurred_at =
        regex_lite::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$").unwrap();
    let mut pairs = HashSet::new();
    for request in receiver.requests() {
        let (webhook, secret) = match request.path.as_str() {
            "/first" => (first.id, &first.secret),
            "/second?token=abc" => (second.id, &second.secret),
            other => panic!("unexpected request to {other}"),
        };
        assert_eq!(request.method, "POST");
        assert_eq!(request.header("content-type"), "application/json");
        assert_eq!(
            request.header("user-agent"),
            format!("ProductBridge-Webhooks/{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            request.header("x-productbridge-webhook-id"),
            webhook.to_string()
        );
        assert_eq!(
            request.header("x-productbridge-signature"),
            expected_signature(secret, &request.body)
        );
        Uuid::parse_str(&request.delivery_id()).expect("delivery id is a UUID");

        let body: serde_json::Value = serde_json::from_slice(&request.body).expect("body is JSON");
        let object = body.as_object().unwrap();
        assert_eq!(
            object.len(),
            4,
            "exactly event, organization_id, occurred_at, data: {body}"
        );
        let event: EventType = body["event"].as_str().unwrap().parse().unwrap();
        assert_eq!(request.header("x-productbridge-event"), event.as_str());
        assert_eq!(body["organization_id"], org.to_string());
        assert!(
            occurred_at.is_match(body["occurred_at"].as_str().unwrap()),
            "{body}"
        );
        assert_eq!(body["data"], sample(event));
        assert!(
            pairs.insert((event, webhook)),
            "{event} delivered twice to {webhook}"
        );
    }
    assert_eq!(pairs.len(), 22);
    assert_eq!(requests.len(), 22);
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count(*) FROM outbox.deliveries WHERE webhook_id = '{}'",
                revoked.id
            ))
            .await,
        0,
        "a revoked webhook gets no deliveries"
    );
}

#[tokio::test]
async fn a_rolled_back_event_is_never_delivered_and_organizations_are_isolated() {
    let app = TestApp::new().await;
    let receiver_a = Receiver::with_status(200).await;
    let receiver_b = Receiver::with_status(200).await;
    let (org_a, org_b) = (Uuid::new_v4(), Uuid::new_v4());
    app.create_webhook(org_a, &receiver_a.url("/a")).await;
    app.create_webhook(org_b, &receiver_b.url("/b")).await;
    let daemon = app.spawn_daemon(app.config(&test_args()));

    let mut client = app.db.client().await;
    let tx = client.transaction().await.unwrap();
    let data = serde_json::json!({"id": "rolled-back", "title": "never"});
    webhookd::emit(&tx, org_a, EventType::PostCreated, &data)
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    app.emit(
        org_b,
        "post.created",
        serde_json::json!({"id": "for-b", "title": "b"}),
    )
    .await;
    // A later committed event for A proves the daemon has passed the rolled-back one.
    app.emit(org_a, "post.deleted", serde_json::json!({"id": "marker"}))
        .await;
    receiver_a.wait_for(1, WAIT).await;
    receiver_b.wait_for(1, WAIT).await;
    app.wait_for_deliveries("status = 'delivered'", 2).await;
    daemon.stop().await.unwrap();

    let a = receiver_a.requests();
    let b = receiver_b.requests();
    assert_eq!(a.len(), 1);
    assert_eq!(b.len(), 1);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&a[0].body).unwrap()["data"]["id"],
        "marker"
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&b[0].body).unwrap()["data"]["id"],
        "for-b"
    );
    assert_eq!(app.db.count("SELECT count(*) FROM outbox.events").await, 2);
}

#[tokio::test]
async fn failures_follow_the_retry_schedule_with_the_same_id_and_body_then_fail() {
    let app = TestApp::new().await;
    let receiver = Receiver::with_status(503).await;
    let org = Uuid::new_v4();
    app.create_webhook(org, &receiver.url("/down")).await;
    let base = Duration::from_millis(300);
    let args = webhookd::config::RunArgs {
        retry_base_delay: base,
        // Wake-ups come from the due time, not from polling.
        poll_interval: Duration::from_secs(30),
        ..test_args()
    };
    let daemon = app.spawn_daemon(app.config(&args));
    app.emit(org, "vote.created", sample(EventType::VoteCreated))
        .await;

    let requests = receiver.wait_for(4, WAIT).await;
    app.wait_for_deliveries("status = 'failed'", 1).await;
    daemon.stop().await.unwrap();
    assert_eq!(receiver.requests().len(), 4, "no fifth attempt");

    for pair in requests.windows(2) {
        assert_eq!(pair[0].delivery_id(), pair[1].delivery_id());
        assert_eq!(
            pair[0].body, pair[1].body,
            "identical body bytes on every attempt"
        );
    }
    // Retry k is due base × 2^(k−1) after failure k; allow the 10 % jitter plus
    // 250 ms for the write-back and wake-up on a busy test machine.
    for (k, pair) in requests.windows(2).enumerate() {
        let nominal = base * (1 << k);
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= nominal,
            "retry {} came after {gap:?}, before {nominal:?}",
            k + 1
        );
        assert!(
            gap <= nominal.mul_f64(1.1) + Duration::from_millis(250),
            "retry {} came after {gap:?}, expected about {nominal:?}",
            k + 1
        );
    }

    let client = app.db.client().await;
    let row = client
        .query_one(
            "SELECT attempts, last_status_code, last_error, next_attempt_at IS NULL AS no_next,
                    (SELECT count(*) FROM outbox.delivery_attempts a WHERE a.delivery_id = d.id) AS logged
             FROM outbox.deliveries d",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>("attempts"), 4);
    assert_eq!(row.get::<_, Option<i32>>("last_status_code"), Some(503));
    assert_eq!(
        row.get::<_, Option<String>>("last_error").as_deref(),
        Some("HTTP 503 Service Unavailable")
    );
    assert!(row.get::<_, bool>("no_next"));
    assert_eq!(row.get::<_, i64>("logged"), 4);
}

#[tokio::test]
async fn every_2xx_is_success_and_a_3xx_is_a_failure_that_is_not_followed() {
    let app = TestApp::new().await;
    let receiver = Receiver::start(|request| match request.path.as_str() {
        "/redirect" => (302, vec![("location", "/target".to_string())]),
        path => (
            path.trim_start_matches("/s").parse().unwrap_or(500),
            Vec::new(),
        ),
    })
    .await;
    let org = Uuid::new_v4();
    let mut success = Vec::new();
    for status in [200, 201, 202, 204, 299] {
        success.push(
            app.create_webhook(org, &receiver.url(&format!("/s{status}")))
                .await
                .id,
        );
    }
    let redirect = app.create_webhook(org, &receiver.url("/redirect")).await.id;
    let args = webhookd::config::RunArgs {
        max_retries: 0,
        ..test_args()
    };
    let daemon = app.spawn_daemon(app.config(&args));
    app.emit(org, "comment.created", sample(EventType::CommentCreated))
        .await;
    app.wait_for_deliveries("status <> 'pending'", 6).await;
    daemon.stop().await.unwrap();

    let client = app.db.client().await;
    for webhook in success {
        let row = client
            .query_one("SELECT status, attempts, delivered_at IS NOT NULL FROM outbox.deliveries WHERE webhook_id = $1", &[&webhook])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "delivered");
        assert_eq!(row.get::<_, i32>(1), 1);
        assert!(row.get::<_, bool>(2));
    }
    let row = client
        .query_one("SELECT status, last_status_code, last_error FROM outbox.deliveries WHERE webhook_id = $1", &[&redirect])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "failed");
    assert_eq!(row.get::<_, Option<i32>>(1), Some(302));
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("redirect (HTTP 302) not followed")
    );
    assert!(
        receiver.requests().iter().all(|r| r.path != "/target"),
        "the redirect was followed"
    );
}

#[tokio::test]
async fn an_event_whose_producer_saw_notify_off_is_delivered_without_waiting_for_the_poll() {
    let app = TestApp::new().await;
    let receiver = Receiver::with_status(200).await;
    let org = Uuid::new_v4();
    app.create_webhook(org, &receiver.url("/hook")).await;
    let switch_is = |on: i64| {
        let db = &app.db;
        async move {
            db.count("SELECT last_value FROM outbox.wakeup_notify")
                .await
                == on
        }
    };

    // As if a busy replica had turned producers' NOTIFY off.
    let admin = app.db.client().await;
    admin
        .execute("SELECT setval('outbox.wakeup_notify', 0)", &[])
        .await
        .unwrap();
    // This producer inserts while NOTIFY is off, so its commit notifies nobody.
    let mut producer = app.db.client().await;
    let late = producer.transaction().await.unwrap();
    webhookd::emit(&late, org, EventType::PostDeleted, &json_id("late"))
        .await
        .unwrap();

    // The fallback poll is far away: only the switch's fence can find the event in time.
    let daemon = app.spawn_daemon(app.config(&webhookd::config::RunArgs {
        poll_interval: Duration::from_secs(120),
        ..test_args()
    }));
    wait_until("the idle daemon turns NOTIFY back on", WAIT, || {
        switch_is(1)
    })
    .await;
    // A notified event proves the daemon has looked for work after the switch
    // went on, while the producer was still open.
    app.emit(org, "post.deleted", json_id("early")).await;
    receiver.wait_for(1, WAIT).await;
    app.wait_for_deliveries("status = 'delivered'", 1).await;

    late.commit().await.unwrap();
    let requests = receiver.wait_for(2, WAIT).await;
    daemon.stop().await.unwrap();
    let ids: Vec<serde_json::Value> = requests
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["data"]["id"].clone()
        })
        .collect();
    assert_eq!(ids, ["early", "late"]);
}

fn json_id(id: &str) -> serde_json::Value {
    serde_json::json!({"id": id})
}
