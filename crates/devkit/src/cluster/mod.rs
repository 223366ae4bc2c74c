//! A throwaway PostgreSQL cluster for `webhookd demo` and for tests.
//!
//! The demo has to work on a fresh machine where PostgreSQL is installed but no
//! server is running (or none we may log in to). Rather than ask the user to set
//! one up, we start a private server from the installed binaries in a temporary
//! directory, on a free loopback port with trust authentication, and throw it
//! away afterwards. It is for scratch data only: fsync is off.
//!
//! Tests need more: their own settings, pg_hba.conf and TLS files
//! ([`ClusterOptions`]), and a streaming standby that can be promoted after
//! its primary is killed ([`ClusterOptions::start_standby_of`],
//! [`ThrowawayCluster::promote`], [`ThrowawayCluster::stop_immediate`]).
//!
//! PostgreSQL refuses to run as root, so when we are root the binaries run as
//! `postgres` (or `nobody`) through `runuser`, or `su` where `runuser` is missing.
//! Every wait is bounded; a cluster dropped without [`ThrowawayCluster::stop`]
//! is still stopped and removed.

mod error;
mod host;
mod launch;
mod options;

pub use error::ClusterError;
pub use options::ClusterOptions;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tokio::time::{timeout_at, Instant};
use tracing::{info, warn};

use host::{os_args, output_text, read_lossy, tail, Runner};

/// Bound on pg_ctl start plus the readiness poll, and on a promotion.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// pg_ctl waits up to our deadline itself (-t) and exits; killing it earlier
/// would orphan it under runuser, so our own bound is this much later.
const PG_CTL_GRACE: Duration = Duration::from_secs(5);
/// initdb --no-sync takes seconds; this only stops a wedged one hanging the demo.
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
/// Copying a small test cluster takes seconds; this stops a wedged copy.
const BASEBACKUP_TIMEOUT: Duration = Duration::from_secs(120);
/// pg_ctl stop's own wait (-t); we allow a little more before giving up on it.
const STOP_WAIT_SECS: u64 = 15;
/// Drop blocks, so it waits less.
const DROP_STOP_WAIT_SECS: u64 = 10;
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The port we pick can be taken before the server binds it; retry that race.
const PORT_ATTEMPTS: usize = 3;

/// A PostgreSQL server started from the installed binaries in a temporary
/// directory; stopped and removed on [`stop`](ThrowawayCluster::stop) or drop.
#[derive(Debug)]
pub struct ThrowawayCluster {
    /// The temporary directory: data directory, server log and Unix socket.
    dir: PathBuf,
    /// Directory holding initdb and pg_ctl.
    bin_dir: PathBuf,
    runner: Runner,
    /// uid and gid the server runs as, when that is not us (we are root).
    owner: Option<(u32, u32)>,
    port: u16,
    /// pg_ctl start has been attempted since the last stop, so a server may run.
    server_may_run: bool,
    /// The server is stopped and the directory removed.
    cleaned_up: bool,
}

impl ThrowawayCluster {
    /// Finds initdb/pg_ctl (PATH first, then the highest version under
    /// /usr/lib/postgresql/*/bin), creates a temporary directory, runs initdb,
    /// starts the server on a free port on 127.0.0.1 and waits (at most 30 s)
    /// until it accepts connections. On failure everything is cleaned up.
    /// [`ClusterOptions`] starts one with other settings.
    pub async fn start() -> Result<ThrowawayCluster, ClusterError> {
        ClusterOptions::new().start().await
    }

    /// A streaming hot standby of `primary` with the default options; see
    /// [`ClusterOptions::start_standby_of`].
    pub async fn start_standby_of(
        primary: &ThrowawayCluster,
    ) -> Result<ThrowawayCluster, ClusterError> {
        ClusterOptions::new().start_standby_of(primary).await
    }

    /// The port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connection URL, e.g. `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The data directory (files given to [`ClusterOptions::file`] are here).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The whole server log so far, for a failing test's message.
    pub fn server_log(&self) -> String {
        read_lossy(&self.log_file(), 0)
    }

    /// Promotes a standby (`pg_ctl promote`) and waits (at most 30 s) until a
    /// new session accepts writes (`SELECT NOT pg_is_in_recovery()`).
    pub async fn promote(&self) -> Result<(), ClusterError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let data = self.data_dir();
        let wait_secs = START_TIMEOUT.as_secs().to_string();
        let args = os_args(&[
            "promote".as_ref(),
            "-D".as_ref(),
            data.as_os_str(),
            "-w".as_ref(),
            "-t".as_ref(),
            wait_secs.as_ref(),
        ]);
        let pg_ctl = self.bin_dir.join("pg_ctl");
        match self.run(&pg_ctl, &args, deadline + PG_CTL_GRACE).await? {
            None => {
                return Err(ClusterError::Promote(
                    "pg_ctl promote did not return".to_owned(),
                ))
            }
            Some(out) if !out.status.success() => {
                return Err(ClusterError::Promote(tail(&output_text(&out))))
            }
            Some(_) => {}
        }
        self.poll_server(deadline, true).await.map_err(|last| {
            ClusterError::Promote(format!(
                "still read-only after {}s ({last}); server log: {}",
                START_TIMEOUT.as_secs(),
                self.log_tail()
            ))
        })?;
        info!("PostgreSQL on 127.0.0.1:{} accepts writes", self.port);
        Ok(())
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`: no
    /// shutdown checkpoint, clients cut off), keeping the directory for
    /// [`start_again`](Self::start_again).
    pub async fn stop_immediate(&mut self) -> Result<(), ClusterError> {
        self.pg_ctl_stop("immediate").await?;
        self.server_may_run = false;
        Ok(())
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`: clients cut off, a
    /// shutdown checkpoint), keeping the directory for
    /// [`start_again`](Self::start_again): a restart of the whole server.
    pub async fn stop_fast(&mut self) -> Result<(), ClusterError> {
        self.pg_ctl_stop("fast").await?;
        self.server_may_run = false;
        Ok(())
    }

    /// Starts a stopped server again on the same port (after crash recovery,
    /// when it was stopped with [`stop_immediate`](Self::stop_immediate))
    /// or after a clean stop ([`stop_fast`](Self::stop_fast)).
    pub async fn start_again(&mut self) -> Result<(), ClusterError> {
        if self.cleaned_up {
            return Err(ClusterError::Start(format!(
                "{} was already removed",
                self.dir.display()
            )));
        }
        self.launch(Some(self.port)).await
    }

    /// Stops the server (`pg_ctl stop -m fast`, falling back to `-m immediate`,
    /// each bounded) and removes the temporary directory. Idempotent.
    pub async fn stop(&mut self) -> Result<(), ClusterError> {
        if self.cleaned_up {
            return Ok(());
        }
        let mut result = Ok(());
        if self.server_may_run && self.pid_file().exists() {
            if let Err(fast) = self.pg_ctl_stop("fast").await {
                warn!("fast shutdown failed ({fast}), trying an immediate one");
                result = self.pg_ctl_stop("immediate").await;
            }
        }
        // Even if the server did not stop, remove the directory: a postmaster
        // whose lock file is gone shuts itself down within a minute.
        self.server_may_run = false;
        host::remove_dir(&self.dir)?;
        self.cleaned_up = true;
        info!(
            "removed the throwaway PostgreSQL cluster in {}",
            self.dir.display()
        );
        result
    }

    /// Makes, fills and starts a cluster: initdb, or a copy of `primary`.
    /// On failure everything is cleaned up.
    async fn create(
        options: ClusterOptions,
        primary: Option<&ThrowawayCluster>,
    ) -> Result<ThrowawayCluster, ClusterError> {
        let bin_dir = host::find_bin_dir().ok_or(ClusterError::BinariesNotFound)?;
        let (runner, owner) = host::choose_runner().await?;
        let dir = host::create_temp_dir(owner)?;
        let mut cluster = ThrowawayCluster {
            dir,
            bin_dir,
            runner,
            owner,
            port: 0,
            server_may_run: false,
            cleaned_up: false,
        };
        let product = match host::major_version(&cluster.bin_dir).await {
            Some(major) => format!("PostgreSQL {major}"),
            None => "PostgreSQL".to_owned(),
        };
        let what = match primary {
            None => "cluster".to_owned(),
            Some(primary) => format!("standby of 127.0.0.1:{}", primary.port),
        };
        info!(
            "starting a throwaway {product} {what} in {}",
            cluster.dir.display()
        );
        if let Some(user) = cluster.runner.user() {
            info!("running as root, so PostgreSQL runs as user {user}");
        }
        match cluster.fill_and_launch(&options, primary).await {
            Ok(()) => Ok(cluster),
            Err(err) => {
                if let Err(cleanup) = cluster.stop().await {
                    warn!("cleaning up the throwaway cluster failed: {cleanup}");
                }
                Err(err)
            }
        }
    }

    async fn fill_and_launch(
        &mut self,
        options: &ClusterOptions,
        primary: Option<&ThrowawayCluster>,
    ) -> Result<(), ClusterError> {
        match primary {
            None => self.initdb().await?,
            Some(primary) => self.basebackup(primary).await?,
        }
        options.apply(&self.data_dir(), &self.dir, self.owner)?;
        self.launch(None).await
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn pid_file(&self) -> PathBuf {
        self.data_dir().join("postmaster.pid")
    }

    fn command(&self, program: &Path, args: &[OsString]) -> Command {
        self.runner.command(program, args, &self.dir)
    }

    /// Runs a PostgreSQL binary, giving up (and killing it) at `deadline`.
    /// `Ok(None)` means it timed out.
    async fn run(
        &self,
        program: &Path,
        args: &[OsString],
        deadline: Instant,
    ) -> Result<Option<Output>, ClusterError> {
        let mut cmd = tokio::process::Command::from(self.command(program, args));
        cmd.kill_on_drop(true);
        match timeout_at(deadline, cmd.output()).await {
            Err(_elapsed) => Ok(None),
            Ok(Ok(output)) => Ok(Some(output)),
            Ok(Err(source)) => Err(ClusterError::Spawn {
                program: program.display().to_string(),
                source,
            }),
        }
    }

    fn stop_args(&self, mode: &str, wait_secs: u64) -> Vec<OsString> {
        let data = self.data_dir();
        let wait_secs = wait_secs.to_string();
        os_args(&[
            "stop".as_ref(),
            "-D".as_ref(),
            data.as_os_str(),
            "-m".as_ref(),
            mode.as_ref(),
            "-w".as_ref(),
            "-t".as_ref(),
            wait_secs.as_ref(),
        ])
    }

    async fn pg_ctl_stop(&self, mode: &str) -> Result<(), ClusterError> {
        let args = self.stop_args(mode, STOP_WAIT_SECS);
        let deadline = Instant::now() + Duration::from_secs(STOP_WAIT_SECS + 5);
        let pg_ctl = self.bin_dir.join("pg_ctl");
        match self.run(&pg_ctl, &args, deadline).await? {
            None => Err(ClusterError::Stop(format!(
                "pg_ctl stop -m {mode} did not finish within {}s",
                STOP_WAIT_SECS + 5
            ))),
            Some(out) if out.status.success() => Ok(()),
            Some(out) => Err(ClusterError::Stop(format!(
                "pg_ctl stop -m {mode}: {}",
                tail(&output_text(&out))
            ))),
        }
    }

    fn log_tail(&self) -> String {
        let log = self.server_log();
        if log.trim().is_empty() {
            "(the server log is empty)".to_owned()
        } else {
            tail(&log)
        }
    }
}

impl Drop for ThrowawayCluster {
    /// Best effort when [`stop`](ThrowawayCluster::stop) was not called: an
    /// immediate shutdown (bounded by pg_ctl's -t) and removal of the directory.
    fn drop(&mut self) {
        if self.cleaned_up {
            return;
        }
        if self.server_may_run && self.pid_file().exists() {
            let args = self.stop_args("immediate", DROP_STOP_WAIT_SECS);
            match self.command(&self.bin_dir.join("pg_ctl"), &args).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => warn!(
                    "could not stop the throwaway PostgreSQL server: {}",
                    tail(&output_text(&out))
                ),
                Err(err) => warn!("could not run pg_ctl to stop the throwaway server: {err}"),
            }
        }
        match host::remove_dir(&self.dir) {
            Ok(()) => info!(
                "removed the throwaway PostgreSQL cluster in {}",
                self.dir.display()
            ),
            Err(err) => warn!("{err}"),
        }
    }
}
