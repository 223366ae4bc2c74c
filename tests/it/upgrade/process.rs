//! Helpers for the upgrade tests: either release's binary as a child process
//! (one-shot or a daemon), a producer emitting through `outbox.emit`, and a
//! receiver that can show two daemons sending at once.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use devkit::receiver::Hold;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::harness::process::{Outcome, Replica, Webhookd};
use crate::harness::{wait_until, Receiver};

/// Longest a one-shot command, a start or a stop may take.
const PROCESS_LIMIT: Duration = Duration::from_secs(30);
/// How long the armed receiver holds a lone request waiting for a second.
const GATE_HOLD: Duration = Duration::from_secs(5);

/// `binary ARGS` against `database_url` (see [`Webhookd`]), with
/// `WEBHOOKD_SECRET_KEY` when `key` is given.
fn webhookd(binary: &Path, database_url: &str, args: &[&str], key: Option<&str>) -> Webhookd {
    let command = Webhookd::with_binary(binary, database_url, args);
    match key {
        Some(key) => command.key(key),
        None => command,
    }
}

/// Runs a one-shot command to completion.
pub async fn run(binary: &Path, database_url: &str, args: &[&str], key: Option<&str>) -> Outcome {
    webhookd(binary, database_url, args, key).output().await
}

/// A `webhookd run` process with short delays, `--max-in-flight 1` (so that
/// two requests at once mean two daemons) and JSON logs.
pub struct Daemon {
    name: &'static str,
    replica: Replica,
}

impl Daemon {
    /// Starts `binary run`, its admin address on a port it picks.
    pub async fn start(name: &'static str, binary: &Path, database_url: &str, key: &str) -> Daemon {
        let args = [
            "--log-format",
            "json",
            "run",
            "--allow-private-targets",
            "--admin-addr",
            "127.0.0.1:0",
            "--retry-base-delay",
            "100ms",
            "--connect-timeout",
            "2s",
            "--response-timeout",
            "10s",
            "--lease",
            "20s",
            "--poll-interval",
            "500ms",
            "--shutdown-grace",
            "2s",
            "--max-in-flight",
            "1",
        ];
        let replica = webhookd(binary, database_url, &args, Some(key))
            .start()
            .await;
        Daemon { name, replica }
    }

    /// `/readyz`: status and body, `None` when nothing answers.
    pub async fn readyz(&self) -> Option<(u16, Value)> {
        self.replica.readyz_body().await
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        wait_until(
            &format!("{}'s daemon answers /readyz 200", self.name),
            PROCESS_LIMIT,
            || async { matches!(self.readyz().await, Some((200, _))) },
        )
        .await;
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.replica.log_text()
    }

    /// Its last few WARN and ERROR log lines, under its name.
    pub fn problems(&self) -> String {
        let log = self.replica.log_lines();
        let lines: Vec<&str> = log
            .iter()
            .map(String::as_str)
            .filter(|line| {
                line.contains(r#""level":"WARN""#) || line.contains(r#""level":"ERROR""#)
            })
            .collect();
        let last = &lines[lines.len().saturating_sub(10)..];
        format!("{}:\n{}", self.name, last.join("\n"))
    }

    /// SIGTERM; asserts exit 0 and no error in its log.
    pub async fn stop_cleanly(mut self) {
        self.replica.signal("-TERM");
        let status = self.replica.exit_status().await;
        let log = self.log();
        assert_eq!(status.code(), Some(0), "{}'s daemon: {log}", self.name);
        assert!(
            !log.contains(r#""level":"ERROR""#) && !log.contains("panicked"),
            "{}'s daemon logged an error:\n{log}",
            self.name
        );
    }
}

/// Emits one `vote.created` event the way producers do, through `outbox.emit`.
pub async fn emit(client: &tokio_postgres::Client, org: Uuid, index: usize) -> Uuid {
    let data = serde_json::json!({"id": format!("v{index}"), "post_id": "p1"});
    client
        .query_one("SELECT outbox.emit($1, 'vote.created', $2)", &[&org, &data])
        .await
        .unwrap_or_else(|err| panic!("emit event {index}: {err}"))
        .get(0)
}

/// A producer emitting one event every 10 ms until stopped.
pub struct Emitter {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
    task: JoinHandle<Vec<Uuid>>,
}

impl Emitter {
    /// Starts emitting for `org`.
    pub fn start(database_url: &str, org: Uuid) -> Emitter {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let url = database_url.to_string();
        let (stopping, counting) = (stop.clone(), count.clone());
        let task = tokio::spawn(async move {
            let client = webhookd::db::connect_single(&url).await.expect("connect");
            let mut ids = Vec::new();
            let mut pace = tokio::time::interval(Duration::from_millis(10));
            while !stopping.load(Ordering::SeqCst) {
                pace.tick().await;
                ids.push(emit(&client, org, 1000 + ids.len()).await);
                counting.store(ids.len(), Ordering::SeqCst);
            }
            ids
        });
        Emitter { stop, count, task }
    }

    /// Events committed so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until `n` events are committed (fails if emitting failed).
    pub async fn wait_for(&self, n: usize) {
        wait_until(&format!("{n} events emitted"), PROCESS_LIMIT, || async {
            assert!(
                !self.task.is_finished() || self.count() >= n,
                "the emitter stopped"
            );
            self.count() >= n
        })
        .await;
    }

    /// Stops; returns every committed event's id.
    pub async fn stop(self) -> Vec<Uuid> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("every emit succeeded")
    }
}

/// A receiver that records each request's delivery id and answers 200. Once
/// armed, it holds a lone request (up to [`GATE_HOLD`]) until a second one is
/// in flight, and remembers the most it ever had in flight at once.
pub struct GateReceiver {
    receiver: Receiver,
    gate: Arc<Gate>,
}

struct Gate {
    armed: AtomicBool,
    open_now: AtomicUsize,
    peak: AtomicUsize,
    /// True once two requests were in flight at once while armed.
    paired: watch::Sender<bool>,
}

impl Gate {
    async fn pass(&self) {
        let now = self.open_now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        if self.armed.load(Ordering::SeqCst) {
            if now >= 2 {
                self.paired.send_replace(true);
            }
            let mut paired = self.paired.subscribe();
            let _ = tokio::time::timeout(GATE_HOLD, paired.wait_for(|paired| *paired)).await;
        }
        self.open_now.fetch_sub(1, Ordering::SeqCst);
    }
}

impl GateReceiver {
    /// Listens on 127.0.0.1.
    pub async fn start() -> GateReceiver {
        let gate = Arc::new(Gate {
            armed: AtomicBool::new(false),
            open_now: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            paired: watch::channel(false).0,
        });
        let gating = gate.clone();
        let hold: Arc<Hold> = Arc::new(move || {
            let gate = gating.clone();
            Box::pin(async move { gate.pass().await })
        });
        let receiver = Receiver::started(Receiver::builder().hold(hold)).await;
        GateReceiver { receiver, gate }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        self.receiver.url(path)
    }

    /// The delivery ids of the requests received so far.
    pub fn arrivals(&self) -> Vec<String> {
        self.receiver
            .requests()
            .iter()
            .map(|request| request.delivery_id())
            .collect()
    }

    /// From now on, hold a lone request until a second one arrives.
    pub fn arm(&self) {
        self.gate.armed.store(true, Ordering::SeqCst);
    }

    /// Waits (up to `limit`) until two requests were in flight at once since
    /// [`GateReceiver::arm`]; false if they never were.
    pub async fn wait_for_pair(&self, limit: Duration) -> bool {
        let mut paired = self.gate.paired.subscribe();
        let waited = tokio::time::timeout(limit, paired.wait_for(|paired| *paired)).await;
        waited.is_ok()
    }

    /// The most requests ever in flight at once.
    pub fn peak(&self) -> usize {
        self.gate.peak.load(Ordering::SeqCst)
    }
}
