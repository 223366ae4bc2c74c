//! Key rotation: `keys rotate` on the real binary, daemons with the previous
//! key beside the current one, and a daemon with the wrong key that holds
//! deliveries back instead of failing them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;
use webhookd::config::SecretArgs;
use webhookd::delivery::sender::SystemResolver;
use webhookd::manage::{self, CreateWebhook};
use webhookd::signing::SecretBox;
use webhookd::EventType;

use crate::harness::process::{create_args, Outcome, Webhookd};
use crate::harness::{
    expected_signature, http_request, sample, secret_key, start_configured, test_args,
    DaemonHandle, Receiver, TestApp, TestWebhook,
};

const WAIT: Duration = Duration::from_secs(20);
/// Held-back deliveries come round again this soon in these tests.
const SHORT_DELAY: Duration = Duration::from_millis(300);

/// Runs `webhookd ARGS` against `database_url` with only the given
/// `WEBHOOKD_*` variables set.
async fn webhookd(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    env.iter()
        .fold(
            Webhookd::new(database_url, args),
            |command, (name, value)| command.env(name, value),
        )
        .output_within(Duration::from_secs(60))
        .await
}

/// `keys rotate` with `current` and `previous` keys.
async fn rotate(app: &TestApp, current: &str, previous: &str) -> Outcome {
    webhookd(
        &app.db.url,
        &["keys", "rotate"],
        &[
            ("WEBHOOKD_SECRET_KEY", current),
            ("WEBHOOKD_SECRET_KEY_PREVIOUS", previous),
        ],
    )
    .await
}

fn keyring(current: &str, previous: &str) -> SecretArgs {
    SecretArgs {
        secret_key_previous: Some(previous.into()),
        ..SecretArgs::with_key(current)
    }
}

fn key_id(key: &str) -> String {
    SecretBox::from_base64(key).unwrap().key_id().to_string()
}

/// An in-process daemon opening secrets with `keyring`, its admin address on
/// a port the system picks.
async fn spawn_daemon(app: &TestApp, keyring: SecretArgs) -> (DaemonHandle, SocketAddr) {
    let args = webhookd::config::RunArgs {
        admin_addr: ([127, 0, 0, 1], 0).into(),
        ..test_args()
    };
    let mut config = app.config_with(&args, &keyring, Arc::new(SystemResolver));
    config.unopenable_secret_delay = SHORT_DELAY;
    start_configured(config).await
}

async fn http_get(admin: SocketAddr, path: &str) -> String {
    http_request(admin, "GET", path, "", "").await
}

/// Every request carries a signature made with its webhook's secret.
fn assert_signed(receiver: &Receiver, secrets: &HashMap<Uuid, String>) {
    for request in receiver.requests() {
        let webhook: Uuid = request
            .header("x-productbridge-webhook-id")
            .parse()
            .unwrap();
        assert_eq!(
            request.header("x-productbridge-signature"),
            expected_signature(&secrets[&webhook], &request.body),
            "signature of a delivery to webhook {webhook}"
        );
    }
}

async fn stored_key_ids(app: &TestApp) -> Vec<String> {
    let client = app.db.client().await;
    client
        .query("SELECT secret_key_id FROM outbox.webhooks ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn rotate_reencrypts_every_secret_once_and_deliveries_still_verify() {
    let app = TestApp::new().await;
    let receiver = Receiver::with_status(200).await;
    let org = Uuid::new_v4();
    let webhook = app.create_webhook(org, &receiver.url("/hook")).await;
    let revoked = app
        .create_webhook(Uuid::new_v4(), &receiver.url("/gone"))
        .await;
    let mut client = app.db.client().await;
    webhookd::manage::revoke(&mut client, revoked.id)
        .await
        .unwrap();
    let secrets = HashMap::from([(webhook.id, webhook.secret.clone())]);

    let (daemon, _) = spawn_daemon(&app, keyring(&app.key, "")).await;
    app.emit(org, "post.created", sample(EventType::PostCreated))
        .await;
    receiver.wait_for(1, WAIT).await;
    daemon.stop().await.unwrap();

    let new_key = secret_key();
    let first = rotate(&app, &new_key, &app.key).await;
    assert_eq!(first.code, Some(0), "stderr: {}", first.stderr);
    assert_eq!(first.stdout.trim(), r#"{"reencrypted": 2}"#);
    assert_eq!(stored_key_ids(&app).await, vec![key_id(&new_key); 2]);
    let second = rotate(&app, &new_key, &app.key).await;
    assert_eq!(second.code, Some(0), "stderr: {}", second.stderr);
    assert_eq!(second.stdout.trim(), r#"{"reencrypted": 0}"#);

    // The old key is gone from the daemon; the secret is the same.
    let (daemon, _) = spawn_daemon(&app, keyring(&new_key, "")).await;
    app.emit(org, "post.edited", sample(EventType::PostEdited))
        .await;
    receiver.wait_for(2, WAIT).await;
    daemon.stop().await.unwrap();
    assert_signed(&receiver, &secrets);
    assert_eq!(receiver.requests().len(), 2);
}

#[tokio::test]
async fn rotate_beside_a_running_daemon_loses_and_fails_nothing() {
    let app = TestApp::new().await;
    let receiver = Receiver::with_status(200).await;
    let org = Uuid::new_v4();
    // More than two batches of webhooks, all sealed with the old key.
    let mut secrets = HashMap::new();
    let client = app.db.client().await;
    for n in 0..230 {
        let url = receiver.url(&format!("/{n}"));
        let request = CreateWebhook {
            organization_id: org,
            url: &url,
            label: "",
            allow_private_targets: true,
            signature_scheme: Default::default(),
        };
        let created = manage::create(
            &client,
            &app.secrets,
            &webhookd::delivery::sender::SystemResolver,
            &request,
        )
        .await
        .unwrap();
        secrets.insert(created.id, created.secret.unwrap());
    }
    let new_key = secret_key();
    let (daemon, _) = spawn_daemon(&app, keyring(&new_key, &app.key)).await;
    app.emit(org, "post.created", sample(EventType::PostCreated))
        .await;

    let emitting = async {
        for _ in 0..5 {
            app.emit(org, "vote.created", sample(EventType::VoteCreated))
                .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (rotated, ()) = tokio::join!(rotate(&app, &new_key, &app.key), emitting);
    assert_eq!(rotated.code, Some(0), "stderr: {}", rotated.stderr);
    assert_eq!(rotated.stdout.trim(), r#"{"reencrypted": 230}"#);

    // A second replica starts after the rotation: it reads only new ciphertexts.
    let (second, _) = spawn_daemon(&app, keyring(&new_key, &app.key)).await;
    app.emit(org, "post.deleted", sample(EventType::PostDeleted))
        .await;
    let total = 230 * 7;
    app.wait_for_deliveries("status = 'delivered'", total).await;
    daemon.stop().await.unwrap();
    second.stop().await.unwrap();
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM outbox.deliveries WHERE status <> 'delivered'")
            .await,
        0
    );
    // No attempt failed for want of a key; a loaded machine may time one out.
    assert_eq!(
        app.db
            .count(
                "SELECT count(*) FROM outbox.delivery_attempts
                 WHERE outcome NOT IN ('delivered', 'response_timeout', 'connect_timeout')"
            )
            .await,
        0
    );
    let mut arrived: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.delivery_id())
        .collect();
    arrived.sort();
    arrived.dedup();
    assert_eq!(arrived.len(), total as usize, "every delivery arrived");
    assert_signed(&receiver, &secrets);
    assert_eq!(stored_key_ids(&app).await, vec![key_id(&new_key); 230]);
}

/// A daemon with an unrelated key holds the deliveries back (pending,
/// attempts 0, nothing sent, not ready); one restarted with `right` (a
/// keyring that has the webhooks' key) sends them.
async fn wrong_key_holds_back_until(right: impl FnOnce(&TestApp) -> SecretArgs) {
    let app = TestApp::new().await;
    let receiver = Receiver::with_status(200).await;
    let org = Uuid::new_v4();
    let webhook = app.create_webhook(org, &receiver.url("/hook")).await;
    let wrong = secret_key();
    let (daemon, admin) = spawn_daemon(&app, keyring(&wrong, "")).await;
    for _ in 0..3 {
        app.emit(org, "post.created", sample(EventType::PostCreated))
            .await;
    }
    // Held back once (due again SHORT_DELAY after the claim), then again.
    let held = "status = 'pending' AND lease_token IS NULL \
                AND next_attempt_at >= created_at + interval '250 milliseconds'";
    app.wait_for_deliveries(held, 3).await;
    let first_due = app
        .db
        .count(
            "SELECT (extract(epoch FROM max(next_attempt_at)) * 1000)::int8 FROM outbox.deliveries",
        )
        .await;
    let sql = format!(
        "SELECT count(*) FROM outbox.deliveries \
         WHERE next_attempt_at > to_timestamp({first_due} / 1000.0) + interval '100 milliseconds'"
    );
    app.db
        .wait_for_count("held back a second time", &sql, 3, WAIT)
        .await;

    let ready = http_get(admin, "/readyz").await;
    let missing = key_id(&app.key);
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(
        ready.contains(&format!(
            r#""secrets":"1 webhook sealed with key {missing}, which is not configured"#
        )),
        "{ready}"
    );
    let metrics = http_get(admin, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|line| line == "webhookd_webhooks_unopenable_secrets 1"),
        "{metrics}"
    );
    daemon.stop().await.unwrap();
    assert_eq!(receiver.requests().len(), 0, "nothing is sent");
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM outbox.deliveries WHERE status = 'pending' AND attempts = 0 AND last_attempt_at IS NULL")
            .await,
        3
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM outbox.delivery_attempts")
            .await,
        0
    );

    let (daemon, admin) = spawn_daemon(&app, right(&app)).await;
    app.wait_for_deliveries("status = 'delivered' AND attempts = 1", 3)
        .await;
    let ready = http_get(admin, "/readyz").await;
    let metrics = http_get(admin, "/metrics").await;
    daemon.stop().await.unwrap();
    assert!(ready.contains(r#""secrets":"ok""#), "{ready}");
    assert!(
        metrics
            .lines()
            .any(|line| line == "webhookd_webhooks_unopenable_secrets 0"),
        "{metrics}"
    );
    assert_signed(&receiver, &HashMap::from([(webhook.id, webhook.secret)]));
    assert_eq!(receiver.requests().len(), 3);
}

#[tokio::test]
async fn a_daemon_with_the_wrong_key_holds_deliveries_until_the_key_is_previous() {
    wrong_key_holds_back_until(|app| keyring(&secret_key(), &app.key)).await;
}

#[tokio::test]
async fn a_daemon_with_the_wrong_key_holds_deliveries_until_the_key_is_current() {
    wrong_key_holds_back_until(|app| keyring(&app.key, "")).await;
}

/// `webhooks create` via the binary with these keys.
async fn create(app: &TestApp, current: &str, previous: Option<&str>) -> Outcome {
    let org = Uuid::new_v4().to_string();
    let args = create_args(&org, "http://127.0.0.1:9/x");
    let mut env = vec![("WEBHOOKD_SECRET_KEY", current)];
    if let Some(previous) = previous {
        env.push(("WEBHOOKD_SECRET_KEY_PREVIOUS", previous));
    }
    let output = webhookd(&app.db.url, &args, &env).await;
    assert_eq!(output.code, Some(0), "stderr: {}", output.stderr);
    let created: Value = serde_json::from_str(&output.stdout).unwrap();
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    output
}

#[tokio::test]
async fn create_under_a_key_the_stored_secrets_do_not_use_warns_and_still_creates() {
    let app = TestApp::new().await;
    assert_eq!(create(&app, &app.key, None).await.stderr, "");
    assert_eq!(create(&app, &app.key, None).await.stderr, "");

    let other = secret_key();
    let warned = create(&app, &other, None).await.stderr;
    assert_eq!(warned.lines().count(), 1, "{warned}");
    assert!(
        warned.starts_with(&format!(
            "webhookd: warning: 2 other webhooks' secrets are sealed with key {}, not with this \
             WEBHOOKD_SECRET_KEY (key {})",
            key_id(&app.key),
            key_id(&other)
        )),
        "{warned}"
    );
    let rotating = create(&app, &other, Some(&app.key)).await.stderr;
    assert_eq!(rotating.lines().count(), 1, "{rotating}");
    assert!(
        rotating.contains(&format!(
            "still sealed with previous key {}",
            key_id(&app.key)
        )),
        "{rotating}"
    );
    assert_eq!(
        app.db.count("SELECT count(*) FROM outbox.webhooks").await,
        4
    );
}

#[tokio::test]
async fn a_bad_previous_key_exits_2_naming_the_variable_and_the_entry() {
    let app = TestApp::new().await;
    let good = secret_key();
    let org = Uuid::new_v4().to_string();
    let commands: [&[&str]; 3] = [
        &["keys", "rotate"],
        &["run", "--admin-addr", "127.0.0.1:0"],
        &create_args(&org, "http://127.0.0.1:9/x"),
    ];
    let cases = [
        (
            format!("{good},not-base64!"),
            "WEBHOOKD_SECRET_KEY_PREVIOUS entry 2 is not valid base64",
        ),
        (
            "c2hvcnQ=".to_string(),
            "WEBHOOKD_SECRET_KEY_PREVIOUS entry 1 decodes to 5 bytes, expected 32",
        ),
    ];
    for args in commands {
        for (previous, says) in &cases {
            let output = webhookd(
                &app.db.url,
                args,
                &[
                    ("WEBHOOKD_SECRET_KEY", &app.key),
                    ("WEBHOOKD_SECRET_KEY_PREVIOUS", previous),
                ],
            )
            .await;
            let shown = args.join(" ");
            assert_eq!(output.code, Some(2), "`{shown}`: {}", output.stderr);
            assert_eq!(output.stdout, "", "`{shown}`");
            assert_eq!(
                output.stderr.lines().count(),
                1,
                "`{shown}`: {}",
                output.stderr
            );
            assert!(
                output.stderr.starts_with(&format!("webhookd: {says}")),
                "`{shown}`: {}",
                output.stderr
            );
            assert!(!output.stderr.contains(&good) && !output.stderr.contains("c2hvcnQ"));
        }
    }
    assert_eq!(
        app.db.count("SELECT count(*) FROM outbox.webhooks").await,
        0
    );
    // The current key among the previous ones is harmless.
    let same = rotate(&app, &app.key, &format!("{},{}", app.key, good)).await;
    assert_eq!(same.code, Some(0), "stderr: {}", same.stderr);
    assert_eq!(same.stdout.trim(), r#"{"reencrypted": 0}"#);
}

#[tokio::test]
async fn rotate_leaves_secrets_no_key_opens_reports_them_and_exits_1() {
    let app = TestApp::new().await;
    let lost: TestWebhook = app
        .create_webhook(Uuid::new_v4(), "http://127.0.0.1:9/a")
        .await;
    let kept_key = secret_key();
    let client = app.db.client().await;
    manage::create(
        &client,
        &SecretBox::from_base64(&kept_key).unwrap(),
        &webhookd::delivery::sender::SystemResolver,
        &CreateWebhook {
            organization_id: Uuid::new_v4(),
            url: "http://127.0.0.1:9/b",
            label: "",
            allow_private_targets: true,
            signature_scheme: Default::default(),
        },
    )
    .await
    .unwrap();
    let new_key = secret_key();
    let output = rotate(&app, &new_key, &kept_key).await;
    assert_eq!(output.code, Some(1), "stderr: {}", output.stderr);
    assert_eq!(
        output.stdout.trim(),
        r#"{"reencrypted": 1, "unopenable": 1}"#
    );
    assert_eq!(output.stderr.lines().count(), 1, "{}", output.stderr);
    assert!(
        output.stderr.starts_with(&format!(
            "webhookd: 1 webhook secret not re-encrypted: sealed with key {} (1)",
            key_id(&app.key)
        )),
        "{}",
        output.stderr
    );
    let still: String = client
        .query_one(
            "SELECT secret_key_id FROM outbox.webhooks WHERE id = $1",
            &[&lost.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(still, key_id(&app.key), "left as it was");
}
