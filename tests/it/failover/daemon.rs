//! The daemon under test: the real `webhookd run` binary as a child process.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};

use super::{LEASE, WAIT};
use crate::harness::wait_until;

/// `webhookd run` as a child process, killed on drop; its log is kept and
/// shown when the test fails.
pub(super) struct Daemon {
    child: tokio::process::Child,
    admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    pub(super) fn start(database_url: &str, key: &str) -> Daemon {
        let admin = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port on 127.0.0.1");
        let lease = format!("{}s", LEASE.as_secs());
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_webhookd"))
            .arg("run")
            .args(["--admin-addr", &admin.to_string()])
            .args(["--lease", &lease])
            .args(["--connect-timeout", "1s", "--response-timeout", "2s"])
            .args(["--retry-base-delay", "200ms", "--poll-interval", "200ms"])
            .env("DATABASE_URL", database_url)
            .env("WEBHOOKD_SECRET_KEY", key)
            .env("WEBHOOKD_ALLOW_PRIVATE_TARGETS", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start webhookd run");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = log.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.lock().unwrap().push(line);
            }
        });
        Daemon { child, admin, log }
    }

    /// The HTTP status of `/readyz`; `None` when nothing answers within 10 s.
    pub(super) async fn readyz(&self) -> Option<u16> {
        crate::harness::process::http_status(self.admin, "/readyz").await
    }

    pub(super) async fn wait_ready(&self) {
        wait_until("/readyz answers 200", WAIT, || async {
            self.readyz().await == Some(200)
        })
        .await;
    }

    pub(super) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then the process must exit 0.
    pub(super) async fn terminate(&mut self) {
        let pid = self.child.id().expect("the daemon is running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the daemon exits after SIGTERM")
            .expect("wait for the daemon");
        assert_eq!(status.code(), Some(0), "daemon log:\n{}", self.log_tail());
    }

    pub(super) fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap();
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
