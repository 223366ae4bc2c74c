//! Fencing and isolation between in-process daemons: a result from an expired
//! lease never overwrites the result of the lease that replaced it, and a
//! hanging webhook does not hold up healthy ones.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use uuid::Uuid;
use webhookd::config::RunArgs;
use webhookd::EventType;

use crate::harness::{sample, test_args, wait_until, Receiver, TestApp};

const WAIT: Duration = Duration::from_secs(20);

/// Answers request n (0-based) after `script[n].0` with status `script[n].1`.
/// Counts requests received and requests answered.
async fn scripted_receiver(
    script: Vec<(Duration, u16)>,
) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let served = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let (counter, done) = (served.clone(), answered.clone());
    let script = Arc::new(script);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (counter, done, script) = (counter.clone(), done.clone(), script.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let (counter, done, script) = (counter.clone(), done.clone(), script.clone());
                    async move {
                        let _ = request.into_body().collect().await;
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        let (delay, status) =
                            script.get(n).copied().unwrap_or((Duration::ZERO, 200));
                        tokio::time::sleep(delay).await;
                        done.fetch_add(1, Ordering::SeqCst);
                        let mut response = hyper::Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, served, answered)
}

/// Replica A claims with a lease shorter than the receiver's answer to it;
/// replica B takes the delivery over when the lease expires. Returns the
/// delivery row's status and last error, and the attempt log's statuses.
async fn race(first_answer: u16, second_answer: u16) -> (String, Option<String>, Vec<Option<i32>>) {
    let app = TestApp::new().await;
    let (url, served, answered) = scripted_receiver(vec![
        (Duration::from_secs(3), first_answer),
        (Duration::ZERO, second_answer),
    ])
    .await;
    let org = Uuid::new_v4();
    app.create_webhook(org, &url).await;
    let args = RunArgs {
        retry_base_delay: Duration::from_secs(600),
        response_timeout: Duration::from_secs(10),
        lease: Duration::from_secs(15),
        ..test_args()
    };
    // A lease shorter than the response timeout is refused by the flags; set
    // directly here to force the overlap this test is about.
    let mut short = app.config(&args);
    short.claimer.lease = Duration::from_secs(1);
    let replica_a = app.spawn_daemon(short);
    app.emit(org, "post.created", sample(EventType::PostCreated))
        .await;
    wait_until("replica A's request arrives", WAIT, || async {
        served.load(Ordering::SeqCst) == 1
    })
    .await;
    let replica_b = app.spawn_daemon(app.config(&args));
    wait_until("both results are in", WAIT, || async {
        served.load(Ordering::SeqCst) == 2
            && app
                .db
                .count("SELECT count(*) FROM outbox.delivery_attempts")
                .await
                == 1
    })
    .await;
    // Once A has its answer, stopping A waits for that attempt to finish and
    // flushes A's write-back: the fence has then had its say.
    wait_until("replica A's request is answered", WAIT, || async {
        answered.load(Ordering::SeqCst) == 2
    })
    .await;
    replica_a.stop().await.unwrap();
    replica_b.stop().await.unwrap();
    let client = app.db.client().await;
    let row = client
        .query_one("SELECT status, last_error FROM outbox.deliveries", &[])
        .await
        .unwrap();
    let log: Vec<Option<i32>> = client
        .query(
            "SELECT status_code FROM outbox.delivery_attempts ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    (row.get(0), row.get(1), log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_success_from_an_expired_lease_does_not_overwrite_the_newer_failure() {
    let (status, last_error, log) = race(200, 503).await;
    assert_eq!(
        status, "pending",
        "B's failure stands: a retry is scheduled"
    );
    assert_eq!(last_error.as_deref(), Some("HTTP 503 Service Unavailable"));
    assert_eq!(
        log,
        vec![Some(503)],
        "A's late 200 was fenced off, not logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_failure_from_an_expired_lease_does_not_overwrite_the_newer_success() {
    let (status, last_error, log) = race(503, 200).await;
    assert_eq!(status, "delivered");
    assert_eq!(last_error, None);
    assert_eq!(
        log,
        vec![Some(200)],
        "A's late 503 was fenced off, not logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_webhooks_are_delivered_while_a_hanging_one_is_still_waiting() {
    let app = TestApp::new().await;
    let healthy = Receiver::with_status(200).await;
    // Accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_url = format!("http://{}/hang", listener.local_addr().unwrap());
    let open = Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let org = Uuid::new_v4();
    app.create_webhook(org, &healthy.url("/ok")).await;
    app.create_webhook(org, &hanging_url).await;
    let args = RunArgs {
        response_timeout: Duration::from_secs(60),
        lease: Duration::from_secs(90),
        ..test_args()
    };
    let daemon = app.spawn_daemon(app.config(&args));
    for _ in 0..20 {
        app.emit(org, "vote.created", sample(EventType::VoteCreated))
            .await;
    }
    healthy.wait_for(20, WAIT).await;
    app.wait_for_deliveries("status = 'delivered'", 20).await;
    // The hanging webhook's requests are all still open and none has failed.
    assert!(open.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM outbox.delivery_attempts WHERE outcome <> 'delivered'")
            .await,
        0
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM outbox.deliveries WHERE status = 'pending'")
            .await,
        20
    );
    daemon.stop().await.unwrap();
}

/// One host serving two webhooks: `/h` answers its first `fast` requests at
/// once and then never again; `/ok` always answers at once. Counts the
/// requests to `/h` left hanging.
async fn shared_host(fast: usize) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let served = Arc::new(AtomicUsize::new(0));
    let hanging = Arc::new(AtomicUsize::new(0));
    let (served_, hanging_) = (served.clone(), hanging.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (served, hanging) = (served_.clone(), hanging_.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let (served, hanging) = (served.clone(), hanging.clone());
                    async move {
                        let hangs = request.uri().path() == "/h"
                            && served.fetch_add(1, Ordering::SeqCst) >= fast;
                        let _ = request.into_body().collect().await;
                        if hangs {
                            hanging.fetch_add(1, Ordering::SeqCst);
                            std::future::pending::<()>().await;
                        }
                        let mut response = hyper::Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = hyper::StatusCode::NO_CONTENT;
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (base, hanging)
}

/// Receivers of many customers often share one host (a SaaS's webhook
/// endpoint, an automation platform): a webhook there that earned many
/// slots and then hangs must not take the host's connections from the
/// others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_does_not_hold_up_another_on_the_same_host() {
    const FAST: usize = 150;
    const HANGING: usize = 100;
    let app = TestApp::new().await;
    let (base, hanging) = shared_host(FAST).await;
    let (slow_org, healthy_org) = (Uuid::new_v4(), Uuid::new_v4());
    app.create_webhook(slow_org, &format!("{base}/h")).await;
    let healthy = app
        .create_webhook(healthy_org, &format!("{base}/ok"))
        .await
        .id;
    // Held up, the healthy webhook would wait for these timeouts: far
    // beyond the test's deadline.
    let args = RunArgs {
        response_timeout: Duration::from_secs(300),
        lease: Duration::from_secs(400),
        ..test_args()
    };
    let daemon = app.spawn_daemon(app.config(&args));
    // Quick answers earn the first webhook many slots …
    for _ in 0..FAST {
        app.emit(slow_org, "vote.created", sample(EventType::VoteCreated))
            .await;
    }
    app.wait_for_deliveries("status = 'delivered'", FAST as i64)
        .await;
    // … which its next requests then fill, hanging.
    for _ in 0..HANGING {
        app.emit(slow_org, "vote.created", sample(EventType::VoteCreated))
            .await;
    }
    wait_until("many requests to hang", WAIT, || {
        let hanging = hanging.clone();
        async move { hanging.load(Ordering::SeqCst) >= 64 }
    })
    .await;

    for _ in 0..20 {
        app.emit(healthy_org, "vote.created", sample(EventType::VoteCreated))
            .await;
    }
    let delivered = format!("webhook_id = '{healthy}' AND status = 'delivered'");
    app.wait_for_deliveries(&delivered, 20).await;
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM outbox.delivery_attempts WHERE outcome <> 'delivered'")
            .await,
        0,
        "nothing failed meanwhile"
    );
    daemon.stop().await.unwrap();
}
