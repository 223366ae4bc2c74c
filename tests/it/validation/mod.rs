//! Invalid events: each fails with a message naming the problem and writes nothing.
//!
//! Every rule is checked through both doors a producer may use (docs/CONTRACT.md §2):
//! `outbox.emit` as called by [`webhookd::db::webhooks::emit`], and a plain
//! `INSERT INTO outbox.events`. The first must come back as
//! an error of kind [`webhookd::ErrorKind::Input`], the second as SQLSTATE 22023
//! (invalid_parameter_value); both carry the database's message.

use serde_json::{json, Value};
use tokio_postgres::error::SqlState;
use uuid::Uuid;
use webhookd::EventType;

use crate::harness::{sample, TestDb};

mod table;

/// What a producer writes when it does not go through `outbox.emit`.
const PLAIN_INSERT: &str =
    "INSERT INTO outbox.events (organization_id, event, data) VALUES ($1, $2, $3::jsonb) RETURNING id";

/// The 256 KiB limit of docs/CONTRACT.md §2, in bytes.
const DATA_LIMIT: usize = 256 * 1024;

/// Asserts that `data` for `event` is refused through both doors with a
/// message containing `expected`, and that the outbox stays empty.
async fn assert_rejected(db: &TestDb, event: &str, data: Value, expected: &str) {
    let client = db.client().await;
    let org = Uuid::new_v4();

    match webhookd::db::webhooks::emit(&client, org, event, &data).await {
        Err(err) if err.kind() == webhookd::ErrorKind::Input => assert!(
            err.to_string().contains(expected),
            "emit of {event} {}: message {err:?} should contain {expected:?}",
            preview(&data)
        ),
        other => panic!(
            "emit of {event} {} should be an Input error containing {expected:?}, got {other:?}",
            preview(&data)
        ),
    }

    let err = client
        .query_one(PLAIN_INSERT, &[&org, &event, &data])
        .await
        .expect_err("a plain INSERT of an invalid event must fail");
    let db_error = err
        .as_db_error()
        .unwrap_or_else(|| panic!("the INSERT failed in the database, not in the driver: {err}"));
    assert_eq!(
        db_error.code(),
        &SqlState::INVALID_PARAMETER_VALUE,
        "SQLSTATE of {event} {}: {}",
        preview(&data),
        db_error.message()
    );
    assert!(
        db_error.message().contains(expected),
        "plain INSERT of {event} {}: message {:?} should contain {expected:?}",
        preview(&data),
        db_error.message()
    );

    assert_eq!(
        db.count("SELECT count(*) FROM outbox.events").await,
        0,
        "a rejected {event} must write nothing"
    );
}

/// Inserts `data` through both doors, asserts both succeed and that the data
/// read back is exactly what went in.
async fn assert_accepted_untouched(db: &TestDb, event: &str, data: Value) {
    let client = db.client().await;
    let org = Uuid::new_v4();
    let via_emit = webhookd::db::webhooks::emit(&client, org, event, &data)
        .await
        .unwrap_or_else(|err| panic!("emit of {event} {} must pass: {err}", preview(&data)));
    let via_insert: Uuid = client
        .query_one(PLAIN_INSERT, &[&org, &event, &data])
        .await
        .unwrap_or_else(|err| {
            panic!(
                "plain INSERT of {event} {} must pass: {err}",
                preview(&data)
            )
        })
        .get(0);
    for id in [via_emit, via_insert] {
        let row = client
            .query_one(
                "SELECT organization_id, event, data FROM outbox.events WHERE id = $1",
                &[&id],
            )
            .await
            .expect("the accepted event is stored");
        assert_eq!(row.get::<_, Uuid>("organization_id"), org);
        assert_eq!(row.get::<_, String>("event"), event);
        assert_eq!(
            row.get::<_, Value>("data"),
            data,
            "data passes through untouched"
        );
    }
}

/// The start of a JSON value, for assertion messages (some are 256 KiB long).
fn preview(data: &Value) -> String {
    let text = data.to_string();
    match text.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[tokio::test]
async fn an_unknown_event_type_is_rejected_by_name() {
    let db = TestDb::new().await;
    assert_rejected(
        &db,
        "post.updated",
        json!({"id": "p1", "title": "Add dark mode"}),
        "unknown event type \"post.updated\"",
    )
    .await;
    assert_rejected(&db, "", json!({"id": "p1"}), "unknown event type").await;
    assert_rejected(
        &db,
        "POST.CREATED",
        json!({"id": "p1", "title": "t"}),
        "unknown event type",
    )
    .await;
}

#[tokio::test]
async fn a_missing_required_field_is_named_with_its_event() {
    let db = TestDb::new().await;
    assert_rejected(
        &db,
        "post.tag_added",
        json!({"id": "p1", "tag_name": "UX"}),
        "post.tag_added: data.tag_id is required",
    )
    .await;
    assert_rejected(
        &db,
        "post.created",
        json!({"title": "Add dark mode"}),
        "post.created: data.id is required",
    )
    .await;
    assert_rejected(
        &db,
        "comment.created",
        json!({"id": "c1", "post_id": "p1"}),
        "comment.created: data.content is required",
    )
    .await;
    assert_rejected(
        &db,
        "post.status_changed",
        json!({"id": "p1", "status_group_code": "open"}),
        "post.status_changed: data.status_id is required",
    )
    .await;
}

#[tokio::test]
async fn a_required_field_that_is_null_counts_as_missing() {
    let db = TestDb::new().await;
    assert_rejected(
        &db,
        "vote.created",
        json!({"id": "v1", "post_id": null}),
        "vote.created: data.post_id is required",
    )
    .await;
}

#[tokio::test]
async fn a_required_field_of_the_wrong_type_is_named_with_its_event() {
    let db = TestDb::new().await;
    assert_rejected(
        &db,
        "comment.created",
        json!({"id": "c1", "post_id": "p1", "content": 5}),
        "comment.created: data.content must be a string",
    )
    .await;
    assert_rejected(
        &db,
        "post.deleted",
        json!({"id": 1}),
        "post.deleted: data.id must be a string",
    )
    .await;
    assert_rejected(
        &db,
        "vote.deleted",
        json!({"id": "v1", "post_id": {"id": "p1"}}),
        "vote.deleted: data.post_id must be a string",
    )
    .await;
    assert_rejected(
        &db,
        "post.created",
        json!({"id": "p1", "title": true}),
        "post.created: data.title must be a string",
    )
    .await;
}

#[tokio::test]
async fn an_optional_field_of_the_wrong_type_is_rejected() {
    let db = TestDb::new().await;
    assert_rejected(
        &db,
        "post.created",
        json!({"id": "p1", "title": "Add dark mode", "details": 1}),
        "post.created: data.details must be a string",
    )
    .await;
    assert_rejected(
        &db,
        "comment.created",
        json!({"id": "c1", "post_id": "p1", "content": "hi", "parent_id": ["c0"]}),
        "comment.created: data.parent_id must be a string",
    )
    .await;
    assert_rejected(
        &db,
        "vote.created",
        json!({"id": "v1", "post_id": "p1", "user_id": 42}),
        "vote.created: data.user_id must be a string",
    )
    .await;
}

#[tokio::test]
async fn data_that_is_not_an_object_is_rejected() {
    let db = TestDb::new().await;
    for data in [
        json!([]),
        json!([{"id": "p1", "title": "t"}]),
        json!("p1"),
        json!(7),
        Value::Null,
    ] {
        assert_rejected(
            &db,
            "post.created",
            data,
            "post.created: data must be a JSON object",
        )
        .await;
    }
}

#[tokio::test]
async fn sql_nulls_are_rejected_by_a_plain_insert_with_a_message() {
    let db = TestDb::new().await;
    assert_sql_nulls_rejected(&db).await;
}

/// A plain INSERT with a NULL organization, event or data fails with the
/// validator's message, and nothing is written.
async fn assert_sql_nulls_rejected(db: &TestDb) {
    let client = db.client().await;
    let data = json!({"id": "p1", "title": "t"});
    let org = Some(Uuid::new_v4());
    let event = Some("post.created");
    let data = Some(&data);
    let cases = [
        (org, event, None, "post.created: data must be a JSON object"),
        (org, None, data, "event type is required"),
        (None, event, data, "organization_id is required"),
    ];
    for (org, event, data, expected) in cases {
        let err = client
            .query_one(PLAIN_INSERT, &[&org, &event, &data])
            .await
            .expect_err("a NULL column must fail");
        let db_error = err.as_db_error().expect("a database error");
        assert_eq!(
            db_error.code(),
            &SqlState::INVALID_PARAMETER_VALUE,
            "{}",
            db_error.message()
        );
        assert!(
            db_error.message().contains(expected),
            "{}",
            db_error.message()
        );
    }
    assert_eq!(db.count("SELECT count(*) FROM outbox.events").await, 0);
}

/// The insert trigger takes a shorter path for a valid event while the
/// wake-up switch is off (migration 10); fresh databases have it on. Both
/// paths refuse the same events with the same messages, and both stamp
/// `occurred_at` and clear the daemon's column.
#[tokio::test]
async fn the_trigger_checks_and_stamps_alike_with_the_wakeup_switch_off_or_on() {
    let db = TestDb::new().await;
    let client = db.client().await;
    for switch in [0i64, 1] {
        client
            .execute("SELECT setval('outbox.wakeup_notify', $1)", &[&switch])
            .await
            .unwrap();
        assert_rejected(&db, "post.liked", json!({"id": "p1"}), "unknown event type").await;
        assert_rejected(
            &db,
            "vote.created",
            json!({"id": "v1"}),
            "vote.created: data.post_id is required",
        )
        .await;
        assert_rejected(
            &db,
            "vote.created",
            json!({"id": "", "post_id": "p1"}),
            "vote.created: data.id must not be empty",
        )
        .await;
        assert_rejected(
            &db,
            "post.created",
            json!([1]),
            "post.created: data must be a JSON object, got array",
        )
        .await;
        assert_sql_nulls_rejected(&db).await;

        let row = client
            .query_one(
                "INSERT INTO outbox.events (organization_id, event, data, occurred_at, fanned_out_at)
                 VALUES ($1, 'vote.created', '{\"id\": \"v1\", \"post_id\": \"p1\"}', '2001-01-01', now())
                 RETURNING occurred_at > now() - interval '1 hour' AS stamped, fanned_out_at IS NULL AS cleared",
                &[&Uuid::new_v4()],
            )
            .await
            .unwrap();
        assert!(
            row.get::<_, bool>("stamped"),
            "switch {switch}: occurred_at is the insert's time"
        );
        assert!(
            row.get::<_, bool>("cleared"),
            "switch {switch}: fanned_out_at is cleared"
        );
        client
            .execute("DELETE FROM outbox.events", &[])
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn data_larger_than_256_kib_serialised_is_rejected_naming_the_limit() {
    let db = TestDb::new().await;
    // One byte over the limit however it is serialised: the compact form
    // alone is DATA_LIMIT + 1 bytes.
    let overhead = json!({"id": "p1", "title": ""}).to_string().len();
    let too_big = json!({"id": "p1", "title": "x".repeat(DATA_LIMIT + 1 - overhead)});
    assert_eq!(too_big.to_string().len(), DATA_LIMIT + 1);
    assert_rejected(&db, "post.created", too_big, "256 KiB").await;

    // Many small fields, about 700 KiB in all: the limit is on the whole object.
    let mut wide = serde_json::Map::new();
    wide.insert("id".into(), json!("p1"));
    wide.insert("title".into(), json!("t"));
    for i in 0..30_000 {
        wide.insert(format!("extra_{i}"), json!("value"));
    }
    assert_rejected(&db, "post.created", Value::Object(wide), "256 KiB").await;
}

#[tokio::test]
async fn data_within_256_kib_is_accepted() {
    let db = TestDb::new().await;
    // Exactly at the limit in PostgreSQL's own serialisation, which is never
    // shorter than the compact one: not larger than 256 KiB either way.
    let client = db.client().await;
    let overhead: i32 = client
        .query_one(
            "SELECT octet_length($1::jsonb::text)",
            &[&json!({"id": "p1", "title": ""})],
        )
        .await
        .unwrap()
        .get(0);
    let at_limit = json!({"id": "p1", "title": "x".repeat(DATA_LIMIT - overhead as usize)});
    let serialised: i32 = client
        .query_one("SELECT octet_length($1::jsonb::text)", &[&at_limit])
        .await
        .unwrap()
        .get(0);
    assert_eq!(serialised as usize, DATA_LIMIT);
    assert_accepted_untouched(&db, "post.created", at_limit).await;
}

#[tokio::test]
async fn an_empty_id_is_rejected() {
    let db = TestDb::new().await;
    assert_rejected(
        &db,
        "post.created",
        json!({"id": "", "title": "Add dark mode"}),
        "post.created: data.id must not be empty",
    )
    .await;
    assert_rejected(
        &db,
        "comment.deleted",
        json!({"id": "c1", "post_id": ""}),
        "comment.deleted: data.post_id must not be empty",
    )
    .await;
    assert_rejected(
        &db,
        "post.tag_removed",
        json!({"id": "p1", "tag_id": ""}),
        "post.tag_removed: data.tag_id must not be empty",
    )
    .await;
}

#[tokio::test]
async fn a_status_group_code_outside_the_four_groups_is_rejected() {
    let db = TestDb::new().await;
    for code in ["done", "Open", "in_progress", ""] {
        assert_rejected(
            &db,
            "post.status_changed",
            json!({"id": "p1", "status_id": "s1", "status_group_code": code}),
            "post.status_changed: data.status_group_code must be one of open, in-progress, completed, closed",
        )
        .await;
    }
    assert_rejected(
        &db,
        "post.status_changed",
        json!({"id": "p1", "status_id": "s1", "status_group_code": "open",
               "previous_status_group_code": "archived"}),
        "post.status_changed: data.previous_status_group_code must be one of",
    )
    .await;
}

#[tokio::test]
async fn each_of_the_four_status_groups_is_accepted() {
    let db = TestDb::new().await;
    for code in ["open", "in-progress", "completed", "closed"] {
        assert_accepted_untouched(
            &db,
            "post.status_changed",
            json!({"id": "p1", "status_id": "s1", "status_group_code": code,
                   "previous_status_group_code": code}),
        )
        .await;
    }
}

#[tokio::test]
async fn changed_fields_that_is_not_an_array_of_strings_is_rejected() {
    let db = TestDb::new().await;
    for changed_fields in [
        json!("title"),
        json!(["title", 5]),
        json!([null]),
        json!({"title": true}),
        json!(3),
    ] {
        assert_rejected(
            &db,
            "post.edited",
            json!({"id": "p1", "title": "Add dark mode", "changed_fields": changed_fields}),
            "post.edited: data.changed_fields must be an array of strings",
        )
        .await;
    }
}

#[tokio::test]
async fn changed_fields_may_be_empty_or_list_strings() {
    let db = TestDb::new().await;
    for changed_fields in [json!([]), json!(["title", "details", "eta"])] {
        assert_accepted_untouched(
            &db,
            "post.edited",
            json!({"id": "p1", "title": "Add dark mode", "changed_fields": changed_fields}),
        )
        .await;
    }
}

#[tokio::test]
async fn every_event_types_sample_data_is_accepted_through_both_doors() {
    let db = TestDb::new().await;
    for event in EventType::ALL {
        assert_accepted_untouched(&db, event.as_str(), sample(event)).await;
    }
    assert_eq!(db.count("SELECT count(*) FROM outbox.events").await, 22);
}

#[tokio::test]
async fn extra_unknown_fields_pass_through_untouched() {
    let db = TestDb::new().await;
    let data = json!({
        "id": "553c3ef8b8cdcd1501ba1238",
        "title": "Add dark mode",
        "custom_fields": {"priority": "high", "score": 1.5, "nested": [1, "two", {"three": null}]},
        "author": {"id": "u1", "name": "Zoë 🚀"},
        "votes": 12,
        "archived": false,
        "nothing": null,
        "empty": {},
        "list": []
    });
    assert_accepted_untouched(&db, "post.created", data).await;
    // Ids are opaque strings: UUIDs, 24-hex ids and anything else non-empty.
    assert_accepted_untouched(
        &db,
        "vote.created",
        json!({"id": "6f1d2c3b-1a2b-4c3d-8e9f-0a1b2c3d4e5f", "post_id": "not a uuid at all", "weight": 2}),
    )
    .await;
}

#[tokio::test]
async fn an_empty_board_id_is_accepted_for_post_created() {
    let db = TestDb::new().await;
    assert_accepted_untouched(
        &db,
        "post.created",
        json!({"id": "p1", "title": "No board", "board_id": ""}),
    )
    .await;
}

#[tokio::test]
async fn optional_fields_may_be_null() {
    let db = TestDb::new().await;
    let cases = [
        (
            "post.created",
            json!({"id": "p1", "title": "t", "details": null, "board_id": null, "board_name": null}),
        ),
        (
            "post.edited",
            json!({"id": "p1", "title": "t", "details": null, "owner_id": null, "category_id": null,
                   "eta": null, "changed_fields": null}),
        ),
        (
            "post.deleted",
            json!({"id": "p1", "title": null, "board_id": null}),
        ),
        (
            "post.tag_added",
            json!({"id": "p1", "tag_id": "t1", "tag_name": null, "title": null}),
        ),
        (
            "post.status_changed",
            json!({"id": "p1", "status_id": "s1", "status_group_code": "closed", "status_name": null,
                   "previous_status_id": null, "previous_status_group_code": null, "title": null}),
        ),
        (
            "comment.created",
            json!({"id": "c1", "post_id": "p1", "content": "hi", "author_id": null, "parent_id": null,
                   "post_title": null}),
        ),
        (
            "comment.deleted",
            json!({"id": "c1", "post_id": "p1", "post_title": null}),
        ),
        (
            "vote.deleted",
            json!({"id": "v1", "post_id": "p1", "post_title": null, "board_id": null, "user_id": null}),
        ),
    ];
    for (event, data) in cases {
        assert_accepted_untouched(&db, event, data).await;
    }
}
