//! The daemon under test: the real `webhookd run` binary as a child process
//! (the harness's [`Replica`], with text logs), its log shown when the test
//! fails.

use super::{LEASE, WAIT};
use crate::harness::process::{Replica, Webhookd};
use crate::harness::wait_until;

/// `webhookd run` as a child process, killed on drop.
pub(super) struct Daemon {
    replica: Replica,
}

impl Daemon {
    pub(super) async fn start(database_url: &str, key: &str) -> Daemon {
        let lease = format!("{}s", LEASE.as_secs());
        let args = [
            "run",
            "--admin-addr",
            "127.0.0.1:0",
            "--lease",
            &lease,
            "--connect-timeout",
            "1s",
            "--response-timeout",
            "2s",
            "--retry-base-delay",
            "200ms",
            "--poll-interval",
            "200ms",
        ];
        let replica = Webhookd::new(database_url, &args)
            .key(key)
            .env("WEBHOOKD_ALLOW_PRIVATE_TARGETS", "1")
            .start()
            .await;
        Daemon { replica }
    }

    /// The HTTP status of `/readyz`; `None` when nothing answers within 5 s.
    pub(super) async fn readyz(&self) -> Option<u16> {
        self.replica.readyz().await
    }

    pub(super) async fn wait_ready(&self) {
        wait_until("/readyz answers 200", WAIT, || async {
            self.readyz().await == Some(200)
        })
        .await;
    }

    pub(super) fn is_running(&mut self) -> bool {
        self.replica.is_running()
    }

    /// SIGTERM, then the process must exit 0.
    pub(super) async fn terminate(&mut self) {
        self.replica.signal("-TERM");
        let status = self.replica.exit_status().await;
        assert_eq!(status.code(), Some(0), "daemon log:\n{}", self.log_tail());
    }

    pub(super) fn log_tail(&self) -> String {
        let log = self.replica.log_lines();
        log[log.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("webhookd run's last log lines:\n{}", self.log_tail());
        }
    }
}
