//! The producer: a trickle of events through the multi-host URL, on
//! whichever server accepts writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use uuid::Uuid;

use super::{EMIT_EVERY, PRODUCER_MAX_FAILURES, WAIT};

/// One emit attempt.
#[derive(Debug, Clone)]
pub(super) struct Emitted {
    seq: u64,
    /// When the commit was confirmed (or the attempt failed).
    pub(super) at: Instant,
}

impl Emitted {
    /// The label the event carries in `data.id`: unique per attempt, so an
    /// attempt whose commit was in doubt never shares it with a retry.
    pub(super) fn label(&self) -> String {
        format!("failover-{}", self.seq)
    }
}

/// What the producer did.
#[derive(Debug, Clone, Default)]
pub(super) struct ProducerLog {
    /// Emits whose commit was confirmed.
    pub(super) committed: Vec<Emitted>,
    /// Sent, then the connection failed: committed or not, nobody knows.
    pub(super) in_doubt: Vec<Emitted>,
    /// Failed connects and emits.
    pub(super) failures: usize,
}

impl ProducerLog {
    /// The labels of events whose commit was confirmed after `at`.
    pub(super) fn committed_after(&self, at: Instant) -> Vec<String> {
        self.committed
            .iter()
            .filter(|emitted| emitted.at > at)
            .map(Emitted::label)
            .collect()
    }
}

/// Emits one `vote.created` every [`EMIT_EVERY`] on whatever server accepts
/// writes, reconnecting after every error; stopped and aborted on drop.
pub(super) struct Producer {
    log: Arc<Mutex<ProducerLog>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Producer {
    pub(super) fn start(url: &str, org: Uuid) -> Producer {
        let log = Arc::new(Mutex::new(ProducerLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(produce(url.to_owned(), org, log.clone(), stop.clone()));
        Producer { log, stop, task }
    }

    /// Events committed (after `since`, when given).
    pub(super) fn committed_since(&self, since: Option<Instant>) -> usize {
        let log = self.log.lock().unwrap();
        log.committed
            .iter()
            .filter(|emitted| since.is_none_or(|since| emitted.at > since))
            .count()
    }

    /// Failed connects and emits so far.
    pub(super) fn failures(&self) -> usize {
        self.log.lock().unwrap().failures
    }

    /// Stops after the attempt under way; what it did.
    pub(super) async fn stop(&mut self) -> ProducerLog {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("the producer stops")
            .expect("the producer task");
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn produce(url: String, org: Uuid, log: Arc<Mutex<ProducerLog>>, stop: Arc<AtomicBool>) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut ticks = tokio::time::interval(EMIT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let mut failures_in_a_row = 0;
    while !stop.load(Ordering::Relaxed) && failures_in_a_row < PRODUCER_MAX_FAILURES {
        ticks.tick().await;
        let connected = match client.take().filter(|c| !c.is_closed()) {
            Some(connected) => connected,
            None => match tokio::time::timeout(WAIT, webhookd::db::connect_single(&url)).await {
                Ok(Ok(connected)) => connected,
                _ => {
                    failures_in_a_row += 1;
                    log.lock().unwrap().failures += 1;
                    continue;
                }
            },
        };
        seq += 1;
        let data = serde_json::json!({"id": format!("failover-{seq}"), "post_id": "p1"});
        let emitted = tokio::time::timeout(
            WAIT,
            webhookd::db::webhooks::emit(&connected, org, "vote.created", &data),
        )
        .await;
        let record = Emitted {
            seq,
            at: Instant::now(),
        };
        let mut entries = log.lock().unwrap();
        if matches!(emitted, Ok(Ok(_))) {
            failures_in_a_row = 0;
            entries.committed.push(record);
            client = Some(connected);
        } else {
            failures_in_a_row += 1;
            entries.failures += 1;
            entries.in_doubt.push(record);
        }
    }
}
