//! Real `webhookd run` processes, and what they and PostgreSQL cost, read
//! from /proc: CPU seconds and peak RSS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use devkit::launcher::{Launch, Running};

/// Clock ticks per second of /proc's CPU times (USER_HZ; 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;
/// How long a daemon may take to stop after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// A running `webhookd run`.
pub struct Daemon {
    process: Running,
}

/// What a daemon used.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
    /// Peak resident set size in MiB (VmHWM).
    pub peak_rss_mib: f64,
}

/// The `webhookd` binary next to this one.
pub fn webhookd_binary() -> PathBuf {
    let me = std::env::current_exe().unwrap_or_default();
    me.with_file_name("webhookd")
}

impl Daemon {
    /// Starts `webhookd run` against `database_url` with `extra` flags, its
    /// admin address on a free port. Only its errors reach our stderr.
    pub fn spawn(database_url: &str, key: &str, extra: &[&str]) -> std::io::Result<Daemon> {
        let mut args = vec![
            "run",
            "--allow-private-targets",
            "--admin-addr",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let process = Launch::new(webhookd_binary(), &args)
            .env("DATABASE_URL", database_url)
            .env("WEBHOOKD_SECRET_KEY", key)
            // Errors, and the one line that names the admin address.
            .env("RUST_LOG", "error,webhookd::daemon=info")
            .echo_stderr(|line| !line.contains(" INFO ") && !line.contains(" WARN "))
            .spawn()?;
        Ok(Daemon { process })
    }

    /// The admin address (`/metrics`) it bound, once it says so.
    pub async fn admin_address(&self) -> std::io::Result<SocketAddr> {
        self.process
            .admin_address(STOP_LIMIT)
            .await
            .ok_or_else(|| std::io::Error::other("the daemon did not name its admin address"))
    }

    /// Whether the process has ended (its errors were echoed to stderr).
    pub fn exited(&mut self) -> bool {
        !self.process.is_running()
    }

    /// The process id (for reading /proc).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// CPU and peak RSS so far.
    pub fn usage(&self) -> Usage {
        let pid = self.process.pid();
        Usage {
            cpu_seconds: cpu_seconds(pid).unwrap_or(0.0),
            peak_rss_mib: status_kib(pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0,
        }
    }

    /// SIGTERM, then wait (bounded; SIGKILL after); returns the usage read just before.
    pub async fn stop(mut self) -> Usage {
        let usage = self.usage();
        let _ = self.process.stop(STOP_LIMIT).await;
        usage
    }
}

/// User + system CPU seconds of process `pid` so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_fields(pid, 11..13)
}

/// The sum of /proc/<pid>/stat fields `range`, counted after the
/// parenthesised command name (utime and stime are 11 and 12 there, the
/// exited children's cutime and cstime 13 and 14), in seconds.
fn cpu_fields(pid: u32, range: std::ops::Range<usize>) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let mut ticks = 0.0;
    for index in range {
        ticks += fields.get(index)?.parse::<f64>().ok()?;
    }
    Some(ticks / TICKS_PER_SECOND)
}

/// Current resident set size in MiB (VmRSS) of `pid`.
pub fn rss_mib(pid: u32) -> f64 {
    status_kib(pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0
}

/// A KiB figure of /proc/<pid>/status, e.g. `VmHWM:` (peak RSS).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds used so far by every process named `postgres` (the server and
/// its backends), with those of backends that have exited: the server's
/// reaped children's time (so a reading does not drop when connections close).
pub fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|comm| comm.trim() == "postgres")
                .unwrap_or(false)
        })
        .filter_map(|pid| cpu_fields(pid, 11..15))
        .sum()
}

/// CPU seconds used so far by this process: the receiver, the producers and
/// the progress queries.
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id()).unwrap_or(0.0)
}

/// The whole machine's CPU time so far: (busy, total) in clock ticks, from
/// the first line of `/proc/stat` (idle and iowait count as not busy).
pub fn machine_ticks() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|field| field.parse().ok())
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Share of the machine's CPU time that was busy between two readings of
/// [`machine_ticks`].
pub fn busy_share(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1);
    if total == 0 {
        return 0.0;
    }
    after.0.saturating_sub(before.0) as f64 / total as f64
}

/// Cores on this machine.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// TCP connections of `pid` that are established to `port` on the remote
/// side: its socket descriptors matched by inode against its namespace's
/// /proc/net/tcp (the table lists every process's sockets).
pub fn established_to(pid: u32, port: u16) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let inodes: std::collections::HashSet<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    let remote_port = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| {
            fields.len() > 9
                && fields[2].ends_with(&remote_port)
                && fields[3] == "01"
                && inodes.contains(fields[9])
        })
        .count()
}
