//! HTTPS receivers: a trusted test CA works, an untrusted certificate fails with a TLS reason.

use std::time::Duration;

use uuid::Uuid;
use webhookd::config::RunArgs;
use webhookd::EventType;

use crate::harness::tls::test_pki;
use crate::harness::{sample, test_args, Receiver, TestApp};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn an_https_receiver_with_a_certificate_from_a_trusted_test_ca_gets_its_delivery() {
    let app = TestApp::new().await;
    let pki = test_pki();
    let receiver = Receiver::start_tls(pki.acceptor, |_| (200, Vec::new())).await;
    let org = Uuid::new_v4();
    let url = format!("https://localhost:{}/hook", receiver.address.port());
    let webhook = app.create_webhook(org, &url).await;
    let mut config = app.config(&test_args());
    config.sender.extra_root_certificates =
        vec![native_tls::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap()];
    let daemon = app.spawn_daemon(config);
    app.emit(org, "post.created", sample(EventType::PostCreated))
        .await;
    let requests = receiver.wait_for(1, WAIT).await;
    app.wait_for_deliveries("status = 'delivered'", 1).await;
    daemon.stop().await.unwrap();
    assert_eq!(
        requests[0].header("x-productbridge-signature"),
        crate::harness::expected_signature(&webhook.secret, &requests[0].body)
    );
}

#[tokio::test]
async fn an_untrusted_certificate_fails_the_attempt_with_a_tls_reason() {
    let app = TestApp::new().await;
    let pki = test_pki();
    let receiver = Receiver::start_tls(pki.acceptor, |_| (200, Vec::new())).await;
    let org = Uuid::new_v4();
    let url = format!("https://localhost:{}/hook", receiver.address.port());
    app.create_webhook(org, &url).await;
    // The test CA is not added: the system roots do not know it.
    let daemon = app.spawn_daemon(app.config(&RunArgs {
        max_retries: 0,
        ..test_args()
    }));
    app.emit(org, "post.created", sample(EventType::PostCreated))
        .await;
    app.wait_for_deliveries("status = 'failed'", 1).await;
    daemon.stop().await.unwrap();
    let client = app.db.client().await;
    let row = client
        .query_one(
            "SELECT d.last_error, d.last_status_code, a.outcome
             FROM outbox.deliveries d JOIN outbox.delivery_attempts a ON a.delivery_id = d.id",
            &[],
        )
        .await
        .unwrap();
    let reason: String = row.get(0);
    assert!(
        reason.starts_with("TLS: certificate verify failed"),
        "{reason}"
    );
    assert_eq!(row.get::<_, Option<i32>>(1), None, "no response arrived");
    assert_eq!(row.get::<_, String>(2), "tls");
    assert!(receiver.requests().is_empty());
}
