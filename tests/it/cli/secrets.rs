//! Secrets never appear in trace logs or in a dump of the database.

use std::process::Stdio;

use serde_json::Value;
use tokio::process::Command;
use uuid::Uuid;

use super::*;
use crate::harness::process::{create_args, Webhookd, COMMAND_LIMIT};
use crate::harness::{expected_signature, Receiver, TestApp};

/// The first `pg_dump` on PATH, else one from the PostgreSQL packages.
fn pg_dump() -> std::path::PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("pg_dump"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let packaged = std::fs::read_dir("/usr/lib/postgresql")
        .map(|versions| {
            versions
                .filter_map(|entry| entry.ok())
                .map(|entry| entry.path().join("bin/pg_dump"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(packaged)
        .find(|candidate| candidate.is_file())
        .expect("pg_dump on PATH or under /usr/lib/postgresql/*/bin")
}

#[tokio::test]
async fn secrets_never_appear_in_trace_logs_or_a_database_dump() {
    let app = TestApp::new().await;
    let receiver = Receiver::with_status(200).await;
    let org = Uuid::new_v4();

    // Created with every log on: the secret belongs on stdout, once, and nowhere else.
    let created = Webhookd::new(
        &app.db.url,
        &[
            create_args(&org.to_string(), &receiver.url("/hook")),
            vec!["--label", "leak check"],
        ]
        .concat(),
    )
    .key(&app.key)
    .env("RUST_LOG", "trace")
    .output()
    .await;
    let webhook: Value = created.json();
    assert_eq!(
        created.stdout.matches(field(&webhook, "secret")).count(),
        1,
        "{}",
        created.stdout
    );
    let webhook_id = field(&webhook, "id").to_string();
    let secret = field(&webhook, "secret").to_string();
    let secret_random = secret.trim_start_matches("whsec_").to_string();
    let secret_hex = hex::encode(secret.as_bytes());
    let never_shown = |text: &str, place: &str| {
        assert!(
            !text.contains(&secret_random),
            "the webhook secret appears in {place}"
        );
        assert!(
            !text.contains(&secret_hex),
            "the webhook secret appears hex-encoded in {place}"
        );
        assert!(
            !text.contains(&app.key),
            "WEBHOOKD_SECRET_KEY appears in {place}"
        );
    };
    never_shown(&created.stderr, "the trace log of `webhooks create`");

    let mut daemon = Webhookd::new(
        &app.db.url,
        &[
            "run",
            "--allow-private-targets",
            "--retry-base-delay",
            "100ms",
            "--max-retries",
            "1",
            "--admin-addr",
            "127.0.0.1:0",
        ],
    )
    .key(&app.key)
    .env("RUST_LOG", "trace")
    .start()
    .await;

    let emitted = Webhookd::new(
        &app.db.url,
        &[
            "emit",
            "--org",
            &org.to_string(),
            "--event",
            "post.created",
            "--data",
            r#"{"id": "p1", "title": "Add dark mode"}"#,
        ],
    )
    .env("RUST_LOG", "trace")
    .output()
    .await;
    emitted.succeeded();
    never_shown(&emitted.stderr, "the trace log of `emit`");

    app.db
        .wait_for_count(
            "the delivery is recorded as delivered",
            "SELECT count(*) FROM outbox.deliveries WHERE status = 'delivered'",
            1,
            DELIVERY_LIMIT,
        )
        .await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].header("x-productbridge-signature"),
        expected_signature(&secret, &requests[0].body),
        "the captured secret is the one the daemon signs with"
    );

    daemon.signal("-TERM");
    let status = daemon.exit_status().await;
    let log = daemon.log_text();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM is a clean stop; log:\n{log}"
    );
    assert!(
        log.contains("TRACE"),
        "the trace log was on, so the check means something"
    );
    assert!(!log.contains("panicked"), "{log}");
    never_shown(&log, "the daemon's trace log");

    let dump = tokio::time::timeout(
        COMMAND_LIMIT,
        Command::new(pg_dump())
            .arg(format!("--dbname={}", app.db.url))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("pg_dump within 30s")
    .expect("run pg_dump");
    assert!(
        dump.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains(&webhook_id),
        "the dump holds the webhook, so the check means something"
    );
    never_shown(&dump, "a pg_dump of the database");
}
