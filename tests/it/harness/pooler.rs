//! A real PgBouncer in front of the test server, in transaction or session
//! mode, started from the installed binary (Debian's `pgbouncer`; `.ci/run`
//! installs it). PgBouncer refuses to run as root, so as root it runs as
//! `postgres`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::free_local_address;
use super::server_url;

/// How PgBouncer hands server connections to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// A server connection per transaction: no session state survives.
    Transaction,
    /// A server connection per client connection.
    Session,
}

/// A running PgBouncer; stopped and its directory removed on drop.
pub struct PgBouncer {
    child: tokio::process::Child,
    dir: PathBuf,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

impl PgBouncer {
    /// Whether the binary is installed; tests skip loudly without it
    /// (and fail in CI, which installs it).
    pub fn installed() -> bool {
        std::process::Command::new("pgbouncer")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Starts PgBouncer in `mode`.
    pub async fn start(mode: PoolMode) -> PgBouncer {
        let upstream: tokio_postgres::Config = server_url().parse().expect("DATABASE_URL");
        let upstream_port = upstream.get_ports().first().copied().unwrap_or(5432);
        let dir = std::env::temp_dir().join(format!("webhookd-pgbouncer-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("pgbouncer directory");
        set_mode(&dir, 0o777);
        // A port picked a moment ago can be taken before PgBouncer binds it.
        for _ in 0..3 {
            let port = free_local_address().port();
            write_config(&dir, mode, port, upstream_port);
            let mut child = command(&dir).spawn().expect("start pgbouncer");
            let up = wait_for_port(port, &mut child).await;
            if up {
                return PgBouncer { child, dir, port };
            }
            let _ = child.kill().await;
        }
        let log = std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default();
        panic!("pgbouncer did not start: {log}");
    }

    /// The URL of `database` through this PgBouncer.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_config(dir: &Path, mode: PoolMode, port: u16, upstream_port: u16) {
    // Transaction mode: fewer server connections than the daemon's pool, so
    // clients really share them. Session mode ties one to each client, so
    // it needs room for the daemon, the producers and the test.
    let (mode, servers) = match mode {
        PoolMode::Transaction => ("transaction", 3),
        PoolMode::Session => ("session", 20),
    };
    let ini = format!(
        "[databases]\n\
         * = host=127.0.0.1 port={upstream_port}\n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = trust\n\
         auth_file = {dir}/userlist.txt\n\
         pool_mode = {mode}\n\
         default_pool_size = {servers}\n\
         max_client_conn = 500\n\
         logfile = {dir}/pgbouncer.log\n",
        dir = dir.display()
    );
    std::fs::write(dir.join("pgbouncer.ini"), ini).expect("pgbouncer.ini");
    std::fs::write(dir.join("userlist.txt"), "\"postgres\" \"\"\n").expect("userlist.txt");
    for file in ["pgbouncer.ini", "userlist.txt"] {
        set_mode(&dir.join(file), 0o644);
    }
}

/// PgBouncer itself as the child (as root: switched to `postgres` by uid and
/// gid, not through `runuser`, which would leave PgBouncer running when it
/// is killed).
fn command(dir: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("pgbouncer");
    command.arg(dir.join("pgbouncer.ini"));
    if let Some((uid, gid)) = unprivileged_ids() {
        command.uid(uid).gid(gid);
    }
    command
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    command
}

/// `postgres`'s uid and gid when we are root (PgBouncer refuses to run as root).
fn unprivileged_ids() -> Option<(u32, u32)> {
    let id = |flag: &str, user: Option<&str>| -> Option<u32> {
        let mut command = std::process::Command::new("id");
        command.arg(flag).args(user);
        let out = command.output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u", None)? != 0 {
        return None;
    }
    Some((id("-u", Some("postgres"))?, id("-g", Some("postgres"))?))
}

/// True once something accepts on `port`; false when PgBouncer exited first.
async fn wait_for_port(port: u16, child: &mut tokio::process::Child) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}
