//! The real binary: exit codes, one-line errors, secrets never in logs or tables.
//!
//! Every test runs `webhookd` as a child process with a clean environment (no
//! inherited `WEBHOOKD_*` or `RUST_LOG`), `DATABASE_URL` pointing at its own
//! database, and a deadline on every run. docs/CONTRACT.md §6: exit 0 on success, 2 on bad
//! usage, configuration or input with one line on stderr, 1 on other failures.

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::harness::process::{create_args, Webhookd};
use crate::harness::{secret_key, TestApp, TestDb};

/// Longest a delivery may take to be recorded.
mod database;
mod secrets;

const DELIVERY_LIMIT: Duration = Duration::from_secs(20);
/// A URL that passes validation with `--allow-private-targets` and is never contacted.
const UNUSED_TARGET: &str = "http://127.0.0.1:9/x";
/// Unreachable (nothing listens on port 1), with a password that must never be shown.
const UNREACHABLE_DATABASE: &str = "postgres://postgres:hunter2@127.0.0.1:1/postgres";

/// `webhooks create` with private targets allowed; returns the printed object.
async fn create_webhook(app: &TestApp, org: Uuid, url: &str, label: &str) -> Value {
    Webhookd::new(
        &app.db.url,
        &[create_args(&org.to_string(), url), vec!["--label", label]].concat(),
    )
    .key(&app.key)
    .output()
    .await
    .json()
}

/// `webhooks list --org ORG`.
async fn list_webhooks(db: &TestDb, org: Uuid) -> Vec<Value> {
    match Webhookd::new(&db.url, &["webhooks", "list", "--org", &org.to_string()])
        .output()
        .await
        .json()
    {
        Value::Array(webhooks) => webhooks,
        other => panic!("webhooks list should print an array, printed {other}"),
    }
}

fn field<'a>(object: &'a Value, name: &str) -> &'a str {
    object[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} should be a string in {object}"))
}

async fn webhook_rows(db: &TestDb) -> i64 {
    db.count("SELECT count(*) FROM outbox.webhooks").await
}

#[tokio::test]
async fn webhooks_create_prints_one_object_with_the_secret_shown_this_once() {
    let app = TestApp::new().await;
    let org = Uuid::new_v4();
    let created = create_webhook(&app, org, UNUSED_TARGET, "L").await;

    let object = created.as_object().expect("one JSON object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "id",
            "label",
            "organization_id",
            "secret",
            "signature_scheme",
            "status",
            "url"
        ],
        "{created}"
    );
    Uuid::parse_str(field(&created, "id")).expect("id is a UUID");
    assert_eq!(field(&created, "organization_id"), org.to_string());
    assert_eq!(field(&created, "url"), UNUSED_TARGET);
    assert_eq!(field(&created, "label"), "L");
    assert_eq!(field(&created, "status"), "active");
    assert_eq!(field(&created, "signature_scheme"), "productbridge");
    let rfc3339_millis =
        regex_lite::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$").unwrap();
    assert!(
        rfc3339_millis.is_match(field(&created, "created_at")),
        "{created}"
    );

    let secret = field(&created, "secret");
    let random = secret
        .strip_prefix("whsec_")
        .expect("secret starts with whsec_");
    assert_eq!(random.len(), 43, "43 characters after the prefix: {secret}");
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(random)
        .expect("base64url");
    assert_eq!(bytes.len(), 32, "32 random bytes");
    assert_eq!(webhook_rows(&app.db).await, 1);

    let listed = list_webhooks(&app.db, org).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let webhook = &listed[0];
    assert!(
        webhook.get("secret").is_none(),
        "list never shows the secret: {webhook}"
    );
    assert!(!webhook.to_string().contains(random), "{webhook}");
    for name in [
        "id",
        "organization_id",
        "url",
        "label",
        "status",
        "created_at",
        "signature_scheme",
    ] {
        assert_eq!(webhook[name], created[name], "{name} as on create");
    }
    for name in ["last_success_at", "last_failure_at", "last_failure_reason"] {
        assert_eq!(
            webhook.get(name),
            Some(&Value::Null),
            "{name} of a new webhook: {webhook}"
        );
    }
    for name in ["pending_deliveries", "failed_deliveries"] {
        assert_eq!(
            webhook.get(name),
            Some(&Value::from(0)),
            "{name} of a new webhook: {webhook}"
        );
    }
    assert!(
        list_webhooks(&app.db, Uuid::new_v4()).await.is_empty(),
        "another organization sees none"
    );
}

#[tokio::test]
async fn revoking_a_webhook_twice_succeeds_both_times_and_list_shows_it_revoked() {
    let app = TestApp::new().await;
    let org = Uuid::new_v4();
    let created = create_webhook(&app, org, UNUSED_TARGET, "to revoke").await;
    let id = field(&created, "id");
    for _ in 0..2 {
        Webhookd::new(&app.db.url, &["webhooks", "revoke", id])
            .output()
            .await
            .succeeded();
    }
    let listed = list_webhooks(&app.db, org).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(field(&listed[0], "id"), id);
    assert_eq!(field(&listed[0], "status"), "revoked");
}

#[tokio::test]
async fn revoking_an_unknown_webhook_exits_2() {
    let db = TestDb::new().await;
    let unknown = Uuid::new_v4().to_string();
    let outcome = Webhookd::new(&db.url, &["webhooks", "revoke", &unknown])
        .output()
        .await;
    assert!(
        outcome.failed_with(2).contains(&unknown),
        "{}",
        outcome.stderr
    );
}

#[tokio::test]
async fn webhooks_create_rejects_bad_urls_with_exit_2_and_writes_nothing() {
    let app = TestApp::new().await;
    let org = Uuid::new_v4().to_string();
    let cases = [
        ("http://example.com/hook", "https"),
        ("https://10.0.0.7/x", "10.0.0.7"),
        ("https://127.0.0.1/x", "127.0.0.1"),
        (
            "https://169.254.169.254/latest/meta-data",
            "169.254.169.254",
        ),
        ("https://[::1]/x", "::1"),
        ("https://localhost/x", "localhost"),
        ("not a url", "URL"),
        ("https:///no-host", "URL"),
        ("ftp://example.com/x", "ftp"),
        ("//example.com/x", "URL"),
        ("https://user:pw@example.com/x", "credentials"),
    ];
    for (url, mentions) in cases {
        let outcome = Webhookd::new(
            &app.db.url,
            &["webhooks", "create", "--org", &org, "--url", url],
        )
        .key(&app.key)
        .output()
        .await;
        let line = outcome.failed_with(2);
        assert!(
            line.contains(mentions),
            "rejecting {url:?} should mention {mentions:?}: {line}"
        );
        assert_eq!(webhook_rows(&app.db).await, 0, "{url:?} wrote a webhook");
    }
}

#[tokio::test]
async fn webhooks_create_rejects_a_500_character_label_with_exit_2() {
    let app = TestApp::new().await;
    let label = "l".repeat(500);
    let org = Uuid::new_v4().to_string();
    let outcome = Webhookd::new(
        &app.db.url,
        &[create_args(&org, UNUSED_TARGET), vec!["--label", &label]].concat(),
    )
    .key(&app.key)
    .output()
    .await;
    assert!(
        outcome.failed_with(2).contains("label"),
        "{}",
        outcome.stderr
    );
    assert_eq!(webhook_rows(&app.db).await, 0);
}

#[tokio::test]
async fn webhooks_create_without_a_usable_secret_key_exits_2_naming_webhookd_secret_key() {
    let db = TestDb::new().await;
    let org = Uuid::new_v4().to_string();
    let args = create_args(&org, UNUSED_TARGET);
    use base64::Engine as _;
    let sixteen_bytes = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
    for key in [
        None,
        Some(""),
        Some("not-base64!"),
        Some(sixteen_bytes.as_str()),
    ] {
        let mut webhookd = Webhookd::new(&db.url, &args);
        if let Some(key) = key {
            webhookd = webhookd.key(key);
        }
        let outcome = webhookd.output().await;
        let line = outcome.failed_with(2);
        assert!(line.contains("WEBHOOKD_SECRET_KEY"), "key {key:?}: {line}");
        assert_eq!(webhook_rows(&db).await, 0);
    }
}

#[tokio::test]
async fn webhookd_allow_private_targets_1_allows_private_targets_for_every_command() {
    let app = TestApp::new().await;
    let org = Uuid::new_v4().to_string();
    for value in ["1", "true"] {
        let created = Webhookd::new(
            &app.db.url,
            &["webhooks", "create", "--org", &org, "--url", UNUSED_TARGET],
        )
        .key(&app.key)
        .env("WEBHOOKD_ALLOW_PRIVATE_TARGETS", value)
        .output()
        .await
        .json();
        assert_eq!(field(&created, "url"), UNUSED_TARGET);
        // `run` parses it too: the only complaint left is the flag that is wrong.
        let outcome = Webhookd::new(
            &app.db.url,
            &["run", "--lease", "10s", "--admin-addr", "127.0.0.1:0"],
        )
        .key(&app.key)
        .env("WEBHOOKD_ALLOW_PRIVATE_TARGETS", value)
        .output()
        .await;
        assert!(
            outcome.failed_with(2).contains("--lease"),
            "{}",
            outcome.stderr
        );
    }
}

#[tokio::test]
async fn run_rejects_bad_flags_with_exit_2_and_one_line() {
    let db = TestDb::new().await;
    let key = secret_key();
    let cases: [(&[&str], &str); 6] = [
        (&["--lease", "10s"], "--lease"),
        (&["--lease", "40s"], "--lease"),
        (&["--retry-base-delay", "-5s"], ""),
        (&["--retry-base-delay=-5s"], "negative"),
        (&["--connect-timeout", "abc"], "--connect-timeout"),
        (&["--max-retries", "lots"], "--max-retries"),
    ];
    for (flags, mentions) in cases {
        let mut args = vec!["run", "--admin-addr", "127.0.0.1:0"];
        args.extend_from_slice(flags);
        let outcome = Webhookd::new(&db.url, &args).key(&key).output().await;
        let line = outcome.failed_with(2);
        assert!(
            line.contains(mentions),
            "`run {}` should mention {mentions:?}: {line}",
            flags.join(" ")
        );
    }
}

#[tokio::test]
async fn run_without_a_secret_key_exits_2_naming_webhookd_secret_key() {
    let db = TestDb::new().await;
    let outcome = Webhookd::new(&db.url, &["run", "--admin-addr", "127.0.0.1:0"])
        .output()
        .await;
    assert!(
        outcome.failed_with(2).contains("WEBHOOKD_SECRET_KEY"),
        "{}",
        outcome.stderr
    );
}

#[tokio::test]
async fn emit_rejects_invalid_data_with_the_databases_message_and_exit_2() {
    let db = TestDb::new().await;
    let org = Uuid::new_v4().to_string();
    let cases = [
        (
            "post.deleted",
            r#"{"id": 1}"#,
            "post.deleted: data.id must be a string",
        ),
        (
            "post.tag_added",
            r#"{"id": "p1"}"#,
            "post.tag_added: data.tag_id is required",
        ),
        (
            "post.updated",
            r#"{"id": "p1"}"#,
            "unknown event type \"post.updated\"",
        ),
        (
            "post.deleted",
            r#"["p1"]"#,
            "post.deleted: data must be a JSON object",
        ),
        ("post.deleted", "{id: p1}", "--data"),
        ("post.deleted", "", "--data"),
    ];
    for (event, data, mentions) in cases {
        let outcome = Webhookd::new(
            &db.url,
            &["emit", "--org", &org, "--event", event, "--data", data],
        )
        .output()
        .await;
        let line = outcome.failed_with(2);
        assert!(
            line.contains(mentions),
            "emit {event} {data:?} should mention {mentions:?}: {line}"
        );
        assert_eq!(db.count("SELECT count(*) FROM outbox.events").await, 0);
    }
    let outcome = Webhookd::new(
        &db.url,
        &[
            "emit",
            "--org",
            "not-a-uuid",
            "--event",
            "post.deleted",
            "--data",
            r#"{"id": "p1"}"#,
        ],
    )
    .output()
    .await;
    assert!(
        outcome.failed_with(2).contains("--org"),
        "{}",
        outcome.stderr
    );
    assert_eq!(db.count("SELECT count(*) FROM outbox.events").await, 0);
}

#[tokio::test]
async fn a_valid_emit_prints_the_event_id_and_exits_0() {
    let db = TestDb::new().await;
    let org = Uuid::new_v4();
    let data = r#"{"id": "553c3ef8b8cdcd1501ba1238", "title": "Add dark mode", "board_id": ""}"#;
    let outcome = Webhookd::new(
        &db.url,
        &[
            "emit",
            "--org",
            &org.to_string(),
            "--event",
            "post.created",
            "--data",
            data,
        ],
    )
    .output()
    .await;
    let stdout = outcome.succeeded();
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    let id = Uuid::parse_str(stdout.trim()).expect("the event id");
    let row = db
        .client()
        .await
        .query_one(
            "SELECT organization_id, event, data FROM outbox.events WHERE id = $1",
            &[&id],
        )
        .await
        .expect("the printed id is the stored event");
    assert_eq!(row.get::<_, Uuid>("organization_id"), org);
    assert_eq!(row.get::<_, String>("event"), "post.created");
    assert_eq!(
        row.get::<_, Value>("data"),
        serde_json::from_str::<Value>(data).unwrap()
    );
}

#[tokio::test]
async fn redeliver_of_an_unknown_delivery_exits_2() {
    let db = TestDb::new().await;
    let unknown = Uuid::new_v4().to_string();
    let outcome = Webhookd::new(&db.url, &["redeliver", &unknown])
        .output()
        .await;
    assert!(
        outcome.failed_with(2).contains(&unknown),
        "{}",
        outcome.stderr
    );
    let outcome = Webhookd::new(&db.url, &["redeliver", "not-a-uuid"])
        .output()
        .await;
    outcome.failed_with(2);
}

#[tokio::test]
async fn help_for_every_subcommand_exits_0() {
    let commands: [&[&str]; 11] = [
        &["--help"],
        &["migrate", "--help"],
        &["run", "--help"],
        &["webhooks", "--help"],
        &["webhooks", "create", "--help"],
        &["webhooks", "list", "--help"],
        &["webhooks", "revoke", "--help"],
        &["emit", "--help"],
        &["redeliver", "--help"],
        &["demo", "--help"],
        &["help", "run"],
    ];
    for args in commands {
        let outcome = Webhookd::new(UNREACHABLE_DATABASE, args).output().await;
        let help = outcome.succeeded();
        assert!(
            help.contains("Usage:"),
            "`webhookd {}` printed:\n{help}",
            args.join(" ")
        );
        assert!(
            !help.contains("hunter2"),
            "help shows DATABASE_URL's password:\n{help}"
        );
    }
    let run_help = Webhookd::new(UNREACHABLE_DATABASE, &["run", "--help"])
        .output()
        .await;
    for flag in [
        "--retry-base-delay",
        "--max-retries",
        "--connect-timeout",
        "--response-timeout",
        "--allow-private-targets",
        "--lease",
        "--admin-addr",
    ] {
        assert!(
            run_help.succeeded().contains(flag),
            "run --help lists {flag}"
        );
    }
}

#[tokio::test]
async fn an_unknown_subcommand_or_flag_exits_2_in_one_line() {
    let db = TestDb::new().await;
    for args in [
        &["frobnicate"][..],
        &["migrate", "--frobnicate"],
        &["webhooks", "list"],
        &["webhooks"],
        &[],
    ] {
        Webhookd::new(&db.url, args).output().await.failed_with(2);
    }
}

#[tokio::test]
async fn a_missing_required_argument_is_named_in_the_one_line() {
    let db = TestDb::new().await;
    let outcome = Webhookd::new(&db.url, &["webhooks", "list"]).output().await;
    let line = outcome.failed_with(2);
    assert!(line.contains("--org"), "which argument is missing? {line}");
    let outcome = Webhookd::new(&db.url, &["emit", "--org", &Uuid::new_v4().to_string()])
        .output()
        .await;
    let line = outcome.failed_with(2);
    assert!(
        line.contains("--event") && line.contains("--data"),
        "which arguments are missing? {line}"
    );
}

#[tokio::test]
async fn a_missing_subcommand_exits_2_in_one_line_whether_or_not_database_url_is_set() {
    for args in [&[][..], &["webhooks"]] {
        let outcome = Webhookd::new("unused", args)
            .unset("DATABASE_URL")
            .output()
            .await;
        outcome.failed_with(2);
    }
}
