//! A throwaway PostgreSQL cluster for `webhookd demo`.
//!
//! The demo has to work on a fresh machine where PostgreSQL is installed but no
//! server is running (or none we may log in to). Rather than ask the user to set
//! one up, we start a private server from the installed binaries in a temporary
//! directory, on a free loopback port with trust authentication, and throw it
//! away afterwards. It is for demo data only: fsync is off.
//!
//! PostgreSQL refuses to run as root, so when we are root the binaries run as
//! `postgres` (or `nobody`) through `runuser`, or `su` where `runuser` is missing.

use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tokio::time::{timeout_at, Instant};
use tracing::{info, warn};

/// Bound on pg_ctl start plus the readiness poll.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// pg_ctl start waits up to the start deadline itself (-t) and exits; killing
/// it earlier would orphan it under runuser, so our own bound is this much later.
const PG_CTL_GRACE: Duration = Duration::from_secs(5);
/// initdb --no-sync takes seconds; this only stops a wedged one hanging the demo.
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
/// pg_ctl stop's own wait (-t); we allow a little more before giving up on it.
const STOP_WAIT_SECS: u64 = 15;
/// Drop blocks, so it waits less.
const DROP_STOP_WAIT_SECS: u64 = 10;
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The port we pick can be taken before the server binds it; retry that race.
const PORT_ATTEMPTS: usize = 3;
/// How many lines of a tool's output or the server log go into an error.
const TAIL_LINES: usize = 5;
/// Where Debian and Ubuntu install the server binaries (not on PATH there).
const VERSIONED_BIN_ROOT: &str = "/usr/lib/postgresql";

/// A PostgreSQL server started from the installed binaries in a temporary
/// directory; stopped and removed on [`stop`](ThrowawayCluster::stop) or drop.
#[derive(Debug)]
pub struct ThrowawayCluster {
    /// The temporary directory: data directory, server log and Unix socket.
    dir: PathBuf,
    /// Directory holding initdb and pg_ctl.
    bin_dir: PathBuf,
    runner: Runner,
    port: u16,
    /// pg_ctl start has been attempted, so a server may be running.
    server_may_run: bool,
    /// The server is stopped and the directory removed.
    cleaned_up: bool,
}

/// Why the throwaway cluster could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Neither PATH nor /usr/lib/postgresql/*/bin has initdb and pg_ctl.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under \
         /usr/lib/postgresql/*/bin: install PostgreSQL or set DATABASE_URL"
    )]
    BinariesNotFound,
    /// Running as root and there is no unprivileged user to run PostgreSQL as.
    #[error(
        "PostgreSQL refuses to run as root and neither user `postgres` nor `nobody` exists: \
         run webhookd as a normal user or set DATABASE_URL"
    )]
    NoUnprivilegedUser,
    /// Running as root and there is no way to switch to the unprivileged user.
    #[error(
        "PostgreSQL refuses to run as root and neither runuser nor su was found to run it \
         as `{user}`: run webhookd as a normal user or set DATABASE_URL"
    )]
    NoUserSwitch {
        /// The user PostgreSQL would have run as.
        user: String,
    },
    /// A file system or socket operation failed.
    #[error("could not {action}: {source}")]
    Io {
        /// What we were doing, e.g. "create temporary directory /tmp/x".
        action: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A program could not be executed at all.
    #[error("could not run {program}: {source}")]
    Spawn {
        /// The program, e.g. "/usr/lib/postgresql/15/bin/initdb".
        program: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// initdb exited with an error or hung.
    #[error("initdb failed: {0}")]
    Initdb(String),
    /// pg_ctl start reported that the server could not start.
    #[error("PostgreSQL failed to start: {0}")]
    Start(String),
    /// The server did not accept connections in time.
    #[error("PostgreSQL did not start within 30s: {0}")]
    StartTimeout(String),
    /// pg_ctl stop failed or hung, even with an immediate shutdown.
    #[error("PostgreSQL did not stop: {0}")]
    Stop(String),
}

/// How initdb and pg_ctl are executed.
#[derive(Debug)]
enum Runner {
    /// We are not root: run them directly.
    Direct,
    /// We are root: `runuser -u USER -- program args…`.
    Runuser { runuser: PathBuf, user: String },
    /// We are root and runuser is missing: `su -s /bin/sh -c 'program args…' USER`.
    Su { su: PathBuf, user: String },
}

impl Runner {
    /// A command running `program args` as the right user, in `cwd` (the
    /// unprivileged user may not be allowed into our working directory).
    fn command(&self, program: &Path, args: &[OsString], cwd: &Path) -> Command {
        let mut cmd = match self {
            Runner::Direct => {
                let mut cmd = Command::new(program);
                cmd.args(args);
                cmd
            }
            Runner::Runuser { runuser, user } => {
                let mut cmd = Command::new(runuser);
                cmd.arg("-u").arg(user).arg("--").arg(program).args(args);
                cmd
            }
            Runner::Su { su, user } => {
                let mut script = sh_quote(program.as_os_str());
                for arg in args {
                    script.push(b' ');
                    script.extend(sh_quote(arg));
                }
                let mut cmd = Command::new(su);
                cmd.arg("-s")
                    .arg("/bin/sh")
                    .arg("-c")
                    .arg(OsString::from_vec(script))
                    .arg(user);
                cmd
            }
        };
        cmd.current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
}

impl ThrowawayCluster {
    /// Finds initdb/pg_ctl (PATH first, then the highest version under
    /// /usr/lib/postgresql/*/bin), creates a temporary directory, runs initdb,
    /// starts the server on a free port on 127.0.0.1 and waits (at most 30 s)
    /// until it accepts connections. On failure everything is cleaned up.
    pub async fn start() -> Result<ThrowawayCluster, ClusterError> {
        let bin_dir = find_bin_dir().ok_or(ClusterError::BinariesNotFound)?;
        let (runner, owner) = choose_runner().await?;
        let dir = create_temp_dir(owner)?;
        let mut cluster = ThrowawayCluster {
            dir,
            bin_dir,
            runner,
            port: 0,
            server_may_run: false,
            cleaned_up: false,
        };
        let product = match major_version(&cluster.bin_dir).await {
            Some(major) => format!("PostgreSQL {major}"),
            None => "PostgreSQL".to_owned(),
        };
        info!(
            "starting a throwaway {product} cluster in {}",
            cluster.dir.display()
        );
        if let Runner::Runuser { user, .. } | Runner::Su { user, .. } = &cluster.runner {
            info!("running as root, so PostgreSQL runs as user {user}");
        }
        match cluster.init_and_start().await {
            Ok(()) => Ok(cluster),
            Err(err) => {
                if let Err(cleanup) = cluster.stop().await {
                    warn!("cleaning up the throwaway cluster failed: {cleanup}");
                }
                Err(err)
            }
        }
    }

    /// The connection URL, e.g. `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
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
        remove_dir(&self.dir)?;
        self.cleaned_up = true;
        info!(
            "removed the throwaway PostgreSQL cluster in {}",
            self.dir.display()
        );
        result
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn pid_file(&self) -> PathBuf {
        self.data_dir().join("postmaster.pid")
    }

    fn command(&self, program: &str, args: &[OsString]) -> Command {
        self.runner
            .command(&self.bin_dir.join(program), args, &self.dir)
    }

    /// Runs a PostgreSQL binary, giving up (and killing it) at `deadline`.
    /// `Ok(None)` means it timed out.
    async fn run(
        &self,
        program: &str,
        args: &[OsString],
        deadline: Instant,
    ) -> Result<Option<Output>, ClusterError> {
        let mut cmd = tokio::process::Command::from(self.command(program, args));
        cmd.kill_on_drop(true);
        match timeout_at(deadline, cmd.output()).await {
            Err(_elapsed) => Ok(None),
            Ok(Ok(output)) => Ok(Some(output)),
            Ok(Err(source)) => Err(ClusterError::Spawn {
                program: self.bin_dir.join(program).display().to_string(),
                source,
            }),
        }
    }

    async fn init_and_start(&mut self) -> Result<(), ClusterError> {
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
            // the demo needs no collation.
            "--no-locale".as_ref(),
        ]);
        match self
            .run("initdb", &args, Instant::now() + INITDB_TIMEOUT)
            .await?
        {
            None => {
                return Err(ClusterError::Initdb(format!(
                    "did not finish within {}s",
                    INITDB_TIMEOUT.as_secs()
                )))
            }
            Some(out) if !out.status.success() => {
                return Err(ClusterError::Initdb(tail(&output_text(&out))))
            }
            Some(_) => {}
        }
        self.write_settings()?;

        let deadline = Instant::now() + START_TIMEOUT;
        for attempt in 1..=PORT_ATTEMPTS {
            self.port = free_port()?;
            let log_start = fs::metadata(self.log_file()).map_or(0, |m| m.len());
            // pg_ctl stops waiting at the deadline on its own (-t); ours is a backstop.
            let wait_secs = deadline
                .saturating_duration_since(Instant::now())
                .as_secs()
                .max(1)
                .to_string();
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
            self.server_may_run = true;
            let out = match self.run("pg_ctl", &args, deadline + PG_CTL_GRACE).await? {
                None => {
                    return Err(ClusterError::StartTimeout(format!(
                        "pg_ctl start did not return; server log: {}",
                        self.log_tail()
                    )))
                }
                Some(out) => out,
            };
            if out.status.success() {
                break;
            }
            let new_log = read_lossy(&self.log_file(), log_start);
            if attempt < PORT_ATTEMPTS && new_log.contains("could not bind") {
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
        self.wait_until_ready(deadline).await?;
        info!(
            "PostgreSQL is accepting connections on 127.0.0.1:{}",
            self.port
        );
        Ok(())
    }

    /// Appends our settings to postgresql.conf. Appending keeps the owner and
    /// mode initdb gave the file; the port goes on pg_ctl's command line so a
    /// retry with another port needs no rewrite.
    fn write_settings(&self) -> Result<(), ClusterError> {
        let conf = self.data_dir().join("postgresql.conf");
        let mut settings = b"\n# Added by webhookd demo: a throwaway cluster.\n\
            listen_addresses = '127.0.0.1'\n\
            fsync = off\n\
            unix_socket_directories = "
            .to_vec();
        settings.extend(conf_quote(self.dir.as_os_str()));
        settings.push(b'\n');
        OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut file| file.write_all(&settings))
            .map_err(|source| ClusterError::Io {
                action: format!("write {}", conf.display()),
                source,
            })
    }

    /// Polls until a connection succeeds or `deadline` passes.
    async fn wait_until_ready(&self, deadline: Instant) -> Result<(), ClusterError> {
        let url = self.url();
        loop {
            let last_error = match timeout_at(
                deadline,
                tokio_postgres::connect(&url, tokio_postgres::NoTls),
            )
            .await
            {
                Ok(Ok((client, connection))) => {
                    // Close the session politely so the log stays clean.
                    let connection = tokio::spawn(connection);
                    drop(client);
                    let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
                    return Ok(());
                }
                Ok(Err(err)) => err.to_string(),
                Err(_elapsed) => "connection attempt timed out".to_owned(),
            };
            if Instant::now() + POLL_INTERVAL >= deadline {
                return Err(ClusterError::StartTimeout(format!(
                    "{last_error}; server log: {}",
                    self.log_tail()
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
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
        match self.run("pg_ctl", &args, deadline).await? {
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
        let log = read_lossy(&self.log_file(), 0);
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
            match self.command("pg_ctl", &args).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => warn!(
                    "could not stop the throwaway PostgreSQL server: {}",
                    tail(&output_text(&out))
                ),
                Err(err) => warn!("could not run pg_ctl to stop the throwaway server: {err}"),
            }
        }
        match remove_dir(&self.dir) {
            Ok(()) => info!(
                "removed the throwaway PostgreSQL cluster in {}",
                self.dir.display()
            ),
            Err(err) => warn!("{err}"),
        }
    }
}

/// The directory holding both initdb and pg_ctl: PATH first, then the highest
/// version under /usr/lib/postgresql.
fn find_bin_dir() -> Option<PathBuf> {
    let has_both =
        |dir: &Path| is_executable(&dir.join("initdb")) && is_executable(&dir.join("pg_ctl"));
    if let Some(path) = std::env::var_os("PATH") {
        // Relative entries would resolve against the temp dir we run in.
        if let Some(dir) = std::env::split_paths(&path).find(|d| d.is_absolute() && has_both(d)) {
            return Some(dir);
        }
    }
    fs::read_dir(VERSIONED_BIN_ROOT)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// The first executable `name` on PATH or in the sbin directories, which root's
/// PATH sometimes lacks.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// How to run the binaries and, when we are root, the uid/gid that must own the
/// temporary directory.
async fn choose_runner() -> Result<(Runner, Option<(u32, u32)>), ClusterError> {
    if !effective_uid_is_root().await {
        return Ok((Runner::Direct, None));
    }
    let mut chosen = None;
    for user in ["postgres", "nobody"] {
        if let Some(ids) = user_ids(user).await {
            chosen = Some((user.to_owned(), ids));
            break;
        }
    }
    let (user, ids) = chosen.ok_or(ClusterError::NoUnprivilegedUser)?;
    let runner = if let Some(runuser) = find_program("runuser") {
        Runner::Runuser { runuser, user }
    } else if let Some(su) = find_program("su") {
        Runner::Su { su, user }
    } else {
        return Err(ClusterError::NoUserSwitch { user });
    };
    Ok((runner, Some(ids)))
}

/// Runs a small query command (`id`) and returns its trimmed stdout on success.
async fn query(program: &str, args: &[&str]) -> Option<String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(5), cmd.output())
        .await
        .ok()?
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

async fn effective_uid_is_root() -> bool {
    match query("id", &["-u"]).await {
        Some(uid) => uid == "0",
        // Without `id`, Linux's /proc/self belongs to the effective uid.
        None => fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0),
    }
}

async fn user_ids(user: &str) -> Option<(u32, u32)> {
    let uid = query("id", &["-u", user]).await?.parse().ok()?;
    let gid = query("id", &["-g", user]).await?.parse().ok()?;
    Some((uid, gid))
}

/// Creates `webhookd-demo-pg-<random hex>` under the temp dir, mode 0700, owned
/// by `owner` when given (the user PostgreSQL runs as must write it).
fn create_temp_dir(owner: Option<(u32, u32)>) -> Result<PathBuf, ClusterError> {
    let base = std::env::temp_dir();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let dir = base.join(format!("webhookd-demo-pg-{:016x}", rand::random::<u64>()));
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists && attempts < 10 => continue,
            Err(source) => {
                return Err(ClusterError::Io {
                    action: format!("create temporary directory {}", dir.display()),
                    source,
                })
            }
        }
        // The umask may have narrowed the mode; make it exactly 0700.
        let prepared = fs::set_permissions(&dir, Permissions::from_mode(0o700)).and_then(|()| {
            owner.map_or(Ok(()), |(uid, gid)| {
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            })
        });
        return match prepared {
            Ok(()) => Ok(dir),
            Err(source) => {
                let _ = fs::remove_dir(&dir);
                Err(ClusterError::Io {
                    action: format!("prepare temporary directory {}", dir.display()),
                    source,
                })
            }
        };
    }
}

/// A TCP port that was free on 127.0.0.1 a moment ago.
fn free_port() -> Result<u16, ClusterError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|source| ClusterError::Io {
            action: "find a free TCP port on 127.0.0.1".to_owned(),
            source,
        })
}

/// The major version from `pg_ctl --version`, e.g. "15"; only used for logging.
async fn major_version(bin_dir: &Path) -> Option<String> {
    let pg_ctl = bin_dir.join("pg_ctl");
    let out = query(pg_ctl.to_str()?, &["--version"]).await?;
    // "pg_ctl (PostgreSQL) 15.13 (Debian 15.13-0+deb12u1)"
    let version = out
        .split("(PostgreSQL)")
        .nth(1)?
        .split_whitespace()
        .next()?;
    let major: String = version.chars().take_while(char::is_ascii_digit).collect();
    (!major.is_empty()).then_some(major)
}

fn remove_dir(dir: &Path) -> Result<(), ClusterError> {
    match fs::remove_dir_all(dir) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(ClusterError::Io {
            action: format!("remove {}", dir.display()),
            source: err,
        }),
        _ => Ok(()),
    }
}

fn os_args(args: &[&OsStr]) -> Vec<OsString> {
    args.iter().map(|arg| arg.to_os_string()).collect()
}

/// Quotes a word for /bin/sh: wrapped in single quotes, each `'` as `'\''`.
fn sh_quote(word: &OsStr) -> Vec<u8> {
    let mut quoted = vec![b'\''];
    for &byte in word.as_bytes() {
        if byte == b'\'' {
            quoted.extend_from_slice(b"'\\''");
        } else {
            quoted.push(byte);
        }
    }
    quoted.push(b'\'');
    quoted
}

/// Quotes a postgresql.conf string value: single quotes, `'` and `\` doubled.
fn conf_quote(value: &OsStr) -> Vec<u8> {
    let mut quoted = vec![b'\''];
    for &byte in value.as_bytes() {
        if byte == b'\'' || byte == b'\\' {
            quoted.push(byte);
        }
        quoted.push(byte);
    }
    quoted.push(b'\'');
    quoted
}

/// What a tool said: stderr, where initdb and pg_ctl report errors, or stdout
/// when stderr is empty.
fn output_text(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.trim().is_empty() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        stderr.into_owned()
    }
}

/// The file's contents from byte `from` on; an unreadable file reads as empty.
fn read_lossy(path: &Path, from: u64) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let from = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
    String::from_utf8_lossy(&bytes[from..]).into_owned()
}

/// The last few non-empty lines of `text` on one line.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    if lines.is_empty() {
        return "(no output)".to_owned();
    }
    lines[lines.len().saturating_sub(TAIL_LINES)..].join(" | ")
}
