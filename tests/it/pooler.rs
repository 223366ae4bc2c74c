//! Through a real PgBouncer: every command, the daemon and the management
//! API in transaction and in session mode (LISTEN direct), and what happens
//! when LISTEN itself goes through a transaction-mode pooler.
//!
//! PgBouncer runs with 3 server connections, fewer than the daemon's pool,
//! so clients really share server connections: a named prepared statement
//! or a session setting would break here.

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::harness::pooler::{PgBouncer, PoolMode};
use crate::harness::process::{message, Replica, Webhookd};
use crate::harness::{http_request, sample, secret_key, wait_until, Receiver, TestDb};

/// How many events the daemon delivers through the pooler.
const EVENTS: usize = 300;
const ADMIN_TOKEN: &str = "a-long-admin-token-for-the-pooler-test";

/// `true` when the test should go on; fails in CI, which installs PgBouncer.
fn require_pgbouncer() -> bool {
    if PgBouncer::installed() {
        return true;
    }
    crate::harness::skip_unless_ci(
        "a PgBouncer test",
        "pgbouncer is not installed (Debian: `apt-get install -y pgbouncer`; .ci/run does this)",
    );
    false
}

#[tokio::test]
async fn every_command_and_the_daemon_work_through_pgbouncer_in_transaction_mode() {
    if require_pgbouncer() {
        commands_and_daemon_through(PoolMode::Transaction).await;
    }
}

#[tokio::test]
async fn every_command_and_the_daemon_work_through_pgbouncer_in_session_mode() {
    if require_pgbouncer() {
        commands_and_daemon_through(PoolMode::Session).await;
    }
}

async fn commands_and_daemon_through(mode: PoolMode) {
    let db = TestDb::empty().await;
    let bouncer = PgBouncer::start(mode).await;
    let pooled = bouncer.url(&db.name);
    let key = secret_key();
    let org = Uuid::new_v4();
    let receiver = Receiver::with_status(200).await;

    Webhookd::new(&pooled, &["migrate"])
        .output()
        .await
        .succeeded();
    let created = Webhookd::new(
        &pooled,
        &[
            "webhooks",
            "create",
            "--org",
            &org.to_string(),
            "--url",
            &receiver.url("/cli"),
            "--allow-private-targets",
        ],
    )
    .key(&key)
    .output()
    .await
    .json();
    // Several one-shot commands in a row share PgBouncer's server connections.
    for n in 0..5 {
        let data = serde_json::json!({"id": format!("cli-{n}"), "title": "through the pooler"});
        Webhookd::new(
            &pooled,
            &[
                "emit",
                "--org",
                &org.to_string(),
                "--event",
                "post.created",
                "--data",
                &data.to_string(),
            ],
        )
        .output()
        .await
        .succeeded();
    }
    let listed = Webhookd::new(&pooled, &["webhooks", "list", "--org", &org.to_string()])
        .output()
        .await
        .json();
    assert_eq!(listed[0]["id"], created["id"]);

    let daemon = Replica::start_with_env(
        &pooled,
        &key,
        &["--listen-database-url", &db.url, "--db-pool-size", "6"],
        &[("WEBHOOKD_ADMIN_TOKEN", ADMIN_TOKEN)],
    )
    .await;
    daemon.wait_ready().await;
    let ready = http_request(daemon.admin, "GET", "/readyz", "", "").await;
    assert!(ready.contains(r#""listen":"active""#), "{ready}");
    // The CLI's events go to the first webhook only: wait for them before
    // the second exists.
    receiver.wait_for(5, Duration::from_secs(60)).await;

    // A second webhook through the management API, on the pooled pool.
    let api = http_request(
        daemon.admin,
        "POST",
        &format!("/v1/organizations/{org}/webhooks"),
        &format!("Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\n"),
        &serde_json::json!({"url": receiver.url("/api"), "label": "api"}).to_string(),
    )
    .await;
    assert!(api.starts_with("HTTP/1.1 201"), "{api}");

    emit_through(&pooled, org, EVENTS).await;
    // 5 CLI events to one webhook, then every event to both.
    let expected = 5 + 2 * EVENTS;
    let requests = receiver.wait_for(expected, Duration::from_secs(60)).await;
    let mut ids: Vec<String> = requests.iter().map(|r| r.delivery_id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), expected, "every delivery arrived");
    // The write-back lands a moment after the receiver answered.
    db.wait_for_count(
        "every delivery written back as delivered",
        "SELECT count(*) FROM outbox.deliveries WHERE status = 'delivered'",
        expected as i64,
        Duration::from_secs(60),
    )
    .await;
    let failed = db
        .count("SELECT count(*) FROM outbox.deliveries WHERE status <> 'delivered'")
        .await;
    assert_eq!(failed, 0);

    let listing = http_request(
        daemon.admin,
        "GET",
        &format!("/v1/organizations/{org}/webhooks"),
        &format!("Authorization: Bearer {ADMIN_TOKEN}\r\n"),
        "",
    )
    .await;
    assert!(listing.starts_with("HTTP/1.1 200"), "{listing}");
    let errors: Vec<String> = daemon
        .log_events()
        .iter()
        .filter(|event| event["level"] == "ERROR" || event["level"] == "WARN")
        .map(message)
        .collect();
    assert!(errors.is_empty(), "warnings or errors: {errors:?}");
}

/// Emits `n` events from 4 producers, each its own connection through the
/// pooler, with the library's `emit` in the producer's transaction.
async fn emit_through(url: &str, org: Uuid, n: usize) {
    let mut producers = Vec::new();
    for producer in 0..4 {
        let url = url.to_string();
        producers.push(tokio::spawn(async move {
            let mut client = webhookd::db::connect_single(&url).await.expect("connect");
            for i in (producer..n).step_by(4) {
                let tx = client.transaction().await.expect("begin");
                let mut data = sample(webhookd::EventType::VoteCreated);
                data["id"] = Value::String(format!("vote-{i}"));
                webhookd::emit(&tx, org, webhookd::EventType::VoteCreated, &data)
                    .await
                    .expect("emit through the pooler");
                tx.commit().await.expect("commit");
            }
        }));
    }
    for producer in producers {
        producer.await.expect("producer");
    }
}

#[tokio::test]
async fn listen_through_a_transaction_pooler_falls_back_to_polling_and_says_so() {
    if !require_pgbouncer() {
        return;
    }
    let db = TestDb::new().await;
    let bouncer = PgBouncer::start(PoolMode::Transaction).await;
    let pooled = bouncer.url(&db.name);
    let key = secret_key();
    let org = Uuid::new_v4();
    let receiver = Receiver::with_status(200).await;
    Webhookd::new(
        &pooled,
        &[
            "webhooks",
            "create",
            "--org",
            &org.to_string(),
            "--url",
            &receiver.url("/poll"),
            "--allow-private-targets",
        ],
    )
    .key(&key)
    .output()
    .await
    .succeeded();

    let daemon = Replica::start(&pooled, &key, &[]).await;
    daemon.wait_ready().await;
    let ready = http_request(daemon.admin, "GET", "/readyz", "", "").await;
    assert!(
        ready.contains(r#""listen":"unavailable: no notifications arrive"#),
        "readyz must not call a deaf LISTEN active: {ready}"
    );
    wait_until(
        "a warning that LISTEN receives nothing",
        Duration::from_secs(20),
        || async {
            daemon
                .log_events()
                .iter()
                .any(|event| message(event).contains("LISTEN receives no notifications"))
        },
    )
    .await;
    // Polling still delivers, and soon (at most a second between looks).
    emit_through(&pooled, org, 3).await;
    receiver.wait_for(3, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn an_explicit_listen_url_through_a_transaction_pooler_exits_2_naming_it() {
    if !require_pgbouncer() {
        return;
    }
    let db = TestDb::new().await;
    let bouncer = PgBouncer::start(PoolMode::Transaction).await;
    let pooled = bouncer.url(&db.name);
    let line = Webhookd::new(
        &db.url,
        &[
            "run",
            "--admin-addr",
            "127.0.0.1:0",
            "--listen-database-url",
            &pooled,
        ],
    )
    .key(&secret_key())
    .output()
    .await
    .failed_with(2)
    .to_string();
    assert!(line.contains("--listen-database-url"), "{line}");
    assert!(line.contains("pooler"), "{line}");
}
