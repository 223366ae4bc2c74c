//! The sample receivers in `examples/receivers/` (Node.js, Python, Go, PHP),
//! each run with its own runtime as a child process on 127.0.0.1.
//!
//! Each test: genuine deliveries from the daemon must end `delivered` (the
//! sample verified them), then requests sent here must be answered 2xx only
//! when signed over the exact bytes with the webhook's secret, and 401 for a
//! tampered body, a wrong secret, a missing header or a missing `sha256=`.
//!
//! A missing runtime fails the test in CI (`CI=true`; `.ci/run` installs the
//! runtimes first). On a developer's machine it is a loud skip that says what
//! to install, so `cargo test` works on a fresh machine with only Rust and
//! PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use uuid::Uuid;
use webhookd::EventType;

use crate::harness::runtimes::{self, Lang};
use crate::harness::{expected_signature, sample, test_args, TestApp};

/// How long a sample may take to listen once started.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long `go build` may take (a cold build cache included).
const BUILD_LIMIT: Duration = Duration::from_secs(60);
/// How long the daemon's deliveries may take to be accepted.
const DELIVERY_LIMIT: Duration = Duration::from_secs(20);
/// How long one request sent by the test may take.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

impl Lang {
    fn receiver_dir(self) -> PathBuf {
        self.sample_dir("receivers")
    }

    /// The runtime's command and how to ask for its version.
    fn runtime(self) -> (&'static str, &'static str) {
        match self {
            Lang::Node => ("node", "--version"),
            Lang::Python => ("python3", "--version"),
            Lang::Go => ("go", "version"),
            Lang::Php => ("php", "--version"),
        }
    }

    /// The Debian package that provides the runtime.
    fn package(self) -> &'static str {
        match self {
            Lang::Node => "nodejs",
            Lang::Python => "python3",
            Lang::Go => "golang-go",
            Lang::Php => "php-cli",
        }
    }
}

/// The runtime's version line, or why it cannot be run.
async fn runtime_version(lang: Lang) -> Result<String, String> {
    let (program, version_arg) = lang.runtime();
    let dir = lang.receiver_dir();
    let stdout = runtimes::probe(
        Path::new(program),
        &[version_arg],
        &dir,
        Duration::from_secs(20),
    )
    .await?;
    Ok(stdout.lines().next().unwrap_or("").to_string())
}

/// `true` when the test should go on; fails in CI when the runtime is
/// missing, and skips loudly elsewhere.
async fn require_runtime(lang: Lang) -> bool {
    let problem = match runtime_version(lang).await {
        Ok(_) => return true,
        Err(problem) => problem,
    };
    let install = format!(
        "Install it (Debian: `apt-get install -y {}`; .ci/run does this)",
        lang.package()
    );
    crate::harness::skip_unless_ci(
        &format!(
            "the {lang:?} sample receiver in {}",
            lang.receiver_dir().display()
        ),
        &format!("{problem}. {install}"),
    );
    false
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A sample receiver running as a child process, killed on drop.
struct Sample {
    lang: Lang,
    port: u16,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// A binary built for this run, removed on drop.
    built: Option<PathBuf>,
}

impl Sample {
    /// Starts the sample on `port` with `secret` and waits until it listens.
    async fn start(lang: Lang, port: u16, secret: &str) -> Sample {
        let dir = lang.receiver_dir();
        let mut built = None;
        let mut command = match lang {
            Lang::Node => {
                let mut command = Command::new("node");
                command.arg("receiver.js");
                command
            }
            Lang::Python => {
                let mut command = Command::new("python3");
                command.arg("receiver.py");
                command
            }
            Lang::Go => {
                // Built, then run: `go run` would leave the compiled program
                // running when it is killed itself.
                let binary = go_build(&dir).await;
                built = Some(binary.clone());
                Command::new(binary)
            }
            Lang::Php => {
                let mut command = Command::new("php");
                command
                    .args(["-S", &format!("127.0.0.1:{port}"), "receiver.php"])
                    // One process, so that killing it leaves nothing behind.
                    .env_remove("PHP_CLI_SERVER_WORKERS");
                command
            }
        };
        let mut child = command
            .current_dir(&dir)
            .env("PORT", port.to_string())
            .env("WEBHOOK_SECRET", secret)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("starting the {lang:?} sample: {error}"));
        let stdout = collect_lines(child.stdout.take().unwrap());
        let stderr = collect_lines(child.stderr.take().unwrap());
        let mut running = Sample {
            lang,
            port,
            child,
            stdout,
            stderr,
            built,
        };
        running.wait_until_listening().await;
        running
    }

    async fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the {:?} sample exited with {status} before listening\n{}",
                    self.lang,
                    self.output()
                );
            }
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "the {:?} sample did not listen on 127.0.0.1:{} within {START_LIMIT:?}\n{}",
                    self.lang,
                    self.port,
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Lines the sample printed on stdout so far.
    fn lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything it printed, for failure messages.
    fn output(&self) -> String {
        format!(
            "--- {:?} sample stdout ---\n{}\n--- stderr ---\n{}",
            self.lang,
            self.stdout.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap().join("\n")
        )
    }

    /// Kills it and waits for it to be gone.
    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for Sample {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if let Some(binary) = &self.built {
            let _ = std::fs::remove_file(binary);
        }
    }
}

/// Reads lines in the background into a shared list.
fn collect_lines<R>(stream: R) -> Arc<Mutex<Vec<String>>>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// `go build` of the single-file sample, without a module, into the target dir.
async fn go_build(dir: &Path) -> PathBuf {
    let binary = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sample-receiver-go-{}", Uuid::new_v4().simple()));
    let mut command = Command::new("go");
    command
        .args(["build", "-o"])
        .arg(&binary)
        .arg("receiver.go")
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // go needs a build cache; give it one when the environment names none.
    if ["GOCACHE", "XDG_CACHE_HOME", "HOME"]
        .iter()
        .all(|name| std::env::var_os(name).is_none())
    {
        command.env(
            "GOCACHE",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cache"),
        );
    }
    let output = tokio::time::timeout(BUILD_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("`go build receiver.go` took longer than {BUILD_LIMIT:?}"))
        .expect("running go build");
    assert!(
        output.status.success(),
        "`go build receiver.go` failed with {}:\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    binary
}

/// POSTs `body` with `headers` over a fresh connection; returns the status code.
async fn post(port: u16, headers: &[(&str, &str)], body: &[u8]) -> u16 {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut request = format!(
            "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        stream.write_all(&bytes).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        response
    };
    let response = tokio::time::timeout(REQUEST_LIMIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("no complete response within {REQUEST_LIMIT:?}"));
    let text = String::from_utf8_lossy(&response);
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok());
    status.unwrap_or_else(|| panic!("not an HTTP response: {text:?}"))
}

/// Waits until both deliveries are `delivered`; fails with the rows and the
/// sample's output otherwise.
async fn wait_until_delivered(app: &TestApp, sample: &Sample, n: i64) {
    let deadline = Instant::now() + DELIVERY_LIMIT;
    loop {
        let delivered = app
            .db
            .count("SELECT count(*) FROM outbox.deliveries WHERE status = 'delivered'")
            .await;
        if delivered == n {
            return;
        }
        if Instant::now() > deadline {
            let rows = app
                .db
                .client()
                .await
                .query(
                    "SELECT id::text, status, attempts, last_status_code, last_error \
                     FROM outbox.deliveries",
                    &[],
                )
                .await
                .unwrap();
            let rows: Vec<String> = rows
                .iter()
                .map(|row| {
                    format!(
                        "{} {} attempts={} code={:?} error={:?}",
                        row.get::<_, String>(0),
                        row.get::<_, String>(1),
                        row.get::<_, i32>(2),
                        row.get::<_, Option<i32>>(3),
                        row.get::<_, Option<String>>(4)
                    )
                })
                .collect();
            panic!(
                "{delivered} of {n} deliveries to the {:?} sample delivered after \
                 {DELIVERY_LIMIT:?}:\n{}\n{}",
                sample.lang,
                rows.join("\n"),
                sample.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A body signed by the test: not what a JSON serialiser would write back
/// (spaces, an escape, a trailing newline) and with non-ASCII text, so only
/// a receiver that hashes the raw bytes accepts it.
const RAW_BODY: &str = "{ \"event\" : \"post.created\",\n  \"organization_id\": \
    \"00000000-0000-4000-8000-000000000001\", \"occurred_at\": \"2026-05-09T12:34:56.789Z\", \
    \"data\": {\"title\": \"Caf\\u00e9 \u{2014} na\u{ef}ve \u{2713} \u{1f600}\", \"votes\": 1} }\n";

/// One request the test sends and the answer it wants.
struct Case<'a> {
    what: &'a str,
    signature: Option<&'a str>,
    body: &'a [u8],
    accept: bool,
}

async fn check_sample(lang: Lang) {
    if !require_runtime(lang).await {
        return;
    }
    let started = Instant::now();

    // The webhook first: the sample needs its one-time secret.
    let app = TestApp::new().await;
    let org = Uuid::new_v4();
    let port = free_port();
    let webhook = app
        .create_webhook(org, &format!("http://127.0.0.1:{port}/"))
        .await;
    let running = Sample::start(lang, port, &webhook.secret).await;
    let ready = started.elapsed();

    // Genuine deliveries from webhookd, one with non-ASCII text in its body.
    let daemon = app.spawn_daemon(app.config(&test_args()));
    let mut data = sample(EventType::PostCreated);
    data["note"] = serde_json::json!("na\u{ef}ve caf\u{e9} \u{2713} \u{1f600} \"quoted\"");
    app.emit(org, EventType::PostCreated.as_str(), data).await;
    app.emit(
        org,
        EventType::CommentCreated.as_str(),
        sample(EventType::CommentCreated),
    )
    .await;
    wait_until_delivered(&app, &running, 2).await;
    daemon.stop().await.unwrap();
    let delivery_ids: Vec<String> = app
        .db
        .client()
        .await
        .query(
            "SELECT id::text FROM outbox.deliveries WHERE webhook_id = $1",
            &[&webhook.id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(delivery_ids.len(), 2);

    // Requests made here, signed independently of webhookd.
    let body = RAW_BODY.as_bytes();
    let genuine = expected_signature(&webhook.secret, body);
    let tampered = RAW_BODY.replace("\"votes\": 1", "\"votes\": 2");
    let wrong_secret = expected_signature(&format!("{}x", webhook.secret), body);
    let bare_hex = genuine.trim_start_matches("sha256=").to_string();
    let cases = [
        Case {
            what: "genuine signature over the raw bytes",
            signature: Some(&genuine),
            body,
            accept: true,
        },
        Case {
            what: "tampered body, signature of the original",
            signature: Some(&genuine),
            body: tampered.as_bytes(),
            accept: false,
        },
        Case {
            what: "signed with a wrong secret",
            signature: Some(&wrong_secret),
            body,
            accept: false,
        },
        Case {
            what: "no signature header",
            signature: None,
            body,
            accept: false,
        },
        Case {
            what: "signature without the sha256= prefix",
            signature: Some(&bare_hex),
            body,
            accept: false,
        },
    ];
    let mut failures = Vec::new();
    for case in &cases {
        let mut headers = vec![("X-ProductBridge-Event", "post.created")];
        if let Some(signature) = case.signature {
            headers.push(("X-ProductBridge-Signature", signature));
        }
        let status = post(port, &headers, case.body).await;
        let right = if case.accept {
            (200..300).contains(&status)
        } else {
            status == 401
        };
        if !right {
            let wanted = if case.accept { "2xx" } else { "401" };
            failures.push(format!("{}: got {status}, want {wanted}", case.what));
        }
    }
    assert!(
        failures.is_empty(),
        "the {lang:?} sample answered wrongly:\n{}\n{}",
        failures.join("\n"),
        running.output()
    );

    // One log line per request, naming the delivery and the verdict.
    let wanted_lines = delivery_ids.len() + cases.len();
    let deadline = Instant::now() + Duration::from_secs(5);
    while running
        .lines()
        .iter()
        .filter(|l| l.contains("verified="))
        .count()
        < wanted_lines
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines = running.lines();
    for id in &delivery_ids {
        assert!(
            lines
                .iter()
                .any(|line| line.contains(&format!("delivery={id} verified=yes"))),
            "the {lang:?} sample did not log delivery {id} as verified\n{}",
            running.output()
        );
    }
    let rejected = lines.iter().filter(|l| l.ends_with("verified=no")).count();
    assert_eq!(
        rejected,
        cases.iter().filter(|case| !case.accept).count(),
        "the {lang:?} sample's log lines for rejected requests\n{}",
        running.output()
    );

    running.stop().await;
    println!(
        "{lang:?} sample: listening after {ready:?}, checked in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn node_sample_receiver_verifies_signatures() {
    check_sample(Lang::Node).await;
}

#[tokio::test]
async fn python_sample_receiver_verifies_signatures() {
    check_sample(Lang::Python).await;
}

#[tokio::test]
async fn go_sample_receiver_verifies_signatures() {
    check_sample(Lang::Go).await;
}

#[tokio::test]
async fn php_sample_receiver_verifies_signatures() {
    check_sample(Lang::Php).await;
}
