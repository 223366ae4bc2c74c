//! Commands against a database that is unreachable, malformed in its URL,
//! or without the schema: exit codes, one plain line, no password shown.

use uuid::Uuid;

use super::*;
use crate::harness::process::{create_args, Webhookd};
use crate::harness::{secret_key, TestDb};

/// Every command that works in the outbox schema, with otherwise valid arguments.
fn commands_that_need_the_schema(org: &str) -> Vec<Vec<String>> {
    let commands: [&[&str]; 5] = [
        &[
            "emit",
            "--org",
            org,
            "--event",
            "post.deleted",
            "--data",
            r#"{"id": "p1"}"#,
        ],
        &["webhooks", "list", "--org", org],
        &create_args(org, UNUSED_TARGET),
        &["redeliver", org],
        &["run", "--admin-addr", "127.0.0.1:0"],
    ];
    commands
        .iter()
        .map(|args| args.iter().map(|arg| arg.to_string()).collect())
        .collect()
}

#[tokio::test]
async fn an_unreachable_database_exits_1_with_one_plain_line_and_no_password() {
    let key = secret_key();
    let org = Uuid::new_v4().to_string();
    let mut commands = commands_that_need_the_schema(&org);
    commands.push(vec!["migrate".to_string()]);
    commands.push(vec!["webhooks".into(), "revoke".into(), org.clone()]);
    for command in &commands {
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        let outcome = Webhookd::new(UNREACHABLE_DATABASE, &args)
            .key(&key)
            .output()
            .await;
        let line = outcome.failed_with(1);
        assert!(!line.contains("hunter2"), "the password is shown: {line}");
        assert!(
            line.contains("database"),
            "says plainly what failed: {line}"
        );
    }
}

/// `demo --database-url` is the server the demo uses, whatever
/// `DATABASE_URL` says: here the flag names one that does not answer while
/// the environment names one that does.
#[tokio::test]
async fn demo_uses_the_database_url_flag_over_the_environment() {
    let outcome = Webhookd::new(
        &crate::harness::server_url(),
        &["demo", "--database-url", UNREACHABLE_DATABASE],
    )
    .output()
    .await;
    let line = outcome.failed_with(1);
    assert!(
        line.contains("cannot connect to the database") && line.contains("127.0.0.1:1/postgres"),
        "the demo tried the flag's server: {line}"
    );
    assert!(
        line.contains(
            "starts its own throwaway server only when neither --database-url nor DATABASE_URL is set"
        ),
        "says how to get the demo's own server instead: {line}"
    );
    assert!(!line.contains("hunter2"), "the password is shown: {line}");
}

#[tokio::test]
async fn a_password_given_as_a_parameter_is_not_shown_either() {
    let org = Uuid::new_v4().to_string();
    for url in [
        "postgres://postgres@127.0.0.1:1/postgres?password=hunter2",
        "host=127.0.0.1 port=1 user=postgres password=hunter2 dbname=postgres",
    ] {
        let outcome = Webhookd::new(url, &["webhooks", "list", "--org", &org])
            .output()
            .await;
        let line = outcome.failed_with(1);
        assert!(!line.contains("hunter2"), "the password is shown: {line}");
    }
}

#[tokio::test]
async fn a_malformed_database_url_exits_2() {
    let outcome = Webhookd::new(
        "postgres://postgres:hunter2@127.0.0.1:1/postgres?x",
        &["migrate"],
    )
    .output()
    .await;
    let line = outcome.failed_with(2);
    assert!(line.contains("DATABASE_URL"), "{line}");
    assert!(!line.contains("hunter2"), "the password is shown: {line}");
}

#[tokio::test]
async fn a_database_without_the_schema_exits_2_and_says_to_run_migrate() {
    let db = TestDb::empty().await;
    let key = secret_key();
    let org = Uuid::new_v4().to_string();
    let commands = commands_that_need_the_schema(&org);
    for command in &commands {
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        let outcome = Webhookd::new(&db.url, &args).key(&key).output().await;
        let line = outcome.failed_with(2);
        assert!(
            line.contains("webhookd migrate"),
            "`{}`: {line}",
            args.join(" ")
        );
    }

    Webhookd::new(&db.url, &["migrate"])
        .output()
        .await
        .succeeded();
    Webhookd::new(&db.url, &["migrate"])
        .output()
        .await
        .succeeded();
    let max: i32 = db
        .client()
        .await
        .query_one("SELECT max(version) FROM outbox.schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(max, webhookd::db::SCHEMA_VERSION);
    let emit: Vec<&str> = commands[0].iter().map(String::as_str).collect();
    Webhookd::new(&db.url, &emit).output().await.succeeded();
}
