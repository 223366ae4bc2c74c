//! The sample producers in `examples/producers/` (Node.js `pg`, Python
//! psycopg 3, Go pgx, PHP PDO), each run with its runtime and driver as a
//! child process against a fresh database while the daemon runs in-process.
//!
//! Each sample commits a post with its `post.created` event, then emits
//! `post.edited` in a transaction that it rolls back. The receiver must get
//! exactly one request: the committed event, signed, with the exact `data`
//! the sample wrote. The rolled-back event must never exist, so never be sent.
//!
//! A missing runtime or driver fails the test in CI (`CI=true`; `.ci/run`
//! installs them). On a developer's machine it is a loud skip that says how
//! to install it, so `cargo test` works with only Rust and PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::process::Command;
use uuid::Uuid;

use crate::harness::runtimes::{self, Lang};
use crate::harness::{expected_signature, test_args, wait_until, Receiver, TestApp};

/// The title every sample gives its post: quotes, non-ASCII and a character
/// outside the BMP, so a driver that mangles text or JSON shows here.
const TITLE: &str = "Dark mode for the \"café\" ✓ 🌙";
/// How long `go build` may take (a cold build cache included).
const BUILD_LIMIT: Duration = Duration::from_secs(120);
/// How long a sample may take to run.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// How long the committed event may take to be delivered.
const DELIVERY_LIMIT: Duration = Duration::from_secs(20);
/// Where Debian's golang-github-jackc-pgx-v4-dev puts pgx (GOPATH layout).
const DEBIAN_GOPATH: &str = "/usr/share/gocode";

impl Lang {
    fn producer_dir(self) -> PathBuf {
        self.sample_dir("producers")
    }
}

/// The sample's command, and a binary built for this run (removed on drop).
struct Prepared {
    command: Command,
    built: Option<PathBuf>,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Some(binary) = &self.built {
            let _ = std::fs::remove_file(binary);
        }
    }
}

/// Runs `program args` in `dir`; its stdout, or why it failed.
async fn probe(program: &Path, args: &[&str], dir: &Path) -> Result<String, String> {
    runtimes::probe(program, args, dir, Duration::from_secs(30)).await
}

/// How to run the sample, or why it cannot run here and how to fix that.
async fn prepare(lang: Lang) -> Result<Prepared, String> {
    let dir = lang.producer_dir();
    let command = match lang {
        Lang::Node => {
            probe(Path::new("node"), &["--version"], &dir).await?;
            if !dir.join("node_modules/pg/package.json").exists() {
                return Err("pg is not installed: run `npm ci` in examples/producers/node".into());
            }
            let mut command = Command::new("node");
            command.arg("producer.js");
            command
        }
        Lang::Python => {
            let python = dir.join(".venv/bin/python");
            probe(&python, &["-c", "import psycopg"], &dir)
                .await
                .map_err(|problem| {
                    format!(
                        "{problem}: in examples/producers/python run `python3 -m venv .venv && \
                         .venv/bin/pip install -r requirements.txt`"
                    )
                })?;
            let mut command = Command::new(python);
            command.arg("producer.py");
            command
        }
        Lang::Go => {
            probe(Path::new("go"), &["version"], &dir).await?;
            let binary = go_build(&dir).await?;
            return Ok(Prepared {
                command: Command::new(&binary),
                built: Some(binary),
            });
        }
        Lang::Php => {
            probe(Path::new("php"), &["--version"], &dir).await?;
            let loaded = "exit(extension_loaded('pdo_pgsql') ? 0 : 1);";
            probe(Path::new("php"), &["-r", loaded], &dir)
                .await
                .map_err(|_| "PHP has no pdo_pgsql: `apt-get install -y php-pgsql`".to_string())?;
            let mut command = Command::new("php");
            command.arg("producer.php");
            command
        }
    };
    Ok(Prepared {
        command,
        built: None,
    })
}

/// Builds the Go sample into the target dir. With Debian's pgx package
/// installed (what `.ci/run` does), against it in GOPATH mode: it needs no
/// network, and a failure is the sample's. Otherwise as a module, which
/// needs the module in the cache or a reachable module proxy: a failure
/// there is reported as pgx being unavailable.
async fn go_build(dir: &Path) -> Result<PathBuf, String> {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let binary = tmp.join(format!("producer-go-{}", Uuid::new_v4().simple()));
    let debian = Path::new(DEBIAN_GOPATH).join("src/github.com/jackc/pgx/v4");
    let mut command = Command::new("go");
    command
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(dir)
        .env_remove("GOFLAGS")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if debian.is_dir() {
        command
            .env("GO111MODULE", "off")
            .env("GOPATH", DEBIAN_GOPATH);
    } else {
        command.env("GO111MODULE", "on");
    }
    // go needs a build cache; give it one when the environment names none.
    if ["GOCACHE", "XDG_CACHE_HOME", "HOME"]
        .iter()
        .all(|name| std::env::var_os(name).is_none())
    {
        command.env("GOCACHE", tmp.join("go-cache"));
    }
    let output = tokio::time::timeout(BUILD_LIMIT, command.output())
        .await
        .map_err(|_| format!("`go build` took longer than {BUILD_LIMIT:?}"))?
        .map_err(|error| format!("running go build: {error}"))?;
    if output.status.success() {
        return Ok(binary);
    }
    let log = format!(
        "`go build` exited with {}:\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!debian.is_dir(), "the Go sample does not build: {log}");
    Err(format!(
        "pgx could not be had ({log}): `apt-get install -y golang-github-jackc-pgx-v4-dev`"
    ))
}

/// `Some` when the test should go on; fails in CI when the runtime or the
/// driver is missing, and skips loudly elsewhere.
async fn prepare_or_skip(lang: Lang) -> Option<Prepared> {
    let problem = match prepare(lang).await {
        Ok(prepared) => return Some(prepared),
        Err(problem) => problem,
    };
    crate::harness::skip_unless_ci(
        &format!("the {lang:?} sample producer"),
        &format!("{problem} (.ci/run installs it)"),
    );
    None
}

/// The event ids a sample printed.
struct Emitted {
    committed: Uuid,
    rolled_back: Uuid,
}

/// Runs the sample to its end; the ids from its last stdout line.
async fn run(lang: Lang, prepared: &mut Prepared, url: &str, org: Uuid, post_id: &str) -> Emitted {
    let output = prepared
        .command
        .current_dir(lang.producer_dir())
        .env("DATABASE_URL", url)
        .env("ORGANIZATION_ID", org.to_string())
        .env("POST_ID", post_id)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_LIMIT, output)
        .await
        .unwrap_or_else(|_| panic!("the {lang:?} sample ran longer than {RUN_LIMIT:?}"))
        .unwrap_or_else(|error| panic!("starting the {lang:?} sample: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let printed = format!(
        "--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the {lang:?} sample exited with {}\n{printed}",
        output.status
    );
    let line = stdout.lines().rev().find(|line| !line.trim().is_empty());
    let ids: Value = line
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("the {lang:?} sample printed no JSON line\n{printed}"));
    let id = |name: &str| {
        ids[name]
            .as_str()
            .and_then(|id| id.parse::<Uuid>().ok())
            .unwrap_or_else(|| panic!("no event id `{name}` in {ids}\n{printed}"))
    };
    Emitted {
        committed: id("committed"),
        rolled_back: id("rolled_back"),
    }
}

/// Waits until the daemon has nothing left to do: every event fanned out and
/// no delivery pending. After that the receiver has seen every request it
/// ever will for this database.
async fn wait_until_idle(app: &TestApp) {
    wait_until(
        "no unfanned events and no pending deliveries",
        DELIVERY_LIMIT,
        || async {
            app.db
                .count(
                    "SELECT (SELECT count(*) FROM outbox.events WHERE fanned_out_at IS NULL) \
                      + (SELECT count(*) FROM outbox.deliveries WHERE status = 'pending')",
                )
                .await
                == 0
        },
    )
    .await;
}

async fn check_producer(lang: Lang) {
    let Some(mut prepared) = prepare_or_skip(lang).await else {
        return;
    };
    let started = Instant::now();
    let app = TestApp::new().await;
    let org = Uuid::new_v4();
    let receiver = Receiver::with_status(204).await;
    let webhook = app.create_webhook(org, &receiver.url("/hooks")).await;
    let daemon = app.spawn_daemon(app.config(&test_args()));

    let post_id = format!("post_{}", Uuid::new_v4().simple());
    let emitted = run(lang, &mut prepared, &app.db.url, org, &post_id).await;
    assert_ne!(emitted.committed, emitted.rolled_back);

    receiver.wait_for(1, DELIVERY_LIMIT).await;
    wait_until_idle(&app).await;
    daemon.stop().await.unwrap();

    let requests = receiver.requests();
    assert_eq!(
        requests.len(),
        1,
        "the {lang:?} sample's events reached the receiver {} times, want once: {:?}",
        requests.len(),
        requests
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body))
            .collect::<Vec<_>>()
    );
    let request = &requests[0];
    assert_eq!(
        request.header("x-productbridge-signature"),
        expected_signature(&webhook.secret, &request.body),
        "signature over the body as received"
    );
    assert_eq!(request.header("x-productbridge-event"), "post.created");
    let body: Value = serde_json::from_slice(&request.body).expect("a JSON body");
    assert_eq!(body["event"], "post.created");
    assert_eq!(body["organization_id"], org.to_string());
    assert_eq!(
        body["data"],
        json!({ "id": post_id, "title": TITLE }),
        "the {lang:?} sample's data as delivered"
    );
    let delivery: Uuid = request.delivery_id().parse().expect("a delivery id");
    check_database(&app, delivery, &emitted, &post_id).await;
    println!(
        "{lang:?} sample producer checked in {:?}",
        started.elapsed()
    );
}

/// The delivery is the committed event's, the rolled-back event does not
/// exist, and neither does the rename that went with it.
async fn check_database(app: &TestApp, delivery: Uuid, emitted: &Emitted, post_id: &str) {
    let client = app.db.client().await;
    let event: Uuid = client
        .query_one(
            "SELECT event_id FROM outbox.deliveries WHERE id = $1",
            &[&delivery],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        event, emitted.committed,
        "the delivery is the committed event's"
    );
    let events: Vec<Uuid> = client
        .query("SELECT id FROM outbox.events ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        events,
        vec![emitted.committed],
        "only the committed event exists; the rolled-back one is {}",
        emitted.rolled_back
    );
    let title: String = client
        .query_one("SELECT title FROM posts WHERE id = $1", &[&post_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(title, TITLE, "the rename was rolled back with its event");
}

#[tokio::test]
async fn node_sample_producer_emits_in_its_transaction() {
    check_producer(Lang::Node).await;
}

#[tokio::test]
async fn python_sample_producer_emits_in_its_transaction() {
    check_producer(Lang::Python).await;
}

#[tokio::test]
async fn go_sample_producer_emits_in_its_transaction() {
    check_producer(Lang::Go).await;
}

#[tokio::test]
async fn php_sample_producer_emits_in_its_transaction() {
    check_producer(Lang::Php).await;
}
