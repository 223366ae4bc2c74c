//! The real binary as a child process, through devkit's launcher: one-shot
//! commands with their exit status and output ([`Webhookd`]), and
//! `webhookd run` with the admin address it logged, signals, exit status and
//! log lines ([`Replica`]).

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use devkit::launcher::{Launch, Running, Signal, Stream};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::wait_until;

/// Longest any single one-shot command may take.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// Longest a process may take to start, become ready or exit.
pub const PROCESS_WAIT: Duration = Duration::from_secs(45);

/// This build's `webhookd`.
pub fn this_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_webhookd"))
}

/// One `webhookd run` process (of this build or another), its admin address
/// and its log lines.
pub struct Replica {
    process: Running,
    /// Its admin address, as it logged it.
    pub admin: SocketAddr,
}

impl Replica {
    /// Starts `webhookd run` with `flags` and JSON logs, its admin address on
    /// a port it picks.
    pub async fn start(database_url: &str, key: &str, flags: &[&str]) -> Replica {
        Replica::start_with_env(database_url, key, flags, &[]).await
    }

    /// [`Replica::start`] with extra environment variables.
    pub async fn start_with_env(
        database_url: &str,
        key: &str,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> Replica {
        let mut args = vec!["--log-format", "json", "run", "--allow-private-targets"];
        args.extend_from_slice(&["--admin-addr", "127.0.0.1:0"]);
        args.extend_from_slice(flags);
        let launch = env.iter().fold(
            Webhookd::new(database_url, &args).key(key),
            |launch, (name, value)| launch.env(name, value),
        );
        launch.start().await
    }

    /// Sends a signal (`-TERM`, `-KILL`).
    pub fn signal(&self, signal: &str) {
        let which = match signal {
            "-TERM" => Signal::Term,
            "-KILL" => Signal::Kill,
            other => panic!("no such signal in the harness: {other}"),
        };
        let pid = self.process.pid();
        self.process
            .signal(which)
            .unwrap_or_else(|err| panic!("kill {signal} {pid}: {err}"));
    }

    /// Waits (bounded) for the process to end.
    /// Once it has exited, its last log lines are read too, so the log is
    /// complete when this returns.
    pub async fn exit_status(&mut self) -> ExitStatus {
        self.process
            .exit_status(PROCESS_WAIT)
            .await
            .expect("wait for the replica")
            .unwrap_or_else(|| panic!("the replica exits within {PROCESS_WAIT:?}"))
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// The HTTP status of `/readyz`, `None` when nothing answers.
    pub async fn readyz(&self) -> Option<u16> {
        http_status(self.admin, "/readyz").await
    }

    /// `/readyz`: status and JSON body, `None` when nothing answers.
    pub async fn readyz_body(&self) -> Option<(u16, Value)> {
        let response =
            tokio::time::timeout(Duration::from_secs(5), http_exchange(self.admin, "/readyz"))
                .await
                .ok()??;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = serde_json::from_str(response.split("\r\n\r\n").nth(1)?).ok()?;
        Some((status, body))
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
        self.log_lines()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The log so far, line by line.
    pub fn log_lines(&self) -> Vec<String> {
        self.process.lines(Stream::Stderr)
    }

    pub fn log_text(&self) -> String {
        self.log_lines().join("\n")
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

/// One GET over a raw TCP connection; the status code, or `None` when the
/// server does not answer within 5 s.
pub async fn http_status(address: SocketAddr, path: &str) -> Option<u16> {
    tokio::time::timeout(Duration::from_secs(5), http_exchange(address, path))
        .await
        .ok()
        .flatten()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// One GET with `Connection: close`: the whole response, `None` when the
/// connection fails.
async fn http_exchange(address: SocketAddr, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    Some(String::from_utf8_lossy(&response).into_owned())
}

/// One `webhookd` invocation being prepared (devkit's launcher).
pub struct Webhookd {
    launch: Launch,
}

impl Webhookd {
    /// `webhookd ARGS` against `database_url`, with nothing else from our environment.
    pub fn new(database_url: &str, args: &[&str]) -> Webhookd {
        Webhookd::with_binary(this_binary(), database_url, args)
    }

    /// The same with another build of `webhookd` (the previous release).
    pub fn with_binary(binary: &Path, database_url: &str, args: &[&str]) -> Webhookd {
        Webhookd {
            launch: Launch::new(binary, args).env("DATABASE_URL", database_url),
        }
    }

    /// Sets `WEBHOOKD_SECRET_KEY`.
    pub fn key(self, key: &str) -> Webhookd {
        self.env("WEBHOOKD_SECRET_KEY", key)
    }

    /// Sets an environment variable.
    pub fn env(self, name: &str, value: &str) -> Webhookd {
        Webhookd {
            launch: self.launch.env(name, value),
        }
    }

    /// Removes an environment variable.
    pub fn unset(self, name: &str) -> Webhookd {
        Webhookd {
            launch: self.launch.unset(name),
        }
    }

    /// Runs to completion within [`COMMAND_LIMIT`].
    pub async fn output(self) -> Outcome {
        self.output_within(COMMAND_LIMIT).await
    }

    /// Runs to completion within `limit`.
    pub async fn output_within(self, limit: Duration) -> Outcome {
        let shown = self.launch.shown().to_string();
        let finished = self
            .launch
            .output(limit)
            .await
            .unwrap_or_else(|err| panic!("cannot start `{shown}`: {err}"))
            .unwrap_or_else(|| panic!("`{shown}` did not finish within {limit:?}"));
        Outcome {
            shown,
            code: finished.status.code(),
            stdout: finished.stdout,
            stderr: finished.stderr,
        }
    }

    /// Starts it as `webhookd run` (the arguments say `run` and
    /// `--admin-addr 127.0.0.1:0`, a port it picks) and waits for the
    /// address it bound, which it logs.
    pub async fn start(self) -> Replica {
        let Webhookd { launch } = self;
        let shown = launch.shown().to_string();
        let process = launch
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start `{shown}`: {err}"));
        let Some(admin) = process.admin_address(PROCESS_WAIT).await else {
            panic!(
                "`{shown}` did not log its admin address within {PROCESS_WAIT:?}:\n{}",
                process.lines(Stream::Stderr).join("\n")
            );
        };
        Replica { process, admin }
    }
}

/// `webhooks create --org ORG --url TARGET --allow-private-targets`: how the
/// tests create a webhook through the binary (more flags may follow).
pub fn create_args<'a>(org: &'a str, target: &'a str) -> Vec<&'a str> {
    vec![
        "webhooks",
        "create",
        "--org",
        org,
        "--url",
        target,
        "--allow-private-targets",
    ]
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
