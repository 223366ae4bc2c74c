//! What a throwaway cluster needs from the machine: the installed PostgreSQL
//! binaries, a user to run them as, a private directory and a free port; and
//! the small text helpers that turn tool output into error messages.

use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::ClusterError;

/// How many lines of a tool's output or the server log go into an error.
const TAIL_LINES: usize = 5;
/// Where Debian and Ubuntu install the server binaries (not on PATH there).
const VERSIONED_BIN_ROOT: &str = "/usr/lib/postgresql";

/// How the PostgreSQL binaries are executed.
#[derive(Debug, Clone)]
pub(super) enum Runner {
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
    pub(super) fn command(&self, program: &Path, args: &[OsString], cwd: &Path) -> Command {
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

    /// The user the server runs as, when it is not us.
    pub(super) fn user(&self) -> Option<&str> {
        match self {
            Runner::Direct => None,
            Runner::Runuser { user, .. } | Runner::Su { user, .. } => Some(user),
        }
    }
}

/// The directory holding both initdb and pg_ctl: PATH first, then the highest
/// version under /usr/lib/postgresql.
pub(super) fn find_bin_dir() -> Option<PathBuf> {
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

/// Another tool of the same installation as `bin_dir`'s pg_ctl: beside it,
/// beside the file it links to (PATH may hold only links to initdb and
/// pg_ctl), or else the first on PATH.
pub(super) fn find_tool(bin_dir: &Path, name: &str) -> Option<PathBuf> {
    let beside = bin_dir.join(name);
    if is_executable(&beside) {
        return Some(beside);
    }
    fs::canonicalize(bin_dir.join("pg_ctl"))
        .ok()
        .and_then(|pg_ctl| Some(pg_ctl.parent()?.join(name)))
        .filter(|candidate| is_executable(candidate))
        .or_else(|| find_program(name))
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
/// temporary directory and every file we put into the data directory.
pub(super) async fn choose_runner() -> Result<(Runner, Option<(u32, u32)>), ClusterError> {
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
pub(super) fn create_temp_dir(owner: Option<(u32, u32)>) -> Result<PathBuf, ClusterError> {
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
        let prepared = fs::set_permissions(&dir, Permissions::from_mode(0o700))
            .and_then(|()| chown(&dir, owner));
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

/// Gives `path` to `owner` when one is given (we are root).
pub(super) fn chown(path: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    owner.map_or(Ok(()), |(uid, gid)| {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
    })
}

/// A TCP port that was free on 127.0.0.1 a moment ago.
pub(super) fn free_port() -> Result<u16, ClusterError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|source| ClusterError::Io {
            action: "find a free TCP port on 127.0.0.1".to_owned(),
            source,
        })
}

/// The major version from `pg_ctl --version`, e.g. "15"; only used for logging.
pub(super) async fn major_version(bin_dir: &Path) -> Option<String> {
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

pub(super) fn remove_dir(dir: &Path) -> Result<(), ClusterError> {
    match fs::remove_dir_all(dir) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(ClusterError::Io {
            action: format!("remove {}", dir.display()),
            source: err,
        }),
        _ => Ok(()),
    }
}

pub(super) fn os_args(args: &[&OsStr]) -> Vec<OsString> {
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
pub(super) fn conf_quote(value: &OsStr) -> Vec<u8> {
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
pub(super) fn output_text(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.trim().is_empty() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        stderr.into_owned()
    }
}

/// The file's contents from byte `from` on; an unreadable file reads as empty.
pub(super) fn read_lossy(path: &Path, from: u64) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let from = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
    String::from_utf8_lossy(&bytes[from..]).into_owned()
}

/// The last few non-empty lines of `text` on one line.
pub(super) fn tail(text: &str) -> String {
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
