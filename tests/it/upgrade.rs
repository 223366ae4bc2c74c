//! Upgrades with replicas running (docs/UPGRADING.md): `migrate --check`, a
//! daemon refusing a schema older or newer than it knows, `/readyz`'s
//! `schema` field, and the previous release's daemon delivering through this
//! release's `migrate` and beside this release's daemon.
//!
//! The previous release's binary comes from `WEBHOOKD_PREVIOUS_BIN` (`.ci/run`
//! builds the commit named in `.ci/previous-release`). Without it, the test
//! that needs it fails in CI (`CI=true`) and is a loud skip elsewhere.

mod process;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;
use webhookd::db::SCHEMA_VERSION;

use crate::harness::{http_request, secret_key, test_args, wait_until, Receiver, TestApp, TestDb};
use process::{run, Daemon, Emitter, GateReceiver};

/// How long deliveries may take to be recorded.
const DELIVERY_LIMIT: Duration = Duration::from_secs(30);

/// This release's `webhookd`.
fn this_release() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_webhookd"))
}

/// The previous release's `webhookd`, or `None` (a loud skip) outside CI
/// when `WEBHOOKD_PREVIOUS_BIN` is unset; in CI that is a failure.
fn previous_release() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WEBHOOKD_PREVIOUS_BIN").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "WEBHOOKD_PREVIOUS_BIN={} is not a file",
            path.display()
        );
        return Some(path);
    }
    let problem = "WEBHOOKD_PREVIOUS_BIN is not set: it names the previous release's webhookd \
                   binary (.ci/run builds the commit in .ci/previous-release and sets it)";
    crate::harness::skip_unless_ci("the upgrade from the previous release", problem);
    None
}

/// The version and name of every migration this binary knows.
fn known_migrations() -> Vec<(i32, &'static str)> {
    webhookd::db::migrations().collect()
}

async fn versions(db: &TestDb) -> Vec<i32> {
    db.client()
        .await
        .query(
            "SELECT version FROM outbox.schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("read schema_migrations")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Records a migration this binary does not know, as a newer release would.
async fn add_unknown_version(db: &TestDb, version: i32) {
    db.client()
        .await
        .execute(
            "INSERT INTO outbox.schema_migrations (version, name) VALUES ($1, 'from the future')",
            &[&version],
        )
        .await
        .expect("record an unknown migration");
}

async fn database_without_the_last_migration() -> (TestDb, i32) {
    let known = known_migrations();
    assert!(known.len() >= 2, "an older schema needs two migrations");
    let previous = known[known.len() - 2].0;
    let db = TestDb::empty().await;
    webhookd::db::migrate_to(&mut db.client().await, previous)
        .await
        .expect("migrate_to");
    (db, previous)
}

#[tokio::test]
async fn migrate_check_exits_0_only_on_exactly_the_current_schema_and_changes_nothing() {
    let new = this_release();
    let db = TestDb::empty().await;
    let line = run(&new, &db.url, &["migrate", "--check"], None)
        .await
        .failed_with(2)
        .to_string();
    assert!(line.contains("no webhookd schema"), "{line}");
    let exists: bool = db
        .client()
        .await
        .query_one("SELECT to_regschema('outbox') IS NOT NULL", &[])
        .await
        .map(|row| row.get(0))
        .unwrap_or(false);
    assert!(!exists, "--check created the schema");

    let (db, previous) = database_without_the_last_migration().await;
    let before = versions(&db).await;
    let line = run(&new, &db.url, &["migrate", "--check"], None)
        .await
        .failed_with(2)
        .to_string();
    let (last, name) = *known_migrations().last().unwrap();
    for expected in [
        format!("at version {previous}"),
        format!("needs {SCHEMA_VERSION}"),
        format!("{last} ({name})"),
    ] {
        assert!(line.contains(&expected), "{expected:?} in {line}");
    }
    assert_eq!(versions(&db).await, before, "--check applied a migration");

    run(&new, &db.url, &["migrate"], None).await.succeeded();
    let current = run(&new, &db.url, &["migrate", "--check"], None).await;
    assert!(
        current.succeeded().contains("current"),
        "{}",
        current.stdout
    );

    add_unknown_version(&db, 999).await;
    let line = run(&new, &db.url, &["migrate", "--check"], None)
        .await
        .failed_with(2)
        .to_string();
    for expected in [
        "at version 999".to_string(),
        format!("newer than this binary knows ({SCHEMA_VERSION};"),
        "version 999)".to_string(),
    ] {
        assert!(line.contains(&expected), "{expected:?} in {line}");
    }
}

#[tokio::test]
async fn migrate_on_a_newer_schema_succeeds_applying_nothing_and_one_shot_commands_still_work() {
    let new = this_release();
    let db = TestDb::new().await;
    add_unknown_version(&db, 999).await;
    let before = versions(&db).await;
    let migrated = run(&new, &db.url, &["migrate"], None).await;
    let said = migrated.succeeded();
    assert!(
        said.contains("newer") && said.contains("nothing to apply"),
        "{said}"
    );
    assert_eq!(versions(&db).await, before);

    let org = Uuid::new_v4().to_string();
    let data = r#"{"id": "v1", "post_id": "p1"}"#;
    let emitted = run(
        &new,
        &db.url,
        &[
            "emit",
            "--org",
            &org,
            "--event",
            "vote.created",
            "--data",
            data,
        ],
        None,
    )
    .await;
    emitted.succeeded();
    assert!(
        emitted.stderr.contains("newer than this binary knows"),
        "a one-shot command warns on a newer schema: {}",
        emitted.stderr
    );
}

#[tokio::test]
async fn a_daemon_refuses_to_start_on_an_older_or_newer_schema_naming_both_versions() {
    let new = this_release();
    let key = secret_key();
    let args = ["run", "--admin-addr", "127.0.0.1:0"];

    let (older, previous) = database_without_the_last_migration().await;
    let line = run(&new, &older.url, &args, Some(&key))
        .await
        .failed_with(2)
        .to_string();
    for expected in [
        format!("at version {previous}"),
        format!("needs {SCHEMA_VERSION}"),
        "webhookd migrate".to_string(),
    ] {
        assert!(line.contains(&expected), "{expected:?} in {line}");
    }

    let newer = TestDb::new().await;
    add_unknown_version(&newer, 999).await;
    let line = run(&new, &newer.url, &args, Some(&key))
        .await
        .failed_with(2)
        .to_string();
    for expected in [
        "at version 999".to_string(),
        format!("newer than this binary knows ({SCHEMA_VERSION};"),
    ] {
        assert!(line.contains(&expected), "{expected:?} in {line}");
    }
}

/// `/readyz`: status code and body.
async fn readyz(address: std::net::SocketAddr) -> (u16, Value) {
    let response = http_request(address, "GET", "/readyz", "", "").await;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    let body = serde_json::from_str(body).unwrap_or_else(|_| panic!("readyz body: {response}"));
    (status, body)
}

#[tokio::test]
async fn a_running_daemon_keeps_delivering_on_a_newer_schema_and_readyz_says_so() {
    let app = TestApp::new().await;
    let receiver = Receiver::with_status(200).await;
    let org = Uuid::new_v4();
    app.create_webhook(org, &receiver.url("/hook")).await;
    let (daemon, admin) = app.spawn_daemon_with_admin(test_args(), None).await;
    wait_until("/readyz 200", DELIVERY_LIMIT, || async {
        readyz(admin).await.0 == 200
    })
    .await;
    let (_, body) = readyz(admin).await;
    assert_eq!(
        body["schema"],
        serde_json::json!({"database": SCHEMA_VERSION, "binary": SCHEMA_VERSION, "state": "current"})
    );

    add_unknown_version(&app.db, 999).await;
    let (status, body) = readyz(admin).await;
    assert_eq!(status, 200, "delivery works on a newer schema: {body}");
    assert_eq!(body["schema"]["database"], 999, "{body}");
    assert_eq!(body["schema"]["binary"], SCHEMA_VERSION, "{body}");
    let state = body["schema"]["state"].as_str().unwrap_or("");
    assert!(
        state.starts_with("newer:") && state.contains("upgrade this replica"),
        "{body}"
    );
    app.emit(
        org,
        "vote.created",
        serde_json::json!({"id": "v1", "post_id": "p1"}),
    )
    .await;
    app.wait_for_deliveries("status = 'delivered'", 1).await;

    // Older (a migration this binary needs is missing): not ready, as before.
    app.db
        .client()
        .await
        .execute(
            "DELETE FROM outbox.schema_migrations WHERE version IN (999, $1)",
            &[&SCHEMA_VERSION],
        )
        .await
        .unwrap();
    let (status, body) = readyz(admin).await;
    assert_eq!(status, 503, "{body}");
    let state = body["schema"]["state"].as_str().unwrap_or("");
    assert!(
        state.starts_with("older:") && state.contains("webhookd migrate"),
        "{body}"
    );
    daemon.stop().await.expect("clean stop");
}

/// The previous release's `migrate`, `webhooks create` and daemon; then this
/// release's `migrate` while that daemon runs and events keep coming; then
/// this release's daemon beside it. Meaningful as soon as this release adds
/// a migration; until then it still checks the two releases side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_release_keeps_delivering_through_this_releases_migrate_and_beside_its_daemon()
{
    let Some(old) = previous_release() else {
        return;
    };
    let new = this_release();
    let db = TestDb::empty().await;
    let key = secret_key();
    run(&old, &db.url, &["migrate"], None).await.succeeded();
    let old_version = *versions(&db)
        .await
        .last()
        .expect("the old release migrated");
    check_this_release_sees_an_older_schema(&new, &db, old_version).await;

    let receiver = GateReceiver::start().await;
    let org = Uuid::new_v4();
    let created = run(
        &old,
        &db.url,
        &[
            "webhooks",
            "create",
            "--allow-private-targets",
            "--org",
            &org.to_string(),
            "--url",
            &receiver.url("/hook"),
        ],
        Some(&key),
    )
    .await;
    let created: Value = serde_json::from_str(created.succeeded()).expect("webhook JSON");
    assert!(created["id"].is_string(), "{created}");
    let old_daemon = Daemon::start("the previous release", &old, &db.url, &key).await;
    old_daemon.wait_ready().await;

    let client = db.client().await;
    let mut committed = Vec::new();
    for index in 0..10 {
        committed.push(process::emit(&client, org, index).await);
    }
    wait_delivered(&db, &committed, &receiver, &[&old_daemon]).await;

    // This release's migrate while the old daemon runs and events keep coming.
    let emitter = Emitter::start(&db.url, org);
    emitter.wait_for(5).await;
    run(&new, &db.url, &["migrate"], None).await.succeeded();
    emitter.wait_for(emitter.count() + 10).await;
    committed.extend(emitter.stop().await);
    run(&new, &db.url, &["migrate", "--check"], None)
        .await
        .succeeded();
    assert_eq!(old_daemon.readyz().await.map(|r| r.0), Some(200));
    wait_delivered(&db, &committed, &receiver, &[&old_daemon]).await;
    assert_eq!(
        receiver.peak(),
        1,
        "with --max-in-flight 1 one daemon sends one request at a time"
    );

    // Both releases side by side: two requests at once can only be one each.
    receiver.arm();
    let new_daemon = Daemon::start("this release", &new, &db.url, &key).await;
    new_daemon.wait_ready().await;
    let (_, body) = new_daemon.readyz().await.unwrap();
    assert_eq!(body["schema"]["state"], "current", "{body}");
    for index in 100..120 {
        committed.push(process::emit(&client, org, index).await);
    }
    assert!(
        receiver.wait_for_pair(DELIVERY_LIMIT).await,
        "the two daemons never had a request in flight at the same time: one of them \
         does not deliver\nprevious release's log:\n{}\nthis release's log:\n{}",
        old_daemon.log(),
        new_daemon.log()
    );
    wait_delivered(&db, &committed, &receiver, &[&old_daemon, &new_daemon]).await;
    for daemon in [old_daemon, new_daemon] {
        daemon.stop_cleanly().await;
    }
}

/// Before this release's `migrate`: if it adds migrations, `migrate --check`
/// names each pending one and this release's daemon does not start.
async fn check_this_release_sees_an_older_schema(new: &Path, db: &TestDb, old_version: i32) {
    let pending: Vec<(i32, &str)> = known_migrations()
        .into_iter()
        .filter(|(version, _)| *version > old_version)
        .collect();
    if pending.is_empty() {
        eprintln!(
            "note: this release adds no migration over the previous one (both at version \
             {old_version}): the upgrade test runs both releases side by side on one schema"
        );
        run(new, &db.url, &["migrate", "--check"], None)
            .await
            .succeeded();
        return;
    }
    let check = run(new, &db.url, &["migrate", "--check"], None).await;
    let line = check.failed_with(2);
    for (version, name) in &pending {
        assert!(line.contains(&format!("{version} ({name})")), "{line}");
    }
    let key = secret_key();
    let args = ["run", "--admin-addr", "127.0.0.1:0"];
    let refused = run(new, &db.url, &args, Some(&key)).await;
    assert!(
        refused
            .failed_with(2)
            .contains(&format!("needs {SCHEMA_VERSION}")),
        "{}",
        refused.stderr
    );
}

/// Waits until every event in `events` has its one delivery delivered, then
/// checks that each of them reached the receiver and nothing failed.
/// On a timeout it shows what the daemons logged at WARN and ERROR.
async fn wait_delivered(
    db: &TestDb,
    events: &[Uuid],
    receiver: &GateReceiver,
    daemons: &[&Daemon],
) {
    let client = db.client().await;
    let wanted = events.len() as i64;
    let deadline = tokio::time::Instant::now() + DELIVERY_LIMIT;
    loop {
        let delivered: i64 = client
            .query_one(
                "SELECT count(*) FROM outbox.deliveries
                 WHERE status = 'delivered' AND event_id = ANY($1)",
                &[&events],
            )
            .await
            .expect("count delivered")
            .get(0);
        if delivered == wanted {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let logs: Vec<String> = daemons.iter().map(|daemon| daemon.problems()).collect();
            panic!(
                "{delivered} of {wanted} events delivered after {DELIVERY_LIMIT:?}; \
                 the daemons' warnings and errors:\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failed: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM outbox.deliveries WHERE status <> 'delivered')
                  + (SELECT count(*) FROM outbox.delivery_attempts
                     WHERE status_code IS NULL OR status_code NOT BETWEEN 200 AND 299)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failed, 0, "no failed delivery or attempt");
    let arrived: HashSet<String> = receiver.arrivals().into_iter().collect();
    let rows = client
        .query(
            "SELECT id::text FROM outbox.deliveries WHERE event_id = ANY($1)",
            &[&events],
        )
        .await
        .unwrap();
    let missing: Vec<String> = rows
        .iter()
        .map(|row| row.get::<_, String>(0))
        .filter(|id| !arrived.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "never reached the receiver: {missing:?}"
    );
}
