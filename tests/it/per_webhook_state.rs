//! What the daemon keeps per webhook and per receiver host (in-flight pace,
//! cached signer, idle connections) is released for webhooks that are
//! revoked, while a webhook still in use keeps its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;
use webhookd::EventType;

use crate::harness::{
    http_request, sample, start_configured, test_args, wait_until, Receiver, TestApp,
};

/// Generous for a loaded 2-core machine; the main loop reports these gauges
/// every 10 s.
const WAIT: Duration = Duration::from_secs(60);

/// (tracked webhooks, cached signers, idle connections) from `/metrics`.
async fn kept_state(admin: std::net::SocketAddr) -> Option<(i64, i64, i64)> {
    let text = http_request(admin, "GET", "/metrics", "", "").await;
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    Some((
        value("webhookd_tracked_webhooks")?,
        value("webhookd_cached_signers")?,
        value("webhookd_idle_connections")?,
    ))
}

#[tokio::test]
async fn revoked_webhooks_release_their_pace_signer_and_connections() {
    let app = Arc::new(TestApp::new().await);
    // Each receiver is its own origin (its own port), so each webhook has
    // its own idle connection.
    let kept_org = Uuid::new_v4();
    let revoked_org = Uuid::new_v4();
    let kept_receiver = Receiver::with_status(200).await;
    app.create_webhook(kept_org, &kept_receiver.url("/kept"))
        .await;
    let mut receivers = Vec::new();
    let mut revoked = Vec::new();
    for _ in 0..3 {
        let receiver = Receiver::with_status(200).await;
        revoked.push(
            app.create_webhook(revoked_org, &receiver.url("/gone"))
                .await
                .id,
        );
        receivers.push(receiver);
    }

    let mut config = app.config(&test_args());
    // Quiet for a second and a webhook's state may go.
    config.claimer.pacing.forget_after = Duration::from_secs(1);
    config.sender.idle_timeout = Duration::from_secs(1);
    let (daemon, admin) = start_configured(config).await;

    // Both organizations get an event every 100 ms, at most for two minutes.
    let emitting = Arc::new(AtomicBool::new(true));
    let emitter = tokio::spawn({
        let (app, emitting) = (app.clone(), emitting.clone());
        async move {
            for _ in 0..1_200 {
                if !emitting.load(Ordering::Relaxed) {
                    break;
                }
                for org in [kept_org, revoked_org] {
                    app.emit(org, "vote.deleted", sample(EventType::VoteDeleted))
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    // At least one idle connection per origin (two deliveries of one
    // webhook claimed together may open a second).
    wait_until("all four webhooks have state", WAIT, || async {
        matches!(kept_state(admin).await, Some((4, 4, idle)) if idle >= 4)
    })
    .await;

    let mut client = app.db.client().await;
    for id in &revoked {
        webhookd::manage::revoke(&mut client, *id)
            .await
            .expect("revoke");
    }
    let kept_before = kept_receiver.requests().len();

    wait_until(
        "only the webhook still in use has state",
        WAIT,
        // Fewer idle connections than the three revoked origins had.
        || async { matches!(kept_state(admin).await, Some((1, 1, idle)) if idle < 3) },
    )
    .await;
    // Still delivering to the one that was kept.
    kept_receiver.wait_for(kept_before + 5, WAIT).await;

    emitting.store(false, Ordering::Relaxed);
    emitter.await.expect("emitter");
    daemon.stop().await.expect("daemon stops");
}
