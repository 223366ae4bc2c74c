//! The real binary as a child process: one-shot commands with their exit
//! status and output ([`Webhookd`]), and `webhookd run` with its admin
//! address, signals, exit status and JSON log lines ([`Replica`]).

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use super::wait_until;

/// Longest any single one-shot command may take.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// Longest a process may take to start, become ready or exit.
pub const PROCESS_WAIT: Duration = Duration::from_secs(45);

/// One `webhookd run` process, its admin address and its JSON log lines.
pub struct Replica {
    child: tokio::process::Child,
    /// Its admin address.
    pub admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    /// Reads stderr into `log` until the process closes it.
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl Replica {
    /// Starts `webhookd run` with `flags` on a free admin port.
    pub fn start(database_url: &str, key: &str, flags: &[&str]) -> Replica {
        Replica::start_with_env(database_url, key, flags, &[])
    }

    /// [`Replica::start`] with extra environment variables.
    pub fn start_with_env(
        database_url: &str,
        key: &str,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> Replica {
        let admin = free_local_address();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_webhookd"))
            .args(["--log-format", "json", "run", "--allow-private-targets"])
            .args(["--admin-addr", &admin.to_string()])
            .args(flags)
            .env("DATABASE_URL", database_url)
            .env("WEBHOOKD_SECRET_KEY", key)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start webhookd run");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = log.clone();
        let reader = tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.lock().unwrap().push(line);
            }
        });
        Replica {
            child,
            admin,
            log,
            reader: Some(reader),
        }
    }

    /// Sends a signal (`-TERM`, `-KILL`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the replica is running").to_string();
        let sent = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {signal} {pid}");
    }

    /// Waits (bounded) for the process to end.
    /// Once it has exited, its last log lines are read too, so the log is
    /// complete when this returns.
    pub async fn exit_status(&mut self) -> ExitStatus {
        let status = tokio::time::timeout(PROCESS_WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the replica exits within {PROCESS_WAIT:?}"))
            .expect("wait for the replica");
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(PROCESS_WAIT, reader).await;
        }
        status
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The HTTP status of `/readyz`, `None` when nothing answers.
    pub async fn readyz(&self) -> Option<u16> {
        http_status(self.admin, "/readyz").await
    }

    /// Waits until `/readyz` answers 200 (database answers, LISTEN active).
    pub async fn wait_ready(&self) {
        wait_until(
            &format!("/readyz 200 on {}", self.admin),
            PROCESS_WAIT,
            || async { self.readyz().await == Some(200) },
        )
        .await;
    }

    /// The log so far, one JSON object per line (other lines are skipped).
    pub fn log_events(&self) -> Vec<serde_json::Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// The `message` field of a JSON log line.
pub fn message(event: &serde_json::Value) -> String {
    event
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or("")
        .to_string()
}

/// An address on 127.0.0.1 that was free a moment ago.
pub fn free_local_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
}

/// One GET over a raw TCP connection; the status code, or `None` when the
/// server does not answer within 5 s.
pub async fn http_status(address: SocketAddr, path: &str) -> Option<u16> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        String::from_utf8_lossy(&response)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// One `webhookd` invocation being prepared.
pub struct Webhookd {
    /// The command, for tests that drive the process themselves.
    pub command: Command,
    shown: String,
}

impl Webhookd {
    /// `webhookd ARGS` against `database_url`, with nothing else from our environment.
    pub fn new(database_url: &str, args: &[&str]) -> Webhookd {
        Webhookd::with_binary(
            std::path::Path::new(env!("CARGO_BIN_EXE_webhookd")),
            database_url,
            args,
        )
    }

    /// The same with another build of `webhookd` (the previous release).
    pub fn with_binary(binary: &std::path::Path, database_url: &str, args: &[&str]) -> Webhookd {
        let mut command = Command::new(binary);
        for (name, _) in std::env::vars_os() {
            let inherited = name.to_string_lossy();
            if inherited.starts_with("WEBHOOKD_") || inherited == "RUST_LOG" {
                command.env_remove(&name);
            }
        }
        command
            .args(args)
            .env("DATABASE_URL", database_url)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Webhookd {
            command,
            shown: format!("webhookd {}", args.join(" ")),
        }
    }

    /// Sets `WEBHOOKD_SECRET_KEY`.
    pub fn key(self, key: &str) -> Webhookd {
        self.env("WEBHOOKD_SECRET_KEY", key)
    }

    /// Sets an environment variable.
    pub fn env(mut self, name: &str, value: &str) -> Webhookd {
        self.command.env(name, value);
        self
    }

    /// Removes an environment variable.
    pub fn unset(mut self, name: &str) -> Webhookd {
        self.command.env_remove(name);
        self
    }

    /// Runs to completion within [`COMMAND_LIMIT`].
    pub async fn output(mut self) -> Outcome {
        let output = tokio::time::timeout(COMMAND_LIMIT, self.command.output())
            .await
            .unwrap_or_else(|_| panic!("`{}` did not finish within {COMMAND_LIMIT:?}", self.shown))
            .unwrap_or_else(|err| panic!("cannot start `{}`: {err}", self.shown));
        Outcome {
            shown: self.shown,
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// What a finished `webhookd` did.
pub struct Outcome {
    shown: String,
    /// Exit status.
    pub code: Option<i32>,
    /// Everything printed on stdout.
    pub stdout: String,
    /// Everything printed on stderr.
    pub stderr: String,
}

impl Outcome {
    /// Asserts exit 0; returns stdout.
    pub fn succeeded(&self) -> &str {
        assert_eq!(
            self.code,
            Some(0),
            "`{}` should succeed\nstdout: {}\nstderr: {}",
            self.shown,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// Asserts exit `code` with exactly one plain line on stderr and nothing
    /// on stdout; returns that line.
    pub fn failed_with(&self, code: i32) -> &str {
        assert_eq!(
            self.code,
            Some(code),
            "exit status of `{}`\nstdout: {}\nstderr: {}",
            self.shown,
            self.stdout,
            self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "`{}` should say what is wrong in one line, said:\n{}",
            self.shown,
            self.stderr
        );
        let line = lines[0];
        assert!(
            line.starts_with("webhookd: ") && line.len() > "webhookd: ".len(),
            "`{}`: {line:?}",
            self.shown
        );
        assert!(
            !line.contains("panicked"),
            "`{}` panicked: {line}",
            self.shown
        );
        assert!(!line.contains("RUST_BACKTRACE"), "`{}`: {line}", self.shown);
        assert_eq!(
            self.stdout, "",
            "`{}` printed to stdout while failing",
            self.shown
        );
        line
    }

    /// Asserts exit 0 and parses stdout as one JSON value.
    pub fn json(&self) -> Value {
        let stdout = self.succeeded();
        serde_json::from_str(stdout)
            .unwrap_or_else(|err| panic!("`{}` should print JSON ({err}):\n{stdout}", self.shown))
    }
}
