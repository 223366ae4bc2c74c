//! Several real replicas, crashes and database faults: nothing lost, duplicates bounded.
//!
//! Every test here runs the real `webhookd run` binary, one process per
//! replica, against real PostgreSQL, and counts what a real receiver on
//! 127.0.0.1 got by `X-ProductBridge-Delivery-Id`. The numbers each test
//! measures are printed on a line starting `RELIABILITY:` (they go into
//! docs/RELIABILITY.md); none is asserted as a timing, except where the slow
//! path (a lease expiry, the fallback poll) would take far longer than the
//! deadline and so fail the test.
//!
//! Crashes and stops of replicas are here; faults of the database (lost
//! connections, a server restart) in [`database`].

mod database;

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::harness::observer::{
    count, delivered, emit_many, observer, wait_for_delivered, write_back_waits_on_a_lock,
};
use crate::harness::process::Replica;
use crate::harness::receiver::Recorded;
use crate::harness::tally::{LeaseSnapshot, Tally};
use crate::harness::{wait_until, Receiver, TestApp};

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_deliver_every_event_exactly_once_without_faults() {
    const EVENTS: i64 = 3000;
    const WEBHOOKS: usize = 3;
    let app = TestApp::new().await;
    let receiver = Receiver::with_status(200).await;
    let org = Uuid::new_v4();
    let mut webhook_ids = Vec::new();
    for index in 0..WEBHOOKS {
        let webhook = app
            .create_webhook(org, &receiver.url(&format!("/hook/{index}")))
            .await;
        webhook_ids.push(webhook.id.to_string());
    }
    let flags = ["--retry-base-delay", "200ms"];
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::start(&app.db.url, &app.key, &flags).await);
    }
    for replica in &replicas {
        replica.wait_ready().await;
    }
    let db = observer(&app.db.url).await;
    let total = EVENTS * WEBHOOKS as i64;

    let started = Instant::now();
    emit_many(&db, org, EVENTS).await;
    wait_for_delivered(&db, total, Duration::from_secs(50)).await;
    let elapsed = started.elapsed();

    assert_eq!(
        count(&db, "SELECT count(*) FROM outbox.deliveries").await,
        total,
        "one delivery per (event, webhook), no more"
    );
    let requests = receiver.requests();
    let tally = Tally::of(&db, &requests).await;
    println!(
        "three replicas: {} requests, {} distinct delivery ids, {} ids more than once, {} in the database",
        tally.arrivals, tally.distinct, tally.duplicate_ids, tally.expected
    );
    tally.assert_none_missing();
    assert_eq!(tally.duplicate_ids, 0, "no delivery id arrives twice");
    assert_eq!(tally.arrivals, total as usize, "events × webhooks requests");
    for webhook_id in &webhook_ids {
        let got = requests
            .iter()
            .filter(|r| &r.header("x-productbridge-webhook-id") == webhook_id)
            .count();
        assert_eq!(
            got, EVENTS as usize,
            "every event reaches webhook {webhook_id}"
        );
    }
    println!(
        "RELIABILITY: three_replicas events={EVENTS} webhooks={WEBHOOKS} deliveries={total} \
         arrivals={} duplicates={} elapsed={:.1}s",
        tally.arrivals,
        tally.duplicate_ids,
        elapsed.as_secs_f64()
    );

    for replica in &mut replicas {
        replica.signal("-TERM");
    }
    for replica in &mut replicas {
        let status = replica.exit_status().await;
        assert_eq!(
            status.code(),
            Some(0),
            "a replica stopped by SIGTERM exits 0 ({status:?}); its log:\n{}",
            replica.log_text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_replica_under_load_loses_nothing_and_the_survivor_takes_over_after_the_lease(
) {
    const EVENTS: i64 = 2000;
    const WEBHOOKS: usize = 2;
    const IN_FLIGHT_CAP: usize = 32;
    let app = TestApp::new().await;
    // Slow enough that every replica always has requests in flight.
    let receiver = Receiver::slow(Duration::from_millis(50)).await;
    let org = Uuid::new_v4();
    for index in 0..WEBHOOKS {
        app.create_webhook(org, &receiver.url(&format!("/hook/{index}")))
            .await;
    }
    let cap = IN_FLIGHT_CAP.to_string();
    let flags = [
        "--lease",
        "4s",
        "--connect-timeout",
        "1s",
        "--response-timeout",
        "2s",
        "--max-in-flight",
        &cap,
        "--retry-base-delay",
        "200ms",
    ];
    let mut victim = Replica::start(&app.db.url, &app.key, &flags).await;
    let mut survivor = Replica::start(&app.db.url, &app.key, &flags).await;
    victim.wait_ready().await;
    survivor.wait_ready().await;
    let db = observer(&app.db.url).await;
    let total = EVENTS * WEBHOOKS as i64;

    emit_many(&db, org, EVENTS).await;
    wait_until(
        "a first share of the deliveries is done",
        Duration::from_secs(30),
        || async { delivered(&db).await >= total / 6 },
    )
    .await;
    victim.signal("-KILL");
    let killed_at = Instant::now();
    let status = victim.exit_status().await;
    assert_eq!(status.signal(), Some(9), "killed, not exited: {status:?}");

    // With the victim dead, every lease it held is still on its rows; the
    // survivor's leases are on the others. Which is which shows afterwards:
    // the survivor logs the attempt it claimed, the victim never does.
    let leased_at_kill = LeaseSnapshot::take(&db).await;
    let delivered_at_kill = delivered(&db).await;
    assert!(
        delivered_at_kill < total,
        "the kill came while work remained ({delivered_at_kill} of {total} delivered)"
    );

    wait_for_delivered(&db, total, Duration::from_secs(45)).await;
    let arrivals = receiver.arrivals();
    let tally = Tally::of(&db, &arrivals).await;
    tally.assert_none_missing();

    let orphans = leased_at_kill.orphans(&db).await;
    assert!(
        !orphans.is_empty(),
        "the victim held leases when it was killed (snapshot had {} leased rows)",
        leased_at_kill.ids.len()
    );
    for orphan in &orphans {
        assert!(
            orphan.delivered_after_lease,
            "delivery {} of the killed replica was taken over before its lease ran out",
            orphan.id
        );
    }
    // Duplicates come only from what the killed replica held unrecorded: its
    // in-flight requests and results still queued for write-back, which both
    // count against --max-in-flight (the bound itself is asserted below, in
    // the test where write-back lags on purpose).
    let orphan_ids: HashSet<&str> = orphans.iter().map(|o| o.id.as_str()).collect();
    for id in &tally.duplicated {
        assert!(
            orphan_ids.contains(id.as_str()),
            "delivery {id} arrived twice but was not leased by the killed replica"
        );
    }

    let after_kill: Vec<&Recorded> = arrivals.iter().filter(|a| a.at > killed_at).collect();
    let takeover = after_kill
        .iter()
        .filter(|a| orphan_ids.contains(a.delivery_id().as_str()))
        .map(|a| a.at - killed_at)
        .min()
        .unwrap_or_default();
    let recovery = after_kill
        .iter()
        .map(|a| a.at - killed_at)
        .max()
        .unwrap_or_default();
    println!(
        "RELIABILITY: sigkill deliveries={total} delivered_before_kill={delivered_at_kill} \
         orphaned_leases={} duplicates={} extra_arrivals={} in_flight_cap={IN_FLIGHT_CAP} \
         lease=4s takeover_after_kill={:.1}s recovery_after_kill={:.1}s",
        orphans.len(),
        tally.duplicate_ids,
        tally.arrivals - tally.distinct,
        takeover.as_secs_f64(),
        recovery.as_secs_f64()
    );

    survivor.signal("-TERM");
    assert_eq!(survivor.exit_status().await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_duplicates_stay_within_max_in_flight_while_write_back_lags() {
    const EVENTS: i64 = 300;
    const IN_FLIGHT_CAP: i64 = 8;
    let app = TestApp::new().await;
    let receiver = Receiver::slow(Duration::from_millis(10)).await;
    let org = Uuid::new_v4();
    let webhook = app.create_webhook(org, &receiver.url("/hook")).await;
    let cap = IN_FLIGHT_CAP.to_string();
    let flags = [
        "--lease",
        "3s",
        "--connect-timeout",
        "1s",
        "--response-timeout",
        "1s",
        "--max-in-flight",
        &cap,
        "--retry-base-delay",
        "200ms",
    ];
    let db = observer(&app.db.url).await;
    // Write-back folds each batch into the webhook's status row; a lock held
    // on that row (an operator's open transaction, say) makes it lag behind
    // the HTTP side, as a slow database would. Fan-out and claims go on.
    let locker = observer(&app.db.url).await;
    locker.batch_execute("BEGIN").await.unwrap();
    locker
        .execute(
            "SELECT 1 FROM outbox.webhooks WHERE id = $1 FOR NO KEY UPDATE",
            &[&webhook.id],
        )
        .await
        .unwrap();
    let mut victim = Replica::start(&app.db.url, &app.key, &flags).await;
    victim.wait_ready().await;

    emit_many(&db, org, EVENTS).await;
    // Kill once the victim has sent all it will: its write-back waits on the
    // lock and nothing new has arrived for a second.
    let last_change = Mutex::new((0, Instant::now()));
    wait_until(
        "the victim stops sending while its write-back waits",
        Duration::from_secs(20),
        || async {
            let waiting = write_back_waits_on_a_lock(&db, &app.db.name).await;
            let sent = receiver.arrivals().len();
            let mut last = last_change.lock().unwrap();
            if sent != last.0 {
                *last = (sent, Instant::now());
            }
            waiting && sent > 0 && last.1.elapsed() > Duration::from_secs(1)
        },
    )
    .await;
    victim.signal("-KILL");
    victim.exit_status().await;
    let unrecorded_at_kill = receiver.arrivals().len() as i64 - delivered(&db).await;
    locker.batch_execute("ROLLBACK").await.unwrap();

    let mut survivor = Replica::start(&app.db.url, &app.key, &flags).await;
    wait_for_delivered(&db, EVENTS, Duration::from_secs(30)).await;
    let tally = Tally::of(&db, &receiver.arrivals()).await;
    tally.assert_none_missing();
    println!(
        "RELIABILITY: sigkill_lagging_write_back deliveries={EVENTS} in_flight_cap={IN_FLIGHT_CAP} \
         sent_unrecorded_at_kill={unrecorded_at_kill} duplicates={}",
        tally.duplicate_ids
    );
    survivor.signal("-TERM");
    assert_eq!(survivor.exit_status().await.code(), Some(0));
    assert!(
        tally.duplicate_ids as i64 <= IN_FLIGHT_CAP,
        "a crash resends at most --max-in-flight deliveries, but {} arrived twice",
        tally.duplicate_ids
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_releases_work_to_the_other_replica_at_once() {
    const EVENTS: i64 = 600;
    const WEBHOOKS: usize = 2;
    // Completion must beat this by far: a rescue by lease expiry would need 60 s.
    const COMPLETION: Duration = Duration::from_secs(30);
    let app = TestApp::new().await;
    // Slower than the grace period, so the stopping replica must give work back.
    let receiver = Receiver::slow(Duration::from_millis(500)).await;
    let org = Uuid::new_v4();
    for index in 0..WEBHOOKS {
        app.create_webhook(org, &receiver.url(&format!("/hook/{index}")))
            .await;
    }
    let flags = [
        "--lease",
        "60s",
        "--shutdown-grace",
        "200ms",
        "--retry-base-delay",
        "200ms",
    ];
    let mut stopping = Replica::start(&app.db.url, &app.key, &flags).await;
    let mut staying = Replica::start(&app.db.url, &app.key, &flags).await;
    stopping.wait_ready().await;
    staying.wait_ready().await;
    let db = observer(&app.db.url).await;
    let total = EVENTS * WEBHOOKS as i64;

    emit_many(&db, org, EVENTS).await;
    wait_until(
        "both replicas are busy",
        Duration::from_secs(30),
        || async { delivered(&db).await >= total / 6 },
    )
    .await;
    stopping.signal("-TERM");
    let terminated_at = Instant::now();
    let status = stopping.exit_status().await;
    let exited_after = terminated_at.elapsed();
    assert_eq!(status.code(), Some(0), "SIGTERM ends in exit 0");
    let delivered_at_exit = delivered(&db).await;
    assert!(
        delivered_at_exit < total,
        "the replica stopped while work remained"
    );
    let released: u64 = stopping
        .log_events()
        .iter()
        .filter_map(|event| event.get("released").and_then(|n| n.as_u64()))
        .sum();
    assert!(
        released > 0,
        "the stopping replica held in-flight work and released it; its log:\n{}",
        stopping.log_text()
    );

    let deadline_left = COMPLETION.saturating_sub(terminated_at.elapsed());
    wait_for_delivered(&db, total, deadline_left).await;
    let completed_after = terminated_at.elapsed();
    let tally = Tally::of(&db, &receiver.arrivals()).await;
    tally.assert_none_missing();
    assert!(
        tally.duplicate_ids <= released as usize,
        "only released (aborted) requests are sent again"
    );
    println!(
        "RELIABILITY: sigterm deliveries={total} released={released} duplicates={} \
         exit_after_sigterm={:.2}s all_delivered_after_sigterm={:.1}s lease=60s",
        tally.duplicate_ids,
        exited_after.as_secs_f64(),
        completed_after.as_secs_f64()
    );

    staying.signal("-TERM");
    assert_eq!(staying.exit_status().await.code(), Some(0));
}
