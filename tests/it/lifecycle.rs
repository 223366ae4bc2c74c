//! The daemon's lifecycle through the library: `Daemon::start` binds the
//! admin address (port 0 picks one, `admin_addr` tells which), and
//! `Running::shutdown` stops every service it started, so nothing outlives
//! it: not its listener, not an open admin connection, not a task.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;
use webhookd::daemon::Daemon;
use webhookd::EventType;

use crate::harness::{http_request, sample, test_args, wait_until, Receiver, TestApp};

/// Tasks alive on this test's runtime.
fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test]
async fn shutdown_leaves_no_listener_connection_or_task_behind() {
    let app = TestApp::new().await;
    let receiver = Receiver::with_status(200).await;
    let org = Uuid::new_v4();
    app.create_webhook(org, &receiver.url("/hook")).await;
    let before = alive_tasks();

    let config = app.config(&test_args());
    assert_eq!(
        config.admin_addr.port(),
        0,
        "the test asks for any free port"
    );
    let daemon = Daemon::start(config).await.expect("the daemon starts");
    let admin = daemon.admin_addr();
    assert_ne!(admin.port(), 0, "admin_addr is the bound address");

    let health = http_request(admin, "GET", "/healthz", "", "").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with(r#"{"status":"ok"}"#), "{health}");
    // A delivery end to end, so the send, write-back and pool tasks ran.
    app.emit(org, "post.created", sample(EventType::PostCreated))
        .await;
    app.wait_for_deliveries("status = 'delivered'", 1).await;
    // A client that keeps its admin connection open after a request.
    let mut idle = tokio::net::TcpStream::connect(admin).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 512];
    let read = idle.read(&mut answer).await.unwrap();
    assert!(answer[..read].starts_with(b"HTTP/1.1 200"));

    tokio::time::timeout(Duration::from_secs(30), daemon.shutdown())
        .await
        .expect("shutdown completes");

    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "the admin port no longer accepts connections"
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the open admin connection is closed: {closed:?}"
    );
    wait_until(
        "every task the daemon started has ended",
        Duration::from_secs(10),
        || async { alive_tasks() <= before },
    )
    .await;
}
