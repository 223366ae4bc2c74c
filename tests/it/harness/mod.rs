//! The shared test harness: a fresh database per test on the real PostgreSQL
//! at `DATABASE_URL`, real HTTP(S) receivers on 127.0.0.1, the daemon
//! in-process or as the real binary, and waits on conditions with deadlines.

pub mod browser;
pub mod observer;
pub mod pooler;
pub mod process;
pub mod receiver;
pub mod runtimes;
pub mod tally;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use devkit::scratch::ScratchDb;
use tokio::task::JoinHandle;
use uuid::Uuid;
use webhookd::config::{RunArgs, SecretArgs};
use webhookd::daemon::DaemonConfig;
use webhookd::delivery::sender::{Resolve, SystemResolver};
use webhookd::manage::{self, CreateWebhook, SignatureScheme};
use webhookd::shutdown::{self, ShutdownTrigger};
use webhookd::signing::SecretBox;

pub use receiver::Receiver;

/// The server the tests use; each test gets its own database on it.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| webhookd::db::DATABASE_URL_DEFAULT.to_string())
}

/// A fresh, migrated database, dropped when the test ends (devkit's
/// scratch database).
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
    _scratch: ScratchDb,
}

impl TestDb {
    /// Creates and migrates a new database.
    pub async fn new() -> TestDb {
        let db = TestDb::empty().await;
        let mut client = db.client().await;
        webhookd::db::migrate(&mut client).await.expect("migrate");
        db
    }

    /// Creates a new database without the schema.
    pub async fn empty() -> TestDb {
        let scratch = ScratchDb::create(&server_url(), "webhookd_test")
            .await
            .expect("create a database on the PostgreSQL at DATABASE_URL");
        TestDb {
            name: scratch.name().to_string(),
            url: scratch.url().to_string(),
            _scratch: scratch,
        }
    }

    /// A new connection.
    pub async fn client(&self) -> tokio_postgres::Client {
        webhookd::db::connect_single(&self.url)
            .await
            .expect("connect to test database")
    }

    /// Waits until `sql` (one number) gives `n`; panics with `what` after `limit`.
    pub async fn wait_for_count(&self, what: &str, sql: &str, n: i64, limit: Duration) {
        wait_until(what, limit, || async { self.count(sql).await == n }).await;
    }

    /// One number from a query.
    pub async fn count(&self, sql: &str) -> i64 {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .expect(sql)
            .get(0)
    }
}

/// A random key for `WEBHOOKD_SECRET_KEY`.
pub fn secret_key() -> String {
    SecretBox::generate_key_base64()
}

/// Fast settings for tests: private targets allowed, short delays.
pub fn test_args() -> RunArgs {
    RunArgs {
        retry_base_delay: Duration::from_millis(200),
        allow_private_targets: true,
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(3),
        lease: Duration::from_secs(10),
        poll_interval: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(2),
        // Many daemons run at once in the tests: each takes a free port.
        admin_addr: ([127, 0, 0, 1], 0).into(),
        ..RunArgs::default()
    }
}

/// A test database plus the key its webhook secrets are sealed with.
pub struct TestApp {
    /// The database.
    pub db: TestDb,
    /// Base64 key.
    pub key: String,
    /// The opened key.
    pub secrets: SecretBox,
}

/// A webhook created for a test, with its one-time secret.
#[derive(Debug, Clone)]
pub struct TestWebhook {
    /// Its id.
    pub id: Uuid,
    /// Its secret.
    pub secret: String,
}

impl TestApp {
    /// A fresh database and key.
    pub async fn new() -> TestApp {
        let key = secret_key();
        TestApp {
            db: TestDb::new().await,
            secrets: SecretBox::from_base64(&key).unwrap(),
            key,
        }
    }

    /// Creates a webhook (private targets allowed).
    pub async fn create_webhook(&self, organization: Uuid, url: &str) -> TestWebhook {
        self.create_webhook_signed(organization, url, SignatureScheme::default())
            .await
    }

    /// Creates a webhook of signature scheme `scheme` (private targets allowed).
    pub async fn create_webhook_signed(
        &self,
        organization: Uuid,
        url: &str,
        scheme: SignatureScheme,
    ) -> TestWebhook {
        let client = self.db.client().await;
        let created = manage::create(
            &client,
            &self.secrets,
            &webhookd::delivery::sender::SystemResolver,
            &CreateWebhook {
                organization_id: organization,
                url,
                label: "test",
                allow_private_targets: true,
                signature_scheme: scheme,
            },
        )
        .await
        .expect("create webhook");
        TestWebhook {
            id: created.id,
            secret: created.secret.unwrap(),
        }
    }

    /// Emits one event; panics on validation errors.
    pub async fn emit(&self, organization: Uuid, event: &str, data: serde_json::Value) -> Uuid {
        let client = self.db.client().await;
        webhookd::db::webhooks::emit(&client, organization, event, &data)
            .await
            .expect("emit")
    }

    /// The daemon's configuration for these args.
    pub fn config(&self, args: &RunArgs) -> DaemonConfig {
        self.config_with(
            args,
            &SecretArgs::with_key(&self.key),
            Arc::new(SystemResolver),
        )
    }

    /// The daemon's configuration for these args, secrets and resolver.
    pub fn config_with(
        &self,
        args: &RunArgs,
        secrets: &SecretArgs,
        resolver: Arc<dyn Resolve>,
    ) -> DaemonConfig {
        args.validate(&self.db.url, secrets, resolver)
            .expect("valid test config")
    }

    /// Waits until `n` deliveries match `condition` (an SQL predicate).
    pub async fn wait_for_deliveries(&self, condition: &str, n: i64) {
        let sql = format!("SELECT count(*) FROM outbox.deliveries WHERE {condition}");
        wait_until(
            &format!("{n} deliveries with {condition}"),
            // A deadline, not a wait: generous for a loaded 2-core machine.
            Duration::from_secs(60),
            || async { self.db.count(&sql).await == n },
        )
        .await;
    }

    /// Starts the daemon in-process with its admin address on a port the
    /// system picks (and the management API when `admin_token` is given).
    pub async fn spawn_daemon_with_admin(
        &self,
        args: RunArgs,
        admin_token: Option<&str>,
    ) -> (DaemonHandle, std::net::SocketAddr) {
        let secrets = SecretArgs {
            admin_token: admin_token.map(Into::into),
            ..SecretArgs::with_key(&self.key)
        };
        self.start_daemon(&args, &secrets).await
    }

    /// Starts the daemon in-process with `secrets` and its admin address on
    /// a port the system picks; returns once it has started, with the admin
    /// address it bound.
    pub async fn start_daemon(
        &self,
        args: &RunArgs,
        secrets: &SecretArgs,
    ) -> (DaemonHandle, std::net::SocketAddr) {
        let args = RunArgs {
            admin_addr: ([127, 0, 0, 1], 0).into(),
            ..args.clone()
        };
        let config = self.config_with(&args, secrets, Arc::new(SystemResolver));
        start_configured(config).await
    }
}

/// Starts the daemon in-process with `config`; returns once it has started,
/// with the admin address it bound (give `127.0.0.1:0` to let the system
/// pick a free port).
pub async fn start_configured(config: DaemonConfig) -> (DaemonHandle, std::net::SocketAddr) {
    {
        let running = webhookd::daemon::Daemon::start(config)
            .await
            .expect("the daemon starts");
        let admin = running.admin_addr();
        let (trigger, mut shutdown) = shutdown::channel();
        let task = tokio::spawn(async move {
            let failed = running.failed();
            tokio::select! {
                _ = shutdown.wait() => {
                    running.shutdown().await;
                    Ok(())
                }
                err = failed => {
                    running.shutdown().await;
                    Err(err)
                }
            }
        });
        (DaemonHandle { trigger, task }, admin)
    }
}

impl TestApp {
    /// Runs the daemon in-process until the handle is stopped.
    pub fn spawn_daemon(&self, config: DaemonConfig) -> DaemonHandle {
        let (trigger, shutdown) = shutdown::channel();
        DaemonHandle {
            trigger,
            task: tokio::spawn(webhookd::daemon::run(config, shutdown)),
        }
    }
}

/// A daemon running in this process.
pub struct DaemonHandle {
    trigger: ShutdownTrigger,
    task: JoinHandle<webhookd::Result<()>>,
}

impl DaemonHandle {
    /// Graceful stop; returns what `run` returned.
    pub async fn stop(self) -> webhookd::Result<()> {
        self.trigger.trigger();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("daemon stops within 30s")
            .expect("daemon task")
    }
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// HMAC-SHA256 computed by devkit, independently of webhookd's signing module.
pub fn expected_signature(secret: &str, body: &[u8]) -> String {
    devkit::receiver::signature(secret, body)
}

/// What the dispatcher hands the completer for a 204 that took a
/// millisecond: the attempt record of a delivery leased under `lease_token`.
pub fn delivered_attempt(
    delivery_id: Uuid,
    webhook_id: Uuid,
    attempt: i32,
    lease_token: Uuid,
) -> webhookd::db::queue::AttemptRecord {
    webhookd::db::queue::AttemptRecord {
        delivery_id,
        webhook_id,
        lease_token,
        attempt,
        next: webhookd::db::queue::NextStatus::Delivered,
        status_code: Some(204),
        outcome: "delivered",
        reason: None,
        response_excerpt: None,
        started_at: chrono::Utc::now(),
        duration: Duration::from_millis(1),
        retry_after: None,
        disables_webhook: false,
    }
}

/// A valid `data` object for each event type.
pub fn sample(event: webhookd::EventType) -> serde_json::Value {
    devkit::sample_data(event.as_str(), 7)
}

/// An address on 127.0.0.1 that was free a moment ago: for a daemon run in
/// this process (unlike the binary, which logs the port it picked for
/// `127.0.0.1:0`, `daemon::run` does not tell its caller the address it
/// bound) and for PgBouncer, which retries when the port was taken meanwhile.
pub fn free_local_address() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
}

/// One HTTP/1.1 request with `Connection: close`; returns the whole response
/// (status line, headers, body).
pub async fn http_request(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    extra_headers: &str,
    body: &str,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{extra_headers}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// One management API request with `token` as the bearer token; returns
/// status and JSON body (Null when empty).
pub async fn api_call(
    admin: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let headers = match token {
        Some(token) => {
            format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n")
        }
        None => "Content-Type: application/json\r\n".to_string(),
    };
    let response = http_request(admin, method, path, &headers, &body).await;
    let status: u16 = response[9..12].parse().unwrap();
    let text = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    (
        status,
        serde_json::from_str(text).unwrap_or(serde_json::Value::Null),
    )
}

/// For a test that needs a tool or runtime that is missing: in CI (`CI`
/// set; `.ci/run` installs everything) that is a failure; on a developer's
/// machine a loud skip that says what is missing, so `cargo test` works with
/// only Rust and PostgreSQL. `what` names the check, `problem` what is
/// missing and how to install it.
pub fn skip_unless_ci(what: &str, problem: &str) {
    let in_ci = std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false");
    assert!(!in_ci, "{what} cannot be checked: {problem}");
    // Straight to the process's stderr: not captured by the test harness.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!! SKIPPED {what}: {problem} (in CI this is a failure) !!!!!\n"
    );
}
