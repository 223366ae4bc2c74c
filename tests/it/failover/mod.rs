//! Failover: a multi-host `DATABASE_URL` with `target_session_attrs=read-write`
//! follows a promoted standby, without restarting the daemon.
//!
//! A primary and a streaming standby (`pg_basebackup -R`) on 127.0.0.1, the
//! real `webhookd run` binary, a real receiver and a producer emitting a
//! steady trickle through the same URL. The primary is stopped as a crash
//! would stop it (`pg_ctl stop -m immediate`), `/readyz` must report the
//! outage, the standby is promoted, and then every event that exists on the
//! survivor must end delivered. Events the old primary committed but never
//! streamed are gone with it; that is asynchronous replication, not a loss
//! by the daemon. The time to resume is printed on a line starting
//! `failover:`.

mod daemon;
mod producer;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use devkit::cluster::{ClusterOptions, ThrowawayCluster};
use uuid::Uuid;
use webhookd::manage::{self, CreateWebhook};
use webhookd::signing::SecretBox;

use crate::harness::receiver::Recorded;
use crate::harness::{secret_key, wait_until, Receiver};
use daemon::Daemon;
use producer::{Emitted, Producer, ProducerLog};

/// The daemon's lease; it must exceed connect + response timeout (1 s + 2 s),
/// and results written late after the outage (the write-back backs off up
/// to a few seconds) must still find their leases valid.
const LEASE: Duration = Duration::from_secs(6);
/// One event per this long: 20 a second.
const EMIT_EVERY: Duration = Duration::from_millis(50);
/// Events committed before the fault, and after the promotion, before the
/// producer stops.
const EVENTS_BEFORE: usize = 40;
const EVENTS_AFTER: usize = 40;
/// How many failed emits the outage lasts for: about 2 s.
const OUTAGE_FAILURES: usize = 40;
/// The producer gives up after this many failures in a row (minutes of
/// outage at 20 attempts a second).
const PRODUCER_MAX_FAILURES: usize = 3000;
/// Generous: the machine may be small and busy.
const WAIT: Duration = Duration::from_secs(60);
const SETTLE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_standby_takes_over_without_a_restart() {
    let mut pair = Pair::start().await;
    let mut daemon = Daemon::start(&pair.url, &pair.key).await;
    daemon.wait_ready().await;
    let mut producer = Producer::start(&pair.url, pair.org);
    wait_until("a steady trickle is delivered", WAIT, || async {
        producer.committed_since(None) >= EVENTS_BEFORE && pair.receiver.requests().len() >= 20
    })
    .await;

    let timings = fail_over(&mut pair, &daemon, &producer).await;
    wait_until("events are committed on the new primary", WAIT, || async {
        producer.committed_since(Some(timings.promoted_at)) >= EVENTS_AFTER
    })
    .await;
    let produced = producer.stop().await;

    let survivor = webhookd::db::connect_single(&pair.standby.url())
        .await
        .unwrap();
    settle(&survivor, &pair.receiver, &daemon).await;
    assert!(daemon.is_running(), "the same daemon process throughout");
    let tally = Tally::of(&survivor, &pair.receiver.requests(), &produced).await;
    tally.check(&produced, &timings);
    tally.report(&produced, &timings);
    daemon.terminate().await;
    drop(survivor);
    pair.standby
        .stop()
        .await
        .expect("stop the promoted standby");
    pair.primary.stop().await.expect("remove the old primary");
}

/// A primary with the schema and one webhook, its streaming standby, the
/// receiver, and the multi-host URL naming both. Both clusters are stopped
/// and removed on drop, whether the test passes or panics.
struct Pair {
    primary: ThrowawayCluster,
    standby: ThrowawayCluster,
    receiver: Receiver,
    url: String,
    key: String,
    org: Uuid,
}

impl Pair {
    async fn start() -> Pair {
        let primary = ClusterOptions::new()
            .replication()
            .start()
            .await
            .expect("a primary");
        let mut client = webhookd::db::connect_single(&primary.url()).await.unwrap();
        webhookd::db::migrate(&mut client).await.expect("migrate");
        let key = secret_key();
        let org = Uuid::new_v4();
        let receiver = Receiver::with_status(200).await;
        manage::create(
            &client,
            &SecretBox::from_base64(&key).unwrap(),
            &webhookd::delivery::sender::SystemResolver,
            &CreateWebhook {
                organization_id: org,
                url: &receiver.url("/hook"),
                label: "failover",
                allow_private_targets: true,
                signature_scheme: Default::default(),
            },
        )
        .await
        .expect("create webhook");
        let standby = ClusterOptions::new()
            .start_standby_of(&primary)
            .await
            .expect("a standby");
        let url = format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
            primary.port(),
            standby.port()
        );
        Pair {
            primary,
            standby,
            receiver,
            url,
            key,
            org,
        }
    }
}

/// When the fault and the recovery happened, as the test saw them.
struct Timings {
    stopped_at: Instant,
    not_ready_after: Duration,
    promoted_at: Instant,
    ready_after_promotion: Duration,
}

/// Stops the primary as a crash would, checks that `/readyz` reports the
/// outage while it lasts, promotes the standby and waits until the daemon
/// is ready again.
async fn fail_over(pair: &mut Pair, daemon: &Daemon, producer: &Producer) -> Timings {
    let stopped_at = Instant::now();
    pair.primary
        .stop_immediate()
        .await
        .expect("stop the primary");
    wait_until("/readyz reports the outage", WAIT, || async {
        daemon.readyz().await != Some(200)
    })
    .await;
    let not_ready_after = stopped_at.elapsed();
    // Let the outage last long enough for every retry loop to back off a
    // few times; /readyz must say so throughout.
    let failures_at_stop = producer.failures();
    wait_until("the producer fails for a while", WAIT, || async {
        let ready = daemon.readyz().await;
        assert_eq!(ready, Some(503), "not ready, still answering");
        producer.failures() >= failures_at_stop + OUTAGE_FAILURES
    })
    .await;
    pair.standby.promote().await.expect("promote the standby");
    let promoted_at = Instant::now();
    daemon.wait_ready().await;
    Timings {
        stopped_at,
        not_ready_after,
        promoted_at,
        ready_after_promotion: promoted_at.elapsed(),
    }
}

/// Waits until the survivor has fanned out every event, every delivery is
/// delivered and every event arrived; fails at once on a failed delivery.
async fn settle(db: &tokio_postgres::Client, receiver: &Receiver, daemon: &Daemon) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let row = db
            .query_typed_one(
                "SELECT (SELECT count(*) FROM outbox.events WHERE fanned_out_at IS NULL),
                        (SELECT count(*) FROM outbox.deliveries WHERE status = 'pending'),
                        (SELECT count(*) FROM outbox.deliveries WHERE status IN ('failed', 'cancelled'))",
                &[],
            )
            .await
            .expect("read the survivor's queue");
        let (unfanned, pending, failed): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            failed,
            0,
            "no delivery fails; daemon log:\n{}",
            daemon.log_tail()
        );
        let arrived: HashSet<String> = receiver.requests().iter().filter_map(seq_of).collect();
        let missing = event_seqs(db)
            .await
            .into_iter()
            .filter(|seq| !arrived.contains(seq))
            .count();
        if unfanned == 0 && pending == 0 && missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {SETTLE:?}: {unfanned} events not fanned out, {pending} deliveries pending, \
             {missing} events never arrived; daemon log:\n{}",
            daemon.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The producer's sequence label of every event on `db`.
async fn event_seqs(db: &tokio_postgres::Client) -> Vec<String> {
    db.query_typed("SELECT data->>'id' FROM outbox.events", &[])
        .await
        .expect("read events")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// The producer's label of the event a request carried (`data.id`).
fn seq_of(request: &Recorded) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(&request.body).ok()?;
    Some(body.get("data")?.get("id")?.as_str()?.to_owned())
}

/// Receiver arrivals counted per delivery id and per event.
struct Tally {
    events_on_survivor: usize,
    /// Committed (as far as the producer knew) and not on the survivor.
    lost_with_old_primary: usize,
    /// Arrivals beyond the first, per delivery id.
    duplicate_arrivals: usize,
    /// Events that arrived more than once (under one delivery id or two:
    /// a fan-out the survivor never saw is done again with a new id).
    duplicate_events: Vec<String>,
    /// Label → arrival times.
    arrivals: HashMap<String, Vec<Instant>>,
}

impl Tally {
    async fn of(
        db: &tokio_postgres::Client,
        requests: &[Recorded],
        produced: &ProducerLog,
    ) -> Tally {
        let on_survivor: HashSet<String> = event_seqs(db).await.into_iter().collect();
        let mut per_delivery: HashMap<String, usize> = HashMap::new();
        let mut arrivals: HashMap<String, Vec<Instant>> = HashMap::new();
        for request in requests {
            *per_delivery.entry(request.delivery_id()).or_default() += 1;
            if let Some(seq) = seq_of(request) {
                arrivals.entry(seq).or_default().push(request.at);
            }
        }
        let mut duplicate_events: Vec<String> = arrivals
            .iter()
            .filter(|(_, at)| at.len() > 1)
            .map(|(seq, _)| seq.clone())
            .collect();
        duplicate_events.sort();
        Tally {
            events_on_survivor: on_survivor.len(),
            lost_with_old_primary: produced
                .committed
                .iter()
                .filter(|emitted| !on_survivor.contains(&emitted.label()))
                .count(),
            duplicate_arrivals: per_delivery.values().map(|n| n - 1).sum(),
            duplicate_events,
            arrivals,
        }
    }

    /// Duplicates only of what may have been in flight at the stop: events
    /// committed in the last lease window before it, or whose commit the
    /// producer could not confirm. Nothing committed on the new primary
    /// arrives twice.
    fn check(&self, produced: &ProducerLog, timings: &Timings) {
        let stopped_at = timings.stopped_at;
        let window_start = stopped_at.checked_sub(LEASE).unwrap_or(stopped_at);
        let in_flight: HashSet<String> = produced
            .committed
            .iter()
            .filter(|emitted| emitted.at >= window_start && emitted.at <= stopped_at)
            .chain(&produced.in_doubt)
            .map(Emitted::label)
            .collect();
        let outside: Vec<&String> = self
            .duplicate_events
            .iter()
            .filter(|seq| !in_flight.contains(*seq))
            .collect();
        assert!(
            outside.is_empty(),
            "duplicates beyond what was in flight at the stop: {outside:?} \
             (in flight: {} events)",
            in_flight.len()
        );
        assert!(
            self.duplicate_arrivals <= in_flight.len(),
            "{} duplicate arrivals, {} events in flight",
            self.duplicate_arrivals,
            in_flight.len()
        );
        for seq in produced.committed_after(timings.promoted_at) {
            assert_eq!(
                self.arrivals.get(&seq).map_or(0, Vec::len),
                1,
                "{seq}, committed on the new primary, arrives exactly once"
            );
        }
    }

    /// Prints the numbers on one line starting `failover:`, the time to
    /// resume first: from the primary's stop to the first arrival of an
    /// event committed on the new primary.
    fn report(&self, produced: &ProducerLog, timings: &Timings) {
        let resumed = produced
            .committed_after(timings.promoted_at)
            .iter()
            .filter_map(|seq| self.arrivals.get(seq)?.iter().min().copied())
            .min()
            .expect("events committed after the promotion arrived");
        let since = |at: Instant| resumed.saturating_duration_since(at).as_millis();
        eprintln!(
            "failover: resumed in {} ms (primary stopped -> first delivery of an event committed \
             after promotion; {} ms after promotion); readyz not ready after {} ms, ready {} ms \
             after promotion; outage {} ms; events on survivor {}, lost with the old primary {}, \
             duplicate arrivals {} (events delivered twice {}), producer failures {}",
            since(timings.stopped_at),
            since(timings.promoted_at),
            timings.not_ready_after.as_millis(),
            timings.ready_after_promotion.as_millis(),
            (timings.promoted_at - timings.stopped_at).as_millis(),
            self.events_on_survivor,
            self.lost_with_old_primary,
            self.duplicate_arrivals,
            self.duplicate_events.len(),
            produced.failures,
        );
    }
}
