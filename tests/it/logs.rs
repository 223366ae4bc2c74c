//! The daemon's logs where they end up: plain text in a file or the journal
//! (colours only on a terminal, and never with `NO_COLOR`), JSON as one
//! object per line with the names docs/OPERATIONS.md lists, and none of the
//! database driver's INFO lines unless `RUST_LOG` asks for them.

use std::process::Stdio;

use serde_json::Value;
use uuid::Uuid;
use webhookd::EventType;

use crate::harness::process::{Replica, COMMAND_LIMIT};
use crate::harness::{sample, secret_key, Receiver, TestApp, TestWebhook};

/// What the test database's trigger says to whoever changes a delivery.
const NOTICE: &str = "deliveries changed (a notice from the application)";

/// A test app whose `outbox.deliveries` raises a NOTICE on every insert and
/// update, as an application's own trigger might: the driver logs each
/// NOTICE that reaches a daemon connection at INFO.
async fn app_with_a_chatty_trigger() -> TestApp {
    let app = TestApp::new().await;
    let sql = format!(
        "CREATE FUNCTION public.say_something() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE NOTICE '{NOTICE}'; RETURN NULL; END $$; \
         CREATE TRIGGER say_something AFTER INSERT OR UPDATE ON outbox.deliveries \
         FOR EACH STATEMENT EXECUTE FUNCTION public.say_something();"
    );
    app.db.client().await.batch_execute(&sql).await.unwrap();
    app
}

/// Emits one event for `org` and waits until `failed` deliveries have
/// failed for good (the receiver answers 500; `--max-retries 0`).
async fn fail_one_more(app: &TestApp, org: Uuid, failed: i64) {
    app.emit(org, "post.created", sample(EventType::PostCreated))
        .await;
    app.wait_for_deliveries("status = 'failed'", failed).await;
}

/// Stops a replica with SIGTERM and returns its log, one line each.
async fn stop(mut replica: Replica) -> Vec<String> {
    replica.signal("-TERM");
    assert!(replica.exit_status().await.success());
    replica.log_text().lines().map(str::to_string).collect()
}

/// Every line is one JSON object with the four fixed keys first-class and
/// nothing from the build (source paths, `log.*` fields); returns them.
fn parse_json_lines(lines: &[String]) -> Vec<serde_json::Map<String, Value>> {
    assert!(!lines.is_empty(), "the daemon logged nothing");
    lines
        .iter()
        .map(|line| {
            let Ok(Value::Object(object)) = serde_json::from_str(line) else {
                panic!("not one JSON object: {line}");
            };
            for key in ["timestamp", "level", "target", "message"] {
                assert!(object[key].is_string(), "no string {key:?} in {line}");
            }
            assert!(
                chrono::DateTime::parse_from_rfc3339(object["timestamp"].as_str().unwrap()).is_ok(),
                "{line}"
            );
            assert!(
                ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
                    .contains(&object["level"].as_str().unwrap()),
                "{line}"
            );
            assert!(
                !object.keys().any(|key| key.starts_with("log.")),
                "driver metadata in {line}"
            );
            assert!(
                !line.contains(".rs\"") && !line.contains("/src/") && !line.contains(".cargo"),
                "a build path in {line}"
            );
            object
        })
        .collect()
}

fn targets(events: &[serde_json::Map<String, Value>]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event["target"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_stable_names_and_no_driver_chatter() {
    let app = app_with_a_chatty_trigger().await;
    let receiver = Receiver::with_status(500).await;
    let org = Uuid::new_v4();
    let TestWebhook { id: webhook_id, .. } = app.create_webhook(org, &receiver.url("/hook")).await;

    let replica = Replica::start(&app.db.url, &app.key, &["--max-retries", "0"]).await;
    fail_one_more(&app, org, 1).await;
    let events = parse_json_lines(&stop(replica).await);
    let targets = targets(&events);
    assert!(
        targets.iter().all(|target| target.starts_with("webhookd")),
        "only webhookd's own lines by default, got targets {targets:?}"
    );
    let failed = events
        .iter()
        .find(|event| event["message"] == "delivery failed for good")
        .expect("the failed delivery is logged");
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["webhook_id"], webhook_id.to_string());
    assert!(failed["delivery_id"]
        .as_str()
        .is_some_and(|id| id.parse::<Uuid>().is_ok()));
    assert_eq!(failed["attempt"], 1);
    assert_eq!(failed["outcome"], "http_status");
    assert!(failed["duration_ms"].is_u64(), "{failed:?}");
    assert!(
        failed["reason"].as_str().is_some_and(|r| r.contains("500")),
        "{failed:?}"
    );
    assert!(events
        .iter()
        .any(|event| event["message"] == "webhookd running"));

    // The same NOTICEs reached the daemon's connections: RUST_LOG brings them back.
    let replica = Replica::start_with_env(
        &app.db.url,
        &app.key,
        &["--max-retries", "0"],
        &[("RUST_LOG", "warn,webhookd=info,tokio_postgres=info")],
    )
    .await;
    fail_one_more(&app, org, 2).await;
    let events = parse_json_lines(&stop(replica).await);
    let notice = events
        .iter()
        .find(|event| event["target"] == "tokio_postgres::connection")
        .expect("RUST_LOG=tokio_postgres=info shows the driver's lines");
    assert_eq!(notice["level"], "INFO");
    assert_eq!(notice["message"], format!("NOTICE: {NOTICE}"));
    assert!(events
        .iter()
        .any(|event| event["message"] == "webhookd running"));
}

#[tokio::test]
async fn text_logs_written_to_a_pipe_have_no_colour_codes() {
    let app = TestApp::new().await;
    let receiver = Receiver::with_status(500).await;
    let org = Uuid::new_v4();
    app.create_webhook(org, &receiver.url("/hook")).await;
    let mut replica = crate::harness::process::Webhookd::new(
        &app.db.url,
        &[
            "run",
            "--allow-private-targets",
            "--admin-addr",
            "127.0.0.1:0",
            "--max-retries",
            "0",
        ],
    )
    .key(&app.key)
    .unset("NO_COLOR")
    .start()
    .await;
    fail_one_more(&app, org, 1).await;
    replica.signal("-TERM");
    let status = replica.exit_status().await;
    assert!(status.success());
    let log = replica.log_text();
    assert!(log.contains("webhookd running"), "{log}");
    assert!(log.contains("delivery failed for good"), "{log}");
    assert!(log.contains("webhook_id="), "{log}");
    assert!(
        !log.contains('\x1b'),
        "colour codes in a log written to a pipe:\n{log:?}"
    );
}

/// `true` when script(1) is there to give the daemon a terminal; fails in CI.
fn require_script() -> bool {
    let found = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if found {
        return true;
    }
    crate::harness::skip_unless_ci(
        "the terminal colour test",
        "script(1) is not installed (Debian: `apt-get install -y bsdutils`)",
    );
    false
}

/// What `webhookd run` writes to a terminal before it refuses a bad setting:
/// the warning about an unusable RUST_LOG (a log line) and the error.
async fn on_a_terminal(no_color: Option<&str>) -> String {
    let shown = format!("{} run --lease 1s", env!("CARGO_BIN_EXE_webhookd"));
    let mut command = tokio::process::Command::new("script");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("WEBHOOKD_") {
            command.env_remove(&name);
        }
    }
    command
        .args(["-q", "-e", "-c", &shown, "/dev/null"])
        .env("RUST_LOG", "webhookd=loud")
        .env("WEBHOOKD_SECRET_KEY", secret_key())
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    let output = tokio::time::timeout(COMMAND_LIMIT, command.output())
        .await
        .expect("script finishes")
        .expect("run script");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(text.contains("RUST_LOG=\"webhookd=loud\""), "{text:?}");
    assert!(text.contains("--lease (1s) must exceed"), "{text:?}");
    text
}

#[tokio::test]
async fn a_terminal_gets_colours_unless_no_color_is_set() {
    if !require_script() {
        return;
    }
    assert!(on_a_terminal(None).await.contains("\x1b["));
    // no-color.org: an empty NO_COLOR does not count.
    assert!(on_a_terminal(Some("")).await.contains("\x1b["));
    let plain = on_a_terminal(Some("1")).await;
    assert!(!plain.contains('\x1b'), "{plain:?}");
}

#[tokio::test]
async fn with_json_logs_even_the_exit_error_is_a_json_line() {
    let outcome = crate::harness::process::Webhookd::new(
        "postgres://unused@127.0.0.1/unused",
        &["--log-format", "json", "run", "--lease", "1s"],
    )
    .key(&secret_key())
    .env("RUST_LOG", "webhookd=loud")
    .output()
    .await;
    assert_eq!(outcome.code, Some(2), "{}", outcome.stderr);
    let lines: Vec<String> = outcome.stderr.lines().map(str::to_string).collect();
    let events = parse_json_lines(&lines);
    assert_eq!(events.len(), 2, "{}", outcome.stderr);
    assert_eq!(events[0]["level"], "WARN");
    assert!(events[0]["message"].as_str().unwrap().contains("RUST_LOG"));
    let exit = &events[1];
    assert_eq!(exit["level"], "ERROR");
    assert_eq!(exit["target"], "webhookd");
    assert_eq!(exit["exit_code"], 2);
    assert!(
        exit["message"]
            .as_str()
            .unwrap()
            .starts_with("--lease (1s) must exceed"),
        "{exit:?}"
    );
}
