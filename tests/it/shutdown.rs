//! SIGTERM on the real binary: stop claiming, release what cannot finish in
//! the grace period so another replica takes it at once, exit 0.

use std::time::Duration;

use uuid::Uuid;
use webhookd::EventType;

use crate::harness::process::Replica;
use crate::harness::receiver::Reply;
use crate::harness::{sample, Receiver, TestApp};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn sigterm_releases_a_hanging_delivery_for_immediate_pickup_and_exits_zero() {
    let app = TestApp::new().await;
    // A receiver that takes the request and never answers.
    let receiver = Receiver::started(Receiver::builder().respond(|_| Reply::hang())).await;
    let org = Uuid::new_v4();
    app.create_webhook(org, &receiver.url("/hang")).await;

    let flags = [
        "--response-timeout",
        "20s",
        "--lease",
        "60s",
        "--shutdown-grace",
        "500ms",
    ];
    let mut daemon = Replica::start(&app.db.url, &app.key, &flags).await;
    app.emit(org, "post.created", sample(EventType::PostCreated))
        .await;
    receiver.wait_for(1, WAIT).await;
    app.wait_for_deliveries("lease_token IS NOT NULL AND attempts = 1", 1)
        .await;

    daemon.signal("-TERM");
    let status = daemon.exit_status().await;
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
