//! What a throwaway cluster is started with beyond the demo's defaults:
//! extra server settings, its own pg_hba.conf, files in the data directory
//! (TLS certificates and keys) and streaming replication for standbys.

use std::fs::{self, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::host::{chown, conf_quote};
use super::{ClusterError, ThrowawayCluster};

/// The hba line that lets a standby on this machine stream from the primary.
const REPLICATION_HBA: &str = "host replication all 127.0.0.1/32 trust";

/// How to start a [`ThrowawayCluster`]. The default is the demo's cluster:
/// trust authentication on 127.0.0.1, initdb's pg_hba.conf, fsync off.
///
/// ```no_run
/// # async fn example() -> Result<(), devkit::cluster::ClusterError> {
/// use devkit::cluster::ClusterOptions;
/// let primary = ClusterOptions::new().replication().start().await?;
/// let standby = ClusterOptions::new().start_standby_of(&primary).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    conf_lines: Vec<String>,
    hba_lines: Option<Vec<String>>,
    files: Vec<(String, Vec<u8>)>,
    replication: bool,
}

impl ClusterOptions {
    /// The demo's settings.
    pub fn new() -> Self {
        ClusterOptions::default()
    }

    /// Appends one line to postgresql.conf, after ours, so it wins over them
    /// (e.g. `ssl = on`, `ssl_cert_file = 'server.crt'`).
    pub fn conf_line(mut self, line: impl Into<String>) -> Self {
        self.conf_lines.push(line.into());
        self
    }

    /// Replaces pg_hba.conf with these lines. With [`replication`](Self::replication)
    /// a line allowing replication from 127.0.0.1 is added after them.
    pub fn hba_lines<I, S>(mut self, lines: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.hba_lines = Some(lines.into_iter().map(Into::into).collect());
        self
    }

    /// Places a file in the data directory, mode 0600 and owned by the user
    /// the server runs as: PostgreSQL refuses a private key otherwise.
    /// Settings name it relative to the data directory
    /// (`ssl_key_file = 'server.key'`). `name` must be a plain file name.
    pub fn file(mut self, name: impl Into<String>, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((name.into(), contents.into()));
        self
    }

    /// Makes the cluster a primary that standbys can stream from:
    /// `wal_level = replica`, WAL senders and slots, replication allowed
    /// from 127.0.0.1 (already so in initdb's pg_hba.conf; added to
    /// replaced ones).
    pub fn replication(mut self) -> Self {
        self.replication = true;
        self
    }

    /// Runs initdb in a new temporary directory, applies these options and
    /// starts the server on a free port on 127.0.0.1; see
    /// [`ThrowawayCluster::start`].
    pub async fn start(self) -> Result<ThrowawayCluster, ClusterError> {
        self.check()?;
        ThrowawayCluster::create(self, None).await
    }

    /// Copies `primary` with `pg_basebackup -R` into a new temporary
    /// directory, applies these options and starts it as a streaming hot
    /// standby on its own port. The primary must allow replication (initdb's
    /// defaults do; [`replication`](Self::replication) makes sure).
    pub async fn start_standby_of(
        self,
        primary: &ThrowawayCluster,
    ) -> Result<ThrowawayCluster, ClusterError> {
        self.check()?;
        ThrowawayCluster::create(self, Some(primary)).await
    }

    /// Refuses file names that would land outside the data directory.
    fn check(&self) -> Result<(), ClusterError> {
        for (name, _) in &self.files {
            if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                return Err(ClusterError::BadFileName(name.clone()));
            }
        }
        Ok(())
    }

    /// Writes the settings, pg_hba.conf and files into `data_dir`, after
    /// initdb or pg_basebackup made it. `socket_dir` is where the server's
    /// Unix socket goes; `owner` (when we are root) gets every file we create.
    pub(super) fn apply(
        &self,
        data_dir: &Path,
        socket_dir: &Path,
        owner: Option<(u32, u32)>,
    ) -> Result<(), ClusterError> {
        let io_error = |action: String| move |source| ClusterError::Io { action, source };
        let conf = data_dir.join("postgresql.conf");
        // Appending keeps the owner and mode the file already has. The port
        // goes on pg_ctl's command line so a retry with another port needs
        // no rewrite. A standby's copy already has its primary's block: ours
        // comes later and wins.
        OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut file| file.write_all(&self.settings(socket_dir)))
            .map_err(io_error(format!("write {}", conf.display())))?;
        if let Some(lines) = &self.hba_lines {
            let hba = data_dir.join("pg_hba.conf");
            let mut text = lines.join("\n");
            if self.replication {
                text.push('\n');
                text.push_str(REPLICATION_HBA);
            }
            text.push('\n');
            OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&hba)
                .and_then(|mut file| file.write_all(text.as_bytes()))
                .map_err(io_error(format!("write {}", hba.display())))?;
        }
        for (name, contents) in &self.files {
            let path = data_dir.join(name);
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut file| file.write_all(contents))
                // An existing file (a standby's copy) keeps its old mode.
                .and_then(|()| fs::set_permissions(&path, Permissions::from_mode(0o600)))
                .and_then(|()| chown(&path, owner))
                .map_err(io_error(format!("write {}", path.display())))?;
        }
        Ok(())
    }

    /// Our block of postgresql.conf.
    fn settings(&self, socket_dir: &Path) -> Vec<u8> {
        let mut settings = b"\n# Added by webhookd: a throwaway cluster.\n\
            listen_addresses = '127.0.0.1'\n\
            fsync = off\n\
            unix_socket_directories = "
            .to_vec();
        settings.extend(conf_quote(socket_dir.as_os_str()));
        settings.push(b'\n');
        if self.replication {
            settings.extend_from_slice(
                b"wal_level = replica\n\
                  max_wal_senders = 10\n\
                  max_replication_slots = 10\n\
                  hot_standby = on\n",
            );
        }
        for line in &self.conf_lines {
            settings.extend_from_slice(line.as_bytes());
            settings.push(b'\n');
        }
        settings
    }
}
