//! Batch emit (`outbox.emit_many`, [`webhookd::emit_many`]; docs/CONTRACT.md
//! §5): delivery with ids in array order, all or nothing with the failing
//! element's index in emit's message, every malformed input refused with
//! nothing written, rollback, and one wake-up for the whole batch.

use std::collections::HashMap;
use std::future::poll_fn;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_postgres::error::SqlState;
use tokio_postgres::AsyncMessage;
use uuid::Uuid;
use webhookd::EventType;

use crate::harness::{
    http_request, sample, test_args, wait_until, DaemonHandle, Receiver, TestApp, TestDb,
};

const WAIT: Duration = Duration::from_secs(20);

/// The statement a producer sends.
const EMIT_MANY: &str = "SELECT * FROM outbox.emit_many($1, $2::jsonb)";

/// Events of several types, each with its sample data.
fn mixed_batch() -> Vec<(EventType, Value)> {
    [
        EventType::PostCreated,
        EventType::CommentCreated,
        EventType::VoteCreated,
        EventType::PostStatusChanged,
        EventType::PostDeleted,
    ]
    .into_iter()
    .map(|event| (event, sample(event)))
    .collect()
}

/// `{"event": …, "data": …}` of each element, as `outbox.emit_many` takes them.
fn as_json(batch: &[(EventType, Value)]) -> Value {
    batch
        .iter()
        .map(|(event, data)| json!({"event": event.as_str(), "data": data}))
        .collect()
}

/// Asserts that `outbox.emit_many(org, events)` fails with SQLSTATE 22023 and
/// a message containing `expected`, and that nothing was written.
async fn assert_refused(db: &TestDb, org: Option<Uuid>, events: Option<&Value>, expected: &str) {
    let client = db.client().await;
    let err = client
        .query(EMIT_MANY, &[&org, &events])
        .await
        .expect_err("an invalid batch must fail");
    let db_error = err
        .as_db_error()
        .unwrap_or_else(|| panic!("failed in the database, not in the driver: {err}"));
    assert_eq!(
        db_error.code(),
        &SqlState::INVALID_PARAMETER_VALUE,
        "SQLSTATE for {events:?}: {}",
        db_error.message()
    );
    assert!(
        db_error.message().contains(expected),
        "{events:?}: message {:?} should contain {expected:?}",
        db_error.message()
    );
    assert_eq!(
        db.count("SELECT count(*) FROM outbox.events").await,
        0,
        "a refused batch writes nothing"
    );
}

/// A test database with one webhook of a new organization, its receiver, and
/// a daemon delivering to it.
async fn delivering() -> (TestApp, Receiver, Uuid, DaemonHandle) {
    let app = TestApp::new().await;
    let receiver = Receiver::with_status(200).await;
    let org = Uuid::new_v4();
    app.create_webhook(org, &receiver.url("/hook")).await;
    let daemon = app.spawn_daemon(app.config(&test_args()));
    (app, receiver, org, daemon)
}

#[tokio::test]
async fn events_of_several_types_are_delivered_and_ids_follow_the_array() {
    let (app, receiver, org, daemon) = delivering().await;

    let batch = mixed_batch();
    let mut client = app.db.client().await;
    let tx = client.transaction().await.unwrap();
    let ids = webhookd::emit_many(&tx, org, &batch).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ids.len(), batch.len());

    receiver.wait_for(batch.len(), WAIT).await;
    app.wait_for_deliveries("status = 'delivered'", batch.len() as i64)
        .await;
    daemon.stop().await.unwrap();

    // Stored in array order: the fan-out order (seq) is the array's.
    let stored: Vec<(Uuid, String)> = client
        .query("SELECT id, event FROM outbox.events ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let expected: Vec<(Uuid, String)> = ids
        .iter()
        .zip(&batch)
        .map(|(id, (event, _))| (*id, event.as_str().to_string()))
        .collect();
    assert_eq!(stored, expected);

    // Each delivery carries the element whose index its event id has.
    let event_of: HashMap<String, Uuid> = client
        .query("SELECT id::text, event_id FROM outbox.deliveries", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let requests = receiver.requests();
    assert_eq!(requests.len(), batch.len(), "each event delivered once");
    for request in requests {
        let event_id = event_of[&request.delivery_id()];
        let index = ids.iter().position(|id| *id == event_id).unwrap();
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["event"], batch[index].0.as_str(), "events[{index}]");
        assert_eq!(body["data"], batch[index].1, "events[{index}]");
        assert_eq!(body["organization_id"], org.to_string());
    }
}

#[tokio::test]
async fn one_bad_element_refuses_the_batch_naming_its_index() {
    let db = TestDb::new().await;
    let org = Uuid::new_v4();
    let mut batch = mixed_batch();
    batch.insert(3, (EventType::PostCreated, json!({"id": "p1"})));
    let expected = "events[3]: post.created: data.title is required";

    let client = db.client().await;
    match webhookd::emit_many(&client, org, &batch).await {
        Err(err) if err.kind() == webhookd::ErrorKind::Input => {
            assert!(err.to_string().contains(expected), "{err}")
        }
        other => panic!("expected an input error with {expected:?}, got {other:?}"),
    }
    assert_refused(&db, Some(org), Some(&as_json(&batch)), expected).await;
}

#[tokio::test]
async fn malformed_batches_are_refused_naming_the_element() {
    let db = TestDb::new().await;
    let org = Some(Uuid::new_v4());
    let ok = json!({"event": "post.deleted", "data": {"id": "p1"}});
    let not_an_array = r#"events must be a JSON array of {"event": …, "data": …}, got"#;
    let cases = [
        (ok.clone(), format!("{not_an_array} object")),
        (json!("[]"), format!("{not_an_array} string")),
        (Value::Null, format!("{not_an_array} null")),
        (
            json!([ok, 5]),
            r#"events[1]: an element must be a JSON object {"event": …, "data": …}, got number"#
                .to_string(),
        ),
        (json!([ok, ok, null]), "events[2]: an element must be a JSON object".to_string()),
        (
            json!([ok, {"data": {"id": "p1"}}]),
            r#"events[1]: "event" is required"#.to_string(),
        ),
        (
            json!([{"event": "post.deleted"}]),
            r#"events[0]: "data" is required"#.to_string(),
        ),
        (
            json!([ok, {"event": "post.deleted", "data": {"id": "p1"}, "organization_id": "x"}]),
            r#"events[1]: unexpected key "organization_id": an element has only "event" and "data""#
                .to_string(),
        ),
        (
            json!([{"event": 7, "data": {"id": "p1"}}]),
            r#"events[0]: "event" must be a string, got number"#.to_string(),
        ),
        (
            json!([ok, {"event": "post.deleted", "data": ["p1"]}]),
            "events[1]: post.deleted: data must be a JSON object, got array".to_string(),
        ),
        (
            json!([ok, {"event": "post.deleted", "data": "p1"}]),
            "events[1]: post.deleted: data must be a JSON object, got string".to_string(),
        ),
        (
            json!([ok, {"event": "post.deleted", "data": null}]),
            "events[1]: post.deleted: data must be a JSON object, got null".to_string(),
        ),
        (
            json!([ok, ok, {"event": "post.made", "data": {"id": "p1"}}]),
            r#"events[2]: unknown event type "post.made": expected one of"#.to_string(),
        ),
    ];
    for (events, expected) in &cases {
        assert_refused(&db, org, Some(events), expected).await;
    }
    // A SQL NULL array, and a NULL organization as for emit.
    assert_refused(&db, org, None, "events must be a JSON array").await;
    assert_refused(&db, None, Some(&json!([ok])), "organization_id is required").await;
    assert_refused(&db, None, Some(&json!([])), "organization_id is required").await;
}

#[tokio::test]
async fn an_empty_batch_returns_no_ids_and_writes_nothing() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let org = Uuid::new_v4();
    let rows = client.query(EMIT_MANY, &[&org, &json!([])]).await.unwrap();
    assert!(rows.is_empty());
    let ids = webhookd::emit_many(&client, org, &[]).await.unwrap();
    assert!(ids.is_empty());
    assert_eq!(db.count("SELECT count(*) FROM outbox.events").await, 0);
}

#[tokio::test]
async fn the_detailed_check_passes_an_element_the_validator_accepts() {
    // It runs for every element the fast check refuses, and that check may
    // refuse what the validator accepts: such an element must not fail the batch.
    let db = TestDb::new().await;
    let client = db.client().await;
    for event in EventType::ALL {
        let element = json!({"event": event.as_str(), "data": sample(event)});
        client
            .query("SELECT outbox.emit_many_check(4, $1::jsonb)", &[&element])
            .await
            .unwrap_or_else(|err| panic!("{element}: {err}"));
    }
}

#[tokio::test]
async fn a_rolled_back_batch_is_never_delivered() {
    let (app, receiver, org, daemon) = delivering().await;

    let mut client = app.db.client().await;
    let tx = client.transaction().await.unwrap();
    webhookd::emit_many(&tx, org, &mixed_batch()).await.unwrap();
    tx.rollback().await.unwrap();
    // An event committed after it: once it is delivered, the daemon has
    // looked past where the batch would be.
    let marker = json!({"id": "after-the-rollback"});
    app.emit(org, "post.deleted", marker.clone()).await;
    app.wait_for_deliveries("status = 'delivered'", 1).await;
    daemon.stop().await.unwrap();

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "only the committed event is delivered");
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["data"], marker);
    assert_eq!(app.db.count("SELECT count(*) FROM outbox.events").await, 1);
}

/// The wake-up notifications a committed batch sends, counted on a LISTEN
/// connection up to a marker notification sent by a later transaction
/// (notifications arrive in commit order, so nothing can come after it).
async fn wakeups_sent_by(db: &TestDb, org: Uuid, batch: &[(EventType, Value)]) -> usize {
    let (listener, mut connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (sender, mut payloads) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            if let Ok(AsyncMessage::Notification(note)) = message {
                let _ = sender.send(note.payload().to_string());
            }
        }
    });
    listener
        .batch_execute("LISTEN outbox_wakeup")
        .await
        .unwrap();

    let mut producer = db.client().await;
    let tx = producer.transaction().await.unwrap();
    webhookd::emit_many(&tx, org, batch).await.unwrap();
    tx.commit().await.unwrap();
    producer
        .batch_execute("NOTIFY outbox_wakeup, 'end of test'")
        .await
        .unwrap();

    let mut wakeups = 0;
    loop {
        let payload = tokio::time::timeout(WAIT, payloads.recv())
            .await
            .expect("the marker notification arrives")
            .expect("the listener stays connected");
        if payload == "end of test" {
            break;
        }
        wakeups += 1;
    }
    drop(listener);
    driver.abort();
    wakeups
}

#[tokio::test]
async fn a_batch_sends_one_wakeup_and_an_idle_daemon_delivers_it_at_once() {
    let app = TestApp::new().await;
    let org = Uuid::new_v4();
    let batch: Vec<(EventType, Value)> = (0..10)
        .map(|i| {
            (
                EventType::VoteCreated,
                json!({"id": format!("v{i}"), "post_id": "p1"}),
            )
        })
        .collect();
    // Another organization's, without webhooks: nothing for the daemon to send.
    assert_eq!(wakeups_sent_by(&app.db, Uuid::new_v4(), &batch).await, 1);

    let receiver = Receiver::with_status(200).await;
    app.create_webhook(org, &receiver.url("/hook")).await;
    // The fallback poll is far away: only the wake-up can deliver in time.
    let args = webhookd::config::RunArgs {
        poll_interval: Duration::from_secs(120),
        ..test_args()
    };
    let (daemon, admin) = app.spawn_daemon_with_admin(args, None).await;
    wait_until("the daemon's LISTEN is active", WAIT, || async {
        http_request(admin, "GET", "/readyz", "", "")
            .await
            .contains(r#""listen":"active""#)
    })
    .await;

    let mut client = app.db.client().await;
    let tx = client.transaction().await.unwrap();
    let ids = webhookd::emit_many(&tx, org, &batch).await.unwrap();
    tx.commit().await.unwrap();
    receiver.wait_for(batch.len(), WAIT).await;
    app.wait_for_deliveries("status = 'delivered'", batch.len() as i64)
        .await;
    daemon.stop().await.unwrap();
    assert_eq!(ids.len(), batch.len());
}
