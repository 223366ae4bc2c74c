//! Database faults under load with the real binary: every connection of the
//! daemon terminated, and a full PostgreSQL restart (a throwaway cluster of
//! the test's own). Nothing is lost, the daemon stays up, and the numbers go
//! on `RELIABILITY:` lines like the rest of the replica tests.

use std::time::{Duration, Instant};

use devkit::cluster::ThrowawayCluster;
use uuid::Uuid;
use webhookd::EventType;

use crate::harness::observer::{
    count, create_webhook, daemon_is_quiet, delivered, emit_many, observer,
    terminate_daemon_connections, wait_for_delivered,
};
use crate::harness::process::{message, Replica};
use crate::harness::tally::Tally;
use crate::harness::{sample, secret_key, wait_until, Receiver, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_database_connection_terminated_mid_load_is_survived() {
    const EVENTS: i64 = 3000;
    // A wake-up within this long cannot have come from the 60 s poll.
    const PROMPT: Duration = Duration::from_secs(10);
    let app = TestApp::new().await;
    let receiver = Receiver::slow(Duration::from_millis(50)).await;
    let org = Uuid::new_v4();
    app.create_webhook(org, &receiver.url("/hook")).await;
    let flags = [
        "--poll-interval",
        "60s",
        "--lease",
        "10s",
        "--connect-timeout",
        "2s",
        "--response-timeout",
        "5s",
        "--retry-base-delay",
        "200ms",
    ];
    let mut daemon = Replica::start(&app.db.url, &app.key, &flags).await;
    daemon.wait_ready().await;
    let db = observer(&app.db.url).await;

    emit_many(&db, org, EVENTS).await;
    let mut terminated = Vec::new();
    let mut ready_again = Vec::new();
    let mut threshold = EVENTS / 6;
    for round in 1..=2 {
        wait_until(
            &format!("{threshold} deliveries before termination {round}"),
            Duration::from_secs(30),
            || async { delivered(&db).await >= threshold },
        )
        .await;
        let killed = terminate_daemon_connections(&db, &app.db.name).await;
        let done = delivered(&db).await;
        assert!(
            done < EVENTS,
            "termination {round} came while work remained ({done} of {EVENTS})"
        );
        assert!(
            killed >= 2,
            "the pool and the LISTEN connection were terminated (only {killed})"
        );
        terminated.push(killed);
        let since = Instant::now();
        daemon.wait_ready().await;
        ready_again.push(since.elapsed());
        threshold = done + EVENTS / 6;
    }

    wait_for_delivered(&db, EVENTS, Duration::from_secs(45)).await;
    assert!(
        daemon.is_running(),
        "the daemon survives losing every connection"
    );
    daemon.wait_ready().await;
    let tally = Tally::of(&db, &receiver.arrivals()).await;
    tally.assert_none_missing();

    // Only NOTIFY can wake an idle daemon within PROMPT: wait until it has
    // gone quiet (no query for longer than any of its short waits), then emit.
    wait_until(
        "the daemon is idle, asleep until the 60 s poll",
        Duration::from_secs(30),
        || async { daemon_is_quiet(&db, &app.db.name).await },
    )
    .await;
    let before = receiver.arrivals().len();
    let emitted_at = Instant::now();
    app.emit(org, "vote.created", sample(EventType::VoteCreated))
        .await;
    wait_until(
        "the event emitted after the terminations arrives",
        PROMPT,
        || async { receiver.arrivals().len() > before },
    )
    .await;
    let latency = emitted_at.elapsed();
    assert!(daemon.is_running());
    let lost = daemon
        .log_events()
        .iter()
        .filter(|event| message(event).contains("LISTEN connection lost"))
        .count();
    assert!(
        lost >= 2,
        "each termination cost the LISTEN connection once"
    );

    println!(
        "RELIABILITY: terminate_backends deliveries={EVENTS} terminated_connections={terminated:?} \
         duplicates={} listen_reconnects={lost} readyz_200_after_termination_ms={:?} \
         post_fault_event_latency={}ms poll_interval=60s",
        tally.duplicate_ids,
        ready_again.iter().map(Duration::as_millis).collect::<Vec<_>>(),
        latency.as_millis()
    );
    daemon.signal("-TERM");
    assert_eq!(daemon.exit_status().await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_postgresql_restart_is_survived() {
    const FIRST: i64 = 200;
    const DURING: i64 = 1000;
    const AFTER: i64 = 200;
    let mut cluster = ThrowawayCluster::start()
        .await
        .expect("a throwaway PostgreSQL cluster");
    let url = cluster.url();
    {
        let mut client = webhookd::db::connect_single(&url).await.unwrap();
        webhookd::db::migrate(&mut client).await.expect("migrate");
    }
    let key = secret_key();
    // Slow enough that the second batch is still in flight when the server
    // stops, however fast the daemon claims: 1,000 deliveries at 200 ms each
    // take over a second even at 128 in flight.
    let receiver = Receiver::slow(Duration::from_millis(200)).await;
    let org = Uuid::new_v4();
    create_webhook(&url, &key, org, &receiver.url("/hook")).await;
    let flags = [
        "--poll-interval",
        "1s",
        "--lease",
        "10s",
        "--connect-timeout",
        "2s",
        "--response-timeout",
        "5s",
        "--retry-base-delay",
        "200ms",
    ];
    let mut daemon = Replica::start(&url, &key, &flags).await;
    daemon.wait_ready().await;

    let db = observer(&url).await;
    emit_many(&db, org, FIRST).await;
    wait_for_delivered(&db, FIRST, Duration::from_secs(20)).await;
    // Stop the server while deliveries are in flight.
    emit_many(&db, org, DURING).await;
    wait_until(
        "deliveries of the second batch are under way",
        Duration::from_secs(20),
        || async { delivered(&db).await >= FIRST + DURING / 10 },
    )
    .await;
    let leased_before_stop = count(
        &db,
        "SELECT count(*) FROM outbox.deliveries WHERE status = 'pending' AND lease_token IS NOT NULL",
    )
    .await;
    assert!(
        leased_before_stop > 0,
        "deliveries are in flight when the server stops"
    );
    drop(db);

    let stopped_at = Instant::now();
    cluster.stop_fast().await.expect("stop the server");
    wait_until(
        "/readyz reports the outage",
        Duration::from_secs(20),
        || async { daemon.readyz().await != Some(200) },
    )
    .await;
    let not_ready_after = stopped_at.elapsed();
    assert_eq!(
        daemon.readyz().await,
        Some(503),
        "not ready, but still answering"
    );
    cluster
        .start_again()
        .await
        .expect("start the server again on its port");
    let started_at = Instant::now();
    let outage = stopped_at.elapsed();
    daemon.wait_ready().await;
    let ready_after_start = started_at.elapsed();

    let db = observer(&url).await;
    emit_many(&db, org, AFTER).await;
    let total = FIRST + DURING + AFTER;
    wait_for_delivered(&db, total, Duration::from_secs(45)).await;
    assert!(daemon.is_running(), "the daemon survives the restart");
    let arrivals = receiver.arrivals();
    let last_delivery_after_start = arrivals
        .iter()
        .map(|a| a.at)
        .max()
        .map(|last| last.saturating_duration_since(started_at))
        .unwrap_or_default();
    let tally = Tally::of(&db, &arrivals).await;
    tally.assert_none_missing();
    let lost: Vec<String> = daemon
        .log_events()
        .iter()
        .map(message)
        .filter(|m| m.contains("connection lost"))
        .collect();
    assert!(
        !lost.is_empty(),
        "the log says the connection was lost; it says:\n{}",
        daemon.log_text()
    );

    println!(
        "RELIABILITY: postgres_restart deliveries={total} leased_before_stop={leased_before_stop} duplicates={} \
         outage={:.1}s readyz_503_after_stop={:.1}s readyz_200_after_start={:.1}s \
         last_delivery_after_start={:.1}s",
        tally.duplicate_ids,
        outage.as_secs_f64(),
        not_ready_after.as_secs_f64(),
        ready_after_start.as_secs_f64(),
        last_delivery_after_start.as_secs_f64()
    );
    daemon.signal("-TERM");
    assert_eq!(daemon.exit_status().await.code(), Some(0));
    drop(db);
    cluster.stop().await.expect("stop the throwaway cluster");
}
