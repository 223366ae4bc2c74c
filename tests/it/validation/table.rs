//! The outbox table's own guarantees beside validation: each insert gets
//! the clock time, a rolled-back emit leaves nothing, `migrate` is safe to
//! run concurrently, the fast validity check never accepts what the full
//! validator refuses, and ids are time-ordered.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;
use webhookd::EventType;

use super::DATA_LIMIT;
use crate::harness::{sample, TestDb};

#[tokio::test]
async fn occurred_at_is_the_clock_time_of_each_insert_not_the_transaction_start() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    let org = Uuid::new_v4();
    let data = json!({"id": "p1", "title": "Add dark mode"});

    let tx = client.transaction().await.unwrap();
    let transaction_start: chrono::DateTime<chrono::Utc> =
        tx.query_one("SELECT now()", &[]).await.unwrap().get(0);
    let first = webhookd::db::webhooks::emit(&tx, org, "post.created", &data)
        .await
        .unwrap();
    tx.execute("SELECT pg_sleep(0.2)", &[]).await.unwrap();
    let second = webhookd::db::webhooks::emit(&tx, org, "post.created", &data)
        .await
        .unwrap();
    tx.execute("SELECT pg_sleep(0.2)", &[]).await.unwrap();
    // A plain INSERT gets the same treatment, even when it names a time itself.
    let third: Uuid = tx
        .query_one(
            "INSERT INTO outbox.events (organization_id, event, data, occurred_at) \
             VALUES ($1, 'post.created', $2::jsonb, '2001-01-01T00:00:00Z') RETURNING id",
            &[&org, &data],
        )
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();

    let occurred_at = |id: Uuid| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT occurred_at FROM outbox.events WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap()
                .get::<_, chrono::DateTime<chrono::Utc>>(0)
        }
    };
    let (first, second, third) = (
        occurred_at(first).await,
        occurred_at(second).await,
        occurred_at(third).await,
    );
    let at_least = chrono::Duration::from_std(Duration::from_millis(200)).unwrap();
    assert!(
        first >= transaction_start,
        "{first} is before the transaction began at {transaction_start}"
    );
    assert!(
        second - first >= at_least,
        "emits 200 ms apart in one transaction: {first} then {second}"
    );
    assert!(
        third - second >= at_least,
        "a plain INSERT 200 ms later: {second} then {third}"
    );
}

#[tokio::test]
async fn an_invalid_emit_inside_a_transaction_leaves_nothing_after_rollback() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    let org = Uuid::new_v4();
    let tx = client.transaction().await.unwrap();
    webhookd::db::webhooks::emit(
        &tx,
        org,
        "post.created",
        &json!({"id": "p1", "title": "ok"}),
    )
    .await
    .unwrap();
    let err = webhookd::db::webhooks::emit(&tx, org, "post.created", &json!({"id": "p2"}))
        .await
        .unwrap_err();
    assert!(err.is_user_error(), "{err}");
    assert!(
        err.to_string()
            .contains("post.created: data.title is required"),
        "{err}"
    );
    tx.rollback().await.unwrap();
    assert_eq!(db.count("SELECT count(*) FROM outbox.events").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_run_concurrently_and_repeatedly_succeeds_and_reaches_the_current_version() {
    let db = TestDb::empty().await;
    const REPLICAS: usize = 4;
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(REPLICAS));
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        let url = db.url.clone();
        let start = start.clone();
        replicas.push(tokio::spawn(async move {
            let mut client = webhookd::db::connect_single(&url).await.expect("connect");
            start.wait().await;
            webhookd::db::migrate(&mut client).await
        }));
    }
    let mut applied = Vec::new();
    for replica in replicas {
        let result = tokio::time::timeout(Duration::from_secs(30), replica)
            .await
            .expect("migrate finishes within 30s")
            .expect("migrate task");
        applied.extend(
            result.unwrap_or_else(|err| panic!("a concurrent migrate failed: {}", err.one_line())),
        );
    }

    let client = db.client().await;
    let mut recorded: Vec<i32> = client
        .query(
            "SELECT version FROM outbox.schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    applied.sort();
    assert_eq!(
        applied, recorded,
        "each migration applied by exactly one replica"
    );
    assert_eq!(recorded.pop(), Some(webhookd::db::SCHEMA_VERSION));

    for _ in 0..2 {
        let mut again = db.client().await;
        let newly = webhookd::db::migrate(&mut again)
            .await
            .expect("migrate again");
        assert!(
            newly.is_empty(),
            "a repeated migrate applies nothing, applied {newly:?}"
        );
    }
    webhookd::db::check_schema(&client)
        .await
        .expect("schema is current");
    let max: i32 = client
        .query_one("SELECT max(version) FROM outbox.schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(max, webhookd::db::SCHEMA_VERSION);
    // And the schema works.
    webhookd::db::webhooks::emit(
        &client,
        Uuid::new_v4(),
        "post.created",
        &json!({"id": "p1", "title": "t"}),
    )
    .await
    .expect("emit after migrate");
}

/// Every field name docs/CONTRACT.md §2 uses, for the cross-check below.
const EVENT_FIELDS: &[&str] = &[
    "id",
    "title",
    "details",
    "board_id",
    "board_name",
    "owner_id",
    "category_id",
    "eta",
    "changed_fields",
    "tag_id",
    "tag_name",
    "status_id",
    "status_group_code",
    "status_name",
    "previous_status_id",
    "previous_status_group_code",
    "post_id",
    "content",
    "author_id",
    "parent_id",
    "post_title",
    "user_id",
];

#[tokio::test]
async fn the_fast_validity_check_never_accepts_what_the_full_validator_refuses() {
    let db = TestDb::new().await;
    let client = db.client().await;
    // The full validator raises; this turns its verdict into a boolean.
    client
        .batch_execute(
            "CREATE FUNCTION pg_temp.full_check(e text, d jsonb) RETURNS boolean
             LANGUAGE plpgsql AS $$
             BEGIN
                 PERFORM outbox.validate_event(e, d);
                 RETURN true;
             EXCEPTION WHEN invalid_parameter_value THEN
                 RETURN false;
             END $$",
        )
        .await
        .unwrap();
    let values = [
        json!(null),
        json!(""),
        json!("x"),
        json!("open"),
        json!(1),
        json!(true),
        json!([]),
        json!(["a"]),
        json!([1]),
        json!([["a"]]),
        json!({}),
    ];
    let mut events = Vec::new();
    let mut datas = Vec::new();
    for event in EventType::ALL {
        let base = sample(event);
        events.push(event.as_str().to_string());
        datas.push(base.clone());
        for field in EVENT_FIELDS {
            let mut removed = base.clone();
            removed.as_object_mut().unwrap().remove(*field);
            events.push(event.as_str().to_string());
            datas.push(removed);
            for value in &values {
                let mut changed = base.clone();
                changed[*field] = value.clone();
                events.push(event.as_str().to_string());
                datas.push(changed);
            }
        }
        for not_an_object in [json!(null), json!([]), json!("x"), json!(3)] {
            events.push(event.as_str().to_string());
            datas.push(not_an_object);
        }
        let mut big = base.clone();
        big["details"] = json!("x".repeat(DATA_LIMIT));
        events.push(event.as_str().to_string());
        datas.push(big);
    }
    events.push("post.published".to_string());
    datas.push(json!({"id": "p1", "title": "t"}));

    let rows = client
        .query(
            "SELECT c.e, c.d::text, outbox.event_is_valid(c.e, c.d) AS fast, pg_temp.full_check(c.e, c.d) AS full
             FROM unnest($1::text[], $2::jsonb[]) AS c(e, d)",
            &[&events, &datas],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), events.len());
    let (mut fast_accepted, mut full_accepted) = (0, 0);
    for row in &rows {
        let fast: Option<bool> = row.get("fast");
        let full: bool = row.get("full");
        let data: Option<String> = row.get(1);
        let data = data.unwrap_or_default();
        assert!(
            fast != Some(true) || full,
            "the fast check accepts {} {} that the validator refuses",
            row.get::<_, String>(0),
            &data[..data.len().min(300)]
        );
        fast_accepted += usize::from(fast == Some(true));
        full_accepted += usize::from(full);
    }
    // The fast check is what keeps emit cheap: every sample, and most valid
    // variations of it, must pass it without the full validator.
    for (index, event) in EventType::ALL.iter().enumerate() {
        let first_of_event = index * (1 + EVENT_FIELDS.len() * (values.len() + 1) + 5);
        assert_eq!(
            rows[first_of_event].get::<_, Option<bool>>("fast"),
            Some(true),
            "{}: its sample data should pass the fast check",
            event.as_str()
        );
    }
    assert!(
        fast_accepted * 10 >= full_accepted * 9,
        "the fast check accepted {fast_accepted} of the {full_accepted} valid cases"
    );
}

#[tokio::test]
async fn event_and_delivery_ids_are_time_ordered_uuids() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let org = Uuid::new_v4();
    let mut ids = Vec::new();
    for index in 0..3 {
        let data = json!({"id": format!("v{index}"), "post_id": "p1"});
        ids.push(
            webhookd::db::webhooks::emit(&client, org, "vote.created", &data)
                .await
                .unwrap(),
        );
        // A new millisecond, so each id's time prefix is larger.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for id in &ids {
        assert_eq!(id.get_version_num(), 7, "{id} is a version 7 UUID");
        let (seconds, nanos) = id
            .get_timestamp()
            .expect("a version 7 UUID carries its time")
            .to_unix();
        let id_ms = seconds * 1000 + u64::from(nanos) / 1_000_000;
        assert!(
            now_ms.abs_diff(id_ms) < 60_000,
            "{id} carries {id_ms} ms, the clock says {now_ms} ms"
        );
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "ids sort in the order they were emitted");

    let default: String = client
        .query_one(
            "SELECT column_default FROM information_schema.columns
             WHERE table_schema = 'outbox' AND table_name = 'deliveries' AND column_name = 'id'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(default, "outbox.uuid_v7()");
}
