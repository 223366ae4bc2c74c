//! The management API: bearer auth, webhooks, deliveries, redeliver, recover,
//! and the OpenAPI document in docs/ against what the server does.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;
use webhookd::config::RunArgs;
use webhookd::EventType;

use crate::harness::{api_call as call, sample, test_args, DaemonHandle, Receiver, TestApp};

pub(crate) const TOKEN: &str = "test-admin-token-0123456789";
const WAIT: Duration = Duration::from_secs(20);

/// A daemon with the API on a free port.
async fn daemon_with_api(
    app: &TestApp,
    args: RunArgs,
    token: Option<&str>,
) -> (DaemonHandle, SocketAddr) {
    app.spawn_daemon_with_admin(args, token).await
}

#[tokio::test]
async fn the_api_answers_404_when_no_token_is_configured() {
    let app = TestApp::new().await;
    let (daemon, admin) = daemon_with_api(&app, test_args(), None).await;
    let org = Uuid::new_v4();
    let (status, _) = call(
        admin,
        "GET",
        &format!("/v1/organizations/{org}/webhooks"),
        Some(TOKEN),
        None,
    )
    .await;
    daemon.stop().await.unwrap();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn requests_without_the_right_bearer_token_get_401() {
    let app = TestApp::new().await;
    let (daemon, admin) = daemon_with_api(&app, test_args(), Some(TOKEN)).await;
    let path = format!("/v1/organizations/{}/webhooks", Uuid::new_v4());
    for token in [None, Some("wrong-token-0123456789"), Some(&TOKEN[..10])] {
        let (status, body) = call(admin, "GET", &path, token, None).await;
        assert_eq!(status, 401, "{token:?}");
        assert!(body["error"].as_str().unwrap().contains("bearer token"));
    }
    let (status, _) = call(admin, "GET", &path, Some(TOKEN), None).await;
    daemon.stop().await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn webhooks_are_created_listed_and_revoked_through_the_api() {
    let app = TestApp::new().await;
    let (daemon, admin) = daemon_with_api(&app, test_args(), Some(TOKEN)).await;
    let org = Uuid::new_v4();
    let path = format!("/v1/organizations/{org}/webhooks");

    let (status, created) = call(
        admin,
        "POST",
        &path,
        Some(TOKEN),
        Some(json!({"url": "http://127.0.0.1:9/hook", "label": "Prod"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(created["label"], "Prod");
    assert_eq!(created["status"], "active");
    let id = created["id"].as_str().unwrap().to_string();

    let (status, listed) = call(admin, "GET", &path, Some(TOKEN), None).await;
    assert_eq!(status, 200);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].get("secret").is_none(),
        "the secret is shown only at creation"
    );
    assert_eq!(listed[0]["pending_deliveries"], 0);

    for (body, expected) in [
        (json!({"url": "not a url"}), "invalid webhook URL"),
        (json!({"label": "no url"}), "invalid JSON body"),
        (
            json!({"url": "http://127.0.0.1:9/", "colour": "red"}),
            "invalid JSON body",
        ),
    ] {
        let (status, answer) = call(admin, "POST", &path, Some(TOKEN), Some(body)).await;
        assert_eq!(status, 400);
        assert!(
            answer["error"].as_str().unwrap().contains(expected),
            "{answer}"
        );
    }
    let (status, _) = call(
        admin,
        "POST",
        "/v1/organizations/not-a-uuid/webhooks",
        Some(TOKEN),
        Some(json!({"url": "x"})),
    )
    .await;
    assert_eq!(status, 400);

    for _ in 0..2 {
        let (status, body) = call(
            admin,
            "DELETE",
            &format!("/v1/webhooks/{id}"),
            Some(TOKEN),
            None,
        )
        .await;
        assert_eq!((status, body), (204, Value::Null), "revoke is idempotent");
    }
    let (status, _) = call(
        admin,
        "DELETE",
        &format!("/v1/webhooks/{}", Uuid::new_v4()),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, listed) = call(admin, "GET", &path, Some(TOKEN), None).await;
    daemon.stop().await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(listed[0]["status"], "revoked");
    assert_eq!(
        app.db.count("SELECT count(*) FROM outbox.webhooks").await,
        1,
        "rejected creations wrote nothing"
    );
}

#[tokio::test]
async fn deliveries_are_listed_with_attempts_then_redelivered_and_recovered() {
    let app = TestApp::new().await;
    let broken = Receiver::with_status(503).await;
    let org = Uuid::new_v4();
    let webhook = app.create_webhook(org, &broken.url("/down")).await.id;
    let (daemon, admin) = daemon_with_api(
        &app,
        RunArgs {
            max_retries: 0,
            ..test_args()
        },
        Some(TOKEN),
    )
    .await;
    for _ in 0..3 {
        app.emit(org, "post.created", sample(EventType::PostCreated))
            .await;
    }
    app.wait_for_deliveries("status = 'failed'", 3).await;

    let (status, page) = call(
        admin,
        "GET",
        &format!("/v1/webhooks/{webhook}/deliveries?status=failed&limit=2"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let page = page.as_array().unwrap().clone();
    assert_eq!(page.len(), 2);
    assert!(
        page[0]["created_at"].as_str() >= page[1]["created_at"].as_str(),
        "newest first"
    );
    let log = page[0]["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["reason"], "HTTP 503 Service Unavailable");
    assert_eq!(log[0]["outcome"], "http_status");
    // The three may share a creation time (one fan-out statement): the
    // cursor is the last item's time and id.
    let before = page[1]["created_at"].as_str().unwrap().replace(':', "%3A");
    let before_id = page[1]["id"].as_str().unwrap();
    let (_, rest) = call(
        admin,
        "GET",
        &format!(
            "/v1/webhooks/{webhook}/deliveries?status=failed&before={before}&before_id={before_id}"
        ),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(
        rest.as_array().unwrap().len(),
        1,
        "the next page holds the third"
    );
    let (status, _) = call(
        admin,
        "GET",
        &format!("/v1/webhooks/{webhook}/deliveries?status=lost"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = call(
        admin,
        "GET",
        &format!("/v1/webhooks/{}/deliveries", Uuid::new_v4()),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 404);

    let delivery = page[0]["id"].as_str().unwrap();
    let (status, body) = call(
        admin,
        "POST",
        &format!("/v1/deliveries/{delivery}/redeliver"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!((status, body["status"].clone()), (202, json!("pending")));
    app.db
        .wait_for_count(
            "the redelivery is attempted",
            "SELECT count(*) FROM outbox.delivery_attempts",
            4,
            WAIT,
        )
        .await;

    let (status, body) = call(
        admin,
        "POST",
        &format!("/v1/webhooks/{webhook}/recover"),
        Some(TOKEN),
        Some(json!({"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!((status, body["requeued"].clone()), (202, json!(3)));
    app.db
        .wait_for_count(
            "the recovered deliveries are attempted again",
            "SELECT count(*) FROM outbox.delivery_attempts",
            7,
            WAIT,
        )
        .await;
    let (status, _) = call(
        admin,
        "POST",
        &format!("/v1/webhooks/{webhook}/recover"),
        Some(TOKEN),
        Some(json!({"since": "2100-01-01T00:00:00Z", "until": "2000-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(status, 400);
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn redelivering_a_pending_delivery_is_a_conflict() {
    let app = TestApp::new().await;
    let broken = Receiver::with_status(503).await;
    let org = Uuid::new_v4();
    app.create_webhook(org, &broken.url("/down")).await;
    let args = RunArgs {
        retry_base_delay: Duration::from_secs(600),
        ..test_args()
    };
    let (daemon, admin) = daemon_with_api(&app, args, Some(TOKEN)).await;
    app.emit(org, "post.created", sample(EventType::PostCreated))
        .await;
    broken.wait_for(1, WAIT).await;
    let client = app.db.client().await;
    let delivery: Uuid = client
        .query_one("SELECT id FROM outbox.deliveries", &[])
        .await
        .unwrap()
        .get(0);
    let (status, body) = call(
        admin,
        "POST",
        &format!("/v1/deliveries/{delivery}/redeliver"),
        Some(TOKEN),
        None,
    )
    .await;
    let (unknown, _) = call(
        admin,
        "POST",
        &format!("/v1/deliveries/{}/redeliver", Uuid::new_v4()),
        Some(TOKEN),
        None,
    )
    .await;
    daemon.stop().await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("pending"));
    assert_eq!(unknown, 404);
}

#[tokio::test]
async fn every_operation_in_the_openapi_document_is_served_and_answers_a_documented_status() {
    let document: Value = serde_json::from_str(include_str!("../../docs/openapi.json"))
        .expect("docs/openapi.json is JSON");
    let app = TestApp::new().await;
    let (daemon, admin) = daemon_with_api(&app, test_args(), Some(TOKEN)).await;
    let mut operations = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        let methods = item.as_object().unwrap().iter();
        for (method, operation) in
            methods.filter(|(key, _)| ["get", "post", "delete"].contains(&key.as_str()))
        {
            let concrete = path
                .replace("{org}", &Uuid::new_v4().to_string())
                .replace("{id}", &Uuid::new_v4().to_string());
            let body = match (method.as_str(), path.ends_with("recover")) {
                ("post", true) => {
                    Some(json!({"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"}))
                }
                ("post", false) => Some(json!({"url": "http://127.0.0.1:9/", "label": "doc"})),
                _ => None,
            };
            let (status, answer) =
                call(admin, &method.to_uppercase(), &concrete, Some(TOKEN), body).await;
            assert!(
                operation["responses"].get(status.to_string()).is_some(),
                "{method} {path} answered {status} ({answer}), which the document does not list"
            );
            let (unauthorized, _) =
                call(admin, &method.to_uppercase(), &concrete, None, None).await;
            assert_eq!(unauthorized, 401, "{method} {path} without a token");
            assert!(
                operation["responses"].get("401").is_some(),
                "{method} {path} documents 401"
            );
            operations += 1;
        }
    }
    daemon.stop().await.unwrap();
    assert_eq!(operations, 7, "the seven operations of docs/CONTRACT.md §7");
}
