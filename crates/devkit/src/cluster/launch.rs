//! Making and starting a throwaway cluster's server: initdb or a copy of a
//! primary (pg_basebackup), `pg_ctl start` on a free port, and the readiness
//! poll that says it accepts connections (or writes, after a promotion).

use std::fs;
use std::process::Output;
use tokio::time::{timeout_at, Instant};
use tracing::info;

use super::host::{self, os_args, output_text, read_lossy, tail};
use super::{
    ClusterError, ThrowawayCluster, BASEBACKUP_TIMEOUT, INITDB_TIMEOUT, PG_CTL_GRACE,
    POLL_INTERVAL, PORT_ATTEMPTS, START_TIMEOUT,
};

impl ThrowawayCluster {
    pub(super) async fn initdb(&self) -> Result<(), ClusterError> {
        let data = self.data_dir();
        let args = os_args(&[
            "-D".as_ref(),
            data.as_os_str(),
            "-A".as_ref(),
            "trust".as_ref(),
            "-U".as_ref(),
            "postgres".as_ref(),
            "--no-sync".as_ref(),
            "-E".as_ref(),
            "UTF8".as_ref(),
            // The environment's locale may be missing or clash with UTF8;
            // nothing here needs a collation.
            "--no-locale".as_ref(),
        ]);
        let initdb = self.bin_dir.join("initdb");
        match self
            .run(&initdb, &args, Instant::now() + INITDB_TIMEOUT)
            .await?
        {
            None => Err(ClusterError::Initdb(format!(
                "did not finish within {}s",
                INITDB_TIMEOUT.as_secs()
            ))),
            Some(out) if !out.status.success() => {
                Err(ClusterError::Initdb(tail(&output_text(&out))))
            }
            Some(_) => Ok(()),
        }
    }

    /// Copies `primary` into our data directory with a standby.signal and
    /// primary_conninfo (-R), through a replication slot of its own so the
    /// primary keeps the WAL the standby has not received yet.
    pub(super) async fn basebackup(&self, primary: &ThrowawayCluster) -> Result<(), ClusterError> {
        let program = host::find_tool(&self.bin_dir, "pg_basebackup")
            .ok_or_else(|| ClusterError::ToolNotFound("pg_basebackup".to_owned()))?;
        let data = self.data_dir();
        let port = primary.port.to_string();
        let slot = format!("webhookd_standby_{:016x}", rand::random::<u64>());
        let args = os_args(&[
            "-h".as_ref(),
            "127.0.0.1".as_ref(),
            "-p".as_ref(),
            port.as_ref(),
            "-U".as_ref(),
            "postgres".as_ref(),
            "-D".as_ref(),
            data.as_os_str(),
            "-R".as_ref(),
            "-X".as_ref(),
            "stream".as_ref(),
            "-c".as_ref(),
            "fast".as_ref(),
            "--no-sync".as_ref(),
            "-C".as_ref(),
            "-S".as_ref(),
            slot.as_ref(),
        ]);
        let deadline = Instant::now() + BASEBACKUP_TIMEOUT;
        match self.run(&program, &args, deadline).await? {
            None => Err(ClusterError::Basebackup(format!(
                "did not finish within {}s",
                BASEBACKUP_TIMEOUT.as_secs()
            ))),
            Some(out) if !out.status.success() => {
                Err(ClusterError::Basebackup(tail(&output_text(&out))))
            }
            Some(_) => Ok(()),
        }
    }

    /// Starts the server on `port`, or on a free port (retrying when another
    /// process takes it first), and waits (at most 30 s) until it accepts
    /// connections.
    pub(super) async fn launch(&mut self, port: Option<u16>) -> Result<(), ClusterError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let attempts = if port.is_some() { 1 } else { PORT_ATTEMPTS };
        for attempt in 1..=attempts {
            self.port = match port {
                Some(port) => port,
                None => host::free_port()?,
            };
            let log_start = fs::metadata(self.log_file()).map_or(0, |m| m.len());
            self.server_may_run = true;
            let out = self.pg_ctl_start(deadline).await?;
            if out.status.success() {
                break;
            }
            let new_log = read_lossy(&self.log_file(), log_start);
            if attempt < attempts && new_log.contains("could not bind") {
                info!("port {} was taken meanwhile, trying another", self.port);
                continue;
            }
            let pg_ctl_output = output_text(&out);
            let detail = if new_log.trim().is_empty() {
                tail(&pg_ctl_output)
            } else {
                tail(&new_log)
            };
            return Err(if pg_ctl_output.contains("did not start in time") {
                ClusterError::StartTimeout(detail)
            } else {
                ClusterError::Start(detail)
            });
        }
        self.poll_server(deadline, false).await.map_err(|last| {
            ClusterError::StartTimeout(format!("{last}; server log: {}", self.log_tail()))
        })?;
        info!(
            "PostgreSQL is accepting connections on 127.0.0.1:{}",
            self.port
        );
        Ok(())
    }

    /// `pg_ctl start -w` on the current port; pg_ctl stops waiting at the
    /// deadline on its own (-t), ours is a backstop.
    async fn pg_ctl_start(&self, deadline: Instant) -> Result<Output, ClusterError> {
        let wait_secs = deadline
            .saturating_duration_since(Instant::now())
            .as_secs()
            .max(1)
            .to_string();
        let data = self.data_dir();
        let log = self.log_file();
        let port_option = format!("-p {}", self.port);
        let args = os_args(&[
            "start".as_ref(),
            "-D".as_ref(),
            data.as_os_str(),
            "-l".as_ref(),
            log.as_os_str(),
            "-w".as_ref(),
            "-t".as_ref(),
            wait_secs.as_ref(),
            "-o".as_ref(),
            port_option.as_ref(),
        ]);
        let pg_ctl = self.bin_dir.join("pg_ctl");
        self.run(&pg_ctl, &args, deadline + PG_CTL_GRACE)
            .await?
            .ok_or_else(|| {
                ClusterError::StartTimeout(format!(
                    "pg_ctl start did not return; server log: {}",
                    self.log_tail()
                ))
            })
    }

    /// Polls until a connection succeeds (and, with `writable`, the server is
    /// out of recovery) or `deadline` passes; the last failure otherwise.
    pub(super) async fn poll_server(
        &self,
        deadline: Instant,
        writable: bool,
    ) -> Result<(), String> {
        loop {
            let last = match timeout_at(deadline, self.probe(writable)).await {
                Ok(Ok(true)) => return Ok(()),
                Ok(Ok(false)) => "still in recovery".to_owned(),
                Ok(Err(err)) => err,
                Err(_elapsed) => "connection attempt timed out".to_owned(),
            };
            if Instant::now() + POLL_INTERVAL >= deadline {
                return Err(last);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// One connection; with `writable`, whether the server is out of recovery.
    /// TLS when the server offers it (sslmode=prefer, as pg_isready), so a
    /// server that takes only TLS connections (`hostssl`) is seen up too.
    async fn probe(&self, writable: bool) -> Result<bool, String> {
        // Not the daemon's name: tests tell the daemon's sessions by it.
        let client = crate::pg::connect_as(&self.url(), "webhookd-cluster")
            .await
            .map_err(|err| err.to_string())?;
        let answer = if writable {
            client
                .query_typed("SELECT NOT pg_is_in_recovery()", &[])
                .await
                .map(|rows| rows.first().is_some_and(|row| row.get::<_, bool>(0)))
                .map_err(|err| err.to_string())
        } else {
            Ok(true)
        };
        // Dropping the client closes the session politely (Terminate), so
        // the server log stays clean.
        drop(client);
        answer
    }
}
