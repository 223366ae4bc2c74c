//! SIGTERM on the real binary: stop claiming, release what cannot finish in
//! the grace period so another replica takes it at once, exit 0.

use std::process::Stdio;
use std::time::Duration;

use uuid::Uuid;
use webhookd::EventType;

use crate::harness::{sample, TestApp};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn sigterm_releases_a_hanging_delivery_for_immediate_pickup_and_exits_zero() {
    let app = TestApp::new().await;
    // A receiver that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
            let _ = accepted_tx.send(());
        }
    });
    let org = Uuid::new_v4();
    app.create_webhook(org, &format!("http://{address}/hang"))
        .await;

    let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_webhookd"))
        .args([
            "run",
            "--allow-private-targets",
            "--admin-addr",
            "127.0.0.1:0",
            "--response-timeout",
            "20s",
            "--lease",
            "60s",
            "--shutdown-grace",
            "500ms",
        ])
        .env("DATABASE_URL", &app.db.url)
        .env("WEBHOOKD_SECRET_KEY", &app.key)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    app.emit(org, "post.created", sample(EventType::PostCreated))
        .await;
    tokio::time::timeout(WAIT, accepted.recv())
        .await
        .expect("the daemon connects to the receiver");
    app.wait_for_deliveries("lease_token IS NOT NULL AND attempts = 1", 1)
        .await;

    let pid = daemon.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(WAIT, daemon.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let client = app.db.client().await;
    let row = client
        .query_one(
            "SELECT status, attempts, lease_token IS NULL AS released, next_attempt_at <= now() AS due
             FROM outbox.deliveries",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>("status"), "pending");
    assert_eq!(
        row.get::<_, i32>("attempts"),
        0,
        "the unfinished attempt is given back"
    );
    assert!(row.get::<_, bool>("released"));
    assert!(
        row.get::<_, bool>("due"),
        "due at once, not after the lease"
    );
}
