//! The leasing fan-out (migration 0009) on a real database: new deliveries
//! that fit into the replica's free slots come back leased and ready to
//! send, the rest are left due for the claim, and a write-back under the
//! fan-out's token lands like one under a claim's.

use std::time::Duration;

use uuid::Uuid;
use webhookd::db::queue::{self, AttemptRecord, ClaimRequest, Room};
use webhookd::EventType;

use crate::harness::{delivered_attempt, sample, TestApp};

const LEASE: Duration = Duration::from_secs(90);

fn room<'a>(limit: i32, busy: &'a [Uuid], free: &'a [i32], token: Uuid) -> Room<'a> {
    Room {
        limit,
        busy,
        free_slots: free,
        per_webhook_cap: 8,
        lease: LEASE,
        token,
    }
}

fn delivered(delivery: &queue::ClaimedDelivery, token: Uuid) -> AttemptRecord {
    delivered_attempt(delivery.id, delivery.webhook_id, delivery.attempt, token)
}

#[tokio::test]
async fn new_deliveries_are_leased_within_free_slots_and_the_claim_takes_the_rest() {
    let app = TestApp::new().await;
    let org = Uuid::new_v4();
    let busy = app.create_webhook(org, "http://127.0.0.1:9/busy").await.id;
    let idle = app.create_webhook(org, "http://127.0.0.1:9/idle").await.id;
    let disabled = app.create_webhook(org, "http://127.0.0.1:9/gone").await.id;
    let client = app.db.client().await;
    client
        .execute(
            "UPDATE outbox.webhooks SET status = 'disabled', disabled_at = now(), \
             disabled_reason = 'HTTP 410 Gone' WHERE id = $1",
            &[&disabled],
        )
        .await
        .unwrap();
    for _ in 0..3 {
        app.emit(org, "vote.created", sample(EventType::VoteCreated))
            .await;
    }

    // `busy` has one free slot, `idle` is new to the replica (8 slots), and
    // four may be leased in all.
    let token = Uuid::new_v4();
    let done = queue::fan_out_lease(&client, 50, &room(4, &[busy], &[1], token))
        .await
        .unwrap();
    assert_eq!((done.count.events, done.count.deliveries), (3, 9));
    let leased_to = |webhook: Uuid| {
        done.deliveries
            .iter()
            .filter(|d| d.webhook_id == webhook)
            .count()
    };
    assert_eq!(
        (leased_to(busy), leased_to(idle), leased_to(disabled)),
        (1, 3, 0)
    );
    assert!(done.deliveries.iter().all(|d| d.attempt == 1));
    assert!(done
        .deliveries
        .iter()
        .all(|d| d.url.starts_with("http://127.0.0.1:9/")));
    assert_eq!(done.unleased, 2, "the two of `busy` that found no slot");

    let failed: Vec<String> = client
        .query(
            "SELECT last_error FROM outbox.deliveries WHERE webhook_id = $1 AND status = 'failed'",
            &[&disabled],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(failed, vec!["webhook disabled: HTTP 410 Gone"; 3]);

    // The claim finds only what the fan-out left due.
    let claim_token = Uuid::new_v4();
    let claimed = queue::claim(
        &client,
        &ClaimRequest {
            scan_window: 100,
            by_webhook: false,
            room: room(10, &[], &[], claim_token),
        },
    )
    .await
    .unwrap();
    assert_eq!(claimed.deliveries.len(), 2);
    assert!(claimed.deliveries.iter().all(|d| d.webhook_id == busy));
    let leased_ids: Vec<Uuid> = done.deliveries.iter().map(|d| d.id).collect();
    assert!(claimed
        .deliveries
        .iter()
        .all(|d| !leased_ids.contains(&d.id)));

    // Results under the fan-out's token land; one under a wrong token does not.
    let mut records: Vec<AttemptRecord> = done
        .deliveries
        .iter()
        .map(|d| delivered(d, token))
        .collect();
    records.push(delivered(&claimed.deliveries[0], Uuid::new_v4()));
    assert_eq!(queue::complete(&client, &records).await.unwrap(), 4);
    let delivered_count: i64 = client
        .query_one(
            "SELECT count(*) FROM outbox.deliveries WHERE status = 'delivered' AND attempts = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(delivered_count, 4);
}

#[tokio::test]
async fn the_fan_out_says_when_work_is_next_due() {
    let app = TestApp::new().await;
    let org = Uuid::new_v4();
    app.create_webhook(org, "http://127.0.0.1:9/hook").await;
    app.emit(org, "vote.created", sample(EventType::VoteCreated))
        .await;
    let client = app.db.client().await;

    let first = queue::fan_out_lease(&client, 50, &room(10, &[], &[], Uuid::new_v4()))
        .await
        .unwrap();
    assert_eq!((first.deliveries.len(), first.unleased), (1, 0));

    // Nothing new: the only pending row is the one leased above, due again
    // when its lease runs out.
    let second = queue::fan_out_lease(&client, 50, &room(10, &[], &[], Uuid::new_v4()))
        .await
        .unwrap();
    assert_eq!(second.count.events, 0);
    let due_in = second.next.due_in.expect("the leased row is pending");
    assert!(
        due_in > LEASE - Duration::from_secs(30) && due_in <= LEASE,
        "due in {due_in:?}"
    );

    // With no free slot, a new delivery is left due now.
    app.emit(org, "vote.created", sample(EventType::VoteCreated))
        .await;
    let third = queue::fan_out_lease(&client, 50, &room(0, &[], &[], Uuid::new_v4()))
        .await
        .unwrap();
    assert_eq!((third.deliveries.len(), third.unleased), (0, 1));
}

/// Where prepared statements are allowed, the hot statements are prepared
/// once on the pooled connection and then run by name (the server parses and
/// plans them once); where not, nothing is left on the connection.
#[tokio::test]
async fn hot_statements_stay_prepared_on_the_connection_only_where_allowed() {
    let app = TestApp::new().await;
    let org = Uuid::new_v4();
    app.create_webhook(org, "http://127.0.0.1:9/a").await;
    let target = webhookd::db::parse_url(&app.db.url).unwrap();
    let pool = webhookd::db::connect_pool(&target, 1).await.unwrap();
    let client = pool.get().await.unwrap();
    let preparing = webhookd::db::Preparing::default();
    // Two events fanned out one by one, each leased; then how many fan-out
    // statements the connection holds prepared.
    let fan_out_twice = || async {
        for _ in 0..2 {
            app.emit(org, "vote.created", sample(EventType::VoteCreated))
                .await;
            let room = room(4, &[], &[], Uuid::new_v4());
            let done = queue::fan_out_lease(preparing.session(&client), 50, &room)
                .await
                .unwrap();
            assert_eq!(done.deliveries.len(), 1);
        }
        let list = "SELECT count(*) FROM pg_prepared_statements \
                    WHERE statement LIKE '%daemon_fan_out_lease(%' \
                    AND statement NOT LIKE '%pg_prepared%'";
        let row = client.query_typed_one(list, &[]).await.unwrap();
        row.get::<_, i64>(0)
    };

    assert_eq!(fan_out_twice().await, 0, "not allowed: sent unnamed");
    preparing.set(true);
    assert_eq!(
        fan_out_twice().await,
        1,
        "allowed: prepared once, then reused"
    );

    // As if a pooler had handed over another server connection: the name is
    // unknown there. That call fails without fanning out, prepared
    // statements are withdrawn, and the next call goes through unnamed.
    client.batch_execute("DEALLOCATE ALL").await.unwrap();
    app.emit(org, "vote.created", sample(EventType::VoteCreated))
        .await;
    let room = room(4, &[], &[], Uuid::new_v4());
    let missing = queue::fan_out_lease(preparing.session(&client), 50, &room).await;
    assert!(missing.is_err());
    assert!(!preparing.allowed());
    let done = queue::fan_out_lease(preparing.session(&client), 50, &room)
        .await
        .unwrap();
    assert_eq!(done.deliveries.len(), 1);
}
