//! The horizon check names what holds vacuum back: a transaction left open
//! elsewhere in the database, with its pid and application; in a metric,
//! and in a warning that is rate-limited and followed by an all-clear.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use webhookd::admin::metrics::Metrics;
use webhookd::db::maintenance::{HolderKind, HorizonHolder};
use webhookd::maintenance::horizon::{Horizon, HorizonConfig, HorizonNotice, HorizonReading};

use crate::harness::{test_args, TestApp, TestDb};

const WAIT: Duration = Duration::from_secs(20);

/// A session named `stuck-report` with a transaction open (an xid and a
/// snapshot); returns it and its pid.
async fn stuck_report(db: &TestDb) -> (tokio_postgres::Client, i32) {
    let separator = if db.url.contains('?') { '&' } else { '?' };
    let client = webhookd::db::connect_single(&format!(
        "{}{separator}application_name=stuck-report",
        db.url
    ))
    .await
    .unwrap();
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT txid_current();")
        .await
        .unwrap();
    let pid = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // Another transaction after it, so that its age in xids is not zero.
    db.count("SELECT txid_current()").await;
    (client, pid)
}

fn assert_names(holder: &Option<HorizonHolder>, pid: i32) {
    let holder = holder.as_ref().expect("a holder");
    assert_eq!(holder.kind, HolderKind::Session);
    assert_eq!(holder.pid, Some(pid));
    assert_eq!(holder.name.as_deref(), Some("stuck-report"));
    assert!(holder.age_transactions >= 1, "{holder:?}");
}

/// Log lines written while the guard lives (on this thread: the test's
/// runtime is single-threaded), as JSON objects.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn lines(&self, level: &str, containing: &str) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["level"] == level)
            .filter(|line| line["message"].as_str().unwrap_or("").contains(containing))
            .collect()
    }
}

#[tokio::test]
async fn a_transaction_left_open_is_named_warned_about_once_and_cleared_when_it_ends() {
    let app = TestApp::new().await;
    let (holder, pid) = stuck_report(&app.db).await;
    let pool = webhookd::db::connect_pool(&webhookd::db::parse_url(&app.db.url).unwrap(), 2)
        .await
        .unwrap();
    let mut horizon = Horizon::new(
        HorizonConfig {
            interval: Duration::from_secs(30),
            warn_after: Duration::from_millis(300),
            warn_every: Duration::from_secs(3600),
        },
        pool.clone(),
        Arc::new(Metrics::new()),
    );
    let captured = Captured::default();
    let _logs = captured.install();
    let mut readings: Vec<HorizonReading> = vec![horizon.run_once().await.unwrap()];
    assert_names(&readings[0].holder, pid);
    let first_age = readings[0].held_for;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reading = horizon.run_once().await.unwrap();
        let grown = reading.held_for > first_age.max(Duration::from_millis(300));
        readings.push(reading);
        if grown {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the age grows past the threshold"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..2 {
        readings.push(horizon.run_once().await.unwrap());
    }
    for reading in &readings {
        assert_names(&reading.holder, pid);
    }
    let warnings = readings
        .iter()
        .filter(|r| r.notice == Some(HorizonNotice::HeldBack))
        .count();
    assert_eq!(warnings, 1, "one warning, not one per look");
    let warned = captured.lines("WARN", "xmin horizon");
    assert_eq!(warned.len(), 1, "{warned:?}");
    let message = warned[0]["message"].as_str().unwrap();
    for expected in [
        format!("session pid {pid}"),
        "application 'stuck-report'".to_string(),
        "cannot be vacuumed".to_string(),
        format!("pg_terminate_backend({pid})"),
    ] {
        assert!(message.contains(&expected), "{expected:?} in {message}");
    }
    assert_eq!(warned[0]["pid"], pid);
    assert_eq!(warned[0]["application_name"], "stuck-report");
    assert_eq!(warned[0]["kind"], "session");
    assert!(
        !captured
            .lines("WARN", "")
            .iter()
            .any(|line| line.to_string().contains("txid_current")),
        "never the holder's query"
    );

    holder.batch_execute("COMMIT").await.unwrap();
    let cleared = horizon.run_once().await.unwrap();
    assert!(
        matches!(&cleared.notice, Some(HorizonNotice::Cleared { holder, .. }) if holder.pid == Some(pid)),
        "{cleared:?}"
    );
    assert_eq!(horizon.run_once().await.unwrap().notice, None);
    assert_eq!(captured.lines("INFO", "no longer holds").len(), 1);
}

#[tokio::test]
async fn the_daemon_exports_the_horizon_age_on_metrics() {
    let app = TestApp::new().await;
    let (holder, _pid) = stuck_report(&app.db).await;
    let (daemon, admin) = app.spawn_daemon_with_admin(test_args(), None).await;
    let value = |metrics: &str, name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let metrics = loop {
        let metrics = crate::harness::http_request(admin, "GET", "/metrics", "", "").await;
        if value(&metrics, "webhookd_xmin_horizon_age_seconds") > 0.0
            && value(&metrics, "webhookd_xmin_horizon_age_transactions") >= 1.0
        {
            break metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the horizon is on /metrics:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        metrics.contains(r#"webhookd_table_dead_tuples{table="webhooks"}"#),
        "{metrics}"
    );
    holder.batch_execute("COMMIT").await.unwrap();
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn without_superuser_the_holder_is_still_named() {
    let app = TestApp::new().await;
    let (_holder, pid) = stuck_report(&app.db).await;
    let observer = app.db.client().await;
    // A role without pg_read_all_stats sees other roles' pid, application
    // and xmin, but not their state or when their transaction began.
    observer
        .batch_execute("SET ROLE outbox_dashboard")
        .await
        .unwrap();
    let holder = webhookd::db::maintenance::xmin_horizon(&observer)
        .await
        .unwrap();
    assert_names(&holder, pid);
    let holder = holder.unwrap();
    assert_eq!(holder.age_seconds, None);
    assert_eq!(holder.state, None);
}
