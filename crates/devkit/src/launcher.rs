//! The `webhookd` binary (this build or another release's) as a child
//! process: one-shot commands run to completion ([`Launch::output`]), and
//! long-running ones ([`Launch::spawn`]) whose stdout and stderr are read
//! line by line as they come, with waits for a line under a deadline, the
//! admin address read from the daemon's own log, SIGTERM/SIGKILL, and an
//! exit status returned only once the last lines are read.
//!
//! Nothing of the caller's environment that steers webhookd (`WEBHOOKD_*`,
//! `RUST_LOG`) leaks into the child: each launch says what it sets.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The message of the daemon's log line naming its bound admin address
/// (field `address`), in this release and the previous one.
pub const ADMIN_LINE: &str = "admin endpoints: /healthz, /readyz, /metrics";

/// Which output of the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error (where webhookd logs).
    Stderr,
}

/// A signal to send with kill(1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: a graceful stop.
    Term,
    /// SIGKILL: a crash.
    Kill,
}

/// One invocation being prepared.
pub struct Launch {
    command: Command,
    shown: String,
    echo_stderr: Option<fn(&str) -> bool>,
}

impl Launch {
    /// `binary ARGS` with stdin closed, stdout and stderr captured, killed
    /// when dropped, `NO_COLOR=1`, and without the caller's `WEBHOOKD_*` and
    /// `RUST_LOG`.
    pub fn new(binary: impl AsRef<Path>, args: &[&str]) -> Launch {
        let mut command = Command::new(binary.as_ref());
        for (name, _) in std::env::vars_os() {
            let inherited = name.to_string_lossy();
            if inherited.starts_with("WEBHOOKD_") || inherited == "RUST_LOG" {
                command.env_remove(&name);
            }
        }
        command
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Launch {
            command,
            shown: format!("webhookd {}", args.join(" ")),
            echo_stderr: None,
        }
    }

    /// Sets an environment variable.
    pub fn env(mut self, name: &str, value: &str) -> Launch {
        self.command.env(name, value);
        self
    }

    /// Removes an environment variable.
    pub fn unset(mut self, name: &str) -> Launch {
        self.command.env_remove(name);
        self
    }

    /// Copies the stderr lines `filter` accepts to our own stderr as they
    /// are read (they are kept either way).
    pub fn echo_stderr(mut self, filter: fn(&str) -> bool) -> Launch {
        self.echo_stderr = Some(filter);
        self
    }

    /// The command, for settings this type does not cover.
    pub fn command_mut(&mut self) -> &mut Command {
        &mut self.command
    }

    /// `webhookd ARGS`, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Runs to completion; `None` if it did not finish within `limit` (it is
    /// killed then).
    pub async fn output(mut self, limit: Duration) -> std::io::Result<Option<Finished>> {
        let Ok(output) = tokio::time::timeout(limit, self.command.output()).await else {
            return Ok(None);
        };
        let output = output?;
        Ok(Some(Finished {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }))
    }

    /// Starts it; its output is read in the background.
    pub fn spawn(mut self) -> std::io::Result<Running> {
        let mut child = self.command.spawn()?;
        let pid = child.id().unwrap_or(0);
        let output = Arc::new(Captured::default());
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            readers.push(read_lines(stdout, Stream::Stdout, output.clone(), None));
        }
        if let Some(stderr) = child.stderr.take() {
            let echo = self.echo_stderr;
            readers.push(read_lines(stderr, Stream::Stderr, output.clone(), echo));
        }
        Ok(Running {
            child,
            pid,
            shown: self.shown,
            output,
            readers,
        })
    }
}

/// What a finished one-shot command did.
#[derive(Debug, Clone)]
pub struct Finished {
    /// How it ended.
    pub status: ExitStatus,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
}

/// The lines read so far, and a wake-up for waiters when more arrive.
#[derive(Default)]
struct Captured {
    stdout: Mutex<Vec<String>>,
    stderr: Mutex<Vec<String>>,
    more: Notify,
}

impl Captured {
    fn lines(&self, stream: Stream) -> &Mutex<Vec<String>> {
        match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }
}

fn read_lines(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    stream: Stream,
    output: Arc<Captured>,
    echo: Option<fn(&str) -> bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if echo.is_some_and(|wanted| wanted(&line)) {
                eprintln!("{line}");
            }
            output
                .lines(stream)
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(line);
            output.more.notify_waiters();
        }
    })
}

/// A started process, killed when dropped.
pub struct Running {
    child: Child,
    pid: u32,
    shown: String,
    output: Arc<Captured>,
    readers: Vec<JoinHandle<()>>,
}

impl Running {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `webhookd ARGS`, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Sends `signal` with kill(1); an error if kill failed (the process is gone).
    pub fn signal(&self, signal: Signal) -> std::io::Result<()> {
        let name = match signal {
            Signal::Term => "-TERM",
            Signal::Kill => "-KILL",
        };
        let status = std::process::Command::new("kill")
            .args([name, &self.pid.to_string()])
            .stderr(Stdio::null())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "kill {name} {} failed",
                self.pid
            )))
        }
    }

    /// Whether it has not exited yet.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The lines of `stream` read so far.
    pub fn lines(&self, stream: Stream) -> Vec<String> {
        self.output
            .lines(stream)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Waits until a line of `stream` satisfies `wanted` (lines read before
    /// count too); `None` after `limit`.
    pub async fn wait_for_line(
        &self,
        stream: Stream,
        limit: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let more = self.output.more.notified();
            if let Some(line) = self.lines(stream).into_iter().find(|line| wanted(line)) {
                return Some(line);
            }
            if self.readers.iter().all(JoinHandle::is_finished) {
                return None;
            }
            // Output ends without a wake-up when the process exits: look again now and then.
            let nap = tokio::time::Instant::now() + Duration::from_millis(200);
            if tokio::time::timeout_at(deadline.min(nap), more)
                .await
                .is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return None;
            }
        }
    }

    /// The admin address the daemon bound (`--admin-addr 127.0.0.1:0` picks a
    /// free port), read from its [`ADMIN_LINE`] in text or JSON logs; `None`
    /// when that line does not come within `limit`.
    pub async fn admin_address(&self, limit: Duration) -> Option<SocketAddr> {
        let line = self
            .wait_for_line(Stream::Stderr, limit, |line| line.contains(ADMIN_LINE))
            .await?;
        admin_address_in(&line)
    }

    /// Waits for the exit, then for the last lines of its output, so that
    /// [`lines`](Self::lines) is complete; `None` if it did not exit within `limit`.
    pub async fn exit_status(&mut self, limit: Duration) -> std::io::Result<Option<ExitStatus>> {
        let Ok(status) = tokio::time::timeout(limit, self.child.wait()).await else {
            return Ok(None);
        };
        let status = status?;
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(limit, reader).await;
        }
        Ok(Some(status))
    }

    /// SIGTERM, and SIGKILL if it has not exited after `grace`; the exit
    /// status once its output is read.
    pub async fn stop(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        let _ = self.signal(Signal::Term);
        if let Some(status) = self.exit_status(grace).await? {
            return Ok(status);
        }
        self.child.kill().await?;
        self.exit_status(grace)
            .await?
            .ok_or_else(|| std::io::Error::other("the process outlived SIGKILL"))
    }
}

/// The `address` field of the daemon's admin line: a JSON field, or
/// `address=…` in a text line.
fn admin_address_in(line: &str) -> Option<SocketAddr> {
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(line) {
        return fields.get("address")?.as_str()?.parse().ok();
    }
    let (_, rest) = line.split_once("address=")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::admin_address_in;

    #[test]
    fn the_admin_address_is_read_from_text_and_json_lines() {
        let text = "2025-01-01T00:00:00Z  INFO admin endpoints: /healthz, /readyz, /metrics address=127.0.0.1:4321";
        assert_eq!(
            admin_address_in(text),
            Some("127.0.0.1:4321".parse().unwrap())
        );
        let json = r#"{"level":"INFO","message":"admin endpoints: /healthz, /readyz, /metrics","address":"127.0.0.1:99"}"#;
        assert_eq!(
            admin_address_in(json),
            Some("127.0.0.1:99".parse().unwrap())
        );
        assert_eq!(admin_address_in("nothing here"), None);
    }
}
