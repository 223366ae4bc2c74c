//! The `standard` signature scheme against third parties: real deliveries of
//! a daemon, recorded by a receiver on 127.0.0.1, verified by the official
//! `standardwebhooks` libraries of PyPI and npm (the verifier scripts in
//! `examples/receivers/standard/`), which must accept them as sent and
//! reject a tampered body or a timestamp outside their tolerance
//! (docs/CONTRACT.md §1). A `productbridge` webhook gets none of the headers.
//!
//! A missing runtime or library fails the test in CI (`.ci/run` installs
//! them); on a developer's machine it is a loud skip saying how to install it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use uuid::Uuid;
use webhookd::manage::SignatureScheme;
use webhookd::EventType;

use crate::harness::receiver::Recorded;
use crate::harness::runtimes::{self, Lang};
use crate::harness::{expected_signature, sample, skip_unless_ci, test_args, Receiver, TestApp};

/// How long the deliveries may take to arrive.
const DELIVERY_LIMIT: Duration = Duration::from_secs(20);
/// How long one verifier run may take.
const VERIFY_LIMIT: Duration = Duration::from_secs(30);
/// Further from now than both libraries' five-minute tolerance.
const OUTSIDE_TOLERANCE: i64 = 10 * 60;
/// The Standard Webhooks headers.
const SCHEME_HEADERS: [&str; 3] = ["webhook-id", "webhook-timestamp", "webhook-signature"];

/// One official verifier, ready to run.
struct Verifier {
    name: &'static str,
    program: PathBuf,
    script: &'static str,
    dir: PathBuf,
}

impl Verifier {
    /// The verifier of `lang`, or why it cannot run here and how to fix that.
    async fn prepare(lang: Lang) -> Result<Verifier, String> {
        let dir = lang.sample_dir("receivers/standard");
        let (name, program, script, check): (_, PathBuf, _, &[&str]) = match lang {
            Lang::Node => (
                "node standardwebhooks",
                "node".into(),
                "verify.js",
                &["-e", "require.resolve('standardwebhooks')"],
            ),
            _ => (
                "python standardwebhooks",
                dir.join(".venv/bin/python"),
                "verify.py",
                &["-c", "import standardwebhooks"],
            ),
        };
        runtimes::probe(&program, check, &dir, VERIFY_LIMIT)
            .await
            .map_err(|problem| match lang {
                Lang::Node => {
                    format!("{problem}: run `npm ci` in examples/receivers/standard/node")
                }
                _ => format!(
                    "{problem}: in examples/receivers/standard/python run `python3 -m venv .venv \
                     && .venv/bin/pip install -r requirements.txt`"
                ),
            })?;
        Ok(Verifier {
            name,
            program,
            script,
            dir,
        })
    }

    /// Runs the library on one request: `Ok(())` when it verifies, else
    /// the library's reason. `now` pretends the clock says so.
    async fn verify(
        &self,
        secret: &str,
        headers: &Value,
        body: &[u8],
        now: Option<i64>,
    ) -> Result<(), String> {
        let request = json!({
            "secret": secret,
            "headers": headers,
            "body_base64": STANDARD.encode(body),
            "now": now,
        });
        let mut child = Command::new(&self.program)
            .arg(self.script)
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", self.name));
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(request.to_string().as_bytes())
            .await
            .unwrap();
        drop(stdin);
        let output = tokio::time::timeout(VERIFY_LIMIT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{} did not finish within {VERIFY_LIMIT:?}", self.name))
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
        match (output.status.code(), stdout.strip_prefix("rejected: ")) {
            (Some(0), _) if stdout == "ok" => Ok(()),
            (Some(1), Some(reason)) => Err(reason.to_string()),
            _ => panic!(
                "{} failed: {}\n{stdout}\n{}",
                self.name,
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }
}

/// The headers a verifier is given, as they arrived.
fn scheme_headers(arrival: &Recorded) -> Value {
    SCHEME_HEADERS
        .iter()
        .map(|name| (name.to_string(), Value::from(arrival.header(name))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A `standard` and a `productbridge` webhook on one receiver, two events;
/// returns the secret of the standard one and the arrivals per path.
async fn deliveries() -> (String, Vec<Recorded>, Vec<Recorded>) {
    let app = TestApp::new().await;
    let receiver = Receiver::with_status(204).await;
    let org = Uuid::new_v4();
    let standard = SignatureScheme::Standard;
    let secret = (app
        .create_webhook_signed(org, &receiver.url("/standard"), standard)
        .await)
        .secret;
    let plain_secret = (app.create_webhook(org, &receiver.url("/plain")).await).secret;
    receiver.verify("/standard", &secret);
    receiver.verify("/plain", &plain_secret);
    let before = chrono::Utc::now().timestamp();
    let daemon = app.spawn_daemon(app.config(&test_args()));
    for event in [EventType::PostCreated, EventType::CommentCreated] {
        app.emit(org, event.as_str(), sample(event)).await;
    }
    let arrived = receiver.wait_for(4, DELIVERY_LIMIT).await;
    daemon.stop().await.unwrap();
    let after = chrono::Utc::now().timestamp();
    let (standard, plain): (Vec<_>, Vec<_>) =
        arrived.into_iter().partition(|a| a.path == "/standard");
    for arrival in standard.iter().chain(&plain) {
        // X-ProductBridge-Signature is keyed with the whole secret text in both schemes.
        assert_eq!(arrival.signature_ok, Some(true), "{}", arrival.path);
    }
    for arrival in &standard {
        assert_eq!(
            arrival.header("webhook-id"),
            arrival.header("x-productbridge-delivery-id")
        );
        let timestamp: i64 = arrival.header("webhook-timestamp").parse().unwrap();
        assert!((before..=after).contains(&timestamp), "{timestamp}");
        assert!(arrival.header("webhook-signature").starts_with("v1,"));
    }
    for arrival in &plain {
        for name in SCHEME_HEADERS {
            assert!(
                arrival.headers.get(name).is_none(),
                "{name} on productbridge"
            );
        }
        assert_eq!(
            arrival.header("x-productbridge-signature"),
            expected_signature(&plain_secret, &arrival.body)
        );
    }
    (secret, standard, plain)
}

/// What a verifier must say about real deliveries and altered copies.
async fn check_verifier(verifier: &Verifier, secret: &str, standard: &[Recorded]) {
    let name = verifier.name;
    for arrival in standard {
        let headers = scheme_headers(arrival);
        let body = &arrival.body;
        verifier
            .verify(secret, &headers, body, None)
            .await
            .unwrap_or_else(|reason| panic!("{name} rejected a real delivery: {reason}"));

        let mut tampered = body.to_vec();
        tampered.extend_from_slice(b" ");
        let rejected = verifier.verify(secret, &headers, &tampered, None).await;
        assert!(rejected.is_err(), "{name} accepted a tampered body");

        let sent: i64 = arrival.header("webhook-timestamp").parse().unwrap();
        let mut old = headers.clone();
        old["webhook-timestamp"] = Value::from((sent - OUTSIDE_TOLERANCE).to_string());
        let rejected = verifier.verify(secret, &old, body, None).await;
        assert!(rejected.is_err(), "{name} accepted an altered timestamp");

        let later = Some(sent + OUTSIDE_TOLERANCE);
        let reason = verifier.verify(secret, &headers, body, later).await;
        assert!(
            reason
                .as_ref()
                .is_err_and(|reason| reason.contains("too old")),
            "{name} on a delivery checked 10 minutes late: {reason:?}"
        );
    }
}

#[tokio::test]
async fn standard_deliveries_verify_with_the_official_libraries_and_productbridge_ones_carry_no_scheme_headers(
) {
    let (secret, standard, plain) = deliveries().await;
    assert_eq!((standard.len(), plain.len()), (2, 2));
    for lang in [Lang::Python, Lang::Node] {
        match Verifier::prepare(lang).await {
            Ok(verifier) => check_verifier(&verifier, &secret, &standard).await,
            Err(problem) => {
                skip_unless_ci(&format!("the {lang:?} standardwebhooks verifier"), &problem)
            }
        }
    }
}
