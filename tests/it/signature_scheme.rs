//! Choosing a webhook's signature scheme (docs/CONTRACT.md §1, §4–§7): the
//! `--signature-scheme` flag of `webhooks create`, the API's
//! `signature_scheme` field, the secret's form per scheme, and the column in
//! `webhooks list`, the API's webhook objects and `outbox.webhook_status`.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::api::TOKEN;
use crate::harness::api_call as call;
use crate::harness::process::{create_args, Webhookd};
use crate::harness::{test_args, TestApp};

/// A URL that passes validation with `--allow-private-targets` and is never contacted.
const UNUSED_TARGET: &str = "http://127.0.0.1:9/x";

/// `webhooks create` through the binary with `extra` flags.
fn create(app: &TestApp, org: &str, extra: &[&str]) -> Webhookd {
    Webhookd::new(
        &app.db.url,
        &[create_args(org, UNUSED_TARGET), extra.to_vec()].concat(),
    )
    .key(&app.key)
}

/// The random part of a secret decodes, in its scheme's form, to 32 bytes.
fn assert_secret_form(secret: &str, scheme: &str) {
    let encoded = secret.strip_prefix("whsec_").expect("whsec_ prefix");
    let decoded = match scheme {
        "standard" => STANDARD.decode(encoded),
        _ => URL_SAFE_NO_PAD.decode(encoded),
    };
    assert_eq!(
        decoded.map(|key| key.len()).ok(),
        Some(32),
        "{scheme}: {secret}"
    );
}

/// The `signature_scheme` of each listed webhook, in order.
fn schemes(listed: &Value) -> Vec<&str> {
    let webhooks = listed.as_array().expect("a JSON array");
    webhooks
        .iter()
        .map(|webhook| webhook["signature_scheme"].as_str().unwrap())
        .collect()
}

async fn status_view_schemes(app: &TestApp) -> Vec<(Uuid, String)> {
    let client = app.db.client().await;
    let rows = client
        .query(
            "SELECT webhook_id, signature_scheme FROM outbox.webhook_status ORDER BY created_at",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|row| (row.get(0), row.get(1))).collect()
}

#[tokio::test]
async fn the_cli_creates_webhooks_of_either_scheme_and_refuses_any_other() {
    let app = TestApp::new().await;
    let org = Uuid::new_v4().to_string();
    let default = create(&app, &org, &[]).output().await.json();
    let standard = create(&app, &org, &["--signature-scheme", "standard"])
        .output()
        .await
        .json();
    let explicit = create(&app, &org, &["--signature-scheme", "productbridge"])
        .output()
        .await
        .json();
    for (created, scheme) in [
        (&default, "productbridge"),
        (&standard, "standard"),
        (&explicit, "productbridge"),
    ] {
        assert_eq!(created["signature_scheme"], scheme, "{created}");
        assert_secret_form(created["secret"].as_str().unwrap(), scheme);
    }

    for bad in ["Standard", "svix", ""] {
        let outcome = create(&app, &org, &["--signature-scheme", bad])
            .output()
            .await;
        let line = outcome.failed_with(2);
        assert!(line.contains("productbridge, standard"), "{bad:?}: {line}");
    }
    let listed = Webhookd::new(&app.db.url, &["webhooks", "list", "--org", &org])
        .output()
        .await
        .json();
    assert_eq!(
        schemes(&listed),
        ["productbridge", "standard", "productbridge"]
    );
    let id = |created: &Value| created["id"].as_str().unwrap().parse::<Uuid>().unwrap();
    assert_eq!(
        status_view_schemes(&app).await,
        [
            (id(&default), "productbridge".to_string()),
            (id(&standard), "standard".to_string()),
            (id(&explicit), "productbridge".to_string()),
        ],
        "outbox.webhook_status shows the scheme; refused creations left nothing"
    );
}

#[tokio::test]
async fn the_api_takes_the_scheme_in_the_create_body_and_shows_it_on_every_webhook() {
    let app = TestApp::new().await;
    let (daemon, admin) = app.spawn_daemon_with_admin(test_args(), Some(TOKEN)).await;
    let org = Uuid::new_v4();
    let path = format!("/v1/organizations/{org}/webhooks");
    let post = |body: Value| {
        let path = path.clone();
        async move { call(admin, "POST", &path, Some(TOKEN), Some(body)).await }
    };

    let (status, standard) =
        post(json!({"url": UNUSED_TARGET, "signature_scheme": "standard"})).await;
    assert_eq!(status, 201, "{standard}");
    assert_eq!(standard["signature_scheme"], "standard");
    assert_secret_form(standard["secret"].as_str().unwrap(), "standard");
    let (status, default) = post(json!({"url": UNUSED_TARGET})).await;
    assert_eq!(status, 201, "{default}");
    assert_eq!(default["signature_scheme"], "productbridge");
    assert_secret_form(default["secret"].as_str().unwrap(), "productbridge");

    for bad in [json!("STANDARD"), json!(1), json!(null)] {
        let (status, body) =
            post(json!({"url": UNUSED_TARGET, "signature_scheme": bad.clone()})).await;
        // null is "not given"; anything else that is not a scheme is refused.
        let expected = if bad.is_null() { 201 } else { 400 };
        assert_eq!(status, expected, "{bad}: {body}");
    }
    let (status, listed) = call(admin, "GET", &path, Some(TOKEN), None).await;
    daemon.stop().await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        schemes(&listed),
        ["standard", "productbridge", "productbridge"]
    );
}
